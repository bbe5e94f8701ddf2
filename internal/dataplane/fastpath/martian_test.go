package fastpath

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/walkthrough"
)

// TestFastPathUplinkSourceCheck: a machine on host1's fabric that is no
// node forges host1's own address on host1's established connection to a
// workload (a health check, say). The normal path drops a packet that
// arrives from outside with one of the host's own addresses as its source
// (a martian, whatever rp_filter says); the uplink program must not carry
// it into the workload either: it sends the normal way whatever arrives on
// the uplink from a source the host would not route back out of it.
// Honest: host2's workload's segments on its own flow to the same
// workload are fast-pathed and arrive.
func TestFastPathUplinkSourceCheck(t *testing.T) {
	fw := newWorld(t, []wlSpec{
		{"fp-a1", 0, "192.168.100.1", true},
		{"fp-b1", 1, "192.168.100.65", true},
	})
	ctx := e2etest.Ctx(t, 3*time.Minute)
	h1 := fw.hosts[0]
	a1, b1 := fw.wls["fp-a1"], fw.wls["fp-b1"]
	rogue, err := fw.w.Lab.AddHost("rogue", h1.Fabric, "10.0.0.9/24", "10.0.0.254")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := rogue.Run(ctx, "ip", "route", "add", walkthrough.Pool, "via", h1.Addr().String()); err != nil {
		t.Fatalf("route the pool through host1: %v %s", err, out)
	}
	fw.set(t, true)

	const port = 7200
	dst := netip.AddrPortFrom(a1.IP, port)
	sink(t, a1.Netns, dst)
	// host1's own connection to a1, and b1's.
	hostEnd := netip.AddrPortFrom(h1.Addr(), 42000)
	dialFrom(t, ctx, h1.Netns, hostEnd, dst)
	b1End := netip.AddrPortFrom(b1.IP, 42001)
	dialFrom(t, ctx, b1.Netns, b1End, dst)
	sn := newSniffer(t, a1.Netns, "HONEST-MARK", "MARTIAN-MARK")

	s1 := h1.m.Stats()
	if err := sendTCP(rogue.Netns, hostEnd, dst, "MARTIAN-MARK", 5); err != nil {
		t.Fatal(err)
	}
	if err := sendTCP(b1.Netns, b1End, dst, "HONEST-MARK", 5); err != nil {
		t.Fatal(err)
	}
	e2etest.WaitFor(t, 5*time.Second, "honest segments arrive", func() (bool, string) {
		return sn.count("HONEST-MARK") == 5, fmt.Sprintf("%d arrived", sn.count("HONEST-MARK"))
	})
	time.Sleep(500 * time.Millisecond)
	d := delta(s1, h1.m.Stats())
	t.Logf("host1 counters: %v", d)
	if n := sn.count("MARTIAN-MARK"); n != 0 {
		t.Errorf("segments from the fabric forging host1's own address on its connection to a workload arrived %d times", n)
	}
	if d["fwd_workload"] < 5 {
		t.Errorf("host1 counters %v: want the honest segments fast-pathed", d)
	}
}
