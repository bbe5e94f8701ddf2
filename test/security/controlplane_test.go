package security

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// TestControlPlaneFromWorkloads: a workload whose profile allows every
// outbound connection (the seed's default) tries the cluster's control
// plane on every node: etcd's client and peer ports (host 1 runs the
// datastore at 10.0.0.1:2379, as the README deploys it), BGP, and VXLAN.
// All of it must be dropped at the workload's own host, while the same
// workload still reaches another workload and the outside. Then host 2's
// operator opens the control plane to its workloads with
// `calicoctl node --workload-control-plane=policy`, and the ports answer.
func TestControlPlaneFromWorkloads(t *testing.T) {
	w := world(t, walkthrough.Options{PoolArgs: []string{"--nat-outgoing"}}, true)
	ctx := e2etest.Ctx(t, 6*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]

	// Honest destinations.
	e2etest.ListenTCP(t, w1.Netns, ":8080")
	e2etest.ListenTCP(t, w.Outside.Netns, e2etest.AP(w.Outside.IP, 80).String())
	// A UDP listener on each node's VXLAN port (no VXLAN pool in this
	// world, so the port is free): it shows what arrives there.
	vx1 := e2etest.NewUDPCounter(t, h1.Netns, e2etest.AP(h1.Addr(), 4789).String())
	vx2 := e2etest.NewUDPCounter(t, h2.Netns, e2etest.AP(h2.Addr(), 4789).String())

	// Every TCP port tried below answers on the node itself (etcd's client
	// and peer listeners, the agents' BGP speakers), so a drop below is our
	// guard, not a missing listener.
	for _, h := range []*lab.Host{h1, h2} {
		ports := []uint16{179}
		if h == h1 {
			ports = append(ports, 2379, 2380)
		}
		for _, p := range ports {
			if err := e2etest.DialTCP(ctx, h.Netns, netip.Addr{}, e2etest.AP(h.Addr(), p), 3*time.Second); err != nil {
				t.Fatalf("%s:%d does not answer on %s itself: %v", h.Addr(), p, h.Label, err)
			}
		}
	}

	type tcpCase struct {
		from *walkthrough.Workload
		dst  netip.AddrPort
		what string
	}
	tcpCases := []tcpCase{
		{w3, e2etest.AP(h1.Addr(), 2379), "worker-3 (host2) -> host1 etcd client port"},
		{w3, e2etest.AP(h1.Addr(), 2380), "worker-3 (host2) -> host1 etcd peer port"},
		{w3, e2etest.AP(h1.Addr(), 179), "worker-3 (host2) -> host1 BGP"},
		{w1, e2etest.AP(h2.Addr(), 179), "worker-1 (host1) -> host2 BGP"},
		{w3, e2etest.AP(h2.Addr(), 179), "worker-3 (host2) -> its own host's BGP"},
	}
	type udpCase struct {
		from    *walkthrough.Workload
		to      *lab.Host
		counter *e2etest.UDPCounter
		what    string
	}
	udpCases := []udpCase{
		{w3, h1, vx1, "worker-3 (host2) -> host1 UDP 4789"},
		{w1, h2, vx2, "worker-1 (host1) -> host2 UDP 4789"},
		{w3, h2, vx2, "worker-3 (host2) -> its own host's UDP 4789"},
	}

	honest := func(t *testing.T) {
		t.Helper()
		if err := e2etest.Opens(ctx, w3.Netns, netip.Addr{}, e2etest.AP(w1.IP, 8080)); err != nil {
			t.Errorf("honest: worker-3 -> worker-1 tcp: %v", err)
		}
		if err := e2etest.Opens(ctx, w3.Netns, netip.Addr{}, e2etest.AP(w.Outside.IP, 80)); err != nil {
			t.Errorf("honest: worker-3 -> outside tcp (nat-outgoing): %v", err)
		}
	}

	var reached []string
	t.Run("guarded", func(t *testing.T) {
		honest(t)
		for _, c := range tcpCases {
			if err := e2etest.Blocked(ctx, c.from.Netns, netip.Addr{}, c.dst); err != nil {
				t.Errorf("attack %s: %v", c.what, err)
				reached = append(reached, c.what)
			}
		}
		for i, c := range udpCases {
			payload := fmt.Sprintf("cp-guarded-%d", i)
			if err := e2etest.SendUDP(c.from.Netns, netip.AddrPort{}, e2etest.AP(c.to.Addr(), 4789), payload, 5); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			if n := c.counter.Count(payload); n > 0 {
				t.Errorf("attack %s: %d of 5 datagrams arrived", c.what, n)
				reached = append(reached, c.what)
			}
		}
		honest(t)
	})
	t.Logf("FIGURE: control plane from workloads, default setting: %d of %d attacks reached a control-plane port (%s); worker-3 -> worker-1 and -> outside still open",
		len(reached), len(tcpCases)+len(udpCases), strings.Join(reached, "; "))

	// Host 2's operator opens the control plane to its workloads. The
	// source host enforces the guard, so this opens the other nodes' ports
	// to host 2's workloads only; host 1's workloads stay guarded, and a
	// host's own services stay behind --workload-to-host (drop).
	t.Run("opened on host2", func(t *testing.T) {
		ctl(t, ctx, w, h2, "node", "stop", "--name="+h2.Label)
		ctl(t, ctx, w, h2, "node", "--ip="+h2.Addr().String(), "--name="+h2.Label, "--workload-control-plane=policy")
		for _, c := range tcpCases[:3] {
			if err := e2etest.Opens(ctx, c.from.Netns, netip.Addr{}, c.dst); err != nil {
				t.Errorf("opened: %s: %v", c.what, err)
			}
		}
		if err := e2etest.SendUDP(w3.Netns, netip.AddrPort{}, e2etest.AP(h1.Addr(), 4789), "cp-opened", 5); err != nil {
			t.Fatal(err)
		}
		e2etest.WaitFor(t, 5*time.Second, "opened: worker-3 -> host1 UDP 4789 arrives", func() (bool, string) {
			n := vx1.Count("cp-opened")
			return n > 0, fmt.Sprintf("%d datagrams", n)
		})
		for _, c := range tcpCases[3:] {
			if err := e2etest.Blocked(ctx, c.from.Netns, netip.Addr{}, c.dst); err != nil {
				t.Errorf("still guarded: %s: %v", c.what, err)
			}
		}
		honest(t)
	})
}
