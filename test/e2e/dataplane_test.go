package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// ourRoutes lists the routes calico-node installed on a host (protocol 80).
func ourRoutes(t *testing.T, ctx context.Context, h *lab.Host, family string) string {
	t.Helper()
	out, err := h.Run(ctx, "ip", family, "route", "show", "proto", "80")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	var last string
	for time.Now().Before(deadline) {
		var ok bool
		if ok, last = cond(); ok {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not true after %s; last seen:\n%s", what, d, last)
}

func reaches(ctx context.Context, w *walkthrough.World, from string, to netip.Addr, expect bool) bool {
	got, _ := walkthrough.Probe(ctx, w.Workloads[from].Netns, to, expect)
	return got
}

// TestRoutedTopologyNeedsVXLAN: hosts on two subnets behind a router that
// knows nothing of the pool. Without encapsulation workloads cannot reach
// across; with VXLAN CrossSubnet they can, and a third host on host 1's own
// subnet is still reached directly, without the tunnel.
func TestRoutedTopologyNeedsVXLAN(t *testing.T) {
	w := world(t, walkthrough.Options{Routed: true})
	ctx := ctxFor(t, 4*time.Minute)
	if err := w.Seed(ctx); err != nil {
		t.Fatal(err)
	}
	w3 := w.Workloads["worker-3"].IP
	if reaches(ctx, w, "worker-1", w3, false) {
		t.Fatal("worker-1 reached worker-3 across the router without encapsulation; the router should drop pool traffic")
	}
	h3, err := w.AddHost(ctx, "host3", "10.0.0.3/24")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.AddWorkload(ctx, h3, "worker-4", "192.168.100.200"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Ctl(ctx, h3, "container", "worker-4", "profile", "append", "PROF_1"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Ctl(ctx, w.Hosts[0], "pool", "add", walkthrough.Pool, "--vxlan-mode=cross-subnet"); err != nil {
		t.Fatal(err)
	}
	if !reaches(ctx, w, "worker-1", w3, true) {
		t.Fatalf("worker-1 cannot reach worker-3 across the router with VXLAN cross-subnet; host1 routes:\n%s", ourRoutes(t, ctx, w.Hosts[0], "-4"))
	}
	if !reaches(ctx, w, "worker-1", w.Workloads["worker-4"].IP, true) {
		t.Fatal("worker-1 cannot reach worker-4 on the same subnet")
	}
	routes := ourRoutes(t, ctx, w.Hosts[0], "-4")
	for _, line := range strings.Split(routes, "\n") {
		switch {
		case strings.Contains(line, "via 10.0.2.2") && !strings.Contains(line, "dev vxlan.calico"):
			t.Errorf("route to host2 (other subnet) is not through the tunnel: %s", line)
		case strings.Contains(line, "via 10.0.0.3") && strings.Contains(line, "vxlan"):
			t.Errorf("route to host3 (same subnet) goes through the tunnel: %s", line)
		}
	}
	if !strings.Contains(routes, "via 10.0.2.2 dev vxlan.calico") || !strings.Contains(routes, "via 10.0.0.3 dev eth0") {
		t.Errorf("host1 routes lack the expected tunnel and direct routes:\n%s", routes)
	}
}

// TestRemoveWorkloadWithdrawsRoute: removing a workload withdraws its route
// on the other host and releases its address.
func TestRemoveWorkloadWithdrawsRoute(t *testing.T) {
	w := world(t, walkthrough.Options{PoolArgs: []string{"--nat-outgoing"}})
	ctx := ctxFor(t, 3*time.Minute)
	if err := w.Seed(ctx); err != nil {
		t.Fatal(err)
	}
	h1, h2 := w.Hosts[0], w.Hosts[1]
	// worker-3's address lies in host1's block, so host2 announces it alone.
	waitFor(t, 10*time.Second, "host1 learns worker-3's route", func() (bool, string) {
		r := ourRoutes(t, ctx, h1, "-4")
		return strings.Contains(r, "192.168.100.3 via 10.0.0.2"), r
	})
	if _, err := w.Ctl(ctx, h2, "container", "remove", "worker-3"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "host1 drops worker-3's route", func() (bool, string) {
		r := ourRoutes(t, ctx, h1, "-4")
		return !strings.Contains(r, "192.168.100.3 "), r
	})
	out, err := w.Ctl(ctx, h1, "ipam", "info", "192.168.100.3", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var info struct{ Assigned bool }
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.Assigned {
		t.Errorf("192.168.100.3 still assigned after removal: %s (%v)", out, err)
	}
	links, _ := h2.Run(ctx, "ip", "-o", "link", "show")
	if strings.Contains(links, "cali") {
		t.Errorf("host2 still has a cali interface after removal:\n%s", links)
	}
}

// TestAgentRestartKeepsTraffic: a ping runs across hosts while both agents
// are stopped and started; routes and policy stay in the kernel meanwhile.
func TestAgentRestartKeepsTraffic(t *testing.T) {
	w := world(t, walkthrough.Options{PoolArgs: []string{"--nat-outgoing"}})
	ctx := ctxFor(t, 3*time.Minute)
	if err := w.Seed(ctx); err != nil {
		t.Fatal(err)
	}
	w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]
	if !reaches(ctx, w, "worker-1", w3.IP, true) {
		t.Fatal("worker-1 cannot reach worker-3 before the restart")
	}
	type result struct {
		r   lab.PingResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := lab.Ping(ctx, w1.Netns, w3.IP, 150, time.Second) // 150 x 0.2 s = 30 s
		done <- result{r, err}
	}()
	for round := 0; round < 2; round++ {
		for _, h := range w.Hosts {
			time.Sleep(time.Second)
			if _, err := w.Ctl(ctx, h, "node", "stop"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			if _, err := w.Ctl(ctx, h, "node", "--ip="+h.Addr().String(), "--name="+h.Label); err != nil {
				t.Fatal(err)
			}
		}
	}
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	lost := res.r.Sent - res.r.Received
	t.Logf("ping across 4 agent restarts: %d sent, %d lost", res.r.Sent, lost)
	if res.r.Sent < 100 || lost > 2 {
		t.Errorf("agent restarts disturbed traffic: %d of %d pings lost", lost, res.r.Sent)
	}
}

// TestBadInputLeavesNothing: failing workload commands leave no interface,
// endpoint or address behind.
func TestBadInputLeavesNothing(t *testing.T) {
	w := world(t, walkthrough.Options{PoolArgs: []string{"--nat-outgoing"}})
	ctx := ctxFor(t, 3*time.Minute)
	if err := w.Seed(ctx); err != nil {
		t.Fatal(err)
	}
	h1 := w.Hosts[0]
	spare, err := w.Lab.AddWorkloadNetns(h1, "spare")
	if err != nil {
		t.Fatal(err)
	}
	snapshot := func() string {
		eps, err1 := w.Ctl(ctx, h1, "endpoint", "show", "-o", "json")
		blocks, err2 := w.Ctl(ctx, h1, "ipam", "show", "-o", "json")
		links, err3 := h1.Run(ctx, "ip", "-o", "link", "show")
		if err1 != nil || err2 != nil || err3 != nil {
			t.Fatal(err1, err2, err3)
		}
		return eps + blocks + fmt.Sprint(strings.Count(links, "cali"))
	}
	before := snapshot()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"container", "add", "bad-1", "10.9.9.9", "--netns", spare.Path}, "not in any pool"},
		{[]string{"container", "add", "bad-2", "192.168.100.1", "--netns", spare.Path}, "already assigned"},
		{[]string{"container", "add", "bad-3", "192.168.100.77", "--netns", "/run/netns/does-not-exist"}, "does-not-exist"},
		{[]string{"container", "add", "worker-1", "192.168.100.78", "--netns", spare.Path}, "already has an endpoint"},
		{[]string{"container", "add", "bad 4", "auto", "--netns", spare.Path}, "bad container name"},
		{[]string{"container", "add", "bad-5", "300.1.1.1", "--netns", spare.Path}, "300.1.1.1"},
		{[]string{"container", "remove", "no-such"}, "unknown container"},
		{[]string{"container", "no-such", "profile", "append", "PROF_1"}, "unknown container"},
		{[]string{"container", "worker-1", "profile", "append", "NOPE"}, "unknown profile"},
		{[]string{"container", "worker-1", "ip", "add", "10.9.9.9"}, "not in any pool"},
		{[]string{"container", "worker-1", "ip", "add", "192.168.100.3"}, "already assigned"},
	}
	for _, c := range cases {
		out, err := w.Ctl(ctx, h1, c.args...)
		if err == nil {
			t.Errorf("calicoctl %s succeeded: %s", strings.Join(c.args, " "), out)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("calicoctl %s: error %q does not mention %q", strings.Join(c.args, " "), err, c.want)
		}
		if after := snapshot(); after != before {
			t.Errorf("calicoctl %s left state behind:\nbefore %s\nafter  %s", strings.Join(c.args, " "), before, after)
			before = after
		}
	}
}

// TestIPv6Workloads: dual-stack workloads reach each other across hosts over
// IPv6, routed by BGP with IPv6 next hops.
func TestIPv6Workloads(t *testing.T) {
	w := world(t, walkthrough.Options{IPv6: true})
	ctx := ctxFor(t, 3*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	for _, args := range [][]string{
		{"pool", "add", "192.168.100.0/24"},
		{"pool", "add", "fd80:24e2:f998:72d6::/64"},
		{"profile", "add", "V6"},
	} {
		if _, err := w.Ctl(ctx, h1, args...); err != nil {
			t.Fatal(err)
		}
	}
	var ips []netip.Addr
	for _, s := range []struct {
		h        *lab.Host
		name, v6 string
	}{{h1, "v6-a", "fd80:24e2:f998:72d6::10"}, {h2, "v6-b", "auto6"}} {
		ns, err := w.Lab.AddWorkloadNetns(s.h, s.name)
		if err != nil {
			t.Fatal(err)
		}
		out, err := w.Ctl(ctx, s.h, "container", "add", s.name, "auto", s.v6, "--netns", ns.Path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Ctl(ctx, s.h, "container", s.name, "profile", "append", "V6"); err != nil {
			t.Fatal(err)
		}
		// "IP a/32,b/128 added to ..."
		addrs := strings.Split(strings.Fields(out)[1], ",")
		if len(addrs) != 2 {
			t.Fatalf("want an IPv4 and an IPv6 address, got %q", out)
		}
		p := netip.MustParsePrefix(addrs[1])
		ips = append(ips, p.Addr())
		w.Workloads[s.name] = &walkthrough.Workload{Name: s.name, Host: s.h, Netns: ns, IP: p.Addr()}
	}
	if !reaches(ctx, w, "v6-a", ips[1], true) {
		t.Fatalf("v6-a cannot reach v6-b (%s) over IPv6; host1 IPv6 routes:\n%s", ips[1], ourRoutes(t, ctx, h1, "-6"))
	}
	if !reaches(ctx, w, "v6-b", ips[0], true) {
		t.Fatalf("v6-b cannot reach v6-a (%s) over IPv6", ips[0])
	}
	if r := ourRoutes(t, ctx, h1, "-6"); !strings.Contains(r, "via fd00::2") {
		t.Errorf("host1 has no IPv6 route via host2's address:\n%s", r)
	}

	// A workload added with IPv4 only (its namespace's IPv6 settings left
	// alone, so no DAD setting) that is given an IPv6 address later is
	// reachable over IPv6 at once.
	ns, err := w.Lab.AddWorkloadNetns(h2, "v4-later6")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Ctl(ctx, h2, "container", "add", "v4-later6", "auto", "--netns", ns.Path); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Ctl(ctx, h2, "container", "v4-later6", "profile", "append", "V6"); err != nil {
		t.Fatal(err)
	}
	late := netip.MustParseAddr("fd80:24e2:f998:72d6::20")
	if _, err := w.Ctl(ctx, h2, "container", "v4-later6", "ip", "add", late.String()); err != nil {
		t.Fatal(err)
	}
	w.Workloads["v4-later6"] = &walkthrough.Workload{Name: "v4-later6", Host: h2, Netns: ns, IP: late}
	if !reaches(ctx, w, "v6-a", late, true) {
		t.Fatalf("v6-a cannot reach v4-later6 at %s, added after the workload", late)
	}
}
