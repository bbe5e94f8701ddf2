// Package ipam assigns workload addresses from pools, over etcd.
//
// A pool is cut into blocks (a /26 or /122 by default). A host claims a block
// (the block's affinity plus an affinity key under the host) and assigns from
// it, so hosts rarely write the same key and each host's routes aggregate to
// its blocks. Only when every block of a pool is claimed does a host borrow a
// free address from another host's block. A block whose last address is
// released is deleted together with its host's claim, so nothing stays
// claimed for addresses nobody holds.
//
// Every write is one etcd transaction guarded by the revisions it read
// (ModRevision, or CreateRevision == 0 for a key it creates); a block and the
// handle recording the same address always change together. A transaction
// that loses a race is retried from a fresh read, a bounded number of times
// with jitter. There is no lock outside etcd, so any number of processes on
// any number of hosts may assign at once.
package ipam

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
)

// maxAttempts bounds the retries of one operation after lost races. With the
// backoff below it is a few seconds of solid contention, far beyond what
// hosts with their own blocks ever see.
const maxAttempts = 100

// IPAM is the address allocator. It is safe for concurrent use.
type IPAM struct {
	// store runs the transactions. It bounds every call (see
	// datastore.Calls): a caller's context may have no deadline at all
	// (calicoctl's has none, and undo steps run without cancellation), and
	// a frozen etcd must not hang them.
	store Store

	mu sync.Mutex
	// nodeLocks serializes AutoAssign per node within this process. Callers
	// on one host assign from the same block, so letting them race would
	// only turn into transaction conflicts and retries; across processes
	// and hosts the transactions alone keep assignment correct.
	nodeLocks map[string]chan struct{}

	// decoded caches decoded blocks by key and ModRevision. A host's full
	// blocks are read on every AutoAssign but rarely change, and decoding
	// their JSON was the largest cost of an assignment. Entries are
	// immutable (writes build new records), so sharing them is safe.
	decoded map[string]cachedBlock

	// conflicts counts transactions that lost a race, for metrics and for
	// tests to show that contention really happened.
	conflicts atomic.Uint64
}

// Conflicts returns how many write transactions of this allocator lost a
// race to another writer and were retried.
func (m *IPAM) Conflicts() uint64 { return m.conflicts.Load() }

// Store is what the allocator needs of the datastore: reads that see one
// revision, and writes applied together only while the revisions they were
// planned from still hold. *datastore.Client is one, and bounds each call
// with its deadlines (shared with every other user of the connection, so
// all learn together that etcd stopped answering).
type Store interface {
	Read(ctx context.Context, reads ...datastore.Read) ([][]datastore.Record, int64, error)
	Commit(ctx context.Context, guards []datastore.Guard, writes []datastore.Write) (bool, error)
}

// New returns an allocator whose transactions store runs.
func New(store Store) *IPAM {
	return &IPAM{store: store, nodeLocks: map[string]chan struct{}{}, decoded: map[string]cachedBlock{}}
}

type cachedBlock struct {
	rev int64
	st  *blockState
}

// maxCachedBlocks bounds the decode cache; past it the cache starts over,
// which costs only re-decoding.
const maxCachedBlocks = 1 << 14

// parseBlock decodes a block read from etcd, reusing an earlier decode of
// the same revision.
func (m *IPAM) parseBlock(e kv) storedBlock {
	m.mu.Lock()
	c, ok := m.decoded[e.key]
	m.mu.Unlock()
	if ok && c.rev == e.rev {
		return storedBlock{key: e.key, rev: e.rev, st: c.st}
	}
	sb := parseBlockKV(e.key, e.value, e.rev)
	if sb.err == nil {
		m.mu.Lock()
		if len(m.decoded) >= maxCachedBlocks {
			clear(m.decoded)
		}
		m.decoded[e.key] = cachedBlock{rev: e.rev, st: sb.st}
		m.mu.Unlock()
	}
	return sb
}

// BlockInfo describes a block for `calicoctl ipam show`.
type BlockInfo struct {
	CIDR     string
	Affinity string // node owning the block; "" when released
	Used     int
	Size     int
}

// IPInfo describes one address.
type IPInfo struct {
	IP       string
	Pool     string // "" when outside every pool
	Block    string // "" when no block holds it yet
	Affinity string
	Handle   string
	Assigned bool
}

// Assign takes the specific address ip for handle on node. The address must
// lie in a pool (disabled pools included: they only stop automatic
// assignment) and be free. If its block does not exist yet it is created
// with affinity to node.
func (m *IPAM) Assign(ctx context.Context, ip netip.Addr, handle, node string) error {
	ip, err := checkAddr(ip)
	if err != nil {
		return err
	}
	if err := checkNames(handle, node); err != nil {
		return err
	}
	// Assignments on one node mostly hit the same block record: taking
	// them one at a time here saves each a round of failed compare-and-
	// swaps (653 retries for 200 adds in bursts of 20, measured by bench).
	unlock, err := m.lockNode(ctx, node)
	if err != nil {
		return err
	}
	defer unlock()
	hkey := datastore.HandleKey(handle)
	return m.retry(ctx, func() (bool, error) {
		r, err := m.read(ctx, datastore.ReadPrefix(datastore.PrefixPools), datastore.ReadKey(hkey))
		if err != nil {
			return false, err
		}
		pool, err := poolForAddr(parsePools(r[0]), ip)
		if err != nil {
			return false, err
		}
		h, err := handleFrom(hkey, r[1])
		if err != nil {
			return false, err
		}
		bp := pool.blockFor(ip)
		sb, clash, err := m.locateBlock(ctx, ip, bp)
		if err != nil {
			return false, err
		}
		if sb != nil {
			ord, _ := sb.st.ordinal(ip)
			if owner, taken := sb.st.owner(ord); taken {
				return false, errorf(ErrAlreadyAssigned, "%s is already assigned (to %s)", ip, owner)
			}
			_, ok, err := m.allocate(ctx, pool, *sb, ord, handle, h, "")
			return ok, err
		}
		if clash.IsValid() {
			return false, errorf(ErrCorrupt, "cannot create block %s for %s: it would overlap block %s (see calicoctl ipam check)", bp, ip, clash)
		}
		st, err := newBlockState(api.Block{CIDR: bp.String(), Affinity: node})
		if err != nil {
			return false, err
		}
		ord, _ := st.ordinal(ip)
		_, ok, err := m.claimAndAllocate(ctx, pool, st, ord, node, handle, h)
		return ok, err
	})
}

// AutoAssign picks a free address of the given family (4 or 6) for handle on
// node: first from the node's own blocks, then from a newly claimed block
// (of an enabled pool of that family, only the named pools when pools is not
// empty), then from a block no node owns (claiming it), and last, when every
// block is claimed, borrowed from another node's block.
func (m *IPAM) AutoAssign(ctx context.Context, handle, node string, family int, pools []string) (netip.Addr, error) {
	if err := checkNames(handle, node); err != nil {
		return netip.Addr{}, err
	}
	if family != 4 && family != 6 {
		return netip.Addr{}, errorf(ErrInvalid, "address family must be 4 or 6, not %d", family)
	}
	var restrict []netip.Prefix
	for _, s := range pools {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return netip.Addr{}, errorf(ErrInvalid, "bad pool CIDR %q: %v", s, err)
		}
		restrict = append(restrict, p.Masked())
	}
	unlock, err := m.lockNode(ctx, node)
	if err != nil {
		return netip.Addr{}, err
	}
	defer unlock()
	var got netip.Addr
	err = m.retry(ctx, func() (bool, error) {
		var done bool
		var err error
		got, done, err = m.tryAutoAssign(ctx, handle, node, family, restrict)
		return done, err
	})
	if err != nil {
		return netip.Addr{}, err
	}
	return got, nil
}

// tryAutoAssign is one attempt of AutoAssign: done is false when a
// transaction lost a race and the caller should retry from a fresh read.
func (m *IPAM) tryAutoAssign(ctx context.Context, handle, node string, family int, restrict []netip.Prefix) (ip netip.Addr, done bool, err error) {
	hkey := datastore.HandleKey(handle)
	r, err := m.read(ctx,
		datastore.ReadPrefix(datastore.PrefixPools),
		datastore.ReadPrefix(datastore.AffinityPrefix(node)),
		datastore.ReadKey(hkey))
	if err != nil {
		return ip, false, err
	}
	cands, err := selectPools(parsePools(r[0]), family, restrict)
	if err != nil {
		return ip, false, err
	}
	h, err := handleFrom(hkey, r[2])
	if err != nil {
		return ip, false, err
	}

	// 1. The node's own blocks: the common case, touching only its keys.
	var gets []datastore.Read
	for _, kv := range r[1] {
		c := parseClaimKV(kv.key, kv.value, kv.rev)
		p, err := netip.ParsePrefix(c.cidr)
		if err != nil {
			continue
		}
		if _, ok := poolForBlock(cands, p); ok {
			gets = append(gets, datastore.ReadKey(datastore.BlockKey(p.String())))
		}
	}
	if len(gets) > 0 {
		rb, err := m.read(ctx, gets...)
		if err != nil {
			return ip, false, err
		}
		var mine []storedBlock
		for _, kvs := range rb {
			for _, kv := range kvs {
				sb := m.parseBlock(kv)
				// A claim whose block says otherwise is stale; the block decides.
				if sb.err == nil && sb.st.rec.Affinity == node {
					mine = append(mine, sb)
				}
			}
		}
		sortBlocks(mine)
		for _, sb := range mine {
			pool, ok := poolForBlock(cands, sb.st.prefix)
			if !ok {
				continue // a block stored under the wrong key; Check reports it
			}
			if ord := freeIn(pool, sb.st); ord >= 0 {
				return m.allocate(ctx, pool, sb, ord, handle, h, "")
			}
		}
	}

	// The rest needs every block: rare (once per block's worth of
	// assignments, or when the pools are nearly full).
	rb, err := m.read(ctx, datastore.ReadPrefix(datastore.PrefixBlocks))
	if err != nil {
		return ip, false, err
	}
	var all []storedBlock
	var existing []netip.Prefix
	for _, kv := range rb[0] {
		sb := m.parseBlock(kv)
		if sb.err != nil {
			// Undecodable, but its key still says which addresses it covers:
			// never create a block on top of it.
			if p, err := netip.ParsePrefix(datastore.UnescapeCIDR(strings.TrimPrefix(kv.key, datastore.PrefixBlocks))); err == nil {
				existing = append(existing, p)
			}
			continue
		}
		all = append(all, sb)
		existing = append(existing, sb.st.prefix)
	}

	sortBlocks(all)

	// 1b. The node's blocks again, as of this later read: another process
	// assigning for this node may have claimed a block since our first read,
	// and using it beats claiming yet another.
	for _, sb := range all {
		if sb.st.rec.Affinity != node {
			continue
		}
		if pool, ok := poolForBlock(cands, sb.st.prefix); ok {
			if ord := freeIn(pool, sb.st); ord >= 0 {
				return m.allocate(ctx, pool, sb, ord, handle, h, "")
			}
		}
	}

	// 2. A block nobody has created yet.
	seed := nodeSeed(node)
	for _, pool := range cands {
		if bp, ok := chooseFreeBlock(pool, existing, seed); ok {
			st, err := newBlockState(api.Block{CIDR: bp.String(), Affinity: node})
			if err != nil {
				return ip, false, err
			}
			if ord := freeIn(pool, st); ord >= 0 {
				return m.claimAndAllocate(ctx, pool, st, ord, node, handle, h)
			}
		}
	}

	// 3. A block that lost its node (ReleaseNodeBlocks kept it for its
	// addresses): adopt it, so its free addresses are routed as a block again.
	// 4. Otherwise borrow from another node's block.
	type spare struct {
		pool poolInfo
		sb   storedBlock
		ord  int
	}
	var borrow []spare
	for _, sb := range all {
		pool, ok := poolForBlock(cands, sb.st.prefix)
		if !ok {
			continue
		}
		ord := freeIn(pool, sb.st)
		if ord < 0 {
			continue
		}
		if sb.st.rec.Affinity == "" {
			return m.allocate(ctx, pool, sb, ord, handle, h, node)
		}
		borrow = append(borrow, spare{pool, sb, ord})
	}
	if len(borrow) > 0 {
		// A random block, so hosts borrowing at once spread over the spares
		// instead of all racing for the first one.
		s := borrow[rand.IntN(len(borrow))]
		return m.allocate(ctx, s.pool, s.sb, s.ord, handle, h, "")
	}
	return ip, false, errorf(ErrExhausted, "no free addresses in pools %s", poolList(cands))
}

// freeIn returns the lowest free ordinal of a block for automatic
// assignment, or -1.
func freeIn(pool poolInfo, st *blockState) int {
	first, last := pool.reservedIn(st.prefix)
	return st.used.firstFree(st.size, first, last)
}

// allocate writes ordinal ord of an existing block to handle, guarded by the
// block, handle and pool revisions read. adopt names a node taking over a
// block without affinity.
func (m *IPAM) allocate(ctx context.Context, pool poolInfo, sb storedBlock, ord int, handle string, h storedHandle, adopt string) (netip.Addr, bool, error) {
	ip := sb.st.addr(ord)
	rec := sb.st.with(ord, handle)
	cmps := []datastore.Guard{datastore.Unchanged(sb.key, sb.rev), datastore.Unchanged(h.key, h.rev), datastore.Unchanged(pool.key, pool.rev)}
	var ops []datastore.Write
	if adopt != "" {
		rec.Affinity = adopt
		ops = append(ops, datastore.WriteValue(datastore.AffinityKey(adopt, rec.CIDR), rec.CIDR))
	}
	ops = append(ops, datastore.WriteJSON(sb.key, rec), datastore.WriteJSON(h.key, h.withIP(handle, ip)))
	ok, err := m.commit(ctx, cmps, ops)
	return ip, ok, err
}

// claimAndAllocate creates a block affine to node holding ordinal ord for
// handle, together with the node's claim, in one transaction that fails if
// anyone created the block first.
func (m *IPAM) claimAndAllocate(ctx context.Context, pool poolInfo, st *blockState, ord int, node, handle string, h storedHandle) (netip.Addr, bool, error) {
	ip := st.addr(ord)
	cidr := st.prefix.String()
	bkey := datastore.BlockKey(cidr)
	cmps := []datastore.Guard{datastore.Unchanged(bkey, 0), datastore.Unchanged(h.key, h.rev), datastore.Unchanged(pool.key, pool.rev)}
	ops := []datastore.Write{
		datastore.WriteJSON(bkey, st.with(ord, handle)),
		datastore.WriteValue(datastore.AffinityKey(node, cidr), cidr),
		datastore.WriteJSON(h.key, h.withIP(handle, ip)),
	}
	ok, err := m.commit(ctx, cmps, ops)
	return ip, ok, err
}

// Release frees ip whoever holds it, and returns the handle that held it.
// It is the administrator's repair (`calicoctl ipam release`): code that
// gives back its own address uses ReleaseFrom, which cannot free another
// holder's.
func (m *IPAM) Release(ctx context.Context, ip netip.Addr) (string, error) {
	return m.release(ctx, ip, "")
}

// ReleaseFrom frees ip only while handle holds it. An address held by
// another handle is left assigned and the error (ErrNotHolder) names the
// holder: a stale endpoint record, a late retry, or a forged request must
// not free an address that has since gone to another workload, which would
// then be handed out twice. An address nobody holds is ErrNotAssigned.
func (m *IPAM) ReleaseFrom(ctx context.Context, ip netip.Addr, handle string) error {
	if err := checkName("handle", handle); err != nil {
		return err
	}
	_, err := m.release(ctx, ip, handle)
	return err
}

// release frees ip, only from handle when it is not "".
func (m *IPAM) release(ctx context.Context, ip netip.Addr, handle string) (string, error) {
	ip, err := checkAddr(ip)
	if err != nil {
		return "", err
	}
	var owner string
	err = m.retry(ctx, func() (bool, error) {
		sb, err := m.blockOf(ctx, ip)
		if err != nil {
			return false, err
		}
		if sb == nil {
			return false, errorf(ErrNotAssigned, "%s is not assigned", ip)
		}
		ord, _ := sb.st.ordinal(ip)
		var taken bool
		owner, taken = sb.st.owner(ord)
		if !taken {
			return false, errorf(ErrNotAssigned, "%s is not assigned", ip)
		}
		if handle != "" && owner != handle {
			return false, errorf(ErrNotHolder, "%s is held by %s, not by %s; left assigned", ip, owner, handle)
		}
		hkey := datastore.HandleKey(owner)
		r, err := m.read(ctx, datastore.ReadKey(hkey))
		if err != nil {
			return false, err
		}
		// The block's revision guards the owner we checked: if the address
		// changed hands since the read, the write fails and we look again.
		cmps := []datastore.Guard{datastore.Unchanged(sb.key, sb.rev)}
		ops := blockOps(*sb, sb.st.without(ord))
		// A missing or unreadable handle record must not keep the address
		// stuck; the block is what decides whether it is free.
		if h, err := handleFrom(hkey, r[0]); err == nil {
			cmps = append(cmps, datastore.Unchanged(hkey, h.rev))
			if h.rev != 0 {
				ops = append(ops, handleOp(hkey, h.withoutIPs(ip)))
			}
		}
		return m.commit(ctx, cmps, ops)
	})
	if err != nil {
		return "", err
	}
	return owner, nil
}

// blockOps writes a block's new record after a release. A block left empty
// is deleted together with its node's claim, in the same transaction: an
// empty block would otherwise stay claimed for ever (a failed `container
// add` or the last workload of a block leaving would leak it), keep a
// blackhole route and a BGP announcement for addresses nobody uses, and keep
// the pool from being removed cleanly. A host that needs addresses again
// claims a block anew, which costs one transaction.
func blockOps(sb storedBlock, rec api.Block) []datastore.Write {
	if len(rec.Allocations) > 0 {
		return []datastore.Write{datastore.WriteJSON(sb.key, rec)}
	}
	ops := []datastore.Write{datastore.WriteDelete(sb.key)}
	if rec.Affinity != "" {
		ops = append(ops, datastore.WriteDelete(datastore.AffinityKey(rec.Affinity, sb.st.prefix.String())))
	}
	return ops
}

// ReleaseHandle frees every address recorded for handle and deletes the
// handle, in one transaction, and returns the addresses freed. An unknown
// handle frees nothing and is not an error, so cleanup after a failed
// `container add` can always call it.
func (m *IPAM) ReleaseHandle(ctx context.Context, handle string) ([]netip.Addr, error) {
	return m.releaseHandle(ctx, handle, nil)
}

// releaseHandle is ReleaseHandle, with the conditions of guard (orphan.go)
// when it is not nil.
func (m *IPAM) releaseHandle(ctx context.Context, handle string, guard *orphanGuard) ([]netip.Addr, error) {
	if err := checkName("handle", handle); err != nil {
		return nil, err
	}
	hkey := datastore.HandleKey(handle)
	var released []netip.Addr
	err := m.retry(ctx, func() (bool, error) {
		released = nil
		r, err := m.read(ctx, append([]datastore.Read{datastore.ReadKey(hkey)}, guard.reads()...)...)
		if err != nil {
			return false, err
		}
		if len(r[0]) == 0 {
			return true, nil
		}
		h, err := handleFrom(hkey, r[0])
		if err != nil {
			return false, err
		}
		if err := guard.check(h, r[1:]); err != nil {
			return false, err
		}
		type change struct {
			sb   storedBlock
			ords []int
		}
		var changes []*change
		byKey := map[string]*change{}
		for _, txt := range h.h.IPs {
			a, err := netip.ParseAddr(txt)
			if err != nil {
				continue // unparseable: dropped with the handle
			}
			sb, err := m.blockOf(ctx, a)
			if err != nil {
				return false, err
			}
			if sb == nil {
				continue
			}
			c := byKey[sb.key]
			if c == nil {
				c = &change{sb: *sb}
				byKey[sb.key] = c
				changes = append(changes, c)
			}
			// Only free what the block agrees belongs to this handle: the
			// record may be stale, the block is authoritative.
			ord, _ := c.sb.st.ordinal(a)
			if owner, ok := c.sb.st.owner(ord); ok && owner == handle && !slices.Contains(c.ords, ord) {
				c.ords = append(c.ords, ord)
				released = append(released, a)
			}
		}
		cmps := append([]datastore.Guard{datastore.Unchanged(hkey, h.rev)}, guard.cmps()...)
		ops := []datastore.Write{datastore.WriteDelete(hkey)}
		for _, c := range changes {
			if len(c.ords) == 0 {
				continue
			}
			cmps = append(cmps, datastore.Unchanged(c.sb.key, c.sb.rev))
			ops = append(ops, blockOps(c.sb, c.sb.st.without(c.ords...))...)
		}
		return m.commit(ctx, cmps, ops)
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(released, netip.Addr.Compare)
	return released, nil
}

// blockOf returns the block holding ip, or nil when there is none.
func (m *IPAM) blockOf(ctx context.Context, ip netip.Addr) (*storedBlock, error) {
	r, err := m.read(ctx, datastore.ReadPrefix(datastore.PrefixPools))
	if err != nil {
		return nil, err
	}
	var expect netip.Prefix
	if p, ok := findPool(parsePools(r[0]), ip); ok && p.err == nil {
		expect = p.blockFor(ip)
	}
	sb, _, err := m.locateBlock(ctx, ip, expect)
	return sb, err
}

// locateBlock finds the block holding ip. It tries expect (the block the
// pool's block size implies) first; when that does not exist it scans every
// block key, so blocks of another size (a pool recreated with a different
// block size) or outside any pool (a pool removed under them) are still
// found. clash is an existing block overlapping expect without holding ip:
// creating expect would then make an address belong to two blocks.
func (m *IPAM) locateBlock(ctx context.Context, ip netip.Addr, expect netip.Prefix) (sb *storedBlock, clash netip.Prefix, err error) {
	get := func(key string) (*storedBlock, error) {
		r, err := m.read(ctx, datastore.ReadKey(key))
		if err != nil || len(r[0]) == 0 {
			return nil, err
		}
		kv := r[0][0]
		b := m.parseBlock(kv)
		if b.err != nil {
			return nil, errorf(ErrCorrupt, "%v", b.err)
		}
		if !b.st.prefix.Contains(ip) {
			return nil, errorf(ErrCorrupt, "block key %s holds block %s", key, b.st.prefix)
		}
		return &b, nil
	}
	if expect.IsValid() {
		if b, err := get(datastore.BlockKey(expect.String())); b != nil || err != nil {
			return b, netip.Prefix{}, err
		}
	}
	r, err := m.read(ctx, datastore.ReadKeysUnder(datastore.PrefixBlocks))
	if err != nil {
		return nil, netip.Prefix{}, err
	}
	for _, kv := range r[0] {
		p, err := netip.ParsePrefix(datastore.UnescapeCIDR(strings.TrimPrefix(kv.key, datastore.PrefixBlocks)))
		if err != nil {
			continue
		}
		if p.Contains(ip) {
			b, err := get(kv.key)
			return b, netip.Prefix{}, err
		}
		if expect.IsValid() && p.Overlaps(expect) {
			clash = p
		}
	}
	return nil, clash, nil
}

// Blocks lists every block with its affinity and use, in address order.
// Undecodable blocks are left out; Check reports them.
func (m *IPAM) Blocks(ctx context.Context) ([]BlockInfo, error) {
	blocks, err := m.allBlocks(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]BlockInfo, 0, len(blocks))
	for _, sb := range blocks {
		out = append(out, BlockInfo{
			CIDR:     sb.st.prefix.String(),
			Affinity: sb.st.rec.Affinity,
			Used:     sb.st.usedCount(),
			Size:     sb.st.size,
		})
	}
	return out, nil
}

// BlockAffinities maps every block's CIDR to the node it is affine to ("" for
// none), for route calculation.
func (m *IPAM) BlockAffinities(ctx context.Context) (map[string]string, error) {
	blocks, err := m.allBlocks(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(blocks))
	for _, sb := range blocks {
		out[sb.st.prefix.String()] = sb.st.rec.Affinity
	}
	return out, nil
}

// BlocksOf returns the CIDRs of the blocks node has claimed, in address
// order, for BGP announcement. It reads only the node's claims, which are
// written in the same transactions as the blocks' affinity.
func (m *IPAM) BlocksOf(ctx context.Context, node string) ([]string, error) {
	if err := checkName("node name", node); err != nil {
		return nil, err
	}
	r, err := m.read(ctx, datastore.ReadPrefix(datastore.AffinityPrefix(node)))
	if err != nil {
		return nil, err
	}
	var ps []netip.Prefix
	for _, kv := range r[0] {
		if p, err := netip.ParsePrefix(parseClaimKV(kv.key, kv.value, kv.rev).cidr); err == nil {
			ps = append(ps, p)
		}
	}
	slices.SortFunc(ps, comparePrefix)
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out, nil
}

func (m *IPAM) allBlocks(ctx context.Context) ([]storedBlock, error) {
	r, err := m.read(ctx, datastore.ReadPrefix(datastore.PrefixBlocks))
	if err != nil {
		return nil, err
	}
	var out []storedBlock
	for _, kv := range r[0] {
		if sb := m.parseBlock(kv); sb.err == nil {
			out = append(out, sb)
		}
	}
	sortBlocks(out)
	return out, nil
}

// Info describes ip: its pool, block, and holder. An address outside every
// pool is an error unless some block still holds it.
func (m *IPAM) Info(ctx context.Context, ip netip.Addr) (IPInfo, error) {
	ip, err := checkAddr(ip)
	if err != nil {
		return IPInfo{}, err
	}
	r, err := m.read(ctx, datastore.ReadPrefix(datastore.PrefixPools))
	if err != nil {
		return IPInfo{}, err
	}
	pools := parsePools(r[0])
	info := IPInfo{IP: ip.String()}
	var expect netip.Prefix
	if p, ok := findPool(pools, ip); ok {
		info.Pool = p.String()
		if p.err == nil {
			expect = p.blockFor(ip)
		}
	}
	sb, _, err := m.locateBlock(ctx, ip, expect)
	if err != nil {
		return IPInfo{}, err
	}
	if sb == nil {
		if info.Pool == "" {
			_, err := poolForAddr(pools, ip)
			return IPInfo{}, err
		}
		return info, nil
	}
	info.Block = sb.st.prefix.String()
	info.Affinity = sb.st.rec.Affinity
	ord, _ := sb.st.ordinal(ip)
	info.Handle, info.Assigned = sb.st.owner(ord)
	return info, nil
}

// InUse counts the addresses assigned inside poolCIDR, so a pool still in use
// is not removed. To remove a pool safely, disable it first (AutoAssign stops
// using it: its writes are guarded by the pool's revision), then check InUse.
func (m *IPAM) InUse(ctx context.Context, poolCIDR string) (int, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(poolCIDR))
	if err != nil {
		return 0, errorf(ErrInvalid, "bad pool CIDR %q: %v", poolCIDR, err)
	}
	blocks, err := m.allBlocks(ctx)
	if err != nil {
		return 0, err
	}
	return countInPrefix(blocks, p.Masked()), nil
}

// maxPoolRemoveOps keeps a pool removal's transactions well under etcd's
// default limit of 128 operations per transaction.
const maxPoolRemoveOps = 100

// RemovePool deletes the pool stored at poolKey together with its empty
// blocks and their claims. It refuses, with ErrInUse and the count, while
// addresses inside the pool are assigned, unless force is set; forced, blocks
// still holding addresses are kept (their addresses stay assigned, and
// `ipam check` lists them as outside every pool until they are released).
//
// The count and the delete cannot be separated by an assignment: the delete
// is one transaction guarded by the pool's revision and by no block key
// having changed since the count was read, and every assignment writes a
// block key and is itself guarded by the pool's revision. This is stronger
// than disabling the pool before counting, and has no side effect when the
// removal is refused: disabling (and re-enabling) the last pool of a family
// would make concurrent automatic assignments fail meanwhile.
func (m *IPAM) RemovePool(ctx context.Context, poolKey string, force bool) (inUse int, err error) {
	err = m.retry(ctx, func() (bool, error) {
		r, rev, err := m.readAt(ctx,
			datastore.ReadKey(poolKey),
			datastore.ReadPrefix(datastore.PrefixBlocks),
			datastore.ReadPrefix(datastore.PrefixAffinities))
		if err != nil {
			return false, err
		}
		if len(r[0]) == 0 {
			return false, errorf(ErrNoPools, "no pool at %s; list pools with `calicoctl pool show`", poolKey)
		}
		pool := parsePool(r[0][0].key, r[0][0].value, r[0][0].rev)
		if !pool.prefix.IsValid() {
			// An undecodable pool holds no blocks we could recognise.
			return m.commit(ctx, []datastore.Guard{datastore.Unchanged(poolKey, pool.rev)}, []datastore.Write{datastore.WriteDelete(poolKey)})
		}
		var blocks []storedBlock
		for _, e := range r[1] {
			if sb := m.parseBlock(e); sb.err == nil {
				blocks = append(blocks, sb)
			}
		}
		inUse = countInPrefix(blocks, pool.prefix)
		if inUse > 0 && !force {
			return false, errorf(ErrInUse, "pool %s has %d address(es) in use; remove those workloads first, or use --force", pool.prefix, inUse)
		}
		var claims []claim
		for _, e := range r[2] {
			claims = append(claims, parseClaimKV(e.key, e.value, e.rev))
		}
		groups := poolRemovalOps(pool, blocks, claims)
		var ops []datastore.Write
		var cmps []datastore.Guard
		for len(groups) > 0 && len(ops)+len(groups[0].ops) <= maxPoolRemoveOps {
			ops = append(ops, groups[0].ops...)
			if groups[0].block != nil {
				cmps = append(cmps, datastore.Unchanged(groups[0].block.key, groups[0].block.rev))
			}
			groups = groups[1:]
		}
		if len(groups) > 0 {
			// Too many for one transaction: delete this batch of empty
			// blocks (harmless on its own: each is guarded by its revision)
			// and start over from a fresh read.
			if _, err := m.commit(ctx, cmps, ops); err != nil {
				return false, err
			}
			return false, nil
		}
		cmps = []datastore.Guard{
			datastore.Unchanged(poolKey, pool.rev),
			datastore.NoneChangedAfter(datastore.PrefixBlocks, rev),
		}
		return m.commit(ctx, cmps, append([]datastore.Write{datastore.WriteDelete(poolKey)}, ops...))
	})
	return inUse, err
}

// removal is the deletion of one empty block with its claim, or of one
// claim left without its block.
type removal struct {
	block *storedBlock
	ops   []datastore.Write
}

// poolRemovalOps plans the deletion of the pool's empty blocks with their
// claims, and of any other claim on a block of the pool that is absent or
// being deleted.
func poolRemovalOps(pool poolInfo, blocks []storedBlock, claims []claim) []removal {
	var out []removal
	deleted := map[string]bool{}                                       // claim keys deleted with their block
	existing, gone := map[netip.Prefix]bool{}, map[netip.Prefix]bool{} // blocks, and those being deleted
	for i := range blocks {
		sb := &blocks[i]
		existing[sb.st.prefix] = true
		if !pool.containsBlock(sb.st.prefix) || sb.st.usedCount() > 0 {
			continue
		}
		gone[sb.st.prefix] = true
		r := removal{block: sb, ops: []datastore.Write{datastore.WriteDelete(sb.key)}}
		if sb.st.rec.Affinity != "" {
			k := datastore.AffinityKey(sb.st.rec.Affinity, sb.st.prefix.String())
			deleted[k] = true
			r.ops = append(r.ops, datastore.WriteDelete(k))
		}
		out = append(out, r)
	}
	for _, c := range claims {
		p, err := netip.ParsePrefix(c.cidr)
		if err != nil || deleted[c.key] || existing[p] && !gone[p] || !pool.containsBlock(p) {
			continue
		}
		out = append(out, removal{ops: []datastore.Write{datastore.WriteDelete(c.key)}})
	}
	return out
}

// countInPrefix counts allocated addresses inside p.
func countInPrefix(blocks []storedBlock, p netip.Prefix) int {
	n := 0
	for _, sb := range blocks {
		if !sb.st.prefix.Overlaps(p) {
			continue
		}
		if p.Bits() <= sb.st.prefix.Bits() {
			n += len(sortedOrdinals(sb.st))
			continue
		}
		for _, ord := range sortedOrdinals(sb.st) {
			if p.Contains(sb.st.addr(ord)) {
				n++
			}
		}
	}
	return n
}

// Check compares blocks, handles and claims at one revision. liveHandles is
// the set of handles that should exist (those of live endpoints); addresses
// held by any other handle are reported as leaked. nil skips leak detection.
func (m *IPAM) Check(ctx context.Context, liveHandles map[string]bool) (CheckReport, error) {
	r, err := m.read(ctx,
		datastore.ReadPrefix(datastore.PrefixPools),
		datastore.ReadPrefix(datastore.PrefixBlocks),
		datastore.ReadPrefix(datastore.PrefixHandles),
		datastore.ReadPrefix(datastore.PrefixAffinities))
	if err != nil {
		return CheckReport{}, err
	}
	s := snapshot{pools: parsePools(r[0])}
	for _, kv := range r[1] {
		s.blocks = append(s.blocks, parseBlockKV(kv.key, kv.value, kv.rev))
	}
	for _, kv := range r[2] {
		s.handles = append(s.handles, parseHandleKV(kv.key, kv.value, kv.rev))
	}
	for _, kv := range r[3] {
		s.claims = append(s.claims, parseClaimKV(kv.key, kv.value, kv.rev))
	}
	return checkSnapshot(s, liveHandles), nil
}

// ReleaseNodeBlocks is for removing a node: its empty blocks are deleted,
// blocks still holding addresses lose their affinity (the addresses stay
// assigned; another node may adopt the block later), and its claims go.
func (m *IPAM) ReleaseNodeBlocks(ctx context.Context, node string) error {
	if err := checkName("node name", node); err != nil {
		return err
	}
	return m.retry(ctx, func() (bool, error) {
		r, err := m.read(ctx, datastore.ReadPrefix(datastore.PrefixBlocks), datastore.ReadPrefix(datastore.AffinityPrefix(node)))
		if err != nil {
			return false, err
		}
		var blocks []storedBlock
		for _, kv := range r[0] {
			if sb := m.parseBlock(kv); sb.err == nil {
				blocks = append(blocks, sb)
			}
		}
		var claims []claim
		for _, kv := range r[1] {
			claims = append(claims, parseClaimKV(kv.key, kv.value, kv.rev))
		}
		for _, s := range planNodeRelease(node, blocks, claims) {
			var cmps []datastore.Guard
			var ops []datastore.Write
			if s.block != nil {
				cmps = append(cmps, datastore.Unchanged(s.block.key, s.block.rev))
				if s.deleteBlock {
					ops = append(ops, datastore.WriteDelete(s.block.key))
				} else {
					rec := s.block.st.rec
					rec.Affinity = ""
					ops = append(ops, datastore.WriteJSON(s.block.key, rec))
				}
			}
			if s.claim != nil {
				cmps = append(cmps, datastore.Unchanged(s.claim.key, s.claim.rev))
				ops = append(ops, datastore.WriteDelete(s.claim.key))
			}
			ok, err := m.commit(ctx, cmps, ops)
			if err != nil || !ok {
				// Lost a race: re-plan from a fresh read; steps already done
				// no longer show up in it.
				return false, err
			}
		}
		return true, nil
	})
}

// releaseStep is one transaction of ReleaseNodeBlocks: a block of the node
// (deleted when empty, else stripped of affinity) and/or its claim.
type releaseStep struct {
	block       *storedBlock
	deleteBlock bool
	claim       *claim
}

// planNodeRelease is the pure part of ReleaseNodeBlocks. Blocks are found by
// their affinity as well as by claims, so a half-written state left by older
// code or a manual edit is cleaned up too.
func planNodeRelease(node string, blocks []storedBlock, claims []claim) []releaseStep {
	byKey := map[string]*claim{}
	for i := range claims {
		byKey[claims[i].key] = &claims[i]
	}
	var steps []releaseStep
	for i := range blocks {
		b := &blocks[i]
		if b.st == nil || b.st.rec.Affinity != node {
			continue
		}
		ckey := datastore.AffinityKey(node, b.st.prefix.String())
		s := releaseStep{block: b, deleteBlock: b.st.usedCount() == 0, claim: byKey[ckey]}
		delete(byKey, ckey)
		steps = append(steps, s)
	}
	for _, c := range claims {
		if _, ok := byKey[c.key]; ok {
			steps = append(steps, releaseStep{claim: byKey[c.key]})
		}
	}
	return steps
}

// ---- etcd plumbing ----

// kv is the part of an etcd key-value this package uses.
type kv struct {
	key   string
	value []byte
	rev   int64 // ModRevision
}

// read runs gets in one transaction, so they see one revision.
func (m *IPAM) read(ctx context.Context, gets ...datastore.Read) ([][]kv, error) {
	out, _, err := m.readAt(ctx, gets...)
	return out, err
}

// readAt is read that also returns the revision the gets saw.
func (m *IPAM) readAt(ctx context.Context, gets ...datastore.Read) ([][]kv, int64, error) {
	recs, rev, err := m.store.Read(ctx, gets...)
	if errors.Is(err, datastore.ErrUnreachable) {
		return nil, 0, err // already says what to do
	} else if err != nil {
		return nil, 0, fmt.Errorf("reading IPAM data from etcd: %w", err)
	}
	out := make([][]kv, len(recs))
	for i, r := range recs {
		out[i] = make([]kv, len(r))
		for j, e := range r {
			out[i][j] = kv{key: e.Key, value: e.Value, rev: e.Rev}
		}
	}
	return out, rev, nil
}

// commit runs a guarded write; false means a guard failed (someone else
// wrote first) and nothing was written.
func (m *IPAM) commit(ctx context.Context, cmps []datastore.Guard, ops []datastore.Write) (bool, error) {
	ok, err := m.store.Commit(ctx, cmps, ops)
	if errors.Is(err, datastore.ErrUnreachable) {
		// A write that timed out may or may not have been applied; either
		// way the state is consistent (one transaction), and `calicoctl
		// ipam check` shows a claim nobody holds.
		return false, err
	} else if err != nil {
		return false, fmt.Errorf("writing IPAM data to etcd: %w", err)
	}
	return ok, nil
}

// handleOp writes a handle record, deleting it once it holds nothing.
func handleOp(key string, h api.Handle) datastore.Write {
	if len(h.IPs) == 0 {
		return datastore.WriteDelete(key)
	}
	return datastore.WriteJSON(key, h)
}

// handleFrom decodes a handle read by a single-key get.
func handleFrom(key string, kvs []kv) (storedHandle, error) {
	if len(kvs) == 0 {
		return storedHandle{key: key}, nil
	}
	h := parseHandleKV(key, kvs[0].value, kvs[0].rev)
	if h.err != nil {
		return h, errorf(ErrCorrupt, "%v", h.err)
	}
	return h, nil
}

func parsePools(kvs []kv) []poolInfo {
	out := make([]poolInfo, 0, len(kvs))
	for _, e := range kvs {
		out = append(out, parsePool(e.key, e.value, e.rev))
	}
	slices.SortFunc(out, func(a, b poolInfo) int { return strings.Compare(a.String(), b.String()) })
	return out
}

// retryBudget bounds one operation's retries in time as maxAttempts does in
// number: each etcd call has its own deadline, and this keeps a datastore
// that answers, but slowly, from multiplying it by a hundred.
const retryBudget = 20 * time.Second

// retry runs attempt until it is done or fails, backing off with jitter
// after each lost race so contending writers fall out of step.
func (m *IPAM) retry(ctx context.Context, attempt func() (bool, error)) error {
	start := time.Now()
	for i := range maxAttempts {
		done, err := attempt()
		if err != nil || done {
			return err
		}
		m.conflicts.Add(1)
		if time.Since(start) > retryBudget {
			return errorf(ErrConflict, "gave up after %s: other writers kept changing the same IPAM keys", retryBudget)
		}
		d := time.Duration(rand.Int64N(int64(time.Millisecond) << min(i, 5)))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	return errorf(ErrConflict, "gave up after %d attempts: other writers kept changing the same IPAM keys", maxAttempts)
}

// lockNode takes this process's lock for node (see IPAM.nodeLocks).
func (m *IPAM) lockNode(ctx context.Context, node string) (func(), error) {
	m.mu.Lock()
	l := m.nodeLocks[node]
	if l == nil {
		l = make(chan struct{}, 1)
		m.nodeLocks[node] = l
	}
	m.mu.Unlock()
	select {
	case l <- struct{}{}:
		return func() { <-l }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func checkAddr(ip netip.Addr) (netip.Addr, error) {
	if !ip.IsValid() {
		return ip, errorf(ErrInvalid, "invalid IP address")
	}
	if ip.Zone() != "" {
		return ip, errorf(ErrInvalid, "%s: workload addresses have no zone", ip)
	}
	return ip.Unmap(), nil
}

func checkNames(handle, node string) error {
	if err := checkName("handle", handle); err != nil {
		return err
	}
	return checkName("node name", node)
}

// checkName validates a handle or node name: each becomes one etcd key
// segment, so it must be non-empty and free of '/'.
func checkName(what, v string) error {
	if v == "" {
		return errorf(ErrInvalid, "%s must not be empty", what)
	}
	if strings.ContainsAny(v, "/ \t\n") {
		return errorf(ErrInvalid, "%s %q must not contain '/' or whitespace", what, v)
	}
	return nil
}
