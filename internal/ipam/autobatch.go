// AutoAssign in batches: the calls waiting for one node's turn, answered
// from the node's own blocks in one read and one transaction.

package ipam

import (
	"context"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
)

// autoReq is one AutoAssign waiting for its node's turn.
type autoReq struct {
	handle   string
	family   int
	restrict []netip.Prefix
	done     chan autoAnswer // buffered: the answer, sent once
}

type autoAnswer struct {
	ip  netip.Addr
	err error
}

// autoBatch answers every request of batch (all for node). Rounds of
// autoRound take what fits in the node's own blocks, all at once; when a
// round places nothing (the blocks are full, or a handle is asked for in
// every request left), the first request left runs every strategy alone
// (autoAssignOne: a new block, an orphan, a borrowed address), which makes
// room for the next round.
func (m *IPAM) autoBatch(ctx context.Context, node string, batch []*autoReq) {
	rest := batch
	for len(rest) > 0 {
		left, err := m.autoRound(ctx, node, rest)
		if err != nil {
			for _, r := range rest {
				r.done <- autoAnswer{err: err}
			}
			return
		}
		if len(left) == len(rest) {
			r := left[0]
			left = left[1:]
			ip, err := m.autoAssignOne(ctx, r.handle, node, r.family, r.restrict)
			r.done <- autoAnswer{ip: ip, err: err}
		}
		rest = left
	}
}

// blockPlan is one block's record as a round is changing it.
type blockPlan struct {
	sb   storedBlock
	rec  api.Block // a copy: the decoded state may be shared
	used bitmap    // sb's, plus this round's picks
	pool poolInfo
}

// autoRound takes, for the requests of batch in order, the lowest free
// address of the node's own blocks in each one's candidate pools, in one
// read (pools, the node's claims, the handles, and the blocks the claims
// named last time: only the revision of those last decoded with every
// address taken, see fullBlocks, and not even that within fullRecheck of
// finding them unchanged) and one transaction guarded by every
// block, pool and handle it read; a lost race reruns the round from a
// fresh read. It
// answers the requests it placed or that failed on their own (a pool they
// name is gone, a handle record is corrupt), and returns the others: those
// that found no room, and a second request for a handle already in the
// round (it goes in a later round, seeing the first one's write). An error
// is the round's as a whole (the datastore's), for every request of batch.
func (m *IPAM) autoRound(ctx context.Context, node string, batch []*autoReq) ([]*autoReq, error) {
	var left []*autoReq
	ips := map[*autoReq]netip.Addr{}
	failed := map[*autoReq]error{}
	err := m.retry(ctx, func() (bool, error) {
		left = nil
		clear(ips)
		clear(failed)
		m.mu.Lock()
		guess := slices.Clone(m.lastClaims[node])
		full := m.fullBlocks(guess)
		gen := m.releases.Load()
		fc := m.fullChecked[node]
		trusted := len(full) > 0 && time.Since(fc.at) < m.recheck && fc.releases == gen
		m.mu.Unlock()
		reads := []datastore.Read{datastore.ReadPrefix(datastore.PrefixPools), datastore.ReadPrefix(datastore.AffinityPrefix(node))}
		for _, r := range batch {
			reads = append(reads, datastore.ReadKey(datastore.HandleKey(r.handle)))
		}
		got := make([][]kv, len(guess)) // by guess; a trusted full block's stays empty
		var at []int                    // guess indexes of the block reads
		for i, k := range guess {
			if _, ok := full[k]; ok {
				if trusted {
					continue
				}
				reads = append(reads, datastore.ReadRevision(k))
			} else {
				reads = append(reads, datastore.ReadKey(k))
			}
			at = append(at, i)
		}
		t0 := time.Now()
		rs, err := m.read(ctx, reads...)
		if err != nil {
			return false, err
		}
		for j, i := range at {
			got[i] = rs[2+len(batch)+j]
		}
		pools := parsePools(rs[0])
		mine, fullHeld, err := m.ownBlocks(ctx, node, pools, rs[1], guess, full, trusted, got)
		if err != nil {
			return false, err
		}
		if fullHeld && !trusted {
			m.mu.Lock()
			// A release begun or written since the round started may
			// have given one of them room after the read.
			if m.releases.Load() == gen {
				m.fullChecked[node] = fullCheck{at: t0, releases: gen}
			}
			m.mu.Unlock()
		}
		plans := map[string]*blockPlan{}
		handles := map[string]storedHandle{}
		var took []*autoReq
		for i, r := range batch {
			if _, twice := handles[r.handle]; twice {
				left = append(left, r)
				continue
			}
			cands, err := selectPools(pools, r.family, r.restrict)
			if err != nil {
				failed[r] = err
				continue
			}
			h, err := handleFrom(datastore.HandleKey(r.handle), rs[2+i])
			if err != nil {
				failed[r] = err
				continue
			}
			ip, ok := pickOwn(mine, cands, plans, r.handle)
			if !ok {
				left = append(left, r)
				continue
			}
			ips[r] = ip
			handles[r.handle] = h
			took = append(took, r)
		}
		if len(took) == 0 {
			return true, nil
		}
		var tx batchTxn
		for _, p := range plans {
			tx.block(p.sb, p.rec, p.pool)
		}
		for _, r := range took {
			tx.handle(handles[r.handle], r.handle, ips[r])
		}
		return m.commit(ctx, tx.guards, tx.writes)
	})
	if err != nil {
		return nil, err
	}
	for _, r := range batch {
		if err, ok := failed[r]; ok {
			r.done <- autoAnswer{err: err}
		} else if ip, ok := ips[r]; ok {
			r.done <- autoAnswer{ip: ip}
		}
	}
	return left, nil
}

// fullRecheck is how long a node's full blocks, once read unchanged, are
// taken as still full without reading them again. Reading the revision of
// each of them in every round cost the etcd transaction one range per
// block: at 1000 workloads 15 of a node's 16 blocks, and the round's read
// grew from 4 ranges to 19 (the bench's IPAM phase of one more endpoint
// took 2.6 ms next to 10 and 4.1-4.5 next to 1000). A full block can gain
// room only by a release: one by any allocator of this process ends the
// trust at once (processReleases), another process's is seen at the next
// check, within fullRecheck, or as soon as the node's other blocks fill up
// (autoAssignOne's strategies read every block before claiming a new one,
// two more reads for that one call). Until then the address freed waits
// and a higher one is handed out: never one that is taken, as the
// transaction is guarded by every block it writes.
const fullRecheck = 10 * time.Second

// fullCheck is when a node's full blocks were last read unchanged, and
// the releases counter then.
type fullCheck struct {
	at       time.Time
	releases uint64
}

// processReleases counts the releases this process's allocators began or
// wrote: the agent's CNI server, its sweeper and the Docker plugin each
// have their own IPAM, and a release by any of them must end the others'
// trust in a node's full blocks.
var processReleases atomic.Uint64

// released is called before and after a release's commit: a round that
// read the block before the commit, or started before the call, sees the
// counter move and does not start trusting.
func (m *IPAM) released() {
	m.releases.Add(1)
}

// fullBlocks are those of keys whose last decoded record (the decode
// cache's) has every address taken, with that record's revision: a block
// still at that revision has no room for any request in any pool, so a
// round reads only its revision, not its value (at 1000 workloads a node
// claims 16 /26 blocks, 15 of them full: a round read 17 KB of values,
// now 3 KB; BenchmarkAutoAssignNextTo). A block written since (an address
// released, by any process) has another revision and is read in full.
// Called with m.mu held.
func (m *IPAM) fullBlocks(keys []string) map[string]int64 {
	var full map[string]int64
	for _, k := range keys {
		if c, ok := m.decoded[k]; ok && c.st.full() {
			if full == nil {
				full = map[string]int64{}
			}
			full[k] = c.rev
		}
	}
	return full
}

// ownBlocks are the blocks node's claims name whose records agree (a
// claim whose block says otherwise is stale: the block decides) and that
// may have room, in address order: those among the guessed keys from their
// read (got), the others read now. A guessed key read for its revision
// only (full, by the revision it was full at) is left out while that
// revision holds and read now when it does not; with trusted, a full
// guessed key was not read at all and is left out. fullHeld says every
// full guessed key the claims still name was read and found unchanged.
// The keys the claims name are remembered for the next guess.
func (m *IPAM) ownBlocks(ctx context.Context, node string, pools []poolInfo, claims []kv, guess []string, full map[string]int64, trusted bool, got [][]kv) (mine []storedBlock, fullHeld bool, err error) {
	var keys []string
	for _, kv := range claims {
		c := parseClaimKV(kv.key, kv.value, kv.rev)
		p, err := netip.ParsePrefix(c.cidr)
		if err != nil {
			continue
		}
		if _, ok := poolForBlock(pools, p); ok {
			keys = append(keys, datastore.BlockKey(p.String()))
		}
	}
	m.mu.Lock()
	m.lastClaims[node] = keys
	m.mu.Unlock()
	var recs []kv
	var missing []datastore.Read
	fullHeld = true
	for _, k := range keys {
		i := slices.Index(guess, k)
		fullAt, wasFull := full[k]
		switch {
		case i < 0:
			missing = append(missing, datastore.ReadKey(k))
		case wasFull && trusted:
			// Full when last seen, within fullRecheck: no room.
		case wasFull && len(got[i]) > 0 && got[i][0].rev == fullAt:
			// Unchanged since every address was taken: no room.
		case wasFull && len(got[i]) > 0:
			missing = append(missing, datastore.ReadKey(k))
			fullHeld = false
		case wasFull:
			// Gone since (its claim still there): nothing to read, and
			// nothing to trust until it is seen again.
			fullHeld = false
		default:
			recs = append(recs, got[i]...)
		}
	}
	if len(missing) > 0 {
		// A claim made since the last read (by another process, or by
		// autoAssignOne), or a full block written since: read in a second
		// round trip. The transaction's guards keep the two reads honest,
		// and it writes only blocks read with their values.
		rb, err := m.read(ctx, missing...)
		if err != nil {
			return nil, false, err
		}
		for _, r := range rb {
			recs = append(recs, r...)
		}
	}
	for _, kv := range recs {
		if sb := m.parseBlock(kv); sb.err == nil && sb.st.rec.Affinity == node {
			mine = append(mine, sb)
		}
	}
	sortBlocks(mine)
	return mine, fullHeld, nil
}

// pickOwn takes the lowest free address for handle in the first of blocks
// that lies in a candidate pool and has room, as planned so far (plans,
// by block key, get the pick); false when none has room.
func pickOwn(blocks []storedBlock, cands []poolInfo, plans map[string]*blockPlan, handle string) (netip.Addr, bool) {
	for _, sb := range blocks {
		pool, ok := poolForBlock(cands, sb.st.prefix)
		if !ok {
			continue
		}
		used := sb.st.used
		p := plans[sb.key]
		if p != nil {
			used = p.used
		}
		first, last := pool.reservedIn(sb.st.prefix)
		ord := used.firstFree(sb.st.size, first, last)
		if ord < 0 {
			continue
		}
		if p == nil {
			p = &blockPlan{sb: sb, rec: sb.st.without(), used: slices.Clone(sb.st.used), pool: pool}
			plans[sb.key] = p
		}
		p.used.set(ord)
		p.rec.Allocations[ord] = handle
		return sb.st.addr(ord), true
	}
	return netip.Addr{}, false
}
