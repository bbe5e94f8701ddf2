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
	// In place: e.cur's chain and dispatch maps become next's (prev is
	// what planning reads of the old ruleset). Every way out below sets
	// e.cur to next, or to nil after a failed write; a declined change
	// leaves e.cur as it was.
	prev, next, t, err := e.cur.change(p, ch, true)
	if err != nil {
		return Stats{}, err
	}
	tx := e.nft.NewTransaction()
	st := planChange(tx, prev, next, t)
	if st.Ops == 0 {
		e.cur = next
		return finish(st, next), nil
	}
	if st.ChainsWritten > 0 && e.beforeRewrite != nil {
		e.beforeRewrite()
	}
	if err := e.write(false, func() error { return e.runIncremental(tx, prev, next) }); err != nil {
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
	_, next, t, err := rs.change(p, ch, false)
	return next, t, err
}

// change is withChange, or with inPlace the same change made to rs's own
// chain and dispatch maps, which next then shares: copying those maps
// (about 2000 chains and 4 x 1000 dispatch entries next to 1000
// endpoints) was three quarters of the bytes ApplyChange allocated per
// new container, and the collector's work grows with those bytes. prev
// is then a view of rs as it was that holds only what planChange,
// cacheFree and finish read of the previous ruleset: every set (rs's set
// map is still copied; sets are few), the old entries of the touched
// chains and dispatch entries, and the publish chain (natHooks). Without
// inPlace prev is rs. Whatever makes it return ErrNeedApply is found
// before anything of rs is changed.
func (rs *ruleset) change(p calc.Policy, ch calc.PolicyChange, inPlace bool) (prev, next *ruleset, t *touched, err error) {
	t = &touched{chains: map[string]bool{}, ifaces: map[string]bool{}}
	nx := *rs
	next = &nx
	next.Sets = maps.Clone(rs.Sets)
	for _, key := range ch.Selectors {
		m, ok := p.SelectorMembers[key]
		if _, had := rs.Sets[selectorSet4(key)]; !ok || !had {
			return nil, nil, nil, ErrNeedApply
		}
		next.renderSelector(key, m)
	}
	for _, tag := range ch.Tags {
		m, ok := p.TagMembers[tag]
		s4, had4 := rs.Sets[tagSet4(tag)]
		s6, had6 := rs.Sets[tagSet6(tag)]
		if !ok || !had4 || !had6 {
			return nil, nil, nil, ErrNeedApply // a tag no rule named: its sets are new
		}
		s4.Elems, s6.Elems = splitAddrs(m.V4, m.V6)
		next.Sets[tagSet4(tag)], next.Sets[tagSet6(tag)] = s4, s6
	}
	if len(ch.Endpoints) == 0 {
		return rs, next, t, nil
	}
	// Each endpoint rendered alone, so what it writes is exactly its own
	// objects; all of them before any map is edited.
	ones := make([]*ruleset, len(ch.Endpoints))
	at := make([]int, len(ch.Endpoints)) // each one's index in p.Endpoints, -1: gone
	lists := map[uint32]string{}         // the profile list of each group the change adds to
	for k, iface := range ch.Endpoints {
		i := slices.IndexFunc(p.Endpoints, func(ep calc.EndpointPolicy) bool { return ep.Interface == iface })
		at[k] = i
		_, had := rs.members[iface]
		// A group that two profile lists share, or would, takes Apply,
		// which dispatches its endpoints by name (or no longer does).
		if i < 0 && !had || rs.collided[rs.listOf[iface].group] {
			return nil, nil, nil, ErrNeedApply
		}
		one := &ruleset{Chains: map[string]chainSpec{}, Sets: map[string]setSpec{}, FromWl: map[string]string{}, ToWl: map[string]string{},
			PassIn: map[string]string{}, PassOut: map[string]string{}, GrpFrom: map[string]string{}, GrpTo: map[string]string{},
			members: map[string]uint32{}, groups: map[uint32]int{}}
		if i >= 0 {
			ep := p.Endpoints[i]
			// A list other than the one a group's chains run: another
			// list with the group (a collision), or the same record's
			// profiles that came or went (Apply rewrites its chains).
			if g, l := ep.Group, listKey(ep.Profiles); g != 0 {
				if rs.collided[g] || len(rs.lists[g]) > 0 && rs.lists[g][l] == 0 {
					return nil, nil, nil, ErrNeedApply
				}
				if was, ok := lists[g]; ok && was != l {
					return nil, nil, nil, ErrNeedApply
				}
				lists[g] = l
			}
			one.renderEndpoint(ep, p.Profiles)
			if len(one.Problems) > 0 {
				return nil, nil, nil, ErrNeedApply // Apply reports the problems
			}
		}
		ones[k] = one
	}
	prev = rs
	// keep records the old entry of a key about to change, once: the
	// first change of a key sees it as rs had it.
	keepChain := func(string) {}
	if inPlace {
		prev = &ruleset{Sets: rs.Sets, Chains: map[string]chainSpec{}, FromWl: map[string]string{}, ToWl: map[string]string{},
			PassIn: map[string]string{}, PassOut: map[string]string{}, Problems: rs.Problems, profiles: rs.profiles, access: rs.access}
		if c, ok := rs.Chains[chainPublish]; ok {
			prev.Chains[chainPublish] = c
		}
		kept := map[string]bool{}
		keepChain = func(name string) {
			if kept[name] {
				return
			}
			kept[name] = true
			if c, ok := rs.Chains[name]; ok {
				prev.Chains[name] = c
			}
		}
		prev.GrpFrom, prev.GrpTo = map[string]string{}, map[string]string{}
		keptKey := map[string]bool{}
		// The dispatch entries touched are those of ch's interfaces and
		// their groups before, and those the rendered endpoints write
		// (their own and their groups').
		for _, iface := range ch.Endpoints {
			keptKey[iface] = true
			if g := rs.members[iface]; g != 0 {
				keptKey[groupKey(g)] = true
			}
		}
		for _, one := range ones {
			for _, m := range one.dispatchMaps() {
				for k := range m.entries {
					keptKey[k] = true
				}
			}
		}
		from, to := rs.dispatchMaps(), prev.dispatchMaps()
		for key := range keptKey {
			for i := range from {
				if v, ok := from[i].entries[key]; ok {
					to[i].entries[key] = v
				}
			}
		}
	} else {
		next.Chains = maps.Clone(rs.Chains)
		next.FromWl, next.ToWl = maps.Clone(rs.FromWl), maps.Clone(rs.ToWl)
		next.PassIn, next.PassOut = maps.Clone(rs.PassIn), maps.Clone(rs.PassOut)
		next.GrpFrom, next.GrpTo = maps.Clone(rs.GrpFrom), maps.Clone(rs.GrpTo)
		next.members, next.groups = maps.Clone(rs.members), maps.Clone(rs.groups)
		next.listOf, next.lists = maps.Clone(rs.listOf), maps.Clone(rs.lists)
		for g, l := range next.lists {
			next.lists[g] = maps.Clone(l) // counted below
		}
	}
	groupsTouched := map[uint32]bool{}
	for k, iface := range ch.Endpoints {
		one := ones[k]
		for _, c := range []string{endpointOutChain(iface), endpointInChain(iface), endpointProfOut(iface), endpointProfIn(iface)} {
			keepChain(c)
			delete(next.Chains, c)
			t.chains[c] = true
		}
		t.ifaces[iface] = true
		delete(next.FromWl, iface)
		delete(next.ToWl, iface)
		delete(next.PassIn, iface)
		delete(next.PassOut, iface)
		if gl, ok := next.listOf[iface]; ok {
			delete(next.listOf, iface)
			countList(next.lists, gl.group, gl.list, -1)
		}
		if i := at[k]; i >= 0 && p.Endpoints[i].Group != 0 {
			ep := p.Endpoints[i]
			next.listOf[iface] = groupList{ep.Group, listKey(ep.Profiles)}
			countList(next.lists, ep.Group, listKey(ep.Profiles), 1)
		}
		if g, had := next.members[iface]; had {
			delete(next.members, iface)
			if g != 0 {
				next.groups[g]--
				groupsTouched[g] = true
			}
		}
		for _, set := range []string{setWlSrc4, setWlSrc6, setWlGroups} {
			s := next.Sets[set]
			s.Elems = replaceIfaceElems(s.Elems, iface, one.Sets[set].Elems)
			next.Sets[set] = s
		}
		for c := range one.Chains {
			keepChain(c)
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
		maps.Copy(next.GrpFrom, one.GrpFrom)
		maps.Copy(next.GrpTo, one.GrpTo)
		if g, ok := one.members[iface]; ok {
			next.members[iface] = g
			if g != 0 {
				next.groups[g]++
				groupsTouched[g] = true
			}
		}
	}
	// A group its last endpoint left goes, with its chains and entries.
	for g := range groupsTouched {
		if next.groups[g] > 0 {
			continue
		}
		delete(next.groups, g)
		for _, c := range []string{groupOutChain(g), groupInChain(g)} {
			keepChain(c)
			delete(next.Chains, c)
			t.chains[c] = true
		}
		delete(next.GrpFrom, groupKey(g))
		delete(next.GrpTo, groupKey(g))
		t.ifaces[groupKey(g)] = true
	}
	return prev, next, t, nil
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

// touched names the chains and the dispatch entries (by interface or
// device group) that withChange may have changed; sets are few (per
// policy and tag, not per endpoint) and planChange looks at each.
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
