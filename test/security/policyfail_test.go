package security

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/walkthrough"
)

// TestPolicyWriteFailsClosed: host 1's agent starts while every nftables
// write fails (CALICO_FAULT=policy-write-fails:FILE), with its workloads
// there and a VXLAN pool. Throughout, a namespace on host 1's fabric that
// is no node sends VXLAN datagrams with worker-3's address inside to a UDP
// service of host 1, and plain datagrams to worker-2, whose profile admits
// neither.
//
//   - Over the table an earlier run left (node stop without --cleanup),
//     the routes and the tunnel stay: worker-3 still reaches worker-1,
//     the old table still refuses the rogue, and status says why nothing
//     new is installed.
//   - With no table (node stop --cleanup), the agent installs no VXLAN
//     device and no route to a workload, and says so in status; none of
//     the rogue's datagrams arrive. Before the gate, the first pass went
//     on to the tunnel and the routes with no table at all.
//   - Once the fault is lifted (the file removed), the agent's retry
//     writes the table, and worker-3 reaches worker-1 again while the
//     rogue stays refused.
//   - A running agent whose table is deleted by hand while writes fail
//     takes its tunnel and workload routes away at its next pass, and
//     puts them back once a write succeeds.
func TestPolicyWriteFailsClosed(t *testing.T) {
	w := world(t, walkthrough.Options{Routed: true, PoolArgs: []string{"--vxlan"}}, true)
	ctx := e2etest.Ctx(t, 5*time.Minute)
	h1 := w.Hosts[0]
	w1, w2, w3 := w.Workloads["worker-1"], w.Workloads["worker-2"], w.Workloads["worker-3"]
	e2etest.ListenTCP(t, w1.Netns, ":8080")
	mustOpen(t, ctx, "worker-3 -> worker-1 (PROF_1) through the tunnel", w3, w1)
	rogue := newVXLANRogue(t, ctx, w)
	burst, toHost, toWorkload := rogue.burst, rogue.toHost, rogue.toWorkload
	faultFile := filepath.Join(t.TempDir(), "policy-write-fails")
	if err := os.WriteFile(faultFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	startFaulty := func() {
		t.Helper()
		if out, err := ctlEnv(ctx, w, h1, []string{"CALICO_FAULT=policy-write-fails:" + faultFile},
			"node", "--ip="+h1.Addr().String(), "--name="+h1.Label); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	// statusSays waits for host1's status to name the closed gate with
	// want; a missing line is an error, but the test goes on to show what
	// traffic does meanwhile.
	statusSays := func(want string) string {
		t.Helper()
		var st string
		for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
			st, _ = w.Ctl(ctx, h1, "status")
			for _, l := range strings.Split(st, "\n") {
				if strings.Contains(l, "cannot write table inet calico") && strings.Contains(l, want) {
					return strings.TrimSpace(l)
				}
			}
		}
		t.Errorf("calicoctl status does not say %q:\n%s", want, st)
		return ""
	}
	tunnel := func() bool { return linkExists(ctx, h1.Netns, "vxlan.calico") }
	workloadRoute := func() string {
		out, _ := h1.Run(ctx, "ip", "route", "get", w2.IP.String())
		if strings.Contains(out, " dev cali") {
			return strings.TrimSpace(out)
		}
		return ""
	}

	// An earlier run's table guards: everything it guarded stays.
	ctl(t, ctx, w, h1, "node", "stop")
	var holdLine string
	sent := burst("hold", func() {
		startFaulty()
		holdLine = statusSays("still guards this host")
		mustOpen(t, ctx, "worker-3 -> worker-1 over the earlier run's table", w3, w1)
	})
	t.Logf("status while writes fail over an intact table: %s", holdLine)
	if n1, n2 := toHost.Count("hold"), toWorkload.Count("hold"); n1 > 0 || n2 > 0 {
		t.Errorf("writes failing over an intact table: of %d forged datagrams, %d reached host1 through the tunnel and %d worker-2", sent, n1, n2)
	}
	if !tunnel() || workloadRoute() == "" {
		t.Errorf("writes failing over an intact table: the earlier run's tunnel (%v) or route to worker-2 (%q) was torn down", tunnel(), workloadRoute())
	}

	// No table at all: nothing leads in.
	ctl(t, ctx, w, h1, "node", "stop", "--cleanup")
	var closedLine string
	sent = burst("closed", func() {
		startFaulty()
		closedLine = statusSays("no table inet calico in the kernel")
	})
	host, wl := toHost.Count("closed"), toWorkload.Count("closed")
	t.Logf("FIGURE: host1's agent starting with no table while policy writes fail: of %d datagrams of each kind the rogue sent, %d reached host1 through the tunnel and %d worker-2; tunnel %v, route to worker-2 %q",
		sent, host, wl, tunnel(), workloadRoute())
	t.Logf("status: %s", closedLine)
	if host > 0 || wl > 0 {
		t.Errorf("no table and policy writes failing: %d forged VXLAN datagrams reached host1 and %d plain ones worker-2", host, wl)
	}
	if tunnel() {
		t.Errorf("no table and policy writes failing: host1 has a VXLAN device")
	}
	if r := workloadRoute(); r != "" {
		t.Errorf("no table and policy writes failing: host1 routes to worker-2: %s", r)
	}
	if err := e2etest.DialTCP(ctx, w3.Netns, netip.Addr{}, e2etest.AP(w1.IP, 8080), 2*time.Second); err == nil {
		t.Errorf("no table and policy writes failing: worker-3 reached worker-1")
	}

	// The fault lifted: the retry writes the table, then the rest follows.
	if err := os.Remove(faultFile); err != nil {
		t.Fatal(err)
	}
	e2etest.WaitFor(t, 60*time.Second, "worker-3 -> worker-1 after the fault is lifted", func() (bool, string) {
		err := e2etest.DialTCP(ctx, w3.Netns, netip.Addr{}, e2etest.AP(w1.IP, 8080), 2*time.Second)
		return err == nil, okOr(err)
	})
	if n := burst("lifted", func() {}); toHost.Count("lifted") > 0 || toWorkload.Count("lifted") > 0 {
		t.Errorf("after the fault: of %d forged datagrams, %d reached host1 and %d worker-2", n, toHost.Count("lifted"), toWorkload.Count("lifted"))
	}

	// A running agent whose table is deleted behind its back while writes
	// fail closes the gate at its next pass (a datastore change here).
	if err := os.WriteFile(faultFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := h1.Run(ctx, "nft", "delete", "table", "inet", "calico"); err != nil {
		t.Fatalf("delete host1's table: %v %s", err, out)
	}
	sent = burst("deleted", func() {
		ctl(t, ctx, w, h1, "profile", "add", "PROF_KICK")
		statusSays("no table inet calico in the kernel")
	})
	host, wl = toHost.Count("deleted"), toWorkload.Count("deleted")
	t.Logf("table deleted under a running agent while writes fail: of %d datagrams of each kind, %d reached host1 through the tunnel and %d worker-2; tunnel %v, route to worker-2 %q",
		sent, host, wl, tunnel(), workloadRoute())
	if tunnel() || workloadRoute() != "" {
		t.Errorf("table deleted under a running agent while writes fail: tunnel %v, route to worker-2 %q", tunnel(), workloadRoute())
	}
	// (Until that pass the kernel had no table: the agent learns of a
	// deletion by hand at its next pass or resync.) Once closed, nothing.
	if n := burst("closed-again", func() {}); toHost.Count("closed-again") > 0 || toWorkload.Count("closed-again") > 0 {
		t.Errorf("gate closed again: of %d forged datagrams, %d reached host1 and %d worker-2", n, toHost.Count("closed-again"), toWorkload.Count("closed-again"))
	}
	if err := os.Remove(faultFile); err != nil {
		t.Fatal(err)
	}
	e2etest.WaitFor(t, 60*time.Second, "worker-3 -> worker-1 after the second fault is lifted", func() (bool, string) {
		err := e2etest.DialTCP(ctx, w3.Netns, netip.Addr{}, e2etest.AP(w1.IP, 8080), 2*time.Second)
		return err == nil, okOr(err)
	})
}
