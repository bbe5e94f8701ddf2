package nft

import (
	"net/netip"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
)

// vxlanPeers turns the lab's host and outside namespaces into two VXLAN
// tunnel endpoints wired as calico-node wires them (device, a route through
// it with the peer's host address as on-link gateway, a permanent neighbour
// and FDB entry): the outside namespace stands for another node whose
// workloads live in 10.66.0.0/24. It also gets 10.67.0.1, a source it does
// not own.
func vxlanPeers(t *testing.T, l *lab) {
	macH := api.VTEPMAC(l.hostIP)
	macO := api.VTEPMAC(l.outsideIP)
	for _, s := range []struct {
		ns, local, mac, peer, peerMAC, remoteNet string
	}{
		{l.host, l.hostIP.String(), macH, l.outsideIP.String(), macO, "10.66.0.0/24"},
		{l.outside, l.outsideIP.String(), macO, l.hostIP.String(), macH, "10.65.0.0/24"},
	} {
		sh(t, "ip", "-n", s.ns, "link", "add", "vxlan0", "type", "vxlan", "id", "4096", "local", s.local, "dstport", "4789", "nolearning")
		sh(t, "ip", "-n", s.ns, "link", "set", "vxlan0", "address", s.mac, "mtu", "1450", "up")
		sh(t, "ip", "-n", s.ns, "neigh", "add", s.peer, "lladdr", s.peerMAC, "dev", "vxlan0", "nud", "permanent")
		sh(t, "bridge", "-n", s.ns, "fdb", "add", s.peerMAC, "dev", "vxlan0", "dst", s.peer)
		sh(t, "ip", "-n", s.ns, "route", "add", s.remoteNet, "via", s.peer, "dev", "vxlan0", "onlink")
	}
	sh(t, "ip", "-n", l.outside, "addr", "add", "10.66.0.1/32", "dev", "lo")
	sh(t, "ip", "-n", l.outside, "addr", "add", "10.67.0.1/32", "dev", "lo")
	for _, a := range []string{"10.66.0.200/32", "10.66.0.201/32"} {
		sh(t, "ip", "-n", l.outside, "addr", "add", a, "dev", "lo")
	}
}

// TestKernelVXLANGuard: datagrams that the kernel's own VXLAN device sends
// are checked against the vxlan-src-N sets before the receiving device decapsulates
// them: the raw payload offsets match what the kernel puts on the wire,
// honest inner sources pass, an inner source the sending node does not own
// is dropped, and nothing is accepted from an address that is no node.
func TestKernelVXLANGuard(t *testing.T) {
	requireKernel(t)
	l := newLab(t)
	w1 := l.addWorkload("w1", "10.65.0.1", "fd00::1")
	vxlanPeers(t, l)
	udpEcho(t, w1.ns, "10.65.0.1:7777")
	dst := netip.AddrPortFrom(w1.ip4, 7777)
	from := func(src string) func(d time.Duration) error {
		return func(d time.Duration) error {
			return udpSend(l.outside, netip.AddrPortFrom(netip.MustParseAddr(src), 0), dst, "hello from "+src, d)
		}
	}

	h := newHostEnforcer(t, l.host)
	base := calc.Policy{
		Endpoints: []calc.EndpointPolicy{{Interface: w1.iface, Addrs: []netip.Addr{w1.ip4, w1.ip6}, Profiles: []string{"open"}}},
		Profiles: map[string]api.Profile{"open": {Name: "open",
			Inbound: []api.Rule{{Action: "allow"}}, Outbound: []api.Rule{{Action: "allow"}}}},
	}
	// No VXLAN pool: vxlan-in is empty and the device decapsulates
	// whatever arrives (this is what the guard must stop).
	h.apply(base)
	expect(t, "no guard: owned inner source 10.66.0.1", true, from("10.66.0.1"))
	expect(t, "no guard: foreign inner source 10.67.0.1", true, from("10.67.0.1"))

	guarded := base
	guarded.VXLAN = calc.VXLANGuard{Enabled: true, Senders: []calc.VXLANSender{
		{Addr: l.outsideIP, Inner: prefixes(l.outsideIP.String()+"/32", "10.66.0.0/24")},
	}}
	h.apply(guarded)
	expect(t, "guard: owned inner source 10.66.0.1", true, from("10.66.0.1"))
	expect(t, "guard: the node's own address as inner source", true, from(l.outsideIP.String()))
	expect(t, "guard: foreign inner source 10.67.0.1", false, from("10.67.0.1"))

	// Inner prefixes of several lengths (a block, a single address
	// borrowed outside it): each length is its own hashed set, looked up
	// with the inner source masked to that length. Addresses next to an
	// owned one, but in no owned prefix, stay out.
	split := base
	split.VXLAN = calc.VXLANGuard{Enabled: true, Senders: []calc.VXLANSender{
		{Addr: l.outsideIP, Inner: prefixes(l.outsideIP.String()+"/32", "10.66.0.0/25", "10.66.0.200/32")},
	}}
	h.apply(split)
	expect(t, "split: inner source 10.66.0.1 in the /25", true, from("10.66.0.1"))
	expect(t, "split: inner source 10.66.0.200, a /32 of its own", true, from("10.66.0.200"))
	expect(t, "split: inner source 10.66.0.201, owned by no one", false, from("10.66.0.201"))
	expect(t, "split: the node's own address as inner source", true, from(l.outsideIP.String()))
	expect(t, "split: foreign inner source 10.67.0.1", false, from("10.67.0.1"))

	// The same sender when it is no node: nothing from it.
	notANode := base
	notANode.VXLAN = calc.VXLANGuard{Enabled: true, Senders: []calc.VXLANSender{
		{Addr: netip.MustParseAddr("172.31.0.9"), Inner: prefixes("10.66.0.0/24")},
	}}
	h.apply(notANode)
	expect(t, "not a node: owned inner source 10.66.0.1", false, from("10.66.0.1"))
	h.apply(guarded)
	expect(t, "a node again: owned inner source 10.66.0.1", true, from("10.66.0.1"))
	h.cleanup()
}

// TestKernelControlPlaneGuard: with a profile that allows everything, a
// workload still cannot open the control-plane ports of another node (the
// outside namespace here) or of its own host, until the operator opens
// them; ordinary ports on the same addresses stay open throughout.
func TestKernelControlPlaneGuard(t *testing.T) {
	requireKernel(t)
	l := newLab(t)
	w1 := l.addWorkload("w1", "10.65.0.1", "fd00::1")
	for _, a := range []string{":2379", ":80"} {
		listen(t, l.outside, a)
	}
	for _, a := range []string{":2379", ":22"} {
		listen(t, l.host, a)
	}
	h := newHostEnforcer(t, l.host)
	p := calc.Policy{
		Endpoints: []calc.EndpointPolicy{{Interface: w1.iface, Addrs: []netip.Addr{w1.ip4, w1.ip6}, Profiles: []string{"open"}}},
		Profiles: map[string]api.Profile{"open": {Name: "open",
			Inbound: []api.Rule{{Action: "allow"}}, Outbound: []api.Rule{{Action: "allow"}}}},
		// The outside has no route back to the pool: masquerade.
		MasqueradePools: prefixes("10.65.0.0/24"),
		AllPools:        prefixes("10.65.0.0/24"),
		// The host's own address is left out of the hosts on purpose: on
		// the way to the host itself the ports alone decide.
		ControlPlane: calc.ControlPlane{
			Hosts: calc.AddrSet{V4: []netip.Addr{l.outsideIP}},
			Ports: []calc.L4Port{{Proto: "tcp", Port: 179}, {Proto: "tcp", Port: 2379}, {Proto: "udp", Port: 4789}},
		},
	}
	h.apply(p)
	expect(t, "default: w1 -> other node's 2379", false, l.tcp(w1.ns, l.outsideIP, 2379))
	expect(t, "default: w1 -> other node's 80", true, l.tcp(w1.ns, l.outsideIP, 80))
	expect(t, "default: w1 -> own host's 22 (workload-to-host drop)", false, l.tcp(w1.ns, l.hostIP, 22))

	h.e.SetHostAccess(HostAccessPolicy)
	h.apply(p)
	expect(t, "host access policy: w1 -> own host's 22", true, l.tcp(w1.ns, l.hostIP, 22))
	expect(t, "host access policy: w1 -> own host's 2379", false, l.tcp(w1.ns, l.hostIP, 2379))
	expect(t, "host access policy: w1 -> other node's 2379", false, l.tcp(w1.ns, l.outsideIP, 2379))

	h.e.SetControlPlaneAccess(ControlPlanePolicy)
	h.apply(p)
	expect(t, "control plane policy: w1 -> other node's 2379", true, l.tcp(w1.ns, l.outsideIP, 2379))
	expect(t, "control plane policy: w1 -> own host's 2379", true, l.tcp(w1.ns, l.hostIP, 2379))

	// Back to the default, with one more node address: an element edit.
	h.e.SetHostAccess(HostAccessDrop)
	h.e.SetControlPlaneAccess(ControlPlaneDrop)
	h.apply(p)
	p.ControlPlane.Hosts.V4 = nil
	h.apply(p)
	expect(t, "no control-plane hosts: w1 -> other node's 2379", true, l.tcp(w1.ns, l.outsideIP, 2379))
	p.ControlPlane.Hosts.V4 = []netip.Addr{l.outsideIP}
	if st := h.apply(p); st.Full || st.Ops != 1 {
		t.Errorf("one more control-plane host: %+v, want one element", st)
	}
	expect(t, "the node is back: w1 -> other node's 2379", false, l.tcp(w1.ns, l.outsideIP, 2379))
	h.cleanup()
}
