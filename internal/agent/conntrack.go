package agent

import (
	"fmt"
	"net/netip"

	"github.com/calico-go/calico/internal/calc"
)

// localAddrs is each local workload address of dp with its host-side
// interface: the routes into workload interfaces (WireGuard's routes are
// local routes too, into its device, and are no workload's).
func localAddrs(dp calc.Dataplane) map[netip.Addr]string {
	ifaces := make(map[string]bool, len(dp.Workloads))
	for _, w := range dp.Workloads {
		ifaces[w.Interface] = true
	}
	out := make(map[netip.Addr]string, len(dp.Workloads))
	for _, r := range dp.Routes {
		if r.Kind == calc.RouteLocal && ifaces[r.Dev] && r.Dst.IsSingleIP() {
			out[r.Dst.Addr()] = r.Dev
		}
	}
	return out
}

// flushMovedConntrack runs before the routes change: the flows of an
// address that moved to another local workload go before its new route
// makes the old entries reach the new workload (EndpointConntrack).
func (a *Agent) flushMovedConntrack() error {
	n, addrs, err := a.conntrack.FlushMoved()
	if len(addrs) > 0 {
		a.log.Debug("deleted conntrack entries of addresses moving to another workload", "entries", n, "addresses", addrs)
	}
	if err != nil {
		return fmt.Errorf("conntrack: %w", err)
	}
	return nil
}

// flushConntrack runs after routes and policy: the flows of every address
// that left a local workload, or moved, go (EndpointConntrack).
func (a *Agent) flushConntrack() error {
	n, addrs, err := a.conntrack.Flush()
	if len(addrs) > 0 {
		a.log.Debug("deleted conntrack entries of former workload addresses", "entries", n, "addresses", addrs)
	}
	if err != nil {
		return fmt.Errorf("conntrack: %w", err)
	}
	return nil
}
