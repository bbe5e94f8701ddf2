package bench

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/lab"
)

// TestBareVXLAN: the bare-kernel world carries its workload pair's traffic
// over the hand-made VXLAN device (the receiving host's vx counts the bytes
// of every echo request answered; the host-to-host pair's leave it alone),
// and closing the lab leaves none of its namespaces behind.
func TestBareVXLAN(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test builds network namespaces and needs root (CI runs as root)")
	}
	l, err := lab.New("cbx")
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			_ = l.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	paths, err := bareVXLAN(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 2 || paths[0].name != pathBareHostRtr || paths[1].name != pathBareVXLAN || paths[1].baseline != pathBareHostRtr {
		t.Fatalf("paths: %+v", paths)
	}
	vxRx := func() int64 {
		t.Helper()
		out, err := paths[0].server.Run(ctx, "cat", "/sys/class/net/vx/statistics/rx_bytes")
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Echo requests: every one answered was received, so the receiving
	// host's vx has counted them all by the time ping returns.
	const count, payload = 200, 1200
	const size = count * payload
	send := func(p tpath) int64 {
		t.Helper()
		before := vxRx()
		if out, err := p.client.Run(ctx, "ping", "-q", "-c", strconv.Itoa(count), "-s", strconv.Itoa(payload), "-i", "0.002", "-W", "5", p.ip.String()); err != nil {
			t.Fatalf("%s: ping: %v\n%s", p.name, err, out)
		}
		return vxRx() - before
	}
	got := send(paths[1])
	t.Logf("workload pair: vx rx %d bytes", got)
	if got < size {
		t.Errorf("workload pair: the receiving host's vx got %d bytes for %d echo requests of %d bytes: not carried over VXLAN", got, count, payload)
	}
	if got := send(paths[0]); got > size/10 {
		t.Errorf("host pair: vx got %d bytes: host-to-host should not cross the tunnel", got)
	}
	id := l.ID()
	closed = true
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), id) {
		t.Errorf("namespaces of lab %s left behind:\n%s", id, out)
	}
}
