package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/fastpath"
)

// fastpathDesired is the fast path for the endpoints of p: their
// interfaces and the IPv4 sources each may send from, the same pairs the
// ruleset's wl-src4 holds (the first entry of an interface listed twice,
// as the ruleset enforces it). Off without endpoints: it goes with the
// last one.
func fastpathDesired(on bool, local netip.Addr, p calc.Policy) fastpath.Desired {
	// An IPv6-only host has nothing for it to do (it carries IPv4 TCP).
	d := fastpath.Desired{Enabled: on && local.Is4() && len(p.Endpoints) > 0, LocalIP: local}
	if !d.Enabled {
		return d
	}
	// The endpoint pass builds this on every container start: at 1000
	// endpoints a map of every interface and a list per workload were a
	// thousand allocations each time. calc keeps the endpoints sorted by
	// interface (a name listed twice is then adjacent) and an all-IPv4
	// address list is passed as it is (calc's lists are not written once
	// made, and Apply only reads them).
	sorted := slices.IsSortedFunc(p.Endpoints, func(a, b calc.EndpointPolicy) int { return strings.Compare(a.Interface, b.Interface) })
	var seen map[string]bool
	if !sorted {
		seen = make(map[string]bool, len(p.Endpoints))
	}
	d.Workloads = make([]fastpath.Workload, 0, len(p.Endpoints))
	for i, ep := range p.Endpoints {
		if sorted && i > 0 && p.Endpoints[i-1].Interface == ep.Interface || !sorted && seen[ep.Interface] {
			continue
		}
		if !sorted {
			seen[ep.Interface] = true
		}
		d.Workloads = append(d.Workloads, fastpathWorkload(ep))
	}
	return d
}

// fastpathWorkload is one endpoint's workload for the fast path: its
// interface and IPv4 sources.
func fastpathWorkload(ep calc.EndpointPolicy) fastpath.Workload {
	w := fastpath.Workload{Iface: ep.Interface, Addrs: ep.Addrs}
	if !slices.ContainsFunc(ep.Addrs, func(a netip.Addr) bool { return !a.Is4() }) {
		return w
	}
	w.Addrs = nil
	for _, a := range ep.Addrs {
		if a.Is4() {
			w.Addrs = append(w.Addrs, a)
		}
	}
	return w
}

// fastpathChanged is fastpathDesired's Workloads for the interfaces ifaces
// alone (those of them p still has), as the endpoint pass hands them to
// fastpath.Manager.ApplyChange: building the whole list was a thousand
// entries per container start at 1000 endpoints. Each is the first entry
// of its interface, as in fastpathDesired.
func fastpathChanged(p calc.Policy, ifaces []string) []fastpath.Workload {
	var out []fastpath.Workload
	sorted := slices.IsSortedFunc(p.Endpoints, func(a, b calc.EndpointPolicy) int { return strings.Compare(a.Interface, b.Interface) })
	for _, n := range ifaces {
		var i int
		found := false
		if sorted {
			// The first of a name listed twice: the search finds the
			// lowest index.
			i, found = slices.BinarySearchFunc(p.Endpoints, n, func(e calc.EndpointPolicy, s string) int { return strings.Compare(e.Interface, s) })
		} else {
			i = slices.IndexFunc(p.Endpoints, func(e calc.EndpointPolicy) bool { return e.Interface == n })
			found = i >= 0
		}
		if found {
			out = append(out, fastpathWorkload(p.Endpoints[i]))
		}
	}
	return out
}

// applyFastpathChange brings the fast path in line with p after an
// endpoint pass that changed the endpoints of ifaces: only theirs when the
// fast path can change from its last whole Apply, else everything.
func (a *Agent) applyFastpathChange(p calc.Policy, ifaces []string) error {
	d := fastpath.Desired{Enabled: a.fastpathOn && a.cfg.IP.Is4() && len(p.Endpoints) > 0, LocalIP: a.cfg.IP}
	if d.Enabled {
		if done, err := a.fastpath.ApplyChange(a.cfg.IP, ifaces, fastpathChanged(p, ifaces)); done {
			return err
		}
	}
	return a.fastpath.Apply(fastpathDesired(a.fastpathOn, a.cfg.IP, p))
}

// fastpathSetting reads CALICO_FASTPATH: the fast path is on unless the
// operator sets it off. Anything else is refused rather than guessed at.
func fastpathSetting(v string) (bool, error) {
	switch v {
	case "", "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, fmt.Errorf("CALICO_FASTPATH=%q: set it to on (the default) or off", v)
}

// fastpathFailed handles an Apply that failed (Apply has already taken the
// programs down: traffic takes the normal path, which is always right). A
// kernel that cannot load the programs (no BTF, no conntrack kfuncs, locked
// memory) will not load them on the next pass either: the fast path stays
// off for this process, and status says why, instead of a load and a
// warning on every pass.
func (a *Agent) fastpathFailed(err error) {
	if errors.Is(err, fastpath.ErrUnavailable) {
		a.fastpathOn = false
		a.fastpathOff = "off (unavailable on this kernel: " + err.Error() + ")"
		a.log.Warn("eBPF fast path unavailable on this kernel; traffic takes the normal path (restart calico-node to try again)", "err", err)
		return
	}
	a.log.Warn("eBPF fast path failed; traffic takes the normal path", "err", err)
}
