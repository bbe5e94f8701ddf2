package calc

import (
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/selector"
)

// A container starting or stopping is the commonest change on a host, and
// it touches little of the desired state: the endpoint's interface, its
// /32 (/128) routes, its policy entry, and its addresses in the tag and
// selector sets that match it. Compute pays for every endpoint of the
// cluster (the IPAM check, every selector against every endpoint, tag
// membership), so at 1000 endpoints one more cost several times what it
// costs at 10. Reendpoint derives the next Result from the last one
// instead, for endpoint records added, removed or changed and for
// allocation-only changes of IPAM blocks (which every address taken or
// released writes). Every host receives every other host's container
// starts: for another host's record inside that host's blocks, only the
// tag and selector sets it is in change here. Like Relabel it is pure,
// and the tests check it against Compute of the changed snapshot; where it
// cannot be sure it declines and the caller computes everything.

// EndpointEdit is one endpoint record's change since the Result it is
// applied to: Old is the record then (Had: there was one); the record now
// is the snapshot's (or none).
type EndpointEdit struct {
	Key string
	Old api.Endpoint
	Had bool
}

// BlockEdit is one IPAM block's change: Old is the block as the Result's
// Compute saw it; the block now is the snapshot's.
type BlockEdit struct {
	CIDR string
	Old  api.Block
}

// EndpointChange is what Reendpoint changed, for the dataplane to apply
// only that.
type EndpointChange struct {
	// Workloads: the interfaces list changed (one added or gone).
	Workloads bool
	// AddRoutes and DelRoutes are the kernel routes to add and delete.
	AddRoutes, DelRoutes []Route
	// Policy names the endpoints, selectors and tags whose nftables
	// objects change.
	Policy PolicyChange
}

// Empty says whether nothing in the dataplane changed.
func (c EndpointChange) Empty() bool {
	return !c.Workloads && len(c.AddRoutes) == 0 && len(c.DelRoutes) == 0 && c.Policy.Empty()
}

// Reendpoint is Compute for in.Snap when it differs from the snapshot
// prev was computed from only by the endpoint edits and the block edits
// (allocations only); in.Learned must be what prev's Compute saw. ok is
// false, with prev returned unchanged, when a full Compute is needed: some
// record of the cluster is not believed (before, or would not be after),
// an address lies outside its own host's blocks (the announcement, the
// VXLAN senders' sources or a WireGuard peer's allowed IPs would change)
// or has a learned route, a profile or policy would start or stop being
// used by this host, or an endpoint publishes ports. Another host's
// record changes nothing here but the tag and selector sets it is in.
func Reendpoint(in Input, prev Result, eps []EndpointEdit, blocks []BlockEdit) (res Result, ch EndpointChange, ok bool) {
	s := in.Snap
	if len(prev.Ignored) > 0 {
		return prev, ch, false
	}
	idx := indexBlocks(s)
	blocksOf := map[string][]netip.Prefix{} // node -> its blocks, as Compute's ownBlocks
	blockOf := func(node string, a netip.Addr) (netip.Prefix, bool) {
		own, done := blocksOf[node]
		if !done {
			own = ownBlocks(s, node)
			blocksOf[node] = own
		}
		i := slices.IndexFunc(own, func(b netip.Prefix) bool { return b.Contains(a) })
		if i < 0 {
			return netip.Prefix{}, false
		}
		return own[i], true
	}
	// A peer's WireGuard allowed IPs are its blocks in a pool and its
	// workloads' addresses in a pool, without those a block covers.
	wg := prev.Dataplane.WireGuard
	inWGPool := func(p netip.Prefix) bool {
		return slices.ContainsFunc(wg.PoolDsts, func(pl netip.Prefix) bool { return pl.Bits() <= p.Bits() && pl.Contains(p.Addr()) })
	}

	// Addresses whose holder changed: an endpoint still claiming one would
	// no longer be believed. A new allocation cannot touch a believed
	// record (none claimed an address nobody held).
	released := map[netip.Addr]bool{}
	for _, b := range blocks {
		cur, exists := s.Blocks[b.CIDR]
		if !exists || !allocationsOnly(b.Old, cur) {
			return prev, ch, false
		}
		p, err := netip.ParsePrefix(cur.CIDR)
		if err != nil {
			return prev, ch, false
		}
		p = p.Masked()
		for ord, h := range b.Old.Allocations {
			if h != "" && cur.Allocations[ord] != h {
				a, ok := nthAddr(p, ord)
				if !ok {
					return prev, ch, false
				}
				released[a] = true
			}
		}
	}

	// The edited endpoints as they were and as they are now.
	type edit struct {
		remote       bool // another host's record: only tag and selector sets change
		old, cur     *api.Endpoint
		oldP, curP   []netip.Prefix
		oldIf, curIf string
	}
	var edits []edit
	editing := map[string]bool{}
	newIfaces := map[string]bool{}
	newAddrs := map[netip.Addr]bool{}
	for _, e := range eps {
		if editing[e.Key] {
			return prev, ch, false
		}
		editing[e.Key] = true
		var ed edit
		node := ""
		if e.Had {
			old := e.Old
			node = old.Node
			ed.old, ed.oldP, ed.oldIf = &old, endpointPrefixes(old), old.InterfaceName
		}
		if cur, exists := s.Endpoints[e.Key]; exists {
			if e.Had && cur.Node != node {
				return prev, ch, false // a record moved between hosts
			}
			node = cur.Node
			addrs, why := checkEndpoint(cur, idx, nil)
			if why != "" || cur.InterfaceName == "" {
				return prev, ch, false // Compute would report it
			}
			for _, a := range addrs {
				if newAddrs[a] || released[a] {
					return prev, ch, false
				}
				newAddrs[a] = true
			}
			if newIfaces[cur.InterfaceName] {
				return prev, ch, false
			}
			newIfaces[cur.InterfaceName] = true
			ed.cur, ed.curP, ed.curIf = &cur, endpointPrefixes(cur), cur.InterfaceName
		}
		if ed.old == nil && ed.cur == nil {
			continue
		}
		if node == "" {
			return prev, ch, false
		}
		ed.remote = node != in.Node
		for _, e := range [2]*api.Endpoint{ed.old, ed.cur} {
			if e != nil && len(published(*e, prefixAddrs(endpointPrefixes(*e)))) > 0 {
				return prev, ch, false // the published list reports clashes in order
			}
		}
		for _, ps := range [2][]netip.Prefix{ed.oldP, ed.curP} {
			for _, p := range ps {
				// Outside its host's blocks it is announced on its own
				// (and a VXLAN and WireGuard source of that host); a
				// learned route for it is judged by who holds it.
				b, inOwn := blockOf(node, p.Addr())
				if !inOwn || len(in.Learned[p]) > 0 {
					return prev, ch, false
				}
				if ed.remote && wg.Enabled && p.Addr().Is4() && inWGPool(p) && !inWGPool(b) {
					return prev, ch, false // an allowed IP of its own
				}
			}
		}
		if ed.old != nil && ed.cur != nil && ed.oldIf != ed.curIf {
			return prev, ch, false
		}
		edits = append(edits, ed)
	}
	// No other record may claim what an edited one claims now, nor hold a
	// released address: either would make Compute believe neither.
	switch {
	case len(newAddrs) == 0 && len(released) == 0:
	case in.EndpointAddrs.For(s):
		addrs := slices.Collect(maps.Keys(newAddrs))
		for a := range released {
			addrs = append(addrs, a)
		}
		if in.EndpointAddrs.clashes(s, editing, addrs, slices.Collect(maps.Keys(newIfaces))) {
			return prev, ch, false
		}
	default:
		for key, ep := range s.Endpoints {
			if editing[key] {
				continue
			}
			if newIfaces[ep.InterfaceName] {
				return prev, ch, false
			}
			for _, nets := range [2][]string{ep.IPv4Nets, ep.IPv6Nets} {
				for _, n := range nets {
					// As endpointPrefixes reads it, without its allocations:
					// this runs over every endpoint of the cluster.
					a, ok := netAddr(n)
					if ok && (newAddrs[a] || released[a]) {
						return prev, ch, false
					}
				}
			}
		}
	}
	if len(edits) == 0 {
		return prev, ch, true
	}

	pools := parsePools(s)
	d := prev.Dataplane
	p := d.Policy
	// Only this host's records change the lists (shared with prev until
	// copied); other hosts' change sets alone.
	local := slices.ContainsFunc(edits, func(ed edit) bool { return !ed.remote })
	routes := d.Routes
	if local {
		// One copy each, with room for what is added: cloning and then
		// inserting copied every list twice (at 1000 endpoints most of
		// the bytes an add allocates).
		more, moreRoutes := 0, 0
		for _, ed := range edits {
			if !ed.remote && ed.cur != nil {
				more++
				moreRoutes += len(ed.curP)
			}
		}
		p.Endpoints = append(make([]EndpointPolicy, 0, len(p.Endpoints)+more), p.Endpoints...)
		d.Workloads = append(make([]WorkloadIface, 0, len(d.Workloads)+more), d.Workloads...)
		routes = append(make([]Route, 0, len(d.Routes)+moreRoutes), d.Routes...)
	}
	var tier *tierMatcher // built for the first local record: other hosts' need none
	applied := func(labels map[string]string) (in, out []string) {
		if len(s.Policies) == 0 {
			return nil, nil
		}
		if tier == nil {
			var problems []string // Compute's already: the policies did not change
			tier = newTierMatcher(tierOrder(s, &problems))
		}
		return tier.applied(selector.Labels(labels))
	}
	var tags map[string]AddrSet
	var members map[string]SelectorMembers
	sels := map[string]*selector.Selector{}
	changedTags, changedSels := map[string]bool{}, map[string]bool{}
	var goneProfiles, gonePolicies, newPolicies []string

	for _, ed := range edits {
		if ed.remote {
			// Its interface, routes and policy entry are its host's.
			if ed.old != nil {
				if tags, ok = editTags(s, p.TagMembers, tags, *ed.old, ed.oldP, false, changedTags); !ok {
					return prev, EndpointChange{}, false
				}
				if members, ok = editSelectors(s, p.SelectorMembers, members, sels, ed.old.EffectiveLabels(), ed.oldP, false, changedSels); !ok {
					return prev, EndpointChange{}, false
				}
			}
			if ed.cur != nil {
				if tags, ok = editTags(s, p.TagMembers, tags, *ed.cur, ed.curP, true, changedTags); !ok {
					return prev, EndpointChange{}, false
				}
				if members, ok = editSelectors(s, p.SelectorMembers, members, sels, ed.cur.EffectiveLabels(), ed.curP, true, changedSels); !ok {
					return prev, EndpointChange{}, false
				}
			}
			continue
		}
		iface := ed.curIf
		if ed.cur == nil {
			iface = ed.oldIf
		}
		ch.Policy.Endpoints = append(ch.Policy.Endpoints, iface)
		if ed.old != nil {
			// Out with the old record: interface, routes, policy entry,
			// set memberships.
			i, found := slices.BinarySearchFunc(d.Workloads, ed.oldIf, func(w WorkloadIface, s string) int { return strings.Compare(w.Interface, s) })
			j, found2 := slices.BinarySearchFunc(p.Endpoints, ed.oldIf, func(e EndpointPolicy, s string) int { return strings.Compare(e.Interface, s) })
			if !found || !found2 {
				return prev, EndpointChange{}, false
			}
			d.Workloads = slices.Delete(d.Workloads, i, i+1)
			goneProfiles = append(goneProfiles, p.Endpoints[j].Profiles...)
			gonePolicies = append(append(gonePolicies, p.Endpoints[j].IngressPolicies...), p.Endpoints[j].EgressPolicies...)
			p.Endpoints = slices.Delete(p.Endpoints, j, j+1)
			routes = slices.DeleteFunc(routes, func(r Route) bool { return r.Kind == RouteLocal && r.Dev == ed.oldIf })
			ch.DelRoutes = append(ch.DelRoutes, localRoutes(*ed.old, ed.oldP)...)
			if tags, ok = editTags(s, p.TagMembers, tags, *ed.old, ed.oldP, false, changedTags); !ok {
				return prev, EndpointChange{}, false
			}
			if members, ok = editSelectors(s, p.SelectorMembers, members, sels, ed.old.EffectiveLabels(), ed.oldP, false, changedSels); !ok {
				return prev, EndpointChange{}, false
			}
		}
		if ed.cur == nil {
			continue
		}
		cur := *ed.cur
		addrs := prefixAddrs(ed.curP)
		v6 := slices.ContainsFunc(addrs, netip.Addr.Is6)
		w := WorkloadIface{Interface: cur.InterfaceName, Workload: cur.Workload, MTU: workloadMTU(pools, s.Encryption.Enabled, addrs), IPv6: v6,
			Group: ProfileGroup(cur.Profiles)}
		i, found := slices.BinarySearchFunc(d.Workloads, w.Interface, func(w WorkloadIface, s string) int { return strings.Compare(w.Interface, s) })
		if found {
			return prev, EndpointChange{}, false
		}
		d.Workloads = slices.Insert(d.Workloads, i, w)

		e := EndpointPolicy{Interface: cur.InterfaceName, Addrs: addrs, Group: ProfileGroup(cur.Profiles)}
		for _, name := range cur.Profiles {
			prof, exists := s.Profiles[name]
			if !exists {
				continue // a missing profile allows nothing
			}
			if have, used := p.Profiles[name]; !used || !reflect.DeepEqual(have, prof) {
				return prev, EndpointChange{}, false // its chains and tags would be new
			}
			e.Profiles = append(e.Profiles, name)
		}
		e.IngressPolicies, e.EgressPolicies = applied(cur.EffectiveLabels())
		newPolicies = append(append(newPolicies, e.IngressPolicies...), e.EgressPolicies...)
		j, found := slices.BinarySearchFunc(p.Endpoints, e.Interface, func(e EndpointPolicy, s string) int { return strings.Compare(e.Interface, s) })
		if found {
			return prev, EndpointChange{}, false
		}
		p.Endpoints = slices.Insert(p.Endpoints, j, e)

		add := localRoutes(cur, ed.curP)
		// The local routes come first, by interface.
		k := sort.Search(len(routes), func(k int) bool {
			return routes[k].Kind != RouteLocal || routes[k].Dev >= cur.InterfaceName
		})
		routes = slices.Insert(routes, k, add...)
		ch.AddRoutes = append(ch.AddRoutes, add...)

		if tags, ok = editTags(s, p.TagMembers, tags, cur, ed.curP, true, changedTags); !ok {
			return prev, EndpointChange{}, false
		}
		if members, ok = editSelectors(s, p.SelectorMembers, members, sels, cur.EffectiveLabels(), ed.curP, true, changedSels); !ok {
			return prev, EndpointChange{}, false
		}
	}

	// The profiles and policies in use must stay the same: new ones would
	// bring chains, tags and selectors of their own, gone ones take them.
	for _, name := range goneProfiles {
		if !slices.ContainsFunc(p.Endpoints, func(e EndpointPolicy) bool { return slices.Contains(e.Profiles, name) }) {
			return prev, EndpointChange{}, false
		}
	}
	// The policies in use are prev's (its Result's Policies are exactly
	// those its endpoints use): the same set is left when every policy an
	// added entry uses was in use and every one a removed entry used
	// still is. Asked of the changed entries instead of collecting every
	// endpoint's (usedPolicies: O(endpoints) per add).
	for _, name := range newPolicies {
		if _, used := p.Policies[name]; !used {
			return prev, EndpointChange{}, false
		}
	}
	for _, name := range gonePolicies {
		if slices.Contains(newPolicies, name) {
			continue
		}
		if !slices.ContainsFunc(p.Endpoints, func(e EndpointPolicy) bool {
			return slices.Contains(e.IngressPolicies, name) || slices.Contains(e.EgressPolicies, name)
		}) {
			return prev, EndpointChange{}, false
		}
	}

	// A route deleted and added again (a record changed in other ways)
	// needs nothing of the kernel.
	for _, r := range slices.Clone(ch.DelRoutes) {
		if i := slices.Index(ch.AddRoutes, r); i >= 0 {
			ch.AddRoutes = slices.Delete(ch.AddRoutes, i, i+1)
			ch.DelRoutes = slices.DeleteFunc(ch.DelRoutes, func(x Route) bool { return x == r })
		}
	}
	if len(p.Endpoints) == 0 {
		p.Endpoints = nil // as Compute leaves a host without workloads
	}
	if len(routes) == 0 {
		routes = nil
	}
	if tags != nil {
		p.TagMembers = tags
	}
	if members != nil {
		p.SelectorMembers = members
	}
	ch.Workloads = local && !slices.Equal(d.Workloads, prev.Dataplane.Workloads)
	slices.Sort(ch.Policy.Endpoints)
	ch.Policy.Endpoints = slices.Compact(ch.Policy.Endpoints)
	ch.Policy.Selectors = slices.Sorted(maps.Keys(changedSels))
	ch.Policy.Tags = slices.Sorted(maps.Keys(changedTags))
	d.Routes, d.Policy = routes, p
	prev.Dataplane = d
	if prev.Imports != nil {
		// The importer indexes which node holds each endpoint address
		// when it first needs to: that index is stale now. Every record
		// is believed (none was ignored, no edited one would be), so the
		// endpoints Compute would give it are the snapshot's.
		ri := *prev.Imports
		im := *ri.imp
		im.holders, im.overlap = nil, nil
		im.endpoints = s.Endpoints
		ri.imp = &im
		prev.Imports = &ri
	}
	return prev, ch, true
}

// allocationsOnly says whether two versions of a block differ in nothing
// but their allocations.
func allocationsOnly(a, b api.Block) bool {
	return a.CIDR == b.CIDR && a.Affinity == b.Affinity
}

// nthAddr is the address at ordinal n of block p (ordinal's inverse).
func nthAddr(p netip.Prefix, n int) (netip.Addr, bool) {
	if n < 0 || n >= 1<<min(p.Addr().BitLen()-p.Bits(), maxBlockHostBits) {
		return netip.Addr{}, false
	}
	b := p.Addr().As16()
	v := uint32(b[12])<<24 | uint32(b[13])<<16 | uint32(b[14])<<8 | uint32(b[15])
	v += uint32(n)
	b[12], b[13], b[14], b[15] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		a = a.Unmap()
	}
	return a, p.Contains(a)
}

// netAddr is the address of one of an endpoint's nets, as
// endpointPrefixes reads it.
func netAddr(n string) (netip.Addr, bool) {
	if p, err := netip.ParsePrefix(n); err == nil {
		return p.Addr(), true
	}
	a, err := netip.ParseAddr(n)
	return a, err == nil
}

// localRoutes are Compute's routes to a local endpoint.
func localRoutes(ep api.Endpoint, ps []netip.Prefix) []Route {
	out := make([]Route, 0, len(ps))
	for _, a := range ps {
		out = append(out, Route{Dst: a, Kind: RouteLocal, Dev: ep.InterfaceName})
	}
	return out
}

func prefixAddrs(ps []netip.Prefix) []netip.Addr {
	var out []netip.Addr
	for _, p := range ps {
		out = append(out, p.Addr())
	}
	return out
}

// editTags adds (or removes) an endpoint's addresses to (from) the
// members of every tag in use that its profiles carry. cur is the map
// being built (nil: still prev's, copied on the first change). Believed
// endpoints never share an address, so a removed address is nobody
// else's.
func editTags(s *Snapshot, prev, cur map[string]AddrSet, ep api.Endpoint, ps []netip.Prefix, add bool, changed map[string]bool) (map[string]AddrSet, bool) {
	for _, name := range ep.Profiles {
		for _, t := range s.Profiles[name].Tags {
			src := prev
			if cur != nil {
				src = cur
			}
			set, wanted := src[t]
			if !wanted {
				continue
			}
			for _, p := range ps {
				list := &set.V4
				if p.Addr().Is6() {
					list = &set.V6
				}
				if add {
					*list = insertAddr(*list, p.Addr())
				} else {
					*list = removeAddr(*list, p.Addr())
				}
			}
			if cur == nil {
				cur = maps.Clone(prev)
			}
			cur[t] = set
			changed[t] = true
		}
	}
	return cur, true
}

// editSelectors adds (or removes) an endpoint's addresses to (from) the
// members of every selector in use its labels match; a network set that
// holds an address keeps it.
func editSelectors(s *Snapshot, prev, cur map[string]SelectorMembers, sels map[string]*selector.Selector, labels map[string]string, ps []netip.Prefix, add bool, changed map[string]bool) (map[string]SelectorMembers, bool) {
	if len(prev) == 0 {
		return cur, true
	}
	ls := selector.Labels(labels)
	for _, key := range sortedKeys(prev) {
		sel := sels[key]
		if sel == nil {
			var err error
			if sel, err = selector.Parse(key); err != nil { // a canonical form Compute wrote
				return cur, false
			}
			sels[key] = sel
		}
		if !sel.Matches(ls) {
			continue
		}
		if cur == nil {
			cur = maps.Clone(prev)
		}
		cur[key] = cur[key].moved(s, sel, ps, add)
		changed[key] = true
	}
	return cur, true
}

// insertAddr and removeAddr keep a sorted address list as Compute leaves
// a tag's members; both copy (the list is shared with the last Result).
func insertAddr(as []netip.Addr, a netip.Addr) []netip.Addr {
	i, found := slices.BinarySearchFunc(as, a, netip.Addr.Compare)
	if found {
		return as
	}
	return slices.Insert(slices.Clip(as), i, a)
}

func removeAddr(as []netip.Addr, a netip.Addr) []netip.Addr {
	i, found := slices.BinarySearchFunc(as, a, netip.Addr.Compare)
	if !found {
		return as
	}
	if len(as) == 1 {
		return nil
	}
	return slices.Delete(slices.Clone(as), i, i+1)
}
