package calc

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/calico-go/calico/internal/api"
)

func TestWorkloadMTU(t *testing.T) {
	pools := []api.Pool{
		{CIDR: "192.168.100.0/24", VXLANMode: api.EncapAlways},
		{CIDR: "192.168.200.0/24", IPIPMode: api.EncapCrossSubnet},
		{CIDR: "10.50.0.0/16", IPIPMode: api.EncapNever, VXLANMode: api.EncapNever},
		{CIDR: "fd00::/64"},
	}
	for _, c := range []struct {
		addrs []string
		want  int
	}{
		{[]string{"192.168.100.1"}, api.VXLANMTU},
		{[]string{"192.168.200.1"}, IPIPMTU},
		{[]string{"10.50.0.1", "fd00::1"}, 1500},
		{[]string{"172.16.0.1"}, 1500}, // in no pool
		{[]string{"192.168.200.1", "192.168.100.1"}, api.VXLANMTU},
	} {
		var addrs []netip.Addr
		for _, s := range c.addrs {
			addrs = append(addrs, netip.MustParseAddr(s))
		}
		if got := WorkloadMTU(pools, false, addrs); got != c.want {
			t.Errorf("WorkloadMTU(%v) = %d, want %d", c.addrs, got, c.want)
		}
	}
}

// The agent keeps the interfaces of its own believed endpoints, with the
// MTU of their pool; another host's and a lying record's are not its.
func TestWorkloadIfacesAreTheLocalBelievedEndpoints(t *testing.T) {
	s := snapshot(api.Pool{CIDR: "192.168.100.0/24", VXLANMode: api.EncapAlways})
	liar := api.Endpoint{Node: "h1", Workload: "liar", InterfaceName: api.WorkloadIfaceName("h1", "w1"), IPv4Nets: []string{"192.168.100.9/32"}}
	s.Endpoints["h1/liar"] = liar
	got := Compute(Input{Node: "h1", Snap: s}).Dataplane.Workloads
	want := []WorkloadIface{
		{Interface: api.WorkloadIfaceName("h1", "w1"), Workload: "w1", MTU: api.VXLANMTU, Group: ProfileGroup(s.Endpoints["h1/w1"].Profiles)},
		{Interface: api.WorkloadIfaceName("h1", "w2"), Workload: "w2", MTU: api.VXLANMTU, Group: ProfileGroup(s.Endpoints["h1/w2"].Profiles)},
	}
	slices.SortFunc(want, func(a, b WorkloadIface) int {
		if a.Interface < b.Interface {
			return -1
		}
		return 1
	})
	if !slices.Equal(got, want) {
		t.Fatalf("workload interfaces = %+v, want %+v", got, want)
	}
}

// A profile list's device group is in our range, never the default 0,
// and tells apart lists that concatenate alike or differ in order.
func TestProfileGroup(t *testing.T) {
	lists := [][]string{nil, {""}, {"ab"}, {"a", "b"}, {"b", "a"}, {"WEB"}, {"WEB", "DB"}}
	seen := map[uint32][]string{}
	for _, l := range lists {
		g := ProfileGroup(l)
		if g&^groupMask != groupBase {
			t.Errorf("ProfileGroup(%q) = %#x, outside [%#x, %#x]", l, g, groupBase, groupBase|groupMask)
		}
		if o, dup := seen[g]; dup {
			t.Errorf("ProfileGroup(%q) = ProfileGroup(%q) = %#x", l, o, g)
		}
		seen[g] = l
		if ProfileGroup(slices.Clone(l)) != g {
			t.Errorf("ProfileGroup(%q) is not a function of the list", l)
		}
	}
}
