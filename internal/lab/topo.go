package lab

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"

	"github.com/vishvananda/netlink"
)

// Fabric is one L2 segment: a Linux bridge ("br0") alone in a namespace of
// its own. Hosts, routers and gateways plug into it with veth pairs. The
// kernel gives that namespace bridge-nf-call-iptables=1, so filter rules put
// there also see bridged traffic between hosts (handy to prove a packet was
// or was not encapsulated).
type Fabric struct {
	*Netns
	Subnet netip.Prefix
	Bridge string

	mu    sync.Mutex
	ports map[string]bool
	addrs map[netip.Addr]string // address -> who holds it, to refuse duplicates
	// members are what is plugged in with an address, and pinned says
	// every member holds a permanent neighbour entry for every other
	// (PinNeighbours). plugMu orders plugging against pinning, so no
	// member joins between PinNeighbours' listing and its flag.
	plugMu  sync.Mutex
	members []member
	pinned  bool
}

// member is one address on the fabric: the interface holding it.
type member struct {
	ns    *Netns
	index int // the interface's index in ns
	addr  netip.Addr
	mac   net.HardwareAddr
}

// AddFabric makes a fabric for subnet ("10.0.0.0/24"). The subnet is only
// used to check and complete the addresses given to things plugged in.
func (l *Lab) AddFabric(label, subnet string) (*Fabric, error) {
	pfx, err := netip.ParsePrefix(subnet)
	if err != nil {
		return nil, fmt.Errorf("lab: fabric %s subnet %q: %w", label, subnet, err)
	}
	ns, err := l.AddNetns(label)
	if err != nil {
		return nil, err
	}
	f := &Fabric{Netns: ns, Subnet: pfx.Masked(), Bridge: "br0",
		ports: map[string]bool{}, addrs: map[netip.Addr]string{}}
	err = ns.withNL(func(h *netlink.Handle) error {
		return h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: f.Bridge}})
	})
	if err != nil {
		return nil, fmt.Errorf("lab: bridge in %s: %w", ns.Name, err)
	}
	if err := ns.linkUp(f.Bridge); err != nil {
		return nil, err
	}
	return f, nil
}

// claim parses addr ("10.0.0.1/24", or "10.0.0.1" to take the fabric's
// prefix length), checks it lies in the fabric's subnet and is not taken.
func (f *Fabric) claim(addr, owner string) (netip.Prefix, error) {
	pfx, err := netip.ParsePrefix(addr)
	if err != nil {
		a, aerr := netip.ParseAddr(addr)
		if aerr != nil {
			return netip.Prefix{}, fmt.Errorf("lab: address %q for %s: %w", addr, owner, err)
		}
		pfx = netip.PrefixFrom(a, f.Subnet.Bits())
	}
	if !f.Subnet.Contains(pfx.Addr()) {
		return netip.Prefix{}, fmt.Errorf("lab: address %s for %s is outside fabric %s (%s)", pfx, owner, f.Label, f.Subnet)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if who, ok := f.addrs[pfx.Addr()]; ok {
		return netip.Prefix{}, fmt.Errorf("lab: address %s for %s is already used by %s on fabric %s", pfx.Addr(), owner, who, f.Label)
	}
	f.addrs[pfx.Addr()] = owner
	return pfx, nil
}

// unclaim gives back an address claimed for something that failed to appear.
func (f *Fabric) unclaim(p netip.Prefix) {
	f.mu.Lock()
	delete(f.addrs, p.Addr())
	f.mu.Unlock()
}

// attach plugs ns into the fabric: a veth named ifname inside ns whose peer
// is created directly in the fabric namespace (never in the root namespace)
// and enslaved to the bridge.
func (f *Fabric) attach(ns *Netns, ifname string) error {
	f.mu.Lock()
	port := ns.Label
	// The port is named after what it connects when that fits an interface
	// name; otherwise a counter keeps it unique.
	if len(port) > 15 || f.ports[port] || port == f.Bridge || port == "lo" {
		for i := len(f.ports); ; i++ {
			port = fmt.Sprintf("port%d", i)
			if !f.ports[port] {
				break
			}
		}
	}
	f.ports[port] = true
	f.mu.Unlock()

	if err := addVeth(ns, ifname, f.Netns, port); err != nil {
		return err
	}
	err := f.withNL(func(h *netlink.Handle) error {
		pl, err := h.LinkByName(port)
		if err != nil {
			return fmt.Errorf("lab: %s in %s: %w", port, f.Name, err)
		}
		br, err := h.LinkByName(f.Bridge)
		if err != nil {
			return fmt.Errorf("lab: %s in %s: %w", f.Bridge, f.Name, err)
		}
		if err := h.LinkSetMaster(pl, br); err != nil {
			return fmt.Errorf("lab: enslaving %s to %s in %s: %w", port, f.Bridge, f.Name, err)
		}
		if err := h.LinkSetUp(pl); err != nil {
			return fmt.Errorf("lab: setting %s up in %s: %w", port, f.Name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return ns.linkUp(ifname)
}

// plug attaches ns to the fabric on ifname with address pfx (claimed
// already) and records it as a member; on a pinned fabric the new member
// and every other get permanent neighbour entries for each other.
func (f *Fabric) plug(ns *Netns, ifname string, pfx netip.Prefix) error {
	if err := f.attach(ns, ifname); err != nil {
		return err
	}
	if err := ns.AddAddr(ifname, pfx.String()); err != nil {
		return err
	}
	m := member{ns: ns, addr: pfx.Addr()}
	err := ns.withNL(func(h *netlink.Handle) error {
		link, err := h.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("lab: %s in %s: %w", ifname, ns.Name, err)
		}
		m.index, m.mac = link.Attrs().Index, link.Attrs().HardwareAddr
		return nil
	})
	if err != nil {
		return err
	}
	f.plugMu.Lock()
	defer f.plugMu.Unlock()
	if f.pinned {
		for _, o := range f.members {
			if err := pinPair(m, o); err != nil {
				return err
			}
		}
	}
	f.members = append(f.members, m)
	return nil
}

// PinNeighbours gives every member of the fabric, now and later, a
// permanent neighbour entry (IPv4) for every other member's address.
//
// Why: the kernel keeps one IPv4 neighbour table for all namespaces, and
// past net.ipv4.neigh.default.gc_thresh3 entries (1024 by default) it
// refuses new ones, in every namespace of the machine. A lab of n hosts
// that all talk to each other (a BGP full mesh) resolves n*(n-1)
// addresses: 36 hosts overflow it, and new hosts cannot even reach the
// datastore. Permanent entries are exempt from that limit (Linux 4.19 on),
// and once one exists no resolved entry is made for the address. Each
// namespace then holds what a real host's own table would, without the
// machine's sysctls changing; what is lost is only the first ARP exchange
// of each pair, and the lab's MACs never change.
func (f *Fabric) PinNeighbours() error {
	f.plugMu.Lock()
	defer f.plugMu.Unlock()
	for i, a := range f.members {
		for _, b := range f.members[:i] {
			if err := pinPair(a, b); err != nil {
				return err
			}
		}
	}
	f.pinned = true
	return nil
}

// pinPair gives a and b permanent neighbour entries for each other.
func pinPair(a, b member) error {
	for _, p := range [][2]member{{a, b}, {b, a}} {
		on, to := p[0], p[1]
		err := on.ns.withNL(func(h *netlink.Handle) error {
			return h.NeighSet(&netlink.Neigh{LinkIndex: on.index, Family: netlink.FAMILY_V4,
				State: netlink.NUD_PERMANENT, IP: to.addr.AsSlice(), HardwareAddr: to.mac})
		})
		if err != nil {
			return fmt.Errorf("lab: neighbour %s in %s: %w", to.addr, on.ns.Name, err)
		}
	}
	return nil
}

// Host is a namespace standing for one machine, with one NIC on a fabric.
type Host struct {
	*Netns
	IP     netip.Prefix // its address on the fabric, e.g. 10.0.0.1/24
	Iface  string       // its fabric NIC, "eth0"
	Fabric *Fabric
}

// Addr is the host's fabric address without the prefix length.
func (h *Host) Addr() netip.Addr { return h.IP.Addr() }

// AddHost makes a host on fabric f with address ip ("10.0.0.1/24", or
// without a length to take the fabric's) on eth0. With a gateway, it gets a
// default route through it. Note that the Calico-style proxy ARP for
// 169.254.1.1 only answers when the host has a route covering that address
// through another interface, which a default route provides; so hosts that
// will carry workloads want a gateway (any fabric address will do).
//
// Forwarding (IPv4 and IPv6) is turned off, as on a fresh machine, so the
// agent has to turn on what it needs. The kernel would otherwise copy IPv4
// settings from the root namespace (net.core.devconf_inherit_init_net=0),
// where Docker has usually set ip_forward=1, and tests of the agent would
// pass or fail depending on the machine.
func (l *Lab) AddHost(label string, f *Fabric, ip, gateway string) (_ *Host, err error) {
	pfx, err := f.claim(ip, label)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.unclaim(pfx)
		}
	}()
	var gw netip.Addr
	if gateway != "" {
		if gw, err = netip.ParseAddr(gateway); err != nil {
			return nil, fmt.Errorf("lab: host %s gateway %q: %w", label, gateway, err)
		}
		if !pfx.Masked().Contains(gw) {
			return nil, fmt.Errorf("lab: host %s gateway %s is not on its subnet %s", label, gw, pfx.Masked())
		}
	}
	ns, err := l.AddNetns(label)
	if err != nil {
		return nil, err
	}
	h := &Host{Netns: ns, IP: pfx, Iface: "eth0", Fabric: f}
	if err := setForwarding(ns, "0"); err != nil {
		return nil, err
	}
	if err := f.plug(ns, h.Iface, pfx); err != nil {
		return nil, err
	}
	if gw.IsValid() {
		if err := ns.AddRoute("default", gw.String()); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// AddRouter makes a router namespace with one leg per fabric (legs maps a
// fabric to the router's address on it). Legs are named eth0, eth1, ... in
// the order of the fabrics' names. It forwards (IPv4 and IPv6) but knows only
// its connected subnets: traffic between workload pools that is not
// encapsulated dies here, as on a real underlay that was not told about them.
func (l *Lab) AddRouter(label string, legs map[*Fabric]string) (_ *Netns, err error) {
	if len(legs) == 0 {
		return nil, fmt.Errorf("lab: router %s needs at least one fabric", label)
	}
	fabrics := make([]*Fabric, 0, len(legs))
	for f := range legs {
		fabrics = append(fabrics, f)
	}
	sort.Slice(fabrics, func(i, j int) bool { return fabrics[i].Label < fabrics[j].Label })
	addrs := make([]netip.Prefix, len(fabrics))
	defer func() {
		if err != nil {
			for i, f := range fabrics {
				if addrs[i].IsValid() {
					f.unclaim(addrs[i])
				}
			}
		}
	}()
	for i, f := range fabrics {
		pfx, err := f.claim(legs[f], label)
		if err != nil {
			return nil, err
		}
		addrs[i] = pfx
	}
	ns, err := l.AddNetns(label)
	if err != nil {
		return nil, err
	}
	for i, f := range fabrics {
		dev := fmt.Sprintf("eth%d", i)
		if err := f.plug(ns, dev, addrs[i]); err != nil {
			return nil, err
		}
	}
	if err := setForwarding(ns, "1"); err != nil {
		return nil, err
	}
	return ns, nil
}

// setForwarding sets IPv4 and IPv6 forwarding ("0" or "1") in ns.
func setForwarding(ns *Netns, v string) error {
	if err := ns.SetSysctl("net.ipv4.ip_forward", v); err != nil {
		return err
	}
	return ns.SetSysctl("net.ipv6.conf.all.forwarding", v)
}

// Outside stands for the internet: a namespace with one address, reached
// from a fabric through a gateway namespace.
type Outside struct {
	*Netns
	IP         netip.Addr // the outside namespace's address, first of outsideNet
	Gateway    *Netns     // the gateway namespace between the fabric and the outside
	GatewayIP  netip.Addr // the gateway's address on the fabric
	GatewayLeg netip.Addr // the gateway's address on the outside link
}

// AddReturnRoute lets replies reach one more subnet, such as a second fabric
// behind a router: the outside gets a route to subnet through the gateway,
// and the gateway a route to it via a router address on its fabric. (The
// router still needs its own default route via GatewayIP.)
func (o *Outside) AddReturnRoute(subnet, via string) error {
	if err := o.AddRoute(subnet, o.GatewayLeg.String()); err != nil {
		return err
	}
	return o.Gateway.AddRoute(subnet, via)
}

// AddOutside makes two namespaces: a gateway "<label>-gw" on fabric f with
// gatewayIP ("10.0.0.254/24"), and the outside namespace "<label>" on a link
// from the gateway, addressed from outsideNet ("198.51.100.0/24": outside
// gets the first address, the gateway's side the last usable one). The
// outside namespace has a route back ONLY to f's subnet, so only traffic
// sourced from a host address (for workloads, masqueraded traffic) gets
// replies. The gateway forwards but knows no workload pools either.
func (l *Lab) AddOutside(label string, f *Fabric, gatewayIP, outsideNet string) (_ *Outside, err error) {
	onet, err := netip.ParsePrefix(outsideNet)
	if err != nil {
		return nil, fmt.Errorf("lab: outside %s net %q: %w", label, outsideNet, err)
	}
	onet = onet.Masked()
	if onet.Addr().BitLen()-onet.Bits() < 2 {
		return nil, fmt.Errorf("lab: outside %s net %s is too small (need at least 4 addresses)", label, onet)
	}
	outIP := onet.Addr().Next()
	gwLeg := lastAddr(onet).Prev()
	gwPfx, err := f.claim(gatewayIP, label+"-gw")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.unclaim(gwPfx)
		}
	}()
	gw, err := l.AddNetns(label + "-gw")
	if err != nil {
		return nil, err
	}
	out, err := l.AddNetns(label)
	if err != nil {
		return nil, err
	}
	if err := f.plug(gw, "eth0", gwPfx); err != nil {
		return nil, err
	}
	if err := addVeth(gw, "eth1", out, "eth0"); err != nil {
		return nil, err
	}
	for _, s := range []struct {
		ns   *Netns
		dev  string
		addr netip.Addr
	}{{gw, "eth1", gwLeg}, {out, "eth0", outIP}} {
		if err := s.ns.linkUp(s.dev); err != nil {
			return nil, err
		}
		if err := s.ns.AddAddr(s.dev, netip.PrefixFrom(s.addr, onet.Bits()).String()); err != nil {
			return nil, err
		}
	}
	if err := setForwarding(gw, "1"); err != nil {
		return nil, err
	}
	if err := out.AddRoute(f.Subnet.String(), gwLeg.String()); err != nil {
		return nil, err
	}
	return &Outside{Netns: out, IP: outIP, Gateway: gw, GatewayIP: gwPfx.Addr(), GatewayLeg: gwLeg}, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// AddWorkloadNetns makes an empty namespace (loopback up) for a workload on
// host, named "<id>-<host label>-<label>". The project's own code wires it
// (veth, addresses, routes); the lab only makes and removes it.
func (l *Lab) AddWorkloadNetns(host *Host, label string) (*Netns, error) {
	return l.AddNetns(host.Label + "-" + label)
}
