package fastpath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/dataplane/tcx"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
)

// encapsulate wraps an inner IPv4 packet as node from would send it to
// node to over the pool's tunnel, and sends it n times out of ns (from's
// namespace, or anyone's: the outer source is whatever the sender claims).
type encapsulate func(ns *lab.Netns, from, to netip.Addr, inner []byte, n int) error

// sendIPIP sends inner in a hand-made IPIP packet (protocol 4).
func sendIPIP(ns *lab.Netns, from, to netip.Addr, inner []byte, n int) error {
	return sendRaw(ns, to, append(ipv4Header(from, to, syscall.IPPROTO_IPIP, len(inner)), inner...), n)
}

// sendVXLAN sends inner in a hand-made VXLAN datagram (the cluster's VNI,
// the VTEP MACs every host derives from the addresses) to port 4789.
func sendVXLAN(ns *lab.Netns, from, to netip.Addr, inner []byte, n int) error {
	dmac, err := net.ParseMAC(api.VTEPMAC(to))
	if err != nil {
		return err
	}
	smac, err := net.ParseMAC(api.VTEPMAC(from))
	if err != nil {
		return err
	}
	vni := uint32(api.VXLANVNI)
	msg := []byte{0x08, 0, 0, 0, byte(vni >> 16), byte(vni >> 8), byte(vni), 0}
	msg = append(append(append(msg, dmac...), smac...), 0x08, 0x00)
	msg = append(msg, inner...)
	return ns.Do(func() error {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(to, api.VXLANPort)))
		if err != nil {
			return err
		}
		defer c.Close()
		for i := 0; i < n; i++ {
			if _, err := c.Write(msg); err != nil {
				return err
			}
		}
		return nil
	})
}

// TestTunnelFastPath, on the real agents' ruleset with an IPIP pool (the
// eBPF encapsulation) and with a VXLAN pool (the kernel's vxlan device):
//
//   - honest bulk TCP across the tunnel delivers its bytes and takes the
//     fast path on both sides: into the tunnel on the sender (fwd_tunnel;
//     IPIP encapsulated by the fast path itself, not by ipip.calico's
//     ipip_encap) and, once decapsulated, straight into the workload on
//     the receiver (fwd_workload);
//   - an encapsulated packet from the other node whose inner source is a
//     workload of the receiving host, on that workload's established and
//     accepted flow (a tuple the fast path would forward), never reaches
//     the destination; nor does one from an address that is no node,
//     with an honest inner source; while the same hand-made packet from
//     the node with its own workload's source arrives (so the sniffer and
//     the crafted encapsulation work);
//   - a workload forging another workload's source on that one's
//     established flow through the tunnel is not fast-pathed
//     (pass_spoof) and never arrives;
//   - a workload policy never accepted (no profile) sends a SYN, which
//     nftables drops, then mid-stream segments: not fast-pathed
//     (pass_no_ct), and never arrive;
//   - turned off, nothing of the fast path stays on vxlan.calico.
func TestTunnelFastPath(t *testing.T) {
	for _, tc := range []struct {
		name, flag string
		send       encapsulate
	}{
		{"ipip", "--ipip", sendIPIP},
		{"vxlan", "--vxlan", sendVXLAN},
	} {
		t.Run(tc.name, func(t *testing.T) { testTunnelFastPath(t, tc.flag, tc.send) })
	}
}

func testTunnelFastPath(t *testing.T, poolFlag string, send encapsulate) {
	fw := newWorldPool(t, []wlSpec{
		{"fp-a1", 0, "192.168.100.1", true},
		{"fp-a2", 0, "192.168.100.2", true},
		{"fp-b1", 1, "192.168.100.65", true},
		{"fp-b2", 1, "192.168.100.66", true},  // the attacker: profiled, honest source
		{"fp-d1", 1, "192.168.100.67", false}, // no profile: policy denies all of it
	}, poolFlag)
	ctx := e2etest.Ctx(t, 5*time.Minute)
	h1, h2 := fw.hosts[0], fw.hosts[1]
	a1, a2, b1, b2, d1 := fw.wls["fp-a1"], fw.wls["fp-a2"], fw.wls["fp-b1"], fw.wls["fp-b2"], fw.wls["fp-d1"]
	fw.set(t, true)
	if poolFlag == "--vxlan" {
		for _, h := range fw.hosts {
			if p := progsOn(t, h.Host, api.VXLANDevice); len(p[progUplink]) != 1 {
				t.Fatalf("%s %s: programs %v, want one %s", h.Label, api.VXLANDevice, p, progUplink)
			}
		}
	}

	// Honest bulk TCP b1 -> a1 across the tunnel.
	s1, s2 := h1.m.Stats(), h2.m.Stats()
	var enc1, enc2 uint64
	if poolFlag == "--ipip" {
		enc1, enc2 = ipipEncapOK(t, h1.Host), ipipEncapOK(t, h2.Host)
	}
	got, err := lab.Iperf3(ctx, a1.Netns, b1.Netns, a1.IP, 2, 1)
	if err != nil {
		t.Fatalf("iperf3 across the tunnel with the fast path: %v", err)
	}
	if got.GB() <= 0 {
		t.Fatalf("iperf3 across the tunnel delivered nothing: %+v", got)
	}
	d1s, d2s := delta(s1, h1.m.Stats()), delta(s2, h2.m.Stats())
	t.Logf("honest bulk (%.2f GB): host1 %v, host2 %v", got.GB(), d1s, d2s)
	if d2s["fwd_tunnel"] == 0 || d1s["fwd_workload"] == 0 || d1s["fwd_tunnel"] == 0 || d2s["fwd_workload"] == 0 {
		t.Errorf("honest flow across the tunnel not fast-pathed both ways: host1 %v, host2 %v", d1s, d2s)
	}
	// Nor only mostly: a data packet the FIB test turns away goes the
	// normal way and arrives behind later ones. The helper's own MTU test
	// (tot_len 0) held the Ethernet header against ipip.calico, which has
	// none, and sent every full-size segment that was no GSO superpacket
	// the normal way: 1.6% of the sender's packets.
	if d2s["pass_fib"]*200 > d2s["fwd_tunnel"] {
		t.Errorf("sender host2 passed %d packets to the normal path at the FIB test against %d fast-pathed into the tunnel: want under 0.5%%", d2s["pass_fib"], d2s["fwd_tunnel"])
	}
	if poolFlag == "--ipip" {
		// The fast path encapsulates IPIP itself (fp_ipip_src): the
		// bytes arrived (ipip_decap on host1 takes apart only packets
		// whose outer source is a node and outer destination host1), and
		// next to nothing went through ipip.calico's ipip_encap (the
		// handshake and the FINs take the normal way).
		e1, e2 := ipipEncapOK(t, h1.Host)-enc1, ipipEncapOK(t, h2.Host)-enc2
		t.Logf("ipip_encap's encap_ok: host1 +%d, host2 +%d", e1, e2)
		if e2*10 > d2s["fwd_tunnel"] || e1*10 > d1s["fwd_tunnel"] {
			t.Errorf("fast-pathed IPIP went through ipip.calico: encap_ok +%d / +%d against fwd_tunnel %d / %d",
				e1, e2, d1s["fwd_tunnel"], d2s["fwd_tunnel"])
		}
	}

	// Established, accepted flows to a1:7100: b1's across the tunnel and
	// a2's on host1.
	const port = 7100
	sink(t, a1.Netns, netip.AddrPortFrom(a1.IP, port))
	dst := netip.AddrPortFrom(a1.IP, port)
	dial := func(wl *fpWL, from netip.AddrPort) {
		var conn net.Conn
		if err := wl.Netns.Do(func() (err error) {
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(from), Timeout: 3 * time.Second}
			conn, err = d.DialContext(ctx, "tcp4", dst.String())
			return err
		}); err != nil {
			t.Fatalf("%s: honest connection: %v", wl.Name, err)
		}
		t.Cleanup(func() { conn.Close() })
		if _, err := conn.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
	}
	remote := netip.AddrPortFrom(b1.IP, 41000)
	local := netip.AddrPortFrom(a2.IP, 41002)
	dial(b1, remote)
	dial(a2, local)
	time.Sleep(300 * time.Millisecond) // the handshakes' last ACKs make the entries assured
	marks := []string{"HONEST-MARK", "ENCAP-OK-MARK", "INNERSRC-MARK", "NO-NODE-MARK", "SPOOF-MARK", "DENIED-MARK", "PLAIN-MARK", "LOCALSRC-MARK"}
	sn := newSniffer(t, a1.Netns, marks...)
	s1, s2 = h1.m.Stats(), h2.m.Stats()

	// 1. Node host2 sends, encapsulated, a segment claiming a2's source on
	// a2's established flow (host1's own workload: no block of host2's).
	if err := send(h2.Netns, h2.Addr(), h1.Addr(), tcpPacket(local, dst, "INNERSRC-MARK"), 5); err != nil {
		t.Fatal(err)
	}
	// 2. The outside gateway, on the fabric but no node, sends one with
	// b1's source on b1's flow.
	gw := fw.w.Outside.Gateway
	if err := send(gw, fw.w.Outside.GatewayIP, h1.Addr(), tcpPacket(remote, dst, "NO-NODE-MARK"), 5); err != nil {
		t.Fatal(err)
	}
	// 2b. The same outsider sends, not encapsulated, a segment with b1's
	// source (a block routed through the tunnel) on b1's flow, routed to
	// host1 like any packet for a1; 2c. one with a2's source (host1's own
	// workload) on a2's flow. The fast path declines both (the source does
	// not route back out of the uplink), but the uplink's rp_filter is
	// loose (for IPIP) or off, so the normal path delivered them: IPIP's
	// remote sources are now dropped by ipip_decap (drop_plain_source),
	// VXLAN's and local workloads' by the ruleset's from-wl-src (a source
	// routed to a workload interface or into vxlan.calico must come in by
	// it).
	if err := gw.AddRoute(netip.PrefixFrom(a1.IP, 32).String(), h1.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if err := sendRaw(gw, a1.IP, tcpPacket(remote, dst, "PLAIN-MARK"), 5); err != nil {
		t.Fatal(err)
	}
	if err := sendRaw(gw, a1.IP, tcpPacket(local, dst, "LOCALSRC-MARK"), 5); err != nil {
		t.Fatal(err)
	}
	// 3. The attacker b2 forges b1's source on b1's flow.
	if err := sendTCP(b2.Netns, remote, dst, "SPOOF-MARK", 5); err != nil {
		t.Fatal(err)
	}
	// 4. A workload policy denies: a SYN (dropped by nftables), then
	// forged mid-stream segments from its own address.
	if err := e2etest.Blocked(ctx, d1.Netns, d1.IP, dst); err != nil {
		t.Errorf("denied workload's connection: %v", err)
	}
	if err := sendTCP(d1.Netns, netip.AddrPortFrom(d1.IP, 41001), dst, "DENIED-MARK", 5); err != nil {
		t.Fatal(err)
	}
	// 5. Honest, the same kinds of hand-made segments: from b1 on its flow,
	// and encapsulated by node host2 with b1's source.
	if err := sendTCP(b1.Netns, remote, dst, "HONEST-MARK", 5); err != nil {
		t.Fatal(err)
	}
	if err := send(h2.Netns, h2.Addr(), h1.Addr(), tcpPacket(remote, dst, "ENCAP-OK-MARK"), 5); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"HONEST-MARK", "ENCAP-OK-MARK"} {
		e2etest.WaitFor(t, 5*time.Second, m+" segments arrive", func() (bool, string) {
			return sn.count(m) == 5, fmt.Sprintf("%d arrived", sn.count(m))
		})
	}
	time.Sleep(500 * time.Millisecond)
	for _, m := range []string{"INNERSRC-MARK", "NO-NODE-MARK", "SPOOF-MARK", "DENIED-MARK", "PLAIN-MARK", "LOCALSRC-MARK"} {
		if n := sn.count(m); n != 0 {
			t.Errorf("%s segments arrived %d times", m, n)
		}
	}
	d1s, d2s = delta(s1, h1.m.Stats()), delta(s2, h2.m.Stats())
	t.Logf("attacks: host1 %v, host2 %v", d1s, d2s)
	if d2s["pass_spoof"] < 5 {
		t.Errorf("host2 counters %v: want the 5 forged segments sent the normal way as spoofed", d2s)
	}
	if d2s["pass_no_ct"] < 5 {
		t.Errorf("host2 counters %v: want the denied workload's segments sent the normal way (no conntrack entry)", d2s)
	}
	if d2s["fwd_tunnel"] < 5 {
		t.Errorf("host2 counters %v: want b1's honest segments fast-pathed into the tunnel", d2s)
	}
	if d1s["fwd_workload"] < 10 {
		t.Errorf("host1 counters %v: want both kinds of honest segment fast-pathed into a1 once decapsulated", d1s)
	}

	// Off: the program on vxlan.calico goes too, and the tunnel still
	// carries the flow (the normal way).
	fw.set(t, false)
	if poolFlag == "--vxlan" {
		for _, h := range fw.hosts {
			if p := progsOn(t, h.Host, api.VXLANDevice); len(p) != 0 {
				t.Errorf("%s %s after disabling: programs %v", h.Label, api.VXLANDevice, p)
			}
		}
	}
	if err := e2etest.Opens(ctx, b1.Netns, netip.Addr{}, dst); err != nil {
		t.Errorf("across the tunnel after disabling: %v", err)
	}
}

// ipipEncapOK is the encap_ok counter of the agent's ipip_encap on h's
// ipip.calico (internal/dataplane/ipip, STAT_ENCAP_OK: slot 0), summed
// over CPUs.
func ipipEncapOK(t *testing.T, h *lab.Host) uint64 {
	t.Helper()
	var sum uint64
	err := h.Do(func() error {
		l, err := netlink.LinkByName(ipipDevice)
		if err != nil {
			return err
		}
		maps := tcx.ExistingMaps(l.Attrs().Index, ebpf.AttachTCXEgress, "ipip_encap", "ipip_stats")
		mp := maps["ipip_stats"]
		if mp == nil {
			return errors.New("no ipip_encap with ipip_stats on " + ipipDevice)
		}
		defer mp.Close()
		var per []uint64
		if err := mp.Lookup(uint32(0), &per); err != nil {
			return err
		}
		for _, v := range per {
			sum += v
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", h.Label, err)
	}
	return sum
}
