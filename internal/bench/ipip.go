package bench

import (
	"context"
	"strings"

	"github.com/calico-go/calico/internal/walkthrough"
)

// IPIP paths: a world of their own (beside VXLAN's), so each ratio is
// against the host-to-host run of the same round in the same world.
const (
	pathHostRtrIPIP = "host-to-host via router (IPIP world)"
	pathIPIP        = "workload, IPIP via router"
	// pathIPIP and pathPlainIPIP are measured as calico-node runs them,
	// with the eBPF fast path (the bench attaches it for each of their
	// runs, from the agents' own tables, as the agents would: they run with
	// CALICO_FASTPATH=off so that these are measured without it, in the
	// same rounds).
	pathIPIPOff      = pathIPIP + ", CALICO_FASTPATH=off"
	pathPlainIPIPOff = pathPlainIPIP + ", CALICO_FASTPATH=off"
)

// runIPIP measures, with host 2 behind a router and the seed's --ipip pool:
// host to host through the router (the baseline), workload to workload,
// which on a kernel without the ipip module crosses the eBPF path, and
// workload to workload in a second pool without encapsulation (the routed
// ceiling, past the same eBPF programs on the hosts' interfaces).
func runIPIP(ctx context.Context, r *runner) error {
	defer agentsWithoutFastPath()()
	w, err := r.buildWorld(ctx, walkthrough.Options{Routed: true})
	if err != nil {
		return err
	}
	defer w.close()
	h1, h2 := w.Hosts[0], w.Hosts[1]
	wls, err := w.profiledWorkloads(ctx, []wlSpec{{h1, "ip-a1", "192.168.100.1"}, {h2, "ip-b1", "192.168.100.65"}}, "--ipip")
	if err != nil {
		return err
	}
	plain, err := w.plainRoutedWorkloads(ctx, "ip")
	if err != nil {
		return err
	}
	paths := []tpath{
		{name: pathHostRtrIPIP, server: h1.Netns, client: h2.Netns, ip: h1.Addr()},
		{name: pathIPIPOff, baseline: pathHostRtrIPIP, server: wls[0].Netns, client: wls[1].Netns, ip: wls[0].IP},
		{name: pathPlainIPIPOff, baseline: pathHostRtrIPIP, server: plain[0].Netns, client: plain[1].Netns, ip: plain[0].IP},
	}
	fp, err := w.liveFastPath(ctx)
	if err != nil {
		return err
	}
	defer fp.closeInto(r, "IPIP world")
	paths = append(paths,
		fp.path(tpath{name: pathIPIP, baseline: pathHostRtrIPIP, server: wls[0].Netns, client: wls[1].Netns, ip: wls[0].IP, op: ">=", target: 0.90}),
		fp.path(tpath{name: pathPlainIPIP, baseline: pathHostRtrIPIP, server: plain[0].Netns, client: plain[1].Netns, ip: plain[0].IP}))
	paths = r.filterPaths(paths)
	res, err := r.iperfPaths(ctx, paths)
	if err != nil {
		return err
	}
	r.addThroughput(SecIPIP, paths, res)
	r.addEncapCost(SecIPIP, pathIPIP, pathPlainIPIP, res)
	r.addEncapCost(SecIPIP, pathIPIPOff, pathPlainIPIPOff, res)
	r.addFastPathGain(SecIPIP, pathIPIP, pathIPIPOff, res)
	r.addFastPathGain(SecIPIP, pathPlainIPIP, pathPlainIPIPOff, res)
	if st, err := w.Ctl(ctx, h1, "status"); err == nil {
		for _, line := range strings.Split(st, "\n") {
			if how, ok := strings.CutPrefix(line, "IPIP: "); ok {
				r.res.finding("IPIP world: host1 carries IPIP by %s.", how)
			}
		}
	}
	r.datapathFindings(ctx, w, "IPIP world", wls[0])
	r.packetSizeFinding(ctx, "IPIP world", wls[1], wls[0])
	return nil
}
