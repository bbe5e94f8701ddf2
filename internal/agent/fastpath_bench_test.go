package agent

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/calico-go/calico/internal/calc"
)

// BenchmarkFastpathDesired: what the endpoint pass builds for the fast
// path on each container start, next to 10 and 1000 endpoints.
func BenchmarkFastpathDesired(b *testing.B) {
	for _, n := range []int{10, 1000} {
		p := calc.Policy{}
		for i := range n {
			p.Endpoints = append(p.Endpoints, calc.EndpointPolicy{Interface: fmt.Sprintf("cali%011d", i),
				Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 64, byte(i >> 8), byte(i)})}})
		}
		local := netip.MustParseAddr("10.0.0.1")
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				fastpathDesired(true, local, p)
			}
		})
	}
}
