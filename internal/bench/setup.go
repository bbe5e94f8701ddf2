package bench

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/calico-go/calico/internal/lab"
)

// SetupMode is one way of adding workloads, and how long each took from the
// start of its `container add` (or in-process call) until a workload on the
// other host got echo replies from it.
type SetupMode struct {
	Mode    string    `json:"mode"`
	Via     string    `json:"via"`   // calicoctl or in-process
	Burst   int       `json:"burst"` // workloads added at once
	Samples []float64 `json:"samplesMs"`
	Failed  int       `json:"failed"` // not reachable within setupTimeout
	P50     float64   `json:"p50Ms"`
	P90     float64   `json:"p90Ms"`
	P99     float64   `json:"p99Ms"`
	Max     float64   `json:"maxMs"`
	// Medians of where the time went (ms): the commands or the call itself;
	// from the endpoint record's write to the workload's /32 route on its
	// host (the agent: watch, calc, route sync; negative when the route came
	// before calicoctl returned); from the moment the profile was set (the
	// call's return) to the first echo reply.
	CallP50  float64 `json:"callP50Ms"`
	RouteP50 float64 `json:"routeAfterRecordP50Ms"`
	ReachP50 float64 `json:"reachAfterProfileP50Ms"`
	// IPAMConflicts counts compare-and-swap transactions of the in-process
	// calls that lost a race and were retried (calicoctl's are not visible).
	IPAMConflicts uint64 `json:"ipamConflicts,omitempty"`
}

const (
	setupPool    = "10.64.0.0/16"
	setupTimeout = 10 * time.Second
)

// runSetup adds workloads on host 1 one after another and in bursts, through
// calicoctl and through the in-process call, while a probe workload on host
// 2 pings each new address every few milliseconds.
func runSetup(ctx context.Context, r *runner) error {
	w, err := r.buildProfileWorld(ctx, setupPool)
	if err != nil {
		return err
	}
	defer w.close()
	h1, h2 := w.Hosts[0], w.Hosts[1]
	probeWl, err := w.addWorkload(ctx, h2, "probe", "10.64.255.1", benchProfile)
	if err != nil {
		return err
	}
	p, err := newProber(probeWl.Netns)
	if err != nil {
		return err
	}
	defer p.close()
	rw, err := watchRoutes(h1.Netns)
	if err != nil {
		return err
	}
	defer rw.close()

	burst := max(r.plan.Burst, 1)
	modes := []SetupMode{
		{Mode: "calicoctl, one by one", Via: "calicoctl", Burst: 1},
		{Mode: fmt.Sprintf("calicoctl, bursts of %d", burst), Via: "calicoctl", Burst: burst},
		{Mode: "in-process, one by one", Via: "in-process", Burst: 1},
		{Mode: fmt.Sprintf("in-process, bursts of %d", burst), Via: "in-process", Burst: burst},
	}
	ips := &addrSeq{next: netip.MustParseAddr("10.64.1.1")}
	for i := range modes {
		m := &modes[i]
		names, err := r.setupMode(ctx, w, m, i+1, ips, p, rw)
		if err != nil {
			return err
		}
		r.summarizeSetup(m)
		r.res.Setup = append(r.res.Setup, *m) // kept even if a later mode fails
		r.prog.logf("%s: p50 %.1f ms, p99 %.1f ms, %d unreachable", m.Mode, m.P50, m.P99, m.Failed)
		// Start every mode from the same state: only the probe.
		if err := w.removeAll(ctx, h1, names); err != nil {
			return err
		}
		w.settle(ctx, h1, 20*time.Second)
		rw.forget()
	}
	return nil
}

// setupMode adds SetupCount workloads in m's way and records each one's time.
func (r *runner) setupMode(ctx context.Context, w *world, m *SetupMode, n int, ips *addrSeq, p *prober, rw *routeWatch) ([]string, error) {
	h1 := w.Hosts[0]
	count := r.plan.SetupCount
	var names []string
	type sample struct {
		total, call, route, reach time.Duration
		routeOK, ok               bool
	}
	var mu sync.Mutex
	var samples []sample
	conflicts0 := w.cli.IPAM.Conflicts()
	for start := 0; start < count; start += m.Burst {
		size := min(m.Burst, count-start)
		// The namespaces exist before the timer starts, as a container's
		// does before its network is added.
		batch := make([]struct {
			name string
			ip   netip.Addr
			ns   *lab.Netns
		}, size)
		for j := range batch {
			b := &batch[j]
			b.name = fmt.Sprintf("s%d-%04d", n, start+j)
			b.ip = ips.take()
			ns, err := w.Lab.AddWorkloadNetns(h1, b.name)
			if err != nil {
				return names, err
			}
			b.ns = ns
			names = append(names, b.name)
		}
		var wg sync.WaitGroup
		errs := make([]error, size)
		for j := range batch {
			b := batch[j]
			wg.Add(1)
			go func() {
				defer wg.Done()
				t0 := time.Now()
				pr := p.watch(b.ip)
				// recorded: the endpoint record is written (the agent can
				// route it); allowed: its profile is set (it can pass).
				var recorded, allowed time.Time
				var err error
				if m.Via == "calicoctl" {
					// One command, as users add a workload with its profile.
					_, err = w.Ctl(ctx, h1, "container", "add", b.name, b.ip.String(), "--netns", b.ns.Path, "--profile", benchProfile)
					recorded = time.Now()
					allowed = recorded
				} else {
					_, err = w.attach(ctx, h1, b.ns, b.name, b.ip.String(), benchProfile)
					recorded = time.Now()
					allowed = recorded
				}
				if err != nil {
					errs[j] = err
					p.wait(ctx, pr, 0) // stop pinging it
					return
				}
				at, werr := p.wait(ctx, pr, setupTimeout)
				s := sample{call: allowed.Sub(t0), ok: werr == nil}
				if s.ok {
					s.total = at.Sub(t0)
					s.reach = at.Sub(allowed)
				}
				rw.mu.Lock()
				rt, found := rw.find(h1.Name, b.ip, true, t0)
				rw.mu.Unlock()
				if found {
					s.routeOK = true
					s.route = rt.Sub(recorded)
				}
				mu.Lock()
				samples = append(samples, s)
				mu.Unlock()
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return names, err
			}
		}
		r.prog.count(m.Mode, start+size, count)
		if ctx.Err() != nil {
			return names, ctx.Err()
		}
	}
	if m.Via == "in-process" {
		m.IPAMConflicts = w.cli.IPAM.Conflicts() - conflicts0
	}
	var calls, routes, reaches []float64
	for _, s := range samples {
		calls = append(calls, ms(s.call))
		if !s.ok {
			m.Failed++
			continue
		}
		m.Samples = append(m.Samples, round(ms(s.total), 2))
		reaches = append(reaches, ms(s.reach))
		if s.routeOK {
			routes = append(routes, ms(s.route))
		}
	}
	m.CallP50 = round(median(calls), 2)
	m.RouteP50 = round(median(routes), 2)
	m.ReachP50 = round(median(reaches), 2)
	return names, nil
}

func (r *runner) summarizeSetup(m *SetupMode) {
	m.P50 = round(percentile(m.Samples, 50), 2)
	m.P90 = round(percentile(m.Samples, 90), 2)
	m.P99 = round(percentile(m.Samples, 99), 2)
	_, mx := minMax(m.Samples)
	m.Max = round(mx, 2)
	if len(m.Samples) == 0 {
		return
	}
	note := fmt.Sprintf("%d workloads", len(m.Samples))
	if m.Failed > 0 {
		note += fmt.Sprintf(", %d not reachable within %s", m.Failed, setupTimeout)
	}
	r.res.metric(SecSetup, "setup p50, "+m.Mode, m.P50, "ms", "<=", 50, note)
	r.res.metric(SecSetup, "setup p99, "+m.Mode, m.P99, "ms", "<=", 200, note)
	what := map[string]string{"calicoctl": "calicoctl container add --profile takes", "in-process": "the in-process AddWorkload call takes"}[m.Via]
	conflicts := ""
	if m.Via == "in-process" {
		conflicts = fmt.Sprintf(" IPAM transactions retried after losing a race: %d.", m.IPAMConflicts)
	}
	r.res.finding("setup, %s: %s %.1f ms; the agent's /32 route appears %.1f ms after the endpoint record is written; the first echo reply comes %.1f ms after the profile is in place (medians).%s",
		m.Mode, what, m.CallP50, m.RouteP50, m.ReachP50, conflicts)
}

// removeAll removes workloads through the in-process client, a few at a time.
func (w *world) removeAll(ctx context.Context, h *lab.Host, names []string) error {
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for _, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := h.Do(func() error { _, err := w.cli.RemoveWorkload(ctx, h.Label, name); return err })
			if err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("removing workload %s: %w", name, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// addrSeq hands out consecutive addresses, skipping .0 and .255.
type addrSeq struct {
	mu   sync.Mutex
	next netip.Addr
}

func (s *addrSeq) take() netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		a := s.next
		s.next = s.next.Next()
		if b := a.As4(); b[3] != 0 && b[3] != 255 {
			return a
		}
	}
}
