package wireguard

import (
	"crypto/cipher"
	"fmt"
	"runtime"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/sys/unix"
)

// The ceiling of the userspace device is the cipher: every byte a workload
// sends is sealed once and opened once, by wireguard-go, in Go. These
// benchmarks give that cost per core at the sizes wireguard-go sees (one
// 1420-byte segment, as it seals; a 64 KB message, for the cipher's
// asymptote). They report CPU time of the benchmark's thread (cpu-MB/s),
// which a loaded machine does not inflate as it does wall time.
func BenchmarkChaCha20Poly1305(b *testing.B) {
	key := make([]byte, chacha20poly1305.KeySize)
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{1420, 65536} {
		nonce := make([]byte, aead.NonceSize())
		plain := make([]byte, size)
		sealed := aead.Seal(nil, nonce, plain, nil)
		buf := make([]byte, 0, size+aead.Overhead())
		b.Run(fmt.Sprintf("seal-%d", size), func(b *testing.B) {
			cpuBench(b, size, func() { aead.Seal(buf[:0], nonce, plain, nil) })
		})
		b.Run(fmt.Sprintf("open-%d", size), func(b *testing.B) {
			cpuBench(b, size, func() { mustOpen(b, aead, buf, nonce, sealed) })
		})
	}
}

func mustOpen(b *testing.B, aead cipher.AEAD, buf, nonce, sealed []byte) {
	if _, err := aead.Open(buf[:0], nonce, sealed, nil); err != nil {
		b.Fatal(err)
	}
}

// cpuBench runs f b.N times on one locked thread and reports the thread's
// CPU time per op and the throughput that CPU time gives.
func cpuBench(b *testing.B, size int, f func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.SetBytes(int64(size))
	var t0, t1 unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &t0)
	b.ResetTimer()
	for b.Loop() {
		f()
	}
	b.StopTimer()
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &t1)
	ns := float64(t1.Nano() - t0.Nano())
	b.ReportMetric(ns/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(size)*float64(b.N)/ns*1e3, "cpu-MB/s")
	b.ReportMetric(ns/(float64(size)*float64(b.N)), "cpu-s/GB")
}
