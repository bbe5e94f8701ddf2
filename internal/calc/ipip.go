package calc

import (
	"fmt"
	"net/netip"
	"slices"
)

// IPIP constants shared by every host.
const (
	// IPIPKernelDevice is the kernel's fallback IPIP device.
	IPIPKernelDevice = "tunl0"
	// IPIPBPFDevice is the TUN device (no reader) that remote IPIP blocks
	// are routed to on hosts without the ipip module; its tc egress
	// program encapsulates.
	IPIPBPFDevice = "ipip.calico"
	// IPIPMTU leaves room for the 20-byte outer IPv4 header in a 1500-byte underlay.
	IPIPMTU = 1480
)

// IPIPSupport is what the agent found this host can do for IPIP pools,
// beside Input.HaveIPIP (the kernel's ipip module, which wins when present).
type IPIPSupport struct {
	// BPF says the eBPF programs load and attach here.
	BPF bool
	// Problem says in one line why they do not, for `calicoctl status`.
	Problem string
}

// ipipMode is how this host carries IPIP, or "" when it cannot.
func ipipMode(in Input) IPIPMode {
	switch {
	case in.HaveIPIP:
		return IPIPKernel
	case in.IPIP.BPF:
		return IPIPBPF
	}
	return ""
}

func ipipDevice(m IPIPMode) string {
	if m == IPIPKernel {
		return IPIPKernelDevice
	}
	return IPIPBPFDevice
}

func ipipPool(p *parsedPool) bool {
	return p.cidr.Addr().Is4() && p.pool.UsesIPIP()
}

// ipipRoute is the route to a remote block of an IPIP pool that must be
// encapsulated: through the tunnel device, or unreachable when this host
// has no working IPIP (never out of the uplink unencapsulated).
func ipipRoute(in Input, dst netip.Prefix, nh netip.Addr) Route {
	m := ipipMode(in)
	if m == "" {
		return Route{Dst: dst, Kind: RouteUnreachable}
	}
	return Route{Dst: dst, Kind: RouteVia, Gateway: nh, Dev: ipipDevice(m), OnLink: true}
}

// ipipProblems reports IPIP pools this host cannot carry.
func ipipProblems(in Input, pools []parsedPool) []string {
	if ipipMode(in) != "" {
		return nil
	}
	why := in.IPIP.Problem
	if why == "" {
		why = "the eBPF programs are not available"
	}
	var out []string
	for i := range pools {
		if ipipPool(&pools[i]) {
			out = append(out, fmt.Sprintf("pool %s asks for IPIP, but this kernel has no ipip module and %s: cross-host traffic for it is refused (routes unreachable); fix that, or re-add the pool with --vxlan", pools[i].pool.CIDR, why))
		}
	}
	return out
}

// ipipState is the tunnel's desired state. learned are the learned routes
// inside IPIP pools, in order, as Compute met them.
func ipipState(in Input, mine netip.Prefix, pools []parsedPool, learned []IPIPRoute) IPIP {
	st := IPIP{LocalIP: mine.Addr()}
	m := ipipMode(in)
	if m == "" || !mine.IsValid() || !slices.ContainsFunc(pools, func(p parsedPool) bool { return ipipPool(&p) }) {
		return st
	}
	st.Enabled, st.Mode, st.Device, st.MTU = true, m, ipipDevice(m), IPIPMTU
	st.Routes = learned
	for name, n := range in.Snap.Nodes {
		if name == in.Node {
			continue
		}
		if p, err := netip.ParsePrefix(n.IPv4); err == nil && p.Addr().Is4() && p.Addr() != mine.Addr() {
			st.Nodes = append(st.Nodes, p.Addr())
		}
	}
	slices.SortFunc(st.Nodes, func(a, b netip.Addr) int { return a.Compare(b) })
	st.Nodes = slices.Compact(st.Nodes)
	return st
}
