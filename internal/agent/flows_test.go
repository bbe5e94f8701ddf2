package agent

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/nflog"
	"github.com/calico-go/calico/internal/dataplane/nft"
)

// ipv4 is an IPv4 header (20 bytes) and the first transport bytes.
func ipv4(src, dst string, proto byte, l4 ...byte) []byte {
	b := make([]byte, 20, 20+len(l4))
	b[0], b[9] = 0x45, proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	return append(b, l4...)
}

func TestParseHeaders(t *testing.T) {
	v6 := make([]byte, 40, 44)
	v6[0], v6[6] = 0x60, unix.IPPROTO_UDP
	s6, d6 := netip.MustParseAddr("fd00::1").As16(), netip.MustParseAddr("fd00::2").As16()
	copy(v6[8:], s6[:])
	copy(v6[24:], d6[:])
	v6 = append(v6, 0x30, 0x39, 0x00, 0x35) // 12345 -> 53
	for _, c := range []struct {
		fam  uint8
		b    []byte
		want headers
		ok   bool
	}{
		{unix.AF_INET, ipv4("10.0.0.1", "10.0.0.2", unix.IPPROTO_TCP, 0x04, 0x00, 0x1f, 0x90), headers{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), "tcp", 8080}, true},
		{unix.AF_INET, ipv4("10.0.0.1", "10.0.0.2", unix.IPPROTO_ICMP, 8, 0), headers{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), "icmp", 8}, true},
		{unix.AF_INET, ipv4("10.0.0.1", "10.0.0.2", 47), headers{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), "47", 0}, true},
		{unix.AF_INET6, v6, headers{netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2"), "udp", 53}, true},
		{unix.AF_INET, ipv4("10.0.0.1", "10.0.0.2", 6)[:19], headers{}, false},
		{unix.AF_INET6, ipv4("10.0.0.1", "10.0.0.2", 6), headers{}, false},
	} {
		got, ok := parseHeaders(c.fam, c.b)
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("parseHeaders(%d, % x) = %+v, %v; want %+v, %v", c.fam, c.b, got, ok, c.want, c.ok)
		}
	}
}

// The log attributes each packet to its workload and rule, and stays
// within its bounds however many kinds of packets are denied.
func TestFlowLog(t *testing.T) {
	icmp := api.ProtocolICMP
	p := calc.Policy{
		Endpoints: []calc.EndpointPolicy{
			{Interface: "calia", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Profiles: []string{"web"}},
		},
		Profiles: map[string]api.Profile{"web": {Name: "web", Inbound: []api.Rule{{Action: api.ActionDeny, Protocol: icmp}}}},
	}
	// This host's workloads as calc pairs them with their interfaces.
	wls := []calc.WorkloadIface{{Interface: "calia", Workload: "a"}}
	f := newFlowLog()
	f.setPolicy(p, wls)
	// The prefixes the rendered chains log with.
	prefixes := func(n nft.DropNames, want func(nft.DropSource) bool, rule int) string {
		for chain, s := range n {
			if s.Rule = rule; want(s) {
				return nft.DropPrefix(chain, rule)
			}
		}
		t.Fatal("no such chain")
		return ""
	}
	names := nft.NewDropNames(p)
	inRule1 := prefixes(names, func(s nft.DropSource) bool { return s.Profile == "web" && s.Direction == "inbound" }, 1)
	inFinal := prefixes(names, func(s nft.DropSource) bool { return s.Endpoint == "calia" && s.Direction == "inbound" && !s.EndOfTier }, 0)
	outFinal := prefixes(names, func(s nft.DropSource) bool { return s.Endpoint == "calia" && s.Direction == "outbound" && !s.EndOfTier }, 0)
	t0 := time.Unix(1700000000, 0)
	pkt := func(prefix string, b []byte, at int) nflog.Packet {
		return nflog.Packet{Prefix: prefix, Family: unix.AF_INET, Payload: b, Time: t0.Add(time.Duration(at) * time.Second)}
	}
	f.add(pkt(inRule1, ipv4("10.9.0.1", "10.0.0.1", unix.IPPROTO_ICMP, 8, 0), 1))
	f.add(pkt(inRule1, ipv4("10.9.0.1", "10.0.0.1", unix.IPPROTO_ICMP, 8, 0), 2))
	f.add(pkt(outFinal, ipv4("10.0.0.1", "10.9.0.9", unix.IPPROTO_TCP, 0, 1, 0, 22), 3))
	// Not to a workload of this host (b's address is another host's): ignored.
	f.add(pkt(inFinal, ipv4("10.9.0.1", "10.0.0.2", unix.IPPROTO_TCP, 0, 1, 0, 22), 4))
	f.add(pkt("not ours", ipv4("10.9.0.1", "10.0.0.1", unix.IPPROTO_TCP, 0, 1, 0, 22), 4))
	got := f.list()
	want := []api.DeniedFlow{
		{Workload: "a", Direction: "outbound", Source: "10.0.0.1", Destination: "10.9.0.9", Protocol: "tcp", Port: 22,
			Profile: "web", DeniedBy: "no outbound rule of profile web allows it", Packets: 1, LastSeen: "2023-11-14T22:13:23Z"},
		{Workload: "a", Direction: "inbound", Source: "10.9.0.1", Destination: "10.0.0.1", Protocol: "icmp", Port: 8,
			Profile: "web", Rule: 1, DeniedBy: "profile web inbound rule 1: deny icmp", Packets: 2, LastSeen: "2023-11-14T22:13:22Z"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("flows:\n got %+v\nwant %+v", got, want)
	}

	// Bounds: one workload's many kinds of denied packets replace its own oldest.
	for i := range 3 * flowsPerWorkload {
		f.add(pkt(inFinal, ipv4(fmt.Sprintf("10.8.0.%d", i), "10.0.0.1", unix.IPPROTO_UDP, 0, 1, 0, 53), 10+i))
	}
	got = f.list()
	if len(got) != flowsPerWorkload || got[0].Source != fmt.Sprintf("10.8.0.%d", 3*flowsPerWorkload-1) {
		t.Errorf("after %d kinds from one workload: %d flows, newest %+v; want %d, the newest kept", 3*flowsPerWorkload, len(got), got[0], flowsPerWorkload)
	}
	// Many workloads: the whole log stays at flowsMax.
	var eps []calc.EndpointPolicy
	for i := range 2 * flowsMax {
		eps = append(eps, calc.EndpointPolicy{Interface: fmt.Sprintf("cali%d", i), Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})}})
	}
	many := calc.Policy{Endpoints: eps}
	f.setPolicy(many, wls)
	n := nft.NewDropNames(many)
	for i, ep := range eps {
		cand := prefixes(n, func(s nft.DropSource) bool {
			return s.Endpoint == ep.Interface && s.Direction == "inbound" && !s.EndOfTier
		}, 0)
		f.add(pkt(cand, ipv4("10.9.9.9", ep.Addrs[0].String(), unix.IPPROTO_UDP, 0, 1, 0, 53), 100+i))
	}
	if got := len(f.list()); got != flowsMax {
		t.Errorf("after %d workloads' denied packets: %d flows, want %d", len(eps), got, flowsMax)
	}
	if k := flowKinds(f.list()); k[0].Packets != 0 || k[0].LastSeen != "" {
		t.Errorf("flowKinds keeps counts: %+v", k[0])
	}
}

// BenchmarkFlowLogSetPolicy is what each applied policy costs the flow
// log next to 10 and 1000 endpoints of this host (plus as many of other
// hosts' in the cluster): it should not grow with them.
func BenchmarkFlowLogSetPolicy(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var p calc.Policy
			var wls []calc.WorkloadIface
			for i := range n {
				iface := fmt.Sprintf("cali%011d", i)
				p.Endpoints = append(p.Endpoints, calc.EndpointPolicy{Interface: iface, Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})}})
				wls = append(wls, calc.WorkloadIface{Interface: iface, Workload: fmt.Sprintf("w%d", i)})
			}
			f := newFlowLog()
			b.ReportAllocs()
			for b.Loop() {
				f.setPolicy(p, wls)
			}
		})
	}
}
