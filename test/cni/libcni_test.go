package cni

import (
	"context"
	"encoding/json"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/cniagent"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/ipam"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// attach runs ADD for a new container named id on host h in network l and
// returns its namespace and address.
func attach(t *testing.T, ctx context.Context, w *walkthrough.World, rt *libcni.CNIConfig, l *libcni.NetworkConfigList, h *lab.Host, id string, mod ...func(*libcni.RuntimeConf)) (*lab.Netns, *libcni.RuntimeConf, *current.Result) {
	t.Helper()
	ns, err := w.Lab.AddWorkloadNetns(h, id)
	if err != nil {
		t.Fatal(err)
	}
	rc := &libcni.RuntimeConf{ContainerID: id, NetNS: ns.Path, IfName: "eth0"}
	for _, m := range mod {
		m(rc)
	}
	r, err := rt.AddNetworkList(ctx, l, rc)
	if err != nil {
		t.Fatalf("ADD %s: %v", id, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	return ns, rc, res
}

func mustCurrent(t *testing.T, r types.Result) *current.Result {
	t.Helper()
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func addrOf(t *testing.T, res *current.Result) netip.Addr {
	t.Helper()
	if len(res.IPs) != 1 {
		t.Fatalf("result has %d addresses, want 1: %v", len(res.IPs), res)
	}
	a, _ := netip.AddrFromSlice(res.IPs[0].Address.IP)
	return a.Unmap()
}

// usedAddrs is how many addresses IPAM has assigned in all.
func usedAddrs(t *testing.T, ctx context.Context, w *walkthrough.World) int {
	t.Helper()
	out, err := w.Ctl(ctx, w.Hosts[0], "ipam", "show", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []ipam.BlockInfo
	if err := json.Unmarshal([]byte(out), &blocks); err != nil {
		t.Fatalf("ipam show: %v: %s", err, out)
	}
	n := 0
	for _, b := range blocks {
		n += b.Used
	}
	return n
}

// endpointOf is the endpoint of workload as `calicoctl endpoint show` lists it.
func endpointOf(t *testing.T, ctx context.Context, w *walkthrough.World, workload string) api.Endpoint {
	t.Helper()
	ep, ok := findEndpoint(t, ctx, w, workload)
	if !ok {
		t.Fatalf("endpoint show does not list %s", workload)
	}
	return ep
}

// findEndpoint is the endpoint of workload, if `calicoctl endpoint show` lists it.
func findEndpoint(t *testing.T, ctx context.Context, w *walkthrough.World, workload string) (api.Endpoint, bool) {
	t.Helper()
	out, err := w.Ctl(ctx, w.Hosts[0], "endpoint", "show", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var eps []api.Endpoint
	if err := json.Unmarshal([]byte(out), &eps); err != nil {
		t.Fatalf("endpoint show: %v: %s", err, out)
	}
	for _, ep := range eps {
		if ep.Workload == workload {
			return ep, true
		}
	}
	return api.Endpoint{}, false
}

// hostLinks are the names of the cali* interfaces in h.
func hostLinks(t *testing.T, h *lab.Host) []string {
	t.Helper()
	links, err := h.Netlink().LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "cali") {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

// TestLibcniSpec drives the calico plugin through libcni as a runtime
// does, with the CNI spec's cases: the result's shape, reachability across
// hosts within a network and none between networks, ADD twice, CHECK of a
// broken attachment, DEL twice and of an unknown container, VERSION and
// STATUS, a bad configuration and an unreachable datastore (a CNI error,
// nothing left behind).
func TestLibcniSpec(t *testing.T) {
	// The same cases whoever does the work: the host's agent (the CNI
	// socket), or the full plugin when no agent serves it.
	for _, via := range []string{"agent", "plugin"} {
		t.Run(via, func(t *testing.T) {
			trace := filepath.Join(t.TempDir(), "trace")
			t.Setenv(cniagent.TraceEnv, trace)
			if via == "plugin" {
				t.Setenv("CALICO_CNI_SOCKET", "none")
			}
			libcniSpec(t)
			b, err := os.ReadFile(trace)
			if err != nil {
				t.Fatal(err)
			}
			// Through the agent, only the ADD naming a dead datastore is
			// the full plugin's.
			others := 0
			for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				var line cniagent.TraceLine
				if err := json.Unmarshal([]byte(l), &line); err != nil {
					t.Fatal(err)
				}
				if line.Via != via {
					others++
				}
			}
			if want := map[string]int{"agent": 1, "plugin": 0}[via]; others != want {
				t.Errorf("%d calls went another way than via %s, want %d:\n%s", others, via, want, b)
			}
		})
	}
}

func libcniSpec(t *testing.T) {
	w := world(t)
	ctx := e2etest.Ctx(t, 4*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	rt1, rt2 := runtime(t, h1), runtime(t, h2)
	net1 := conflist(t, "net1", w.Etcd, map[string]any{"capabilities": map[string]bool{"ips": true}, "labels": map[string]string{"app": "web"}})
	net2 := conflist(t, "net2", w.Etcd, nil)

	// VERSION: the spec versions a runtime may speak.
	vi, err := rt1.GetVersionInfo(ctx, "calico")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		if !slices.Contains(vi.SupportedVersions(), v) {
			t.Errorf("VERSION lists %v, missing %s", vi.SupportedVersions(), v)
		}
	}
	// STATUS: the datastore answers and the node is registered.
	if err := rt1.GetStatusNetworkList(ctx, net1); err != nil {
		t.Errorf("STATUS: %v", err)
	}

	// ADD: interfaces, the address with gateway 169.254.1.1, default route.
	ns1, rc1, res1 := attach(t, ctx, w, rt1, net1, h1, "c1", func(rc *libcni.RuntimeConf) {
		rc.Args = [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "prod"}, {"K8S_POD_NAME", "web-1"}}
	})
	a1 := addrOf(t, res1)
	if !netip.MustParsePrefix(walkthrough.Pool).Contains(a1) {
		t.Errorf("ADD gave %s, outside the pool %s", a1, walkthrough.Pool)
	}
	if gw := res1.IPs[0].Gateway.String(); gw != "169.254.1.1" {
		t.Errorf("gateway %s, want 169.254.1.1", gw)
	}
	if len(res1.Interfaces) != 2 || res1.Interfaces[1].Name != "eth0" || res1.Interfaces[1].Sandbox != ns1.Path ||
		!strings.HasPrefix(res1.Interfaces[0].Name, "cali") || res1.IPs[0].Interface == nil || *res1.IPs[0].Interface != 1 {
		t.Errorf("result interfaces %+v, ip interface %v", res1.Interfaces, res1.IPs[0].Interface)
	}
	if len(res1.Routes) != 1 || res1.Routes[0].Dst.String() != "0.0.0.0/0" || res1.Routes[0].GW.String() != "169.254.1.1" {
		t.Errorf("result routes %v, want 0.0.0.0/0 via 169.254.1.1", res1.Routes)
	}
	if ep := endpointOf(t, ctx, w, "c1.eth0"); ep.Orchestrator != "cni" || ep.ContainerID != "c1" || !slices.Equal(ep.Profiles, []string{"net1"}) {
		t.Errorf("endpoint of c1: %+v, want orchestrator cni, container id c1, profile net1", ep)
	} else if want := map[string]string{"app": "web", "projectcalico.org/namespace": "prod", "projectcalico.org/pod": "web-1", "cni.projectcalico.org/network": "net1"}; !maps.Equal(ep.Labels, want) {
		t.Errorf("endpoint of c1 has labels %v, want %v", ep.Labels, want)
	}

	// ADD twice: the same answer, no second address.
	used := usedAddrs(t, ctx, w)
	r, err := rt1.AddNetworkList(ctx, net1, rc1)
	if err != nil {
		t.Fatalf("second ADD: %v", err)
	}
	again, _ := current.NewResultFromResult(r)
	if addrOf(t, again) != a1 {
		t.Errorf("second ADD gave %s, first %s", addrOf(t, again), a1)
	}
	if u := usedAddrs(t, ctx, w); u != used {
		t.Errorf("second ADD took an address: %d assigned before, %d after", used, u)
	}

	// Reachability: same network across hosts yes, another network no.
	ns2, _, res2 := attach(t, ctx, w, rt2, net1, h2, "c2")
	a2 := addrOf(t, res2)
	ns3, _, res3 := attach(t, ctx, w, rt2, net2, h2, "c3")
	a3 := addrOf(t, res3)
	e2etest.WaitFor(t, 30*time.Second, "c1 reaches c2 (net1, other host)", func() (bool, string) {
		return lab.Reachable(ctx, ns1, a2), "no ping reply"
	})
	if lab.Reachable(ctx, ns1, a3) || lab.Reachable(ctx, ns3, a1) {
		t.Errorf("net1 and net2 reach each other (%s <-> %s); their profiles differ", a1, a3)
	}
	_ = ns2

	// The "ips" capability: a requested address, reachable like any.
	want := netip.MustParseAddr("192.168.100.77")
	_, rc4, res4 := attach(t, ctx, w, rt2, net1, h2, "c4", func(rc *libcni.RuntimeConf) {
		rc.CapabilityArgs = map[string]any{"ips": []string{want.String() + "/32"}}
	})
	if a4 := addrOf(t, res4); a4 != want {
		t.Errorf("ADD with ips [%s] gave %s", want, a4)
	}
	e2etest.WaitFor(t, 30*time.Second, "c1 reaches c4 (requested address)", func() (bool, string) {
		return lab.Reachable(ctx, ns1, want), "no ping reply"
	})
	if err := rt2.DelNetworkList(ctx, net1, rc4); err != nil {
		t.Errorf("DEL c4: %v", err)
	}

	// CHECK: fine as made; a missing default route is reported.
	if err := rt1.CheckNetworkList(ctx, net1, rc1); err != nil {
		t.Errorf("CHECK of a healthy attachment: %v", err)
	}
	if err := ns1.Do(func() error {
		return netlink.RouteDel(&netlink.Route{Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Gw: net.ParseIP("169.254.1.1")})
	}); err != nil {
		t.Fatal(err)
	}
	if err := rt1.CheckNetworkList(ctx, net1, rc1); err == nil || !strings.Contains(err.Error(), "default route") {
		t.Errorf("CHECK after deleting the default route: %v, want an error naming it", err)
	}
	// An address removed inside: named too.
	if err := ns1.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.AddrDel(l, &netlink.Addr{IPNet: &net.IPNet{IP: a1.AsSlice(), Mask: net.CIDRMask(32, 32)}})
	}); err != nil {
		t.Fatal(err)
	}
	if err := rt1.CheckNetworkList(ctx, net1, rc1); err == nil || !strings.Contains(err.Error(), a1.String()) {
		t.Errorf("CHECK after deleting the address: %v, want an error naming %s", err, a1)
	}

	// DEL: everything goes; twice and for an unknown container it succeeds.
	before := len(hostLinks(t, h1))
	if err := rt1.DelNetworkList(ctx, net1, rc1); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if err := rt1.DelNetworkList(ctx, net1, rc1); err != nil {
		t.Errorf("second DEL: %v", err)
	}
	if err := rt1.DelNetworkList(ctx, net1, &libcni.RuntimeConf{ContainerID: "never-added", NetNS: ns1.Path, IfName: "eth0"}); err != nil {
		t.Errorf("DEL of an unknown container: %v", err)
	}
	if n := len(hostLinks(t, h1)); n != before-1 {
		t.Errorf("after DEL host 1 has %d cali interfaces, want %d", n, before-1)
	}
	if out, err := w.Ctl(ctx, h1, "ipam", "info", a1.String()); err != nil || !strings.Contains(out, "false") {
		t.Errorf("after DEL %s is still assigned: %v\n%s", a1, err, out)
	}
	if err := rt1.CheckNetworkList(ctx, net1, rc1); cniCode(err) != int(types.ErrUnknownContainer) {
		t.Errorf("CHECK after DEL: %v, want code 3 (unknown container)", err)
	}

	// Bad configuration: a CNI error (7) saying what to change.
	bad := conflist(t, "net1", w.Etcd, map[string]any{"ipam": map[string]any{"type": "host-local"}})
	nsBad, err := w.Lab.AddWorkloadNetns(h1, "bad")
	if err != nil {
		t.Fatal(err)
	}
	_, err = rt1.AddNetworkList(ctx, bad, &libcni.RuntimeConf{ContainerID: "bad", NetNS: nsBad.Path, IfName: "eth0"})
	if cniCode(err) != int(types.ErrInvalidNetworkConfig) || !strings.Contains(err.Error(), "calico-ipam") {
		t.Errorf("ADD with ipam host-local: %v, want code 7 naming calico-ipam", err)
	}

	// No datastore: "try again later" (11), and nothing made.
	links := len(hostLinks(t, h1))
	used = usedAddrs(t, ctx, w)
	dead := conflist(t, "net1", netip.AddrPortFrom(h1.Addr(), 1).String(), nil)
	start := time.Now()
	_, err = rt1.AddNetworkList(ctx, dead, &libcni.RuntimeConf{ContainerID: "nodb", NetNS: nsBad.Path, IfName: "eth0"})
	if cniCode(err) != int(types.ErrTryAgainLater) {
		t.Errorf("ADD without a datastore: %v (code %d), want code 11", err, cniCode(err))
	}
	t.Logf("FIGURE: ADD without a datastore failed after %s: %v", time.Since(start).Round(time.Millisecond), err)
	if n := len(hostLinks(t, h1)); n != links {
		t.Errorf("ADD without a datastore left interfaces: %d before, %d after", links, n)
	}
	if err := nsBad.Do(func() error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			t.Errorf("ADD without a datastore left eth0 in the container")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if u := usedAddrs(t, ctx, w); u != used {
		t.Errorf("ADD without a datastore changed IPAM: %d assigned before, %d after", used, u)
	}
	if out, err := w.Ctl(ctx, h1, "ipam", "check"); err != nil {
		t.Errorf("ipam check: %v\n%s", err, out)
	}
}
