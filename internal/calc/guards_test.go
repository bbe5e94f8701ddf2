package calc

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
)

func addrList(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, x := range s {
		out = append(out, netip.MustParseAddr(x))
	}
	return out
}

func prefixList(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func TestControlPlaneCoversEveryNode(t *testing.T) {
	s := snapshot(api.Pool{CIDR: "192.168.100.0/24"})
	n := s.Nodes["h2"]
	n.IPv6 = "fd00::2/64"
	s.Nodes["h2"] = n
	in := Input{Node: "h1", Snap: s,
		ControlHosts:    addrList("10.0.9.9", "10.0.1.1", "::ffff:10.0.9.8"),
		ControlTCPPorts: []uint16{2380, 2379, 0, 2379}}
	cp := Compute(in).Dataplane.Policy.ControlPlane
	if want := addrList("10.0.1.1", "10.0.1.2", "10.0.2.3", "10.0.9.8", "10.0.9.9"); !slices.Equal(cp.Hosts.V4, want) {
		t.Errorf("v4 hosts = %v, want %v (every node, the datastore's hosts)", cp.Hosts.V4, want)
	}
	if want := addrList("fd00::2"); !slices.Equal(cp.Hosts.V6, want) {
		t.Errorf("v6 hosts = %v, want %v", cp.Hosts.V6, want)
	}
	want := []L4Port{{"tcp", 179}, {"tcp", 2379}, {"tcp", 2380}, {"udp", 4789}, {"udp", 51820}}
	if !slices.Equal(cp.Ports, want) {
		t.Errorf("ports = %v, want %v", cp.Ports, want)
	}
	// Every host computes the same set (the source host enforces it).
	in.Node = "h3"
	if other := Compute(in).Dataplane.Policy.ControlPlane; !slices.Equal(other.Hosts.V4, cp.Hosts.V4) {
		t.Errorf("h3 sees %v, h1 %v", other.Hosts.V4, cp.Hosts.V4)
	}
}

func TestVXLANSendersFromTheDatastore(t *testing.T) {
	s := snapshot(api.Pool{CIDR: "192.168.100.0/24", VXLANMode: api.EncapAlways})
	// h3 holds no block, but a workload of its own with an address from
	// h1's block (borrowed), and an interface-less record (not wired, not
	// announced).
	s.Endpoints["h3/w4"] = api.Endpoint{Node: "h3", Workload: "w4", InterfaceName: "caliddd", IPv4Nets: []string{"192.168.100.10/32"}, Profiles: []string{"P1"}}
	s.Endpoints["h3/w5"] = api.Endpoint{Node: "h3", Workload: "w5", IPv4Nets: []string{"192.168.100.11/32"}}
	s.Endpoints["h2/w6"] = api.Endpoint{Node: "h2", Workload: "w6", InterfaceName: "calieee", IPv6Nets: []string{"fd00:9::1/128"}}
	honest(s) // derived interfaces, addresses held in IPAM: records the agents believe
	w5 := s.Endpoints["h3/w5"]
	w5.InterfaceName = "" // not wired yet
	s.Endpoints["h3/w5"] = w5
	// No BGP routes learned yet (an agent's first pass after a restart):
	// the senders are complete all the same.
	g := Compute(Input{Node: "h1", Snap: s}).Dataplane.Policy.VXLAN
	if !g.Enabled {
		t.Fatalf("guard = %+v", g)
	}
	want := []VXLANSender{
		{Addr: netip.MustParseAddr("10.0.1.2"), Inner: prefixList("10.0.1.2/32", "192.168.100.64/26")},
		{Addr: netip.MustParseAddr("10.0.2.3"), Inner: prefixList("10.0.2.3/32", "192.168.100.10/32")},
	}
	if len(g.Senders) != len(want) {
		t.Fatalf("senders = %+v, want %+v", g.Senders, want)
	}
	for i := range want {
		if g.Senders[i].Addr != want[i].Addr || !slices.Equal(g.Senders[i].Inner, want[i].Inner) {
			t.Errorf("sender %d = %+v, want %+v", i, g.Senders[i], want[i])
		}
	}
	if g2 := Compute(Input{Node: "h1", Snap: s, Learned: learned}).Dataplane.Policy.VXLAN; len(g2.Senders) != 2 || !slices.Equal(g2.Senders[0].Inner, g.Senders[0].Inner) {
		t.Errorf("learned routes changed the senders: %+v", g2.Senders)
	}
	// A second record with h2's address (re-registered under a new name)
	// sends as the same host: one sender with both records' sources.
	s.Nodes["h2b"] = api.Node{Name: "h2b", IPv4: "10.0.1.2/24"}
	s.Blocks["192.168.100.128/26"] = api.Block{CIDR: "192.168.100.128/26", Affinity: "h2b"}
	g = Compute(Input{Node: "h1", Snap: s}).Dataplane.Policy.VXLAN
	if len(g.Senders) != 2 || !slices.Equal(g.Senders[0].Inner, prefixList("10.0.1.2/32", "192.168.100.64/26", "192.168.100.128/26")) {
		t.Errorf("same address twice: senders = %+v", g.Senders)
	}
	// Without a VXLAN pool there is nothing to guard.
	if g := Compute(Input{Node: "h1", Snap: snapshot(api.Pool{CIDR: "192.168.100.0/24"})}).Dataplane.Policy.VXLAN; g.Enabled || len(g.Senders) != 0 {
		t.Errorf("no VXLAN pool: guard = %+v", g)
	}
}

func TestPoolOverANodeIsIgnored(t *testing.T) {
	s := snapshot(api.Pool{CIDR: "192.168.100.0/24", NATOutgoing: true})
	s.Pools["10.0.1.0/24"] = api.Pool{CIDR: "10.0.1.0/24", VXLANMode: api.EncapAlways, NATOutgoing: true}
	r := Compute(Input{Node: "h1", Snap: s, Learned: learned})
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "pool 10.0.1.0/24 contains node h1's address 10.0.1.1: the pool is ignored") {
		t.Errorf("problems = %q", r.Problems)
	}
	p := r.Dataplane.Policy
	if want := prefixList("192.168.100.0/24"); !slices.Equal(p.AllPools, want) || !slices.Equal(p.MasqueradePools, want) {
		t.Errorf("pools = %v / %v, want only %v", p.AllPools, p.MasqueradePools, want)
	}
	if r.Dataplane.VXLAN.Enabled || p.VXLAN.Enabled {
		t.Error("the ignored pool's VXLAN mode was applied")
	}
	if _, still := s.Pools["10.0.1.0/24"]; !still {
		t.Error("Compute changed its input")
	}
	// Everything else is computed as without the pool.
	delete(s.Pools, "10.0.1.0/24")
	clean := Compute(Input{Node: "h1", Snap: s, Learned: learned})
	if !slices.Equal(clean.Dataplane.Routes, r.Dataplane.Routes) || len(clean.Problems) != 0 {
		t.Errorf("routes differ from the same snapshot without the pool")
	}
}
