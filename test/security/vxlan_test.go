package security

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// vxlanDatagram is what a VXLAN tunnel endpoint sends as the payload of a
// UDP datagram to port 4789: the VXLAN header (VNI vni), then an Ethernet
// frame from srcMAC to dstMAC carrying IPv4 and UDP from src to dst with
// payload. An ordinary UDP socket sends it; the receiving host's vxlan
// device decapsulates whatever arrives.
func vxlanDatagram(vni uint32, dstMAC, srcMAC net.HardwareAddr, src, dst netip.AddrPort, payload string) []byte {
	b := []byte{0x08, 0, 0, 0, byte(vni >> 16), byte(vni >> 8), byte(vni), 0} // flags: VNI valid
	b = append(b, dstMAC...)
	b = append(b, srcMAC...)
	b = append(b, 0x08, 0x00) // IPv4
	ip := make([]byte, 20, 28+len(payload))
	ip[0], ip[8], ip[9] = 0x45, 64, 17 // version 4, 20-byte header; TTL; UDP
	binary.BigEndian.PutUint16(ip[2:], uint16(28+len(payload)))
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	udp := make([]byte, 8)
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload))) // checksum 0: none (IPv4)
	b = append(b, ip...)
	b = append(b, udp...)
	return append(b, payload...)
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func vtepMAC(t *testing.T, h *lab.Host) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(api.VTEPMAC(h.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestVXLANInjection: VXLAN datagrams crafted by hand and sent from an
// ordinary UDP socket to host 1's port 4789 try to deliver an inner packet
// to worker-1 with worker-3's address as its source (worker-3 is in
// PROF_1, so worker-1's inbound policy would accept it). The senders: the
// outside network behind the gateway, a namespace on host 1's fabric that
// is not a node, and host 3, a registered node, whose inner source lies in
// host 2's block (once with host 2's tunnel MAC, which the sender is free to
// write, once with its own). Every one must be dropped, while worker-3's
// real traffic through the tunnel, and host 2's own, still arrive.
func TestVXLANInjection(t *testing.T) {
	w := world(t, walkthrough.Options{Routed: true, PoolArgs: []string{"--vxlan"}}, true)
	ctx := e2etest.Ctx(t, 6*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]

	// Host 2 itself may send to PROF_1's members (so its own traffic
	// through the tunnel can be seen arriving).
	ctl(t, ctx, w, h1, "profile", "PROF_1", "rule", "add", "inbound", "allow", "udp", "from", "cidr", h2.Addr().String()+"/32")

	counter := e2etest.NewUDPCounter(t, w1.Netns, ":9999")
	e2etest.ListenTCP(t, w1.Netns, ":8080")
	honest := func(t *testing.T, tag string) {
		t.Helper()
		if err := e2etest.Opens(ctx, w3.Netns, netip.Addr{}, e2etest.AP(w1.IP, 8080)); err != nil {
			t.Errorf("honest: worker-3 -> worker-1 tcp through the tunnel: %v", err)
		}
		for _, s := range []struct {
			ns   *lab.Netns
			what string
		}{{w3.Netns, "worker-3"}, {h2.Netns, "host2"}} {
			payload := "honest-" + s.what + "-" + tag
			e2etest.WaitFor(t, 15*time.Second, "honest: "+s.what+" -> worker-1 udp through the tunnel", func() (bool, string) {
				if err := e2etest.SendUDP(s.ns, netip.AddrPort{}, e2etest.AP(w1.IP, 9999), payload, 2); err != nil {
					return false, err.Error()
				}
				n := counter.Count(payload)
				return n > 0, fmt.Sprintf("%d datagrams arrived", n)
			})
		}
	}
	honest(t, "before")

	// A namespace on host 1's fabric that is no node, and host 3, which is.
	rogue, err := w.Lab.AddHost("rogue", h1.Fabric, "10.0.0.9/24", "10.0.0.254")
	if err != nil {
		t.Fatal(err)
	}
	h3, err := w.AddHost(ctx, "host3", "10.0.0.3/24")
	if err != nil {
		t.Fatal(err)
	}

	inner := func(tag string) (netip.AddrPort, netip.AddrPort, string) {
		return e2etest.AP(w3.IP, 40000), e2etest.AP(w1.IP, 9999), "inject-" + tag
	}
	attacks := []struct {
		from   *lab.Netns
		srcMAC net.HardwareAddr
		tag    string
		what   string
	}{
		{w.Outside.Netns, vtepMAC(t, h2), "outside", "outside (" + w.Outside.IP.String() + "), host2's tunnel MAC"},
		{rogue.Netns, vtepMAC(t, h2), "rogue", "non-node on host1's fabric (10.0.0.9), host2's tunnel MAC"},
		{h3.Netns, vtepMAC(t, h2), "host3-mac2", "node host3, inner source in host2's block, host2's tunnel MAC"},
		{h3.Netns, vtepMAC(t, h3), "host3-mac3", "node host3, inner source in host2's block, its own tunnel MAC"},
	}
	var delivered []string
	for _, a := range attacks {
		src, dst, payload := inner(a.tag)
		dg := vxlanDatagram(api.VXLANVNI, vtepMAC(t, h1), a.srcMAC, src, dst, payload)
		if err := e2etest.SendUDP(a.from, netip.AddrPort{}, e2etest.AP(h1.Addr(), 4789), string(dg), 5); err != nil {
			t.Fatalf("%s: send: %v", a.what, err)
		}
	}
	time.Sleep(2 * time.Second)
	for _, a := range attacks {
		_, _, payload := inner(a.tag)
		if n := counter.Count(payload); n > 0 {
			t.Errorf("attack from %s: %d of 5 injected packets delivered to worker-1", a.what, n)
			delivered = append(delivered, a.what)
		}
	}
	honest(t, "after")
	t.Logf("FIGURE: VXLAN injection into worker-1: %d of %d senders got packets delivered (%s); worker-3 and host2 still reach worker-1 through the tunnel",
		len(delivered), len(attacks), strings.Join(delivered, "; "))

	// The senders' inner sources come from the datastore, which the agent
	// has in full before its first pass, not from BGP, which it re-learns
	// after a restart: restarting host 1's agent drops no honest packet.
	type result struct {
		r   lab.PingResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := lab.Ping(ctx, w3.Netns, w1.IP, 100, time.Second) // 100 x 0.2 s
		done <- result{r, err}
	}()
	time.Sleep(2 * time.Second)
	ctl(t, ctx, w, h1, "node", "stop")
	ctl(t, ctx, w, h1, "node", "--ip="+h1.Addr().String(), "--name="+h1.Label)
	select {
	case <-done:
		t.Fatal("the pings ended before host1's agent was back: the restart was not covered")
	default:
	}
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	lost := res.r.Sent - res.r.Received
	t.Logf("FIGURE: worker-3 -> worker-1 through the tunnel across host1's agent restart: %d of %d pings lost", lost, res.r.Sent)
	if res.r.Sent < 90 || lost > 2 {
		t.Errorf("host1's agent restart disturbed honest VXLAN traffic: %d of %d pings lost", lost, res.r.Sent)
	}
}

// TestVXLANGuardOutlivesTunnel: `calicoctl node stop --cleanup` killed
// after each step of its uninstall (the fault hook) must never leave host
// 1 with a VXLAN device but without the vxlan-in guard. A namespace on
// host 1's fabric that is no node sends VXLAN datagrams to host 1 whose
// inner packet goes to worker-1 from worker-3's address (worker-1's
// profile admits worker-3); none may arrive. When the table went first,
// an uninstall stopped right after it left the device decapsulating
// anybody's datagrams, and the routes into the workloads, with no guard
// and no policy: 5 of 5 arrived. After each kill host 1's agent is
// started again and worker-3's traffic through the tunnel flows.
func TestVXLANGuardOutlivesTunnel(t *testing.T) {
	w := world(t, walkthrough.Options{Routed: true, PoolArgs: []string{"--vxlan"}}, true)
	ctx := e2etest.Ctx(t, 6*time.Minute)
	h1 := w.Hosts[0]
	w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]
	counter := e2etest.NewUDPCounter(t, w1.Netns, ":9999")
	honest := func(tag string) {
		t.Helper()
		payload := "honest-" + tag
		e2etest.WaitFor(t, 30*time.Second, "honest: worker-3 -> worker-1 udp through the tunnel ("+tag+")", func() (bool, string) {
			if err := e2etest.SendUDP(w3.Netns, netip.AddrPort{}, e2etest.AP(w1.IP, 9999), payload, 2); err != nil {
				return false, err.Error()
			}
			n := counter.Count(payload)
			return n > 0, fmt.Sprintf("%d datagrams arrived", n)
		})
	}
	honest("before")
	rogue, err := w.Lab.AddHost("rogue", h1.Fabric, "10.0.0.9/24", "10.0.0.254")
	if err != nil {
		t.Fatal(err)
	}

	var delivered []string
	for _, step := range []string{"tunnels", "routes", "forward", "table"} {
		fault := "uninstall-after-" + step
		out, err := ctlEnv(ctx, w, h1, []string{client.FaultEnv + "=" + fault}, "node", "stop", "--cleanup")
		if !killed(err) {
			t.Fatalf("node stop --cleanup with %s=%s was not killed: %v\n%s", client.FaultEnv, fault, err, out)
		}
		payload := "inject-" + step
		dg := vxlanDatagram(api.VXLANVNI, vtepMAC(t, h1), vtepMAC(t, w.Hosts[1]), e2etest.AP(w3.IP, 40000), e2etest.AP(w1.IP, 9999), payload)
		// "Connection refused": an earlier datagram met no VXLAN socket
		// (the device is gone), which is as good as a drop.
		if err := e2etest.SendUDP(rogue.Netns, netip.AddrPort{}, e2etest.AP(h1.Addr(), 4789), string(dg), 5); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("%s: send: %v", fault, err)
		}
		time.Sleep(2 * time.Second)
		if n := counter.Count(payload); n > 0 {
			t.Errorf("uninstall killed after %s: %d of 5 datagrams injected from a non-node reached worker-1", step, n)
			delivered = append(delivered, step)
		}
		ctl(t, ctx, w, h1, "node", "--ip="+h1.Addr().String(), "--name="+h1.Label)
		honest("after-" + step)
	}
	t.Logf("FIGURE: uninstall killed after each of its 4 steps: injected VXLAN reached worker-1 after %d (%s); worker-3's tunnel traffic flowed after every restart",
		len(delivered), strings.Join(delivered, ", "))
}
