package fastpath

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/calico-go/calico/internal/dataplane/tcx"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// progsOn lists our programs attached to dev in h, with their IDs (as
// ourProgs).
func progsOn(t *testing.T, h *lab.Host, dev string) map[string][]ebpf.ProgramID {
	t.Helper()
	out := map[string][]ebpf.ProgramID{}
	err := h.Do(func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		for p, ids := range ourProgs(l.Attrs().Index) {
			out[p] = ids
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s %s: %v", h.Label, dev, err)
	}
	return out
}

// TestAgentFastPath: calico-node, by default, attaches the programs to
// its workload interfaces and uplink and says so in `calicoctl status`;
// traffic takes the fast path; a restarted agent replaces the programs in
// place (attach before detach) and traffic goes on; the last endpoint's
// removal takes them away; an agent restarted with CALICO_FASTPATH=off
// takes its predecessor's down, says why, and puts
// nf_conntrack_tcp_be_liberal back (TestAgentFastPathCleanup: `node stop
// --cleanup`).
func TestAgentFastPath(t *testing.T) {
	t.Setenv("CALICO_FASTPATH", "") // calico-node's default (on); `calicoctl node` passes it on
	fw := newWorld(t, []wlSpec{{"fp-a1", 0, "192.168.100.1", true}, {"fp-b1", 1, "192.168.100.65", true}})
	ctx := e2etest.Ctx(t, 4*time.Minute)
	w := fw.w
	h1, h2 := fw.hosts[0], fw.hosts[1]
	a1, b1 := fw.wls["fp-a1"], fw.wls["fp-b1"]
	statusLine := func(h *fpHost) string {
		out, err := w.Ctl(ctx, h.Host, "status")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "eBPF fast path: ") {
				return l
			}
		}
		return ""
	}
	for _, h := range fw.hosts {
		e2etest.WaitFor(t, 15*time.Second, h.Label+" reports the fast path on", func() (bool, string) {
			l := statusLine(h)
			return strings.HasPrefix(l, "eBPF fast path: on"), l
		})
	}
	if p := progsOn(t, h1.Host, a1.iface); len(p[progWL]) != 1 {
		t.Errorf("host1 %s: programs %v, want one %s", a1.iface, p, progWL)
	}
	up := progsOn(t, h1.Host, h1.Iface)
	if len(up[progUplink]) != 1 {
		t.Errorf("host1 %s: programs %v, want one %s", h1.Iface, up, progUplink)
	}
	if _, err := lab.Iperf3(ctx, a1.Netns, b1.Netns, a1.IP, 2, 1); err != nil {
		t.Fatalf("iperf3 across hosts with the agents' fast path: %v", err)
	}

	// Restart host1's agent under a running flow: the programs are
	// replaced in place, the flow survives.
	stream := make(chan error, 1)
	go func() { _, err := lab.Iperf3(ctx, a1.Netns, b1.Netns, a1.IP, 6, 1); stream <- err }()
	time.Sleep(time.Second)
	if _, err := w.Ctl(ctx, h1.Host, "node", "stop"); err != nil {
		t.Fatal(err)
	}
	if p := progsOn(t, h1.Host, h1.Iface); len(p[progUplink]) != 1 {
		t.Errorf("host1 with its agent stopped: uplink programs %v, want them left in place", p)
	}
	// The stopped agent was of an earlier build: a1's fp_from_wl on tcx,
	// not as a tc filter. The new agent must take it over (the flow
	// survives) and leave only its filter.
	if err := h1.Do(func() error {
		l, err := netlink.LinkByName(a1.iface)
		if err != nil {
			return err
		}
		ids, err := tcx.ClsAttached(l.Attrs().Index, progWL)
		if err != nil || len(ids) != 1 {
			return fmt.Errorf("%s filters %v: %v", progWL, ids, err)
		}
		prog, err := ebpf.NewProgramFromID(ids[0])
		if err != nil {
			return err
		}
		defer prog.Close()
		if err := tcx.Attach(l.Attrs().Index, ebpf.AttachTCXIngress, progWL, prog, link.Tail()); err != nil {
			return err
		}
		return tcx.ClsDetach(l.Attrs().Index, progWL)
	}); err != nil {
		t.Fatalf("host1: put %s on tcx as an earlier build did: %v", progWL, err)
	}
	if err := w.StartNode(ctx, h1.Host); err != nil {
		t.Fatal(err)
	}
	e2etest.WaitFor(t, 15*time.Second, "the restarted agent replaces the uplink program", func() (bool, string) {
		p := progsOn(t, h1.Host, h1.Iface)
		ids := p[progUplink]
		return len(ids) == 1 && ids[0] != up[progUplink][0], fmt.Sprintf("%v (before %v)", p, up)
	})
	e2etest.WaitFor(t, 15*time.Second, "the restarted agent moves a1's program from tcx to its filter", func() (bool, string) {
		p := progsOn(t, h1.Host, a1.iface)
		return len(p[progWL]) == 1 && len(p) == 1, fmt.Sprint(p)
	})
	if err := <-stream; err != nil {
		t.Errorf("a flow across the agent's restart: %v", err)
	}

	// The last endpoint goes: so does the fast path.
	if _, err := w.Ctl(ctx, h1.Host, "container", "remove", "fp-a1"); err != nil {
		t.Fatal(err)
	}
	e2etest.WaitFor(t, 15*time.Second, "host1's fast path goes with its last endpoint", func() (bool, string) {
		p := progsOn(t, h1.Host, h1.Iface)
		return len(p) == 0 && statusLine(h1) == "eBPF fast path: off", fmt.Sprintf("uplink programs %v, status %q", p, statusLine(h1))
	})
	if l := statusLine(h2); !strings.HasPrefix(l, "eBPF fast path: on") {
		t.Errorf("host2, which still has an endpoint: %q", l)
	}
	if v := sysctl(t, h2.Netns, sysLiberal); v != "1" {
		t.Errorf("host2 with the fast path on: %s = %s, want 1", sysLiberal, v)
	}

	// The operator turns it off: the next agent takes the programs down
	// and puts the window check back.
	if _, err := w.Ctl(ctx, h2.Host, "node", "stop"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CALICO_FASTPATH", "off")
	if err := w.StartNode(ctx, h2.Host); err != nil {
		t.Fatal(err)
	}
	e2etest.WaitFor(t, 15*time.Second, "host2's agent with CALICO_FASTPATH=off takes the fast path down", func() (bool, string) {
		p := progsOn(t, h2.Host, h2.Iface)
		l := statusLine(h2)
		return len(p) == 0 && l == "eBPF fast path: off (CALICO_FASTPATH=off)", fmt.Sprintf("uplink programs %v, status %q", p, l)
	})
	if v := sysctl(t, h2.Netns, sysLiberal); v != "0" {
		t.Errorf("host2 with the fast path off: %s = %s, want the namespace's 0 back", sysLiberal, v)
	}

	_ = walkthrough.Pool
}

// TestAgentFastPathCleanup: `calicoctl node stop --cleanup` takes the fast
// path away with the rest: no program of ours on any interface, and
// nf_conntrack_tcp_be_liberal back to the operator's 0. Before, the
// programs stayed on the uplink and the workload interfaces (short-cutting
// established flows past whatever firewall the host got next, with maps
// nobody kept in step), and the window check stayed off.
func TestAgentFastPathCleanup(t *testing.T) {
	t.Setenv("CALICO_FASTPATH", "on") // `calicoctl node` passes it on to calico-node
	fw := newWorld(t, []wlSpec{{"fp-a1", 0, "192.168.100.1", true}, {"fp-b1", 1, "192.168.100.65", true}})
	ctx := e2etest.Ctx(t, 3*time.Minute)
	h1 := fw.hosts[0]
	a1, b1 := fw.wls["fp-a1"], fw.wls["fp-b1"]
	liberal := func() string {
		v, err := h1.Sysctl("net.netfilter.nf_conntrack_tcp_be_liberal")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	e2etest.WaitFor(t, 15*time.Second, "host1's agent attaches the fast path", func() (bool, string) {
		p := progsOn(t, h1.Host, h1.Iface)
		return len(p[progUplink]) == 1 && liberal() == "1", fmt.Sprintf("uplink %v, be_liberal %s", p, liberal())
	})
	if _, err := lab.Iperf3(ctx, a1.Netns, b1.Netns, a1.IP, 1, 1); err != nil {
		t.Fatalf("iperf3 across hosts with the fast path: %v", err)
	}
	out, err := fw.w.Ctl(ctx, h1.Host, "node", "stop", "--cleanup")
	if err != nil {
		t.Fatalf("node stop --cleanup: %v: %s", err, out)
	}
	t.Logf("node stop --cleanup:\n%s", out)
	for _, dev := range []string{h1.Iface, a1.iface} {
		if p := progsOn(t, h1.Host, dev); len(p) > 0 {
			t.Errorf("after node stop --cleanup host1 %s still has %v", dev, p)
		}
	}
	if v := liberal(); v != "0" {
		t.Errorf("after node stop --cleanup nf_conntrack_tcp_be_liberal = %s, want the operator's 0 back", v)
	}
}

// TestAgentFastPathGateClosed: the fast path never outlives the ruleset it
// leans on. host1's table is deleted by hand while every nftables write
// fails (CALICO_FAULT=policy-write-fails:FILE): the policy gate closes,
// and the programs come off the uplink and the workload interface with
// the routes (a program left there would carry established flows into
// workloads with no table to guard them, and keep maps nobody updates).
// Once writes work again, the table, the routes and the fast path come
// back, and traffic flows.
func TestAgentFastPathGateClosed(t *testing.T) {
	t.Setenv("CALICO_FASTPATH", "on")
	fault := filepath.Join(t.TempDir(), "policy-write-fails")
	t.Setenv("CALICO_FAULT", "policy-write-fails:"+fault) // inherited by calico-node; no file yet: writes work
	fw := newWorld(t, []wlSpec{{"fp-a1", 0, "192.168.100.1", true}, {"fp-b1", 1, "192.168.100.65", true}})
	ctx := e2etest.Ctx(t, 4*time.Minute)
	w := fw.w
	h1 := fw.hosts[0]
	a1, b1 := fw.wls["fp-a1"], fw.wls["fp-b1"]
	onBoth := func() (bool, string) {
		up, wl := progsOn(t, h1.Host, h1.Iface), progsOn(t, h1.Host, a1.iface)
		return len(up[progUplink]) == 1 && len(wl[progWL]) == 1, fmt.Sprintf("uplink %v, %s %v", up, a1.iface, wl)
	}
	e2etest.WaitFor(t, 15*time.Second, "host1's agent attaches the fast path", onBoth)
	if _, err := lab.Iperf3(ctx, a1.Netns, b1.Netns, a1.IP, 1, 1); err != nil {
		t.Fatalf("iperf3 with the fast path: %v", err)
	}

	if err := os.WriteFile(fault, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := h1.Run(ctx, "nft", "delete", "table", "inet", "calico"); err != nil {
		t.Fatalf("delete the table: %v %s", err, out)
	}
	// A change for the agent to apply: its write fails over no table.
	if _, err := w.Ctl(ctx, h1.Host, "profile", "add", "FP2"); err != nil {
		t.Fatal(err)
	}
	e2etest.WaitFor(t, 30*time.Second, "the gate closes and the fast path comes off host1", func() (bool, string) {
		up, wl := progsOn(t, h1.Host, h1.Iface), progsOn(t, h1.Host, a1.iface)
		return len(up) == 0 && len(wl) == 0, fmt.Sprintf("uplink %v, %s %v", up, a1.iface, wl)
	})

	if err := os.Remove(fault); err != nil {
		t.Fatal(err)
	}
	e2etest.WaitFor(t, 60*time.Second, "writes work again: the fast path is back", onBoth)
	e2etest.WaitFor(t, 30*time.Second, "a1 reaches b1 again", func() (bool, string) {
		return walkthrough.Probe(ctx, a1.Netns, b1.IP, true)
	})
}

// ourProgs lists our programs at ifindex's ingress in the calling thread's
// namespace: fp_from_uplink on tcx, fp_from_wl as a tc filter, and under
// "fp_from_wl on tcx" an earlier build's fp_from_wl, which must be gone.
func ourProgs(ifindex int) map[string][]ebpf.ProgramID {
	out := map[string][]ebpf.ProgramID{}
	if ids, _ := tcx.Attached(ifindex, ebpf.AttachTCXIngress, progUplink); len(ids) > 0 {
		out[progUplink] = ids
	}
	if ids, _ := tcx.ClsAttached(ifindex, progWL); len(ids) > 0 {
		out[progWL] = ids
	}
	if ids, _ := tcx.Attached(ifindex, ebpf.AttachTCXIngress, progWL); len(ids) > 0 {
		out[progWL+" on tcx"] = ids
	}
	return out
}
