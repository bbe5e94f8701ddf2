package agent

import (
	"errors"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/nft"
)

// labelPass serves the endpoint records that changed only their labels
// since the last pass, when nothing else needs a full pass: calc.Relabel
// works out, from the last Result, which policies now apply to each and
// which selectors it joins or leaves, and the Enforcer rewrites only
// those objects (nft.Enforcer.ApplyChange). Nothing else a pass converges
// (routes, interfaces, BGP, tunnels) depends on labels. At 1000 endpoints
// and 200 policies a full pass costs tens of milliseconds of CPU before
// nft runs; this costs about one. It reports false, having changed
// nothing, when a full pass is needed instead.
func (a *Agent) labelPass() bool {
	a.mu.Lock()
	if a.needFull || a.last == nil || len(a.relabeled) == 0 || len(a.epEdits) > 0 || len(a.blockEdits) > 0 {
		a.mu.Unlock()
		return false
	}
	var t0 time.Time
	if a.metrics != nil {
		t0 = time.Now()
	}
	res := *a.last
	var ch calc.PolicyChange
	for _, key := range sortedKeys(a.relabeled) {
		next, c, ok := calc.Relabel(a.snap, a.cfg.Name, res, key, a.relabeled[key])
		if !ok {
			a.mu.Unlock()
			return false // more than labels changed, or the policies in use
		}
		res = next
		ch.Endpoints = mergeSorted(ch.Endpoints, c.Endpoints)
		ch.Selectors = mergeSorted(ch.Selectors, c.Selectors)
	}
	clear(a.relabeled) // served; later ones are relative to res
	a.mu.Unlock()

	st, err := a.policy.ApplyChange(res.Dataplane.Policy, ch)
	if err != nil {
		if !errors.Is(err, nft.ErrNeedApply) {
			a.log.Warn("label change not applied; applying the whole policy", "err", err)
			a.countError(func(m *metrics) prometheus.Counter { return m.nftErrors })
		}
		return false // the full pass that follows computes everything again
	}
	a.last = &res
	if a.applied != nil {
		// The kernel's policy is now res's: a later pass that computes the
		// same desired state has nothing to apply.
		next := *a.applied
		next.Dataplane.Policy = res.Dataplane.Policy
		a.applied = &next
	}
	a.afterPolicy(res.Dataplane.Policy, res.Dataplane.Workloads, st, true)
	if a.metrics != nil {
		a.metrics.observePass(t0)
	}
	return true
}

// mergeSorted is the sorted union of two sorted lists.
func mergeSorted(a, b []string) []string {
	if len(a) == 0 {
		return b
	}
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
