package netdev

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkRememberOneNew is the record an incremental Apply keeps after
// one new host side next to n checked ones (one new container): it should
// not grow with n.
func BenchmarkRememberOneNew(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			want := make([]HostSide, n+1)
			for i := range want {
				want[i] = HostSide{Name: fmt.Sprintf("cali%011d", i), MTU: 1500}
			}
			s := &WorkloadIfaceSyncer{RecheckEvery: time.Minute}
			s.remember(want[:n], hostSideMap(want[:n]), true, false, true)
			one := hostSideMap(want[n:])
			b.ReportAllocs()
			for b.Loop() {
				s.remember(want, one, false, false, true)
			}
			if len(s.checked) != n+1 {
				b.Fatalf("checked %d host sides, want %d", len(s.checked), n+1)
			}
		})
	}
}

func hostSideMap(hs []HostSide) map[string]HostSide {
	m := make(map[string]HostSide, len(hs))
	for _, h := range hs {
		m[h.Name] = h
	}
	return m
}
