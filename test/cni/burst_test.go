package cni

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/calico-go/calico/internal/cniagent"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
)

// TestCNIBurst: 20 ADDs at once on host 2, as a runtime starting a burst
// of containers makes them, all served by the agent (whose IPAM takes the
// addresses of the calls waiting for the node together): each container
// gets its own address, held by its own endpoint, reachable from a
// container on host 1; the agent's trace of each call names its phases;
// and DEL of all of them, at once too, gives every address back.
func TestCNIBurst(t *testing.T) {
	w := world(t)
	ctx := e2etest.Ctx(t, 3*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	trace := filepath.Join(t.TempDir(), "trace")
	t.Setenv(cniagent.TraceEnv, trace)
	net1 := conflist(t, "net1", w.Etcd, nil)
	rt1, rt2 := runtime(t, h1), runtime(t, h2)
	probe, _, _ := attach(t, ctx, w, rt1, net1, h1, "probe")
	used0 := usedAddrs(t, ctx, w)

	const n = 20
	rcs := make([]*libcni.RuntimeConf, n)
	for i := range rcs {
		id := fmt.Sprintf("burst%d", i)
		ns, err := w.Lab.AddWorkloadNetns(h2, id)
		if err != nil {
			t.Fatal(err)
		}
		rcs[i] = &libcni.RuntimeConf{ContainerID: id, NetNS: ns.Path, IfName: "eth0"}
	}
	addrs := make([]netip.Addr, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, rc := range rcs {
		wg.Go(func() {
			r, err := rt2.AddNetworkList(ctx, net1, rc)
			if err != nil {
				errs[i] = err
				return
			}
			res, err := current.NewResultFromResult(r)
			if err != nil || len(res.IPs) != 1 {
				errs[i] = fmt.Errorf("result %v: %v", r, err)
				return
			}
			addrs[i], _ = netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
		})
	}
	wg.Wait()
	seen := map[netip.Addr]string{}
	for i, rc := range rcs {
		if errs[i] != nil {
			t.Fatalf("ADD %s: %v", rc.ContainerID, errs[i])
		}
		if prev, dup := seen[addrs[i]]; dup {
			t.Errorf("%s given to %s and %s", addrs[i], prev, rc.ContainerID)
		}
		seen[addrs[i]] = rc.ContainerID
		ep := endpointOf(t, ctx, w, rc.ContainerID+".eth0")
		if len(ep.IPv4Nets) != 1 || ep.IPv4Nets[0] != addrs[i].String()+"/32" {
			t.Errorf("endpoint of %s has %v, its ADD answered %s", rc.ContainerID, ep.IPv4Nets, addrs[i])
		}
	}
	if u := usedAddrs(t, ctx, w); u != used0+n {
		t.Errorf("%d addresses assigned after %d ADDs, want %d", u, n, used0+n)
	}
	for i, rc := range rcs {
		e2etest.WaitFor(t, 30*time.Second, "probe on host 1 reaches "+rc.ContainerID, func() (bool, string) {
			return lab.Reachable(ctx, probe, addrs[i]), "no ping reply"
		})
	}
	// The agent did every ADD and said where its time went.
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	adds := 0
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var line cniagent.TraceLine
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatal(err)
		}
		if line.Command != "ADD" {
			continue
		}
		if line.Via != "agent" {
			t.Errorf("an ADD went via %s: %s", line.Via, l)
		}
		var names []string
		for _, p := range line.Phases {
			names = append(names, p.Phase)
		}
		if !strings.Contains(strings.Join(names, " "), "ipam veth record") {
			t.Errorf("the agent's phases of an ADD: %v, want its AddWorkload phases", names)
		}
		adds++
	}
	if adds != n+1 { // the probe's too
		t.Errorf("%d ADDs traced, want %d:\n%s", adds, n+1, b)
	}

	for i, rc := range rcs {
		wg.Go(func() { errs[i] = rt2.DelNetworkList(ctx, net1, rc) })
	}
	wg.Wait()
	for i, rc := range rcs {
		if errs[i] != nil {
			t.Errorf("DEL %s: %v", rc.ContainerID, errs[i])
		}
	}
	if u := usedAddrs(t, ctx, w); u != used0 {
		t.Errorf("%d addresses assigned after DEL of the burst, want %d", u, used0)
	}
}
