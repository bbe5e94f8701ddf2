package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/cniagent"
	"github.com/calico-go/calico/internal/lab"
)

// runCNI adds workloads on host 1 through the calico CNI plugin, run by
// libcni as a runtime runs it (ADD with the network's conflist, the
// address from calico-ipam's pools), one by one and in bursts, and times
// each from the call to the first echo reply from host 2; then DELs them
// all and times that.
func runCNI(ctx context.Context, r *runner) error {
	for _, b := range []string{"calico", "calico-ipam"} {
		if _, err := os.Stat(filepath.Join(r.opts.Bin, b)); err != nil {
			return fmt.Errorf("no CNI plugin %s in %s; build it with `make build`", b, r.opts.Bin)
		}
	}
	l, err := r.newSetupLab(ctx, SecCNI)
	if err != nil {
		return err
	}
	defer l.close()
	w, h1 := l.w, l.w.Hosts[0]
	// The network is named after the bench profile: its endpoints join
	// that profile (the plugin's default), as the probe has.
	conf, err := libcni.NetworkConfFromBytes(mustJSON(map[string]any{
		"cniVersion": "1.1.0", "name": benchProfile,
		"plugins": []any{map[string]any{
			"type": "calico", "etcd_endpoints": "http://" + w.Etcd,
			"ipam": map[string]any{"type": "calico-ipam", "ipv4_pools": []string{setupPool}},
		}},
	}))
	if err != nil {
		return fmt.Errorf("bench: the CNI conflist: %w", err)
	}
	cache, err := os.MkdirTemp("", "cbn-cni-cache")
	if err != nil {
		return err
	}
	defer os.RemoveAll(cache)
	// The plugin traces each call (the agent's phases and round trips);
	// libcni hands the plugin this process's environment.
	tracePath := filepath.Join(cache, "trace")
	os.Setenv(cniagent.TraceEnv, tracePath)
	defer os.Unsetenv(cniagent.TraceEnv)
	rt := libcni.NewCNIConfigWithCacheDir([]string{r.opts.Bin}, cache, lab.CNIExec{Host: h1})
	var mu sync.Mutex
	var attached []*libcni.RuntimeConf
	add := func(ctx context.Context, name string, _ netip.Addr, ns *lab.Netns, _ *client.Trace) (netip.Addr, error) {
		rc := &libcni.RuntimeConf{ContainerID: name, NetNS: ns.Path, IfName: "eth0"}
		res, err := rt.AddNetworkList(ctx, conf, rc)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("CNI ADD %s: %w", name, err)
		}
		mu.Lock()
		attached = append(attached, rc)
		mu.Unlock()
		cur, err := current.NewResultFromResult(res)
		if err != nil || len(cur.IPs) == 0 {
			return netip.Addr{}, fmt.Errorf("CNI ADD %s: no address in the result (%v)", name, err)
		}
		a, _ := netip.AddrFromSlice(cur.IPs[0].Address.IP.To4())
		return a, nil
	}
	burst := max(r.plan.Burst, 1)
	modes := []SetupMode{
		{Mode: "CNI ADD, one by one", Via: "cni", Burst: 1},
		{Mode: fmt.Sprintf("CNI ADD, bursts of %d", burst), Via: "cni", Burst: burst},
	}
	for i := range modes {
		m := &modes[i]
		os.Remove(tracePath)
		if _, err := r.setupMode(ctx, l, m, fmt.Sprintf("c%d", i+1), nil, add); err != nil {
			return err
		}
		m.PhaseP50, m.CallRoundTrips = addTrace(tracePath)
		r.summarizeSetup(SecCNI, m, 30, 150)
		r.res.Setup = append(r.res.Setup, *m)
		// DEL, as the runtime does when the container goes; timed.
		var dels []float64
		for _, rc := range attached {
			t0 := time.Now()
			if err := rt.DelNetworkList(ctx, conf, rc); err != nil {
				return fmt.Errorf("CNI DEL %s: %w", rc.ContainerID, err)
			}
			dels = append(dels, ms(time.Since(t0)))
		}
		r.res.finding("%s, %s: DEL of each, one by one: p50 %.1f ms, p99 %.1f ms.", SecCNI, m.Mode, percentile(dels, 50), percentile(dels, 99))
		attached = nil
		w.settle(ctx, h1, 20*time.Second)
		l.rw.forget()
	}
	return nil
}

// addTrace is the medians of the ADD calls the agent served, from the
// plugin's trace: each phase's time (ms), and the datastore round trips of
// a call.
func addTrace(path string) (map[string]float64, float64) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0
	}
	phases := map[string][]float64{}
	var trips []float64
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var line cniagent.TraceLine
		if json.Unmarshal([]byte(l), &line) != nil || line.Command != "ADD" || line.Via != "agent" {
			continue
		}
		var n int64
		for _, p := range line.Phases {
			phases[p.Phase] = append(phases[p.Phase], p.Ms)
			n += p.Calls
		}
		trips = append(trips, float64(n))
	}
	if len(trips) == 0 {
		return nil, 0
	}
	out := map[string]float64{}
	for p, v := range phases {
		out[p] = round(median(v), 2)
	}
	return out, median(trips)
}

// mustJSON marshals maps of strings, slices and maps, which cannot fail.
func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
