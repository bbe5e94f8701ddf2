package calc

import (
	"maps"
	"net/netip"
	"slices"
	"testing"

	"github.com/calico-go/calico/internal/api"
)

// patched applies a delta to a route list, as the kernel would take it.
func patched(routes []Route, d RouteDelta) []Route {
	out := slices.DeleteFunc(slices.Clone(routes), func(r Route) bool { return slices.Contains(d.Del, r) })
	return append(out, d.Add...)
}

func sortedRoutes(rs []Route) []Route {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b Route) int { return a.Dst.Addr().Compare(b.Dst.Addr())*64 + a.Dst.Bits() - b.Dst.Bits() })
	return rs
}

// TestRouteImportDelta: when BGP alone changed, the routes Delta adds and
// deletes turn the last Compute's routes into exactly the next Compute's;
// and whatever reaches beyond routes (a refused path, a changed next hop,
// IPIP, WireGuard) is refused, so the agent computes everything again.
func TestRouteImportDelta(t *testing.T) {
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	h2Block, h3Range, h1Block := p("192.168.100.64/26"), p("192.168.100.192/26"), p("192.168.100.0/26")
	rr := a("10.0.1.9")
	base := map[netip.Prefix][]LearnedPath{h2Block: path("10.0.1.2")}
	with := func(m map[netip.Prefix][]LearnedPath, dst netip.Prefix, paths []LearnedPath) map[netip.Prefix][]LearnedPath {
		m = maps.Clone(m)
		if paths == nil {
			delete(m, dst)
		} else {
			m[dst] = paths
		}
		return m
	}
	vxlan := snapshot(api.Pool{CIDR: "192.168.100.0/24", VXLANMode: api.EncapCrossSubnet})
	vxlan.Nodes["rr"] = api.Node{Name: "rr", IPv4: rr.String() + "/24", RouteReflector: true}
	for _, c := range []struct {
		name     string
		snap     *Snapshot
		old, new map[netip.Prefix][]LearnedPath
		ok       bool
		add, del int
	}{
		{"a new range, through VXLAN to a node", vxlan, base, with(base, h3Range, path("10.0.2.3")), true, 1, 0},
		{"a withdrawn block", vxlan, base, map[netip.Prefix][]LearnedPath{}, true, 0, 1},
		{"a reflector's copy of the same route", vxlan, base,
			with(base, h2Block, []LearnedPath{{Neighbor: rr, NextHop: a("10.0.1.2")}, {Neighbor: a("10.0.1.2"), NextHop: a("10.0.1.2")}}), true, 0, 0},
		{"our own block reflected back", vxlan, base, with(base, h1Block, path("10.0.1.1")), true, 0, 0},
		{"a refused path: another node's block", vxlan, base, with(base, p("192.168.100.0/27"), path("10.0.2.3")), false, 0, 0},
		{"a refused path withdrawn", vxlan, with(base, p("192.168.100.0/27"), path("10.0.2.3")), base, false, 0, 0},
		{"a next hop that changes", vxlan, with(base, h3Range, path("10.0.2.3")), with(base, h3Range, path("10.0.1.2")), false, 0, 0},
		{"a route in an IPIP pool", snapshot(api.Pool{CIDR: "192.168.100.0/24", IPIPMode: api.EncapAlways}), base, with(base, h3Range, path("10.0.2.3")), false, 0, 0},
		{"WireGuard on", func() *Snapshot {
			s := snapshot(api.Pool{CIDR: "192.168.100.0/24"})
			s.Encryption.Enabled = true
			return s
		}(), base, with(base, h3Range, path("10.0.2.3")), false, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := Input{Node: "h1", Snap: c.snap, Learned: c.old, HaveIPIP: true}
			before := Compute(in)
			d, ok := before.Imports.Delta(c.old, c.new)
			if ok != c.ok || len(d.Add) != c.add || len(d.Del) != c.del {
				t.Fatalf("Delta: ok %v, %d added, %d deleted (%+v); want ok %v, %d, %d", ok, len(d.Add), len(d.Del), d, c.ok, c.add, c.del)
			}
			if !ok {
				return
			}
			in.Learned = c.new
			after := Compute(in)
			if got, want := sortedRoutes(patched(before.Dataplane.Routes, d)), sortedRoutes(after.Dataplane.Routes); !slices.Equal(got, want) {
				t.Fatalf("routes patched by the delta\n%+v\ndiffer from a new Compute's\n%+v", got, want)
			}
		})
	}
	var nilImports *RouteImport
	if _, ok := nilImports.Delta(nil, base); ok {
		t.Error("a nil RouteImport gave a delta")
	}
}
