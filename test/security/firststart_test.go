package security

import (
	"testing"
	"time"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/walkthrough"
)

// TestFirstStartWritesPolicyFirst: host 1's agent starts where no table
// inet calico exists (after `node stop --cleanup`, or a boot) while its
// workloads are there, with a VXLAN pool. Throughout the start a
// namespace on host 1's fabric that is no node sends, every 0.2 ms, VXLAN
// datagrams whose inner packet comes from worker-3's address (host 2) and
// goes to a UDP service of host 1 itself, and plain datagrams to worker-2
// (the pool routed through host 1), whose profile admits neither. None may
// arrive. When the first pass made the VXLAN device before it wrote the
// table, the datagrams sent in between were decapsulated with no vxlan-in
// guard. worker-3's traffic to worker-1 (PROF_1) flows through the tunnel
// once the agent is up.
func TestFirstStartWritesPolicyFirst(t *testing.T) {
	w := world(t, walkthrough.Options{Routed: true, PoolArgs: []string{"--vxlan"}}, true)
	ctx := e2etest.Ctx(t, 4*time.Minute)
	h1 := w.Hosts[0]
	w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]
	e2etest.ListenTCP(t, w1.Netns, ":8080")
	mustOpen(t, ctx, "worker-3 -> worker-1 (PROF_1) through the tunnel", w3, w1)
	rogue := newVXLANRogue(t, ctx, w)
	burst, toHost, toWorkload := rogue.burst, rogue.toHost, rogue.toWorkload

	// With the agent running, the guard and PROF_2 refuse the rogue.
	if n := burst("running", func() { time.Sleep(time.Second) }); n == 0 || toHost.Count("running") > 0 || toWorkload.Count("running") > 0 {
		t.Fatalf("agent running: of %d datagrams of each kind, %d reached host1 through the tunnel and %d worker-2",
			n, toHost.Count("running"), toWorkload.Count("running"))
	}

	ctl(t, ctx, w, h1, "node", "stop", "--cleanup")
	sent := burst("start", func() {
		ctl(t, ctx, w, h1, "node", "--ip="+h1.Addr().String(), "--name="+h1.Label)
		mustOpen(t, ctx, "worker-3 -> worker-1 (PROF_1) after host1's agent started", w3, w1)
	})
	host, wl := toHost.Count("start"), toWorkload.Count("start")
	t.Logf("FIGURE: host1's agent starting with no table: of %d datagrams of each kind the rogue sent meanwhile, %d reached host1 through the tunnel from worker-3's address and %d reached worker-2 (PROF_2 refuses it); worker-3 -> worker-1 flows", sent, host, wl)
	if host > 0 || wl > 0 {
		t.Errorf("while host1's agent started, %d forged VXLAN datagrams reached host1 and %d plain ones worker-2", host, wl)
	}
}
