// Package libnetwork serves Docker's remote network driver "calico" and
// remote IPAM driver "calico-ipam" over the plugin protocol, using the
// engine's own plugin helper library for the wire format.
//
// How a Docker network maps onto this network: the network's subnet is a
// pool (created by the first `docker network create` that names it, with
// --opt ipip=true|nat-outgoing=true|vxlan=true), and the network's name is
// a profile whose members reach each other and nothing else. Today's engine
// has no cluster store, so networks are local-scope: a user creates the
// network on every host with the same name and subnet, and equal names mean
// one pool and one profile across the hosts. Each host records its networks
// in the datastore, so `docker network rm` on one host removes the pool and
// profile only when no host still has the network and nothing uses them.
package libnetwork

import (
	"github.com/calico-go/calico/internal/datastore"
)

// Names the engine knows the drivers by: the socket names.
const (
	NetworkDriverName = "calico"
	IPAMDriverName    = "calico-ipam"
	// AddressSpace tells CreateNetwork that our IPAM driver took the
	// network's addresses (and the endpoint needs no assignment of its own).
	AddressSpace = "CalicoLocal"
	// containerIfacePrefix: the engine names the container side cali0, cali1...
	containerIfacePrefix = "cali"
)

// networkRecord is one host's Docker network.
//
//	/calico/v1/libnetwork/network/<node>/<network id>
type networkRecord struct {
	ID    string   `json:"id"`
	Name  string   `json:"name,omitempty"` // learnt at the first endpoint
	Pools []string `json:"pools"`          // the subnets it uses
	// CreatedPools and CreatedProfile are what this network made, and so
	// may remove when the last host's network goes.
	CreatedPools   []string `json:"createdPools,omitempty"`
	CreatedProfile bool     `json:"createdProfile,omitempty"`
	// OurIPAM is true when calico-ipam gave the addresses; else the
	// engine's default IPAM did and the driver claims them in ours.
	OurIPAM bool `json:"ourIPAM"`
}

// endpointRecord is an endpoint between CreateEndpoint and DeleteEndpoint.
//
//	/calico/v1/libnetwork/endpoint/<node>/<endpoint id>
type endpointRecord struct {
	ID        string   `json:"id"`
	NetworkID string   `json:"networkID"`
	Profile   string   `json:"profile"`
	Addrs     []string `json:"addrs"`   // single addresses, 192.168.0.2/32
	Claimed   []string `json:"claimed"` // addresses this driver assigned in IPAM (default-IPAM networks)
}

// The records' keys are part of the datastore's layout (datastore/keys.go).
func networkPrefix() string              { return datastore.PrefixLibnetworkNetworks }
func networkKey(node, id string) string  { return datastore.LibnetworkNetworkKey(node, id) }
func endpointKey(node, id string) string { return datastore.LibnetworkEndpointKey(node, id) }

// Workload is the workload name of a libnetwork endpoint: the engine's
// endpoint id, shortened as the engine's own CLI shortens ids.
func Workload(endpointID string) string {
	if len(endpointID) > 12 {
		return "docker-" + endpointID[:12]
	}
	return "docker-" + endpointID
}
