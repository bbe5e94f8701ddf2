package nft

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
)

// fakeState reads a Fake's table into comparable form: rules in order per
// chain; set and map elements sorted (their order does not matter).
func fakeState(t *testing.T, f *knftables.Fake) map[string][]string {
	t.Helper()
	f.RLock()
	defer f.RUnlock()
	if f.Table == nil {
		return nil
	}
	st := map[string][]string{}
	for name, ch := range f.Table.Chains {
		rules := []string{}
		for _, r := range ch.Rules {
			rules = append(rules, r.Rule)
		}
		st["chain "+name] = rules
	}
	for name, s := range f.Table.Sets {
		elems := []string{s.Type}
		for _, e := range s.Elements {
			elems = append(elems, strings.Join(e.Key, " . "))
		}
		slices.Sort(elems[1:])
		st["set "+name] = elems
	}
	for name, m := range f.Table.Maps {
		elems := []string{}
		for _, e := range m.Elements {
			elems = append(elems, strings.Join(e.Key, " . ")+" : "+strings.Join(e.Value, " . "))
		}
		slices.Sort(elems)
		st["map "+name] = elems
	}
	return st
}

func newFakeEnforcer() (*Enforcer, *knftables.Fake) {
	f := knftables.NewFake(knftables.InetFamily, TableName)
	return newWith(f), f
}

func TestPlanFullText(t *testing.T) {
	e, f := newFakeEnforcer()
	st, err := e.Apply(samplePolicy())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Full || st.Endpoints != 2 || st.Profiles != 2 || len(st.Problems) != 0 {
		t.Errorf("stats %+v", st)
	}
	text := f.LastTransaction.String()
	lines := strings.Split(text, "\n")
	// The table is replaced in one transaction: add (so delete is valid),
	// delete, add.
	if !strings.HasPrefix(lines[0], "add table inet calico") ||
		lines[1] != "delete table inet calico" ||
		!strings.HasPrefix(lines[2], "add table inet calico") {
		t.Errorf("transaction must start by replacing the table:\n%s", strings.Join(lines[:3], "\n"))
	}
	for _, want := range []string{
		"add chain inet calico from-wl-src { type filter hook prerouting priority -300 ;",
		"add set inet calico wl-src4 { type ifname . ipv4_addr ;",
		`add rule inet calico from-wl-src iifname != "cali*" accept` + "\n" +
			"add rule inet calico from-wl-src iifname . ip saddr @wl-src4 accept\n" +
			"add rule inet calico from-wl-src iifname . ip6 saddr @wl-src6 accept\n" +
			"add rule inet calico from-wl-src ip6 saddr { ::, fe80::/10 } meta l4proto ipv6-icmp accept\n" +
			"add rule inet calico from-wl-src drop\n",
		`add element inet calico wl-src4 { "caliaaaa" . 10.65.0.1 }`,
		"add chain inet calico fwd-from-wl { type filter hook forward priority -1 ;",
		"add chain inet calico fwd-to-wl { type filter hook forward priority 0 ;",
		"add chain inet calico input { type filter hook input priority 0 ;",
		"add chain inet calico nat-out { type nat hook postrouting priority 100 ;",
		"add map inet calico from-wl { type ifname : verdict ;",
		"add set inet calico pools4 { type ipv4_addr ; flags interval ;",
		"add rule inet calico fwd-from-wl ct state established,related accept\n" +
			"add rule inet calico fwd-from-wl ct state invalid drop\n" +
			`add rule inet calico fwd-from-wl iifname "cali*" ip daddr @cp-hosts4 meta l4proto . th dport @cp-ports drop` + "\n" +
			`add rule inet calico fwd-from-wl iifname "cali*" ip6 daddr @cp-hosts6 meta l4proto . th dport @cp-ports drop` + "\n" +
			"add rule inet calico fwd-from-wl iifname vmap @from-wl\n" +
			"add rule inet calico fwd-from-wl iifname . iifgroup @wl-groups iifgroup vmap @grp-from\n" +
			`add rule inet calico fwd-from-wl iifname "cali*" drop`,
		"add rule inet calico fwd-to-wl oifname vmap @to-wl\n" +
			"add rule inet calico fwd-to-wl oifname . oifgroup @wl-groups oifgroup vmap @grp-to\n",
		"add map inet calico grp-from { type devgroup : verdict ;",
		"add rule inet calico input meta nfproto ipv4 udp dport 4789 jump vxlan-in\n" +
			`add rule inet calico input iifname "cali*" goto wl-to-host`,
		"add set inet calico cp-ports { type inet_proto . inet_service ;",
		"add rule inet calico wl-to-host icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept\n" +
			"add rule inet calico wl-to-host drop\n",
		"add rule inet calico nat-out ip saddr @masq4 ip daddr != @pools4 masquerade\n",
		"add rule inet calico nat-out ip6 saddr @masq6 ip6 daddr != @pools6 masquerade\n",
		`add element inet calico from-wl { "caliaaaa" : jump ` + endpointOutChain("caliaaaa") + " }",
		"add element inet calico " + tagSet4("web.front") + " { 10.65.1.9 }",
		"add rule inet calico " + profileInChain("web.front") + " tcp dport 22 " + dropStatement(profileInChain("web.front"), 1) + "\n" +
			"add rule inet calico " + profileInChain("web.front") + " ip saddr @" + tagSet4("web.front") + " accept\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("transaction lacks:\n%s", want)
		}
	}
	if t.Failed() {
		t.Logf("transaction:\n%s", text)
	}
}

// TestHostAccess: the policy mode sends workload-to-host traffic through
// the workload's outbound chain; changing the mode rewrites the table.
func TestHostAccess(t *testing.T) {
	e, f := newFakeEnforcer()
	if _, err := e.Apply(samplePolicy()); err != nil {
		t.Fatal(err)
	}
	wlToHost := func() []string { return fakeState(t, f)["chain "+chainWlToHost] }
	if got := wlToHost(); slices.Contains(got, "iifname vmap @"+mapFromWl) || got[len(got)-1] != "drop" {
		t.Errorf("default wl-to-host: %q", got)
	}
	e.SetHostAccess(HostAccessPolicy)
	st, err := e.Apply(samplePolicy())
	if err != nil {
		t.Fatal(err)
	}
	got := wlToHost()
	if !st.Full || len(got) < 3 || got[len(got)-3] != "iifname vmap @"+mapFromWl || got[len(got)-2] != "iifname . iifgroup @"+setWlGroups+" iifgroup vmap @"+mapGrpFrom || got[len(got)-1] != "drop" {
		t.Errorf("policy mode: full=%v, wl-to-host %q", st.Full, got)
	}
	if st, _ := e.Apply(samplePolicy()); st.Ops != 0 {
		t.Errorf("unchanged Apply in policy mode: %+v", st)
	}
	for _, c := range []struct {
		in   string
		want HostAccess
		ok   bool
	}{{"", HostAccessDrop, true}, {"drop", HostAccessDrop, true}, {"policy", HostAccessPolicy, true}, {"accept", "", false}} {
		got, err := ParseHostAccess(c.in)
		if got != c.want || (err == nil) != c.ok {
			t.Errorf("ParseHostAccess(%q) = %q, %v", c.in, got, err)
		}
	}
}

func TestApplyUnchangedDoesNothing(t *testing.T) {
	e, f := newFakeEnforcer()
	if _, err := e.Apply(samplePolicy()); err != nil {
		t.Fatal(err)
	}
	last := f.LastTransaction
	st, err := e.Apply(samplePolicy())
	if err != nil {
		t.Fatal(err)
	}
	if st.Ops != 0 || st.Full || f.LastTransaction != last {
		t.Errorf("unchanged Apply ran nft: %+v", st)
	}
}

// TestIncrementalMatchesFull: after every incremental step the table holds
// exactly what a full rewrite of the same policy would hold.
func TestIncrementalMatchesFull(t *testing.T) {
	p0 := samplePolicy()

	p1 := samplePolicy() // a tag member joins, one leaves
	p1.TagMembers["web.front"] = calc.AddrSet{V4: addrs("10.65.0.1", "10.65.0.2", "10.65.7.7"), V6: addrs("fd00::1", "fd00::9")}

	p2 := samplePolicy() // a rule changes in one profile; pools change
	prof := p2.Profiles["db:main"]
	prof.Inbound = append([]api.Rule{{Action: "deny", Protocol: "udp"}}, prof.Inbound...)
	p2.Profiles["db:main"] = prof
	p2.MasqueradePools = nil // nat-out goes, p3 brings it back
	p2.AllPools = prefixes("10.65.0.0/16")

	p3 := samplePolicy() // an endpoint and a profile (and its tag) go away
	p3.Endpoints = p3.Endpoints[:1]
	delete(p3.Profiles, "db:main")
	p3.Profiles["web.front"] = api.NewProfile("web.front") // drops nothing, keeps the tag
	p3.Endpoints = append(p3.Endpoints, calc.EndpointPolicy{Interface: "calicccc", Addrs: addrs("10.65.0.3")})

	p4 := samplePolicy() // everything back, and a new tag in a new rule
	pr := p4.Profiles["web.front"]
	pr.Outbound = []api.Rule{{Action: "allow", Dst: api.EntityMatch{Tag: "db:main"}}}
	p4.Profiles["web.front"] = pr

	p5 := calc.Policy{} // nothing at all

	e, f := newFakeEnforcer()
	for i, p := range []calc.Policy{p0, p1, p2, p3, p4, p5, p0} {
		st, err := e.Apply(p)
		if err != nil {
			t.Fatalf("step %d: %v\n%s", i, err, f.LastTransaction)
		}
		if i > 0 && (st.Full || st.FellBack) {
			t.Errorf("step %d: not incremental: %+v", i, st)
		}
		ref, rf := newFakeEnforcer()
		if _, err := ref.Apply(p); err != nil {
			t.Fatal(err)
		}
		if got, want := fakeState(t, f), fakeState(t, rf); !reflect.DeepEqual(got, want) {
			for k := range want {
				if !reflect.DeepEqual(got[k], want[k]) {
					t.Errorf("step %d: %s:\n  incremental %q\n  full        %q", i, k, got[k], want[k])
				}
			}
			for k := range got {
				if _, ok := want[k]; !ok {
					t.Errorf("step %d: incremental left %s behind", i, k)
				}
			}
			t.Logf("step %d transaction:\n%s", i, f.LastTransaction)
		}
	}
}

func TestIncrementalCosts(t *testing.T) {
	e, _ := newFakeEnforcer()
	p := samplePolicy()
	if _, err := e.Apply(p); err != nil {
		t.Fatal(err)
	}

	// Membership: one element, no rule touched.
	p.TagMembers["web.front"] = calc.AddrSet{V4: append(p.TagMembers["web.front"].V4, netip.MustParseAddr("10.65.3.3")), V6: p.TagMembers["web.front"].V6}
	st, err := e.Apply(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ops != 1 || st.ElementsAdded != 1 || st.ChainsWritten != 0 {
		t.Errorf("tag member added: %+v, want exactly one element op", st)
	}

	// One rule changed: that profile's chain only (flush + its rules).
	prof := p.Profiles["web.front"]
	prof.Outbound = []api.Rule{{Action: "deny", Protocol: "tcp"}, {Action: "allow"}}
	p.Profiles["web.front"] = prof
	st, err = e.Apply(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.ChainsWritten != 1 || st.Ops != 3 {
		t.Errorf("one profile changed: %+v, want 1 chain, 3 ops", st)
	}
}

// TestAddEndpointCostIsConstant: one more endpoint costs the same number of
// operations with 10, 100 or 1000 already present.
func TestAddEndpointCostIsConstant(t *testing.T) {
	var ops []int
	for _, n := range []int{10, 100, 1000} {
		e, _ := newFakeEnforcer()
		p := genPolicy(n, 10)
		if _, err := e.Apply(p); err != nil {
			t.Fatal(err)
		}
		st, err := e.Apply(withEndpoint(p, n, 10))
		if err != nil {
			t.Fatal(err)
		}
		// Elements: tag member, anti-spoofing source, (interface . group):
		// its profile's chains are its profile list's, in use already.
		if st.Full || st.ChainsWritten != 0 || st.ElementsAdded != 3 {
			t.Errorf("n=%d: %+v", n, st)
		}
		ops = append(ops, st.Ops)
	}
	if ops[0] != ops[1] || ops[1] != ops[2] || ops[0] > 20 {
		t.Errorf("ops for one more endpoint at 10/100/1000: %v, want equal and small", ops)
	}
}

// TestFailedIncrementalFallsBack: if the kernel drifted (here: the table was
// deleted behind our back) the incremental transaction fails and Apply
// rewrites the table at once.
func TestFailedIncrementalFallsBack(t *testing.T) {
	e, f := newFakeEnforcer()
	if _, err := e.Apply(samplePolicy()); err != nil {
		t.Fatal(err)
	}
	tx := f.NewTransaction()
	tx.Delete(&knftables.Table{})
	if err := f.Run(t.Context(), tx); err != nil {
		t.Fatal(err)
	}
	p := samplePolicy()
	p.TagMembers["web.front"] = calc.AddrSet{V4: addrs("10.65.0.2", "10.65.0.3")}
	st, err := e.Apply(p)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Full || !st.FellBack {
		t.Errorf("stats %+v, want a full rewrite after the failure", st)
	}
	if f.Table == nil || f.Table.Chains[chainFwdEgress] == nil {
		t.Error("table not restored")
	}

	// Resync forces a full rewrite even without a change.
	e.Resync()
	st, err = e.Apply(p)
	if err != nil || !st.Full || st.FellBack {
		t.Errorf("after Resync: %+v, %v", st, err)
	}
	if err := e.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if f.Table != nil {
		t.Error("Cleanup left the table")
	}
	if err := e.Cleanup(); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
}

func BenchmarkRender1000(b *testing.B) {
	p := genPolicy(1000, 100)
	b.ReportAllocs()
	for b.Loop() {
		render(p)
	}
}

// BenchmarkRenderAndPlanFull1000 includes building the full transaction, as
// a cold start does (the nft run itself is not included).
func BenchmarkRenderAndPlanFull1000(b *testing.B) {
	p := genPolicy(1000, 100)
	f := knftables.NewFake(knftables.InetFamily, TableName)
	b.ReportAllocs()
	for b.Loop() {
		planFull(f.NewTransaction(), render(p))
	}
}

// BenchmarkRenderAndPlanOneMore1000 is the CPU side of an Apply that adds
// one endpoint to 1000: render everything, diff, plan (nft not run).
func BenchmarkRenderAndPlanOneMore1000(b *testing.B) {
	p := genPolicy(1000, 100)
	p2 := withEndpoint(p, 1000, 100)
	prev := render(p)
	f := knftables.NewFake(knftables.InetFamily, TableName)
	b.ReportAllocs()
	for b.Loop() {
		planIncremental(f.NewTransaction(), prev, render(p2))
	}
}

// BenchmarkRenderAndPlanFirstPublished1000 is the CPU side of the Apply
// that publishes the first port on a host of 1000 endpoints: the DNAT
// chains join the table incrementally (a handful of operations), not
// through a full rewrite of every endpoint.
func BenchmarkRenderAndPlanFirstPublished1000(b *testing.B) {
	p := genPolicy(1000, 100)
	p2 := p
	p2.Published = []calc.Published{{Proto: "tcp", HostPort: 8080, Addr: netip.MustParseAddr("10.65.0.1"), Port: 80}}
	prev := render(p)
	f := knftables.NewFake(knftables.InetFamily, TableName)
	b.ReportAllocs()
	var ops int
	for b.Loop() {
		ops = planIncremental(f.NewTransaction(), prev, render(p2)).Ops
	}
	b.ReportMetric(float64(ops), "nft-ops")
}
