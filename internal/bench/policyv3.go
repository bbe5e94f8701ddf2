package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"syscall"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/nft"
	"github.com/calico-go/calico/internal/lab"
)

// LabelPolicyScale is issue 14's scale target measured through the
// Enforcer (the agent's nftables owner) in-process, on a namespace host:
// what calc computes for ScaleEndpoints endpoints in ScaleProfiles
// profiles, labelled app=a<i mod 50>, with V3Policies label policies over 50
// selectors (nft.ScalePolicy, the kernel test's generator); then the same
// through calc from a snapshot of records (calc.LabelPolicySnapshot) as the
// agent passes it (calc.Relabel and ApplyChange for a label change).
// Then the same through calico-node on a lab host (throughAgent), from the
// datastore write to the kernel.
type LabelPolicyScale struct {
	Endpoints int `json:"endpoints"`
	Profiles  int `json:"profiles"`
	Policies  int `json:"policies"`
	Selectors int `json:"selectors"`
	// ColdSeconds: the first Apply into an empty namespace, the whole
	// table in one nft transaction of ColdOps operations.
	ColdSeconds float64 `json:"coldSeconds"`
	ColdCPUMs   float64 `json:"coldCpuMs"` // this process and nft
	ColdOps     int     `json:"coldOps"`
	// ChangeMs: one endpoint relabelled (a different one each time, to the
	// next selector), from Apply called to Apply returned (nft's
	// transaction committed); each was then checked in the kernel: its
	// address in the new selector's set.
	ChangeMs    []float64 `json:"changeMs"`
	ChangeCPUMs []float64 `json:"changeCpuMs"` // this process and nft
	ChangeOps   int       `json:"changeOps"`
	P50Ms       float64   `json:"p50Ms"`
	P99Ms       float64   `json:"p99Ms"`
	CPUMedMs    float64   `json:"cpuMedianMs"`
	// Through calc as well: the snapshot a datastore would hold (an
	// endpoint record relabelled), then the agent's pass for it without
	// the datastore's write and watch: calc.Relabel and ApplyChange
	// (CalcRelabelled of the changes; the others calc.Compute and Apply).
	// CalcComputeMs is calc's part of each change.
	CalcColdSeconds float64   `json:"calcColdSeconds"`
	CalcChangeMs    []float64 `json:"calcChangeMs"`
	CalcComputeMs   []float64 `json:"calcComputeMs"`
	CalcRelabelled  int       `json:"calcRelabelled"`
	CalcP50Ms       float64   `json:"calcP50Ms"`
	CalcP99Ms       float64   `json:"calcP99Ms"`
	// Agent is the same through calico-node on a lab host, from the
	// datastore write to the kernel.
	Agent *AgentLabelPolicy `json:"agent,omitempty"`
	// HeapMB is the Go heap in use holding the policy and the Enforcer's
	// record of the table, after a GC (the agent's share for this policy,
	// not its whole RSS).
	HeapMB float64 `json:"heapMB"`
}

// runPolicyV3 programs the label-policy scale target from cold into a fresh
// namespace, then times V3Changes label changes.
func runPolicyV3(ctx context.Context, r *runner) error {
	l, err := lab.New(Prefix)
	if err != nil {
		return err
	}
	defer l.Close()
	ns, err := l.AddNetns("polv3")
	if err != nil {
		return err
	}
	nEp, nProf, nPol := r.plan.ScaleEndpoints, max(r.plan.ScaleProfiles, 1), r.plan.V3Policies
	ls := &LabelPolicyScale{Endpoints: nEp, Profiles: nProf, Policies: nPol, Selectors: nft.ScaleSelectors}
	r.res.PolicyV3 = ls

	var heap0 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&heap0)
	var e *nft.Enforcer
	if err := ns.Do(func() (err error) { e, err = nft.New(); return err }); err != nil {
		return err
	}
	p := nft.ScalePolicy(nEp, nProf, nPol)
	apply := func() (nft.Stats, time.Duration, time.Duration, error) {
		var st nft.Stats
		cpu0 := cpuSelfAndChildren()
		t0 := time.Now()
		err := ns.Do(func() (err error) { st, err = e.Apply(p); return err })
		return st, time.Since(t0), cpuSelfAndChildren() - cpu0, err
	}
	r.prog.logf("policy-v3: %d endpoints, %d profiles, %d policies, %d selectors from cold", nEp, nProf, nPol, nft.ScaleSelectors)
	st, wall, cpu, err := apply()
	if err != nil {
		return err
	}
	if len(st.Problems) > 0 {
		return fmt.Errorf("the generated policy has problems: %q", st.Problems)
	}
	ls.ColdSeconds, ls.ColdCPUMs, ls.ColdOps = round(wall.Seconds(), 3), round(ms(cpu), 1), st.Ops
	var heap1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&heap1)
	ls.HeapMB = round(float64(int64(heap1.HeapAlloc)-int64(heap0.HeapAlloc))/(1<<20), 1)
	r.prog.logf("policy-v3: cold %.3f s (%d nft operations), CPU %.0f ms", ls.ColdSeconds, ls.ColdOps, ls.ColdCPUMs)

	// Endpoint k (a different one each time) moves from its selector to
	// the next: its address leaves one set for another and its inbound
	// chain is rewritten. Nothing else may change.
	for i := range r.plan.V3Changes {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		k := (i * 37) % nEp
		app := (k + 1 + i/nEp) % nft.ScaleSelectors
		p = nft.ScaleRelabel(p, k, app, nPol)
		st, wall, cpu, err := apply()
		if err != nil {
			return err
		}
		if st.Full || st.ElementsAdded != 1 || st.ElementsDeleted != 1 {
			return fmt.Errorf("label change %d: %+v, want one element moved incrementally", i, st)
		}
		ls.ChangeMs = append(ls.ChangeMs, round(ms(wall), 1))
		ls.ChangeCPUMs = append(ls.ChangeCPUMs, round(ms(cpu), 1))
		ls.ChangeOps = st.Ops
		if err := checkInSet(ctx, ns, nft.ScaleSelectorSet4(app), nft.ScaleAddr(k)); err != nil {
			return fmt.Errorf("label change %d: %w", i, err)
		}
	}
	ls.P50Ms, ls.P99Ms = round(percentile(ls.ChangeMs, 50), 1), round(percentile(ls.ChangeMs, 99), 1)
	ls.CPUMedMs = round(median(ls.ChangeCPUMs), 1)
	r.prog.logf("policy-v3: one label change p50 %.1f ms, p99 %.1f ms, CPU %.1f ms (%d nft operations)", ls.P50Ms, ls.P99Ms, ls.CPUMedMs, ls.ChangeOps)
	if err := ls.throughCalc(ctx, r, l); err != nil {
		return err
	}
	// The namespaces of the in-process measurements go before the
	// agent's world is built.
	l.Close()
	agentErr := ls.throughAgent(ctx, r)

	scale := fmt.Sprintf("%d endpoints, %d policies, %d selectors", nEp, nPol, nft.ScaleSelectors)
	r.res.metric(SecPolicyV3, "label policy cold start: "+scale, ls.ColdSeconds, "s", "<=", 1,
		fmt.Sprintf("Enforcer in-process, %d nft operations, CPU %.0f ms", ls.ColdOps, ls.ColdCPUMs))
	r.res.metric(SecPolicyV3, "one label change to the kernel, p99", ls.P99Ms, "ms", "<=", 100,
		fmt.Sprintf("p50 %.1f ms over %d changes; CPU %.1f ms (ours and nft's); %d nft operations", ls.P50Ms, len(ls.ChangeMs), ls.CPUMedMs, ls.ChangeOps))
	r.res.metric(SecPolicyV3, "label policy cold start through calc", ls.CalcColdSeconds, "s", "<=", 1, "calc.Compute of the snapshot, then the Enforcer")
	r.res.metric(SecPolicyV3, "one label change through calc to the kernel, p99", ls.CalcP99Ms, "ms", "<=", 100,
		fmt.Sprintf("p50 %.1f ms; calc p50 %.2f ms of it (calc.Relabel for %d of %d); no datastore write or watch", ls.CalcP50Ms, percentile(ls.CalcComputeMs, 50), ls.CalcRelabelled, len(ls.CalcChangeMs)))
	r.res.metric(SecPolicyV3, "Go heap holding that policy and the table's record", ls.HeapMB, "MB", "", 0,
		"in-process; the agent's RSS is below")
	if a := ls.Agent; a != nil && agentErr == nil {
		r.res.metric(SecPolicyV3, "agent: label policy cold start: "+scale, a.ColdSeconds, "s", "<=", 1,
			fmt.Sprintf("calico-node restarted on an empty table: every route and dispatch entry; ready after %.2f s; agent CPU %.0f ms", a.ReadySeconds, a.ColdCPUMs))
		r.res.metric(SecPolicyV3, "agent: one label change, datastore write to the kernel, p99", a.P99Ms, "ms", "<=", 100,
			fmt.Sprintf("p50 %.1f ms over %d changes (nft monitor); agent CPU %.2f ms per change, its nft runs included", a.P50Ms, len(a.ChangeMs), a.CPUPerChangeMs))
		r.res.metric(SecPolicyV3, "agent: label change across a periodic resync, p99", a.AcrossResyncP99Ms, "ms", "<=", 100,
			fmt.Sprintf("max %.1f ms over %d changes made one after another for a resync interval", a.AcrossResyncMaxMs, len(a.AcrossResyncMs)))
		r.res.metric(SecPolicyV3, "agent: one periodic resync, nothing drifted, CPU", a.ResyncCPUMs, "ms", "", 0,
			"the idle agent over one resync interval (its nft runs included), less its idle rate")
		r.res.metric(SecPolicyV3, "agent RSS with that policy", a.RSSMB, "MB", "<=", 80,
			fmt.Sprintf("the larger of after the label changes and after the cold start (%.1f MB)", a.RSSAfterColdMB))
	}
	return agentErr
}

// throughCalc repeats the measurement from a calc.Snapshot (the same
// labels and policies as records): every change relabels one endpoint's
// record, computes, and applies, into a second namespace.
func (ls *LabelPolicyScale) throughCalc(ctx context.Context, r *runner, l *lab.Lab) error {
	ns, err := l.AddNetns("polv3c")
	if err != nil {
		return err
	}
	var e *nft.Enforcer
	if err := ns.Do(func() (err error) { e, err = nft.New(); return err }); err != nil {
		return err
	}
	snap := calc.LabelPolicySnapshot(ls.Endpoints, ls.Policies)
	var last calc.Result
	// pass is the agent's: for endpoint key relabelled from old, Relabel
	// and ApplyChange when they can, else (and for key "") Compute and Apply.
	pass := func(key string, old api.Endpoint) (nft.Stats, time.Duration, time.Duration, error) {
		t0 := time.Now()
		if key != "" {
			if res, ch, ok := calc.Relabel(snap, "h0", last, key, old); ok {
				compute := time.Since(t0)
				var st nft.Stats
				err := ns.Do(func() (err error) { st, err = e.ApplyChange(res.Dataplane.Policy, ch); return err })
				if err == nil {
					last = res
					ls.CalcRelabelled++
					return st, time.Since(t0), compute, nil
				}
				if !errors.Is(err, nft.ErrNeedApply) {
					return st, 0, 0, err
				}
			}
		}
		last = calc.Compute(calc.Input{Node: "h0", Snap: snap})
		compute := time.Since(t0)
		var st nft.Stats
		err := ns.Do(func() (err error) { st, err = e.Apply(last.Dataplane.Policy); return err })
		return st, time.Since(t0), compute, err
	}
	st, wall, _, err := pass("", api.Endpoint{})
	if err != nil {
		return err
	}
	if len(st.Problems) > 0 {
		return fmt.Errorf("calc's policy has problems: %q", st.Problems)
	}
	ls.CalcColdSeconds = round(wall.Seconds(), 3)
	apps := make([]int, ls.Endpoints) // endpoint i is labelled app=a<apps[i]>
	for i := range apps {
		apps[i] = i % nft.ScaleSelectors
	}
	for i := range r.plan.V3Changes {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		k := (i * 37) % ls.Endpoints
		apps[k] = nextNamedApp(apps[k], ls.Policies)
		app := apps[k]
		key := fmt.Sprintf("h0/w%d", k)
		old := snap.Endpoints[key]
		calc.LabelPolicyRelabel(snap, k, app)
		st, wall, compute, err := pass(key, old)
		if err != nil {
			return err
		}
		// With fewer than 50 policies some apps name no rule's selector
		// or have no policy: the endpoint then only joins a set, or gains
		// a pass-in entry as well.
		if st.Full || st.ElementsAdded == 0 || st.ElementsAdded+st.ElementsDeleted > 3 {
			return fmt.Errorf("label change %d through calc: %+v, want one element moved incrementally", i, st)
		}
		ls.CalcChangeMs = append(ls.CalcChangeMs, round(ms(wall), 1))
		ls.CalcComputeMs = append(ls.CalcComputeMs, round(ms(compute), 1))
		if err := checkInSet(ctx, ns, nft.ScaleSelectorSet4(app), calc.LabelPolicyAddr(k)); err != nil {
			return fmt.Errorf("label change %d through calc: %w", i, err)
		}
	}
	ls.CalcP50Ms, ls.CalcP99Ms = round(percentile(ls.CalcChangeMs, 50), 1), round(percentile(ls.CalcChangeMs, 99), 1)
	r.prog.logf("policy-v3: through calc: cold %.3f s; one label change p50 %.1f ms, p99 %.1f ms (calc p50 %.2f ms; Relabel for %d of %d)",
		ls.CalcColdSeconds, ls.CalcP50Ms, ls.CalcP99Ms, percentile(ls.CalcComputeMs, 50), ls.CalcRelabelled, len(ls.CalcChangeMs))
	return nil
}

// checkInSet asks the kernel whether addr is in set (nft get element fails
// when it is not).
func checkInSet(ctx context.Context, ns *lab.Netns, set, addr string) error {
	if _, err := ns.Run(ctx, "nft", "get", "element", "inet", nft.TableName, set, "{ "+addr+" }"); err != nil {
		return fmt.Errorf("%s is not in the kernel's set %s: %w", addr, set, err)
	}
	return nil
}

// cpuSelfAndChildren is the CPU time of this process and of its waited-for
// children (the nft runs).
func cpuSelfAndChildren() time.Duration {
	var self, kids syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	return time.Duration(self.Utime.Nano() + self.Stime.Nano() + kids.Utime.Nano() + kids.Stime.Nano())
}
