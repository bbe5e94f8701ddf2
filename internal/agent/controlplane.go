package agent

import "net/netip"

// controlPlane is what this agent knows of the control plane beyond the
// BGP and VXLAN ports of every node (which calc adds): the hosts and the
// client and peer ports of the datastore it uses, and its own BGP port when
// it is not the usual one. Workloads reach none of it (nft.ControlPlaneDrop).
func controlPlane(cfg Config) (hosts []netip.Addr, tcpPorts []uint16) {
	hosts, tcpPorts = cfg.Datastore.ControlPlane()
	if cfg.BGPPort > 0 && cfg.BGPPort < 65536 {
		tcpPorts = append(tcpPorts, uint16(cfg.BGPPort))
	}
	return hosts, tcpPorts
}
