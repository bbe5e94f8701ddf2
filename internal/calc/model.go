// Package calc turns a snapshot of the datastore, as seen by one host, into
// the dataplane state that host should have. It is pure: no syscalls, so every
// decision is table-tested and the dataplane package only applies results.
package calc

import (
	"net/netip"

	"github.com/calico-go/calico/internal/api"
)

// Policy is what the nftables dataplane enforces on one host.
type Policy struct {
	// Endpoints are this host's workload interfaces.
	Endpoints []EndpointPolicy
	// Profiles are those referenced by local endpoints, keyed by name.
	Profiles map[string]api.Profile
	// TagMembers maps every tag named by a rule of a local profile to the
	// addresses of all workloads, cluster-wide, whose profiles carry it.
	TagMembers map[string]AddrSet
	// NAT: traffic from MasqueradePools to anything outside AllPools is masqueraded.
	MasqueradePools []netip.Prefix
	AllPools        []netip.Prefix
	// ControlPlane is what no workload may reach, whatever its profiles
	// say, unless the operator opens it.
	ControlPlane ControlPlane
	// VXLAN is what this host accepts on its VXLAN port.
	VXLAN VXLANGuard
	// Published are local workloads' ports published on this host's
	// addresses, in endpoint order (the first of a clash wins).
	Published []Published
	// Policies are the label policies (policies.go) that apply to some
	// local endpoint, by name; nil without any.
	Policies map[string]TierPolicy
	// SelectorMembers maps every selector named by a rule of those
	// policies (canonical form) to the addresses it matches, cluster-wide.
	SelectorMembers map[string]SelectorMembers
}

// Published is one port DNATed from the host to a local workload.
type Published struct {
	Proto    string     // tcp or udp
	HostIP   netip.Addr // invalid: every address of the host
	HostPort uint16
	Addr     netip.Addr // the workload's IPv4 address
	Port     uint16
}

// ControlPlane is the cluster's control plane as a workload would aim at
// it: every port of Ports on every address of Hosts.
type ControlPlane struct {
	// Hosts are every node's addresses and the datastore's hosts.
	Hosts AddrSet
	// Ports are BGP, VXLAN, the datastore's client and peer ports and the
	// agent's own listeners; sorted, unique.
	Ports []L4Port
}

// L4Port is a transport protocol ("tcp" or "udp") and a port.
type L4Port struct {
	Proto string
	Port  uint16
}

// VXLANGuard is what this host accepts through its VXLAN port when some
// pool uses VXLAN: datagrams from other nodes only, and from each only inner
// IPv4 packets whose source that node may send.
type VXLANGuard struct {
	Enabled bool // its port is VXLANPort
	// Senders, sorted by address.
	Senders []VXLANSender
}

// VXLANSender is another node as a VXLAN sender: its address (the outer
// source) and the inner sources it may use: its blocks, the addresses of
// its workloads outside them (what it announces), and its own address
// (the host's own traffic to a remote workload).
type VXLANSender struct {
	Addr  netip.Addr
	Inner []netip.Prefix // IPv4, sorted, none inside another
}

// EndpointPolicy is one local workload interface and the profiles applied to it, in order.
type EndpointPolicy struct {
	Interface string       // host side veth, cali...
	Addrs     []netip.Addr // the workload's own addresses (anti-spoofing)
	Profiles  []string     // applied in order; a workload with none reaches nothing
	// IngressPolicies and EgressPolicies are the label policies (keys of
	// Policy.Policies) that apply in each direction, in tier order. Empty:
	// the profiles alone decide that direction.
	IngressPolicies []string
	EgressPolicies  []string
	// Group is ProfileGroup of the endpoint record's profile list, the
	// device group its host side carries (WorkloadIface.Group): the
	// dataplane dispatches endpoints that share a profile list to one pair
	// of chains by it. 0: no group (dispatch by interface name alone).
	Group uint32
}

// AddrSet holds addresses of both families.
type AddrSet struct {
	V4 []netip.Addr
	V6 []netip.Addr
}

// Dataplane is the whole desired state of one host's kernel, as far as we own it.
type Dataplane struct {
	// Workloads are the host sides of the local workloads' veths.
	Workloads []WorkloadIface
	Routes    []Route
	VXLAN     VXLAN
	IPIP      IPIP
	WireGuard WireGuard
	Policy    Policy
}

// RouteKind says how a route forwards.
type RouteKind int

const (
	// RouteLocal reaches a local workload: Dst dev Dev scope link.
	RouteLocal RouteKind = iota
	// RouteVia forwards to Gateway (through Dev with onlink when OnLink is set,
	// as VXLAN routes do: the gateway is a peer host reached through the tunnel).
	RouteVia
	// RouteBlackhole covers a block this host owns, so its unassigned addresses
	// never leak to the default route.
	RouteBlackhole
	// RouteUnreachable covers a remote block we cannot forward to (an IPIP
	// pool on a host where neither the kernel's tunl0 nor the eBPF programs
	// work): senders get an ICMP error instead of a silent drop or a packet
	// leaking out unencapsulated.
	RouteUnreachable
)

// Route is one kernel route that carries our route protocol number.
type Route struct {
	Dst     netip.Prefix
	Kind    RouteKind
	Dev     string
	Gateway netip.Addr
	OnLink  bool
}

// VXLAN is the tunnel device and its peers, when some pool needs it.
type VXLAN struct {
	Enabled bool
	Device  string // vxlan.calico
	VNI     int
	LocalIP netip.Addr // the host's own address, the tunnel source
	MAC     string     // this host's VTEP MAC
	MTU     int
	Peers   []VTEP
}

// VTEP is a peer host's tunnel endpoint: a neighbour entry HostIP -> MAC on the
// device, and a forwarding entry MAC -> HostIP.
type VTEP struct {
	HostIP netip.Addr
	MAC    string
}

// IPIPMode is how a host carries IPIP pools.
type IPIPMode string

const (
	// IPIPKernel: the kernel's ipip module, device tunl0.
	IPIPKernel IPIPMode = "kernel"
	// IPIPBPF: tc programs on the uplink and on ipip.calico (package
	// dataplane/ipip), for kernels without the ipip module.
	IPIPBPF IPIPMode = "ebpf"
)

// IPIP is the IPIP dataplane of one host, when some pool needs it. Routes
// to remote blocks go "via NODE dev Device onlink" (in Dataplane.Routes);
// this is what the tunnel itself needs to know.
type IPIP struct {
	Enabled bool
	Mode    IPIPMode
	Device  string     // tunl0 or ipip.calico
	LocalIP netip.Addr // the host's address: outer source, and finds the uplink (set even when disabled, for cleanup)
	MTU     int
	// Routes are every learned IPv4 route inside an IPIP pool (encapsulated
	// or not), block -> the node that owns it: where the eBPF path sends
	// a block's packets, and which inner sources each node may send.
	Routes []IPIPRoute
	// Nodes are the other nodes' addresses: the only accepted IPIP senders.
	Nodes []netip.Addr
}

// IPIPRoute is one remote block and its node.
type IPIPRoute struct {
	Dst  netip.Prefix
	Node netip.Addr
}
