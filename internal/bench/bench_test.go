package bench

import (
	"context"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// binDir returns CALICO_BIN, or builds both programs into a temporary
// directory (as the end-to-end tests do) when it is not set.
func binDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("CALICO_BIN"); d != "" {
		return d
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/", "../../cmd/calicoctl", "../../cmd/calico-node", "../../cmd/calico-datastore")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building calicoctl and calico-node: %v\n%s", err, out)
	}
	return dir
}

// TestQuickThroughputPair runs the real command path on the smallest
// section there is: one iperf3 pair (host to host and workload to workload
// across hosts, one short run), then checks that results.json,
// results.md and the throughput plot are written and parse, and that bytes
// actually moved on both paths.
func TestQuickThroughputPair(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test builds network namespaces and needs root (CI runs as root)")
	}
	bin := binDir(t)
	out := t.TempDir()
	plan := QuickPlan()
	plan.Seconds, plan.Streams, plan.Paths = 1, []int{1}, []string{pathHost, pathCross}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Run(ctx, Options{Bin: bin, Out: out, Quick: true, Only: []string{SecThroughput}, Plan: &plan, Progress: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}

	b, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got Results
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("results.json does not parse: %v", err)
	}
	if len(got.Throughput) != 2 {
		t.Fatalf("results.json has %d throughput results, want 2 (host-to-host and cross-host): %+v", len(got.Throughput), got.Throughput)
	}
	for _, tr := range got.Throughput {
		if len(tr.Gbps) != 1 || tr.Median <= 0 {
			t.Errorf("%s: no data moved: %+v", tr.Path, tr)
		}
		if len(tr.CPUPerGB) != 1 || tr.CPUPerGB[0] <= 0 {
			t.Errorf("%s: no CPU per GB: %+v", tr.Path, tr)
		}
	}
	if c := find(got.Throughput, pathCross, 1); c == nil || c.Ratio <= 0 || c.CPURatio <= 0 {
		t.Errorf("cross-host path has no throughput or CPU ratio to host-to-host: %+v", c)
	}
	if len(got.Metrics) != len(res.Metrics) || len(got.Metrics) == 0 {
		t.Errorf("metrics in results.json: %d, in memory: %d", len(got.Metrics), len(res.Metrics))
	}

	md, err := os.ReadFile(filepath.Join(out, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| metric | value | target | met? |", pathCross + " / " + pathHost, "![throughput](throughput.png)"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q:\n%s", want, md)
		}
	}
	checkPNG(t, filepath.Join(out, plotThroughput))
}

// TestQuickPolicyCost runs the throughput section's policy-cost ablation
// alone, one short round of every state plus one extra round of the
// summary rows' states (the saved ruleset with and without the fast path,
// no ruleset), and checks that every state moved data, that those got
// their extra round (and only those), and that the eBPF fast path state
// really forwarded packets past netfilter on both hosts' paths.
func TestQuickPolicyCost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test builds network namespaces and loads BPF programs: it needs root (CI runs as root)")
	}
	bin := binDir(t)
	out := t.TempDir()
	plan := QuickPlan()
	plan.Runs, plan.PolicyExtraRuns, plan.Seconds, plan.Streams, plan.Paths = 1, 1, 2, []int{1}, []string{pathNoTable}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	res, err := Run(ctx, Options{Bin: bin, Out: out, Quick: true, Only: []string{SecThroughput}, Plan: &plan, Progress: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{pathTable, pathNoTable, pathNoSpoof, pathFwdOnly, pathIngress, pathOneFwd, pathCTOnly, pathFastPath} {
		tr := find(res.Throughput, p, 1)
		want := 1
		if p == pathTable || p == pathNoTable || p == pathFastPath {
			want = 2
		}
		switch {
		case tr == nil:
			t.Errorf("%s: not measured", p)
		case len(tr.Gbps) != want || slices.Contains(tr.Gbps, 0):
			t.Errorf("%s: runs %v, want %d that moved data", p, tr.Gbps, want)
		case tr.Ratio <= 0 || tr.CPURatio <= 0:
			t.Errorf("%s: no ratio to its baseline: %+v", p, tr)
		}
	}
	fwd := regexp.MustCompile(`fast path's counters over its runs, both hosts: .*fwd_uplink (\d+), fwd_workload (\d+)`)
	var m []string
	for _, f := range res.Findings {
		if m = fwd.FindStringSubmatch(f); m != nil {
			break
		}
	}
	if m == nil || m[1] == "0" || m[2] == "0" {
		t.Errorf("the fast path forwarded nothing on one of its paths (%v); findings:\n%s", m, strings.Join(res.Findings, "\n"))
	}
}

// TestWritersAllSections feeds the writers results for every section and
// checks each plot decodes as a PNG and each section appears in the report.
func TestWritersAllSections(t *testing.T) {
	dir := t.TempDir()
	res := sampleResults()
	if err := write(res, dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{plotThroughput, plotSetup, plotLatency, plotControlPlane, plotScale} {
		checkPNG(t, filepath.Join(dir, f))
	}
	md, err := os.ReadFile(filepath.Join(dir, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Throughput", "## TCP latency", "## Endpoint setup", "## Policy scale", "## Label policy scale", "## Control plane", "## Scale", "### Datastore load model", "| 5000 |", "**no**", "| yes |"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q", want)
		}
	}
	var back Results
	b, _ := os.ReadFile(filepath.Join(dir, "results.json"))
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("results.json does not parse: %v", err)
	}
	if len(back.Plots) != 5 {
		t.Errorf("plots recorded: %v", back.Plots)
	}
}

func sampleResults() *Results {
	r := newResults(Options{Quick: true}, QuickPlan(), Sections)
	r.Throughput = []ThroughputResult{
		{Path: pathHost, Streams: 1, Gbps: []float64{5, 6, 7}, Median: 6, Min: 5, Max: 7},
		{Path: pathCross, Baseline: pathHost, Streams: 1, Gbps: []float64{5.5, 6, 6.2}, Median: 6, Min: 5.5, Max: 6.2, Ratio: 1},
		{Path: pathHost, Streams: 4, Gbps: []float64{7}, Median: 7, Min: 7, Max: 7},
		{Path: pathCross, Baseline: pathHost, Streams: 4, Gbps: []float64{6}, Median: 6, Min: 6, Max: 6, Ratio: 0.857},
	}
	r.metric(SecThroughput, "cross / host", 1, "ratio", ">=", 0.95, "")
	r.metric(SecThroughput, "cross / host, 4", 0.857, "ratio", ">=", 0.95, "")
	r.Latency = []LatencyLevel{{Level: 0, Tool: "qperf", RTTUs: []float64{40}, RTTMed: 40, BWMed: 5}, {Level: 100, Tool: "qperf", RTTUs: []float64{42}, RTTMed: 42, BWMed: 5, Overhead: 0.05}}
	r.Setup = []SetupMode{{Mode: "in-process, one by one", Samples: []float64{10, 20, 30, 400}, P50: 25, P99: 390}, {Mode: "calicoctl, one by one", Samples: []float64{100, 200}}}
	r.Policy = &PolicyScale{Endpoints: 1000, Profiles: 100, AddOne: []AddOne{{Existing: 10, MedianMs: 40}, {Existing: 1000, MedianMs: 50}}}
	r.PolicyV3 = &LabelPolicyScale{Endpoints: 1000, Profiles: 100, Policies: 200, Selectors: 50, ChangeMs: []float64{20, 30}, P50Ms: 25, P99Ms: 30, CalcChangeMs: []float64{40}, CalcComputeMs: []float64{15}}
	r.ControlPlane = []MeshResult{{Hosts: 5, P50Ms: 80, MaxMs: 90}, {Hosts: 10, P50Ms: 100, MaxMs: 120}}
	etcd := EtcdLoad{Keys: 500, Watchers: 50, IdleWritesPerSec: 5, WritesPerWorkload: 4, EventsPerWrite: 50, CPUPerWorkloadMs: 3,
		HostAgentMsPerWl: 60, ElsewhereAgentMsPerW: 0.5, BaseWriteUs: 60, PerEventUs: 4, BytesPerEvent: 300, AgentPerEventUs: 20}
	r.Scale = []ScaleResult{
		{Mode: ScaleMesh, Hosts: 10, ConvergeSeconds: 2, P99Ms: 200, Etcd: etcd},
		{Mode: ScaleReflectors, Hosts: 10, ConvergeSeconds: 1, P99Ms: 150, Etcd: etcd},
		{Mode: ScaleReflectors, Hosts: 50, ConvergeSeconds: 3, P99Ms: 400, Etcd: etcd, ListBytes: 60000},
	}
	r.scaleModel()
	return r
}

// TestScaleModel: the projections follow from the constants. At 50
// hosts a workload was 4 writes of which 50 events per write over 50
// watchers: 4 writes every agent is sent, none per host.
func TestScaleModel(t *testing.T) {
	m := sampleResults().ScaleModel
	if m == nil || m.MeasuredAt != 50 || len(m.Projections) != len(ModelHosts) {
		t.Fatalf("model = %+v", m)
	}
	if m.FanOutWritesPerWl != 4 || m.StatusWritesPerWlHost != 0 || m.HeartbeatsPerHostSec != 0.1 || m.ListBytesPerHost != 1200 {
		t.Errorf("constants = %+v", m)
	}
	p := m.Projections[1] // 1000 hosts
	churn := 1000.0 / 60
	if want := round(churn*4*1000, 0); p.EventsPerSec != want {
		t.Errorf("events/s at 1000 hosts = %v, want %v", p.EventsPerSec, want)
	}
	if want := round(((churn*4+100)*60+churn*4*1000*4)/1000/10, 1); p.EtcdCPUPercent != want {
		t.Errorf("etcd CPU at 1000 hosts = %v%%, want %v%%", p.EtcdCPUPercent, want)
	}
	// Its own workload a minute at 60 ms, everyone's at 0.5 ms.
	if want := round((60.0/60+churn*0.5)/10, 2); p.AgentCPUPercent != want {
		t.Errorf("agent CPU at 1000 hosts = %v%%, want %v%%", p.AgentCPUPercent, want)
	}
}

// TestKeepEarlier: a run of one section keeps every other section's
// results (summary rows, details, findings, errors) from the results.json
// it finds, and replaces its own; kept sections say where they come from.
func TestKeepEarlier(t *testing.T) {
	dir := t.TempDir()
	old := sampleResults()
	old.Started = "2026-01-01T00:00:00Z"
	old.metric(SecScale, "old scale row", 1, "s", "", 0, "")
	old.current = SecSetup
	old.finding("setup finding")
	old.current = SecScale
	old.finding("old scale finding")
	old.Errors = []string{"policy: broke", "scale: broke"}
	if err := write(old, dir); err != nil {
		t.Fatal(err)
	}
	res := newResults(Options{}, DefaultPlan(), []string{SecScale})
	res.Scale = []ScaleResult{{Mode: ScaleMesh, Hosts: 50, ConvergeSeconds: 9}}
	res.metric(SecScale, "new scale row", 2, "s", "", 0, "")
	if err := write(res, dir); err != nil {
		t.Fatal(err)
	}
	var got Results
	b, _ := os.ReadFile(filepath.Join(dir, "results.json"))
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Throughput) != 4 || got.Policy == nil || len(got.ControlPlane) != 2 {
		t.Errorf("other sections' details not kept: %d throughput, policy %v, %d control plane", len(got.Throughput), got.Policy != nil, len(got.ControlPlane))
	}
	if len(got.Scale) != 1 || got.Scale[0].ConvergeSeconds != 9 {
		t.Errorf("scale = %+v, want only the new run's", got.Scale)
	}
	var rows []string
	for _, m := range got.Metrics {
		rows = append(rows, m.Section+": "+m.Name)
	}
	joined := strings.Join(rows, "\n")
	if !strings.Contains(joined, "throughput: cross / host") || !strings.Contains(joined, "scale: new scale row") || strings.Contains(joined, "old scale row") {
		t.Errorf("summary rows:\n%s", joined)
	}
	if strings.Join(got.Findings, "|") != "setup finding" || strings.Join(got.Errors, "|") != "policy: broke" {
		t.Errorf("findings %q, errors %q", got.Findings, got.Errors)
	}
	if len(got.Kept) == 0 || !strings.Contains(got.Kept[0], "(run of 2026-01-01T00:00:00Z") {
		t.Errorf("kept = %q", got.Kept)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "results.md"))
	for _, want := range []string{"Kept from earlier runs: throughput (run of 2026-01-01T00:00:00Z", "## Throughput", "## Scale"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q", want)
		}
	}
}

// TestKeepEarlierOnce: results.json read back and written again (as when
// re-rendering results.md) lists each kept summary row and finding once,
// as does the next partial run; a run of setup keeps the earlier cni modes
// and the label policy results. Before the fix every kept row showed twice.
func TestKeepEarlierOnce(t *testing.T) {
	dir := t.TempDir()
	full := sampleResults()
	full.Setup = append(full.Setup, SetupMode{Mode: "CNI ADD, one by one", Via: "cni", Samples: []float64{30}})
	full.current = SecLatency
	full.finding("latency finding")
	if err := write(full, dir); err != nil {
		t.Fatal(err)
	}
	read := func() *Results {
		t.Helper()
		var got Results
		b, _ := os.ReadFile(filepath.Join(dir, "results.json"))
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		return &got
	}
	res := newResults(Options{}, DefaultPlan(), []string{SecSetup})
	res.Setup = []SetupMode{{Mode: "calicoctl, one by one", Via: "calicoctl", Samples: []float64{40}}}
	res.metric(SecSetup, "new setup row", 2, "ms", "", 0, "")
	if err := write(res, dir); err != nil {
		t.Fatal(err)
	}
	if err := write(read(), dir); err != nil { // re-render
		t.Fatal(err)
	}
	again := newResults(Options{}, DefaultPlan(), []string{SecScale})
	if err := write(again, dir); err != nil {
		t.Fatal(err)
	}
	got := read()
	rows := map[string]int{}
	for _, m := range got.Metrics {
		rows[m.Section+": "+m.Name]++
	}
	for row, n := range rows {
		if n != 1 {
			t.Errorf("summary row %q listed %d times", row, n)
		}
	}
	if rows["throughput: cross / host"] != 1 || rows["setup: new setup row"] != 1 {
		t.Errorf("summary rows: %v", rows)
	}
	if len(got.Findings) != 1 || got.Findings[0] != "latency finding" {
		t.Errorf("findings %q", got.Findings)
	}
	var modes []string
	for _, m := range got.Setup {
		modes = append(modes, m.Mode)
	}
	if strings.Join(modes, "|") != "calicoctl, one by one|CNI ADD, one by one" {
		t.Errorf("setup modes %q: want the new setup mode and the earlier cni one", modes)
	}
	if got.PolicyV3 == nil {
		t.Error("label policy results not kept")
	}
	md, _ := os.ReadFile(filepath.Join(dir, "results.md"))
	if n := strings.Count(string(md), "| throughput: cross / host |"); n != 1 {
		t.Errorf("results.md lists the kept row %d times", n)
	}
}

func checkPNG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Errorf("plot not written: %v", err)
		return
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Errorf("%s is not a PNG: %v", path, err)
		return
	}
	if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
		t.Errorf("%s is only %dx%d", path, b.Dx(), b.Dy())
	}
}

func TestParseQperf(t *testing.T) {
	out := "tcp_lat:\n    latency  =  27.4 us\ntcp_bw:\n    bw  =  1.17 GB/sec\n"
	rtt, bw, err := parseQperf(out, true)
	if err != nil || math.Abs(rtt-54.8) > 1e-9 || math.Abs(bw-9.36) > 1e-9 {
		t.Errorf("parseQperf = %v, %v, %v; want 54.8 us round trip, 9.36 Gbit/s", rtt, bw, err)
	}
	if _, _, err := parseQperf("qperf: failed to connect", false); err == nil {
		t.Error("garbage accepted")
	}
	if rtt, _, err := parseQperf("tcp_lat:\n    latency  =  1.5 ms\n", false); err != nil || rtt != 3000 {
		t.Errorf("latency only: %v, %v", rtt, err)
	}
}

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 3, 2, 4}
	if m := median(xs); m != 3 {
		t.Errorf("median = %v", m)
	}
	if p := percentile(xs, 99); math.Abs(p-4.96) > 1e-9 {
		t.Errorf("p99 = %v", p)
	}
	if p := percentile(nil, 50); p != 0 {
		t.Errorf("empty p50 = %v, want 0 (JSON has no NaN)", p)
	}
}

func TestBaseChains(t *testing.T) {
	out := `table inet calico {
	chain fwd-from-wl {
		type filter hook forward priority filter - 1; policy accept;
		ct state established,related accept
		iifname vmap @from-wl
	}
	chain ep-in-x {
		drop
	}
	chain from-wl-src {
		type filter hook prerouting priority raw; policy accept;
		iifname != "cali*" accept
	}
}`
	cs := baseChains(out)
	if len(cs) != 2 || cs[0].hook != "forward" || cs[1].hook != "prerouting" || len(cs[0].rules) != 2 || cs[1].rules[0] != `iifname != "cali*" accept` {
		t.Errorf("baseChains = %+v", cs)
	}
}

func TestEchoRequest(t *testing.T) {
	b := echoRequest(0x1234, 7)
	if checksum(b) != 0 {
		t.Error("echo request checksum does not verify")
	}
	reply := append([]byte{0x45, 0, 0, 36, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2}, b...)
	reply[20] = 0 // echo reply
	if !isEchoReply(reply, 0x1234) || isEchoReply(reply, 0x4321) {
		t.Error("isEchoReply does not match on the id")
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestQuickScale runs the scale section at its smallest (a mesh of 3, a
// reflector world of 4): every host gets every block, new blocks reach
// every host, each agent holds one watch, and the agents' status
// heartbeats are written but sent to no agent.
func TestQuickScale(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test builds network namespaces and needs root (CI runs as root)")
	}
	bin := binDir(t)
	plan := QuickPlan()
	plan.ScaleMeshSizes, plan.ScaleRRSizes, plan.ScaleTrials, plan.ScaleIdleSeconds = []int{3}, []int{4}, 2, 11 // a heartbeat every 10 s
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	res, err := Run(ctx, Options{Bin: bin, Out: t.TempDir(), Only: []string{SecScale}, Plan: &plan, Progress: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Scale) != 2 {
		t.Fatalf("scale results: %+v", res.Scale)
	}
	for _, s := range res.Scale {
		e := s.Etcd
		if s.ConvergeSeconds <= 0 || len(s.PropagationMs) != 2 || s.RSSMeanMB <= 0 {
			t.Errorf("%s %d: converged %.2f s, trials %v, RSS %.1f MB", s.Mode, s.Hosts, s.ConvergeSeconds, s.PropagationMs, s.RSSMeanMB)
		}
		if e.Watchers != s.Hosts || e.EventsPerWrite < float64(s.Hosts) {
			t.Errorf("%s %d: %d watchers, %.1f events per write: want one watch per agent, every write sent to each", s.Mode, s.Hosts, e.Watchers, e.EventsPerWrite)
		}
		if e.IdleWritesPerSec <= 0 || e.IdleEventsPerSec != 0 {
			t.Errorf("%s %d: idle, %.2f writes/s (heartbeats) made %.1f events/s: want heartbeats sent to no agent", s.Mode, s.Hosts, e.IdleWritesPerSec, e.IdleEventsPerSec)
		}
	}
	if res.ScaleModel == nil || len(res.ScaleModel.Projections) != len(ModelHosts) {
		t.Errorf("no load model: %+v", res.ScaleModel)
	}
}

func TestIngressSpoofScript(t *testing.T) {
	table := `table inet calico {
	comment "calico-go workload policy and NAT; owned by calico-node, edits are overwritten"
	map from-wl {
		type ifname : verdict
		elements = { "calitpa1" : jump ep-out-calitpa1, "calitpa2" : jump ep-out-calitpa2 }
	}
	set wl-src4 {
		type ifname . ipv4_addr
		elements = { "calitpa1" . 192.168.100.1, "calitpa2" . 192.168.100.2 }
	}
	chain from-wl-src {
		iifname != "cali*" accept
	}
}`
	got := ingressSpoofScript(table)
	want := `devices = { "calitpa1", "calitpa2" }`
	if !strings.Contains(got, want) {
		t.Errorf("ingress chain of\n%s\nis\n%s\nwant it bound to %s (not to the wildcard or the comment)", table, got, want)
	}
	if ingressSpoofScript("table inet calico {\n}") != "" {
		t.Error("a table without workload interfaces got an ingress chain")
	}
}
