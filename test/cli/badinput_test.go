package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type badCase struct {
	name string
	args []string
	env  map[string]string // on top of the store's; "" unsets
	in   string            // stdin
	want string            // the error line must contain this
	// multiline allows more lines after the error line (usage text, a log
	// tail); detail, if set, must appear in them.
	multiline bool
	detail    string
	// within bounds the run time (default 5s: every check here is local).
	within time.Duration
}

// TestBadInput runs commands that must fail: non-zero exit, a single
// "error: ..." line on stderr naming the problem, nothing on stdout, and
// the datastore exactly as before.
func TestBadInput(t *testing.T) {
	t.Parallel()
	s := startStore(t)
	// A node name of its own, so `node remove` cannot find some other
	// test's calico-node pid file.
	s.node = "e2ebad1"
	seed(t, s)

	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	notNetns := filepath.Join(t.TempDir(), "not-a-netns")
	if err := os.WriteFile(notNetns, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A real namespace path (the host's own): it passes the netns check, and
	// the cases using it fail before any address is assigned or any
	// interface made (wiring would refuse the host's namespace anyway).
	const hostNetns = "/proc/self/ns/net"
	ghost := map[string]string{"CALICO_NODENAME": "ghost"}
	rule := func(words ...string) []string {
		return append([]string{"profile", "P1", "rule"}, words...)
	}

	cases := []badCase{
		// Pools.
		{name: "pool bad CIDR", args: []string{"pool", "add", "10.0.0/8"}, want: `bad CIDR "10.0.0/8"`},
		{name: "pool not a CIDR", args: []string{"pool", "add", "banana"}, want: `bad CIDR "banana"`},
		{name: "pool address without prefix", args: []string{"pool", "add", "10.1.0.0"}, want: "missing prefix length; did you mean 10.1.0.0/32?"},
		{name: "pool host bits set", args: []string{"pool", "add", "10.0.0.1/8"}, want: "host bits set; did you mean 10.0.0.0/8?"},
		{name: "pool IPv6 host bits set", args: []string{"pool", "add", "fd00::1/64"}, want: "host bits set; did you mean fd00::/64?"},
		{name: "pool prefix too long", args: []string{"pool", "add", "10.0.0.0/33"}, want: "prefix length /33 too long for IPv4"},
		{name: "pool overlapping", args: []string{"pool", "add", "192.168.1.0/24"}, want: "pool 192.168.1.0/24 overlaps existing pool 192.168.0.0/16"},
		{name: "pool containing existing", args: []string{"pool", "add", "192.0.0.0/8"}, want: "overlaps existing pool 192.168.0.0/16"},
		{name: "pool overlapping within one command", args: []string{"pool", "add", "10.10.0.0/16", "10.10.1.0/24"}, want: "pool 10.10.1.0/24 overlaps existing pool 10.10.0.0/16"},
		{name: "pool second CIDR bad: nothing written", args: []string{"pool", "add", "10.20.0.0/16", "10.30.0.1/16"}, want: "host bits set"},
		{name: "pool loopback", args: []string{"pool", "add", "127.0.0.0/8"}, want: "overlaps the loopback range 127.0.0.0/8"},
		{name: "pool IPv6 loopback", args: []string{"pool", "add", "::1/128"}, want: "overlaps the loopback range ::1/128"},
		{name: "pool link-local", args: []string{"pool", "add", "169.254.0.0/16"}, want: "overlaps the link-local range"},
		{name: "pool IPv6 link-local", args: []string{"pool", "add", "fe80::/64"}, want: "overlaps the link-local range fe80::/10"},
		{name: "pool multicast", args: []string{"pool", "add", "224.0.0.0/4"}, want: "overlaps the multicast range 224.0.0.0/4"},
		{name: "pool default", args: []string{"pool", "add", "0.0.0.0/0"}, want: "a default route is not a pool"},
		{name: "pool IPv6 default", args: []string{"pool", "add", "::/0"}, want: "a default route is not a pool"},
		{name: "pool ipip on IPv6", args: []string{"pool", "add", "fd01::/64", "--ipip"}, want: "IPIP carries IPv4 only"},
		{name: "pool ipip-mode on IPv6", args: []string{"pool", "add", "fd01::/64", "--ipip-mode=cross-subnet"}, want: "IPIP mode CrossSubnet on an IPv6 pool"},
		{name: "pool ipip and vxlan", args: []string{"pool", "add", "10.40.0.0/16", "--ipip", "--vxlan"}, want: "choose one encapsulation"},
		{name: "pool bad vxlan mode", args: []string{"pool", "add", "10.40.0.0/16", "--vxlan-mode=sometimes"}, want: `--vxlan-mode: bad encapsulation mode "sometimes"`},
		{name: "pool bad ipip mode", args: []string{"pool", "add", "10.40.0.0/16", "--ipip-mode=yes"}, want: `--ipip-mode: bad encapsulation mode "yes"`},
		{name: "pool bad block size", args: []string{"pool", "add", "10.40.0.0/16", "--block-size=8"}, want: "bad block size 8: want 16-32"},
		{name: "pool re-add bad option leaves pool", args: []string{"pool", "add", "fd80:24e2:f998:72d6::/64", "--ipip"}, want: "IPIP carries IPv4 only"},
		{name: "pool remove unknown", args: []string{"pool", "remove", "172.31.0.0/16"}, want: "no pool 172.31.0.0/16; list pools with `calicoctl pool show`"},
		{name: "pool remove bad CIDR", args: []string{"pool", "remove", "172.31.0.1/16"}, want: "host bits set"},
		{name: "pool remove no argument", args: []string{"pool", "remove"}, want: "calicoctl pool remove takes 1 argument(s), got 0"},
		{name: "pool show bad format", args: []string{"pool", "show", "-o", "xml"}, want: `unknown output format "xml"`},
		{name: "pool add unknown flag", args: []string{"pool", "add", "10.40.0.0/16", "--ipipp"}, want: "unknown flag: --ipipp"},

		// Profiles and tags.
		{name: "profile add duplicate", args: []string{"profile", "add", "P1"}, want: `profile "P1" already exists`},
		{name: "profile add name with space", args: []string{"profile", "add", "a b"}, want: `bad profile name "a b"`},
		{name: "profile add name with slash", args: []string{"profile", "add", "a/b"}, want: `bad profile name "a/b"`},
		{name: "profile add name starting with dot", args: []string{"profile", "add", ".hidden"}, want: "must start with a letter or digit"},
		{name: "profile add name too long", args: []string{"profile", "add", strings.Repeat("x", 254)}, want: "254 characters, at most 253"},
		{name: "profile remove unknown", args: []string{"profile", "remove", "NOPE"}, want: `unknown profile "NOPE"`},
		{name: "profile remove in use", args: []string{"profile", "remove", "P1"}, want: `profile "P1" is applied to 1 endpoint(s) (w0 on e2ebad1)`},
		{name: "profile show bad format", args: []string{"profile", "show", "-o", "csv"}, want: `unknown output format "csv"`},
		{name: "tag add unknown profile", args: []string{"profile", "NOPE", "tag", "add", "X"}, want: `unknown profile "NOPE"; create it with`},
		{name: "tag remove unknown profile", args: []string{"profile", "NOPE", "tag", "remove", "X"}, want: `unknown profile "NOPE"`},
		{name: "tag show unknown profile", args: []string{"profile", "NOPE", "tag", "show"}, want: `unknown profile "NOPE"`},
		{name: "tag remove absent tag", args: []string{"profile", "P1", "tag", "remove", "NOTAG"}, want: `profile "P1" has no tag "NOTAG"`},
		{name: "tag add bad name", args: []string{"profile", "P1", "tag", "add", "a,b"}, want: `bad tag name "a,b"`},
		{name: "profile unknown verb", args: []string{"profile", "P1", "frob", "x"}, want: `unrecognised profile command "P1 frob x"`, multiline: true},

		// Rules.
		{name: "rule add unknown profile", args: []string{"profile", "NOPE", "rule", "add", "inbound", "allow"}, want: `unknown profile "NOPE"`},
		{name: "rule show unknown profile", args: []string{"profile", "NOPE", "rule", "show"}, want: `unknown profile "NOPE"`},
		{name: "rule json unknown profile", args: []string{"profile", "NOPE", "rule", "json"}, want: `unknown profile "NOPE"`},
		{name: "rule update unknown profile", args: []string{"profile", "NOPE", "rule", "update"}, in: `{"inbound_rules":[],"outbound_rules":[]}`, want: `unknown profile "NOPE"`},
		{name: "rule remove unknown profile", args: []string{"profile", "NOPE", "rule", "remove", "inbound", "--at=1"}, want: `unknown profile "NOPE"`},
		{name: "rule unknown word", args: rule("add", "inbound", "allow", "bogus"), want: `rule: unexpected "bogus" after "allow"`},
		{name: "rule unknown action", args: rule("add", "inbound", "permit", "tcp"), want: `rule: unexpected "permit" after "inbound"; expected --at=N, allow or deny`},
		{name: "rule protocol out of place", args: rule("add", "inbound", "allow", "from", "tag", "X", "tcp"), want: `protocol "tcp" must come right after allow`},
		{name: "rule ports without protocol", args: rule("add", "inbound", "allow", "from", "ports", "80"), want: "from ports 80 need protocol tcp or udp"},
		{name: "rule ports with icmp", args: rule("add", "inbound", "allow", "icmp", "to", "ports", "80"), want: "to ports 80 need protocol tcp or udp, not icmp"},
		{name: "rule port out of range", args: rule("add", "inbound", "allow", "tcp", "to", "ports", "70000"), want: `"70000" is not a port number 0-65535`},
		{name: "rule port range reversed", args: rule("add", "inbound", "allow", "tcp", "to", "ports", "90:80"), want: "range start 90 is greater than end 80"},
		{name: "rule port not a number", args: rule("add", "inbound", "allow", "udp", "to", "ports", "http"), want: `"http" is not a port number`},
		{name: "rule icmp code without type", args: rule("add", "inbound", "allow", "icmp", "code", "1"), want: `"code" needs "type" first`},
		{name: "rule icmp type too big", args: rule("add", "inbound", "allow", "icmp", "type", "256"), want: `bad icmp type "256": want a number 0-255`},
		{name: "rule icmp with IPv6 cidr", args: rule("add", "inbound", "allow", "icmp", "from", "cidr", "fd00::/8"), want: "icmp is IPv4 only but cidr fd00::/8 is IPv6"},
		{name: "rule cidr host bits", args: rule("add", "inbound", "allow", "from", "cidr", "10.0.0.1/8"), want: `bad CIDR "10.0.0.1/8": host bits set`},
		{name: "rule cidr garbage", args: rule("add", "outbound", "deny", "to", "cidr", "nowhere"), want: `bad CIDR "nowhere"`},
		{name: "rule mixed families", args: rule("add", "outbound", "deny", "from", "cidr", "10.0.0.0/8", "to", "cidr", "fd00::/8"), want: "different IP versions"},
		{name: "rule tag bad name", args: rule("add", "inbound", "allow", "from", "tag", "a/b"), want: `bad tag name "a/b"`},
		{name: "rule from twice", args: rule("add", "inbound", "allow", "from", "tag", "A", "from", "tag", "B"), want: `"from" given twice`},
		{name: "rule empty from", args: rule("add", "inbound", "allow", "from"), want: "missing ports, tag or cidr"},
		{name: "rule unknown direction", args: rule("add", "sideways", "allow"), want: `unexpected "sideways"; expected inbound or outbound`},
		{name: "rule missing action", args: rule("add", "inbound"), want: "missing action"},
		{name: "rule add --at=0", args: rule("add", "inbound", "--at=0", "allow"), want: `bad position "0" in --at`},
		{name: "rule add --at out of range", args: rule("add", "inbound", "--at=4", "allow"), want: `--at=4 is out of range: profile "P1" has 2 inbound rule(s)`},
		{name: "rule remove --at out of range", args: rule("remove", "outbound", "--at=2"), want: `--at=2 is out of range: profile "P1" has 1 outbound rule(s)`},
		{name: "rule remove --at not a number", args: rule("remove", "inbound", "--at=x"), want: "bad --at=x"},
		{name: "rule remove absent rule", args: rule("remove", "inbound", "deny", "tcp"), want: `profile "P1" has no inbound rule "deny tcp"`},
		{name: "rule remove bad rule", args: rule("remove", "inbound", "allow", "tcp", "to", "ports", "99999"), want: `"99999" is not a port number`},
		{name: "rule remove unknown direction", args: rule("remove", "up", "--at=1"), want: "usage: calicoctl profile P1 rule remove (inbound|outbound) (--at=N | RULE)"},
		{name: "rule update not JSON", args: rule("update"), in: "inbound allow", want: "rules document is not valid JSON"},
		{name: "rule update unknown field", args: rule("update"), in: `{"inbound_rules":[],"outbound_rules":[],"extra":1}`, want: `unknown field "extra"`},
		{name: "rule update bad action", args: rule("update"), in: `{"inbound_rules":[{"action":"maybe"}],"outbound_rules":[]}`, want: `bad action "maybe"`},
		{name: "rule update bad port range", args: rule("update"), in: `{"inbound_rules":[],"outbound_rules":[{"action":"allow","protocol":"tcp","dst":{"ports":[{"min":9,"max":1}]}}]}`, want: "start is greater than end"},
		{name: "rule update icmp code without type", args: rule("update"), in: `{"inbound_rules":[{"action":"allow","protocol":"icmp","icmpCode":1}],"outbound_rules":[]}`, want: "icmp code 1 needs an icmp type"},

		// BGP.
		{name: "AS 0", args: []string{"bgp", "default-node-as", "0"}, want: `bad AS number "0": AS 0 is reserved`},
		{name: "AS -1", args: []string{"bgp", "default-node-as", "--", "-1"}, want: `bad AS number "-1"`},
		{name: "AS abc", args: []string{"bgp", "default-node-as", "abc"}, want: `bad AS number "abc"`},
		{name: "AS 2^32", args: []string{"bgp", "default-node-as", "4294967296"}, want: `bad AS number "4294967296"`},
		{name: "AS bad asdot", args: []string{"bgp", "default-node-as", "65536.1"}, want: "asdot form is two numbers 0-65535"},
		{name: "default-node-as two args", args: []string{"bgp", "default-node-as", "1", "2"}, want: "accepts at most 1 arg(s), received 2"},
		{name: "node-mesh bad value", args: []string{"bgp", "node-mesh", "maybe"}, want: `bad node-mesh value "maybe": use on or off`},
		{name: "peer add bad IP", args: []string{"bgp", "peer", "add", "10.0.0.300", "as", "65000"}, want: `bad BGP peer IP "10.0.0.300"`},
		{name: "peer add loopback", args: []string{"bgp", "peer", "add", "127.0.0.1", "as", "65000"}, want: "a loopback address never leaves the host"},
		{name: "peer add with prefix", args: []string{"bgp", "peer", "add", "10.0.0.1/32", "as", "65000"}, want: "want an address without a prefix length"},
		{name: "peer add missing as", args: []string{"bgp", "peer", "add", "10.0.0.1", "65000"}, want: "usage: calicoctl bgp peer add IP as AS"},
		{name: "peer add AS 0", args: []string{"bgp", "peer", "add", "10.0.0.1", "as", "0"}, want: "AS 0 is reserved"},
		{name: "peer add AS abc", args: []string{"bgp", "peer", "add", "10.0.0.1", "as", "abc"}, want: `bad AS number "abc"`},
		{name: "peer remove unknown", args: []string{"bgp", "peer", "remove", "10.0.0.9"}, want: "no BGP peer 10.0.0.9"},
		{name: "peer remove bad IP", args: []string{"bgp", "peer", "remove", "bogus"}, want: `bad peer IP "bogus"`},
		{name: "peer show bad format", args: []string{"bgp", "peer", "show", "-o", "table2"}, want: `unknown output format "table2"`},
		{name: "node peer add unknown node", args: []string{"node", "bgp", "peer", "add", "10.0.0.5", "as", "65000"}, env: ghost, want: `no calico node "ghost" in the datastore`},
		{name: "node peer add --name unknown", args: []string{"node", "bgp", "peer", "add", "10.0.0.5", "as", "65000", "--name", "h9"}, want: `no calico node "h9"`},
		{name: "node peer add bad node name", args: []string{"node", "bgp", "peer", "add", "10.0.0.5", "as", "65000", "--name", "a/b"}, want: `bad node name "a/b"`},
		{name: "node peer remove unknown", args: []string{"node", "bgp", "peer", "remove", "10.0.0.254"}, want: "no BGP peer 10.0.0.254"},

		// IPAM, endpoints, nodes.
		{name: "ipam info bad IP", args: []string{"ipam", "info", "bogus"}, want: `bad IP address "bogus"`},
		{name: "ipam info CIDR", args: []string{"ipam", "info", "192.168.0.0/24"}, want: `bad IP address "192.168.0.0/24"`},
		{name: "ipam info outside pools", args: []string{"ipam", "info", "10.9.9.9"}, want: "10.9.9.9 is not in any pool"},
		{name: "ipam release unassigned", args: []string{"ipam", "release", "192.168.5.5"}, want: "192.168.5.5 is not assigned"},
		{name: "ipam release bad IP", args: []string{"ipam", "release", "1.2.3"}, want: `bad IP address "1.2.3"`},
		{name: "endpoint show bad format", args: []string{"endpoint", "show", "-o", "badformat"}, want: `unknown output format "badformat"`},
		{name: "node show bad format", args: []string{"node", "show", "-o", "toml"}, want: `unknown output format "toml"`},
		{name: "status no report", args: []string{"status"}, want: `node "e2ebad1" has not reported status`},
		{name: "node without --ip", args: []string{"node"}, want: "calicoctl node needs --ip=HOST_IP"},
		{name: "node bad --ip", args: []string{"node", "--ip", "10.0.0.300"}, want: `--ip: bad IP address "10.0.0.300"`},
		{name: "node --ip not on this host", args: []string{"node", "--ip", "192.0.2.77"}, want: "--ip: 192.0.2.77 is not an address of this host"},
		{name: "node remove unknown", args: []string{"node", "remove", "--name", "ghost"}, want: `no calico node "ghost"`},
		{name: "node remove with endpoints", args: []string{"node", "remove", "--name", "e2ebad1"}, want: `node "e2ebad1" still has 1 endpoint(s)`},
		{name: "node stop not running", args: []string{"node", "stop", "--name", "e2e-never-started"}, want: "calico-node e2e-never-started is not running"},

		// Containers.
		{name: "container add netns missing", args: []string{"container", "add", "w1", "192.168.5.5", "--netns", "/nonexistent/netns"}, want: `container "w1": workload netns /nonexistent/netns: no such file or directory`},
		{name: "container add netns not a namespace", args: []string{"container", "add", "w1", "192.168.0.21", "--netns", notNetns}, want: "is not a network namespace"},
		{name: "container add node not registered", args: []string{"container", "add", "w1", "192.168.5.5", "--netns", hostNetns}, env: ghost, want: `no calico node "ghost" in the datastore`},
		{name: "container add bad IP", args: []string{"container", "add", "w1", "192.168.5.300", "--netns", hostNetns}, want: `bad workload IP "192.168.5.300"`},
		{name: "container add IP with prefix", args: []string{"container", "add", "w1", "192.168.5.5/32", "--netns", hostNetns}, want: "want an address without a prefix length"},
		{name: "container add bad name", args: []string{"container", "add", "w/1", "auto", "--netns", hostNetns}, want: `bad container name "w/1"`},
		{name: "container add existing", args: []string{"container", "add", "w0", "auto", "--netns", hostNetns}, want: `container "w0" already has an endpoint on host e2ebad1`},
		{name: "container add no IP", args: []string{"container", "add", "w1", "--netns", notNetns}, want: `unrecognised container command "add w1"`, multiline: true},
		{name: "container add unknown flag", args: []string{"container", "add", "w1", "auto", "--netnss=x"}, want: "unknown flag --netnss=x", multiline: true},
		{name: "container add IP outside pools", args: []string{"container", "add", "w1", "10.99.0.1", "--netns", hostNetns}, want: "10.99.0.1 is not in any pool; pools: 192.168.0.0/16, fd80:24e2:f998:72d6::/64"},

		{name: "container --netns without value", args: []string{"container", "add", "w1", "auto", "--netns"}, want: "--netns needs a value"},
		{name: "container profile append unknown container", args: []string{"container", "w9", "profile", "append", "P1"}, want: `unknown container "w9" on host e2ebad1`},
		{name: "container profile append unknown profile", args: []string{"container", "w0", "profile", "append", "NOPE"}, want: `unknown profile "NOPE"`},
		{name: "container profile set unknown profile", args: []string{"container", "w0", "profile", "set", "P2", "NOPE"}, want: `unknown profile "NOPE"`},
		{name: "container profile append duplicate", args: []string{"container", "w0", "profile", "append", "P1"}, want: `container "w0" already has profile "P1"`},
		{name: "container profile remove absent", args: []string{"container", "w0", "profile", "remove", "P2"}, want: `container "w0" does not have profile "P2"`},
		{name: "container ip remove absent", args: []string{"container", "w0", "ip", "remove", "192.168.0.77"}, want: `container "w0" does not have address 192.168.0.77`},
		{name: "container ip add bad IP", args: []string{"container", "w0", "ip", "add", "bogus"}, want: `bad workload IP "bogus"`},
		{name: "container ip add unknown container", args: []string{"container", "w9", "ip", "add", "192.168.0.10"}, want: `unknown container "w9"`},
		{name: "container remove unknown", args: []string{"container", "remove", "w9"}, want: `unknown container "w9" on host e2ebad1`},

		// Datastore.
		{name: "unreachable datastore", args: []string{"pool", "show"}, env: map[string]string{"ETCD_AUTHORITY": dead},
			want: "cannot reach the datastore at http://" + dead, within: 8 * time.Second},
		{name: "TLS CA file missing", args: []string{"pool", "show"}, env: map[string]string{"ETCD_CA_CERT_FILE": "/nonexistent/ca.pem"},
			want: "datastore TLS settings (ETCD_CA_CERT_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE): open /nonexistent/ca.pem"},
		{name: "unreachable via --etcd-endpoints", args: []string{"bgp", "peer", "add", "10.0.0.9", "as", "65000", "--etcd-endpoints", "http://" + dead}, want: "cannot reach the datastore at http://" + dead, within: 8 * time.Second},
		{name: "datastore stop without one", args: []string{"datastore", "stop", "--data-dir", t.TempDir()}, want: "no datastore running for data dir"},
		{name: "datastore start bad listen", args: []string{"datastore", "start", "--listen", "nowhere", "--data-dir", t.TempDir(), "--timeout", "5s"}, want: "datastore on nowhere did not start: it exited during start-up",
			multiline: true, detail: `bad listen address "nowhere": want IP:PORT`, within: 8 * time.Second},
		{name: "unknown command", args: []string{"frobnicate"}, want: `unknown command "frobnicate" for "calicoctl"`},
	}

	if len(cases) < 30 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := s.on(t)
			env := s.env()
			for k, v := range c.env {
				if v == "" {
					delete(env, k)
				} else {
					env[k] = v
				}
			}
			before := s.snapshot()
			r := ctl(t, env, c.in, c.args...)
			after := s.snapshot()
			if d := diff(before, after); d != "" {
				t.Errorf("datastore changed:\n%s\n%s", d, r)
			}
			if r.code == 0 {
				t.Fatalf("want failure:\n%s", r)
			}
			if r.stdout != "" {
				t.Errorf("stdout not empty:\n%s", r)
			}
			first, rest, _ := strings.Cut(r.stderr, "\n")
			if !strings.HasPrefix(first, "error: ") {
				t.Errorf(`stderr does not start "error: ":%s`, r)
			}
			if !strings.Contains(first, c.want) {
				t.Errorf("error line %q does not contain %q", first, c.want)
			}
			if rest != "" && !c.multiline {
				t.Errorf("want a one-line error:\n%s", r)
			}
			if c.detail != "" && !strings.Contains(rest, c.detail) {
				t.Errorf("want %q after the error line:\n%s", c.detail, r)
			}
			if rest == "" && !strings.HasSuffix(r.stderr, "\n") {
				t.Errorf("error line not terminated: %q", r.stderr)
			}
			within := c.within
			if within == 0 {
				within = 5 * time.Second
			}
			if r.elapsed > within {
				t.Errorf("took %s, want at most %s", r.elapsed.Round(time.Millisecond), within)
			}
		})
	}
}

// seed gives TestBadInput something to collide with and to leave unchanged.
func seed(t *testing.T, s *store) {
	s.ok("pool", "add", "192.168.0.0/16", "--nat-outgoing")
	s.ok("pool", "add", "fd80:24e2:f998:72d6::/64")
	s.ok("profile", "add", "P1")
	s.ok("profile", "add", "P2")
	s.ok("profile", "P1", "rule", "add", "inbound", "allow", "tcp", "to", "ports", "80")
	s.ok("bgp", "default-node-as", "65001")
	s.ok("bgp", "peer", "add", "10.0.0.254", "as", "65000")
	s.put(nodeKey("e2ebad1"), nodeJSON{Name: "e2ebad1", IPv4: "10.0.0.1/24"})
	s.ok("node", "bgp", "peer", "add", "10.0.0.100", "as", "65100")
	s.put(endpointKey("e2ebad1", "w0"), endpointJSON{Node: "e2ebad1", Workload: "w0", Orchestrator: "netns",
		NetnsPath: "/var/run/netns/nonexistent-e2e", InterfaceName: "clie2e-absent", WorkloadIface: "eth0",
		IPv4Nets: []string{"192.168.0.9/32"}, IPv6Nets: []string{}, Profiles: []string{"P1"}})
}
