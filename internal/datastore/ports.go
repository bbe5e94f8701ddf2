package datastore

import (
	"net/netip"
	"net/url"
	"slices"
	"strconv"
)

// DefaultClientPort is etcd's client port.
const DefaultClientPort = 2379

// PeerPort is the port an embedded member serves its peers on when not told
// (etcdserver.Start): 2380 beside the usual client port 2379, else the client
// port + 1.
func PeerPort(clientPort int) int {
	if clientPort == DefaultClientPort {
		return 2380
	}
	return clientPort + 1
}

// ControlPlane says where the datastore of this configuration listens, as
// far as its endpoints tell: the endpoint hosts given as IP addresses, and
// every client port with its peer port. The defaults (2379, 2380) are always
// included, so a member on a node that this configuration does not list is
// still covered there. Workloads must reach none of it.
func (c Config) ControlPlane() (hosts []netip.Addr, tcpPorts []uint16) {
	ports := []int{DefaultClientPort, PeerPort(DefaultClientPort)}
	for _, e := range c.Endpoints {
		u, err := url.Parse(e)
		if err != nil {
			continue
		}
		if a, err := netip.ParseAddr(u.Hostname()); err == nil {
			hosts = append(hosts, a.Unmap())
		}
		if p, err := strconv.Atoi(u.Port()); err == nil && p > 0 && p < 65535 {
			ports = append(ports, p, PeerPort(p))
		}
	}
	for _, p := range ports {
		tcpPorts = append(tcpPorts, uint16(p))
	}
	slices.SortFunc(hosts, netip.Addr.Compare)
	slices.Sort(tcpPorts)
	return slices.Compact(hosts), slices.Compact(tcpPorts)
}
