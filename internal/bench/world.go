package bench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// world is a walkthrough world plus what the sections need besides
// calicoctl: an in-process client, for the CNI-like path (a plugin calls
// client.AddWorkload in its own process rather than running calicoctl).
type world struct {
	*walkthrough.World
	r    *runner
	cli  *client.Client
	etcd *clientv3.Client // cli's connection, for raw reads
	acct *cpuGroup        // host 1's agent's CPU accounting group, if it is in one
}

// buildWorld builds a walkthrough world with the bench's prefix and binaries
// and connects the in-process client. On error nothing is left behind.
func (r *runner) buildWorld(ctx context.Context, o walkthrough.Options) (*world, error) {
	o.Bin, o.Prefix, o.Progress = r.opts.Bin, Prefix, r.prog.steps()
	w, err := walkthrough.Build(ctx, o)
	if err != nil {
		return nil, err
	}
	cli, etcd, err := connectIn(ctx, w.Hosts[0].Netns, w.Etcd)
	if err != nil {
		w.Close()
		return nil, err
	}
	return &world{World: w, r: r, cli: cli, etcd: etcd}, nil
}

// buildProfileWorld is buildWorld plus a nat-outgoing pool and the bench
// profile, which the setup and policy sections both start from.
func (r *runner) buildProfileWorld(ctx context.Context, pool string) (*world, error) {
	w, err := r.buildWorld(ctx, walkthrough.Options{})
	if err != nil {
		return nil, err
	}
	h1 := w.Hosts[0]
	if _, err := w.Ctl(ctx, h1, "pool", "add", pool, "--nat-outgoing"); err != nil {
		w.close()
		return nil, err
	}
	if _, err := w.Ctl(ctx, h1, "profile", "add", benchProfile); err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

// close disconnects the client (before the datastore stops, or closing
// waits for it) and removes the world.
func (w *world) close() {
	if w == nil {
		return
	}
	w.cli.Close()
	if err := w.World.Close(); err != nil {
		w.r.prog.logf("tearing down lab %s: %v", w.Lab.ID(), err)
	}
}

// connectIn connects to the world's etcd with every socket created inside
// ns: the bench runs in the root namespace, which must never send to lab
// addresses itself, and has no route to them anyway.
func connectIn(ctx context.Context, ns *lab.Netns, endpoint string) (*client.Client, *clientv3.Client, error) {
	dial := dialIn(ns)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"http://" + endpoint},
		DialTimeout: datastore.OpTimeout,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)},
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("bench: datastore client for %s: %w", endpoint, err)
	}
	octx, cancel := context.WithTimeout(ctx, datastore.OpTimeout)
	defer cancel()
	if _, err := cli.Get(octx, datastore.KeyBGPConfig); err != nil {
		cli.Close()
		return nil, nil, fmt.Errorf("bench: datastore %s does not answer from %s: %w", endpoint, ns.Name, err)
	}
	return client.New(datastore.Adopt(cli)), cli, nil
}

// dialIn dials TCP from inside ns.
func dialIn(ns *lab.Netns) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() error {
			var err error
			// The socket is made on this thread, so in ns; it stays there.
			c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			return err
		})
		return c, err
	}
}

// addWorkload makes a namespace on h and attaches it through the in-process
// client, as a CNI plugin would. ip is an address or "auto".
func (w *world) addWorkload(ctx context.Context, h *lab.Host, name, ip string, profiles ...string) (*walkthrough.Workload, error) {
	ns, err := w.Lab.AddWorkloadNetns(h, name)
	if err != nil {
		return nil, err
	}
	return w.attach(ctx, h, ns, name, ip, profiles...)
}

// attach is the in-process `container add` of an existing namespace. It runs
// on a thread inside h's namespace, where the host end of the veth goes.
func (w *world) attach(ctx context.Context, h *lab.Host, ns *lab.Netns, name, ip string, profiles ...string) (*walkthrough.Workload, error) {
	return w.attachReq(ctx, h, ns, client.WorkloadRequest{Name: name, IPs: []string{ip}, Profiles: profiles})
}

// attachReq is attach of a request that may say more (labels); its node
// and namespace are h's and ns.
func (w *world) attachReq(ctx context.Context, h *lab.Host, ns *lab.Netns, req client.WorkloadRequest) (*walkthrough.Workload, error) {
	name := req.Name
	req.Node, req.NetnsPath = h.Label, ns.Path
	var ipNet string
	err := h.Do(func() error {
		ep, err := w.cli.AddWorkload(ctx, req)
		if err == nil && len(ep.IPv4Nets) > 0 {
			ipNet = ep.IPv4Nets[0]
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: adding workload %s: %w", h.Label, name, err)
	}
	p, err := netip.ParsePrefix(ipNet)
	if err != nil {
		return nil, fmt.Errorf("%s: workload %s got no IPv4 address (%q)", h.Label, name, ipNet)
	}
	return &walkthrough.Workload{Name: name, Host: h, Netns: ns, IP: p.Addr()}, nil
}

// agentPID reads the pid file `calicoctl node` wrote for h's agent.
func (w *world) agentPID(h *lab.Host) (int, error) {
	return readPID(filepath.Join(w.StateDir, "run", "calico", h.Label, "calico-node.pid"), "calico-node of "+h.Label)
}

// readPID reads a daemon's pid file; what names the daemon in errors.
func readPID(f, what string) (int, error) {
	b, err := os.ReadFile(f)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: bad pid file %s", what, f)
	}
	return pid, nil
}

// clockTick is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// cpuTime is the user plus system CPU time a process has used.
func cpuTime(pid int) (time.Duration, error) {
	// utime is field 14, stime 15.
	f, err := lab.ProcStat(pid)
	if err != nil {
		return 0, err
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// cpuTimeAll is cpuTime plus the CPU time of the children the process has
// waited for: an agent's nft runs (knftables execs nft for every
// transaction) are its cost too.
func cpuTimeAll(pid int) (time.Duration, error) {
	f, err := lab.ProcStat(pid)
	if err != nil {
		return 0, err
	}
	var sum int64
	// utime, stime, cutime, cstime: fields 14 to 17.
	for _, v := range f[11:15] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
		}
		sum += n
	}
	return time.Duration(sum) * clockTick, nil
}

// rssMB is a process's resident set (VmRSS) in MiB.
func rssMB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			kb, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				return 0, err
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// settle waits until h's agent has used no CPU for a quiet spell (it has
// applied everything and is idle), or max passes. It returns how long it
// waited and the agent's CPU time at the end.
func (w *world) settle(ctx context.Context, h *lab.Host, max time.Duration) (time.Duration, error) {
	pid, err := w.agentPID(h)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	const quiet = 400 * time.Millisecond
	prev, err := cpuTime(pid)
	if err != nil {
		return 0, err
	}
	for time.Since(start) < max {
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(quiet):
		}
		cur, err := cpuTime(pid)
		if err != nil {
			return 0, err
		}
		// One tick of slack: the status heartbeat costs a little.
		if cur-prev <= clockTick {
			return time.Since(start), nil
		}
		prev = cur
	}
	return time.Since(start), nil
}

// nftCount counts the workload interfaces in one of our nftables maps or
// sets (kind "map" or "set") on h.
func nftCount(ctx context.Context, h *lab.Host, kind, name string) (int, error) {
	out, err := h.Run(ctx, "nft", "list", kind, "inet", "calico", name)
	if err != nil {
		return 0, err
	}
	return strings.Count(out, `"cali`), nil
}

// dispatched counts the endpoints h's table dispatches: by name (to-wl)
// and by their profile list's device group (wl-groups).
func dispatched(ctx context.Context, h *lab.Host) (int, error) {
	byName, err := nftCount(ctx, h, "map", "to-wl")
	if err != nil {
		return 0, err
	}
	byGroup, err := nftCount(ctx, h, "set", "wl-groups")
	return byName + byGroup, err
}
