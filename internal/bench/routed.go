package bench

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/calico-go/calico/internal/walkthrough"
)

// The routed ceiling: in the VXLAN and IPIP worlds, a second pool without
// encapsulation whose workloads cross the same router unencapsulated. Its
// ratio to host-to-host via router is what the encapsulated path could reach
// at best, and the encapsulated path over it is encapsulation's own cost,
// both paired by round with the same world's other paths.
const (
	pathPlainVXLAN = "workload, no encap via router"
	pathPlainIPIP  = "workload, no encap via router (IPIP world)"
	// plainPool is the no-encapsulation pool; its first block goes to
	// host 1 and its second to host 2 (the workloads ask for addresses in
	// them).
	plainPool      = "192.168.101.0/24"
	plainBlockBits = 26
)

// plainRoutedWorkloads adds the no-encapsulation pool and a workload in it
// on each host (profile BENCH, like the encapsulated pair), and routes
// their blocks across the router as an L3 fabric would: the router gets a
// route to each block via its host, host 1 one to host 2's block via the
// router, and host 2 needs none (its default route is the router).
//
// The agents cannot route these blocks themselves: the mesh announces each
// block with its node as next hop, which is not on the other host's subnet,
// so each agent's route fails and is retried with the backoff (at most one
// pass in 30 s). In a real cluster the router would peer BGP and announce
// the blocks with itself as next hop; static routes give the kernel the
// same forwarding path without a speaker in the router namespace.
func (w *world) plainRoutedWorkloads(ctx context.Context, prefix string) ([]*walkthrough.Workload, error) {
	h1, h2 := w.Hosts[0], w.Hosts[1]
	if w.Router == nil {
		return nil, fmt.Errorf("bench: no router in this world")
	}
	if _, err := w.Ctl(ctx, h1, "pool", "add", plainPool, "--nat-outgoing"); err != nil {
		return nil, err
	}
	specs := []wlSpec{{h1, prefix + "-p1", "192.168.101.1"}, {h2, prefix + "-p2", "192.168.101.65"}}
	out, err := w.benchWorkloads(ctx, specs)
	if err != nil {
		return nil, err
	}
	block := func(a netip.Addr) string { return netip.PrefixFrom(a, plainBlockBits).Masked().String() }
	b1, b2 := block(out[0].IP), block(out[1].IP)
	for _, r := range []struct {
		add     func(dst, via string) error
		dst, gw string
	}{
		{w.Router.AddRoute, b1, h1.Addr().String()},
		{w.Router.AddRoute, b2, h2.Addr().String()},
		{h1.AddRoute, b2, "10.0.0.253"},
	} {
		if err := r.add(r.dst, r.gw); err != nil {
			return nil, fmt.Errorf("bench: static route %s via %s for the no-encapsulation pool: %w", r.dst, r.gw, err)
		}
	}
	for _, p := range [][2]*walkthrough.Workload{{out[0], out[1]}, {out[1], out[0]}} {
		if ok, detail := walkthrough.Probe(ctx, p[0].Netns, p[1].IP, true); !ok {
			return nil, fmt.Errorf("%s cannot reach %s (%s) unencapsulated across the router: %s", p[0].Name, p[1].Name, p[1].IP, detail)
		}
	}
	return out, nil
}

// addEncapCost adds the rows of encapsulation's own cost: the encapsulated
// path over the no-encapsulation one through the same router, in Gbit/s and
// in CPU per GB, each paired by round.
func (r *runner) addEncapCost(sec, encap, plain string, res []ThroughputResult) {
	for _, st := range r.plan.Streams {
		e, p := find(res, encap, st), find(res, plain, st)
		if e == nil || p == nil {
			continue
		}
		if ratio := pairedRatio(e.Gbps, p.Gbps); ratio > 0 {
			r.res.metric(sec, fmt.Sprintf("%s / %s, %s", encap, plain, streamsName(st)), ratio, "ratio", "", 0,
				fmt.Sprintf("informational: encapsulation's own cost; %.2f against %.2f Gbit/s", e.Median, p.Median))
		}
		if ratio := pairedRatio(e.CPUPerGB, p.CPUPerGB); ratio > 0 {
			r.res.metric(sec, fmt.Sprintf("CPU per GB, %s / %s, %s", encap, plain, streamsName(st)), ratio, "ratio", "", 0,
				fmt.Sprintf("informational: paired by round; %.2f against %.2f CPU s per GB", medianPositive(e.CPUPerGB), medianPositive(p.CPUPerGB)))
		}
	}
}
