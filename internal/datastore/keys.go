package datastore

import "strings"

// The key layout is versioned under Root so a later layout can live beside
// this one during an upgrade. Every value is JSON of a type from package api.
//
//	/calico/v1/config/bgp                         api.BGPConfig
//	/calico/v1/config/encryption                  api.EncryptionConfig
//	/calico/v1/bgp/peer/<ip>                      api.BGPPeer (global peers)
//	/calico/v1/pool/<cidr>                        api.Pool
//	/calico/v1/profile/<name>                     api.Profile
//	/calico/v1/policy/<name>                      resource.GlobalNetworkPolicy (v3, JSON)
//	/calico/v1/networkset/<name>                  resource.GlobalNetworkSet (v3, JSON)
//	/calico/v1/host/<node>/node                   api.Node
//	/calico/v1/host/<node>/bgp/peer/<ip>          api.BGPPeer (this node's peers)
//	/calico/v1/host/<node>/endpoint/<workload>    api.Endpoint
//	/calico/v1/status/<node>                      api.NodeStatus
//	/calico/v1/ipam/block/<cidr>                  api.Block
//	/calico/v1/ipam/affinity/<node>/<cidr>        the block's CIDR (a claim by this node)
//	/calico/v1/ipam/handle/<id>                   api.Handle
//	/calico/v1/libnetwork/network/<node>/<id>     the Docker network driver's network
//	/calico/v1/libnetwork/endpoint/<node>/<id>    the Docker network driver's endpoint
//
// A <cidr> is written with '/' replaced by '-' (192.168.100.0-26), so each
// resource is one path segment.
const Root = "/calico/v1/"

const (
	KeyBGPConfig      = Root + "config/bgp"
	KeyEncryption     = Root + "config/encryption"
	PrefixGlobalPeers = Root + "bgp/peer/"
	PrefixPools       = Root + "pool/"
	PrefixProfiles    = Root + "profile/"
	PrefixPolicies    = Root + "policy/"
	PrefixNetworkSets = Root + "networkset/"
	PrefixHosts       = Root + "host/"
	PrefixStatus      = Root + "status/"
	PrefixIPAM        = Root + "ipam/"
	PrefixBlocks      = Root + "ipam/block/"
	PrefixAffinities  = Root + "ipam/affinity/"
	PrefixHandles     = Root + "ipam/handle/"
)

// AgentKeysEnd ends the range of keys agents follow, [Root, AgentKeysEnd):
// everything but the status records. Every agent rewrites its own as a
// heartbeat and no agent reads another's, yet under a watch of all of Root
// each heartbeat went to every agent: n agents made n²/10 s events of
// nothing. status/ sorts after every other prefix under Root (keys_test
// holds that), so one range leaves out exactly it.
const AgentKeysEnd = PrefixStatus

// EscapeCIDR makes a CIDR one key segment.
func EscapeCIDR(cidr string) string { return strings.ReplaceAll(cidr, "/", "-") }

// UnescapeCIDR reverses EscapeCIDR.
func UnescapeCIDR(seg string) string {
	i := strings.LastIndex(seg, "-")
	if i < 0 {
		return seg
	}
	return seg[:i] + "/" + seg[i+1:]
}

func PoolKey(cidr string) string         { return PrefixPools + EscapeCIDR(cidr) }
func ProfileKey(name string) string      { return PrefixProfiles + name }
func PolicyKey(name string) string       { return PrefixPolicies + name }
func NetworkSetKey(name string) string   { return PrefixNetworkSets + name }
func NodeKey(node string) string         { return HostPrefix(node) + "node" }
func StatusKey(node string) string       { return PrefixStatus + node }
func GlobalPeerKey(ip string) string     { return PrefixGlobalPeers + ip }
func BlockKey(cidr string) string        { return PrefixBlocks + EscapeCIDR(cidr) }
func HandleKey(id string) string         { return PrefixHandles + id }
func NodePeerKey(node, ip string) string { return NodePeerPrefix(node) + ip }

// HostPrefix holds everything of one node: its record, peers and endpoints.
func HostPrefix(node string) string     { return PrefixHosts + node + "/" }
func NodePeerPrefix(node string) string { return HostPrefix(node) + "bgp/peer/" }

// IsNodeKey says whether key is a node's record (and not another record
// under PrefixHosts).
func IsNodeKey(key string) bool {
	rest, ok := strings.CutPrefix(key, PrefixHosts)
	node, tail, found := strings.Cut(rest, "/")
	return ok && found && node != "" && tail == "node"
}
func EndpointPrefix(node string) string { return HostPrefix(node) + "endpoint/" }
func EndpointKey(node, workload string) string {
	return EndpointPrefix(node) + workload
}
func AffinityPrefix(node string) string { return PrefixAffinities + node + "/" }
func AffinityKey(node, cidr string) string {
	return AffinityPrefix(node) + EscapeCIDR(cidr)
}

// PrefixLibnetwork holds the Docker drivers' own records (package libnetwork
// owns their format); they are per node, so removing a node removes them.
const (
	PrefixLibnetwork          = Root + "libnetwork/"
	PrefixLibnetworkNetworks  = PrefixLibnetwork + "network/"
	PrefixLibnetworkEndpoints = PrefixLibnetwork + "endpoint/"
)

func LibnetworkNetworkPrefix(node string) string  { return PrefixLibnetworkNetworks + node + "/" }
func LibnetworkEndpointPrefix(node string) string { return PrefixLibnetworkEndpoints + node + "/" }
func LibnetworkNetworkKey(node, id string) string { return LibnetworkNetworkPrefix(node) + id }
func LibnetworkEndpointKey(node, id string) string {
	return LibnetworkEndpointPrefix(node) + id
}

// LibnetworkNodePrefixes are the prefixes of one node's Docker driver
// records: its networks, then its endpoints.
func LibnetworkNodePrefixes(node string) []string {
	return []string{LibnetworkNetworkPrefix(node), LibnetworkEndpointPrefix(node)}
}
