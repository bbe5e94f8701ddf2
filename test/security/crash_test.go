package security

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
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

// sweepGrace is the agents' grace period in these tests: long enough that a
// rerun right after a kill meets the leftovers (not the sweeper's work),
// short enough to watch the sweeper act.
const sweepGrace = 10 * time.Second

// container add and remove killed (SIGKILL, through the test-only fault
// hook) right after each of their steps: rerunning the same command
// succeeds and leaves exactly one veth, one record and the address held
// once, and traffic flows. Leftovers nobody reruns for (a veth and a
// handle without a record) are swept by the agent after its grace period,
// reported in status, while live workloads are untouched. ipam check is
// clean at the end.
func TestCrashSafeContainers(t *testing.T) {
	w := world(t, walkthrough.Options{NodeArgs: []string{"--sweep-grace=" + sweepGrace.String()}}, true)
	ctx := e2etest.Ctx(t, 8*time.Minute)
	h1 := w.Hosts[0]
	w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]
	e2etest.ListenTCP(t, w1.Netns, "0.0.0.0:8080")
	e2etest.ListenTCP(t, w3.Netns, "0.0.0.0:8080")
	ds := hostileClient(t, h1, w.Etcd) // here only to read what calicoctl left
	baseVeths := caliLinks(t, ctx, h1.Netns)

	var live []*walkthrough.Workload
	var figures []string
	for i, step := range []string{"after-address", "after-veth", "after-record"} {
		name := "crash-" + step
		ip := netip.AddrFrom4([4]byte{192, 168, 100, byte(70 + i)})
		ns, err := w.Lab.AddWorkloadNetns(h1, name)
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"container", "add", name, ip.String(), "--netns", ns.Path, "--profile", "PROF_1"}
		out, err := ctlEnv(ctx, w, h1, []string{client.FaultEnv + "=" + step}, args...)
		if !killed(err) {
			t.Fatalf("container add with %s=%s was not killed: %v\n%s", client.FaultEnv, step, err, out)
		}
		left := leftovers(t, ctx, ds, h1, name, ip)
		out, err = w.Ctl(ctx, h1, args...)
		figures = append(figures, fmt.Sprintf("add killed %s left {%s}, rerun: %s", step, left, okOr(err)))
		if err != nil {
			t.Errorf("rerun of container add %s after a kill %s: %v", name, step, err)
			continue
		}
		wl := &walkthrough.Workload{Name: name, Host: h1, Netns: ns, IP: ip}
		live = append(live, wl)
		assertWired(t, ctx, ds, h1, wl)
		e2etest.ListenTCP(t, ns, "0.0.0.0:8080")
		routed(t, ctx, w.Hosts[1], ip, h1)
		mustOpen(t, ctx, "worker-3 -> "+name+" (PROF_1) after the rerun", w3, wl)
		mustOpen(t, ctx, name+" -> worker-3 (PROF_1) after the rerun", wl, w3)
		if got, want := len(caliLinks(t, ctx, h1.Netns)), len(baseVeths)+len(live); got != want {
			t.Errorf("host1 has %d cali interfaces after rerunning %s, want %d", got, name, want)
		}
	}

	// container remove killed after each of its steps, then rerun.
	for i, step := range []string{"after-record", "after-veth", ""} {
		name := "rm-" + step
		if step == "" {
			name = "rm-plain" // the plain remove below leaves nothing either
		}
		ip := netip.AddrFrom4([4]byte{192, 168, 100, byte(75 + i)})
		wl, err := w.AddWorkload(ctx, h1, name, ip.String())
		if err != nil {
			t.Fatal(err)
		}
		if step != "" {
			out, err := ctlEnv(ctx, w, h1, []string{client.FaultEnv + "=" + step}, "container", "remove", name)
			if !killed(err) {
				t.Fatalf("container remove with %s=%s was not killed: %v\n%s", client.FaultEnv, step, err, out)
			}
		}
		left := leftovers(t, ctx, ds, h1, name, wl.IP)
		_, err = w.Ctl(ctx, h1, "container", "remove", name)
		if step != "" {
			figures = append(figures, fmt.Sprintf("remove killed %s left {%s}, rerun: %s", step, left, okOr(err)))
		}
		if err != nil {
			t.Errorf("container remove %s (after a kill %s): %v", name, step, err)
		}
		if left := leftovers(t, ctx, ds, h1, name, wl.IP); left != "nothing" {
			t.Errorf("after container remove %s: %s remain", name, left)
		}
		// With nothing left, remove is an error again.
		if out, err := w.Ctl(ctx, h1, "container", "remove", name); err == nil || !strings.Contains(err.Error(), "unknown container") {
			t.Errorf("container remove of %s with nothing left: %v\n%s", name, err, out)
		}
	}
	if got, want := len(caliLinks(t, ctx, h1.Netns)), len(baseVeths)+len(live); got != want {
		t.Errorf("host1 has %d cali interfaces after the removes, want %d", got, want)
	}

	// Leftovers nobody reruns for: the agent sweeps them after its grace
	// period. A foreign cali* link (not a name we derive) stays.
	type orphan struct {
		name string
		ip   netip.Addr
		step string
	}
	orphans := []orphan{{"orphan-veth", netip.MustParseAddr("192.168.100.80"), "after-veth"}, {"orphan-handle", netip.MustParseAddr("192.168.100.81"), "after-address"}}
	orphaned := time.Now() // no leftover is older
	for _, o := range orphans {
		ns, err := w.Lab.AddWorkloadNetns(h1, o.name)
		if err != nil {
			t.Fatal(err)
		}
		out, err := ctlEnv(ctx, w, h1, []string{client.FaultEnv + "=" + o.step}, "container", "add", o.name, o.ip.String(), "--netns", ns.Path)
		if !killed(err) {
			t.Fatalf("container add %s with %s=%s was not killed: %v\n%s", o.name, client.FaultEnv, o.step, err, out)
		}
	}
	foreign := "calinotours"
	if _, err := h1.Run(ctx, "ip", "link", "add", foreign, "type", "veth", "peer", "name", "calinotours-p"); err != nil {
		t.Fatal(err)
	}
	defer h1.Run(context.Background(), "ip", "link", "del", foreign)
	orphanVeth := api.WorkloadIfaceName(h1.Label, "orphan-veth")
	if !linkExists(ctx, h1.Netns, orphanVeth) {
		t.Fatalf("the kill after-veth left no veth %s to sweep", orphanVeth)
	}
	swept := func() (bool, string) {
		var left []string
		for _, o := range orphans {
			// A slow datastore read is polled again, not a failure.
			if l, err := findLeftovers(ctx, ds, h1, o.name, o.ip); err != nil || l != "nothing" {
				left = append(left, fmt.Sprintf("%s: %s %v", o.name, l, err))
			}
		}
		return len(left) == 0, strings.Join(left, "; ")
	}
	took := e2etest.WaitFor(t, sweepGrace+60*time.Second, "the agent sweeps the leftovers", swept)
	sweptAfter := time.Since(orphaned)
	if sweptAfter < sweepGrace {
		t.Errorf("leftovers were swept %s after they appeared, before the grace period of %s", sweptAfter.Round(time.Millisecond), sweepGrace)
	}
	// The agent writes its status within a second of a change.
	e2etest.WaitFor(t, 15*time.Second, "calicoctl status reports what was swept", func() (bool, string) {
		status, err := w.Ctl(ctx, h1, "status")
		for _, want := range []string{orphanVeth, api.WorkloadHandle(h1.Label, "orphan-veth"), api.WorkloadHandle(h1.Label, "orphan-handle")} {
			if err != nil || !strings.Contains(status, "swept: ") || !strings.Contains(status, want) {
				return false, fmt.Sprintf("%s missing (%v):\n%s", want, err, status)
			}
		}
		return true, ""
	})
	if !linkExists(ctx, h1.Netns, foreign) {
		t.Errorf("the sweeper deleted %s, a cali* veth whose name is not one we derive", foreign)
	}
	// Live workloads are untouched.
	for _, wl := range []*walkthrough.Workload{w1, w.Workloads["worker-2"]} {
		if !linkExists(ctx, h1.Netns, api.WorkloadIfaceName(h1.Label, wl.Name)) {
			t.Errorf("the sweeper deleted %s's veth", wl.Name)
		}
		if info, err := ds.IPAM.Info(ctx, wl.IP); err != nil || info.Handle != api.WorkloadHandle(h1.Label, wl.Name) {
			t.Errorf("%s's address after the sweep: %+v %v", wl.Name, info, err)
		}
	}
	mustOpen(t, ctx, "worker-3 -> worker-1 after the sweep", w3, w1)
	mustOpen(t, ctx, "worker-1 -> worker-3 after the sweep", w1, w3)
	if out, err := w.Ctl(ctx, h1, "ipam", "check"); err != nil {
		t.Errorf("ipam check at the end: %v\n%s", err, out)
	}
	t.Logf("FIGURE: crash safety: %s; leftovers of kills nobody reran (a veth and two handles) swept %s after they appeared (grace %s, waited %s), a foreign cali* veth kept: %t; ipam check clean",
		strings.Join(figures, "; "), sweptAfter.Round(100*time.Millisecond), sweepGrace, took.Round(100*time.Millisecond), linkExists(ctx, h1.Netns, foreign))
}

// killed says calicoctl died of SIGKILL (the fault hook), not of an error.
func killed(err error) bool {
	return err != nil && strings.Contains(err.Error(), "signal: killed")
}

func okOr(err error) string {
	if err == nil {
		return "ok"
	}
	return "failed: " + err.Error()
}

// leftovers describes what exists of workload name on h: its veth, its
// endpoint record, its IPAM handle, and whether ip is assigned.
func leftovers(t *testing.T, ctx context.Context, ds *client.Client, h *lab.Host, name string, ip netip.Addr) string {
	t.Helper()
	s, err := findLeftovers(ctx, ds, h, name, ip)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func findLeftovers(ctx context.Context, ds *client.Client, h *lab.Host, name string, ip netip.Addr) (string, error) {
	var have []string
	if linkExists(ctx, h.Netns, api.WorkloadIfaceName(h.Label, name)) {
		have = append(have, "veth")
	}
	for what, key := range map[string]string{"record": datastore.EndpointKey(h.Label, name), "handle": datastore.HandleKey(api.WorkloadHandle(h.Label, name))} {
		if _, _, err := ds.DS.GetRaw(ctx, key); err == nil {
			have = append(have, what)
		} else if !errors.Is(err, datastore.ErrNotFound) {
			return "", err
		}
	}
	if info, err := ds.IPAM.Info(ctx, ip); err != nil {
		return "", err
	} else if info.Assigned {
		have = append(have, "address("+info.Handle+")")
	}
	if len(have) == 0 {
		return "nothing", nil
	}
	slices.Sort(have)
	return strings.Join(have, ","), nil
}

// assertWired checks one workload after a rerun: one veth on the host, one
// interface in the workload holding the address once, one record naming
// both, and the address held once, by the workload's handle.
func assertWired(t *testing.T, ctx context.Context, ds *client.Client, h *lab.Host, wl *walkthrough.Workload) {
	t.Helper()
	veth := api.WorkloadIfaceName(h.Label, wl.Name)
	if !linkExists(ctx, h.Netns, veth) {
		t.Errorf("%s: no host veth %s", wl.Name, veth)
	}
	links, err := wl.Netns.Run(ctx, "ip", "-o", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	var ifaces []string
	for _, l := range strings.Split(strings.TrimSpace(links), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			ifaces = append(ifaces, strings.Split(strings.TrimSuffix(f[1], ":"), "@")[0])
		}
	}
	slices.Sort(ifaces)
	if !slices.Equal(ifaces, []string{"eth0", "lo"}) {
		t.Errorf("%s: workload interfaces %v, want eth0 and lo", wl.Name, ifaces)
	}
	addrs, _ := wl.Netns.Run(ctx, "ip", "-o", "-4", "addr", "show", "dev", "eth0")
	if n := strings.Count(addrs, " "+wl.IP.String()+"/32"); n != 1 {
		t.Errorf("%s: eth0 holds %s %d times: %s", wl.Name, wl.IP, n, addrs)
	}
	ep, _, err := datastore.Get[api.Endpoint](ctx, ds.DS, datastore.EndpointKey(h.Label, wl.Name))
	if err != nil {
		t.Errorf("%s: endpoint record: %v", wl.Name, err)
	} else if ep.InterfaceName != veth || !slices.Equal(ep.IPv4Nets, []string{wl.IP.String() + "/32"}) {
		t.Errorf("%s: endpoint record %+v", wl.Name, ep)
	}
	handle, _, err := datastore.Get[api.Handle](ctx, ds.DS, datastore.HandleKey(api.WorkloadHandle(h.Label, wl.Name)))
	if err != nil || !slices.Equal(handle.IPs, []string{wl.IP.String()}) {
		t.Errorf("%s: IPAM handle %+v (%v), want exactly %s", wl.Name, handle, err, wl.IP)
	}
	if info, err := ds.IPAM.Info(ctx, wl.IP); err != nil || !info.Assigned || info.Handle != api.WorkloadHandle(h.Label, wl.Name) {
		t.Errorf("%s: %s in IPAM: %+v %v", wl.Name, wl.IP, info, err)
	}
}

// caliLinks lists the cali* interfaces in ns.
func caliLinks(t *testing.T, ctx context.Context, ns *lab.Netns) []string {
	t.Helper()
	out, err := ns.Run(ctx, "ip", "-o", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], "cali") {
			names = append(names, strings.Split(strings.TrimSuffix(f[1], ":"), "@")[0])
		}
	}
	return names
}
