package calc

import (
	"fmt"
	"maps"
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

// LabelPolicyAdd adds endpoint i (h0/w<i>, labelled app=a<app>) to a
// LabelPolicySnapshot as a client writes it: its address taken in its
// block, then its record. It returns the changes as an agent records
// them for Reendpoint.
func LabelPolicyAdd(s *Snapshot, i, app int) ([]EndpointEdit, []BlockEdit) {
	a := labelPolicyAddr(i)
	name := fmt.Sprintf("w%d", i)
	blocks := setAllocation(s, a, api.WorkloadHandle("h0", name))
	key := "h0/" + name
	old, had := s.Endpoints[key]
	s.Endpoints[key] = api.Endpoint{Node: "h0", Workload: name, InterfaceName: api.WorkloadIfaceName("h0", name),
		IPv4Nets: []string{a.String() + "/32"}, Profiles: []string{"P"}, Labels: map[string]string{"app": fmt.Sprintf("a%d", app)}}
	return []EndpointEdit{{Key: key, Old: old, Had: had}}, blocks
}

// LabelPolicyRemove removes endpoint i of a LabelPolicySnapshot and
// releases its address, as LabelPolicyAdd's changes.
func LabelPolicyRemove(s *Snapshot, i int) ([]EndpointEdit, []BlockEdit) {
	key := fmt.Sprintf("h0/w%d", i)
	old, had := s.Endpoints[key]
	delete(s.Endpoints, key)
	return []EndpointEdit{{Key: key, Old: old, Had: had}}, setAllocation(s, labelPolicyAddr(i), "")
}

// setAllocation allocates (handle != "") or releases a in the block that
// holds it, replacing the block as a decoder does (a new map), and
// returns the block's edit.
func setAllocation(s *Snapshot, a netip.Addr, handle string) []BlockEdit {
	for cidr, b := range s.Blocks {
		p := netip.MustParsePrefix(cidr)
		if !p.Contains(a) {
			continue
		}
		edit := BlockEdit{CIDR: cidr, Old: b}
		b.Allocations = maps.Clone(b.Allocations)
		if b.Allocations == nil {
			b.Allocations = map[int]string{}
		}
		if handle == "" {
			delete(b.Allocations, ordinal(p, a))
		} else {
			b.Allocations[ordinal(p, a)] = handle
		}
		s.Blocks[cidr] = b
		return []BlockEdit{edit}
	}
	allocate(s, a, handle)
	return nil
}
