package nft

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/resource"
)

// Label policies (calc.TierPolicy) beside the profiles; see doc.go for the
// layout. Everything here depends only on the policy's own rules and on
// selector names, never on which endpoints a selector matches: membership
// lives in the sel4-/sel6- sets, so an endpoint appearing anywhere in the
// cluster is an element edit.

// renderLabelPolicies writes one chain per policy and direction used by
// some local endpoint, and two interval sets (IPv4, IPv6) per selector the
// rules name.
func (rs *ruleset) renderLabelPolicies(p calc.Policy) {
	usedIn, usedOut := map[string]bool{}, map[string]bool{}
	for _, ep := range p.Endpoints {
		for _, n := range ep.IngressPolicies {
			usedIn[n] = true
		}
		for _, n := range ep.EgressPolicies {
			usedOut[n] = true
		}
	}
	for _, name := range sortedKeys(p.Policies) {
		pol := p.Policies[name]
		if usedIn[name] {
			rs.Chains[policyInChain(name)] = chainSpec{
				Comment: comment("policy " + name + " ingress"),
				Rules:   policyChainRules(name, pol.Ingress, true),
			}
		}
		if usedOut[name] {
			rs.Chains[policyOutChain(name)] = chainSpec{
				Comment: comment("policy " + name + " egress"),
				Rules:   policyChainRules(name, pol.Egress, false),
			}
		}
	}
	for key, m := range p.SelectorMembers {
		rs.renderSelector(key, m)
	}
}

// renderSelector writes a selector's two sets (IPv4, IPv6).
func (rs *ruleset) renderSelector(key string, m calc.SelectorMembers) {
	v4, _ := splitPrefixes(m.V4)
	_, v6 := splitPrefixes(m.V6)
	rs.Sets[selectorSet4(key)] = setSpec{Type: "ipv4_addr", Interval: true, Comment: comment("selector " + key), Elems: v4}
	rs.Sets[selectorSet6(key)] = setSpec{Type: "ipv6_addr", Interval: true, Comment: comment("selector " + key), Elems: v6}
}

// endpointPolicyRules is the first stage of an endpoint's chain for one
// direction when label policies apply: each policy in order, then the end
// of the tier. A policy's Allow or Deny ends the packet's walk; its Pass
// goes (through the pass-in/pass-out map) to the endpoint's profile stage;
// a policy that decides nothing returns here, to the next one.
func endpointPolicyRules(iface string, policies []string, ingress bool) []string {
	out := make([]string, 0, len(policies)+1)
	for _, n := range policies {
		if ingress {
			out = append(out, "jump "+policyInChain(n))
		} else {
			out = append(out, "jump "+policyOutChain(n))
		}
	}
	// Some policy applies and none decided: the tier drops (counted and
	// logged as the endpoint's end of tier, drops.go).
	return append(out, dropStatement(endOfTier(iface, ingress), 0))
}

// policyChainRules renders a policy's rules for one direction, in order.
func policyChainRules(policy string, rules []calc.PolicyRule, ingress bool) []string {
	chain := policyOutChain(policy)
	if ingress {
		chain = policyInChain(policy)
	}
	var out []string
	for i, r := range rules {
		lines := policyRuleText(policy, r, ingress)
		if r.Action != resource.ActionAllow && r.Action != resource.ActionLog && r.Action != resource.ActionPass {
			// A Deny (or a rule enforced as one) is counted and logged
			// with its 1-based number, as `calicoctl flows` names it.
			for j, l := range lines {
				lines[j] = strings.TrimSuffix(l, "drop") + dropStatement(chain, i+1)
			}
		}
		out = append(out, lines...)
	}
	return out
}

// policyRuleText turns one rule into nft rules: one when nothing in it is
// family-specific, else one per family it can match (a selector needs its
// IPv4 set in an IPv4 rule and its IPv6 set in an IPv6 rule; nets of one
// family rule the other out). A "not ICMP type T code C" is two rules
// (type != T, or type T with code != C), the same action on each: nft has
// no negation of a conjunction.
func policyRuleText(policy string, r calc.PolicyRule, ingress bool) []string {
	verdict := policyVerdict(policy, r.Action, ingress)
	fams := []family{fam4, fam6}
	switch r.IPVersion {
	case 4:
		fams = []family{fam4}
	case 6:
		fams = []family{fam6}
	}
	specific := r.IPVersion != 0
	for _, e := range []calc.PolicyEntity{r.Src, r.Dst} {
		if len(e.Nets) > 0 || len(e.NotNets) > 0 || e.Selector != "" || e.NotSelector != "" {
			specific = true
		}
		if len(e.Nets) > 0 {
			// Only families the positive nets have can match.
			v4, v6 := splitPrefixList(e.Nets)
			fams = slicesFilter(fams, func(f family) bool { return f == fam4 && len(v4) > 0 || f == fam6 && len(v6) > 0 })
		}
	}
	if !specific {
		fams = []family{famAny}
	}
	var out []string
	for _, f := range fams {
		for _, alt := range icmpAlternatives(r) {
			words := addressWords(r, f)
			if f != famAny && len(words) == 0 {
				words = append(words, "meta nfproto ipv"+strconv.Itoa(int(f)))
			}
			words = append(words, l4Words(r)...)
			words = append(words, alt...)
			words = append(words, verdict)
			out = append(out, strings.Join(words, " "))
		}
	}
	return out
}

func slicesFilter(fs []family, keep func(family) bool) []family {
	var out []family
	for _, f := range fs {
		if keep(f) {
			out = append(out, f)
		}
	}
	return out
}

// policyVerdict is what a matching rule does. Log counts and logs, then
// the walk goes on. Pass leaves the tier for the endpoint's profile stage,
// found by the endpoint's interface in pass-in (oifname: the receiving
// workload) or pass-out (iifname: the sending one).
func policyVerdict(policy, action string, ingress bool) string {
	switch action {
	case resource.ActionAllow:
		return "accept"
	case resource.ActionLog:
		return `counter log prefix "` + logPrefix(policy) + `"`
	case resource.ActionPass:
		if ingress {
			return "oifname vmap @" + mapPassIn
		}
		return "iifname vmap @" + mapPassOut
	}
	return "drop"
}

// logPrefix is the kernel log's prefix for a policy's Log rules: nft caps
// prefixes at 127 bytes, and comment() keeps the literal safe. A log
// prefix is more than a literal, though: nft (1.0+) expands "$name" inside
// it as a variable, so one "$" fails the whole transaction ("unknown
// identifier") and with it every policy change on the host. Policy names
// cannot hold "$" today (resource names are DNS names); this keeps a
// looser name from ever reaching nft as syntax.
func logPrefix(policy string) string {
	p := strings.ReplaceAll(comment("calico-pol "+policy), "$", "_")
	if len(p) > 60 {
		p = p[:60]
	}
	return p + ": "
}

// addressWords are the source and destination address matches of a rule
// for one family (none for famAny, which has no address match).
func addressWords(r calc.PolicyRule, f family) []string {
	if f == famAny {
		return nil
	}
	kw, set := "ip", selectorSet4
	if f == fam6 {
		kw, set = "ip6", selectorSet6
	}
	var words []string
	for i, e := range []calc.PolicyEntity{r.Src, r.Dst} {
		field := kw + " saddr "
		if i == 1 {
			field = kw + " daddr "
		}
		if len(e.Nets) > 0 {
			words = append(words, field+prefixSet(e.Nets, f))
		}
		if s := prefixSet(e.NotNets, f); s != "" {
			words = append(words, field+"!= "+s)
		}
		if e.Selector != "" {
			words = append(words, field+"@"+set(e.Selector))
		}
		if e.NotSelector != "" {
			words = append(words, field+"!= @"+set(e.NotSelector))
		}
	}
	return words
}

// prefixSet writes a family's prefixes as one value or an anonymous set
// ("" when it has none), nested ones dropped: nft refuses overlapping
// intervals.
func prefixSet(ps []netip.Prefix, f family) string {
	v4, v6 := splitPrefixes(ps)
	list := v4
	if f == fam6 {
		list = v6
	}
	switch len(list) {
	case 0:
		return ""
	case 1:
		return list[0]
	}
	return "{ " + strings.Join(list, ", ") + " }"
}

// l4Words are the protocol and port matches.
func l4Words(r calc.PolicyRule) []string {
	var words []string
	if r.Protocol != 0 {
		words = append(words, "meta l4proto "+strconv.Itoa(int(r.Protocol)))
	}
	if r.NotProtocol != 0 {
		words = append(words, "meta l4proto != "+strconv.Itoa(int(r.NotProtocol)))
	}
	for i, e := range []calc.PolicyEntity{r.Src, r.Dst} {
		field := "th sport "
		if i == 1 {
			field = "th dport "
		}
		if len(e.Ports) > 0 {
			words = append(words, field+portSet(e.Ports))
		}
		if len(e.NotPorts) > 0 {
			words = append(words, field+"!= "+portSet(e.NotPorts))
		}
	}
	if m := r.ICMP; m != nil {
		kw := icmpKeyword(r)
		words = append(words, kw+" type "+strconv.Itoa(m.Type))
		if m.Code != nil {
			words = append(words, kw+" code "+strconv.Itoa(*m.Code))
		}
	}
	return words
}

// icmpAlternatives are the notICMP matches, one list per rule to emit.
func icmpAlternatives(r calc.PolicyRule) [][]string {
	m := r.NotICMP
	if m == nil {
		return [][]string{nil}
	}
	kw, t := icmpKeyword(r), strconv.Itoa(m.Type)
	if m.Code == nil {
		return [][]string{{kw + " type != " + t}}
	}
	return [][]string{
		{kw + " type != " + t},
		{kw + " type " + t, kw + " code != " + strconv.Itoa(*m.Code)},
	}
}

func icmpKeyword(r calc.PolicyRule) string {
	if r.Protocol == 58 {
		return "icmpv6"
	}
	return "icmp"
}
