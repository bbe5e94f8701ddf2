package agent

import "net/netip"

// controlPlane is what this agent knows of the control plane beyond the
// BGP and VXLAN ports of every node (which calc adds): the hosts and the
// client and peer ports of the datastore it uses, its own BGP port when it
// is not the usual one, and its metrics port (--prometheus-listen; every
// node should use the same, since a workload's own host is the one that
// stops it). Workloads reach none of it (nft.ControlPlaneDrop).
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
