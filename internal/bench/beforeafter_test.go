package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// issue19Results is a run with every summary row issue 19 bounds, added
// through the code the sections use (no lab): the throughput and VXLAN
// paths as runThroughput and runVXLAN declare them, the ruleset's cost,
// setup and CNI modes, and one more endpoint at 10 and 1000.
func issue19Results(t *testing.T) *Results {
	t.Helper()
	r := &runner{prog: newProgress(nil), res: newResults(Options{}, DefaultPlan(), Sections)}
	flat := []tpath{
		{name: pathHost},
		{name: pathCross, baseline: pathHost, op: ">=", target: 0.95, oneStream: target19Cross},
		{name: pathSameHost, baseline: pathHost, op: ">=", target: target19SameHost},
	}
	r.addThroughput(SecThroughput, flat, []ThroughputResult{
		{Path: pathHost, Streams: 1, Median: 10},
		{Path: pathCross, Baseline: pathHost, Streams: 1, Ratio: 0.99},
		{Path: pathSameHost, Baseline: pathHost, Streams: 1, Ratio: 0.98},
		{Path: pathHost, Streams: 4, Median: 20},
		{Path: pathCross, Baseline: pathHost, Streams: 4, Ratio: 0.96},
		{Path: pathSameHost, Baseline: pathHost, Streams: 4, Ratio: 1.01},
	})
	vx := []tpath{{name: pathHostRtr}, {name: pathVXLAN, baseline: pathHostRtr, op: ">=", target: target19VXLAN}}
	r.addThroughput(SecVXLAN, vx, []ThroughputResult{
		{Path: pathHostRtr, Streams: 1, Median: 10},
		{Path: pathVXLAN, Baseline: pathHostRtr, Streams: 1, Ratio: 0.93},
		{Path: pathHostRtr, Streams: 4, Median: 20},
		{Path: pathVXLAN, Baseline: pathHostRtr, Streams: 4, Ratio: 0.91},
	})
	r.res.policyCostMetric(1, &ThroughputResult{Ratio: 0.985, Median: 9.85}, &ThroughputResult{Ratio: 0.93, Median: 9.3}, &ThroughputResult{Median: 10})
	r.res.policyCostMetric(4, &ThroughputResult{Ratio: 0.97, Median: 19.4}, &ThroughputResult{Ratio: 0.9, Median: 18}, &ThroughputResult{Median: 20})
	for _, m := range []struct {
		sec      string
		mode     SetupMode
		p50, p99 float64
	}{
		{SecSetup, SetupMode{Mode: "calicoctl, one by one", Via: "calicoctl", Burst: 1, Samples: []float64{40, 45, 48, 140}}, target19SetupP50, target19SetupP99},
		{SecSetup, SetupMode{Mode: "calicoctl, bursts of 20", Via: "calicoctl", Burst: 20, Samples: []float64{900, 1000}}, target19SetupP50, target19SetupP99},
		{SecSetup, SetupMode{Mode: "in-process, bursts of 20", Via: "in-process", Burst: 20, Samples: []float64{100, 190}}, target19SetupP50, target19SetupP99},
		{SecCNI, SetupMode{Mode: "CNI ADD, one by one", Via: "cni", Burst: 1, Samples: []float64{20, 25}}, 30, 150},
		{SecCNI, SetupMode{Mode: "CNI ADD, bursts of 20", Via: "cni", Burst: 20, Samples: []float64{150, 250}}, 30, 150},
	} {
		r.summarizeSetup(m.sec, &m.mode, m.p50, m.p99)
	}
	r.res.addOneRatios(&PolicyScale{AddOne: []AddOne{{Existing: 10, MedianMs: 40, CPUMeanMs: 10, SchedCPUMedMs: 5, GroupCPUMedMs: 6}, {Existing: 100, MedianMs: 44, CPUMeanMs: 11, SchedCPUMedMs: 6, GroupCPUMedMs: 7}, {Existing: 1000, MedianMs: 48, CPUMeanMs: 20, SchedCPUMedMs: 10, GroupCPUMedMs: 12}}})
	return r.res
}

func summaryRow(t *testing.T, res *Results, sec, name string) Metric {
	t.Helper()
	for _, m := range res.Metrics {
		if m.Section == sec && m.Name == name {
			return m
		}
	}
	t.Fatalf("no summary row %s: %q", sec, name)
	return Metric{}
}

// TestIssue19Targets: the summary rows carry issue 19's targets (and the
// other issues' where issue 19 sets none), and the before/after table
// finds every one of its rows among them.
func TestIssue19Targets(t *testing.T) {
	res := issue19Results(t)
	for _, c := range []struct{ sec, name, target string }{
		{SecThroughput, "workload, cross-host, no encap / host-to-host, 1 stream", ">= 0.97"},
		{SecThroughput, "workload, cross-host, no encap / host-to-host, 4 streams", ">= 0.95"}, // issue 5's
		{SecThroughput, "workload, same host / host-to-host, 1 stream", ">= 1"},
		{SecVXLAN, "workload, VXLAN via router / host-to-host via router, 1 stream", ">= 0.92"},
		{SecVXLAN, "workload, VXLAN via router / host-to-host via router, 4 streams", ">= 0.92"},
		{SecThroughput, "cross-host with the ruleset / without it, 1 stream", ">= 0.98"},
		{SecThroughput, "cross-host with the ruleset / without it, 4 streams", ">= 0.98"},
		{SecSetup, "setup p50, calicoctl, one by one", "<= 50 ms"},
		{SecSetup, "setup p99, calicoctl, one by one", "<= 150 ms"},
		{SecSetup, "setup p50, calicoctl, bursts of 20", ""},
		{SecSetup, "setup p99, calicoctl, bursts of 20", ""},
		{SecSetup, "setup p50, in-process, bursts of 20", ""},
		{SecSetup, "setup p99, in-process, bursts of 20", "<= 200 ms"},
		{SecCNI, "setup p50, CNI ADD, one by one", "<= 30 ms"}, // issue 15's
		{SecCNI, "setup p99, CNI ADD, bursts of 20", "<= 200 ms"},
		{SecPolicy, "add one endpoint: next to 1000 / next to 10", "<= 1.3"},
		{SecPolicy, "agent CPU per added endpoint with its nft run, median: next to 1000 / next to 10", "<= 1.3"},
		{SecPolicy, "agent CPU per added endpoint, scheduler time, median: next to 1000 / next to 10", ""}, // informational since 2026-12-06
		{SecPolicy, "agent CPU per added endpoint: next to 1000 / next to 10", ""},                         // informational since 2026-12-04
	} {
		if got := summaryRow(t, res, c.sec, c.name).Target; got != c.target {
			t.Errorf("%s: %q: target %q, want %q", c.sec, c.name, got, c.target)
		}
	}
	if m := summaryRow(t, res, SecPolicy, "agent CPU per added endpoint with its nft run, median: next to 1000 / next to 10"); m.Value != 2 || m.Met == nil || *m.Met {
		t.Errorf("agent CPU ratio row = %+v, want 2, not met", m)
	}

	res.compare(nil)
	if len(res.BeforeAfter) != len(targets19) {
		var got []string
		for _, c := range res.BeforeAfter {
			got = append(got, c.Metric)
		}
		t.Fatalf("before/after rows %q: want all %d of issue 19's", got, len(targets19))
	}
	want := map[string]struct {
		now    float64
		target string
		met    bool
	}{
		"workload cross-host, no encap / host-to-host, 1 stream":                                                   {0.99, ">= 0.97", true},
		"workload same host / host-to-host, 1 stream":                                                              {0.98, ">= 1", false},
		"workload VXLAN / host-to-host via router, 1 stream":                                                       {0.93, ">= 0.92", true},
		"workload VXLAN / host-to-host via router, 4 streams":                                                      {0.91, ">= 0.92", false},
		"cross-host with the ruleset / without it, 1 stream":                                                       {0.985, ">= 0.98", true},
		"cross-host with the ruleset / without it, 4 streams":                                                      {0.97, ">= 0.98", false},
		"setup p50, calicoctl container add, one by one":                                                           {46.5, "<= 50 ms", true},
		"setup p99, calicoctl container add, one by one":                                                           {137.24, "<= 150 ms", true},
		"setup p99, in-process, bursts":                                                                            {189.1, "<= 200 ms", true},
		"setup p99, CNI ADD, bursts":                                                                               {249, "<= 200 ms", false},
		"one more endpoint, many existing / few: time to reachable":                                                {1.2, "<= 1.3", true},
		"one more endpoint, many existing / few: agent CPU with its nft run (median; before: mean of 10 ms ticks)": {2, "<= 1.3", false},
	}
	for _, c := range res.BeforeAfter {
		w, ok := want[c.Metric]
		if !ok {
			t.Errorf("unexpected row %q", c.Metric)
			continue
		}
		if c.Before != nil || c.Now == nil || *c.Now != w.now || c.Target != w.target || c.Met == nil || *c.Met != w.met {
			t.Errorf("%s: before %v, now %v, target %q, met %v; want -, %v, %q, %v", c.Metric, c.Before, deref(c.Now), c.Target, c.Met, w.now, w.target, w.met)
		}
	}
}

func deref(v *float64) any {
	if v == nil {
		return "-"
	}
	return *v
}

// copyBaseline puts the committed bench/baseline.json into dir.
func copyBaseline(t *testing.T, dir string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "bench", baselineFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, baselineFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBeforeAfterReport: with bench/baseline.json in the output directory,
// results.md gets the before/after table (before from the 2026-11-22 run,
// "-" for the CNI section it did not have), results.json its rows, and
// ratios.png is drawn beside the other plots.
func TestBeforeAfterReport(t *testing.T) {
	dir := t.TempDir()
	copyBaseline(t, dir)
	res := issue19Results(t)
	if err := write(res, dir); err != nil {
		t.Fatal(err)
	}
	checkPNG(t, filepath.Join(dir, plotRatios))
	mdb, err := os.ReadFile(filepath.Join(dir, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	md := string(mdb)
	for _, want := range []string{
		"## Before and after (issue 19)",
		"Before: the run of 2026-11-22T19:00:12Z",
		"| metric | before | now | target | met? |",
		"| throughput: workload cross-host, no encap / host-to-host, 1 stream | 0.874 | 0.99 | >= 0.97 | yes |",
		"| vxlan: workload VXLAN / host-to-host via router, 4 streams | 0.567 | 0.91 | >= 0.92 | **no** |",
		"| throughput: cross-host with the ruleset / without it, 1 stream | 0.933 | 0.985 | >= 0.98 | yes |",
		"| setup: setup p50, calicoctl container add, one by one | 124.07 ms | 46.5 ms | <= 50 ms | yes |",
		"| setup: setup p99, in-process, bursts | 415.34 ms | 189.1 ms | <= 200 ms | yes |",
		"| cni: setup p99, CNI ADD, bursts | - | 249 ms | <= 200 ms | **no** |",
		"| policy: one more endpoint, many existing / few: time to reachable | 1.93 | 1.2 | <= 1.3 | yes |",
		"| policy: one more endpoint, many existing / few: agent CPU with its nft run (median; before: mean of 10 ms ticks) | 4 | 2 | <= 1.3 | **no** |",
		"![ratios](ratios.png)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("results.md lacks %q", want)
		}
	}
	// The table comes right after the summary.
	if s, ba := strings.Index(md, "## Summary"), strings.Index(md, "## Before and after"); s < 0 || ba < s || strings.Contains(md[s+2:ba], "\n## ") {
		t.Errorf("before/after table not right after the summary")
	}
	var back Results
	b, _ := os.ReadFile(filepath.Join(dir, "results.json"))
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.BeforeAfter) != len(targets19) || back.BaselineRun != "2026-11-22T19:00:12Z" || !slices.Contains(back.Plots, plotRatios) {
		t.Errorf("results.json: %d before/after rows, baseline run %q, plots %v", len(back.BeforeAfter), back.BaselineRun, back.Plots)
	}
	// Written again from results.json (as a run of some sections does), the
	// table is the same: it is recomputed, not carried.
	if err := write(&back, dir); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(filepath.Join(dir, "results.md"))
	if n := strings.Count(string(again), "## Before and after"); n != 1 || !strings.Contains(string(again), "| cni: setup p99, CNI ADD, bursts | - | 249 ms |") {
		t.Errorf("re-rendered results.md: %d tables:\n%s", n, again)
	}
}

// TestBaselineCommitted: bench/baseline.json is the run issue 19 quotes,
// and each of its rows is one the table compares.
func TestBaselineCommitted(t *testing.T) {
	base, err := readBaseline(filepath.Join("..", "..", "bench"))
	if err != nil || base == nil {
		t.Fatalf("bench/baseline.json: %v", err)
	}
	if base.Run != "2026-11-22T19:00:12Z" {
		t.Errorf("run %q", base.Run)
	}
	res := &Results{}
	res.compare(base)
	got := map[string]float64{}
	for _, c := range res.BeforeAfter {
		if c.Before != nil {
			got[c.Metric] = *c.Before
		}
	}
	// The figures issue 19 was filed with.
	for name, v := range map[string]float64{
		"workload cross-host, no encap / host-to-host, 1 stream":    0.874,
		"workload same host / host-to-host, 1 stream":               0.949,
		"workload VXLAN / host-to-host via router, 1 stream":        0.834,
		"workload VXLAN / host-to-host via router, 4 streams":       0.567,
		"setup p99, in-process, bursts":                             415.34,
		"one more endpoint, many existing / few: time to reachable": 1.93,
	} {
		if got[name] != v {
			t.Errorf("before %q = %v, want %v", name, got[name], v)
		}
	}
	if len(got) != len(targets19)-1 { // the CNI section came later
		t.Errorf("before figures for %d of %d rows: %v", len(got), len(targets19), got)
	}
	for _, m := range base.Metrics {
		if !slices.ContainsFunc(targets19, func(t target19) bool {
			return t.matches(m) || t.beforeName != "" && (target19{section: t.section, name: t.beforeName, prefix: t.prefix}).matches(m)
		}) {
			t.Errorf("baseline row %s: %q is not one of issue 19's", m.Section, m.Name)
		}
	}
}

// TestBaselineBad: a baseline.json that does not parse, or names no start
// time or an unknown section, is reported in one line naming the file; the
// results are still written, with an empty before column. Without one the
// table says where to get it.
func TestBaselineBad(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{"{not json", "does not parse"},
		{`{"run": "yesterday", "metrics": []}`, `"run" must be the before run's start`},
		{`{"run": "2026-11-22T19:00:12Z", "metrics": [{"section": "x|y", "name": "n", "value": 1}]}`, `unknown section "x|y"`},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, baselineFile), []byte(c.body), 0o644); err != nil {
			t.Fatal(err)
		}
		err := write(issue19Results(t), dir)
		if err == nil || !strings.Contains(err.Error(), baselineFile) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v, want one line naming %s and %q", c.body, err, baselineFile, c.want)
		}
		md, rerr := os.ReadFile(filepath.Join(dir, "results.md"))
		if rerr != nil {
			t.Fatalf("results.md not written: %v", rerr)
		}
		if !strings.Contains(string(md), "| throughput: workload cross-host, no encap / host-to-host, 1 stream | - | 0.99 | >= 0.97 | yes |") {
			t.Errorf("%s: results.md before/after table:\n%s", c.body, md)
		}
	}
	dir := t.TempDir()
	if err := write(issue19Results(t), dir); err != nil {
		t.Fatal(err)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "results.md"))
	if !strings.Contains(string(md), fmt.Sprintf("No %s in the output directory", baselineFile)) {
		t.Errorf("results.md without a baseline:\n%s", md)
	}
	checkPNG(t, filepath.Join(dir, plotRatios))
}

// TestVXLANMissCause: a missed VXLAN target is explained from the run's own
// routed-ceiling, encapsulation-cost and CPU per GB rows, in the table's
// comparison and in results.md; a met one is not, and a run without those
// rows gives no cause rather than one with holes.
func TestVXLANMissCause(t *testing.T) {
	res := &Results{}
	res.metric(SecVXLAN, pathVXLAN+" / "+pathHostRtr+", 1 stream", 0.95, "ratio", ">=", target19VXLAN, "")
	res.metric(SecVXLAN, pathVXLAN+" / "+pathHostRtr+", 4 streams", 0.69, "ratio", ">=", target19VXLAN, "")
	res.metric(SecVXLAN, pathPlainVXLAN+" / "+pathHostRtr+", 4 streams", 0.97, "ratio", "", 0, "")
	res.metric(SecVXLAN, pathVXLAN+" / "+pathPlainVXLAN+", 4 streams", 0.71, "ratio", "", 0, "")
	res.metric(SecVXLAN, "CPU per GB, "+pathVXLAN+" / "+pathHostRtr+", 4 streams", 1.361, "ratio", "", 0, "")
	res.compare(nil)
	causes := map[string]string{}
	for _, c := range res.BeforeAfter {
		causes[c.Metric] = c.Cause
	}
	four := causes["workload VXLAN / host-to-host via router, 4 streams"]
	for _, want := range []string{"reaches 0.97 of host-to-host", "VXLAN over it 0.71", "1.361x host-to-host's CPU per GB", "BPF_F_ADJ_ROOM_DECAP_L4_UDP"} {
		if !strings.Contains(four, want) {
			t.Errorf("4 streams cause %q lacks %q", four, want)
		}
	}
	if one := causes["workload VXLAN / host-to-host via router, 1 stream"]; one != "" {
		t.Errorf("met 1 stream target got a cause: %q", one)
	}
	if strings.Contains(four, "bare namespaces") {
		t.Errorf("4 streams cause %q names a bare-kernel figure the run does not have", four)
	}
	var b strings.Builder
	beforeAfterMarkdown(&b, res)
	if !strings.Contains(b.String(), "Missed, and why (this run's figures):\n\n- vxlan: workload VXLAN / host-to-host via router, 4 streams: the unencapsulated") {
		t.Errorf("results.md lacks the cause:\n%s", b.String())
	}

	// With the bare kernel's rows of the same run, the cause gives its
	// ceiling too.
	res.metric(SecVXLAN, bareVXLANRatio(4), 0.691, "ratio", "", 0, "")
	res.compare(nil)
	for _, c := range res.BeforeAfter {
		causes[c.Metric] = c.Cause
	}
	four = causes["workload VXLAN / host-to-host via router, 4 streams"]
	if !strings.Contains(four, "reaches 0.691 of its own host-to-host") {
		t.Errorf("4 streams cause %q lacks the bare kernel's 0.691", four)
	}
	for _, c := range res.BeforeAfter {
		want := c.Metric == "workload VXLAN / host-to-host via router, 4 streams"
		if got := c.Ceiling != nil && *c.Ceiling == 0.691; got != want {
			t.Errorf("%s: kernel ceiling %v", c.Metric, c.Ceiling)
		}
	}

	// The same miss without the figures that explain it: no cause.
	bare := &Results{}
	bare.metric(SecVXLAN, pathVXLAN+" / "+pathHostRtr+", 4 streams", 0.69, "ratio", ">=", target19VXLAN, "")
	bare.compare(nil)
	if len(bare.BeforeAfter) != 1 || bare.BeforeAfter[0].Cause != "" {
		t.Errorf("bare run: %+v, want one row without a cause", bare.BeforeAfter)
	}
}
