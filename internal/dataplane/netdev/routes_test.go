package netdev

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calico-go/calico/internal/calc"
)

// routeHost makes a host namespace with an uplink (up0, 10.99.0.1/24 and
// fd99::1/64, peer .2) and a second interface ca0 to hang local routes on.
func routeHost(t testing.TB) (host, hostPath string) {
	host, hostPath = newNetns(t, "h")
	up, _ := newNetns(t, "u")
	vethBetween(t, host, "up0", "10.99.0.1/24 fd99::1/64", up, "up1", "10.99.0.2/24 fd99::2/64")
	ipCmd(t, "-n", host, "link", "add", "ca0", "type", "veth", "peer", "name", "ca1")
	ipCmd(t, "-n", host, "link", "set", "ca0", "up")
	ipCmd(t, "-n", host, "link", "set", "ca1", "up")
	return host, hostPath
}

// ownedRoutes lists the main table's routes of our protocol as `ip route`
// lines, for comparisons that do not go through the code under test.
func ownedRoutes(t testing.TB, host string) string {
	t.Helper()
	return ipCmd(t, "-n", host, "route", "show", "proto", "80") + ipCmd(t, "-n", host, "-6", "route", "show", "proto", "80")
}

func TestRouteProtocolIsUnclaimed(t *testing.T) {
	for _, f := range []string{"/etc/iproute2/rt_protos"} {
		out := cmd(t, "cat", f)
		for _, line := range strings.Split(out, "\n") {
			if fields := strings.Fields(line); len(fields) > 0 && fields[0] == fmt.Sprint(int(RouteProtocol)) {
				t.Fatalf("%s names protocol %d: %q", f, RouteProtocol, line)
			}
		}
	}
}

func TestRouteSyncer(t *testing.T) {
	host, hostPath := routeHost(t)
	// Routes that are not ours: one beside ours, one with the key of a
	// desired route, and one of our protocol in another table.
	ipCmd(t, "-n", host, "route", "add", "10.55.0.0/24", "via", "10.99.0.2", "proto", "static")
	ipCmd(t, "-n", host, "route", "add", "10.56.0.0/24", "via", "10.99.0.2", "proto", "static")
	ipCmd(t, "-n", host, "-6", "route", "add", "fd55::/64", "via", "fd99::2", "proto", "static")
	ipCmd(t, "-n", host, "route", "add", "10.57.0.0/24", "via", "10.99.0.2", "proto", "80", "table", "100")
	foreign := func() string {
		return ipCmd(t, "-n", host, "route", "show", "proto", "static") +
			ipCmd(t, "-n", host, "-6", "route", "show", "proto", "static") +
			ipCmd(t, "-n", host, "route", "show", "table", "100")
	}
	foreignBefore := foreign()

	rs := NewRouteSyncer(InNetns(hostPath))
	defer rs.Close()
	desired := []calc.Route{
		{Dst: pfx("10.60.0.1/32"), Kind: calc.RouteLocal, Dev: "ca0"},
		{Dst: pfx("10.61.0.0/26"), Kind: calc.RouteVia, Gateway: addr("10.99.0.2")},
		{Dst: pfx("10.62.0.0/26"), Kind: calc.RouteVia, Gateway: addr("10.99.0.2"), Dev: "up0"},
		{Dst: pfx("10.63.0.0/26"), Kind: calc.RouteVia, Gateway: addr("10.200.0.1"), Dev: "up0", OnLink: true},
		{Dst: pfx("10.64.0.0/26"), Kind: calc.RouteBlackhole},
		{Dst: pfx("10.65.0.0/26"), Kind: calc.RouteUnreachable},
		{Dst: pfx("fd60::1/128"), Kind: calc.RouteLocal, Dev: "ca0"},
		{Dst: pfx("fd61::/122"), Kind: calc.RouteVia, Gateway: addr("fd99::2")},
		{Dst: pfx("fd62::/122"), Kind: calc.RouteVia, Gateway: addr("fd99::2"), Dev: "up0"},
		{Dst: pfx("fd63::/122"), Kind: calc.RouteVia, Gateway: addr("fd63:ffff::1"), Dev: "up0", OnLink: true},
		{Dst: pfx("fd64::/122"), Kind: calc.RouteBlackhole},
		{Dst: pfx("fd65::/122"), Kind: calc.RouteUnreachable},
	}
	if err := rs.Apply(desired); err != nil {
		t.Fatal(err)
	}
	if st := rs.Stats(); st.Added != len(desired) || st.Failed != 0 || st.Desired != len(desired) {
		t.Fatalf("first Apply: %+v", st)
	}
	got := ownedRoutes(t, host)
	for _, want := range []string{
		"10.60.0.1 dev ca0 scope link",
		"10.61.0.0/26 via 10.99.0.2 dev up0",
		"10.62.0.0/26 via 10.99.0.2 dev up0",
		"10.63.0.0/26 via 10.200.0.1 dev up0 onlink",
		"blackhole 10.64.0.0/26",
		"unreachable 10.65.0.0/26",
		"fd60::1 dev ca0",
		"fd61::/122 via fd99::2 dev up0",
		"fd63::/122 via fd63:ffff::1 dev up0",
		"blackhole fd64::/122",
		"unreachable fd65::/122",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("kernel lacks %q; has:\n%s", want, got)
		}
	}

	// Level-triggered and cheap: nothing changed, nothing written.
	if err := rs.Apply(desired); err != nil {
		t.Fatal(err)
	}
	if st := rs.Stats(); st.Changes() != 0 || st.Unchanged != len(desired) {
		t.Fatalf("second Apply changed things: %+v", st)
	}

	// Failures are per route and say what and why; the rest still applies.
	withBad := append(append([]calc.Route{}, desired...),
		calc.Route{Dst: pfx("10.56.0.0/24"), Kind: calc.RouteVia, Gateway: addr("10.99.0.3")},
		calc.Route{Dst: pfx("192.168.100.64/26"), Kind: calc.RouteVia, Gateway: addr("10.77.0.1")},
		calc.Route{Dst: pfx("10.66.0.1/32"), Kind: calc.RouteLocal, Dev: "nosuch0"},
		calc.Route{Dst: pfx("10.67.0.0/26"), Kind: calc.RouteVia, Gateway: addr("fd99::2")},
		calc.Route{Dst: pfx("10.68.0.0/26"), Kind: calc.RouteBlackhole},
	)
	err := rs.Apply(withBad)
	if err == nil {
		t.Fatal("no error for bad routes")
	}
	for _, want := range []string{
		"route 10.56.0.0/24 via 10.99.0.3: a route to 10.56.0.0/24 of another protocol exists",
		"route 192.168.100.64/26 via 10.77.0.1: network is unreachable",
		"route 10.66.0.1/32 dev nosuch0: device nosuch0 does not exist",
		"route 10.67.0.0/26 via fd99::2: gateway and destination are of different families",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if st := rs.Stats(); st.Added != 1 || st.Failed != 4 || st.Unchanged != len(desired) || st.Deleted != 0 {
		t.Fatalf("Apply with bad routes: %+v", st)
	}
	if f := foreign(); f != foreignBefore {
		t.Fatalf("foreign routes changed:\nbefore\n%s\nafter\n%s", foreignBefore, f)
	}

	// Stale routes of ours go, whoever added them; changed ones are
	// replaced in place.
	ipCmd(t, "-n", host, "route", "add", "10.70.0.0/24", "via", "10.99.0.2", "proto", "80")
	ipCmd(t, "-n", host, "route", "add", "10.61.0.0/26", "via", "10.99.0.2", "proto", "80", "metric", "7")
	changed := append([]calc.Route{}, desired...)
	changed[1].Gateway = addr("10.99.0.3") // 10.61.0.0/26
	changed[7].Gateway = addr("fd99::3")   // fd61::/122
	changed[0] = calc.Route{Dst: pfx("10.60.0.1/32"), Kind: calc.RouteBlackhole}
	changed = changed[:len(changed)-1] // drop fd65::/122
	if err := rs.Apply(changed); err != nil {
		t.Fatal(err)
	}
	// Deleted: 10.68 (added above), 10.70, 10.61 metric 7, fd65.
	if st := rs.Stats(); st.Replaced != 3 || st.Deleted != 4 || st.Added != 0 || st.Unchanged != len(changed)-3 {
		t.Fatalf("Apply with changes: %+v\n%s", st, ownedRoutes(t, host))
	}
	got = ownedRoutes(t, host)
	for _, want := range []string{"10.61.0.0/26 via 10.99.0.3 dev up0", "fd61::/122 via fd99::3 dev up0", "blackhole 10.60.0.1"} {
		if !strings.Contains(got, want) {
			t.Errorf("kernel lacks %q; has:\n%s", want, got)
		}
	}
	for _, gone := range []string{"10.70.0.0", "fd65::", "metric 7", "10.68.0.0"} {
		if strings.Contains(got, gone) {
			t.Errorf("kernel still has %q:\n%s", gone, got)
		}
	}
	if err := rs.Apply(changed); err != nil || rs.Stats().Changes() != 0 {
		t.Fatalf("Apply after changes not idempotent: %v %+v", err, rs.Stats())
	}

	// Routes deleted behind our back come back.
	ipCmd(t, "-n", host, "route", "del", "10.62.0.0/26")
	if err := rs.Apply(changed); err != nil || rs.Stats().Added != 1 {
		t.Fatalf("restore: %v %+v", err, rs.Stats())
	}

	// Empty desired state removes all of ours and nothing else.
	if err := rs.Apply(nil); err != nil {
		t.Fatal(err)
	}
	if got := ownedRoutes(t, host); strings.TrimSpace(got) != "" {
		t.Fatalf("owned routes left:\n%s", got)
	}
	if f := foreign(); f != foreignBefore {
		t.Fatalf("foreign routes changed:\nbefore\n%s\nafter\n%s", foreignBefore, f)
	}
}

// A device recreated under the same name gets a new index; the kernel drops
// routes with the old device, and the syncer must program the new index,
// not one remembered from before.
func TestRouteSyncerDeviceRecreated(t *testing.T) {
	host, hostPath := routeHost(t)
	rs := NewRouteSyncer(InNetns(hostPath))
	defer rs.Close()
	desired := []calc.Route{{Dst: pfx("10.60.0.1/32"), Kind: calc.RouteLocal, Dev: "ca0"}}
	if err := rs.Apply(desired); err != nil {
		t.Fatal(err)
	}
	ipCmd(t, "-n", host, "link", "del", "ca0")
	ipCmd(t, "-n", host, "link", "add", "ca0", "type", "veth", "peer", "name", "ca1")
	ipCmd(t, "-n", host, "link", "set", "ca0", "up")
	ipCmd(t, "-n", host, "link", "set", "ca1", "up")
	if err := rs.Apply(desired); err != nil {
		t.Fatal(err)
	}
	if st := rs.Stats(); st.Added != 1 {
		t.Fatalf("%+v", st)
	}
	if got := ownedRoutes(t, host); !strings.Contains(got, "10.60.0.1 dev ca0") {
		t.Fatalf("route not restored:\n%s", got)
	}
	if err := rs.Apply(desired); err != nil || rs.Stats().Changes() != 0 {
		t.Fatalf("%v %+v", err, rs.Stats())
	}
}

func TestRouteSyncerOtherProtocol(t *testing.T) {
	host, hostPath := routeHost(t)
	bgp := NewRouteSyncer(InNetns(hostPath), WithProtocol(netlink.RouteProtocol(81)))
	defer bgp.Close()
	ours := NewRouteSyncer(InNetns(hostPath))
	defer ours.Close()
	if err := bgp.Apply([]calc.Route{{Dst: pfx("10.80.0.0/26"), Kind: calc.RouteVia, Gateway: addr("10.99.0.2")}}); err != nil {
		t.Fatal(err)
	}
	if err := ours.Apply(nil); err != nil {
		t.Fatal(err)
	}
	if got := ipCmd(t, "-n", host, "route", "show", "10.80.0.0/26"); !strings.Contains(got, "proto 81") {
		t.Fatalf("protocol 81 route lost: %q", got)
	}
}

func TestRouteSyncerBadNetns(t *testing.T) {
	rs := NewRouteSyncer(InNetns("/var/run/netns/nd" + runID + "-missing"))
	defer rs.Close()
	err := rs.Apply(nil)
	if err == nil || !errors.Is(err, unix.ENOENT) {
		t.Fatalf("Apply in a missing netns: %v", err)
	}
}

func TestNormalizeRoute(t *testing.T) {
	r, err := normalizeRoute(calc.Route{Dst: netip.MustParsePrefix("10.0.0.77/24"), Kind: calc.RouteBlackhole, Dev: "x"})
	if err != nil || r.Dst != pfx("10.0.0.0/24") || r.Dev != "" {
		t.Fatalf("%+v %v", r, err)
	}
	if _, err := normalizeRoute(calc.Route{Dst: pfx("10.0.0.0/24"), Kind: calc.RouteVia, Gateway: addr("10.0.0.1"), OnLink: true}); err == nil {
		t.Fatal("onlink without device accepted")
	}
	if _, err := normalizeRoute(calc.Route{Dst: pfx("10.0.0.0/24"), Kind: calc.RouteLocal}); err == nil {
		t.Fatal("local route without device accepted")
	}
	if _, err := normalizeRoute(calc.Route{Kind: calc.RouteLocal, Dev: "x"}); err == nil {
		t.Fatal("invalid destination accepted")
	}
}

// BenchmarkRouteSyncerApplyUnchanged measures the steady state: 1000
// desired routes, all already in the kernel, so Apply is one filtered dump
// per family and a comparison.
func BenchmarkRouteSyncerApplyUnchanged(b *testing.B) {
	_, hostPath := routeHost(b)
	desired := make([]calc.Route, 0, 1000)
	for i := range 500 {
		desired = append(desired, calc.Route{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100, byte(i >> 8), byte(i)}), 32), Kind: calc.RouteLocal, Dev: "ca0"})
	}
	for i := range 400 {
		desired = append(desired, calc.Route{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 101, byte(i >> 2), byte(i << 6)}), 26), Kind: calc.RouteVia, Gateway: addr("10.99.0.2")})
	}
	for i := range 100 {
		a := netip.AddrFrom16([16]byte{0xfd, 0x66, 15: byte(i)})
		desired = append(desired, calc.Route{Dst: netip.PrefixFrom(a, 128), Kind: calc.RouteLocal, Dev: "ca0"})
	}
	rs := NewRouteSyncer(InNetns(hostPath))
	defer rs.Close()
	if err := rs.Apply(desired); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := rs.Apply(desired); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if st := rs.Stats(); st.Changes() != 0 || st.Unchanged != 1000 {
		b.Fatalf("steady state changed things: %+v", st)
	}
}

func TestRouteSyncerPatch(t *testing.T) {
	host, hostPath := routeHost(t)
	ipCmd(t, "-n", host, "route", "add", "10.55.0.0/26", "via", "10.99.0.2", "proto", "static")
	ipCmd(t, "-n", host, "-6", "route", "add", "fd55::/122", "via", "fd99::2", "proto", "static")
	foreign := func() string {
		return ipCmd(t, "-n", host, "route", "show", "proto", "static") + ipCmd(t, "-n", host, "-6", "route", "show", "proto", "static")
	}
	foreignBefore := foreign()
	rs := NewRouteSyncer(InNetns(hostPath))
	defer rs.Close()
	base := []calc.Route{{Dst: pfx("10.60.0.1/32"), Kind: calc.RouteLocal, Dev: "ca0"}}
	if err := rs.Apply(base); err != nil {
		t.Fatal(err)
	}
	add := []calc.Route{
		{Dst: pfx("10.61.0.0/26"), Kind: calc.RouteVia, Gateway: addr("10.99.0.2")},
		{Dst: pfx("10.62.0.0/26"), Kind: calc.RouteVia, Gateway: addr("10.200.0.1"), Dev: "up0", OnLink: true},
		{Dst: pfx("10.63.0.0/26"), Kind: calc.RouteUnreachable},
		{Dst: pfx("fd61::/122"), Kind: calc.RouteVia, Gateway: addr("fd99::2")},
	}
	if err := rs.Patch(add, nil); err != nil {
		t.Fatal(err)
	}
	if st := rs.Stats(); st.Added != len(add) || st.Failed != 0 {
		t.Fatalf("Patch adding: %+v", st)
	}
	// Exactly what Apply makes of the same list: nothing left to change.
	if err := rs.Apply(append(slices.Clone(base), add...)); err != nil {
		t.Fatal(err)
	}
	if st := rs.Stats(); st.Changes() != 0 {
		t.Fatalf("Apply after Patch changed things: %+v\n%s", st, ownedRoutes(t, host))
	}

	// A key another protocol holds is refused, not taken; deleting at a
	// key that only another protocol holds deletes nothing.
	err := rs.Patch([]calc.Route{{Dst: pfx("10.55.0.0/26"), Kind: calc.RouteVia, Gateway: addr("10.99.0.3")}},
		[]calc.Route{{Dst: pfx("fd55::/122"), Kind: calc.RouteVia, Gateway: addr("fd99::2")}})
	if err == nil || !strings.Contains(err.Error(), "of another protocol exists") {
		t.Fatalf("Patch over a static route: %v", err)
	}
	if f := foreign(); f != foreignBefore {
		t.Fatalf("foreign routes changed:\nbefore\n%s\nafter\n%s", foreignBefore, f)
	}

	// Deleting: ours go; one already gone is no error; KeepStale keeps them.
	rs.KeepStale(true)
	if err := rs.Patch(nil, add[:1]); err != nil {
		t.Fatal(err)
	}
	if got := ipCmd(t, "-n", host, "route", "show", "10.61.0.0/26"); got == "" {
		t.Fatal("Patch deleted a route while KeepStale was on")
	}
	rs.KeepStale(false)
	if err := rs.Patch(nil, append(slices.Clone(add), calc.Route{Dst: pfx("10.64.0.0/26"), Kind: calc.RouteVia, Gateway: addr("10.99.0.2")})); err != nil {
		t.Fatal(err)
	}
	if got := ownedRoutes(t, host); strings.Count(got, "\n") != 1 || !strings.Contains(got, "10.60.0.1 dev ca0") {
		t.Fatalf("after deleting, owned routes:\n%s", got)
	}
}

// BenchmarkRouteSyncerOneRoute is one learned route coming and going among
// 100 others (a new block in a cluster of 100 hosts), first through Apply
// (a dump of every owned route per change), then through Patch.
func BenchmarkRouteSyncerOneRoute(b *testing.B) {
	_, hostPath := routeHost(b)
	desired := make([]calc.Route, 0, 101)
	for i := range 100 {
		desired = append(desired, calc.Route{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 101, byte(i >> 2), byte(i << 6)}), 26), Kind: calc.RouteVia, Gateway: addr("10.99.0.2")})
	}
	one := calc.Route{Dst: pfx("10.102.0.0/26"), Kind: calc.RouteVia, Gateway: addr("10.99.0.2")}
	with := append(slices.Clone(desired), one)
	rs := NewRouteSyncer(InNetns(hostPath))
	defer rs.Close()
	if err := rs.Apply(desired); err != nil {
		b.Fatal(err)
	}
	b.Run("Apply", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			list := desired
			if i%2 == 0 {
				list = with
			}
			if err := rs.Apply(list); err != nil || rs.Stats().Changes() != 1 {
				b.Fatal(err, rs.Stats())
			}
		}
		if err := rs.Apply(desired); err != nil {
			b.Fatal(err)
		}
	})
	b.Run("Patch", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			var err error
			if i%2 == 0 {
				err = rs.Patch([]calc.Route{one}, nil)
			} else {
				err = rs.Patch(nil, []calc.Route{one})
			}
			if err != nil || rs.Stats().Changes() != 1 {
				b.Fatal(err, rs.Stats())
			}
		}
		if err := rs.Apply(desired); err != nil {
			b.Fatal(err)
		}
	})
}

// WithProtocol makes a RouteSyncer own the routes of protocol p instead of
// RouteProtocol, so two syncers in one namespace
// can be shown never to touch each other's routes.
func WithProtocol(p netlink.RouteProtocol) Option {
	return func(o *options) { o.proto = p }
}
