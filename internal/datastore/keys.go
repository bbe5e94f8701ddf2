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
//	/calico/v1/host/<node>/node                   api.Node
//	/calico/v1/host/<node>/bgp/peer/<ip>          api.BGPPeer (this node's peers)
//	/calico/v1/host/<node>/endpoint/<workload>    api.Endpoint
//	/calico/v1/status/<node>                      api.NodeStatus
//	/calico/v1/ipam/block/<cidr>                  api.Block
//	/calico/v1/ipam/affinity/<node>/<cidr>        the block's CIDR (a claim by this node)
//	/calico/v1/ipam/handle/<id>                   api.Handle
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
	PrefixHosts       = Root + "host/"
	PrefixStatus      = Root + "status/"
	PrefixIPAM        = Root + "ipam/"
	PrefixBlocks      = Root + "ipam/block/"
	PrefixAffinities  = Root + "ipam/affinity/"
	PrefixHandles     = Root + "ipam/handle/"
)

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

func PoolKey(cidr string) string     { return PrefixPools + EscapeCIDR(cidr) }
func ProfileKey(name string) string  { return PrefixProfiles + name }
func NodeKey(node string) string     { return PrefixHosts + node + "/node" }
func StatusKey(node string) string   { return PrefixStatus + node }
func GlobalPeerKey(ip string) string { return PrefixGlobalPeers + ip }
func BlockKey(cidr string) string    { return PrefixBlocks + EscapeCIDR(cidr) }
func HandleKey(id string) string     { return PrefixHandles + id }
func NodePeerKey(node, ip string) string {
	return PrefixHosts + node + "/bgp/peer/" + ip
}
func EndpointPrefix(node string) string { return PrefixHosts + node + "/endpoint/" }
func EndpointKey(node, workload string) string {
	return EndpointPrefix(node) + workload
}
func AffinityPrefix(node string) string { return PrefixAffinities + node + "/" }
func AffinityKey(node, cidr string) string {
	return AffinityPrefix(node) + EscapeCIDR(cidr)
}
