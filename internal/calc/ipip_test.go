package calc

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
)

func TestIPIPRoutesAndTunnelState(t *testing.T) {
	same, other := "192.168.100.64/26", "192.168.100.192/26"
	bpf := IPIPSupport{BPF: true}
	cases := []struct {
		name              string
		mode              api.EncapMode
		haveIPIP          bool
		support           IPIPSupport
		sameRoute, otherR Route
		enabled           bool
		problem           string
	}{
		{"ebpf always", api.EncapAlways, false, bpf,
			Route{Kind: RouteVia, Gateway: netip.MustParseAddr("10.0.1.2"), Dev: IPIPBPFDevice, OnLink: true},
			Route{Kind: RouteVia, Gateway: netip.MustParseAddr("10.0.2.3"), Dev: IPIPBPFDevice, OnLink: true}, true, ""},
		{"ebpf cross-subnet", api.EncapCrossSubnet, false, bpf,
			Route{Kind: RouteVia, Gateway: netip.MustParseAddr("10.0.1.2")},
			Route{Kind: RouteVia, Gateway: netip.MustParseAddr("10.0.2.3"), Dev: IPIPBPFDevice, OnLink: true}, true, ""},
		{"kernel wins when present", api.EncapAlways, true, bpf,
			Route{Kind: RouteVia, Gateway: netip.MustParseAddr("10.0.1.2"), Dev: IPIPKernelDevice, OnLink: true},
			Route{Kind: RouteVia, Gateway: netip.MustParseAddr("10.0.2.3"), Dev: IPIPKernelDevice, OnLink: true}, true, ""},
		{"neither: unreachable, one problem", api.EncapCrossSubnet, false, IPIPSupport{Problem: "the eBPF IPIP programs cannot be used: no BTF"},
			Route{Kind: RouteVia, Gateway: netip.MustParseAddr("10.0.1.2")},
			Route{Kind: RouteUnreachable}, false, "no BTF"},
		{"no ipip pool", api.EncapNever, false, bpf,
			Route{Kind: RouteVia, Gateway: netip.MustParseAddr("10.0.1.2")},
			Route{Kind: RouteVia, Gateway: netip.MustParseAddr("10.0.2.3")}, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := Input{Node: "h1", Snap: snapshot(api.Pool{CIDR: "192.168.100.0/24", IPIPMode: c.mode}), Learned: learned, HaveIPIP: c.haveIPIP, IPIP: c.support}
			r := Compute(in)
			for dst, want := range map[string]Route{same: c.sameRoute, other: c.otherR} {
				want.Dst = netip.MustParsePrefix(dst)
				if got := routeFor(t, r, dst); got != want {
					t.Errorf("route %s = %+v, want %+v", dst, got, want)
				}
			}
			st := r.Dataplane.IPIP
			if st.Enabled != c.enabled || st.LocalIP != netip.MustParseAddr("10.0.1.1") {
				t.Fatalf("ipip state = %+v, want enabled=%v with the host's address", st, c.enabled)
			}
			if c.problem == "" && len(r.Problems) > 0 || c.problem != "" && (len(r.Problems) != 1 || !strings.Contains(r.Problems[0], c.problem)) {
				t.Errorf("problems = %q, want one mentioning %q", r.Problems, c.problem)
			}
			if !c.enabled {
				return
			}
			wantMode, wantDev := IPIPBPF, IPIPBPFDevice
			if c.haveIPIP {
				wantMode, wantDev = IPIPKernel, IPIPKernelDevice
			}
			if st.Mode != wantMode || st.Device != wantDev || st.MTU != IPIPMTU {
				t.Errorf("ipip state = %+v", st)
			}
			// Every learned block of the pool, encapsulated or not (decap
			// accepts what each node owns), and never our own block.
			wantRoutes := []IPIPRoute{
				{netip.MustParsePrefix(same), netip.MustParseAddr("10.0.1.2")},
				{netip.MustParsePrefix(other), netip.MustParseAddr("10.0.2.3")},
			}
			if !slices.Equal(st.Routes, wantRoutes) {
				t.Errorf("ipip routes = %v, want %v", st.Routes, wantRoutes)
			}
			if want := []netip.Addr{netip.MustParseAddr("10.0.1.2"), netip.MustParseAddr("10.0.2.3")}; !slices.Equal(st.Nodes, want) {
				t.Errorf("ipip nodes = %v, want %v", st.Nodes, want)
			}
		})
	}
}
