package calc

import (
	"net/netip"
	"slices"

	"github.com/calico-go/calico/internal/api"
)

// RouteImport turns paths learned over BGP into kernel routes: the import
// policy (imports.go) chooses a path, and the pool it lies in shapes the
// route (IPIP, VXLAN, WireGuard). It depends on the input without its
// learned paths, so an agent keeps the one of its last Compute and, when
// BGP alone changed some prefixes, asks Delta for the few routes that
// change instead of computing everything again (a new block anywhere in
// the cluster reaches every agent, and at 100 hosts a full pass on each of
// them was most of the time a route took to arrive).
//
// It is used by one goroutine at a time (the importer memoizes indexes).
type RouteImport struct {
	in    Input // Learned unused
	imp   *importer
	pools []parsedPool
	mine  netip.Prefix
	wg    *wgPlan
	// vxlanPeers are the VTEPs the last Compute configured: a next hop
	// among them needs no change to the tunnel.
	vxlanPeers map[netip.Addr]bool
}

// learnedRoute is what one prefix's paths come to.
type learnedRoute struct {
	route    Route
	ok       bool       // a path was accepted
	nextHop  netip.Addr // the accepted path's
	rejected []RejectedPath
	ipip     bool       // in an IPIP pool: the IPIP state lists it
	vxlanNH  netip.Addr // the next hop, when the route goes through VXLAN
}

// route applies the import policy to one prefix's paths (best first) and
// shapes the route of the path it accepts. With WireGuard on, the chosen
// next hop's peer gets dst as an allowed IP.
func (ri *RouteImport) route(dst netip.Prefix, paths []LearnedPath) learnedRoute {
	var lr learnedRoute
	path, ok := ri.imp.choose(dst, paths, &lr.rejected)
	if !ok {
		return lr
	}
	nh := path.NextHop
	lr.ok, lr.nextHop = true, nh
	lr.route = Route{Dst: dst, Kind: RouteVia, Gateway: nh}
	if p := poolFor(ri.pools, dst); p != nil && dst.Addr().Is4() {
		lr.ipip = ipipPool(p)
		switch {
		case encapNeeded(p.pool.IPIPMode, ri.mine, nh):
			lr.route = ipipRoute(ri.in, dst, nh)
		case encapNeeded(p.pool.VXLANMode, ri.mine, nh):
			lr.route = Route{Dst: dst, Kind: RouteVia, Gateway: nh, Dev: api.VXLANDevice, OnLink: true}
			lr.vxlanNH = nh
		}
		lr.route = ri.wg.route(dst, nh, lr.route) // encryption wins over every encapsulation
	}
	return lr
}

// RouteDelta is the kernel's side of a change in learned paths: routes to
// add, and routes (as they were) to delete.
type RouteDelta struct {
	Add, Del []Route
}

// Delta returns the route changes that take the learned paths from old (as
// the Compute that made ri saw them, or as a previous Delta left them) to
// new, and ok=false when the change reaches beyond adding and deleting
// routes, so the caller must Compute again: a path refused before or now
// (it is reported in the status), a route in an IPIP pool (the IPIP
// state lists them), a VXLAN next hop the tunnel does not know, a prefix
// whose route changes (replacing a route needs the kernel's view of who
// owns it), or WireGuard on (peers' allowed IPs follow the routes). Both
// lists are sorted by destination.
func (ri *RouteImport) Delta(old, new map[netip.Prefix][]LearnedPath) (RouteDelta, bool) {
	var d RouteDelta
	if ri == nil || ri.wg.on {
		return d, false
	}
	check := func(dst netip.Prefix, paths []LearnedPath) (learnedRoute, bool) {
		if len(paths) == 0 {
			return learnedRoute{}, true
		}
		lr := ri.route(dst, paths)
		return lr, len(lr.rejected) == 0 && !lr.ipip && (!lr.vxlanNH.IsValid() || ri.vxlanPeers[lr.vxlanNH])
	}
	var changed []netip.Prefix
	for dst, o := range old {
		if !slices.Equal(o, new[dst]) {
			changed = append(changed, dst)
		}
	}
	for dst := range new {
		if _, ok := old[dst]; !ok {
			changed = append(changed, dst)
		}
	}
	sortPrefixes(changed)
	for _, dst := range changed {
		o, n := old[dst], new[dst]
		before, ok1 := check(dst, o)
		after, ok2 := check(dst, n)
		switch {
		case !ok1 || !ok2:
			return RouteDelta{}, false
		case before.ok && after.ok && before.route != after.route:
			return RouteDelta{}, false
		case before.ok && !after.ok:
			d.Del = append(d.Del, before.route)
		case !before.ok && after.ok:
			d.Add = append(d.Add, after.route)
		}
	}
	return d, true
}
