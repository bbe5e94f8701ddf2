package calc

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/resource"
	"github.com/calico-go/calico/internal/selector"
)

// Label policy (Calico v3, one tier), beside the seed's profiles. For one
// endpoint and one direction, the policies whose selector matches the
// endpoint's effective labels and whose types include the direction apply,
// in order (spec.order ascending, no order last, ties by name). Their rules
// run in that order: Allow accepts, Deny drops, Log logs and goes on, Pass
// skips the remaining policies and hands the packet to the endpoint's
// profiles. When some policy applies and no Allow, Deny or Pass decided, the
// packet is dropped (end of tier). When no policy applies in a direction,
// the profiles decide exactly as without label policy.

// TierPolicy is one GlobalNetworkPolicy as the dataplane enforces it: its
// rules per direction, selectors resolved to names in
// Policy.SelectorMembers. Which endpoints it applies to is on the
// endpoints (EndpointPolicy.IngressPolicies / EgressPolicies).
type TierPolicy struct {
	Ingress []PolicyRule
	Egress  []PolicyRule
}

// PolicyRule is one rule of a policy, parsed. Every field left zero matches
// everything.
type PolicyRule struct {
	Action      string // resource.ActionAllow, ActionDeny, ActionLog or ActionPass
	IPVersion   int    // 0 (both), 4 or 6
	Protocol    uint8  // IANA number, 0: any
	NotProtocol uint8
	ICMP        *ICMPMatch
	NotICMP     *ICMPMatch
	Src, Dst    PolicyEntity
}

// ICMPMatch is an ICMP (or ICMPv6, by the rule's protocol) type and
// optional code.
type ICMPMatch struct {
	Type int
	Code *int
}

// PolicyEntity matches the source or destination of a packet.
type PolicyEntity struct {
	Nets, NotNets []netip.Prefix
	// Selector and NotSelector are canonical selector strings, keys of
	// Policy.SelectorMembers ("" for none).
	Selector, NotSelector string
	Ports, NotPorts       []api.PortRange
}

// SelectorMembers are the addresses a rule selector matches, cluster-wide:
// every believed workload endpoint whose effective labels match (its own
// addresses, as /32 and /128) and every GlobalNetworkSet whose labels match
// (its nets).
type SelectorMembers struct {
	V4, V6 []netip.Prefix // sorted, unique
}

// orderedPolicy is a policy with its parsed selector, in tier order.
type orderedPolicy struct {
	name    string
	spec    *resource.GlobalNetworkPolicySpec
	sel     *selector.Selector
	in, out bool
}

// tierOrder lists the snapshot's policies in the order they apply: order
// ascending, policies without an order after every one with, ties (and the
// order-less) by name. A policy whose selector does not parse (the store
// validates, so only a hand-written record) is left out and reported.
func tierOrder(s *Snapshot, problems *[]string) []orderedPolicy {
	var out []orderedPolicy
	for _, name := range sortedKeys(s.Policies) {
		p := s.Policies[name]
		sel, err := parseSelector(p.Spec.Selector)
		if err != nil {
			*problems = append(*problems, fmt.Sprintf("policy %s: spec.selector: %v; the policy applies to no endpoint", clip(name), err))
			continue
		}
		in, eg := p.Spec.PolicyTypes()
		out = append(out, orderedPolicy{name: name, spec: &p.Spec, sel: sel, in: in, out: eg})
	}
	slices.SortStableFunc(out, func(a, b orderedPolicy) int {
		switch {
		case a.spec.Order == nil && b.spec.Order == nil:
			return 0
		case a.spec.Order == nil:
			return 1
		case b.spec.Order == nil:
			return -1
		}
		return cmp.Compare(*a.spec.Order, *b.spec.Order)
	})
	return out
}

// parseSelector parses a selector; "" is all(), as Calico reads an empty one.
func parseSelector(s string) (*selector.Selector, error) {
	if s == "" {
		s = "all()"
	}
	return selector.Parse(s)
}

// labelPolicy fills the label-policy part of p for the local endpoints
// (p.Endpoints[i] belongs to local[i]): which policies apply to each, in
// order, the rules of those policies, and the members of every selector
// their rules name.
func labelPolicy(s *Snapshot, local []api.Endpoint, p *Policy, problems *[]string) {
	if len(s.Policies) == 0 {
		return
	}
	tier := newTierMatcher(tierOrder(s, problems))
	used := map[string]bool{}
	for i, ep := range local {
		e := &p.Endpoints[i]
		e.IngressPolicies, e.EgressPolicies = tier.applied(selector.Labels(ep.EffectiveLabels()))
		for _, n := range e.IngressPolicies {
			used[n] = true
		}
		for _, n := range e.EgressPolicies {
			used[n] = true
		}
	}
	if len(used) == 0 {
		return
	}
	p.Policies = map[string]TierPolicy{}
	selectors := map[string]*selector.Selector{}
	for _, pol := range tier.tier {
		if !used[pol.name] {
			continue
		}
		tp := TierPolicy{}
		if pol.in {
			tp.Ingress = policyRules(pol.name, "ingress", pol.spec.Ingress, selectors, problems)
		}
		if pol.out {
			tp.Egress = policyRules(pol.name, "egress", pol.spec.Egress, selectors, problems)
		}
		p.Policies[pol.name] = tp
	}
	p.SelectorMembers = selectorMembers(s, selectors)
}

// tierMatcher finds the policies of a tier that apply to an endpoint.
// Policies often share selectors: each distinct one is tested once per
// endpoint.
type tierMatcher struct {
	tier    []orderedPolicy
	sels    []*selector.Selector // the distinct selectors
	selOf   []int                // tier[k]'s selector is sels[selOf[k]]
	matched []bool               // scratch, one per distinct selector
}

func newTierMatcher(tier []orderedPolicy) *tierMatcher {
	t := &tierMatcher{tier: tier, selOf: make([]int, len(tier))}
	distinct := map[string]int{}
	for i, pol := range tier {
		key := pol.sel.String()
		j, ok := distinct[key]
		if !ok {
			j = len(t.sels)
			distinct[key] = j
			t.sels = append(t.sels, pol.sel)
		}
		t.selOf[i] = j
	}
	t.matched = make([]bool, len(t.sels))
	return t
}

// applied lists, in tier order, the policies that apply to an endpoint
// with these effective labels in each direction (nil for none).
func (t *tierMatcher) applied(labels selector.Labels) (in, out []string) {
	for j, sel := range t.sels {
		t.matched[j] = sel.Matches(labels)
	}
	for k, pol := range t.tier {
		if !t.matched[t.selOf[k]] {
			continue
		}
		if pol.in {
			in = append(in, pol.name)
		}
		if pol.out {
			out = append(out, pol.name)
		}
	}
	return in, out
}

// labelledEndpoint is an endpoint's effective labels and addresses,
// computed once for every selector to test.
type labelledEndpoint struct {
	labels selector.Labels
	addrs  []netip.Prefix
}

// policyRules parses one direction's rules. A rule that does not parse
// (only possible for a record the store did not validate) becomes a Deny
// without matches at its place: stricter than any reading of it, as a bad
// profile rule is.
func policyRules(policy, dir string, rules []resource.Rule, selectors map[string]*selector.Selector, problems *[]string) []PolicyRule {
	out := make([]PolicyRule, 0, len(rules))
	for i, r := range rules {
		pr, err := policyRule(r, selectors)
		if err != nil {
			*problems = append(*problems, fmt.Sprintf("policy %s %s rule %d: %v; enforced as Deny", clip(policy), dir, i+1, err))
			pr = PolicyRule{Action: resource.ActionDeny}
		}
		out = append(out, pr)
	}
	return out
}

func policyRule(r resource.Rule, selectors map[string]*selector.Selector) (PolicyRule, error) {
	pr := PolicyRule{Action: r.Action}
	switch r.Action {
	case resource.ActionAllow, resource.ActionDeny, resource.ActionLog, resource.ActionPass:
	default:
		return pr, fmt.Errorf("action %q", r.Action)
	}
	if r.IPVersion != nil {
		pr.IPVersion = *r.IPVersion
	}
	if r.Protocol != nil {
		pr.Protocol = r.Protocol.Number
	}
	if r.NotProtocol != nil {
		pr.NotProtocol = r.NotProtocol.Number
	}
	pr.ICMP, pr.NotICMP = icmpMatch(r.ICMP), icmpMatch(r.NotICMP)
	var err error
	if pr.Src, err = policyEntity(r.Source, selectors); err != nil {
		return pr, fmt.Errorf("source: %v", err)
	}
	if pr.Dst, err = policyEntity(r.Destination, selectors); err != nil {
		return pr, fmt.Errorf("destination: %v", err)
	}
	return pr, nil
}

func icmpMatch(f *resource.ICMPFields) *ICMPMatch {
	if f == nil || f.Type == nil {
		// Calico: an icmp block without a type matches every ICMP packet,
		// which the protocol already says.
		return nil
	}
	return &ICMPMatch{Type: *f.Type, Code: f.Code}
}

func policyEntity(e resource.EntityRule, selectors map[string]*selector.Selector) (PolicyEntity, error) {
	var pe PolicyEntity
	for _, x := range []struct {
		in  []string
		out *[]netip.Prefix
	}{{e.Nets, &pe.Nets}, {e.NotNets, &pe.NotNets}} {
		for _, n := range x.in {
			p, err := resource.ParseNet(n)
			if err != nil {
				return pe, err
			}
			*x.out = append(*x.out, p)
		}
	}
	for _, x := range []struct {
		in  string
		out *string
	}{{e.Selector, &pe.Selector}, {e.NotSelector, &pe.NotSelector}} {
		if x.in == "" {
			continue
		}
		sel, err := selector.Parse(x.in)
		if err != nil {
			return pe, err
		}
		*x.out = sel.String()
		selectors[sel.String()] = sel
	}
	for _, p := range e.Ports {
		pe.Ports = append(pe.Ports, api.PortRange{Min: p.Min, Max: p.Max})
	}
	for _, p := range e.NotPorts {
		pe.NotPorts = append(pe.NotPorts, api.PortRange{Min: p.Min, Max: p.Max})
	}
	return pe, nil
}

// selectorMembers resolves every rule selector against every believed
// endpoint (effective labels) and every network set (its labels).
func selectorMembers(s *Snapshot, selectors map[string]*selector.Selector) map[string]SelectorMembers {
	out := make(map[string]SelectorMembers, len(selectors))
	eps := make([]labelledEndpoint, 0, len(s.Endpoints))
	for _, ep := range s.Endpoints {
		eps = append(eps, labelledEndpoint{labels: ep.EffectiveLabels(), addrs: endpointPrefixes(ep)})
	}
	sets := sortedKeys(s.NetworkSets)
	for key, sel := range selectors {
		var all []netip.Prefix
		for _, ep := range eps {
			if sel.Matches(ep.labels) {
				all = append(all, ep.addrs...)
			}
		}
		for _, k := range sets {
			ns := s.NetworkSets[k]
			if !sel.Matches(ns.Metadata.Labels) {
				continue
			}
			for _, n := range ns.Spec.Nets {
				if p, err := resource.ParseNet(n); err == nil {
					all = append(all, p)
				}
			}
		}
		var m SelectorMembers
		for _, p := range all {
			if p.Addr().Is4() {
				m.V4 = append(m.V4, p)
			} else {
				m.V6 = append(m.V6, p)
			}
		}
		m.V4, m.V6 = sortUniquePrefixes(m.V4), sortUniquePrefixes(m.V6)
		out[key] = m
	}
	return out
}

func sortUniquePrefixes(ps []netip.Prefix) []netip.Prefix {
	slices.SortFunc(ps, comparePrefix)
	return slices.Compact(ps)
}

// comparePrefix orders prefixes by address, then length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}
