package nft

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
)

func TestDropNames(t *testing.T) {
	p := calc.Policy{
		Endpoints: []calc.EndpointPolicy{{Interface: "cali1", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Profiles: []string{"db:main"}}},
		Profiles:  map[string]api.Profile{"db:main": {Name: "db:main"}},
	}
	d := NewDropNames(p)
	for prefix, want := range map[string]DropSource{
		dropPrefix + profileInChain("db:main") + ":3":  {Direction: "inbound", Profile: "db:main", Rule: 3},
		dropPrefix + profileOutChain("db:main") + ":1": {Direction: "outbound", Profile: "db:main", Rule: 1},
		dropPrefix + endpointInChain("cali1") + ":0":   {Direction: "inbound", Endpoint: "cali1"},
	} {
		if got, ok := d.Source(prefix); !ok || got != want {
			t.Errorf("Source(%q) = %+v, %v; want %+v", prefix, got, ok, want)
		}
	}
	for _, bad := range []string{"", "calico-drop:", dropPrefix + profileInChain("other") + ":1",
		dropPrefix + profileInChain("db:main") + ":x", dropPrefix + profileInChain("db:main") + ":-1", "other:" + profileInChain("db:main") + ":1"} {
		if s, ok := d.Source(bad); ok {
			t.Errorf("Source(%q) = %+v, want none", bad, s)
		}
	}
	// The prefix a rendered rule carries is one Source understands.
	_, rest, _ := strings.Cut(dropStatement(profileInChain("db:main"), 2), `prefix "`)
	prefix, _, _ := strings.Cut(rest, `"`)
	if got, ok := d.Source(prefix); !ok || got != (DropSource{Direction: "inbound", Profile: "db:main", Rule: 2}) {
		t.Errorf("rendered prefix %q: got %+v, %v", prefix, got, ok)
	}
}

// The counters of a rule the kernel rewrote (new handle, back at zero) add
// to the running total; two nft rules of one profile rule (IPv4, IPv6) add up.
func TestDropCounterRewrites(t *testing.T) {
	js := func(s string) map[ruleID]Count {
		t.Helper()
		m, err := parseDropCounters([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	rule := func(handle, packets int, prefix string) string {
		return `{"rule": {"family": "inet", "table": "calico", "chain": "c", "handle": ` + strconv.Itoa(handle) +
			`, "expr": [{"match": {}}, {"counter": {"packets": ` + strconv.Itoa(packets) + `, "bytes": ` + strconv.Itoa(packets*100) +
			`}}, {"log": {"prefix": "` + prefix + `", "group": 3233}}, {"drop": null}]}}`
	}
	doc := func(rules ...string) string {
		out := `{"nftables": [{"metainfo": {}}, {"rule": {"handle": 1, "expr": [{"accept": null}]}}`
		for _, r := range rules {
			out += ", " + r
		}
		return out + "]}"
	}
	a, b := dropPrefix+"prof-in-a:1", dropPrefix+"ep-in-x:0"
	c := NewDropCounter()
	got := map[string]Count{}
	for _, d := range []string{
		doc(rule(10, 5, a), rule(11, 2, a), rule(12, 1, b)),
		doc(rule(10, 9, a), rule(11, 2, a), rule(12, 1, b)),
		// The chain of a was rewritten: new handles, counters from zero,
		// and fewer packets than before the rewrite.
		doc(rule(20, 3, a), rule(21, 0, a), rule(12, 4, b)),
	} {
		for prefix, n := range c.grown(js(d)) {
			t := got[prefix]
			t.Packets += n.Packets
			t.Bytes += n.Bytes
			got[prefix] = t
		}
	}
	if got[a] != (Count{Packets: 14, Bytes: 1400}) || got[b] != (Count{Packets: 4, Bytes: 400}) {
		t.Errorf("totals %v: want %s 14 packets, %s 4", got, a, b)
	}
	if _, err := parseDropCounters([]byte("not json")); err == nil {
		t.Error("bad JSON accepted")
	}
}
