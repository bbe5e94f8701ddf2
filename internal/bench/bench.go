// Package bench measures the project side by side on one namespace lab and
// writes what it found: throughput against its baselines, TCP latency with
// growing policy, endpoint setup latency, policy scale on one host,
// control-plane convergence in a BGP full mesh, and a scale lab of up to
// 100 hosts on one datastore (mesh against route reflectors, with a
// datastore load model). It reports; it never asserts. `calico-bench` (cmd/calico-bench) is its command.
//
// Each section builds its own walkthrough world (internal/walkthrough, lab
// prefix "cbn") and removes it before the next starts, so one section's
// workloads never load another's agents. Numbers from one run are
// comparable with each other; absolute values depend on the machine and on
// whatever else it is doing.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/calico-go/calico/internal/lab"
)

// Prefix is the lab prefix of every world the bench builds.
const Prefix = "cbn"

// Section names, in the order they run.
const (
	SecThroughput   = "throughput"   // iperf3 on one L2 fabric: host, workloads, raw veth
	SecVXLAN        = "vxlan"        // iperf3 across a router, VXLAN pool
	SecIPIP         = "ipip"         // iperf3 across a router, the seed's --ipip pool
	SecWireGuard    = "wireguard"    // iperf3 on one fabric with `calicoctl encryption on`
	SecLatency      = "latency"      // qperf (or netperf) with 0/100/1000 rules and endpoints
	SecSetup        = "setup"        // container add -> reachable from another host
	SecCNI          = "cni"          // CNI ADD (libcni, the calico plugin) -> reachable from another host
	SecPolicy       = "policy"       // 1000 endpoints in 100 profiles on one host
	SecPolicyV3     = "policy-v3"    // label policies: 1000 endpoints, 200 policies, 50 selectors (Enforcer in-process, then the agent)
	SecControlPlane = "controlplane" // route propagation in a 5/10/20 host mesh
	SecScale        = "scale"        // 50 and 100 hosts: full mesh against two route reflectors
)

// Sections lists every section in running order.
var Sections = []string{SecThroughput, SecVXLAN, SecIPIP, SecWireGuard, SecLatency, SecSetup, SecCNI, SecPolicy, SecPolicyV3, SecControlPlane, SecScale}

// Plan holds every size and duration the sections use. DefaultPlan is the
// full bench; QuickPlan a smoke run of a few minutes.
type Plan struct {
	// Throughput and VXLAN: iperf3 runs per path and stream count, seconds
	// per run, stream counts. Paths limits the throughput paths by name
	// (empty: all).
	Runs    int
	Seconds int
	Streams []int
	Paths   []string
	// PolicyExtraRuns: rounds after the Runs rounds of the throughput
	// section's policy-cost ablation that measure only the saved ruleset
	// (with the fast path, as calico-node runs it, and without) and no
	// ruleset, so their paired ratio resolves the 2% target.
	PolicyExtraRuns int

	// Latency: endpoint and rule counts, qperf seconds and runs per level.
	LatencyLevels  []int
	LatencySeconds int
	LatencyRuns    int

	// Setup: workloads per mode, and how many are added at once in bursts.
	SetupCount int
	Burst      int

	// Policy: endpoints and profiles on the one host, the endpoint counts
	// at which one more endpoint is timed, and samples per count.
	ScaleEndpoints int
	ScaleProfiles  int
	AddAt          []int
	AddSamples     int

	// Policy v3: label policies over 50 selectors on the ScaleEndpoints
	// endpoints in ScaleProfiles profiles, and label changes timed.
	V3Policies int
	V3Changes  int

	// Control plane: mesh sizes, trials per size, idle CPU window.
	MeshSizes   []int
	MeshTrials  int
	IdleSeconds int

	// Scale: the sizes a full-mesh world and a world with two route
	// reflectors grow through, and new-block trials per size.
	ScaleMeshSizes   []int
	ScaleRRSizes     []int
	ScaleTrials      int
	ScaleIdleSeconds int
}

// DefaultPlan is what the issue asks for.
func DefaultPlan() Plan {
	return Plan{
		Runs: 3, Seconds: 5, Streams: []int{1, 4}, PolicyExtraRuns: 6,
		LatencyLevels: []int{0, 100, 1000}, LatencySeconds: 3, LatencyRuns: 5,
		SetupCount: 200, Burst: 20,
		ScaleEndpoints: 1000, ScaleProfiles: 100, AddAt: []int{10, 100, 1000}, AddSamples: 20,
		V3Policies: 200, V3Changes: 60,
		MeshSizes: []int{5, 10, 20}, MeshTrials: 5, IdleSeconds: 10,
		ScaleMeshSizes: []int{10, 25, 50}, ScaleRRSizes: []int{10, 25, 50, 100}, ScaleTrials: 20, ScaleIdleSeconds: 20,
	}
}

// QuickPlan keeps every section but shrinks it: one short run each, tens
// instead of hundreds of endpoints, small meshes.
func QuickPlan() Plan {
	return Plan{
		Runs: 1, Seconds: 2, Streams: []int{1, 4},
		LatencyLevels: []int{0, 20}, LatencySeconds: 2, LatencyRuns: 1,
		SetupCount: 20, Burst: 10,
		ScaleEndpoints: 100, ScaleProfiles: 10, AddAt: []int{10, 100}, AddSamples: 2,
		V3Policies: 20, V3Changes: 10,
		MeshSizes: []int{3, 5}, MeshTrials: 2, IdleSeconds: 3,
		ScaleMeshSizes: []int{5}, ScaleRRSizes: []int{5, 10}, ScaleTrials: 5, ScaleIdleSeconds: 10,
	}
}

// Options say what to run and where to write it.
type Options struct {
	Bin      string    // directory holding calicoctl and calico-node
	Out      string    // output directory (default "bench")
	Quick    bool      // QuickPlan instead of DefaultPlan (ignored when Plan is set)
	Only     []string  // sections to run; empty means all
	Plan     *Plan     // explicit sizes, for tests
	Progress io.Writer // progress display; nil for none
}

// Run runs the selected sections, then writes results.json, results.md and
// the plots into o.Out. A section that fails is recorded and the others
// still run; the error names every failed section.
func Run(ctx context.Context, o Options) (*Results, error) {
	if o.Out == "" {
		o.Out = "bench"
	}
	plan := DefaultPlan()
	if o.Quick {
		plan = QuickPlan()
	}
	if o.Plan != nil {
		plan = *o.Plan
	}
	selected, err := selectSections(o.Only)
	if err != nil {
		return nil, err
	}
	if err := preflight(o.Bin); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, fmt.Errorf("output directory %s: %w", o.Out, err)
	}
	// Namespaces of an earlier bench that was killed outright; labs whose
	// creator still runs are left alone.
	if err := lab.Sweep(Prefix); err != nil {
		return nil, fmt.Errorf("removing leftovers of an earlier bench: %w", err)
	}

	r := &runner{opts: o, plan: plan, prog: newProgress(o.Progress), res: newResults(o, plan, selected)}
	start := time.Now()
	var failed []string
	for i, sec := range selected {
		if ctx.Err() != nil {
			failed = append(failed, sec+" (interrupted)")
			continue
		}
		r.prog.section(i+1, len(selected), sec)
		r.res.current = sec
		t0 := time.Now()
		err := sections[sec](ctx, r)
		r.res.SectionSeconds[sec] = round(time.Since(t0).Seconds(), 1)
		if err != nil && ctx.Err() != nil {
			// A command killed by the interrupt says little; say what happened.
			err = fmt.Errorf("interrupted (%v) after %.0f s", ctx.Err(), time.Since(t0).Seconds())
		}
		if err != nil {
			r.res.Errors = append(r.res.Errors, fmt.Sprintf("%s: %v", sec, err))
			failed = append(failed, sec)
			r.prog.logf("%s FAILED: %v", sec, err)
		}
	}
	r.res.DurationSeconds = round(time.Since(start).Seconds(), 1)
	r.prog.logf("writing %s", o.Out)
	werr := write(r.res, o.Out)
	if werr != nil {
		return r.res, werr
	}
	if len(failed) > 0 {
		return r.res, fmt.Errorf("bench section(s) failed: %s (details in %s)", strings.Join(failed, ", "), filepath.Join(o.Out, "results.md"))
	}
	return r.res, nil
}

// sections maps a name to its implementation.
var sections = map[string]func(context.Context, *runner) error{
	SecThroughput:   runThroughput,
	SecVXLAN:        runVXLAN,
	SecIPIP:         runIPIP,
	SecWireGuard:    runWireGuard,
	SecLatency:      runLatency,
	SecSetup:        runSetup,
	SecCNI:          runCNI,
	SecPolicy:       runPolicy,
	SecPolicyV3:     runPolicyV3,
	SecControlPlane: runControlPlane,
	SecScale:        runScale,
}

// selectSections validates --only and returns the sections in running order.
func selectSections(only []string) ([]string, error) {
	if len(only) == 0 {
		return slices.Clone(Sections), nil
	}
	want := map[string]bool{}
	for _, s := range only {
		s = strings.TrimSpace(strings.ToLower(s))
		if s == "" {
			continue
		}
		if !slices.Contains(Sections, s) {
			return nil, fmt.Errorf("unknown bench section %q; choose from %s", s, strings.Join(Sections, ", "))
		}
		want[s] = true
	}
	var out []string
	for _, s := range Sections {
		if want[s] {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--only selects no section; choose from %s", strings.Join(Sections, ", "))
	}
	return out, nil
}

// preflight checks what every section needs before anything is built.
func preflight(bin string) error {
	if os.Geteuid() != 0 {
		return errors.New("the bench builds network namespaces and needs root; run it with sudo")
	}
	for _, b := range []string{"calicoctl", "calico-node", "calico-datastore"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return fmt.Errorf("no %s in %s; build them with `make build`", b, bin)
		}
	}
	return lab.Require("ip", "ping", "nft", "iperf3")
}

// runner is the state the sections share.
type runner struct {
	opts Options
	plan Plan
	prog *progress
	res  *Results
}

func round(v float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	if v < 0 {
		return -float64(int64(-v*p+0.5)) / p
	}
	return float64(int64(v*p+0.5)) / p
}

func machine() string {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("linux %s, %d CPUs, %s", strings.TrimSpace(string(kernel)), runtime.NumCPU(), runtime.Version())
}
