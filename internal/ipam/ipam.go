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
//
// The package talks to the datastore only through Store: reads that see one
// revision and guarded writes (txn.go), never an etcd client. By concern:
// assign.go and autoassign.go (one function per strategy) take addresses,
// release.go gives them back, removepool.go removes a pool, nodes.go
// releases a removed node's blocks, lookup.go answers questions, check.go
// audits; pool.go, block.go, bitmap.go and records.go are the pure
// decoding and arithmetic the others plan with.
package ipam

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/calico-go/calico/internal/datastore"
)

// IPAM is the address allocator. It is safe for concurrent use.
type IPAM struct {
	// store runs the transactions. It bounds every call (see
	// datastore.Calls): a caller's context may have no deadline at all
	// (calicoctl's has none, and undo steps run without cancellation), and
	// a frozen etcd must not hang them.
	store Store

	mu sync.Mutex
	// nodeLocks serializes assignment per node within this process. Callers
	// on one host assign from the same block, so letting them race would
	// only turn into transaction conflicts and retries; across processes
	// and hosts the transactions alone keep assignment correct.
	nodeLocks map[string]chan struct{}
	// pending are the Assign calls waiting for their node's turn; the
	// caller that gets it answers them all (assignBatch).
	pending map[string][]*assignReq
	// pendingAuto are the AutoAssign calls waiting for their node's turn
	// (autoBatch).
	pendingAuto map[string][]*autoReq
	// lastClaims are the block keys a node's affinity claims named when
	// last read, so the next batch reads those blocks with the claims
	// instead of after them (checked against the claims it reads).
	lastClaims map[string][]string
	// fullChecked is when a node's full blocks (as the decode cache has
	// them) were last seen unchanged, and the count of releases then:
	// within recheck of it, and with no release since, a batch takes them
	// as still full without reading their revisions. See autoRound.
	fullChecked map[string]fullCheck
	recheck     time.Duration // fullRecheck; tests change it
	// releases counts the releases begun or written by this process's
	// allocators (every IPAM of the process shares one counter; a test
	// gives an allocator its own to stand for another process).
	releases *atomic.Uint64

	// decoded caches decoded blocks by key and ModRevision. A host's full
	// blocks are read on every AutoAssign but rarely change, and decoding
	// their JSON was the largest cost of an assignment. Entries are
	// immutable (writes build new records), so sharing them is safe.
	decoded map[string]cachedBlock
	// lastPools are the pools as last read by Assign, whose next read
	// fetches the address's block with them when they still lay it out
	// the same way.
	lastPools []poolInfo

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
	return &IPAM{
		store: store, nodeLocks: map[string]chan struct{}{}, pending: map[string][]*assignReq{},
		pendingAuto: map[string][]*autoReq{}, lastClaims: map[string][]string{}, fullChecked: map[string]fullCheck{}, decoded: map[string]cachedBlock{},
		recheck: fullRecheck, releases: &processReleases,
	}
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
