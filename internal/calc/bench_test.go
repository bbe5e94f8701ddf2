package calc

import (
	"fmt"
	"maps"
	"net/netip"
	"testing"

	"github.com/calico-go/calico/internal/api"
)

// BenchmarkComputeLearnedRoutes is route calculation at cluster scale: 500
// hosts on two subnets with four blocks each (1996 learned BGP routes, each checked by the import policy, half
// of them through the VXLAN tunnel under CrossSubnet), seen from a host with
// 20 local workloads. Every agent pass pays this.
func BenchmarkComputeLearnedRoutes(b *testing.B) {
	in := learnedRoutesInput(b)
	b.ReportAllocs()
	for b.Loop() {
		Compute(in)
	}
}

// BenchmarkLearnedRouteDelta is what the agent pays instead of a Compute
// (BenchmarkComputeLearnedRoutes) when BGP alone changed: one new block
// learned in the same cluster, turned into the one route to add.
func BenchmarkLearnedRouteDelta(b *testing.B) {
	in := learnedRoutesInput(b)
	r := Compute(in)
	blk := netip.MustParsePrefix("10.79.255.0/26") // in the pool, claimed by no one
	next := maps.Clone(in.Learned)
	next[blk] = []LearnedPath{{Neighbor: netip.MustParseAddr("10.0.1.2"), NextHop: netip.MustParseAddr("10.0.1.2")}}
	if d, ok := r.Imports.Delta(in.Learned, next); !ok || len(d.Add) != 1 || len(d.Del) != 0 {
		b.Fatalf("delta %+v, ok %v", d, ok)
	}
	b.ReportAllocs()
	for b.Loop() {
		r.Imports.Delta(in.Learned, next)
	}
}

// learnedRoutesInput: 500 hosts on two subnets with four blocks each (1996
// learned BGP routes, each checked by the import policy, half of them
// through the VXLAN tunnel under CrossSubnet), seen from a host with 20
// local workloads.
func learnedRoutesInput(b *testing.B) Input {
	const hosts, blocksPerHost = 500, 4
	s := NewSnapshot()
	s.Pools["10.64.0.0/12"] = api.Pool{CIDR: "10.64.0.0/12", VXLANMode: api.EncapCrossSubnet, BlockSize: 26}
	learned := map[netip.Prefix][]LearnedPath{}
	for h := range hosts {
		subnet := byte(1 + h%2) // alternate subnets: half the peers need the tunnel
		ip := netip.AddrFrom4([4]byte{10, 0, subnet, byte(h / 2)})
		name := fmt.Sprintf("h%d", h)
		s.Nodes[name] = api.Node{Name: name, IPv4: ip.String() + "/24"}
		for k := range blocksPerHost {
			n := h*blocksPerHost + k
			blk := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(64 + n>>10), byte(n >> 2), byte(n&3) << 6}), 26)
			// Every host's blocks are in the snapshot, as in a real
			// cluster: the import policy checks each learned block
			// against them.
			s.Blocks[blk.String()] = api.Block{CIDR: blk.String(), Affinity: name}
			if h != 0 {
				learned[blk] = []LearnedPath{{Neighbor: ip, NextHop: ip}}
			}
		}
	}
	s.Profiles["P"] = api.NewProfile("P")
	for i := range 20 {
		a := netip.AddrFrom4([4]byte{10, 64, 0, byte(i + 1)})
		s.Endpoints[fmt.Sprintf("h0/w%d", i)] = api.Endpoint{Node: "h0", Workload: fmt.Sprintf("w%d", i),
			InterfaceName: fmt.Sprintf("cali%011d", i), IPv4Nets: []string{a.String() + "/32"}, Profiles: []string{"P"}}
	}
	honest(s)
	in := Input{Node: "h0", Snap: s, Learned: learned}
	if r := Compute(in); len(r.Dataplane.Routes) < hosts*blocksPerHost || len(r.Rejected) != 0 {
		b.Fatalf("only %d routes computed, %d refused", len(r.Dataplane.Routes), len(r.Rejected))
	}
	return in
}

// BenchmarkComputeLabelPolicies: 1000 local endpoints, 200 policies, 50
// selectors (the scale target). Every agent pass pays this.
func BenchmarkComputeLabelPolicies(b *testing.B) {
	in := Input{Node: "h0", Snap: LabelPolicySnapshot(1000, 200)}
	r := Compute(in)
	if len(r.Dataplane.Policy.Policies) != 200 || len(r.Dataplane.Policy.SelectorMembers) != 50 || len(r.Problems) != 0 {
		b.Fatalf("%d policies, %d selectors, problems %q", len(r.Dataplane.Policy.Policies), len(r.Dataplane.Policy.SelectorMembers), r.Problems)
	}
	b.ReportAllocs()
	for b.Loop() {
		Compute(in)
	}
}
