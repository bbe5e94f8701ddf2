package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/dataplane/nft"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/options"
)

// AgentLabelPolicy is issue 14's label-policy scale target through a real
// agent: a walkthrough world whose host 1 carries the endpoints (veths,
// addresses from IPAM, labels app=a<i mod 50>) and the label policies of
// the in-process measurement, all written through the datastore.
type AgentLabelPolicy struct {
	Endpoints int `json:"endpoints"`
	Policies  int `json:"policies"`
	// ColdSeconds: the agent stopped, its table and routes deleted, then
	// `calicoctl node` again: until every endpoint has its route and its
	// dispatch entry (the first pass writes the whole table, policies and
	// selector sets included, in one transaction). ReadySeconds: until
	// the command returned.
	ColdSeconds  float64 `json:"coldSeconds"`
	ReadySeconds float64 `json:"readySeconds"`
	// ColdCPUMs is the restarted agent's CPU time (its nft runs included)
	// from its start until the table was complete: what the load does not
	// inflate.
	ColdCPUMs float64 `json:"coldCpuMs"`
	// ColdRetries counts the restarted agent's passes that did not
	// converge (retried with backoff), ColdWarning the first one's log line.
	ColdRetries int    `json:"coldRetries,omitempty"`
	ColdWarning string `json:"coldWarning,omitempty"`
	// ChangeMs: one endpoint relabelled (SetLabels, the client's
	// read and compare-and-swap write) until `nft monitor` on the host
	// reports its address added to the new selector's set.
	ChangeMs []float64 `json:"changeMs"`
	P50Ms    float64   `json:"p50Ms"`
	P99Ms    float64   `json:"p99Ms"`
	// CPUPerChangeMs: the agent's CPU time (its own and its nft runs')
	// over the changes, less what it uses idle over as long, per change.
	CPUPerChangeMs float64 `json:"cpuPerChangeMs"`
	IdleCPUPct     float64 `json:"idleCpuPct"` // idle agent, percent of one CPU
	RSSMB          float64 `json:"rssMB"`      // with everything programmed: the larger of after the changes and after the restart
	RSSAfterColdMB float64 `json:"rssAfterColdMB"`
	// ResyncCPUMs: the idle agent's CPU time (its nft runs included) over
	// one resync interval, less the idle rate over as long: what one
	// periodic resync costs when nothing drifted.
	ResyncCPUMs float64 `json:"resyncCpuMs"`
	// AcrossResyncMs: label changes made one after another for a resync
	// interval and a bit, so that some meet the periodic resync (which the
	// changes above, over a few seconds, mostly miss); p99 and max.
	AcrossResyncMs    []float64 `json:"acrossResyncMs"`
	AcrossResyncP99Ms float64   `json:"acrossResyncP99Ms"`
	AcrossResyncMaxMs float64   `json:"acrossResyncMaxMs"`
}

const policyV3Pool = "10.67.0.0/16"

// throughAgent measures the target through calico-node on a lab host.
func (ls *LabelPolicyScale) throughAgent(ctx context.Context, r *runner) error {
	w, err := r.buildProfileWorld(ctx, policyV3Pool)
	if err != nil {
		return err
	}
	defer w.close()
	h1 := w.Hosts[0]
	res := &AgentLabelPolicy{Endpoints: ls.Endpoints, Policies: ls.Policies}
	ls.Agent = res

	r.prog.logf("policy-v3: agent: %d label policies, %d labelled endpoints on %s", ls.Policies, ls.Endpoints, h1.Label)
	if err := w.applyScalePolicies(ctx, ls.Policies); err != nil {
		return err
	}
	app := make([]int, ls.Endpoints) // endpoint i is labelled app=a<app[i]>
	for i := range app {
		app[i] = i % nft.ScaleSelectors
	}
	t0 := time.Now()
	err = w.addMany(ctx, h1, "lp", 0, ls.Endpoints, func(i int) client.WorkloadRequest {
		return client.WorkloadRequest{Profiles: []string{benchProfile}, Labels: map[string]string{"app": fmt.Sprintf("a%d", app[i])}}
	}, "labelled endpoints")
	if err != nil {
		return err
	}
	r.prog.logf("policy-v3: agent: %d endpoints added in %.1f s", ls.Endpoints, time.Since(t0).Seconds())
	if _, err := w.settle(ctx, h1, 60*time.Second); err != nil {
		return err
	}
	addrs, err := w.workloadAddrs(ctx, h1.Label, "lp", ls.Endpoints)
	if err != nil {
		return err
	}

	pid, err := w.agentPID(h1)
	if err != nil {
		return err
	}
	mon, err := startSetMonitor(h1.Netns)
	if err != nil {
		return err
	}
	defer mon.stop()
	// What the idle agent costs (the status check every second), to take
	// off the changes' CPU; measured once it is idle (a pass a second
	// while start-up holds routes would be counted otherwise).
	idleRate, err := waitIdle(ctx, pid)
	if err != nil {
		return err
	}
	res.IdleCPUPct = round(100*idleRate, 2)

	n := max(r.plan.V3Changes, 1)
	cpu0, err := cpuTimeAll(pid)
	if err != nil {
		return err
	}
	start := time.Now()
	// change relabels one endpoint (the i-th change) and returns the ms
	// until the kernel's set has its address.
	change := func(i int) (float64, error) {
		k := (i * 37) % ls.Endpoints
		app[k] = nextNamedApp(app[k], ls.Policies)
		set := nft.ScaleSelectorSet4(app[k])
		seen := mon.expect(set, addrs[k])
		t0 := time.Now()
		if _, err := w.cli.SetLabels(ctx, h1.Label, fmt.Sprintf("lp-%04d", k), map[string]string{"app": fmt.Sprintf("a%d", app[k])}); err != nil {
			return 0, err
		}
		var at time.Time
		select {
		case at = <-seen:
		case <-time.After(10 * time.Second):
			return 0, fmt.Errorf("label change %d: %s did not appear in %s within 10 s (nft monitor: %v)", i, addrs[k], set, mon.err())
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		// The monitor's word checked with the kernel's (untimed).
		if err := checkInSet(ctx, h1.Netns, set, addrs[k]); err != nil {
			return 0, fmt.Errorf("label change %d: %w", i, err)
		}
		return round(ms(at.Sub(t0)), 1), nil
	}
	for i := range n {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d, err := change(i)
		if err != nil {
			return err
		}
		res.ChangeMs = append(res.ChangeMs, d)
		time.Sleep(50 * time.Millisecond) // the agent idle again, so changes are not batched
	}
	// The last change's work done before the CPU is read.
	if _, err := w.settle(ctx, h1, 10*time.Second); err != nil {
		return err
	}
	cpu1, err := cpuTimeAll(pid)
	if err != nil {
		return err
	}
	busy := float64(cpu1-cpu0) - idleRate*float64(time.Since(start))
	res.CPUPerChangeMs = round(max(busy, 0)/float64(n)/float64(time.Millisecond), 2)
	res.P50Ms, res.P99Ms = round(percentile(res.ChangeMs, 50), 1), round(percentile(res.ChangeMs, 99), 1)
	if res.RSSMB, err = rssMB(pid); err != nil {
		return err
	}
	r.prog.logf("policy-v3: agent: one label change, write to kernel, p50 %.1f ms, p99 %.1f ms over %d; agent CPU %.2f ms per change (idle %.2f%%); RSS %.1f MB",
		res.P50Ms, res.P99Ms, len(res.ChangeMs), res.CPUPerChangeMs, res.IdleCPUPct, res.RSSMB)

	// One resync interval of the idle agent (a ticker: exactly one resync
	// falls in it), then one of label changes, one after another.
	interval := options.DefaultResyncInterval
	c0, err := cpuTimeAll(pid)
	if err != nil {
		return err
	}
	t1 := time.Now()
	select {
	case <-time.After(interval):
	case <-ctx.Done():
		return ctx.Err()
	}
	c1, err := cpuTimeAll(pid)
	if err != nil {
		return err
	}
	res.ResyncCPUMs = round(max(float64(c1-c0)-idleRate*float64(time.Since(t1)), 0)/float64(time.Millisecond), 1)
	var slowest time.Time // when the slowest of these changes was written
	for i, end := n, time.Now().Add(interval+2*time.Second); time.Now().Before(end); i++ {
		t0 := time.Now()
		d, err := change(i)
		if err != nil {
			return err
		}
		if len(res.AcrossResyncMs) == 0 || d > slices.Max(res.AcrossResyncMs) {
			slowest = t0
		}
		res.AcrossResyncMs = append(res.AcrossResyncMs, d)
		time.Sleep(50 * time.Millisecond)
	}
	res.AcrossResyncP99Ms = round(percentile(res.AcrossResyncMs, 99), 1)
	res.AcrossResyncMaxMs = slices.Max(res.AcrossResyncMs)
	r.prog.logf("policy-v3: agent: one resync with nothing drifted: agent CPU %.1f ms; label changes across a resync: p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d; the slowest written at %s",
		res.ResyncCPUMs, percentile(res.AcrossResyncMs, 50), res.AcrossResyncP99Ms, res.AcrossResyncMaxMs, len(res.AcrossResyncMs), slowest.UTC().Format("15:04:05.000"))
	// Against the agent's word on its resyncs' rewrites (none when nothing
	// drifted).
	if b, err := os.ReadFile(filepath.Join(w.StateDir, "log", "calico", h1.Label, "calico-node.log")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "rewritten by the periodic resync") {
				r.prog.logf("policy-v3: agent log: %.200s", line)
			}
		}
	}

	// Cold: the policy section's restart, with this table.
	var ps PolicyScale
	if err := w.coldStart(ctx, r, h1, ls.Endpoints, &ps); err != nil {
		return err
	}
	res.ColdSeconds, res.ReadySeconds, res.RSSAfterColdMB = ps.ColdStartSeconds, ps.ColdStartReadySeconds, round(ps.RSSAfterRestartMB, 1)
	// Endpoint 1 is in app a1 or later, which some policy's rule names.
	if err := checkInSet(ctx, h1.Netns, nft.ScaleSelectorSet4(app[1]), addrs[1]); err != nil {
		return fmt.Errorf("after the cold start: %w", err)
	}
	res.ColdCPUMs = ps.ColdStartCPUMs
	res.ColdRetries, res.ColdWarning = agentRetries(filepath.Join(w.StateDir, "log", "calico", h1.Label, "calico-node.log"))
	if res.ColdRetries > 0 {
		r.prog.logf("policy-v3: agent: the restarted agent retried %d pass(es): %s", res.ColdRetries, res.ColdWarning)
	}
	res.RSSMB = round(max(res.RSSMB, res.RSSAfterColdMB), 1) // the larger of the two
	r.prog.logf("policy-v3: agent: cold %.3f s (ready %.3f s, agent CPU %.0f ms), RSS %.1f MB (%.1f MB after the restart)",
		res.ColdSeconds, res.ReadySeconds, res.ColdCPUMs, res.RSSMB, res.RSSAfterColdMB)
	return nil
}

// nextNamedApp is the next app after app that some policy's rule names
// (policy j admits app a<j+1>): only those have a selector set. With 50
// policies or more, every app.
func nextNamedApp(app, policies int) int {
	for range nft.ScaleSelectors {
		app = (app + 1) % nft.ScaleSelectors
		for j := range min(policies, nft.ScaleSelectors) {
			if (j+1)%nft.ScaleSelectors == app {
				return app
			}
		}
	}
	return app
}

// agentRetries counts, in an agent's log since its last start, the passes
// that did not converge, and returns the first such line.
func agentRetries(logFile string) (int, string) {
	b, err := os.ReadFile(logFile)
	if err != nil {
		return 0, ""
	}
	text := string(b)
	if i := strings.LastIndex(text, "in sync with the datastore"); i >= 0 {
		text = text[i:]
	}
	n, first := 0, ""
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, "not fully converged") {
			if n == 0 {
				first = line
			}
			n++
		}
	}
	if len(first) > 300 {
		first = first[:300]
	}
	return n, first
}

// waitIdle waits until an agent uses less than 5% of a CPU over 2 s (or
// 90 s have passed: start-up holds routes for up to 60 s, with a pass a
// second) and returns its CPU rate over the last 2 s.
func waitIdle(ctx context.Context, pid int) (float64, error) {
	const window = 2 * time.Second
	deadline := time.Now().Add(90 * time.Second)
	for {
		c0, err := cpuTimeAll(pid)
		if err != nil {
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(window):
		}
		c1, err := cpuTimeAll(pid)
		if err != nil {
			return 0, err
		}
		rate := float64(c1-c0) / float64(window)
		if rate < 0.05 || time.Now().After(deadline) {
			return rate, nil
		}
	}
}

// applyScalePolicies writes the label policies of nft.ScalePolicy (and
// calc.LabelPolicySnapshot) through the client, as `calicoctl apply` of
// files of 100 documents.
func (w *world) applyScalePolicies(ctx context.Context, n int) error {
	var b strings.Builder
	for j := range n {
		fmt.Fprintf(&b, `---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: pol-%03d
spec:
  order: %d
  selector: app == 'a%d'
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: app == 'a%d'
    destination:
      ports: [8080]
`, j, j, j%nft.ScaleSelectors, (j+1)%nft.ScaleSelectors)
	}
	rs, err := client.DecodeFile("scale-policies.yaml", []byte(b.String()))
	if err != nil {
		return err
	}
	// A change is one datastore transaction, of at most 128 operations.
	for chunk := range slices.Chunk(rs, 100) {
		if _, err := w.cli.ChangeResources(ctx, client.Apply, chunk, false); err != nil {
			return err
		}
	}
	return nil
}

// workloadAddrs reads the IPv4 addresses of workloads PREFIX-0000 up to n
// on node.
func (w *world) workloadAddrs(ctx context.Context, node, prefix string, n int) ([]string, error) {
	out := make([]string, n)
	for i := range n {
		ep, _, err := w.cli.Endpoint(ctx, node, fmt.Sprintf("%s-%04d", prefix, i))
		if err != nil {
			return nil, err
		}
		if len(ep.IPv4Nets) == 0 {
			return nil, fmt.Errorf("workload %s-%04d has no IPv4 address", prefix, i)
		}
		out[i] = strings.TrimSuffix(ep.IPv4Nets[0], "/32")
	}
	return out, nil
}

// setMonitor runs `nft monitor` in a namespace and tells when an address
// is added to a set: the kernel announces elements as a transaction
// commits, so this is when the kernel has it, without polling.
type setMonitor struct {
	proc *lab.Proc
	r    *os.File

	mu      sync.Mutex
	waiting map[string]chan time.Time // "set addr" -> told once
	readErr error
}

func startSetMonitor(ns *lab.Netns) (*setMonitor, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("nft", "monitor", "new", "elements")
	cmd.Stdout, cmd.Stderr = pw, pw
	p, err := ns.StartCmd(cmd)
	pw.Close() // the child has its own copy
	if err != nil {
		pr.Close()
		return nil, err
	}
	m := &setMonitor{proc: p, r: pr, waiting: map[string]chan time.Time{}}
	go m.read()
	// nft subscribes before it reads anything: give it a moment.
	time.Sleep(200 * time.Millisecond)
	return m, nil
}

// read parses lines such as
// "add element inet calico sel4-... { 10.67.0.5, 10.67.0.9 }".
func (m *setMonitor) read() {
	sc := bufio.NewScanner(m.r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		at := time.Now()
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[0] != "add" || f[1] != "element" || f[3] != nft.TableName {
			continue
		}
		set := f[4]
		m.mu.Lock()
		for _, e := range f[5:] {
			e = strings.Trim(e, "{},")
			if ch, ok := m.waiting[set+" "+e]; ok {
				ch <- at
				delete(m.waiting, set+" "+e)
			}
		}
		m.mu.Unlock()
	}
	m.mu.Lock()
	m.readErr = sc.Err()
	if m.readErr == nil {
		m.readErr = fmt.Errorf("nft monitor exited")
	}
	m.mu.Unlock()
}

// expect returns a channel told the time addr is next added to set.
func (m *setMonitor) expect(set, addr string) <-chan time.Time {
	ch := make(chan time.Time, 1)
	m.mu.Lock()
	m.waiting[set+" "+addr] = ch
	m.mu.Unlock()
	return ch
}

func (m *setMonitor) err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.readErr
}

func (m *setMonitor) stop() {
	m.proc.Stop()
	m.r.Close()
}
