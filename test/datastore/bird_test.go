package dstest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/lab"
)

// birdConfig makes BIRD 2 an eBGP router (AS 65010) that peers with the
// calico node at nodeIP (AS 64512), installs what it learns over BGP in its
// namespace's kernel table, and originates static routes of its own.
// `protocol direct` gives BIRD the connected subnet, which it needs to
// resolve next hops (iBGP); the kernel protocol exports only BGP routes, so
// the blackholes behind the static routes stay inside BIRD.
func birdConfig(routerID, nodeIP netip.Addr, originate ...string) string {
	var routes strings.Builder
	for _, r := range originate {
		fmt.Fprintf(&routes, "\troute %s blackhole;\n", r)
	}
	return fmt.Sprintf(`log stderr all;
router id %[1]s;
protocol device { scan time 2; }
protocol direct { ipv4; interface "eth0"; }
protocol kernel {
	ipv4 { import none; export where source = RTS_BGP; };
}
protocol static {
	ipv4;
%[3]s}
protocol bgp calico {
	local %[1]s as 65010;
	neighbor %[2]s as 64512;
	ipv4 { import all; export where source = RTS_STATIC; };
}
`, routerID, nodeIP, routes.String())
}

// startBIRD runs BIRD on birdHost as birdConfig describes, peering with
// node and originating routes, until the test ends; it returns the control
// socket for birdc.
func startBIRD(t *testing.T, birdHost, node *lab.Host, originate ...string) (sock string) {
	t.Helper()
	dir := t.TempDir()
	conf, sock := filepath.Join(dir, "bird.conf"), filepath.Join(dir, "bird.ctl")
	if err := os.WriteFile(conf, []byte(birdConfig(birdHost.Addr(), node.Addr(), originate...)), 0o644); err != nil {
		t.Fatal(err)
	}
	bird, err := birdHost.Start("bird", "-f", "-c", conf, "-s", sock, "-P", filepath.Join(dir, "bird.pid"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- BIRD log\n%s", clip(bird.Log()))
		}
		bird.Stop() // by its process group; before the lab closes
	})
	return sock
}

// TestBIRDInterop: BIRD 2, a foreign BGP implementation, peers with a calico
// node added as a node-specific peer (`calicoctl node bgp peer add`). BIRD
// learns the node's workload block and installs it in its own kernel table;
// the node learns the two routes BIRD originates and installs the one inside
// its pool, while the import policy refuses the one outside every pool and
// `calicoctl status` counts it. A ping from BIRD's namespace to the workload
// then travels the routes BGP spread. Removing the peer withdraws both ways.
func TestBIRDInterop(t *testing.T) {
	w := newWorld(t, 1)
	h1 := w.hosts[0]
	birdHost, err := w.lab.AddHost("bird", w.fab, "10.0.0.10/24", "")
	if err != nil {
		t.Fatal(err)
	}
	w.startEtcd(h1)
	w.startNode(h1)
	w.ok(h1, "pool", "add", "192.168.80.0/24")
	w.ok(h1, "profile", "add", "P")
	w.ok(h1, "profile", "P", "rule", "add", "inbound", "allow", "icmp", "from", "cidr", "10.0.0.0/24")
	_, ip := w.addWorkload(h1, "w1", "auto")
	w.ok(h1, "container", "w1", "profile", "append", "P")
	var blocks []struct{ CIDR string }
	if err := json.Unmarshal([]byte(w.ok(h1, "ipam", "show", "-o", "json")), &blocks); err != nil || len(blocks) != 1 {
		t.Fatalf("ipam show: %v %+v", err, blocks)
	}
	block := blocks[0].CIDR
	// One route outside every pool (refused), one in the pool's range no
	// host claimed (installed).
	const outside = "203.0.113.0/24"
	originated := "192.168.80.0/26"
	for _, p := range []string{"192.168.80.0/26", "192.168.80.64/26", "192.168.80.128/26", "192.168.80.192/26"} {
		if p != block {
			originated = p
			break
		}
	}

	sock := startBIRD(t, birdHost, h1, originated, outside)
	birdc := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, _ := birdHost.Run(ctx, append([]string{"birdc", "-s", sock}, args...)...)
		return out
	}
	ipRoute := func(h *lab.Host, dst string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, _ := h.Run(ctx, "ip", "route", "show", dst)
		return strings.TrimSpace(out)
	}

	start := time.Now()
	w.ok(h1, "node", "bgp", "peer", "add", birdHost.Addr().String(), "as", "65010")
	established := waitFor(t, 60*time.Second, "BIRD's session with the calico node", func() (bool, string) {
		out := birdc("show", "protocols", "calico")
		return strings.Contains(out, "Established"), out
	})
	learned := waitFor(t, 30*time.Second, "BIRD to learn the workload block "+block, func() (bool, string) {
		out := birdc("show", "route", "for", ip.String())
		// "192.168.80.128/26 unicast [calico ...] * (100) [AS64512i] via 10.0.0.1": from our session.
		return strings.Contains(out, block) && strings.Contains(out, "via "+h1.Addr().String()) && strings.Contains(out, "[calico "), out
	})
	waitFor(t, 30*time.Second, "BIRD to install the block in its kernel table", func() (bool, string) {
		out := ipRoute(birdHost, block)
		return strings.Contains(out, "via "+h1.Addr().String()) && strings.Contains(out, "proto bird"), out
	})
	waitFor(t, 30*time.Second, "the calico node to install BIRD's route "+originated, func() (bool, string) {
		out := ipRoute(h1, originated)
		return strings.Contains(out, "via "+birdHost.Addr().String()) && strings.Contains(out, "proto 80"), out
	})
	installed := time.Since(start)
	// The agent reports sessions once a second or so: columns peer, type,
	// AS, state, since, routes received, rejected.
	waitFor(t, 20*time.Second, "calicoctl status to show the BIRD session established, 2 routes received, 1 rejected", func() (bool, string) {
		status := w.ok(h1, "status")
		for _, l := range strings.Split(status, "\n") {
			if f := strings.Fields(l); len(f) == 7 && f[0] == birdHost.Addr().String() && f[1] == "node" && f[2] == "65010" && f[3] == "Established" &&
				f[5] == "2" && f[6] == "1" {
				return strings.Contains(status, outside+" via "+birdHost.Addr().String()+" from "+birdHost.Addr().String()+" (outside every pool)"), status
			}
		}
		return false, status
	})
	if out := ipRoute(h1, outside); out != "" {
		t.Errorf("the calico node installed BIRD's out-of-pool route: %q", out)
	}
	// The data path the routes describe: BIRD's namespace reaches the
	// workload through the block route it learned.
	birdToWorkload := ping(birdHost.Netns, ip)
	if !birdToWorkload {
		t.Errorf("BIRD's namespace cannot ping the workload %s over the learned route", ip)
	}
	t.Logf("FIGURE: BIRD interop: session Established %s after `node bgp peer add`; BIRD had the block %s %s after it; the node installed BIRD's %s %s after it and refused its out-of-pool %s; ping BIRD->workload ok=%v",
		established.Round(time.Millisecond), block, (established + learned).Round(time.Millisecond), originated, installed.Round(time.Millisecond), outside, birdToWorkload)

	// Withdrawal: removing the peer ends the session; each side drops what
	// it learned from the other.
	w.ok(h1, "node", "bgp", "peer", "remove", birdHost.Addr().String())
	withdrawn := waitFor(t, 60*time.Second, "both sides to drop each other's routes", func() (bool, string) {
		a, b := ipRoute(h1, originated), ipRoute(birdHost, block)
		return a == "" && b == "", "calico node: " + a + "\nBIRD: " + b
	})
	t.Logf("FIGURE: BIRD interop: routes withdrawn on both sides %s after `node bgp peer remove`", withdrawn.Round(time.Millisecond))
}

// TestBIRDPrefixLimit: a foreign peer that sends more prefixes than its
// limit (`--max-prefixes`) has its session reset before any of them reach
// the kernel and kept down, and `calicoctl status` says so and how to
// accept them; the same peer under a new limit it keeps to gets its
// routes installed. BIRD
// plays a router leaking 40 routes inside the pool, where the import
// policy alone would accept every one.
func TestBIRDPrefixLimit(t *testing.T) {
	w := newWorld(t, 1)
	h1 := w.hosts[0]
	birdHost, err := w.lab.AddHost("bird", w.fab, "10.0.0.10/24", "")
	if err != nil {
		t.Fatal(err)
	}
	w.startEtcd(h1)
	w.startNode(h1)
	w.ok(h1, "pool", "add", "192.168.80.0/20")
	// 40 /30s in the pool's last /24, which no host claims a block of.
	var leaked []string
	for i := 0; i < 40; i++ {
		leaked = append(leaked, fmt.Sprintf("192.168.95.%d/30", 4*i))
	}
	startBIRD(t, birdHost, h1, leaked...)
	birdRoutes := func() int { // routes the node installed with BIRD as the gateway
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, _ := h1.Run(ctx, "ip", "-4", "route", "show", "proto", "80")
		n := 0
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "192.168.95.") && strings.Contains(l, "via "+birdHost.Addr().String()) {
				n++
			}
		}
		return n
	}
	peer := birdHost.Addr().String()

	w.ok(h1, "node", "bgp", "peer", "add", peer, "as", "65010", "--max-prefixes", "20")
	shows := w.ok(h1, "node", "bgp", "peer", "show")
	if !strings.Contains(shows, peer) || !strings.Contains(shows, "20") {
		t.Errorf("node bgp peer show does not list the limit:\n%s", shows)
	}
	waitFor(t, 90*time.Second, "calicoctl status to report the session reset for going over 20 prefixes", func() (bool, string) {
		status := w.ok(h1, "status")
		return strings.Contains(status, "prefix limit: "+peer+" sent more than 20 prefixes") &&
			strings.Contains(status, "calicoctl node bgp peer add "+peer+" as 65010 --max-prefixes N"), status
	})
	// The UPDATE that went over the limit was dropped whole and the
	// session with it: none of the leaked routes is in the kernel, now or
	// after BIRD's next attempts.
	if n := birdRoutes(); n != 0 {
		t.Errorf("%d of BIRD's 40 routes installed although it went over its limit of 20", n)
	}
	// GoBGP keeps a session reset for its limit down (administratively,
	// until the limit changes): no flapping, and still nothing installed.
	out := w.ok(h1, "status", "-o", "json")
	var st struct {
		BGPPeers []struct {
			IP          string `json:"ip"`
			State       string `json:"state"`
			MaxPrefixes int    `json:"maxPrefixes"`
			LimitResets int    `json:"limitResets"`
		} `json:"bgpPeers"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.BGPPeers) != 1 ||
		st.BGPPeers[0].State == "Established" || st.BGPPeers[0].MaxPrefixes != 20 || st.BGPPeers[0].LimitResets != 1 {
		t.Errorf("status after the reset: want the session down, limit 20, 1 reset: %v\n%s", err, out)
	}
	if n := birdRoutes(); n != 0 {
		t.Errorf("%d of BIRD's 40 routes installed after its session was reset", n)
	}

	// Honest: the same peer under a limit it keeps to.
	w.ok(h1, "node", "bgp", "peer", "add", peer, "as", "65010", "--max-prefixes", "100")
	waitFor(t, 90*time.Second, "the node to install BIRD's 40 routes under a limit of 100", func() (bool, string) {
		n := birdRoutes()
		return n == 40, fmt.Sprintf("%d routes", n)
	})
	// The reset belonged to the session under the old limit: status must
	// not say the peer went over the new one.
	var status string
	waitFor(t, 60*time.Second, "calicoctl status to show the session under the new limit established", func() (bool, string) {
		status = w.ok(h1, "status")
		return strings.Contains(status, "Established"), status
	})
	if strings.Contains(status, "prefix limit: "+peer) {
		t.Errorf("status still reports a prefix limit reset after the limit was raised and the routes accepted:\n%s", status)
	}

	// Bad input: refused with a line that says what is allowed, nothing stored.
	r := w.ctl(h1, "node", "bgp", "peer", "add", "10.0.0.11", "as", "65011", "--max-prefixes", "0")
	if r.code == 0 || !strings.Contains(r.stderr, "--max-prefixes 0: must be 1 to") {
		t.Errorf("--max-prefixes 0 accepted or unclear: %+v", r)
	}
	if out := w.ok(h1, "node", "bgp", "peer", "show"); strings.Contains(out, "10.0.0.11") {
		t.Errorf("a refused peer was stored:\n%s", out)
	}
}
