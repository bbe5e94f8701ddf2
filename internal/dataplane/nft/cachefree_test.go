package nft

import (
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

// TestCacheFree: a label change's transaction (one element moved between
// two interval sets, one chain rewritten with a rule using a named set)
// comes out in forms that need no nft cache, in the same order; a large
// set keeps its element deletes, and so do dispatch maps, whose added
// elements (endpoints coming) go in one "add map" per run of one map.
func TestCacheFree(t *testing.T) {
	sel := func(elems ...string) setSpec { return setSpec{Type: "ipv4_addr", Interval: true, Elems: elems} }
	big := make([]string, rewriteSetLimit+2)
	for i := range big {
		big[i] = scaleAddr(i).String() + "/32"
	}
	prev := &ruleset{Sets: map[string]setSpec{
		"sel4-a": sel("10.0.0.1/32", "10.0.0.2/32"), "sel4-b": sel("10.0.0.3/32"), "sel4-big": sel(big...),
	}}
	next := &ruleset{Sets: map[string]setSpec{
		"sel4-a": sel("10.0.0.2/32"), "sel4-b": sel("10.0.0.1/32", "10.0.0.3/32"), "sel4-big": sel(big[1:]...),
	}}
	tx := knftables.NewFake(knftables.InetFamily, TableName).NewTransaction()
	c := counter{tx, &Stats{}}
	c.delElems("sel4-a", []string{"10.0.0.1/32"})
	c.addElems("sel4-b", []string{"10.0.0.1/32"})
	c.delElems("sel4-big", big[:1])
	c.delDispatch(mapToWl, "cali1")
	c.addDispatch(mapToWl, "cali2", "ep-in-y")
	c.addDispatch(mapToWl, "cali3", "ep-in-z")
	c.addDispatch(mapPassIn, "cali2", "eprof-in-y")
	tx.Flush(&knftables.Chain{Name: "ep-in-x"})
	c.fillChain("ep-in-x", chainSpec{Rules: []string{"jump pol-in-p", "ip saddr @sel4-b accept", "drop"}})
	c.fillChain("ep-out-x", chainSpec{Rules: []string{"accept"}})

	want := strings.Join([]string{
		"flush set inet calico sel4-a",
		"add set inet calico sel4-a { type ipv4_addr ; flags interval ; elements = { 10.0.0.2/32 } ; }",
		"add set inet calico sel4-b { type ipv4_addr ; flags interval ; elements = { 10.0.0.1/32 } ; }",
		"delete element inet calico sel4-big { 10.64.0.0/32 }",
		`delete element inet calico to-wl { "cali1" }`,
		`add map inet calico to-wl { type ifname : verdict ; elements = { "cali2" : jump ep-in-y, "cali3" : jump ep-in-z } ; }`,
		`add map inet calico pass-in { type ifname : verdict ; elements = { "cali2" : goto eprof-in-y } ; }`,
		"flush chain inet calico ep-in-x",
		"add chain inet calico ep-in-x { jump pol-in-p ; ip saddr @sel4-b accept ; drop ; }",
		"add chain inet calico ep-out-x { accept ; }",
	}, "\n") + "\n"
	if got := cacheFree(tx.String(), prev, next); got != want {
		t.Errorf("got\n%s\nwant\n%s\nfrom\n%s", got, want, tx.String())
	}

	// A chain using a set or a map whose elements this script does not
	// touch declares it first, so nft finds it without listing the table.
	tx = knftables.NewFake(knftables.InetFamily, TableName).NewTransaction()
	c = counter{tx, &Stats{}}
	c.fillChain("pol-in-p", chainSpec{Rules: []string{"ip saddr @sel4-a tcp dport 80 accept", "icmp oifname vmap @pass-in"}})
	want = "add set inet calico sel4-a { type ipv4_addr ; flags interval ; }\n" +
		"add map inet calico pass-in { type ifname : verdict ; }\n" +
		"add chain inet calico pol-in-p { ip saddr @sel4-a tcp dport 80 accept ; icmp oifname vmap @pass-in ; }\n"
	if got := cacheFree(tx.String(), next, next); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// TestCacheFreeNewChains: a chain the script creates is created with its
// rules in one statement where it was declared, so the transaction holds
// no update of a chain it made (which makes nft's exit wait for an RCU
// grace period: BenchmarkKernelOneMoreEndpoint); one whose rules jump to
// a chain declared after it, and one that existed, keep the two
// statements.
func TestCacheFreeNewChains(t *testing.T) {
	prev := &ruleset{Chains: map[string]chainSpec{"ep-in-old": {}}, Sets: map[string]setSpec{"tag4-a": {Type: "ipv4_addr"}}}
	next := &ruleset{Sets: map[string]setSpec{"tag4-a": {Type: "ipv4_addr", Elems: []string{"10.0.0.9"}}}}
	tx := knftables.NewFake(knftables.InetFamily, TableName).NewTransaction()
	c := counter{tx, &Stats{}}
	c.addChain("ep-in-a", chainSpec{Comment: "workload a"})
	c.addChain("ep-in-b", chainSpec{})
	c.addChain("prof-in-q", chainSpec{})
	c.addElems("tag4-a", []string{"10.0.0.9"})
	tx.Flush(&knftables.Chain{Name: "ep-in-old"})
	c.fillChain("ep-in-old", chainSpec{Rules: []string{"drop"}})
	c.fillChain("ep-in-a", chainSpec{Rules: []string{"ip saddr @tag4-a jump prof-in-p", "drop"}})
	c.fillChain("ep-in-b", chainSpec{Rules: []string{"jump prof-in-q", "drop"}})
	c.fillChain("prof-in-q", chainSpec{Rules: []string{"accept"}})
	c.addDispatch(mapToWl, "cali-a", "ep-in-a")

	want := strings.Join([]string{
		`add set inet calico tag4-a { type ipv4_addr ; }`,
		`add chain inet calico ep-in-a { comment "workload a" ; ip saddr @tag4-a jump prof-in-p ; drop ; }`,
		"add chain inet calico ep-in-b",
		"add chain inet calico prof-in-q { accept ; }",
		"add set inet calico tag4-a { type ipv4_addr ; elements = { 10.0.0.9 } ; }",
		"flush chain inet calico ep-in-old",
		"add chain inet calico ep-in-old { drop ; }",
		"add chain inet calico ep-in-b { jump prof-in-q ; drop ; }",
		`add map inet calico to-wl { type ifname : verdict ; elements = { "cali-a" : jump ep-in-a } ; }`,
	}, "\n") + "\n"
	if got := cacheFree(tx.String(), prev, next); got != want {
		t.Errorf("got\n%s\nwant\n%s\nfrom\n%s", got, want, tx.String())
	}
}
