package cli

import (
	"encoding/json"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func intp(n int) *int { return &n }

// TestControlPlane drives every control-plane command against one datastore
// and checks both what calicoctl prints and what it stores.
func TestControlPlane(t *testing.T) {
	t.Parallel()
	s := startStore(t)

	t.Run("EmptyDatastore", func(t *testing.T) {
		s := s.on(t)
		if rows := table(t, s.ok("ipam", "show"), "block", "host", "used", "free"); len(rows) != 0 {
			t.Errorf("ipam show on an empty datastore: rows %q", rows)
		}
		var blocks []any
		s.okJSON(&blocks, "ipam", "show", "-o", "json")
		if blocks == nil || len(blocks) != 0 {
			t.Errorf("ipam show -o json: want [], got %#v", blocks)
		}
		if out := s.ok("ipam", "check"); !strings.Contains(out, "IPAM is consistent") {
			t.Errorf("ipam check: %q", out)
		}
		if rows := table(t, s.ok("endpoint", "show"), "host", "workload", "container", "interface", "addresses", "profiles"); len(rows) != 0 {
			t.Errorf("endpoint show: rows %q", rows)
		}
		var eps []endpointJSON
		s.okJSON(&eps, "endpoint", "show", "-o", "json")
		if eps == nil || len(eps) != 0 {
			t.Errorf("endpoint show -o json: want [], got %#v", eps)
		}
		if rows := table(t, s.ok("node", "show"), "name", "ipv4", "ipv6", "as", "state", "endpoints", "reported"); len(rows) != 0 {
			t.Errorf("node show: rows %q", rows)
		}
		if rows := table(t, s.ok("pool", "show"), "cidr", "ipip", "vxlan", "nat-outgoing", "block", "disabled"); len(rows) != 0 {
			t.Errorf("pool show: rows %q", rows)
		}
		if rows := table(t, s.ok("profile", "show"), "name", "tags", "inbound", "outbound"); len(rows) != 0 {
			t.Errorf("profile show: rows %q", rows)
		}
		if got := s.snapshot(); len(got) != 0 {
			t.Errorf("read-only commands wrote to the datastore: %v", got)
		}
	})

	t.Run("Pools", func(t *testing.T) { testPools(t, s.on(t)) })
	t.Run("Profiles", func(t *testing.T) { testProfiles(t, s.on(t)) })
	t.Run("BGP", func(t *testing.T) { testBGP(t, s.on(t)) })
	t.Run("Nodes", func(t *testing.T) { testNodes(t, s.on(t)) })
	t.Run("Endpoints", func(t *testing.T) { testEndpoints(t, s.on(t)) })
	t.Run("DatastoreSelection", func(t *testing.T) { testDatastoreSelection(t, s.on(t)) })

	t.Run("Version", func(t *testing.T) {
		out := s.on(t).ok("version")
		if !strings.HasPrefix(out, "calicoctl (calico-go) ") || strings.Count(out, "\n") != 1 {
			t.Errorf("version printed %q", out)
		}
	})
}

func storedPool(t *testing.T, s *store, escaped string) poolJSON {
	t.Helper()
	var p poolJSON
	if !s.get(poolKey(escaped), &p) {
		t.Fatalf("pool %s not stored; keys %q", escaped, s.keys(prefixPools))
	}
	return p
}

func testPools(t *testing.T, s *store) {
	// Creation with each encapsulation; the summary line names the result.
	adds := []struct {
		args []string
		line string
		key  string
		want poolJSON
	}{
		{[]string{"192.168.0.0/16", "--ipip", "--nat-outgoing"}, "Pool 192.168.0.0/16: ipip Always, vxlan Never, nat-outgoing true",
			"192.168.0.0-16", poolJSON{"192.168.0.0/16", "Always", "Never", true, 26, false}},
		{[]string{"10.64.0.0/16", "--vxlan-mode=cross-subnet"}, "Pool 10.64.0.0/16: ipip Never, vxlan CrossSubnet, nat-outgoing false",
			"10.64.0.0-16", poolJSON{"10.64.0.0/16", "Never", "CrossSubnet", false, 26, false}},
		{[]string{"10.65.0.0/16", "--vxlan"}, "Pool 10.65.0.0/16: ipip Never, vxlan Always, nat-outgoing false",
			"10.65.0.0-16", poolJSON{"10.65.0.0/16", "Never", "Always", false, 26, false}},
		{[]string{"fd80:24e2:f998:72d6::/64"}, "Pool fd80:24e2:f998:72d6::/64: ipip Never, vxlan Never, nat-outgoing false",
			"fd80:24e2:f998:72d6::-64", poolJSON{"fd80:24e2:f998:72d6::/64", "Never", "Never", false, 122, false}},
		{[]string{"172.16.0.0/16", "--block-size=28", "--ipip-mode=cross-subnet"}, "Pool 172.16.0.0/16: ipip CrossSubnet, vxlan Never, nat-outgoing false",
			"172.16.0.0-16", poolJSON{"172.16.0.0/16", "CrossSubnet", "Never", false, 28, false}},
	}
	for _, a := range adds {
		out := s.ok(append([]string{"pool", "add"}, a.args...)...)
		if strings.TrimSpace(out) != a.line {
			t.Errorf("pool add %q printed %q, want %q", a.args, out, a.line)
		}
		if got := storedPool(t, s, a.key); got != a.want {
			t.Errorf("pool add %q stored %+v, want %+v", a.args, got, a.want)
		}
	}
	if r := s.run("pool", "add", "192.168.100.0/30"); r.code == 0 {
		t.Errorf("pool overlapping 192.168.0.0/16 was accepted:\n%s", r)
	}

	// Two pools in one command, one of each family.
	s.ok("pool", "add", "10.66.0.0/16", "fd81::/64", "--nat-outgoing")
	if p := storedPool(t, s, "10.66.0.0-16"); !p.NATOutgoing || p.BlockSize != 26 {
		t.Errorf("10.66.0.0/16 stored %+v", p)
	}
	if p := storedPool(t, s, "fd81::-64"); !p.NATOutgoing || p.BlockSize != 122 {
		t.Errorf("fd81::/64 stored %+v", p)
	}

	// Re-adding overrides the options, as the seed does to drop --ipip; the
	// block size of carved blocks stays.
	out := s.ok("pool", "add", "192.168.0.0/16", "--nat-outgoing")
	if strings.TrimSpace(out) != "Pool 192.168.0.0/16: ipip Never, vxlan Never, nat-outgoing true" {
		t.Errorf("re-add printed %q", out)
	}
	if got, want := storedPool(t, s, "192.168.0.0-16"), (poolJSON{"192.168.0.0/16", "Never", "Never", true, 26, false}); got != want {
		t.Errorf("after re-add: %+v, want %+v", got, want)
	}
	s.ok("pool", "add", "172.16.0.0/16", "--vxlan")
	if got, want := storedPool(t, s, "172.16.0.0-16"), (poolJSON{"172.16.0.0/16", "Never", "Always", false, 28, false}); got != want {
		t.Errorf("re-add kept block size? %+v, want %+v", got, want)
	}
	s.ok("pool", "add", "10.66.0.0/16", "--disabled")
	if got := storedPool(t, s, "10.66.0.0-16"); !got.Disabled || got.NATOutgoing {
		t.Errorf("re-add with --disabled: %+v", got)
	}

	// Table.
	rows := table(t, s.ok("pool", "show"), "cidr", "ipip", "vxlan", "nat-outgoing", "block", "disabled")
	want := map[string][]string{
		"10.64.0.0/16":             {"10.64.0.0/16", "Never", "CrossSubnet", "false", "/26", "false"},
		"10.65.0.0/16":             {"10.65.0.0/16", "Never", "Always", "false", "/26", "false"},
		"10.66.0.0/16":             {"10.66.0.0/16", "Never", "Never", "false", "/26", "true"},
		"172.16.0.0/16":            {"172.16.0.0/16", "Never", "Always", "false", "/28", "false"},
		"192.168.0.0/16":           {"192.168.0.0/16", "Never", "Never", "true", "/26", "false"},
		"fd80:24e2:f998:72d6::/64": {"fd80:24e2:f998:72d6::/64", "Never", "Never", "false", "/122", "false"},
		"fd81::/64":                {"fd81::/64", "Never", "Never", "true", "/122", "false"},
	}
	if len(rows) != len(want) {
		t.Errorf("pool show: %d rows, want %d: %q", len(rows), len(want), rows)
	}
	for _, r := range rows {
		if !reflect.DeepEqual(r, want[r[0]]) {
			t.Errorf("pool show row %q, want %q", r, want[r[0]])
		}
	}

	// JSON by family, and equal to what is stored.
	var v4, v6, all []poolJSON
	s.okJSON(&v4, "pool", "show", "--ipv4", "-o", "json")
	s.okJSON(&v6, "pool", "show", "--ipv6", "-o", "json")
	s.okJSON(&all, "pool", "show", "-o", "json")
	if len(v4) != 5 || len(v6) != 2 || len(all) != 7 {
		t.Fatalf("pool show json: %d IPv4, %d IPv6, %d all; want 5, 2, 7", len(v4), len(v6), len(all))
	}
	for _, p := range v4 {
		if strings.Contains(p.CIDR, ":") {
			t.Errorf("--ipv4 listed %s", p.CIDR)
		}
		if got := storedPool(t, s, strings.ReplaceAll(p.CIDR, "/", "-")); got != p {
			t.Errorf("json %+v, stored %+v", p, got)
		}
	}
	for _, p := range v6 {
		if !strings.Contains(p.CIDR, ":") {
			t.Errorf("--ipv6 listed %s", p.CIDR)
		}
	}
	var both []poolJSON
	s.okJSON(&both, "pool", "show", "--ipv4", "--ipv6", "-o", "json")
	if !reflect.DeepEqual(both, all) {
		t.Errorf("--ipv4 --ipv6 should list both families: %+v", both)
	}
	yml := s.ok("pool", "show", "--ipv6", "-o", "yaml")
	for _, w := range []string{"- blockSize: 122\n  cidr: fd80:24e2:f998:72d6::/64\n", "cidr: fd81::/64", "natOutgoing: true", "ipipMode: Never"} {
		if !strings.Contains(yml, w) {
			t.Errorf("pool show -o yaml lacks %q:\n%s", w, yml)
		}
	}
	if strings.Contains(yml, "192.168.") {
		t.Errorf("--ipv6 yaml lists IPv4 pools:\n%s", yml)
	}

	// Remove, one of each family.
	for _, c := range []string{"10.65.0.0/16", "fd81::/64"} {
		if out := s.ok("pool", "remove", c); out != "" {
			t.Errorf("pool remove %s printed %q", c, out)
		}
		if s.get(poolKey(strings.ReplaceAll(c, "/", "-")), nil) {
			t.Errorf("pool %s still stored after remove", c)
		}
	}
	s.okJSON(&all, "pool", "show", "-o", "json")
	var cidrs []string
	for _, p := range all {
		cidrs = append(cidrs, p.CIDR)
	}
	if want := []string{"10.64.0.0/16", "10.66.0.0/16", "172.16.0.0/16", "192.168.0.0/16", "fd80:24e2:f998:72d6::/64"}; !reflect.DeepEqual(cidrs, want) {
		t.Errorf("after remove: pools %q, want %q", cidrs, want)
	}
	if got := s.keys(prefixPools); len(got) != 5 {
		t.Errorf("stored pools %q", got)
	}
}

func storedProfile(t *testing.T, s *store, name string) profileJSON {
	t.Helper()
	var p profileJSON
	if !s.get(prefixProfs+name, &p) {
		t.Fatalf("profile %s not stored; keys %q", name, s.keys(prefixProfs))
	}
	return p
}

func testProfiles(t *testing.T, s *store) {
	for _, n := range []string{"WEB", "DB", "tmp.profile-1"} {
		if out := s.ok("profile", "add", n); out != "Created profile "+n+"\n" {
			t.Errorf("profile add %s printed %q", n, out)
		}
		want := profileJSON{Name: n, Tags: []string{n},
			Inbound:  []ruleJSON{{Action: "allow", Src: entity{Tag: n}}},
			Outbound: []ruleJSON{{Action: "allow"}}}
		if got := storedProfile(t, s, n); !reflect.DeepEqual(got, want) {
			t.Errorf("new profile %s stored %+v, want the seed default %+v", n, got, want)
		}
	}

	// Tags.
	s.ok("profile", "WEB", "tag", "add", "frontend")
	s.ok("profile", "WEB", "tag", "add", "frontend") // already there: no-op
	s.ok("profile", "WEB", "tag", "add", "public")
	if out := s.ok("profile", "WEB", "tag", "show"); out != "WEB\nfrontend\npublic\n" {
		t.Errorf("tag show: %q", out)
	}
	s.ok("profile", "WEB", "tag", "remove", "public")
	if got := storedProfile(t, s, "WEB").Tags; !reflect.DeepEqual(got, []string{"WEB", "frontend"}) {
		t.Errorf("stored tags %q", got)
	}

	// Rules: append, insert with --at=N and --at N.
	s.ok("profile", "WEB", "rule", "add", "inbound", "allow", "tcp", "from", "tag", "DB", "to", "ports", "80,443,8000:8080")
	s.ok("profile", "WEB", "rule", "add", "inbound", "--at=1", "deny", "icmp", "type", "8", "code", "0")
	s.ok("profile", "WEB", "rule", "add", "inbound", "--at", "3", "allow", "icmpv6", "from", "cidr", "fd00::/8")
	s.ok("profile", "WEB", "rule", "add", "outbound", "--at=1", "deny", "udp", "to", "cidr", "10.0.0.0/8", "ports", "53")
	s.ok("profile", "WEB", "rule", "add", "outbound", "deny", "from", "tag", "frontend", "cidr", "192.168.0.0/16")
	wantIn := []ruleJSON{
		{Action: "deny", Protocol: "icmp", ICMPType: intp(8), ICMPCode: intp(0)},
		{Action: "allow", Src: entity{Tag: "WEB"}},
		{Action: "allow", Protocol: "icmpv6", Src: entity{CIDR: "fd00::/8"}},
		{Action: "allow", Protocol: "tcp", Src: entity{Tag: "DB"}, Dst: entity{Ports: []portRange{{80, 80}, {443, 443}, {8000, 8080}}}},
	}
	wantOut := []ruleJSON{
		{Action: "deny", Protocol: "udp", Dst: entity{CIDR: "10.0.0.0/8", Ports: []portRange{{53, 53}}}},
		{Action: "allow"},
		{Action: "deny", Src: entity{Tag: "frontend", CIDR: "192.168.0.0/16"}},
	}
	p := storedProfile(t, s, "WEB")
	if !reflect.DeepEqual(p.Inbound, wantIn) || !reflect.DeepEqual(p.Outbound, wantOut) {
		t.Errorf("stored rules:\n in  %s\n out %s\nwant\n in  %s\n out %s", js(p.Inbound), js(p.Outbound), js(wantIn), js(wantOut))
	}
	wantShow := `Inbound rules:
   1 deny icmp type 8 code 0
   2 allow from tag WEB
   3 allow icmpv6 from cidr fd00::/8
   4 allow tcp from tag DB to ports 80,443,8000:8080
Outbound rules:
   1 deny udp to ports 53 cidr 10.0.0.0/8
   2 allow
   3 deny from tag frontend cidr 192.168.0.0/16
`
	if got := s.ok("profile", "WEB", "rule", "show"); got != wantShow {
		t.Errorf("rule show:\n%s\nwant:\n%s", got, wantShow)
	}
	var doc rulesDoc
	s.okJSON(&doc, "profile", "WEB", "rule", "json")
	if !reflect.DeepEqual(doc.Inbound, wantIn) || !reflect.DeepEqual(doc.Outbound, wantOut) {
		t.Errorf("rule json: %+v", doc)
	}

	// Remove by text (as printed by rule show) and by position, both spellings.
	s.ok("profile", "WEB", "rule", "remove", "inbound", "allow", "icmpv6", "from", "cidr", "fd00::/8")
	s.ok("profile", "WEB", "rule", "remove", "inbound", "--at=1")
	s.ok("profile", "WEB", "rule", "remove", "outbound", "--at", "3")
	p = storedProfile(t, s, "WEB")
	if want := []ruleJSON{wantIn[1], wantIn[3]}; !reflect.DeepEqual(p.Inbound, want) {
		t.Errorf("inbound after removes: %s, want %s", js(p.Inbound), js(want))
	}
	if want := wantOut[:2]; !reflect.DeepEqual(p.Outbound, want) {
		t.Errorf("outbound after removes: %s, want %s", js(p.Outbound), js(want))
	}

	// JSON round trip: json piped into update leaves the rules equal, and
	// copies them to another profile exactly.
	raw := s.ok("profile", "WEB", "rule", "json")
	before := storedProfile(t, s, "WEB")
	s.okIn(raw, "profile", "WEB", "rule", "update")
	if after := storedProfile(t, s, "WEB"); !reflect.DeepEqual(after, before) {
		t.Errorf("rule update with rule json changed the profile:\n%+v\n%+v", before, after)
	}
	s.okIn(raw, "profile", "DB", "rule", "update")
	db := storedProfile(t, s, "DB")
	if !reflect.DeepEqual(db.Inbound, before.Inbound) || !reflect.DeepEqual(db.Outbound, before.Outbound) {
		t.Errorf("DB rules after update: %+v", db)
	}
	if !reflect.DeepEqual(db.Tags, []string{"DB"}) {
		t.Errorf("rule update touched DB's tags: %q", db.Tags)
	}
	if got := s.ok("profile", "DB", "rule", "json"); got != raw {
		t.Errorf("DB rule json differs from the document it was given:\n%s\nvs\n%s", got, raw)
	}
	// An empty document clears the rules.
	s.okIn(`{"inbound_rules": [], "outbound_rules": []}`, "profile", "tmp.profile-1", "rule", "update")
	if p := storedProfile(t, s, "tmp.profile-1"); len(p.Inbound)+len(p.Outbound) != 0 {
		t.Errorf("empty rules document left %+v", p)
	}
	if got := s.ok("profile", "tmp.profile-1", "rule", "show"); got != "Inbound rules:\nOutbound rules:\n" {
		t.Errorf("rule show of a profile without rules: %q", got)
	}
	var empty rulesDoc
	s.okJSON(&empty, "profile", "tmp.profile-1", "rule", "json")
	if empty.Inbound == nil || empty.Outbound == nil || len(empty.Inbound)+len(empty.Outbound) != 0 {
		t.Errorf("rule json of a profile without rules should be two empty lists: %+v", empty)
	}

	// show, table and JSON.
	rows := table(t, s.ok("profile", "show"), "name", "tags", "inbound", "outbound")
	wantRows := [][]string{
		{"DB", "DB", "2", "2"},
		{"WEB", "WEB,frontend", "2", "2"},
		{"tmp.profile-1", "tmp.profile-1", "0", "0"},
	}
	if !reflect.DeepEqual(rows, wantRows) {
		t.Errorf("profile show rows %q, want %q", rows, wantRows)
	}
	var profs []profileJSON
	s.okJSON(&profs, "profile", "show", "-o", "json")
	if len(profs) != 3 || profs[1].Name != "WEB" || !reflect.DeepEqual(profs[1], storedProfile(t, s, "WEB")) {
		t.Errorf("profile show -o json: %+v", profs)
	}
	var profs2 []profileJSON
	s.okJSON(&profs2, "profile", "show", "--output=json")
	if !reflect.DeepEqual(profs, profs2) {
		t.Errorf("--output=json and -o json differ")
	}
	rows = table(t, s.ok("profile", "show", "--detailed"), "name", "tags", "inbound", "outbound", "endpoints")
	if len(rows) != 3 || rows[0][4] != "" || rows[1][4] != "" {
		t.Errorf("profile show --detailed without endpoints: %q", rows)
	}

	// Remove.
	if out := s.ok("profile", "remove", "tmp.profile-1"); out != "Removed profile tmp.profile-1\n" {
		t.Errorf("profile remove printed %q", out)
	}
	if s.get(prefixProfs+"tmp.profile-1", nil) {
		t.Error("profile still stored after remove")
	}
	if got := s.keys(prefixProfs); !reflect.DeepEqual(got, []string{prefixProfs + "DB", prefixProfs + "WEB"}) {
		t.Errorf("stored profiles %q", got)
	}
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func testBGP(t *testing.T, s *store) {
	if out := s.ok("bgp", "default-node-as"); out != "64512\n" {
		t.Errorf("default AS on a fresh datastore: %q", out)
	}
	if out := s.ok("bgp", "node-mesh"); out != "on\n" {
		t.Errorf("node mesh on a fresh datastore: %q", out)
	}
	if s.get(keyBGP, nil) {
		t.Error("reading BGP settings wrote them")
	}
	s.ok("bgp", "default-node-as", "65001")
	if out := s.ok("bgp", "default-node-as"); out != "65001\n" {
		t.Errorf("default AS after set: %q", out)
	}
	var cfg bgpConfigJSON
	if s.get(keyBGP, &cfg); cfg != (bgpConfigJSON{65001, true}) {
		t.Errorf("stored BGP config %+v", cfg)
	}
	s.ok("bgp", "default-node-as", "1.10") // asdot
	if out := s.ok("bgp", "default-node-as"); out != "65546\n" {
		t.Errorf("default AS after asdot 1.10: %q", out)
	}
	s.ok("bgp", "default-node-as", "4294967295")
	if s.get(keyBGP, &cfg); cfg.DefaultASNumber != 4294967295 {
		t.Errorf("stored AS %d", cfg.DefaultASNumber)
	}

	s.ok("bgp", "node-mesh", "off")
	if out := s.ok("bgp", "node-mesh"); out != "off\n" {
		t.Errorf("node mesh after off: %q", out)
	}
	if s.get(keyBGP, &cfg); cfg != (bgpConfigJSON{4294967295, false}) {
		t.Errorf("node-mesh off changed the AS or did not store: %+v", cfg)
	}
	s.ok("bgp", "node-mesh", "on")
	if s.get(keyBGP, &cfg); !cfg.NodeMesh {
		t.Errorf("node-mesh on not stored: %+v", cfg)
	}
	s.ok("bgp", "default-node-as", "64512")

	// Global peers; addresses are stored in canonical form.
	s.ok("bgp", "peer", "add", "10.0.0.254", "as", "65000")
	s.ok("bgp", "peer", "add", "FD00:0:0::FE", "as", "65001")
	s.ok("bgp", "peer", "add", "192.0.2.1", "as", "1.1")
	var pr peerJSON
	if !s.get(prefixPeers+"fd00::fe", &pr) || pr != (peerJSON{"fd00::fe", 65001, ""}) {
		t.Errorf("stored IPv6 peer %+v; keys %q", pr, s.keys(prefixPeers))
	}
	if !s.get(prefixPeers+"192.0.2.1", &pr) || pr.ASNumber != 65537 {
		t.Errorf("asdot peer stored %+v", pr)
	}
	rows := table(t, s.ok("bgp", "peer", "show"), "peer address", "as number", "max prefixes")
	want := [][]string{{"10.0.0.254", "65000", "10000 (default)"}, {"192.0.2.1", "65537", "10000 (default)"}, {"fd00::fe", "65001", "10000 (default)"}}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("bgp peer show %q, want %q", rows, want)
	}
	var peers []peerJSON
	s.okJSON(&peers, "bgp", "peer", "show", "--ipv4", "-o", "json")
	if !reflect.DeepEqual(peers, []peerJSON{{"10.0.0.254", 65000, ""}, {"192.0.2.1", 65537, ""}}) {
		t.Errorf("--ipv4 peers %+v", peers)
	}
	s.okJSON(&peers, "bgp", "peer", "show", "--ipv6", "-o", "json")
	if !reflect.DeepEqual(peers, []peerJSON{{"fd00::fe", 65001, ""}}) {
		t.Errorf("--ipv6 peers %+v", peers)
	}
	s.ok("bgp", "peer", "add", "10.0.0.254", "as", "65010") // re-add changes the AS
	if s.get(prefixPeers+"10.0.0.254", &pr); pr.ASNumber != 65010 {
		t.Errorf("re-added peer %+v", pr)
	}
	s.ok("bgp", "peer", "remove", "fd00::FE") // any spelling of the address
	s.ok("bgp", "peer", "remove", "192.0.2.1")
	if got := s.keys(prefixPeers); !reflect.DeepEqual(got, []string{prefixPeers + "10.0.0.254"}) {
		t.Errorf("peers after remove: %q", got)
	}
	s.okJSON(&peers, "bgp", "peer", "show", "-o", "json")
	if !reflect.DeepEqual(peers, []peerJSON{{"10.0.0.254", 65010, ""}}) {
		t.Errorf("peers after remove: %+v", peers)
	}
}

func testNodes(t *testing.T, s *store) {
	// Node records are written by calico-node; put them in directly.
	s.put(nodeKey("h1"), nodeJSON{Name: "h1", IPv4: "10.0.0.1/24"})
	s.put(nodeKey("h2"), nodeJSON{Name: "h2", IPv4: "10.0.0.2/24", IPv6: "fd00::2/64", ASNumber: 65002})

	rows := table(t, s.ok("node", "show"), "name", "ipv4", "ipv6", "as", "state", "endpoints", "reported")
	want := [][]string{
		{"h1", "10.0.0.1/24", "-", "64512 (default)", "unknown", "-", "-"},
		{"h2", "10.0.0.2/24", "fd00::2/64", "65002", "unknown", "-", "-"},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("node show %q, want %q", rows, want)
	}
	var nodes []nodeJSON
	s.okJSON(&nodes, "node", "show", "-o", "json")
	if !reflect.DeepEqual(nodes, []nodeJSON{{Name: "h1", IPv4: "10.0.0.1/24"}, {Name: "h2", IPv4: "10.0.0.2/24", IPv6: "fd00::2/64", ASNumber: 65002}}) {
		t.Errorf("node show -o json %+v", nodes)
	}

	// Per-node peers: this node (CALICO_NODENAME=h1) and --name.
	s.ok("node", "bgp", "peer", "add", "10.0.0.100", "as", "65100")
	s.ok("node", "bgp", "peer", "add", "fd00::100", "as", "65101")
	s.ok("node", "bgp", "peer", "add", "10.0.0.200", "as", "65200", "--name", "h2")
	var pr peerJSON
	if !s.get(prefixHosts+"h1/bgp/peer/10.0.0.100", &pr) || pr != (peerJSON{"10.0.0.100", 65100, "h1"}) {
		t.Errorf("h1 peer stored %+v", pr)
	}
	if !s.get(prefixHosts+"h2/bgp/peer/10.0.0.200", &pr) || pr != (peerJSON{"10.0.0.200", 65200, "h2"}) {
		t.Errorf("h2 peer stored %+v", pr)
	}
	rows = table(t, s.ok("node", "bgp", "peer", "show"), "peer address", "as number", "max prefixes")
	if want := [][]string{{"10.0.0.100", "65100", "10000 (default)"}, {"fd00::100", "65101", "10000 (default)"}}; !reflect.DeepEqual(rows, want) {
		t.Errorf("node bgp peer show (h1) %q, want %q", rows, want)
	}
	var peers []peerJSON
	s.okJSON(&peers, "node", "bgp", "peer", "show", "--name=h2", "-o", "json")
	if !reflect.DeepEqual(peers, []peerJSON{{"10.0.0.200", 65200, "h2"}}) {
		t.Errorf("node bgp peer show --name=h2: %+v", peers)
	}
	s.okJSON(&peers, "node", "bgp", "peer", "show", "--ipv6", "-o", "json")
	if !reflect.DeepEqual(peers, []peerJSON{{"fd00::100", 65101, "h1"}}) {
		t.Errorf("node bgp peer show --ipv6: %+v", peers)
	}
	// Node peers are not global peers.
	s.okJSON(&peers, "bgp", "peer", "show", "-o", "json")
	for _, p := range peers {
		if p.Node != "" {
			t.Errorf("bgp peer show lists a node peer: %+v", p)
		}
	}
	s.ok("node", "bgp", "peer", "remove", "fd00::100")
	s.ok("node", "bgp", "peer", "remove", "10.0.0.200", "--name", "h2")
	if s.get(prefixHosts+"h1/bgp/peer/fd00::100", nil) || s.get(prefixHosts+"h2/bgp/peer/10.0.0.200", nil) {
		t.Error("node peers still stored after remove")
	}
	if !s.get(prefixHosts+"h1/bgp/peer/10.0.0.100", nil) {
		t.Error("removing one node peer removed another")
	}

	// status for a node that has never reported: one clear line.
	for _, args := range [][]string{{"status"}, {"status", "--name", "h2"}} {
		r := s.run(args...)
		node := "h1"
		if len(args) > 1 {
			node = "h2"
		}
		wantErr := fmt.Sprintf("error: node %q has not reported status; is calico-node running there?", node)
		if r.code == 0 || !strings.HasPrefix(r.stderr, wantErr) || strings.Count(r.stderr, "\n") != 1 || r.stdout != "" {
			t.Errorf("want one-line error starting %q:\n%s", wantErr, r)
		}
	}

	// Status as calico-node reports it: h1 fresh and ready, h2 stale.
	now := time.Now().UTC().Format(time.RFC3339)
	st1 := statusJSON{Node: "h1", Ready: true, Updated: now, PID: 4321, Endpoints: 2, BGPPeers: []peerStateJSON{
		{IP: "10.0.0.2", ASNumber: 65002, Type: "node-mesh", State: "Established", Since: "2025-01-02T03:04:05Z", Received: 3, Rejected: 1},
		{IP: "10.0.0.100", ASNumber: 65100, Type: "node", State: "Active"},
	}}
	s.put(statusKey("h1"), st1)
	s.put(statusKey("h2"), statusJSON{Node: "h2", Ready: true, Updated: "2020-01-01T00:00:00Z", PID: 99, Endpoints: 0})
	out := s.ok("status")
	head, rest, _ := strings.Cut(out, "\n")
	if want := fmt.Sprintf("calico-node h1 is ready (pid 4321, 2 endpoints, reported %s)", now); head != want {
		t.Errorf("status first line %q, want %q", head, want)
	}
	if !strings.HasPrefix(rest, "\nBGP sessions\n") {
		t.Fatalf("status: no BGP sessions section:\n%s", out)
	}
	rows = table(t, strings.TrimPrefix(rest, "\nBGP sessions\n"), "peer address", "peer type", "as", "state", "since", "routes received", "rejected")
	if want := [][]string{
		{"10.0.0.2", "node-mesh", "65002", "Established", "2025-01-02T03:04:05Z", "3", "1"},
		{"10.0.0.100", "node", "65100", "Active", "-", "0", "0"},
	}; !reflect.DeepEqual(rows, want) {
		t.Errorf("status sessions %q, want %q", rows, want)
	}
	var st statusJSON
	s.okJSON(&st, "status", "-o", "json")
	if !reflect.DeepEqual(st, st1) {
		t.Errorf("status -o json %+v, want %+v", st, st1)
	}
	if out := s.ok("status", "--name", "h2"); !strings.HasPrefix(out, "calico-node h2 is down (pid 99, 0 endpoints, reported 2020-01-01T00:00:00Z)\n") {
		t.Errorf("stale status: %q", out)
	}
	rows = table(t, s.ok("node", "show"), "name", "ipv4", "ipv6", "as", "state", "endpoints", "reported")
	if want := [][]string{
		{"h1", "10.0.0.1/24", "-", "64512 (default)", "ready", "2", now},
		{"h2", "10.0.0.2/24", "fd00::2/64", "65002", "down", "0", "2020-01-01T00:00:00Z"},
	}; !reflect.DeepEqual(rows, want) {
		t.Errorf("node show with status %q, want %q", rows, want)
	}
	// node remove: refused while the node has endpoints, then --force
	// takes the node, its peers and endpoints; a node without endpoints
	// goes without --force. (Names unlikely to have a calico-node pid file.)
	for _, n := range []string{"e2e-gone-1", "e2e-gone-2"} {
		s.put(nodeKey(n), nodeJSON{Name: n, IPv4: "10.0.9.1/24"})
	}
	s.ok("node", "bgp", "peer", "add", "10.0.9.254", "as", "65009", "--name", "e2e-gone-1")
	s.put(endpointKey("e2e-gone-1", "wx"), endpointJSON{Node: "e2e-gone-1", Workload: "wx", Orchestrator: "netns",
		InterfaceName: "clie2e-absent", WorkloadIface: "eth0", IPv4Nets: []string{}, IPv6Nets: []string{}, Profiles: []string{}})
	s.put(statusKey("e2e-gone-1"), statusJSON{Node: "e2e-gone-1", Updated: now})
	before := s.snapshot()
	if r := s.run("node", "remove", "--name", "e2e-gone-1"); r.code == 0 || !strings.Contains(r.stderr, `node "e2e-gone-1" still has 1 endpoint(s); remove them first, or use --force`) {
		t.Errorf("node remove with an endpoint:\n%s", r)
	}
	if d := diff(before, s.snapshot()); d != "" {
		t.Errorf("refused node remove changed the datastore:\n%s", d)
	}
	if out := s.ok("node", "remove", "--name", "e2e-gone-1", "--force"); out != "Node e2e-gone-1 removed\n" {
		t.Errorf("node remove --force printed %q", out)
	}
	if out := s.ok("node", "remove", "--name", "e2e-gone-2"); out != "Node e2e-gone-2 removed\n" {
		t.Errorf("node remove printed %q", out)
	}
	for _, n := range []string{"e2e-gone-1", "e2e-gone-2"} {
		if got := s.keys(prefixHosts + n + "/"); len(got) != 0 {
			t.Errorf("after node remove %s: %q", n, got)
		}
	}
	if s.get(statusKey("e2e-gone-1"), nil) {
		t.Error("node remove left the status record")
	}
	if d := diff(before, s.snapshot()); strings.Contains(d, "h1") || strings.Contains(d, "h2") {
		t.Errorf("node remove touched other nodes:\n%s", d)
	}

	st1.Problems = []string{"no route to 10.0.0.2"}
	st1.Ready = true
	s.put(statusKey("h1"), st1)
	out = s.ok("status")
	if !strings.Contains(out, "calico-node h1 is ready (with problems)") || !strings.Contains(out, "\nproblem: no route to 10.0.0.2\n") {
		t.Errorf("status with a problem:\n%s", out)
	}
}

// testEndpoints covers the endpoint and container commands that only touch
// the datastore, with an endpoint record written directly (a real one needs
// calico-node and a network namespace).
func testEndpoints(t *testing.T, s *store) {
	iface := "clie2e" + fmt.Sprintf("%06x", s.port)
	if _, err := net.InterfaceByName(iface); err == nil {
		t.Fatalf("interface %s exists on this host; refusing to name it in a test endpoint", iface)
	}
	ep := endpointJSON{Node: "h1", Workload: "w1", Orchestrator: "netns", NetnsPath: "/var/run/netns/nonexistent-e2e",
		InterfaceName: iface, WorkloadIface: "eth0", MAC: "ee:ee:ee:ee:ee:ee",
		IPv4Nets: []string{"192.168.0.5/32"}, IPv6Nets: []string{}, Profiles: []string{"WEB"}}
	s.put(endpointKey("h1", "w1"), ep)

	rows := table(t, s.ok("endpoint", "show"), "host", "workload", "container", "interface", "addresses", "profiles")
	if want := [][]string{{"h1", "w1", "", iface, "192.168.0.5/32", "WEB"}}; !reflect.DeepEqual(rows, want) {
		t.Errorf("endpoint show %q, want %q", rows, want)
	}
	rows = table(t, s.ok("endpoint", "show", "--detailed"), "host", "workload", "container", "interface", "addresses", "profiles", "mac", "orchestrator", "netns", "container id")
	if len(rows) != 1 || rows[0][6] != ep.MAC || rows[0][7] != "netns" || rows[0][8] != ep.NetnsPath || rows[0][9] != "" {
		t.Errorf("endpoint show --detailed %q", rows)
	}
	var eps []endpointJSON
	s.okJSON(&eps, "endpoint", "show", "-o", "json", "--host", "h1")
	if len(eps) != 1 || !reflect.DeepEqual(eps[0], ep) {
		t.Errorf("endpoint show -o json %+v", eps)
	}
	s.okJSON(&eps, "endpoint", "show", "-o", "json", "--host", "h2")
	if len(eps) != 0 {
		t.Errorf("endpoint show --host h2: %+v", eps)
	}

	// The endpoint shows up in profile show --detailed and node show.
	rows = table(t, s.ok("profile", "show", "--detailed"), "name", "tags", "inbound", "outbound", "endpoints")
	if len(rows) != 2 || rows[1][0] != "WEB" || rows[1][4] != "h1/w1" || rows[0][4] != "" {
		t.Errorf("profile show --detailed %q", rows)
	}

	// Profile list of the workload.
	if out := s.ok("container", "w1", "profile", "show"); out != "WEB\n" {
		t.Errorf("container profile show %q", out)
	}
	s.ok("container", "w1", "profile", "append", "DB")
	checkProfiles := func(want ...string) {
		t.Helper()
		var got endpointJSON
		s.get(endpointKey("h1", "w1"), &got)
		if !slices.Equal(got.Profiles, want) {
			t.Errorf("stored profiles %q, want %q", got.Profiles, want)
		}
		if out := s.ok("container", "w1", "profile", "show"); out != strings.Join(want, "\n")+strings.Repeat("\n", min(1, len(want))) {
			t.Errorf("container profile show %q, want %q", out, want)
		}
	}
	checkProfiles("WEB", "DB")
	s.ok("container", "w1", "profile", "set", "DB", "WEB")
	checkProfiles("DB", "WEB")
	s.ok("container", "w1", "profile", "remove", "DB")
	checkProfiles("WEB")
	s.ok("container", "w1", "profile", "set")
	checkProfiles()
	s.ok("container", "w1", "profile", "append", "WEB")
	checkProfiles("WEB")

	// A profile in use is refused, then --force removes it anyway.
	before := s.snapshot()
	r := s.run("profile", "remove", "WEB")
	if r.code == 0 || !strings.Contains(r.stderr, `profile "WEB" is applied to 1 endpoint(s) (w1 on h1)`) {
		t.Errorf("removing a profile in use:\n%s", r)
	}
	if d := diff(before, s.snapshot()); d != "" {
		t.Errorf("refused profile remove changed the datastore:\n%s", d)
	}
	s.ok("profile", "add", "GONE")
	s.ok("container", "w1", "profile", "append", "GONE")
	s.ok("profile", "remove", "GONE", "--force")
	if s.get(prefixProfs+"GONE", nil) {
		t.Error("profile remove --force left the profile")
	}

	// container remove deletes the record (the named interface does not exist).
	if out := s.ok("container", "remove", "w1"); out != "Removed networking from w1\n" {
		t.Errorf("container remove printed %q", out)
	}
	if s.get(endpointKey("h1", "w1"), nil) {
		t.Error("endpoint still stored after container remove")
	}
	if out := s.ok("ipam", "check"); !strings.Contains(out, "IPAM is consistent") {
		t.Errorf("ipam check after remove: %q", out)
	}
	if got := s.keys(prefixIPAM); len(got) != 0 {
		t.Errorf("IPAM records appeared: %q", got)
	}
}

// testDatastoreSelection reaches the store through each way of naming it;
// ETCD_AUTHORITY names a closed port wherever it must lose.
func testDatastoreSelection(t *testing.T, s *store) {
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	var want []poolJSON
	s.okJSON(&want, "pool", "show", "-o", "json")
	for _, c := range []struct {
		name string
		env  map[string]string
		args []string
	}{
		{"ETCD_ENDPOINTS", map[string]string{"ETCD_ENDPOINTS": "http://" + s.addr(), "ETCD_AUTHORITY": dead}, nil},
		{"--etcd-endpoints", map[string]string{"ETCD_ENDPOINTS": "http://" + dead, "ETCD_AUTHORITY": dead}, []string{"--etcd-endpoints", "http://" + s.addr()}},
	} {
		c.env["CALICO_NODENAME"] = "h1"
		r := ctl(t, c.env, "", append([]string{"pool", "show", "-o", "json"}, c.args...)...)
		if r.code != 0 {
			t.Errorf("%s: %s", c.name, r)
			continue
		}
		var got []poolJSON
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: pools %s (%v), want %+v", c.name, r.stdout, err, want)
		}
	}
	// A write through ETCD_ENDPOINTS lands in the same store.
	r := ctl(t, map[string]string{"ETCD_ENDPOINTS": "http://" + s.addr(), "CALICO_NODENAME": "h1"}, "", "profile", "add", "VIA_ENV")
	if r.code != 0 || !s.get(prefixProfs+"VIA_ENV", nil) {
		t.Errorf("profile add through ETCD_ENDPOINTS: %s", r)
	}
	s.ok("profile", "remove", "VIA_ENV")
}
