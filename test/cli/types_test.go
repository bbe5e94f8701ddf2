package cli

// The JSON contract of calicoctl's -o json output and of the datastore
// records, written out independently of the implementation's types so a
// renamed field shows up here as a failure.

type poolJSON struct {
	CIDR        string `json:"cidr"`
	IPIPMode    string `json:"ipipMode"`
	VXLANMode   string `json:"vxlanMode"`
	NATOutgoing bool   `json:"natOutgoing"`
	BlockSize   int    `json:"blockSize"`
	Disabled    bool   `json:"disabled,omitempty"`
}

type portRange struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

type entity struct {
	Tag   string      `json:"tag,omitempty"`
	CIDR  string      `json:"cidr,omitempty"`
	Ports []portRange `json:"ports,omitempty"`
}

type ruleJSON struct {
	Action   string `json:"action"`
	Protocol string `json:"protocol,omitempty"`
	ICMPType *int   `json:"icmpType,omitempty"`
	ICMPCode *int   `json:"icmpCode,omitempty"`
	Src      entity `json:"src,omitempty"`
	Dst      entity `json:"dst,omitempty"`
}

type profileJSON struct {
	Name     string     `json:"name"`
	Tags     []string   `json:"tags"`
	Inbound  []ruleJSON `json:"inbound"`
	Outbound []ruleJSON `json:"outbound"`
}

type rulesDoc struct {
	Inbound  []ruleJSON `json:"inbound_rules"`
	Outbound []ruleJSON `json:"outbound_rules"`
}

type bgpConfigJSON struct {
	DefaultASNumber uint32 `json:"defaultASNumber"`
	NodeMesh        bool   `json:"nodeMesh"`
}

type peerJSON struct {
	IP       string `json:"ip"`
	ASNumber uint32 `json:"asNumber"`
	Node     string `json:"node,omitempty"`
}

type nodeJSON struct {
	Name     string `json:"name"`
	IPv4     string `json:"ipv4,omitempty"`
	IPv6     string `json:"ipv6,omitempty"`
	ASNumber uint32 `json:"asNumber,omitempty"`
	Status   any    `json:"status,omitempty"`
}

type endpointJSON struct {
	Node          string            `json:"node"`
	Workload      string            `json:"workload"`
	Orchestrator  string            `json:"orchestrator"`
	ContainerID   string            `json:"containerID,omitempty"`
	NetnsPath     string            `json:"netnsPath,omitempty"`
	InterfaceName string            `json:"interfaceName"`
	WorkloadIface string            `json:"workloadIface"`
	MAC           string            `json:"mac,omitempty"`
	IPv4Nets      []string          `json:"ipv4Nets"`
	IPv6Nets      []string          `json:"ipv6Nets"`
	Profiles      []string          `json:"profiles"`
	Labels        map[string]string `json:"labels,omitempty"`
}

const (
	keyBGP      = "/calico/v1/config/bgp"
	prefixPools = "/calico/v1/pool/"
	prefixProfs = "/calico/v1/profile/"
	prefixPeers = "/calico/v1/bgp/peer/"
	prefixHosts = "/calico/v1/host/"
	prefixIPAM  = "/calico/v1/ipam/"
)

func poolKey(escaped string) string { return prefixPools + escaped }
func nodeKey(n string) string       { return prefixHosts + n + "/node" }
func endpointKey(n, w string) string {
	return prefixHosts + n + "/endpoint/" + w
}

type peerStateJSON struct {
	IP       string `json:"ip"`
	ASNumber uint32 `json:"asNumber"`
	Type     string `json:"type"`
	State    string `json:"state"`
	Since    string `json:"since,omitempty"`
	Received int    `json:"received"`
	Rejected int    `json:"rejected"`
}

type statusJSON struct {
	Node      string          `json:"node"`
	Ready     bool            `json:"ready"`
	Updated   string          `json:"updated"`
	PID       int             `json:"pid"`
	Problems  []string        `json:"problems,omitempty"`
	BGPPeers  []peerStateJSON `json:"bgpPeers,omitempty"`
	Endpoints int             `json:"endpoints"`
}

func statusKey(n string) string { return "/calico/v1/status/" + n }
