package security

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// container add makes the workload's veth pair while IPAM takes its
// addresses. An add that IPAM refuses (it names the address another
// workload holds) takes the pair made meanwhile with it: no interface on
// the host, none in its namespace, and the holder's traffic flows. An
// address from a pool with another MTU than the pair was made with (a
// VXLAN pool beside the plain one: the pair is made with the smaller
// MTU) has the pair made again: both sides have its pool's MTU, and
// traffic flows.
func TestEarlyVeth(t *testing.T) {
	w := world(t, walkthrough.Options{}, true)
	ctx := e2etest.Ctx(t, 4*time.Minute)
	h1 := w.Hosts[0]
	w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]
	e2etest.ListenTCP(t, w1.Netns, "0.0.0.0:8080")
	base := caliLinks(t, ctx, h1.Netns)

	ns, err := w.Lab.AddWorkloadNetns(h1, "taker")
	if err != nil {
		t.Fatal(err)
	}
	out, err := w.Ctl(ctx, h1, "container", "add", "taker", w1.IP.String(), "--netns", ns.Path, "--profile", "PROF_1")
	if err == nil {
		t.Fatalf("container add of worker-1's address %s succeeded:\n%s", w1.IP, out)
	}
	t.Logf("refused: %v", err)
	if got := caliLinks(t, ctx, h1.Netns); len(got) != len(base) {
		t.Errorf("host1 has cali interfaces %v after the refused add, want %v", got, base)
	}
	if links, err := ns.Run(ctx, "ip", "-o", "link", "show"); err != nil || strings.Contains(links, "eth0") {
		t.Errorf("the refused workload's namespace holds (%v):\n%s", err, links)
	}
	mustOpen(t, ctx, "worker-3 -> worker-1 (PROF_1) after the refused add", w3, w1)

	ctl(t, ctx, w, h1, "pool", "add", "10.97.0.0/24", "--vxlan")
	plain := netip.MustParsePrefix(walkthrough.Pool)
	for i := range 3 {
		name := fmt.Sprintf("mtu-%d", i)
		wl, err := w.AddWorkload(ctx, h1, name, "auto")
		if err != nil {
			t.Fatal(err)
		}
		ctl(t, ctx, w, h1, "container", name, "profile", "append", "PROF_1")
		want := api.VXLANMTU
		if plain.Contains(wl.IP) {
			want = 1500
		}
		t.Logf("%s: %s, mtu %d wanted", name, wl.IP, want)
		// The agent puts a wrong host side's MTU right; the workload's
		// side is the call's alone.
		for _, side := range []struct {
			ns    *lab.Netns
			iface string
		}{{h1.Netns, api.WorkloadIfaceName(h1.Label, name)}, {wl.Netns, "eth0"}} {
			link, err := side.ns.Run(ctx, "ip", "-o", "link", "show", side.iface)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(link, fmt.Sprintf(" mtu %d ", want)) {
				t.Errorf("%s (%s): %s, want mtu %d", name, wl.IP, strings.TrimSpace(link), want)
			}
		}
		e2etest.ListenTCP(t, wl.Netns, "0.0.0.0:8080")
		mustOpen(t, ctx, "worker-1 -> "+name+" (PROF_1, same host)", w1, wl)
	}
}
