package bench

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Results is everything one bench run measured; results.json is this,
// results.md a rendering of it.
type Results struct {
	Started         string             `json:"started"`
	Machine         string             `json:"machine"`
	Quick           bool               `json:"quick"`
	Plan            Plan               `json:"plan"`
	Sections        []string           `json:"sections"`
	DurationSeconds float64            `json:"durationSeconds"`
	SectionSeconds  map[string]float64 `json:"sectionSeconds"`

	// Metrics are the summary table: one row per number with a target.
	Metrics []Metric `json:"metrics"`

	Throughput   []ThroughputResult `json:"throughput,omitempty"`
	Latency      []LatencyLevel     `json:"latency,omitempty"`
	Setup        []SetupMode        `json:"setup,omitempty"`
	Policy       *PolicyScale       `json:"policy,omitempty"`
	PolicyV3     *LabelPolicyScale  `json:"policyV3,omitempty"`
	ControlPlane []MeshResult       `json:"controlPlane,omitempty"`
	Scale        []ScaleResult      `json:"scale,omitempty"`
	ScaleModel   *ScaleModel        `json:"scaleModel,omitempty"`

	// Findings explain gaps: what the bench saw in the ruleset, MTUs,
	// offloads and timings. FindingSections names each one's section
	// (missing in results written before it existed).
	Findings        []string `json:"findings,omitempty"`
	FindingSections []string `json:"findingSections,omitempty"`
	// Kept says which sections' results come from an earlier run: a run
	// of some sections keeps the others' results from the results.json
	// it finds.
	Kept []string `json:"kept,omitempty"`
	// BeforeAfter holds issue 19's targets against the before run
	// (baseline.json in the output directory, started at BaselineRun) and
	// this one; recomputed whenever results are written.
	BeforeAfter []Comparison `json:"beforeAfter,omitempty"`
	BaselineRun string       `json:"baselineRun,omitempty"`
	// Plots are the PNG files written, relative to the output directory.
	Plots  []string `json:"plots,omitempty"`
	Errors []string `json:"errors,omitempty"`

	current string // the section running, for findings
}

// Metric is one row of the summary: a value, its target and whether the
// target was met (nil when there is no target or no value).
type Metric struct {
	Section string  `json:"section"`
	Name    string  `json:"name"`
	Value   float64 `json:"value"`
	Unit    string  `json:"unit,omitempty"`
	Target  string  `json:"target,omitempty"`
	Met     *bool   `json:"met,omitempty"`
	Note    string  `json:"note,omitempty"`
}

// ThroughputResult is one path at one stream count.
type ThroughputResult struct {
	Path        string    `json:"path"`
	Baseline    string    `json:"baseline,omitempty"` // path the ratio is taken against
	Streams     int       `json:"streams"`
	Gbps        []float64 `json:"gbps"` // every run
	Retransmits []int     `json:"retransmits"`
	Median      float64   `json:"median"`
	Min         float64   `json:"min"`
	Max         float64   `json:"max"`
	Ratio       float64   `json:"ratio,omitempty"` // median / baseline's median
	// CPUPerGB is each run's CPU seconds per GB received: iperf3's client
	// and server, plus the processes the path charges (the agents, for
	// the userspace WireGuard device). A shared machine's load moves
	// Gbit/s far more than this.
	CPUPerGB []float64 `json:"cpuSecPerGB,omitempty"`
	// ChargedCPUPerGB is the part of CPUPerGB spent by the charged
	// processes alone (the agents), run by run.
	ChargedCPUPerGB []float64 `json:"chargedCpuSecPerGB,omitempty"`
	// CPURatio is the paired ratio of CPUPerGB to the baseline's: the
	// path's cost with the machine's load taken out.
	CPURatio float64 `json:"cpuRatio,omitempty"`
}

func newResults(o Options, plan Plan, selected []string) *Results {
	return &Results{
		Started:        time.Now().UTC().Format(time.RFC3339),
		Machine:        machine(),
		Quick:          o.Quick,
		Plan:           plan,
		Sections:       selected,
		SectionSeconds: map[string]float64{},
	}
}

// metric adds a summary row. op is ">=", "<=", "<" or "" (no target).
func (r *Results) metric(section, name string, value float64, unit, op string, target float64, note string) {
	m := Metric{Section: section, Name: name, Value: value, Unit: unit, Note: note}
	if op != "" {
		m.Target = fmt.Sprintf("%s %s", op, trimFloat(target))
		if unit != "" && unit != "ratio" {
			m.Target += " " + unit
		}
		if !math.IsNaN(value) {
			var met bool
			switch op {
			case ">=":
				met = value >= target
			case "<=":
				met = value <= target
			case "<":
				met = value < target
			}
			m.Met = &met
		}
	}
	r.Metrics = append(r.Metrics, m)
}

func (r *Results) finding(format string, args ...any) {
	r.Findings = append(r.Findings, fmt.Sprintf(format, args...))
	r.FindingSections = append(r.FindingSections, r.current)
}

// finish orders the summary by section, in running order.
func (r *Results) finish() {
	slices.SortStableFunc(r.Metrics, func(a, b Metric) int {
		return slices.Index(Sections, a.Section) - slices.Index(Sections, b.Section)
	})
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.3f", v)
	for s[len(s)-1] == '0' {
		s = s[:len(s)-1]
	}
	if s[len(s)-1] == '.' {
		s = s[:len(s)-1]
	}
	return s
}

// median of xs (0 for none: JSON has no NaN). xs is not modified.
func median(xs []float64) float64 { return percentile(xs, 50) }

// percentile by linear interpolation between closest ranks (0 for none).
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 1 {
		return s[0]
	}
	pos := p / 100 * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}

func minMax(xs []float64) (float64, float64) {
	if len(xs) == 0 {
		return 0, 0
	}
	return slices.Min(xs), slices.Max(xs)
}

// ms converts a duration to float milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// resultOwners says which sections fill each part of Results, for keeping
// an earlier run's parts.
var resultOwners = []struct {
	sections []string
	keep     func(res, old *Results)
}{
	{[]string{SecThroughput, SecVXLAN, SecIPIP, SecWireGuard}, func(res, old *Results) { res.Throughput = old.Throughput }},
	{[]string{SecLatency}, func(res, old *Results) { res.Latency = old.Latency }},
	{[]string{SecPolicy}, func(res, old *Results) { res.Policy = old.Policy }},
	{[]string{SecPolicyV3}, func(res, old *Results) { res.PolicyV3 = old.PolicyV3 }},
	{[]string{SecControlPlane}, func(res, old *Results) { res.ControlPlane = old.ControlPlane }},
	{[]string{SecScale}, func(res, old *Results) { res.Scale, res.ScaleModel = old.Scale, old.ScaleModel }},
}

// keepEarlier adds to res, a run of some sections, what old (the earlier
// results.json in the same directory) has of the sections res does not
// hold, so `--only scale` does not wipe the other sections' results. res
// holds the sections it ran and those it already kept: a Results read back
// from results.json and written again (re-rendering results.md) carries
// its kept rows already, and adding old's again listed every kept row
// twice. Each summary row and finding is carried once.
func keepEarlier(res, old *Results) {
	held := map[string]bool{}
	for _, sec := range res.Sections {
		held[sec] = true
	}
	for _, k := range res.Kept {
		sec, _, _ := strings.Cut(k, " ") // "SECTION (run of ...)"
		held[sec] = true
	}
	has := func(sec string) bool { return held[sec] }
	var kept []string
	for _, sec := range old.Sections {
		if !has(sec) && !slices.Contains(kept, sec) {
			kept = append(kept, sec)
		}
	}
	for _, k := range old.Kept {
		if sec, _, _ := strings.Cut(k, " "); !has(sec) && !slices.Contains(kept, sec) {
			kept = append(kept, sec)
		}
	}
	if len(kept) == 0 {
		return
	}
	for _, o := range resultOwners {
		if !slices.ContainsFunc(o.sections, has) {
			o.keep(res, old)
		}
	}
	// Setup holds the modes of two sections, setup and cni: keep the old
	// modes of whichever did not run.
	var modes []SetupMode
	for _, m := range old.Setup {
		if !has(m.section()) {
			modes = append(modes, m)
		}
	}
	res.Setup = append(modes, res.Setup...)
	slices.SortStableFunc(res.Setup, func(a, b SetupMode) int {
		return slices.Index(Sections, a.section()) - slices.Index(Sections, b.section())
	})
	type row struct{ section, name string }
	seen := map[row]bool{}
	var metrics []Metric
	for _, m := range old.Metrics {
		if k := (row{m.Section, m.Name}); !has(m.Section) && !seen[k] {
			seen[k] = true
			metrics = append(metrics, m)
		}
	}
	res.Metrics = append(metrics, res.Metrics...)
	var findings, findingSecs []string
	for i, f := range old.Findings {
		sec := ""
		if i < len(old.FindingSections) {
			sec = old.FindingSections[i]
		}
		// Findings of unknown section are kept: only a run of every
		// section replaces them.
		if (sec == "" || !has(sec)) && !slices.Contains(findings, f) && !slices.Contains(res.Findings, f) {
			findings, findingSecs = append(findings, f), append(findingSecs, sec)
		}
	}
	res.Findings = append(findings, res.Findings...)
	res.FindingSections = append(findingSecs, res.FindingSections...)
	for _, e := range old.Errors {
		if sec, _, _ := strings.Cut(e, ":"); !has(sec) && !slices.Contains(res.Errors, e) {
			res.Errors = append(res.Errors, e)
		}
	}
	when := map[string]string{}
	for _, k := range old.Kept {
		sec, from, _ := strings.Cut(k, " ")
		when[sec] = from
	}
	for _, sec := range kept {
		from, ok := when[sec]
		if !ok {
			plan := "full plan"
			if old.Quick {
				plan = "quick plan"
			}
			from = fmt.Sprintf("(run of %s, %s)", old.Started, plan)
		}
		res.Kept = append(res.Kept, sec+" "+from)
		if res.SectionSeconds == nil {
			res.SectionSeconds = map[string]float64{}
		}
		if s, ok := old.SectionSeconds[sec]; ok {
			res.SectionSeconds[sec] = s
		}
	}
}
