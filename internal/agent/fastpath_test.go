package agent

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/calc"
)

// TestFastpathSetting: the fast path is on unless CALICO_FASTPATH=off, and
// a value that is neither is refused with a line naming the variable and
// what it takes, not read as either.
func TestFastpathSetting(t *testing.T) {
	for v, want := range map[string]bool{"": true, "on": true, "off": false} {
		got, err := fastpathSetting(v)
		if err != nil || got != want {
			t.Errorf("CALICO_FASTPATH=%q: %v, %v; want %v", v, got, err, want)
		}
	}
	for _, v := range []string{"yes", "OFF", "0", "of"} {
		_, err := fastpathSetting(v)
		if err == nil || !strings.Contains(err.Error(), "CALICO_FASTPATH") || !strings.Contains(err.Error(), "on (the default) or off") {
			t.Errorf("CALICO_FASTPATH=%q: %v, want an error naming the variable and its values", v, err)
		}
	}
}

// TestFastpathDesired: each interface once (its first entry, sorted or
// not), with its IPv4 sources only; an empty address list stays empty.
func TestFastpathDesired(t *testing.T) {
	local := netip.MustParseAddr("10.0.0.1")
	a4, b4, a6 := netip.MustParseAddr("10.64.0.1"), netip.MustParseAddr("10.64.0.2"), netip.MustParseAddr("fd10::1")
	for _, eps := range [][]calc.EndpointPolicy{
		{{Interface: "cali1", Addrs: []netip.Addr{a4}}, {Interface: "cali1", Addrs: []netip.Addr{b4}}, {Interface: "cali2", Addrs: []netip.Addr{a6, b4}}, {Interface: "cali3"}},
		{{Interface: "cali3"}, {Interface: "cali1", Addrs: []netip.Addr{a4}}, {Interface: "cali2", Addrs: []netip.Addr{a6, b4}}, {Interface: "cali1", Addrs: []netip.Addr{b4}}},
	} {
		d := fastpathDesired(true, local, calc.Policy{Endpoints: eps})
		got := map[string][]netip.Addr{}
		for _, w := range d.Workloads {
			if _, twice := got[w.Iface]; twice {
				t.Fatalf("%s listed twice: %+v", w.Iface, d.Workloads)
			}
			got[w.Iface] = w.Addrs
		}
		want := map[string][]netip.Addr{"cali1": {a4}, "cali2": {b4}, "cali3": nil}
		if !d.Enabled || !maps.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if fastpathDesired(false, local, calc.Policy{Endpoints: []calc.EndpointPolicy{{Interface: "cali1"}}}).Enabled {
		t.Fatal("on, though switched off")
	}
}
