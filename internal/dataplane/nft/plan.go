package nft

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/calico-go/calico/internal/api"
	"sigs.k8s.io/knftables"
)

// Stats describes one Apply: what was sent to the kernel and what the policy
// holds. Ops is what tests assert on: 0 for an unchanged policy, and a small
// constant for one more endpoint however many exist.
type Stats struct {
	// Full is true when the whole table was replaced in one transaction (the
	// first Apply, after a Resync that found possible drift, or after an
	// incremental transaction failed).
	Full bool
	// FellBack is true when an incremental transaction failed (the kernel had
	// drifted from what we last wrote) and a full rewrite replaced it.
	FellBack bool
	// ResyncRewrite is true when a Resync's check could not rule out drift
	// (the ruleset generation moved since our last write) and the whole
	// table was rewritten.
	ResyncRewrite bool
	// Ops is the number of nft operations sent; 0 means nft was not run.
	Ops int
	// ChainsWritten counts regular chains created, or flushed and refilled.
	ChainsWritten int
	// ChainsDeleted counts regular chains removed.
	ChainsDeleted int
	// ElementsAdded and ElementsDeleted count set and map elements.
	ElementsAdded   int
	ElementsDeleted int
	// SetsAdded and SetsDeleted count tag and selector sets appearing or
	// going away in an incremental update.
	SetsAdded   int
	SetsDeleted int

	// Endpoints, Profiles and Sets are the sizes of the enforced policy.
	Endpoints int
	Profiles  int
	Sets      int
	// Problems are inconsistencies in the policy (a bad rule, a missing
	// profile, a bad interface name). Each was enforced fail-closed: the
	// traffic it concerns is dropped. They need a fix in the datastore; the
	// Apply itself succeeded.
	Problems []string
}

// Priorities of our base chains. Egress runs just before ingress in the
// forward hook, so a workload-to-workload packet needs an accept from the
// sender's outbound policy and then from the receiver's inbound policy: an
// accept only ends one base chain, a drop ends the packet.
const (
	prioEgress  = knftables.BaseChainPriority("filter-1")
	prioIngress = knftables.FilterPriority
)

// natHooks says which NAT base chains the table needs. A nat chain is not
// free when it decides nothing: its hook runs for every tracked packet of
// the host (established ones included), so a chain that could match nothing
// is left out.
type natHooks struct {
	// dnat: some port is published (dnat-pre, dnat-out).
	dnat bool
	// snat: some pool has nat-outgoing (nat-out).
	snat bool
}

// addSkeleton adds the fixed part of the table: base chains, dispatch maps,
// the anti-spoofing, control-plane and workload-to-host rules and the NAT
// chains needed. It does not depend on the policy (only on the access
// modes) apart from the NAT chains, which planIncremental adds and removes,
// so only full rewrites write it.
func addSkeleton(tx *knftables.Transaction, a access, nh natHooks) {
	filter := knftables.FilterType
	pre, forward, input := knftables.PreroutingHook, knftables.ForwardHook, knftables.InputHook
	prioRaw, prioEg, prioIn := knftables.RawPriority, prioEgress, prioIngress

	tx.Add(&knftables.Map{Name: mapFromWl, Type: dispatchMapType,
		Comment: knftables.PtrTo("workload interface -> its outbound policy chain")})
	tx.Add(&knftables.Map{Name: mapToWl, Type: dispatchMapType,
		Comment: knftables.PtrTo("workload interface -> its inbound policy chain")})
	tx.Add(&knftables.Map{Name: mapPassIn, Type: dispatchMapType,
		Comment: knftables.PtrTo("receiving workload -> its profile stage (label policy Pass)")})
	tx.Add(&knftables.Map{Name: mapPassOut, Type: dispatchMapType,
		Comment: knftables.PtrTo("sending workload -> its profile stage (label policy Pass)")})
	tx.Add(&knftables.Map{Name: mapGrpFrom, Type: groupMapType,
		Comment: knftables.PtrTo("workload interface's device group -> its profile list's outbound chain")})
	tx.Add(&knftables.Map{Name: mapGrpTo, Type: groupMapType,
		Comment: knftables.PtrTo("workload interface's device group -> its profile list's inbound chain")})

	tx.Add(&knftables.Chain{Name: chainSource, Type: &filter, Hook: &pre, Priority: &prioRaw,
		Comment: knftables.PtrTo("anti-spoofing: a workload sends only from its own addresses")})
	tx.Add(&knftables.Chain{Name: chainFwdEgress, Type: &filter, Hook: &forward, Priority: &prioEg,
		Comment: knftables.PtrTo("outbound policy of the sending workload")})
	tx.Add(&knftables.Chain{Name: chainFwdIngress, Type: &filter, Hook: &forward, Priority: &prioIn,
		Comment: knftables.PtrTo("inbound policy of the receiving workload")})
	tx.Add(&knftables.Chain{Name: chainInput, Type: &filter, Hook: &input, Priority: &prioIn,
		Comment: knftables.PtrTo("workloads to the host itself")})
	tx.Add(&knftables.Chain{Name: chainWlToHost,
		Comment: knftables.PtrTo("what a workload may send to the host: replies and neighbour discovery")})
	addNATChains(tx, nh)

	wild := `"` + WorkloadIfacePrefix + `*"`
	// The control plane, on every node address, whatever the profiles say:
	// dropped at the workload's own host, before profile dispatch. The
	// destination could not do it: nat-outgoing gives workload traffic to
	// node addresses (outside every pool) the sending host's address.
	// Established flows pass first, so this costs new flows only.
	guard := []string{
		"ip daddr @" + setCPHosts4 + " meta l4proto . th dport @" + setCPPorts + " drop",
		"ip6 daddr @" + setCPHosts6 + " meta l4proto . th dport @" + setCPPorts + " drop",
	}
	if a.controlPlane == ControlPlanePolicy {
		guard = nil
	}

	// Anti-spoofing runs before conntrack, so a forged source is dropped
	// even when it matches another workload's established flow (which the
	// forward chains accept on their first rule), and never creates a
	// conntrack entry. One hashed lookup of (interface, source) per packet.
	// From anywhere but a workload interface, a source this host routes to
	// a workload interface (one of its own workloads) or into vxlan.calico
	// (a remote VXLAN block) is forged: the real one would have come in by
	// that interface. The uplink's rp_filter is loose, or off, and nothing
	// else checks it: a machine on the fabric sending plain packets with
	// such a source got them delivered onto that workload's established
	// flows and with its policy identity (TestTunnelFastPath, cases 2b and 2c).
	// IPv6 link-local sources are on every interface: not judged here.
	// (Remote IPIP blocks: ipip_decap, which sees whether a packet was
	// encapsulated.)
	tx.Add(&knftables.Rule{Chain: chainSource, Rule: "iifname != " + wild + " meta nfproto ipv4 fib saddr oifname " + wild + " drop"})
	tx.Add(&knftables.Rule{Chain: chainSource, Rule: "iifname != " + wild + " ip6 saddr != fe80::/10 fib saddr oifname " + wild + " drop"})
	tx.Add(&knftables.Rule{Chain: chainSource, Rule: `iifname != "` + api.VXLANDevice + `" meta nfproto ipv4 fib saddr oifname "` + api.VXLANDevice + `" drop`})
	tx.Add(&knftables.Rule{Chain: chainSource, Rule: "iifname != " + wild + " accept"})
	tx.Add(&knftables.Rule{Chain: chainSource, Rule: "iifname . ip saddr @" + setWlSrc4 + " accept"})
	tx.Add(&knftables.Rule{Chain: chainSource, Rule: "iifname . ip6 saddr @" + setWlSrc6 + " accept"})
	// IPv6 neighbour discovery and MLD come from the link-local address, or
	// from :: before one is configured. Link-local traffic is never
	// forwarded, and the input chain lets only neighbour discovery through.
	tx.Add(&knftables.Rule{Chain: chainSource, Rule: "ip6 saddr { ::, fe80::/10 } meta l4proto ipv6-icmp accept"})
	tx.Add(&knftables.Rule{Chain: chainSource, Rule: "drop"})
	for _, c := range []struct{ chain, dir, m, group, gm string }{
		{chainFwdEgress, "iifname", mapFromWl, "iifgroup", mapGrpFrom},
		{chainFwdIngress, "oifname", mapToWl, "oifgroup", mapGrpTo},
	} {
		// Established and related traffic leaves at the first rule: the
		// per-packet cost of a flow is one conntrack state test.
		tx.Add(&knftables.Rule{Chain: c.chain, Rule: "ct state established,related accept"})
		tx.Add(&knftables.Rule{Chain: c.chain, Rule: "ct state invalid drop"})
		if c.chain == chainFwdIngress {
			// A published port is open to everyone, as with the engine's
			// bridge: a new flow our DNAT sent to the workload's published
			// port passes whatever its profiles say. Only that port, and
			// only through DNAT: the workload's address stays closed.
			tx.Add(&knftables.Rule{Chain: c.chain, Rule: "ct status dnat ip daddr . meta l4proto . th dport @" + setPub4 + " accept"})
		}
		if c.chain == chainFwdEgress {
			for _, g := range guard {
				tx.Add(&knftables.Rule{Chain: c.chain, Rule: "iifname " + wild + " " + g})
			}
		}
		tx.Add(&knftables.Rule{Chain: c.chain, Rule: c.dir + " vmap @" + c.m})
		// Endpoints not dispatched by name are by their host side's
		// device group, when interface and group are an endpoint's: a
		// group on any other device (a leftover veth, one changed by
		// hand) dispatches nothing.
		tx.Add(&knftables.Rule{Chain: c.chain, Rule: c.dir + " . " + c.group + " @" + setWlGroups + " " + c.group + " vmap @" + c.gm})
		// A workload interface without an endpoint (being created or torn
		// down) gets nothing rather than everything.
		tx.Add(&knftables.Rule{Chain: c.chain, Rule: c.dir + " " + wild + " drop"})
	}

	// VXLAN datagrams to this host are checked before the tunnel device
	// decapsulates them (vxlan-in, filled from the policy; IPv4 only, as
	// our tunnel is).
	tx.Add(&knftables.Rule{Chain: chainInput, Rule: "meta nfproto ipv4 udp dport " + strconv.Itoa(api.VXLANPort) + " jump " + chainVXLANIn})
	tx.Add(&knftables.Rule{Chain: chainInput, Rule: "iifname " + wild + " goto " + chainWlToHost})
	tx.Add(&knftables.Rule{Chain: chainWlToHost, Rule: "ct state established,related accept"})
	// IPv6 workloads must resolve their gateway (the host) and may ask for
	// routers. Conntrack leaves these untracked, so they need their own rule.
	tx.Add(&knftables.Rule{Chain: chainWlToHost,
		Rule: "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept"})
	if a.host == HostAccessPolicy {
		// The control plane stays closed unless opened too (with the
		// default host access the drop below covers it). Everything here
		// is for this host, on whichever of its addresses: the ports alone
		// decide.
		if guard != nil {
			tx.Add(&knftables.Rule{Chain: chainWlToHost, Rule: "meta l4proto . th dport @" + setCPPorts + " drop"})
		}
		// The workload's outbound policy decides, as for any destination:
		// its endpoint chain accepts what a profile allows, drops the rest.
		tx.Add(&knftables.Rule{Chain: chainWlToHost, Rule: "iifname vmap @" + mapFromWl})
		tx.Add(&knftables.Rule{Chain: chainWlToHost, Rule: "iifname . iifgroup @" + setWlGroups + " iifgroup vmap @" + mapGrpFrom})
	}
	// Otherwise no host services (not even echo) for workloads.
	tx.Add(&knftables.Rule{Chain: chainWlToHost, Rule: "drop"})
}

// addNATChains adds the NAT base chains that nh asks for, with their rules.
func addNATChains(tx *knftables.Transaction, nh natHooks) {
	nat, pre, post := knftables.NATType, knftables.PreroutingHook, knftables.PostroutingHook
	prioSNAT := knftables.SNATPriority
	if nh.snat {
		tx.Add(&knftables.Chain{Name: chainNAT, Type: &nat, Hook: &post, Priority: &prioSNAT,
			Comment: knftables.PtrTo("NAT outgoing: masquerade from nat-outgoing pools to outside every pool")})
		tx.Add(&knftables.Rule{Chain: chainNAT, Rule: "ip saddr @" + setMasq4 + " ip daddr != @" + setPools4 + " masquerade"})
		tx.Add(&knftables.Rule{Chain: chainNAT, Rule: "ip6 saddr @" + setMasq6 + " ip6 daddr != @" + setPools6 + " masquerade"})
	}
	if nh.dnat {
		output, prioDNAT := knftables.OutputHook, knftables.DNATPriority
		tx.Add(&knftables.Chain{Name: chainDNATPre, Type: &nat, Hook: &pre, Priority: &prioDNAT,
			Comment: knftables.PtrTo("published ports (docker run -p), from elsewhere")})
		tx.Add(&knftables.Chain{Name: chainDNATOut, Type: &nat, Hook: &output, Priority: &prioDNAT,
			Comment: knftables.PtrTo("published ports (docker run -p), from the host itself")})
		// Only traffic to this host's own addresses is published, as the
		// engine's bridge driver does; the publish chain (rendered) holds
		// one DNAT rule per port.
		for _, ch := range []string{chainDNATPre, chainDNATOut} {
			tx.Add(&knftables.Rule{Chain: ch, Rule: "fib daddr type local jump " + chainPublish})
		}
	}
}

// natChains lists the NAT base chains that nh asks for.
func natChains(nh natHooks) []string {
	var out []string
	if nh.snat {
		out = append(out, chainNAT)
	}
	if nh.dnat {
		out = append(out, chainDNATPre, chainDNATOut)
	}
	return out
}

// natHooks derives from the rendered sets and chains which NAT chains can
// match anything: the masquerade rules need a nat-outgoing pool, the
// publish chain a published port.
func (rs *ruleset) natHooks() natHooks {
	return natHooks{
		dnat: len(rs.Chains[chainPublish].Rules) > 0,
		snat: len(rs.Sets[setMasq4].Elems)+len(rs.Sets[setMasq6].Elems) > 0,
	}
}

// counter tallies operations into Stats as they are queued.
type counter struct {
	tx *knftables.Transaction
	st *Stats
}

func (c counter) addSet(name string, s setSpec) {
	set := &knftables.Set{Name: name, Type: s.Type, TypeOf: s.TypeOf}
	if s.Interval {
		set.Flags = []knftables.SetFlag{knftables.IntervalFlag}
	}
	if s.Comment != "" {
		set.Comment = knftables.PtrTo(s.Comment)
	}
	c.tx.Add(set)
}

// Elements of concatenated sets are kept as one string, their fields joined
// by elemSep, the way nft writes them.
const elemSep = " . "

func (c counter) addElems(set string, elems []string) {
	for _, e := range elems {
		c.tx.Add(&knftables.Element{Set: set, Key: strings.Split(e, elemSep)})
	}
	c.st.ElementsAdded += len(elems)
}

func (c counter) delElems(set string, elems []string) {
	for _, e := range elems {
		c.tx.Delete(&knftables.Element{Set: set, Key: strings.Split(e, elemSep)})
	}
	c.st.ElementsDeleted += len(elems)
}

func (c counter) addChain(name string, cs chainSpec) {
	ch := &knftables.Chain{Name: name}
	if cs.Comment != "" {
		ch.Comment = knftables.PtrTo(cs.Comment)
	}
	c.tx.Add(ch)
}

func (c counter) fillChain(name string, cs chainSpec) {
	for _, r := range cs.Rules {
		c.tx.Add(&knftables.Rule{Chain: name, Rule: r})
	}
	c.st.ChainsWritten++
}

func (c counter) addDispatch(m, key, chain string) {
	verb := "jump "
	if m == mapPassIn || m == mapPassOut {
		// Pass leaves the policy chain for good: the profile stage ends
		// in a verdict of its own.
		verb = "goto "
	}
	c.tx.Add(&knftables.Element{Map: m, Key: []string{dispatchKey(m, key)}, Value: []string{verb + chain}})
	c.st.ElementsAdded++
}

func (c counter) delDispatch(m, key string) {
	c.tx.Delete(&knftables.Element{Map: m, Key: []string{dispatchKey(m, key)}})
	c.st.ElementsDeleted++
}

// dispatchKey writes a key of dispatch map m: an interface name quoted, a
// device group as the number it is.
func dispatchKey(m, key string) string {
	if mapType(m) == groupMapType {
		return key
	}
	return quoteIface(key)
}

// quoteIface writes an interface name as an nft string literal; validIfaceName
// has ruled out quotes and backslashes.
func quoteIface(s string) string { return `"` + s + `"` }

// planFull queues a transaction that replaces our whole table atomically:
// "add table" makes the "delete table" valid even on a fresh host, and the new
// table is complete before the batch commits, so the kernel never runs
// without policy, not even across an agent restart.
func planFull(tx *knftables.Transaction, rs *ruleset) Stats {
	st := Stats{Full: true}
	c := counter{tx, &st}
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{Comment: knftables.PtrTo(tableComment)})

	// Sets and chains exist before any rule or element refers to them
	// (the skeleton's input chain jumps to vxlan-in).
	for _, name := range sortedKeys(rs.Sets) {
		c.addSet(name, rs.Sets[name])
	}
	chains := sortedKeys(rs.Chains)
	for _, name := range chains {
		c.addChain(name, rs.Chains[name])
	}
	addSkeleton(tx, rs.access, rs.natHooks())
	for _, name := range sortedKeys(rs.Sets) {
		c.addElems(name, rs.Sets[name].Elems)
	}
	for _, name := range chains {
		c.fillChain(name, rs.Chains[name])
	}
	for _, m := range rs.dispatchMaps() {
		for _, iface := range sortedKeys(m.entries) {
			c.addDispatch(m.name, iface, m.entries[iface])
		}
	}
	st.Ops = tx.NumOperations()
	return st
}

// planIncremental queues only what differs between the ruleset last written
// (prev) and the wanted one (next). The order keeps every reference valid at
// each step of the batch: new sets and chains first, then elements, then
// rules that may use them, then dispatch entries; removals last, endpoint
// chains before the profile chains they jump to, sets after the rules that
// named them are gone.
func planIncremental(tx *knftables.Transaction, prev, next *ruleset) Stats {
	var st Stats
	c := counter{tx, &st}

	setNames := sortedKeys(next.Sets)
	for _, name := range setNames {
		if _, ok := prev.Sets[name]; !ok {
			c.addSet(name, next.Sets[name])
			st.SetsAdded++
		}
	}
	// Only the chains that are new or differ get sorted: thousands of
	// names on every Apply were a tenth of a label change's planning.
	var newChains, changed []string
	for name, cs := range next.Chains {
		old, existed := prev.Chains[name]
		if !existed {
			newChains = append(newChains, name)
		}
		if !existed || !slices.Equal(old.Rules, cs.Rules) {
			changed = append(changed, name)
		}
	}
	slices.Sort(newChains)
	slices.Sort(changed)
	for _, name := range newChains {
		c.addChain(name, next.Chains[name])
	}

	// Membership changes are element edits; no rule is rewritten for them.
	for _, name := range setNames {
		add, del := diffSorted(prev.Sets[name].Elems, next.Sets[name].Elems)
		c.delElems(name, del)
		c.addElems(name, add)
	}

	c.rewriteChains(prev, next, changed, nil)

	var gone []string
	for name := range prev.Chains {
		if _, ok := next.Chains[name]; !ok {
			gone = append(gone, name)
		}
	}
	c.finish(prev, next, gone)
	return st
}

// finish ends a plan: the NAT base chains appear with the first
// nat-outgoing pool or published port (their sets and the publish chain
// exist by now) and go with the last one; then the chains in gone and the
// sets next lacks are deleted. Deleting a chain drops its rules and so
// their references, so chains go in reference order: endpoint chains jump
// to policy chains, policy chains reach the endpoints' profile stages
// (through pass maps, whose entries are gone by now), and those jump to
// profile chains.
func (c counter) finish(prev, next *ruleset, gone []string) {
	ph, nh := prev.natHooks(), next.natHooks()
	addNATChains(c.tx, natHooks{dnat: nh.dnat && !ph.dnat, snat: nh.snat && !ph.snat})
	for _, name := range natChains(natHooks{dnat: ph.dnat && !nh.dnat, snat: ph.snat && !nh.snat}) {
		c.tx.Delete(&knftables.Chain{Name: name})
		c.st.ChainsDeleted++
	}
	slices.Sort(gone)
	slices.SortStableFunc(gone, func(a, b string) int { return deleteRank(a) - deleteRank(b) })
	for _, name := range gone {
		c.tx.Delete(&knftables.Chain{Name: name})
		c.st.ChainsDeleted++
	}
	for _, name := range sortedKeys(prev.Sets) {
		if _, ok := next.Sets[name]; !ok {
			c.tx.Delete(&knftables.Set{Name: name})
			c.st.SetsDeleted++
		}
	}
	c.st.Ops = c.tx.NumOperations()
}

// deleteRank orders chain deletions: referrers before what they refer to.
func deleteRank(chain string) int {
	switch {
	case strings.HasPrefix(chain, endpointChain), strings.HasPrefix(chain, groupChain):
		return 0
	case strings.HasPrefix(chain, policyChain):
		return 1
	case strings.HasPrefix(chain, endpointProfiles):
		return 2
	}
	return 3
}

// dispatchMap is one interface -> chain map of the ruleset.
type dispatchMap struct {
	name    string
	entries map[string]string
}

func (rs *ruleset) dispatchMaps() []dispatchMap {
	return []dispatchMap{{mapFromWl, rs.FromWl}, {mapToWl, rs.ToWl}, {mapPassIn, rs.PassIn}, {mapPassOut, rs.PassOut},
		{mapGrpFrom, rs.GrpFrom}, {mapGrpTo, rs.GrpTo}}
}

// dispatchPair is one map in the previous and the wanted ruleset.
type dispatchPair struct {
	name       string
	prev, next map[string]string
}

func dispatchPairs(prev, next *ruleset) []dispatchPair {
	p, n := prev.dispatchMaps(), next.dispatchMaps()
	out := make([]dispatchPair, len(p))
	for i := range p {
		out[i] = dispatchPair{p[i].name, p[i].entries, n[i].entries}
	}
	return out
}

// rewriteChains refills the changed chains (flushing those that existed)
// between the dispatch edits: entries of endpoints that went away or
// changed chain go before their chains change, new and changed ones after.
// among lists the interfaces whose entries may differ (sorted; nil: any).
func (c counter) rewriteChains(prev, next *ruleset, changed, among []string) {
	pairs := dispatchPairs(prev, next)
	for _, m := range pairs {
		for _, iface := range movedKeys(m.prev, m.next, among) {
			c.delDispatch(m.name, iface)
		}
	}
	for _, name := range changed {
		if _, existed := prev.Chains[name]; existed {
			c.tx.Flush(&knftables.Chain{Name: name})
		}
		c.fillChain(name, next.Chains[name])
	}
	for _, m := range pairs {
		for _, iface := range movedKeys(m.next, m.prev, among) {
			c.addDispatch(m.name, iface, m.next[iface])
		}
	}
}

// movedKeys are the keys of a, among the given ones (nil: all), whose
// value b lacks or differs, sorted.
func movedKeys(a, b map[string]string, among []string) []string {
	if among == nil {
		return changedKeys(a, b)
	}
	var out []string
	for _, k := range among {
		if v, ok := a[k]; ok {
			if w, ok := b[k]; !ok || w != v {
				out = append(out, k)
			}
		}
	}
	return out
}

// changedKeys are the keys of a whose value b lacks or differs, sorted.
// Only those are sorted: sorting every interface of both dispatch maps
// was most of a label change's planning.
func changedKeys(a, b map[string]string) []string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// diffSorted returns the elements only in next (to add) and only in prev (to
// delete) of two sorted, unique lists.
func diffSorted(prev, next []string) (add, del []string) {
	i, j := 0, 0
	for i < len(prev) && j < len(next) {
		switch {
		case prev[i] == next[j]:
			i++
			j++
		case prev[i] < next[j]:
			del = append(del, prev[i])
			i++
		default:
			add = append(add, next[j])
			j++
		}
	}
	del = append(del, prev[i:]...)
	add = append(add, next[j:]...)
	return add, del
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
