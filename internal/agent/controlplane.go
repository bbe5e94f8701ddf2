package agent

import (
	"net/netip"
	"slices"

	"github.com/calico-go/calico/internal/calc"
)

// controlPlane is what this agent knows of the control plane beyond the
// BGP and VXLAN ports of every node (which calc adds): the hosts and the
// client and peer ports of the datastore it uses, its own BGP port when it
// is not the usual one, and its metrics port (--prometheus-listen; other
// nodes learn it from the node record, withMetricsPorts). Workloads reach
// none of it (nft.ControlPlaneDrop).
func controlPlane(cfg Config) (hosts []netip.Addr, tcpPorts []uint16) {
	hosts, tcpPorts = cfg.Datastore.ControlPlane()
	if cfg.BGPPort > 0 && cfg.BGPPort < 65536 {
		tcpPorts = append(tcpPorts, uint16(cfg.BGPPort))
	}
	if cfg.PrometheusListen.IsValid() {
		tcpPorts = append(tcpPorts, cfg.PrometheusListen.Port())
	}
	return hosts, tcpPorts
}

// withMetricsPorts adds every node's metrics port (published in its node
// record) to ports: a workload's own host must stop it, and that host may
// serve no metrics or serve them on another port.
func withMetricsPorts(ports []uint16, snap *calc.Snapshot) []uint16 {
	out := slices.Clone(ports)
	for _, n := range snap.Nodes {
		if n.MetricsPort != 0 && !slices.Contains(out, n.MetricsPort) {
			out = append(out, n.MetricsPort)
		}
	}
	slices.Sort(out) // the same input for the same nodes, whatever the map order
	return out
}
