package bench

import (
	"context"
	"net/netip"
	"time"

	"github.com/calico-go/calico/internal/lab"
)

// The kernel's own VXLAN ceiling: the vxlan section measures, in the same
// rounds as its calico paths, two namespace hosts joined by a router and a
// workload behind each, wired by hand with MACHINE-NOTES' VXLAN recipe
// (`type vxlan id 4096 local HOST dstport 4789 nolearning`, MTU 1450, a
// route via the peer's tunnel address onlink, a permanent neighbour and
// FDB entry) and nothing else: no agent, no nftables, no conntrack, no
// eBPF. Its ratio to the same bare hosts' host-to-host is what the kernel's
// VXLAN device path reaches on this machine by itself; the calico path
// cannot beat it without replacing that device.
const (
	pathBareHostRtr = "bare kernel: host-to-host via router"
	pathBareVXLAN   = "bare kernel: workload, VXLAN via router"
)

// bareVXLANRatio names the summary row of the bare kernel's VXLAN against
// its host-to-host at a stream count: the ceiling issue 19's VXLAN rows
// are drawn and explained against.
func bareVXLANRatio(streams int) string {
	return pathBareVXLAN + " / " + pathBareHostRtr + ", " + streamsName(streams)
}

// bareVXLAN builds that world in l's namespaces (named and swept with the
// lab's) and returns the two paths: host to host via the router, and
// workload to workload over VXLAN, baselined on it.
func bareVXLAN(ctx context.Context, l *lab.Lab) ([]tpath, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var ns [5]*lab.Netns
	for i, label := range []string{"bvr", "bvh1", "bvh2", "bvw1", "bvw2"} {
		n, err := l.AddNetns(label)
		if err != nil {
			return nil, err
		}
		ns[i] = n
	}
	rtr, h1, h2, w1, w2 := ns[0], ns[1], ns[2], ns[3], ns[4]
	type step struct {
		in   *lab.Netns
		argv []string
	}
	ip := func(in *lab.Netns, args ...string) step { return step{in, append([]string{"ip"}, args...)} }
	const mac1, mac2 = "02:62:76:00:00:01", "02:62:76:00:00:02"
	steps := []step{
		// The fabric: each host on its own subnet behind the router.
		ip(rtr, "link", "add", "r1", "type", "veth", "peer", "name", "eth0", "netns", h1.Name),
		ip(rtr, "link", "add", "r2", "type", "veth", "peer", "name", "eth0", "netns", h2.Name),
		ip(rtr, "addr", "add", "10.98.1.1/24", "dev", "r1"),
		ip(rtr, "addr", "add", "10.98.2.1/24", "dev", "r2"),
		ip(rtr, "link", "set", "r1", "up"),
		ip(rtr, "link", "set", "r2", "up"),
		ip(h1, "addr", "add", "10.98.1.2/24", "dev", "eth0"),
		ip(h1, "link", "set", "eth0", "up"),
		ip(h1, "route", "add", "default", "via", "10.98.1.1"),
		ip(h2, "addr", "add", "10.98.2.2/24", "dev", "eth0"),
		ip(h2, "link", "set", "eth0", "up"),
		ip(h2, "route", "add", "default", "via", "10.98.2.1"),
		// A workload behind each host, on the tunnel's MTU.
		ip(h1, "link", "add", "wl1", "mtu", "1450", "type", "veth", "peer", "name", "eth0", "netns", w1.Name),
		ip(h2, "link", "add", "wl2", "mtu", "1450", "type", "veth", "peer", "name", "eth0", "netns", w2.Name),
		ip(h1, "addr", "add", "10.97.1.1/24", "dev", "wl1"),
		ip(h1, "link", "set", "wl1", "up"),
		ip(h2, "addr", "add", "10.97.2.1/24", "dev", "wl2"),
		ip(h2, "link", "set", "wl2", "up"),
		ip(w1, "link", "set", "eth0", "mtu", "1450", "up"),
		ip(w1, "addr", "add", "10.97.1.2/24", "dev", "eth0"),
		ip(w1, "route", "add", "default", "via", "10.97.1.1"),
		ip(w2, "link", "set", "eth0", "mtu", "1450", "up"),
		ip(w2, "addr", "add", "10.97.2.2/24", "dev", "eth0"),
		ip(w2, "route", "add", "default", "via", "10.97.2.1"),
		// The recipe.
		ip(h1, "link", "add", "vx", "address", mac1, "mtu", "1450", "type", "vxlan", "id", "4096", "local", "10.98.1.2", "dstport", "4789", "nolearning"),
		ip(h2, "link", "add", "vx", "address", mac2, "mtu", "1450", "type", "vxlan", "id", "4096", "local", "10.98.2.2", "dstport", "4789", "nolearning"),
		ip(h1, "addr", "add", "10.96.0.1/32", "dev", "vx"),
		ip(h2, "addr", "add", "10.96.0.2/32", "dev", "vx"),
		ip(h1, "link", "set", "vx", "up"),
		ip(h2, "link", "set", "vx", "up"),
		ip(h1, "route", "add", "10.97.2.0/24", "via", "10.96.0.2", "dev", "vx", "onlink"),
		ip(h2, "route", "add", "10.97.1.0/24", "via", "10.96.0.1", "dev", "vx", "onlink"),
		ip(h1, "neigh", "add", "10.96.0.2", "lladdr", mac2, "dev", "vx", "nud", "permanent"),
		ip(h2, "neigh", "add", "10.96.0.1", "lladdr", mac1, "dev", "vx", "nud", "permanent"),
		{h1, []string{"bridge", "fdb", "add", mac2, "dev", "vx", "dst", "10.98.2.2", "self", "permanent"}},
		{h2, []string{"bridge", "fdb", "add", mac1, "dev", "vx", "dst", "10.98.1.2", "self", "permanent"}},
	}
	for _, n := range []*lab.Netns{rtr, h1, h2} {
		if err := n.SetSysctl("net/ipv4/ip_forward", "1"); err != nil {
			return nil, err
		}
	}
	for _, s := range steps {
		if _, err := s.in.Run(ctx, s.argv...); err != nil {
			return nil, err
		}
	}
	if _, err := w1.Run(ctx, "ping", "-c", "1", "-W", "5", "10.97.2.2"); err != nil {
		return nil, err
	}
	return []tpath{
		{name: pathBareHostRtr, server: h1, client: h2, ip: netip.MustParseAddr("10.98.1.2")},
		{name: pathBareVXLAN, baseline: pathBareHostRtr, server: w1, client: w2, ip: netip.MustParseAddr("10.97.1.2")},
	}, nil
}
