package fastpath

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/calico-go/calico/internal/dataplane/tcx"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// progsOn lists our programs attached to dev in h, with their IDs.
func progsOn(t *testing.T, h *lab.Host, dev string) map[string][]ebpf.ProgramID {
	t.Helper()
	out := map[string][]ebpf.ProgramID{}
	err := h.Do(func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		for _, p := range []string{progWL, progUplink} {
			ids, err := tcx.Attached(l.Attrs().Index, ebpf.AttachTCXIngress, p)
			if err != nil {
				return err
			}
			if len(ids) > 0 {
				out[p] = ids
			}
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
// takes its predecessor's down and says why; `node stop --cleanup` leaves
// none, and nf_conntrack_tcp_be_liberal as it was.
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
	if err := w.StartNode(ctx, h1.Host); err != nil {
		t.Fatal(err)
	}
	e2etest.WaitFor(t, 15*time.Second, "the restarted agent replaces the uplink program", func() (bool, string) {
		p := progsOn(t, h1.Host, h1.Iface)
		ids := p[progUplink]
		return len(ids) == 1 && ids[0] != up[progUplink][0], fmt.Sprintf("%v (before %v)", p, up)
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
	restart := func(setting string) {
		t.Helper()
		if _, err := w.Ctl(ctx, h2.Host, "node", "stop"); err != nil {
			t.Fatal(err)
		}
		t.Setenv("CALICO_FASTPATH", setting)
		if err := w.StartNode(ctx, h2.Host); err != nil {
			t.Fatal(err)
		}
	}
	restart("off")
	e2etest.WaitFor(t, 15*time.Second, "host2's agent with CALICO_FASTPATH=off takes the fast path down", func() (bool, string) {
		p := progsOn(t, h2.Host, h2.Iface)
		l := statusLine(h2)
		return len(p) == 0 && l == "eBPF fast path: off (CALICO_FASTPATH=off)", fmt.Sprintf("uplink programs %v, status %q", p, l)
	})
	if v := sysctl(t, h2.Netns, sysLiberal); v != "0" {
		t.Errorf("host2 with the fast path off: %s = %s, want the namespace's 0 back", sysLiberal, v)
	}

	// On again, then `node stop --cleanup`: nothing of the fast path stays.
	restart("")
	e2etest.WaitFor(t, 15*time.Second, "host2's fast path back on", func() (bool, string) {
		p := progsOn(t, h2.Host, h2.Iface)
		return len(p[progUplink]) == 1, fmt.Sprintf("uplink programs %v", p)
	})
	out, err := w.Ctl(ctx, h2.Host, "node", "stop", "--cleanup")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, progUplink) {
		t.Errorf("node stop --cleanup does not say it removed %s:\n%s", progUplink, out)
	}
	if p := progsOn(t, h2.Host, h2.Iface); len(p) != 0 {
		t.Errorf("host2 after node stop --cleanup: uplink programs %v", p)
	}
	if v := sysctl(t, h2.Netns, sysLiberal); v != "0" {
		t.Errorf("host2 after node stop --cleanup: %s = %s, want 0", sysLiberal, v)
	}
	_ = walkthrough.Pool
}
