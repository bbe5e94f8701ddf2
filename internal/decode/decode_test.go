package decode

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/calc"
)

func TestDecodeIntoRoutesEveryKindAndKeepsLastGoodOnGarbage(t *testing.T) {
	s := calc.NewSnapshot()
	records := []struct {
		key, value string
		relevant   bool
	}{
		{"/calico/v1/config/bgp", `{"defaultASNumber":65000,"nodeMesh":false}`, true},
		{"/calico/v1/bgp/peer/10.0.0.254", `{"ip":"10.0.0.254","asNumber":65001}`, true},
		{"/calico/v1/pool/192.168.100.0-24", `{"cidr":"192.168.100.0/24"}`, true},
		{"/calico/v1/profile/P1", `{"name":"P1","tags":["P1"]}`, true},
		{"/calico/v1/host/h1/node", `{"name":"h1","ipv4":"10.0.0.1/24"}`, true},
		{"/calico/v1/host/h1/endpoint/w1", `{"node":"h1","workload":"w1","interfaceName":"cali1"}`, true},
		{"/calico/v1/host/h1/bgp/peer/10.0.0.253", `{"ip":"10.0.0.253","asNumber":65002,"node":"h1"}`, true},
		{"/calico/v1/ipam/block/192.168.100.0-26", `{"cidr":"192.168.100.0/26","affinity":"h1"}`, true},
		{"/calico/v1/policy/web", gnpWeb, true},
		{"/calico/v1/networkset/outside", gnsOutside, true},
		{"/calico/v1/status/h1", `{"node":"h1"}`, false},
		{"/calico/v1/ipam/handle/h1~w1", `{"id":"h1~w1"}`, false},
		{"/other/key", `x`, false},
	}
	for _, r := range records {
		relevant, err := Into(s, r.key, []byte(r.value))
		if err != nil || relevant != r.relevant {
			t.Errorf("%s: relevant=%v err=%v, want relevant=%v", r.key, relevant, err, r.relevant)
		}
	}
	if p := s.Policies["web"]; p.Spec.Selector != "app == 'web' && tier != 'db'" || p.Spec.Ingress[0].Destination.Ports[1].Max != 8080 {
		t.Errorf("policy decoded as %+v", p)
	}
	if n := s.NetworkSets["outside"]; len(n.Spec.Nets) != 1 || n.Metadata.Labels["zone"] != "outside" {
		t.Errorf("network set decoded as %+v", n)
	}
	if s.BGP.DefaultASNumber != 65000 || len(s.GlobalPeers) != 1 || len(s.Pools) != 1 || len(s.Profiles) != 1 ||
		len(s.Nodes) != 1 || len(s.Endpoints) != 1 || len(s.NodePeers) != 1 || len(s.Blocks) != 1 ||
		len(s.Policies) != 1 || len(s.NetworkSets) != 1 {
		t.Fatalf("snapshot incomplete: %+v", s)
	}
	if _, ok := s.Pools["192.168.100.0/24"]; !ok {
		t.Errorf("pool key not unescaped: %v", s.Pools)
	}
	// Garbage over a good record is an error and leaves the good one.
	if _, err := Into(s, "/calico/v1/host/h1/endpoint/w1", []byte(`{not json`)); err == nil {
		t.Error("garbage decoded without error")
	}
	if s.Endpoints["h1/w1"].InterfaceName != "cali1" {
		t.Errorf("good endpoint lost after garbage: %+v", s.Endpoints)
	}
	// Deletion removes.
	if _, err := Into(s, "/calico/v1/host/h1/endpoint/w1", nil); err != nil || len(s.Endpoints) != 0 {
		t.Errorf("delete: err=%v endpoints=%v", err, s.Endpoints)
	}
	if _, err := Into(s, "/calico/v1/policy/web", nil); err != nil || len(s.Policies) != 0 {
		t.Errorf("delete policy: err=%v policies=%v", err, s.Policies)
	}
	if _, err := Into(s, "/calico/v1/networkset/outside", nil); err != nil || len(s.NetworkSets) != 0 {
		t.Errorf("delete network set: err=%v sets=%v", err, s.NetworkSets)
	}
	if _, err := Into(s, "/calico/v1/config/bgp", nil); err != nil || s.BGP.DefaultASNumber != 64512 {
		t.Errorf("deleted BGP config should fall back to defaults, got %+v", s.BGP)
	}
}

// A policy and a network set as calicoctl stores them (encoding/json's
// HTML escaping included, as another writer might leave it).
const (
	gnpWeb = `{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkPolicy","metadata":{"name":"web","uid":"u1","creationTimestamp":"2026-01-01T00:00:00Z"},` +
		`"spec":{"order":10,"selector":"app == 'web' \u0026\u0026 tier != 'db'","ingress":[{"action":"Allow","protocol":"TCP","destination":{"ports":[80,"8000:8080"]}}]}}`
	gnsOutside = `{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkSet","metadata":{"name":"outside","labels":{"zone":"outside"}},"spec":{"nets":["203.0.113.0/24"]}}`
)

// good is a snapshot every hostile record below is written over.
func good(t testing.TB) *calc.Snapshot {
	t.Helper()
	s := calc.NewSnapshot()
	for _, r := range [][2]string{
		{"/calico/v1/pool/192.168.0.0-16", `{"cidr":"192.168.0.0/16","blockSize":26}`},
		{"/calico/v1/config/bgp", `{"defaultASNumber":65000,"nodeMesh":true}`},
		{"/calico/v1/bgp/peer/10.0.0.254", `{"ip":"10.0.0.254","asNumber":65001}`},
		{"/calico/v1/profile/P1", `{"name":"P1","tags":["P1"],"inbound":[{"action":"allow","src":{"tag":"P1"}}],"outbound":[{"action":"allow"}]}`},
		{"/calico/v1/host/h1/node", `{"name":"h1","ipv4":"10.0.0.1/24"}`},
		{"/calico/v1/host/h1/endpoint/w1", `{"node":"h1","workload":"w1","interfaceName":"cali0123456789a","ipv4Nets":["192.168.0.1/32"],"profiles":["P1"]}`},
		{"/calico/v1/host/h1/bgp/peer/10.0.0.253", `{"ip":"10.0.0.253","asNumber":65002,"node":"h1"}`},
		{"/calico/v1/ipam/block/192.168.0.0-26", `{"cidr":"192.168.0.0/26","affinity":"h1","allocations":{"1":"h1~w1"}}`},
		{"/calico/v1/policy/web", gnpWeb},
		{"/calico/v1/networkset/outside", gnsOutside},
	} {
		if _, err := Into(s, r[0], []byte(r[1])); err != nil {
			t.Fatalf("good record %s: %v", r[0], err)
		}
	}
	return s
}

// snapJSON is a comparable image of a snapshot.
func snapJSON(t testing.TB, s *calc.Snapshot) string {
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDecodeRefusesHostileRecords: each record decodes as JSON or not, but
// none may change the snapshot: the last good value stays.
func TestDecodeRefusesHostileRecords(t *testing.T) {
	huge := `{"name":"` + strings.Repeat("P", 1<<20) + `","tags":[]}`
	deep := strings.Repeat(`{"a":`, 20000) + "1" + strings.Repeat("}", 20000)
	// A YAML flow mapping starts with "{" like JSON; its aliases expanded
	// these 43 KB into a policy of 16 million nets.
	var nets strings.Builder
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&nets, "10.%d.%d.0/24,", i/256, i%256)
	}
	aliasBomb := `{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: web}, spec: {selector: all(), ingress: [` +
		`{action: Allow, source: {nets: &n [` + nets.String() + `10.0.0.0/8]}}, &r {action: Allow, source: {nets: *n}, destination: {nets: *n}}` +
		strings.Repeat(", *r", 4000) + `]}}`
	cases := []struct{ name, key, value, want string }{
		{"garbage", "/calico/v1/profile/P1", `{not json`, "does not decode"},
		{"empty value", "/calico/v1/profile/P1", ``, "not a JSON object"},
		{"null", "/calico/v1/pool/192.168.0.0-16", `null`, "not a JSON object"},
		{"array", "/calico/v1/host/h1/node", `[1,2]`, "not a JSON object"},
		{"truncated", "/calico/v1/host/h1/endpoint/w1", `{"node":"h1","workload":"w1","ipv4Nets":["192.168`, "does not decode"},
		{"wrong type", "/calico/v1/pool/192.168.0.0-16", `{"cidr":5}`, "does not decode"},
		{"wrong type nested", "/calico/v1/profile/P1", `{"name":"P1","inbound":[{"action":"allow","src":{"ports":"80"}}]}`, "does not decode"},
		{"huge", "/calico/v1/profile/P1", huge, "1048576 characters, at most 253"},
		{"deeply nested", "/calico/v1/profile/P1", deep, "does not decode"},
		{"rule does not parse", "/calico/v1/profile/P1", `{"name":"P1","inbound":[{"action":"maybe"}]}`, `bad action "maybe"`},
		{"rule bad port range", "/calico/v1/profile/P1", `{"name":"P1","inbound":[{"action":"allow","protocol":"tcp","dst":{"ports":[{"min":9,"max":1}]}}]}`, "greater than"},
		{"rule bad cidr", "/calico/v1/profile/P1", `{"name":"P1","outbound":[{"action":"deny","dst":{"cidr":"10.0.0.1/8"}}]}`, "host bits set"},
		{"profile key mismatch", "/calico/v1/profile/P1", `{"name":"P2"}`, `profile P2 is stored under "P1"`},
		{"profile bad tag", "/calico/v1/profile/P1", `{"name":"P1","tags":["a b"]}`, `bad tag name "a b"`},
		{"pool bad CIDR", "/calico/v1/pool/192.168.0.0-16", `{"cidr":"banana"}`, `bad CIDR "banana"`},
		{"pool default route", "/calico/v1/pool/0.0.0.0-0", `{"cidr":"0.0.0.0/0"}`, "a default route is not a pool"},
		{"pool key mismatch", "/calico/v1/pool/192.168.0.0-16", `{"cidr":"10.0.0.0/8"}`, "is stored under"},
		{"pool bad encapsulation", "/calico/v1/pool/192.168.0.0-16", `{"cidr":"192.168.0.0/16","vxlanMode":"sometimes"}`, "bad VXLAN mode"},
		{"endpoint outside every pool", "/calico/v1/host/h1/endpoint/w1", `{"node":"h1","workload":"w1","interfaceName":"cali0123456789a","ipv4Nets":["10.0.0.2/32"]}`, "outside every pool"},
		{"endpoint on the host NIC", "/calico/v1/host/h1/endpoint/w1", `{"node":"h1","workload":"w1","interfaceName":"eth0","ipv4Nets":["192.168.0.1/32"]}`, "not a workload interface"},
		{"endpoint for another host", "/calico/v1/host/h2/endpoint/w1", `{"node":"h1","workload":"w1","interfaceName":"cali0123456789a","ipv4Nets":["192.168.0.1/32"]}`, "stored under h2/w1"},
		{"endpoint wide prefix", "/calico/v1/host/h1/endpoint/w1", `{"node":"h1","workload":"w1","interfaceName":"cali0123456789a","ipv4Nets":["192.168.0.0/16"]}`, "not a single address"},
		{"endpoint IPv6 in IPv4 list", "/calico/v1/host/h1/endpoint/w1", `{"node":"h1","workload":"w1","interfaceName":"cali0123456789a","ipv4Nets":["fd00::1/128"]}`, "wrong family"},
		{"endpoint bad profile name", "/calico/v1/host/h1/endpoint/w1", `{"node":"h1","workload":"w1","interfaceName":"cali0123456789a","profiles":["../x"]}`, `bad profile name "../x"`},
		{"node bad address", "/calico/v1/host/h1/node", `{"name":"h1","ipv4":"10.0.0.300/24"}`, "bad IPv4"},
		{"node key mismatch", "/calico/v1/host/h1/node", `{"name":"h9","ipv4":"10.0.0.1/24"}`, "is stored under"},
		{"peer AS 0", "/calico/v1/bgp/peer/10.0.0.254", `{"ip":"10.0.0.254","asNumber":0}`, "AS 0 is reserved"},
		{"peer loopback", "/calico/v1/bgp/peer/127.0.0.1", `{"ip":"127.0.0.1","asNumber":1}`, "loopback"},
		{"peer negative prefix limit", "/calico/v1/bgp/peer/10.0.0.254", `{"ip":"10.0.0.254","asNumber":1,"maxPrefixes":-1}`, "max prefixes -1"},
		{"peer huge prefix limit", "/calico/v1/bgp/peer/10.0.0.254", `{"ip":"10.0.0.254","asNumber":1,"maxPrefixes":99999999999}`, "max prefixes"},
		{"global peer naming a node", "/calico/v1/bgp/peer/10.0.0.254", `{"ip":"10.0.0.254","asNumber":1,"node":"h1"}`, "stored for all nodes"},
		{"node peer for another node", "/calico/v1/host/h1/bgp/peer/10.0.0.253", `{"ip":"10.0.0.253","asNumber":1,"node":"h2"}`, "stored for node h1"},
		{"peer key mismatch", "/calico/v1/bgp/peer/10.0.0.254", `{"ip":"10.0.0.9","asNumber":1}`, "is stored under"},
		{"bgp config AS 0", "/calico/v1/config/bgp", `{"defaultASNumber":0,"nodeMesh":true}`, "AS number 0"},
		{"encryption setting not an object", "/calico/v1/config/encryption", `true`, "not a JSON object"},
		{"encryption negative rotation", "/calico/v1/config/encryption", `{"enabled":true,"rotation":-1}`, "rotation count is negative"},
		{"node bad WireGuard key", "/calico/v1/host/h1/node", `{"name":"h1","ipv4":"10.0.0.1/24","wireguardPublicKey":"not-a-key"}`, "bad WireGuard public key"},
		{"block outside every pool", "/calico/v1/ipam/block/8.8.0.0-26", `{"cidr":"8.8.0.0/26","affinity":"h1"}`, "outside every pool"},
		{"block too large", "/calico/v1/ipam/block/192.168.0.0-8", `{"cidr":"192.168.0.0/8","affinity":"h1"}`, "bad block CIDR"},
		{"block huge in pool", "/calico/v1/ipam/block/192.168.0.0-15", `{"cidr":"192.168.0.0/15","affinity":"h1"}`, "larger than 65536 addresses"},
		{"block key mismatch", "/calico/v1/ipam/block/192.168.0.0-26", `{"cidr":"192.168.0.64/26","affinity":"h1"}`, "is stored under"},
		{"policy bad selector", "/calico/v1/policy/web", strings.Replace(gnpWeb, "tier != 'db'", "tier !! 'db'", 1), "spec.selector"},
		{"policy unknown action", "/calico/v1/policy/web", strings.Replace(gnpWeb, `"Allow"`, `"Accept"`, 1), `spec.ingress[0].action: "Accept"`},
		{"policy bad port", "/calico/v1/policy/web", strings.Replace(gnpWeb, `80,`, `80000,`, 1), "port 80000 is outside 0-65535"},
		{"policy unknown field", "/calico/v1/policy/web", strings.Replace(gnpWeb, `"order"`, `"priority"`, 1), `unknown field "priority"`},
		{"policy key/name mismatch", "/calico/v1/policy/web", strings.Replace(gnpWeb, `"name":"web"`, `"name":"db"`, 1), `GlobalNetworkPolicy "db" is stored under /calico/v1/policy/web`},
		{"policy stored as a set", "/calico/v1/networkset/outside", strings.Replace(gnpWeb, `"name":"web"`, `"name":"outside"`, 1), `GlobalNetworkPolicy "outside" is stored under`},
		{"policy wrong apiVersion", "/calico/v1/policy/web", strings.Replace(gnpWeb, "projectcalico.org/v3", "v1", 1), "apiVersion"},
		{"policy null", "/calico/v1/policy/web", `null`, "not a JSON object"},
		{"policy huge selector", "/calico/v1/policy/web", strings.Replace(gnpWeb, "tier != 'db'", strings.Repeat("a", 1<<20)+" ==", 1), "spec.selector"},
		{"policy YAML alias bomb", "/calico/v1/policy/web", aliasBomb, "not one JSON object"},
		{"policy two documents", "/calico/v1/policy/web", gnpWeb + "\n---\n" + gnsOutside, "documents"},
		{"network set bad net", "/calico/v1/networkset/outside", strings.Replace(gnsOutside, "/24", "/33", 1), "spec.nets[0]"},
		{"network set bad label", "/calico/v1/networkset/outside", strings.Replace(gnsOutside, `"zone":`, `"-zone":`, 1), "metadata.labels"},
		{"block bad affinity", "/calico/v1/ipam/block/192.168.0.0-26", `{"cidr":"192.168.0.0/26","affinity":"h 1"}`, `bad node name "h 1"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := good(t)
			before := snapJSON(t, s)
			relevant, err := Into(s, c.key, []byte(c.value))
			if err == nil || !relevant {
				t.Fatalf("accepted (relevant=%v)", relevant)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not contain %q", err, c.want)
			}
			if len(err.Error()) > 600 {
				t.Errorf("error is %d bytes long; a hostile record must not flood the log", len(err.Error()))
			}
			if snapJSON(t, s) != before {
				t.Error("the snapshot changed")
			}
		})
	}
}

// TestDecodeSnapshotPoolsFirstAndCarry: a full listing is order-independent
// (an endpoint checked against pools listed after it), and a bad record in
// a re-listing keeps the value of the snapshot before.
func TestDecodeSnapshotPoolsFirstAndCarry(t *testing.T) {
	kvs := map[string][]byte{
		// "host/..." sorts before "pool/..." and map order is random anyway.
		"/calico/v1/host/h1/endpoint/w1":       []byte(`{"node":"h1","workload":"w1","interfaceName":"cali1","ipv4Nets":["192.168.0.1/32"]}`),
		"/calico/v1/ipam/block/192.168.0.0-26": []byte(`{"cidr":"192.168.0.0/26","affinity":"h1"}`),
		"/calico/v1/pool/192.168.0.0-16":       []byte(`{"cidr":"192.168.0.0/16"}`),
		"/calico/v1/status/h1":                 []byte(`garbage is fine here`),
	}
	s, errs := Snapshot(nil, kvs)
	if len(errs) != 0 || len(s.Endpoints) != 1 || len(s.Blocks) != 1 || len(s.Pools) != 1 {
		t.Fatalf("errs %v, snapshot %+v", errs, s)
	}
	kvs["/calico/v1/host/h1/endpoint/w1"] = []byte(`{"node":"h1","workload":"w1","interfaceName":"eth0"}`)
	kvs["/calico/v1/profile/P9"] = []byte(`{"name":"P9","inbound":[{"action":"maybe"}]}`)
	s2, errs := Snapshot(s, kvs)
	if len(errs) != 2 {
		t.Errorf("want 2 errors, got %v", errs)
	}
	if s2.Endpoints["h1/w1"].InterfaceName != "cali1" {
		t.Errorf("re-list lost the last good endpoint: %+v", s2.Endpoints)
	}
	if _, ok := s2.Profiles["P9"]; ok {
		t.Error("a bad profile with no good value before appeared")
	}
	// A policy overwritten with a bad selector keeps its last good value
	// across a re-listing.
	kvs["/calico/v1/policy/web"] = []byte(gnpWeb)
	s2, _ = Snapshot(s2, kvs)
	kvs["/calico/v1/policy/web"] = []byte(strings.Replace(gnpWeb, "tier != 'db'", "tier !", 1))
	s2b, errs := Snapshot(s2, kvs)
	if len(errs) != 3 || s2b.Policies["web"].Spec.Selector != "app == 'web' && tier != 'db'" {
		t.Errorf("re-list with a bad policy: errs %v, policies %+v", errs, s2b.Policies)
	}
	delete(kvs, "/calico/v1/policy/web")
	// Without the pool, the endpoint and block are refused.
	delete(kvs, "/calico/v1/pool/192.168.0.0-16")
	kvs["/calico/v1/host/h1/endpoint/w1"] = []byte(`{"node":"h1","workload":"w1","interfaceName":"cali1","ipv4Nets":["192.168.0.1/32"]}`)
	s3, errs := Snapshot(nil, kvs)
	if len(errs) != 3 || len(s3.Endpoints) != 0 || len(s3.Blocks) != 0 {
		t.Errorf("without a pool: errs %v, snapshot %+v", errs, s3)
	}
}

// FuzzDecodeRecord feeds arbitrary values (and key tails) for every record
// kind to the agent's decoder over a good snapshot. It must never panic; a
// refused record must leave the snapshot exactly as it was; an accepted one
// must decode the same way twice; and the calculation over the result must
// not panic either.
func FuzzDecodeRecord(f *testing.F) {
	prefixes := []string{
		"/calico/v1/config/bgp",
		"/calico/v1/bgp/peer/",
		"/calico/v1/pool/",
		"/calico/v1/profile/",
		"/calico/v1/host/h1/node",
		"/calico/v1/host/h1/endpoint/",
		"/calico/v1/host/h1/bgp/peer/",
		"/calico/v1/ipam/block/",
		"/calico/v1/host/",
		"/calico/v1/",
		"/calico/v1/policy/",
		"/calico/v1/networkset/",
	}
	seeds := []struct {
		kind       uint8
		tail, json string
	}{
		{0, "", `{"defaultASNumber":65000,"nodeMesh":false}`},
		{1, "10.0.0.9", `{"ip":"10.0.0.9","asNumber":65009}`},
		{2, "10.1.0.0-16", `{"cidr":"10.1.0.0/16","vxlanMode":"Always"}`},
		{3, "P2", `{"name":"P2","tags":["P2"],"inbound":[{"action":"deny","protocol":"icmp","icmpType":8}],"outbound":[]}`},
		{4, "", `{"name":"h1","ipv4":"10.0.0.1/24","asNumber":65000}`},
		{5, "w2", `{"node":"h1","workload":"w2","interfaceName":"cali1","ipv4Nets":["192.168.0.2/32"],"ipv6Nets":[],"profiles":["P1"]}`},
		{6, "10.0.0.7", `{"ip":"10.0.0.7","asNumber":1,"node":"h1"}`},
		{7, "192.168.0.64-26", `{"cidr":"192.168.0.64/26","affinity":"h1","allocations":{"0":"x"}}`},
		{8, "h2/endpoint/w9", `{"node":"h2","workload":"w9","interfaceName":"cali9","ipv4Nets":["192.168.9.9"]}`},
		{5, "w1", `{"node":"h1","workload":"w1","interfaceName":"eth0","ipv4Nets":["10.0.0.2/32"]}`},
		{2, "0.0.0.0-0", `null`},
		{3, "P1", `{"name":"P1","inbound":[{"action":"allow","src":{"ports":[{"min":1,"max":0}]}}]}`},
		{7, "0.0.0.0-1", `{"cidr":"0.0.0.0/1","affinity":"h1"}`},
		{10, "web", gnpWeb},
		{10, "db", `{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkPolicy","metadata":{"name":"db"},"spec":{"egress":[{"action":"Pass","destination":{"notNets":["10.0.0.0/8"],"selector":"has(x)"}}]}}`},
		{11, "outside", gnsOutside},
	}
	for _, s := range seeds {
		f.Add(s.kind, s.tail, []byte(s.json))
	}
	base := good(f)
	baseJSON := snapJSON(f, base)
	f.Fuzz(func(t *testing.T, kind uint8, tail string, value []byte) {
		key := prefixes[int(kind)%len(prefixes)]
		if strings.HasSuffix(key, "/") {
			key += tail
		}
		s := calc.NewSnapshot()
		if err := json.Unmarshal([]byte(baseJSON), s); err != nil {
			t.Fatal(err)
		}
		_, err := Into(s, key, value)
		after := snapJSON(t, s)
		if err != nil {
			if after != baseJSON {
				t.Fatalf("refused record %s changed the snapshot: %v", key, err)
			}
		} else if _, err2 := Into(s, key, value); err2 != nil || snapJSON(t, s) != after {
			t.Fatalf("accepted record %s does not decode the same way twice: %v", key, err2)
		}
		// Whatever was accepted, nothing can point the dataplane outside
		// the pools or at an interface that is not a workload's.
		pools := poolPrefixes(s)
		for id, ep := range s.Endpoints {
			if ep.InterfaceName != "" && !isWorkloadIface(ep.InterfaceName) {
				t.Fatalf("endpoint %s has interface %q", id, ep.InterfaceName)
			}
			for _, n := range append(append([]string{}, ep.IPv4Nets...), ep.IPv6Nets...) {
				a, err := hostAddr(n)
				if err != nil || !inAnyPool(pools, netip.PrefixFrom(a, a.BitLen())) {
					t.Fatalf("endpoint %s holds %q outside every pool (%v)", id, n, err)
				}
			}
		}
		for id, b := range s.Blocks {
			p, err := netip.ParsePrefix(b.CIDR)
			if err != nil || !inAnyPool(pools, p) {
				t.Fatalf("block %s (%q) is outside every pool", id, b.CIDR)
			}
		}
		for _, node := range []string{"h1", "h2"} {
			calc.Compute(calc.Input{Node: node, Snap: s})
		}
	})
}

// TestDecodePolicyRecords: v3 policies and network sets are read as
// `calicoctl apply` reads them; a record that does not validate, or whose
// kind or name disagrees with its key, is refused and the last good one
// stays.
func TestDecodePolicyRecords(t *testing.T) {
	s := calc.NewSnapshot()
	pol := `{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkPolicy","metadata":{"name":"db"},"spec":{"selector":"app == 'db'","ingress":[{"action":"Allow"}]}}`
	set := `{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkSet","metadata":{"name":"out","labels":{"zone":"x"}},"spec":{"nets":["198.51.100.0/24"]}}`
	for key, v := range map[string]string{"/calico/v1/policy/db": pol, "/calico/v1/networkset/out": set} {
		if relevant, err := Into(s, key, []byte(v)); !relevant || err != nil {
			t.Fatalf("%s: relevant=%v err=%v", key, relevant, err)
		}
	}
	if s.Policies["db"].Spec.Selector != "app == 'db'" || s.NetworkSets["out"].Metadata.Labels["zone"] != "x" {
		t.Fatalf("snapshot: %+v %+v", s.Policies, s.NetworkSets)
	}
	for _, bad := range []struct{ key, value, want string }{
		{"/calico/v1/policy/db", strings.Replace(pol, `app == 'db'`, `app ==`, 1), "spec.selector"},
		{"/calico/v1/policy/db", strings.Replace(pol, `"Allow"`, `"Accept"`, 1), "action"},
		{"/calico/v1/policy/db", strings.Replace(pol, `"name":"db"`, `"name":"other"`, 1), "is stored under"},
		{"/calico/v1/policy/db", set, "is stored under"},
		{"/calico/v1/networkset/out", strings.Replace(set, `198.51.100.0/24`, `nope`, 1), "spec.nets"},
		{"/calico/v1/policy/db", `null`, "not a JSON object"},
	} {
		_, err := Into(s, bad.key, []byte(bad.value))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s %s: err %v, want one naming %q", bad.key, bad.value, err, bad.want)
		}
	}
	if len(s.Policies) != 1 || s.Policies["db"].Spec.Ingress[0].Action != "Allow" || len(s.NetworkSets["out"].Spec.Nets) != 1 {
		t.Errorf("a refused record changed the snapshot: %+v %+v", s.Policies, s.NetworkSets)
	}
	if _, err := Into(s, "/calico/v1/policy/db", nil); err != nil || len(s.Policies) != 0 {
		t.Errorf("delete: %v %v", err, s.Policies)
	}
}
