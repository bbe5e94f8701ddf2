package security

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/walkthrough"
)

// birdReflector makes BIRD 2 an iBGP route reflector (AS 64512) for the
// nodes: it reflects their routes honestly, next hops kept, and adds its
// own announcements (static: a blackhole gets itself as next hop, a "via"
// route that gateway).
func birdReflector(routerID netip.Addr, nodes []netip.Addr, static []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "log stderr all;\nrouter id %s;\nprotocol device { scan time 2; }\n", routerID)
	b.WriteString("protocol static {\n\tipv4;\n")
	for _, r := range static {
		fmt.Fprintf(&b, "\troute %s;\n", r)
	}
	b.WriteString("}\n")
	for i, n := range nodes {
		fmt.Fprintf(&b, `protocol bgp node%d {
	local %s as 64512;
	neighbor %s as 64512;
	direct;
	rr client;
	rr cluster id 1.0.0.9;
	ipv4 { import all; export all; };
}
`, i+1, routerID, n)
	}
	return b.String()
}

// TestHostileRouteReflector: a node recorded as a route reflector (its
// record written by whoever holds the datastore; its BGP speaker is BIRD)
// is the nodes' only peer, the mesh off. It reflects the nodes' routes
// honestly, so workloads across hosts reach each other through routes it
// passed on; but the more specific of host2's block it announces with
// itself as next hop, and a pool range it announces with a next hop that
// is no node's, are refused: accepting reflected routes did not make a
// reflector able to pull traffic anywhere.
func TestHostileRouteReflector(t *testing.T) {
	w := world(t, walkthrough.Options{}, true)
	ctx := e2etest.Ctx(t, 6*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	w1 := w.Workloads["worker-1"]
	w4, err := w.AddWorkload(ctx, h2, "worker-4", "auto")
	if err != nil {
		t.Fatal(err)
	}
	ctl(t, ctx, w, h2, "container", "worker-4", "profile", "append", "PROF_1")
	h2Block, _ := w4.IP.Prefix(26)
	h2Half, _ := w4.IP.Prefix(27)
	// A range of the pool that no host holds.
	var blocks []struct{ CIDR string }
	if err := json.Unmarshal([]byte(ctl(t, ctx, w, h1, "ipam", "show", "-o", "json")), &blocks); err != nil {
		t.Fatal(err)
	}
	claimed := map[string]bool{}
	for _, b := range blocks {
		claimed[b.CIDR] = true
	}
	unclaimed := ""
	for _, p := range []string{"192.168.100.0/26", "192.168.100.64/26", "192.168.100.128/26", "192.168.100.192/26"} {
		if !claimed[p] {
			unclaimed = p
			break
		}
	}
	if unclaimed == "" || !claimed[h2Block.String()] {
		t.Fatalf("blocks %+v: want host2's %s claimed and one block free", blocks, h2Block)
	}
	gateway := "10.0.0.254"

	birdHost, err := w.Lab.AddHost("bird", h1.Fabric, "10.0.0.10/24", "")
	if err != nil {
		t.Fatal(err)
	}
	hostile := hostileClient(t, h1, w.Etcd)
	rr := api.Node{Name: "evil-rr", IPv4: "10.0.0.10/24", RouteReflector: true}
	if err := hostile.DS.Put(ctx, datastore.NodeKey(rr.Name), rr); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf, sock := filepath.Join(dir, "bird.conf"), filepath.Join(dir, "bird.ctl")
	cfg := birdReflector(birdHost.Addr(), []netip.Addr{h1.Addr(), h2.Addr()},
		[]string{h2Half.String() + " blackhole", unclaimed + " via " + gateway})
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
		bird.Stop()
	})
	status := func() string {
		out, err := w.Ctl(ctx, h1, "status")
		if err != nil {
			return err.Error()
		}
		return out
	}
	ipRoute := func(args ...string) string {
		out, _ := h1.Run(ctx, append([]string{"ip", "route", "show"}, args...)...)
		return strings.TrimSpace(out)
	}

	ctl(t, ctx, w, h1, "bgp", "node-mesh", "off")
	ctl(t, ctx, w, h1, "bgp", "peer", "add", birdHost.Addr().String(), "as", "64512")
	// Honest reflection: host2's block reaches host1 through BIRD, next
	// hop host2, and is installed.
	e2etest.WaitFor(t, 90*time.Second, "host1 installs host2's block "+h2Block.String()+" via host2, reflected by BIRD", func() (bool, string) {
		out := ipRoute("exact", h2Block.String())
		return strings.Contains(out, "via "+h2.Addr().String()+" "), out + "\n" + status()
	})
	e2etest.WaitFor(t, 30*time.Second, "host1's status: the reflector's session, its two hostile routes refused", func() (bool, string) {
		st := status()
		row := peerRow(st, birdHost.Addr().String())
		return row["state"] == "Established" && row["peer type"] == "global, reflector" && row["rejected"] == "2" &&
			strings.Contains(st, "route reflector evil-rr passed on next hop "+gateway+", which is no node's") &&
			strings.Contains(st, h2Half.String()+" via 10.0.0.10 from 10.0.0.10 (inside block "+h2Block.String()+" of node host2"), st
	})
	var installed []string
	for _, p := range []string{h2Half.String(), unclaimed} {
		if out := ipRoute("exact", p); out != "" {
			installed = append(installed, out)
		}
	}
	if len(installed) > 0 {
		t.Errorf("host1 installed the hostile reflector's routes: %q", installed)
	}
	reach := walkthrough.Probe
	ok1, _ := reach(ctx, w1.Netns, w4.IP, true)
	ok2, _ := reach(ctx, w4.Netns, w1.IP, true)
	if !ok1 || !ok2 {
		t.Errorf("honest traffic through reflected routes: worker-1 -> worker-4 %v, worker-4 -> worker-1 %v", ok1, ok2)
	}
	t.Logf("FIGURE: hostile route reflector (host2's %s with itself as next hop, %s via %s): hostile routes installed %d; worker-1 <-> worker-4 over reflected routes: %v/%v",
		h2Half, unclaimed, gateway, len(installed), ok1, ok2)
}
