package nft

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
)

// hostEnforcer runs an Enforcer inside the lab's host namespace: every nft
// process it starts is started from a thread in that namespace.
type hostEnforcer struct {
	t  testing.TB
	ns string
	e  *Enforcer
}

func newHostEnforcer(t testing.TB, ns string) *hostEnforcer {
	t.Helper()
	h := &hostEnforcer{t: t, ns: ns}
	if err := runIn(ns, func() (err error) {
		h.e, err = New()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *hostEnforcer) apply(p calc.Policy) Stats {
	h.t.Helper()
	var st Stats
	if err := runIn(h.ns, func() (err error) {
		st, err = h.e.Apply(p)
		return err
	}); err != nil {
		h.t.Fatalf("Apply: %v", err)
	}
	if len(st.Problems) > 0 {
		h.t.Errorf("problems: %q", st.Problems)
	}
	return st
}

func (h *hostEnforcer) cleanup() {
	h.t.Helper()
	if err := runIn(h.ns, h.e.Cleanup); err != nil {
		h.t.Fatal(err)
	}
}

func (h *hostEnforcer) nft(args ...string) string {
	h.t.Helper()
	return sh(h.t, append([]string{"ip", "netns", "exec", h.ns, "nft"}, args...)...)
}

func TestKernelPolicy(t *testing.T) {
	requireKernel(t)
	l := newLab(t)
	w1 := l.addWorkload("w1", "10.65.0.1", "fd00::1")
	w2 := l.addWorkload("w2", "10.65.0.2", "fd00::2")
	w3 := l.addWorkload("w3", "10.65.0.3", "fd00::3")
	// A workload interface that no endpoint names (one being set up or
	// torn down): an attacker behind it has no policy at all.
	w4 := l.addWorkload("w4", "10.65.0.4", "fd00::4")
	// A second address on w1 for the spoofing test, routed back to w1 so
	// that only anti-spoofing can stop it.
	spoof := netip.MustParseAddr("10.65.0.99")
	sh(t, "ip", "-n", w1.ns, "addr", "add", "10.65.0.99/32", "dev", "eth0")
	sh(t, "ip", "-n", l.host, "route", "add", "10.65.0.99/32", "dev", w1.iface)

	peers := map[*workload]<-chan netip.Addr{}
	for _, w := range []*workload{w1, w2, w3} {
		listen(t, w.ns, ":8080")
		peers[w] = listen(t, w.ns, ":8081")
	}
	listen(t, l.host, ":22")
	outsidePeers := listen(t, l.outside, "172.31.0.2:80")
	none := netip.Addr{}

	// Somebody else's table, which we must never touch.
	sh(t, "ip", "netns", "exec", l.host, "nft", "add table inet other; add chain inet other c { type filter hook forward priority 10 ; }")

	// Without our table the wiring lets everything through (except the
	// outside, which cannot route back): every block below is our policy.
	t.Run("baseline", func(t *testing.T) {
		expect(t, "w1 -> w2 ping", true, l.ping(w1.ns, none, w2.ip4))
		expect(t, "w1 -> w3 tcp", true, l.tcp(w1.ns, w3.ip4, 8080))
		expect(t, "w1 -> w2 ping6", true, l.ping(w1.ns, none, w2.ip6))
		expect(t, "w1 (spoofed) -> w2 ping", true, l.ping(w1.ns, spoof, w2.ip4))
		expect(t, "w1 -> host tcp", true, l.tcp(w1.ns, l.hostIP, 22))
		expect(t, "w1 -> outside tcp (no route back)", false, l.tcp(w1.ns, l.outsideIP, 80))
	})
	if t.Failed() {
		t.FailNow()
	}

	h := newHostEnforcer(t, l.host)
	profA, profB := "prof.a", "prof:b"
	base := func() calc.Policy {
		return calc.Policy{
			Endpoints: []calc.EndpointPolicy{
				{Interface: w1.iface, Addrs: []netip.Addr{w1.ip4, w1.ip6}, Profiles: []string{profA}},
				{Interface: w2.iface, Addrs: []netip.Addr{w2.ip4, w2.ip6}, Profiles: []string{profA}},
				{Interface: w3.iface, Addrs: []netip.Addr{w3.ip4, w3.ip6}, Profiles: []string{profB}},
			},
			Profiles: map[string]api.Profile{profA: api.NewProfile(profA), profB: api.NewProfile(profB)},
			TagMembers: map[string]calc.AddrSet{
				// The spoofed address is a (remote) member of prof.a, so
				// w2's inbound policy would accept it: only anti-spoofing
				// stands in the way.
				profA: {V4: []netip.Addr{w1.ip4, w2.ip4, spoof}, V6: []netip.Addr{w1.ip6, w2.ip6}},
				profB: {V4: []netip.Addr{w3.ip4}, V6: []netip.Addr{w3.ip6}},
			},
			AllPools: []netip.Prefix{netip.MustParsePrefix("10.65.0.0/24"), netip.MustParsePrefix("fd00::/64")},
		}
	}
	p := base()
	start := time.Now()
	st := h.apply(p)
	t.Logf("first Apply (full): %d ops in %v", st.Ops, time.Since(start))
	if !st.Full {
		t.Errorf("first Apply not full: %+v", st)
	}

	t.Run("profiles", func(t *testing.T) {
		expect(t, "w1 -> w2 ping (same profile)", true, l.ping(w1.ns, none, w2.ip4))
		expect(t, "w1 -> w2 tcp", true, l.tcp(w1.ns, w2.ip4, 8080))
		expect(t, "w2 -> w1 tcp", true, l.tcp(w2.ns, w1.ip4, 8080))
		expect(t, "w1 -> w2 ping6 (same profile, needs ND to the host)", true, l.ping(w1.ns, none, w2.ip6))
		expect(t, "w1 -> w2 tcp6", true, l.tcp(w1.ns, w2.ip6, 8080))
		expect(t, "w1 -> w3 ping (other profile)", false, l.ping(w1.ns, none, w3.ip4))
		expect(t, "w1 -> w3 tcp", false, l.tcp(w1.ns, w3.ip4, 8080))
		expect(t, "w3 -> w1 tcp", false, l.tcp(w3.ns, w1.ip4, 8080))
		expect(t, "w1 -> w3 ping6", false, l.ping(w1.ns, none, w3.ip6))
	})
	t.Run("anti-spoofing", func(t *testing.T) {
		expect(t, "w1 (own address) -> w2 ping", true, l.ping(w1.ns, w1.ip4, w2.ip4))
		expect(t, "w1 (spoofed) -> w2 ping", false, l.ping(w1.ns, spoof, w2.ip4))
	})
	// An endpoint going and coming back is an incremental change: its
	// dispatch entries are deleted, then added in the "add map" form
	// (cacheFree); without them the interface's traffic is dropped.
	t.Run("endpoint leaves and comes back", func(t *testing.T) {
		q := p
		q.Endpoints = slices.Delete(slices.Clone(p.Endpoints), 1, 2) // w2
		if st := h.apply(q); st.Full || st.ElementsDeleted == 0 {
			t.Errorf("endpoint removed: %+v", st)
		}
		expect(t, "w1 -> w2 tcp (w2 has no dispatch entry)", false, l.tcp(w1.ns, w2.ip4, 8080))
		expect(t, "w2 -> w1 tcp", false, l.tcp(w2.ns, w1.ip4, 8080))
		if st := h.apply(p); st.Full || st.ElementsAdded == 0 {
			t.Errorf("endpoint added back: %+v", st)
		}
		for _, m := range []string{mapFromWl, mapToWl} {
			if out := h.nft("list", "map", "inet", TableName, m); !strings.Contains(out, `"`+w2.iface+`"`) {
				t.Errorf("map %s lacks %s:\n%s", m, w2.iface, out)
			}
		}
		expect(t, "w1 -> w2 tcp (back)", true, l.tcp(w1.ns, w2.ip4, 8080))
		expect(t, "w2 -> w1 tcp (back)", true, l.tcp(w2.ns, w1.ip4, 8080))
		expect(t, "w1 -> w3 tcp (other profile)", false, l.tcp(w1.ns, w3.ip4, 8080))
	})
	t.Run("spoofed packet inside an established flow", func(t *testing.T) {
		// w2 and w1 (same profile) have a UDP flow; w3 forges w2's address
		// and port. Conntrack sees it as part of the established flow, which
		// the forward chains accept first: only the prerouting check stops it.
		got := udpEcho(t, w1.ns, "10.65.0.1:7777")
		flow, forged := netip.MustParseAddrPort("10.65.0.2:5555"), netip.MustParseAddrPort("10.65.0.1:7777")
		if err := udpSend(w2.ns, flow, forged, "real", reachTimeout); err != nil {
			t.Fatalf("w2 -> w1 udp flow: %v", err)
		}
		sh(t, "ip", "-n", w3.ns, "addr", "add", "10.65.0.2/32", "dev", "eth0")
		defer sh(t, "ip", "-n", w3.ns, "addr", "del", "10.65.0.2/32", "dev", "eth0")
		injected := func() bool { return injectForged(got, w3.ns, flow, forged) }
		if injected() {
			t.Error("w3 injected a datagram into w2's established flow to w1 with a forged source")
		}
		// Without the anti-spoofing chain the same datagram gets through:
		// the check above can fail.
		h.nft("flush", "chain", "inet", TableName, chainSource)
		if !injected() {
			t.Error("with the anti-spoofing chain flushed, the forged datagram still did not arrive; the test proves nothing")
		}
		h.e.Resync()
		h.apply(p)
		if injected() {
			t.Error("after the rewrite, the forged datagram got through again")
		}
	})
	t.Run("spoofed packet from an interface without an endpoint", func(t *testing.T) {
		// As above, but the forger is behind a "cali*" interface that no
		// endpoint names. The check must cover every workload interface,
		// not only the endpoints': a check bound to the endpoints'
		// interfaces (an ingress chain listing them: issue 19.1's
		// candidate a) lets this datagram into the flow, since the
		// forward chains accept established traffic before the "cali*"
		// catch-all drop, and rp_filter would only act after conntrack.
		got := udpEcho(t, w1.ns, "10.65.0.1:7778")
		flow, dst := netip.MustParseAddrPort("10.65.0.2:5556"), netip.MustParseAddrPort("10.65.0.1:7778")
		if err := udpSend(w2.ns, flow, dst, "real", reachTimeout); err != nil {
			t.Fatalf("w2 -> w1 udp flow: %v", err)
		}
		sh(t, "ip", "-n", w4.ns, "addr", "add", "10.65.0.2/32", "dev", "eth0")
		defer sh(t, "ip", "-n", w4.ns, "addr", "del", "10.65.0.2/32", "dev", "eth0")
		injected := func() bool { return injectForged(got, w4.ns, flow, dst) }
		if injected() {
			t.Error("w4 (no endpoint) injected a datagram into w2's established flow to w1")
		}
		expect(t, "w4 (no endpoint, own address) -> w1 ping", false, l.ping(w4.ns, w4.ip4, w1.ip4))
		// The same check moved to an ingress chain on the endpoints'
		// interfaces: w4's datagram gets through.
		h.nft("flush chain inet " + TableName + " " + chainSource + "; delete chain inet " + TableName + " " + chainSource +
			"; add chain inet " + TableName + " t-ingress { type filter hook ingress devices = { " +
			strings.Join([]string{quoteIface(w1.iface), quoteIface(w2.iface), quoteIface(w3.iface)}, ", ") + " } priority -500 ; }" +
			"; add rule inet " + TableName + " t-ingress iifname . ip saddr @" + setWlSrc4 + " accept" +
			"; add rule inet " + TableName + " t-ingress drop")
		if !injected() {
			t.Error("with the check bound to the endpoints' interfaces only, w4's forged datagram still did not arrive; the test proves nothing")
		}
		h.e.Resync()
		h.apply(p)
		if injected() {
			t.Error("after the rewrite, w4's forged datagram got through again")
		}
	})
	t.Run("host", func(t *testing.T) {
		expect(t, "w1 -> host tcp", false, l.tcp(w1.ns, l.hostIP, 22))
		expect(t, "w1 -> host ping", false, l.ping(w1.ns, none, l.hostIP))
	})
	t.Run("host access by policy", func(t *testing.T) {
		// profB denies ssh outbound; profA allows everything outbound.
		q := base()
		q.Profiles[profB] = api.Profile{Name: profB, Tags: []string{profB},
			Inbound: []api.Rule{{Action: "allow", Src: api.EntityMatch{Tag: profB}}},
			Outbound: []api.Rule{
				{Action: "deny", Protocol: "tcp", Dst: api.EntityMatch{Ports: []api.PortRange{{Min: 22, Max: 22}}}},
				{Action: "allow"},
			},
		}
		h.e.SetHostAccess(HostAccessPolicy)
		if st := h.apply(q); !st.Full {
			t.Errorf("changing host access did not rewrite the table: %+v", st)
		}
		expect(t, "w1 -> host tcp (profile allows all outbound)", true, l.tcp(w1.ns, l.hostIP, 22))
		expect(t, "w3 -> host tcp 22 (profile denies it)", false, l.tcp(w3.ns, l.hostIP, 22))
		expect(t, "w3 -> host ping (profile allows it)", true, l.ping(w3.ns, none, l.hostIP))
		expect(t, "w1 (spoofed) -> host ping", false, l.ping(w1.ns, spoof, l.hostIP))
		h.e.SetHostAccess(HostAccessDrop)
		h.apply(p)
		expect(t, "w1 -> host tcp (back to drop)", false, l.tcp(w1.ns, l.hostIP, 22))
	})

	t.Run("deny first", func(t *testing.T) {
		p = base()
		p.Profiles[profA] = api.Profile{Name: profA, Tags: []string{profA},
			Inbound: []api.Rule{
				{Action: "deny", Protocol: "tcp", Dst: api.EntityMatch{Ports: []api.PortRange{{Min: 8080, Max: 8080}}}},
				{Action: "allow", Src: api.EntityMatch{Tag: profA}},
			},
			Outbound: []api.Rule{{Action: "allow"}},
		}
		st := h.apply(p)
		if st.Full || st.ChainsWritten != 1 {
			t.Errorf("one profile changed: %+v", st)
		}
		expect(t, "w1 -> w2 tcp 8080 (denied first)", false, l.tcp(w1.ns, w2.ip4, 8080))
		expect(t, "w1 -> w2 tcp 8081", true, l.tcp(w1.ns, w2.ip4, 8081))
		expect(t, "w1 -> w2 ping", true, l.ping(w1.ns, none, w2.ip4))
	})

	t.Run("tag member", func(t *testing.T) {
		p = base()
		pb := p.Profiles[profB]
		pb.Inbound = append(pb.Inbound, api.Rule{Action: "allow", Protocol: "tcp", Src: api.EntityMatch{Tag: "extra"}})
		p.Profiles[profB] = pb
		h.apply(p)
		expect(t, "w1 -> w3 tcp (tag empty)", false, l.tcp(w1.ns, w3.ip4, 8080))

		p.TagMembers["extra"] = calc.AddrSet{V4: []netip.Addr{w1.ip4}}
		st := h.apply(p)
		if st.Ops != 1 || st.ElementsAdded != 1 || st.ChainsWritten != 0 {
			t.Errorf("tag member added: %+v, want one element and no rule", st)
		}
		expect(t, "w1 -> w3 tcp (w1 in tag)", true, l.tcp(w1.ns, w3.ip4, 8080))
		expect(t, "w2 -> w3 tcp (w2 not in tag)", false, l.tcp(w2.ns, w3.ip4, 8080))
		expect(t, "w1 -> w3 ping (rule is tcp only)", false, l.ping(w1.ns, none, w3.ip4))
	})

	t.Run("no profile", func(t *testing.T) {
		p.Endpoints[2].Profiles = nil
		h.apply(p)
		expect(t, "w1 -> w3 tcp", false, l.tcp(w1.ns, w3.ip4, 8080))
		expect(t, "w3 -> w1 tcp", false, l.tcp(w3.ns, w1.ip4, 8080))
		expect(t, "w3 -> w2 ping", false, l.ping(w3.ns, none, w2.ip4))
		expect(t, "w3 -> w1 ping6", false, l.ping(w3.ns, none, w1.ip6))
	})

	t.Run("nat outgoing", func(t *testing.T) {
		expect(t, "w1 -> outside tcp without nat", false, l.tcp(w1.ns, l.outsideIP, 80))
		p.MasqueradePools = []netip.Prefix{netip.MustParsePrefix("10.65.0.0/24")}
		st := h.apply(p)
		if st.Full || st.ElementsAdded != 1 {
			t.Errorf("masquerade pool added: %+v", st)
		}
		for len(outsidePeers) > 0 {
			<-outsidePeers
		}
		expect(t, "w1 -> outside tcp with nat", true, l.tcp(w1.ns, l.outsideIP, 80))
		select {
		case a := <-outsidePeers:
			if a != l.hostIP {
				t.Errorf("outside saw %v, want the host's address %v", a, l.hostIP)
			}
		case <-time.After(time.Second):
			t.Error("outside saw no connection")
		}
		for len(peers[w1]) > 0 {
			<-peers[w1]
		}
		expect(t, "w2 -> w1 tcp 8081 (inside the pool: not masqueraded)", true, l.tcp(w2.ns, w1.ip4, 8081))
		select {
		case a := <-peers[w1]:
			if a != w2.ip4 {
				t.Errorf("w1 saw %v, want w2's own address %v", a, w2.ip4)
			}
		case <-time.After(time.Second):
			t.Error("w1 saw no connection")
		}
		expect(t, "w3 (no profile) -> outside", false, l.tcp(w3.ns, l.outsideIP, 80))

		p.MasqueradePools = nil
		h.apply(p)
		expect(t, "w1 -> outside tcp after nat removed", false, l.tcp(w1.ns, l.outsideIP, 80))
	})

	t.Run("resync", func(t *testing.T) {
		// Nothing committed since our last write: the resync writes nothing.
		writes := h.e.Writes()
		h.e.Resync()
		st := h.apply(p)
		if st.Full || st.ResyncRewrite || st.Ops != 0 || h.e.Writes() != writes {
			t.Errorf("Apply after Resync without drift: %+v, %d nft transactions", st, h.e.Writes()-writes)
		}
		expect(t, "w1 -> w2 tcp 8081 after resync", true, l.tcp(w1.ns, w2.ip4, 8081))
		expect(t, "w1 -> w3 tcp after resync", false, l.tcp(w1.ns, w3.ip4, 8080))
		if st := h.apply(p); st.Ops != 0 {
			t.Errorf("unchanged Apply: %+v", st)
		}
	})

	// Drift made by hand, with the policy unchanged (so no incremental
	// transaction fails to reveal it): the next resync repairs it.
	resyncRepairs := func(t *testing.T) {
		t.Helper()
		h.e.Resync()
		if st := h.apply(p); !st.Full || !st.ResyncRewrite {
			t.Errorf("Apply after Resync with drift: %+v", st)
		}
	}
	t.Run("resync repairs a deleted rule", func(t *testing.T) {
		// The anti-spoofing chain's final drop, deleted by its handle.
		out := h.nft("-a", "list", "chain", "inet", TableName, chainSource)
		handle := ""
		for _, line := range strings.Split(out, "\n") {
			if rule, hd, ok := strings.Cut(strings.TrimSpace(line), " # handle "); ok && rule == "drop" {
				handle = hd
			}
		}
		if handle == "" {
			t.Fatalf("no final drop in %s:\n%s", chainSource, out)
		}
		h.nft("delete", "rule", "inet", TableName, chainSource, "handle", handle)
		expect(t, "w1 (spoofed) -> w2 ping with the rule deleted", true, l.ping(w1.ns, spoof, w2.ip4))
		if st := h.apply(p); st.Ops != 0 {
			t.Errorf("unchanged Apply before the resync: %+v", st)
		}
		resyncRepairs(t)
		expect(t, "w1 (spoofed) -> w2 ping after resync", false, l.ping(w1.ns, spoof, w2.ip4))
		expect(t, "w1 (own address) -> w2 ping after resync", true, l.ping(w1.ns, w1.ip4, w2.ip4))
	})
	t.Run("resync repairs a removed set element", func(t *testing.T) {
		h.nft("delete", "element", "inet", TableName, tagSet4(profA), "{", w1.ip4.String(), "}")
		expect(t, "w1 -> w2 tcp 8081 with w1 out of the tag set", false, l.tcp(w1.ns, w2.ip4, 8081))
		resyncRepairs(t)
		expect(t, "w1 -> w2 tcp 8081 after resync", true, l.tcp(w1.ns, w2.ip4, 8081))
	})
	t.Run("resync repairs a deleted table", func(t *testing.T) {
		h.nft("delete", "table", "inet", TableName)
		expect(t, "w1 -> w3 tcp without our table", true, l.tcp(w1.ns, w3.ip4, 8080))
		resyncRepairs(t)
		expect(t, "w1 -> w3 tcp after resync", false, l.tcp(w1.ns, w3.ip4, 8080))
		expect(t, "w1 -> w2 tcp 8081 after resync", true, l.tcp(w1.ns, w2.ip4, 8081))
	})
	t.Run("resync checks ours after another table changed", func(t *testing.T) {
		// The generation cannot say which table a commit changed: ours is
		// rewritten, then left alone again.
		h.nft("add", "chain", "inet", "other", "c2")
		resyncRepairs(t)
		writes := h.e.Writes()
		h.e.Resync()
		if st := h.apply(p); st.Ops != 0 || h.e.Writes() != writes {
			t.Errorf("second resync: %+v", st)
		}
		expect(t, "w1 -> w2 tcp 8081 after resync", true, l.tcp(w1.ns, w2.ip4, 8081))
	})

	t.Run("drift", func(t *testing.T) {
		// Somebody deletes our table by hand; the next incremental
		// transaction fails and Apply falls back to a full rewrite.
		h.nft("delete", "table", "inet", TableName)
		p.TagMembers["extra"] = calc.AddrSet{V4: []netip.Addr{w1.ip4, w2.ip4}}
		st := h.apply(p)
		if !st.Full || !st.FellBack {
			t.Errorf("Apply after the table vanished: %+v", st)
		}
		expect(t, "w1 -> w3 tcp after drift", false, l.tcp(w1.ns, w3.ip4, 8080))
		expect(t, "w1 -> w2 tcp 8081 after drift", true, l.tcp(w1.ns, w2.ip4, 8081))
	})

	t.Run("cleanup", func(t *testing.T) {
		h.cleanup()
		tables := h.nft("list", "tables")
		if strings.Contains(tables, "inet "+TableName+"\n") || !strings.Contains(tables, "inet other") {
			t.Errorf("after Cleanup: %s", tables)
		}
		expect(t, "w1 -> w3 tcp without policy", true, l.tcp(w1.ns, w3.ip4, 8080))
		h.cleanup() // idempotent
	})
}

// TestKernelIncrementalSequence drives the real kernel through the same
// policy changes as TestIncrementalMatchesFull: every step must succeed
// incrementally (the kernel, unlike the Fake, refuses deleting a chain or
// set that is still referenced, so this checks the ordering of removals).
func TestKernelIncrementalSequence(t *testing.T) {
	requireKernel(t)
	ns := runID(t) + "-s"
	addNetns(t, ns)
	h := newHostEnforcer(t, ns)

	p0 := samplePolicy()
	p1 := samplePolicy()
	p1.TagMembers["web.front"] = calc.AddrSet{V4: addrs("10.65.0.1", "10.65.7.7"), V6: addrs("fd00::9")}
	p2 := samplePolicy()
	p2.Endpoints = p2.Endpoints[:1]
	delete(p2.Profiles, "db:main")
	p2.Profiles["web.front"] = api.NewProfile("other") // the web.front tag sets go away
	p2.MasqueradePools = nil
	p3 := calc.Policy{}
	for i, p := range []calc.Policy{p0, p1, p2, p0, p3, p0} {
		st := h.apply(p)
		if i > 0 && (st.Full || st.FellBack) {
			t.Errorf("step %d not incremental: %+v", i, st)
		}
	}
	// And a hand check of what the kernel holds.
	out := h.nft("list", "chain", "inet", TableName, profileInChain("web.front"))
	for _, want := range []string{"tcp dport 22 counter packets 0 bytes 0 log prefix \"" + DropPrefix(profileInChain("web.front"), 1) + "\" group 3233 snaplen 128 drop", "ip saddr @" + tagSet4("web.front") + " accept", "icmp type echo-request accept"} {
		if !strings.Contains(out, want) {
			t.Errorf("kernel chain lacks %q:\n%s", want, out)
		}
	}
}

// TestKernelScale: a cold start with 1000 endpoints in 100 profiles, then
// the cost of one more endpoint at 10, 100 and 1000 (asserted on op counts;
// times are only logged).
func TestKernelScale(t *testing.T) {
	requireKernel(t)
	if testing.Short() {
		t.Skip("short")
	}
	ns := runID(t) + "-s"
	addNetns(t, ns)
	h := newHostEnforcer(t, ns)

	p := genPolicy(1000, 100)
	start := time.Now()
	st := h.apply(p)
	t.Logf("cold start, 1000 endpoints / 100 profiles: %v (%d nft operations)", time.Since(start), st.Ops)
	start = time.Now()
	if st := h.apply(p); st.Ops != 0 {
		t.Errorf("unchanged Apply: %+v", st)
	}
	t.Logf("unchanged Apply at 1000: %v", time.Since(start))

	// One more endpoint of a profile in use (the 10 endpoints use 10).
	var ops []int
	for _, n := range []int{10, 100, 1000} {
		p := genPolicy(n, 10)
		h.e.Resync()
		h.apply(p)
		start := time.Now()
		st := h.apply(withEndpoint(p, n, 10))
		t.Logf("one more endpoint at %d: %d ops, %v", n, st.Ops, time.Since(start))
		if st.Full {
			t.Errorf("n=%d: not incremental: %+v", n, st)
		}
		ops = append(ops, st.Ops)
	}
	if ops[0] != ops[1] || ops[1] != ops[2] || ops[0] > 20 {
		t.Errorf("ops for one more endpoint at 10/100/1000: %v, want equal and small", ops)
	}
}

// BenchmarkKernelOneMoreEndpoint is one more endpoint (its address in its
// tag's set and wl-src4, its interface and group in wl-groups: its profile
// is one of the 10 the first 10 endpoints use, a list in use, as the
// bench's adds after its first) written to the kernel next to 10 and 1000
// others in 100 profiles, through Apply's incremental path and the real
// nft: ns/op is the wall time, nft-cpu-ns/op the nft process's CPU (user
// and system: its netlink dumps are system time), which grew with the
// endpoints there while "add element" made nft list every set's elements
// first.
func BenchmarkKernelOneMoreEndpoint(b *testing.B) {
	requireKernel(b)
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("existing=%d", n), func(b *testing.B) {
			ns := runID(b) + "-b"
			addNetns(b, ns)
			h := newHostEnforcer(b, ns)
			p := genPolicy(n, 100)
			h.apply(p)
			b.ReportAllocs()
			var nftCPU time.Duration
			for b.Loop() {
				p = withEndpoint(p, n, 10)
				n++
				cpu0 := childCPU(b)
				if st := h.apply(p); st.Full {
					b.Fatalf("not incremental: %+v", st)
				}
				nftCPU += childCPU(b) - cpu0
			}
			b.ReportMetric(float64(nftCPU.Nanoseconds())/float64(b.N), "nft-cpu-ns/op")
		})
	}
}

// childCPU is the CPU time of this process's waited-for children: the nft
// runs.
func childCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestKernelApplyChangeEndpoints: containers starting and stopping next
// to 200 others through calc.Reendpoint and ApplyChange into the real
// kernel (through cacheFree and nft), which makes the change in our
// record in place and plans from a view of the old one: every change
// must be accepted as an incremental update, and the kernel's dispatch
// map must hold exactly the endpoints.
func TestKernelApplyChangeEndpoints(t *testing.T) {
	requireKernel(t)
	ns := runID(t) + "-c"
	addNetns(t, ns)
	h := newHostEnforcer(t, ns)
	s := calc.LabelPolicySnapshot(200, 40)
	for cidr, b := range s.Blocks {
		b.Affinity = "h0"
		s.Blocks[cidr] = b
	}
	in := calc.Input{Node: "h0", Snap: s}
	res := calc.Compute(in)
	h.apply(res.Dataplane.Policy)
	present := map[int]bool{}
	for i := range 200 {
		present[i] = true
	}
	rng := rand.New(rand.NewPCG(7, 3))
	partial := 0
	for step := range 40 {
		i := rng.IntN(250)
		var eps []calc.EndpointEdit
		var blocks []calc.BlockEdit
		if present[i] {
			eps, blocks = calc.LabelPolicyRemove(s, i)
		} else {
			eps, blocks = calc.LabelPolicyAdd(s, i, rng.IntN(40))
		}
		present[i] = !present[i]
		next, ch, ok := calc.Reendpoint(in, res, eps, blocks)
		if !ok {
			res = calc.Compute(in)
			h.apply(res.Dataplane.Policy)
			continue
		}
		if err := runIn(h.ns, func() error {
			_, err := h.e.ApplyChange(next.Dataplane.Policy, ch.Policy)
			return err
		}); err != nil {
			t.Fatalf("step %d: ApplyChange: %v", step, err)
		}
		res = next
		partial++
	}
	if partial < 25 {
		t.Errorf("only %d of 40 changes partial", partial)
	}
	want := render(res.Dataplane.Policy)
	want.access = h.e.access
	if !reflect.DeepEqual(h.e.cur, want) {
		t.Fatal("the Enforcer's record differs from the rendered policy")
	}
	// Endpoints that label policies apply to are dispatched by name, the
	// others by their profile list's device group.
	byName := 0
	for _, ep := range res.Dataplane.Policy.Endpoints {
		if len(ep.IngressPolicies)+len(ep.EgressPolicies) > 0 {
			byName++
		}
	}
	out := h.nft("list", "map", "inet", TableName, mapToWl)
	if got := strings.Count(out, `"cali`); got != byName || byName == 0 || byName == len(res.Dataplane.Policy.Endpoints) {
		t.Errorf("the kernel's %s holds %d entries, want %d of %d endpoints", mapToWl, got, byName, len(res.Dataplane.Policy.Endpoints))
	}
	// The kernel's table is the one a fresh Enforcer writes for the final
	// policy in another namespace (as listed, in JSON, sorted by object).
	ns2 := runID(t) + "-d"
	addNetns(t, ns2)
	fresh := newHostEnforcer(t, ns2)
	fresh.apply(res.Dataplane.Policy)
	if got, want := tableObjects(t, h), tableObjects(t, fresh); !slices.Equal(got, want) {
		t.Errorf("the table differs from a fresh Apply's: %d objects against %d", len(got), len(want))
	}
}

// tableObjects is our table as nft lists it in JSON, one object per
// string, sorted, without handles (they differ between tables written
// differently).
func tableObjects(t *testing.T, h *hostEnforcer) []string {
	t.Helper()
	var doc struct {
		Nftables []map[string]any `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(h.nft("-j", "list", "table", "inet", TableName)), &doc); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range doc.Nftables {
		for _, v := range o {
			if m, ok := v.(map[string]any); ok {
				delete(m, "handle")
				if elems, ok := m["elem"].([]any); ok {
					slices.SortFunc(elems, func(a, b any) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
				}
			}
		}
		b, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	slices.Sort(out)
	return out
}
