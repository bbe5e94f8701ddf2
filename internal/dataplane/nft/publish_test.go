package nft

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/calc"
)

// Published ports become one DNAT rule each and one element of the set the
// forward chain admits DNATed flows by. A control-plane port is never
// published, and of two mappings of one host port the first wins; both
// are reported.
func TestRenderPublished(t *testing.T) {
	a, b := netip.MustParseAddr("192.168.0.5"), netip.MustParseAddr("192.168.0.6")
	host := netip.MustParseAddr("10.0.0.1")
	rs := render(calc.Policy{
		ControlPlane: calc.ControlPlane{Ports: []calc.L4Port{{Proto: "tcp", Port: 179}}},
		Published: []calc.Published{
			{Proto: "tcp", HostPort: 8080, Addr: a, Port: 80},
			{Proto: "udp", HostIP: host, HostPort: 5353, Addr: a, Port: 53},
			{Proto: "tcp", HostIP: host, HostPort: 8080, Addr: b, Port: 80}, // clashes with the first
			{Proto: "tcp", HostPort: 179, Addr: b, Port: 80},                // BGP
			{Proto: "udp", HostPort: 8080, Addr: b, Port: 8080},             // other protocol: no clash
		},
	})
	wantRules := []string{
		"meta nfproto ipv4 meta l4proto tcp th dport 8080 dnat ip to 192.168.0.5:80",
		"ip daddr 10.0.0.1 meta l4proto udp th dport 5353 dnat ip to 192.168.0.5:53",
		"meta nfproto ipv4 meta l4proto udp th dport 8080 dnat ip to 192.168.0.6:8080",
	}
	if got := rs.Chains[chainPublish].Rules; !slices.Equal(got, wantRules) {
		t.Errorf("publish chain:\n  got  %q\n  want %q", got, wantRules)
	}
	wantElems := []string{"192.168.0.5 . tcp . 80", "192.168.0.5 . udp . 53", "192.168.0.6 . udp . 8080"}
	if got := rs.Sets[setPub4].Elems; !slices.Equal(got, wantElems) {
		t.Errorf("published4: got %q, want %q", got, wantElems)
	}
	if len(rs.Problems) != 2 || !strings.Contains(rs.Problems[0]+rs.Problems[1], "already published") || !strings.Contains(rs.Problems[0]+rs.Problems[1], "control-plane") {
		t.Errorf("problems %q: want one clash and one control-plane port", rs.Problems)
	}
}

// The NAT base chains exist only while they can match something: their
// hooks run for every tracked packet of the host, established ones too
// (TestPacketCost measures it). A first published port or nat-outgoing
// pool adds them, the last one removes them, incrementally.
func TestNATHooksOnlyWhenNeeded(t *testing.T) {
	wl := netip.MustParseAddr("10.65.0.1")
	hasChain := func(f map[string][]string, c string) bool { _, ok := f["chain "+c]; return ok }
	e, f := newFakeEnforcer()
	for i, step := range []struct {
		p          calc.Policy
		dnat, snat bool
	}{
		{p: calc.Policy{}},
		{p: calc.Policy{Published: []calc.Published{{Proto: "tcp", HostPort: 8080, Addr: wl, Port: 80}}}, dnat: true},
		{p: calc.Policy{Published: []calc.Published{{Proto: "tcp", HostPort: 8081, Addr: wl, Port: 80}}}, dnat: true},
		{p: calc.Policy{MasqueradePools: prefixes("10.65.0.0/16"), AllPools: prefixes("10.65.0.0/16")}, snat: true},
		{p: calc.Policy{MasqueradePools: prefixes("10.66.0.0/16"), AllPools: prefixes("10.65.0.0/16")}, snat: true},
		{p: calc.Policy{AllPools: prefixes("10.65.0.0/16")}},
	} {
		st, err := e.Apply(step.p)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		state := fakeState(t, f)
		if got := hasChain(state, chainDNATPre) && hasChain(state, chainDNATOut); got != step.dnat || hasChain(state, chainDNATPre) != hasChain(state, chainDNATOut) {
			t.Errorf("step %d: DNAT chains present %v, want %v", i, got, step.dnat)
		}
		if got := hasChain(state, chainNAT); got != step.snat {
			t.Errorf("step %d: nat-out present %v, want %v", i, got, step.snat)
		}
		if st.Full != (i == 0) || st.FellBack {
			t.Errorf("step %d: full=%v fellBack=%v: only the first Apply may be full", i, st.Full, st.FellBack)
		}
		// The same state as a full rewrite of the same policy.
		ref, rf := newFakeEnforcer()
		if _, err := ref.Apply(step.p); err != nil {
			t.Fatal(err)
		}
		if want := fakeState(t, rf); !reflect.DeepEqual(state, want) {
			t.Errorf("step %d: incremental state differs from a full rewrite:\n%v\n%v", i, state, want)
		}
		// The forward chain's admission of DNATed flows and the publish
		// chain stay whatever the hooks: one owner, one shape.
		if !hasChain(state, chainPublish) {
			t.Errorf("step %d: publish chain missing", i)
		}
	}
}
