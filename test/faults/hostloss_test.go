package faults

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/walkthrough"
)

// testHostLoss: host 2 vanishes (its fabric link is cut, then its agent is
// killed with SIGKILL, so no BGP message or TCP FIN can leave): host 1
// withdraws its routes once the hold timer expires and the graceful restart
// time that follows runs out, the bound the configuration promises. Then
// host 2 comes back (link up, agent started) and everything converges.
func testHostLoss(t *testing.T, w *walkthrough.World) {
	ctx := e2etest.Ctx(t, 3*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]
	via := "via " + h2.Addr().String()
	routesVia := func() int {
		n := 0
		for _, line := range strings.Split(ourRoutes(ctx, h1), "\n") {
			if strings.Contains(line, via) {
				n++
			}
		}
		return n
	}
	e2etest.WaitFor(t, 15*time.Second, "host1 has routes via host2", func() (bool, string) {
		return routesVia() > 0, ourRoutes(ctx, h1)
	})
	before := routesVia()
	fabric, port := h2.Fabric.Netns, h2.Label // the fabric's port for a host is named after it
	if _, err := fabric.Run(ctx, "ip", "link", "show", port); err != nil {
		t.Fatalf("host2's port on the fabric: %v", err)
	}

	// Cut first, then kill: the killed agent's TCP FIN must not get out, or
	// host1 would notice at once instead of by its hold timer.
	if _, err := fabric.Run(ctx, "ip", "link", "set", port, "down"); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	linkDown := true
	defer func() {
		if linkDown {
			fabric.Run(context.Background(), "ip", "link", "set", port, "up")
		}
	}()
	pidFile := filepath.Join(w.StateDir, "run", "calico", h2.Label, "calico-node.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		t.Fatalf("bad pid file %s: %q", pidFile, b)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill calico-node on host2 (pid %d): %v", pid, err)
	}

	bound := holdTime + restartTime
	slack := 5 * time.Second // keepalive spacing (hold/3) and route installation
	e2etest.WaitFor(t, bound+slack+10*time.Second, "host1 withdraws host2's routes", func() (bool, string) {
		return routesVia() == 0, ourRoutes(ctx, h1)
	})
	withdrawn := time.Since(cut)
	t.Logf("FIGURE: host loss: host1 withdrew host2's %d routes %.1f s after the link cut; configured bound hold %s + graceful restart %s = %s",
		before, withdrawn.Seconds(), holdTime, restartTime, bound)
	if withdrawn > bound+slack {
		t.Errorf("host2's routes were withdrawn after %.1f s, beyond hold + restart time %s (+%s slack)", withdrawn.Seconds(), bound, slack)
	}
	if reached := e2etest.PingReplies(ctx, w1.Netns, w1.IP, w3.IP, 2); reached != 0 {
		t.Errorf("worker-1 still reached worker-3 on the lost host: %d replies", reached)
	}

	// Host 2 comes back.
	if _, err := fabric.Run(ctx, "ip", "link", "set", port, "up"); err != nil {
		t.Fatal(err)
	}
	linkDown = false
	back := time.Now()
	if err := startNode(ctx, w, h2); err != nil {
		t.Fatal(err)
	}
	started := time.Since(back)
	e2etest.WaitFor(t, 60*time.Second, "host1 learns host2's routes again", func() (bool, string) {
		return routesVia() >= before, ourRoutes(ctx, h1)
	})
	routesBack := time.Since(back)
	e2etest.WaitFor(t, 30*time.Second, "worker-1 and worker-3 reach each other again", func() (bool, string) {
		replies := e2etest.PingReplies(ctx, w1.Netns, w1.IP, w3.IP, 1) + e2etest.PingReplies(ctx, w3.Netns, w3.IP, w1.IP, 1)
		return replies == 2, fmt.Sprintf("%d/2 replies", replies)
	})
	t.Logf("FIGURE: host loss: host2 back (link up, agent ready after %.1f s): host1 had its %d routes back %.1f s and pings passed both ways %.1f s after the link came up",
		started.Seconds(), before, routesBack.Seconds(), time.Since(back).Seconds())
}
