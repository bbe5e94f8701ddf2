// The strategies of one AutoAssign attempt, in order of preference.

package ipam

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"strings"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
)

// tryAutoAssign is one attempt of AutoAssign: done is false when a
// transaction lost a race and the caller should retry from a fresh read.
// The strategies are asked in order of preference; the first that finds an
// address makes the attempt's one transaction.
func (m *IPAM) tryAutoAssign(ctx context.Context, handle, node string, family int, restrict []netip.Prefix) (ip netip.Addr, done bool, err error) {
	a, err := m.startAutoAssign(ctx, handle, node, family, restrict)
	if err != nil {
		return ip, false, err
	}
	for _, strategy := range []func(context.Context) (outcome, error){
		a.fromOwnBlocks,
		a.fromNewBlock,
		a.fromOrphanBlock,
		a.fromBorrowedBlock,
	} {
		o, err := strategy(ctx)
		if err != nil || o.tried {
			return o.ip, o.done, err
		}
	}
	return ip, false, errorf(ErrExhausted, "no free addresses in pools %s", poolList(a.cands))
}

// autoAssign is what one attempt of AutoAssign has read so far.
type autoAssign struct {
	m            *IPAM
	handle, node string
	cands        []poolInfo   // the pools it may assign from
	h            storedHandle // the handle as read
	claims       []kv         // the node's affinity claims
	blocks       *everyBlock  // read on first need
}

// everyBlock is every block as of one read.
type everyBlock struct {
	all []storedBlock // decodable blocks, in address order
	// taken is the range of every block, undecodable ones included (their
	// key still says which addresses they cover): never create a block on
	// top of one of them.
	taken []netip.Prefix
}

// outcome is a strategy's answer. tried is false when the strategy found
// nothing to take, and the next one is asked; otherwise done says whether
// its transaction won.
type outcome struct {
	ip          netip.Addr
	tried, done bool
}

// took makes an outcome of a transaction's result.
func took(ip netip.Addr, done bool, err error) (outcome, error) {
	return outcome{ip: ip, tried: true, done: done}, err
}

// startAutoAssign reads, in one transaction, the pools, the node's claims
// and the handle: all an attempt needs when the node's own blocks have room.
func (m *IPAM) startAutoAssign(ctx context.Context, handle, node string, family int, restrict []netip.Prefix) (*autoAssign, error) {
	hkey := datastore.HandleKey(handle)
	r, err := m.read(ctx,
		datastore.ReadPrefix(datastore.PrefixPools),
		datastore.ReadPrefix(datastore.AffinityPrefix(node)),
		datastore.ReadKey(hkey))
	if err != nil {
		return nil, err
	}
	cands, err := selectPools(parsePools(r[0]), family, restrict)
	if err != nil {
		return nil, err
	}
	h, err := handleFrom(hkey, r[2])
	if err != nil {
		return nil, err
	}
	return &autoAssign{m: m, handle: handle, node: node, cands: cands, h: h, claims: r[1]}, nil
}

// fromOwnBlocks takes the lowest free address of the node's own blocks: the
// common case. It reads first only the blocks the node claims, touching
// only its own keys; when they are full, it looks again at every block, as
// another process assigning for this node may have claimed a block since
// the first read, and using it beats claiming yet another.
func (a *autoAssign) fromOwnBlocks(ctx context.Context) (outcome, error) {
	var gets []datastore.Read
	for _, kv := range a.claims {
		c := parseClaimKV(kv.key, kv.value, kv.rev)
		p, err := netip.ParsePrefix(c.cidr)
		if err != nil {
			continue
		}
		if _, ok := poolForBlock(a.cands, p); ok {
			gets = append(gets, datastore.ReadKey(datastore.BlockKey(p.String())))
		}
	}
	if len(gets) > 0 {
		rb, err := a.m.read(ctx, gets...)
		if err != nil {
			return outcome{}, err
		}
		var mine []storedBlock
		for _, kvs := range rb {
			for _, kv := range kvs {
				// A claim whose block says otherwise is stale; the block decides.
				if sb := a.m.parseBlock(kv); sb.err == nil && sb.st.rec.Affinity == a.node {
					mine = append(mine, sb)
				}
			}
		}
		sortBlocks(mine)
		if o, ok, err := a.firstFree(ctx, mine, a.node); ok || err != nil {
			return o, err
		}
	}
	// The rest needs every block: rare (once per block's worth of
	// assignments, or when the pools are nearly full).
	b, err := a.everyBlock(ctx)
	if err != nil {
		return outcome{}, err
	}
	o, _, err := a.firstFree(ctx, b.all, a.node)
	return o, err
}

// firstFree allocates from the first of blocks affine to owner that has a
// free address in a candidate pool; ok is false when none has.
func (a *autoAssign) firstFree(ctx context.Context, blocks []storedBlock, owner string) (o outcome, ok bool, err error) {
	for _, sb := range blocks {
		if sb.st.rec.Affinity != owner {
			continue
		}
		pool, inPool := poolForBlock(a.cands, sb.st.prefix)
		if !inPool {
			continue // a block stored under the wrong key; Check reports it
		}
		if ord := freeIn(pool, sb.st); ord >= 0 {
			adopt := ""
			if owner == "" {
				adopt = a.node
			}
			o, err := took(a.m.allocate(ctx, pool, sb, ord, a.handle, a.h, adopt))
			return o, true, err
		}
	}
	return outcome{}, false, nil
}

// fromNewBlock claims a block nobody has created yet, in the first
// candidate pool that has room for one, and takes its first free address.
func (a *autoAssign) fromNewBlock(ctx context.Context) (outcome, error) {
	b, err := a.everyBlock(ctx)
	if err != nil {
		return outcome{}, err
	}
	seed := nodeSeed(a.node)
	for _, pool := range a.cands {
		bp, ok := chooseFreeBlock(pool, b.taken, seed)
		if !ok {
			continue
		}
		st, err := newBlockState(api.Block{CIDR: bp.String(), Affinity: a.node})
		if err != nil {
			return outcome{}, err
		}
		if ord := freeIn(pool, st); ord >= 0 {
			return took(a.m.claimAndAllocate(ctx, pool, st, ord, a.node, a.handle, a.h))
		}
	}
	return outcome{}, nil
}

// fromOrphanBlock adopts a block that lost its node (ReleaseNodeBlocks kept
// it for its addresses), so its free addresses are routed as a block again.
func (a *autoAssign) fromOrphanBlock(ctx context.Context) (outcome, error) {
	b, err := a.everyBlock(ctx)
	if err != nil {
		return outcome{}, err
	}
	o, _, err := a.firstFree(ctx, b.all, "")
	return o, err
}

// fromBorrowedBlock, when every block is claimed and full but for other
// nodes' blocks, borrows a free address from one of them.
func (a *autoAssign) fromBorrowedBlock(ctx context.Context) (outcome, error) {
	b, err := a.everyBlock(ctx)
	if err != nil {
		return outcome{}, err
	}
	type spare struct {
		pool poolInfo
		sb   storedBlock
		ord  int
	}
	var spares []spare
	for _, sb := range b.all {
		if sb.st.rec.Affinity == "" || sb.st.rec.Affinity == a.node {
			continue // orphans and our own were offered already
		}
		pool, ok := poolForBlock(a.cands, sb.st.prefix)
		if !ok {
			continue
		}
		if ord := freeIn(pool, sb.st); ord >= 0 {
			spares = append(spares, spare{pool, sb, ord})
		}
	}
	if len(spares) == 0 {
		return outcome{}, nil
	}
	// A random block, so hosts borrowing at once spread over the spares
	// instead of all racing for the first one.
	s := spares[rand.IntN(len(spares))]
	return took(a.m.allocate(ctx, s.pool, s.sb, s.ord, a.handle, a.h, ""))
}

// everyBlock reads every block once per attempt.
func (a *autoAssign) everyBlock(ctx context.Context) (*everyBlock, error) {
	if a.blocks != nil {
		return a.blocks, nil
	}
	rb, err := a.m.read(ctx, datastore.ReadPrefix(datastore.PrefixBlocks))
	if err != nil {
		return nil, err
	}
	b := &everyBlock{}
	for _, kv := range rb[0] {
		sb := a.m.parseBlock(kv)
		if sb.err != nil {
			if p, err := netip.ParsePrefix(datastore.UnescapeCIDR(strings.TrimPrefix(kv.key, datastore.PrefixBlocks))); err == nil {
				b.taken = append(b.taken, p)
			}
			continue
		}
		b.all = append(b.all, sb)
		b.taken = append(b.taken, sb.st.prefix)
	}
	sortBlocks(b.all)
	a.blocks = b
	return b, nil
}
