package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// LatencyLevel is the TCP round trip between workloads on two hosts with a
// given amount of policy programmed, next to a control pair whose policy
// never changes.
type LatencyLevel struct {
	// Level is both the number of extra endpoints on the server's host and
	// the number of extra rules in each direction of the workloads' profile
	// (placed before its allow rules, so a new connection passes them all).
	Level    int       `json:"level"`
	Profiles int       `json:"profiles"` // profiles of the extra endpoints
	Tool     string    `json:"tool"`     // qperf or netperf
	RTTUs    []float64 `json:"rttUs"`    // per run: qperf tcp_lat x2, or netperf TCP_RR mean latency
	BWGbps   []float64 `json:"bwGbps"`   // per run: qperf tcp_bw, or netperf TCP_STREAM
	RTTMed   float64   `json:"rttMedianUs"`
	BWMed    float64   `json:"bwMedianGbps"`
	// ControlUs are the control pair's round trips, each measured right
	// after the run at the same index.
	ControlUs  []float64 `json:"controlRttUs"`
	ControlMed float64   `json:"controlRttMedianUs"`
	// Ratio is the median over runs of RTT / control RTT.
	Ratio float64 `json:"ratioToControl"`
	// Overhead is Ratio / Ratio at level 0 - 1: what the policy added, with
	// the machine's drift between levels divided out.
	Overhead float64 `json:"overhead"`
}

const latencyPool = "10.65.0.0/16"

// runLatency measures the round trip with 0, 100 and 1000 rules and
// endpoints. The test pair (server on host 1, client on host 2) is in
// profile BENCH, which gets the rules, and host 1 gets the endpoints. A
// control pair (server on host 3, client on host 2, profile CTRL) keeps its
// policy; measured alternately with the test pair, it tells the policy's
// effect from the machine's changing load.
func runLatency(ctx context.Context, r *runner) error {
	tool := "qperf"
	if lab.Require("qperf") != nil {
		if lab.Require("netperf", "netserver") != nil {
			return fmt.Errorf("neither qperf nor netperf is installed: run `apt-get install -y qperf` (or scripts/install-deps.sh)")
		}
		tool = "netperf"
	}
	w, err := r.buildWorld(ctx, walkthrough.Options{})
	if err != nil {
		return err
	}
	defer w.close()
	h1, h2 := w.Hosts[0], w.Hosts[1]
	h3, err := w.AddHost(ctx, "host3", "10.0.0.3/24")
	if err != nil {
		return err
	}
	if _, err := w.Ctl(ctx, h1, "pool", "add", latencyPool, "--nat-outgoing"); err != nil {
		return err
	}
	const control = "CTRL"
	for _, prof := range []string{benchProfile, control} {
		if _, err := w.Ctl(ctx, h1, "profile", "add", prof); err != nil {
			return err
		}
	}
	var wls [4]*walkthrough.Workload
	for i, s := range []struct {
		h          *lab.Host
		name, prof string
	}{{h1, "lat-srv", benchProfile}, {h2, "lat-cli", benchProfile}, {h3, "ctl-srv", control}, {h2, "ctl-cli", control}} {
		if wls[i], err = w.addWorkload(ctx, s.h, s.name, "auto", s.prof); err != nil {
			return err
		}
	}
	srv, cli, ctlSrv, ctlCli := wls[0], wls[1], wls[2], wls[3]
	for _, s := range []*walkthrough.Workload{srv, ctlSrv} {
		server, err := startLatencyServer(ctx, tool, s.Netns)
		if err != nil {
			return err
		}
		defer server.Stop()
	}

	var levels []LatencyLevel
	existing := 0
	for _, level := range r.plan.LatencyLevels {
		nprof := min(max(level/10, 1), 100)
		if level > existing {
			r.prog.logf("latency: %d endpoints in %d profiles on %s", level, nprof, h1.Label)
			if err := w.ensureProfiles(ctx, "LAT", nprof); err != nil {
				return err
			}
			err := w.addMany(ctx, h1, "le", existing, level, inProfile("LAT", nprof), "latency endpoints")
			if err != nil {
				return err
			}
			existing = level
		}
		if err := w.setBenchRules(ctx, level); err != nil {
			return err
		}
		w.settle(ctx, h1, 60*time.Second)
		w.settle(ctx, h2, 10*time.Second)
		for _, pair := range [][2]*walkthrough.Workload{{cli, srv}, {ctlCli, ctlSrv}} {
			if !lab.Reachable(ctx, pair[0].Netns, pair[1].IP) {
				return fmt.Errorf("with %d rules and endpoints, %s does not reach %s", level, pair[0].Name, pair[1].Name)
			}
		}
		lv := LatencyLevel{Level: level, Profiles: nprof, Tool: tool}
		if level == 0 {
			lv.Profiles = 0
		}
		var ratios []float64
		for run := 1; run <= r.plan.LatencyRuns; run++ {
			rtt, bw, err := runLatencyClient(ctx, tool, cli.Netns, srv.IP.String(), r.plan.LatencySeconds, true)
			if err != nil {
				return err
			}
			ctl, _, err := runLatencyClient(ctx, tool, ctlCli.Netns, ctlSrv.IP.String(), r.plan.LatencySeconds, false)
			if err != nil {
				return err
			}
			lv.RTTUs = append(lv.RTTUs, round(rtt, 2))
			lv.BWGbps = append(lv.BWGbps, round(bw, 3))
			lv.ControlUs = append(lv.ControlUs, round(ctl, 2))
			if ctl > 0 {
				ratios = append(ratios, rtt/ctl)
			}
			r.prog.logf("%s, %d rules/endpoints, run %d: round trip %.1f us (control %.1f us), %.2f Gbit/s", tool, level, run, rtt, ctl, bw)
		}
		lv.RTTMed = round(median(lv.RTTUs), 2)
		lv.BWMed = round(median(lv.BWGbps), 3)
		lv.ControlMed = round(median(lv.ControlUs), 2)
		lv.Ratio = round(median(ratios), 3)
		r.res.metric(SecLatency, fmt.Sprintf("TCP round trip, %d rules/endpoints", lv.Level), lv.RTTMed, "us", "", 0,
			fmt.Sprintf("%s, median of %d runs; control pair %.1f us; bandwidth %.2f Gbit/s", tool, len(lv.RTTUs), lv.ControlMed, lv.BWMed))
		if len(levels) > 0 && levels[0].Ratio > 0 {
			lv.Overhead = round(lv.Ratio/levels[0].Ratio-1, 3)
			r.res.metric(SecLatency, fmt.Sprintf("round trip added by %d rules/endpoints", lv.Level), round(lv.Overhead*100, 1), "%", "<", 10,
				fmt.Sprintf("against the control pair: ratio %.3f here, %.3f with none", lv.Ratio, levels[0].Ratio))
		}
		levels = append(levels, lv)
		r.res.Latency = append(r.res.Latency, lv) // kept even if a later level fails
	}
	return nil
}

func profileName(prefix string, i int) string { return fmt.Sprintf("%s_%03d", prefix, i) }

// ensureProfiles creates profiles PREFIX_000.. up to n, each with the
// seed's defaults plus one rule that admits web traffic from the next
// profile's members: rules with tags, as users write them.
func (w *world) ensureProfiles(ctx context.Context, prefix string, n int) error {
	for i := range n {
		name := profileName(prefix, i)
		if _, err := w.cli.Profile(ctx, name); err == nil {
			continue
		}
		if err := w.cli.AddProfile(ctx, name, true); err != nil {
			return err
		}
		rule := api.Rule{Action: api.ActionAllow, Protocol: "tcp",
			Src: api.EntityMatch{Tag: profileName(prefix, (i+1)%n)},
			Dst: api.EntityMatch{Ports: []api.PortRange{{Min: 80, Max: 80}, {Min: 443, Max: 443}}}}
		if err := w.cli.AddRule(ctx, name, "inbound", 0, rule); err != nil {
			return err
		}
	}
	return nil
}

// setBenchRules gives BENCH n deny rules in each direction ahead of its
// allow rules. They name addresses no workload has, so they never match:
// they only make a new connection walk past them.
func (w *world) setBenchRules(ctx context.Context, n int) error {
	doc := client.RulesJSON{Inbound: []api.Rule{}, Outbound: []api.Rule{}}
	for i := range n {
		doc.Inbound = append(doc.Inbound, api.Rule{Action: api.ActionDeny, Protocol: "tcp",
			Src: api.EntityMatch{CIDR: fmt.Sprintf("198.18.%d.%d/32", i/250, i%250+1)}})
		doc.Outbound = append(doc.Outbound, api.Rule{Action: api.ActionDeny, Protocol: "tcp",
			Dst: api.EntityMatch{CIDR: fmt.Sprintf("198.19.%d.%d/32", i/250, i%250+1)}})
	}
	def := api.NewProfile(benchProfile)
	doc.Inbound = append(doc.Inbound, def.Inbound...)
	doc.Outbound = append(doc.Outbound, def.Outbound...)
	b, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	return w.cli.UpdateRules(ctx, benchProfile, b)
}

// inProfile puts workload i in profile PREFIX.(i mod n).
func inProfile(prefix string, n int) func(int) client.WorkloadRequest {
	return func(i int) client.WorkloadRequest {
		return client.WorkloadRequest{Profiles: []string{profileName(prefix, i%n)}}
	}
}

// addMany adds in-process workloads PREFIX-NNNN for NNNN in [from, to) on
// h, each as spec(i) says (profiles, labels), with an address from the
// pools, a few at a time.
func (w *world) addMany(ctx context.Context, h *lab.Host, prefix string, from, to int, spec func(int) client.WorkloadRequest, what string) error {
	const parallel = 4
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	done := 0
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				req := spec(i)
				req.Name, req.IPs = fmt.Sprintf("%s-%04d", prefix, i), []string{"auto"}
				ns, err := w.Lab.AddWorkloadNetns(h, req.Name)
				if err == nil {
					_, err = w.attachReq(ctx, h, ns, req)
				}
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				done++
				w.r.prog.count(what, done, to-from)
				mu.Unlock()
			}
		}()
	}
	for i := from; i < to; i++ {
		mu.Lock()
		stop := first != nil
		mu.Unlock()
		if stop || ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// startLatencyServer starts qperf (or netserver) in ns and waits until it listens.
func startLatencyServer(ctx context.Context, tool string, ns *lab.Netns) (*lab.Proc, error) {
	argv, port := []string{"qperf", "--listen_port", "19765"}, 19765
	if tool == "netperf" {
		argv, port = []string{"netserver", "-D", "-p", "12865"}, 12865
	}
	p, err := ns.Start(argv...)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, err := ns.Listening(port)
		if err != nil {
			p.Stop()
			return nil, err
		}
		if ok {
			return p, nil
		}
		if p.Exited() || time.Now().After(deadline) || ctx.Err() != nil {
			p.Stop()
			return nil, fmt.Errorf("%s did not start listening in %s: %s", argv[0], ns.Name, strings.TrimSpace(p.Log()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runLatencyClient runs one measurement from ns to ip and returns the round
// trip in microseconds and, when bw is set, the bandwidth in Gbit/s.
func runLatencyClient(ctx context.Context, tool string, ns *lab.Netns, ip string, seconds int, bw bool) (float64, float64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(4*seconds+30)*time.Second)
	defer cancel()
	secs := strconv.Itoa(seconds)
	if tool == "qperf" {
		args := []string{"qperf", "-lp", "19765", "-t", secs, ip, "tcp_lat"}
		if bw {
			args = append(args, "tcp_bw")
		}
		out, err := ns.Run(ctx, args...)
		if err != nil {
			return 0, 0, err
		}
		return parseQperf(out, bw)
	}
	rr, err := ns.Run(ctx, "netperf", "-H", ip, "-p", "12865", "-l", secs, "-t", "TCP_RR", "-P", "0", "--", "-o", "MEAN_LATENCY")
	if err != nil {
		return 0, 0, err
	}
	rtt, err := lastNumber(rr)
	if err != nil {
		return 0, 0, fmt.Errorf("netperf TCP_RR output not understood: %q", rr)
	}
	if !bw {
		return rtt, 0, nil
	}
	st, err := ns.Run(ctx, "netperf", "-H", ip, "-p", "12865", "-l", secs, "-t", "TCP_STREAM", "-P", "0", "--", "-o", "THROUGHPUT")
	if err != nil {
		return 0, 0, err
	}
	mbps, err := lastNumber(st)
	if err != nil {
		return 0, 0, fmt.Errorf("netperf TCP_STREAM output not understood: %q", st)
	}
	return rtt, mbps / 1000, nil
}

var (
	qperfLatRE = regexp.MustCompile(`latency\s*=\s*([\d.]+)\s*(ns|us|ms|sec)`)
	qperfBWRE  = regexp.MustCompile(`bw\s*=\s*([\d.]+)\s*([KMGT]?)(B|b)/sec`)
)

// parseQperf reads `qperf ... tcp_lat [tcp_bw]`. qperf's tcp_lat is one
// way (half the round trip); we report the round trip.
func parseQperf(out string, withBW bool) (rttUs, gbps float64, err error) {
	m := qperfLatRE.FindStringSubmatch(out)
	b := qperfBWRE.FindStringSubmatch(out)
	if m == nil || withBW && b == nil {
		return 0, 0, fmt.Errorf("qperf output not understood: %q", strings.TrimSpace(out))
	}
	lat, _ := strconv.ParseFloat(m[1], 64)
	lat *= map[string]float64{"ns": 0.001, "us": 1, "ms": 1000, "sec": 1e6}[m[2]]
	if !withBW {
		return 2 * lat, 0, nil
	}
	bw, _ := strconv.ParseFloat(b[1], 64)
	bw *= map[string]float64{"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[b[2]]
	if b[3] == "B" {
		bw *= 8
	}
	return 2 * lat, bw / 1e9, nil
}

func lastNumber(s string) (float64, error) {
	f := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' })
	for i := len(f) - 1; i >= 0; i-- {
		if v, err := strconv.ParseFloat(f[i], 64); err == nil {
			return v, nil
		}
	}
	return 0, fmt.Errorf("no number in %q", s)
}
