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

// Enforcer programs a calc.Policy into the inet table "calico" of the
// network namespace it runs in (that of the calling thread when nft is
// started). It is safe for concurrent use; calls are serialized.
type Enforcer struct {
	mu  sync.Mutex
	nft knftables.Interface
	// cur is what we last wrote successfully; nil means the kernel state is
	// unknown and the next Apply rewrites the whole table.
	cur *ruleset
	// host is what workloads may send to this host (SetHostAccess).
	host HostAccess
}

// New checks that this host can run us: the nft binary is installed, and the
// kernel accepts an inet table here (nftables built in, CAP_NET_ADMIN).
func New() (*Enforcer, error) {
	if _, err := exec.LookPath("nft"); err != nil {
		return nil, fmt.Errorf("nftables: the nft binary is not installed (%w); install it with scripts/install-deps.sh", err)
	}
	nft, err := knftables.New(knftables.InetFamily, TableName)
	if err != nil {
		return nil, fmt.Errorf("nftables: cannot create an inet table in this network namespace "+
			"(needs a kernel with nf_tables and inet support, and CAP_NET_ADMIN): %w", err)
	}
	return newWith(nft), nil
}

// newWith builds an Enforcer over any knftables.Interface (a knftables.Fake
// in kernel-free tests).
func newWith(nft knftables.Interface) *Enforcer {
	return &Enforcer{nft: nft, host: HostAccessDrop}
}

// SetHostAccess changes what workloads may send to this host. It takes
// effect at the next Apply, which rewrites the whole table.
func (e *Enforcer) SetHostAccess(h HostAccess) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if h == "" {
		h = HostAccessDrop
	}
	e.host = h
}

// Apply makes the kernel enforce p. The first call, and the first after
// Resync, replaces the whole table in one atomic transaction; later calls send
// only the difference from the last successful Apply. If an incremental
// transaction fails (the table was changed or removed behind our back), Apply
// falls back to a full rewrite at once. An error means the kernel may not
// enforce p; retry later. Problems in p itself are reported in Stats.Problems
// and enforced fail-closed, not returned as errors.
func (e *Enforcer) Apply(p calc.Policy) (Stats, error) {
	e.mu.Lock()
	defer e.mu.Unlock()

	next := render(p)
	next.host = e.host
	var st Stats
	var incErr error
	// The host access mode lives in the fixed skeleton, which only a full
	// rewrite writes.
	if e.cur != nil && e.cur.host == next.host {
		tx := e.nft.NewTransaction()
		st = planIncremental(tx, e.cur, next)
		if st.Ops == 0 {
			e.cur = next
			return finish(st, next), nil
		}
		if incErr = e.run(tx); incErr == nil {
			e.cur = next
			return finish(st, next), nil
		}
		e.cur = nil
	}
	tx := e.nft.NewTransaction()
	st = planFull(tx, next)
	st.FellBack = incErr != nil
	if err := e.run(tx); err != nil {
		if incErr != nil {
			err = errors.Join(fmt.Errorf("incremental update: %w", incErr), err)
		}
		return finish(st, next), fmt.Errorf("nftables: rewriting table %s: %w", TableName, err)
	}
	e.cur = next
	return finish(st, next), nil
}

func finish(st Stats, rs *ruleset) Stats {
	st.Endpoints = len(rs.FromWl)
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

// Resync forgets what we believe the kernel holds, so the next Apply rewrites
// the whole table atomically. Called periodically, it repairs any drift
// (rules edited or elements removed by hand) that incremental updates, which
// trust our own record, would not see.
func (e *Enforcer) Resync() {
	e.mu.Lock()
	e.cur = nil
	e.mu.Unlock()
}

// Cleanup deletes our table, and with it all policy and NAT we installed.
// Deleting a table that does not exist is not an error.
func (e *Enforcer) Cleanup() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cur = nil
	tx := e.nft.NewTransaction()
	tx.Add(&knftables.Table{}) // makes the delete valid when the table is absent
	tx.Delete(&knftables.Table{})
	if err := e.run(tx); err != nil {
		return fmt.Errorf("nftables: deleting table %s: %w", TableName, err)
	}
	return nil
}
