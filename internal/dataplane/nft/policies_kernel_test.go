package nft

import (
	"net/netip"
	"regexp"
	"strconv"
	"testing"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
)

// TestKernelLabelPolicy enforces label policies in a namespace host and
// checks packets: order, Allow by selector and port, Log going on, Pass into
// the profiles, the end-of-tier drop, egress, and a selector member added by
// one element edit.
func TestKernelLabelPolicy(t *testing.T) {
	requireKernel(t)
	l := newLab(t)
	w1 := l.addWorkload("w1", "10.65.0.1", "fd00::1")
	w2 := l.addWorkload("w2", "10.65.0.2", "fd00::2")
	w3 := l.addWorkload("w3", "10.65.0.3", "fd00::3")
	for _, w := range []*workload{w1, w2, w3} {
		listen(t, w.ns, ":8080")
		listen(t, w.ns, ":8081")
	}
	none := netip.Addr{}
	h := newHostEnforcer(t, l.host)
	defer h.cleanup()

	// Profiles alone: prof.a (w1, w2) admits its own members, prof.b (w3)
	// its own; everyone may send.
	const profA, profB, front = "prof.a", "prof.b", `app == "front"`
	p := calc.Policy{
		Endpoints: []calc.EndpointPolicy{
			{Interface: w1.iface, Addrs: []netip.Addr{w1.ip4, w1.ip6}, Profiles: []string{profA}, EgressPolicies: []string{"w1-out"}},
			{Interface: w2.iface, Addrs: []netip.Addr{w2.ip4, w2.ip6}, Profiles: []string{profA}, IngressPolicies: []string{"early", "w2-in"}},
			{Interface: w3.iface, Addrs: []netip.Addr{w3.ip4, w3.ip6}, Profiles: []string{profB}},
		},
		Profiles: map[string]api.Profile{profA: api.NewProfile(profA), profB: api.NewProfile(profB)},
		TagMembers: map[string]calc.AddrSet{
			profA: {V4: []netip.Addr{w1.ip4, w2.ip4}, V6: []netip.Addr{w1.ip6, w2.ip6}},
			profB: {V4: []netip.Addr{w3.ip4}, V6: []netip.Addr{w3.ip6}},
		},
		AllPools: []netip.Prefix{netip.MustParsePrefix("10.65.0.0/24"), netip.MustParsePrefix("fd00::/64")},
		Policies: map[string]calc.TierPolicy{
			// Order: "early" runs first and only logs.
			"early": {Ingress: []calc.PolicyRule{{Action: "Log", Protocol: 1}}},
			"w2-in": {Ingress: []calc.PolicyRule{
				{Action: "Allow", Protocol: 6, Src: calc.PolicyEntity{Selector: front}, Dst: calc.PolicyEntity{Ports: []api.PortRange{{Min: 8080, Max: 8080}}}},
				{Action: "Pass", Protocol: 1},
			}},
			"w1-out": {Egress: []calc.PolicyRule{
				{Action: "Deny", Protocol: 6, Dst: calc.PolicyEntity{Ports: []api.PortRange{{Min: 8081, Max: 8081}}}},
				{Action: "Allow"},
			}},
		},
		SelectorMembers: map[string]calc.SelectorMembers{front: {
			V4: []netip.Prefix{netip.PrefixFrom(w1.ip4, 32)}, V6: []netip.Prefix{netip.PrefixFrom(w1.ip6, 128)}}},
	}
	h.apply(p)

	t.Run("policies", func(t *testing.T) {
		expect(t, "w1 -> w2 tcp 8080 (Allow by selector and port)", true, l.tcp(w1.ns, w2.ip4, 8080))
		expect(t, "w1 -> w2 tcp6 8080 (the selector's IPv6 set)", true, l.tcp(w1.ns, w2.ip6, 8080))
		expect(t, "w3 -> w2 tcp 8080 (not selected: end of tier)", false, l.tcp(w3.ns, w2.ip4, 8080))
		expect(t, "w1 -> w2 tcp 8081 (no rule: end of tier, though prof.a would allow)", false, l.tcp(w1.ns, w2.ip4, 8081))
		expect(t, "w1 -> w2 ping (Log, then Pass: prof.a admits w1)", true, l.ping(w1.ns, none, w2.ip4))
		expect(t, "w3 -> w2 ping (Pass: prof.a refuses w3)", false, l.ping(w3.ns, none, w2.ip4))
		expect(t, "w1 -> w3 tcp 8081 (w1's egress Deny)", false, l.tcp(w1.ns, w3.ip4, 8081))
		expect(t, "w2 -> w1 tcp 8081 (no policy either way: profiles)", true, l.tcp(w2.ns, w1.ip4, 8081))
		expect(t, "w3 -> w1 tcp 8080 (no ingress policy on w1: prof.a refuses w3)", false, l.tcp(w3.ns, w1.ip4, 8080))
	})
	t.Run("log counts and goes on", func(t *testing.T) {
		out := h.nft("list", "chain", "inet", TableName, policyInChain("early"))
		m := regexp.MustCompile(`counter packets (\d+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no counter in\n%s", out)
		}
		if n, _ := strconv.Atoi(m[1]); n < 2 { // one ping from w1, at least one from w3
			t.Errorf("Log rule counted %d packets, want the pings of both senders\n%s", n, out)
		}
	})
	t.Run("member joins by one element", func(t *testing.T) {
		p.SelectorMembers = map[string]calc.SelectorMembers{front: {
			V4: []netip.Prefix{netip.PrefixFrom(w1.ip4, 32), netip.PrefixFrom(w3.ip4, 32)},
			V6: p.SelectorMembers[front].V6}}
		st := h.apply(p)
		if st.Full || st.Ops != 1 || st.ElementsAdded != 1 || st.ChainsWritten != 0 {
			t.Errorf("w3 joins the selector: %+v, want one element", st)
		}
		expect(t, "w3 -> w2 tcp 8080 (now selected)", true, l.tcp(w3.ns, w2.ip4, 8080))
		expect(t, "w3 -> w2 tcp6 8080 (its IPv6 address did not join)", false, l.tcp(w3.ns, w2.ip6, 8080))
	})
	t.Run("policies removed: profiles again", func(t *testing.T) {
		p.Policies, p.SelectorMembers = nil, nil
		for i := range p.Endpoints {
			p.Endpoints[i].IngressPolicies, p.Endpoints[i].EgressPolicies = nil, nil
		}
		if st := h.apply(p); st.Full {
			t.Errorf("not incremental: %+v", st)
		}
		expect(t, "w1 -> w2 tcp 8081", true, l.tcp(w1.ns, w2.ip4, 8081))
		expect(t, "w3 -> w2 tcp 8080", false, l.tcp(w3.ns, w2.ip4, 8080))
		if out := h.nft("list", "table", "inet", TableName); regexp.MustCompile(`pol-|eprof-|sel[46]-`).MatchString(out) {
			t.Errorf("policy objects left behind:\n%s", out)
		}
	})
}
