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
}

// EndpointPolicy is one local workload interface and the profiles applied to it, in order.
type EndpointPolicy struct {
	Interface string       // host side veth, cali...
	Addrs     []netip.Addr // the workload's own addresses (anti-spoofing)
	Profiles  []string     // applied in order; a workload with none reaches nothing
}

// AddrSet holds addresses of both families.
type AddrSet struct {
	V4 []netip.Addr
	V6 []netip.Addr
}
