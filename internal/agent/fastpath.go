package agent

import (
	"net/netip"

	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/fastpath"
)

// fastpathDesired is the fast path for the endpoints of p: their
// interfaces and the IPv4 sources each may send from, the same pairs the
// ruleset's wl-src4 holds (the first entry of an interface listed twice,
// as the ruleset enforces it). Off without endpoints: it goes with the
// last one.
func fastpathDesired(on bool, local netip.Addr, p calc.Policy) fastpath.Desired {
	d := fastpath.Desired{Enabled: on && len(p.Endpoints) > 0, LocalIP: local}
	if !d.Enabled {
		return d
	}
	seen := make(map[string]bool, len(p.Endpoints))
	for _, ep := range p.Endpoints {
		if seen[ep.Interface] {
			continue
		}
		seen[ep.Interface] = true
		w := fastpath.Workload{Iface: ep.Interface}
		for _, a := range ep.Addrs {
			if a.Is4() {
				w.Addrs = append(w.Addrs, a)
			}
		}
		d.Workloads = append(d.Workloads, w)
	}
	return d
}
