package calc

import (
	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/resource"
)

// Snapshot is everything in the datastore that can matter to a host, decoded.
type Snapshot struct {
	BGP         api.BGPConfig
	Pools       map[string]api.Pool     // by CIDR
	Profiles    map[string]api.Profile  // by name
	Nodes       map[string]api.Node     // by name
	Endpoints   map[string]api.Endpoint // by "node/workload"
	Blocks      map[string]api.Block    // by CIDR
	GlobalPeers map[string]api.BGPPeer  // by IP
	NodePeers   map[string]api.BGPPeer  // by "node/ip"
	Encryption  api.EncryptionConfig
	// Policies and NetworkSets are the v3 label-policy resources, by
	// metadata.name; validated as resource.Decode validates a file before they
	// get here.
	Policies    map[string]resource.GlobalNetworkPolicy
	NetworkSets map[string]resource.GlobalNetworkSet
}

// NewSnapshot returns an empty snapshot with the default BGP settings.
func NewSnapshot() *Snapshot {
	return &Snapshot{
		BGP:         api.DefaultBGPConfig(),
		Pools:       map[string]api.Pool{},
		Profiles:    map[string]api.Profile{},
		Nodes:       map[string]api.Node{},
		Endpoints:   map[string]api.Endpoint{},
		Blocks:      map[string]api.Block{},
		GlobalPeers: map[string]api.BGPPeer{},
		NodePeers:   map[string]api.BGPPeer{},
		Policies:    map[string]resource.GlobalNetworkPolicy{},
		NetworkSets: map[string]resource.GlobalNetworkSet{},
	}
}
