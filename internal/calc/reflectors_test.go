package calc

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
)

// rrSnapshot: mesh off; h1 and h2 are clients of reflector group A (ra1,
// ra2), h3 of group B (rb1), by node peers; h4 peers with nobody.
// Reflector ra1 lists rb1 as its peer; rb1 lists nobody.
func rrSnapshot() *Snapshot {
	s := NewSnapshot()
	s.BGP.NodeMesh = false
	for name, ip := range map[string]string{"h1": "10.0.0.1", "h2": "10.0.0.2", "h3": "10.0.0.3", "h4": "10.0.0.4"} {
		s.Nodes[name] = api.Node{Name: name, IPv4: ip + "/24"}
	}
	s.Nodes["ra1"] = api.Node{Name: "ra1", IPv4: "10.0.0.11/24", IPv6: "fd00::11/64", RouteReflector: true, ClusterID: "1.0.0.1"}
	s.Nodes["ra2"] = api.Node{Name: "ra2", IPv4: "10.0.0.12/24", RouteReflector: true, ClusterID: "1.0.0.1"}
	s.Nodes["rb1"] = api.Node{Name: "rb1", IPv4: "10.0.0.21/24", RouteReflector: true}
	for i, p := range []api.BGPPeer{
		{Node: "h1", IP: "10.0.0.11"}, {Node: "h1", IP: "10.0.0.12"},
		{Node: "h2", IP: "10.0.0.11"}, {Node: "h2", IP: "10.0.0.12"},
		{Node: "h3", IP: "10.0.0.21"},
		{Node: "ra1", IP: "10.0.0.21"},
		{Node: "ra1", IP: "10.0.0.11"}, // itself: never a session
		{Node: "ra1", IP: "fd00::11"},  // its other address: never either
	} {
		p.ASNumber = 64512
		s.NodePeers[string(rune('a'+i))] = p
	}
	return s
}

func peerMap(ps []Peer) map[string]string {
	out := map[string]string{}
	for _, p := range ps {
		out[p.IP.String()] = p.Type + "/" + p.Role
	}
	return out
}

func TestPeersRouteReflectorNodePeers(t *testing.T) {
	s := rrSnapshot()
	for _, c := range []struct {
		node string
		want map[string]string
	}{
		// A client: ordinary sessions to its reflectors, known as such.
		{"h1", map[string]string{"10.0.0.11": "node/reflector", "10.0.0.12": "node/reflector"}},
		{"h3", map[string]string{"10.0.0.21": "node/reflector"}},
		{"h4", map[string]string{}},
		// A reflector: the nodes that list it are its clients, without any
		// record of its own; the reflector it lists is a non-client; itself
		// never, by either of its addresses.
		{"ra1", map[string]string{"10.0.0.1": "node/client", "10.0.0.2": "node/client", "10.0.0.21": "node/reflector"}},
		{"ra2", map[string]string{"10.0.0.1": "node/client", "10.0.0.2": "node/client"}},
		// rb1 lists nobody, but ra1 lists it: a non-client session.
		{"rb1", map[string]string{"10.0.0.3": "node/client", "10.0.0.11": "node/reflector"}},
	} {
		ip, _ := api.NodeAddrs(s.Nodes[c.node])
		if got := peerMap(peers(s, c.node, ip)); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: peers %v, want %v", c.node, got, c.want)
		}
	}
}

func TestPeersRouteReflectorGlobalPeer(t *testing.T) {
	s := NewSnapshot()
	s.BGP.NodeMesh = false
	s.Nodes["h1"] = api.Node{Name: "h1", IPv4: "10.0.0.1/24"}
	s.Nodes["h2"] = api.Node{Name: "h2", IPv4: "10.0.0.2/24", ASNumber: 64999}
	s.Nodes["rr"] = api.Node{Name: "rr", IPv4: "10.0.0.9/24", RouteReflector: true}
	s.GlobalPeers["10.0.0.9"] = api.BGPPeer{IP: "10.0.0.9", ASNumber: 64512}
	got := peers(s, "rr", netip.MustParseAddr("10.0.0.9"))
	want := []Peer{
		{IP: netip.MustParseAddr("10.0.0.1"), ASN: 64512, Type: PeerTypeGlobal, Role: RoleClient},
		{IP: netip.MustParseAddr("10.0.0.2"), ASN: 64999, Type: PeerTypeGlobal, Role: RoleClient},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("reflector's peers %+v, want %+v (every node a client, never itself)", got, want)
	}
	got = peers(s, "h1", netip.MustParseAddr("10.0.0.1"))
	want = []Peer{{IP: netip.MustParseAddr("10.0.0.9"), ASN: 64512, Type: PeerTypeGlobal, Role: RoleReflector}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("client's peers %+v, want %+v", got, want)
	}
	// A node that stops being a reflector has no clients: the sessions the
	// others keep asking for simply do not come up.
	n := s.Nodes["rr"]
	n.RouteReflector = false
	s.Nodes["rr"] = n
	if got := peers(s, "rr", netip.MustParseAddr("10.0.0.9")); len(got) != 0 {
		t.Errorf("former reflector's peers %+v, want none", got)
	}
}

// TestImportReflectedRoutes: a route reflector passes on other nodes'
// routes with their own next hop; those pass, and a reflector still cannot
// hijack.
func TestImportReflectedRoutes(t *testing.T) {
	s := importSnapshot()
	rr := api.Node{Name: "rr", IPv4: "10.0.1.9/24", RouteReflector: true}
	s.Nodes["rr"] = rr
	s.Blocks["192.168.100.192/26"] = api.Block{CIDR: "192.168.100.192/26", Affinity: "rr"}
	rrIP := netip.MustParseAddr("10.0.1.9")
	im := newImporter(s, "h1", parsePools(s), nil)
	for _, c := range []struct {
		name    string
		dst     string
		nb, nh  netip.Addr
		refused string
	}{
		{"a node's block reflected", "192.168.100.64/26", rrIP, h2IP, ""},
		{"a borrowed address reflected from its holder", "192.168.100.70/32", rrIP, h3IP, ""},
		{"the reflector's own block", "192.168.100.192/26", rrIP, rrIP, ""},
		{"a node's block with the reflector as next hop", "192.168.100.64/26", rrIP, rrIP, "of node h2"},
		{"a node's block reflected with another node's next hop", "192.168.100.64/26", rrIP, h3IP, "of node h2"},
		{"a borrowed address reflected with the block node's next hop", "192.168.100.70/32", rrIP, h2IP, "address of a workload on h3"},
		{"this node's block reflected back", "192.168.100.0/26", rrIP, h2IP, "this node's block"},
		{"a router's next hop through a reflector", "192.168.100.128/26", rrIP, routerIP, "no node's"},
		// Not a reflector: the old rule.
		{"a node's block passed on by a non-reflector", "192.168.100.64/26", h3IP, h2IP, "node h3 announced next hop 10.0.1.2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := im.refuse(netip.MustParsePrefix(c.dst), LearnedPath{Neighbor: c.nb, NextHop: c.nh})
			switch {
			case c.refused == "" && got != "":
				t.Errorf("%s via %s from %s refused (%s), want accepted", c.dst, c.nh, c.nb, got)
			case c.refused != "" && !strings.Contains(got, c.refused):
				t.Errorf("%s via %s from %s: reason %q, want one containing %q", c.dst, c.nh, c.nb, got, c.refused)
			}
		})
	}
}
