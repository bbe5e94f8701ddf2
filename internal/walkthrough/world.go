// Package walkthrough builds the seed's two-host Calico walkthrough on a
// namespace lab: a datastore on host 1, calico-node on both hosts, a pool,
// two profiles and three workloads. The demo, the end-to-end tests and the
// benchmarks all start from it, so they exercise the same commands a user types.
package walkthrough

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/calico-go/calico/internal/lab"
)

// Options control how the world is built.
type Options struct {
	Bin      string    // directory with calicoctl and calico-node
	Progress io.Writer // one line per step; nil for silence
	Prefix   string    // lab name prefix (unique per kind of run)
	// PoolArgs are the extra `pool add` flags for the workload pool.
	PoolArgs []string
	// Routed puts host 2 on another subnet behind a router, where
	// unencapsulated pool traffic cannot pass.
	Routed bool
	// IPv6 gives hosts fd00::N/64 addresses and starts nodes with --ip6.
	IPv6 bool
	// NodeArgs are extra `calicoctl node` flags for every node (for
	// example --bgp-hold-time=9s).
	NodeArgs []string
	// HostNodeArgs, when set, gives one host's extra `calicoctl node` flags,
	// called just before that node starts (so a test can start a Docker
	// engine inside the host first). Without it, Ctl runs everything with
	// DOCKER_HOST=none: lab hosts have no engine of their own, and the
	// machine's engine must not be followed by every host at once.
	HostNodeArgs func(ctx context.Context, h *lab.Host) ([]string, error)
	// DatastoreTLS starts the datastore with --tls; calicoctl (and so the
	// nodes it starts) then uses the environment `datastore start` printed.
	DatastoreTLS bool
}

// Workload is one namespace workload.
type Workload struct {
	Name  string
	Host  *lab.Host
	Netns *lab.Netns
	IP    netip.Addr
}

// World is the built walkthrough.
type World struct {
	Lab       *lab.Lab
	Hosts     []*lab.Host
	Outside   *lab.Outside
	Router    *lab.Netns // between the two subnets, when Routed
	Workloads map[string]*Workload
	Etcd      string // host:port, as users give ETCD_AUTHORITY
	// EtcdEnv is what Ctl sets to reach the datastore: ETCD_AUTHORITY, or
	// with DatastoreTLS the variables `datastore start --tls` printed.
	EtcdEnv  []string
	StateDir string // pid and log files of this world's daemons
	opts     Options
	fabric   *lab.Fabric
}

// Pool is the walkthrough's workload pool.
const Pool = "192.168.100.0/24"

// Build makes the hosts, the datastore and the nodes (no pool, profiles or
// workloads yet: Seed adds those). On error, everything made so far is removed.
func Build(ctx context.Context, o Options) (_ *World, err error) {
	if o.Prefix == "" {
		o.Prefix = "cw"
	}
	if err := lab.Require("ip", "ping", "nft"); err != nil {
		return nil, err
	}
	l, err := lab.New(o.Prefix)
	if err != nil {
		return nil, err
	}
	w := &World{Lab: l, Workloads: map[string]*Workload{}, opts: o}
	defer func() {
		if err != nil {
			w.Close()
		}
	}()
	w.StateDir = filepath.Join(os.TempDir(), "calico-"+l.ID())
	w.step("Lab %s: fabric 10.0.0.0/24, an outside network 198.51.100.0/24 behind a gateway", l.ID())
	fab, err := l.AddFabric("fab", "10.0.0.0/24")
	if err != nil {
		return nil, err
	}
	if w.Outside, err = l.AddOutside("outside", fab, "10.0.0.254/24", "198.51.100.0/24"); err != nil {
		return nil, err
	}
	h1, err := l.AddHost("host1", fab, "10.0.0.1/24", "10.0.0.254")
	if err != nil {
		return nil, err
	}
	h2fab, h2ip, h2gw := fab, "10.0.0.2/24", "10.0.0.254"
	if o.Routed {
		if h2fab, err = l.AddFabric("fab2", "10.0.2.0/24"); err != nil {
			return nil, err
		}
		if w.Router, err = l.AddRouter("router", map[*lab.Fabric]string{fab: "10.0.0.253/24", h2fab: "10.0.2.254/24"}); err != nil {
			return nil, err
		}
		h2ip, h2gw = "10.0.2.2/24", "10.0.2.254"
	}
	h2, err := l.AddHost("host2", h2fab, h2ip, h2gw)
	if err != nil {
		return nil, err
	}
	if o.Routed {
		// Host 1 reaches host 2's subnet through the router; the gateway
		// stays its default route to the outside.
		if err := h1.AddRoute("10.0.2.0/24", "10.0.0.253"); err != nil {
			return nil, err
		}
	}
	w.Hosts = []*lab.Host{h1, h2}
	w.fabric = fab
	w.Etcd = h1.Addr().String() + ":2379"

	w.EtcdEnv = []string{"ETCD_AUTHORITY=" + w.Etcd}
	dsArgs := []string{"datastore", "start", "--listen", w.Etcd, "--data-dir", filepath.Join(w.StateDir, "etcd")}
	if o.DatastoreTLS {
		dsArgs = append(dsArgs, "--tls")
	}
	w.step("host1: calicoctl %s", strings.Join(dsArgs, " "))
	out, err := w.Ctl(ctx, h1, dsArgs...)
	if err != nil {
		return nil, err
	}
	if o.DatastoreTLS {
		if w.EtcdEnv, err = exportedEnv(out); err != nil {
			return nil, err
		}
		w.step("host1: %s", "export "+strings.Join(w.EtcdEnv, " "))
	}
	for i, h := range w.Hosts {
		if err := w.startNode(ctx, h, i+1); err != nil {
			return nil, err
		}
	}
	return w, w.saveState()
}

// startNode runs `calicoctl node` on host h (the n-th host, for its IPv6
// address), with extra flags after the world's own.
func (w *World) startNode(ctx context.Context, h *lab.Host, n int, extra ...string) error {
	args := []string{"node", "--ip=" + h.Addr().String(), "--name=" + h.Label}
	if w.opts.IPv6 {
		ip6 := fmt.Sprintf("fd00::%d", n)
		if err := h.AddAddr(h.Iface, ip6+"/64"); err != nil {
			return err
		}
		args = append(args, "--ip6="+ip6)
	}
	args = append(args, w.opts.NodeArgs...)
	if w.opts.HostNodeArgs != nil {
		more, err := w.opts.HostNodeArgs(ctx, h)
		if err != nil {
			return err
		}
		args = append(args, more...)
	}
	args = append(args, extra...)
	w.step("%s: export %s; calicoctl %s", h.Label, strings.Join(w.etcdEnv(), " "), strings.Join(args, " "))
	_, err := w.Ctl(ctx, h, args...)
	return err
}

// AddHost adds one more host on host 1's fabric (same subnet) and starts its node.
func (w *World) AddHost(ctx context.Context, label, ip string) (*lab.Host, error) {
	h, err := w.NewHost(label, ip)
	if err != nil {
		return nil, err
	}
	return h, w.StartNode(ctx, h)
}

// NewHost adds one more host on host 1's fabric without starting its node,
// so a caller can watch the host before its agent runs; StartNode starts it.
func (w *World) NewHost(label, ip string) (*lab.Host, error) {
	h, err := w.Lab.AddHost(label, w.fabric, ip, "10.0.0.254")
	if err != nil {
		return nil, err
	}
	w.Hosts = append(w.Hosts, h)
	return h, nil
}

// StartNode runs `calicoctl node` on one of the world's hosts, with extra
// flags (such as --route-reflector) after the world's own.
func (w *World) StartNode(ctx context.Context, h *lab.Host, extra ...string) error {
	n := slices.Index(w.Hosts, h) + 1
	if n == 0 {
		return fmt.Errorf("walkthrough: %s is not a host of this world", h.Label)
	}
	return w.startNode(ctx, h, n, extra...)
}

// Host returns a host by label.
func (w *World) Host(label string) *lab.Host {
	for _, h := range w.Hosts {
		if h.Label == label {
			return h
		}
	}
	return nil
}

func (w *World) step(format string, args ...any) {
	if w.opts.Progress != nil {
		fmt.Fprintf(w.opts.Progress, "==> "+format+"\n", args...)
	}
}

// Ctl runs calicoctl on a host as a user there would.
func (w *World) Ctl(ctx context.Context, h *lab.Host, args ...string) (string, error) {
	argv := append([]string{"env"}, w.etcdEnv()...)
	argv = append(argv, "CALICO_NODENAME="+h.Label, "CALICO_STATE_DIR="+w.StateDir)
	if w.opts.HostNodeArgs == nil {
		// calico-node (started by `calicoctl node`, which passes its
		// environment on) then leaves Docker alone, also when a test
		// restarts a node by hand.
		argv = append(argv, "DOCKER_HOST=none")
	}
	argv = append(append(argv, filepath.Join(w.opts.Bin, "calicoctl")), args...)
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	out, err := h.Run(ctx, argv...)
	if err != nil {
		return out, fmt.Errorf("%s: calicoctl %s: %s", h.Label, strings.Join(args, " "), strings.TrimSpace(out))
	}
	return out, nil
}

func (w *World) etcdEnv() []string {
	if len(w.EtcdEnv) == 0 {
		return []string{"ETCD_AUTHORITY=" + w.Etcd}
	}
	return w.EtcdEnv
}

// exportedEnv reads the "export K=V ..." line `datastore start --tls`
// prints (its values need no quoting in the lab's paths).
func exportedEnv(out string) ([]string, error) {
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "export "); ok {
			return strings.Fields(rest), nil
		}
	}
	return nil, fmt.Errorf("datastore start --tls printed no export line: %q", out)
}

// AddWorkload makes a namespace on host h and attaches it with `container add`.
func (w *World) AddWorkload(ctx context.Context, h *lab.Host, name, ip string) (*Workload, error) {
	ns, err := w.Lab.AddWorkloadNetns(h, name)
	if err != nil {
		return nil, err
	}
	w.step("%s: calicoctl container add %s %s --netns %s", h.Label, name, ip, ns.Path)
	out, err := w.Ctl(ctx, h, "container", "add", name, ip, "--netns", ns.Path)
	if err != nil {
		return nil, err
	}
	// The output names the address it got: "IP 192.168.100.1/32 added to ...".
	f := strings.Fields(out)
	if len(f) < 2 {
		return nil, fmt.Errorf("unexpected container add output %q", out)
	}
	p, err := netip.ParsePrefix(strings.Split(f[1], ",")[0])
	if err != nil {
		return nil, fmt.Errorf("container add output %q: %v", out, err)
	}
	wl := &Workload{Name: name, Host: h, Netns: ns, IP: p.Addr()}
	w.Workloads[name] = wl
	return wl, nil
}

// Seed runs the walkthrough's configuration: the pool, workers 1-3 and the
// profiles PROF_1 (workers 1 and 3) and PROF_2 (worker 2).
func (w *World) Seed(ctx context.Context) error {
	h1, h2 := w.Hosts[0], w.Hosts[1]
	args := append([]string{"pool", "add", Pool}, w.opts.PoolArgs...)
	w.step("calicoctl %s", strings.Join(args, " "))
	if _, err := w.Ctl(ctx, h1, args...); err != nil {
		return err
	}
	for _, wl := range []struct {
		h        *lab.Host
		name, ip string
	}{{h1, "worker-1", "192.168.100.1"}, {h1, "worker-2", "192.168.100.2"}, {h2, "worker-3", "192.168.100.3"}} {
		if _, err := w.AddWorkload(ctx, wl.h, wl.name, wl.ip); err != nil {
			return err
		}
	}
	for _, p := range []string{"PROF_1", "PROF_2"} {
		w.step("calicoctl profile add %s", p)
		if _, err := w.Ctl(ctx, h1, "profile", "add", p); err != nil {
			return err
		}
	}
	for _, a := range []struct {
		h        *lab.Host
		wl, prof string
	}{{h1, "worker-1", "PROF_1"}, {h1, "worker-2", "PROF_2"}, {h2, "worker-3", "PROF_1"}} {
		w.step("%s: calicoctl container %s profile append %s", a.h.Label, a.wl, a.prof)
		if _, err := w.Ctl(ctx, a.h, "container", a.wl, "profile", "append", a.prof); err != nil {
			return err
		}
	}
	return nil
}

// state marks a world's directory, so `demo down` can find kept worlds.
type state struct {
	LabID    string `json:"labID"`
	StateDir string `json:"stateDir"`
	Bin      string `json:"bin"`
}

func (w *World) saveState() error {
	b, _ := json.Marshal(state{LabID: w.Lab.ID(), StateDir: w.StateDir, Bin: w.opts.Bin})
	return os.WriteFile(filepath.Join(w.StateDir, "world.json"), b, 0o644)
}

// Close stops this world's daemons (by the pids in their pid files) and
// removes every namespace and interface. Safe to call twice.
func (w *World) Close() error {
	if w == nil {
		return nil
	}
	stopDaemons(w.StateDir)
	var err error
	if w.Lab != nil {
		err = w.Lab.Close()
	}
	os.RemoveAll(w.StateDir)
	return err
}

// Down removes kept worlds made with prefix whose creating process is gone:
// their daemons, namespaces and files.
func Down(prefix string) error {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "calico-"+prefix+"*", "world.json"))
	for _, f := range dirs {
		dir := filepath.Dir(f)
		var st state
		if b, err := os.ReadFile(f); err == nil && json.Unmarshal(b, &st) == nil && lab.InUse(st.LabID) {
			continue // a world another running process is using
		}
		stopDaemons(dir)
		os.RemoveAll(dir)
	}
	return lab.Sweep(prefix)
}
