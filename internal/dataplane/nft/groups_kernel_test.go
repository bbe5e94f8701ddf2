package nft

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
)

// TestKernelGroupDispatch: endpoints that share a profile list share its
// chains, found by their host side's device group; one more endpoint of
// a list in use adds set elements only (no chain, no jump: nothing for
// the kernel's validation of the whole table). The group decides only
// for an interface and group that are an endpoint's: a workload whose
// group is changed to another list's does not get that list's policy
// (its traffic is dropped until the group is put back), a leftover
// interface carrying a list's group gets nothing, and an endpoint whose
// interface has no group yet is dropped, not let through.
func TestKernelGroupDispatch(t *testing.T) {
	requireKernel(t)
	l := newLab(t)
	w1 := l.addWorkload("w1", "10.65.0.1", "fd00::1")
	w2 := l.addWorkload("w2", "10.65.0.2", "fd00::2")
	w3 := l.addWorkload("w3", "10.65.0.3", "fd00::3")
	stray := l.addWorkload("stray", "10.65.0.9", "fd00::9")
	for _, w := range []*workload{w1, w2, w3, stray} {
		listen(t, w.ns, ":8080")
	}
	web, db := calc.ProfileGroup([]string{"web"}), calc.ProfileGroup([]string{"db"})
	setGroup := func(w *workload, g uint32) {
		sh(t, "ip", "-n", l.host, "link", "set", w.iface, "group", strconv.FormatUint(uint64(g), 10))
	}
	ep := func(w *workload, prof string, g uint32) calc.EndpointPolicy {
		return calc.EndpointPolicy{Interface: w.iface, Addrs: []netip.Addr{w.ip4}, Profiles: []string{prof}, Group: g}
	}
	profiles := map[string]api.Profile{
		"web": {Name: "web",
			Inbound:  []api.Rule{{Action: api.ActionAllow, Protocol: api.ProtocolTCP, Dst: api.EntityMatch{Ports: []api.PortRange{{Min: 8080, Max: 8080}}}}},
			Outbound: []api.Rule{{Action: api.ActionAllow}}},
		"db": {Name: "db", Outbound: []api.Rule{{Action: api.ActionAllow}}}, // nothing in
	}
	p := calc.Policy{Endpoints: []calc.EndpointPolicy{ep(w1, "web", web), ep(w3, "db", db)}, Profiles: profiles}
	setGroup(w1, web)
	setGroup(w3, db)
	setGroup(stray, web) // a leftover veth with web's group: no endpoint
	h := newHostEnforcer(t, l.host)
	defer h.cleanup()
	h.apply(p)

	chains := h.nft("list", "table", "inet", TableName)
	if strings.Contains(chains, "chain "+endpointChain) || strings.Count(chains, "chain "+groupChain) != 4 {
		t.Fatalf("want the chains of two profile lists and none per endpoint:\n%s", chains)
	}
	expect(t, "w3 (db) -> w1 (web) :8080", true, l.tcp(w3.ns, w1.ip4, 8080))
	expect(t, "w1 (web) -> w3 (db) :8080", false, l.tcp(w1.ns, w3.ip4, 8080))
	expect(t, "w1 -> the leftover veth with web's group :8080", false, l.tcp(w1.ns, stray.ip4, 8080))

	// One more web endpoint: before its interface has the group it is
	// dropped; the update is set elements only.
	p.Endpoints = append(p.Endpoints, ep(w2, "web", web))
	st := h.apply(p)
	if st.ChainsWritten != 0 || st.ElementsAdded != 2 || st.Full {
		t.Errorf("one more endpoint of a list in use: %+v, want two elements (anti-spoofing, group) and no chain", st)
	}
	expect(t, "w3 -> w2 before its group is set", false, l.tcp(w3.ns, w2.ip4, 8080))
	setGroup(w2, web)
	expect(t, "w3 -> w2 (web) :8080", true, l.tcp(w3.ns, w2.ip4, 8080))
	expect(t, "w2 (web) -> w1 (web) :8080", true, l.tcp(w2.ns, w1.ip4, 8080))

	// The attack: w3's group set to web's, for web's inbound rule.
	setGroup(w3, web)
	expect(t, "w1 -> w3 with web's group set by hand :8080", false, l.tcp(w1.ns, w3.ip4, 8080))
	expect(t, "w3 with web's group set by hand -> w1 :8080", false, l.tcp(w3.ns, w1.ip4, 8080))
	setGroup(w3, db)
	expect(t, "w3 (db, group put back) -> w1 :8080", true, l.tcp(w3.ns, w1.ip4, 8080))

	// The last web endpoints go: web's chains go with them.
	p.Endpoints = slices.DeleteFunc(p.Endpoints, func(e calc.EndpointPolicy) bool { return e.Group == web })
	h.apply(p)
	chains = h.nft("list", "table", "inet", TableName)
	if strings.Contains(chains, groupOutChain(web)) || !strings.Contains(chains, groupOutChain(db)) {
		t.Errorf("web's endpoints gone: want db's chains only:\n%s", chains)
	}
	expect(t, "w3 -> w1 (no endpoint now) :8080", false, l.tcp(w3.ns, w1.ip4, 8080))

	// A drop in a list's chain is named by its profiles.
	src, ok := NewDropNames(p).Source(DropPrefix(groupInChain(db), 0))
	if !ok || src.Profiles != "db" || src.Direction != "inbound" {
		t.Errorf("the final drop of db's inbound chain reads as %+v, %v", src, ok)
	}
}
