package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// write draws the plots, then writes results.json and results.md to dir. A
// run of some sections keeps the other sections' results found there, and
// baseline.json there, when present, gives the before column of issue 19's
// before/after table and plot.
func write(res *Results, dir string) error {
	if len(res.Sections) < len(Sections) {
		if b, err := os.ReadFile(filepath.Join(dir, "results.json")); err == nil {
			var old Results
			if err := json.Unmarshal(b, &old); err != nil {
				return fmt.Errorf("earlier %s does not parse (move it away to start afresh): %w", filepath.Join(dir, "results.json"), err)
			}
			keepEarlier(res, &old)
		}
	}
	res.finish()
	// A broken baseline costs the before column, not the run's results:
	// they are written and the error returned after.
	base, berr := readBaseline(dir)
	res.compare(base)
	plots, perr := writePlots(res, dir)
	res.Plots = plots
	if perr != nil {
		res.Errors = append(res.Errors, perr.Error())
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(markdown(res)), 0o644); err != nil {
		return err
	}
	return errors.Join(perr, berr)
}

// markdown renders the results: the summary table first (metric, value,
// target, met?), then the details of each section.
func markdown(res *Results) string {
	var b strings.Builder
	plan := "full"
	if res.Quick {
		plan = "quick (--quick: fewer and shorter runs, smaller counts)"
	}
	fmt.Fprintf(&b, "# Benchmark results\n\n")
	fmt.Fprintf(&b, "Run %s, %.0f s, plan %s, sections: %s.  \nMachine: %s.\n\n", res.Started, res.DurationSeconds, plan, strings.Join(res.Sections, ", "), res.Machine)
	if len(res.Kept) > 0 {
		fmt.Fprintf(&b, "Kept from earlier runs: %s.\n\n", strings.Join(res.Kept, "; "))
	}
	b.WriteString("Every host, router and workload is a network namespace on this one machine, so all of them share its CPUs; " +
		"ratios are taken between paths measured in the same run. Numbers move with whatever else the machine is doing.\n\n")

	b.WriteString("## Summary\n\n| metric | value | target | met? |\n|---|---|---|---|\n")
	for _, m := range res.Metrics {
		name := m.Section + ": " + m.Name
		if m.Note != "" {
			name += " <br><sub>" + m.Note + "</sub>"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", name, valueText(m), orDash(m.Target), metText(m.Met))
	}
	beforeAfterMarkdown(&b, res)

	if len(res.Throughput) > 0 {
		b.WriteString("\n## Throughput (iperf3)\n\n| path | streams | median Gbit/s | min | max | runs | retransmits | ratio | against | CPU s per GB |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for _, t := range res.Throughput {
			ratio := "-"
			if t.Ratio > 0 {
				ratio = fmt.Sprintf("%.3f", t.Ratio)
			}
			cpu := "-"
			if len(t.CPUPerGB) > 0 {
				cpu = fmt.Sprintf("%.2f", medianPositive(t.CPUPerGB))
			}
			fmt.Fprintf(&b, "| %s | %d | %.2f | %.2f | %.2f | %d | %s | %s | %s | %s |\n", t.Path, t.Streams, t.Median, t.Min, t.Max, len(t.Gbps),
				joinInts(t.Retransmits), ratio, orDash(t.Baseline), cpu)
		}
		b.WriteString("\nRuns are interleaved: round k runs every path once, in the order listed. A ratio is the median over rounds of the path's run " +
			"divided by its baseline's run in the same round, which keeps a slow spell of the machine from landing on one side only. " +
			"The policy-cost pair (saved ruleset, no ruleset) gets extra rounds after those of every state, hence more runs. " +
			"CPU s per GB (median over runs) is the user and system time of iperf3's client and server, and for the WireGuard path of both agents " +
			"(wireguard-go runs in them), per GB received; softirq work done in their context is included, work deferred to ksoftirqd is not.\n")
	}
	if len(res.Latency) > 0 {
		b.WriteString("\n## TCP latency across hosts\n\n| rules per direction and extra endpoints | profiles | tool | round trip µs (median) | runs | control pair µs | runs | ratio to control | bandwidth Gbit/s | added to round trip |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for i, l := range res.Latency {
			added := "-"
			if i > 0 {
				added = fmt.Sprintf("%+.1f%%", 100*l.Overhead)
			}
			fmt.Fprintf(&b, "| %d | %d | %s | %.1f | %s | %.1f | %s | %.3f | %.2f | %s |\n", l.Level, l.Profiles, l.Tool, l.RTTMed, joinFloats(l.RTTUs, 1),
				l.ControlMed, joinFloats(l.ControlUs, 1), l.Ratio, l.BWMed, added)
		}
		b.WriteString("\nqperf's tcp_lat is one way; the round trips shown are twice it. The control pair (another server host, a profile that never changes) " +
			"is measured right after each run of the test pair; \"added\" compares the test/control ratio with the ratio at level 0, so load that shifts " +
			"between levels cancels out.\n")
	}
	if len(res.Setup) > 0 {
		b.WriteString("\n## Endpoint setup (call to reachable from a workload on the other host)\n\n| mode | workloads | p50 ms | p90 | p99 | max | unreachable | call p50 | route after call p50 | reply after call p50 | agent CPU ms/workload | caller CPU ms/workload |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, m := range res.Setup {
			fmt.Fprintf(&b, "| %s | %d | %.1f | %.1f | %.1f | %.1f | %d | %.1f | %.1f | %.1f | %.1f | %.1f |\n", m.Mode, len(m.Samples)+m.Failed, m.P50, m.P90, m.P99, m.Max, m.Failed, m.CallP50, m.RouteP50, m.ReachP50, m.AgentCPUMs, m.CallerCPUMs)
		}
	}
	if p := res.Policy; p != nil {
		fmt.Fprintf(&b, "\n## Policy scale on one host\n\n%d endpoints in %d profiles. Cold start (agent stopped, its table and routes deleted, `calicoctl node` again): "+
			"ready after %.2f s, every endpoint programmed after %.2f s. Agent RSS %.1f MB before the restart, %.1f MB after.\n\n",
			p.Endpoints, p.Profiles, p.ColdStartReadySeconds, p.ColdStartSeconds, p.RSSMB, p.RSSAfterRestartMB)
		b.WriteString("| existing endpoints | add one: ms to reachable (median) | samples | call phases ms (medians) | reply after the call ms (median) | agent CPU ms (median) | samples |\n|---|---|---|---|---|---|---|\n")
		for _, a := range p.AddOne {
			ph := phaseSummary(a.PhaseP50)
			if ph == "" {
				ph = "-"
			}
			fmt.Fprintf(&b, "| %d | %.1f | %s | %s | %.1f | %.0f | %s |\n", a.Existing, a.MedianMs, joinFloats(a.LatencyMs, 1), ph, a.ReachP50Ms, a.CPUMedMs, joinFloats(a.CPUMs, 0))
		}
	}
	if p := res.PolicyV3; p != nil {
		fmt.Fprintf(&b, "\n## Label policy scale (Enforcer in-process)\n\n%d endpoints in %d profiles, %d policies over %d selectors, programmed into an empty namespace: "+
			"%.3f s (%d nft operations, CPU %.0f ms). One label change (%d nft operations), Apply to committed: p50 %.1f ms, p99 %.1f ms, CPU median %.1f ms; "+
			"all (ms): %s. Go heap holding it: %.1f MB.\n\nThrough calc (a snapshot of records, one relabelled per change, calc.Compute, then Apply): cold %.3f s; "+
			"one label change p50 %.1f ms, p99 %.1f ms; all (ms): %s; calc.Compute's part (ms): %s.\n",
			p.Endpoints, p.Profiles, p.Policies, p.Selectors, p.ColdSeconds, p.ColdOps, p.ColdCPUMs, p.ChangeOps, p.P50Ms, p.P99Ms, p.CPUMedMs, joinFloats(p.ChangeMs, 1), p.HeapMB,
			p.CalcColdSeconds, p.CalcP50Ms, p.CalcP99Ms, joinFloats(p.CalcChangeMs, 1), joinFloats(p.CalcComputeMs, 1))
	}
	if len(res.ControlPlane) > 0 {
		b.WriteString("\n## Control plane (BGP full mesh)\n\n| hosts | mesh up after last node, s | new block route on all hosts, p50 ms | max ms | trials | own host's route p50 ms | idle agent CPU % (mean) | max | agent RSS MB (mean) |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, m := range res.ControlPlane {
			fmt.Fprintf(&b, "| %d | %.1f | %.1f | %.1f | %s | %.1f | %.2f | %.2f | %.1f |\n", m.Hosts, m.MeshSeconds, m.P50Ms, m.MaxMs, joinFloats(m.PropagationMs, 0), m.OwnHostP50Ms, m.IdleCPUPercent, m.IdleCPUMaxPercent, m.RSSMB)
		}
	}
	if len(res.Scale) > 0 {
		scaleMarkdown(&b, res)
	}
	if len(res.Findings) > 0 {
		b.WriteString("\n## Findings\n\n")
		for _, f := range res.Findings {
			fmt.Fprintf(&b, "- %s\n", f)
		}
	}
	if len(res.Plots) > 0 {
		b.WriteString("\n## Plots\n\n")
		for _, p := range res.Plots {
			fmt.Fprintf(&b, "![%s](%s)\n", strings.TrimSuffix(p, ".png"), p)
		}
	}
	if len(res.Errors) > 0 {
		b.WriteString("\n## Errors\n\n")
		for _, e := range res.Errors {
			fmt.Fprintf(&b, "- %s\n", e)
		}
	}
	return b.String()
}

func valueText(m Metric) string {
	v := trimFloat(m.Value)
	switch m.Unit {
	case "", "ratio":
		return v
	case "%":
		return v + "%"
	}
	return v + " " + m.Unit
}

func metText(met *bool) string {
	switch {
	case met == nil:
		return "-"
	case *met:
		return "yes"
	}
	return "**no**"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func joinFloats(xs []float64, digits int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf("%.*f", digits, x)
	}
	return strings.Join(s, ", ")
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}
