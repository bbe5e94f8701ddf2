package agent

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/fastpath"
)

// TestFastpathDesired: the fast path's anti-spoofing pairs are the
// ruleset's wl-src4 (IPv4 only, the first entry of a duplicated interface),
// and it is off without endpoints or when turned off.
func TestFastpathDesired(t *testing.T) {
	local := netip.MustParseAddr("10.0.0.1")
	p := calc.Policy{Endpoints: []calc.EndpointPolicy{
		{Interface: "cali1", Addrs: []netip.Addr{netip.MustParseAddr("192.168.100.1"), netip.MustParseAddr("fd00::1")}},
		{Interface: "cali2", Addrs: []netip.Addr{netip.MustParseAddr("192.168.100.2")}},
		{Interface: "cali1", Addrs: []netip.Addr{netip.MustParseAddr("192.168.100.9")}},
	}}
	got := fastpathDesired(true, local, p)
	want := fastpath.Desired{Enabled: true, LocalIP: local, Workloads: []fastpath.Workload{
		{Iface: "cali1", Addrs: []netip.Addr{netip.MustParseAddr("192.168.100.1")}},
		{Iface: "cali2", Addrs: []netip.Addr{netip.MustParseAddr("192.168.100.2")}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if d := fastpathDesired(false, local, p); d.Enabled || len(d.Workloads) != 0 {
		t.Errorf("turned off: %+v", d)
	}
	if d := fastpathDesired(true, local, calc.Policy{}); d.Enabled {
		t.Errorf("no endpoints: %+v", d)
	}
}
