package calc

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/calico-go/calico/internal/api"
)

func snapshot(pool api.Pool) *Snapshot {
	s := NewSnapshot()
	s.Pools[pool.CIDR] = pool
	s.Nodes["h1"] = api.Node{Name: "h1", IPv4: "10.0.1.1/24"}
	s.Nodes["h2"] = api.Node{Name: "h2", IPv4: "10.0.1.2/24"}
	s.Nodes["h3"] = api.Node{Name: "h3", IPv4: "10.0.2.3/24"}
	s.Blocks["192.168.100.0/26"] = api.Block{CIDR: "192.168.100.0/26", Affinity: "h1"}
	s.Blocks["192.168.100.64/26"] = api.Block{CIDR: "192.168.100.64/26", Affinity: "h2"}
	s.Profiles["P1"] = api.NewProfile("P1")
	s.Profiles["P2"] = api.NewProfile("P2")
	s.Endpoints["h1/w1"] = api.Endpoint{Node: "h1", Workload: "w1", InterfaceName: "caliaaa", IPv4Nets: []string{"192.168.100.1/32"}, Profiles: []string{"P1"}}
	s.Endpoints["h1/w2"] = api.Endpoint{Node: "h1", Workload: "w2", InterfaceName: "calibbb", IPv4Nets: []string{"192.168.100.130/32"}, Profiles: []string{"P2"}}
	s.Endpoints["h2/w3"] = api.Endpoint{Node: "h2", Workload: "w3", InterfaceName: "caliccc", IPv4Nets: []string{"192.168.100.65/32"}, Profiles: []string{"P1"}}
	honest(s) // derived interfaces, addresses held in IPAM
	return s
}

// path is a route a node announced itself: session and next hop are its address.
func path(nh string) []LearnedPath {
	a := netip.MustParseAddr(nh)
	return []LearnedPath{{Neighbor: a, NextHop: a}}
}

var learned = map[netip.Prefix][]LearnedPath{
	netip.MustParsePrefix("192.168.100.64/26"):  path("10.0.1.2"),
	netip.MustParsePrefix("192.168.100.192/26"): path("10.0.2.3"),
	netip.MustParsePrefix("192.168.100.0/26"):   path("10.0.1.1"), // our own, reflected back: ignored
}

func routeFor(t *testing.T, r Result, dst string) Route {
	t.Helper()
	for _, rt := range r.Dataplane.Routes {
		if rt.Dst == netip.MustParsePrefix(dst) {
			return rt
		}
	}
	t.Fatalf("no route for %s in %+v", dst, r.Dataplane.Routes)
	return Route{}
}

func TestEncapsulationPerPoolMode(t *testing.T) {
	same, other := "192.168.100.64/26", "192.168.100.192/26"
	cases := []struct {
		name              string
		pool              api.Pool
		sameDev, otherDev string
		otherKind         RouteKind
		vxlan             bool
		problem           bool
	}{
		{"no encapsulation", api.Pool{CIDR: "192.168.100.0/24"}, "", "", RouteVia, false, false},
		{"vxlan always", api.Pool{CIDR: "192.168.100.0/24", VXLANMode: api.EncapAlways}, api.VXLANDevice, api.VXLANDevice, RouteVia, true, false},
		{"vxlan cross-subnet", api.Pool{CIDR: "192.168.100.0/24", VXLANMode: api.EncapCrossSubnet}, "", api.VXLANDevice, RouteVia, true, false},
		{"ipip without kernel support", api.Pool{CIDR: "192.168.100.0/24", IPIPMode: api.EncapAlways}, "", "", RouteUnreachable, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Compute(Input{Node: "h1", Snap: snapshot(c.pool), Learned: learned})
			if got := routeFor(t, r, same); got.Dev != c.sameDev && got.Kind != RouteUnreachable {
				t.Errorf("same-subnet route dev = %q, want %q", got.Dev, c.sameDev)
			}
			got := routeFor(t, r, other)
			if got.Kind != c.otherKind || got.Dev != c.otherDev {
				t.Errorf("cross-subnet route = %+v, want kind %v dev %q", got, c.otherKind, c.otherDev)
			}
			if r.Dataplane.VXLAN.Enabled != c.vxlan {
				t.Errorf("vxlan enabled = %v, want %v", r.Dataplane.VXLAN.Enabled, c.vxlan)
			}
			if (len(r.Problems) > 0) != c.problem {
				t.Errorf("problems = %v, want problem=%v", r.Problems, c.problem)
			}
			if c.vxlan && len(r.Dataplane.VXLAN.Peers) != 2 {
				t.Errorf("vxlan peers = %+v, want h2 and h3", r.Dataplane.VXLAN.Peers)
			}
		})
	}
}

func TestLocalRoutesBlackholesAndAnnouncements(t *testing.T) {
	r := Compute(Input{Node: "h1", Snap: snapshot(api.Pool{CIDR: "192.168.100.0/24"}), Learned: learned})
	if rt := routeFor(t, r, "192.168.100.1/32"); rt.Kind != RouteLocal || rt.Dev != api.WorkloadIfaceName("h1", "w1") {
		t.Errorf("local route = %+v", rt)
	}
	if rt := routeFor(t, r, "192.168.100.0/26"); rt.Kind != RouteBlackhole {
		t.Errorf("own block should be a blackhole, got %+v", rt)
	}
	// w2's address lies outside h1's block (borrowed), so it is announced alone.
	want := []netip.Prefix{netip.MustParsePrefix("192.168.100.0/26"), netip.MustParsePrefix("192.168.100.130/32")}
	if !slices.Equal(r.Announce, want) {
		t.Errorf("announce = %v, want %v", r.Announce, want)
	}
	if r.ASN != 64512 {
		t.Errorf("ASN = %d", r.ASN)
	}
}

func TestPolicyTagsAreClusterWide(t *testing.T) {
	s := snapshot(api.Pool{CIDR: "192.168.100.0/24", NATOutgoing: true})
	r := Compute(Input{Node: "h1", Snap: s})
	p := r.Dataplane.Policy
	if len(p.Endpoints) != 2 {
		t.Fatalf("endpoints = %+v", p.Endpoints)
	}
	members := p.TagMembers["P1"].V4
	want := []netip.Addr{netip.MustParseAddr("192.168.100.1"), netip.MustParseAddr("192.168.100.65")}
	if !slices.Equal(members, want) {
		t.Errorf("P1 members = %v, want %v (w3 on h2 included)", members, want)
	}
	if len(p.MasqueradePools) != 1 || len(p.AllPools) != 1 {
		t.Errorf("nat pools = %v / %v", p.MasqueradePools, p.AllPools)
	}
	// A profile reference that does not exist allows nothing rather than failing.
	ep := s.Endpoints["h1/w1"]
	ep.Profiles = []string{"GONE"}
	s.Endpoints["h1/w1"] = ep
	p = Compute(Input{Node: "h1", Snap: s}).Dataplane.Policy
	i := slices.IndexFunc(p.Endpoints, func(e EndpointPolicy) bool { return e.Interface == ep.InterfaceName })
	if i < 0 || len(p.Endpoints[i].Profiles) != 0 {
		t.Errorf("missing profile kept: %+v", p.Endpoints)
	}
}

func TestPeers(t *testing.T) {
	s := snapshot(api.Pool{CIDR: "192.168.100.0/24"})
	s.GlobalPeers["10.0.1.250"] = api.BGPPeer{IP: "10.0.1.250", ASNumber: 65000}
	s.NodePeers["h1/10.0.1.2"] = api.BGPPeer{IP: "10.0.1.2", ASNumber: 64512, Node: "h1"}
	s.NodePeers["h2/10.0.1.251"] = api.BGPPeer{IP: "10.0.1.251", ASNumber: 65001, Node: "h2"}
	s.NodePeers["h1/10.0.1.9"] = api.BGPPeer{IP: "10.0.1.9", ASNumber: 65009, Node: "h1", MaxPrefixes: 50}
	got := Compute(Input{Node: "h1", Snap: s}).Peers
	// Configured peers get their limit or the default; the mesh and
	// records naming one of our nodes (10.0.1.2 is h2) have none.
	want := []Peer{
		{netip.MustParseAddr("10.0.1.2"), 64512, "node", "", 0},
		{netip.MustParseAddr("10.0.1.9"), 65009, "node", "", 50},
		{netip.MustParseAddr("10.0.1.250"), 65000, "global", "", api.DefaultMaxPrefixes},
		{netip.MustParseAddr("10.0.2.3"), 64512, "node-mesh", "", 0},
	}
	if !slices.Equal(got, want) {
		t.Errorf("peers = %+v, want %+v", got, want)
	}
	s.BGP.NodeMesh = false
	if got := Compute(Input{Node: "h1", Snap: s}).Peers; len(got) != 3 {
		t.Errorf("mesh off: peers = %+v", got)
	}
	// A peer record that names one of our nodes (h3) passes on the
	// cluster's routes: no limit, whatever the record says.
	s.GlobalPeers["10.0.2.3"] = api.BGPPeer{IP: "10.0.2.3", ASNumber: 64512, MaxPrefixes: 5}
	for _, p := range Compute(Input{Node: "h1", Snap: s}).Peers {
		if p.IP == netip.MustParseAddr("10.0.2.3") && (p.Type != "global" || p.MaxPrefixes != 0) {
			t.Errorf("peer record naming node h3: %+v, want type global without a limit", p)
		}
	}
}

func BenchmarkCompute1000Endpoints(b *testing.B) {
	s := snapshot(api.Pool{CIDR: "10.64.0.0/16"})
	for i := 0; i < 1000; i++ {
		a := netip.AddrFrom4([4]byte{10, 64, byte(i / 250), byte(i%250 + 1)})
		name := "w" + a.String()
		prof := "P" + string(rune('A'+i%20))
		s.Profiles[prof] = api.NewProfile(prof)
		s.Endpoints["h1/"+name] = api.Endpoint{Node: "h1", Workload: name, InterfaceName: "cali" + a.String(), IPv4Nets: []string{a.String() + "/32"}, Profiles: []string{prof}}
	}
	honest(s)
	b.ReportAllocs()
	for b.Loop() {
		Compute(Input{Node: "h1", Snap: s, Learned: learned})
	}
}
