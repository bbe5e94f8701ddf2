package nft

import (
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
)

func TestObjName(t *testing.T) {
	ident := regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_.-]*$`)
	long := strings.Repeat("very-long.profile:name", 20)
	cases := []struct{ prefix, name, wantStart string }{
		{"prof-in-", "web", "prof-in-web-"},
		{"prof-in-", "a.b", "prof-in-a.b-"},
		{"prof-in-", "a:b", "prof-in-a_b-"},
		{"tag4-", "ns/app x", "tag4-ns_app_x-"},
		{"tag4-", "héllo", "tag4-h__llo-"},
		{"ep-out-", "cali1234567890a", "ep-out-cali1234567890a-"},
		{"prof-out-", long, "prof-out-" + strings.ReplaceAll(long[:maxReadable], ":", "_") + "-"},
	}
	seen := map[string]string{}
	for _, c := range cases {
		got := objName(c.prefix, c.name)
		if !strings.HasPrefix(got, c.wantStart) || len(got) != len(c.wantStart)+hashLen {
			t.Errorf("objName(%q, %q) = %q, want %q + %d hex", c.prefix, c.name, got, c.wantStart, hashLen)
		}
		if !ident.MatchString(got) || len(got) > 64 {
			t.Errorf("objName(%q, %q) = %q: not a short nft identifier", c.prefix, c.name, got)
		}
		if objName(c.prefix, c.name) != got {
			t.Errorf("objName(%q, %q) is not deterministic", c.prefix, c.name)
		}
		if other, dup := seen[got]; dup {
			t.Errorf("objName collision: %q and %q -> %q", other, c.name, got)
		}
		seen[got] = c.name
	}
	// Names that sanitize alike, or share a long start, stay apart.
	if objName("x-", "a.b") == objName("x-", "a:b") || objName("x-", "a:b") == objName("x-", "a_b") {
		t.Error("sanitized-alike names collide")
	}
	if objName("x-", long+"1") == objName("x-", long+"2") {
		t.Error("long names with a common start collide")
	}
}

func TestValidIfaceName(t *testing.T) {
	for name, want := range map[string]bool{
		"cali1234567890a": true, "cali0": true, "eth0.100": true,
		"": false, "cali1234567890ab": false, `ca"li`: false, "cali*": false,
		"a b": false, "a/b": false, "a:b": false, "..": false,
	} {
		if got := validIfaceName(name); got != want {
			t.Errorf("validIfaceName(%q) = %v, want %v", name, got, want)
		}
	}
}

func intp(i int) *int { return &i }

func TestRenderRule(t *testing.T) {
	t4, t6 := tagSet4("web.front"), tagSet6("web.front")
	d4, d6 := tagSet4("db:main"), tagSet6("db:main")
	cases := []struct {
		name string
		rule api.Rule
		want []string
		err  string
	}{
		{"allow all", api.Rule{Action: "allow"}, []string{"accept"}, ""},
		{"deny all", api.Rule{Action: "deny"}, []string{"drop"}, ""},
		{"tcp", api.Rule{Action: "allow", Protocol: "tcp"}, []string{"meta l4proto tcp accept"}, ""},
		{"udp dst ports merged", api.Rule{Action: "allow", Protocol: "udp",
			Dst: api.EntityMatch{Ports: []api.PortRange{{Min: 53, Max: 53}, {Min: 1000, Max: 2000}, {Min: 1500, Max: 2500}, {Min: 52, Max: 52}}}},
			[]string{"udp dport { 52-53, 1000-2500 } accept"}, ""},
		{"tcp src and dst ports", api.Rule{Action: "deny", Protocol: "tcp",
			Src: api.EntityMatch{Ports: []api.PortRange{{Min: 1024, Max: 65535}}},
			Dst: api.EntityMatch{Ports: []api.PortRange{{Min: 22, Max: 22}}}},
			[]string{"tcp sport 1024-65535 tcp dport 22 drop"}, ""},
		{"tag: one rule per family", api.Rule{Action: "allow", Src: api.EntityMatch{Tag: "web.front"}},
			[]string{"ip saddr @" + t4 + " accept", "ip6 saddr @" + t6 + " accept"}, ""},
		{"src and dst tags with port", api.Rule{Action: "allow", Protocol: "tcp",
			Src: api.EntityMatch{Tag: "web.front"},
			Dst: api.EntityMatch{Tag: "db:main", Ports: []api.PortRange{{Min: 5432, Max: 5432}}}},
			[]string{
				"ip saddr @" + t4 + " ip daddr @" + d4 + " tcp dport 5432 accept",
				"ip6 saddr @" + t6 + " ip6 daddr @" + d6 + " tcp dport 5432 accept",
			}, ""},
		{"v4 cidr", api.Rule{Action: "allow", Src: api.EntityMatch{CIDR: "10.1.0.0/16"}},
			[]string{"ip saddr 10.1.0.0/16 accept"}, ""},
		{"v6 cidr and tag", api.Rule{Action: "deny", Protocol: "udp",
			Src: api.EntityMatch{Tag: "web.front"}, Dst: api.EntityMatch{CIDR: "fd00::/8"}},
			[]string{"ip6 saddr @" + t6 + " ip6 daddr fd00::/8 meta l4proto udp drop"}, ""},
		{"icmp is IPv4", api.Rule{Action: "allow", Protocol: "icmp"},
			[]string{"meta nfproto ipv4 meta l4proto icmp accept"}, ""},
		{"icmp type code", api.Rule{Action: "allow", Protocol: "icmp", ICMPType: intp(8), ICMPCode: intp(0)},
			[]string{"meta nfproto ipv4 icmp type 8 icmp code 0 accept"}, ""},
		{"icmpv6 type from tag", api.Rule{Action: "allow", Protocol: "icmpv6", ICMPType: intp(128),
			Src: api.EntityMatch{Tag: "web.front"}},
			[]string{"ip6 saddr @" + t6 + " icmpv6 type 128 accept"}, ""},
		{"icmpv6 any", api.Rule{Action: "deny", Protocol: "icmpv6"},
			[]string{"meta nfproto ipv6 meta l4proto ipv6-icmp drop"}, ""},
		{"bad action", api.Rule{Action: "permit"}, nil, "bad action"},
		{"ports without protocol", api.Rule{Action: "allow", Dst: api.EntityMatch{Ports: []api.PortRange{{Min: 1, Max: 1}}}}, nil, "need protocol"},
		{"icmp with v6 cidr", api.Rule{Action: "allow", Protocol: "icmp", Dst: api.EntityMatch{CIDR: "fd00::/8"}}, nil, "IPv4 only"},
		{"code without type", api.Rule{Action: "allow", Protocol: "icmp", ICMPCode: intp(1)}, nil, "needs an icmp type"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := renderRule(c.rule)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want one containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(c.want, "\n  "))
			}
		})
	}
}

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

// samplePolicy: two endpoints, two profiles with tags, ports, icmp, cidrs and
// a deny rule before an allow.
func samplePolicy() calc.Policy {
	return calc.Policy{
		Endpoints: []calc.EndpointPolicy{
			{Interface: "caliaaaa", Addrs: addrs("10.65.0.1", "fd00::1"), Profiles: []string{"web.front"}},
			{Interface: "calibbbb", Addrs: addrs("10.65.0.2"), Profiles: []string{"db:main", "web.front"}},
		},
		Profiles: map[string]api.Profile{
			"web.front": {
				Name: "web.front", Tags: []string{"web.front"},
				Inbound: []api.Rule{
					{Action: "deny", Protocol: "tcp", Dst: api.EntityMatch{Ports: []api.PortRange{{Min: 22, Max: 22}}}},
					{Action: "allow", Src: api.EntityMatch{Tag: "web.front"}},
					{Action: "allow", Protocol: "icmp", ICMPType: intp(8)},
				},
				Outbound: []api.Rule{{Action: "allow"}},
			},
			"db:main": {
				Name: "db:main", Tags: []string{"db:main"},
				Inbound: []api.Rule{
					{Action: "allow", Protocol: "tcp", Src: api.EntityMatch{Tag: "web.front"},
						Dst: api.EntityMatch{Ports: []api.PortRange{{Min: 5432, Max: 5432}}}},
					{Action: "allow", Src: api.EntityMatch{CIDR: "192.168.0.0/16"}},
				},
				Outbound: []api.Rule{
					{Action: "deny", Dst: api.EntityMatch{CIDR: "10.0.0.0/8"}},
					{Action: "allow"},
				},
			},
		},
		TagMembers: map[string]calc.AddrSet{
			"web.front": {V4: addrs("10.65.0.1", "10.65.0.2", "10.65.1.9"), V6: addrs("fd00::1")},
			"db:main":   {V4: addrs("10.65.0.2")},
		},
		MasqueradePools: prefixes("10.65.0.0/16"),
		AllPools:        prefixes("10.65.0.0/16", "10.66.0.0/16", "10.66.1.0/24", "fd00::/48"),
	}
}

func TestRenderPolicy(t *testing.T) {
	rs := render(samplePolicy())
	if len(rs.Problems) != 0 {
		t.Fatalf("problems: %v", rs.Problems)
	}
	wa, wb := tagSet4("web.front"), tagSet6("web.front")
	want := map[string][]string{
		endpointOutChain("caliaaaa"): {"jump " + profileOutChain("web.front"), dropStatement(endpointOutChain("caliaaaa"), 0)},
		endpointInChain("caliaaaa"):  {"jump " + profileInChain("web.front"), dropStatement(endpointInChain("caliaaaa"), 0)},
		endpointOutChain("calibbbb"): {
			"jump " + profileOutChain("db:main"), "jump " + profileOutChain("web.front"), dropStatement(endpointOutChain("calibbbb"), 0)},
		endpointInChain("calibbbb"): {
			"jump " + profileInChain("db:main"), "jump " + profileInChain("web.front"), dropStatement(endpointInChain("calibbbb"), 0)},
		profileInChain("web.front"): {
			"tcp dport 22 " + dropStatement(profileInChain("web.front"), 1),
			"ip saddr @" + wa + " accept", "ip6 saddr @" + wb + " accept",
			"meta nfproto ipv4 icmp type 8 accept"},
		profileOutChain("web.front"): {"accept"},
		profileInChain("db:main"): {
			"ip saddr @" + wa + " tcp dport 5432 accept", "ip6 saddr @" + wb + " tcp dport 5432 accept",
			"ip saddr 192.168.0.0/16 accept"},
		profileOutChain("db:main"): {"ip daddr 10.0.0.0/8 " + dropStatement(profileOutChain("db:main"), 1), "accept"},
		// No VXLAN pool: the skeleton's jump for the VXLAN port finds nothing.
		chainVXLANIn: nil,
		// No published ports: empty, but present (the skeleton jumps to it).
		chainPublish: nil,
	}
	if len(rs.Chains) != len(want) {
		t.Errorf("%d chains, want %d: %v", len(rs.Chains), len(want), sortedKeys(rs.Chains))
	}
	for name, rules := range want {
		if got := rs.Chains[name].Rules; !slices.Equal(got, rules) {
			t.Errorf("chain %s:\n  got  %q\n  want %q", name, got, rules)
		}
	}
	if c := rs.Chains[profileInChain("db:main")].Comment; c != "profile db:main inbound" {
		t.Errorf("comment %q", c)
	}

	wantSets := map[string][]string{
		tagSet4("web.front"): {"10.65.0.1", "10.65.0.2", "10.65.1.9"},
		tagSet6("web.front"): {"fd00::1"},
		// db:main is a profile's tag but no rule names it: no set.
		setMasq4:  {"10.65.0.0/16"},
		setMasq6:  nil,
		setPools4: {"10.65.0.0/16", "10.66.0.0/16"}, // 10.66.1.0/24 is inside 10.66.0.0/16
		setPools6: {"fd00::/48"},
		// Anti-spoofing: each workload's own addresses, by interface.
		setWlSrc4: {`"caliaaaa" . 10.65.0.1`, `"calibbbb" . 10.65.0.2`},
		setWlSrc6: {`"caliaaaa" . fd00::1`},
		// No control plane given: empty, but present, since the
		// skeleton's rules name them. No VXLAN senders: no vxlan-src-N
		// set (only vxlan-in names them).
		setCPHosts4: nil,
		setCPHosts6: nil,
		setCPPorts:  nil,
		setPub4:     nil,
		setWlGroups: nil, // no endpoint has a device group
	}
	if len(rs.Sets) != len(wantSets) {
		t.Errorf("sets %v, want %d", sortedKeys(rs.Sets), len(wantSets))
	}
	for name, elems := range wantSets {
		s, ok := rs.Sets[name]
		if !ok {
			t.Errorf("no set %s", name)
			continue
		}
		if !slices.Equal(s.Elems, elems) {
			t.Errorf("set %s = %v, want %v", name, s.Elems, elems)
		}
	}
	if !rs.Sets[setPools4].Interval || rs.Sets[tagSet4("web.front")].Interval {
		t.Error("pool sets must be interval sets, tag sets plain")
	}
	wantFrom := map[string]string{"caliaaaa": endpointOutChain("caliaaaa"), "calibbbb": endpointOutChain("calibbbb")}
	wantTo := map[string]string{"caliaaaa": endpointInChain("caliaaaa"), "calibbbb": endpointInChain("calibbbb")}
	if !reflect.DeepEqual(rs.FromWl, wantFrom) || !reflect.DeepEqual(rs.ToWl, wantTo) {
		t.Errorf("dispatch %v %v", rs.FromWl, rs.ToWl)
	}
}

func TestRenderFailsClosed(t *testing.T) {
	p := calc.Policy{
		Endpoints: []calc.EndpointPolicy{
			{Interface: "cali1", Addrs: addrs("10.0.0.1"), Profiles: []string{"a", "missing", "b"}},
			{Interface: "cali1", Addrs: addrs("10.0.0.9"), Profiles: []string{"a"}},
			{Interface: `cali"x`, Profiles: []string{"a"}},
			{Interface: "cali2"}, // no profile, no address
		},
		Profiles: map[string]api.Profile{
			"a": {Name: "a", Inbound: []api.Rule{
				{Action: "allow", Protocol: "tcp"},
				{Action: "deny", Protocol: "icmp", Src: api.EntityMatch{CIDR: "fd00::/8"}},
				{Action: "allow"},
			}},
			"b": {Name: "b"},
		},
	}
	rs := render(p)
	if got := rs.Chains[profileInChain("a")].Rules; !slices.Equal(got, []string{"meta l4proto tcp accept", dropStatement(profileInChain("a"), 2), "accept"}) {
		t.Errorf("bad rule not enforced as drop: %q", got)
	}
	if got := rs.Chains[endpointOutChain("cali1")].Rules; !slices.Equal(got, []string{
		"jump " + profileOutChain("a"), dropStatement(endpointOutChain("cali1"), 0)}) {
		t.Errorf("missing profile must stop evaluation: %q", got)
	}
	if got := rs.Chains[endpointOutChain("cali2")].Rules; !slices.Equal(got, []string{dropStatement(endpointOutChain("cali2"), 0)}) {
		t.Errorf("endpoint without profile: %q", got)
	}
	// Only the first entry of a duplicate may send, from its own address; a
	// bad interface name and an endpoint without addresses send nothing.
	if got := rs.Sets[setWlSrc4].Elems; !slices.Equal(got, []string{`"cali1" . 10.0.0.1`}) {
		t.Errorf("anti-spoofing set: %q", got)
	}
	if got := rs.Sets[setWlSrc6].Elems; len(got) != 0 {
		t.Errorf("anti-spoofing set (IPv6): %q", got)
	}
	if got := rs.Chains[endpointInChain("cali2")].Rules; !slices.Equal(got, []string{dropStatement(endpointInChain("cali2"), 0)}) {
		t.Errorf("endpoint without profile: %q", got)
	}
	if len(rs.FromWl) != 2 {
		t.Errorf("dispatch %v: want cali1 and cali2 only", rs.FromWl)
	}
	if len(rs.Problems) != 4 {
		t.Errorf("want 4 problems (bad rule, missing profile, duplicate, bad name), got %q", rs.Problems)
	}
}

func TestRenderDeterministic(t *testing.T) {
	a, b := render(samplePolicy()), render(samplePolicy())
	if !reflect.DeepEqual(a, b) {
		t.Error("render is not deterministic")
	}
	// Member order in the input does not matter.
	p := samplePolicy()
	slices.Reverse(p.TagMembers["web.front"].V4)
	if c := render(p); !reflect.DeepEqual(a.Sets, c.Sets) {
		t.Error("set elements depend on input order")
	}
}

func TestPortSet(t *testing.T) {
	for _, c := range []struct {
		in   []api.PortRange
		want string
	}{
		{[]api.PortRange{{Min: 80, Max: 80}}, "80"},
		{[]api.PortRange{{Min: 80, Max: 80}, {Min: 80, Max: 80}}, "80"},
		{[]api.PortRange{{Min: 443, Max: 443}, {Min: 80, Max: 80}}, "{ 80, 443 }"},
		{[]api.PortRange{{Min: 1, Max: 10}, {Min: 11, Max: 20}}, "1-20"},
		{[]api.PortRange{{Min: 0, Max: 65535}, {Min: 65535, Max: 65535}}, "0-65535"},
	} {
		if got := portSet(c.in); got != c.want {
			t.Errorf("portSet(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestComment(t *testing.T) {
	if got := comment(`a"b\c` + "\n" + "é"); got != "a_b_c___" {
		t.Errorf("comment = %q", got)
	}
	if got := comment(strings.Repeat("x", 300)); len(got) > 128 {
		t.Errorf("comment too long: %d", len(got))
	}
}
