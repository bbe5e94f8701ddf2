package netdev

import (
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/api"
)

// BenchmarkAddWorkload wires workloads into one host namespace, one at a
// time and in bursts of 20 at once (what the setup bench's "bursts of 20"
// does through the client): ns/op is per workload, and the CPU the kernel
// spends spinning on a contended lock shows in the burst case.
func BenchmarkAddWorkload(b *testing.B) {
	for _, burst := range []int{1, 20} {
		b.Run(fmt.Sprintf("burst=%d", burst), func(b *testing.B) {
			_, hostPath := newNetns(b, "h")
			in := InNetns(hostPath)
			if err := EnableForwarding(in); err != nil { // as calico-node does first
				b.Fatal(err)
			}
			wls := make([]string, burst)
			for i := range wls {
				_, wls[i] = newNetns(b, fmt.Sprintf("w%d", i))
			}
			b.ReportAllocs()
			n := 0
			var cpu time.Duration
			for b.Loop() {
				b.StopTimer()
				specs := make([]WorkloadSpec, burst)
				for i := range specs {
					n++
					specs[i] = WorkloadSpec{NetnsPath: wls[i], HostIface: api.IfaceNameForID(fmt.Sprintf("%s-%d", b.Name(), n)),
						Addrs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 77, byte(n >> 8), byte(n)}), 32)}}
				}
				b.StartTimer()
				cpu0 := cpuNow(b)
				var wg sync.WaitGroup
				errs := make([]error, burst)
				for i := range specs {
					wg.Add(1)
					go func() {
						defer wg.Done()
						_, errs[i] = AddWorkload(specs[i], in)
					}()
				}
				wg.Wait()
				cpu += cpuNow(b) - cpu0
				b.StopTimer()
				for i, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
					if err := RemoveWorkload(specs[i].HostIface, in); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*burst), "ns/workload")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*burst), "cpu-ns/workload")
		})
	}
}

// cpuNow is the CPU time of this process so far, user and system: the
// kernel's share shows what spinning on a lock costs.
func cpuNow(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSyncerReadBack is the workload interface syncer's read-back
// (every RecheckEvery) of 100 host sides whose workloads each have their
// own namespace, as on a host with 100 workloads: ns/op is one due pass,
// reading every host side (700 settings, none written).
func BenchmarkSyncerReadBack(b *testing.B) {
	const sides = 100
	_, hostPath := newNetns(b, "h")
	in := InNetns(hostPath)
	if err := EnableForwarding(in); err != nil {
		b.Fatal(err)
	}
	var want []HostSide
	for i := range sides {
		_, wl := newNetns(b, fmt.Sprintf("w%d", i))
		spec := WorkloadSpec{NetnsPath: wl, HostIface: api.IfaceNameForID(fmt.Sprintf("readback-%d", i)),
			Addrs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 78, 0, byte(i)}), 32)}}
		if _, err := AddWorkload(spec, in); err != nil {
			b.Fatal(err)
		}
		want = append(want, HostSide{Name: spec.HostIface})
	}
	s := NewWorkloadIfaceSyncer(in)
	s.RecheckEvery = time.Hour
	if _, err := s.Apply(want); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		s.due = time.Now() // every Apply is due
		rep, err := s.Apply(want)
		if err != nil || len(rep.Fixed) != 0 {
			b.Fatalf("Apply: %v, fixed %q", err, rep.Fixed)
		}
	}
}
