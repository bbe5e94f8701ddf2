package ui

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/resource"
)

var now = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sample is a small datastore: two hosts (one silent for a minute), a pool
// with two blocks, two workloads and a profile.
func sample(t *testing.T) map[string][]byte {
	pol := func(name, selector string, order *float64) []byte {
		return mustJSON(t, resource.GlobalNetworkPolicy{Metadata: resource.ObjectMeta{Name: name},
			Spec: resource.GlobalNetworkPolicySpec{Order: order, Selector: selector, Ingress: []resource.Rule{{Action: "Allow"}}}})
	}
	five, ten := 5.0, 10.0
	ep := func(node, name, ip string, profiles ...string) api.Endpoint {
		return api.Endpoint{Node: node, Workload: name, Orchestrator: "netns", InterfaceName: api.WorkloadIfaceName(node, name),
			IPv4Nets: []string{ip}, Profiles: profiles, Labels: map[string]string{"app": name, api.LabelNode: "forged"}}
	}
	web, db := ep("host1", "web", "192.168.100.1/32", "PROF_1"), ep("host2", "db", "192.168.100.64/32", "PROF_1", "GONE")
	handle := func(ep api.Endpoint) string { return api.EndpointHandles(ep)[0] }
	return map[string][]byte{
		datastore.NodeKey("host1"):              mustJSON(t, api.Node{Name: "host1", IPv4: "10.0.0.1/24"}),
		datastore.NodeKey("host2"):              mustJSON(t, api.Node{Name: "host2", IPv4: "10.0.0.2/24", ASNumber: 64513}),
		datastore.StatusKey("host1"):            mustJSON(t, api.NodeStatus{Node: "host1", Ready: true, Updated: now.Add(-5 * time.Second).Format(time.RFC3339), BGPPeers: []api.PeerState{{IP: "10.0.0.2", ASNumber: 64513, Type: "node-mesh", State: "Established", Received: 1}}}),
		datastore.StatusKey("host2"):            mustJSON(t, api.NodeStatus{Node: "host2", Ready: true, Updated: now.Add(-time.Minute).Format(time.RFC3339)}),
		datastore.PoolKey("192.168.100.0/24"):   mustJSON(t, api.Pool{CIDR: "192.168.100.0/24", BlockSize: 26, VXLANMode: api.EncapAlways}),
		datastore.BlockKey("192.168.100.64/26"): mustJSON(t, api.Block{CIDR: "192.168.100.64/26", Affinity: "host2", Allocations: map[int]string{0: handle(db)}}),
		datastore.BlockKey("192.168.100.0/26"):  mustJSON(t, api.Block{CIDR: "192.168.100.0/26", Affinity: "host1", Allocations: map[int]string{0: "a", 1: handle(web)}}),
		datastore.EndpointKey("host1", "web"):   mustJSON(t, web),
		datastore.EndpointKey("host2", "db"):    mustJSON(t, db),
		datastore.ProfileKey("PROF_1"):          mustJSON(t, api.NewProfile("PROF_1")),
		datastore.PolicyKey("b"):                pol("b", "app == 'web'", &ten),
		datastore.PolicyKey("a"):                pol("a", "", nil),
		datastore.PolicyKey("c"):                pol("c", "has(app)", &five),
		datastore.PrefixHandles + "x":           []byte("not json, and not the view's business"),
	}
}

func TestBuild(t *testing.T) {
	v := build(sample(t), now)
	if len(v.Problems) != 0 {
		t.Errorf("problems: %v", v.Problems)
	}
	if len(v.Hosts) != 2 || v.Hosts[0].State != "ready" || v.Hosts[0].Health != "ok" || v.Hosts[1].State != "down" {
		t.Fatalf("hosts: %+v", v.Hosts)
	}
	if v.Hosts[0].AS != "64512 (default)" || v.Hosts[1].AS != "64513" {
		t.Errorf("AS: %q %q", v.Hosts[0].AS, v.Hosts[1].AS)
	}
	if got := v.Hosts[0].Peers; len(got) != 1 || got[0].State != "Established" {
		t.Errorf("host1 peers: %+v", got)
	}
	if len(v.Pools) != 1 || len(v.Pools[0].Blocks) != 2 || v.Pools[0].Blocks[0].CIDR != "192.168.100.0/26" ||
		v.Pools[0].Blocks[0].Used != 2 || v.Pools[0].Blocks[0].Size != 64 || v.Pools[0].Encap != "VXLAN Always" {
		t.Errorf("pools: %+v", v.Pools)
	}
	if len(v.Workloads) != 2 || v.Workloads[0].ID() != "host1/web" {
		t.Fatalf("workloads: %+v", v.Workloads)
	}
	labels := map[string]string{}
	for _, l := range v.Workloads[0].Labels {
		labels[l.Key] = l.Value
	}
	// The record's own claim to another node is ignored, as selectors ignore it.
	if labels[api.LabelNode] != "host1" || labels["app"] != "web" {
		t.Errorf("labels: %v", labels)
	}
	if p := v.Workloads[1].Profiles; len(p) != 2 || p[0].Missing || !p[1].Missing {
		t.Errorf("db's profiles: %+v", p)
	}
	if len(v.Profiles) != 1 || strings.Join(v.Profiles[0].Members, ",") != "host1/web,host2/db" ||
		len(v.Profiles[0].Inbound) != 1 || v.Profiles[0].Inbound[0] != "allow from tag PROF_1" {
		t.Errorf("profiles: %+v", v.Profiles)
	}
	var pols []string
	for _, p := range v.Policies {
		pols = append(pols, p.Name+" "+p.Order+" "+p.Selector)
	}
	if got := strings.Join(pols, "; "); got != "c 5 has(app); b 10 app == 'web'; a - all()" {
		t.Errorf("policies in order: %s", got)
	}
	if got, want := v.Summary(), "2 hosts (1 ready), 1 pool, 2 workloads, 1 profile, 3 policies"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
}

func TestBuildReportsUnreadableRecords(t *testing.T) {
	recs := sample(t)
	recs[datastore.ProfileKey("BAD")] = []byte("{")
	v := build(recs, now)
	if len(v.Problems) != 1 || !strings.Contains(v.Problems[0], "profile/BAD") {
		t.Errorf("problems: %v", v.Problems)
	}
}

func newTestServer(t *testing.T, recs map[string][]byte) (*Server, *httptest.Server) {
	t.Helper()
	s := New(nil, Options{})
	s.now = func() time.Time { return now }
	s.OnSnapshot(recs)
	s.render()
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	return s, hs
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestPageAndHeaders(t *testing.T) {
	_, hs := newTestServer(t, sample(t))
	resp, body := get(t, hs.URL+"/")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{`data-host="host1" data-state="ready"`, `data-host="host2" data-state="down"`,
		"192.168.100.0/26", `data-workload="host2/db"`, "allow from tag PROF_1", `id="matrix"`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for h, want := range map[string]string{
		"Content-Security-Policy": csp,
		"X-Content-Type-Options":  "nosniff",
		"X-Frame-Options":         "DENY",
		"Cache-Control":           "no-store",
	} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("%s: %q, want %q", h, got, want)
		}
	}
	for _, p := range []string{"/app.js", "/style.css"} {
		if resp, _ := get(t, hs.URL+p); resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") != csp {
			t.Errorf("%s: %d", p, resp.StatusCode)
		}
	}
	if resp, _ := get(t, hs.URL+"/nothing"); resp.StatusCode != 404 {
		t.Errorf("/nothing: %d", resp.StatusCode)
	}
}

// A record is data from anyone who can write the datastore (or a CNI
// config's labels): markup in it must reach the page as text, never as
// markup or script.
func TestHostileRecordIsEscaped(t *testing.T) {
	recs := sample(t)
	evil := `<script>alert(1)</script><img src=x onerror=alert(2)>`
	recs[datastore.EndpointKey("host1", "evil")] = mustJSON(t, api.Endpoint{Node: "host1", Workload: `"><svg onload=alert(3)>`,
		IPv4Nets: []string{"192.168.100.9/32"}, Labels: map[string]string{"note": evil}, Profiles: []string{evil}})
	// One stored under its own hostile name, so the agents' decoder takes
	// it and the matrix and its links carry the name.
	named := `<img src=x onerror=alert(4)>`
	recs[datastore.EndpointKey("host1", named)] = mustJSON(t, api.Endpoint{Node: "host1", Workload: named,
		InterfaceName: api.WorkloadIfaceName("host1", named), IPv4Nets: []string{"192.168.100.10/32"}})
	s, hs := newTestServer(t, recs)
	_, body := get(t, hs.URL+"/")
	if !strings.Contains(body, `<th>host1/&lt;img src=x onerror=alert(4)&gt;</th>`) ||
		!strings.Contains(body, `href="why?dst=host1%2F%3Cimg&#43;src%3Dx&#43;onerror%3Dalert%284%29%3E&amp;proto=icmp&amp;src=host1%2Fweb"`) {
		t.Errorf("the matrix lacks the hostile workload, as text:\n%s", body)
	}
	_, why := get(t, hs.URL+"/why?dst=host1%2F%3Cimg+src%3Dx+onerror%3Dalert%284%29%3E&proto=icmp&src=host1%2Fweb")
	if !strings.Contains(why, "host1/&lt;img src=x onerror=alert(4)&gt;") {
		t.Errorf("the explanation lacks the hostile workload, as text:\n%s", why)
	}
	for _, bad := range []string{"<script>alert", "<img src=x", "<svg onload"} {
		if strings.Contains(body, bad) || strings.Contains(why, bad) {
			t.Errorf("page carries %q unescaped", bad)
		}
	}
	if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("the hostile label is not shown as text")
	}
	// The stream carries the same escaped fragment.
	view, _ := s.current(DefaultPort)
	if strings.Contains(string(view), "<script>alert") {
		t.Error("the event stream's view carries the script")
	}
}

func TestRefusesWritesAndForeignHosts(t *testing.T) {
	_, hs := newTestServer(t, sample(t))
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH"} {
		req, _ := http.NewRequest(m, hs.URL+"/", strings.NewReader("x"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s: %d, want 405", m, resp.StatusCode)
		}
	}
	// A DNS-rebinding page reaches 127.0.0.1 under its own name.
	req, _ := http.NewRequest("GET", hs.URL+"/", nil)
	req.Host = "attacker.example:9099"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("foreign Host: %d, want 421", resp.StatusCode)
	}
	for _, host := range []string{"localhost:9099", "127.0.0.1", "[::1]:9099"} {
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("Host %s: %d", host, resp.StatusCode)
		}
	}
}

func TestEventsFollowChanges(t *testing.T) {
	s, hs := newTestServer(t, sample(t))
	resp, err := http.Get(hs.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	events := make(chan string)
	go func() {
		r := bufio.NewReader(resp.Body)
		var ev strings.Builder
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				close(events)
				return
			}
			if line == "\n" {
				events <- ev.String()
				ev.Reset()
				continue
			}
			ev.WriteString(line)
		}
	}()
	next := func() string {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatal("stream ended")
			}
			return e
		case <-time.After(5 * time.Second):
			t.Fatal("no event")
		}
		return ""
	}
	if first := next(); !strings.HasPrefix(first, "event: view\ndata: ") || !strings.Contains(first, "allow from tag PROF_1") {
		t.Fatalf("first event: %.200q", first)
	}
	p := api.NewProfile("PROF_1")
	p.Inbound = append(p.Inbound, api.Rule{Action: api.ActionAllow, Protocol: "tcp", Dst: api.EntityMatch{Ports: []api.PortRange{{Min: 8080, Max: 8080}}}})
	s.OnUpdate(datastore.ProfileKey("PROF_1"), mustJSON(t, p))
	s.render()
	if e := next(); !strings.Contains(e, "allow tcp to ports 8080") {
		t.Fatalf("update event lacks the new rule: %.300q", e)
	}
}

func TestEventFraming(t *testing.T) {
	got := string(event("view", []byte("a\r\nb\n\nc")))
	if want := "event: view\ndata: a\ndata: b\ndata: \ndata: c\n\n"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}

// Event streams are bounded: past maxStreams a new one is refused, and
// closing one makes room again.
func TestStreamsAreBounded(t *testing.T) {
	_, hs := newTestServer(t, sample(t))
	var open []*http.Response
	t.Cleanup(func() {
		for _, r := range open {
			r.Body.Close()
		}
	})
	openStream := func() *http.Response {
		resp, err := http.Get(hs.URL + "/events")
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for range maxStreams {
		resp := openStream()
		if resp.StatusCode != 200 {
			t.Fatalf("stream %d refused: %d", len(open)+1, resp.StatusCode)
		}
		open = append(open, resp)
	}
	if resp := openStream(); resp.StatusCode != http.StatusServiceUnavailable {
		resp.Body.Close()
		t.Fatalf("stream %d: %d, want 503", maxStreams+1, resp.StatusCode)
	} else {
		resp.Body.Close()
	}
	open[0].Body.Close()
	open = open[1:]
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp := openStream()
		if resp.StatusCode == 200 {
			open = append(open, resp)
			return
		}
		resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatal("a closed stream did not make room for a new one")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
