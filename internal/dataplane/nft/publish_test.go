package nft

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/calc"
)

// Published ports become one DNAT rule each and one element of the set the
// forward chain admits DNATed flows by. A control-plane port is never
// published, and of two mappings of one host port the first wins; both
// are reported.
func TestRenderPublished(t *testing.T) {
	a, b := netip.MustParseAddr("192.168.0.5"), netip.MustParseAddr("192.168.0.6")
	host := netip.MustParseAddr("10.0.0.1")
	rs := render(calc.Policy{
		ControlPlane: calc.ControlPlane{Ports: []calc.L4Port{{Proto: "tcp", Port: 179}}},
		Published: []calc.Published{
			{Proto: "tcp", HostPort: 8080, Addr: a, Port: 80},
			{Proto: "udp", HostIP: host, HostPort: 5353, Addr: a, Port: 53},
			{Proto: "tcp", HostIP: host, HostPort: 8080, Addr: b, Port: 80}, // clashes with the first
			{Proto: "tcp", HostPort: 179, Addr: b, Port: 80},                // BGP
			{Proto: "udp", HostPort: 8080, Addr: b, Port: 8080},             // other protocol: no clash
		},
	})
	wantRules := []string{
		"meta nfproto ipv4 meta l4proto tcp th dport 8080 dnat ip to 192.168.0.5:80",
		"ip daddr 10.0.0.1 meta l4proto udp th dport 5353 dnat ip to 192.168.0.5:53",
		"meta nfproto ipv4 meta l4proto udp th dport 8080 dnat ip to 192.168.0.6:8080",
	}
	if got := rs.Chains[chainPublish].Rules; !slices.Equal(got, wantRules) {
		t.Errorf("publish chain:\n  got  %q\n  want %q", got, wantRules)
	}
	wantElems := []string{"192.168.0.5 . tcp . 80", "192.168.0.5 . udp . 53", "192.168.0.6 . udp . 8080"}
	if got := rs.Sets[setPub4].Elems; !slices.Equal(got, wantElems) {
		t.Errorf("published4: got %q, want %q", got, wantElems)
	}
	if len(rs.Problems) != 2 || !strings.Contains(rs.Problems[0]+rs.Problems[1], "already published") || !strings.Contains(rs.Problems[0]+rs.Problems[1], "control-plane") {
		t.Errorf("problems %q: want one clash and one control-plane port", rs.Problems)
	}
}
