package agent

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/nft"
	"github.com/prometheus/client_golang/prometheus"
)

// The policy gate: nothing leads packets into this host's workloads or
// through a tunnel until the kernel holds a table that guards them. It is
// open once a policy write of this process has succeeded (policyWritten),
// and closes again only when a write fails and the kernel has no whole
// table of ours left (a write that fails over an intact table is an nft
// hiccup, not a reason for an outage). While it is closed, gatedPass
// replaces the whole pass.

// gatedPass is a whole pass while no policy write of this process has
// succeeded: writeErr is why the write just tried failed. With a whole
// table of ours in the kernel (an earlier run's), what that run installed
// stays as it is, guarded by that table, and nothing is added: no new
// workload route, tunnel or BGP announcement (the old table knows nothing
// of what changed since, and a tunnel its vxlan-in was never written for
// would decapsulate unchecked). With none, nothing may lead packets in:
// the workload routes, the learned ones and the VXLAN and IPIP tunnels go,
// the speaker announces nothing, and only our blocks' blackholes stay. The
// reason is one problem line of `calicoctl status`; the pass is retried
// with the usual backoff.
func (a *Agent) gatedPass(ctx context.Context, res calc.Result, writeErr error, dsChanged bool) {
	a.countError(func(m *metrics) prometheus.Counter { return m.nftErrors })
	st := a.policy.Intact(ctx)
	var closeErrs []string
	if !st.Whole || !st.VXLANGuarded {
		// No guard for a VXLAN device: it goes (the pool's traffic stops
		// rather than flowing unchecked).
		if err := a.vxlan.Apply(calc.VXLAN{}); err != nil {
			closeErrs = append(closeErrs, "vxlan: "+err.Error())
		}
	}
	if !st.Whole {
		a.closeDataplane(res, &closeErrs)
	}
	if a.speaker != nil {
		if err := a.speaker.SetAnnounced(nil); err != nil {
			closeErrs = append(closeErrs, "bgp announcements: "+err.Error())
		}
	}
	line := gateProblem(writeErr, st)
	a.log.Warn("policy gate closed: "+line, "retry_in", a.backoff.next, "close_errors", closeErrs)
	problems := append(slices.Clone(res.Problems), line)
	for _, e := range closeErrs {
		problems = append(problems, "closing the dataplane without a policy table: "+e)
	}
	a.last, a.applied, a.imports = nil, nil, nil
	a.problems = problems
	a.ready = true
	a.scheduleRetry(true, dsChanged)
}

// closeDataplane takes away what leads packets in while no table guards
// them: every route of ours but our blocks' blackholes, both tunnels, the
// eBPF fast path.
func (a *Agent) closeDataplane(res calc.Result, errs *[]string) {
	a.routes.KeepStale(false)
	var keep []calc.Route
	for _, r := range res.Dataplane.Routes {
		if r.Kind == calc.RouteBlackhole {
			keep = append(keep, r)
		}
	}
	if err := a.routes.Apply(keep); err != nil {
		*errs = append(*errs, "routes: "+err.Error())
	}
	a.ipip.KeepStale(false)
	if err := a.ipip.Apply(calc.IPIP{}); err != nil {
		*errs = append(*errs, "ipip: "+err.Error())
	}
	if err := a.fastpath.Apply(fastpathDesired(false, a.cfg.IP, res.Dataplane.Policy)); err != nil {
		*errs = append(*errs, "fast path: "+err.Error())
	}
}

// gateProblem is the one status line that says the gate is closed, why,
// and what to do.
func gateProblem(writeErr error, st nft.TableState) string {
	why := firstLine(writeErr.Error())
	if st.Whole {
		return fmt.Sprintf("policy: cannot write table inet %s (%s); the table an earlier run left still guards this host, "+
			"so its routes and tunnels stay, but no workload route, tunnel or BGP announcement is added until a write succeeds: "+
			"check that `nft list ruleset` works as root; retrying", nft.TableName, why)
	}
	return fmt.Sprintf("policy: cannot write table inet %s (%s) and %s, so no workload route, VXLAN/IPIP tunnel or "+
		"BGP announcement is installed until a write succeeds (workloads are unreachable): "+
		"check that `nft list ruleset` works as root; retrying", nft.TableName, why, st.Why)
}

// firstLine keeps a status line one line: nft's errors quote the script.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}
