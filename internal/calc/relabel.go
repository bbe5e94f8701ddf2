package calc

import (
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/resource"
	"github.com/calico-go/calico/internal/selector"
)

// A label change is the commonest change at scale and the one a full
// Compute serves worst: at 1000 endpoints and 200 policies Compute costs
// 10-20 ms (it checks every record against IPAM and tests every selector
// against every endpoint), while the change itself can only move the one
// endpoint in or out of the selectors' members and change which policies
// apply to it. Relabel works that out from the previous Result alone.
// It is as pure as Compute, and the same function of the records: the
// tests check that Compute of the relabelled snapshot gives exactly the
// Policy Relabel returns.

// PolicyChange names what Relabel changed in a Policy, so the dataplane
// rewrites only those objects: the local endpoints (by interface) whose
// policy lists changed (or that were added or removed: Reendpoint), the
// selectors (keys of Policy.SelectorMembers) and the tags (keys of
// Policy.TagMembers) whose members changed. All are sorted.
type PolicyChange struct {
	Endpoints []string
	Selectors []string
	Tags      []string
}

// Empty says whether nothing changed.
func (c PolicyChange) Empty() bool {
	return len(c.Endpoints) == 0 && len(c.Selectors) == 0 && len(c.Tags) == 0
}

// Relabel is Compute for a snapshot that differs from the one prev was
// computed from (for node) only in the labels of endpoint records: key's
// record was old and is now s.Endpoints[key]. Several such changes are
// applied one at a time, each on the last one's Result. It returns the new
// Result and what changed in its Policy; ok is false when the change needs
// a full Compute: the records differ in more than their labels (or the
// record is gone), or a policy would start or stop applying to every local
// endpoint, which adds or removes its chains and selectors.
func Relabel(s *Snapshot, node string, prev Result, key string, old api.Endpoint) (res Result, ch PolicyChange, ok bool) {
	cur, exists := s.Endpoints[key]
	if !exists || !labelsOnly(old, cur) {
		return prev, ch, false
	}
	// A record Compute does not believe (for what it claims, which labels
	// do not touch) counts nowhere, whatever its labels.
	if slices.ContainsFunc(prev.Ignored, func(ig IgnoredEndpoint) bool { return ig.Key == key }) {
		return prev, ch, true
	}
	was, is := selector.Labels(old.EffectiveLabels()), selector.Labels(cur.EffectiveLabels())
	p := prev.Dataplane.Policy

	// Which policies apply to it, when it is one of this host's.
	if cur.Node == node && cur.InterfaceName != "" && len(s.Policies) > 0 {
		i, found := slices.BinarySearchFunc(p.Endpoints, cur.InterfaceName, func(e EndpointPolicy, iface string) int {
			return strings.Compare(e.Interface, iface)
		})
		if !found {
			return prev, ch, false
		}
		var problems []string // tierOrder's are Compute's already: the policies did not change
		in, out := newTierMatcher(tierOrder(s, &problems)).applied(is)
		e := p.Endpoints[i]
		if !slices.Equal(in, e.IngressPolicies) || !slices.Equal(out, e.EgressPolicies) {
			eps := slices.Clone(p.Endpoints)
			eps[i].IngressPolicies, eps[i].EgressPolicies = in, out
			if !sameKeys(usedPolicies(eps), p.Policies) {
				return prev, ch, false
			}
			p.Endpoints = eps
			ch.Endpoints = []string{cur.InterfaceName}
		}
	}

	// Which selectors' members it joins or leaves.
	addrs := endpointPrefixes(cur)
	var members map[string]SelectorMembers
	for _, key := range sortedKeys(p.SelectorMembers) {
		sel, err := selector.Parse(key) // a canonical form Compute wrote
		if err != nil {
			return prev, PolicyChange{}, false
		}
		before, after := sel.Matches(was), sel.Matches(is)
		if before == after {
			continue
		}
		if members == nil {
			members = maps.Clone(p.SelectorMembers)
		}
		members[key] = members[key].moved(s, sel, addrs, after)
		ch.Selectors = append(ch.Selectors, key)
	}
	if members != nil {
		p.SelectorMembers = members
	}
	prev.Dataplane.Policy = p
	return prev, ch, true
}

// labelsOnly says whether two records of one endpoint differ in nothing
// but their labels.
func labelsOnly(a, b api.Endpoint) bool {
	a.Labels, b.Labels = nil, nil
	return reflect.DeepEqual(a, b)
}

// usedPolicies are the policies some endpoint's lists name.
func usedPolicies(eps []EndpointPolicy) map[string]bool {
	used := map[string]bool{}
	for _, e := range eps {
		for _, n := range e.IngressPolicies {
			used[n] = true
		}
		for _, n := range e.EgressPolicies {
			used[n] = true
		}
	}
	return used
}

func sameKeys[A, B any](a map[string]A, b map[string]B) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}

// netSetsHold says whether a network set sel matches has the prefix p
// among its nets, which keeps p in sel's members whatever the endpoints.
func netSetsHold(s *Snapshot, sel *selector.Selector, p netip.Prefix) bool {
	for _, ns := range s.NetworkSets {
		if !sel.Matches(ns.Metadata.Labels) {
			continue
		}
		for _, n := range ns.Spec.Nets {
			if q, err := resource.ParseNet(n); err == nil && q == p {
				return true
			}
		}
	}
	return false
}

// insertPrefix and removePrefix keep a list sorted and unique as
// sortUniquePrefixes leaves it. Both copy: the list is shared with the
// previous Result.
// moved is m with an endpoint's addresses added (add) or taken out; a
// network set the selector matches that holds an address keeps it in.
func (m SelectorMembers) moved(s *Snapshot, sel *selector.Selector, addrs []netip.Prefix, add bool) SelectorMembers {
	for _, a := range addrs {
		list := &m.V4
		if a.Addr().Is6() {
			list = &m.V6
		}
		if add {
			*list = insertPrefix(*list, a)
		} else if !netSetsHold(s, sel, a) {
			*list = removePrefix(*list, a)
		}
	}
	return m
}

func insertPrefix(ps []netip.Prefix, p netip.Prefix) []netip.Prefix {
	i, found := slices.BinarySearchFunc(ps, p, comparePrefix)
	if found {
		return ps
	}
	return slices.Insert(slices.Clip(ps), i, p)
}

func removePrefix(ps []netip.Prefix, p netip.Prefix) []netip.Prefix {
	i, found := slices.BinarySearchFunc(ps, p, comparePrefix)
	if !found {
		return ps
	}
	if len(ps) == 1 {
		return nil // as Compute leaves a selector without members
	}
	return slices.Delete(slices.Clone(ps), i, i+1)
}
