package bench

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/sys/unix"

	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/walkthrough"
)

// WireGuard paths: a world of their own on one L2 fabric, so the ratio is
// against the host-to-host run of the same round in the same world.
const (
	pathHostWG = "host-to-host (WireGuard world)"
	pathWG     = "workload, WireGuard encrypted"
)

// runWireGuard measures, with `calicoctl encryption on`: host to host in
// the clear (the baseline) and workload to workload across hosts through
// the WireGuard device (wireguard-go on this kernel).
func runWireGuard(ctx context.Context, r *runner) error {
	w, err := r.buildWorld(ctx, walkthrough.Options{})
	if err != nil {
		return err
	}
	defer w.close()
	h1, h2 := w.Hosts[0], w.Hosts[1]
	wls, err := w.profiledWorkloads(ctx, []wlSpec{{h1, "wg-a1", "192.168.100.1"}, {h2, "wg-b1", "192.168.100.65"}})
	if err != nil {
		return err
	}
	if _, err := w.Ctl(ctx, h1, "encryption", "on"); err != nil {
		return err
	}
	for _, h := range w.Hosts {
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, _ := h.Run(ctx, "ip", "-4", "route", "show", "proto", "80")
			if strings.Contains(out, "dev "+calc.WireGuardDevice) && !strings.Contains(out, "via ") {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s does not route through %s 30 s after `encryption on`:\n%s", h.Label, calc.WireGuardDevice, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if ok, detail := walkthrough.Probe(ctx, wls[1].Netns, wls[0].IP, true); !ok {
		return fmt.Errorf("%s cannot reach %s through WireGuard: %s", wls[1].Name, wls[0].Name, detail)
	}
	agents, err := w.agentPIDs()
	if err != nil {
		return err
	}
	paths := []tpath{
		{name: pathHostWG, server: h1.Netns, client: h2.Netns, ip: h1.Addr()},
		{name: pathWG, baseline: pathHostWG, server: wls[0].Netns, client: wls[1].Netns, ip: wls[0].IP, op: ">=", target: 0.30, charge: agents},
	}
	res, err := r.iperfPaths(ctx, paths)
	if err != nil {
		return err
	}
	r.addThroughput(SecWireGuard, paths, res)
	r.wireGuardBound(res)
	if st, err := w.Ctl(ctx, h1, "status"); err == nil {
		for _, line := range strings.Split(st, "\n") {
			if how, ok := strings.CutPrefix(line, "WireGuard: "); ok {
				r.res.finding("WireGuard world: host1 encrypts with %s.", how)
			}
		}
	}
	r.datapathFindings(ctx, w, "WireGuard world", wls[0])
	r.packetSizeFinding(ctx, "WireGuard world", wls[1], wls[0])
	return nil
}

// wireGuardBound reports what the throughput ratio can reach on this
// machine. Both paths run on the same CPUs, so when both are CPU-bound the
// ratio tends to host-to-host CPU per GB over encrypted CPU per GB (the
// CPU efficiency), whatever the load; a loaded machine moves it only by
// how its scheduler shares CPU between the paths' threads. The encrypted
// path costs at least the host path plus one seal and one open of every
// byte, which bounds the ratio even for a device with no other overhead.
func (r *runner) wireGuardBound(res []ThroughputResult) {
	cipher, err := cipherSecPerGB()
	if err != nil {
		r.res.finding("WireGuard world: cannot time ChaCha20-Poly1305: %v.", err)
	}
	for _, t := range res {
		b := find(res, t.Baseline, t.Streams)
		if t.Path != pathWG || b == nil || len(t.CPUPerGB) == 0 || len(b.CPUPerGB) == 0 {
			continue
		}
		host, wg := medianPositive(b.CPUPerGB), medianPositive(t.CPUPerGB)
		r.res.metric(SecWireGuard, fmt.Sprintf("CPU efficiency, host-to-host CPU per GB / encrypted CPU per GB, %s", streamsName(t.Streams)), round(host/wg, 3), "ratio", "", 0,
			fmt.Sprintf("informational: the throughput ratio with equal CPU; host %.2f s/GB, encrypted %.2f s/GB (iperf3 and both agents)", host, wg))
		if cipher > 0 {
			r.res.metric(SecWireGuard, fmt.Sprintf("ratio bound from the cipher alone, %s", streamsName(t.Streams)), round(host/(host+cipher), 3), "ratio", "", 0,
				fmt.Sprintf("informational: host %.2f s/GB / (host + seal and open %.2f s/GB); every other cost of the device lowers it", host, cipher))
		}
		// Where the encrypted path's CPU goes: the agents run wireguard-go
		// (its TUN and UDP syscalls, and the kernel work they carry, count
		// to them); iperf3 costs about what it costs host to host.
		if len(t.ChargedCPUPerGB) == len(t.CPUPerGB) {
			var iperf []float64
			for i, c := range t.ChargedCPUPerGB {
				if c > 0 {
					iperf = append(iperf, t.CPUPerGB[i]-c)
				}
			}
			if agents := medianPositive(t.ChargedCPUPerGB); agents > 0 {
				r.res.finding("WireGuard world, %s: of the encrypted path's %.2f CPU s per GB (medians over runs), the two agents (wireguard-go) spend %.2f and iperf3 %.2f (%.2f host to host); seal and open alone cost %.2f on one thread here.",
					streamsName(t.Streams), wg, agents, medianPositive(iperf), host, cipher)
			}
		}
	}
}

// cipherSecPerGB is the CPU time one core spends to seal and then open a
// GB in WireGuard-sized messages (1420 bytes), measured on this thread's
// CPU clock so that other load does not count.
func cipherSecPerGB() (float64, error) {
	const size, n = 1420, 20000
	aead, err := chacha20poly1305.New(make([]byte, chacha20poly1305.KeySize))
	if err != nil {
		return 0, err
	}
	nonce, plain := make([]byte, aead.NonceSize()), make([]byte, size)
	sealed := make([]byte, 0, size+aead.Overhead())
	opened := make([]byte, 0, size)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var t0, t1 unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &t0); err != nil {
		return 0, err
	}
	for range n {
		sealed = aead.Seal(sealed[:0], nonce, plain, nil)
		if opened, err = aead.Open(opened[:0], nonce, sealed, nil); err != nil {
			return 0, err
		}
	}
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &t1); err != nil {
		return 0, err
	}
	return float64(t1.Nano()-t0.Nano()) / 1e9 / (size * n / 1e9), nil
}
