// Taking addresses: a given one (Assign) or any free one (AutoAssign, whose
// strategies are in autoassign.go), and the two transactions that do it.

package ipam

import (
	"context"
	"net/netip"
	"slices"
	"strings"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
)

// Assign takes the specific address ip for handle on node. The address must
// lie in a pool (disabled pools included: they only stop automatic
// assignment) and be free. If its block does not exist yet it is created
// with affinity to node.
//
// Assignments on one node mostly hit the same block record, so within this
// process they take turns per node (taking them at once cost a round of
// failed compare-and-swaps each: 653 retries for 200 adds in bursts of 20,
// measured by bench). Taking turns one by one, though, queued a burst of
// 20 behind 19 disk commits of etcd (0.16-0.27 s in the bench's bursts).
// So whoever gets the turn takes every assignment waiting for the node
// (assignBatch): those in existing blocks in one transaction.
func (m *IPAM) Assign(ctx context.Context, ip netip.Addr, handle, node string) error {
	ip, err := checkAddr(ip)
	if err != nil {
		return err
	}
	if err := checkNames(handle, node); err != nil {
		return err
	}
	req := &assignReq{ip: ip, handle: handle, done: make(chan error, 1)}
	m.mu.Lock()
	m.pending[node] = append(m.pending[node], req)
	m.mu.Unlock()
	unlock, err := m.lockNode(ctx, node)
	if err != nil {
		if withdraw(m, m.pending, node, req) {
			return err
		}
		// Another caller's batch took it: its answer comes within the
		// datastore's deadlines.
		return <-req.done
	}
	defer unlock()
	m.mu.Lock()
	batch := m.pending[node]
	delete(m.pending, node)
	m.mu.Unlock()
	if len(batch) > 0 {
		// Others' assignments too: finish them even if this caller gives up.
		m.assignBatch(context.WithoutCancel(ctx), node, batch)
	}
	return <-req.done
}

// assignReq is one Assign waiting for its node's turn.
type assignReq struct {
	ip     netip.Addr
	handle string
	done   chan error // buffered: the answer, sent once
}

// withdraw takes req out of node's queue q; false when a batch already
// took it.
func withdraw[R comparable](m *IPAM, q map[string][]R, node string, req R) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := slices.Index(q[node], req)
	if i < 0 {
		return false
	}
	q[node] = slices.Delete(q[node], i, i+1)
	return true
}

// assignBatch answers every request of batch (all for node): those whose
// block exists, each for its own handle and address, in one transaction
// (retried as a whole when a guard fails); the rest (a new block, a handle
// or address asked for twice) one by one.
func (m *IPAM) assignBatch(ctx context.Context, node string, batch []*assignReq) {
	var alone []*assignReq
	answers := map[*assignReq]error{}
	err := m.retry(ctx, func() (bool, error) {
		alone, answers = nil, map[*assignReq]error{}
		reads := []datastore.Read{datastore.ReadPrefix(datastore.PrefixPools)}
		guessed := map[netip.Prefix]int{} // block -> index of its read
		// rs[1+i] is request i's handle, then the blocks guessed.
		for _, r := range batch {
			reads = append(reads, datastore.ReadKey(datastore.HandleKey(r.handle)))
		}
		for _, r := range batch {
			if g := m.guessBlock(r.ip); g.IsValid() {
				if _, ok := guessed[g]; !ok {
					guessed[g] = len(reads)
					reads = append(reads, datastore.ReadKey(datastore.BlockKey(g.String())))
				}
			}
		}
		rs, err := m.read(ctx, reads...)
		if err != nil {
			return false, err
		}
		pools := parsePools(rs[0])
		m.notePools(pools)
		type blockWrite struct {
			sb   *storedBlock
			rec  api.Block
			pool poolInfo
		}
		blocks := map[netip.Prefix]*blockWrite{}
		handles := map[string]storedHandle{}
		var took []*assignReq
		for i, r := range batch {
			pool, err := poolForAddr(pools, r.ip)
			if err != nil {
				answers[r] = err
				continue
			}
			bp := pool.blockFor(r.ip)
			at, ok := guessed[bp]
			_, twice := handles[r.handle]
			if !ok || len(rs[at]) == 0 || twice {
				alone = append(alone, r)
				continue
			}
			h, err := handleFrom(datastore.HandleKey(r.handle), rs[1+i])
			if err != nil {
				answers[r] = err
				continue
			}
			bw := blocks[bp]
			if bw == nil {
				sb, err := m.blockHolding(rs[at][0], r.ip)
				if err != nil {
					answers[r] = err
					continue
				}
				// A copy of the record (nothing freed) to add the batch's to.
				bw = &blockWrite{sb: sb, rec: sb.st.without(), pool: pool}
				blocks[bp] = bw
			}
			ord, _ := bw.sb.st.ordinal(r.ip)
			if owner, taken := bw.sb.st.owner(ord); taken {
				answers[r] = errorf(ErrAlreadyAssigned, "%s is already assigned (to %s)", r.ip, owner)
				continue
			}
			if _, again := bw.rec.Allocations[ord]; again {
				alone = append(alone, r) // asked twice in the batch: the second fails alone
				continue
			}
			bw.rec.Allocations[ord] = r.handle
			handles[r.handle] = h
			took = append(took, r)
		}
		if len(took) == 0 {
			return true, nil
		}
		var tx batchTxn
		for _, bw := range blocks {
			tx.block(*bw.sb, bw.rec, bw.pool)
		}
		for _, r := range took {
			tx.handle(handles[r.handle], r.handle, r.ip)
			answers[r] = nil
		}
		return m.commit(ctx, tx.guards, tx.writes)
	})
	for _, r := range batch {
		if slices.Contains(alone, r) {
			continue
		}
		if err != nil {
			r.done <- err
			continue
		}
		r.done <- answers[r]
	}
	for _, r := range alone {
		if err != nil {
			r.done <- err
			continue
		}
		r.done <- m.assignOne(ctx, r.ip, r.handle, node)
	}
}

// assignOne is Assign for one address, under the node's turn.
func (m *IPAM) assignOne(ctx context.Context, ip netip.Addr, handle, node string) error {
	hkey := datastore.HandleKey(handle)
	return m.retry(ctx, func() (bool, error) {
		// The address's block, as the pools last read lay it out, in the
		// same read as the pools and the handle: one round trip fewer
		// under the node's lock, where a burst of adds queues.
		reads := []datastore.Read{datastore.ReadPrefix(datastore.PrefixPools), datastore.ReadKey(hkey)}
		guess := m.guessBlock(ip)
		if guess.IsValid() {
			reads = append(reads, datastore.ReadKey(datastore.BlockKey(guess.String())))
		}
		r, err := m.read(ctx, reads...)
		if err != nil {
			return false, err
		}
		pools := parsePools(r[0])
		m.notePools(pools)
		pool, err := poolForAddr(pools, ip)
		if err != nil {
			return false, err
		}
		h, err := handleFrom(hkey, r[1])
		if err != nil {
			return false, err
		}
		bp := pool.blockFor(ip)
		var sb *storedBlock
		var clash netip.Prefix
		if bp == guess && len(r[2]) > 0 {
			sb, err = m.blockHolding(r[2][0], ip)
		} else {
			// No block there yet (or the pools changed): look for one
			// that overlaps before creating it.
			sb, clash, err = m.locateBlock(ctx, ip, bp)
		}
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
//
// Within this process the calls for one node take turns, as Assign's do,
// and whoever gets the turn takes every call waiting for the node
// (autoBatch): the agent serving a burst of 20 CNI ADDs, one at a time,
// queued the 20th behind 19 rounds of two reads and an etcd commit
// (CNI bursts of 20: p50 330 ms, p99 618 ms in the bench). A batch whose
// addresses fit in the node's own blocks is one read and one transaction.
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
	req := &autoReq{handle: handle, family: family, restrict: restrict, done: make(chan autoAnswer, 1)}
	m.mu.Lock()
	m.pendingAuto[node] = append(m.pendingAuto[node], req)
	m.mu.Unlock()
	unlock, err := m.lockNode(ctx, node)
	if err != nil {
		if withdraw(m, m.pendingAuto, node, req) {
			return netip.Addr{}, err
		}
		// Another caller's batch took it: its answer comes within the
		// datastore's deadlines.
		a := <-req.done
		return a.ip, a.err
	}
	defer unlock()
	m.mu.Lock()
	batch := m.pendingAuto[node]
	delete(m.pendingAuto, node)
	m.mu.Unlock()
	if len(batch) > 0 {
		// Others' calls too: finish them even if this caller gives up.
		m.autoBatch(context.WithoutCancel(ctx), node, batch)
	}
	a := <-req.done
	return a.ip, a.err
}

// autoAssignOne is one AutoAssign on its own, under the node's turn: every
// strategy, retried from a fresh read after a lost race.
func (m *IPAM) autoAssignOne(ctx context.Context, handle, node string, family int, restrict []netip.Prefix) (netip.Addr, error) {
	var got netip.Addr
	err := m.retry(ctx, func() (bool, error) {
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
