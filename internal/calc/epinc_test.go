package calc

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
)

// epincWorld is what a container starting or stopping on h0 can meet: local
// endpoints with IPv4 and IPv6 addresses in h0's blocks, in profiles whose
// rules name tags (one tag carried by two profiles, one profile named by
// endpoints but missing), label policies in both directions (one no
// endpoint matches yet), a network set holding a local address, and
// another host's endpoints in the same tags and selectors, in a VXLAN pool
// (so what h1 may send through the tunnel is part of the Result) with a
// block of no host's that h1 may borrow from.
func epincWorld() *Snapshot {
	s := LabelPolicySnapshot(40, 20)
	s.Pools["fd10::/64"] = api.Pool{CIDR: "fd10::/64", BlockSize: 122}
	s.Pools["10.65.0.0/16"] = api.Pool{CIDR: "10.65.0.0/16", VXLANMode: api.EncapAlways, BlockSize: 26}
	s.Nodes["h1"] = api.Node{Name: "h1", IPv4: "10.0.0.2/24"}
	q := api.NewProfile("Q")
	q.Tags = []string{"Q", "shared"}
	q.Inbound = append(q.Inbound, api.Rule{Action: api.ActionAllow, Src: api.EntityMatch{Tag: "shared"}}, api.Rule{Action: api.ActionAllow, Src: api.EntityMatch{Tag: "P"}})
	s.Profiles["Q"] = q
	p := s.Profiles["P"]
	p.Tags = []string{"P", "shared"}
	s.Profiles["P"] = p
	for key, ep := range s.Endpoints {
		i := len(key) // some spread, deterministic
		if i%2 == 0 {
			ep.IPv6Nets = []string{fmt.Sprintf("fd10::%x/128", 0x100+i*7%50)}
		}
		if i%3 == 0 {
			ep.Profiles = []string{"Q", "P"}
		}
		s.Endpoints[key] = ep
	}
	// Unique IPv6 addresses: the spread above repeats.
	n := 0
	for _, key := range sortedKeys(s.Endpoints) {
		ep := s.Endpoints[key]
		if len(ep.IPv6Nets) > 0 {
			ep.IPv6Nets = []string{fmt.Sprintf("fd10::%x/128", n+1)}
			n++
		}
		s.Endpoints[key] = ep
	}
	for i := range 15 {
		s.Endpoints[fmt.Sprintf("h1/r%d", i)] = api.Endpoint{Node: "h1", Workload: fmt.Sprintf("r%d", i),
			IPv4Nets: []string{fmt.Sprintf("10.65.0.%d/32", i+1)}, IPv6Nets: []string{fmt.Sprintf("fd11::%x/128", i+1)},
			Profiles: []string{"P"}, Labels: map[string]string{"app": fmt.Sprintf("a%d", i%7)}}
	}
	honest(s)
	for cidr, b := range s.Blocks {
		b.Affinity = "h0"
		if pf := netip.MustParsePrefix(cidr); netip.MustParsePrefix("10.65.0.0/16").Overlaps(pf) || netip.MustParsePrefix("fd11::/64").Overlaps(pf) {
			b.Affinity = "h1"
		}
		s.Blocks[cidr] = b
	}
	// Room for more local endpoints: a /26 and a /122 more of h0's.
	s.Blocks["10.64.0.64/26"] = api.Block{CIDR: "10.64.0.64/26", Affinity: "h0", Allocations: map[int]string{}}
	s.Blocks["fd10::40/122"] = api.Block{CIDR: "fd10::40/122", Affinity: "h0", Allocations: map[int]string{}}
	// And for h1's: a /26 of its own, one of no host's.
	s.Blocks["10.65.0.64/26"] = api.Block{CIDR: "10.65.0.64/26", Affinity: "h1", Allocations: map[int]string{}}
	s.Blocks["10.65.1.0/26"] = api.Block{CIDR: "10.65.1.0/26", Allocations: map[int]string{}}
	addTierPolicies(s)
	return s
}

// epincEdits records what a client's writes change, as the agent does:
// each endpoint record and block as it was before its first change.
type epincEdits struct {
	eps    map[string]EndpointEdit
	blocks map[string]BlockEdit
}

func newEpincEdits() *epincEdits {
	return &epincEdits{eps: map[string]EndpointEdit{}, blocks: map[string]BlockEdit{}}
}

func (e *epincEdits) endpoint(s *Snapshot, key string) {
	if _, ok := e.eps[key]; !ok {
		old, had := s.Endpoints[key]
		e.eps[key] = EndpointEdit{Key: key, Old: old, Had: had}
	}
}

func (e *epincEdits) block(s *Snapshot, cidr string) {
	if _, ok := e.blocks[cidr]; !ok {
		old := s.Blocks[cidr]
		old.Allocations = maps.Clone(old.Allocations) // the test edits the map in place; a decoder never does
		e.blocks[cidr] = BlockEdit{CIDR: cidr, Old: old}
	}
}

func (e *epincEdits) lists() ([]EndpointEdit, []BlockEdit) {
	return slices.Collect(maps.Values(e.eps)), slices.Collect(maps.Values(e.blocks))
}

// setAlloc allocates (handle != "") or releases a in its block, recording
// the block's edit.
func setAlloc(t *testing.T, s *Snapshot, e *epincEdits, a netip.Addr, handle string) {
	t.Helper()
	for cidr := range s.Blocks {
		if netip.MustParsePrefix(cidr).Contains(a) {
			e.block(s, cidr)
			setAllocation(s, a, handle)
			return
		}
	}
	t.Fatalf("no block holds %s", a)
}

// sameResult compares two Results as the agent uses them (Imports is a
// function of the input; Reendpoint's is checked by Delta's tests).
func sameResult(a, b Result) bool {
	a.Imports, b.Imports = nil, nil
	return reflect.DeepEqual(a, b)
}

// TestReendpointIsCompute: containers starting, stopping and changing on
// h0 and on h1 (IPv4 and IPv6, profiles with tags, label policies in both
// directions), each written as a client writes it (the address taken in
// IPAM first, then the record; the record removed, then the address
// released), and each write applied by Reendpoint on the last Result,
// give exactly Compute's Result of the changed snapshot. Where Reendpoint
// declines, something it must not serve did change: h1's containers that
// borrow an address outside h1's blocks (a VXLAN source of h1's) are
// among them.
func TestReendpointIsCompute(t *testing.T) {
	s := epincWorld()
	in := Input{Node: "h0", Snap: s}
	res := Compute(in)
	if len(res.Ignored) != 0 || len(res.Dataplane.Policy.Policies) == 0 || len(res.Dataplane.Policy.TagMembers["shared"].V6) == 0 {
		t.Fatalf("world: %d ignored, %d policies, shared tag %v: %v", len(res.Ignored), len(res.Dataplane.Policy.Policies),
			res.Dataplane.Policy.TagMembers["shared"], res.Problems)
	}
	rng := rand.New(rand.NewPCG(19, 4))
	apps := []string{"a0", "a1", "a2", "a17", "zz", "rare"}
	tiers := []string{"", "db", "cache"}
	profiles := [][]string{{"P"}, {"Q"}, {"Q", "P"}, {"P", "missing"}}
	labels := func() map[string]string {
		l := map[string]string{"app": apps[rng.IntN(len(apps))]}
		if tr := tiers[rng.IntN(len(tiers))]; tr != "" {
			l["tier"] = tr
		}
		return l
	}
	free := func(p netip.Prefix) netip.Addr {
		for {
			a, _ := nthAddr(p, 1+rng.IntN(60))
			if _, held := indexBlocks(s).holder(a); !held {
				return a
			}
		}
	}
	served, declined, setsServed := 0, 0, 0
	idx := NewEndpointAddrs(s)
	step := func(what string, e *epincEdits) {
		t.Helper()
		want := Compute(in)
		eps, blocks := e.lists()
		got, ch, ok := Reendpoint(in, res, eps, blocks)
		// The address index, kept in step with each write as the agent
		// keeps it, answers as the scan does.
		for _, e := range eps {
			cur, has := s.Endpoints[e.Key]
			idx.Update(s, e.Key, e.Old, e.Had, cur, has)
		}
		if !idx.Matches(s) {
			t.Fatalf("%s: the index kept in step differs from one built from the snapshot", what)
		}
		withIdx := in
		withIdx.EndpointAddrs = idx
		if got2, _, ok2 := Reendpoint(withIdx, res, eps, blocks); ok2 != ok || ok && !sameResult(got, got2) {
			t.Fatalf("%s: with the index served %v, with the scan %v", what, ok2, ok)
		}
		if !ok {
			// Only the declines the world provokes: a policy or profile
			// coming into or going out of use, a released address, an
			// address borrowed outside its host's blocks.
			if slices.Equal(slices.Sorted(maps.Keys(want.Dataplane.Policy.Policies)), slices.Sorted(maps.Keys(res.Dataplane.Policy.Policies))) &&
				slices.Equal(slices.Sorted(maps.Keys(want.Dataplane.Policy.Profiles)), slices.Sorted(maps.Keys(res.Dataplane.Policy.Profiles))) &&
				what != "release" && !strings.HasPrefix(what, "borrowed") {
				t.Errorf("%s: declined, though the policies and profiles in use did not change", what)
			}
			declined++
			res = want
			return
		}
		if !reflect.DeepEqual(got.Dataplane.Policy.TagMembers, res.Dataplane.Policy.TagMembers) ||
			!reflect.DeepEqual(got.Dataplane.Policy.SelectorMembers, res.Dataplane.Policy.SelectorMembers) {
			setsServed++
		}
		if !sameResult(got, want) {
			t.Fatalf("%s: Reendpoint's Result differs from Compute's:\n got %+v\nwant %+v", what, got.Dataplane, want.Dataplane)
		}
		if strings.HasPrefix(what, "borrowed") {
			t.Fatalf("%s: served, though h1's VXLAN sources changed", what)
		}
		if !got.Imports.imp.mine[netip.MustParsePrefix("10.64.0.0/26")] && len(got.Announce) > 0 {
			t.Fatalf("%s: imports lost what this host announces", what)
		}
		checkChange(t, what, res, got, ch)
		served++
		res = got
	}
	added, removed, changed, remote, n := 0, 0, 0, 0, 0
	for i := range 400 {
		if rng.IntN(2) == 0 {
			remoteStep(t, s, rng, i, free, profiles, labels, step)
			remote++
			n++
			continue
		}
		c := containerSteps{t: t, s: s, rng: rng, free: free, profiles: profiles, labels: labels, step: step}
		keys := slices.DeleteFunc(sortedKeys(s.Endpoints), func(k string) bool { return s.Endpoints[k].Node != "h0" })
		switch op := rng.IntN(3); {
		case op == 0 || len(s.Endpoints) < 45:
			name := fmt.Sprintf("new%d", i)
			c.start("h0", name, "allocate", "add "+name, netip.MustParsePrefix("10.64.0.64/26"), netip.MustParsePrefix("fd10::40/122"))
			added++
		case op == 1:
			key := keys[rng.IntN(len(keys))]
			c.stop(key, "remove "+key)
			removed++
		default:
			key := keys[rng.IntN(len(keys))]
			c.rewrite(key, "change "+key)
			changed++
		}
		n++
	}
	t.Logf("%d steps: %d added, %d removed, %d changed on h0, %d on h1; %d writes served (%d changing sets), %d left to Compute",
		n, added, removed, changed, remote, served, setsServed, declined)
	if served < 3*declined || setsServed < 50 {
		t.Errorf("only %d writes served (%d changing sets), %d left to Compute", served, setsServed, declined)
	}
}

// remoteStep is one change of h1's containers, as h0's agent receives it:
// a container started (in h1's blocks, or now and then borrowing from a
// block of no host's), stopped, or its record rewritten.
func remoteStep(t *testing.T, s *Snapshot, rng *rand.Rand, i int, free func(netip.Prefix) netip.Addr, profiles [][]string,
	labels func() map[string]string, step func(string, *epincEdits)) {
	t.Helper()
	c := containerSteps{t: t, s: s, rng: rng, free: free, profiles: profiles, labels: labels, step: step}
	borrowed := netip.MustParsePrefix("10.65.1.0/26")
	isBorrowed := func(key string) bool {
		return slices.ContainsFunc(endpointPrefixes(s.Endpoints[key]), func(p netip.Prefix) bool { return borrowed.Contains(p.Addr()) })
	}
	keys := slices.DeleteFunc(sortedKeys(s.Endpoints), func(k string) bool { return s.Endpoints[k].Node != "h1" })
	switch op := rng.IntN(3); {
	case op == 0 || len(keys) < 10:
		name := fmt.Sprintf("rnew%d", i)
		what, block := "add h1/"+name, netip.MustParsePrefix("10.65.0.64/26")
		if rng.IntN(8) == 0 {
			what, block = "borrowed h1/"+name, borrowed
		}
		c.start("h1", name, "allocate on h1", what, block, netip.MustParsePrefix("fd11::/122"))
	case op == 1:
		key := keys[rng.IntN(len(keys))]
		what := "remove " + key
		if isBorrowed(key) {
			what = "borrowed, removed " + key
		}
		c.stop(key, what)
	default:
		key := keys[rng.IntN(len(keys))]
		what := "change " + key
		if isBorrowed(key) {
			what = "borrowed, changed " + key
		}
		c.rewrite(key, what)
	}
}

// containerSteps makes the writes one host's containers cause, as an
// agent receives them, and hands each to step.
type containerSteps struct {
	t        *testing.T
	s        *Snapshot
	rng      *rand.Rand
	free     func(netip.Prefix) netip.Addr
	profiles [][]string
	labels   func() map[string]string
	step     func(string, *epincEdits)
}

// start: a container on node starts: its addresses (IPv4 from v4, IPv6
// from v6 half the time), then its record.
func (c containerSteps) start(node, name, allocWhat, what string, v4, v6 netip.Prefix) {
	c.t.Helper()
	ep := api.Endpoint{Node: node, Workload: name, InterfaceName: api.WorkloadIfaceName(node, name),
		Profiles: c.profiles[c.rng.IntN(len(c.profiles))], Labels: c.labels()}
	e := newEpincEdits()
	a4 := c.free(v4)
	setAlloc(c.t, c.s, e, a4, api.WorkloadHandle(node, name))
	ep.IPv4Nets = []string{a4.String() + "/32"}
	if c.rng.IntN(2) == 0 {
		a6 := c.free(v6)
		setAlloc(c.t, c.s, e, a6, api.WorkloadHandle(node, name))
		ep.IPv6Nets = []string{a6.String() + "/128"}
	}
	c.step(allocWhat, e)
	e = newEpincEdits()
	key := node + "/" + name
	e.endpoint(c.s, key)
	c.s.Endpoints[key] = ep
	c.step(what, e)
}

// stop: a container stops: its record, then its addresses.
func (c containerSteps) stop(key, what string) {
	c.t.Helper()
	ep := c.s.Endpoints[key]
	e := newEpincEdits()
	e.endpoint(c.s, key)
	delete(c.s.Endpoints, key)
	c.step(what, e)
	e = newEpincEdits()
	for _, p := range endpointPrefixes(ep) {
		setAlloc(c.t, c.s, e, p.Addr(), "")
	}
	c.step("release", e)
}

// rewrite: a container's record rewritten: other labels, other profiles.
func (c containerSteps) rewrite(key, what string) {
	c.t.Helper()
	e := newEpincEdits()
	e.endpoint(c.s, key)
	ep := c.s.Endpoints[key]
	ep.Labels = c.labels()
	ep.Profiles = c.profiles[c.rng.IntN(len(c.profiles))]
	c.s.Endpoints[key] = ep
	c.step(what, e)
}

// checkChange: the change Reendpoint reports names what differs between
// the two Results, and the routes it adds and deletes are exactly the
// difference of the route lists.
func checkChange(t *testing.T, what string, prev, next Result, ch EndpointChange) {
	t.Helper()
	if ch.Workloads != !slices.Equal(prev.Dataplane.Workloads, next.Dataplane.Workloads) {
		t.Errorf("%s: Workloads %v, but the lists differ: %v", what, ch.Workloads, !ch.Workloads)
	}
	var add, del []Route
	for _, r := range next.Dataplane.Routes {
		if !slices.Contains(prev.Dataplane.Routes, r) {
			add = append(add, r)
		}
	}
	for _, r := range prev.Dataplane.Routes {
		if !slices.Contains(next.Dataplane.Routes, r) {
			del = append(del, r)
		}
	}
	if !slices.Equal(add, ch.AddRoutes) || !slices.Equal(del, ch.DelRoutes) {
		t.Errorf("%s: routes +%v -%v, change says +%v -%v", what, add, del, ch.AddRoutes, ch.DelRoutes)
	}
	pp, np := prev.Dataplane.Policy, next.Dataplane.Policy
	for tag, m := range np.TagMembers {
		if !reflect.DeepEqual(m, pp.TagMembers[tag]) && !slices.Contains(ch.Policy.Tags, tag) {
			t.Errorf("%s: tag %s changed, not named", what, tag)
		}
	}
	for key, m := range np.SelectorMembers {
		if !reflect.DeepEqual(m, pp.SelectorMembers[key]) && !slices.Contains(ch.Policy.Selectors, key) {
			t.Errorf("%s: selector %s changed, not named", what, key)
		}
	}
	for _, e := range np.Endpoints {
		i := slices.IndexFunc(pp.Endpoints, func(x EndpointPolicy) bool { return x.Interface == e.Interface })
		if (i < 0 || !reflect.DeepEqual(pp.Endpoints[i], e)) && !slices.Contains(ch.Policy.Endpoints, e.Interface) {
			t.Errorf("%s: endpoint %s changed, not named", what, e.Interface)
		}
	}
	for _, e := range pp.Endpoints {
		if !slices.ContainsFunc(np.Endpoints, func(x EndpointPolicy) bool { return x.Interface == e.Interface }) && !slices.Contains(ch.Policy.Endpoints, e.Interface) {
			t.Errorf("%s: endpoint %s gone, not named", what, e.Interface)
		}
	}
}

// TestReendpointDeclines: what Reendpoint must leave to Compute.
func TestReendpointDeclines(t *testing.T) {
	base := func() (*Snapshot, Result) {
		s := epincWorld()
		return s, Compute(Input{Node: "h0", Snap: s})
	}
	add := func(s *Snapshot, name string, a netip.Addr, mod func(*api.Endpoint)) []EndpointEdit {
		ep := api.Endpoint{Node: "h0", Workload: name, InterfaceName: api.WorkloadIfaceName("h0", name),
			IPv4Nets: []string{a.String() + "/32"}, Profiles: []string{"P"}, Labels: map[string]string{"app": "a1"}}
		allocate(s, a, api.WorkloadHandle("h0", name))
		if mod != nil {
			mod(&ep)
		}
		key := "h0/" + name
		old, had := s.Endpoints[key]
		s.Endpoints[key] = ep
		return []EndpointEdit{{Key: key, Old: old, Had: had}}
	}
	free := netip.MustParseAddr("10.64.0.70")
	for _, tc := range []struct {
		name string
		do   func(s *Snapshot, in *Input) ([]EndpointEdit, []BlockEdit)
	}{
		{"a lying interface", func(s *Snapshot, in *Input) ([]EndpointEdit, []BlockEdit) {
			return add(s, "liar", free, func(ep *api.Endpoint) { ep.InterfaceName = api.WorkloadIfaceName("h0", "w1") }), nil
		}},
		{"another's address", func(s *Snapshot, in *Input) ([]EndpointEdit, []BlockEdit) {
			eps := add(s, "thief", free, nil)
			ep := s.Endpoints["h0/thief"]
			ep.IPv4Nets = []string{LabelPolicyAddr(2) + "/32"}
			s.Endpoints["h0/thief"] = ep
			return eps, nil
		}},
		{"an address another record claims", func(s *Snapshot, in *Input) ([]EndpointEdit, []BlockEdit) {
			// IPAM written to the twin without a block edit: only the
			// clash check sees that h0's w2 still claims the address.
			return add(s, "twin", netip.MustParseAddr(LabelPolicyAddr(2)), nil), nil
		}},
		{"an address outside this host's blocks", func(s *Snapshot, in *Input) ([]EndpointEdit, []BlockEdit) {
			return add(s, "borrower", netip.MustParseAddr("10.64.1.5"), nil), nil
		}},
		{"a learned route to its address", func(s *Snapshot, in *Input) ([]EndpointEdit, []BlockEdit) {
			in.Learned = map[netip.Prefix][]LearnedPath{netip.PrefixFrom(free, 32): {{Neighbor: netip.MustParseAddr("10.0.0.2"), NextHop: netip.MustParseAddr("10.0.0.2")}}}
			return add(s, "contested", free, nil), nil
		}},
		{"a profile not in use yet", func(s *Snapshot, in *Input) ([]EndpointEdit, []BlockEdit) {
			s.Profiles["R"] = api.NewProfile("R")
			return add(s, "newprof", free, func(ep *api.Endpoint) { ep.Profiles = []string{"R"} }), nil
		}},
		{"a policy not in use yet", func(s *Snapshot, in *Input) ([]EndpointEdit, []BlockEdit) {
			return add(s, "rare", free, func(ep *api.Endpoint) { ep.Labels = map[string]string{"app": "rare"} }), nil
		}},
		{"published ports", func(s *Snapshot, in *Input) ([]EndpointEdit, []BlockEdit) {
			return add(s, "web", free, func(ep *api.Endpoint) { ep.Ports = []api.PortMapping{{Proto: "tcp", HostPort: 8080, Port: 80}} }), nil
		}},
		{"another host's endpoint in this host's block", func(s *Snapshot, in *Input) ([]EndpointEdit, []BlockEdit) {
			return add(s, "h1borrower", free, func(ep *api.Endpoint) {
				ep.Node, ep.InterfaceName = "h1", api.WorkloadIfaceName("h1", "h1borrower")
				allocate(s, free, api.WorkloadHandle("h1", "h1borrower"))
			}), nil
		}},
		{"another host's endpoint in no host's block", func(s *Snapshot, in *Input) ([]EndpointEdit, []BlockEdit) {
			a := netip.MustParseAddr("10.65.1.9")
			return add(s, "nomad", a, func(ep *api.Endpoint) {
				ep.Node, ep.InterfaceName = "h1", api.WorkloadIfaceName("h1", "nomad")
				allocate(s, a, api.WorkloadHandle("h1", "nomad"))
			}), nil
		}},
		{"another host's endpoint with a learned route to its address", func(s *Snapshot, in *Input) ([]EndpointEdit, []BlockEdit) {
			a := netip.MustParseAddr("10.65.0.70")
			in.Learned = map[netip.Prefix][]LearnedPath{netip.PrefixFrom(a, 32): {{Neighbor: netip.MustParseAddr("10.0.0.2"), NextHop: netip.MustParseAddr("10.0.0.2")}}}
			return add(s, "h1contested", a, func(ep *api.Endpoint) {
				ep.Node, ep.InterfaceName = "h1", api.WorkloadIfaceName("h1", "h1contested")
				allocate(s, a, api.WorkloadHandle("h1", "h1contested"))
			}), nil
		}},
		{"another host's endpoint taking a believed one's address", func(s *Snapshot, in *Input) ([]EndpointEdit, []BlockEdit) {
			a := netip.MustParseAddr("10.65.0.3") // h1/r2's
			return add(s, "h1thief", a, func(ep *api.Endpoint) {
				ep.Node, ep.InterfaceName = "h1", api.WorkloadIfaceName("h1", "h1thief")
				allocate(s, a, api.WorkloadHandle("h1", "r2")) // IPAM still says r2
			}), nil
		}},
		{"a record that moved between hosts", func(s *Snapshot, in *Input) ([]EndpointEdit, []BlockEdit) {
			key := "h1/r3"
			old := s.Endpoints[key]
			ep := old
			ep.Node = "h2"
			s.Endpoints[key] = ep
			return []EndpointEdit{{Key: key, Old: old, Had: true}}, nil
		}},
		{"an address released that a record still claims", func(s *Snapshot, in *Input) ([]EndpointEdit, []BlockEdit) {
			a := netip.MustParseAddr(LabelPolicyAddr(5))
			for cidr, b := range s.Blocks {
				p := netip.MustParsePrefix(cidr)
				if p.Contains(a) {
					old := b
					old.Allocations = maps.Clone(b.Allocations)
					b.Allocations = maps.Clone(b.Allocations)
					delete(b.Allocations, ordinal(p, a))
					s.Blocks[cidr] = b
					return nil, []BlockEdit{{CIDR: cidr, Old: old}}
				}
			}
			t.Fatal("no block")
			return nil, nil
		}},
		{"a block that changed hands", func(s *Snapshot, in *Input) ([]EndpointEdit, []BlockEdit) {
			b := s.Blocks["10.64.0.64/26"]
			old := b
			b.Affinity = "h1"
			s.Blocks["10.64.0.64/26"] = b
			return nil, []BlockEdit{{CIDR: "10.64.0.64/26", Old: old}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Without the address index (the scan), and with one kept
			// in step with the edits as the agent keeps it.
			for _, indexed := range []bool{false, true} {
				s, res := base()
				in := Input{Node: "h0", Snap: s}
				idx := NewEndpointAddrs(s)
				eps, blocks := tc.do(s, &in)
				if indexed {
					for _, e := range eps {
						cur, has := s.Endpoints[e.Key]
						idx.Update(s, e.Key, e.Old, e.Had, cur, has)
					}
					if !idx.For(s) {
						t.Fatal("the index is not for the snapshot it follows")
					}
					in.EndpointAddrs = idx
				}
				got, ch, ok := Reendpoint(in, res, eps, blocks)
				if ok {
					t.Fatalf("indexed %v: served: %+v", indexed, ch)
				}
				if !sameResult(got, res) || !ch.Empty() {
					t.Errorf("indexed %v: declined, but changed the Result or reported a change", indexed)
				}
			}
		})
	}
}

// TestReendpointRemoteWireGuard: with encryption on, another host's
// workload address is one of its peer's allowed IPs unless a block of that
// host in a pool covers it. A pool narrower than h1's block makes an
// address inside it an allowed IP of its own: Reendpoint declines that
// one, and serves one outside the pool as Compute does.
func TestReendpointRemoteWireGuard(t *testing.T) {
	s := epincWorld()
	s.Blocks["10.66.0.0/26"] = api.Block{CIDR: "10.66.0.0/26", Affinity: "h1", Allocations: map[int]string{}}
	s.Pools["10.66.0.0/28"] = api.Pool{CIDR: "10.66.0.0/28", BlockSize: 28}
	s.Encryption = api.EncryptionConfig{Enabled: true}
	h1 := s.Nodes["h1"]
	h1.WireGuardPublicKey = "h1key"
	s.Nodes["h1"] = h1
	in := Input{Node: "h0", Snap: s, WireGuard: WireGuardSupport{PublicKey: "h0key"}}
	res := Compute(in)
	if !res.Dataplane.WireGuard.Enabled || len(res.Dataplane.WireGuard.Peers) != 1 || len(res.Ignored) != 0 {
		t.Fatalf("world: %+v, problems %q", res.Dataplane.WireGuard, res.Problems)
	}
	for _, tc := range []struct {
		addr  string
		serve bool
	}{{"10.65.0.100", true}, {"10.66.0.40", true}, {"10.66.0.5", false}} {
		a := netip.MustParseAddr(tc.addr)
		name := "wg" + strings.ReplaceAll(tc.addr, ".", "-")
		allocate(s, a, api.WorkloadHandle("h1", name))
		key := "h1/" + name
		s.Endpoints[key] = api.Endpoint{Node: "h1", Workload: name, InterfaceName: api.WorkloadIfaceName("h1", name),
			IPv4Nets: []string{tc.addr + "/32"}, Profiles: []string{"P"}, Labels: map[string]string{"app": "a1"}}
		want := Compute(in)
		got, _, ok := Reendpoint(in, res, []EndpointEdit{{Key: key}}, nil)
		if ok != tc.serve {
			t.Fatalf("%s: served %v, want %v", tc.addr, ok, tc.serve)
		}
		if !ok {
			if reflect.DeepEqual(want.Dataplane.WireGuard, res.Dataplane.WireGuard) {
				t.Fatalf("%s: declined, but the peer's allowed IPs did not change", tc.addr)
			}
		} else if !sameResult(got, want) {
			t.Fatalf("%s: Reendpoint's Result differs from Compute's:\n got %+v\nwant %+v", tc.addr, got.Dataplane, want.Dataplane)
		}
		res = want
	}
}

func BenchmarkReendpoint1000(b *testing.B) {
	s := LabelPolicySnapshot(1000, 200)
	for cidr, bl := range s.Blocks {
		bl.Affinity = "h0"
		s.Blocks[cidr] = bl
	}
	in := Input{Node: "h0", Snap: s}
	res := Compute(in)
	a := labelPolicyAddr(1000)
	allocate(s, a, api.WorkloadHandle("h0", "one"))
	b.ReportAllocs()
	for b.Loop() {
		s.Endpoints["h0/one"] = api.Endpoint{Node: "h0", Workload: "one", InterfaceName: api.WorkloadIfaceName("h0", "one"),
			IPv4Nets: []string{a.String() + "/32"}, Profiles: []string{"P"}, Labels: map[string]string{"app": "a1"}}
		if _, _, ok := Reendpoint(in, res, []EndpointEdit{{Key: "h0/one"}}, nil); !ok {
			b.Fatal("declined")
		}
	}
}

// BenchmarkRemoteEndpointAdded: another host's container starting, as
// this host's agent receives its endpoint record, next to 10 and 1000
// local endpoints (200 label policies). Compute is what every agent paid
// for it before Reendpoint served other hosts' records; Reendpoint is
// what it pays now.
func BenchmarkRemoteEndpointAdded(b *testing.B) {
	for _, n := range []int{10, 1000} {
		s := LabelPolicySnapshot(n, 200)
		for cidr, bl := range s.Blocks {
			bl.Affinity = "h0"
			s.Blocks[cidr] = bl
		}
		s.Nodes["h1"] = api.Node{Name: "h1", IPv4: "10.0.0.2/24"}
		a := netip.MustParseAddr("10.64.200.1") // outside h0's blocks
		s.Blocks["10.64.200.0/26"] = api.Block{CIDR: "10.64.200.0/26", Affinity: "h1",
			Allocations: map[int]string{1: api.WorkloadHandle("h1", "one")}}
		in := Input{Node: "h0", Snap: s}
		res := Compute(in)
		ep := api.Endpoint{Node: "h1", Workload: "one", InterfaceName: api.WorkloadIfaceName("h1", "one"),
			IPv4Nets: []string{a.String() + "/32"}, Profiles: []string{"P"}, Labels: map[string]string{"app": "a1"}}
		s.Endpoints["h1/one"] = ep
		want := Compute(in)
		got, ch, ok := Reendpoint(in, res, []EndpointEdit{{Key: "h1/one"}}, nil)
		if !ok || !sameResult(got, want) || len(ch.Policy.Selectors) == 0 {
			b.Fatalf("%d: served %v, change %+v", n, ok, ch)
		}
		b.Run(fmt.Sprintf("%d/Compute", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Compute(in)
			}
		})
		b.Run(fmt.Sprintf("%d/Reendpoint", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, ok := Reendpoint(in, res, []EndpointEdit{{Key: "h1/one"}}, nil); !ok {
					b.Fatal("declined")
				}
			}
		})
	}
}

// TestEndpointAddrsBehindItsBack: a record written to the snapshot
// without the index hearing of it, or a new snapshot, sends Reendpoint
// back to the scan, which finds the clash; a key the index names under an
// address its record no longer claims makes no clash.
func TestEndpointAddrsBehindItsBack(t *testing.T) {
	s := epincWorld()
	in := Input{Node: "h0", Snap: s}
	res := Compute(in)
	in.EndpointAddrs = NewEndpointAddrs(s)
	w2 := netip.MustParseAddr(LabelPolicyAddr(2))
	// A record with h0/w2's address that the index never hears of.
	ghost := s.Endpoints["h0/w2"]
	ghost.Workload, ghost.InterfaceName = "ghost", api.WorkloadIfaceName("h0", "ghost")
	s.Endpoints["h0/ghost"] = ghost
	// w2 stops claiming it, the index told; then a twin takes it.
	old := s.Endpoints["h0/w2"]
	moved := old
	moved.IPv4Nets = nil
	s.Endpoints["h0/w2"] = moved
	in.EndpointAddrs.Update(s, "h0/w2", old, true, moved, true)
	ep := api.Endpoint{Node: "h0", Workload: "twin", InterfaceName: api.WorkloadIfaceName("h0", "twin"),
		IPv4Nets: []string{w2.String() + "/32"}, Profiles: []string{"P"}, Labels: map[string]string{"app": "a1"}}
	allocate(s, w2, api.WorkloadHandle("h0", "twin"))
	s.Endpoints["h0/twin"] = ep
	in.EndpointAddrs.Update(s, "h0/twin", api.Endpoint{}, false, ep, true)
	if in.EndpointAddrs.For(s) {
		t.Fatal("the index counts as in step after a record it never heard of")
	}
	if _, _, ok := Reendpoint(in, res, []EndpointEdit{{Key: "h0/twin"}}, nil); ok {
		t.Fatal("served a record whose address another record claims")
	}
	// A new snapshot: the index is for the old one's records.
	fresh := *s
	fresh.Endpoints = maps.Clone(s.Endpoints)
	if in.EndpointAddrs.For(&fresh) {
		t.Fatal("the index counts as in step with another snapshot")
	}
	// The ghost gone again: in step, and no clash.
	delete(s.Endpoints, "h0/ghost")
	if !in.EndpointAddrs.For(s) || in.EndpointAddrs.clashes(s, map[string]bool{"h0/twin": true}, []netip.Addr{w2}, nil) {
		t.Fatal("no clash is left, but the index finds one")
	}
	// A stale entry (w2 under the address, though w2 no longer claims
	// it) is read against the record.
	in.EndpointAddrs.byAddr[w2] = append(in.EndpointAddrs.byAddr[w2], "h0/w2")
	if in.EndpointAddrs.clashes(s, map[string]bool{"h0/twin": true}, []netip.Addr{w2}, nil) {
		t.Fatal("a key the index names under an address its record no longer claims made a clash")
	}
}

// BenchmarkLocalEndpointAdded: this host's container starting next to 10
// and 1000 local endpoints (200 label policies), as the endpoint pass
// serves it: with the clash check reading every record (scan, as before
// the address index) and with the agent's index.
func BenchmarkLocalEndpointAdded(b *testing.B) {
	for _, n := range []int{10, 1000} {
		s := LabelPolicySnapshot(n, 200)
		for cidr, bl := range s.Blocks {
			bl.Affinity = "h0"
			s.Blocks[cidr] = bl
		}
		in := Input{Node: "h0", Snap: s}
		res := Compute(in)
		a := labelPolicyAddr(n)
		allocate(s, a, api.WorkloadHandle("h0", "one"))
		ep := api.Endpoint{Node: "h0", Workload: "one", InterfaceName: api.WorkloadIfaceName("h0", "one"),
			IPv4Nets: []string{a.String() + "/32"}, Profiles: []string{"P"}, Labels: map[string]string{"app": "a1"}}
		idx := NewEndpointAddrs(s)
		s.Endpoints["h0/one"] = ep
		idx.Update(s, "h0/one", api.Endpoint{}, false, ep, true)
		want := Compute(in)
		for _, indexed := range []bool{false, true} {
			in := in
			name := "scan"
			if indexed {
				in.EndpointAddrs, name = idx, "index"
			}
			got, _, ok := Reendpoint(in, res, []EndpointEdit{{Key: "h0/one"}}, nil)
			if !ok || !sameResult(got, want) {
				b.Fatalf("%d %s: served %v", n, name, ok)
			}
			b.Run(fmt.Sprintf("%d/%s", n, name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					Reendpoint(in, res, []EndpointEdit{{Key: "h0/one"}}, nil)
				}
			})
		}
	}
}
