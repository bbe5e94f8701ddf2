package nft

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
)

// ruleset is the rendered, kernel-independent form of a calc.Policy: exactly
// the per-policy objects of our table (the fixed skeleton of base chains,
// maps and NAT rules is the same for every policy and lives in skeleton()).
// Two rulesets are diffed to plan an incremental transaction.
type ruleset struct {
	// Chains are the regular chains, by name: one inbound and one outbound
	// chain per profile and per endpoint, one per label policy and
	// direction in use, and the profile stages of endpoints with policies.
	Chains map[string]chainSpec
	// Sets are the tag and selector membership sets, the NAT pool sets and
	// the guards' sets, by name.
	Sets map[string]setSpec
	// FromWl and ToWl are the dispatch maps: interface name -> endpoint chain.
	FromWl map[string]string
	ToWl   map[string]string
	// PassIn and PassOut map the interface of an endpoint that label
	// policies apply to (in that direction) to its profile stage, where a
	// policy's Pass goes.
	PassIn  map[string]string
	PassOut map[string]string
	// GrpFrom and GrpTo are the dispatch maps by device group (groupKey):
	// group -> the chain of its profile list (groupOutChain, groupInChain).
	GrpFrom map[string]string
	GrpTo   map[string]string
	// members holds every endpoint: its interface -> its device group, 0
	// when it is dispatched by name (FromWl, ToWl).
	members map[string]uint32
	// groups are the device groups endpoints are dispatched by, with how
	// many endpoints use each (its list is lists' one).
	groups map[uint32]int
	// listOf is the device group and profile list (groupList) of every
	// endpoint with a group, however it is dispatched, and lists counts
	// them by group and list: a group with two lists (calc.ProfileGroup
	// is a hash) is collided, and its endpoints are dispatched by name.
	listOf   map[string]groupList
	lists    map[uint32]map[string]int
	collided map[uint32]bool
	// Problems are inconsistencies in the input. Each was enforced fail-closed
	// (the affected traffic is dropped), so they need a fix in the datastore,
	// not a retry.
	Problems []string
	// profiles is how many profiles were rendered (for Stats).
	profiles int
	// access is what workloads may send to their host and to the control
	// plane; it shapes the fixed skeleton, so a change means a full
	// rewrite. Set by the Enforcer.
	access access
}

// groupList is an endpoint's device group and the profile list it
// renders (joined with NUL).
type groupList struct {
	group uint32
	list  string
}

func listKey(profiles []string) string { return strings.Join(profiles, "\x00") }

type chainSpec struct {
	Comment string
	Rules   []string
}

type setSpec struct {
	Type     string // ipv4_addr, ipv6_addr, or a concatenation (ifname . ipv4_addr)
	TypeOf   string // instead of Type: the key as nft expressions (raw payload has no type name)
	Interval bool   // elements are prefixes
	Comment  string
	Elems    []string // unique, sorted as strings: diffed by merging
}

// render turns a policy into the objects that enforce it. It is pure and
// deterministic: the same policy always gives the same ruleset.
func render(p calc.Policy) *ruleset {
	rs := &ruleset{
		Chains:   make(map[string]chainSpec, 2*len(p.Endpoints)+2*len(p.Profiles)),
		Sets:     make(map[string]setSpec),
		FromWl:   make(map[string]string, len(p.Endpoints)),
		ToWl:     make(map[string]string, len(p.Endpoints)),
		PassIn:   map[string]string{},
		PassOut:  map[string]string{},
		GrpFrom:  map[string]string{},
		GrpTo:    map[string]string{},
		members:  make(map[string]uint32, len(p.Endpoints)),
		groups:   map[uint32]int{},
		profiles: len(p.Profiles),
	}

	// Profiles, in name order so problems are reported deterministically.
	tags := map[string]bool{}
	names := make([]string, 0, len(p.Profiles))
	for name := range p.Profiles {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		prof := p.Profiles[name]
		rs.Chains[profileInChain(name)] = chainSpec{
			Comment: comment("profile " + name + " inbound"),
			Rules:   rs.renderRules(name, "inbound", prof.Inbound, tags),
		}
		rs.Chains[profileOutChain(name)] = chainSpec{
			Comment: comment("profile " + name + " outbound"),
			Rules:   rs.renderRules(name, "outbound", prof.Outbound, tags),
		}
	}

	// One set per (tag, family) named by some rule. A tag with no members
	// still gets its (empty) sets, so rules naming it load and match nothing.
	for tag := range tags {
		v4, v6 := splitAddrs(p.TagMembers[tag].V4, p.TagMembers[tag].V6)
		rs.Sets[tagSet4(tag)] = setSpec{Type: "ipv4_addr", Comment: comment("tag " + tag), Elems: v4}
		rs.Sets[tagSet6(tag)] = setSpec{Type: "ipv6_addr", Comment: comment("tag " + tag), Elems: v6}
	}

	// Every workload's own addresses, for anti-spoofing. Present (maybe
	// empty) in every ruleset, since the skeleton's rules name them.
	rs.Sets[setWlSrc4] = setSpec{Type: "ifname . ipv4_addr", Comment: "workload interface . address it may send from"}
	rs.Sets[setWlSrc6] = setSpec{Type: "ifname . ipv6_addr", Comment: "workload interface . address it may send from"}
	rs.Sets[setWlGroups] = setSpec{Type: "ifname . devgroup", Comment: "workload interface . device group it is dispatched by"}
	rs.listOf, rs.lists = map[string]groupList{}, map[uint32]map[string]int{}
	for _, ep := range p.Endpoints {
		if ep.Group != 0 {
			rs.listOf[ep.Interface] = groupList{ep.Group, listKey(ep.Profiles)}
			countList(rs.lists, ep.Group, listKey(ep.Profiles), 1)
		}
	}
	for g, l := range rs.lists {
		if len(l) > 1 {
			if rs.collided == nil {
				rs.collided = map[uint32]bool{}
			}
			rs.collided[g] = true
		}
	}
	for _, ep := range p.Endpoints {
		rs.renderEndpoint(ep, p.Profiles)
	}
	for _, name := range []string{setWlSrc4, setWlSrc6, setWlGroups} {
		s := rs.Sets[name]
		slices.Sort(s.Elems) // the order diffSorted merges in
		rs.Sets[name] = s
	}

	// NAT outgoing. The "not to a pool" set also holds the masquerading pools
	// themselves, so traffic inside a pool is never masqueraded even when the
	// caller left a pool out of AllPools.
	m4, m6 := splitPrefixes(p.MasqueradePools)
	a4, a6 := splitPrefixes(append(slices.Clone(p.AllPools), p.MasqueradePools...))
	rs.Sets[setMasq4] = setSpec{Type: "ipv4_addr", Interval: true, Elems: m4}
	rs.Sets[setMasq6] = setSpec{Type: "ipv6_addr", Interval: true, Elems: m6}
	rs.Sets[setPools4] = setSpec{Type: "ipv4_addr", Interval: true, Elems: a4}
	rs.Sets[setPools6] = setSpec{Type: "ipv6_addr", Interval: true, Elems: a6}

	rs.renderLabelPolicies(p)
	rs.renderControlPlane(p.ControlPlane)
	rs.renderVXLAN(p.VXLAN)
	rs.renderPublished(p.Published, p.ControlPlane.Ports)
	return rs
}

// renderPublished fills the publish chain (one DNAT rule per port) and the
// published4 set the forward chain admits DNATed flows by. A host port that
// is a control-plane port is not published (a workload's record must not
// take the host's BGP or etcd port); of two mappings of one host address
// and port the first wins. Both are reported.
func (rs *ruleset) renderPublished(pubs []calc.Published, cp []calc.L4Port) {
	var rules, elems []string
	type key struct {
		proto string
		ip    netip.Addr
		port  uint16
	}
	seen := map[key]bool{}
	for _, p := range pubs {
		if slices.Contains(cp, calc.L4Port{Proto: p.Proto, Port: p.HostPort}) {
			rs.problem("published port %s/%d of %s: a control-plane port; not published", p.Proto, p.HostPort, p.Addr)
			continue
		}
		// Two mappings clash on one port when either is for every address
		// or both are for the same one.
		clash := false
		for k := range seen {
			if k.proto == p.Proto && k.port == p.HostPort && (!k.ip.IsValid() || !p.HostIP.IsValid() || k.ip == p.HostIP) {
				clash = true
			}
		}
		if clash {
			rs.problem("published port %s/%d of %s: already published for another workload; not published", p.Proto, p.HostPort, p.Addr)
			continue
		}
		seen[key{p.Proto, p.HostIP, p.HostPort}] = true
		match := "meta nfproto ipv4"
		if p.HostIP.IsValid() {
			match = "ip daddr " + p.HostIP.String()
		}
		rules = append(rules, fmt.Sprintf("%s meta l4proto %s th dport %d dnat ip to %s:%d", match, p.Proto, p.HostPort, p.Addr, p.Port))
		elems = append(elems, p.Addr.String()+elemSep+p.Proto+elemSep+strconv.Itoa(int(p.Port)))
	}
	slices.Sort(elems)
	rs.Chains[chainPublish] = chainSpec{Comment: "published ports: host port -> workload address and port", Rules: rules}
	rs.Sets[setPub4] = setSpec{Type: "ipv4_addr . inet_proto . inet_service", Comment: "workload address . l4proto . port published on the host", Elems: slices.Compact(elems)}
}

// renderControlPlane fills the sets the skeleton's control-plane guard
// looks up: which addresses, and which ports on them. Adding a node is one
// element; no rule changes.
func (rs *ruleset) renderControlPlane(cp calc.ControlPlane) {
	h4, h6 := splitAddrs(cp.Hosts.V4, cp.Hosts.V6)
	rs.Sets[setCPHosts4] = setSpec{Type: "ipv4_addr", Comment: "control-plane hosts: every node, the datastore", Elems: h4}
	rs.Sets[setCPHosts6] = setSpec{Type: "ipv6_addr", Comment: "control-plane hosts: every node, the datastore", Elems: h6}
	var ports []string
	for _, p := range cp.Ports {
		if p.Proto != "tcp" && p.Proto != "udp" || p.Port == 0 {
			rs.problem("control-plane port %s/%d: want tcp or udp and a port 1-65535; not guarded", p.Proto, p.Port)
			continue
		}
		ports = append(ports, p.Proto+elemSep+strconv.Itoa(int(p.Port)))
	}
	slices.Sort(ports)
	rs.Sets[setCPPorts] = setSpec{Type: "inet_proto . inet_service", Comment: "control-plane ports on those hosts", Elems: slices.Compact(ports)}
}

// Where the VXLAN input rules look inside a datagram to this host, in bits
// from its UDP header: 8 bytes of UDP and 8 of VXLAN, then the inner
// Ethernet header (its type at byte 12) and the inner IPv4 header (its
// source at byte 12). The datagram is checked before the vxlan device
// decapsulates it, while its outer source is still there to bind the inner
// one to. nft has no type name for a raw payload field, so the set is
// declared with typeof and its inner sources are written as hex ranges.
const (
	vxlanInnerEtherType = (8 + 8 + 12) * 8
	vxlanInnerIPv4Src   = (8 + 8 + 14 + 12) * 8
)

// renderVXLAN fills the vxlan-src-N sets, the (node, inner source) pairs
// this host accepts through its VXLAN port grouped by the inner prefix's
// length N, and the vxlan-in chain that the skeleton's input chain jumps to
// for that port. Without a VXLAN pool the chain is empty: the port is left
// alone (other software may use it) and no tunnel device of ours exists to
// decapsulate.
//
// Why one hashed set per prefix length and not one interval set of
// (node . range): a concatenation with ranges is a pipapo set, whose
// lookup (AVX2 with the FPU state saved in softirq, several bucket
// tables walked) cost 9-12% CPU per GB on the bench's VXLAN path, where
// every TCP superpacket crosses this chain on a cold cache (two ablations
// of 10 alternating rounds, 2026-12-03); these hashed sets cost 0.5-6%. Masking the inner
// source to N bits and looking (node . network) up in a hash set is the
// same check with one hash probe per length in use; blocks share one
// length per pool, so a host usually has two rules (blocks, node
// addresses).
func (rs *ruleset) renderVXLAN(g calc.VXLANGuard) {
	byLen := map[int][]string{}
	for _, s := range g.Senders {
		a := s.Addr.Unmap()
		if !a.Is4() {
			rs.problem("VXLAN sender %s: not an IPv4 address; nothing accepted from it", s.Addr)
			continue
		}
		v4, _ := splitPrefixList(s.Inner)
		for _, p := range v4 {
			byLen[p.Bits()] = append(byLen[p.Bits()], a.String()+elemSep+hexRange(netip.PrefixFrom(p.Masked().Addr(), 32)))
		}
	}
	lens := slices.Sorted(maps.Keys(byLen))
	for _, n := range lens {
		elems := byLen[n]
		slices.Sort(elems)
		rs.Sets[vxlanSrcSet(n)] = setSpec{
			TypeOf:  fmt.Sprintf("ip saddr . @th,%d,32", vxlanInnerIPv4Src),
			Comment: fmt.Sprintf("node address . inner IPv4 /%d network it may send from through VXLAN", n),
			Elems:   slices.Compact(elems),
		}
	}
	var rules []string
	if g.Enabled {
		// Shortest prefixes (the blocks, which carry the workloads'
		// traffic) are tried first.
		for _, n := range lens {
			inner := fmt.Sprintf("@th,%d,32", vxlanInnerIPv4Src)
			if n < 32 {
				inner += fmt.Sprintf(" & 0x%08x", uint32(0xffffffff)<<(32-n))
			}
			rules = append(rules, fmt.Sprintf("@th,%d,16 0x0800 ip saddr . %s @%s accept", vxlanInnerEtherType, inner, vxlanSrcSet(n)))
		}
		rules = append(rules, "drop")
	}
	rs.Chains[chainVXLANIn] = chainSpec{Comment: "VXLAN to this host: only from nodes, only inner sources they own", Rules: rules}
}

// hexRange writes an IPv4 prefix as the integer range nft takes for a raw
// payload field: one value for a single address.
func hexRange(p netip.Prefix) string {
	b := p.Masked().Addr().As4()
	lo := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	hi := lo | uint32(uint64(1)<<(32-p.Bits())-1)
	if lo == hi {
		return fmt.Sprintf("0x%08x", lo)
	}
	return fmt.Sprintf("0x%08x-0x%08x", lo, hi)
}

func (rs *ruleset) problem(format string, args ...any) {
	rs.Problems = append(rs.Problems, fmt.Sprintf(format, args...))
}

// renderEndpoint writes an endpoint's two chains and dispatch entries.
func (rs *ruleset) renderEndpoint(ep calc.EndpointPolicy, profiles map[string]api.Profile) {
	if !validIfaceName(ep.Interface) {
		// Its traffic still hits the "cali*" catch-all drop if it is a
		// workload interface at all.
		rs.problem("endpoint %q: bad interface name; its traffic is not dispatched", ep.Interface)
		return
	}
	if _, dup := rs.members[ep.Interface]; dup {
		rs.problem("endpoint %q: listed twice; the first entry is enforced", ep.Interface)
		return
	}
	out, in := endpointOutChain(ep.Interface), endpointInChain(ep.Interface)

	// Anti-spoofing (the prerouting chain): a workload may only send from
	// its own addresses. A workload without an address of a family sends
	// nothing in it.
	v4, v6 := splitAddrs(ep.Addrs, nil)
	for _, x := range []struct {
		set   string
		addrs []string
	}{{setWlSrc4, v4}, {setWlSrc6, v6}} {
		s := rs.Sets[x.set]
		for _, a := range x.addrs {
			s.Elems = append(s.Elems, quoteIface(ep.Interface)+elemSep+a)
		}
		rs.Sets[x.set] = s
	}

	// An endpoint of a profile list in use (by its device group) shares
	// that list's chains: nothing of its own but its anti-spoofing
	// entries. Where label policies apply, the endpoint's chain runs them
	// first and stays its own. Only a "cali*" interface: the catch-all
	// drop behind the group dispatch covers no other name.
	if g := ep.Group; g != 0 && len(ep.EgressPolicies) == 0 && len(ep.IngressPolicies) == 0 && !rs.collided[g] &&
		strings.HasPrefix(ep.Interface, WorkloadIfacePrefix) {
		gout, gin := groupOutChain(g), groupInChain(g)
		if rs.groups[g] == 0 {
			outRules, inRules := rs.profileJumps(ep, profiles, gout, gin)
			rs.Chains[gout] = chainSpec{Comment: comment("profiles " + strings.Join(ep.Profiles, ", ") + " outbound"), Rules: outRules}
			rs.Chains[gin] = chainSpec{Comment: comment("profiles " + strings.Join(ep.Profiles, ", ") + " inbound"), Rules: inRules}
			rs.GrpFrom[groupKey(g)], rs.GrpTo[groupKey(g)] = gout, gin
		}
		rs.groups[g]++
		rs.members[ep.Interface] = g
		s := rs.Sets[setWlGroups]
		s.Elems = append(s.Elems, quoteIface(ep.Interface)+elemSep+groupKey(g))
		rs.Sets[setWlGroups] = s
		return
	}

	outRules, inRules := rs.profileJumps(ep, profiles, out, in)
	// Where label policies apply, the endpoint chain runs them and the
	// profiles move to a second stage that only a Pass reaches.
	if len(ep.EgressPolicies) > 0 {
		stage := endpointProfOut(ep.Interface)
		rs.Chains[stage] = chainSpec{Rules: outRules}
		rs.PassOut[ep.Interface] = stage
		outRules = endpointPolicyRules(ep.Interface, ep.EgressPolicies, false)
	}
	if len(ep.IngressPolicies) > 0 {
		stage := endpointProfIn(ep.Interface)
		rs.Chains[stage] = chainSpec{Rules: inRules}
		rs.PassIn[ep.Interface] = stage
		inRules = endpointPolicyRules(ep.Interface, ep.IngressPolicies, true)
	}

	rs.Chains[out] = chainSpec{Rules: outRules}
	rs.Chains[in] = chainSpec{Rules: inRules}
	rs.FromWl[ep.Interface] = out
	rs.ToWl[ep.Interface] = in
	rs.members[ep.Interface] = 0
}

// profileJumps are the rules that run ep's profiles in each direction and
// drop what none decided, the final drops named by out and in.
func (rs *ruleset) profileJumps(ep calc.EndpointPolicy, profiles map[string]api.Profile, out, in string) (outRules, inRules []string) {
	outRules = make([]string, 0, 1+len(ep.Profiles))
	inRules = make([]string, 0, 1+len(ep.Profiles))
	for _, name := range ep.Profiles {
		if _, ok := profiles[name]; !ok {
			// Skipping the profile could let a later profile allow what this one
			// would deny, so stop here: everything not yet decided is dropped.
			rs.problem("endpoint %q: profile %q is not in the policy; traffic it would decide is dropped", ep.Interface, name)
			break
		}
		outRules = append(outRules, "jump "+profileOutChain(name))
		inRules = append(inRules, "jump "+profileInChain(name))
	}
	// Nothing decided (or no profile at all): drop.
	outRules = append(outRules, dropStatement(out, 0))
	inRules = append(inRules, dropStatement(in, 0))
	return outRules, inRules
}

// countList adds n endpoints of list to group g's count in lists, which
// drops lists (and groups) at zero.
func countList(lists map[uint32]map[string]int, g uint32, list string, n int) {
	l := lists[g]
	if l == nil {
		l = map[string]int{}
		lists[g] = l
	}
	if l[list] += n; l[list] <= 0 {
		delete(l, list)
	}
	if len(l) == 0 {
		delete(lists, g)
	}
}

// renderRules renders one direction of a profile. A rule that cannot be
// enforced as written becomes an unconditional drop at its position: stricter
// than any reading of the rule, and the rules before it still work.
func (rs *ruleset) renderRules(profile, dir string, rules []api.Rule, tags map[string]bool) []string {
	out := make([]string, 0, len(rules))
	chain := profileInChain(profile)
	if dir == "outbound" {
		chain = profileOutChain(profile)
	}
	for i, r := range rules {
		lines, err := renderRule(r)
		if err != nil {
			rs.problem("profile %q %s rule %d: %v; enforced as drop", profile, dir, i+1, err)
			out = append(out, dropStatement(chain, i+1))
			continue
		}
		if r.Action == api.ActionDeny {
			// Counted and logged (drops.go); renderRule ends every line
			// with the verdict.
			for j, l := range lines {
				lines[j] = strings.TrimSuffix(l, "drop") + dropStatement(chain, i+1)
			}
		}
		for _, t := range []string{r.Src.Tag, r.Dst.Tag} {
			if t != "" {
				tags[t] = true
			}
		}
		out = append(out, lines...)
	}
	return out
}

// family of a rendered rule: 0 when the rule applies to both.
type family int

const (
	famAny family = 0
	fam4   family = 4
	fam6   family = 6
)

// renderRule turns one profile rule into nft rules: one rule when nothing in
// it is family-specific, else one per family it can match (a tag match needs
// the tag's v4 set in an IPv4 rule and its v6 set in an IPv6 rule). A rule
// that can match no family renders to nothing.
func renderRule(r api.Rule) ([]string, error) {
	if err := api.ValidateRule(r); err != nil {
		return nil, err
	}
	verdict := "accept"
	if r.Action == api.ActionDeny {
		verdict = "drop"
	}
	can4, can6, specific := true, true, false
	switch r.Protocol {
	case api.ProtocolICMP:
		can6, specific = false, true
	case api.ProtocolICMPv6:
		can4, specific = false, true
	}
	var cidrs [2]netip.Prefix // src, dst
	for i, e := range []api.EntityMatch{r.Src, r.Dst} {
		if e.Tag != "" {
			specific = true
		}
		if e.CIDR == "" {
			continue
		}
		p, err := api.ParseCIDR(e.CIDR)
		if err != nil {
			return nil, err
		}
		cidrs[i] = p
		specific = true
		if p.Addr().Is4() {
			can6 = false
		} else {
			can4 = false
		}
	}
	if !specific {
		return []string{ruleText(r, famAny, cidrs, verdict)}, nil
	}
	var lines []string
	if can4 {
		lines = append(lines, ruleText(r, fam4, cidrs, verdict))
	}
	if can6 {
		lines = append(lines, ruleText(r, fam6, cidrs, verdict))
	}
	return lines, nil
}

// ruleText writes one nft rule: family guard, addresses, protocol and ports,
// ICMP type and code, verdict. Address matches imply the family in an inet
// table, so the explicit "meta nfproto" guard is only added without them.
func ruleText(r api.Rule, f family, cidrs [2]netip.Prefix, verdict string) string {
	var b strings.Builder
	b.Grow(96)
	word := func(s string) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(s)
	}
	kw, tagSet := "ip", tagSet4
	if f == fam6 {
		kw, tagSet = "ip6", tagSet6
	}
	hasAddr := cidrs[0].IsValid() || cidrs[1].IsValid() || r.Src.Tag != "" || r.Dst.Tag != ""
	if f != famAny && !hasAddr {
		if f == fam4 {
			word("meta nfproto ipv4")
		} else {
			word("meta nfproto ipv6")
		}
	}
	for i, e := range []api.EntityMatch{r.Src, r.Dst} {
		dir := " saddr "
		if i == 1 {
			dir = " daddr "
		}
		if cidrs[i].IsValid() {
			word(kw + dir + cidrs[i].String())
		}
		if e.Tag != "" {
			word(kw + dir + "@" + tagSet(e.Tag))
		}
	}
	switch r.Protocol {
	case api.ProtocolTCP, api.ProtocolUDP:
		if len(r.Src.Ports) == 0 && len(r.Dst.Ports) == 0 {
			word("meta l4proto " + r.Protocol)
		}
		// A port match implies the protocol.
		if len(r.Src.Ports) > 0 {
			word(r.Protocol + " sport " + portSet(r.Src.Ports))
		}
		if len(r.Dst.Ports) > 0 {
			word(r.Protocol + " dport " + portSet(r.Dst.Ports))
		}
	case api.ProtocolICMP, api.ProtocolICMPv6:
		name, l4 := "icmp", "icmp"
		if r.Protocol == api.ProtocolICMPv6 {
			name, l4 = "icmpv6", "ipv6-icmp"
		}
		if r.ICMPType == nil {
			word("meta l4proto " + l4)
		} else {
			word(name + " type " + strconv.Itoa(*r.ICMPType))
			if r.ICMPCode != nil {
				word(name + " code " + strconv.Itoa(*r.ICMPCode))
			}
		}
	}
	word(verdict)
	return b.String()
}

// portSet renders ports as one value or an anonymous set, with overlapping
// and adjacent ranges merged: nft rejects overlapping intervals in a set.
func portSet(ports []api.PortRange) string {
	rs := slices.Clone(ports)
	slices.SortFunc(rs, func(a, b api.PortRange) int { return cmp.Compare(a.Min, b.Min) })
	merged := rs[:1]
	for _, p := range rs[1:] {
		last := &merged[len(merged)-1]
		if uint32(p.Min) <= uint32(last.Max)+1 {
			last.Max = max(last.Max, p.Max)
			continue
		}
		merged = append(merged, p)
	}
	parts := make([]string, len(merged))
	for i, p := range merged {
		if p.Min == p.Max {
			parts[i] = strconv.Itoa(int(p.Min))
		} else {
			parts[i] = strconv.Itoa(int(p.Min)) + "-" + strconv.Itoa(int(p.Max))
		}
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return "{ " + strings.Join(parts, ", ") + " }"
}

// splitAddrs sorts addresses into families by the address itself (not by
// the list it came in), unmapping IPv4-in-IPv6 and dropping zones, and
// returns each family sorted and unique, as set elements.
func splitAddrs(a, b []netip.Addr) (v4, v6 []string) {
	var x4, x6 []netip.Addr
	for _, list := range [][]netip.Addr{a, b} {
		for _, ip := range list {
			if !ip.IsValid() {
				continue
			}
			ip = ip.Unmap().WithZone("")
			if ip.Is4() {
				x4 = append(x4, ip)
			} else {
				x6 = append(x6, ip)
			}
		}
	}
	return addrStrings(x4), addrStrings(x6)
}

func addrStrings(ips []netip.Addr) []string {
	slices.SortFunc(ips, netip.Addr.Compare)
	ips = slices.Compact(ips)
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	// Sorted as strings, the order diffSorted merges in.
	slices.Sort(out)
	return out
}

// splitPrefixes normalizes prefixes for an interval set: masked, split by
// family, and with every prefix inside another one dropped, since nft refuses
// overlapping intervals in a set without auto-merge (and auto-merge would make
// later element deletes fail).
func splitPrefixes(ps []netip.Prefix) (v4, v6 []string) {
	x4, x6 := splitPrefixList(ps)
	return prefixStrings(x4), prefixStrings(x6)
}

// splitPrefixList is splitPrefixes before the prefixes become strings:
// masked, by family, none inside another.
func splitPrefixList(ps []netip.Prefix) (x4, x6 []netip.Prefix) {
	for _, p := range ps {
		if !p.IsValid() {
			continue
		}
		p = p.Masked()
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p.Addr().Is4() {
			x4 = append(x4, p)
		} else {
			x6 = append(x6, p)
		}
	}
	return outermost(x4), outermost(x6)
}

// outermost sorts prefixes and drops every one inside another.
func outermost(ps []netip.Prefix) []netip.Prefix {
	// Sorted by address then shorter prefix first, a prefix covered by an
	// earlier kept one comes right after it (prefixes nest or are disjoint).
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Bits(), b.Bits())
	})
	var out []netip.Prefix
	var last netip.Prefix
	for _, p := range ps {
		if last.IsValid() && last.Bits() <= p.Bits() && last.Contains(p.Addr()) {
			continue
		}
		last = p
		out = append(out, p)
	}
	return out
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	slices.Sort(out) // the order diffSorted merges in
	return out
}

// comment makes a string safe inside an nft comment literal, which cannot
// escape quotes, and which knftables writes with Go's %q (so anything but
// printable ASCII would arrive as a Go escape): printable ASCII only, within
// the 128-byte limit.
func comment(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < ' ' || c >= 0x7f || c == '"' || c == '\\' {
			b[i] = '_'
		}
	}
	if len(b) > 120 {
		b = b[:120]
	}
	return string(b)
}
