package security

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// TestReusedAddressGetsNoOldFlow: a removed workload's address goes to the
// next workload, but its established flows must not. worker-3 (host2,
// PROF_1) holds a UDP flow with worker-1 (host1, PROF_1, which lets PROF_1
// in); worker-1 is removed and worker-5 gets its address with PROF_2,
// which does not let worker-3 in. worker-3 keeps sending on the old flow:
// the forward chain's first rule accepts established flows, so only the
// agent forgetting the old address's conntrack entries keeps those packets
// out of worker-5. worker-2 (PROF_2) reaching worker-5 on a new flow is the
// honest traffic. The same with host1's agent stopped while worker-1 goes
// (and worker-5 comes, or comes after the restart): `container remove` and
// `add` need no agent, and a starting agent must not trust the kernel's
// conntrack table. remoteReuseAttack does the same from the other end
// (the address changes hands on another host), including while host1's
// agent is down.
func TestReusedAddressGetsNoOldFlow(t *testing.T) {
	t.Run("AgentRunning", func(t *testing.T) { reuseAttack(t, false, false, false) })
	t.Run("RemovedAndReaddedWhileAgentDown", func(t *testing.T) { reuseAttack(t, true, true, false) })
	t.Run("RemovedWhileAgentDown", func(t *testing.T) { reuseAttack(t, true, false, false) })
	t.Run("AddressTakenFromWorkload", func(t *testing.T) { reuseAttack(t, false, false, true) })
	t.Run("ReaddedUnderSameNameInOnePass", readdAttack)
	t.Run("ReusedOnAnotherHost", func(t *testing.T) { remoteReuseAttack(t, remoteReuse{}) })
	t.Run("ReusedOnAnotherHostInItsBlock", func(t *testing.T) { remoteReuseAttack(t, remoteReuse{ownBlock: true}) })
	t.Run("RemovedOnAnotherHostWhileAgentDown", func(t *testing.T) { remoteReuseAttack(t, remoteReuse{down: true}) })
	t.Run("ChangedHandsElsewhereWhileAgentDown", func(t *testing.T) { remoteReuseAttack(t, remoteReuse{down: true, addWhileDown: true}) })
	t.Run("ChangedHandsElsewhereRevisionLost", func(t *testing.T) {
		remoteReuseAttack(t, remoteReuse{down: true, addWhileDown: true, corruptRev: true})
	})
}

// remoteReuse is how remoteReuseAttack swaps the address (see there).
type remoteReuse struct {
	down, addWhileDown, corruptRev bool
	// ownBlock: the old flow's end has an address of host2's own block
	// (as with down), so host1's agent serves its removal with an
	// endpoint pass (calc.Reendpoint), not a full one.
	ownBlock bool
}

// remoteReuseAttack: the reuse seen from the other end. worker-1 (host1,
// PROF_1) holds a UDP flow with worker-3 (host2, PROF_1); worker-3 is
// removed and worker-5 gets its address on host2 with PROF_2, which
// worker-1's PROF_1 does not let in. worker-5 sends from the old flow's
// address and port to worker-1's: host1's conntrack entry of the old flow
// would take it as a reply, past worker-1's policy, unless host1's agent
// forgets the flows of an address that leaves a workload on any host.
// worker-5 -> worker-2 (PROF_2 lets PROF_2 in) is the honest traffic.
// With down, the old flow's end is worker-6, added to host2 with an
// address of host2's own block (worker-3's is borrowed from host1's), and
// host1's agent is stopped while worker-6 goes and started before worker-5
// gets its address: the starting agent must forget the flows of every free
// address, not only its own blocks'. With addWhileDown, worker-5 gets the
// address before host1's agent starts: the address is held again, so only
// the record's revision, newer than the one host1's last agent saved,
// shows it changed hands. With ownBlock, worker-6 as with down, but the
// agent keeps running: the endpoint pass must flush as the full one does. With corruptRev, that saved revision is
// overwritten with garbage while the agent is down: the starting agent
// must then take every other host's address as changed.
func remoteReuseAttack(t *testing.T, m remoteReuse) {
	down, addWhileDown := m.down, m.addWhileDown
	w := world(t, walkthrough.Options{}, true)
	ctx := e2etest.Ctx(t, 5*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	w1, w2, w3 := w.Workloads["worker-1"], w.Workloads["worker-2"], w.Workloads["worker-3"]
	if down || m.ownBlock {
		w6, err := w.AddWorkload(ctx, h2, "worker-6", "auto")
		if err != nil {
			t.Fatal(err)
		}
		ctl(t, ctx, w, h2, "container", "worker-6", "profile", "append", "PROF_1")
		w3 = w6
	}
	addr := w3.IP
	routed(t, ctx, h1, addr, h2)
	src, peer := e2etest.AP(w1.IP, 5555), e2etest.AP(addr, 7777)
	ctr3 := e2etest.NewUDPCounter(t, w3.Netns, peer.String()) // echoes: the flow is established on host1
	e2etest.WaitFor(t, 30*time.Second, "worker-3 receives worker-1's flow", func() (bool, string) {
		if err := e2etest.SendUDP(w1.Netns, src, peer, "before", 2); err != nil {
			return false, err.Error()
		}
		return ctr3.Count("before") >= 2, fmt.Sprint(ctr3.Count("before"), " received")
	})
	if down {
		ctl(t, ctx, w, h1, "node", "stop")
		// What the starting agent goes by (a lab host's state dir).
		revFile := filepath.Join(w.StateDir, "lib", "calico", h1.Label, "conntrack-revision")
		b, err := os.ReadFile(revFile)
		if err != nil {
			t.Fatalf("host1's agent saved no datastore revision: %v", err)
		}
		t.Logf("host1's saved revision: %q", b)
		if m.corruptRev {
			if err := os.WriteFile(revFile, []byte("cluster=zz revision=\x00\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctl(t, ctx, w, h2, "container", "remove", w3.Name)
	var w5 *walkthrough.Workload
	add := func() {
		var err error
		if w5, err = w.AddWorkload(ctx, h2, "worker-5", addr.String()); err != nil {
			t.Fatal(err)
		}
		if w5.IP != addr {
			t.Fatalf("worker-5 got %s, not %s's %s", w5.IP, w3.Name, addr)
		}
		ctl(t, ctx, w, h2, "container", "worker-5", "profile", "append", "PROF_2")
	}
	if addWhileDown {
		add()
	}
	if down {
		if err := w.StartNode(ctx, h1); err != nil {
			t.Fatal(err)
		}
	}
	if w5 == nil {
		add()
	}
	ctr1 := e2etest.NewUDPCounter(t, w1.Netns, src.String())
	ctr2 := e2etest.NewUDPCounter(t, w2.Netns, "0.0.0.0:7777")
	honest := func(what string) {
		awaitHonest(t, what, w5.Netns, e2etest.AP(addr, 6000), e2etest.AP(w2.IP, 7777), ctr2)
	}
	honest("worker-5 -> worker-2 (PROF_2, new flow)")
	const n = 20
	if err := e2etest.SendUDP(w5.Netns, peer, src, "old-flow", n); err != nil {
		t.Fatal(err)
	}
	if err := e2etest.SendUDP(w5.Netns, e2etest.AP(addr, 7778), src, "new-flow", n); err != nil {
		t.Fatal(err)
	}
	// Sent after the attack, across the same hosts: once it has arrived,
	// so would have the attack's packets.
	honest("worker-5 -> worker-2 after the attack")
	old, fresh := ctr1.Count("old-flow"), ctr1.Count("new-flow")
	if down {
		// What host1's starting agent chose to flush, for the record.
		b, _ := os.ReadFile(filepath.Join(w.StateDir, "log", "calico", h1.Label, "calico-node.log"))
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "conntrack: ") {
				t.Logf("host1: %s", line)
			}
		}
	}
	t.Logf("FIGURE: worker-1 (PROF_1) received %d/%d packets from worker-5 (PROF_2, %s's old address on host2, agent down: %v, added while down: %v, saved revision corrupted: %v) on the old flow and %d/%d on a new one; honest worker-5 -> worker-2: %d received",
		old, n, w3.Name, down, addWhileDown, m.corruptRev, fresh, n, ctr2.Count("honest"))
	if old != 0 {
		t.Errorf("worker-1 received %d of %d packets from worker-5 on %s's old flow, which PROF_1 does not let in", old, n, w3.Name)
	}
	if fresh != 0 {
		t.Errorf("worker-1 received %d of %d packets from worker-5 on a new flow, which PROF_1 does not let in", fresh, n)
	}
}

// readdAttack: worker-1 is removed and added again under its name, with
// its address, while host1's agent is frozen (SIGSTOP), so that its next
// pass sees both at once: the same name gives the same host-side
// interface, and the address is on it before and after. The new worker-1
// has PROF_2 only; worker-3's old flow must not reach it.
func readdAttack(t *testing.T) {
	w := world(t, walkthrough.Options{}, true)
	ctx := e2etest.Ctx(t, 5*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	w1, w2, w3 := w.Workloads["worker-1"], w.Workloads["worker-2"], w.Workloads["worker-3"]
	addr := w1.IP
	routed(t, ctx, h2, addr, h1)
	oldSrc, dst := e2etest.AP(w3.IP, 5555), e2etest.AP(addr, 7777)
	ctr1 := e2etest.NewUDPCounter(t, w1.Netns, dst.String())
	e2etest.WaitFor(t, 30*time.Second, "worker-1 receives worker-3's flow (PROF_1 lets PROF_1 in)", func() (bool, string) {
		if err := e2etest.SendUDP(w3.Netns, oldSrc, dst, "before", 2); err != nil {
			return false, err.Error()
		}
		return ctr1.Count("before") >= 2, fmt.Sprint(ctr1.Count("before"), " received")
	})

	pidFile := filepath.Join(w.StateDir, "run", "calico", h1.Label, "calico-node.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", pidFile, err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP host1's calico-node (pid %d): %v", pid, err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Errorf("SIGCONT host1's calico-node (pid %d): %v", pid, err)
			}
		}
	}
	defer thaw()
	ctl(t, ctx, w, h1, "container", "remove", "worker-1")
	ns, err := w.Lab.AddWorkloadNetns(h1, "worker-1-again")
	if err != nil {
		t.Fatal(err)
	}
	ctl(t, ctx, w, h1, "container", "add", "worker-1", addr.String(), "--netns", ns.Path)
	ctl(t, ctx, w, h1, "container", "worker-1", "profile", "set", "PROF_2")
	thaw()

	ctr := e2etest.NewUDPCounter(t, ns, "0.0.0.0:7777")
	awaitHonest(t, "worker-2 -> new worker-1 (PROF_2, new flow)", w2.Netns, e2etest.AP(w2.IP, 6000), dst, ctr)
	const n = 20
	if err := e2etest.SendUDP(w3.Netns, oldSrc, dst, "old-flow", n); err != nil {
		t.Fatal(err)
	}
	awaitHonest(t, "worker-2 -> new worker-1 after the attack", w2.Netns, e2etest.AP(w2.IP, 6000), dst, ctr)
	old := ctr.Count("old-flow")
	t.Logf("FIGURE: the new worker-1 (PROF_2, re-added under its name with its address in one agent pass) received %d/%d packets of worker-3's old flow; honest worker-2 -> it: %d received",
		old, n, ctr.Count("honest"))
	if old != 0 {
		t.Errorf("the re-added worker-1 received %d of %d packets of the old worker-1's flow from worker-3, which PROF_2 does not let in", old, n)
	}
}

// reuseAttack runs the attack; with down, host1's agent is stopped before
// worker-1's removal and started after it (and, with addWhileDown, after
// worker-5's addition too). With second, the old flow goes to a second
// address of worker-1's, which `container worker-1 ip remove` takes away
// (worker-1 stays) before worker-5 gets it.
func reuseAttack(t *testing.T, down, addWhileDown, second bool) {
	w := world(t, walkthrough.Options{}, true)
	ctx := e2etest.Ctx(t, 5*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	w1, w2, w3 := w.Workloads["worker-1"], w.Workloads["worker-2"], w.Workloads["worker-3"]
	addr := w1.IP
	if second {
		addr = netip.MustParseAddr("192.168.100.50")
		ctl(t, ctx, w, h1, "container", "worker-1", "ip", "add", addr.String())
	}
	routed(t, ctx, h2, addr, h1)

	// The old flow: worker-3:5555 <-> worker-1:7777, echoed, so conntrack
	// on host1 holds it as established.
	oldSrc, dst := e2etest.AP(w3.IP, 5555), e2etest.AP(addr, 7777)
	// Bound to the address, so that the echo leaves from it (the reply
	// direction of the flow), not from worker-1's first address.
	ctr1 := e2etest.NewUDPCounter(t, w1.Netns, dst.String())
	e2etest.WaitFor(t, 30*time.Second, "worker-1 receives worker-3's flow (PROF_1 lets PROF_1 in)", func() (bool, string) {
		if err := e2etest.SendUDP(w3.Netns, oldSrc, dst, "before", 2); err != nil {
			return false, err.Error()
		}
		return ctr1.Count("before") >= 2, fmt.Sprint(ctr1.Count("before"), " received")
	})

	if down {
		ctl(t, ctx, w, h1, "node", "stop")
	}
	if second {
		ctl(t, ctx, w, h1, "container", "worker-1", "ip", "remove", addr.String())
	} else {
		ctl(t, ctx, w, h1, "container", "remove", "worker-1")
	}
	add := func() *walkthrough.Workload {
		w5, err := w.AddWorkload(ctx, h1, "worker-5", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		return w5
	}
	var w5 *walkthrough.Workload
	if addWhileDown {
		w5 = add()
	}
	if down {
		if err := w.StartNode(ctx, h1); err != nil {
			t.Fatal(err)
		}
	}
	if w5 == nil {
		w5 = add()
	}
	if w5.IP != addr {
		t.Fatalf("worker-5 got %s, not worker-1's %s", w5.IP, addr)
	}
	ctl(t, ctx, w, h1, "container", "worker-5", "profile", "append", "PROF_2")
	ctr5 := e2etest.NewUDPCounter(t, w5.Netns, "0.0.0.0:7777")
	// Honest: worker-2 (PROF_2) reaches worker-5 on a new flow, which also
	// shows host1's agent has applied worker-5's route and policy.
	awaitHonest(t, "worker-2 -> worker-5 (PROF_2, new flow)", w2.Netns, e2etest.AP(w2.IP, 6000), dst, ctr5)

	// The attack: worker-3 keeps sending on the old flow, and on a new one.
	const n = 20
	if err := e2etest.SendUDP(w3.Netns, oldSrc, dst, "old-flow", n); err != nil {
		t.Fatal(err)
	}
	if err := e2etest.SendUDP(w3.Netns, e2etest.AP(w3.IP, 5556), dst, "new-flow", n); err != nil {
		t.Fatal(err)
	}
	// Sent after the attack on the same host's path into worker-5: once it
	// has arrived, so would have the attack's packets.
	awaitHonest(t, "worker-2 -> worker-5 after the attack", w2.Netns, e2etest.AP(w2.IP, 6000), dst, ctr5)
	old, fresh := ctr5.Count("old-flow"), ctr5.Count("new-flow")
	t.Logf("FIGURE: worker-5 (PROF_2, worker-1's old address) received %d/%d packets of worker-3's old flow and %d/%d of a new one; honest worker-2 -> worker-5: %d received",
		old, n, fresh, n, ctr5.Count("honest"))
	if old != 0 {
		t.Errorf("worker-5 received %d of %d packets of worker-1's old flow from worker-3, which PROF_2 does not let in", old, n)
	}
	if fresh != 0 {
		t.Errorf("worker-5 received %d of %d packets of a new flow from worker-3, which PROF_2 does not let in", fresh, n)
	}
}

// awaitHonest sends one "honest" datagram from ns (src to dst) until ctr
// has counted one more than when it started: the allowed traffic beside an
// attack still arrives.
func awaitHonest(t *testing.T, what string, ns *lab.Netns, src, dst netip.AddrPort, ctr *e2etest.UDPCounter) {
	t.Helper()
	before := ctr.Count("honest")
	e2etest.WaitFor(t, 30*time.Second, what, func() (bool, string) {
		if err := e2etest.SendUDP(ns, src, dst, "honest", 1); err != nil {
			return false, err.Error()
		}
		time.Sleep(50 * time.Millisecond)
		return ctr.Count("honest") > before, fmt.Sprint(ctr.Count("honest")-before, " received")
	})
}
