package faults

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// testSecurity: the dataplane lets nobody through who should not pass.
func testSecurity(t *testing.T, w *walkthrough.World) {
	t.Run("AntiSpoofing", func(t *testing.T) { testAntiSpoofing(t, w) })
	t.Run("HostServices", func(t *testing.T) { testHostServices(t, w) })
	t.Run("NoProfile", func(t *testing.T) { testNoProfile(t, w) })
	t.Run("OutboundDeny", func(t *testing.T) { testOutboundDeny(t, w) })
}

// testAntiSpoofing: a workload that sends from an address not its own is
// dropped on its host, also when the forged packet belongs to another
// workload's established flow; its own address works.
func testAntiSpoofing(t *testing.T, w *walkthrough.World) {
	ctx := e2etest.Ctx(t, 2*time.Minute)
	w1, w2, w3 := w.Workloads["worker-1"], w.Workloads["worker-2"], w.Workloads["worker-3"]
	const n = 5
	ctr := e2etest.NewUDPCounter(t, w3.Netns, "0.0.0.0:7777")
	e2etest.ListenTCP(t, w3.Netns, "0.0.0.0:8080")
	flowSrc, dst := e2etest.AP(w1.IP, 5555), e2etest.AP(w3.IP, 7777)

	// The proper source: worker-1 and worker-3 share PROF_1. This also
	// makes worker-1:5555 <-> worker-3:7777 an established flow.
	e2etest.WaitFor(t, 15*time.Second, "worker-3 receives UDP from worker-1's own address", func() (bool, string) {
		if err := e2etest.SendUDP(w1.Netns, flowSrc, dst, "proper", 1); err != nil {
			return false, err.Error()
		}
		time.Sleep(100 * time.Millisecond)
		return ctr.Count("proper") > 0, fmt.Sprint(ctr.Count("proper"), " received")
	})
	if err := e2etest.Opens(ctx, w1.Netns, w1.IP, e2etest.AP(w3.IP, 8080)); err != nil {
		t.Fatalf("worker-1 -> worker-3 tcp from its own address: %v", err)
	}

	// A second address inside worker-1's namespace, in the pool but not its own.
	bogus := netip.MustParseAddr("192.168.100.77")
	if _, err := w1.Netns.Run(ctx, "ip", "addr", "add", bogus.String()+"/32", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	defer w1.Netns.Run(context.Background(), "ip", "addr", "del", bogus.String()+"/32", "dev", "eth0")
	if err := e2etest.SendUDP(w1.Netns, e2etest.AP(bogus, 5555), dst, "spoofed", n); err != nil {
		t.Fatal(err)
	}
	spoofPings := e2etest.PingReplies(ctx, w1.Netns, bogus, w3.IP, n)
	if err := e2etest.Blocked(ctx, w1.Netns, bogus, e2etest.AP(w3.IP, 8080)); err != nil {
		t.Errorf("worker-1 -> worker-3 tcp from %s (not its address): %v", bogus, err)
	}
	ownPings := e2etest.PingReplies(ctx, w1.Netns, w1.IP, w3.IP, n)

	// worker-2 (other profile, same host) forges worker-1's address and
	// port: conntrack takes it for worker-1's established flow to worker-3.
	if _, err := w2.Netns.Run(ctx, "ip", "addr", "add", w1.IP.String()+"/32", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	defer w2.Netns.Run(context.Background(), "ip", "addr", "del", w1.IP.String()+"/32", "dev", "eth0")
	if err := e2etest.SendUDP(w2.Netns, flowSrc, dst, "injected", n); err != nil {
		t.Fatal(err)
	}
	// The real flow still passes afterwards.
	if err := e2etest.SendUDP(w1.Netns, flowSrc, dst, "proper-after", n); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)

	spoofed, injected, after := ctr.Count("spoofed"), ctr.Count("injected"), ctr.Count("proper-after")
	t.Logf("FIGURE: anti-spoofing: at worker-3, datagrams from a foreign source %d/%d, forged into an established flow %d/%d, "+
		"from the proper source %d/%d; ping replies from a foreign source %d/%d, from its own %d/%d",
		spoofed, n, injected, n, after, n, spoofPings, n, ownPings, n)
	if spoofed != 0 || spoofPings != 0 {
		t.Errorf("packets from a foreign source address reached worker-3: %d datagrams, %d ping replies", spoofed, spoofPings)
	}
	if injected != 0 {
		t.Errorf("worker-2 injected %d datagrams into worker-1's established flow with a forged source", injected)
	}
	if after != n || ownPings != n {
		t.Errorf("the proper source did not get through: %d/%d datagrams, %d/%d pings", after, n, ownPings, n)
	}
}

// testHostServices: a workload reaches none of its host's services (the
// agent's BGP port, etcd, any listener) by default; with the node setting
// --workload-to-host=policy, a profile outbound rule opens exactly one.
func testHostServices(t *testing.T, w *walkthrough.World) {
	ctx := e2etest.Ctx(t, 3*time.Minute)
	h1 := w.Hosts[0]
	w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]
	e2etest.ListenTCP(t, h1.Netns, "0.0.0.0:8099")
	hostIP := h1.Addr()
	services := map[string]netip.AddrPort{
		"BGP (calico-node)": e2etest.AP(hostIP, 179),
		"etcd":              e2etest.AP(hostIP, 2379),
		"a TCP listener":    e2etest.AP(hostIP, 8099),
	}
	// Each service answers on the host itself: a block below is our policy.
	for name, s := range services {
		if err := e2etest.DialTCP(ctx, h1.Netns, netip.Addr{}, s, 2*time.Second); err != nil {
			t.Fatalf("%s at %s does not answer on host1 itself: %v", name, s, err)
		}
	}
	reached := 0
	for name, s := range services {
		if err := e2etest.Blocked(ctx, w1.Netns, netip.Addr{}, s); err != nil {
			reached++
			t.Errorf("worker-1 -> its host's %s %s: %v", name, s, err)
		}
	}
	pings := e2etest.PingReplies(ctx, w1.Netns, netip.Addr{}, hostIP, 3)
	if pings != 0 {
		t.Errorf("worker-1 pinged its host: %d/3 replies", pings)
	}
	t.Logf("FIGURE: host services: worker-1 reached %d/%d of its host's TCP services (BGP 179, etcd 2379, tcp 8099) and got %d/3 ping replies; host1 itself reaches %d/%d",
		reached, len(services), pings, len(services), len(services))

	// Opening one service: the node setting hands host-bound traffic to the
	// workload's outbound rules; PROF_1 then allows tcp 8099 to the host
	// and denies the rest of the host.
	ctl(t, ctx, w, h1, "node", "stop")
	if err := startNode(ctx, w, h1, "--workload-to-host=policy"); err != nil {
		t.Fatal(err)
	}
	ctl(t, ctx, w, h1, "profile", "PROF_1", "rule", "add", "outbound", "--at=1", "allow", "tcp", "to", "ports", "8099", "cidr", hostIP.String()+"/32")
	ctl(t, ctx, w, h1, "profile", "PROF_1", "rule", "add", "outbound", "--at=2", "deny", "to", "cidr", hostIP.String()+"/32")
	restore := func() {
		ctx := context.Background()
		w.Ctl(ctx, h1, "profile", "PROF_1", "rule", "remove", "outbound", "--at=1")
		w.Ctl(ctx, h1, "profile", "PROF_1", "rule", "remove", "outbound", "--at=1")
		w.Ctl(ctx, h1, "node", "stop")
		if err := startNode(ctx, w, h1); err != nil {
			t.Errorf("restarting host1's node with default settings: %v", err)
		}
	}
	defer func() {
		if restore != nil {
			restore()
		}
	}()
	if err := e2etest.Opens(ctx, w1.Netns, netip.Addr{}, services["a TCP listener"]); err != nil {
		t.Errorf("worker-1 -> host tcp 8099 with a rule allowing it: %v", err)
	}
	for _, name := range []string{"BGP (calico-node)", "etcd"} {
		if err := e2etest.BecomesBlocked(ctx, w1.Netns, services[name]); err != nil {
			t.Errorf("worker-1 -> its host's %s with the deny rule: %v", name, err)
		}
	}
	// The same rules guard host1 from workloads on other hosts too.
	if err := e2etest.BecomesBlocked(ctx, w3.Netns, services["etcd"]); err != nil {
		t.Errorf("worker-3 (host2) -> host1's etcd with the deny rule: %v", err)
	}
	restore()
	restore = nil
	if err := e2etest.BecomesBlocked(ctx, w1.Netns, services["a TCP listener"]); err != nil {
		t.Errorf("worker-1 -> host tcp 8099 after the setting was removed: %v", err)
	}
}

// testNoProfile: a workload in no profile reaches nothing and is reached by
// nothing; the same paths open once it joins a profile.
func testNoProfile(t *testing.T, w *walkthrough.World) {
	ctx := e2etest.Ctx(t, 3*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]
	w4, err := w.AddWorkload(ctx, h2, "worker-4", "auto")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		w.Ctl(context.Background(), h2, "container", "remove", "worker-4")
		delete(w.Workloads, "worker-4")
	}()
	for _, ns := range []*lab.Netns{w1.Netns, w3.Netns, w4.Netns} {
		if ok, _ := ns.Listening(8080); !ok {
			e2etest.ListenTCP(t, ns, "0.0.0.0:8080")
		}
	}
	if ok, _ := w.Outside.Netns.Listening(8080); !ok {
		e2etest.ListenTCP(t, w.Outside.Netns, "0.0.0.0:8080")
	}
	// Host1 has learned worker-4's route: a failure below is policy, not routing.
	e2etest.WaitFor(t, 15*time.Second, "host1 routes worker-4 via host2", func() (bool, string) {
		out, _ := h1.Run(ctx, "ip", "route", "get", w4.IP.String())
		return strings.Contains(out, "via "+h2.Addr().String()), out
	})
	paths := []struct {
		what string
		from *lab.Netns
		to   netip.AddrPort
	}{
		{"worker-4 -> worker-3 (same host)", w4.Netns, e2etest.AP(w3.IP, 8080)},
		{"worker-4 -> worker-1 (other host)", w4.Netns, e2etest.AP(w1.IP, 8080)},
		{"worker-4 -> the outside (nat-outgoing)", w4.Netns, e2etest.AP(w.Outside.IP, 8080)},
		{"worker-3 -> worker-4 (same host)", w3.Netns, e2etest.AP(w4.IP, 8080)},
		{"worker-1 -> worker-4 (other host)", w1.Netns, e2etest.AP(w4.IP, 8080)},
	}
	open := 0
	for _, p := range paths {
		if err := e2etest.BecomesBlocked(ctx, p.from, p.to); err != nil {
			open++
			t.Errorf("%s with worker-4 in no profile: %v", p.what, err)
		}
	}
	pings := e2etest.PingReplies(ctx, w4.Netns, netip.Addr{}, w3.IP, 3) + e2etest.PingReplies(ctx, w3.Netns, netip.Addr{}, w4.IP, 3)
	if pings != 0 {
		t.Errorf("pings between worker-4 (no profile) and worker-3: %d/6 replies", pings)
	}
	ctl(t, ctx, w, h2, "container", "worker-4", "profile", "append", "PROF_1")
	opened := 0
	for _, p := range paths {
		if err := e2etest.Opens(ctx, p.from, netip.Addr{}, p.to); err != nil {
			t.Errorf("%s after worker-4 joined PROF_1: %v (the no-profile check above proves nothing)", p.what, err)
		} else {
			opened++
		}
	}
	t.Logf("FIGURE: no profile: %d/%d TCP paths to and from worker-4 open and %d/6 ping replies while it is in no profile; %d/%d open once it joins PROF_1",
		open, len(paths), pings, opened, len(paths))
}

// testOutboundDeny: an outbound deny rule drops what it names and nothing else.
func testOutboundDeny(t *testing.T, w *walkthrough.World) {
	ctx := e2etest.Ctx(t, 2*time.Minute)
	h1 := w.Hosts[0]
	w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]
	out := w.Outside
	for _, ns := range []*lab.Netns{out.Netns, w3.Netns} {
		for _, port := range []int{80, 8080} {
			if ok, _ := ns.Listening(port); !ok {
				e2etest.ListenTCP(t, ns, fmt.Sprintf("0.0.0.0:%d", port))
			}
		}
	}
	if err := e2etest.Opens(ctx, w1.Netns, netip.Addr{}, e2etest.AP(out.IP, 80)); err != nil {
		t.Fatalf("worker-1 -> outside tcp 80 before any deny rule: %v", err)
	}
	ctl(t, ctx, w, h1, "profile", "PROF_1", "rule", "add", "outbound", "--at=1", "deny", "tcp", "to", "ports", "80")
	removed := false
	defer func() {
		if !removed {
			w.Ctl(context.Background(), h1, "profile", "PROF_1", "rule", "remove", "outbound", "--at=1")
		}
	}()
	denied, passed := 0, 0
	for _, dst := range []netip.AddrPort{e2etest.AP(out.IP, 80), e2etest.AP(w3.IP, 80)} {
		if err := e2etest.BecomesBlocked(ctx, w1.Netns, dst); err != nil {
			t.Errorf("worker-1 -> %s with `outbound deny tcp to ports 80`: %v", dst, err)
		} else {
			denied++
		}
	}
	for _, dst := range []netip.AddrPort{e2etest.AP(out.IP, 8080), e2etest.AP(w3.IP, 8080)} {
		if err := e2etest.Opens(ctx, w1.Netns, netip.Addr{}, dst); err != nil {
			t.Errorf("worker-1 -> %s (not denied): %v", dst, err)
		} else {
			passed++
		}
	}
	pings := e2etest.PingReplies(ctx, w1.Netns, netip.Addr{}, out.IP, 3)
	if pings == 0 {
		t.Error("worker-1 cannot ping the outside with only tcp 80 denied")
	}
	ctl(t, ctx, w, h1, "profile", "PROF_1", "rule", "remove", "outbound", "--at=1")
	removed = true
	if err := e2etest.Opens(ctx, w1.Netns, netip.Addr{}, e2etest.AP(out.IP, 80)); err != nil {
		t.Errorf("worker-1 -> outside tcp 80 after the deny rule was removed: %v", err)
	}
	t.Logf("FIGURE: outbound deny tcp 80: %d/2 port-80 connections dropped (outside, worker-3), %d/2 port-8080 connections passed, %d/3 pings to the outside",
		denied, passed, pings)
}
