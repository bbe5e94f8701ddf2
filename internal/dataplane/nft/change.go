package nft

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/calico-go/calico/internal/calc"
)

// ErrNeedApply says ApplyChange cannot do the update it was given; the
// caller goes back to Apply with the whole policy.
var ErrNeedApply = errors.New("nftables: a partial update cannot be made; apply the whole policy")

// ApplyChange is Apply for a policy that differs from the one last applied
// only where ch says (calc.Relabel): it renders only those endpoints'
// chains and those selectors' sets, and sends their difference, instead of
// rendering and diffing the whole table. It returns ErrNeedApply, having
// changed nothing, when that is not possible (no table written yet, a
// Resync pending that cannot rule out drift, an access mode changed, a named endpoint or selector the
// last policy did not have, a rendering problem to report); another error
// means the kernel refused the update, and the next Apply rewrites the
// whole table.
func (e *Enforcer) ApplyChange(p calc.Policy, ch calc.PolicyChange) (Stats, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cur == nil || e.cur.access != e.access {
		return Stats{}, ErrNeedApply
	}
	if e.verify {
		// A resync is due: go on from our record only if it provably
		// still holds; otherwise Apply rewrites the table.
		if !e.unchanged() {
			return Stats{}, ErrNeedApply
		}
		e.verify = false
	}
	next, t, err := e.cur.withChange(p, ch)
	if err != nil {
		return Stats{}, err
	}
	tx := e.nft.NewTransaction()
	st := planChange(tx, e.cur, next, t)
	if st.Ops == 0 {
		e.cur = next
		return finish(st, next), nil
	}
	if st.ChainsWritten > 0 && e.beforeRewrite != nil {
		e.beforeRewrite()
	}
	if err := e.write(false, func() error { return e.runIncremental(tx, e.cur, next) }); err != nil {
		e.cur = nil
		return finish(st, next), fmt.Errorf("nftables: updating table %s: %w", TableName, err)
	}
	e.cur = next
	return finish(st, next), nil
}

// withChange is rs with the endpoints, selectors and tags ch names
// rendered from p; rs itself is not modified (its maps are copied, the
// unchanged entries shared). An endpoint ch names that p lacks is removed,
// one rs lacks is added. It says which chains and dispatch entries it
// may have changed (touched); every other one is rs's own.
func (rs *ruleset) withChange(p calc.Policy, ch calc.PolicyChange) (*ruleset, *touched, error) {
	t := &touched{chains: map[string]bool{}, ifaces: map[string]bool{}}
	next := *rs
	next.Sets = maps.Clone(rs.Sets)
	for _, key := range ch.Selectors {
		m, ok := p.SelectorMembers[key]
		if _, had := rs.Sets[selectorSet4(key)]; !ok || !had {
			return nil, nil, ErrNeedApply
		}
		next.renderSelector(key, m)
	}
	for _, tag := range ch.Tags {
		m, ok := p.TagMembers[tag]
		s4, had4 := rs.Sets[tagSet4(tag)]
		s6, had6 := rs.Sets[tagSet6(tag)]
		if !ok || !had4 || !had6 {
			return nil, nil, ErrNeedApply // a tag no rule named: its sets are new
		}
		s4.Elems, s6.Elems = splitAddrs(m.V4, m.V6)
		next.Sets[tagSet4(tag)], next.Sets[tagSet6(tag)] = s4, s6
	}
	if len(ch.Endpoints) == 0 {
		return &next, t, nil
	}
	next.Chains = maps.Clone(rs.Chains)
	next.FromWl, next.ToWl = maps.Clone(rs.FromWl), maps.Clone(rs.ToWl)
	next.PassIn, next.PassOut = maps.Clone(rs.PassIn), maps.Clone(rs.PassOut)
	for _, iface := range ch.Endpoints {
		i := slices.IndexFunc(p.Endpoints, func(ep calc.EndpointPolicy) bool { return ep.Interface == iface })
		_, had := rs.FromWl[iface]
		if i < 0 && !had {
			return nil, nil, ErrNeedApply
		}
		for _, c := range []string{endpointOutChain(iface), endpointInChain(iface), endpointProfOut(iface), endpointProfIn(iface)} {
			delete(next.Chains, c)
			t.chains[c] = true
		}
		t.ifaces[iface] = true
		delete(next.FromWl, iface)
		delete(next.ToWl, iface)
		delete(next.PassIn, iface)
		delete(next.PassOut, iface)
		// Rendered alone, so what it writes is exactly its own objects.
		one := &ruleset{Chains: map[string]chainSpec{}, Sets: map[string]setSpec{}, FromWl: map[string]string{}, ToWl: map[string]string{},
			PassIn: map[string]string{}, PassOut: map[string]string{}}
		if i >= 0 {
			one.renderEndpoint(p.Endpoints[i], p.Profiles)
			if len(one.Problems) > 0 {
				return nil, nil, ErrNeedApply // Apply reports the problems
			}
		}
		for _, set := range []string{setWlSrc4, setWlSrc6} {
			s := next.Sets[set]
			s.Elems = replaceIfaceElems(s.Elems, iface, one.Sets[set].Elems)
			next.Sets[set] = s
		}
		for c := range one.Chains {
			t.chains[c] = true
		}
		for _, m := range one.dispatchMaps() {
			for k := range m.entries {
				t.ifaces[k] = true
			}
		}
		maps.Copy(next.Chains, one.Chains)
		maps.Copy(next.FromWl, one.FromWl)
		maps.Copy(next.ToWl, one.ToWl)
		maps.Copy(next.PassIn, one.PassIn)
		maps.Copy(next.PassOut, one.PassOut)
	}
	return &next, t, nil
}

// replaceIfaceElems is a sorted anti-spoofing list (interface . address)
// with iface's elements replaced by elems. They are contiguous: every one
// starts with the quoted name and the separator. The list is copied, never
// modified (the last ruleset holds it).
func replaceIfaceElems(list []string, iface string, elems []string) []string {
	pre := quoteIface(iface) + elemSep
	lo, _ := slices.BinarySearch(list, pre)
	hi := lo
	for hi < len(list) && strings.HasPrefix(list[hi], pre) {
		hi++
	}
	want := slices.Clone(elems)
	slices.Sort(want)
	if slices.Equal(list[lo:hi], want) {
		return list
	}
	out := make([]string, 0, len(list)-(hi-lo)+len(want))
	out = append(append(append(out, list[:lo]...), want...), list[hi:]...)
	return out
}

// touched names the chains and the dispatch entries (by interface) that
// withChange may have changed; sets are few (per policy and tag, not per
// endpoint) and planChange looks at each.
type touched struct {
	chains map[string]bool
	ifaces map[string]bool
}

// planChange is planIncremental for a next that withChange derived from
// prev: the same operations in the same order, found by looking only at
// the chains and dispatch entries it touched and at set elements whose
// list is not prev's own, so one more endpoint next to 1000 costs what it
// costs next to 10 (planIncremental walks every chain and dispatch entry:
// about 4000 and 4000 there). TestPlanChangeIsPlanIncremental holds the
// two to the same output.
func planChange(tx *knftables.Transaction, prev, next *ruleset, t *touched) Stats {
	var st Stats
	c := counter{tx, &st}

	setNames := sortedKeys(next.Sets)
	for _, name := range setNames {
		if _, ok := prev.Sets[name]; !ok {
			c.addSet(name, next.Sets[name])
			st.SetsAdded++
		}
	}
	var newChains, changed, gone []string
	for name := range t.chains {
		old, existed := prev.Chains[name]
		cs, wanted := next.Chains[name]
		switch {
		case !wanted:
			if existed {
				gone = append(gone, name)
			}
		case !existed:
			newChains = append(newChains, name)
			changed = append(changed, name)
		case !slices.Equal(old.Rules, cs.Rules):
			changed = append(changed, name)
		}
	}
	slices.Sort(newChains)
	slices.Sort(changed)
	for _, name := range newChains {
		c.addChain(name, next.Chains[name])
	}

	for _, name := range setNames {
		prevElems, nextElems := prev.Sets[name].Elems, next.Sets[name].Elems
		if sameList(prevElems, nextElems) {
			continue // shared with prev: withChange left it alone
		}
		add, del := diffSorted(prevElems, nextElems)
		c.delElems(name, del)
		c.addElems(name, add)
	}

	ifaces := sortedKeys(t.ifaces)
	if ifaces == nil {
		ifaces = []string{} // none touched; nil would mean every interface
	}
	c.rewriteChains(prev, next, changed, ifaces)

	c.finish(prev, next, gone)
	return st
}

// sameList says whether a and b are one list (the same backing array and
// length), not merely equal ones.
func sameList(a, b []string) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
