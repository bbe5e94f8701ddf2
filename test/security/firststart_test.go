package security

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/api"
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
	w1, w2, w3 := w.Workloads["worker-1"], w.Workloads["worker-2"], w.Workloads["worker-3"]
	e2etest.ListenTCP(t, w1.Netns, ":8080")
	toWorkload := e2etest.NewUDPCounter(t, w2.Netns, ":9999")
	toHost := e2etest.NewUDPCounter(t, h1.Netns, ":9998")
	mustOpen(t, ctx, "worker-3 -> worker-1 (PROF_1) through the tunnel", w3, w1)

	rogue, err := w.Lab.AddHost("rogue", h1.Fabric, "10.0.0.9/24", "10.0.0.254")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := rogue.Run(ctx, "ip", "route", "add", walkthrough.Pool, "via", h1.Addr().String()); err != nil {
		t.Fatalf("route the pool through host1: %v %s", err, out)
	}
	// send keeps sending the two kinds of datagrams until stop is set,
	// ignoring errors (an ICMP unreachable while host1 has no VXLAN socket
	// or no route).
	send := func(tag string, stop *atomic.Bool, sent *atomic.Int64) error {
		return rogue.Do(func() error {
			vx, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(e2etest.AP(h1.Addr(), 4789)))
			if err != nil {
				return err
			}
			defer vx.Close()
			plain, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(e2etest.AP(w2.IP, 9999)))
			if err != nil {
				return err
			}
			defer plain.Close()
			dg := vxlanDatagram(api.VXLANVNI, vtepMAC(t, h1), vtepMAC(t, w.Hosts[1]), e2etest.AP(w3.IP, 40000), e2etest.AP(h1.Addr(), 9998), tag)
			for !stop.Load() {
				_, err1 := vx.Write(dg)
				_, err2 := plain.Write([]byte(tag))
				if err1 == nil && err2 == nil {
					sent.Add(1)
				}
				time.Sleep(200 * time.Microsecond)
			}
			return nil
		})
	}
	burst := func(tag string, during func()) int64 {
		var stop atomic.Bool
		var sent atomic.Int64
		done := make(chan error, 1)
		go func() { done <- send(tag, &stop, &sent) }()
		during()
		time.Sleep(time.Second)
		stop.Store(true)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return sent.Load()
	}

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
