package bench

import (
	"fmt"
	"math"
	"slices"
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

	// Findings explain gaps: what the bench saw in the ruleset, MTUs,
	// offloads and timings.
	Findings []string `json:"findings,omitempty"`
	// Plots are the PNG files written, relative to the output directory.
	Plots  []string `json:"plots,omitempty"`
	Errors []string `json:"errors,omitempty"`
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
