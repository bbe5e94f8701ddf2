package dstest

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-go/calico/internal/datastore"
)

// hostile is one malformed or hostile input: a calicoctl command (args,
// stdin, env changes) that must fail with a one-line error containing want,
// or a record written straight into etcd (key, value) that the running agent
// must skip.
type hostile struct {
	name  string
	args  []string
	stdin string
	env   map[string]string // on top of the host's; "" unsets
	want  string
	key   string
	value string
}

// TestHostileInput: with a datastore, a running agent and one good workload
// on the host, each hostile input in turn is refused. A calicoctl input
// fails at once with one clear error line and no output; a record written
// into etcd is logged and skipped by the agent (its last good value kept).
// After every case the agent is alive, the datastore and the kernel (our
// routes, the interfaces, our nftables table) are exactly as before, and the
// listing commands still work.
func TestHostileInput(t *testing.T) {
	w := newWorld(t, 1)
	h1 := w.hosts[0]
	w.startEtcd(h1)
	w.startNode(h1)
	cli := w.client(h1)
	w.ok(h1, "pool", "add", "192.168.60.0/24")
	w.ok(h1, "profile", "add", "P")
	_, ip := w.addWorkload(h1, "w1", "auto")
	w.ok(h1, "container", "w1", "profile", "append", "P")
	waitFor(t, 20*time.Second, "the agent to route the good workload", func() (bool, string) {
		r := routes(t, h1)
		return strings.Contains(r, ip.String()+" dev cali"), r
	})
	// The route can come with the container, before the profile: every
	// case compares the kernel with its state before the case, so the
	// agent must have applied the profile too.
	waitFor(t, 20*time.Second, "the agent to apply profile P", func() (bool, string) {
		k := kernelState(t, h1)
		return strings.Contains(k, "chain prof-in-P-"), k
	})
	pid := w.nodePID(h1)
	hostNetns := "/proc/self/ns/net" // passes the netns check; wiring would refuse it
	long := strings.Repeat("x", 10000)
	rule := func(words ...string) []string { return append([]string{"profile", "P", "rule"}, words...) }
	update := func(in string) hostile {
		return hostile{args: rule("update"), stdin: in}
	}

	cases := []hostile{
		// Names: huge, unicode, control characters, path traversal, globs.
		{name: "profile name 10000 characters", args: []string{"profile", "add", long}, want: "10000 characters, at most 253"},
		{name: "profile name path traversal", args: []string{"profile", "add", "../x"}, want: `bad profile name "../x"`},
		{name: "profile name dot-dot", args: []string{"profile", "add", ".."}, want: `bad profile name ".."`},
		{name: "profile name unicode letter", args: []string{"profile", "add", "prof-é"}, want: `bad profile name "prof-é"`},
		{name: "profile name fullwidth", args: []string{"profile", "add", "ＰＲＯＦ"}, want: "bad profile name"},
		{name: "profile name right-to-left override", args: []string{"profile", "add", "a\u202eb"}, want: `bad profile name "a\u202eb"`},
		{name: "profile name control character", args: []string{"profile", "add", "a\x01b"}, want: `bad profile name "a\x01b"`},
		{name: "profile name newline", args: []string{"profile", "add", "a\nb"}, want: `bad profile name "a\nb"`},
		{name: "profile remove glob", args: []string{"profile", "remove", "*"}, want: `"*"`},
		{name: "container name path traversal", args: []string{"container", "add", "../../etc/passwd", "auto", "--netns", hostNetns}, want: `bad container name "../../etc/passwd"`},
		{name: "container name huge", args: []string{"container", "add", long, "auto", "--netns", hostNetns}, want: "10000 characters, at most 253"},
		{name: "node name path traversal", args: []string{"node", "bgp", "peer", "add", "10.0.0.5", "as", "65000", "--name", "../h1"}, want: `bad node name "../h1"`},
		{name: "tag shell injection", args: []string{"profile", "P", "tag", "add", "$(reboot)"}, want: `bad tag name "$(reboot)"`},
		// Rule text injection: words that try to smuggle nftables syntax.
		{name: "rule tag injection", args: rule("add", "inbound", "allow", "from", "tag", "x;accept"), want: `bad tag name "x;accept"`},
		{name: "rule cidr with trailing verdict", args: rule("add", "inbound", "allow", "from", "cidr", "10.0.0.0/8 accept"), want: `bad CIDR "10.0.0.0/8 accept"`},
		{name: "rule cidr list", args: rule("add", "inbound", "allow", "from", "cidr", "10.0.0.0/8,0.0.0.0/0"), want: `bad CIDR "10.0.0.0/8,0.0.0.0/0"`},
		{name: "rule port list", args: rule("add", "inbound", "allow", "tcp", "to", "ports", "80,22 accept"), want: "is not a port number"},
		{name: "rule one-word injection", args: rule("add", "inbound", "allow tcp; drop"), want: "allow tcp; drop"},
		func() hostile {
			h := update(`{"inbound_rules":[{"action":"allow","src":{"tag":"a\u0000b"}}],"outbound_rules":[]}`)
			h.name, h.want = "rule update NUL in tag", `bad tag name "a\x00b"`
			return h
		}(),
		func() hostile {
			h := update(`{"inbound_rules":[{"action":"allow","src":{"cidr":"0.0.0.0/0\n"}}],"outbound_rules":[]}`)
			h.name, h.want = "rule update newline in cidr", `bad CIDR "0.0.0.0/0\n"`
			return h
		}(),
		func() hostile {
			h := update(`{"inbound_rules":[{"action":"accept"}],"outbound_rules":[]}`)
			h.name, h.want = "rule update nftables verdict as action", `bad action "accept"`
			return h
		}(),
		func() hostile {
			h := update(`{"inbound_rules":[` + strings.Repeat(`{"action":"allow","protocol":"udp","dst":{"ports":[{"min":0,"max":99999}]}},`, 200) + `{"action":"allow"}],"outbound_rules":[]}`)
			h.name, h.want = "rule update port out of range", "cannot unmarshal number 99999"
			return h
		}(),
		// CIDR and address edge cases.
		{name: "pool negative prefix", args: []string{"pool", "add", "10.0.0.0/-1"}, want: `bad prefix length "-1"`},
		{name: "pool trailing space", args: []string{"pool", "add", "10.0.0.0/8 "}, want: `bad prefix length "8 "`},
		{name: "pool leading zero octet", args: []string{"pool", "add", "010.0.0.0/8"}, want: `bad CIDR "010.0.0.0/8"`},
		{name: "pool hex octet", args: []string{"pool", "add", "0x0a.0.0.0/8"}, want: `bad CIDR "0x0a.0.0.0/8"`},
		{name: "pool IPv4-mapped", args: []string{"pool", "add", "::ffff:10.0.0.0/104"}, want: "IPv4-mapped IPv6 address"},
		{name: "pool with zone", args: []string{"pool", "add", "fd00::%eth0/64"}, want: "zone"},
		{name: "pool broadcast", args: []string{"pool", "add", "255.255.255.255/32"}, want: "overlaps the broadcast range"},
		{name: "pool double slash", args: []string{"pool", "add", "10.0.0.0//8"}, want: `bad CIDR "10.0.0.0//8"`},
		{name: "pool prefix 08", args: []string{"pool", "add", "10.0.0.0/08"}, want: `bad prefix length "08"`},
		{name: "pool covering the host's fabric", args: []string{"pool", "add", "192.168.60.0/23"}, want: "overlaps existing pool 192.168.60.0/24"},
		{name: "container unspecified address", args: []string{"container", "add", "w2", "0.0.0.0", "--netns", hostNetns}, want: "the unspecified address is not a host address"},
		{name: "container IPv4-mapped address", args: []string{"container", "add", "w2", "::ffff:192.168.60.9", "--netns", hostNetns}, want: "IPv4-mapped IPv6 address; write it as 192.168.60.9"},
		{name: "container address with zone", args: []string{"container", "add", "w2", "fd00::1%eth0", "--netns", hostNetns}, want: "zone"},
		{name: "container the host's own address", args: []string{"container", "add", "w2", "10.0.0.1", "--netns", hostNetns}, want: "10.0.0.1 is not in any pool"},
		{name: "container interface with slash", args: []string{"container", "add", "w2", "auto", "--netns", hostNetns, "--interface", "a/b"}, want: `container "w2"`},
		{name: "peer link-local with zone", args: []string{"bgp", "peer", "add", "fe80::1%eth0", "as", "65000"}, want: "zone"},
		{name: "peer AS asdot overflow", args: []string{"bgp", "peer", "add", "10.0.0.5", "as", "65536.1"}, want: "asdot form is two numbers 0-65535"},
		{name: "peer AS exponent", args: []string{"bgp", "peer", "add", "10.0.0.5", "as", "1e5"}, want: `bad AS number "1e5"`},
		{name: "peer multicast", args: []string{"bgp", "peer", "add", "224.0.0.5", "as", "65000"}, want: "a multicast address is not a host address"},
		{name: "peer show unknown node", args: []string{"node", "bgp", "peer", "show", "--name", "ghost"}, want: `no calico node "ghost"`},
		// Datastore addresses.
		{name: "datastore address not a host", args: []string{"pool", "show"}, env: map[string]string{"ETCD_ENDPOINTS": "", "ETCD_AUTHORITY": "not a host"}, want: `bad datastore address "not a host" in ETCD_AUTHORITY`},
		{name: "datastore URL with path", args: []string{"pool", "show"}, env: map[string]string{"ETCD_ENDPOINTS": "http://10.0.0.1:2379/../../x"}, want: "only a host and a port may follow the scheme"},
		{name: "datastore URL scheme", args: []string{"pool", "show"}, env: map[string]string{"ETCD_ENDPOINTS": "file:///etc/passwd"}, want: `unknown scheme "file"`},

		// Records straight into etcd, under the running agent.
		{name: "record garbage over a good profile", key: "/calico/v1/profile/P", value: `{not json`},
		{name: "record empty value over a good profile", key: "/calico/v1/profile/P", value: ``},
		{name: "record truncated over the good endpoint", key: "/calico/v1/host/h1/endpoint/w1", value: `{"node":"h1","workload":"w1","ipv4Nets":["192.168`},
		{name: "record binary over the good endpoint", key: "/calico/v1/host/h1/endpoint/w1", value: "\xff\xfe\x00\x01garbage"},
		{name: "record wrong types over the pool", key: "/calico/v1/pool/192.168.60.0-24", value: `{"cidr":5,"natOutgoing":"yes"}`},
		{name: "record null over the node", key: "/calico/v1/host/h1/node", value: `null`},
		{name: "record huge profile", key: "/calico/v1/profile/huge", value: `{"name":"huge","tags":["` + strings.Repeat("T", 1<<20) + `"]}`},
		{name: "record deeply nested", key: "/calico/v1/profile/deep", value: strings.Repeat(`{"a":`, 50000) + "1" + strings.Repeat("}", 50000)},
		{name: "record profile whose rules do not parse", key: "/calico/v1/profile/P", value: `{"name":"P","tags":["P"],"inbound":[{"action":"maybe"}],"outbound":[{"action":"allow"}]}`},
		{name: "record profile rule injection", key: "/calico/v1/profile/P", value: `{"name":"P","tags":["P\"; accept; #"],"inbound":[],"outbound":[]}`},
		{name: "record endpoint outside every pool", key: "/calico/v1/host/h1/endpoint/evil", value: `{"node":"h1","workload":"evil","interfaceName":"caliabcdef01234","ipv4Nets":["10.0.0.254/32"]}`},
		{name: "record endpoint on the host NIC", key: "/calico/v1/host/h1/endpoint/evil", value: `{"node":"h1","workload":"evil","interfaceName":"eth0","ipv4Nets":["192.168.60.200/32"]}`},
		{name: "record endpoint for this host under another", key: "/calico/v1/host/h9/endpoint/evil", value: `{"node":"h1","workload":"evil","interfaceName":"caliabcdef01234","ipv4Nets":["192.168.60.201/32"]}`},
		{name: "record pool with a bad CIDR", key: "/calico/v1/pool/banana", value: `{"cidr":"banana"}`},
		{name: "record pool default route", key: "/calico/v1/pool/0.0.0.0-0", value: `{"cidr":"0.0.0.0/0","natOutgoing":true}`},
		{name: "record block outside every pool", key: "/calico/v1/ipam/block/8.8.8.0-26", value: `{"cidr":"8.8.8.0/26","affinity":"h1","allocations":{}}`},
		{name: "record block as large as a /8", key: "/calico/v1/ipam/block/10.0.0.0-8", value: `{"cidr":"10.0.0.0/8","affinity":"h1","allocations":{}}`},
		{name: "record BGP config AS 0", key: "/calico/v1/config/bgp", value: `{"defaultASNumber":0,"nodeMesh":true}`},
		{name: "record global peer loopback", key: "/calico/v1/bgp/peer/127.0.0.1", value: `{"ip":"127.0.0.1","asNumber":65000}`},
		{name: "record node peer of another node", key: "/calico/v1/host/h1/bgp/peer/10.0.0.77", value: `{"ip":"10.0.0.77","asNumber":65000,"node":"h2"}`},
		{name: "record node with a bad address", key: "/calico/v1/host/h1/node", value: `{"name":"h1","ipv4":"10.0.0.300/24"}`},
		{name: "record key with extra segments", key: "/calico/v1/host/h1/endpoint/a/../b", value: `{"node":"h1"}`},
	}

	var cliCases, recCases int
	var slowest time.Duration
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			beforeDS := dsSnapshot(t, cli)
			beforeKernel := kernelState(t, h1)
			if c.key == "" {
				cliCases++
				env := w.env(h1)
				for k, v := range c.env {
					if v == "" {
						delete(env, k)
					} else {
						env[k] = v
					}
				}
				r := calicoctl(t, h1.Netns, env, c.stdin, c.args...)
				slowest = max(slowest, r.elapsed)
				first, rest, _ := strings.Cut(r.stderr, "\n")
				switch {
				case r.code == 0:
					t.Errorf("accepted: %s", r)
				case r.stdout != "":
					t.Errorf("printed to stdout: %s", r)
				case !strings.HasPrefix(first, "error: ") || rest != "":
					t.Errorf("want one line starting \"error: \": %s", r)
				case !strings.Contains(first, c.want):
					t.Errorf("error line does not contain %q: %s", c.want, r)
				}
				if r.elapsed > 5*time.Second {
					t.Errorf("took %s", r.elapsed)
				}
			} else {
				recCases++
				old, existed := get(t, cli, c.key)
				put(t, cli, c.key, c.value)
				// The agent reads in order: once it has logged the sentinel
				// written after the case, it has handled the case.
				sentinel(t, w, cli, i)
				if !strings.Contains(w.nodeLog(h1), "record "+c.key+" skipped") && !strings.Contains(c.name, "extra segments") {
					t.Errorf("the agent did not log that it skipped %s", c.key)
				}
				if got := kernelState(t, h1); got != beforeKernel {
					t.Errorf("the kernel changed while the record was stored:\n%s", lineDiff(beforeKernel, got))
				}
				listings(t, w)
				if existed {
					put(t, cli, c.key, old)
				} else {
					del(t, cli, c.key)
				}
				sentinel(t, w, cli, i)
			}
			if err := syscall.Kill(pid, 0); err != nil {
				t.Fatalf("calico-node (pid %d) died: %v", pid, err)
			}
			if d := diffSnap(beforeDS, dsSnapshot(t, cli)); d != "" {
				t.Errorf("the datastore changed:\n%s", d)
			}
			if got := kernelState(t, h1); got != beforeKernel {
				t.Errorf("the kernel changed:\n%s", lineDiff(beforeKernel, got))
			}
		})
	}
	if cliCases+recCases < 30 || recCases < 15 {
		t.Errorf("only %d calicoctl and %d record cases", cliCases, recCases)
	}
	t.Logf("FIGURE: hostile input: %d calicoctl cases and %d datastore records, each refused; slowest calicoctl refusal %s; agent pid %d alive throughout, datastore and kernel unchanged after every case",
		cliCases, recCases, slowest.Round(time.Millisecond), pid)
}

// listings runs the listing commands, at once, which must work whatever is
// stored.
func listings(t *testing.T, w *world) {
	t.Helper()
	cmds := [][]string{
		{"pool", "show"}, {"profile", "show"}, {"endpoint", "show"}, {"ipam", "show"},
		{"bgp", "peer", "show"}, {"node", "show"}, {"status"},
	}
	errs := make(chan string, len(cmds))
	for _, args := range cmds {
		go func() {
			r, err := runCtl(w.hosts[0].Netns, w.env(w.hosts[0]), "", args...)
			switch {
			case err != nil:
				errs <- err.Error()
			case r.code != 0:
				errs <- r.String()
			default:
				errs <- ""
			}
		}()
	}
	for range cmds {
		if e := <-errs; e != "" {
			t.Errorf("listing with a hostile record stored: %s", e)
		}
	}
}

// sentinel writes and deletes a record the agent must log, and waits for it:
// the watch delivers in order, so everything written before was handled.
func sentinel(t *testing.T, w *world, cli *clientv3.Client, i int) {
	t.Helper()
	key := fmt.Sprintf("/calico/v1/profile/zz-sentinel-%d-%d", i, time.Now().UnixNano())
	put(t, cli, key, "{sentinel")
	waitFor(t, 20*time.Second, "the agent to log the sentinel record", func() (bool, string) {
		return strings.Contains(w.nodeLog(w.hosts[0]), "record "+key+" skipped"), "not in the log yet"
	})
	del(t, cli, key)
}

func get(t *testing.T, cli *clientv3.Client, key string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return "", false
	}
	return string(resp.Kvs[0].Value), true
}

func put(t *testing.T, cli *clientv3.Client, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, key, value); err != nil {
		t.Fatal(err)
	}
}

func del(t *testing.T, cli *clientv3.Client, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
}

// dsSnapshot is every record under the root except status reports, which
// the agent rewrites on its own schedule.
func dsSnapshot(t *testing.T, cli *clientv3.Client) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, datastore.Root, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, kv := range resp.Kvs {
		if !strings.HasPrefix(string(kv.Key), datastore.PrefixStatus) {
			m[string(kv.Key)] = string(kv.Value)
		}
	}
	return m
}

func diffSnap(a, b map[string]string) string {
	var lines []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			lines = append(lines, "deleted "+k)
		} else if v != w {
			lines = append(lines, "changed "+k+": "+clip(v)+" -> "+clip(w))
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			lines = append(lines, "added "+k+" = "+clip(v))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// lineDiff lists the lines only in a (-) and only in b (+).
func lineDiff(a, b string) string {
	count := map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(b, "\n") {
		count[l]--
	}
	var out []string
	for l, n := range count {
		switch {
		case n > 0:
			out = append(out, "- "+l)
		case n < 0:
			out = append(out, "+ "+l)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}
