package calc

import (
	"net/netip"
	"slices"
	"strings"
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

// A published host port outside the allowed range (by default the
// privileged ports: the host's SSH, DNS, web server) is not published and
// is reported: an endpoint record must not redirect the host's services.
func TestPublishedPortsOutsideTheRangeAreRefused(t *testing.T) {
	s := snapshot(api.Pool{CIDR: "192.168.100.0/24"})
	ep := s.Endpoints["h1/w1"]
	ep.Ports = []api.PortMapping{{Proto: "tcp", HostPort: 22, Port: 22}, {Proto: "tcp", HostPort: 8080, Port: 80}}
	s.Endpoints["h1/w1"] = ep
	r := Compute(Input{Node: "h1", Snap: s})
	if got := r.Dataplane.Policy.Published; len(got) != 1 || got[0].HostPort != 8080 {
		t.Errorf("published = %+v, want only 8080", got)
	}
	if !slices.ContainsFunc(r.Problems, func(p string) bool { return strings.Contains(p, "tcp/22") && strings.Contains(p, "--publish-ports") }) {
		t.Errorf("problems %q do not name the refused port 22", r.Problems)
	}
	// The operator may open them.
	r = Compute(Input{Node: "h1", Snap: s, PublishPorts: api.PortRange{Min: 1, Max: 65535}})
	if got := r.Dataplane.Policy.Published; len(got) != 2 {
		t.Errorf("with --publish-ports=1-65535: published = %+v, want both", got)
	}
}
