package fastpath

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkApplyOneMore: a steady Apply as the endpoint pass makes it on a
// container start, one workload more or less next to n, on a host (its
// own namespace) with n workload interfaces.
func BenchmarkApplyOneMore(b *testing.B) { benchmarkOneMore(b, false) }

// BenchmarkApplyChangeOneMore: the same through ApplyChange, as the
// endpoint pass makes it now: the one workload's entries and program.
func BenchmarkApplyChangeOneMore(b *testing.B) { benchmarkOneMore(b, true) }

func benchmarkOneMore(b *testing.B, change bool) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			ns, ip := sysHost(b)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			var batch strings.Builder
			var wls []Workload
			for i := range n + 1 {
				name := fmt.Sprintf("calib%05d", i)
				fmt.Fprintf(&batch, "link add %s type veth peer name wlb%05d\nlink set %s up\n", name, i, name)
				wls = append(wls, Workload{Iface: name, Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 88, byte(i >> 8), byte(i)})}})
			}
			f := filepath.Join(b.TempDir(), "batch")
			if err := os.WriteFile(f, []byte(batch.String()), 0o644); err != nil {
				b.Fatal(err)
			}
			if out, err := ns.Run(ctx, "ip", "-batch", f); err != nil {
				b.Fatalf("ip -batch: %v: %s", err, out)
			}
			m := New()
			defer func() {
				b.StopTimer() // detaching from every interface is not the op
				_ = ns.Do(func() error { return m.Apply(Desired{}) })
				m.Close()
			}()
			few, more := Desired{Enabled: true, LocalIP: ip, Workloads: wls[:n]}, Desired{Enabled: true, LocalIP: ip, Workloads: wls}
			if err := ns.Do(func() error { return m.Apply(more) }); err != nil {
				b.Fatal(err)
			}
			// Wall time is mostly tcx waiting for RCU grace periods on the
			// one attach or detach; CPU time is what the agent pays.
			cpu0 := cpuTime()
			b.ResetTimer()
			err := ns.Do(func() error {
				for i := range b.N {
					d := few
					if i%2 == 1 {
						d = more
					}
					if change {
						var now []Workload
						if i%2 == 1 {
							now = wls[n:]
						}
						done, err := m.ApplyChange(ip, []string{wls[n].Iface}, now)
						if err != nil {
							return err
						}
						if !done {
							return fmt.Errorf("ApplyChange declined")
						}
						continue
					}
					if err := m.Apply(d); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is this process's user and system time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
