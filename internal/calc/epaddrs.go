package calc

import (
	"maps"
	"net/netip"
	"reflect"
	"slices"

	"github.com/calico-go/calico/internal/api"
)

// EndpointAddrs indexes one snapshot's endpoint records by the addresses
// they name and by their interface, for Reendpoint's clash check: without
// it that check reads every record of the cluster on each container start
// (0.3-0.7 ms of the endpoint pass next to 1000 endpoints, parsing every
// address). An index that fell behind its snapshot could let a clash
// through (two records claiming one address, which Compute believes
// neither of), so it is owned where the snapshot's records are written:
// the agent updates it beside every record decode writes and builds it
// again for every new snapshot. Reendpoint uses it only while it is for
// that snapshot's very Endpoints map and holds as many records (a record
// added or removed behind its back, or a new snapshot, sends it back to
// the scan), and a key it names is checked against the record itself.
// The randomized tests hold its answer to the scan's.
type EndpointAddrs struct {
	of     uintptr // the Endpoints map it was built from (identity only)
	n      int     // records indexed
	byAddr map[netip.Addr][]string
	byIf   map[string][]string
}

// NewEndpointAddrs indexes every record of s.
func NewEndpointAddrs(s *Snapshot) *EndpointAddrs {
	x := &EndpointAddrs{of: mapID(s.Endpoints), byAddr: make(map[netip.Addr][]string, len(s.Endpoints)), byIf: make(map[string][]string, len(s.Endpoints))}
	for key, ep := range s.Endpoints {
		x.add(key, ep)
	}
	return x
}

// Update follows one record's write to s (old: the record before, had:
// there was one; cur and has: after). s is the snapshot written: a
// different one rebuilds the index.
func (x *EndpointAddrs) Update(s *Snapshot, key string, old api.Endpoint, had bool, cur api.Endpoint, has bool) {
	if x == nil {
		return // none kept: Reendpoint scans
	}
	if x.of != mapID(s.Endpoints) {
		*x = *NewEndpointAddrs(s)
		return
	}
	if had {
		x.remove(key, old)
	}
	if has {
		x.add(key, cur)
	}
}

// For says whether x is in step with s as far as can be told without
// reading every record.
func (x *EndpointAddrs) For(s *Snapshot) bool {
	return x != nil && x.of == mapID(s.Endpoints) && x.n == len(s.Endpoints)
}

// Matches says whether x holds exactly what an index built from s now
// would: a read of every record, for tests of its owner.
func (x *EndpointAddrs) Matches(s *Snapshot) bool {
	y := NewEndpointAddrs(s)
	same := func(p, q []string) bool {
		return slices.Equal(slices.Sorted(slices.Values(p)), slices.Sorted(slices.Values(q)))
	}
	return x.For(s) && maps.EqualFunc(x.byAddr, y.byAddr, same) && maps.EqualFunc(x.byIf, y.byIf, same)
}

func mapID(m map[string]api.Endpoint) uintptr {
	return reflect.ValueOf(m).Pointer()
}

func (x *EndpointAddrs) add(key string, ep api.Endpoint) {
	x.n++
	eachNetAddr(ep, func(a netip.Addr) {
		if !slices.Contains(x.byAddr[a], key) {
			x.byAddr[a] = append(x.byAddr[a], key)
		}
	})
	x.byIf[ep.InterfaceName] = append(x.byIf[ep.InterfaceName], key)
}

func (x *EndpointAddrs) remove(key string, ep api.Endpoint) {
	x.n--
	eachNetAddr(ep, func(a netip.Addr) {
		x.byAddr[a] = dropKey(x.byAddr[a], key)
		if len(x.byAddr[a]) == 0 {
			delete(x.byAddr, a)
		}
	})
	x.byIf[ep.InterfaceName] = dropKey(x.byIf[ep.InterfaceName], key)
	if len(x.byIf[ep.InterfaceName]) == 0 {
		delete(x.byIf, ep.InterfaceName)
	}
}

// dropKey removes key from keys without writing to the array keys shares
// with nobody else (the index's own).
func dropKey(keys []string, key string) []string {
	return slices.DeleteFunc(keys, func(k string) bool { return k == key })
}

// eachNetAddr calls f with the address of each of ep's nets as
// endpointPrefixes reads them.
func eachNetAddr(ep api.Endpoint, f func(netip.Addr)) {
	for _, nets := range [2][]string{ep.IPv4Nets, ep.IPv6Nets} {
		for _, n := range nets {
			if a, ok := netAddr(n); ok {
				f(a)
			}
		}
	}
}

// clashes says whether a record other than the edited ones claims one of
// addrs or has one of ifaces, by the index.
func (x *EndpointAddrs) clashes(s *Snapshot, editing map[string]bool, addrs []netip.Addr, ifaces []string) bool {
	other := func(key string) bool {
		// A key the index names: its record, read now, decides.
		_, exists := s.Endpoints[key]
		return exists && !editing[key]
	}
	for _, a := range addrs {
		for _, key := range x.byAddr[a] {
			if other(key) && claims(s.Endpoints[key], a) {
				return true
			}
		}
	}
	for _, name := range ifaces {
		for _, key := range x.byIf[name] {
			if other(key) && s.Endpoints[key].InterfaceName == name {
				return true
			}
		}
	}
	return false
}

func claims(ep api.Endpoint, a netip.Addr) bool {
	found := false
	eachNetAddr(ep, func(b netip.Addr) { found = found || b == a })
	return found
}
