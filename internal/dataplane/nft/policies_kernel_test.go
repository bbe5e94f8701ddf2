package nft

import (
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

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
				{Action: "Allow", Protocol: 17, Src: calc.PolicyEntity{Selector: front}},
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
	t.Run("attack: a workload sending from a selected workload's address", func(t *testing.T) {
		// w3 takes w1's address (front) and sends w2 a datagram that
		// front-only rules would allow: the anti-spoofing check drops it
		// before any policy runs, while w1's own datagram gets through.
		got := udpEcho(t, w2.ns, ":9999")
		sh(t, "ip", "-n", w3.ns, "addr", "add", w1.ip4.String()+"/32", "dev", "eth0")
		dst := netip.AddrPortFrom(w2.ip4, 9999)
		if err := udpSend(w3.ns, netip.AddrPortFrom(w1.ip4, 0), dst, "forged", 0); err != nil {
			t.Fatal(err)
		}
		if err := udpSend(w1.ns, netip.AddrPortFrom(w1.ip4, 0), dst, "honest", reachTimeout); err != nil {
			t.Errorf("w1 -> w2 udp 9999 (front): %v", err)
		}
		time.Sleep(blockedTimeout)
		for done := false; !done; {
			select {
			case payload := <-got:
				if payload == "forged" {
					t.Error("w3's datagram from w1's address reached w2")
				}
			default:
				done = true
			}
		}
		sh(t, "ip", "-n", w3.ns, "addr", "del", w1.ip4.String()+"/32", "dev", "eth0")
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
	t.Run("endpoint with policies goes and comes back", func(t *testing.T) {
		// Its endpoint chains, profile stage and pass entry go in one
		// transaction, with the chains of the policies only it used
		// ("early", "w2-in"), each after what refers to it: the kernel
		// refuses any other order.
		q := p
		q.Endpoints = slices.DeleteFunc(slices.Clone(p.Endpoints), func(e calc.EndpointPolicy) bool { return e.Interface == w2.iface })
		if st := h.apply(q); st.Full || st.ChainsDeleted != 5 {
			t.Errorf("w2 removed: %+v, want its ep-in, ep-out, eprof-in and two policy chains deleted incrementally", st)
		}
		if st := h.apply(p); st.Full {
			t.Errorf("w2 back: %+v", st)
		}
		expect(t, "w1 -> w2 tcp 8080 (back, selected again)", true, l.tcp(w1.ns, w2.ip4, 8080))
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

// TestKernelLabelPolicyScale: the scale target in the kernel: 1000
// endpoints, 200 policies, 50 selectors programmed from cold, then one
// label change (times logged as FIGUREs, op counts asserted).
func TestKernelLabelPolicyScale(t *testing.T) {
	requireKernel(t)
	if testing.Short() {
		t.Skip("short")
	}
	ns := runID(t) + "-s"
	addNetns(t, ns)
	h := newHostEnforcer(t, ns)
	p := withLabelPolicies(genPolicy(1000, 100), 200)

	start := time.Now()
	st := h.apply(p)
	t.Logf("FIGURE: cold start, 1000 endpoints / 100 profiles / 200 policies / 50 selectors: %v (%d nft operations)", time.Since(start), st.Ops)

	// Endpoint 7 goes from app=a7 to app=a8: its address moves between
	// two sets and its inbound chain jumps to other policies. No policy
	// chain is touched.
	var times []time.Duration
	for i, app := range []int{8, 7, 8, 7, 8} {
		p = relabel(p, 7, app, 200)
		start = time.Now()
		st = h.apply(p)
		times = append(times, time.Since(start).Round(time.Millisecond))
		if st.Full || st.ChainsWritten != 1 || st.ElementsAdded != 1 || st.ElementsDeleted != 1 {
			t.Errorf("label change %d: %+v, want its chain and one element moved", i, st)
		}
	}
	slices.Sort(times)
	t.Logf("FIGURE: one label change at that scale: %d nft operations, median %v, all %v", st.Ops, times[len(times)/2], times)
}

// TestKernelPolicyNameNotSyntax: a label policy whose name holds what nft
// reads as syntax inside a log prefix ("$x" is a variable there) and whose
// rules log and deny. The table is still written (before logPrefix
// replaced "$", nft refused the whole transaction: "unknown identifier",
// so no endpoint on the host got any policy change), the Deny holds, and
// honest traffic flows.
func TestKernelPolicyNameNotSyntax(t *testing.T) {
	requireKernel(t)
	l := newLab(t)
	w1 := l.addWorkload("w1", "10.65.0.1", "fd00::1")
	w2 := l.addWorkload("w2", "10.65.0.2", "fd00::2")
	listen(t, w2.ns, ":8080")
	listen(t, w2.ns, ":8081")
	none := netip.Addr{}
	h := newHostEnforcer(t, l.host)
	defer h.cleanup()

	const prof, hostile = "prof.a", "audit$x;#{}@`'"
	p := calc.Policy{
		Endpoints: []calc.EndpointPolicy{
			{Interface: w1.iface, Addrs: []netip.Addr{w1.ip4, w1.ip6}, Profiles: []string{prof}},
			{Interface: w2.iface, Addrs: []netip.Addr{w2.ip4, w2.ip6}, Profiles: []string{prof}, IngressPolicies: []string{hostile}},
		},
		Profiles: map[string]api.Profile{prof: api.NewProfile(prof)},
		TagMembers: map[string]calc.AddrSet{
			prof: {V4: []netip.Addr{w1.ip4, w2.ip4}, V6: []netip.Addr{w1.ip6, w2.ip6}},
		},
		AllPools: []netip.Prefix{netip.MustParsePrefix("10.65.0.0/24"), netip.MustParsePrefix("fd00::/64")},
		Policies: map[string]calc.TierPolicy{
			hostile: {Ingress: []calc.PolicyRule{
				{Action: "Log"},
				{Action: "Deny", Protocol: 6, Dst: calc.PolicyEntity{Ports: []api.PortRange{{Min: 8081, Max: 8081}}}},
				{Action: "Pass"},
			}},
		},
	}
	h.apply(p) // fatal if nft refuses the table
	expect(t, "w1 -> w2 ping (Log, then Pass: the profile admits w1)", true, l.ping(w1.ns, none, w2.ip4))
	expect(t, "w1 -> w2 tcp 8080 (Pass)", true, l.tcp(w1.ns, w2.ip4, 8080))
	expect(t, "w1 -> w2 tcp 8081 (the policy's Deny)", false, l.tcp(w1.ns, w2.ip4, 8081))
	if out := h.nft("list", "chain", "inet", TableName, policyInChain(hostile)); !regexp.MustCompile(`log prefix "calico-pol audit_x;#\{\}@`).MatchString(out) {
		t.Errorf("the Log rule's prefix is not the policy's name with \"$\" replaced:\n%s", out)
	}
}
