package nft

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/calc"
)

// guardedPolicy is samplePolicy with a control plane and VXLAN senders.
func guardedPolicy() calc.Policy {
	p := samplePolicy()
	p.ControlPlane = calc.ControlPlane{
		Hosts: calc.AddrSet{V4: addrs("10.0.0.2", "10.0.0.1"), V6: addrs("fd00::1")},
		Ports: []calc.L4Port{{Proto: "tcp", Port: 179}, {Proto: "udp", Port: 4789}, {Proto: "tcp", Port: 2379}, {Proto: "tcp", Port: 2380}},
	}
	p.VXLAN = calc.VXLANGuard{Enabled: true, Senders: []calc.VXLANSender{
		// A /32 inside the node's own block is covered by it.
		{Addr: netip.MustParseAddr("10.0.0.2"), Inner: prefixes("10.0.0.2/32", "192.168.100.64/26", "192.168.100.70/32")},
		// Another node may hold an address inside that block (borrowed).
		{Addr: netip.MustParseAddr("10.0.0.3"), Inner: prefixes("10.0.0.3/32", "192.168.100.66/32")},
	}}
	return p
}

func TestRenderGuards(t *testing.T) {
	rs := render(guardedPolicy())
	if len(rs.Problems) != 0 {
		t.Fatalf("problems: %v", rs.Problems)
	}
	for name, want := range map[string][]string{
		setCPHosts4: {"10.0.0.1", "10.0.0.2"},
		setCPHosts6: {"fd00::1"},
		setCPPorts:  {"tcp . 179", "tcp . 2379", "tcp . 2380", "udp . 4789"},
		// One hashed set per inner prefix length, keyed by the network.
		vxlanSrcSet(26): {"10.0.0.2 . 0xc0a86440"},
		vxlanSrcSet(32): {"10.0.0.2 . 0x0a000002", "10.0.0.3 . 0x0a000003", "10.0.0.3 . 0xc0a86442"},
	} {
		if got := rs.Sets[name].Elems; !slices.Equal(got, want) {
			t.Errorf("set %s = %q, want %q", name, got, want)
		}
	}
	for _, n := range []int{26, 32} {
		if s := rs.Sets[vxlanSrcSet(n)]; s.TypeOf != "ip saddr . @th,336,32" || s.Interval || s.Type != "" {
			t.Errorf("%s declared as %+v", vxlanSrcSet(n), s)
		}
	}
	// Blocks (the workloads' traffic) first, each length one hash probe.
	want := []string{
		"@th,224,16 0x0800 ip saddr . @th,336,32 & 0xffffffc0 @vxlan-src-26 accept",
		"@th,224,16 0x0800 ip saddr . @th,336,32 @vxlan-src-32 accept",
		"drop",
	}
	if got := rs.Chains[chainVXLANIn].Rules; !slices.Equal(got, want) {
		t.Errorf("vxlan-in = %q, want %q", got, want)
	}

	// What cannot be enforced as given is reported and left out.
	p := guardedPolicy()
	p.ControlPlane.Ports = append(p.ControlPlane.Ports, calc.L4Port{Proto: "sctp", Port: 9}, calc.L4Port{Proto: "tcp"})
	p.VXLAN.Senders = append(p.VXLAN.Senders, calc.VXLANSender{Addr: netip.MustParseAddr("fd00::9"), Inner: prefixes("fd00:1::/64")})
	rs = render(p)
	vx := len(rs.Sets[vxlanSrcSet(26)].Elems) + len(rs.Sets[vxlanSrcSet(32)].Elems)
	if len(rs.Problems) != 3 || len(rs.Sets[setCPPorts].Elems) != 4 || vx != 4 || len(rs.Sets) != len(render(guardedPolicy()).Sets) {
		t.Errorf("problems %q, ports %q, vxlan elements %d, sets %v", rs.Problems, rs.Sets[setCPPorts].Elems, vx, sortedKeys(rs.Sets))
	}
}

func TestHexRange(t *testing.T) {
	for in, want := range map[string]string{
		"192.168.100.64/26": "0xc0a86440-0xc0a8647f",
		"10.0.0.2/32":       "0x0a000002",
		"0.0.0.0/0":         "0x00000000-0xffffffff",
		"10.1.2.3/24":       "0x0a010200-0x0a0102ff",
	} {
		if got := hexRange(netip.MustParsePrefix(in)); got != want {
			t.Errorf("hexRange(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestControlPlaneAccess: by default the forward egress chain drops new
// traffic from workloads to the control plane before profile dispatch; the
// policy mode leaves it to the profiles; with HostAccessPolicy the
// workload-to-host chain keeps the guard in front of the profiles.
func TestControlPlaneAccess(t *testing.T) {
	guard4 := "ip daddr @" + setCPHosts4 + " meta l4proto . th dport @" + setCPPorts + " drop"
	e, f := newFakeEnforcer()
	chain := func(name string) []string { return fakeState(t, f)["chain "+name] }
	if _, err := e.Apply(guardedPolicy()); err != nil {
		t.Fatal(err)
	}
	fwd := chain(chainFwdEgress)
	gi := slices.Index(fwd, `iifname "cali*" `+guard4)
	if gi < 0 || gi > slices.Index(fwd, "iifname vmap @"+mapFromWl) || gi < slices.Index(fwd, "ct state invalid drop") {
		t.Errorf("default: fwd-from-wl = %q, want the guard after the conntrack rules and before dispatch", fwd)
	}
	if got := chain(chainWlToHost); got[len(got)-1] != "drop" || slices.Contains(got, guard4) {
		t.Errorf("default: wl-to-host = %q (the final drop covers the control plane)", got)
	}

	e.SetHostAccess(HostAccessPolicy)
	if _, err := e.Apply(guardedPolicy()); err != nil {
		t.Fatal(err)
	}
	toHost := chain(chainWlToHost)
	if i := slices.Index(toHost, "meta l4proto . th dport @"+setCPPorts+" drop"); i < 0 || i > slices.Index(toHost, "iifname vmap @"+mapFromWl) {
		t.Errorf("host access policy: wl-to-host = %q, want the guard before the profiles", toHost)
	}

	e.SetControlPlaneAccess(ControlPlanePolicy)
	st, err := e.Apply(guardedPolicy())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{chainFwdEgress, chainWlToHost} {
		for _, r := range chain(c) {
			if strings.Contains(r, setCPPorts) {
				t.Errorf("control plane policy: %s still has %q", c, r)
			}
		}
	}
	if !st.Full {
		t.Errorf("changing the control-plane access did not rewrite the table: %+v", st)
	}
	if st, _ := e.Apply(guardedPolicy()); st.Ops != 0 {
		t.Errorf("unchanged Apply: %+v", st)
	}
	for _, c := range []struct {
		in   string
		want ControlPlaneAccess
		ok   bool
	}{{"", ControlPlaneDrop, true}, {"drop", ControlPlaneDrop, true}, {"policy", ControlPlanePolicy, true}, {"open", "", false}} {
		got, err := ParseControlPlaneAccess(c.in)
		if got != c.want || (err == nil) != c.ok {
			t.Errorf("ParseControlPlaneAccess(%q) = %q, %v", c.in, got, err)
		}
	}
}

// TestGuardsChangeIncrementally: a node joining is one element per set it
// lands in; VXLAN coming on is the vxlan-in chain refilled. No full rewrite.
func TestGuardsChangeIncrementally(t *testing.T) {
	e, _ := newFakeEnforcer()
	p := guardedPolicy()
	p.VXLAN = calc.VXLANGuard{}
	if _, err := e.Apply(p); err != nil {
		t.Fatal(err)
	}
	p.ControlPlane.Hosts.V4 = append(slices.Clone(p.ControlPlane.Hosts.V4), netip.MustParseAddr("10.0.0.7"))
	st, err := e.Apply(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Full || st.Ops != 1 || st.ElementsAdded != 1 {
		t.Errorf("one more node: %+v, want one element", st)
	}
	p.VXLAN = guardedPolicy().VXLAN
	st, err = e.Apply(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Full || st.ChainsWritten != 1 || st.ElementsAdded != 4 {
		t.Errorf("VXLAN on: %+v, want vxlan-in refilled and 4 elements", st)
	}
	p.VXLAN.Senders = append(slices.Clone(p.VXLAN.Senders), calc.VXLANSender{Addr: netip.MustParseAddr("10.0.0.7"), Inner: prefixes("10.0.0.7/32")})
	st, err = e.Apply(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Full || st.Ops != 1 || st.ChainsWritten != 0 {
		t.Errorf("one more VXLAN sender: %+v, want one element", st)
	}
}
