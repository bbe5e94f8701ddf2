// Package api holds the resource types stored in the datastore and their
// validation. It is pure: no I/O, so every client validates the same way
// before it writes.
package api

// EncapMode says when traffic for a pool is encapsulated between hosts.
type EncapMode string

const (
	EncapNever       EncapMode = "Never"
	EncapAlways      EncapMode = "Always"
	EncapCrossSubnet EncapMode = "CrossSubnet"
)

// Pool is a range of workload addresses and how they travel between hosts.
type Pool struct {
	CIDR        string    `json:"cidr"`
	IPIPMode    EncapMode `json:"ipipMode"`
	VXLANMode   EncapMode `json:"vxlanMode"`
	NATOutgoing bool      `json:"natOutgoing"`
	// BlockSize is the prefix length of the blocks hosts claim (26 for IPv4, 122 for IPv6).
	BlockSize int  `json:"blockSize"`
	Disabled  bool `json:"disabled,omitempty"`
}

// Action of a rule.
const (
	ActionAllow = "allow"
	ActionDeny  = "deny"
)

// PortRange is an inclusive range of ports; Min == Max for a single port.
type PortRange struct {
	Min uint16 `json:"min"`
	Max uint16 `json:"max"`
}

// DefaultPublishPorts are the host ports workloads may publish unless the
// operator says otherwise (calico-node --publish-ports). It leaves the
// privileged ports (SSH, DNS, the host's own web server) to the host: a
// published port takes every connection to that host port, so an endpoint
// record must not be able to redirect them.
var DefaultPublishPorts = PortRange{Min: 1024, Max: 65535}

// EntityMatch selects the source or destination of a packet. Empty fields match anything.
type EntityMatch struct {
	Tag   string      `json:"tag,omitempty"`
	CIDR  string      `json:"cidr,omitempty"`
	Ports []PortRange `json:"ports,omitempty"`
}

// Rule is one line of a profile's inbound or outbound list, in the seed-era
// grammar: (allow|deny) [(tcp|udp)|icmp [type N [code M]]|icmpv6 ...] [from ...] [to ...].
type Rule struct {
	Action   string      `json:"action"`
	Protocol string      `json:"protocol,omitempty"` // "", tcp, udp, icmp, icmpv6
	ICMPType *int        `json:"icmpType,omitempty"`
	ICMPCode *int        `json:"icmpCode,omitempty"`
	Src      EntityMatch `json:"src,omitempty"`
	Dst      EntityMatch `json:"dst,omitempty"`
}

// Profile is the seed's unit of policy: tags and ordered inbound and outbound rules.
type Profile struct {
	Name     string   `json:"name"`
	Tags     []string `json:"tags"`
	Inbound  []Rule   `json:"inbound"`
	Outbound []Rule   `json:"outbound"`
}

// NewProfile returns the profile the seed's `profile add NAME` creates:
// tag NAME, inbound "allow from tag NAME", outbound "allow".
func NewProfile(name string) Profile {
	return Profile{
		Name:     name,
		Tags:     []string{name},
		Inbound:  []Rule{{Action: ActionAllow, Src: EntityMatch{Tag: name}}},
		Outbound: []Rule{{Action: ActionAllow}},
	}
}

// Node is one host running calico-node.
type Node struct {
	Name string `json:"name"`
	// IPv4 and IPv6 are the host's addresses with their subnet prefix
	// (10.0.0.1/24), so CrossSubnet can tell which peers share a subnet.
	IPv4     string `json:"ipv4,omitempty"`
	IPv6     string `json:"ipv6,omitempty"`
	ASNumber uint32 `json:"asNumber,omitempty"` // 0: the global default
	// WireGuardPublicKey is the host's WireGuard key (base64), published by
	// its agent; the private half never leaves the host.
	WireGuardPublicKey string `json:"wireguardPublicKey,omitempty"`
	// RouteReflector: this node's agent reflects routes between the nodes
	// that list it as a BGP peer (its clients), and to other reflectors.
	RouteReflector bool `json:"routeReflector,omitempty"`
	// ClusterID is a reflector's route reflector cluster ID (an IPv4
	// address); "" means its own IPv4 address. Reflectors that serve the
	// same clients share one.
	ClusterID string `json:"clusterID,omitempty"`
	// MetricsPort is the TCP port the node's agent serves Prometheus
	// metrics on (0: none). Every agent keeps every node's metrics port
	// away from its workloads, as the rest of the control plane.
	MetricsPort uint16 `json:"metricsPort,omitempty"`
}

// Endpoint is a workload's interface on a host.
type Endpoint struct {
	Node         string `json:"node"`
	Workload     string `json:"workload"`              // the name given to `container add`
	Orchestrator string `json:"orchestrator"`          // netns, docker, libnetwork
	ContainerID  string `json:"containerID,omitempty"` // Docker's container id; a libnetwork endpoint's: the engine's endpoint id
	// ContainerName is the Docker container's name, as users know it (a
	// libnetwork endpoint's Workload is derived from the engine's endpoint
	// id, and `container add ID` names the workload by the id given).
	ContainerName string `json:"containerName,omitempty"`
	// DockerID is the Docker container's id for a libnetwork endpoint
	// (whose ContainerID is the engine's endpoint id: a container on two
	// networks has two endpoints). The driver learns it and ContainerName
	// from the engine just after Join.
	DockerID      string   `json:"dockerID,omitempty"`
	NetnsPath     string   `json:"netnsPath,omitempty"`
	InterfaceName string   `json:"interfaceName"` // host side: cali + 11 hex
	WorkloadIface string   `json:"workloadIface"` // inside the workload: eth0
	MAC           string   `json:"mac,omitempty"`
	IPv4Nets      []string `json:"ipv4Nets"` // 192.168.100.1/32
	IPv6Nets      []string `json:"ipv6Nets"`
	Profiles      []string `json:"profiles"`
	// IPAMHandles name the IPAM handles holding this endpoint's addresses
	// when they are not the default handle of node and workload (the
	// Docker IPAM driver assigns before the endpoint has a name).
	IPAMHandles []string `json:"ipamHandles,omitempty"`
	// Labels describe the workload (from CNI: the conflist's labels and
	// the runtime's pod namespace and name).
	Labels map[string]string `json:"labels,omitempty"`
	// Ports are published on the host's addresses (docker run -p): the
	// agent of Node DNATs HostIP:HostPort to the endpoint's IPv4 address.
	Ports []PortMapping `json:"ports,omitempty"`
}

// DockerContainer is the Docker container behind ep, as users know it: its
// id and name ("" when ep is not a Docker container's, or not learnt yet).
func (ep Endpoint) DockerContainer() (id, name string) {
	switch ep.Orchestrator {
	case OrchestratorDocker:
		if ep.ContainerName == "" {
			return ep.ContainerID, ep.Workload
		}
		return ep.ContainerID, ep.ContainerName
	case OrchestratorLibnetwork:
		return ep.DockerID, ep.ContainerName
	}
	return "", ""
}

// PortMapping is one published port: Proto "tcp" or "udp", HostIP empty
// for every address of the host.
type PortMapping struct {
	Proto    string `json:"proto"`
	HostIP   string `json:"hostIP,omitempty"`
	HostPort uint16 `json:"hostPort"`
	Port     uint16 `json:"port"`
}

// BGPConfig is the cluster-wide BGP setting.
type BGPConfig struct {
	DefaultASNumber uint32 `json:"defaultASNumber"`
	NodeMesh        bool   `json:"nodeMesh"`
}

// DefaultBGPConfig is what a fresh datastore behaves as.
func DefaultBGPConfig() BGPConfig { return BGPConfig{DefaultASNumber: 64512, NodeMesh: true} }

// EncryptionConfig is the cluster's encryption setting (calicoctl encryption).
type EncryptionConfig struct {
	Enabled bool `json:"enabled"`
	// AllowUnencrypted lets hosts reach a host that has published no key
	// in the clear; otherwise its workloads are unreachable.
	AllowUnencrypted bool `json:"allowUnencrypted,omitempty"`
	// Rotation counts `calicoctl encryption rotate`: a host whose key is
	// older makes a new one.
	Rotation int `json:"rotation,omitempty"`
}

// BGPPeer is a configured peer, global (Node == "") or for one node.
type BGPPeer struct {
	IP       string `json:"ip"`
	ASNumber uint32 `json:"asNumber"`
	Node     string `json:"node,omitempty"`
	// MaxPrefixes is how many prefixes per address family the peer may
	// send; one more and the session is reset (a Cease, "maximum number
	// of prefixes reached"), so a router that leaks a full table or a
	// hostile speaker cannot fill this node's memory. 0 means
	// DefaultMaxPrefixes.
	MaxPrefixes int `json:"maxPrefixes,omitempty"`
}

// DefaultMaxPrefixes limits a configured peer that names no limit of its
// own: a pool's blocks and borrowed addresses are far fewer, and a full
// Internet table (about a million routes) is refused at once.
// MaxMaxPrefixes bounds what a record may ask for.
const (
	DefaultMaxPrefixes = 10000
	MaxMaxPrefixes     = 10_000_000
)

// EffectiveMaxPrefixes is the limit a peer record stands for.
func (p BGPPeer) EffectiveMaxPrefixes() int {
	if p.MaxPrefixes == 0 {
		return DefaultMaxPrefixes
	}
	return p.MaxPrefixes
}

// Block is a range of addresses (a /26 or /122) that one host claims.
type Block struct {
	CIDR string `json:"cidr"`
	// Affinity is the node that owns the block; "" when released.
	Affinity string `json:"affinity"`
	// Allocations maps the ordinal of an address in the block to its handle.
	Allocations map[int]string `json:"allocations"`
}

// Handle records which addresses a workload holds, so they can be released together.
type Handle struct {
	ID  string   `json:"id"`
	IPs []string `json:"ips"`
}

// NodeStatus is written back by each calico-node for `calicoctl status`.
type NodeStatus struct {
	Node      string      `json:"node"`
	Ready     bool        `json:"ready"`
	Updated   string      `json:"updated"` // RFC 3339
	PID       int         `json:"pid"`
	Problems  []string    `json:"problems,omitempty"`
	BGPPeers  []PeerState `json:"bgpPeers,omitempty"`
	Endpoints int         `json:"endpoints"`
	// IPIP says how this node carries IPIP pools, when it does.
	IPIP string `json:"ipip,omitempty"`
	// FastPath says whether the eBPF fast path for accepted flows is on.
	FastPath string `json:"fastPath,omitempty"`
	// ClusterID is set when the node is a route reflector: its cluster ID.
	ClusterID string `json:"routeReflectorClusterID,omitempty"`
	// Swept is what the node lately removed as leftovers of interrupted
	// workload changes (veths and IPAM handles no endpoint owned), newest last.
	Swept []string `json:"swept,omitempty"`
	// WireGuard is this node's encryption device, when encryption is on.
	WireGuard *WireGuardStatus `json:"wireguard,omitempty"`
	// Flows are the kinds of packets the node's policy dropped lately,
	// newest first (a few per workload; `calicoctl flows`).
	Flows []DeniedFlow `json:"flows,omitempty"`
}

// DeniedFlow is one kind of packet a node's policy dropped: same workload,
// direction, addresses, protocol, port and deciding rule.
type DeniedFlow struct {
	Workload    string `json:"workload"`
	Direction   string `json:"direction"` // inbound (to the workload) or outbound (from it)
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Protocol    string `json:"protocol"`       // tcp, udp, icmp, icmpv6, or the protocol number
	Port        int    `json:"port,omitempty"` // destination port (tcp, udp) or ICMP type
	// Profile is the profile whose rule Rule (1-based) denied the packets;
	// with Rule 0, no rule of the workload's profiles (Profile, comma-separated)
	// allowed them.
	Profile string `json:"profile"`
	// Policy is the label policy whose Deny rule Rule denied them; with
	// Rule 0 and no Profile, label policies applied and none decided.
	Policy   string `json:"policy,omitempty"`
	Rule     int    `json:"rule"`
	DeniedBy string `json:"deniedBy"` // the same in words, with the rule's text
	Packets  uint64 `json:"packets"`
	LastSeen string `json:"lastSeen"` // RFC 3339
}

// WireGuardStatus is a node's WireGuard device as it sees it.
type WireGuardStatus struct {
	Mode      string          `json:"mode"` // kernel or userspace (wireguard-go)
	Device    string          `json:"device"`
	PublicKey string          `json:"publicKey"`
	Peers     []WireGuardPeer `json:"peers,omitempty"`
}

// WireGuardPeer is one peer of a node's WireGuard device.
type WireGuardPeer struct {
	Node          string `json:"node"`
	Endpoint      string `json:"endpoint"`
	LastHandshake string `json:"lastHandshake,omitempty"` // RFC 3339; empty: never
	AllowedIPs    int    `json:"allowedIPs"`
}

// PeerState is one BGP session as the node sees it.
type PeerState struct {
	IP       string `json:"ip"`
	ASNumber uint32 `json:"asNumber"`
	Type     string `json:"type"` // node-mesh, global, node
	// Role is the session's part in route reflection: "client" (this node
	// reflects the peer's routes), "reflector" (the peer is a route
	// reflector), or "" (neither).
	Role  string `json:"role,omitempty"`
	State string `json:"state"`
	Since string `json:"since,omitempty"`
	// Received is as of the report's time (Updated): a change of counts
	// alone is written with the next heartbeat (10 s), not at once, since
	// every route anywhere changes them on every host.
	Received int `json:"received"`
	// Rejected is how many of the routes received the node's import
	// policy refuses (outside every pool, over a node address, another
	// node's block or workload address).
	Rejected int `json:"rejected"`
	// MaxPrefixes is the session's prefix limit per family (0: none, the
	// sessions between our own nodes); LimitResets counts the times the
	// peer went over it and the session was reset, LastLimitReset the
	// latest (RFC 3339).
	MaxPrefixes    int    `json:"maxPrefixes,omitempty"`
	LimitResets    int    `json:"limitResets,omitempty"`
	LastLimitReset string `json:"lastLimitReset,omitempty"`
}
