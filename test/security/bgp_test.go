package security

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// birdHijacker makes BIRD 2 an eBGP router (AS 65010) on the fabric that
// peers with both calico nodes (a global peer) and announces, with itself as
// next hop, every prefix in announce. It imports what the nodes send but
// installs nothing in its own kernel, and its namespace does not forward:
// traffic a node is tricked into sending to it dies there.
func birdHijacker(routerID netip.Addr, nodes []netip.Addr, announce []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "log stderr all;\nrouter id %s;\nprotocol device { scan time 2; }\n", routerID)
	b.WriteString("protocol static {\n\tipv4;\n")
	for _, p := range announce {
		fmt.Fprintf(&b, "\troute %s blackhole;\n", p)
	}
	b.WriteString("}\n")
	for i, n := range nodes {
		fmt.Fprintf(&b, `protocol bgp node%d {
	local %s as 65010;
	neighbor %s as 64512;
	ipv4 { import all; export where source = RTS_STATIC; };
}
`, i+1, routerID, n)
	}
	return b.String()
}

// peerRow is one line of `calicoctl status`'s BGP table, by column header.
func peerRow(status, peer string) map[string]string {
	lines := strings.Split(status, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, "PEER ADDRESS") {
			continue
		}
		// Columns start where a header word follows two or more spaces.
		var starts []int
		var names []string
		for j := 0; j < len(l); {
			k := strings.Index(l[j:], "  ")
			end := len(l)
			if k >= 0 {
				end = j + k
			}
			starts, names = append(starts, j), append(names, strings.ToLower(strings.TrimSpace(l[j:end])))
			if k < 0 {
				break
			}
			j = end
			for j < len(l) && l[j] == ' ' {
				j++
			}
		}
		for _, row := range lines[i+1:] {
			if f := strings.Fields(row); len(f) == 0 || f[0] != peer {
				continue
			}
			m := map[string]string{}
			for c := range starts {
				end := len(row)
				if c+1 < len(starts) && starts[c+1] < end {
					end = starts[c+1]
				}
				if starts[c] < len(row) {
					m[names[c]] = strings.TrimSpace(row[starts[c]:end])
				}
			}
			return m
		}
	}
	return nil
}

// TestBGPRouteInjection: a router on the fabric, configured as a global BGP
// peer, announces a default route, host 2's own address as a /32, a prefix
// outside every pool, a prefix of the pool that no host has claimed, and
// host 2's workload block (with itself as next hop). Only the unclaimed pool
// prefix may be installed; host 2's block keeps routing to host 2, host
// traffic and workload traffic across hosts keep flowing, and `calicoctl
// status` counts the four refused announcements against the router.
func TestBGPRouteInjection(t *testing.T) {
	w := world(t, walkthrough.Options{}, true)
	ctx := e2etest.Ctx(t, 6*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]

	// worker-4 makes host 2 claim a block of its own (worker-3's address
	// was taken explicitly and may lie in host 1's block).
	w4, err := w.AddWorkload(ctx, h2, "worker-4", "auto")
	if err != nil {
		t.Fatal(err)
	}
	ctl(t, ctx, w, h2, "container", "worker-4", "profile", "append", "PROF_1")
	var blocks []struct{ CIDR, Affinity string }
	if err := json.Unmarshal([]byte(ctl(t, ctx, w, h1, "ipam", "show", "-o", "json")), &blocks); err != nil {
		t.Fatal(err)
	}
	var h2Block netip.Prefix
	claimed := map[netip.Prefix]bool{}
	for _, b := range blocks {
		p, err := netip.ParsePrefix(b.CIDR)
		if err != nil {
			t.Fatal(err)
		}
		claimed[p] = true
		if p.Contains(w4.IP) {
			h2Block = p
		}
	}
	if !h2Block.IsValid() {
		t.Fatalf("no block holds worker-4's %s: %+v", w4.IP, blocks)
	}
	// The legitimate announcement: a /26 of the pool no host has claimed.
	var legitimate string
	for _, p := range []string{"192.168.100.0/26", "192.168.100.64/26", "192.168.100.128/26", "192.168.100.192/26"} {
		if !claimed[netip.MustParsePrefix(p)] {
			legitimate = p
			break
		}
	}
	if legitimate == "" {
		t.Fatalf("every block of the pool is claimed: %+v", blocks)
	}
	t.Logf("blocks: %+v; host2's block (worker-4 %s): %s; unclaimed: %s", blocks, w4.IP, h2Block, legitimate)

	const (
		defaultRoute = "0.0.0.0/0"
		outOfPool    = "172.16.5.0/24"
	)
	host2Addr := h2.Addr().String() + "/32"
	// worker-3's address was taken explicitly on host2: host2 announces it
	// as a /32 (often borrowed from host1's block). The router announces
	// it too, and host2's block both as it is and as a more specific /27
	// (the one holding worker-4): a path for the same prefix loses
	// best-path selection to the node's own (shorter AS path), a more
	// specific one wins the kernel's longest match.
	worker3 := netip.PrefixFrom(w3.IP, 32).String()
	h2Half, _ := w4.IP.Prefix(h2Block.Bits() + 1)
	hostile := []string{defaultRoute, host2Addr, outOfPool, h2Block.String(), h2Half.String(), worker3}
	wantRejected := strconv.Itoa(len(hostile))

	// The router: on the fabric, no gateway, forwarding off.
	birdHost, err := w.Lab.AddHost("bird", h1.Fabric, "10.0.0.10/24", "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf, sock := filepath.Join(dir, "bird.conf"), filepath.Join(dir, "bird.ctl")
	cfg := birdHijacker(birdHost.Addr(), []netip.Addr{h1.Addr(), h2.Addr()}, append(hostile, legitimate))
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	bird, err := birdHost.Start("bird", "-f", "-c", conf, "-s", sock, "-P", filepath.Join(dir, "bird.pid"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- BIRD log\n%s", bird.Log())
		}
		bird.Stop() // by its process group; before the lab closes
	})
	ipRoute := func(h *lab.Host, args ...string) string {
		out, _ := h.Run(ctx, append([]string{"ip", "route", "show"}, args...)...)
		return strings.TrimSpace(out)
	}
	birdIP := birdHost.Addr().String()

	// status never fails the test: before the import policy existed, the
	// hijacked routes cut host2 off from the datastore on host1.
	status := func(h *lab.Host) string {
		out, err := w.Ctl(ctx, h, "status")
		if err != nil {
			return err.Error()
		}
		return out
	}

	ctl(t, ctx, w, h1, "bgp", "peer", "add", birdIP, "as", "65010")
	e2etest.WaitFor(t, 90*time.Second, "host1: the BIRD session up and all its routes received", func() (bool, string) {
		st := status(h1)
		row := peerRow(st, birdIP)
		return row["state"] == "Established" && row["routes received"] == strconv.Itoa(len(hostile)+1), st
	})
	e2etest.WaitFor(t, 30*time.Second, "host1 to install the unclaimed pool prefix "+legitimate+" via BIRD", func() (bool, string) {
		out := ipRoute(h1, "exact", legitimate)
		return strings.Contains(out, "via "+birdIP) && strings.Contains(out, "proto 80"), ipRoute(h1, "proto", "80")
	})

	// Every refused announcement is counted against the router, on both
	// nodes (host2 refuses its own address, block and workload).
	rejected := map[string]string{}
	for _, h := range w.Hosts {
		var st string
		ok := false
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && !ok; {
			st = status(h)
			row := peerRow(st, birdIP)
			rejected[h.Label] = row["rejected"]
			ok = row["rejected"] == wantRejected && row["routes received"] == strconv.Itoa(len(hostile)+1)
			time.Sleep(500 * time.Millisecond)
		}
		t.Logf("%s: calicoctl status:\n%s", h.Label, st)
		if !ok {
			t.Errorf("%s: calicoctl status shows %q rejected from BIRD, want %s:\n%s", h.Label, rejected[h.Label], wantRejected, st)
		} else if !strings.Contains(st, "problem: BGP import policy refused "+wantRejected) || !strings.Contains(st, "from "+birdIP) {
			t.Errorf("%s: calicoctl status names no refused announcement:\n%s", h.Label, st)
		}
	}

	// The kernel: nothing hostile installed on either node.
	var installed []string
	for _, h := range w.Hosts {
		ours := ipRoute(h, "proto", "80")
		for _, dst := range hostile {
			for _, l := range strings.Split(ours, "\n") {
				f := strings.Fields(l)
				if len(f) == 0 {
					continue
				}
				if f[0] == strings.TrimSuffix(dst, "/32") || (dst == defaultRoute && f[0] == "default") || f[0] == dst {
					if strings.Contains(l, "via "+birdIP) {
						installed = append(installed, h.Label+": "+l)
					}
				}
			}
		}
		t.Logf("%s: ip route show proto 80:\n%s", h.Label, ours)
	}
	if len(installed) > 0 {
		t.Errorf("hostile announcements installed:\n%s", strings.Join(installed, "\n"))
	}
	for _, dst := range []string{h2Block.String(), worker3} {
		if out := ipRoute(h1, "exact", dst); !strings.Contains(out, "via "+h2.Addr().String()) {
			t.Errorf("host1: %s does not route via host2: %q", dst, out)
		}
	}
	if out, _ := h1.Run(ctx, "ip", "route", "get", w4.IP.String()); !strings.Contains(out, "via "+h2.Addr().String()) {
		t.Errorf("host1: worker-4 %s does not route via host2: %q", w4.IP, out)
	}
	if out := ipRoute(h2, "exact", h2Block.String()); !strings.HasPrefix(out, "blackhole") {
		t.Errorf("host2: its own block %s is no longer its blackhole: %q", h2Block, out)
	}
	if out := ipRoute(h2, "exact", legitimate); !strings.Contains(out, "via "+birdIP) {
		t.Errorf("host2: the unclaimed pool prefix %s is not installed via BIRD: %q", legitimate, out)
	}

	// Honest traffic: hosts reach each other and the outside, workloads
	// of one profile reach each other across hosts, including host2's block.
	traffic := []struct {
		what     string
		from     *lab.Netns
		src, dst netip.Addr
	}{
		{"host1 -> host2", h1.Netns, netip.Addr{}, h2.Addr()},
		{"host2 -> host1", h2.Netns, netip.Addr{}, h1.Addr()},
		{"host1 -> outside", h1.Netns, netip.Addr{}, w.Outside.IP},
		{"worker-1 -> worker-3", w1.Netns, netip.Addr{}, w3.IP},
		{"worker-3 -> worker-1", w3.Netns, netip.Addr{}, w1.IP},
		{"worker-1 -> worker-4 (host2's block)", w1.Netns, netip.Addr{}, w4.IP},
	}
	var flows []string
	for _, tr := range traffic {
		got := e2etest.PingReplies(ctx, tr.from, tr.src, tr.dst, 5)
		flows = append(flows, fmt.Sprintf("%s %d/5", tr.what, got))
		if got < 4 {
			t.Errorf("%s: %d of 5 pings answered", tr.what, got)
		}
	}

	// Nothing hostile left the agent retrying: the colliding default route
	// would be refused by the kernel on every pass.
	logPath := filepath.Join(w.StateDir, "log", "calico", "host1", "calico-node.log")
	logText, _ := os.ReadFile(logPath)
	retries, lines := 0, strings.Count(string(logText), "\n")
	for _, l := range strings.Split(string(logText), "\n") {
		if strings.Contains(l, "will retry") && strings.Contains(l, "0.0.0.0/0") {
			retries++
		}
	}
	t.Logf("host1's agent log: %d lines, %d retries of the default route", lines, retries)
	if retries > 0 {
		t.Errorf("host1's agent retried the default route %d times (log %s)", retries, logPath)
	}
	t.Logf("FIGURE: BGP route injection by a global peer (default, host2's /32, out-of-pool, host2's block %s and its half %s, worker-3's /32): hostile routes installed %d %v; rejected host1=%s host2=%s (want %s); unclaimed pool prefix %s installed; default-route retries in host1's log %d; traffic: %s",
		h2Block, h2Half, len(installed), installed, rejected["host1"], rejected["host2"], wantRejected, legitimate, retries, strings.Join(flows, ", "))
}

// TestPersistentRouteErrorBacksOff: an administrator's static route on
// host1 collides with a workload's route, so every pass of the agent fails
// to install it (the agent never touches a route of another protocol).
// Retrying must not become a hot loop: the agent backs off, doubling the
// delay up to 30 s, and still installs the route soon after the collision
// is gone. Honest traffic flows meanwhile.
func TestPersistentRouteErrorBacksOff(t *testing.T) {
	w := world(t, walkthrough.Options{}, true)
	ctx := e2etest.Ctx(t, 5*time.Minute)
	h1 := w.Hosts[0]
	w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]
	const blocked = "192.168.100.200"
	if out, err := h1.Run(ctx, "ip", "route", "add", blocked+"/32", "dev", "lo", "proto", "static"); err != nil {
		t.Fatalf("ip route add: %v %s", err, out)
	}
	if _, err := w.AddWorkload(ctx, h1, "worker-x", blocked); err != nil {
		t.Fatal(err)
	}
	e2etest.WaitFor(t, 30*time.Second, "host1 to report the colliding route", func() (bool, string) {
		st, _ := w.Ctl(ctx, h1, "status")
		return strings.Contains(st, "problem: ") && strings.Contains(st, blocked), st
	})
	logPath := filepath.Join(w.StateDir, "log", "calico", "host1", "calico-node.log")
	retries := func() int {
		b, _ := os.ReadFile(logPath)
		return strings.Count(string(b), "will retry")
	}
	const window = 20 * time.Second
	before := retries()
	time.Sleep(window)
	n := retries() - before
	// Backing off from 0.5 s (0.5, 1, 2, 4, 8, 16 s) gives about five
	// attempts in 20 s, fewer on a slow machine; a fixed 500 ms retry
	// gives 40 or more.
	if n >= 20 {
		t.Errorf("host1's agent retried %d times in %s: a hot loop (log %s)", n, window, logPath)
	}
	got := e2etest.PingReplies(ctx, w1.Netns, netip.Addr{}, w3.IP, 5)
	if got < 4 {
		t.Errorf("worker-1 -> worker-3: %d of 5 pings answered while host1 retried", got)
	}
	// The collision goes: the next retry (at most 30 s away) installs
	// the workload's route.
	if out, err := h1.Run(ctx, "ip", "route", "del", blocked+"/32", "dev", "lo", "proto", "static"); err != nil {
		t.Fatalf("ip route del: %v %s", err, out)
	}
	healed := e2etest.WaitFor(t, 45*time.Second, "host1 to install worker-x's route once the collision is gone", func() (bool, string) {
		out, _ := h1.Run(ctx, "ip", "route", "show", "exact", blocked+"/32")
		return strings.Contains(out, "dev cali") && strings.Contains(out, "proto 80"), out
	})
	t.Logf("FIGURE: persistent route error on host1: %d retries in %s (retrying every 500 ms would be 40); worker-1 -> worker-3 %d/5 meanwhile; route installed %s after the collision was removed",
		n, window, got, healed.Round(100*time.Millisecond))
}
