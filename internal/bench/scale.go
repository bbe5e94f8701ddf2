package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// Peering modes of the scale lab.
const (
	ScaleMesh       = "mesh"       // BGP full mesh
	ScaleReflectors = "reflectors" // mesh off; every node peers with two reflectors
)

// ScaleResult is one size of one peering mode: a world grown to Hosts
// namespace hosts, all agents sharing one etcd.
type ScaleResult struct {
	Mode       string `json:"mode"`
	Hosts      int    `json:"hosts"`
	Reflectors int    `json:"reflectors,omitempty"`
	// Added hosts were started at this size (the world grows from the
	// previous size); StartSeconds is how long their `calicoctl node`
	// calls took one after another, each followed by one workload.
	Added        int     `json:"added"`
	StartSeconds float64 `json:"startSeconds"`
	// StartRetries counts `calicoctl node` calls that failed and were
	// made again.
	StartRetries int `json:"startRetries,omitempty"`
	// ConvergeSeconds: from the moment the last added agent's `calicoctl
	// node` returned until every host had a route for every host's block
	// (each host has one workload in a block of its own, added right after
	// its agent started, the last one included).
	ConvergeSeconds float64 `json:"convergeSeconds"`
	// PropagationMs, per trial: a workload in a new block on one host (a
	// different one each trial), from the in-process call until every
	// other host has a route for the block.
	PropagationMs []float64 `json:"propagationMs"`
	P50Ms         float64   `json:"p50Ms"`
	P99Ms         float64   `json:"p99Ms"`
	MaxMs         float64   `json:"maxMs"`
	// Idle agents over the idle window: CPU in percent of one CPU, all
	// agents together and per agent; the reflectors' mean on its own.
	IdleCPUPercent      float64  `json:"idleCpuPercent"`
	AgentCPUMeanPercent float64  `json:"agentCpuMeanPercent"`
	AgentCPUMaxPercent  float64  `json:"agentCpuMaxPercent"`
	ReflectorCPUPercent float64  `json:"reflectorCpuPercent,omitempty"`
	RSSMeanMB           float64  `json:"rssMeanMB"`
	RSSMaxMB            float64  `json:"rssMaxMB"`
	Etcd                EtcdLoad `json:"etcd"`
	// ListBytes: keys and values an agent lists at start.
	ListBytes float64 `json:"listBytes"`
}

// EtcdLoad is what the datastore sees, from its /metrics and its process.
type EtcdLoad struct {
	Keys         int `json:"keys"`
	Watchers     int `json:"watchers"`     // etcd_debugging_mvcc_watcher_total
	WatchStreams int `json:"watchStreams"` // one per agent connection
	// Idle window: CPU of the etcd process, writes (revisions) and what
	// was sent to watchers, per second.
	IdleCPUPercent   float64 `json:"idleCpuPercent"`
	RSSMB            float64 `json:"rssMB"`
	IdleWritesPerSec float64 `json:"idleWritesPerSec"`
	IdleEventsPerSec float64 `json:"idleEventsPerSec"`
	IdleBytesPerSec  float64 `json:"idleSentBytesPerSec"`
	// Over the propagation trials: writes per new workload (heartbeats
	// at the idle rate taken out), events sent per write (the fan-out),
	// etcd CPU per new workload (its reads, writes and events), and agent
	// CPU: of the agent whose host got the workload, and of each agent
	// elsewhere (mean of the agents that hosted no trial, reflectors left
	// out).
	WritesPerWorkload float64 `json:"writesPerWorkload"`
	EventsPerWrite    float64 `json:"eventsPerWrite"`
	// EventsPerWorkload: events sent to watchers per new workload (status
	// heartbeats, which no agent watches, send none).
	EventsPerWorkload    float64 `json:"eventsPerWorkload"`
	CPUPerWorkloadMs     float64 `json:"cpuPerWorkloadMs"`
	HostAgentMsPerWl     float64 `json:"hostAgentMsPerWorkload"`
	ElsewhereAgentMsPerW float64 `json:"elsewhereAgentMsPerWorkload"`
	// The fan-out burst: fanOutWrites writes to a key every agent watches
	// (and ignores) against as many to a key no one watches. etcd CPU per
	// write with no watcher, per event sent, bytes per event, and agent
	// CPU per event received (the floor: the record is ignored).
	BaseWriteUs     float64 `json:"baseWriteUs"`
	PerEventUs      float64 `json:"perEventUs"`
	BytesPerEvent   float64 `json:"bytesPerEvent"`
	AgentPerEventUs float64 `json:"agentPerEventUs"`
}

const (
	scaleBlockPool = "10.90.0.0/16" // host k's workload: 10.90.k.1
	scaleTrialPool = "10.91.0.0/16" // trial t's workload: 10.91.t.1
	scaleAS        = "64512"
	// Hosts 3 and 4 are the reflectors in reflector mode (they host a
	// workload like every other host).
	scaleRR1, scaleRR2 = 3, 4
	scaleConverge      = 3 * time.Minute
)

// runScale grows a full-mesh world and a reflector world through their
// sizes. At each size it times convergence after the last agent's start,
// a new block's route on every host, and samples the idle agents and etcd.
func runScale(ctx context.Context, r *runner) error {
	all := append(slices.Clone(r.plan.ScaleMeshSizes), r.plan.ScaleRRSizes...)
	if len(all) == 0 {
		return errors.New("no scale sizes to run")
	}
	if s := slices.Max(all); s > 250 {
		return fmt.Errorf("scale size %d does not fit the lab's /24 fabric", s)
	}
	// Reflectors first: the targets are theirs. A world that fails
	// does not keep the other from running.
	var errs []error
	if len(r.plan.ScaleRRSizes) > 0 {
		if err := r.scaleWorld(ctx, ScaleReflectors, r.plan.ScaleRRSizes); err != nil {
			errs = append(errs, fmt.Errorf("reflectors: %w", err))
		}
	}
	if len(r.plan.ScaleMeshSizes) > 0 && ctx.Err() == nil {
		if err := r.scaleWorld(ctx, ScaleMesh, r.plan.ScaleMeshSizes); err != nil {
			errs = append(errs, fmt.Errorf("mesh: %w", err))
		}
	}
	r.res.scaleModel()
	return errors.Join(errs...)
}

// scaleWorld builds one world and grows it through sizes.
func (r *runner) scaleWorld(ctx context.Context, mode string, sizes []int) (err error) {
	rr := mode == ScaleReflectors
	if rr && sizes[0] < scaleRR2 {
		return fmt.Errorf("a reflector world needs at least %d hosts", scaleRR2)
	}
	w, err := r.buildWorld(ctx, walkthrough.Options{})
	if err != nil {
		return err
	}
	defer w.close()
	defer func() {
		// The world's files go with it: keep the datastore's log of a
		// failed run beside the results.
		if err != nil {
			keep := filepath.Join(r.opts.Out, "scale-"+mode+"-etcd.log")
			if b, rerr := os.ReadFile(filepath.Join(w.StateDir, "etcd", "etcd.log")); rerr == nil && os.WriteFile(keep, b, 0o644) == nil {
				err = fmt.Errorf("%w (datastore log kept in %s)", err, keep)
			}
		}
	}()
	h1 := w.Hosts[0]
	// Every host resolves every peer's address (all of them in a mesh), and
	// the kernel's one neighbour table for all namespaces overflows past
	// 1024 entries (36 hosts of a mesh): every member of the fabric gets a
	// permanent entry for every other instead, in both modes so they stay
	// comparable.
	if err := h1.Fabric.PinNeighbours(); err != nil {
		return err
	}
	// The lab is IPv4 only, and each IPv6 interface would hold IPv6
	// neighbour entries (its multicast groups) in the machine's one table.
	if err := w.Lab.DisableIPv6(); err != nil {
		return err
	}
	for _, pool := range []string{scaleBlockPool, scaleTrialPool} {
		if _, err := w.Ctl(ctx, h1, "pool", "add", pool); err != nil {
			return err
		}
	}
	if rr {
		// As a user turns a mesh into reflectors: the mesh off, every node
		// peering with both reflectors (which need no configuration).
		if _, err := w.Ctl(ctx, h1, "bgp", "node-mesh", "off"); err != nil {
			return err
		}
		for _, k := range []int{scaleRR1, scaleRR2} {
			if _, err := w.Ctl(ctx, h1, "bgp", "peer", "add", hostIP(k), "as", scaleAS); err != nil {
				return err
			}
		}
	}
	rw, err := watchRoutes(h1.Netns, w.Hosts[1].Netns)
	if err != nil {
		return err
	}
	defer rw.close()
	// Hosts 1 and 2 are up (Build started them): their workloads now.
	for k := 1; k <= 2; k++ {
		if err := w.hostWorkload(ctx, w.Hosts[k-1], k); err != nil {
			return err
		}
	}
	etcdPID, err := w.etcdPID()
	if err != nil {
		return err
	}
	trial := 0
	for _, n := range sizes {
		res := ScaleResult{Mode: mode, Hosts: n, Added: n - len(w.Hosts)}
		if rr {
			res.Reflectors = 2
		}
		t0 := time.Now()
		for k := len(w.Hosts) + 1; k <= n; k++ {
			r.prog.count(fmt.Sprintf("%s: starting hosts for %d", mode, n), k, n)
			h, err := w.NewHost(fmt.Sprintf("host%d", k), hostIP(k)+"/24")
			if err != nil {
				return err
			}
			// Watched before its agent starts, so no route is missed.
			if err := rw.add(h.Netns); err != nil {
				return err
			}
			var extra []string
			if rr && (k == scaleRR1 || k == scaleRR2) {
				extra = []string{"--route-reflector"}
			}
			if err := w.startNode(ctx, h, &res, extra...); err != nil {
				return err
			}
			lastStart := time.Now()
			if err := w.hostWorkload(ctx, h, k); err != nil {
				return err
			}
			if k == n {
				res.StartSeconds = round(lastStart.Sub(t0).Seconds(), 2)
				conv, err := w.converge(ctx, rw, lastStart)
				if err != nil {
					return fmt.Errorf("%d hosts: %w", n, err)
				}
				res.ConvergeSeconds = round(conv.Seconds(), 2)
			}
		}
		r.prog.logf("%s, %d hosts: every block on every host %.2f s after the last agent started (%d agents started in %.1f s)",
			mode, n, res.ConvergeSeconds, res.Added, res.StartSeconds)

		pids, err := w.agentPIDs()
		if err != nil {
			return err
		}
		m0, err := w.etcdMetrics(ctx)
		if err != nil {
			return err
		}
		c0, err := cpuTime(etcdPID)
		if err != nil {
			return err
		}
		a0, err := cpuTimes(pids)
		if err != nil {
			return err
		}
		hosted := map[int]bool{} // host index (from 0) -> hosted a trial
		tt0 := time.Now()
		var props []float64
		for i := range r.plan.ScaleTrials {
			trial++
			if trial > 250 {
				return fmt.Errorf("too many scale trials for pool %s", scaleTrialPool)
			}
			// Trials rotate over the hosts from 2 on that are not
			// reflectors: host 1 (and 2 with reflectors) never hosts one,
			// and stands for "elsewhere".
			k := 2 + i%(n-1)
			if rr && n > scaleRR2 {
				k = scaleRR2 + 1 + i%(n-scaleRR2)
			}
			hosted[k-1] = true
			ms, err := w.propagate(ctx, rw, w.Hosts[k-1], trial)
			if err != nil {
				return fmt.Errorf("%d hosts: %w", n, err)
			}
			props = append(props, ms)
		}
		trialSecs := time.Since(tt0).Seconds()
		m1, err := w.etcdMetrics(ctx)
		if err != nil {
			return err
		}
		c1, err := cpuTime(etcdPID)
		if err != nil {
			return err
		}
		a1, err := cpuTimes(pids)
		if err != nil {
			return err
		}
		res.PropagationMs = props
		res.P50Ms = round(percentile(props, 50), 1)
		res.P99Ms = round(percentile(props, 99), 1)
		_, mx := minMax(props)
		res.MaxMs = round(mx, 1)
		e := &res.Etcd
		trials := float64(len(props))
		writes := m1.get(mRevision) - m0.get(mRevision)
		if writes > 0 && trials > 0 {
			e.EventsPerWrite = round((m1.get(mEvents)-m0.get(mEvents))/writes, 1)
			e.EventsPerWorkload = round((m1.get(mEvents)-m0.get(mEvents))/trials, 1)
			e.CPUPerWorkloadMs = round(ms(c1-c0)/trials, 2)
			var hostSum, elseSum time.Duration
			elsewhere := 0
			for i := range pids {
				d := a1[i] - a0[i]
				switch {
				case hosted[i]:
					hostSum += d
				case !(rr && (i+1 == scaleRR1 || i+1 == scaleRR2)):
					elseSum += d
					elsewhere++
				}
			}
			if elsewhere > 0 {
				per := ms(elseSum) / float64(elsewhere) / trials
				e.ElsewhereAgentMsPerW = round(per, 3)
				// A hosting agent also handles the other trials, as any agent.
				e.HostAgentMsPerWl = round(max(ms(hostSum)/trials-per*float64(len(hosted)-1), 0), 2)
			}
		}
		r.prog.logf("%s, %d hosts: new block's route on every host p50 %.0f ms, p99 %.0f ms, max %.0f ms",
			mode, n, res.P50Ms, res.P99Ms, res.MaxMs)
		rw.forget()
		if err := w.scaleIdle(ctx, r, &res, etcdPID); err != nil {
			return err
		}
		// Heartbeats wrote during the trials too, at the idle rate.
		if trials > 0 {
			e.WritesPerWorkload = round(max(writes-e.IdleWritesPerSec*trialSecs, 0)/trials, 1)
		}
		if err := w.fanOut(ctx, &res, pids, etcdPID); err != nil {
			return err
		}
		r.prog.logf("%s, %d hosts: %.1f writes per workload, each sent to %.0f watchers; etcd %.1f µs per write and %.2f µs per event sent (%.0f bytes); agents %.1f µs per event",
			mode, n, e.WritesPerWorkload, e.EventsPerWrite, e.BaseWriteUs, e.PerEventUs, e.BytesPerEvent, e.AgentPerEventUs)
		r.prog.logf("%s, %d hosts: idle agents %.1f%% of one CPU together (max %.2f%% one), RSS %.1f MB mean, %.1f max; etcd %.1f%%, %d keys, %d watchers",
			mode, n, res.IdleCPUPercent, res.AgentCPUMaxPercent, res.RSSMeanMB, res.RSSMaxMB, e.IdleCPUPercent, e.Keys, e.Watchers)
		r.res.Scale = append(r.res.Scale, res)
		r.scaleMetrics(res)
	}
	return nil
}

// startNode runs `calicoctl node` on h, twice more if it fails (counted in
// res.StartRetries): a datastore that stalls for a few seconds under the
// lab's load should cost a retry, not the run.
func (w *world) startNode(ctx context.Context, h *lab.Host, res *ScaleResult, extra ...string) error {
	var err error
	for try := 0; try < 3; try++ {
		if try > 0 {
			res.StartRetries++
			w.r.prog.logf("%s: calicoctl node failed (%v); again in 2 s", h.Label, err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(2 * time.Second):
			}
		}
		if err = w.StartNode(ctx, h, extra...); err == nil {
			return nil
		}
	}
	return err
}

// hostIP is host k's fabric address.
func hostIP(k int) string { return fmt.Sprintf("10.0.0.%d", k) }

// hostWorkload gives host k its workload, in a block of its own.
func (w *world) hostWorkload(ctx context.Context, h *lab.Host, k int) error {
	_, err := w.addWorkload(ctx, h, fmt.Sprintf("blk-%d", k), blockIP(k).String())
	return err
}

func blockIP(k int) netip.Addr { return netip.AddrFrom4([4]byte{10, 90, byte(k), 1}) }

// converge waits until every host has a route covering every host's block
// address, and returns how long after since the last of them appeared. The
// route events give the times; a dump of every host's routes at the end
// confirms that none has gone again (a flap would otherwise hide).
func (w *world) converge(ctx context.Context, rw *routeWatch, since time.Time) (time.Duration, error) {
	deadline := time.Now().Add(scaleConverge)
	var last time.Time
	for {
		missing := ""
		last = time.Time{}
		rw.mu.Lock()
		for _, h := range w.Hosts {
			for k := range w.Hosts {
				t, ok := rw.firstCovering(h.Name, blockIP(k+1))
				if !ok {
					missing = fmt.Sprintf("%s has no route for host%d's block", h.Label, k+1)
					break
				}
				if t.After(last) {
					last = t
				}
			}
			if missing != "" {
				break
			}
		}
		rw.mu.Unlock()
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("not converged within %s: %s", scaleConverge, missing)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	for {
		missing, err := w.missingBlocks()
		if err != nil {
			return 0, err
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("not converged within %s: %s", scaleConverge, missing)
		}
		time.Sleep(200 * time.Millisecond)
		last = time.Now()
	}
	return max(last.Sub(since), 0), nil
}

// missingBlocks dumps every host's routes of ours and names the first host
// without a route for some host's block ("" when none is missing).
func (w *world) missingBlocks() (string, error) {
	for _, h := range w.Hosts {
		hd, err := netns.GetFromPath(h.Netns.Path)
		if err != nil {
			return "", err
		}
		nh, err := netlink.NewHandleAt(hd)
		hd.Close()
		if err != nil {
			return "", err
		}
		routes, err := nh.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProto}, netlink.RT_FILTER_PROTOCOL)
		nh.Close()
		if err != nil {
			return "", fmt.Errorf("routes of %s: %w", h.Label, err)
		}
		for k := range w.Hosts {
			ip := blockIP(k + 1)
			if !slices.ContainsFunc(routes, func(rt netlink.Route) bool { return rt.Dst != nil && rt.Dst.Contains(ip.AsSlice()) }) {
				return fmt.Sprintf("%s has no route for host%d's block (%s)", h.Label, k+1, ip), nil
			}
		}
	}
	return "", nil
}

// propagate adds a workload in a new block on h and returns the ms until
// every other host has a route for it.
func (w *world) propagate(ctx context.Context, rw *routeWatch, h *lab.Host, trial int) (float64, error) {
	ip := netip.AddrFrom4([4]byte{10, 91, byte(trial), 1})
	name := fmt.Sprintf("sc-%d", trial)
	ns, err := w.Lab.AddWorkloadNetns(h, name)
	if err != nil {
		return 0, err
	}
	var others []string
	for _, o := range w.Hosts {
		if o != h {
			others = append(others, o.Name)
		}
	}
	start := time.Now()
	if _, err := w.attach(ctx, h, ns, name, ip.String()); err != nil {
		return 0, err
	}
	got, err := rw.wait(ctx, others, ip, false, start, 30*time.Second)
	if err != nil {
		return 0, err
	}
	var last time.Time
	for _, t := range got {
		if t.After(last) {
			last = t
		}
	}
	return round(ms(last.Sub(start)), 1), nil
}

// scaleIdle samples every agent's and etcd's CPU over IdleSeconds, after
// a pause for the trials' work to drain, and reads etcd's gauges.
func (w *world) scaleIdle(ctx context.Context, r *runner, res *ScaleResult, etcdPID int) error {
	pids, err := w.agentPIDs()
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(3 * time.Second):
	}
	m0, err := w.etcdMetrics(ctx)
	if err != nil {
		return err
	}
	before := make([]time.Duration, len(pids)+1)
	for i, pid := range append(slices.Clone(pids), etcdPID) {
		if before[i], err = cpuTimeAll(pid); err != nil {
			return err
		}
	}
	t0 := time.Now()
	r.prog.logf("%s, %d hosts: sampling idle agents for %d s", res.Mode, res.Hosts, r.plan.ScaleIdleSeconds)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Duration(r.plan.ScaleIdleSeconds) * time.Second):
	}
	elapsed := time.Since(t0)
	m1, err := w.etcdMetrics(ctx)
	if err != nil {
		return err
	}
	pct := func(pid int, before time.Duration) (float64, error) {
		c, err := cpuTimeAll(pid)
		return 100 * float64(c-before) / float64(elapsed), err
	}
	var sum, mx, rr, rss, rssMax float64
	for i, pid := range pids {
		p, err := pct(pid, before[i])
		if err != nil {
			return err
		}
		sum += p
		mx = max(mx, p)
		if res.Reflectors > 0 && (i+1 == scaleRR1 || i+1 == scaleRR2) {
			rr += p / 2
		}
		mb, err := rssMB(pid)
		if err != nil {
			return err
		}
		rss += mb
		rssMax = max(rssMax, mb)
	}
	res.IdleCPUPercent = round(sum, 2)
	res.AgentCPUMeanPercent = round(sum/float64(len(pids)), 3)
	res.AgentCPUMaxPercent = round(mx, 2)
	res.ReflectorCPUPercent = round(rr, 2)
	res.RSSMeanMB = round(rss/float64(len(pids)), 1)
	res.RSSMaxMB = round(rssMax, 1)
	e := &res.Etcd
	p, err := pct(etcdPID, before[len(pids)])
	if err != nil {
		return err
	}
	e.IdleCPUPercent = round(p, 2)
	e.RSSMB, _ = rssMB(etcdPID)
	e.RSSMB = round(e.RSSMB, 1)
	secs := elapsed.Seconds()
	e.IdleWritesPerSec = round((m1.get(mRevision)-m0.get(mRevision))/secs, 2)
	e.IdleEventsPerSec = round((m1.get(mEvents)-m0.get(mEvents))/secs, 1)
	e.IdleBytesPerSec = round((m1.get(mSentBytes)-m0.get(mSentBytes))/secs, 0)
	// What an agent lists when it starts (its range, as the agent reads it).
	lctx, cancel := context.WithTimeout(ctx, datastore.OpTimeout)
	defer cancel()
	list, err := w.etcd.Get(lctx, datastore.Root, clientv3.WithRange(datastore.AgentKeysEnd))
	if err != nil {
		return fmt.Errorf("listing the agents' keys: %w", err)
	}
	for _, kv := range list.Kvs {
		res.ListBytes += float64(len(kv.Key) + len(kv.Value))
	}
	e.Keys = int(m1.get(mKeys))
	e.Watchers = int(m1.get(mWatchers))
	e.WatchStreams = int(m1.get(mWatchStreams))
	return nil
}

// agentPIDs are the agents' pids, in host order.
func (w *world) agentPIDs() ([]int, error) {
	pids := make([]int, len(w.Hosts))
	for i, h := range w.Hosts {
		pid, err := w.agentPID(h)
		if err != nil {
			return nil, err
		}
		pids[i] = pid
	}
	return pids, nil
}

// sumCPU is the CPU time of the processes together, their children's
// included.
func sumCPU(pids []int) (time.Duration, error) {
	ts, err := cpuTimes(pids)
	var sum time.Duration
	for _, t := range ts {
		sum += t
	}
	return sum, err
}

// cpuTimes is each process's CPU time, its children's included.
func cpuTimes(pids []int) ([]time.Duration, error) {
	ts := make([]time.Duration, len(pids))
	for i, pid := range pids {
		var err error
		if ts[i], err = cpuTimeAll(pid); err != nil {
			return nil, err
		}
	}
	return ts, nil
}

// fanOutWrites is the size of each burst of the fan-out measurement.
const fanOutWrites = 400

// fanOut writes fanOutWrites times to a key inside every agent's watch
// range that no agent uses (each write is one event to every agent, which
// decodes and ignores it), then as many times to a key outside every range.
// The difference is the cost of sending one write to all watchers.
func (w *world) fanOut(ctx context.Context, res *ScaleResult, pids []int, etcdPID int) error {
	value := strings.Repeat("x", 200) // about an endpoint record
	type burst struct {
		etcd, agents time.Duration
		m            metrics
	}
	run := func(key string) (burst, error) {
		var b burst
		m0, err := w.etcdMetrics(ctx)
		if err != nil {
			return b, err
		}
		e0, err := cpuTime(etcdPID)
		if err != nil {
			return b, err
		}
		a0, err := sumCPU(pids)
		if err != nil {
			return b, err
		}
		for range fanOutWrites {
			pctx, cancel := context.WithTimeout(ctx, datastore.OpTimeout)
			_, err := w.etcd.Put(pctx, key, value)
			cancel()
			if err != nil {
				return b, fmt.Errorf("fan-out burst on %s: %w", key, err)
			}
		}
		// Let the last events reach the agents before reading their CPU.
		time.Sleep(500 * time.Millisecond)
		m1, err := w.etcdMetrics(ctx)
		if err != nil {
			return b, err
		}
		e1, err := cpuTime(etcdPID)
		if err != nil {
			return b, err
		}
		a1, err := sumCPU(pids)
		if err != nil {
			return b, err
		}
		b.etcd, b.agents = e1-e0, a1-a0
		b.m = metrics{}
		for _, k := range []string{mEvents, mSentBytes} {
			b.m[k] = m1.get(k) - m0.get(k)
		}
		return b, nil
	}
	watched, unwatched := datastore.Root+"bench/fan-out", "/calico-bench/fan-out"
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), datastore.OpTimeout)
		defer cancel()
		w.etcd.Delete(dctx, watched)
		w.etcd.Delete(dctx, unwatched)
	}()
	on, err := run(watched)
	if err != nil {
		return err
	}
	off, err := run(unwatched)
	if err != nil {
		return err
	}
	e := &res.Etcd
	events := on.m[mEvents] - off.m[mEvents]
	e.BaseWriteUs = round(us(off.etcd)/fanOutWrites, 1)
	if events > 0 {
		e.PerEventUs = round(max(us(on.etcd-off.etcd), 0)/events, 2)
		e.BytesPerEvent = round((on.m[mSentBytes]-off.m[mSentBytes])/events, 0)
		e.AgentPerEventUs = round(max(us(on.agents-off.agents), 0)/events, 2)
	}
	return nil
}

// us converts a duration to float microseconds.
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// etcdPID reads the pid file `calicoctl datastore start` wrote.
func (w *world) etcdPID() (int, error) {
	return readPID(filepath.Join(w.StateDir, "etcd", "etcd.pid"), "the datastore")
}

// scaleMetrics adds the summary rows of one size; the targets apply
// to the largest reflector size.
func (r *runner) scaleMetrics(s ScaleResult) {
	op := func(want bool) string {
		if want {
			return "<="
		}
		return ""
	}
	target := s.Mode == ScaleReflectors && s.Hosts == slices.Max(r.plan.ScaleRRSizes)
	what := fmt.Sprintf("%s, %d hosts", s.Mode, s.Hosts)
	r.res.metric(SecScale, what+": converged after the last agent's start", s.ConvergeSeconds, "s", op(target), 10,
		fmt.Sprintf("%d agents started one after another in %.1f s", s.Added, s.StartSeconds))
	r.res.metric(SecScale, what+": new route on every host (p99)", s.P99Ms, "ms", op(target), 1000,
		fmt.Sprintf("p50 %.0f ms, max %.0f ms over %d trials", s.P50Ms, s.MaxMs, len(s.PropagationMs)))
	r.res.metric(SecScale, what+": idle CPU of all agents", s.IdleCPUPercent, "% of a CPU", op(target), 20,
		fmt.Sprintf("per agent %.3f%% mean, %.2f%% max; RSS %.1f MB mean, %.1f MB max; etcd %.2f%%", s.AgentCPUMeanPercent, s.AgentCPUMaxPercent, s.RSSMeanMB, s.RSSMaxMB, s.Etcd.IdleCPUPercent))
}
