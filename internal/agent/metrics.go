package agent

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/nft"
)

// metrics is what calico-node --prometheus-listen serves at /metrics. The
// agent's loop sets the gauges and counters as it goes; drop counters are
// read from nftables at scrape time.
type metrics struct {
	reg *prometheus.Registry

	endpoints, profiles, policies prometheus.Gauge
	apply                         prometheus.Histogram
	inSync                        prometheus.Gauge
	resyncs                       prometheus.Counter
	nftErrors, routeErrors        prometheus.Counter
	bgpSessions                   *prometheus.GaugeVec
	bgpReceived, bgpRejected      *prometheus.GaugeVec

	drops *dropCollector
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		endpoints: prometheus.NewGauge(prometheus.GaugeOpts{Name: "calico_endpoints",
			Help: "Workload endpoints of this host whose policy is programmed."}),
		profiles: prometheus.NewGauge(prometheus.GaugeOpts{Name: "calico_profiles",
			Help: "Profiles programmed (those of this host's endpoints)."}),
		policies: prometheus.NewGauge(prometheus.GaugeOpts{Name: "calico_policies",
			Help: "Global network policies in the datastore, as the agent last synced them."}),
		apply: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "calico_dataplane_apply_seconds",
			Help:    "Time one pass took to compute and apply routes, tunnels, policy and BGP.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}),
		inSync: prometheus.NewGauge(prometheus.GaugeOpts{Name: "calico_datastore_in_sync",
			Help: "1 once the agent holds a full snapshot of the datastore and follows its changes."}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{Name: "calico_datastore_resyncs_total",
			Help: "Full snapshots read again after the datastore watch broke."}),
		nftErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "calico_nftables_errors_total",
			Help: "Passes whose nftables update failed."}),
		routeErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "calico_route_errors_total",
			Help: "Passes whose route update failed."}),
		bgpSessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "calico_bgp_sessions",
			Help: "BGP sessions by state."}, []string{"state"}),
		bgpReceived: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "calico_bgp_prefixes_received",
			Help: "Prefixes received from a BGP peer."}, []string{"peer"}),
		bgpRejected: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "calico_bgp_prefixes_rejected",
			Help: "Prefixes from a BGP peer that the import policy refused."}, []string{"peer"}),
		drops: &dropCollector{counter: nft.NewDropCounter()},
	}
	m.reg.MustRegister(m.endpoints, m.profiles, m.policies, m.apply, m.inSync, m.resyncs,
		m.nftErrors, m.routeErrors, m.bgpSessions, m.bgpReceived, m.bgpRejected, m.drops,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// setBGP reports the sessions as the status record has them.
func (m *metrics) setBGP(peers []api.PeerState) {
	m.bgpSessions.Reset()
	m.bgpReceived.Reset()
	m.bgpRejected.Reset()
	for _, p := range peers {
		m.bgpSessions.WithLabelValues(p.State).Inc()
		m.bgpReceived.WithLabelValues(p.IP).Set(float64(p.Received))
		m.bgpRejected.WithLabelValues(p.IP).Set(float64(p.Rejected))
	}
}

// serve answers /metrics on addr until ctx ends. The port is part of the
// control plane (controlPlane), so workloads cannot reach it.
func (m *metrics) serve(ctx context.Context, addr netip.AddrPort) (func(), error) {
	ln, err := net.Listen("tcp", addr.String())
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // ErrServerClosed once stopped
	}()
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-done
	}, nil
}

// dropCollector turns the drop rules' nft counters into
// calico_dropped_packets_total and calico_dropped_bytes_total, by profile,
// direction and rule ("none": no rule of the endpoint's profiles, listed
// comma-separated, allowed the packet). What the kernel's counters grew
// by is named when read, with the policy that dropped the packets, and
// added to running sums, so a series never goes down when chains go.
type dropCollector struct {
	counter *nft.DropCounter
	mu      sync.Mutex
	names   nft.DropNames
	// profilesOf is each endpoint interface's profiles.
	profilesOf map[string][]string
	sums       map[dropKey]nft.Count
}

type dropKey struct{ profile, policy, dir, rule string }

var (
	dropPacketsDesc = prometheus.NewDesc("calico_dropped_packets_total",
		"Packets dropped by workload policy: a profile's or label policy's deny rule (rule N), no profile rule allowing them (rule none), or label policies applying and none deciding (rule end-of-tier).",
		[]string{"profile", "policy", "direction", "rule"}, nil)
	dropBytesDesc = prometheus.NewDesc("calico_dropped_bytes_total",
		"Bytes dropped by workload policy (see calico_dropped_packets_total).",
		[]string{"profile", "policy", "direction", "rule"}, nil)
)

// setNames names the counters of the policy just applied.
func (d *dropCollector) setNames(n nft.DropNames, profilesOf map[string][]string) {
	d.mu.Lock()
	d.names, d.profilesOf = n, profilesOf
	d.mu.Unlock()
}

// poll reads the kernel's counters into the sums; the agent calls it before
// every policy update too, which may rewrite them.
func (d *dropCollector) poll() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d.mu.Lock()
	defer d.mu.Unlock()
	grown, err := d.counter.Poll(ctx)
	if err != nil {
		return err
	}
	if d.sums == nil {
		d.sums = map[dropKey]nft.Count{}
	}
	for prefix, c := range grown {
		s, ok := d.names.Source(prefix)
		if !ok {
			continue // not ours, or dropped before the agent named its chains
		}
		k := dropKey{s.Profile, s.Policy, s.Direction, strconv.Itoa(s.Rule)}
		switch {
		case s.EndOfTier:
			k.rule = "end-of-tier"
		case s.Rule == 0 && s.Endpoint == "":
			k.profile, k.rule = s.Profiles, "none"
		case s.Rule == 0:
			k.profile, k.rule = strings.Join(d.profilesOf[s.Endpoint], ","), "none"
		}
		t := d.sums[k]
		t.Packets += c.Packets
		t.Bytes += c.Bytes
		d.sums[k] = t
	}
	return nil
}

func (d *dropCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- dropPacketsDesc
	ch <- dropBytesDesc
}

func (d *dropCollector) Collect(ch chan<- prometheus.Metric) {
	if err := d.poll(); err != nil {
		ch <- prometheus.NewInvalidMetric(dropPacketsDesc, err)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, c := range d.sums {
		ch <- prometheus.MustNewConstMetric(dropPacketsDesc, prometheus.CounterValue, float64(c.Packets), k.profile, k.policy, k.dir, k.rule)
		ch <- prometheus.MustNewConstMetric(dropBytesDesc, prometheus.CounterValue, float64(c.Bytes), k.profile, k.policy, k.dir, k.rule)
	}
}

// observePass records how long a pass took that started at t0.
func (m *metrics) observePass(t0 time.Time) { m.apply.Observe(time.Since(t0).Seconds()) }

// countError counts a failure in the counter pick returns, when metrics are on.
func (a *Agent) countError(pick func(*metrics) prometheus.Counter) {
	if a.metrics != nil {
		pick(a.metrics).Inc()
	}
}

// pollDrops reads the drop counters before a policy update rewrites
// their chains (the Enforcer calls it, nft.Enforcer.SetBeforeRewrite).
func (a *Agent) pollDrops() {
	if err := a.metrics.drops.poll(); err != nil {
		a.log.Debug("cannot read the drop counters", "err", err)
	}
}

// afterPolicy tells the metrics and the flow log what the policy now
// enforced means; after a failed Apply (ok false) the kernel may still
// hold the previous one, whose names stay.
func (a *Agent) afterPolicy(p calc.Policy, workloads []calc.WorkloadIface, st nft.Stats, ok bool) {
	// An update that wrote nothing left every chain, hence every name, as
	// it was.
	if !ok || st.Ops == 0 && a.named {
		return
	}
	a.named = true
	a.flows.setPolicy(p, workloads)
	a.mu.Lock()
	policies := len(a.snap.Policies)
	a.mu.Unlock()
	m := a.metrics
	if m == nil {
		return
	}
	profilesOf := make(map[string][]string, len(p.Endpoints))
	for _, ep := range p.Endpoints {
		profilesOf[ep.Interface] = ep.Profiles
	}
	m.drops.setNames(nft.NewDropNames(p), profilesOf)
	m.endpoints.Set(float64(st.Endpoints))
	m.profiles.Set(float64(st.Profiles))
	m.policies.Set(float64(policies))
}
