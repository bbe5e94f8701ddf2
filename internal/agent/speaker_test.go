package agent

import (
	"context"
	"log/slog"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// An AS number change makes the agent stop its BGP speaker and start a new
// one in the same process. Each restart used to leave GoBGP's Serve
// goroutine (and the server behind it) in the process for good. The
// speaker here listens nowhere and has no peers: nothing is sent.
func TestASChangeRestartLeavesNoGoroutine(t *testing.T) {
	a := &Agent{
		cfg: Config{IP: netip.MustParseAddr("127.0.0.1"), BGPPort: -1},
		log: slog.New(slog.DiscardHandler),
	}
	ctx := context.Background()
	if err := a.ensureSpeaker(ctx, 64512); err != nil {
		t.Fatal(err)
	}
	base := settledGoroutines(0, time.Second)
	const restarts = 5
	for i := range restarts {
		if err := a.ensureSpeaker(ctx, uint32(64513+i)); err != nil {
			t.Fatal(err)
		}
		if a.asn != uint32(64513+i) {
			t.Fatalf("speaker not restarted for AS %d", 64513+i)
		}
	}
	if n := settledGoroutines(base, 10*time.Second); n > base {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after %d AS changes, %d before:\n%s", n, restarts, base, buf[:runtime.Stack(buf, true)])
	}
	a.stopSpeaker()
}

// settledGoroutines polls until the process has at most want goroutines
// (or d passes) and returns the count.
func settledGoroutines(want int, d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		n := runtime.NumGoroutine()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(50 * time.Millisecond)
	}
}
