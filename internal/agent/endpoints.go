package agent

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/nft"
)

// endpointPass serves containers starting and stopping (their endpoint
// records added, removed or rewritten, their addresses taken or released
// in IPAM blocks), this host's and, where only tag and selector sets
// change here, other hosts', when nothing else needs a full pass:
// calc.Reendpoint derives the next Result from the last one, and only the
// endpoint's interface (the syncer reads back only new host sides), its
// routes (RouteSyncer.Patch) and its nftables objects and the sets it
// joins or leaves (Enforcer.ApplyChange) are written; the read-back of
// every other host side waits for the next whole pass (or the resync),
// as it does after a label or learned-route pass. At 1000 endpoints a
// full pass cost about 45 ms of CPU per new container, most of it
// recomputing, rendering and reading back what did not change; every
// agent paid a full Compute (7 ms at 1000 endpoints) for each container
// started anywhere in the cluster. The conntrack flush owed to addresses
// that left another host's record (noteLeft) runs here as in a full
// pass. It reports false, having changed nothing in the kernel or only
// what the full pass that follows converges anyway, when a full pass is
// needed.
func (a *Agent) endpointPass() bool {
	a.mu.Lock()
	if a.needFull || a.last == nil || a.applied == nil || !a.startupOver || len(a.epEdits) == 0 && len(a.blockEdits) == 0 {
		a.mu.Unlock()
		return false
	}
	t0 := time.Now()
	marks := passMarks{last: t0}
	eps := make([]calc.EndpointEdit, 0, len(a.epEdits)+len(a.relabeled))
	for _, key := range sortedKeys(a.epEdits) {
		eps = append(eps, a.epEdits[key])
	}
	for _, key := range sortedKeys(a.relabeled) {
		if _, added := a.epEdits[key]; !added {
			// A new version of a record (this host's or another's).
			eps = append(eps, calc.EndpointEdit{Key: key, Old: a.relabeled[key], Had: true})
		}
	}
	blocks := make([]calc.BlockEdit, 0, len(a.blockEdits))
	for _, cidr := range sortedKeys(a.blockEdits) {
		blocks = append(blocks, a.blockEdits[cidr])
	}
	// The kernel's routes are the last clean pass's as learnedPass left
	// them; everything else is the last Result's.
	base := *a.last
	base.Dataplane.Routes = a.applied.Dataplane.Routes
	in := calc.Input{Node: a.cfg.Name, Snap: a.snap, Learned: a.learned, EndpointAddrs: a.epAddrs}
	marks.mark("prepare")
	res, ch, ok := calc.Reendpoint(in, base, eps, blocks)
	marks.mark("reendpoint")
	if !ok {
		a.mu.Unlock()
		return false
	}
	// Served: later edits are relative to res. The snapshot the imports
	// read is res's too (learnedPass).
	clear(a.epEdits)
	clear(a.blockEdits)
	clear(a.relabeled)
	a.dsChanged = false
	a.mu.Unlock()

	// The interfaces before the routes through them; then the policy.
	if ch.Workloads {
		problems, err := a.changeWorkloadIfaces(res.Dataplane.Workloads)
		if err != nil || !slices.Equal(problems, a.ifaceProblems) {
			// A veth missing or foreign: the full pass reports it.
			a.applied = nil
			return false
		}
	}
	marks.mark("interfaces")
	a.noteConntrackChange(ch)
	if err := a.flushMovedConntrack(); err != nil {
		a.log.Info("endpoint change: conntrack flush failed; converging with a full pass", "err", err)
		a.applied = nil
		return false
	}
	marks.mark("conntrack")
	if len(ch.AddRoutes) > 0 || len(ch.DelRoutes) > 0 {
		if err := a.routes.Patch(ch.AddRoutes, ch.DelRoutes); err != nil {
			a.log.Info("endpoint routes: patch failed; converging with a full pass", "err", err)
			a.applied = nil
			return false
		}
	}
	marks.mark("routes")
	if !ch.Policy.Empty() {
		st, err := a.policy.ApplyChange(res.Dataplane.Policy, ch.Policy)
		if err != nil {
			if !errors.Is(err, nft.ErrNeedApply) {
				a.log.Warn("endpoint change not applied; applying the whole policy", "err", err)
				a.countError(func(m *metrics) prometheus.Counter { return m.nftErrors })
			}
			a.applied = nil
			return false
		}
		marks.mark("policy")
		a.afterPolicy(res.Dataplane.Policy, res.Dataplane.Workloads, st, true)
		marks.mark("after policy")
	}
	if err := a.flushConntrack(); err != nil {
		// Still owed: the full pass flushes again.
		a.log.Info("endpoint change: conntrack flush failed; converging with a full pass", "err", err)
		a.applied = nil
		return false
	}
	marks.mark("flush")
	if ch.Workloads || len(ch.Policy.Endpoints) > 0 {
		// A local endpoint came, went or changed its addresses: the fast
		// path's anti-spoofing map follows the ruleset's wl-src4 here as
		// in the full pass (after the ruleset and the flush). Left as it
		// was, an address taken from a running workload stayed in
		// fp_wl_src under that workload's interface until the next full
		// pass, and the workload could forge it on the next holder's
		// established flows past the ruleset's anti-spoofing
		// (TestAgentFastPathAddressReuse); and a new workload got no
		// fast path until then.
		// Only the changed interfaces' entries and programs (every local
		// endpoint edit names its interface in ch.Policy.Endpoints).
		if ferr := a.applyFastpathChange(res.Dataplane.Policy, ch.Policy.Endpoints); ferr != nil {
			a.fastpathFailed(ferr)
		}
		marks.mark("fast path")
	}
	a.last, a.applied, a.imports = &res, &res, res.Imports
	if a.metrics != nil {
		a.metrics.observePass(t0)
	}
	a.log.Debug("endpoint pass", "took", time.Since(t0), "phases", &marks)
	return true
}

// passMarks times the phases of one pass for its debug log line (where an
// endpoint pass's time goes at 10 and at 1000 endpoints). Marking only
// reads the clock; the line is formatted only when debug logging is on.
type passMarks struct {
	last  time.Time
	n     int
	names [10]string
	took  [10]time.Duration
}

func (m *passMarks) mark(phase string) {
	now := time.Now()
	if m.n < len(m.names) {
		m.names[m.n], m.took[m.n] = phase, now.Sub(m.last)
		m.n++
	}
	m.last = now
}

func (m *passMarks) String() string {
	var b strings.Builder
	for i := range m.n {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%.2fms", m.names[i], float64(m.took[i].Microseconds())/1000)
	}
	return b.String()
}
