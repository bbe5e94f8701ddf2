package bench

import (
	"testing"
)

// The encapsulation rows pair each round's encapsulated run with the
// no-encapsulation run of the same round, in Gbit/s and in CPU per GB, and
// skip a stream count where either path was not measured.
func TestEncapCostRows(t *testing.T) {
	plan := DefaultPlan()
	plan.Streams = []int{1, 4}
	r := &runner{plan: plan, prog: newProgress(nil), res: newResults(Options{}, plan, Sections)}
	res := []ThroughputResult{
		// Round 2 of the encapsulated path ran in a slow spell of the
		// machine, and so did round 2 of the plain one: pairing keeps
		// the ratio at 0.9 where the medians' ratio would not.
		{Path: pathVXLAN, Streams: 1, Gbps: []float64{9, 3, 9}, CPUPerGB: []float64{1.1, 1.65, 0}},
		{Path: pathPlainVXLAN, Streams: 1, Gbps: []float64{10, 3.333, 10}, CPUPerGB: []float64{1, 1.5, 1}},
		{Path: pathVXLAN, Streams: 4, Gbps: []float64{5}},
	}
	r.addEncapCost(SecVXLAN, pathVXLAN, pathPlainVXLAN, res)
	rows := map[string]float64{}
	for _, m := range r.res.Metrics {
		if m.Section != SecVXLAN {
			t.Errorf("row %q in section %s", m.Name, m.Section)
		}
		rows[m.Name] = m.Value
	}
	want := map[string]float64{
		"workload, VXLAN via router / workload, no encap via router, 1 stream":             0.9,
		"CPU per GB, workload, VXLAN via router / workload, no encap via router, 1 stream": 1.1, // the round without a figure is left out
	}
	if len(rows) != len(want) {
		t.Errorf("rows %v, want %v", rows, want)
	}
	for name, v := range want {
		if got, ok := rows[name]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, v)
		}
	}
}
