package api

import (
	"net/netip"
	"strings"
	"testing"
)

func intp(n int) *int { return &n }

// TestValidationTable runs every validator on good and bad input. A bad
// case's want must appear in the error, and it always quotes or names the
// offending value so the user can find it.
func TestValidationTable(t *testing.T) {
	existing := []Pool{{CIDR: "10.0.0.0/8"}, {CIDR: "192.168.100.0/24"}, {CIDR: "fd00:1::/48"}}
	cidr := func(s string) func() error { return func() error { _, err := ParseCIDR(s); return err } }
	poolCIDR := func(s string) func() error { return func() error { _, err := ValidatePoolCIDR(s); return err } }
	pool := func(p Pool) func() error { return func() error { return ValidatePool(p, existing) } }
	encap := func(s string) func() error { return func() error { _, err := ParseEncapMode(s); return err } }
	name := func(kind, s string) func() error { return func() error { return ValidateName(kind, s) } }
	asn := func(s string) func() error { return func() error { _, err := ParseASNumber(s); return err } }
	wip := func(s string) func() error { return func() error { _, err := ParseWorkloadIP(s); return err } }
	node := func(n Node) func() error { return func() error { return ValidateNode(n) } }
	peer := func(p BGPPeer) func() error { return func() error { return ValidateBGPPeer(p) } }
	profile := func(p Profile) func() error { return func() error { return ValidateProfile(p) } }
	rule := func(r Rule) func() error { return func() error { return ValidateRule(r) } }

	tests := []struct {
		name string
		fn   func() error
		want string // "" for success
	}{
		// ParseCIDR
		{"cidr v4", cidr("192.168.0.0/16"), ""},
		{"cidr v6", cidr("fd00::/64"), ""},
		{"cidr v6 upper case", cidr("FD00::/64"), ""},
		{"cidr host /32", cidr("10.1.2.3/32"), ""},
		{"cidr default", cidr("0.0.0.0/0"), ""},
		{"cidr out of range", cidr("192.168.1.300/24"), `bad CIDR "192.168.1.300/24": IP address out of range`},
		{"cidr host bits", cidr("192.168.1.7/24"), `bad CIDR "192.168.1.7/24": host bits set; did you mean 192.168.1.0/24?`},
		{"cidr host bits v6", cidr("fd00::1/64"), `did you mean fd00::/64?`},
		{"cidr no prefix", cidr("10.0.0.1"), `bad CIDR "10.0.0.1": missing prefix length; did you mean 10.0.0.1/32?`},
		{"cidr no prefix v6", cidr("fd00::1"), `did you mean fd00::1/128?`},
		{"cidr empty prefix", cidr("10.0.0.0/"), `bad CIDR "10.0.0.0/": missing prefix length`},
		{"cidr long prefix", cidr("10.0.0.0/33"), `bad CIDR "10.0.0.0/33": prefix length /33 too long for IPv4 (max 32)`},
		{"cidr long prefix v6", cidr("fd00::/129"), `prefix length /129 too long for IPv6 (max 128)`},
		{"cidr leading zero", cidr("10.0.0.0/08"), `bad CIDR "10.0.0.0/08": bad prefix length "08"`},
		{"cidr sign", cidr("10.0.0.0/+8"), `bad prefix length "+8"`},
		{"cidr garbage", cidr("banana"), `bad CIDR "banana"`},
		{"cidr empty", cidr(""), `bad CIDR ""`},
		{"cidr short v4", cidr("10/8"), `bad CIDR "10/8"`},
		{"cidr zone", cidr("fe80::%eth0/64"), `zone "eth0" not allowed`},
		{"cidr v4-mapped", cidr("::ffff:10.0.0.0/104"), `IPv4-mapped IPv6 address; write it as 10.0.0.0`},
		{"cidr spaces", cidr(" 10.0.0.0/8"), `bad CIDR " 10.0.0.0/8"`},

		// ValidatePoolCIDR
		{"pool cidr seed", poolCIDR("192.168.100.0/24"), ""},
		{"pool cidr tiny", poolCIDR("10.9.9.9/32"), ""},
		{"pool cidr v6", poolCIDR("fd80:24e2:f998:72d6::/64"), ""},
		{"pool cidr loopback", poolCIDR("127.0.0.0/16"), `bad pool CIDR "127.0.0.0/16": overlaps the loopback range 127.0.0.0/8`},
		{"pool cidr contains loopback", poolCIDR("64.0.0.0/2"), `bad pool CIDR "64.0.0.0/2": overlaps the loopback range 127.0.0.0/8`},
		{"pool cidr link-local", poolCIDR("169.254.0.0/24"), `"169.254.0.0/24": overlaps the link-local range 169.254.0.0/16`},
		{"pool cidr multicast", poolCIDR("239.0.0.0/8"), `"239.0.0.0/8": overlaps the multicast range 224.0.0.0/4`},
		{"pool cidr this-network", poolCIDR("0.0.0.0/8"), `"0.0.0.0/8": overlaps the unspecified range 0.0.0.0/8`},
		{"pool cidr broadcast", poolCIDR("255.255.255.255/32"), `"255.255.255.255/32": overlaps the broadcast`},
		{"pool cidr default v4", poolCIDR("0.0.0.0/0"), `bad pool CIDR "0.0.0.0/0": a default route is not a pool`},
		{"pool cidr default v6", poolCIDR("::/0"), `bad pool CIDR "::/0": a default route is not a pool`},
		{"pool cidr v6 loopback", poolCIDR("::1/128"), `"::1/128": overlaps the loopback range ::1/128`},
		{"pool cidr v6 contains ::", poolCIDR("::/8"), `"::/8": overlaps the unspecified range ::/128`},
		{"pool cidr v6 link-local", poolCIDR("fe80::/64"), `"fe80::/64": overlaps the link-local range fe80::/10`},
		{"pool cidr v6 multicast", poolCIDR("ff02::/16"), `"ff02::/16": overlaps the multicast range ff00::/8`},
		{"pool cidr host bits", poolCIDR("192.168.100.1/24"), `did you mean 192.168.100.0/24?`},

		// ValidatePool
		{"pool seed ipip", pool(Pool{CIDR: "172.16.0.0/16", IPIPMode: EncapAlways, NATOutgoing: true}), ""},
		{"pool override same cidr", pool(Pool{CIDR: "192.168.100.0/24", NATOutgoing: true}), ""},
		{"pool vxlan v6", pool(Pool{CIDR: "fd00:2::/48", VXLANMode: EncapCrossSubnet}), ""},
		{"pool block size", pool(Pool{CIDR: "172.16.0.0/16", BlockSize: 24}), ""},
		{"pool empty modes", pool(Pool{CIDR: "172.16.0.0/16", IPIPMode: "", VXLANMode: ""}), ""},
		{"pool overlap inside", pool(Pool{CIDR: "10.1.0.0/16"}), `pool 10.1.0.0/16 overlaps existing pool 10.0.0.0/8`},
		{"pool overlap around", pool(Pool{CIDR: "192.168.0.0/16"}), `pool 192.168.0.0/16 overlaps existing pool 192.168.100.0/24`},
		{"pool overlap v6", pool(Pool{CIDR: "fd00::/16"}), `pool fd00::/16 overlaps existing pool fd00:1::/48`},
		{"pool both encaps", pool(Pool{CIDR: "172.16.0.0/16", IPIPMode: EncapAlways, VXLANMode: EncapCrossSubnet}), `pool 172.16.0.0/16: IPIP mode Always and VXLAN mode CrossSubnet both set; choose one encapsulation`},
		{"pool ipip v6", pool(Pool{CIDR: "fd00:2::/48", IPIPMode: EncapCrossSubnet}), `pool fd00:2::/48: IPIP mode CrossSubnet on an IPv6 pool`},
		{"pool bad ipip mode", pool(Pool{CIDR: "172.16.0.0/16", IPIPMode: "always"}), `pool 172.16.0.0/16: bad IPIP mode "always": use Never, Always or CrossSubnet`},
		{"pool bad vxlan mode", pool(Pool{CIDR: "172.16.0.0/16", VXLANMode: "sometimes"}), `bad VXLAN mode "sometimes"`},
		{"pool block too big", pool(Pool{CIDR: "172.16.0.0/16", BlockSize: 8}), `pool 172.16.0.0/16: bad block size 8: want 16-32 (default 26)`},
		{"pool block too small", pool(Pool{CIDR: "fd00:2::/48", BlockSize: 129}), `bad block size 129: want 48-128 (default 122)`},
		{"pool bad cidr", pool(Pool{CIDR: "172.16.0.0/33"}), `bad CIDR "172.16.0.0/33"`},

		// ParseEncapMode
		{"encap always", encap("Always"), ""},
		{"encap cross-subnet", encap("cross-subnet"), ""},
		{"encap crosssubnet", encap("CROSSSUBNET"), ""},
		{"encap never", encap("never"), ""},
		{"encap bad", encap("sometimes"), `bad encapsulation mode "sometimes": use always, cross-subnet or never`},
		{"encap empty", encap(""), `bad encapsulation mode ""`},

		// ValidateName
		{"name seed profile", name("profile", "PROF_1"), ""},
		{"name workload", name("workload", "worker-1"), ""},
		{"name node fqdn", name("node", "node1.example.com"), ""},
		{"name colon", name("tag", "team:web"), ""},
		{"name max", name("node", strings.Repeat("a", 253)), ""},
		{"name space", name("profile", "a b"), `bad profile name "a b": use letters, digits, '_', '-', '.', ':'`},
		{"name slash", name("profile", "a/b"), `bad profile name "a/b": use letters`},
		{"name empty", name("tag", ""), `bad tag name "": must not be empty`},
		{"name leading dash", name("node", "-n"), `bad node name "-n": must start with a letter or digit`},
		{"name dotdot", name("workload", ".."), `bad workload name "..": must start with a letter or digit`},
		{"name unicode", name("tag", "café"), `bad tag name "café"`},
		{"name too long", name("node", strings.Repeat("a", 254)), `254 characters, at most 253`},

		// ParseASNumber
		{"asn private", asn("64512"), ""},
		{"asn max", asn("4294967295"), ""},
		{"asn asdot", asn("1.10"), ""},
		{"asn zero", asn("0"), `bad AS number "0": AS 0 is reserved`},
		{"asn asdot zero", asn("0.0"), `bad AS number "0.0": AS 0 is reserved`},
		{"asn overflow", asn("4294967296"), `bad AS number "4294967296": use 1-4294967295`},
		{"asn negative", asn("-1"), `bad AS number "-1"`},
		{"asn garbage", asn("AS64512"), `bad AS number "AS64512"`},
		{"asn empty", asn(""), `bad AS number ""`},
		{"asn asdot big", asn("65536.1"), `bad AS number "65536.1": asdot form is two numbers 0-65535`},
		{"asn asdot three", asn("1.2.3"), `bad AS number "1.2.3"`},

		// ParseWorkloadIP
		{"ip seed", wip("192.168.100.1"), ""},
		{"ip v6", wip("fd80:24e2:f998:72d6::1"), ""},
		{"ip prefix", wip("192.168.100.1/32"), `bad workload IP "192.168.100.1/32": want an address without a prefix length, e.g. "192.168.100.1"`},
		{"ip unspecified", wip("0.0.0.0"), `bad workload IP "0.0.0.0": the unspecified address`},
		{"ip unspecified v6", wip("::"), `bad workload IP "::": the unspecified address`},
		{"ip loopback", wip("127.0.0.1"), `bad workload IP "127.0.0.1": a loopback address`},
		{"ip loopback v6", wip("::1"), `bad workload IP "::1": a loopback address`},
		{"ip multicast", wip("224.0.0.1"), `bad workload IP "224.0.0.1": a multicast address`},
		{"ip multicast v6", wip("ff02::1"), `bad workload IP "ff02::1": a multicast address`},
		{"ip link-local", wip("169.254.1.1"), `bad workload IP "169.254.1.1": a link-local address`},
		{"ip link-local v6", wip("fe80::1"), `bad workload IP "fe80::1": a link-local address`},
		{"ip broadcast", wip("255.255.255.255"), `bad workload IP "255.255.255.255": the broadcast address`},
		{"ip garbage", wip("auto"), `bad workload IP "auto"`},
		{"ip out of range", wip("10.0.0.256"), `bad workload IP "10.0.0.256": IP address out of range`},

		// ValidateNode
		{"node seed", node(Node{Name: "node1", IPv4: "192.168.236.130/24"}), ""},
		{"node dual", node(Node{Name: "node1", IPv4: "10.0.0.1/24", IPv6: "fd00::1/64", ASNumber: 65001}), ""},
		{"node no address", node(Node{Name: "node1"}), ""},
		{"node route reflector", node(Node{Name: "rr1", IPv4: "10.0.0.9/24", RouteReflector: true, ClusterID: "1.0.0.1"}), ""},
		{"node cluster id without reflector", node(Node{Name: "n1", IPv4: "10.0.0.9/24", ClusterID: "1.0.0.1"}), "node n1: a cluster ID is for a route reflector"},
		{"node bad cluster id", node(Node{Name: "rr1", IPv4: "10.0.0.9/24", RouteReflector: true, ClusterID: "fd00::1"}), `node rr1: cluster ID "fd00::1": want an IPv4 address`},
		{"node bad name", node(Node{Name: "node 1"}), `bad node name "node 1"`},
		{"node v4 without prefix", node(Node{Name: "n", IPv4: "10.0.0.1"}), `node n: bad IPv4 "10.0.0.1": want an address with its subnet prefix, e.g. 10.0.0.1/24`},
		{"node v4 is v6", node(Node{Name: "n", IPv4: "fd00::1/64"}), `node n: bad IPv4 "fd00::1/64": that is an IPv6 address`},
		{"node v6 is v4", node(Node{Name: "n", IPv6: "10.0.0.1/24"}), `node n: bad IPv6 "10.0.0.1/24": that is an IPv4 address`},
		{"node v4 loopback", node(Node{Name: "n", IPv4: "127.0.0.1/8"}), `bad IPv4 "127.0.0.1/8": a loopback address`},
		{"node v4 /0", node(Node{Name: "n", IPv4: "10.0.0.1/0"}), `bad IPv4 "10.0.0.1/0": prefix length /0 is not a subnet`},
		{"node v4 /33", node(Node{Name: "n", IPv4: "10.0.0.1/33"}), `bad IPv4 "10.0.0.1/33": prefix length /33 too long`},

		// ValidateBGPPeer
		{"peer global", peer(BGPPeer{IP: "192.168.236.1", ASNumber: 64513}), ""},
		{"peer node", peer(BGPPeer{IP: "fd00::1", ASNumber: 64513, Node: "node1"}), ""},
		{"peer no asn", peer(BGPPeer{IP: "10.0.0.1"}), `BGP peer 10.0.0.1: missing AS number`},
		{"peer bad ip", peer(BGPPeer{IP: "10.0.0.1/32", ASNumber: 1}), `bad BGP peer IP "10.0.0.1/32"`},
		{"peer loopback", peer(BGPPeer{IP: "127.0.0.1", ASNumber: 1}), `bad BGP peer IP "127.0.0.1": a loopback address`},
		{"peer bad node", peer(BGPPeer{IP: "10.0.0.1", ASNumber: 1, Node: "a/b"}), `BGP peer 10.0.0.1: bad node name "a/b"`},

		// ValidateProfile
		{"profile seed", profile(NewProfile("PROF_1")), ""},
		{"profile no rules", profile(Profile{Name: "P"}), ""},
		{"profile bad name", profile(NewProfile("PROF 1")), `bad profile name "PROF 1"`},
		{"profile bad tag", profile(Profile{Name: "P", Tags: []string{"ok", "no/t"}}), `profile P: bad tag name "no/t"`},
		{"profile dup tag", profile(Profile{Name: "P", Tags: []string{"A", "A"}}), `profile P: tag "A" listed twice`},
		{"profile bad inbound", profile(Profile{Name: "P", Inbound: []Rule{{Action: "allow"}, {Action: "permit"}}}), `profile P: inbound rule 2: bad action "permit": use allow or deny`},
		{"profile bad outbound", profile(Profile{Name: "P", Outbound: []Rule{{Action: "allow", Dst: EntityMatch{CIDR: "10.0.0.1/8"}}}}), `profile P: outbound rule 1: bad CIDR "10.0.0.1/8"`},

		// ValidateRule
		{"rule allow", rule(Rule{Action: "allow"}), ""},
		{"rule icmp", rule(Rule{Action: "deny", Protocol: "icmp", ICMPType: intp(8), ICMPCode: intp(0), Dst: EntityMatch{CIDR: "10.0.0.0/8"}}), ""},
		{"rule ports", rule(Rule{Action: "allow", Protocol: "tcp", Dst: EntityMatch{Tag: "WEB", Ports: []PortRange{{80, 80}, {1000, 2000}}}}), ""},
		{"rule bad action", rule(Rule{Action: "accept"}), `rule: bad action "accept"`},
		{"rule bad protocol", rule(Rule{Action: "allow", Protocol: "sctp"}), `rule: bad protocol "sctp"`},
		{"rule ports no proto", rule(Rule{Action: "allow", Dst: EntityMatch{Ports: []PortRange{{80, 80}}}}), `rule: to ports 80 need protocol tcp or udp`},
		{"rule ports icmp", rule(Rule{Action: "allow", Protocol: "icmp", Src: EntityMatch{Ports: []PortRange{{1, 2}}}}), `rule: from ports 1:2 need protocol tcp or udp, not icmp`},
		{"rule reversed range", rule(Rule{Action: "allow", Protocol: "tcp", Dst: EntityMatch{Ports: []PortRange{{2000, 1000}}}}), `rule: bad to port range 2000:1000`},
		{"rule icmp type on tcp", rule(Rule{Action: "allow", Protocol: "tcp", ICMPType: intp(8)}), `rule: icmp type 8 needs protocol icmp or icmpv6, not tcp`},
		{"rule code no type", rule(Rule{Action: "allow", Protocol: "icmp", ICMPCode: intp(4)}), `rule: icmp code 4 needs an icmp type`},
		{"rule type range", rule(Rule{Action: "allow", Protocol: "icmpv6", ICMPType: intp(1000)}), `rule: bad icmp type 1000: want 0-255`},
		{"rule code range", rule(Rule{Action: "allow", Protocol: "icmpv6", ICMPType: intp(1), ICMPCode: intp(-3)}), `rule: bad icmp code -3`},
		{"rule bad tag", rule(Rule{Action: "allow", Src: EntityMatch{Tag: "a,b"}}), `rule: bad tag name "a,b"`},
		{"rule host bits", rule(Rule{Action: "allow", Src: EntityMatch{CIDR: "10.0.0.5/24"}}), `rule: bad CIDR "10.0.0.5/24": host bits set; did you mean 10.0.0.0/24?`},
		{"rule icmp v6 cidr", rule(Rule{Action: "allow", Protocol: "icmp", Src: EntityMatch{CIDR: "fd00::/64"}}), `rule: icmp is IPv4 only but cidr fd00::/64 is IPv6; use icmpv6`},
		{"rule icmpv6 v4 cidr", rule(Rule{Action: "allow", Protocol: "icmpv6", Dst: EntityMatch{CIDR: "10.0.0.0/8"}}), `rule: icmpv6 is IPv6 only but cidr 10.0.0.0/8 is IPv4; use icmp`},
		{"rule mixed families", rule(Rule{Action: "allow", Src: EntityMatch{CIDR: "10.0.0.0/8"}, Dst: EntityMatch{CIDR: "fd00::/64"}}), `rule: from cidr 10.0.0.0/8 and to cidr fd00::/64 are different IP versions`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.fn()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want == "":
			case err == nil:
				t.Fatalf("no error, want %q", tt.want)
			case !strings.Contains(err.Error(), tt.want):
				t.Fatalf("error %q\n does not contain %q", err, tt.want)
			case strings.Contains(err.Error(), "\n"):
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}

func TestParseCIDRValue(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/8":    "10.0.0.0/8",
		"FD00::/8":      "fd00::/8",
		"0.0.0.0/0":     "0.0.0.0/0",
		"1.2.3.4/32":    "1.2.3.4/32",
		"2001:DB8::/32": "2001:db8::/32",
	} {
		p, err := ParseCIDR(in)
		if err != nil || p.String() != want {
			t.Errorf("ParseCIDR(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
}

func TestDefaultBlockSize(t *testing.T) {
	for in, want := range map[string]int{
		"192.168.100.0/24": 26,
		"10.0.0.0/8":       26,
		"10.0.0.0/28":      28,
		"10.0.0.1/32":      32,
		"fd00::/48":        122,
		"fd00::/126":       126,
	} {
		if got := DefaultBlockSize(netip.MustParsePrefix(in)); got != want {
			t.Errorf("DefaultBlockSize(%s) = %d, want %d", in, got, want)
		}
	}
}

func TestParseEncapModeValues(t *testing.T) {
	for in, want := range map[string]EncapMode{
		"always": EncapAlways, "Always": EncapAlways,
		"crosssubnet": EncapCrossSubnet, "Cross-Subnet": EncapCrossSubnet, "CrossSubnet": EncapCrossSubnet,
		"never": EncapNever, "NEVER": EncapNever,
	} {
		if got, err := ParseEncapMode(in); err != nil || got != want {
			t.Errorf("ParseEncapMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestParseASNumberValues(t *testing.T) {
	for in, want := range map[string]uint32{
		"1": 1, "64512": 64512, "4294967295": 4294967295,
		"1.10": 65546, "0.1": 1, "65535.65535": 4294967295,
	} {
		if got, err := ParseASNumber(in); err != nil || got != want {
			t.Errorf("ParseASNumber(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

func TestParseNodeAddrKeepsHostBits(t *testing.T) {
	p, err := ParseNodeAddr("192.168.236.130/24")
	if err != nil {
		t.Fatal(err)
	}
	if p.Addr() != netip.MustParseAddr("192.168.236.130") || p.Bits() != 24 {
		t.Fatalf("got %v", p)
	}
	if _, err := ParseNodeAddr("x/24"); err == nil || !strings.Contains(err.Error(), `bad node address "x/24"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestValidatePoolIgnoresUnparsableExisting(t *testing.T) {
	if err := ValidatePool(Pool{CIDR: "10.0.0.0/16"}, []Pool{{CIDR: "garbage"}}); err != nil {
		t.Fatal(err)
	}
}

func TestErrorsQuoteLongValuesShortly(t *testing.T) {
	long := strings.Repeat("9", 100000)
	for _, err := range []error{
		ValidateName("tag", long),
		func() error { _, err := ParseCIDR(long); return err }(),
		func() error { _, err := ParseASNumber(long); return err }(),
	} {
		if err == nil || len(err.Error()) > 300 {
			t.Errorf("err = %.300v (len %d)", err, len(err.Error()))
		}
	}
}

func FuzzParseCIDR(f *testing.F) {
	for _, s := range []string{
		"10.0.0.0/8", "192.168.1.300/24", "10.0.0.1/8", "fd00::/64", "FD00::1/128",
		"::ffff:1.2.3.4/128", "fe80::%eth0/64", "0.0.0.0/0", "::/0", "10.0.0.0/08",
		"1.2.3.4", "/", "", "1.2.3.4/32/1", "2001:db8::1:0:0:1/128",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseCIDR(s)
		_, _ = ValidatePoolCIDR(s)
		_, _ = ParseNodeAddr(s)
		_, _ = ParseWorkloadIP(s)
		if err != nil {
			if p.IsValid() {
				t.Fatalf("ParseCIDR(%q) returned %v with error %v", s, p, err)
			}
			return
		}
		if p != p.Masked() {
			t.Fatalf("ParseCIDR(%q) = %v, not masked", s, p)
		}
		again, err := ParseCIDR(p.String())
		if err != nil || again != p {
			t.Fatalf("ParseCIDR(%q) = %v, but its String %q parses to %v, %v", s, p, p.String(), again, err)
		}
		// IPv4 has one spelling per prefix; IPv6 may legitimately vary
		// in case, zero padding and where "::" goes.
		if p.Addr().Is4() && s != p.String() {
			t.Fatalf("ParseCIDR(%q) accepted non-canonical text; canonical is %q", s, p.String())
		}
	})
}

func TestPoolsAndNodeAddresses(t *testing.T) {
	nodes := []Node{
		{Name: "host2", IPv4: "10.0.0.2/24", IPv6: "fd00::2/64"},
		{Name: "host1", IPv4: "10.0.0.1/24"},
		{Name: "bare", IPv4: "10.9.0.1"}, // no prefix length: taken as it is
		{Name: "junk", IPv4: "garbage"},
	}
	for _, c := range []struct {
		pool string
		want string // "" for accepted
	}{
		{"10.0.0.0/24", "pool 10.0.0.0/24 contains node host1's address 10.0.0.1"},
		{"10.0.0.2/32", "node host2's address 10.0.0.2"},
		{"10.0.0.0/8", "node bare's address 10.9.0.1"},
		{"fd00::/64", "node host2's address fd00::2"},
		{"10.0.1.0/24", ""},
		{"192.168.0.0/16", ""},
	} {
		err := CheckPoolNodes(netip.MustParsePrefix(c.pool), nodes)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("CheckPoolNodes(%s) = %v, want %q", c.pool, err, c.want)
		}
	}
	pools := []Pool{{CIDR: "192.168.100.0/24"}, {CIDR: "fd80::/64"}, {CIDR: "junk"}}
	for _, c := range []struct {
		addr string
		want string
	}{
		{"192.168.100.7", "node n: address 192.168.100.7 is inside pool 192.168.100.0/24"},
		{"fd80::9", "inside pool fd80::/64"},
		{"10.0.0.1", ""},
	} {
		err := CheckNodeInPools("n", netip.MustParseAddr(c.addr), pools)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("CheckNodeInPools(%s) = %v, want %q", c.addr, err, c.want)
		}
	}
	if v4, v6 := NodeAddrs(nodes[0]); v4 != netip.MustParseAddr("10.0.0.2") || v6 != netip.MustParseAddr("fd00::2") {
		t.Errorf("NodeAddrs = %v %v", v4, v6)
	}
	if v4, v6 := NodeAddrs(nodes[3]); v4.IsValid() || v6.IsValid() {
		t.Errorf("NodeAddrs(junk) = %v %v", v4, v6)
	}
}
