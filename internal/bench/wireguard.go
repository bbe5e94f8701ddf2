package bench

import (
	"context"
	"fmt"
	"strings"
	"time"

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
	paths := []tpath{
		{name: pathHostWG, server: h1.Netns, client: h2.Netns, ip: h1.Addr()},
		{name: pathWG, baseline: pathHostWG, server: wls[0].Netns, client: wls[1].Netns, ip: wls[0].IP, op: ">=", target: 0.30},
	}
	res, err := r.iperfPaths(ctx, paths)
	if err != nil {
		return err
	}
	r.addThroughput(SecWireGuard, paths, res)
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
