package security

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// Endpoint records that lie: written straight into the datastore, as anyone
// with write access to etcd (or a buggy client) can, they name another
// workload's veth, or claim an address IPAM holds for another workload or
// for nobody. The agents must believe none of them (no route, no policy, no
// tag membership), say so in `calicoctl status` and `calicoctl ipam check`,
// and `container remove` of such a record must not delete the interface it
// names.
func TestLyingEndpoints(t *testing.T) {
	w := world(t, walkthrough.Options{}, true)
	ctx := e2etest.Ctx(t, 6*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	w1, w2, w3 := w.Workloads["worker-1"], w.Workloads["worker-2"], w.Workloads["worker-3"]
	for _, wl := range []*walkthrough.Workload{w1, w2, w3} {
		e2etest.ListenTCP(t, wl.Netns, "0.0.0.0:8080")
	}
	// Honest traffic first, so every "blocked" below is policy at work.
	routed(t, ctx, h2, w1.IP, h1)
	mustOpen(t, ctx, "worker-3 -> worker-1 (PROF_1)", w3, w1)
	mustOpen(t, ctx, "worker-1 -> worker-3 (PROF_1)", w1, w3)
	mustBlock(t, ctx, "worker-2 -> worker-1 (PROF_2 to PROF_1)", w2, w1)
	mustBlock(t, ctx, "worker-3 -> worker-2 (PROF_1 to PROF_2)", w3, w2)

	evil := hostileClient(t, h1, w.Etcd)
	w1veth := api.WorkloadIfaceName(h1.Label, w1.Name)
	a50 := netip.MustParseAddr("192.168.100.50")
	a60 := netip.MustParseAddr("192.168.100.60")
	// 1. A record naming worker-1's veth, in PROF_2, with an address its
	// own handle really holds: only the interface is a lie.
	if err := evil.IPAM.Assign(ctx, a50, api.WorkloadHandle(h1.Label, "evil-veth"), h1.Label); err != nil {
		t.Fatal(err)
	}
	putEndpoint(t, ctx, evil, api.Endpoint{Node: h1.Label, Workload: "evil-veth", InterfaceName: w1veth,
		IPv4Nets: []string{a50.String() + "/32"}, Profiles: []string{"PROF_2"}})
	// 2. A record claiming worker-3's address (held by host2~worker-3) for PROF_2.
	putEndpoint(t, ctx, evil, api.Endpoint{Node: h1.Label, Workload: "evil-steal", InterfaceName: api.WorkloadIfaceName(h1.Label, "evil-steal"),
		IPv4Nets: []string{w3.IP.String() + "/32"}, Profiles: []string{"PROF_2"}})
	// 3. A record claiming a free address for PROF_1, waiting for whoever
	// gets that address next.
	putEndpoint(t, ctx, evil, api.Endpoint{Node: h1.Label, Workload: "evil-free", InterfaceName: api.WorkloadIfaceName(h1.Label, "evil-free"),
		IPv4Nets: []string{a60.String() + "/32"}, Profiles: []string{"PROF_2", "PROF_1"}})
	// An honest workload in PROF_2 then gets that address.
	w4, err := w.AddWorkload(ctx, h1, "worker-4", a60.String())
	if err != nil {
		t.Fatal(err)
	}
	ctl(t, ctx, w, h1, "container", "worker-4", "profile", "append", "PROF_2")
	e2etest.ListenTCP(t, w4.Netns, "0.0.0.0:8080")
	// worker-4 reaching worker-2 shows host1's agent has applied every
	// record written before it.
	mustOpen(t, ctx, "worker-4 -> worker-2 (PROF_2, honest)", w4, w2)

	attacks := []struct {
		what     string
		from, to *walkthrough.Workload
	}{
		{"worker-2 -> worker-1 (a record gave worker-1's veth PROF_2)", w2, w1},
		{"worker-3 -> worker-2 (a record put worker-3's address in PROF_2)", w3, w2},
		{"worker-4 -> worker-3 (a record put worker-4's address in PROF_1 before it had it)", w4, w3},
	}
	succeeded := 0
	for _, a := range attacks {
		if err := e2etest.Blocked(ctx, a.from.Netns, netip.Addr{}, e2etest.AP(a.to.IP, 8080)); err != nil {
			succeeded++
			t.Errorf("%s: %v", a.what, err)
		}
	}
	// The lying interface must carry no route either: traffic for .50 would
	// otherwise go to worker-1.
	route50, _ := h1.Run(ctx, "ip", "-4", "route", "show", "exact", a50.String()+"/32")
	if strings.Contains(route50, w1veth) {
		t.Errorf("host1 routes %s, an address of the lying record, into worker-1's veth: %s", a50, route50)
	}
	// Honest traffic is untouched.
	mustOpen(t, ctx, "worker-3 -> worker-1 (PROF_1) with the lying records present", w3, w1)
	mustOpen(t, ctx, "worker-1 -> worker-3 (PROF_1) with the lying records present", w1, w3)
	mustOpen(t, ctx, "worker-2 -> worker-4 (PROF_2) with the lying records present", w2, w4)

	// calicoctl status (host1's agent) and ipam check name all three.
	liars := []string{"evil-veth", "evil-steal", "evil-free"}
	var status string
	listed := func(out string) int {
		n := 0
		for _, l := range liars {
			if strings.Contains(out, h1.Label+"/"+l) {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		status, _ = w.Ctl(ctx, h1, "status")
		if listed(status) == len(liars) || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if listed(status) != len(liars) {
		t.Errorf("calicoctl status on host1 lists %d of the %d lying endpoints:\n%s", listed(status), len(liars), status)
	}
	check, checkErr := w.Ctl(ctx, h1, "ipam", "check")
	if checkErr == nil || listed(check) != len(liars) {
		t.Errorf("calicoctl ipam check lists %d of the %d lying endpoints (err %v):\n%s", listed(check), len(liars), checkErr, check)
	}
	// The agent logs each once, not on every pass (several passes ran:
	// worker-4 was added and changed since).
	logged := agentLogCount(t, w, h1, "evil-veth")
	if logged != 1 {
		t.Errorf("host1's agent logged the lying record evil-veth %d times, want once", logged)
	}

	// container remove of the record naming worker-1's veth removes the
	// record and its own address, and leaves worker-1's veth alone.
	out, rmErr := w.Ctl(ctx, h1, "container", "remove", "evil-veth")
	if rmErr != nil {
		t.Errorf("container remove evil-veth: %v", rmErr)
	}
	w1vethKept := linkExists(ctx, h1.Netns, w1veth)
	if !w1vethKept {
		t.Errorf("container remove of a record naming worker-1's veth deleted worker-1's veth (output %q)", out)
	} else if !strings.Contains(out, w1veth) {
		t.Errorf("container remove did not say it left %s alone: %q", w1veth, out)
	}
	w1after := e2etest.Opens(ctx, w3.Netns, netip.Addr{}, e2etest.AP(w1.IP, 8080))
	if w1after != nil {
		t.Errorf("worker-3 -> worker-1 after container remove evil-veth: %v", w1after)
	}
	for _, l := range liars[1:] {
		ctl(t, ctx, w, h1, "container", "remove", l)
	}
	// Removing the liars released their own handles only.
	for _, held := range []struct {
		a      netip.Addr
		handle string
	}{{a50, ""}, {w3.IP, api.WorkloadHandle(h2.Label, w3.Name)}, {a60, api.WorkloadHandle(h1.Label, w4.Name)}} {
		info, err := evil.IPAM.Info(ctx, held.a)
		if err != nil {
			t.Fatal(err)
		}
		if got := map[bool]string{true: info.Handle}[info.Assigned]; got != held.handle {
			t.Errorf("after removing the lying records, %s is held by %q, want %q", held.a, got, held.handle)
		}
	}
	if out, err := w.Ctl(ctx, h1, "ipam", "check"); err != nil {
		t.Errorf("ipam check after removing the lying records: %v\n%s", err, out)
	}
	t.Logf("FIGURE: lying endpoint records: %d/%d policy attacks got through (PROF_2 onto worker-1's veth, worker-3's address into PROF_2, a pre-claimed address into PROF_1); "+
		"route for the liar's address into worker-1's veth: %t; listed by status %d/3, by ipam check %d/3; logged %d time(s); "+
		"container remove of the record naming worker-1's veth kept it: %t; honest paths open: worker-3<->worker-1, worker-2->worker-4",
		succeeded, len(attacks), strings.Contains(route50, w1veth), listed(status), listed(check), logged, w1vethKept)
}

// hostileClient is a datastore client whose connections are made inside
// h's namespace: what an attacker with write access to etcd holds.
func hostileClient(t *testing.T, h *lab.Host, etcd string) *client.Client {
	t.Helper()
	return client.New(datastore.Adopt(e2etest.EtcdFrom(t, h, etcd)))
}

func putEndpoint(t *testing.T, ctx context.Context, c *client.Client, ep api.Endpoint) {
	t.Helper()
	if ep.Orchestrator == "" {
		ep.Orchestrator = "netns"
	}
	if ep.WorkloadIface == "" {
		ep.WorkloadIface = "eth0"
	}
	if err := c.DS.Put(ctx, datastore.EndpointKey(ep.Node, ep.Workload), ep); err != nil {
		t.Fatal(err)
	}
}

func mustOpen(t *testing.T, ctx context.Context, what string, from, to *walkthrough.Workload) {
	t.Helper()
	if err := e2etest.Opens(ctx, from.Netns, netip.Addr{}, e2etest.AP(to.IP, 8080)); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func mustBlock(t *testing.T, ctx context.Context, what string, from, to *walkthrough.Workload) {
	t.Helper()
	if err := e2etest.BecomesBlocked(ctx, from.Netns, e2etest.AP(to.IP, 8080)); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// routed waits until host h routes dst via host via: BGP sessions come up
// on their own schedule after the nodes start, and a new block is
// announced a moment after its first address is taken.
func routed(t *testing.T, ctx context.Context, h *lab.Host, dst netip.Addr, via *lab.Host) {
	t.Helper()
	e2etest.WaitFor(t, 60*time.Second, fmt.Sprintf("%s routes %s via %s", h.Label, dst, via.Label), func() (bool, string) {
		out, err := h.Run(ctx, "ip", "route", "get", dst.String())
		return err == nil && strings.Contains(out, "via "+via.Addr().String()), out
	})
}

func linkExists(ctx context.Context, ns *lab.Netns, name string) bool {
	_, err := ns.Run(ctx, "ip", "link", "show", "dev", name)
	return err == nil
}

// agentLogCount counts the lines of h's agent log that mention s.
func agentLogCount(t *testing.T, w *walkthrough.World, h *lab.Host, s string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(w.StateDir, "log", "calico", h.Label, "calico-node.log"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// ctlEnv runs calicoctl on h as World.Ctl does, with extra environment.
func ctlEnv(ctx context.Context, w *walkthrough.World, h *lab.Host, env []string, args ...string) (string, error) {
	argv := append([]string{"env", "ETCD_AUTHORITY=" + w.Etcd, "CALICO_NODENAME=" + h.Label,
		"CALICO_STATE_DIR=" + w.StateDir, "DOCKER_HOST=none"}, env...)
	argv = append(append(argv, filepath.Join(e2etest.BinDir, "calicoctl")), args...)
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	out, err := h.Run(ctx, argv...)
	if err != nil {
		return out, fmt.Errorf("calicoctl %s (%s): %w", strings.Join(args, " "), strings.Join(env, " "), err)
	}
	return out, nil
}
