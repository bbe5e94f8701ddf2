package nft

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
)

const (
	selFront = `role == "front"`
	selExt   = `has(ext)`
)

// labelPolicy is samplePolicy with two label policies: "front-in" (order
// 10) lets role=front in on TCP 8080-8090, logs ICMP and passes it to the
// profiles, denies the rest from outside networks; "egress" (order 20) lets
// the endpoint send to role=front and to 10.9.0.0/16.
func labelPolicy() calc.Policy {
	p := samplePolicy()
	p.Endpoints[0].IngressPolicies = []string{"front-in"}
	p.Endpoints[0].EgressPolicies = []string{"egress"}
	p.Policies = map[string]calc.TierPolicy{
		"front-in": {Ingress: []calc.PolicyRule{
			{Action: "Allow", Protocol: 6, Src: calc.PolicyEntity{Selector: selFront}, Dst: calc.PolicyEntity{Ports: []api.PortRange{{Min: 8080, Max: 8090}}}},
			{Action: "Log", Protocol: 1},
			{Action: "Pass", Protocol: 1},
			{Action: "Deny", Src: calc.PolicyEntity{Selector: selExt}},
		}},
		"egress": {Egress: []calc.PolicyRule{
			{Action: "Allow", Dst: calc.PolicyEntity{Selector: selFront}},
			{Action: "Allow", IPVersion: 4, Dst: calc.PolicyEntity{Nets: prefixes("10.9.0.0/16")}},
		}},
	}
	p.SelectorMembers = map[string]calc.SelectorMembers{
		selFront: {V4: prefixes("10.65.0.2/32"), V6: prefixes("fd00::2/128")},
		selExt:   {V4: prefixes("203.0.113.0/24", "203.0.113.9/32")},
	}
	return p
}

func TestRenderLabelPolicy(t *testing.T) {
	rs := render(labelPolicy())
	if len(rs.Problems) > 0 {
		t.Fatalf("problems %q", rs.Problems)
	}
	ep := labelPolicy().Endpoints[0]
	polIn, polOut := policyInChain("front-in"), policyOutChain("egress")
	want := map[string][]string{
		endpointInChain(ep.Interface):  {"jump " + polIn, dropStatement(endOfTier(ep.Interface, true), 0)},
		endpointOutChain(ep.Interface): {"jump " + polOut, dropStatement(endOfTier(ep.Interface, false), 0)},
		// The profile stage: what the endpoint chain held without policies.
		// Its final drop is counted and logged as the endpoint's (drops.go).
		endpointProfIn(ep.Interface): {"jump " + profileInChain(ep.Profiles[0]), dropStatement(endpointInChain(ep.Interface), 0)},
		polIn: {
			"ip saddr @" + selectorSet4(selFront) + " meta l4proto 6 th dport 8080-8090 accept",
			"ip6 saddr @" + selectorSet6(selFront) + " meta l4proto 6 th dport 8080-8090 accept",
			`meta l4proto 1 counter log prefix "calico-pol front-in: "`,
			"meta l4proto 1 oifname vmap @pass-in",
			"ip saddr @" + selectorSet4(selExt) + " " + dropStatement(polIn, 4),
			"ip6 saddr @" + selectorSet6(selExt) + " " + dropStatement(polIn, 4),
		},
		polOut: {
			"ip daddr @" + selectorSet4(selFront) + " accept",
			"ip6 daddr @" + selectorSet6(selFront) + " accept",
			"ip daddr 10.9.0.0/16 accept",
		},
	}
	for name, rules := range want {
		if got := rs.Chains[name].Rules; !slices.Equal(got, rules) {
			t.Errorf("%s:\n got  %q\n want %q", name, got, rules)
		}
	}
	// The other endpoint has no label policy: unchanged, no profile stage.
	other := labelPolicy().Endpoints[1]
	if _, ok := rs.Chains[endpointProfIn(other.Interface)]; ok || rs.PassIn[other.Interface] != "" {
		t.Errorf("%s has a profile stage without policies", other.Interface)
	}
	if rs.PassIn[ep.Interface] != endpointProfIn(ep.Interface) || rs.PassOut[ep.Interface] != endpointProfOut(ep.Interface) {
		t.Errorf("pass maps %v %v", rs.PassIn, rs.PassOut)
	}
	// Nested prefixes collapse: nft refuses overlapping intervals.
	if got := rs.Sets[selectorSet4(selExt)]; !got.Interval || !slices.Equal(got.Elems, []string{"203.0.113.0/24"}) {
		t.Errorf("ext set %+v", got)
	}
}

func TestPolicyRuleText(t *testing.T) {
	code := 0
	cases := []struct {
		rule calc.PolicyRule
		want []string
	}{
		{calc.PolicyRule{Action: "Allow"}, []string{"accept"}},
		{calc.PolicyRule{Action: "Deny", IPVersion: 6}, []string{"meta nfproto ipv6 drop"}},
		{calc.PolicyRule{Action: "Allow", NotProtocol: 17, Src: calc.PolicyEntity{NotNets: prefixes("10.0.0.0/8", "10.1.0.0/16", "fd00::/8")}},
			[]string{"ip saddr != 10.0.0.0/8 meta l4proto != 17 accept", "ip6 saddr != fd00::/8 meta l4proto != 17 accept"}},
		// Positive nets of one family rule out the other.
		{calc.PolicyRule{Action: "Allow", Src: calc.PolicyEntity{Nets: prefixes("fd00::/64")}, Dst: calc.PolicyEntity{NotSelector: selExt}},
			[]string{"ip6 saddr fd00::/64 ip6 daddr != @" + selectorSet6(selExt) + " accept"}},
		// Nets of different families in source and destination: nothing can match.
		{calc.PolicyRule{Action: "Allow", Src: calc.PolicyEntity{Nets: prefixes("fd00::/64")}, Dst: calc.PolicyEntity{Nets: prefixes("10.0.0.0/8")}}, nil},
		{calc.PolicyRule{Action: "Allow", Protocol: 17, Src: calc.PolicyEntity{Ports: []api.PortRange{{Min: 53, Max: 53}}}, Dst: calc.PolicyEntity{NotPorts: []api.PortRange{{Min: 1, Max: 1023}, {Min: 2000, Max: 2000}}}},
			[]string{"meta l4proto 17 th sport 53 th dport != { 1-1023, 2000 } accept"}},
		{calc.PolicyRule{Action: "Allow", Protocol: 58, ICMP: &calc.ICMPMatch{Type: 128, Code: &code}}, []string{"meta l4proto 58 icmpv6 type 128 icmpv6 code 0 accept"}},
		// not (type 8 and code 0): two rules.
		{calc.PolicyRule{Action: "Deny", Protocol: 1, NotICMP: &calc.ICMPMatch{Type: 8, Code: &code}},
			[]string{"meta l4proto 1 icmp type != 8 drop", "meta l4proto 1 icmp type 8 icmp code != 0 drop"}},
		{calc.PolicyRule{Action: "Pass", IPVersion: 4}, []string{"meta nfproto ipv4 iifname vmap @pass-out"}},
	}
	for i, tc := range cases {
		if got := policyRuleText("p", tc.rule, false); !slices.Equal(got, tc.want) {
			t.Errorf("case %d:\n got  %q\n want %q", i, got, tc.want)
		}
	}
}

// TestPolicyIncrementalMatchesFull walks through policy changes; after each
// the incrementally updated table equals a fresh full write.
func TestPolicyIncrementalMatchesFull(t *testing.T) {
	p0 := samplePolicy()
	p1 := labelPolicy()
	p2 := labelPolicy() // a second policy before the first; a Pass becomes Allow
	p2.Endpoints[0].IngressPolicies = []string{"egress", "front-in"}
	p2.Endpoints[1].IngressPolicies = []string{"front-in"}
	p2.Policies["egress"] = calc.TierPolicy{Ingress: []calc.PolicyRule{{Action: "Allow", Protocol: 1}}, Egress: p2.Policies["egress"].Egress}
	p3 := labelPolicy() // the selector members change
	p3.SelectorMembers = map[string]calc.SelectorMembers{selFront: {V4: prefixes("10.65.0.3/32")}, selExt: {}}
	steps := []calc.Policy{p0, p1, p2, p3, p1, p0}
	e, f := newFakeEnforcer()
	for i, p := range steps {
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
		}
	}
}

// TestSelectorMemberIsElementEdit: an endpoint appearing (anywhere in the
// cluster) that matches an existing selector is one set element per
// address; no chain is written. A new local endpoint that the policy
// applies to writes only its own chains.
func TestSelectorMemberIsElementEdit(t *testing.T) {
	e, f := newFakeEnforcer()
	p := labelPolicy()
	if _, err := e.Apply(p); err != nil {
		t.Fatal(err)
	}

	// A remote workload with role=front: v4 and v6 addresses join the set.
	p.SelectorMembers = map[string]calc.SelectorMembers{
		selFront: {V4: prefixes("10.65.0.2/32", "10.65.9.9/32"), V6: prefixes("fd00::2/128", "fd00::99/128")},
		selExt:   p.SelectorMembers[selExt],
	}
	st, err := e.Apply(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ops != 2 || st.ElementsAdded != 2 || st.ChainsWritten != 0 || st.ElementsDeleted != 0 {
		t.Errorf("remote member: %+v, want 2 element adds and nothing else", st)
	}
	tx := f.LastTransaction.String()
	if !strings.Contains(tx, selectorSet4(selFront)+" { 10.65.9.9/32 }") || strings.Contains(tx, "rule") {
		t.Errorf("remote member transaction:\n%s", tx)
	}

	// A local workload that front-in applies to, also role=front.
	p.Endpoints = append(slices.Clone(p.Endpoints), calc.EndpointPolicy{
		Interface: "calinew", Addrs: addrs("10.65.0.50"), Profiles: []string{"web.front"},
		IngressPolicies: []string{"front-in"},
	})
	p.SelectorMembers[selFront] = calc.SelectorMembers{V4: prefixes("10.65.0.2/32", "10.65.0.50/32", "10.65.9.9/32"), V6: p.SelectorMembers[selFront].V6}
	st, err = e.Apply(p)
	if err != nil {
		t.Fatal(err)
	}
	// Its ep-in, eprof-in and ep-out chains; no policy or profile chain.
	if st.ChainsWritten != 3 {
		t.Errorf("local endpoint: %+v, want its 3 chains written", st)
	}
	tx = f.LastTransaction.String()
	for _, untouched := range []string{policyInChain("front-in"), policyOutChain("egress"), profileInChain("web.front")} {
		if strings.Contains(tx, "flush chain inet calico "+untouched) || strings.Contains(tx, "add rule inet calico "+untouched+" ") {
			t.Errorf("%s rewritten for a new endpoint:\n%s", untouched, tx)
		}
	}
	t.Logf("local endpoint transaction (%d ops):\n%s", st.Ops, tx)
}

// An endpoint chain with policies and the profile stage (and the pass map)
// all follow the endpoint away: nothing is left behind, and chains are
// deleted after the map entries and chains that name them.
func TestPolicyEndpointRemoved(t *testing.T) {
	e, f := newFakeEnforcer()
	if _, err := e.Apply(labelPolicy()); err != nil {
		t.Fatal(err)
	}
	p := labelPolicy()
	p.Endpoints = p.Endpoints[1:]
	st, err := e.Apply(p)
	if err != nil {
		t.Fatalf("%v\n%s", err, f.LastTransaction)
	}
	// ep-in, ep-out, eprof-in, eprof-out, pol-in-front-in, pol-out-egress.
	if st.ChainsDeleted != 6 || st.Full {
		t.Errorf("%+v\n%s", st, f.LastTransaction)
	}
	if got := fakeState(t, f); len(got["map "+mapPassIn]) != 0 || len(got["map "+mapPassOut]) != 0 {
		t.Errorf("pass maps after removal %q %q", got["map "+mapPassIn], got["map "+mapPassOut])
	}
}
