package faults

import (
	"sync"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// testAgentRestart: a TCP stream and a ping run across hosts while
// calico-node on both hosts is stopped and started three times. Routes and
// policy stay in the kernel while the agents are down, peers keep the routes
// under BGP graceful restart, and the restarted agents resync without
// flushing: the stream never breaks and never stalls for a whole second.
func testAgentRestart(t *testing.T, w *walkthrough.World) {
	const seconds, cycles = 45, 3
	ctx := e2etest.Ctx(t, 3*time.Minute)
	w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]
	e2etest.WaitFor(t, 15*time.Second, "worker-1 reaches worker-3", func() (bool, string) {
		return e2etest.PingReplies(ctx, w1.Netns, w1.IP, w3.IP, 1) == 1, "no reply"
	})

	stream := startStream(t, ctx, w1.Netns, w3.Netns, w1.IP, seconds)
	pings := pingRun(ctx, w1.Netns, w3.IP, seconds*time.Second)
	time.Sleep(3 * time.Second)
	// Restart the hosts' agents one after the other (the running peer keeps
	// the restarting one's routes only through graceful restart), and in the
	// last cycle both at once (each finds its routes in the kernel and keeps
	// them until BGP has converged again).
	var downtimes []time.Duration
	restart := func(c int, hosts ...*lab.Host) {
		start := time.Now()
		for _, h := range hosts {
			ctl(t, ctx, w, h, "node", "stop")
		}
		time.Sleep(time.Second)
		var wg sync.WaitGroup
		errs := make([]error, len(hosts))
		for i, h := range hosts {
			wg.Go(func() { errs[i] = startNode(ctx, w, h) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatalf("restart %d: %v", c, err)
			}
		}
		d := time.Since(start).Round(100 * time.Millisecond)
		downtimes = append(downtimes, d)
		t.Logf("restart %d: %d agent(s) stopped and ready again after %s", c, len(hosts), d)
		time.Sleep(2 * time.Second)
	}
	for c := 1; c <= cycles; c++ {
		if c < cycles {
			for _, h := range w.Hosts {
				restart(c, h)
			}
		} else {
			restart(c, w.Hosts...)
		}
	}

	s := <-stream
	p := <-pings
	if p.err != nil {
		t.Errorf("ping: %v", p.err)
	}
	lost := p.Sent - p.Received
	t.Logf("FIGURE: agent restart: %d restarts of both agents (one by one, then both at once; down for %v); iperf3 stream: %d broken connections, "+
		"%.0f MB moved in %d intervals, slowest second %.1f MB, %d seconds at 0, %d retransmits; ping: %d/%d lost",
		cycles, downtimes, boolInt(s.Err != nil), s.Bytes/1e6, len(s.Intervals), s.minInterval()/1e6, s.zeroIntervals(), s.Retransmits, lost, p.Sent)
	if s.Err != nil {
		t.Errorf("the TCP stream broke during agent restarts: %v", s.Err)
	}
	if len(s.Intervals) < seconds-1 || s.zeroIntervals() > 0 {
		t.Errorf("the TCP stream stalled: %d intervals of %d s, %d with no bytes: %v", len(s.Intervals), seconds, s.zeroIntervals(), s.Intervals)
	}
	if p.Sent < seconds*4 || lost > 0 {
		t.Errorf("ping across agent restarts: %d of %d lost, want 0", lost, p.Sent)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
