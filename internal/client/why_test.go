package client

import (
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
)

// whySnapshot: workload "w" on both nodes (192.168.0.1 on h1, .65 on h2)
// and "solo" on h1 (.2), all with profile P, every address held in IPAM.
func whySnapshot() *calc.Snapshot {
	s := calc.NewSnapshot()
	s.Pools["192.168.0.0/24"] = api.Pool{CIDR: "192.168.0.0/24"}
	s.Nodes["h1"] = api.Node{Name: "h1", IPv4: "10.0.0.1/24"}
	s.Nodes["h2"] = api.Node{Name: "h2", IPv4: "10.0.0.2/24"}
	s.Profiles["P"] = api.NewProfile("P")
	blocks := map[string]string{"h1": "192.168.0.0/26", "h2": "192.168.0.64/26"}
	for _, e := range []struct {
		node, wl, ip string
		ord          int
	}{{"h1", "w", "192.168.0.1", 1}, {"h1", "solo", "192.168.0.2", 2}, {"h2", "w", "192.168.0.65", 1}} {
		ep := api.Endpoint{Node: e.node, Workload: e.wl, Orchestrator: "netns", InterfaceName: api.WorkloadIfaceName(e.node, e.wl),
			IPv4Nets: []string{e.ip + "/32"}, Profiles: []string{"P"}}
		s.Endpoints[e.node+"/"+e.wl] = ep
		b := s.Blocks[blocks[e.node]]
		if b.Allocations == nil {
			b = api.Block{CIDR: blocks[e.node], Affinity: e.node, Allocations: map[int]string{}}
		}
		b.Allocations[e.ord] = api.EndpointHandles(ep)[0]
		s.Blocks[blocks[e.node]] = b
	}
	return s
}

func TestWhyAnswer(t *testing.T) {
	cases := []struct {
		req     WhyRequest
		want    string // verdict, or an error's text
		src     string // resolved source name
		dstAddr string
	}{
		{WhyRequest{Src: "h1/w", Dst: "h2/w"}, "allowed", "h1/w", "192.168.0.65"},
		{WhyRequest{Src: "solo", Dst: "h2/w", Port: 80}, "allowed", "h1/solo", "192.168.0.65"},
		{WhyRequest{Src: "192.168.0.65", Dst: "outside", Proto: "udp", Port: 53}, "allowed", "h2/w", "203.0.113.1"},
		{WhyRequest{Src: "outside", Dst: "solo"}, "denied", "outside", "192.168.0.2"},
		{WhyRequest{Src: "10.0.0.2", Dst: "solo"}, "denied", "h2", "192.168.0.2"},
		{WhyRequest{Src: "w", Dst: "solo"}, `workload "w" is on more than one node (h1/w, h2/w); give NODE/w`, "", ""},
		{WhyRequest{Src: "solo", Dst: "nope"}, `destination: no workload "nope" in the datastore`, "", ""},
		{WhyRequest{Src: "solo", Dst: "2001:db8::5"}, "source: workload h1/solo has no IPv6 address", "", ""},
		{WhyRequest{Src: "solo", Dst: "h2/w", Proto: "tcp"}, "--proto tcp needs --port N", "", ""},
		{WhyRequest{Src: "solo", Dst: "h2/w", Proto: "icmp", Port: 80}, "--port goes with --proto tcp or udp", "", ""},
		{WhyRequest{Src: "solo", Dst: "h2/w", Proto: "sctp", Port: 80}, `--proto "sctp": want tcp, udp or icmp`, "", ""},
	}
	for _, c := range cases {
		ans, err := NewModel(whySnapshot(), nil, nil, nil).Why(c.req)
		if ans == nil {
			ans = &WhyAnswer{}
		}
		got := ans.Verdict
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, c.want) || err == nil && (ans.Src.Name != c.src || ans.Dst.Addr.String() != c.dstAddr) {
			t.Errorf("%+v: got %q (src %s, dst %s), want %q (src %s, dst %s)", c.req, got, ans.Src.Name, ans.Dst.Addr, c.want, c.src, c.dstAddr)
		}
	}
}

// One model answers a whole matrix as fresh models answer each question.
func TestWhyModelReuse(t *testing.T) {
	ends := []string{"h1/w", "h2/w", "solo", "outside", "10.0.0.1"}
	shared := NewModel(whySnapshot(), nil, nil, nil)
	n := 0
	for _, src := range ends {
		for _, dst := range ends {
			if src == dst {
				continue
			}
			req := WhyRequest{Src: src, Dst: dst, Proto: "tcp", Port: 8080}
			a, err := shared.Why(req)
			b, err2 := NewModel(whySnapshot(), nil, nil, nil).Why(req)
			if err != nil || err2 != nil || a.Verdict != b.Verdict || len(a.Steps) != len(b.Steps) {
				t.Errorf("%s -> %s: shared %v %v, fresh %v %v", src, dst, a, err, b, err2)
			}
			n++
		}
	}
	if n != 20 {
		t.Fatalf("asked %d questions", n)
	}
}
