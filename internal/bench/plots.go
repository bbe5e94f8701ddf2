package bench

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Plot file names, relative to the output directory.
const (
	plotThroughput   = "throughput.png"
	plotSetup        = "setup-latency.png"
	plotLatency      = "latency.png"
	plotControlPlane = "controlplane.png"
	plotScale        = "scale.png"
	plotRatios       = "ratios.png" // issue 19's targets, before and now

	plotWidth  = 9 * vg.Inch
	plotHeight = 5 * vg.Inch
)

// writePlots draws every plot the results have data for and returns the
// files written.
func writePlots(res *Results, dir string) ([]string, error) {
	var files []string
	for _, p := range []struct {
		file string
		have bool
		draw func(*Results) (*plot.Plot, error)
		// drawFile, for a figure of several plots, draws and saves it.
		drawFile func(*Results, string) error
	}{
		{plotThroughput, len(res.Throughput) > 0, throughputPlot, nil},
		{plotSetup, slices.ContainsFunc(res.Setup, func(m SetupMode) bool { return len(m.Samples) > 0 }), setupPlot, nil},
		{plotLatency, len(res.Latency) > 0, latencyPlot, nil},
		{plotControlPlane, len(res.ControlPlane) > 0, controlPlanePlot, nil},
		{plotScale, len(res.Scale) > 0, scalePlot, nil},
		{plotRatios, len(res.BeforeAfter) > 0, nil, ratiosPlot},
	} {
		if !p.have {
			continue
		}
		if p.drawFile != nil {
			if err := p.drawFile(res, filepath.Join(dir, p.file)); err != nil {
				return files, fmt.Errorf("plot %s: %w", p.file, err)
			}
			files = append(files, p.file)
			continue
		}
		pl, err := p.draw(res)
		if err != nil {
			return files, fmt.Errorf("plot %s: %w", p.file, err)
		}
		if err := pl.Save(plotWidth, plotHeight, filepath.Join(dir, p.file)); err != nil {
			return files, fmt.Errorf("plot %s: %w", p.file, err)
		}
		files = append(files, p.file)
	}
	return files, nil
}

// spread is a bar's min and max around its median, for YErrorBars.
type spread struct {
	plotter.XYs
	plotter.YErrors
}

// throughputPlot: one group of bars per path, one bar per stream count, at
// the median, with whiskers from the slowest to the fastest run.
func throughputPlot(res *Results) (*plot.Plot, error) {
	var paths []string
	var streams []int
	for _, t := range res.Throughput {
		if !slices.Contains(paths, t.Path) {
			paths = append(paths, t.Path)
		}
		if !slices.Contains(streams, t.Streams) {
			streams = append(streams, t.Streams)
		}
	}
	slices.Sort(streams)
	p := plot.New()
	p.Title.Text = "iperf3 throughput (median of runs; whiskers: min to max)"
	p.Y.Label.Text = "Gbit/s"
	p.Y.Min = 0
	p.Legend.Top = true
	width := 0.8 / float64(len(streams))
	for si, st := range streams {
		vals := make(plotter.Values, len(paths))
		var sp spread
		// Bars of this stream count sit at path index + offset, in data
		// units, so the whiskers can be placed on them exactly.
		off := -0.4 + width*(float64(si)+0.5)
		for pi, path := range paths {
			if t := find(res.Throughput, path, st); t != nil {
				vals[pi] = t.Median
				sp.XYs = append(sp.XYs, plotter.XY{X: float64(pi) + off, Y: t.Median})
				sp.YErrors = append(sp.YErrors, struct{ Low, High float64 }{t.Median - t.Min, t.Max - t.Median})
			}
		}
		// Bar widths are drawing lengths: convert from data units with the
		// approximate width of the data area.
		perUnit := (plotWidth.Points() - 90) / (float64(len(paths)) + 0.2)
		bars, err := plotter.NewBarChart(vals, vg.Points(0.8*width*perUnit))
		if err != nil {
			return nil, err
		}
		bars.XMin = off
		bars.Color = plotutil.Color(si)
		bars.LineStyle.Width = 0
		p.Add(bars)
		p.Legend.Add(streamsName(st), bars)
		if len(sp.XYs) > 0 {
			eb, err := plotter.NewYErrorBars(sp)
			if err != nil {
				return nil, err
			}
			p.Add(eb)
		}
	}
	p.NominalX(paths...)
	p.X.Min, p.X.Max = -0.6, float64(len(paths))-0.4
	// Path names are long: slant them so neighbours do not overlap.
	p.X.Tick.Label.Rotation = math.Pi / 9
	p.X.Tick.Label.XAlign = draw.XRight
	p.X.Tick.Label.YAlign = draw.YCenter
	return p, nil
}

// setupPlot: the distribution (CDF) of setup latency, one line per mode.
func setupPlot(res *Results) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Endpoint setup: call to reachable from another host (CDF)"
	p.X.Label.Text = "ms (log scale)"
	p.Y.Label.Text = "fraction of workloads"
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top = false
	p.Legend.Left = false
	p.Add(plotter.NewGrid())
	for i, m := range res.Setup {
		if len(m.Samples) == 0 {
			continue
		}
		s := slices.Clone(m.Samples)
		slices.Sort(s)
		pts := make(plotter.XYs, 0, 2*len(s))
		for j, v := range s {
			// A step function: the fraction jumps at each sample.
			pts = append(pts, plotter.XY{X: v, Y: float64(j) / float64(len(s))}, plotter.XY{X: v, Y: float64(j+1) / float64(len(s))})
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return nil, err
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.5)
		l.Dashes = plotutil.Dashes(i / 2)
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s (p50 %.0f, p99 %.0f ms)", m.Mode, m.P50, m.P99), l)
	}
	// Log scale: in-process calls take milliseconds, bursts of calicoctl
	// seconds; the right margin leaves room for the legend.
	lo, hi := math.Inf(1), 0.0
	for _, m := range res.Setup {
		if len(m.Samples) > 0 {
			lo = min(lo, slices.Min(m.Samples))
			hi = max(hi, slices.Max(m.Samples))
		}
	}
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.X.Min, p.X.Max = max(lo/1.5, 0.1), hi*4
	return p, nil
}

// latencyPlot: round trip against the amount of policy.
func latencyPlot(res *Results) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "TCP round trip across hosts against policy size (median of runs)"
	p.X.Label.Text = "extra rules per direction and endpoints on the host"
	p.Y.Label.Text = "round trip, µs"
	p.Y.Min = 0
	pts := make(plotter.XYs, len(res.Latency))
	ctl := make(plotter.XYs, len(res.Latency))
	for i, l := range res.Latency {
		pts[i] = plotter.XY{X: float64(l.Level), Y: l.RTTMed}
		ctl[i] = plotter.XY{X: float64(l.Level), Y: l.ControlMed}
	}
	p.Legend.Top = false
	if err := plotutil.AddLinePoints(p, "with the policy ("+res.Latency[0].Tool+")", pts, "control pair, policy unchanged", ctl); err != nil {
		return nil, err
	}
	return p, nil
}

// controlPlanePlot: route propagation against mesh size.
func controlPlanePlot(res *Results) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "New block's route on every host, by BGP mesh size"
	p.X.Label.Text = "hosts in the full mesh"
	p.Y.Label.Text = "ms"
	p.Y.Min = 0
	med := make(plotter.XYs, len(res.ControlPlane))
	mx := make(plotter.XYs, len(res.ControlPlane))
	own := make(plotter.XYs, len(res.ControlPlane))
	for i, m := range res.ControlPlane {
		med[i] = plotter.XY{X: float64(m.Hosts), Y: m.P50Ms}
		mx[i] = plotter.XY{X: float64(m.Hosts), Y: m.MaxMs}
		own[i] = plotter.XY{X: float64(m.Hosts), Y: m.OwnHostP50Ms}
	}
	p.Legend.Top, p.Legend.Left = true, true
	if err := plotutil.AddLinePoints(p, "every host, median", med, "every host, max", mx, "the workload's own host, median", own); err != nil {
		return nil, err
	}
	return p, nil
}

// scalePlot: convergence after the last agent's start against host count,
// one line per peering mode, and beside it a new block's p99 (in seconds
// too, so both share the axis).
func scalePlot(res *Results) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Every block on every host, after the last agent's start"
	p.X.Label.Text = "namespace hosts (agents sharing one etcd)"
	p.Y.Label.Text = "seconds"
	p.Y.Min, p.X.Min = 0, 0
	p.Legend.Top, p.Legend.Left = true, true
	p.Add(plotter.NewGrid())
	var args []any
	top := 0.0
	for _, mode := range []string{ScaleMesh, ScaleReflectors} {
		var conv, p99 plotter.XYs
		for _, s := range res.Scale {
			if s.Mode == mode {
				conv = append(conv, plotter.XY{X: float64(s.Hosts), Y: s.ConvergeSeconds})
				p99 = append(p99, plotter.XY{X: float64(s.Hosts), Y: s.P99Ms / 1000})
				top = max(top, s.ConvergeSeconds, s.P99Ms/1000)
			}
		}
		if len(conv) > 0 {
			args = append(args, mode+": converged", conv, mode+": a new block's route everywhere, p99", p99)
		}
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return nil, err
	}
	// Room above the lines for the legend.
	p.Y.Max = top * 1.5
	return p, nil
}
