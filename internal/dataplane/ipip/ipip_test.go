package ipip

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/ipip/ipiptest"
	"github.com/calico-go/calico/internal/dataplane/netdev"
	"github.com/calico-go/calico/internal/dataplane/tcx"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
)

// A host of the test lab: a node address, one workload and its block.
type tHost struct {
	*lab.Host
	m     *Manager
	rs    *netdev.RouteSyncer
	wl    *lab.Netns
	iface string
	wlIP  netip.Addr
	block netip.Prefix
}

func (h *tHost) ipip(peers ...*tHost) calc.IPIP {
	d := calc.IPIP{Enabled: true, Mode: calc.IPIPBPF, Device: calc.IPIPBPFDevice, LocalIP: h.Addr(), MTU: calc.IPIPMTU}
	for _, p := range peers {
		d.Routes = append(d.Routes, calc.IPIPRoute{Dst: p.block, Node: p.Addr()})
		d.Nodes = append(d.Nodes, p.Addr())
	}
	return d
}

func (h *tHost) routes(peers ...*tHost) []calc.Route {
	rs := []calc.Route{{Dst: netip.PrefixFrom(h.wlIP, 32), Kind: calc.RouteLocal, Dev: h.iface}}
	for _, p := range peers {
		rs = append(rs, calc.Route{Dst: p.block, Kind: calc.RouteVia, Gateway: p.Addr(), Dev: calc.IPIPBPFDevice, OnLink: true})
	}
	return rs
}

func (h *tHost) apply(t *testing.T, d calc.IPIP, routes []calc.Route) {
	t.Helper()
	if err := h.Do(func() error { return h.m.Apply(d) }); err != nil {
		t.Fatalf("%s: ipip apply: %v", h.Label, err)
	}
	if err := h.rs.Apply(routes); err != nil {
		t.Fatalf("%s: routes: %v", h.Label, err)
	}
}

func requireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: makes network namespaces and loads BPF programs; CI runs as root")
	}
}

// labWorld: host1 (10.0.0.1) and host2 (10.0.2.2) on two subnets behind a
// router that knows nothing of 192.168.100.0/24, a workload on each, and a
// stranger (10.0.0.66) on host1's subnet. Everything goes with the lab's
// namespaces; tc programs go with their interfaces.
func labWorld(t *testing.T) (h1, h2 *tHost, router, evil *lab.Netns) {
	requireRoot(t)
	l, err := lab.New("cipip")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	fab1, err := l.AddFabric("fab1", "10.0.0.0/24")
	if err != nil {
		t.Fatal(err)
	}
	fab2, err := l.AddFabric("fab2", "10.0.2.0/24")
	if err != nil {
		t.Fatal(err)
	}
	if router, err = l.AddRouter("router", map[*lab.Fabric]string{fab1: "10.0.0.253/24", fab2: "10.0.2.254/24"}); err != nil {
		t.Fatal(err)
	}
	mk := func(label string, f *lab.Fabric, ip, gw, wlIP, block string) *tHost {
		lh, err := l.AddHost(label, f, ip, gw)
		if err != nil {
			t.Fatal(err)
		}
		h := &tHost{Host: lh, m: New(), wlIP: netip.MustParseAddr(wlIP), block: netip.MustParsePrefix(block)}
		t.Cleanup(h.m.Close)
		if err := netdev.EnableForwarding(netdev.InNetns(lh.Path)); err != nil {
			t.Fatal(err)
		}
		if h.wl, err = l.AddWorkloadNetns(lh, "wl"); err != nil {
			t.Fatal(err)
		}
		h.iface = api.IfaceNameForID(label + "-wl")
		if _, err := netdev.AddWorkload(netdev.WorkloadSpec{NetnsPath: h.wl.Path, HostIface: h.iface, Addrs: []netip.Prefix{netip.PrefixFrom(h.wlIP, 32)}, MTU: calc.IPIPMTU}, netdev.InNetns(lh.Path)); err != nil {
			t.Fatal(err)
		}
		h.rs = netdev.NewRouteSyncer(netdev.InNetns(lh.Path))
		t.Cleanup(h.rs.Close)
		return h
	}
	h1 = mk("host1", fab1, "10.0.0.1/24", "10.0.0.253", "192.168.100.1", "192.168.100.0/26")
	h2 = mk("host2", fab2, "10.0.2.2/24", "10.0.2.254", "192.168.100.65", "192.168.100.64/26")
	evilHost, err := l.AddHost("evil", fab1, "10.0.0.66/24", "10.0.0.253")
	if err != nil {
		t.Fatal(err)
	}
	return h1, h2, router, evilHost.Netns
}

func stats(t *testing.T, h *tHost) map[string]uint64 {
	t.Helper()
	return h.m.Stats()
}

// attached lists the names of tcx programs on a device of h.
func attached(t *testing.T, h *tHost, dev string, typ ebpf.AttachType) (names []string, ids []ebpf.ProgramID) {
	t.Helper()
	err := h.Do(func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		for _, name := range []string{progDecap, progEncap} {
			got, err := tcx.Attached(l.Attrs().Index, typ, name)
			if err != nil {
				return err
			}
			for _, id := range got {
				names = append(names, name)
				ids = append(ids, id)
			}
		}
		return nil
	})
	if err != nil && !strings.Contains(err.Error(), "not found") {
		t.Fatal(err)
	}
	return names, ids
}

// TestEBPFIPIPAcrossRouter: workloads on two subnets reach each other only
// through the eBPF IPIP path; large TCP segments cross it intact; a stranger's
// protocol-4 packets never reach a workload, nor a node's with a forged inner
// source, while honest IPIP does; a second manager (a restarted agent)
// replaces the programs and keeps the maps; disabling removes everything.
func TestEBPFIPIPAcrossRouter(t *testing.T) {
	h1, h2, router, evil := labWorld(t)
	ctx := e2etest.Ctx(t, 2*time.Minute)
	// A strict reverse-path filter, as many distributions set it: the
	// manager must loosen the uplink, or decapsulated packets die.
	if err := h1.SetSysctl("net.ipv4.conf.all.rp_filter", "1"); err != nil {
		t.Fatal(err)
	}

	// Without encapsulation the router drops pool traffic.
	h1.apply(t, calc.IPIP{LocalIP: h1.Addr()}, []calc.Route{{Dst: netip.PrefixFrom(h1.wlIP, 32), Kind: calc.RouteLocal, Dev: h1.iface}, {Dst: h2.block, Kind: calc.RouteVia, Gateway: netip.MustParseAddr("10.0.0.253")}})
	h2.apply(t, calc.IPIP{LocalIP: h2.Addr()}, []calc.Route{{Dst: netip.PrefixFrom(h2.wlIP, 32), Kind: calc.RouteLocal, Dev: h2.iface}, {Dst: h1.block, Kind: calc.RouteVia, Gateway: netip.MustParseAddr("10.0.2.254")}})
	if n := e2etest.PingReplies(ctx, h1.wl, netip.Addr{}, h2.wlIP, 2); n != 0 {
		t.Fatalf("control: workloads reached each other through a router that knows no pool (%d replies)", n)
	}

	h1.apply(t, h1.ipip(h2), h1.routes(h2))
	h2.apply(t, h2.ipip(h1), h2.routes(h1))
	if v, _ := h1.Sysctl("net.ipv4.conf.eth0.rp_filter"); v != "2" {
		t.Errorf("host1 eth0 rp_filter = %q, want 2 (loose)", v)
	}
	if n := e2etest.PingReplies(ctx, h1.wl, netip.Addr{}, h2.wlIP, 3); n == 0 {
		t.Fatalf("workload on host1 cannot reach host2's over eBPF IPIP; host1 stats %v, host2 stats %v", stats(t, h1), stats(t, h2))
	}
	if names, _ := attached(t, h1, "eth0", ebpf.AttachTCXIngress); len(names) != 1 || names[0] != progDecap {
		t.Errorf("host1 eth0 ingress programs = %v, want [%s]", names, progDecap)
	}
	if names, _ := attached(t, h1, calc.IPIPBPFDevice, ebpf.AttachTCXEgress); len(names) != 1 || names[0] != progEncap {
		t.Errorf("host1 %s egress programs = %v, want [%s]", calc.IPIPBPFDevice, names, progEncap)
	}

	// Bulk TCP: it arrives, and as GSO/GRO superpackets, not 1500-byte frames.
	rxBytes, rxPkts := ifaceRx(t, h1.Host, "eth0")
	if _, err := lab.Iperf3(ctx, h1.wl, h2.wl, h1.wlIP, 2, 1); err != nil {
		t.Fatalf("iperf3 across eBPF IPIP: %v", err)
	}
	b2, p2 := ifaceRx(t, h1.Host, "eth0")
	avg := float64(b2-rxBytes) / float64(max(p2-rxPkts, 1))
	t.Logf("host1 eth0 average received packet during iperf3: %.0f bytes", avg)
	if avg < 3000 {
		t.Errorf("average packet %.0f bytes on host1's uplink: IPIP segments were split to the MTU (want GSO superpackets)", avg)
	}
	if s := stats(t, h1); s["encap_ok"] == 0 || s["decap_ok"] == 0 {
		t.Errorf("host1 counters %v: want encapsulated and decapsulated packets", s)
	}

	// The attacks. A UDP listener in host1's workload counts what arrives.
	port := uint16(7007)
	counter := e2etest.NewUDPCounter(t, h1.wl, netip.AddrPortFrom(h1.wlIP, port).String())
	dst := netip.AddrPortFrom(h1.wlIP, port)
	before := stats(t, h1)
	// 1. A stranger claims to be host2's workload.
	if err := ipiptest.Send(evil, h1.Addr(), ipiptest.InnerUDP(netip.AddrPortFrom(h2.wlIP, 5000), dst, "stranger"), 5); err != nil {
		t.Fatal(err)
	}
	// 2. A node forges an inner source outside its blocks.
	if err := ipiptest.Send(h2.Netns, h1.Addr(), ipiptest.InnerUDP(netip.AddrPortFrom(netip.MustParseAddr("192.168.100.2"), 5000), dst, "forged"), 5); err != nil {
		t.Fatal(err)
	}
	// 3. Honest: host2 with its own workload's source; this must arrive,
	// or the test could not tell a drop from a broken listener.
	if err := ipiptest.Send(h2.Netns, h1.Addr(), ipiptest.InnerUDP(netip.AddrPortFrom(h2.wlIP, 5000), dst, "honest"), 5); err != nil {
		t.Fatal(err)
	}
	e2etest.WaitFor(t, 5*time.Second, "honest IPIP from host2 arrives", func() (bool, string) {
		return counter.Count("honest") == 5, fmt.Sprintf("%d honest datagrams arrived", counter.Count("honest"))
	})
	if n := counter.Count("stranger"); n != 0 {
		t.Errorf("spoofed IPIP from a non-node address reached the workload %d times", n)
	}
	if n := counter.Count("forged"); n != 0 {
		t.Errorf("IPIP from a node with a forged inner source reached the workload %d times", n)
	}
	after := stats(t, h1)
	if after["drop_unknown_node"]-before["drop_unknown_node"] != 5 || after["drop_inner_source"]-before["drop_inner_source"] != 5 {
		t.Errorf("drop counters before %v, after %v: want 5 unknown-node and 5 inner-source drops", before, after)
	}

	// A restarted agent: a fresh manager, holding stale entries while it has
	// learned nothing. Programs are replaced in place, maps kept.
	_, oldIDs := attached(t, h1, "eth0", ebpf.AttachTCXIngress)
	h1.m.Close()
	h1.m = New()
	h1.m.KeepStale(true)
	h1.apply(t, h1.ipip(), h1.routes(h2))
	names, newIDs := attached(t, h1, "eth0", ebpf.AttachTCXIngress)
	if len(newIDs) != 1 || len(oldIDs) != 1 || newIDs[0] == oldIDs[0] || names[0] != progDecap {
		t.Errorf("after restart: ingress programs %v %v (before %v): want one, replaced", names, newIDs, oldIDs)
	}
	if n := e2etest.PingReplies(ctx, h1.wl, netip.Addr{}, h2.wlIP, 2); n == 0 {
		t.Errorf("after the restart with stale entries kept, workloads no longer reach each other")
	}
	h1.m.KeepStale(false)
	h1.apply(t, h1.ipip(h2), h1.routes(h2))

	// Disabled: programs detached, the device gone, so are its routes.
	h1.apply(t, calc.IPIP{LocalIP: h1.Addr()}, []calc.Route{{Dst: netip.PrefixFrom(h1.wlIP, 32), Kind: calc.RouteLocal, Dev: h1.iface}})
	if names, _ := attached(t, h1, "eth0", ebpf.AttachTCXIngress); len(names) != 0 {
		t.Errorf("after disabling, eth0 still has %v", names)
	}
	if _, err := h1.Run(ctx, "ip", "link", "show", calc.IPIPBPFDevice); err == nil {
		t.Errorf("after disabling, %s still exists", calc.IPIPBPFDevice)
	}
	_ = router
}

// TestApplyFailureIsReported: a manager that cannot set up IPIP says so
// through Support, in one line, so calc keeps IPIP blocks unreachable.
func TestApplyFailureIsReported(t *testing.T) {
	h1, _, _, _ := labWorld(t)
	if s := h1.m.Support(); !s.BPF {
		t.Fatalf("programs do not load here: %s", s.Problem)
	}
	d := h1.ipip()
	d.LocalIP = netip.MustParseAddr("10.9.9.9") // on no interface
	err := h1.Do(func() error { return h1.m.Apply(d) })
	if err == nil {
		t.Fatal("Apply with an address on no interface succeeded")
	}
	s := h1.m.Support()
	if s.BPF || s.Problem == "" || strings.Contains(s.Problem, "\n") {
		t.Errorf("support after a failure = %+v, want one problem line", s)
	}
	t.Logf("problem line: %s", s.Problem)
}

func ifaceRx(t *testing.T, h *lab.Host, dev string) (bytes, pkts uint64) {
	t.Helper()
	l, err := h.Netlink().LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	s := l.Attrs().Statistics
	return s.RxBytes, s.RxPackets
}
