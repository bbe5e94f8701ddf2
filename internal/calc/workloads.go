package calc

import (
	"hash/fnv"
	"net/netip"
	"sort"

	"github.com/calico-go/calico/internal/api"
)

// WorkloadIface is the host side of one local workload's veth as the agent
// keeps it (netdev.WorkloadIfaceSyncer): the entry point that made the
// workload created it, the agent puts back its MTU and settings each pass.
type WorkloadIface struct {
	Interface string // cali + 11 hex
	Workload  string
	MTU       int
	IPv6      bool // the workload has IPv6 addresses
	// Group is the device group the host side carries: ProfileGroup of
	// the endpoint's profiles, which the policy dispatches by.
	Group uint32
}

// Device groups (IFLA_GROUP) of workload host sides lie in
// [groupBase, groupBase+groupMask]: far from 0 (every device's default)
// and from the small numbers /etc/iproute2/group and admins use.
const (
	groupBase = 0x40000000
	groupMask = 0x3fffffff
)

// ProfileGroup is the device group of a workload whose endpoint record
// lists these profiles, in this order (never 0). Workloads with one
// profile list share one pair of policy chains, found by the group of the
// packet's interface (nft's iifgroup / oifgroup) rather than an entry per
// interface: a new workload of a list already in use then adds no chain
// and no jump to the table, and the kernel's validation of the whole
// table on every commit that adds a jump, whose cost grows with the
// endpoints, is not run for it. It is a hash (FNV-1a, 30 bits): the
// dataplane finds two lists with one group and dispatches their
// endpoints by name instead.
func ProfileGroup(profiles []string) uint32 {
	h := fnv.New32a()
	for _, p := range profiles {
		h.Write([]byte(p))
		h.Write([]byte{0}) // ["ab"] and ["a", "b"] differ
	}
	return groupBase | h.Sum32()&groupMask
}

// WorkloadMTU is the MTU of a workload with these addresses: room for the
// VXLAN (VXLANMTU) or IPIP (IPIPMTU) header when the pool of one of its
// addresses tunnels, and for WireGuard's (WireGuardMTU) when encryption is
// on; the smallest that applies, else 1500. Every entry point that makes a
// veth and the agent that keeps it ask this one function.
func WorkloadMTU(pools []api.Pool, encrypted bool, addrs []netip.Addr) int {
	var pp []parsedPool
	for _, p := range pools {
		if c, err := netip.ParsePrefix(p.CIDR); err == nil {
			pp = append(pp, parsedPool{c.Masked(), p})
		}
	}
	return workloadMTU(pp, encrypted, addrs)
}

func workloadMTU(pools []parsedPool, encrypted bool, addrs []netip.Addr) int {
	mtu := 1500
	if encrypted {
		mtu = WireGuardMTU
	}
	for _, a := range addrs {
		p := poolFor(pools, netip.PrefixFrom(a, a.BitLen()))
		switch {
		case p == nil:
		case p.pool.UsesVXLAN():
			mtu = min(mtu, api.VXLANMTU)
		case p.pool.UsesIPIP():
			mtu = min(mtu, IPIPMTU)
		}
	}
	return mtu
}

// workloadIfaces is what the agent keeps of the local (believed) endpoints'
// interfaces, sorted by interface.
func workloadIfaces(local []api.Endpoint, pools []parsedPool, encrypted bool) []WorkloadIface {
	out := make([]WorkloadIface, 0, len(local))
	for _, ep := range local {
		var addrs []netip.Addr
		v6 := false
		for _, p := range endpointPrefixes(ep) {
			addrs = append(addrs, p.Addr())
			v6 = v6 || p.Addr().Is6()
		}
		out = append(out, WorkloadIface{Interface: ep.InterfaceName, Workload: ep.Workload, MTU: workloadMTU(pools, encrypted, addrs), IPv6: v6,
			Group: ProfileGroup(ep.Profiles)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Interface < out[j].Interface })
	return out
}
