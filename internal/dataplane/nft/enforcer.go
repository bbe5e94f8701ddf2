package nft

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/calico-go/calico/internal/calc"
)

// nftTimeout bounds one run of the nft binary, so a wedged nft cannot stall
// the agent's dataplane loop forever. A full rewrite of thousands of
// endpoints takes well under a second.
const nftTimeout = 2 * time.Minute

// HostAccess is what workloads may send to the host they run on (its own
// addresses and services: the agent, BGP, etcd, anything listening there).
// Replies to connections the host opened, and IPv6 neighbour discovery, pass
// in every mode.
type HostAccess string

const (
	// HostAccessDrop, the default: nothing else. A workload cannot reach
	// any service of its own host.
	HostAccessDrop HostAccess = "drop"
	// HostAccessPolicy: the workload's outbound profile rules decide, as
	// for any other destination; what no rule allows is dropped. Users open
	// one service with a rule such as
	// `outbound allow udp to ports 53 cidr HOST_IP/32` placed before a
	// `deny to cidr HOST_IP/32`; note that a profile's default outbound
	// `allow` then opens every host service to its members.
	HostAccessPolicy HostAccess = "policy"
)

// ParseHostAccess reads a HostAccess ("" means the default, drop).
func ParseHostAccess(s string) (HostAccess, error) {
	switch HostAccess(s) {
	case "", HostAccessDrop:
		return HostAccessDrop, nil
	case HostAccessPolicy:
		return HostAccessPolicy, nil
	}
	return "", fmt.Errorf("workload-to-host access %q: want %q or %q", s, HostAccessDrop, HostAccessPolicy)
}

// ControlPlaneAccess is what this host's workloads may send to the
// cluster's control plane (calc.ControlPlane: the datastore's client and
// peer ports, BGP, VXLAN and the agent's listeners on every node address).
type ControlPlaneAccess string

const (
	// ControlPlaneDrop, the default: new connections and datagrams to those
	// ports are dropped whatever the workload's profiles say. The sending
	// host enforces it, since nat-outgoing hides the workload from the
	// destination.
	ControlPlaneDrop ControlPlaneAccess = "drop"
	// ControlPlanePolicy: the workload's outbound profile rules decide, as
	// for any destination (its own host's services stay behind HostAccess).
	ControlPlanePolicy ControlPlaneAccess = "policy"
)

// ParseControlPlaneAccess reads a ControlPlaneAccess ("" means the default, drop).
func ParseControlPlaneAccess(s string) (ControlPlaneAccess, error) {
	switch ControlPlaneAccess(s) {
	case "", ControlPlaneDrop:
		return ControlPlaneDrop, nil
	case ControlPlanePolicy:
		return ControlPlanePolicy, nil
	}
	return "", fmt.Errorf("workload-to-control-plane access %q: want %q or %q", s, ControlPlaneDrop, ControlPlanePolicy)
}

// access is what the fixed skeleton depends on: a change means a full rewrite.
type access struct {
	host         HostAccess
	controlPlane ControlPlaneAccess
}

// Enforcer programs a calc.Policy into the inet table "calico" of the
// network namespace it runs in (that of the calling thread when nft is
// started). It is safe for concurrent use; calls are serialized.
type Enforcer struct {
	mu  sync.Mutex
	nft knftables.Interface
	// nftPath is the nft binary that incremental scripts run through
	// (cacheFree); empty with a knftables.Fake, which runs the transaction.
	nftPath string
	// cur is what we last wrote successfully; nil means the kernel state is
	// unknown and the next Apply rewrites the whole table.
	cur *ruleset
	// access is what workloads may send to this host (SetHostAccess) and
	// to the control plane (SetControlPlaneAccess).
	access access
	// beforeRewrite runs before a transaction that rewrites chains, whose
	// rules' counters then restart at zero (SetBeforeRewrite).
	beforeRewrite func()

	// gen reads the kernel's ruleset generation (readGeneration); nil with
	// a knftables.Fake, where every resync rewrites the table.
	gen func() (uint32, error)
	// trusted says the kernel held cur when its generation was trustedGen:
	// our last write was the only commit between the generations read
	// around it, and it either replaced the table whole or started from a
	// state we trusted. A generation still at trustedGen then means no
	// drift, whoever might have written.
	trusted    bool
	trustedGen uint32
	// verify: Resync asked the next Apply to check for drift.
	verify bool
	// writes counts the nft transactions run (Writes).
	writes int
}

// Writes is the number of nft transactions the Enforcer has run: a
// resync that found nothing to repair adds none.
func (e *Enforcer) Writes() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.writes
}

// SetBeforeRewrite makes f run before every transaction that rewrites
// chains, and only then: a reader of the drop counters (DropCounter) reads
// what they hold before they restart, without reading the table on the
// passes that change nothing or only set elements.
func (e *Enforcer) SetBeforeRewrite(f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.beforeRewrite = f
}

// New checks that this host can run us: the nft binary is installed, and the
// kernel accepts an inet table here (nftables built in, CAP_NET_ADMIN).
func New() (*Enforcer, error) {
	path, err := exec.LookPath("nft")
	if err != nil {
		return nil, fmt.Errorf("nftables: the nft binary is not installed (%w); install it with scripts/install-deps.sh", err)
	}
	nft, err := knftables.New(knftables.InetFamily, TableName)
	if err != nil {
		return nil, fmt.Errorf("nftables: cannot create an inet table in this network namespace "+
			"(needs a kernel with nf_tables and inet support, and CAP_NET_ADMIN): %w", err)
	}
	e := newWith(nft)
	e.nftPath = path
	e.gen = readGeneration
	return e, nil
}

// newWith builds an Enforcer over any knftables.Interface (a knftables.Fake
// in kernel-free tests).
func newWith(nft knftables.Interface) *Enforcer {
	return &Enforcer{nft: nft, access: access{HostAccessDrop, ControlPlaneDrop}}
}

// SetHostAccess changes what workloads may send to this host. It takes
// effect at the next Apply, which rewrites the whole table.
func (e *Enforcer) SetHostAccess(h HostAccess) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if h == "" {
		h = HostAccessDrop
	}
	e.access.host = h
}

// SetControlPlaneAccess changes what workloads may send to the control
// plane. It takes effect at the next Apply, which rewrites the whole table.
func (e *Enforcer) SetControlPlaneAccess(c ControlPlaneAccess) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c == "" {
		c = ControlPlaneDrop
	}
	e.access.controlPlane = c
}

// Apply makes the kernel enforce p. The first call replaces the whole table
// in one atomic transaction; later calls send only the difference from the
// last successful Apply. The first call after Resync checks for drift
// first (unchanged), and replaces the whole table if it cannot rule it
// out. If an incremental
// transaction fails (the table was changed or removed behind our back), Apply
// falls back to a full rewrite at once. An error means the kernel may not
// enforce p; retry later. Problems in p itself are reported in Stats.Problems
// and enforced fail-closed, not returned as errors.
func (e *Enforcer) Apply(p calc.Policy) (Stats, error) {
	e.mu.Lock()
	defer e.mu.Unlock()

	resynced := false
	if e.verify {
		e.verify = false
		if !e.unchanged() {
			e.cur, resynced = nil, true
		}
	}
	next := render(p)
	next.access = e.access
	var st Stats
	var incErr error
	// The access modes live in the fixed skeleton, which only a full
	// rewrite writes.
	if e.cur != nil && e.cur.access == next.access {
		tx := e.nft.NewTransaction()
		st = planIncremental(tx, e.cur, next)
		if st.Ops == 0 {
			e.cur = next
			return finish(st, next), nil
		}
		if st.ChainsWritten > 0 && e.beforeRewrite != nil {
			e.beforeRewrite()
		}
		if incErr = e.write(false, func() error { return e.runIncremental(tx, e.cur, next) }); incErr == nil {
			e.cur = next
			return finish(st, next), nil
		}
		e.cur = nil
	}
	tx := e.nft.NewTransaction()
	st = planFull(tx, next)
	st.FellBack = incErr != nil
	st.ResyncRewrite = resynced
	if e.beforeRewrite != nil {
		e.beforeRewrite()
	}
	if err := e.write(true, func() error { return e.run(tx) }); err != nil {
		if incErr != nil {
			err = errors.Join(fmt.Errorf("incremental update: %w", incErr), err)
		}
		return finish(st, next), fmt.Errorf("nftables: rewriting table %s: %w", TableName, err)
	}
	e.cur = next
	return finish(st, next), nil
}

func finish(st Stats, rs *ruleset) Stats {
	st.Endpoints = len(rs.members)
	st.Profiles = rs.profiles
	st.Sets = len(rs.Sets)
	st.Problems = rs.Problems
	return st
}

func (e *Enforcer) run(tx *knftables.Transaction) error {
	ctx, cancel := context.WithTimeout(context.Background(), nftTimeout)
	defer cancel()
	return e.nft.Run(ctx, tx)
}

// runIncremental runs an incremental transaction, through cacheFree when
// the real nft binary is in use.
func (e *Enforcer) runIncremental(tx *knftables.Transaction, prev, next *ruleset) error {
	if e.nftPath == "" {
		return e.run(tx)
	}
	ctx, cancel := context.WithTimeout(context.Background(), nftTimeout)
	defer cancel()
	return runScript(ctx, e.nftPath, cacheFree(tx.String(), prev, next))
}

// Resync makes the next Apply check whether the kernel may have drifted
// from what we last wrote (rules edited, elements removed or the table
// deleted by hand), which incremental updates, trusting our own record,
// would not see, and if so rewrite the whole table atomically. Called
// periodically, it repairs such drift within one period. The check costs
// one netlink request: when the kernel's ruleset generation is still the
// one our last write left, nothing was committed since, by anyone, and
// nothing is written; when it moved, even by another table's change, our
// table is rewritten (see gen.go).
func (e *Enforcer) Resync() {
	e.mu.Lock()
	e.verify = true
	e.mu.Unlock()
}

// unchanged says whether the kernel provably still holds cur: no commit
// since the one our last trusted write made.
func (e *Enforcer) unchanged() bool {
	if !e.trusted || e.cur == nil {
		return false
	}
	g, err := e.readGen()
	return err == nil && g == e.trustedGen
}

func (e *Enforcer) readGen() (uint32, error) {
	if e.gen == nil {
		return 0, errNoGeneration
	}
	return e.gen()
}

// write runs one nft transaction (run) and reads the ruleset generation
// before and after it, to know whether the kernel now holds exactly what
// the transaction leaves: the generation moved by one (our commit and
// nobody else's), and before it the kernel held what we trusted, or the
// transaction replaced our table whole (full). Reading after the commit
// is what makes an attacker's commit racing ours visible: it moves the
// generation by one more.
func (e *Enforcer) write(full bool, run func() error) error {
	g0, err0 := e.readGen()
	e.writes++
	if err := faultWriteFails(); err != nil {
		e.trusted = false
		return err
	}
	if err := run(); err != nil {
		e.trusted = false
		return err
	}
	g1, err1 := e.readGen()
	from := full || (e.trusted && g0 == e.trustedGen)
	e.trusted = err0 == nil && err1 == nil && from && g1 == nextGeneration(g0)
	e.trustedGen = g1
	return nil
}

// Cleanup deletes our table, and with it all policy and NAT we installed.
// Deleting a table that does not exist is not an error.
func (e *Enforcer) Cleanup() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cur, e.trusted = nil, false
	e.writes++
	tx := e.nft.NewTransaction()
	tx.Add(&knftables.Table{}) // makes the delete valid when the table is absent
	tx.Delete(&knftables.Table{})
	if err := e.run(tx); err != nil {
		return fmt.Errorf("nftables: deleting table %s: %w", TableName, err)
	}
	return nil
}
