package agent

import (
	"errors"
	"fmt"
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
	// An IPv6-only host has nothing for it to do (it carries IPv4 TCP).
	d := fastpath.Desired{Enabled: on && local.Is4() && len(p.Endpoints) > 0, LocalIP: local}
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
