package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/lab"
)

// PolicyScale is one host carrying many endpoints in many profiles.
type PolicyScale struct {
	Endpoints int `json:"endpoints"` // on host 1 at the end, the timed ones included
	Profiles  int `json:"profiles"`
	// AddOne is the cost of one more endpoint at each count of existing ones.
	AddOne []AddOne `json:"addOne"`
	// ColdStart: the agent stopped, its nftables table and routes deleted,
	// then `calicoctl node` again: seconds until the command returned (the
	// agent reported ready) and until every endpoint had its route and its
	// nftables dispatch entry.
	ColdStartReadySeconds float64 `json:"coldStartReadySeconds"`
	ColdStartSeconds      float64 `json:"coldStartSeconds"`
	// ColdStartCPUMs is the restarted agent's CPU time (its nft runs
	// included) from its start to that moment.
	ColdStartCPUMs    float64 `json:"coldStartCpuMs,omitempty"`
	RSSMB             float64 `json:"rssMB"` // agent VmRSS with all endpoints, before the restart
	RSSAfterRestartMB float64 `json:"rssAfterRestartMB"`
}

// AddOne is the cost of adding one endpoint next to Existing others.
type AddOne struct {
	Existing  int       `json:"existing"`
	LatencyMs []float64 `json:"latencyMs"` // in-process call start -> reachable from host 2
	CPUMs     []float64 `json:"agentCpuMs"`
	MedianMs  float64   `json:"medianMs"`
	CPUMedMs  float64   `json:"agentCpuMedianMs"`
	// CPUMeanMs is the mean of CPUMs: the kernel counts a process's CPU in
	// 10 ms ticks, so one add reads 0 or 10 ms and the median of a few is
	// either; the mean of several resolves what one add costs.
	CPUMeanMs float64 `json:"agentCpuMeanMs"`
	// Where the time went (medians, ms): the in-process call's phases
	// (client.Trace, in PhaseOrder) and from the call's return to the
	// first echo reply (the agent's watch, calc, interface, routes and
	// nftables, and BGP when the workload's block is new on host 2).
	PhaseP50   map[string]float64 `json:"phaseP50Ms,omitempty"`
	ReachP50Ms float64            `json:"reachAfterCallP50Ms"`
	// IdleCPUMsPerS is the idle agent's CPU per second at this count,
	// measured over idleWindow just before the adds: its periodic work
	// (status, interface audit, sweeps) runs during each add's window
	// too, which lasts until the agent is quiet again (at least 400 ms).
	// CPUMeanMs keeps that idle share, as the figure always did;
	// CPUNetMeanMs is the mean of each add's CPU less the idle rate over
	// that add's own window. The periodic resync (every 30 s: a full pass,
	// then the read-back of every host side a second later, 60-110 ms at
	// 1000 endpoints) and the sweeper's link dump (every 15 s) are rarer
	// than idleWindow: a window that holds one reads 18-30 ms/s at 1000,
	// one that does not under 1 ms/s, so the median of SchedCPUMs below
	// is the steadier figure.
	IdleCPUMsPerS float64   `json:"idleAgentCpuMsPerS"`
	WindowMs      []float64 `json:"windowMs,omitempty"` // each add's CPU window
	CPUNetMeanMs  float64   `json:"agentCpuNetMeanMs"`
	// The same from the scheduler's nanosecond run times of the agent's
	// threads (schedCPU), free of the 10 ms ticks: each add's CPU, and the
	// idle rate over idleWindow.
	SchedCPUMs     []float64 `json:"agentSchedCpuMs,omitempty"`
	SchedCPUMeanMs float64   `json:"agentSchedCpuMeanMs"`
	// SchedCPUMedMs is their median: a periodic full pass (the resync
	// every 30 s, a new IPAM block) costs 60-110 ms at 1000 endpoints, and
	// landing in one add's window of ten it moved the mean by 6-11 ms.
	SchedCPUMedMs     float64 `json:"agentSchedCpuMedianMs"`
	SchedIdleMsPerS   float64 `json:"idleAgentSchedCpuMsPerS"`
	SchedCPUNetMeanMs float64 `json:"agentSchedCpuNetMeanMs"`
	// The agent with the processes it runs (each add's nft run, 2-5 ms
	// of CPU the figures above never saw), from a CPU accounting cgroup
	// (cpuGroup): each add's CPU and their median. Empty where the
	// kernel offers no such accounting.
	GroupCPUMs    []float64 `json:"agentGroupCpuMs,omitempty"`
	GroupCPUMedMs float64   `json:"agentGroupCpuMedianMs,omitempty"`
}

// idleWindow is how long the idle agent's CPU is read before the adds at
// each count: 10 ms ticks over 5 s resolve 2 ms/s.
const idleWindow = 5 * time.Second

const policyPool = "10.66.0.0/16"

// runPolicy fills host 1 with ScaleEndpoints endpoints in ScaleProfiles
// profiles, timing one more endpoint at each AddAt count, then restarts
// its agent cold.
func runPolicy(ctx context.Context, r *runner) error {
	w, err := r.buildProfileWorld(ctx, policyPool)
	if err != nil {
		return err
	}
	defer w.close()
	h1, h2 := w.Hosts[0], w.Hosts[1]
	nprof := max(r.plan.ScaleProfiles, 1)
	if err := w.ensureProfiles(ctx, "POL", nprof); err != nil {
		return err
	}
	probeWl, err := w.addWorkload(ctx, h2, "probe", "auto", benchProfile)
	if err != nil {
		return err
	}
	p, err := newProber(probeWl.Netns)
	if err != nil {
		return err
	}
	defer p.close()

	// The agent's CPU with its children's: an accounting group of its own
	// for as long as this section runs (back where it was before the
	// world goes).
	if g, err := newCPUGroup("calico-bench-" + w.Lab.ID()); err != nil {
		r.prog.logf("policy: agent CPU with the processes it runs not measured: %v", err)
	} else {
		defer func() {
			if err := g.close(); err != nil {
				r.prog.logf("policy: %v", err)
			}
		}()
		pid, err := w.agentPID(h1)
		if err != nil {
			return err
		}
		if err := g.add(pid); err != nil {
			return err
		}
		w.acct = g
	}
	ps := &PolicyScale{Profiles: nprof}
	r.res.Policy = ps // filled in as it goes, so a failure keeps what was measured
	existing := 0
	at := slices.Clone(r.plan.AddAt)
	slices.Sort(at)
	at = append(at, r.plan.ScaleEndpoints) // fill up to the full count at the end
	for i, n := range at {
		if n > existing {
			r.prog.logf("policy: filling %s to %d endpoints in %d profiles", h1.Label, n, nprof)
			t0 := time.Now()
			err := w.addMany(ctx, h1, "pe", existing, n, inProfile("POL", nprof), "policy endpoints")
			if err != nil {
				return err
			}
			r.prog.logf("policy: %d endpoints added in %.1f s", n-existing, time.Since(t0).Seconds())
			existing = n
		}
		if _, err := w.settle(ctx, h1, 60*time.Second); err != nil {
			return err
		}
		if i == len(at)-1 {
			break // the fill to the full count is not an AddAt point
		}
		a := AddOne{Existing: existing}
		if a.IdleCPUMsPerS, a.SchedIdleMsPerS, err = w.idleRate(ctx, h1, idleWindow); err != nil {
			return err
		}
		phases := map[string][]float64{}
		var reach []float64
		for k := range r.plan.AddSamples {
			tr := &client.Trace{}
			lat, call, cpu, window, err := w.timeOneMore(ctx, h1, fmt.Sprintf("one-%d-%d", n, k), p, tr)
			if err != nil {
				return err
			}
			a.LatencyMs = append(a.LatencyMs, round(ms(lat), 2))
			a.CPUMs = append(a.CPUMs, round(ms(cpu.ticks), 1))
			a.SchedCPUMs = append(a.SchedCPUMs, round(ms(cpu.sched), 2))
			if w.acct != nil {
				a.GroupCPUMs = append(a.GroupCPUMs, round(ms(cpu.group), 2))
			}
			a.WindowMs = append(a.WindowMs, round(ms(window), 0))
			reach = append(reach, ms(lat-call))
			for _, m := range tr.Marks() {
				phases[m.Phase] = append(phases[m.Phase], ms(m.Took))
			}
			existing++
		}
		a.MedianMs = round(median(a.LatencyMs), 2)
		a.CPUMedMs = round(median(a.CPUMs), 1)
		a.CPUMeanMs = round(mean(a.CPUMs), 1)
		net := make([]float64, len(a.CPUMs))
		for i := range a.CPUMs {
			net[i] = a.CPUMs[i] - a.IdleCPUMsPerS*a.WindowMs[i]/1000
		}
		a.CPUNetMeanMs = round(mean(net), 1)
		a.SchedCPUMeanMs = round(mean(a.SchedCPUMs), 2)
		a.SchedCPUMedMs = round(median(a.SchedCPUMs), 2)
		for i := range a.SchedCPUMs {
			net[i] = a.SchedCPUMs[i] - a.SchedIdleMsPerS*a.WindowMs[i]/1000
		}
		a.SchedCPUNetMeanMs = round(mean(net), 2)
		if len(a.GroupCPUMs) > 0 {
			a.GroupCPUMedMs = round(median(a.GroupCPUMs), 2)
		}
		a.ReachP50Ms = round(median(reach), 2)
		a.PhaseP50 = map[string]float64{}
		for ph, v := range phases {
			a.PhaseP50[ph] = round(median(v), 2)
		}
		r.prog.logf("policy: one more endpoint next to %d: %.1f ms to reachable (%s; reply after the call %.1f), agent CPU %.1f ms (mean; %.1f less the idle %.1f ms/s over windows of %.0f ms; scheduler time %.2f ms, %.2f less the idle %.2f ms/s, median %.2f)",
			a.Existing, a.MedianMs, phaseSummary(a.PhaseP50), a.ReachP50Ms, a.CPUMeanMs, a.CPUNetMeanMs, a.IdleCPUMsPerS, mean(a.WindowMs),
			a.SchedCPUMeanMs, a.SchedCPUNetMeanMs, a.SchedIdleMsPerS, a.SchedCPUMedMs)
		if a.GroupCPUMedMs > 0 {
			r.prog.logf("policy: one more endpoint next to %d: agent CPU with its nft run %.2f ms (median; cgroup)", a.Existing, a.GroupCPUMedMs)
		}
		ps.AddOne = append(ps.AddOne, a)
		ps.Endpoints = existing
	}
	ps.Endpoints = existing
	pid, err := w.agentPID(h1)
	if err != nil {
		return err
	}
	if ps.RSSMB, err = rssMB(pid); err != nil {
		return err
	}
	if err := w.coldStart(ctx, r, h1, existing, ps); err != nil {
		return err
	}

	r.res.metric(SecPolicy, fmt.Sprintf("cold start: program %d endpoints in %d profiles", ps.Endpoints, nprof), round(ps.ColdStartSeconds, 3), "s", "<=", 1,
		fmt.Sprintf("agent ready after %.2f s", ps.ColdStartReadySeconds))
	for _, a := range ps.AddOne {
		r.res.metric(SecPolicy, fmt.Sprintf("add one endpoint next to %d", a.Existing), a.MedianMs, "ms", "", 0,
			fmt.Sprintf("to reachable from host 2; agent CPU %.1f ms (mean of %d)", a.CPUMeanMs, len(a.CPUMs)))
	}
	r.res.addOneRatios(ps)
	r.res.metric(SecPolicy, fmt.Sprintf("agent RSS at %d endpoints", ps.Endpoints), round(ps.RSSMB, 1), "MB", "<=", 60,
		fmt.Sprintf("%.1f MB after the cold start", ps.RSSAfterRestartMB))
	return nil
}

// Summary rows of one more endpoint next to the most existing ones against
// next to the fewest; each name goes on with the two counts.
const (
	addOneRatioRow = "add one endpoint: next to "
	addOneCPURow   = "agent CPU per added endpoint: next to "
	addOneSchedRow = "agent CPU per added endpoint, scheduler time, median: next to "
	addOneGroupRow = "agent CPU per added endpoint with its nft run, median: next to "
)

// addOneRatios adds the rows of one more endpoint's cost next to the most
// existing endpoints against next to the fewest: issue 19 wants both time
// to reachable and agent CPU flat within 1.3x.
func (r *Results) addOneRatios(ps *PolicyScale) {
	if len(ps.AddOne) < 2 {
		return
	}
	lo, hi := ps.AddOne[0], ps.AddOne[len(ps.AddOne)-1]
	if lo.MedianMs > 0 {
		r.metric(SecPolicy, fmt.Sprintf("%s%d / next to %d", addOneRatioRow, hi.Existing, lo.Existing), round(hi.MedianMs/lo.MedianMs, 2), "ratio", "<=", target19AddOne,
			fmt.Sprintf("time to reachable: %.1f ms against %.1f ms", hi.MedianMs, lo.MedianMs))
	}
	// Agent CPU, issue 19's target: the median of each add's scheduler
	// time. Every add's window (until the agent is quiet again, about 400
	// ms) also holds whatever periodic work falls into it: at 1000
	// endpoints the resync's full pass and the read-back after it cost
	// 20-35 ms, so the few windows that catch one carry that in full and
	// the mean follows the idle agent's rate more than the add. The median
	// is the add's own cost; the means, with ticks as the issue was filed
	// and net of the idle rate, stay beside it.
	if lo.SchedCPUMedMs > 0 {
		r.metric(SecPolicy, fmt.Sprintf("%s%d / next to %d", addOneSchedRow, hi.Existing, lo.Existing), round(hi.SchedCPUMedMs/lo.SchedCPUMedMs, 2), "ratio", "", 0,
			fmt.Sprintf("informational, the agent's own threads only (without its nft run): %.2f ms against %.2f ms (medians of %d adds; means %.2f and %.2f, net of the idle agent's %.2f and %.2f ms/s: %.2f and %.2f)",
				hi.SchedCPUMedMs, lo.SchedCPUMedMs, len(lo.SchedCPUMs), hi.SchedCPUMeanMs, lo.SchedCPUMeanMs,
				hi.SchedIdleMsPerS, lo.SchedIdleMsPerS, hi.SchedCPUNetMeanMs, lo.SchedCPUNetMeanMs))
	}
	if lo.GroupCPUMedMs > 0 && hi.GroupCPUMedMs > 0 {
		r.metric(SecPolicy, fmt.Sprintf("%s%d / next to %d", addOneGroupRow, hi.Existing, lo.Existing), round(hi.GroupCPUMedMs/lo.GroupCPUMedMs, 2), "ratio", "<=", target19AddOne,
			fmt.Sprintf("%.2f ms against %.2f ms (medians of %d adds; the agent and the processes it runs, from a CPU accounting cgroup)",
				hi.GroupCPUMedMs, lo.GroupCPUMedMs, len(lo.GroupCPUMs)))
	}
	if lo.CPUMeanMs > 0 {
		r.metric(SecPolicy, fmt.Sprintf("%s%d / next to %d", addOneCPURow, hi.Existing, lo.Existing), round(hi.CPUMeanMs/lo.CPUMeanMs, 2), "ratio", "", 0,
			fmt.Sprintf("informational, the figure issue 19 was filed with: %.1f ms against %.1f ms (means of %d adds; 10 ms ticks; the idle agent's periodic work in the windows included, %.1f and %.1f ms/s)",
				hi.CPUMeanMs, lo.CPUMeanMs, len(lo.CPUMs), hi.IdleCPUMsPerS, lo.IdleCPUMsPerS))
	}
}

// timeOneMore adds one workload in profile BENCH through the in-process
// call and measures until the probe on host 2 gets echo replies, and the
// agent CPU time it cost (until the agent is idle again), in ticks and in
// scheduler time; window is how long the CPU was counted: from before the
// call until the agent was quiet again.
func (w *world) timeOneMore(ctx context.Context, h *lab.Host, name string, p *prober, tr *client.Trace) (reach, call time.Duration, cpu agentCPU, window time.Duration, err error) {
	pid, err := w.agentPID(h)
	if err != nil {
		return 0, 0, cpu, 0, err
	}
	ns, err := w.Lab.AddWorkloadNetns(h, name)
	if err != nil {
		return 0, 0, cpu, 0, err
	}
	cpu0, err := w.readAgentCPU(pid)
	if err != nil {
		return 0, 0, cpu, 0, err
	}
	t0 := time.Now()
	wl, err := w.attach(client.WithTrace(ctx, tr), h, ns, name, "auto", benchProfile)
	if err != nil {
		return 0, 0, cpu, 0, err
	}
	call = time.Since(t0)
	// The address is known once the call returns; pinging starts then, and
	// a workload already programmed answers the first echo.
	at, err := p.wait(ctx, p.watch(wl.IP), setupTimeout)
	if err != nil {
		return 0, 0, cpu, 0, fmt.Errorf("%s (%s) on %s: %w", name, wl.IP, h.Label, err)
	}
	if _, err := w.settle(ctx, h, 20*time.Second); err != nil {
		return 0, 0, cpu, 0, err
	}
	cpu1, err := w.readAgentCPU(pid)
	if err != nil {
		return 0, 0, cpu, 0, err
	}
	return at.Sub(t0), call, cpu1.sub(cpu0), time.Since(t0), nil
}

// agentCPU is a process's CPU time three ways: /proc/PID/stat's user and
// system ticks (10 ms), the sum of its threads' scheduler run times
// (/proc/PID/task/*/schedstat, nanoseconds; a thread that exited between
// two readings takes its time with it, and Go's threads rarely exit), and
// its accounting group's, which counts the processes it ran too (zero
// without one).
type agentCPU struct{ ticks, sched, group time.Duration }

func (c agentCPU) sub(o agentCPU) agentCPU {
	return agentCPU{c.ticks - o.ticks, c.sched - o.sched, c.group - o.group}
}

// readAgentCPU is readAgentCPU and the world's accounting group's usage,
// if the agent is in one.
func (w *world) readAgentCPU(pid int) (agentCPU, error) {
	c, err := readAgentCPU(pid)
	if err != nil || w.acct == nil {
		return c, err
	}
	c.group, err = w.acct.usage()
	return c, err
}

func readAgentCPU(pid int) (agentCPU, error) {
	t, err := cpuTime(pid)
	if err != nil {
		return agentCPU{}, err
	}
	s, err := schedCPU(pid)
	return agentCPU{ticks: t, sched: s}, err
}

// schedCPU sums the first field of /proc/PID/task/*/schedstat: each
// thread's time on a CPU in nanoseconds.
func schedCPU(pid int) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "schedstat"))
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("malformed %s/%s/schedstat", dir, e.Name())
		}
		sum += n
	}
	return time.Duration(sum), nil
}

// idleRate is h's agent's CPU per second (ms/s, its own, not its nft
// runs', as timeOneMore counts) over d with nothing being added: from
// ticks and from scheduler time.
func (w *world) idleRate(ctx context.Context, h *lab.Host, d time.Duration) (ticks, sched float64, err error) {
	pid, err := w.agentPID(h)
	if err != nil {
		return 0, 0, err
	}
	c0, err := readAgentCPU(pid)
	if err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	case <-time.After(d):
	}
	c1, err := readAgentCPU(pid)
	if err != nil {
		return 0, 0, err
	}
	dc, secs := c1.sub(c0), time.Since(t0).Seconds()
	return round(ms(dc.ticks)/secs, 2), round(ms(dc.sched)/secs, 3), nil
}

// phaseSummary is "checks 0.1, lock 0.0, ..." of the phases present, in
// PhaseOrder.
func phaseSummary(p map[string]float64) string {
	var parts []string
	for _, ph := range PhaseOrder {
		if v, ok := p[ph]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1f", ph, v))
		}
	}
	return strings.Join(parts, ", ")
}

// coldStart stops h's agent, deletes what it programmed (our nftables table
// and our routes), starts it again with `calicoctl node`, and times until
// every local endpoint has its /32 route and its dispatch entry again.
func (w *world) coldStart(ctx context.Context, r *runner, h *lab.Host, endpoints int, ps *PolicyScale) error {
	r.prog.logf("policy: cold start of %s's agent with %d endpoints", h.Label, endpoints)
	if _, err := w.Ctl(ctx, h, "node", "stop"); err != nil {
		return err
	}
	if _, err := h.Run(ctx, "nft", "delete", "table", "inet", "calico"); err != nil {
		return err
	}
	if _, err := h.Run(ctx, "ip", "route", "flush", "proto", fmt.Sprint(routeProto)); err != nil {
		return err
	}
	t0 := time.Now()
	if _, err := w.Ctl(ctx, h, "node", "--ip="+h.Addr().String(), "--name="+h.Label); err != nil {
		return err
	}
	ps.ColdStartReadySeconds = round(time.Since(t0).Seconds(), 3)
	deadline := t0.Add(2 * time.Minute)
	for {
		routes, err := localRoutes(h)
		if err != nil {
			return err
		}
		entries := 0
		if routes >= endpoints {
			// nft runs as a process; only ask once the routes are there.
			if entries, err = dispatched(ctx, h); err != nil {
				entries = 0 // the table may not exist yet
			}
		}
		if routes >= endpoints && entries >= endpoints {
			ps.ColdStartSeconds = round(time.Since(t0).Seconds(), 3)
			if pid, err := w.agentPID(h); err == nil {
				if cpu, err := cpuTimeAll(pid); err == nil {
					ps.ColdStartCPUMs = round(ms(cpu), 0)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cold start: after 2 minutes %s has %d of %d workload routes and %d dispatch entries", h.Label, routes, endpoints, entries)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.settle(ctx, h, 30*time.Second)
	pid, err := w.agentPID(h)
	if err != nil {
		return err
	}
	ps.RSSAfterRestartMB, _ = rssMB(pid)
	return nil
}

// localRoutes counts our /32 routes on h: one per local workload address.
func localRoutes(h *lab.Host) (int, error) {
	nl := h.Netlink()
	if nl == nil {
		return 0, lab.ErrClosed
	}
	rs, err := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProto}, netlink.RT_FILTER_PROTOCOL)
	if errors.Is(err, netlink.ErrDumpInterrupted) {
		return 0, nil // the table changed while read: count again next time
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for _, rt := range rs {
		if rt.Dst != nil {
			if ones, _ := rt.Dst.Mask.Size(); ones == 32 {
				n++
			}
		}
	}
	return n, nil
}
