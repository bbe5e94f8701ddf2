package calc

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/resource"
)

// Generators of issue 14's label-policy scale target as a datastore
// snapshot, shared by calc's benchmark, its tests and calico-bench.

// LabelPolicySnapshot is the scale target as calc sees it: n
// endpoints on h0 labelled app=a0..a49 (so 50 selectors match n/50 each),
// and nPolicies policies, each selecting one app and admitting TCP 8080
// from another app: 50 distinct selectors in all.
func LabelPolicySnapshot(n, nPolicies int) *Snapshot {
	s := NewSnapshot()
	s.Pools["10.64.0.0/16"] = api.Pool{CIDR: "10.64.0.0/16", BlockSize: 26}
	s.Nodes["h0"] = api.Node{Name: "h0", IPv4: "10.0.0.1/24"}
	s.Profiles["P"] = api.NewProfile("P")
	for i := range n {
		a := labelPolicyAddr(i)
		s.Endpoints[fmt.Sprintf("h0/w%d", i)] = api.Endpoint{Node: "h0", Workload: fmt.Sprintf("w%d", i),
			IPv4Nets: []string{a.String() + "/32"}, Profiles: []string{"P"}, Labels: map[string]string{"app": fmt.Sprintf("a%d", i%50)}}
	}
	honest(s)
	for j := range nPolicies {
		order := float64(j)
		name := fmt.Sprintf("pol-%03d", j)
		s.Policies[name] = resource.GlobalNetworkPolicy{Metadata: resource.ObjectMeta{Name: name}, Spec: resource.GlobalNetworkPolicySpec{
			Order:    &order,
			Selector: fmt.Sprintf("app == 'a%d'", j%50),
			Ingress: []resource.Rule{{Action: resource.ActionAllow, Protocol: &resource.Protocol{Name: "TCP", Number: 6},
				Source:      resource.EntityRule{Selector: fmt.Sprintf("app == 'a%d'", (j+1)%50)},
				Destination: resource.EntityRule{Ports: []resource.Port{{Min: 8080, Max: 8080}}}}},
		}}
	}
	return s
}

// LabelPolicyAddr is endpoint i's address in a LabelPolicySnapshot.
func LabelPolicyAddr(i int) string { return labelPolicyAddr(i).String() }

func labelPolicyAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 64, byte(i >> 8), byte(i)})
}

// LabelPolicyRelabel gives endpoint i of a LabelPolicySnapshot the label app=a<app>,
// replacing the record as a client's write would.
func LabelPolicyRelabel(s *Snapshot, i, app int) {
	key := fmt.Sprintf("h0/w%d", i)
	ep := s.Endpoints[key]
	ep.Labels = map[string]string{"app": fmt.Sprintf("a%d", app)}
	s.Endpoints[key] = ep
}

// honest makes every endpoint of s what a real client writes: its derived
// interface, and each address allocated to its handle in a block (made,
// without affinity, when none holds the address yet).
func honest(s *Snapshot) {
	for _, key := range sortedKeys(s.Endpoints) {
		ep := s.Endpoints[key]
		ep.InterfaceName = api.WorkloadIfaceName(ep.Node, ep.Workload)
		s.Endpoints[key] = ep
		handle := api.EndpointHandles(ep)[len(api.EndpointHandles(ep))-1]
		for _, n := range append(slices.Clone(ep.IPv4Nets), ep.IPv6Nets...) {
			a, _ := hostAddr(n)
			allocate(s, a, handle)
		}
	}
}

// allocate records a as held by handle in the block holding it.
func allocate(s *Snapshot, a netip.Addr, handle string) {
	for cidr, b := range s.Blocks {
		p := netip.MustParsePrefix(cidr)
		if p.Contains(a) {
			if b.Allocations == nil {
				b.Allocations = map[int]string{}
			}
			b.Allocations[ordinal(p, a)] = handle
			s.Blocks[cidr] = b
			return
		}
	}
	bits := 26
	if a.Is6() {
		bits = 122
	}
	p := netip.PrefixFrom(a, bits).Masked()
	s.Blocks[p.String()] = api.Block{CIDR: p.String(), Allocations: map[int]string{ordinal(p, a): handle}}
}
