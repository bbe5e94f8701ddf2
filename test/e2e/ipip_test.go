package e2e

import (
	"context"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/dataplane/ipip"
	"github.com/calico-go/calico/internal/dataplane/ipip/ipiptest"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// capture is a tcpdump running in a lab namespace until stopped.
type capture struct {
	p *lab.Proc
}

// startCapture runs `tcpdump -n -l -i any FILTER` in ns and waits until it
// listens. The lab stops it on Close; Lines stops it earlier.
func startCapture(t *testing.T, ns *lab.Netns, filter string) *capture {
	t.Helper()
	p, err := ns.Start("tcpdump", "-n", "-l", "-i", "any", filter)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	waitFor(t, 10*time.Second, "tcpdump listens in "+ns.Name, func() (bool, string) {
		return strings.Contains(p.Log(), "listening on"), p.Log()
	})
	return &capture{p}
}

// Lines stops the capture and returns the packets it printed.
func (c *capture) Lines() []string {
	c.p.Stop()
	var out []string
	for _, l := range strings.Split(c.p.Log(), "\n") {
		if strings.Contains(l, " IP ") {
			out = append(out, l)
		}
	}
	return out
}

func ipipWorld(t *testing.T, ctx context.Context, poolArgs ...string) *walkthrough.World {
	t.Helper()
	w := world(t, walkthrough.Options{Routed: true, PoolArgs: poolArgs})
	if err := w.Seed(ctx); err != nil {
		t.Fatal(err)
	}
	return w
}

// TestIPIPRoutedWorld: hosts on two subnets behind a router, an IPIP pool
// as the seed adds it. On this kernel (no ipip module) the eBPF path
// carries it: workers reach each other, the router sees only protocol 4
// between node addresses, never a workload address; with cross-subnet a
// third host on host 1's subnet is reached without encapsulation; and
// protocol-4 packets forged by a stranger never reach a workload while a
// node's honest ones do.
func TestIPIPRoutedWorld(t *testing.T) {
	ctx := ctxFor(t, 5*time.Minute)
	w := ipipWorld(t, ctx, "--ipip")
	h1, h2 := w.Hosts[0], w.Hosts[1]
	w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]

	tunnel := startCapture(t, w.Router, "ip proto 4")
	leaks := startCapture(t, w.Router, "net 192.168.100.0/24")
	if !reaches(ctx, w, "worker-1", w3.IP, true) || !reaches(ctx, w, "worker-3", w1.IP, true) {
		t.Fatalf("workers on two subnets do not reach each other over IPIP; host1 routes:\n%s\nhost1 status:\n%s", ourRoutes(t, ctx, h1, "-4"), status(t, ctx, w, h1))
	}
	if n := e2etest.PingReplies(ctx, w3.Netns, netip.Addr{}, w1.IP, 5); n < 4 {
		t.Errorf("worker-3 -> worker-1: %d of 5 pings answered", n)
	}
	encapsulated, leaked := tunnel.Lines(), leaks.Lines()
	if len(encapsulated) == 0 {
		t.Error("the router saw no protocol-4 packet while workers talked across it")
	}
	for _, l := range encapsulated {
		if !strings.Contains(l, "10.0.0.1 > 10.0.2.2") && !strings.Contains(l, "10.0.2.2 > 10.0.0.1") {
			t.Errorf("protocol-4 packet on the router not between the node addresses: %s", l)
		}
	}
	if len(leaked) > 0 {
		t.Errorf("workload addresses appeared outside the tunnel on the router (%d packets), first: %s", len(leaked), leaked[0])
	}
	t.Logf("router: %d protocol-4 packets, e.g. %s", len(encapsulated), first(encapsulated))

	// The node says which path it uses; workloads of the pool got MTU 1480.
	if st := status(t, ctx, w, h1); !strings.Contains(st, "IPIP: eBPF") {
		t.Errorf("host1 status does not name the eBPF IPIP path:\n%s", st)
	}
	if out, err := w1.Netns.Run(ctx, "ip", "-o", "link", "show", "eth0"); err != nil || !strings.Contains(out, "mtu 1480") {
		t.Errorf("worker-1 eth0 is not MTU 1480: %s %v", out, err)
	}

	// Spoofing, from a stranger on host1's subnet and from a node with an
	// inner source that is not its own; an honest packet from host2 shows
	// the listener would have counted them.
	evil, err := w.Lab.AddHost("evil", h1.Fabric, "10.0.0.66/24", "10.0.0.254")
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.AddrPortFrom(w1.IP, 7007)
	counter := e2etest.NewUDPCounter(t, w1.Netns, dst.String())
	src3 := netip.AddrPortFrom(w3.IP, 5000)
	if err := ipiptest.Send(evil.Netns, h1.Addr(), ipiptest.InnerUDP(src3, dst, "stranger"), 5); err != nil {
		t.Fatal(err)
	}
	if err := ipiptest.Send(h2.Netns, h1.Addr(), ipiptest.InnerUDP(netip.AddrPortFrom(w.Workloads["worker-2"].IP, 5000), dst, "forged"), 5); err != nil {
		t.Fatal(err)
	}
	if err := ipiptest.Send(h2.Netns, h1.Addr(), ipiptest.InnerUDP(src3, dst, "honest"), 5); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "host2's honest IPIP reaches worker-1", func() (bool, string) {
		return counter.Count("honest") == 5, "honest datagrams: " + strconv.Itoa(counter.Count("honest"))
	})
	if n := counter.Count("stranger"); n != 0 {
		t.Errorf("IPIP from a non-node address reached worker-1 %d times", n)
	}
	if n := counter.Count("forged"); n != 0 {
		t.Errorf("IPIP from host2 with worker-2's (host1's) address inside reached worker-1 %d times", n)
	}

	// Cross-subnet: a third host on host1's subnet is reached directly.
	h3, err := w.AddHost(ctx, "host3", "10.0.0.3/24")
	if err != nil {
		t.Fatal(err)
	}
	w4, err := w.AddWorkload(ctx, h3, "worker-4", "192.168.100.200")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Ctl(ctx, h3, "container", "worker-4", "profile", "append", "PROF_1"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Ctl(ctx, h1, "pool", "add", walkthrough.Pool, "--ipip-mode=cross-subnet"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "host1 routes host3's worker directly and host2's through the tunnel", func() (bool, string) {
		r := ourRoutes(t, ctx, h1, "-4")
		return strings.Contains(r, "via 10.0.2.2 dev ipip.calico onlink") && strings.Contains(r, "via 10.0.0.3 dev eth0") && !strings.Contains(r, "via 10.0.0.3 dev ipip"), r
	})
	sameSubnet := startCapture(t, h1.Netns, "ip proto 4 and host 10.0.0.3")
	plain := startCapture(t, h1.Netns, "host "+w4.IP.String()+" and icmp")
	tunnel = startCapture(t, w.Router, "ip proto 4")
	if !reaches(ctx, w, "worker-1", w4.IP, true) {
		t.Fatalf("worker-1 cannot reach worker-4 on its own subnet in cross-subnet mode; host1 routes:\n%s", ourRoutes(t, ctx, h1, "-4"))
	}
	if !reaches(ctx, w, "worker-1", w3.IP, true) {
		t.Fatalf("worker-1 cannot reach worker-3 across the router in cross-subnet mode")
	}
	if l := sameSubnet.Lines(); len(l) > 0 {
		t.Errorf("cross-subnet mode encapsulated traffic to a host on the same subnet: %s", l[0])
	}
	if l := plain.Lines(); len(l) == 0 {
		t.Error("no plain ICMP to worker-4 seen on host1: the capture proves nothing")
	}
	if l := tunnel.Lines(); len(l) == 0 {
		t.Error("cross-subnet mode did not encapsulate towards host2 on the other subnet")
	}
}

// TestIPIPAgentRestartUnderIperf3: one iperf3 connection runs worker-3 ->
// worker-1 across the router while both agents are stopped and started;
// the programs stay attached and their maps keep their routes, so the
// connection survives.
func TestIPIPAgentRestartUnderIperf3(t *testing.T) {
	ctx := ctxFor(t, 5*time.Minute)
	w := ipipWorld(t, ctx, "--ipip")
	w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]
	if !reaches(ctx, w, "worker-3", w1.IP, true) {
		t.Fatal("worker-3 cannot reach worker-1 before the restarts")
	}
	type result struct {
		r   lab.Iperf3Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := lab.Iperf3(ctx, w1.Netns, w3.Netns, w1.IP, 20, 1)
		done <- result{r, err}
	}()
	// TCP would ride out a short outage by retransmitting; pings every
	// 0.2 s show whether there was one.
	pinged := make(chan lab.PingResult, 1)
	go func() {
		r, _ := lab.Ping(ctx, w3.Netns, w1.IP, 90, time.Second)
		pinged <- r
	}()
	time.Sleep(2 * time.Second)
	for _, h := range w.Hosts {
		if _, err := w.Ctl(ctx, h, "node", "stop"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		if _, err := w.Ctl(ctx, h, "node", "--ip="+h.Addr().String(), "--name="+h.Label); err != nil {
			t.Fatal(err)
		}
	}
	res := <-done
	if res.err != nil {
		t.Fatalf("iperf3 across both agents' restarts: %v", res.err)
	}
	t.Logf("iperf3 across both agents' restarts: %.2f Gbit/s over %.1f s, %d retransmits", res.r.Gbps, res.r.Seconds, res.r.Retransmits)
	if res.r.Seconds < 19 {
		t.Errorf("iperf3 ran %.1f s of 20", res.r.Seconds)
	}
	p := <-pinged
	t.Logf("pings across the restarts: %d sent, %d answered", p.Sent, p.Received)
	if p.Sent < 80 || p.Sent-p.Received > 2 {
		t.Errorf("agent restarts interrupted IPIP traffic: %d of %d pings lost", p.Sent-p.Received, p.Sent)
	}
	// The restarted agents took over the programs: one of each, no more.
	for _, h := range w.Hosts {
		if got := attachedIPIP(t, h); !slices.Equal(got, []string{"ipip_decap/ingress", "ipip_encap/egress"}) {
			t.Errorf("%s: IPIP programs after the restart: %v", h.Label, got)
		}
	}
	if st := status(t, ctx, w, w.Hosts[0]); !strings.Contains(st, "IPIP: eBPF") {
		t.Errorf("host1 status after the restart:\n%s", st)
	}
}

// TestIPIPSeedWalkthrough: the seed's walkthrough with its pool as written
// (--ipip --nat-outgoing), every check as the demo runs it.
func TestIPIPSeedWalkthrough(t *testing.T) {
	w := world(t, walkthrough.Options{PoolArgs: []string{"--ipip", "--nat-outgoing"}})
	ctx := ctxFor(t, 3*time.Minute)
	if err := w.Seed(ctx); err != nil {
		t.Fatal(err)
	}
	checks, err := w.SeedChecks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range checks {
		if !c.OK() {
			t.Errorf("%s: %s -> %s: expected reach=%v, got %v (%s)", c.What, c.From, c.To, c.Expect, c.Got, c.Detail)
		}
	}
	h1 := w.Hosts[0]
	if r := ourRoutes(t, ctx, h1, "-4"); !strings.Contains(r, "dev ipip.calico onlink") {
		t.Errorf("host1 does not route host2's worker through ipip.calico:\n%s", r)
	}
	if got := attachedIPIP(t, h1); len(got) == 0 {
		t.Fatal("host1 has no IPIP program attached while an IPIP pool carries traffic")
	}
	// node stop --cleanup leaves no program on the uplink and no device.
	out, err := w.Ctl(ctx, h1, "node", "stop", "--cleanup")
	if err != nil {
		t.Fatalf("node stop --cleanup: %v: %s", err, out)
	}
	if got := attachedIPIP(t, h1); len(got) != 0 {
		t.Errorf("after node stop --cleanup host1 still has IPIP programs attached: %v\n%s", got, out)
	}
	if links, _ := h1.Run(ctx, "ip", "-o", "link", "show"); strings.Contains(links, "ipip.calico") {
		t.Errorf("after node stop --cleanup host1 still has ipip.calico:\n%s", links)
	}
}

// TestIPIPPoolRemovedCleansUp: without an IPIP pool no program, device or
// route of the eBPF path is left.
func TestIPIPPoolRemovedCleansUp(t *testing.T) {
	ctx := ctxFor(t, 3*time.Minute)
	w := ipipWorld(t, ctx, "--ipip")
	h1 := w.Hosts[0]
	if !reaches(ctx, w, "worker-1", w.Workloads["worker-3"].IP, true) {
		t.Fatal("worker-1 cannot reach worker-3 over IPIP")
	}
	if _, err := w.Ctl(ctx, h1, "pool", "add", walkthrough.Pool, "--vxlan"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "host1 drops ipip.calico and its programs", func() (bool, string) {
		links, _ := h1.Run(ctx, "ip", "-o", "link", "show")
		st := status(t, ctx, w, h1)
		return !strings.Contains(links, "ipip.calico") && !strings.Contains(st, "IPIP:"), links + st
	})
	if !reaches(ctx, w, "worker-1", w.Workloads["worker-3"].IP, true) {
		t.Fatal("worker-1 cannot reach worker-3 after switching the pool to VXLAN")
	}
	if got := attachedIPIP(t, h1); len(got) != 0 {
		t.Errorf("host1 still has IPIP programs attached: %v", got)
	}
}

func status(t *testing.T, ctx context.Context, w *walkthrough.World, h *lab.Host) string {
	t.Helper()
	out, err := w.Ctl(ctx, h, "status")
	if err != nil {
		return err.Error()
	}
	return out
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// attachedIPIP lists the IPIP programs on h's devices eth0 and ipip.calico.
func attachedIPIP(t *testing.T, h *lab.Host) []string {
	t.Helper()
	var out []string
	err := h.Do(func() error {
		for _, dev := range []string{"eth0", "ipip.calico"} {
			got, err := ipip.Attached(dev)
			if err != nil && dev == "eth0" {
				return err
			}
			out = append(out, got...)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// TestIPIPUnavailableIsUnreachable: a host where IPIP cannot work (here:
// the eBPF path turned off, as a program that fails to load leaves it)
// keeps the pool's remote blocks unreachable, says so in one status line,
// and never lets a workload packet out unencapsulated.
func TestIPIPUnavailableIsUnreachable(t *testing.T) {
	ctx := ctxFor(t, 4*time.Minute)
	w := ipipWorld(t, ctx, "--ipip")
	h1 := w.Hosts[0]
	w3 := w.Workloads["worker-3"]
	if _, err := w.Ctl(ctx, h1, "node", "stop"); err != nil {
		t.Fatal(err)
	}
	// Restart host1's agent as Ctl would, with the eBPF path off.
	if out, err := h1.Run(ctx, "env", "ETCD_AUTHORITY="+w.Etcd, "CALICO_NODENAME="+h1.Label, "CALICO_STATE_DIR="+w.StateDir,
		"DOCKER_HOST=none", "CALICO_IPIP_EBPF=off", e2etest.BinDir+"/calicoctl", "node", "--ip="+h1.Addr().String(), "--name="+h1.Label); err != nil {
		t.Fatalf("restart host1 with the eBPF path off: %v: %s", err, out)
	}
	waitFor(t, 90*time.Second, "host1 routes worker-3 as unreachable, reports one problem and removes the eBPF path", func() (bool, string) {
		r := ourRoutes(t, ctx, h1, "-4")
		st := status(t, ctx, w, h1)
		links, _ := h1.Run(ctx, "ip", "-o", "link", "show")
		return strings.Contains(r, "unreachable "+w3.IP.String()) && strings.Count(st, "problem: ") == 1 &&
			strings.Contains(st, "CALICO_IPIP_EBPF=off") && !strings.Contains(st, "IPIP: ") && !strings.Contains(links, "ipip.calico"), r + st
	})
	if got := attachedIPIP(t, h1); len(got) != 0 {
		t.Errorf("host1 keeps IPIP programs attached with the path off: %v", got)
	}
	leaks := startCapture(t, w.Router, "net 192.168.100.0/24")
	if reaches(ctx, w, "worker-1", w3.IP, false) {
		t.Error("worker-1 reached worker-3 with IPIP unavailable on host1")
	}
	if l := leaks.Lines(); len(l) > 0 {
		t.Errorf("workload packets left host1 unencapsulated: %s", l[0])
	}
	t.Logf("host1 status:\n%s", status(t, ctx, w, h1))
}
