package security

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// vxlanRogue is a namespace on host 1's fabric that is no node, with the
// pool routed through host 1. Its bursts send, every 0.2 ms, VXLAN
// datagrams whose inner packet comes from worker-3's address (host 2) and
// goes to UDP 9998 of host 1 itself, and plain datagrams to worker-2's UDP
// 9999; toHost and toWorkload count what arrives, by tag. The walkthrough's
// profiles admit neither, so every arrival is a hole.
type vxlanRogue struct {
	t                  *testing.T
	w                  *walkthrough.World
	host               *lab.Host
	toHost, toWorkload *e2etest.UDPCounter
}

func newVXLANRogue(t *testing.T, ctx context.Context, w *walkthrough.World) *vxlanRogue {
	t.Helper()
	h1, w2 := w.Hosts[0], w.Workloads["worker-2"]
	r := &vxlanRogue{t: t, w: w,
		toWorkload: e2etest.NewUDPCounter(t, w2.Netns, ":9999"),
		toHost:     e2etest.NewUDPCounter(t, h1.Netns, ":9998"),
	}
	var err error
	if r.host, err = w.Lab.AddHost("rogue", h1.Fabric, "10.0.0.9/24", "10.0.0.254"); err != nil {
		t.Fatal(err)
	}
	if out, err := r.host.Run(ctx, "ip", "route", "add", walkthrough.Pool, "via", h1.Addr().String()); err != nil {
		t.Fatalf("route the pool through host1: %v %s", err, out)
	}
	return r
}

// burst sends both kinds of datagram, tagged, from before during runs
// until a second after it returns, ignoring send errors (an ICMP
// unreachable while host 1 has no VXLAN socket or no route), and returns
// how many of each kind went out.
func (r *vxlanRogue) burst(tag string, during func()) int64 {
	t, w := r.t, r.w
	h1, w2, w3 := w.Hosts[0], w.Workloads["worker-2"], w.Workloads["worker-3"]
	var stop atomic.Bool
	var sent atomic.Int64
	done := make(chan error, 1)
	frame := vxlanDatagram(api.VXLANVNI, vtepMAC(t, h1), vtepMAC(t, w.Hosts[1]), e2etest.AP(w3.IP, 40000), e2etest.AP(h1.Addr(), 9998), tag)
	go func() {
		done <- r.host.Do(func() error {
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
			for !stop.Load() {
				_, err1 := vx.Write(frame)
				_, err2 := plain.Write([]byte(tag))
				if err1 == nil && err2 == nil {
					sent.Add(1)
				}
				time.Sleep(200 * time.Microsecond)
			}
			return nil
		})
	}()
	during()
	time.Sleep(time.Second)
	stop.Store(true)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return sent.Load()
}
