package e2e

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

// Route reflectors, as the original Calico system tests had them: the
// full mesh off, nodes peer only with reflectors, which are nodes started
// with `calicoctl node --route-reflector` and need no configuration of
// their own.

// rrWorld is the walkthrough world whose nodes named in rrArgs get those
// extra `calicoctl node` flags. Every node runs without graceful restart,
// so a stopped node's sessions end with a Cease and its routes go at once:
// what survives a stopped reflector survives through another one.
func rrWorld(t *testing.T, rrArgs map[string][]string) *walkthrough.World {
	t.Helper()
	// Ctl passes DOCKER_HOST=none only when HostNodeArgs is unset; lab
	// hosts have no engine of their own either way.
	t.Setenv("DOCKER_HOST", "none")
	return world(t, walkthrough.Options{
		NodeArgs: []string{"--bgp-restart-time=-1s"},
		HostNodeArgs: func(_ context.Context, h *lab.Host) ([]string, error) {
			return rrArgs[h.Label], nil
		},
	})
}

func ctl(t *testing.T, ctx context.Context, w *walkthrough.World, h *lab.Host, args ...string) string {
	t.Helper()
	out, err := w.Ctl(ctx, h, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// addWorker adds a workload with an address of its host's own block, in
// PROF_1 (whose members reach each other).
func addWorker(t *testing.T, ctx context.Context, w *walkthrough.World, h *lab.Host, name string) *walkthrough.Workload {
	t.Helper()
	wl, err := w.AddWorkload(ctx, h, name, "auto")
	if err != nil {
		t.Fatal(err)
	}
	ctl(t, ctx, w, h, "container", name, "profile", "append", "PROF_1")
	return wl
}

// allReach waits until every workload named pings every other one.
func allReach(t *testing.T, ctx context.Context, w *walkthrough.World, names ...string) {
	t.Helper()
	for _, from := range names {
		for _, to := range names {
			if from == to {
				continue
			}
			dst := w.Workloads[to].IP
			waitFor(t, 90*time.Second, fmt.Sprintf("%s reaches %s (%s)", from, to, dst), func() (bool, string) {
				return reaches(ctx, w, from, dst, true), fmt.Sprintf("%s routes:\n%s\nstatus:\n%s",
					w.Workloads[from].Host.Label, ourRoutes(t, ctx, w.Workloads[from].Host, "-4"), status(t, ctx, w, w.Workloads[from].Host))
			})
		}
	}
}

// session finds a peer's row in `calicoctl status` output: its address
// first, its type (with the route reflection role, "global, client"), AS
// and state after.
func session(out string, peer netip.Addr) string {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == peer.String() {
			return l
		}
	}
	return ""
}

// hasSession says whether status shows an Established session to peer of
// the given type ("global, reflector").
func hasSession(out string, peer netip.Addr, typ string) bool {
	row := session(out, peer)
	return strings.Contains(row, " "+typ+" ") && strings.Contains(row, " Established ")
}

// routeVia says whether host h has calico's route to dst through gw.
func routeVia(t *testing.T, ctx context.Context, h *lab.Host, dst string, gw netip.Addr) bool {
	for _, l := range strings.Split(ourRoutes(t, ctx, h, "-4"), "\n") {
		if strings.HasPrefix(l, dst+" ") && strings.Contains(l, " via "+gw.String()+" ") {
			return true
		}
	}
	return false
}

// TestRouteReflector: three hosts, the mesh off, one reflector (which also
// hosts a workload) as every node's global peer. Every workload reaches
// every other; next hops stay the originating hosts; status shows the
// reflector's role and each session's type; the reflector has no session
// with itself; and the two other nodes have none with each other.
func TestRouteReflector(t *testing.T) {
	w := rrWorld(t, map[string][]string{"rr": {"--route-reflector"}})
	ctx := ctxFor(t, 6*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	ctl(t, ctx, w, h1, "bgp", "node-mesh", "off")
	ctl(t, ctx, w, h1, "bgp", "peer", "add", "10.0.0.3", "as", "64512")
	rr, err := w.AddHost(ctx, "rr", "10.0.0.3/24")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Seed(ctx); err != nil {
		t.Fatal(err)
	}
	addWorker(t, ctx, w, rr, "worker-4")
	allReach(t, ctx, w, "worker-1", "worker-3", "worker-4")

	// worker-3's address is borrowed from host1's block: host2 announces
	// it alone, and host1 routes it to host2 directly, not through the
	// reflector that passed the route on.
	if !routeVia(t, ctx, h1, w.Workloads["worker-3"].IP.String(), h2.Addr()) {
		t.Errorf("host1 does not route worker-3 via host2 %s:\n%s", h2.Addr(), ourRoutes(t, ctx, h1, "-4"))
	}
	waitFor(t, 30*time.Second, "status shows the reflector's role and the sessions' types", func() (bool, string) {
		s1, s2, sr := status(t, ctx, w, h1), status(t, ctx, w, h2), status(t, ctx, w, rr)
		all := "host1:\n" + s1 + "\nhost2:\n" + s2 + "\nrr:\n" + sr
		return hasSession(s1, rr.Addr(), "global, reflector") && session(s1, h2.Addr()) == "" &&
			hasSession(s2, rr.Addr(), "global, reflector") && session(s2, h1.Addr()) == "" &&
			strings.Contains(sr, "BGP role: route reflector, cluster ID 10.0.0.3\n") &&
			hasSession(sr, h1.Addr(), "global, client") && hasSession(sr, h2.Addr(), "global, client") &&
			session(sr, rr.Addr()) == "" && !strings.Contains(s1, "BGP role:"), all
	})
	t.Logf("rr's status:\n%s", status(t, ctx, w, rr))
}

// TestRouteReflectorCluster: four hosts in two reflector groups of two
// reflectors each (node peers; the mesh off); each group's reflectors
// share a cluster ID and list the other group's. Every workload reaches
// every other. A reflector stopped: the routes survive through the other
// reflector of its group, and packets keep flowing; both stopped: the
// group's hosts lose the other group's routes (so it was the second
// reflector that carried them).
func TestRouteReflectorCluster(t *testing.T) {
	rr := []string{"--route-reflector"}
	w := rrWorld(t, map[string][]string{
		"rra1": append(rr, "--cluster-id=1.0.0.1"), "rra2": append(rr, "--cluster-id=1.0.0.1"),
		"rrb1": append(rr, "--cluster-id=1.0.0.2"), "rrb2": append(rr, "--cluster-id=1.0.0.2"),
	})
	ctx := ctxFor(t, 8*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	ctl(t, ctx, w, h1, "bgp", "node-mesh", "off")
	hosts := map[string]*lab.Host{"host1": h1, "host2": h2}
	var err error
	for _, h := range []struct{ label, ip string }{
		{"host3", "10.0.0.3/24"}, {"host4", "10.0.0.4/24"},
		{"rra1", "10.0.0.11/24"}, {"rra2", "10.0.0.12/24"}, {"rrb1", "10.0.0.21/24"}, {"rrb2", "10.0.0.22/24"},
	} {
		if hosts[h.label], err = w.AddHost(ctx, h.label, h.ip); err != nil {
			t.Fatal(err)
		}
	}
	groupA, groupB := []string{"10.0.0.11", "10.0.0.12"}, []string{"10.0.0.21", "10.0.0.22"}
	peer := func(node string, addrs []string) {
		for _, a := range addrs {
			ctl(t, ctx, w, h1, "node", "bgp", "peer", "add", a, "as", "64512", "--name", node)
		}
	}
	peer("host1", groupA)
	peer("host2", groupA)
	peer("host3", groupB)
	peer("host4", groupB)
	// Group A's reflectors list group B's: non-client sessions (group B's
	// need not list them back).
	peer("rra1", groupB)
	peer("rra2", groupB)
	if err := w.Seed(ctx); err != nil {
		t.Fatal(err)
	}
	addWorker(t, ctx, w, hosts["host3"], "worker-5")
	addWorker(t, ctx, w, hosts["host4"], "worker-6")
	names := []string{"worker-1", "worker-3", "worker-5", "worker-6"}
	allReach(t, ctx, w, names...)

	a1, a2 := netip.MustParseAddr(groupA[0]), netip.MustParseAddr(groupA[1])
	b1 := netip.MustParseAddr(groupB[0])
	waitFor(t, 30*time.Second, "status shows the groups' sessions", func() (bool, string) {
		s1, sa1, sb1 := status(t, ctx, w, h1), status(t, ctx, w, hosts["rra1"]), status(t, ctx, w, hosts["rrb1"])
		all := "host1:\n" + s1 + "\nrra1:\n" + sa1 + "\nrrb1:\n" + sb1
		return hasSession(s1, a1, "node, reflector") && hasSession(s1, a2, "node, reflector") && session(s1, b1) == "" &&
			strings.Contains(sa1, "BGP role: route reflector, cluster ID 1.0.0.1\n") &&
			hasSession(sa1, h1.Addr(), "node, client") && hasSession(sa1, h2.Addr(), "node, client") &&
			hasSession(sa1, b1, "node, reflector") && session(sa1, a2) == "" &&
			hasSession(sb1, hosts["host3"].Addr(), "node, client") && hasSession(sb1, a1, "node, reflector"), all
	})

	// worker-5 is in host3's own block; host1 routes it to host3.
	w5 := w.Workloads["worker-5"]
	block5 := netip.PrefixFrom(w5.IP, 26).Masked().String()
	if !routeVia(t, ctx, h1, block5, hosts["host3"].Addr()) {
		t.Fatalf("host1 has no route to host3's block %s via host3:\n%s", block5, ourRoutes(t, ctx, h1, "-4"))
	}

	// Stop group A's first reflector. Without graceful restart its
	// clients drop what it sent them at once; the other reflector's
	// copies keep the routes, and packets keep flowing.
	// Pings from worker-1 to worker-5 run throughout (50, 0.2 s apart).
	const pings = 50
	replies := make(chan int, 1)
	go func() { replies <- e2etest.PingReplies(ctx, w.Workloads["worker-1"].Netns, netip.Addr{}, w5.IP, pings) }()
	time.Sleep(2 * time.Second)
	ctl(t, ctx, w, hosts["rra1"], "node", "stop")
	waitFor(t, 30*time.Second, "host1's session to rra1 down, to rra2 up", func() (bool, string) {
		s := status(t, ctx, w, h1)
		return !strings.Contains(session(s, a1), " Established ") && hasSession(s, a2, "node, reflector"), s
	})
	// Let the withdrawal settle before judging what survived.
	time.Sleep(3 * time.Second)
	t.Logf("host1 with rra1 stopped:\n%s", status(t, ctx, w, h1))
	if !routeVia(t, ctx, h1, block5, hosts["host3"].Addr()) {
		t.Errorf("host1 lost host3's block %s with one reflector of its group stopped:\n%s", block5, ourRoutes(t, ctx, h1, "-4"))
	}
	// The route never changed (same next hop, host3, through either
	// reflector): a lost ping or two is noise on a shared machine, a gap
	// would be many.
	if got := <-replies; got < pings-3 {
		t.Errorf("worker-1 -> worker-5 while rra1 stopped: %d of %d pings answered", got, pings)
	} else {
		t.Logf("FIGURE: worker-1 -> worker-5 across rra1's stop: %d of %d pings answered", got, pings)
	}
	allReach(t, ctx, w, names...)

	// Both of group A's reflectors stopped: host1 has nothing left to
	// learn from, so the route to host3 goes.
	ctl(t, ctx, w, hosts["rra2"], "node", "stop")
	waitFor(t, 30*time.Second, "host1 loses host3's block with both its reflectors stopped", func() (bool, string) {
		return !routeVia(t, ctx, h1, block5, hosts["host3"].Addr()), ourRoutes(t, ctx, h1, "-4")
	})
}
