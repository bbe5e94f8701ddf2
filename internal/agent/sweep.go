package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/netdev"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/ipam"
	"github.com/calico-go/calico/internal/options"
)

// The sweeper removes what a workload's lifecycle left behind when it was
// cut short and never rerun: a `container add` killed after wiring the veth
// but before writing the record, or a remove killed half way, leaves a
// cali* veth or an IPAM handle that no endpoint owns. Each is marked when a
// sweep first sees it unowned and removed by a later sweep at least a grace
// period after, if it is still the same object (same interface index, same
// handle revision) and still unowned in the datastore itself, not only in
// the snapshot. The grace period covers a client between its steps; an add
// that resumes meanwhile changes the object (a new veth, a new handle
// revision) or writes the record first, and then nothing is removed.
//
// Ownership is by name: an endpoint record of this node owns the veth
// derived from its workload's name and the handle node~workload, whatever
// the record itself says. The libnetwork driver's handle is left to its own
// reconcile (libnetwork.Reconcile), which knows the engine's endpoints.

// DefaultSweepGrace is how long a leftover must stay unowned before the
// sweeper removes it (calico-node's --sweep-grace default).
const DefaultSweepGrace = options.DefaultSweepGrace

// sweptKept is how many removals status reports (the newest).
const sweptKept = 20

type sweeper struct {
	a     *Agent
	ipam  *ipam.IPAM
	grace time.Duration

	// Marks: what was seen unowned, and since when. Touched only by run.
	veths   map[string]vethMark
	handles map[string]handleMark

	mu    sync.Mutex
	swept []string // what was removed, for status

	// logged holds the ignored endpoint records already logged, with the
	// reason: each is logged once per change, not on every pass. Touched
	// only by the agent's loop (noteIgnored).
	logged map[string]string
}

type vethMark struct {
	veth  netdev.WorkloadVeth
	since time.Time
}

type handleMark struct {
	rev   int64
	since time.Time
}

func newSweeper(a *Agent, grace time.Duration) *sweeper {
	if grace <= 0 {
		grace = DefaultSweepGrace
	}
	return &sweeper{a: a, ipam: ipam.New(a.ds), grace: grace, veths: map[string]vethMark{}, handles: map[string]handleMark{}, logged: map[string]string{}}
}

// run sweeps until ctx ends, a few times per grace period.
func (s *sweeper) run(ctx context.Context) {
	every := min(max(s.grace/4, time.Second), 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.sweep(ctx, time.Now()); err != nil && ctx.Err() == nil {
				s.a.log.Warn("sweeping leftovers of interrupted workload changes; will retry", "err", err)
			}
		}
	}
}

// sweep is one pass over this node's veths and handles.
func (s *sweeper) sweep(ctx context.Context, now time.Time) error {
	node := s.a.cfg.Name
	owned := map[string]bool{} // workload names with a record in the snapshot
	s.a.mu.Lock()
	for _, ep := range s.a.snap.Endpoints {
		if ep.Node == node {
			owned[ep.Workload] = true
		}
	}
	s.a.mu.Unlock()
	ownedIfaces := map[string]bool{}
	for w := range owned {
		ownedIfaces[api.WorkloadIfaceName(node, w)] = true
	}
	// The datastore's own word, read once per sweep and only when
	// something is due: the snapshot may lag, or have skipped a record
	// that does not validate but still owns its workload's objects.
	var stored map[string]bool
	storedIfaces := func() (map[string]bool, error) {
		if stored != nil {
			return stored, nil
		}
		keys, err := s.a.ds.Keys(ctx, datastore.EndpointPrefix(node))
		if err != nil {
			return nil, err
		}
		stored = map[string]bool{}
		for _, k := range keys {
			stored[api.WorkloadIfaceName(node, strings.TrimPrefix(k, datastore.EndpointPrefix(node)))] = true
		}
		return stored, nil
	}

	// The interfaces of owned endpoints are never candidates: left out
	// before their lookups, the sweep's cost no longer grows with them.
	veths, err := netdev.WorkloadVethsExcept(ownedIfaces)
	if err != nil {
		return err
	}
	present := map[string]bool{}
	for _, v := range veths {
		present[v.Name] = true
		m, ok := s.veths[v.Name]
		if !ok || m.veth != v {
			s.veths[v.Name] = vethMark{veth: v, since: now}
			continue
		}
		if now.Sub(m.since) < s.grace {
			continue
		}
		st, err := storedIfaces()
		if err != nil {
			return err
		}
		if st[v.Name] {
			delete(present, v.Name)
			continue
		}
		if err := netdev.DeleteWorkloadVeth(v); err != nil {
			s.a.log.Warn("cannot remove a leftover workload interface", "iface", v.Name, "err", err)
			continue
		}
		delete(present, v.Name)
		s.report(now, fmt.Sprintf("removed interface %s: no endpoint of this host owned it for %s", v.Name, now.Sub(m.since).Round(time.Second)))
	}
	for name := range s.veths {
		if !present[name] {
			delete(s.veths, name)
		}
	}
	return s.sweepHandles(ctx, node, owned, now)
}

// sweepHandles releases this node's workload handles (node~workload) whose
// workload has no endpoint record.
func (s *sweeper) sweepHandles(ctx context.Context, node string, owned map[string]bool, now time.Time) error {
	prefix := datastore.HandleKey(api.WorkloadHandle(node, ""))
	r, _, err := s.a.ds.Read(ctx, datastore.ReadKeysUnder(prefix))
	if err != nil {
		return err
	}
	present := map[string]bool{}
	for _, kv := range r[0] {
		id := strings.TrimPrefix(kv.Key, datastore.PrefixHandles)
		workload := strings.TrimPrefix(id, api.WorkloadHandle(node, ""))
		if workload == "" || strings.HasPrefix(workload, "~") || owned[workload] {
			continue // the libnetwork driver's handle (node~~libnetwork), or owned
		}
		present[id] = true
		m, ok := s.handles[id]
		if !ok || m.rev != kv.Rev {
			s.handles[id] = handleMark{rev: kv.Rev, since: now}
			continue
		}
		if now.Sub(m.since) < s.grace {
			continue
		}
		// The release itself checks, in one transaction, that the record
		// is still absent and the handle unchanged.
		freed, err := s.ipam.ReleaseOrphanHandle(ctx, id, datastore.EndpointKey(node, workload), m.rev)
		delete(s.handles, id)
		switch {
		case errors.Is(err, ipam.ErrNotOrphan):
		case err != nil:
			s.a.log.Warn("cannot release a leftover IPAM handle", "handle", id, "err", err)
		default:
			s.report(now, fmt.Sprintf("released IPAM handle %s (addresses %v): no endpoint of this host owned it for %s", id, freed, now.Sub(m.since).Round(time.Second)))
		}
	}
	for id := range s.handles {
		if !present[id] {
			delete(s.handles, id)
		}
	}
	return nil
}

func (s *sweeper) report(now time.Time, what string) {
	s.a.log.Info("swept a leftover of an interrupted workload change: " + what)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.swept = append(s.swept, now.UTC().Format(time.RFC3339)+" "+what)
	if len(s.swept) > sweptKept {
		s.swept = s.swept[len(s.swept)-sweptKept:]
	}
}

// reported is what status shows: the newest removals.
func (s *sweeper) reported() []string {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.swept...)
}

// noteIgnored logs each endpoint record the calculation ignores once, and
// again only when the reason changes; status lists this host's on every
// report (they are in the calculation's problems).
func (s *sweeper) noteIgnored(ignored []calc.IgnoredEndpoint) {
	if s == nil {
		return
	}
	seen := make(map[string]bool, len(ignored))
	for _, ig := range ignored {
		seen[ig.Key] = true
		if s.logged[ig.Key] == ig.Reason {
			continue
		}
		s.logged[ig.Key] = ig.Reason
		s.a.log.Warn("ignoring an endpoint record that names an interface or an address not its own", "endpoint", ig.Key, "reason", ig.Reason)
	}
	for k := range s.logged {
		if !seen[k] {
			delete(s.logged, k)
		}
	}
}
