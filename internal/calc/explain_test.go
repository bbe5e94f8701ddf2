package calc

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
)

// explainIn resolves names of the snapshot() world (workloads w1-w3, nodes
// h1-h3, "out" for 203.0.113.1) and computes both ends' nodes as their
// agents would, with the routes every other node announces.
func explainIn(t *testing.T, s *Snapshot, src, dst string, proto uint8, port uint16) Explanation {
	t.Helper()
	nodeAddrs := map[netip.Addr]string{}
	for name, n := range s.Nodes {
		a, _ := api.NodeAddrs(n)
		nodeAddrs[a] = name
	}
	party := func(name string) Party {
		if name == "out" {
			return Party{Name: name, Addr: netip.MustParseAddr("203.0.113.1")}
		}
		if n, ok := s.Nodes[name]; ok {
			a, _ := api.NodeAddrs(n)
			return Party{Name: name, Addr: a, Node: name}
		}
		for _, ep := range s.Endpoints {
			if ep.Workload == name {
				return Party{Name: name, Addr: netip.MustParsePrefix(ep.IPv4Nets[0]).Addr(), Node: ep.Node, Iface: ep.InterfaceName}
			}
		}
		t.Fatalf("no %s", name)
		return Party{}
	}
	learned := map[netip.Prefix][]LearnedPath{}
	for a, name := range nodeAddrs {
		for _, p := range Compute(Input{Node: name, Snap: s}).Announce {
			learned[p] = append(learned[p], LearnedPath{Neighbor: a, NextHop: a})
		}
	}
	compute := func(p Party) *Result {
		if p.Node == "" {
			return nil
		}
		r := Compute(Input{Node: p.Node, Snap: s, Learned: learned, IPIP: IPIPSupport{BPF: true}})
		return &r
	}
	in := ExplainInput{Src: party(src), Dst: party(dst), NodeAddrs: nodeAddrs}
	in.Flow = Flow{Src: in.Src.Addr, Dst: in.Dst.Addr, Proto: proto, Port: port}
	if proto == ProtoICMP {
		in.Flow.ICMPType = 8
	}
	in.SrcNode, in.DstNode = compute(in.Src), compute(in.Dst)
	return Explain(in)
}

// trace is the explanation in one line: verdict, then each step.
func trace(x Explanation) string {
	parts := []string{x.Verdict}
	for _, s := range x.Steps {
		p := s.Stage + " " + s.Verdict + " " + s.What
		if s.Rule != "" {
			p += ": " + s.Rule
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, " | ")
}

func TestExplainProfiles(t *testing.T) {
	s := snapshot(api.Pool{CIDR: "192.168.100.0/24", NATOutgoing: true})
	d := api.Profile{Name: "D", Tags: []string{"D"}, Outbound: []api.Rule{{Action: api.ActionDeny, Protocol: api.ProtocolTCP, Dst: api.EntityMatch{Ports: []api.PortRange{{Min: 8080, Max: 8080}}}}}}
	s.Profiles["D"] = d
	s.Endpoints["h2/w4"] = api.Endpoint{Node: "h2", Workload: "w4", IPv4Nets: []string{"192.168.100.66/32"}, Profiles: []string{"D", "P1"}}
	s.Endpoints["h2/w5"] = api.Endpoint{Node: "h2", Workload: "w5", IPv4Nets: []string{"192.168.100.67/32"}}
	honest(s)
	cases := []struct {
		src, dst string
		proto    uint8
		port     uint16
		want     []string // substrings of trace, in order
	}{
		{"w1", "w3", ProtoICMP, 0, []string{"allowed", "anti-spoofing accept", "egress accept profile P1 outbound rule 1: allow",
			"route info BGP route: 192.168.100.64/26 via 10.0.1.2 (h2)", "ingress accept profile P1 inbound rule 1: allow from tag P1"}},
		{"w1", "w2", ProtoTCP, 8080, []string{"denied", "egress accept", "route info local: 192.168.100.130/32 dev cali",
			"ingress next profile P2 inbound: no rule decided", "ingress drop no profile allowed it"}},
		{"w1", "out", ProtoTCP, 8080, []string{"allowed", "egress accept", "nat info masquerade: pool 192.168.100.0/24", "route info the host's own routes"}},
		{"out", "w1", ProtoICMP, 0, []string{"denied", "route info from outside the cluster", "ingress drop no profile allowed it"}},
		{"w1", "h1", ProtoICMP, 0, []string{"denied", "anti-spoofing accept", "to-host drop a workload to its own host"}},
		{"w1", "h2", ProtoTCP, 179, []string{"denied", "control-plane drop tcp/179 on 10.0.1.2"}},
		{"w1", "h2", ProtoTCP, 8080, []string{"allowed", "egress accept", "to the node itself"}},
		{"h2", "w3", ProtoTCP, 8080, []string{"allowed", "ingress accept from its own host"}},
		{"h1", "w3", ProtoTCP, 8080, []string{"denied", "route info BGP route", "ingress drop no profile allowed it"}},
		// Profile order: D denies 8080 before P1 would allow it; for
		// anything else D decides nothing and P1 allows.
		{"w4", "w3", ProtoTCP, 8080, []string{"denied", "egress drop profile D outbound rule 1: deny tcp to ports 8080"}},
		{"w4", "w3", ProtoTCP, 80, []string{"allowed", "egress next profile D outbound: no rule decided", "egress accept profile P1 outbound rule 1: allow"}},
		{"w5", "w3", ProtoICMP, 0, []string{"denied", "egress drop no profile: drop"}},
		{"w3", "w5", ProtoICMP, 0, []string{"denied", "route info local", "ingress drop no profile: drop"}},
	}
	for _, c := range cases {
		got := trace(explainIn(t, s, c.src, c.dst, c.proto, c.port))
		if !containsInOrder(got, c.want) {
			t.Errorf("%s -> %s %s/%d:\n got %s\nwant %q", c.src, c.dst, ProtoName(c.proto), c.port, got, c.want)
		}
	}
}

func TestExplainLabelPolicies(t *testing.T) {
	s := snapshot(api.Pool{CIDR: "192.168.100.0/24"})
	withPolicies(t, s, gnp("a-w3", `  order: 1
  selector: projectcalico.org/workload == 'w3'
  ingress:
  - action: Log
  - action: Allow
    protocol: TCP
    destination: {ports: [8080]}
  - action: Allow
    protocol: TCP
    source: {selector: projectcalico.org/workload == 'w2'}
  - action: Pass
    protocol: ICMP`)+
		gnp("b-w1-out", `  order: 2
  selector: projectcalico.org/workload == 'w1'
  types: [Egress]
  egress:
  - action: Deny
    destination: {nets: [203.0.113.0/24]}
  - action: Allow
    protocol: ICMP
    icmp: {type: 8}`))
	cases := []struct {
		src, dst string
		proto    uint8
		port     uint16
		want     []string
	}{
		{"w1", "w3", ProtoTCP, 8080, []string{"denied", "egress next policy b-w1-out egress: no rule decided", "egress drop end of tier"}},
		{"w1", "w3", ProtoICMP, 0, []string{"allowed", "egress accept policy b-w1-out egress rule 2: {action: Allow, protocol: ICMP, icmp: {type: 8}}",
			"ingress log policy a-w3 ingress rule 1", "ingress pass policy a-w3 ingress rule 4: {action: Pass, protocol: ICMP}",
			"ingress accept profile P1 inbound rule 1"}},
		{"w1", "out", ProtoICMP, 0, []string{"denied", "egress drop policy b-w1-out egress rule 1: {action: Deny, destination: {nets: [203.0.113.0/24]}}"}},
		{"w2", "w3", ProtoTCP, 8080, []string{"allowed", "egress accept profile P2 outbound rule 1", "ingress log", "ingress accept policy a-w3 ingress rule 2: {action: Allow, protocol: TCP, destination: {ports: [8080]}}"}},
		{"w2", "w3", ProtoTCP, 80, []string{"allowed", "ingress accept policy a-w3 ingress rule 3: {action: Allow, protocol: TCP, source: {selector: \"projectcalico.org/workload == \\\"w2\\\"\"}}"}},
		// Pass hands the packet to the profiles, which refuse w2.
		{"w2", "w3", ProtoICMP, 0, []string{"denied", "ingress pass policy a-w3 ingress rule 4", "ingress drop no profile allowed it"}},
		{"h1", "w3", ProtoUDP, 53, []string{"denied", "ingress log", "ingress next policy a-w3 ingress: no rule decided", "ingress drop end of tier: policies apply to cali"}},
	}
	for _, c := range cases {
		got := trace(explainIn(t, s, c.src, c.dst, c.proto, c.port))
		if !containsInOrder(got, c.want) {
			t.Errorf("%s -> %s %s/%d:\n got %s\nwant %q", c.src, c.dst, ProtoName(c.proto), c.port, got, c.want)
		}
	}
}

func TestExplainSpoofedSource(t *testing.T) {
	s := snapshot(api.Pool{CIDR: "192.168.100.0/24"})
	r := Compute(Input{Node: "h1", Snap: s})
	w1 := s.Endpoints["h1/w1"]
	x := Explain(ExplainInput{
		Src:     Party{Name: "w1", Addr: netip.MustParseAddr("192.168.100.130"), Node: "h1", Iface: w1.InterfaceName},
		Dst:     Party{Name: "out", Addr: netip.MustParseAddr("203.0.113.1")},
		Flow:    Flow{Src: netip.MustParseAddr("192.168.100.130"), Dst: netip.MustParseAddr("203.0.113.1"), Proto: ProtoICMP, ICMPType: 8},
		SrcNode: &r,
	})
	if got := trace(x); !containsInOrder(got, []string{"denied", "anti-spoofing drop " + w1.InterfaceName + " may send only from 192.168.100.1"}) {
		t.Errorf("got %s", got)
	}
}

func containsInOrder(s string, parts []string) bool {
	for _, p := range parts {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return true
}

func TestExplainEncapsulation(t *testing.T) {
	for _, c := range []struct {
		pool api.Pool
		want string
	}{
		{api.Pool{CIDR: "192.168.100.0/24", VXLANMode: api.EncapAlways}, "route info VXLAN: 192.168.100.64/26 via 10.0.1.2 (h2) dev vxlan.calico"},
		{api.Pool{CIDR: "192.168.100.0/24", IPIPMode: api.EncapAlways}, "route info IPIP: 192.168.100.64/26 via 10.0.1.2 (h2)"},
		{api.Pool{CIDR: "192.168.100.0/24", IPIPMode: api.EncapCrossSubnet}, "route info BGP route: 192.168.100.64/26 via 10.0.1.2 (h2)"},
	} {
		s := snapshot(c.pool)
		if got := trace(explainIn(t, s, "w1", "w3", ProtoICMP, 0)); !containsInOrder(got, []string{"allowed", c.want}) {
			t.Errorf("%+v:\n got %s\nwant %s", c.pool, got, c.want)
		}
	}
}
