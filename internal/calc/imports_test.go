package calc

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
)

// importSnapshot: h1 (this node), h2 and h3 on the mesh, a router at
// 10.0.1.250; h1 and h2 hold blocks; h3's workloads borrowed addresses from
// h1's and h2's blocks.
func importSnapshot() *Snapshot {
	s := NewSnapshot()
	for _, p := range []api.Pool{
		{CIDR: "192.168.100.0/24"},
		{CIDR: "192.168.200.0/24", Disabled: true},
		{CIDR: "fd00:100::/64"},
		{CIDR: "10.0.2.0/24"}, // a bad pool over h3's subnet
	} {
		s.Pools[p.CIDR] = p
	}
	s.Nodes["h1"] = api.Node{Name: "h1", IPv4: "10.0.1.1/24", IPv6: "fd00::1/64"}
	s.Nodes["h2"] = api.Node{Name: "h2", IPv4: "10.0.1.2/24", IPv6: "fd00::2/64"}
	s.Nodes["h3"] = api.Node{Name: "h3", IPv4: "10.0.2.3/24"}
	for cidr, node := range map[string]string{
		"192.168.100.0/26":   "h1",
		"192.168.100.64/26":  "h2",
		"192.168.200.0/26":   "h2",
		"fd00:100::/122":     "h2",
		"192.168.100.128/26": "", // released: unclaimed
	} {
		s.Blocks[cidr] = api.Block{CIDR: cidr, Affinity: node}
	}
	for key, ep := range map[string]api.Endpoint{
		"h1/w1": {Node: "h1", InterfaceName: "cali1", IPv4Nets: []string{"192.168.100.1/32"}},
		"h2/w3": {Node: "h2", InterfaceName: "cali3", IPv4Nets: []string{"192.168.100.65/32"}},
		"h3/w5": {Node: "h3", InterfaceName: "cali5", IPv4Nets: []string{"192.168.100.10/32"}},
		"h3/w6": {Node: "h3", InterfaceName: "cali6", IPv4Nets: []string{"192.168.100.70/32"}},
	} {
		s.Endpoints[key] = ep
	}
	return s
}

var (
	h1IP, h2IP, h3IP = netip.MustParseAddr("10.0.1.1"), netip.MustParseAddr("10.0.1.2"), netip.MustParseAddr("10.0.2.3")
	h2IP6            = netip.MustParseAddr("fd00::2")
	routerIP         = netip.MustParseAddr("10.0.1.250")
)

func TestImportPolicy(t *testing.T) {
	pools := parsePools(importSnapshot())
	im := newImporter(importSnapshot(), "h1", pools, nil)
	for _, c := range []struct {
		name    string
		dst     string
		nb, nh  netip.Addr
		refused string // "" accepted, else a part of the reason
	}{
		{"a node's block from the node", "192.168.100.64/26", h2IP, h2IP, ""},
		{"a more specific of a node's block from the node", "192.168.100.64/27", h2IP, h2IP, ""},
		{"a node's block from a router, next hop kept", "192.168.100.64/26", routerIP, h2IP, ""},
		{"a node's block hijacked by a router", "192.168.100.64/26", routerIP, routerIP, "inside block 192.168.100.64/26 of node h2"},
		{"part of a node's block hijacked by a router", "192.168.100.64/27", routerIP, routerIP, "inside block 192.168.100.64/26 of node h2"},
		{"a node's block announced by another node for it", "192.168.100.64/26", h3IP, h2IP, "node h3 announced next hop 10.0.1.2"},
		{"a node's block hijacked by another node", "192.168.100.64/26", h3IP, h3IP, "of node h2"},
		{"default route", "0.0.0.0/0", routerIP, routerIP, "outside every pool"},
		{"a host's address", "10.0.1.2/32", routerIP, routerIP, "outside every pool"},
		{"out of pool", "172.16.5.0/24", routerIP, routerIP, "outside every pool"},
		{"shorter than its pool", "192.168.0.0/16", routerIP, routerIP, "outside every pool"},
		{"unclaimed part of a pool from a router", "192.168.100.192/26", routerIP, routerIP, ""},
		{"a released block from a router", "192.168.100.128/26", routerIP, routerIP, ""},
		{"unclaimed part of a pool from a node", "192.168.100.192/26", h3IP, h3IP, ""},
		{"the whole pool", "192.168.100.0/24", routerIP, routerIP, "covers this node's block 192.168.100.0/26"},
		{"this node's block", "192.168.100.0/26", h2IP, h2IP, "inside this node's block"},
		{"an unused address of this node's block", "192.168.100.5/32", h2IP, h2IP, "inside this node's block"},
		{"a borrowed address of this node's block from its holder", "192.168.100.10/32", h3IP, h3IP, ""},
		{"a borrowed address of another node's block from its holder", "192.168.100.70/32", h3IP, h3IP, ""},
		{"a borrowed address from a router", "192.168.100.10/32", routerIP, routerIP, "address of a workload on h3"},
		{"a borrowed address from the block's node", "192.168.100.70/32", h2IP, h2IP, "address of a workload on h3"},
		{"a workload of this node", "192.168.100.1/32", h2IP, h2IP, "address of a workload on this node"},
		{"next hop this node", "192.168.100.192/26", routerIP, h1IP, "next hop is this node"},
		{"next hop of the other family", "192.168.100.192/26", routerIP, h2IP6, "family"},
		{"IPv6 block from its node over IPv4", "fd00:100::/122", h2IP, h2IP6, ""},
		{"IPv6 block with a foreign next hop", "fd00:100::/122", h2IP, netip.MustParseAddr("fd00::99"), "node h2 announced next hop"},
		{"covers a node's address", "10.0.2.0/25", routerIP, routerIP, "covers node h3's address 10.0.2.3"},
		{"a block in a disabled pool from its node", "192.168.200.0/26", h2IP, h2IP, ""},
		{"unclaimed range of a disabled pool", "192.168.200.128/26", routerIP, routerIP, "unclaimed range of disabled pool 192.168.200.0/24"},
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

// A hostile path that wins best-path selection does not shadow the honest
// one behind it, and every refusal is reported.
func TestImportPicksFirstAcceptedPath(t *testing.T) {
	s := importSnapshot()
	block := netip.MustParsePrefix("192.168.100.64/26")
	learned := map[netip.Prefix][]LearnedPath{
		block:                                       {{Neighbor: routerIP, NextHop: routerIP}, {Neighbor: h2IP, NextHop: h2IP}},
		netip.MustParsePrefix("0.0.0.0/0"):          {{Neighbor: routerIP, NextHop: routerIP}},
		netip.MustParsePrefix("10.0.1.2/32"):        {{Neighbor: routerIP, NextHop: routerIP}},
		netip.MustParsePrefix("172.16.5.0/24"):      {{Neighbor: routerIP, NextHop: routerIP}},
		netip.MustParsePrefix("192.168.100.192/26"): {{Neighbor: routerIP, NextHop: routerIP}},
	}
	r := Compute(Input{Node: "h1", Snap: s, Learned: learned})
	if rt := routeFor(t, r, block.String()); rt.Kind != RouteVia || rt.Gateway != h2IP {
		t.Errorf("h2's block: %+v, want via h2 (the router's path refused)", rt)
	}
	if rt := routeFor(t, r, "192.168.100.192/26"); rt.Gateway != routerIP {
		t.Errorf("unclaimed pool prefix: %+v, want via the router", rt)
	}
	for _, rt := range r.Dataplane.Routes {
		if rt.Kind == RouteVia && rt.Gateway == routerIP && rt.Dst.String() != "192.168.100.192/26" {
			t.Errorf("hostile route installed: %+v", rt)
		}
	}
	if n := r.RejectedByNeighbor(); n[routerIP] != 4 || n[h2IP] != 0 || len(n) != 1 {
		t.Errorf("rejected by neighbour = %v, want 4 from the router", n)
	}
	// Sorted by prefix.
	var order []string
	for _, rj := range r.Rejected {
		order = append(order, rj.Prefix.String())
	}
	if got := strings.Join(order, " "); got != "0.0.0.0/0 10.0.1.2/32 172.16.5.0/24 192.168.100.64/26" {
		t.Errorf("rejected order: %s", got)
	}
	var line string
	for _, p := range r.Problems {
		if strings.Contains(p, "import policy") {
			line = p
		}
	}
	if !strings.Contains(line, "refused 4 learned route(s)") || !strings.Contains(line, "0.0.0.0/0 via 10.0.1.250 from 10.0.1.250 (outside every pool)") ||
		!strings.HasSuffix(line, "; and 1 more") || strings.Contains(line, "192.168.100.64/26") {
		t.Errorf("problem line: %q", line)
	}
	// Deterministic: the same input gives the same output.
	if again := Compute(Input{Node: "h1", Snap: s, Learned: learned}); strings.Join(again.Problems, "|") != strings.Join(r.Problems, "|") {
		t.Errorf("problems differ between runs")
	}
}

func TestRejectedProblemBounded(t *testing.T) {
	if p := rejectedProblem(nil); p != "" {
		t.Errorf("no rejections: %q", p)
	}
	var rej []RejectedPath
	for i := range 50 {
		rej = append(rej, RejectedPath{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(i), 0}), 24), Neighbor: routerIP, NextHop: routerIP, Reason: "outside every pool"})
	}
	p := rejectedProblem(rej)
	if strings.Count(p, "outside every pool") != maxRejectedExamples || !strings.HasSuffix(p, "; and 47 more") || len(p) > 600 {
		t.Errorf("problem line for 50 rejections (%d bytes): %q", len(p), p)
	}
}
