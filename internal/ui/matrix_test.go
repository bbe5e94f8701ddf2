package ui

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/datastore"
)

// The matrix is client.Model.Why's answer for every ordered pair, with both
// verdicts once PROF_1 lets its members in on icmp only.
func TestMatrixIsWhysAnswers(t *testing.T) {
	recs := sample(t)
	p := api.NewProfile("PROF_1")
	p.Inbound = []api.Rule{{Action: api.ActionAllow, Protocol: "icmp", Src: api.EntityMatch{Tag: "PROF_1"}}}
	recs[datastore.ProfileKey("PROF_1")] = mustJSON(t, p)
	delete(recs, datastore.PolicyKey("a"))
	delete(recs, datastore.PolicyKey("b"))
	delete(recs, datastore.PolicyKey("c"))
	m := client.ModelOf(recs, datastore.Config{})
	mx := buildMatrix(m, 80)
	if strings.Join(mx.Workloads, " ") != "host1/web host2/db" {
		t.Fatalf("workloads %v", mx.Workloads)
	}
	counts := map[string]int{}
	for i, row := range mx.Rows {
		for j, c := range row {
			if c.From != mx.Workloads[i] || c.To != mx.Workloads[j] || c.Self != (i == j) {
				t.Fatalf("cell %d,%d is %+v", i, j, c)
			}
			if c.Self {
				continue
			}
			for _, q := range []struct {
				got Verdict
				req client.WhyRequest
			}{{c.ICMP, client.WhyRequest{Src: c.From, Dst: c.To, Proto: "icmp"}},
				{c.TCP, client.WhyRequest{Src: c.From, Dst: c.To, Proto: "tcp", Port: 80}}} {
				a, err := m.Why(q.req)
				if err != nil {
					t.Fatal(err)
				}
				if q.got.Verdict != a.Verdict || q.got.Err != "" {
					t.Errorf("%+v: cell %+v, Why says %s", q.req, q.got, a.Verdict)
				}
				counts[q.got.Proto+" "+q.got.Verdict]++
				u, err := url.Parse(q.got.Explain)
				if err != nil || u.Path != "why" || u.Query().Get("src") != c.From || u.Query().Get("dst") != c.To {
					t.Errorf("explain link %q", q.got.Explain)
				}
			}
		}
	}
	if got := fmt.Sprint(counts); got != "map[icmp allowed:2 tcp/80 denied:2]" {
		t.Errorf("verdicts %s", got)
	}
}

func TestMatrixIsBounded(t *testing.T) {
	recs := sample(t)
	for i := range MaxMatrix {
		name := fmt.Sprintf("w%d", i)
		recs[datastore.EndpointKey("host1", name)] = mustJSON(t, api.Endpoint{Node: "host1", Workload: name,
			InterfaceName: fmt.Sprintf("cali%011d", i), IPv4Nets: []string{fmt.Sprintf("192.168.100.%d/32", 10+i)}})
	}
	mx := buildMatrix(client.ModelOf(recs, datastore.Config{}), 80)
	if mx.Skipped == "" || len(mx.Rows) != 0 {
		t.Errorf("%d workloads drew a matrix: %q, %d rows", MaxMatrix+2, mx.Skipped, len(mx.Rows))
	}
}

func TestPortChoice(t *testing.T) {
	_, hs := newTestServer(t, sample(t))
	_, body := get(t, hs.URL+"/?port=8080")
	if !strings.Contains(body, `data-port="8080"`) || !strings.Contains(body, `value="8080"`) ||
		!strings.Contains(body, `href="why?dst=host2%2Fdb&amp;port=8080&amp;proto=tcp&amp;src=host1%2Fweb">tcp/8080 `) {
		t.Errorf("the page for port 8080 lacks its matrix:\n%s", body)
	}
	_, body = get(t, hs.URL+"/")
	if !strings.Contains(body, `data-port="80"`) {
		t.Error("the default matrix is not for port 80")
	}
	for _, bad := range []string{"0", "65536", "x", "-1"} {
		if resp, _ := get(t, hs.URL+"/?port="+bad); resp.StatusCode != 400 {
			t.Errorf("port=%s: %d", bad, resp.StatusCode)
		}
		if resp, _ := get(t, hs.URL+"/events?port="+bad); resp.StatusCode != 400 {
			t.Errorf("events port=%s: %d", bad, resp.StatusCode)
		}
	}
}

// The explanation page shows Why's steps, and takes only what names a
// workload of this network, an address or outside: anything else is a 400
// whose echo of the input is text.
func TestWhyPage(t *testing.T) {
	recs := sample(t)
	_, hs := newTestServer(t, recs)
	want, err := client.ModelOf(recs, datastore.Config{}).Why(client.WhyRequest{Src: "host1/web", Dst: "host2/db", Proto: "tcp", Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	resp, body := get(t, hs.URL+"/why?src=host1%2Fweb&dst=host2%2Fdb&proto=tcp&port=80")
	if resp.StatusCode != 200 || !strings.Contains(body, `id="verdict">`+want.Verdict+"<") ||
		strings.Count(body, `class="step"`) != len(want.Steps) || !strings.Contains(body, `href="./?port=80"`) {
		t.Errorf("status %d, want %s in %d steps:\n%s", resp.StatusCode, want.Verdict, len(want.Steps), body)
	}
	for _, q := range []string{"src=outside&dst=host2%2Fdb&proto=icmp", "src=192.168.100.1&dst=10.0.0.2&proto=udp&port=53"} {
		if resp, body := get(t, hs.URL+"/why?"+q); resp.StatusCode != 200 {
			t.Errorf("%s: %d\n%s", q, resp.StatusCode, body)
		}
	}
	for _, q := range []string{
		"src=host1%2Fweb&dst=host9%2Fnone&proto=icmp",
		"src=web&dst=host2%2Fdb&proto=icmp", // a bare name: the matrix links NODE/NAME
		"src=host1%2Fweb&dst=host2%2Fdb&proto=tcp",
		"src=host1%2Fweb&dst=host2%2Fdb&proto=icmp&port=80",
		"src=host1%2Fweb&dst=host2%2Fdb&proto=sctp&port=80",
		"src=%3Cscript%3Ealert(1)%3C%2Fscript%3E&dst=outside&proto=icmp",
	} {
		resp, body := get(t, hs.URL+"/why?"+q)
		if resp.StatusCode != 400 || !strings.Contains(body, `id="why-error"`) || strings.Contains(body, "<script>") {
			t.Errorf("%s: %d\n%s", q, resp.StatusCode, body)
		}
	}
	req, _ := http.NewRequest("POST", hs.URL+"/why?src=outside&dst=outside&proto=icmp", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 405 {
		t.Errorf("POST /why: %v %v", resp, err)
	}
}

// The matrix follows the records: a profile change flips cells.
func TestMatrixFollowsChanges(t *testing.T) {
	s, _ := newTestServer(t, sample(t))
	view, _ := s.current(80)
	if !strings.Contains(string(view), `href="why?dst=host2%2Fdb&amp;port=80&amp;proto=tcp&amp;src=host1%2Fweb">tcp/80 allowed<`) {
		t.Fatalf("web to db on tcp/80 is not allowed at first:\n%s", view)
	}
	p := api.NewProfile("PROF_1")
	p.Inbound = nil
	s.OnUpdate(datastore.ProfileKey("PROF_1"), mustJSON(t, p))
	for _, k := range []string{"a", "b", "c"} {
		s.OnUpdate(datastore.PolicyKey(k), nil)
	}
	s.render()
	view, _ = s.current(80)
	if !strings.Contains(string(view), `href="why?dst=host2%2Fdb&amp;port=80&amp;proto=tcp&amp;src=host1%2Fweb">tcp/80 denied<`) {
		t.Fatalf("web to db on tcp/80 is still allowed:\n%s", view)
	}
}
