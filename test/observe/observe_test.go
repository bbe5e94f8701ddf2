// Package observe checks what operators see of a running cluster, on the
// namespace lab with the real binaries, etcd, BGP and kernel: the agents'
// Prometheus metrics (scraped and parsed with the client library) and
// `calicoctl flows`, the packets policy denied.
package observe

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

const labPrefix = "cobs"

func TestMain(m *testing.M) { e2etest.Main(m, labPrefix, nil) }

// metricsPort is what every node of these tests serves /metrics on.
const metricsPort = 9091

// scrape fetches http://ADDR/metrics from inside ns and parses it.
func scrape(ctx context.Context, ns *lab.Netns, addr netip.AddrPort) (map[string]*dto.MetricFamily, error) {
	body, err := fetch(ctx, ns, addr)
	if err != nil {
		return nil, err
	}
	var p expfmt.TextParser
	return p.TextToMetricFamilies(strings.NewReader(body))
}

// fetch GETs http://ADDR/metrics from inside ns.
func fetch(ctx context.Context, ns *lab.Netns, addr netip.AddrPort) (string, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() (err error) {
			c, err = (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, a)
			return err
		})
		return c, err
	}}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr.String()+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET /metrics: %s: %s", resp.Status, b)
	}
	return string(b), err
}

// value is the sample of family name whose labels include want (0, false
// if there is none).
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// TestMetrics: every node runs with --prometheus-listen=:9091. Each host
// scrapes its own agent and another host's, and the numbers are the lab's:
// endpoints and profiles programmed, BGP sessions and prefixes, sync state,
// pass latencies, and a drop counter that grows with denied pings. No
// workload reaches a metrics port, on its own host or another, though its
// profile allows all outbound traffic and a listener on the next port of
// the same host answers it; also not after one host moves its metrics to
// another port.
func TestMetrics(t *testing.T) {
	w := e2etest.World(t, labPrefix, walkthrough.Options{NodeArgs: []string{fmt.Sprintf("--prometheus-listen=:%d", metricsPort)}}, true)
	ctx := e2etest.Ctx(t, 5*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	w1, w2, w3 := w.Workloads["worker-1"], w.Workloads["worker-2"], w.Workloads["worker-3"]
	m1, m2 := e2etest.AP(h1.Addr(), metricsPort), e2etest.AP(h2.Addr(), metricsPort)

	var fams map[string]*dto.MetricFamily
	e2etest.WaitFor(t, 30*time.Second, "host1's metrics show 2 endpoints, 2 profiles and an established BGP session", func() (bool, string) {
		var err error
		if fams, err = scrape(ctx, h1.Netns, m1); err != nil {
			return false, err.Error()
		}
		eps, _ := value(fams, "calico_endpoints", nil)
		profs, _ := value(fams, "calico_profiles", nil)
		est, _ := value(fams, "calico_bgp_sessions", map[string]string{"state": "Established"})
		return eps == 2 && profs == 2 && est == 1, fmt.Sprintf("endpoints %v, profiles %v, established sessions %v", eps, profs, est)
	})
	for _, c := range []struct {
		name   string
		labels map[string]string
		ok     func(float64) bool
	}{
		{"calico_datastore_in_sync", nil, func(v float64) bool { return v == 1 }},
		{"calico_datastore_resyncs_total", nil, func(v float64) bool { return v == 0 }},
		{"calico_dataplane_apply_seconds", nil, func(v float64) bool { return v >= 1 }},
		{"calico_bgp_prefixes_received", map[string]string{"peer": h2.Addr().String()}, func(v float64) bool { return v >= 1 }},
		{"calico_bgp_prefixes_rejected", map[string]string{"peer": h2.Addr().String()}, func(v float64) bool { return v == 0 }},
		{"calico_nftables_errors_total", nil, func(v float64) bool { return v == 0 }},
		{"calico_route_errors_total", nil, func(v float64) bool { return v == 0 }},
		{"calico_policies", nil, func(v float64) bool { return v == 0 }},
	} {
		if v, found := value(fams, c.name, c.labels); !found || !c.ok(v) {
			t.Errorf("host1: %s%v = %v (present: %v)", c.name, c.labels, v, found)
		}
	}

	// Host 2 scrapes host 1 across the fabric, and its own agent.
	f2, err := scrape(ctx, h2.Netns, m1)
	if err != nil {
		t.Fatalf("host2 scraping host1: %v", err)
	}
	if v, _ := value(f2, "calico_endpoints", nil); v != 2 {
		t.Errorf("host2 scraping host1: calico_endpoints = %v, want 2", v)
	}
	e2etest.WaitFor(t, 10*time.Second, "host2's own metrics show its 1 endpoint", func() (bool, string) {
		f, err := scrape(ctx, h2.Netns, m2)
		if err != nil {
			return false, err.Error()
		}
		v, _ := value(f, "calico_endpoints", nil)
		return v == 1, fmt.Sprintf("calico_endpoints %v", v)
	})

	// Denied pings: worker-2 (PROF_2) is no member of PROF_1, whose only
	// inbound rule is `allow from tag PROF_1`, so worker-1 drops them.
	dropped := map[string]string{"profile": "PROF_1", "direction": "inbound", "rule": "none"}
	before, _ := value(fams, "calico_dropped_packets_total", dropped)
	const pings = 3
	if n := e2etest.PingReplies(ctx, w2.Netns, netip.Addr{}, w1.IP, pings); n != 0 {
		t.Fatalf("worker-2 -> worker-1: %d of %d pings answered; want all denied", n, pings)
	}
	fams, err = scrape(ctx, h1.Netns, m1)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := value(fams, "calico_dropped_packets_total", dropped)
	if after-before < pings {
		t.Errorf("calico_dropped_packets_total%v went from %v to %v after %d denied pings", dropped, before, after, pings)
	}
	// What an operator sees (histogram buckets and Go runtime metrics left out).
	if body, err := fetch(ctx, h1.Netns, m1); err == nil {
		var lines []string
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "calico_") && !strings.Contains(l, "_bucket") {
				lines = append(lines, l)
			}
		}
		t.Logf("host1 /metrics:\n%s", strings.Join(lines, "\n"))
	}
	t.Logf(`FIGURE: metrics: host1 calico_endpoints 2, calico_profiles 2, 1 established BGP session; %d denied pings moved calico_dropped_packets_total{profile="PROF_1",direction="inbound",rule="none"} from %v to %v`,
		pings, before, after)

	// Workloads and the metrics port.
	e2etest.ListenTCP(t, h1.Netns, e2etest.AP(h1.Addr(), metricsPort+1).String())
	e2etest.ListenTCP(t, w1.Netns, ":8080")
	if err := e2etest.Opens(ctx, w3.Netns, netip.Addr{}, e2etest.AP(h1.Addr(), metricsPort+1)); err != nil {
		t.Errorf("honest: worker-3 (host2) -> host1 port %d (not the control plane): %v", metricsPort+1, err)
	}
	if err := e2etest.Opens(ctx, w3.Netns, netip.Addr{}, e2etest.AP(w1.IP, 8080)); err != nil {
		t.Errorf("honest: worker-3 -> worker-1 tcp 8080: %v", err)
	}
	attacks := []struct {
		from *walkthrough.Workload
		dst  netip.AddrPort
		what string
	}{
		{w1, m1, "worker-1 -> its own host's metrics"},
		{w3, m1, "worker-3 (host2) -> host1's metrics"},
		{w1, m2, "worker-1 (host1) -> host2's metrics"},
		{w3, m2, "worker-3 -> its own host's metrics"},
	}
	var reached []string
	for _, a := range attacks {
		if err := e2etest.Blocked(ctx, a.from.Netns, netip.Addr{}, a.dst); err != nil {
			t.Errorf("attack %s: %v", a.what, err)
			reached = append(reached, a.what)
		}
	}
	if _, err := scrape(ctx, h1.Netns, m1); err != nil {
		t.Errorf("honest: host1 scraping itself after the attacks: %v", err)
	}

	// Host 2's operator moves its metrics to another port. Every agent
	// learns it from host 2's node record, and host 1's port stays guarded
	// at host 2 though host 2 itself no longer serves it.
	const otherPort = metricsPort + 4
	m2 = e2etest.AP(h2.Addr(), otherPort)
	if _, err := w.Ctl(ctx, h2, "node", "stop", "--name="+h2.Label); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Ctl(ctx, h2, "node", "--ip="+h2.Addr().String(), "--name="+h2.Label, fmt.Sprintf("--prometheus-listen=:%d", otherPort)); err != nil {
		t.Fatal(err)
	}
	e2etest.WaitFor(t, 20*time.Second, "host1 scrapes host2's metrics on the new port", func() (bool, string) {
		_, err := scrape(ctx, h1.Netns, m2)
		return err == nil, fmt.Sprint(err)
	})
	moved := []struct {
		from *walkthrough.Workload
		dst  netip.AddrPort
		what string
	}{
		{w1, m2, "worker-1 (host1) -> host2's new metrics port"},
		{w3, m2, "worker-3 -> its own host's new metrics port"},
		{w3, m1, "worker-3 (host2) -> host1's metrics, host2 serving another port"},
	}
	for _, a := range moved {
		if err := e2etest.BecomesBlocked(ctx, a.from.Netns, a.dst); err != nil {
			t.Errorf("attack %s: %v", a.what, err)
			reached = append(reached, a.what)
		}
	}
	if err := e2etest.Opens(ctx, w3.Netns, netip.Addr{}, e2etest.AP(h1.Addr(), metricsPort+1)); err != nil {
		t.Errorf("honest: worker-3 (host2) -> host1 port %d after the move: %v", metricsPort+1, err)
	}
	t.Logf("FIGURE: metrics port from workloads: %d of %d attempts connected (%s); host1 and host2 scrape it, worker-3 reaches host1:%d",
		len(reached), len(attacks)+len(moved), strings.Join(reached, "; "), metricsPort+1)
}

// flow is one line of `calicoctl flows -o json`.
type flow struct {
	Node, Workload, Direction, Source, Destination, Protocol, Profile, Policy, DeniedBy string
	Port, Rule                                                                          int
	Packets                                                                             uint64
}

// TestFlows: a denied ping shows up in `calicoctl flows` with the profile
// that denied it: first no rule of PROF_1 allowing worker-2 in, then
// PROF_1's new first rule `deny icmp` refusing worker-3 (another host).
func TestFlows(t *testing.T) {
	w := e2etest.World(t, labPrefix, walkthrough.Options{}, true)
	ctx := e2etest.Ctx(t, 5*time.Minute)
	h1 := w.Hosts[0]
	w1, w2, w3 := w.Workloads["worker-1"], w.Workloads["worker-2"], w.Workloads["worker-3"]
	e2etest.WaitFor(t, 30*time.Second, "worker-3 (host2) -> worker-1 (host1) ping answered before the deny rule", func() (bool, string) {
		n := e2etest.PingReplies(ctx, w3.Netns, netip.Addr{}, w1.IP, 1)
		return n == 1, fmt.Sprintf("%d replies", n)
	})
	if n := e2etest.PingReplies(ctx, w2.Netns, netip.Addr{}, w1.IP, 2); n != 0 {
		t.Fatalf("worker-2 -> worker-1: %d pings answered; want none", n)
	}
	if _, err := w.Ctl(ctx, h1, "profile", "PROF_1", "rule", "add", "inbound", "--at=1", "deny", "icmp"); err != nil {
		t.Fatal(err)
	}
	e2etest.WaitFor(t, 10*time.Second, "worker-3 -> worker-1 ping denied by the new rule", func() (bool, string) {
		n := e2etest.PingReplies(ctx, w3.Netns, netip.Addr{}, w1.IP, 1)
		return n == 0, fmt.Sprintf("%d replies", n)
	})
	if n := e2etest.PingReplies(ctx, w3.Netns, netip.Addr{}, w1.IP, 2); n != 0 {
		t.Fatalf("worker-3 -> worker-1 after deny icmp: %d pings answered", n)
	}

	find := func(flows []flow, src *walkthrough.Workload) *flow {
		for i, f := range flows {
			if f.Node == h1.Label && f.Workload == "worker-1" && f.Direction == "inbound" && f.Source == src.IP.String() &&
				f.Destination == w1.IP.String() && f.Protocol == "icmp" && f.Port == 8 {
				return &flows[i]
			}
		}
		return nil
	}
	var flows []flow
	// A new kind of denied packet is reported within a second, its count
	// with the status heartbeat (10 s).
	e2etest.WaitFor(t, 30*time.Second, "calicoctl flows --node host1 lists both denied pings, 2 packets each", func() (bool, string) {
		out, err := w.Ctl(ctx, h1, "flows", "--node="+h1.Label, "-o", "json")
		if err != nil {
			return false, err.Error()
		}
		flows = nil
		if err := json.Unmarshal([]byte(out), &flows); err != nil {
			return false, fmt.Sprintf("%v: %q", err, out)
		}
		a, b := find(flows, w2), find(flows, w3)
		return a != nil && b != nil && a.Packets >= 2 && b.Packets >= 2, out
	})
	byDefault, byRule := find(flows, w2), find(flows, w3)
	if byDefault.Profile != "PROF_1" || byDefault.Rule != 0 || byDefault.Packets < 2 ||
		byDefault.DeniedBy != "no inbound rule of profile PROF_1 allows it" {
		t.Errorf("worker-2's pings: %+v; want PROF_1, no rule allowing them, at least 2 packets", *byDefault)
	}
	if byRule.Profile != "PROF_1" || byRule.Rule != 1 || byRule.Packets < 2 ||
		byRule.DeniedBy != "profile PROF_1 inbound rule 1: deny icmp" {
		t.Errorf("worker-3's pings: %+v; want PROF_1 inbound rule 1 (deny icmp), at least 2 packets", *byRule)
	}
	table, err := w.Ctl(ctx, h1, "flows")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table, "profile PROF_1 inbound rule 1: deny icmp") {
		t.Errorf("calicoctl flows table lacks the denying rule:\n%s", table)
	}
	t.Logf("calicoctl flows:\n%s", table)
	t.Logf("FIGURE: flows: worker-2's denied pings (%d) under %q, worker-3's (%d) under %q", byDefault.Packets, byDefault.DeniedBy, byRule.Packets, byRule.DeniedBy)

	// Label policy drops are named too: a Deny rule by policy and number,
	// and the end of the tier when policies apply and none decides.
	h2 := w.Hosts[1]
	file := filepath.Join(t.TempDir(), "w3-out.yaml")
	if err := os.WriteFile(file, []byte(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: w3-out
spec:
  selector: projectcalico.org/workload == 'worker-3'
  types: [Egress]
  egress:
  - action: Deny
    protocol: TCP
    destination: {ports: [8080]}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := w.Ctl(ctx, h1, "apply", "-f", file); err != nil {
		t.Fatalf("apply: %v: %s", err, out)
	}
	e2etest.ListenTCP(t, w1.Netns, "0.0.0.0:8080")
	if err := e2etest.BecomesBlocked(ctx, w3.Netns, e2etest.AP(w1.IP, 8080)); err != nil {
		t.Fatalf("worker-3 -> worker-1:8080 under w3-out: %v", err)
	}
	e2etest.PingReplies(ctx, w3.Netns, netip.Addr{}, w1.IP, 2)
	var denyRule, endOfTier *flow
	e2etest.WaitFor(t, 30*time.Second, "calicoctl flows --node host2 names policy w3-out's rule and its end of tier", func() (bool, string) {
		out, err := w.Ctl(ctx, h2, "flows", "--node="+h2.Label, "-o", "json")
		if err != nil {
			return false, err.Error()
		}
		flows = nil
		if err := json.Unmarshal([]byte(out), &flows); err != nil {
			return false, fmt.Sprintf("%v: %q", err, out)
		}
		denyRule, endOfTier = nil, nil
		for i, f := range flows {
			if f.Workload != "worker-3" || f.Direction != "outbound" || f.Destination != w1.IP.String() {
				continue
			}
			// Pings worker-3 sent before its profile was applied (the
			// first probes of the test) are another, older flow.
			if f.Protocol == "tcp" && f.Port == 8080 && f.Policy != "" {
				denyRule = &flows[i]
			}
			if f.Protocol == "icmp" && f.Port == 8 && strings.HasSuffix(f.DeniedBy, "end of tier") {
				endOfTier = &flows[i]
			}
		}
		return denyRule != nil && endOfTier != nil, out
	})
	if denyRule.Policy != "w3-out" || denyRule.Rule != 1 || !strings.HasPrefix(denyRule.DeniedBy, "policy w3-out outbound rule 1: {action: Deny, protocol: TCP") {
		t.Errorf("worker-3's TCP 8080: %+v; want policy w3-out outbound rule 1", *denyRule)
	}
	if endOfTier.Policy != "" || endOfTier.Rule != 0 || endOfTier.DeniedBy != "label policies w3-out apply and none decided: end of tier" {
		t.Errorf("worker-3's pings: %+v; want the end of the tier", *endOfTier)
	}
	t.Logf("FIGURE: flows: policy drops named %q and %q", denyRule.DeniedBy, endOfTier.DeniedBy)
}
