package rules

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
)

func intp(n int) *int { return &n }

func ports(rs ...api.PortRange) []api.PortRange { return rs }

func one(p uint16) api.PortRange { return api.PortRange{Min: p, Max: p} }

func TestParseGood(t *testing.T) {
	tests := []struct {
		in   string
		want api.Rule
		// text is Format's output when it differs from in.
		text string
	}{
		{in: "allow", want: api.Rule{Action: "allow"}},
		{in: "deny", want: api.Rule{Action: "deny"}},
		{in: "allow from tag PROF_1", want: api.Rule{Action: "allow", Src: api.EntityMatch{Tag: "PROF_1"}}},
		{
			in: "allow tcp from tag WEB to ports 80,443",
			want: api.Rule{Action: "allow", Protocol: "tcp",
				Src: api.EntityMatch{Tag: "WEB"}, Dst: api.EntityMatch{Ports: ports(one(80), one(443))}},
		},
		{
			in: "deny icmp type 8 code 0 to cidr 10.0.0.0/8",
			want: api.Rule{Action: "deny", Protocol: "icmp", ICMPType: intp(8), ICMPCode: intp(0),
				Dst: api.EntityMatch{CIDR: "10.0.0.0/8"}},
		},
		{
			in: "allow udp from ports 53 cidr 192.168.0.0/16",
			want: api.Rule{Action: "allow", Protocol: "udp",
				Src: api.EntityMatch{Ports: ports(one(53)), CIDR: "192.168.0.0/16"}},
		},
		{
			in: "deny icmpv6 type 128 from cidr fd00::/64",
			want: api.Rule{Action: "deny", Protocol: "icmpv6", ICMPType: intp(128),
				Src: api.EntityMatch{CIDR: "fd00::/64"}},
		},
		{in: "allow icmp", want: api.Rule{Action: "allow", Protocol: "icmp"}},
		{in: "allow icmp type 3", want: api.Rule{Action: "allow", Protocol: "icmp", ICMPType: intp(3)}},
		{in: "allow icmp type 255 code 255", want: api.Rule{Action: "allow", Protocol: "icmp", ICMPType: intp(255), ICMPCode: intp(255)}},
		{
			in:   "allow tcp to ports 1000-2000,22",
			want: api.Rule{Action: "allow", Protocol: "tcp", Dst: api.EntityMatch{Ports: ports(api.PortRange{Min: 1000, Max: 2000}, one(22))}},
			text: "allow tcp to ports 1000:2000,22",
		},
		{
			in:   "allow tcp to ports 0,65535,8080:8080",
			want: api.Rule{Action: "allow", Protocol: "tcp", Dst: api.EntityMatch{Ports: ports(one(0), one(65535), one(8080))}},
			text: "allow tcp to ports 0,65535,8080",
		},
		{
			// Clause fields in any order, clauses in either order.
			in: "allow tcp to cidr 10.1.0.0/16 tag DB ports 5432 from cidr 10.2.0.0/16 tag APP",
			want: api.Rule{Action: "allow", Protocol: "tcp",
				Src: api.EntityMatch{Tag: "APP", CIDR: "10.2.0.0/16"},
				Dst: api.EntityMatch{Tag: "DB", CIDR: "10.1.0.0/16", Ports: ports(one(5432))}},
			text: "allow tcp from tag APP cidr 10.2.0.0/16 to ports 5432 tag DB cidr 10.1.0.0/16",
		},
		{
			in:   "allow from cidr FD00:ABCD::/32",
			want: api.Rule{Action: "allow", Src: api.EntityMatch{CIDR: "fd00:abcd::/32"}},
			text: "allow from cidr fd00:abcd::/32",
		},
		{
			// Values are taken literally, as docopt did: a tag may be called "to".
			in:   "allow from tag to",
			want: api.Rule{Action: "allow", Src: api.EntityMatch{Tag: "to"}},
		},
		{in: "allow to cidr 0.0.0.0/0", want: api.Rule{Action: "allow", Dst: api.EntityMatch{CIDR: "0.0.0.0/0"}}},
		{
			in:   "deny icmp type 08 code 00",
			want: api.Rule{Action: "deny", Protocol: "icmp", ICMPType: intp(8), ICMPCode: intp(0)},
			text: "deny icmp type 8 code 0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(strings.Fields(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Parse = %+v, want %+v", got, tt.want)
			}
			text := tt.text
			if text == "" {
				text = tt.in
			}
			if f := Format(got); f != text {
				t.Errorf("Format = %q, want %q", f, text)
			}
		})
	}
}

func TestParseBad(t *testing.T) {
	tests := []struct{ in, err string }{
		{"", `rule: missing action; expected allow or deny`},
		{"permit", `rule: unexpected "permit"; expected allow or deny`},
		{"ALLOW", `rule: unexpected "ALLOW"; expected allow or deny`},
		{"allow foo", `rule: unexpected "foo" after "allow"; expected tcp, udp, icmp, icmpv6, from, to or end of rule`},
		{"allow tcp foo", `rule: unexpected "foo" after "tcp"; expected from, to or end of rule`},
		{"allow tcp udp", `rule: unexpected "udp" after "tcp"; expected from, to or end of rule`},
		{"allow tcp tcp", `rule: "tcp" given twice`},
		{"allow allow", `rule: "allow" given twice`},
		{"allow deny", `rule: unexpected "deny" after "allow"`},
		{"allow sctp", `rule: unexpected "sctp" after "allow"`},
		{"allow icmp foo", `rule: unexpected "foo" after "icmp"; expected type, from, to or end of rule`},
		{"allow icmp type 8 foo", `rule: unexpected "foo" after "8"; expected code, from, to or end of rule`},
		{"allow icmp type 8 type 9", `rule: "type" given twice`},
		{"allow icmp type 8 code 0 code 1", `rule: "code" given twice`},
		{"allow icmp code 0", `rule: "code" needs "type" first`},
		{"allow icmp type", `rule: missing number after "type"; expected 0-255`},
		{"allow icmp type 8 code", `rule: missing number after "code"; expected 0-255`},
		{"allow icmp type 256", `rule: bad icmp type "256": want a number 0-255`},
		{"allow icmp type -1", `rule: bad icmp type "-1"`},
		{"allow icmp type eight", `rule: bad icmp type "eight"`},
		{"allow icmp type 3 code 999", `rule: bad icmp code "999"`},
		{"allow tcp type 3", `rule: unexpected "type" after "tcp"; expected from, to or end of rule`},
		{"allow from", `rule: missing ports, tag or cidr after "from"`},
		{"allow to", `rule: missing ports, tag or cidr after "to"`},
		{"allow from to tag X", `rule: unexpected "to" after "from"; expected ports, tag or cidr`},
		{"allow from foo", `rule: unexpected "foo" after "from"; expected ports, tag or cidr`},
		{"allow from tag", `rule: missing value after "tag"; expected a tag name`},
		{"allow tcp from ports", `rule: missing value after "ports"; expected a list such as 80,443,1000:2000`},
		{"allow from cidr", `rule: missing value after "cidr"; expected a CIDR such as 10.0.0.0/8`},
		{"allow from tag A tag B", `rule: "tag" given twice after "from"`},
		{"allow to cidr 10.0.0.0/8 cidr 10.0.0.0/8", `rule: "cidr" given twice after "to"`},
		{"allow from tag A bar", `rule: unexpected "bar" after "A"; expected ports, cidr, to or end of rule`},
		{"allow from tag A to tag B bar", `rule: unexpected "bar" after "B"; expected ports, cidr or end of rule`},
		{"allow from tag A from tag B", `rule: "from" given twice`},
		{"allow to tag A to tag B", `rule: "to" given twice`},
		{"allow tcp from tag A tcp", `rule: "tcp" given twice`},
		{"allow tcp from tag A udp", `rule: unexpected "udp" after "A"; expected ports, cidr, to or end of rule`},
		{"allow from tag A udp", `rule: protocol "udp" must come right after allow`},
		{"allow from tag a/b", `rule: bad tag name "a/b": use letters, digits, '_', '-', '.', ':'`},
		{"allow from tag -x", `rule: bad tag name "-x": must start with a letter or digit`},
		{"allow from cidr 10.0.0.1/8", `rule: bad CIDR "10.0.0.1/8": host bits set; did you mean 10.0.0.0/8?`},
		{"allow from cidr 192.168.1.300/24", `rule: bad CIDR "192.168.1.300/24": IP address out of range`},
		{"allow from cidr 10.0.0.1", `rule: bad CIDR "10.0.0.1": missing prefix length; did you mean 10.0.0.1/32?`},
		{"allow from cidr 10.0.0.0/33", `rule: bad CIDR "10.0.0.0/33": prefix length /33 too long for IPv4`},
		{"allow from cidr nonsense", `rule: bad CIDR "nonsense"`},
		{"allow from ports 80", `rule: from ports 80 need protocol tcp or udp`},
		{"allow icmp to ports 80", `rule: to ports 80 need protocol tcp or udp, not icmp`},
		{"allow tcp to ports 70000", `rule: bad ports "70000": "70000" is not a port number 0-65535`},
		{"allow tcp to ports 2000:1000", `rule: bad ports "2000:1000": range start 2000 is greater than end 1000`},
		{"allow tcp to ports 80,,443", `rule: bad ports "80,,443": empty entry`},
		{"allow tcp to ports 80,", `rule: bad ports "80,": empty entry`},
		{"allow tcp to ports http", `rule: bad ports "http": "http" is not a port number 0-65535`},
		{"allow tcp to ports 1:2:3", `rule: bad ports "1:2:3": "2:3" is not a port number`},
		{"allow tcp to ports +80", `rule: bad ports "+80"`},
		{"allow icmp to cidr fd00::/64", `rule: icmp is IPv4 only but cidr fd00::/64 is IPv6; use icmpv6`},
		{"allow icmpv6 from cidr 10.0.0.0/8", `rule: icmpv6 is IPv6 only but cidr 10.0.0.0/8 is IPv4; use icmp`},
		{"allow from cidr 10.0.0.0/8 to cidr fd00::/64", `rule: from cidr 10.0.0.0/8 and to cidr fd00::/64 are different IP versions`},
		{"inbound allow", `rule: unexpected "inbound"; expected allow or deny`},
		{"--at=1 allow", `rule: unexpected "--at=1"; expected allow or deny`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := Parse(strings.Fields(tt.in))
			if err == nil {
				t.Fatalf("Parse = %+v, want error %q", r, tt.err)
			}
			if !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("error %q\n does not contain %q", err, tt.err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestParseEmptyWord(t *testing.T) {
	_, err := Parse([]string{"allow", "", "tcp"})
	if err == nil || !strings.Contains(err.Error(), `unexpected "" after "allow"`) {
		t.Fatalf("err = %v", err)
	}
	_, err = Parse([]string{"allow", "from", "tag", ""})
	if err == nil || !strings.Contains(err.Error(), `bad tag name ""`) {
		t.Fatalf("err = %v", err)
	}
}

func TestParseCommand(t *testing.T) {
	tests := []struct {
		in   string
		dir  string
		at   int
		rule string
	}{
		{"inbound allow tcp from tag WEB to ports 80,443", Inbound, 0, "allow tcp from tag WEB to ports 80,443"},
		{"outbound deny icmp type 8 code 0 to cidr 10.0.0.0/8", Outbound, 0, "deny icmp type 8 code 0 to cidr 10.0.0.0/8"},
		{"inbound --at=2 allow udp from ports 53 cidr 192.168.0.0/16", Inbound, 2, "allow udp from ports 53 cidr 192.168.0.0/16"},
		{"inbound --at 7 allow from tag PROF_1", Inbound, 7, "allow from tag PROF_1"},
		{"outbound allow", Outbound, 0, "allow"},
		{"outbound --at=1 deny", Outbound, 1, "deny"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			dir, at, r, err := ParseCommand(strings.Fields(tt.in))
			if err != nil {
				t.Fatalf("ParseCommand: %v", err)
			}
			if dir != tt.dir || at != tt.at || Format(r) != tt.rule {
				t.Fatalf("got %q %d %q, want %q %d %q", dir, at, Format(r), tt.dir, tt.at, tt.rule)
			}
		})
	}
}

func TestParseCommandBad(t *testing.T) {
	tests := []struct{ in, err string }{
		{"", `rule: missing direction; expected inbound or outbound`},
		{"sideways allow", `rule: unexpected "sideways"; expected inbound or outbound`},
		{"Inbound allow", `rule: unexpected "Inbound"; expected inbound or outbound`},
		{"inbound foo", `rule: unexpected "foo" after "inbound"; expected --at=N, allow or deny`},
		{"inbound --at=2 foo", `rule: unexpected "foo" after "--at=2"; expected allow or deny`},
		{"inbound --at", `rule: missing position after "--at"; expected a number from 1`},
		{"inbound --at=", `rule: bad position "" in --at: want a number from 1`},
		{"inbound --at=0 allow", `rule: bad position "0" in --at: want a number from 1`},
		{"inbound --at=-1 allow", `rule: bad position "-1" in --at`},
		{"inbound --at=x allow", `rule: bad position "x" in --at`},
		{"inbound --at=99999999999 allow", `rule: bad position "99999999999" in --at`},
		{"inbound --at allow", `rule: bad position "allow" in --at`},
		{"inbound --at=1 --at=2 allow", `rule: --at given twice`},
		{"inbound inbound allow", `rule: "inbound" given twice`},
		{"inbound allow --at=2", `rule: unexpected "--at=2" after "allow"`},
		{"inbound allow tcp foo", `rule: unexpected "foo" after "tcp"; expected from, to or end of rule`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			dir, at, r, err := ParseCommand(strings.Fields(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
			if dir != "" || at != 0 || !reflect.DeepEqual(r, api.Rule{}) {
				t.Errorf("got %q %d %+v alongside an error", dir, at, r)
			}
		})
	}
}

// `rule remove inbound --at=2` has no rule; the caller needs dir and at.
func TestParseCommandPositionOnly(t *testing.T) {
	for _, in := range []string{"inbound --at=2", "inbound --at 2"} {
		dir, at, _, err := ParseCommand(strings.Fields(in))
		if !errors.Is(err, ErrNoRule) {
			t.Fatalf("%q: err = %v, want ErrNoRule", in, err)
		}
		if dir != Inbound || at != 2 {
			t.Fatalf("%q: got %q %d", in, dir, at)
		}
		if want := `rule: missing action after`; !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err %q lacks %q", in, err, want)
		}
	}
	_, at, _, err := ParseCommand([]string{"outbound"})
	if !errors.Is(err, ErrNoRule) || at != 0 {
		t.Fatalf("outbound alone: at=%d err=%v", at, err)
	}
}

func TestValidate(t *testing.T) {
	good := []api.Rule{
		{Action: "allow"},
		{Action: "deny", Protocol: "tcp", Dst: api.EntityMatch{Ports: ports(api.PortRange{Min: 1, Max: 2})}},
		{Action: "allow", Protocol: "icmpv6", ICMPType: intp(128), ICMPCode: intp(0), Src: api.EntityMatch{CIDR: "fd00::/64"}},
		{Action: "allow", Src: api.EntityMatch{Tag: "a.b:c_d-e"}},
		{Action: "allow", Src: api.EntityMatch{CIDR: "10.0.0.0/8"}, Dst: api.EntityMatch{CIDR: "192.168.0.0/16"}},
	}
	for _, r := range good {
		if err := Validate(r); err != nil {
			t.Errorf("Validate(%s): %v", Format(r), err)
		}
	}
	bad := []struct {
		r   api.Rule
		err string
	}{
		{api.Rule{}, `rule: bad action "": use allow or deny`},
		{api.Rule{Action: "Allow"}, `rule: bad action "Allow"`},
		{api.Rule{Action: "allow", Protocol: "TCP"}, `rule: bad protocol "TCP": use tcp, udp, icmp or icmpv6`},
		{api.Rule{Action: "allow", Protocol: "tcp", ICMPType: intp(3)}, `rule: icmp type 3 needs protocol icmp or icmpv6, not tcp`},
		{api.Rule{Action: "allow", ICMPType: intp(3)}, `rule: icmp type 3 needs protocol icmp or icmpv6`},
		{api.Rule{Action: "allow", Protocol: "icmp", ICMPCode: intp(1)}, `rule: icmp code 1 needs an icmp type`},
		{api.Rule{Action: "allow", Protocol: "icmp", ICMPType: intp(256)}, `rule: bad icmp type 256: want 0-255`},
		{api.Rule{Action: "allow", Protocol: "icmp", ICMPType: intp(-1)}, `rule: bad icmp type -1`},
		{api.Rule{Action: "allow", Protocol: "icmp", ICMPType: intp(3), ICMPCode: intp(300)}, `rule: bad icmp code 300`},
		{api.Rule{Action: "allow", Protocol: "udp", Src: api.EntityMatch{Ports: ports(api.PortRange{Min: 9, Max: 8})}}, `rule: bad from port range 9:8`},
		{api.Rule{Action: "allow", Dst: api.EntityMatch{Ports: ports(one(22))}}, `rule: to ports 22 need protocol tcp or udp`},
		{api.Rule{Action: "allow", Src: api.EntityMatch{Tag: "a b"}}, `rule: bad tag name "a b"`},
		{api.Rule{Action: "allow", Dst: api.EntityMatch{CIDR: "10.0.0.5/24"}}, `did you mean 10.0.0.0/24?`},
		{api.Rule{Action: "allow", Protocol: "icmp", Dst: api.EntityMatch{CIDR: "::/0"}}, `cidr ::/0 is IPv6`},
	}
	for _, tt := range bad {
		err := Validate(tt.r)
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("Validate(%+v) = %v, want %q", tt.r, err, tt.err)
		}
	}
}

func TestFormatJSONRuleRoundTrips(t *testing.T) {
	// A rule from JSON may spell its CIDR unusually; Format prints the
	// canonical form so that what Parse reads back is the same network.
	r := api.Rule{Action: "allow", Src: api.EntityMatch{CIDR: "FD00::/8"}}
	got, err := Parse(strings.Fields(Format(r)))
	if err != nil {
		t.Fatal(err)
	}
	if got.Src.CIDR != "fd00::/8" {
		t.Fatalf("CIDR = %q", got.Src.CIDR)
	}
}

func TestParsePorts(t *testing.T) {
	got, err := ParsePorts("22,1000:2000,3000-3001,0")
	if err != nil {
		t.Fatal(err)
	}
	want := ports(one(22), api.PortRange{Min: 1000, Max: 2000}, api.PortRange{Min: 3000, Max: 3001}, one(0))
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if s := FormatPorts(got); s != "22,1000:2000,3000:3001,0" {
		t.Fatalf("FormatPorts = %q", s)
	}
	for _, bad := range []string{"", ",", "a", "1:", ":1", "1-", "65536", "1:65536", "5:4", "1,,2", " 1", "0x10", "1e3"} {
		if _, err := ParsePorts(bad); err == nil || !strings.Contains(err.Error(), `"`+bad+`"`) {
			t.Errorf("ParsePorts(%q) err = %v; want an error naming the value", bad, err)
		}
	}
}

func TestErrorsStayShort(t *testing.T) {
	long := strings.Repeat("x", 10000)
	_, err := Parse([]string{"allow", "from", "tag", "-" + long})
	if err == nil || len(err.Error()) > 200 {
		t.Fatalf("err = %.300v", err)
	}
}

// The seed's own profiles must survive a trip through the grammar.
func TestNewProfileRulesRoundTrip(t *testing.T) {
	p := api.NewProfile("PROF_1")
	for _, r := range append(p.Inbound, p.Outbound...) {
		got, err := Parse(strings.Fields(Format(r)))
		if err != nil {
			t.Fatalf("%q: %v", Format(r), err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("got %+v, want %+v", got, r)
		}
	}
}

var fuzzSeeds = []string{
	"allow",
	"deny",
	"allow from tag PROF_1",
	"allow tcp from tag WEB to ports 80,443",
	"deny icmp type 8 code 0 to cidr 10.0.0.0/8",
	"allow udp from ports 53 cidr 192.168.0.0/16",
	"deny icmpv6 type 128 from cidr fd00::/64",
	"allow tcp to cidr 10.1.0.0/16 tag DB ports 5432 from cidr 10.2.0.0/16 tag APP",
	"allow tcp to ports 1000-2000,22",
	"allow from tag to",
	"allow from cidr FD00:ABCD::/32",
	"allow tcp from ports 0:65535",
	"allow from cidr ::ffff:10.0.0.0/104",
	"allow tcp tcp",
	"allow icmp code 3",
	"allow from",
	"deny icmp type 08 code 00",
}

func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Fields(s)
		_, _, _, _ = ParseCommand(append([]string{Inbound}, args...))
		r, err := Parse(args)
		if err != nil {
			if r.Action != "" {
				t.Fatalf("Parse returned a rule with an error: %+v", r)
			}
			return
		}
		if err := Validate(r); err != nil {
			t.Fatalf("Parse(%q) accepted a rule Validate rejects: %v", s, err)
		}
		text := Format(r)
		again, err := Parse(strings.Fields(text))
		if err != nil {
			t.Fatalf("Parse(Format(Parse(%q))) = Parse(%q): %v", s, text, err)
		}
		if !reflect.DeepEqual(again, r) {
			t.Fatalf("round trip of %q via %q: got %+v, want %+v", s, text, again, r)
		}
		if Format(again) != text {
			t.Fatalf("Format not stable: %q then %q", text, Format(again))
		}
	})
}

func BenchmarkParse(b *testing.B) {
	args := strings.Fields("inbound --at=2 allow tcp from tag WEB cidr 10.0.0.0/8 to ports 80,443,8000:9000")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := ParseCommand(args); err != nil {
			b.Fatal(err)
		}
	}
}
