package calc

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/calico-go/calico/internal/api"
)

// A record's published ports become DNAT targets at its first IPv4
// address; what does not parse, or is not IPv4, is left out.
func TestPublished(t *testing.T) {
	addrs := []netip.Addr{netip.MustParseAddr("fd00::5"), netip.MustParseAddr("192.168.0.5")}
	ep := api.Endpoint{Ports: []api.PortMapping{
		{Proto: "tcp", HostPort: 8080, Port: 80},
		{Proto: "udp", HostIP: "10.0.0.1", HostPort: 5353, Port: 53},
		{Proto: "tcp", HostIP: "0.0.0.0", HostPort: 8443, Port: 443},
		{Proto: "sctp", HostPort: 9, Port: 9},
		{Proto: "tcp", HostIP: "fd00::1", HostPort: 81, Port: 80},
		{Proto: "tcp", HostIP: "nonsense", HostPort: 82, Port: 80},
		{Proto: "tcp", HostPort: 0, Port: 80},
	}}
	a := addrs[1]
	want := []Published{
		{Proto: "tcp", HostPort: 8080, Addr: a, Port: 80},
		{Proto: "udp", HostIP: netip.MustParseAddr("10.0.0.1"), HostPort: 5353, Addr: a, Port: 53},
		{Proto: "tcp", HostPort: 8443, Addr: a, Port: 443},
	}
	if got := published(ep, addrs); !slices.Equal(got, want) {
		t.Errorf("published:\n got  %+v\n want %+v", got, want)
	}
	if got := published(ep, addrs[:1]); got != nil {
		t.Errorf("an IPv6-only endpoint publishes %+v; want nothing", got)
	}
}
