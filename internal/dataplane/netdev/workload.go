package netdev

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	// DefaultWorkloadIface is the workload side's name when the spec has none.
	DefaultWorkloadIface = "eth0"
	// DefaultMTU is the veth MTU when the spec has none.
	DefaultMTU = 1500
	// HostSideMAC is the MAC of every host-side veth. Workloads never see two
	// host sides on one link, so one fixed MAC is safe, and it makes the host
	// side's IPv6 link-local address (the workloads' IPv6 gateway) a constant.
	HostSideMAC = "ee:ee:ee:ee:ee:ee"
)

var (
	// GatewayIPv4 is the workloads' IPv4 default gateway. No interface holds
	// it: the host side answers ARP for it by proxy ARP, so every workload
	// uses the same gateway whatever its address.
	GatewayIPv4 = netip.MustParseAddr("169.254.1.1")
	// GatewayIPv6 is the workloads' IPv6 default gateway: the EUI-64
	// link-local address of HostSideMAC, which the host side holds for real.
	GatewayIPv6 = netip.MustParseAddr("fe80::ecee:eeff:feee:eeee")

	hostSideMAC, _ = net.ParseMAC(HostSideMAC)
)

// WorkloadSpec describes one workload interface.
type WorkloadSpec struct {
	NetnsPath     string         // the workload's namespace: /var/run/netns/x or /proc/PID/ns/net
	HostIface     string         // host side, cali...
	WorkloadIface string         // workload side; "" means DefaultWorkloadIface
	Addrs         []netip.Prefix // the workload's addresses, each a single address: /32 or /128
	MTU           int            // 0 means DefaultMTU
	Group         uint32         // the host side's device group (HostSide.Group)
	// Routes, when not empty, are routed via the gateway instead of a
	// default route: the workload keeps its default route on another
	// network (a Docker container on the engine's bridge).
	Routes []netip.Prefix
}

func (s WorkloadSpec) normalize() (WorkloadSpec, error) {
	if s.WorkloadIface == "" {
		s.WorkloadIface = DefaultWorkloadIface
	}
	if s.MTU == 0 {
		s.MTU = DefaultMTU
	}
	var errs []error
	if s.NetnsPath == "" {
		errs = append(errs, errors.New("NetnsPath: required"))
	}
	if err := checkIfaceName(s.HostIface); err != nil {
		errs = append(errs, fmt.Errorf("HostIface: %w", err))
	}
	if err := checkIfaceName(s.WorkloadIface); err != nil {
		errs = append(errs, fmt.Errorf("WorkloadIface: %w", err))
	}
	if s.MTU < 68 || s.MTU > 65535 {
		errs = append(errs, fmt.Errorf("MTU: %d is outside 68..65535", s.MTU))
	}
	addrs := make([]netip.Prefix, 0, len(s.Addrs))
	for _, a := range s.Addrs {
		n, err := hostPrefix(a)
		if err != nil {
			errs = append(errs, fmt.Errorf("Addrs: %w", err))
			continue
		}
		addrs = append(addrs, n)
	}
	s.Addrs = addrs
	return s, errors.Join(errs...)
}

// hostPrefix checks that p names one address and returns it unmapped.
func hostPrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return p, fmt.Errorf("%q is not a valid prefix", p.String())
	}
	a := p.Addr().Unmap()
	if p.Bits() != a.BitLen() && !(p.Addr().Is4In6() && p.Bits() == 128) {
		return p, fmt.Errorf("%s: a workload address must be a single address (/%d)", p, a.BitLen())
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func checkIfaceName(name string) error {
	if name == "" {
		return errors.New("required")
	}
	if len(name) > unix.IFNAMSIZ-1 {
		return fmt.Errorf("%q is longer than %d characters", name, unix.IFNAMSIZ-1)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("%q is not a valid interface name", name)
	}
	for _, c := range name {
		if c == '/' || c == ':' || c <= ' ' || c == 0x7f {
			return fmt.Errorf("%q holds a character Linux forbids in interface names", name)
		}
	}
	return nil
}

func families(addrs []netip.Prefix) (v4, v6 bool) {
	for _, a := range addrs {
		if a.Addr().Is4() {
			v4 = true
		} else {
			v6 = true
		}
	}
	return v4, v6
}

// AddWorkload wires a workload: a veth pair whose host side (spec.HostIface)
// stays in the host's namespace (the caller's, or InNetns) and whose other
// side is created directly inside the workload's namespace as
// spec.WorkloadIface. It returns the workload side's MAC.
//
// The host side gets no address and is what HostSide describes: the fixed
// HostSideMAC, proxy ARP with no delay (so it answers for GatewayIPv4),
// forwarding, and no router advertisements. The workload side gets spec.Addrs, a default route via
// GatewayIPv4 on-link, and (with IPv6 addresses) a default route via
// GatewayIPv6; duplicate address detection is off on both sides so
// addresses are usable at once. The host route to the workload is the route
// syncer's job, not this function's.
//
// The peer is created in the workload namespace in the same request that
// creates the pair, rather than under a temporary name and then moved and
// renamed: its name then only has to be free inside the workload, and there
// are fewer steps that can fail half way.
//
// A failed AddWorkload removes the pair it made, leaving neither namespace
// changed. An existing interface of either name is an error and is left
// alone.
func AddWorkload(spec WorkloadSpec, opts ...Option) (mac string, err error) {
	_, wantV6 := families(spec.Addrs)
	p, err := PrepareWorkload(spec, wantV6, opts...)
	if err != nil {
		return "", err
	}
	return p.Finish(spec.Addrs)
}

// PreparedWorkload is a workload's veth pair made before its addresses
// are known: PrepareWorkload does everything AddWorkload does but add
// the addresses and the routes through the gateway, which Finish does.
// A caller that still has to take the addresses (IPAM's datastore round
// trips) makes the pair meanwhile. Exactly one of Finish and Abort must
// follow.
type PreparedWorkload struct {
	spec             WorkloadSpec
	v6               bool
	hostH, wlH       *netlink.Handle
	hostLink, wlLink netlink.Link
}

// PrepareWorkload makes spec's veth pair as AddWorkload does, without
// spec.Addrs: the host side as HostSide describes, the workload side with
// its sysctls (ipv6: the addresses Finish gets may include IPv6 ones), both
// up. On failure nothing of it is left.
func PrepareWorkload(spec WorkloadSpec, ipv6 bool, opts ...Option) (_ *PreparedWorkload, err error) {
	o := buildOptions(opts)
	spec.Addrs = nil
	spec, err = spec.normalize()
	if err != nil {
		return nil, fmt.Errorf("workload %s: %w", spec.HostIface, err)
	}

	hostNs, err := openNetns(o.netns)
	if err != nil {
		return nil, err
	}
	defer hostNs.Close()
	wlNs, err := openNetns(spec.NetnsPath)
	if err != nil {
		return nil, fmt.Errorf("workload netns: %w", err)
	}
	defer wlNs.Close()
	if hostNs.Equal(wlNs) {
		return nil, fmt.Errorf("workload netns %s is the host's own namespace", spec.NetnsPath)
	}

	// p, not the result: "return nil, err" clears the result before the
	// deferred undo reads it.
	p := &PreparedWorkload{spec: spec, v6: ipv6}
	if p.hostH, err = openHandle(o.netns); err != nil {
		return nil, err
	}
	if p.wlH, err = openHandle(spec.NetnsPath); err != nil {
		p.hostH.Close()
		return nil, err
	}
	defer func() {
		if err != nil {
			p.close()
		}
	}()

	// Check names first, so an existing interface (somebody else's) gives a
	// clear error and is never mistaken for ours during cleanup.
	if _, err := p.hostH.LinkByName(spec.HostIface); err == nil {
		return nil, fmt.Errorf("host interface %s already exists", spec.HostIface)
	} else if !isNotFound(err) {
		return nil, fmt.Errorf("look up host interface %s: %w", spec.HostIface, err)
	}
	if _, err := p.wlH.LinkByName(spec.WorkloadIface); err == nil {
		return nil, fmt.Errorf("interface %s already exists in workload netns %s", spec.WorkloadIface, spec.NetnsPath)
	} else if !isNotFound(err) {
		return nil, fmt.Errorf("look up %s in workload netns %s: %w", spec.WorkloadIface, spec.NetnsPath, err)
	}

	hs := HostSide{Name: spec.HostIface, MTU: spec.MTU, IPv6: ipv6, Group: spec.Group}
	if p.hostLink, err = addHostVeth(p.hostH, o.netns, hs, spec.WorkloadIface, int(wlNs)); err != nil {
		return nil, err
	}
	// From here on every failure removes the pair.
	defer func() {
		if err != nil {
			err = undoVeth(p.hostH, spec.HostIface, err)
		}
	}()
	if p.wlLink, err = p.wlH.LinkByName(spec.WorkloadIface); err != nil {
		return nil, fmt.Errorf("look up new interface %s in workload: %w", spec.WorkloadIface, err)
	}
	// Sysctls go before the link comes up: accept_dad decides whether the
	// workload's addresses are usable at once.
	if err := writeSysctls(spec.NetnsPath, workloadSideSysctls(spec.WorkloadIface, ipv6)); err != nil {
		return nil, err
	}
	if err := p.wlH.LinkSetUp(p.wlLink); err != nil {
		return nil, fmt.Errorf("set %s up in workload: %w", spec.WorkloadIface, err)
	}
	return p, nil
}

// Finish gives the prepared workload its addresses (each a single address;
// IPv6 ones only if prepared for IPv6), a default route via GatewayIPv4
// on-link with IPv4 ones and via GatewayIPv6 with IPv6 ones (or the
// spec's Routes instead), and returns the workload side's MAC. On failure
// it removes the pair.
func (p *PreparedWorkload) Finish(addrs []netip.Prefix) (mac string, err error) {
	defer p.close()
	defer func() {
		if err != nil {
			err = undoVeth(p.hostH, p.spec.HostIface, err)
		}
	}()
	spec := p.spec
	spec.Addrs = addrs
	if spec, err = spec.normalize(); err != nil {
		return "", fmt.Errorf("workload %s: %w", spec.HostIface, err)
	}
	wantV4, wantV6 := families(spec.Addrs)
	if wantV6 && !p.v6 {
		return "", fmt.Errorf("workload %s: an IPv6 address for a pair prepared without IPv6", spec.HostIface)
	}
	for _, a := range spec.Addrs {
		if err := addWorkloadAddr(p.wlH, p.wlLink, a); err != nil {
			return "", err
		}
	}
	if wantV4 {
		if err := addGatewayRoutes(p.wlH, p.wlLink, GatewayIPv4, spec.Routes); err != nil {
			return "", err
		}
	}
	if wantV6 {
		gw := waitLinkLocal(p.hostH, p.hostLink.Attrs().Index, 2*time.Second)
		if err := addGatewayRoutes(p.wlH, p.wlLink, gw, spec.Routes); err != nil {
			return "", err
		}
	}

	// Read the MAC back: the kernel chose it.
	wlLink, err := p.wlH.LinkByIndex(p.wlLink.Attrs().Index)
	if err != nil {
		return "", fmt.Errorf("read back %s in workload: %w", spec.WorkloadIface, err)
	}
	return wlLink.Attrs().HardwareAddr.String(), nil
}

// Abort removes the prepared pair.
func (p *PreparedWorkload) Abort() error {
	defer p.close()
	return deleteLinkByName(p.hostH, p.spec.HostIface)
}

func (p *PreparedWorkload) close() {
	p.hostH.Close()
	p.wlH.Close()
}

func hostSideSysctls(iface string, wantV6 bool) []sysctl {
	optV6 := !wantV6
	s := []sysctl{
		// Answer ARP for GatewayIPv4 (and anything else routed elsewhere)
		// with our MAC, at once: the default proxy_delay holds replies up
		// to 0.8 s.
		{key: []string{"net", "ipv4", "conf", iface, "proxy_arp"}, value: "1"},
		{key: []string{"net", "ipv4", "neigh", iface, "proxy_delay"}, value: "0"},
		{key: []string{"net", "ipv4", "conf", iface, "forwarding"}, value: "1"},
	}
	if wantV6 {
		s = append(s, sysctl{key: []string{"net", "ipv6", "conf", iface, "disable_ipv6"}, value: "0"})
	}
	return append(s,
		// EUI-64 from HostSideMAC makes the link-local GatewayIPv6 whatever
		// the namespace's default mode (stable-privacy would randomize it).
		sysctl{key: []string{"net", "ipv6", "conf", iface, "addr_gen_mode"}, value: "0", optional: optV6},
		// No DAD: the link-local must answer the workload's first neighbour
		// solicitation, not a second later.
		sysctl{key: []string{"net", "ipv6", "conf", iface, "accept_dad"}, value: "0", optional: optV6},
		sysctl{key: []string{"net", "ipv6", "conf", iface, "accept_ra"}, value: "0", optional: optV6},
		sysctl{key: []string{"net", "ipv6", "conf", iface, "forwarding"}, value: "1", optional: optV6},
	)
}

func workloadSideSysctls(iface string, wantV6 bool) []sysctl {
	// No DAD in the workload: its addresses are unique by IPAM, and a
	// tentative address would fail the workload's first second of traffic.
	// An IPv4-only workload needs no IPv6 setting, and not touching one
	// matters beyond this call: the first look-up of /proc/sys/net/ipv6
	// in a namespace adds an entry to the dentry hash chain that every
	// other namespace's look-up of that name walks (procSysNet), so at
	// 1000 IPv4 workloads this write alone cost 0.5-1 ms per new one. An
	// IPv6 address added later is added without DAD (addWorkloadAddr),
	// and the link-local's DAD is long over by then.
	if !wantV6 {
		return nil
	}
	return []sysctl{
		{key: []string{"net", "ipv6", "conf", iface, "accept_dad"}, value: "0"},
	}
}

func addWorkloadAddr(h *netlink.Handle, link netlink.Link, a netip.Prefix) error {
	addr := &netlink.Addr{IPNet: prefixToIPNet(a)}
	if a.Addr().Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := h.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("add address %s to %s in workload: %w", a, link.Attrs().Name, err)
	}
	return nil
}

// addGatewayRoutes routes the workload's traffic of gw's family via gw:
// all of it (a default route), or only dsts when there are some.
func addGatewayRoutes(h *netlink.Handle, link netlink.Link, gw netip.Addr, dsts []netip.Prefix) error {
	r := workloadDefaultRoute(link.Attrs().Index, gw)
	var some bool
	for _, d := range dsts {
		if d.Addr().Is4() != gw.Is4() {
			continue
		}
		some = true
		rd := *r
		rd.Dst = prefixToIPNet(d.Masked())
		if err := h.RouteAdd(&rd); err != nil {
			return fmt.Errorf("add route %s via %s dev %s in workload: %w", d, gw, link.Attrs().Name, err)
		}
	}
	if some {
		return nil
	}
	if err := h.RouteAdd(r); err != nil {
		return fmt.Errorf("add default route via %s dev %s in workload: %w", gw, link.Attrs().Name, err)
	}
	return nil
}

func workloadDefaultRoute(ifindex int, gw netip.Addr) *netlink.Route {
	r := &netlink.Route{
		LinkIndex: ifindex,
		Dst:       prefixToIPNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0)),
		Gw:        net.IP(gw.AsSlice()),
		Scope:     netlink.SCOPE_UNIVERSE,
	}
	if gw.Is4() {
		// 169.254.1.1 is on no subnet of the workload's: onlink tells the
		// kernel to ARP for it on the device regardless.
		r.Flags = int(netlink.FLAG_ONLINK)
	} else {
		r.Dst = prefixToIPNet(netip.PrefixFrom(netip.IPv6Unspecified(), 0))
	}
	return r
}

// waitLinkLocal returns the link-local address of the host side, waiting
// briefly for the kernel to make it, and falls back to GatewayIPv6 (what
// HostSideMAC and EUI-64 give): the route only needs the address, which the
// host side will hold.
func waitLinkLocal(h *netlink.Handle, ifindex int, wait time.Duration) netip.Addr {
	deadline := time.Now().Add(wait)
	for {
		addrs, err := retryDump("addresses", func() ([]netlink.Addr, error) {
			return h.AddrList(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}, netlink.FAMILY_V6)
		})
		if err == nil {
			for _, a := range addrs {
				if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.IsLinkLocalUnicast() {
					return ip
				}
			}
		}
		if time.Now().After(deadline) {
			return GatewayIPv6
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func deleteLinkByName(h *netlink.Handle, name string) error {
	link, err := h.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if err := h.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// RemoveWorkload deletes the host side of a workload's veth pair, which
// takes the workload side with it. A missing interface is not an error, so
// removal can be retried; an interface of that name that is not a veth is,
// and is left alone.
func RemoveWorkload(hostIface string, opts ...Option) error {
	o := buildOptions(opts)
	h, err := openHandle(o.netns)
	if err != nil {
		return err
	}
	defer h.Close()
	return deleteVethByName(h, hostIface)
}

// openWorkloadIface opens a netlink handle in the workload's namespace and
// finds its interface (spec.WorkloadIface, defaulted in place).
func openWorkloadIface(spec *WorkloadSpec) (*netlink.Handle, netlink.Link, error) {
	if spec.WorkloadIface == "" {
		spec.WorkloadIface = DefaultWorkloadIface
	}
	if spec.NetnsPath == "" {
		return nil, nil, errors.New("NetnsPath: required")
	}
	h, err := openHandle(spec.NetnsPath)
	if err != nil {
		return nil, nil, err
	}
	link, err := h.LinkByName(spec.WorkloadIface)
	if err != nil {
		h.Close()
		return nil, nil, fmt.Errorf("look up %s in workload netns %s: %w", spec.WorkloadIface, spec.NetnsPath, err)
	}
	return h, link, nil
}

// WorkloadAddAddr adds one address to a wired workload (spec.NetnsPath and
// spec.WorkloadIface are used; spec.HostIface helps find the IPv6 gateway),
// and the default route of its family if the workload has none yet. Adding
// an address the workload already holds succeeds.
func WorkloadAddAddr(spec WorkloadSpec, addr netip.Prefix, opts ...Option) error {
	o := buildOptions(opts)
	a, err := hostPrefix(addr)
	if err != nil {
		return err
	}
	h, link, err := openWorkloadIface(&spec)
	if err != nil {
		return err
	}
	defer h.Close()
	gw := GatewayIPv4
	if a.Addr().Is6() {
		if err := writeSysctls(spec.NetnsPath, workloadSideSysctls(spec.WorkloadIface, true)); err != nil {
			return err
		}
		gw = hostLinkLocal(o.netns, spec.HostIface)
	}
	if err := addWorkloadAddr(h, link, a); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	// Add the default route only if there is none: RouteAdd, not replace,
	// so a route the workload already has is never rewritten.
	if err := h.RouteAdd(workloadDefaultRoute(link.Attrs().Index, gw)); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add default route via %s dev %s in workload: %w", gw, spec.WorkloadIface, err)
	}
	return nil
}

// hostLinkLocal finds the host side's link-local address, falling back to
// GatewayIPv6 when the host side cannot be read.
func hostLinkLocal(hostNetns, hostIface string) netip.Addr {
	if hostIface == "" {
		return GatewayIPv6
	}
	h, err := openHandle(hostNetns)
	if err != nil {
		return GatewayIPv6
	}
	defer h.Close()
	link, err := h.LinkByName(hostIface)
	if err != nil {
		return GatewayIPv6
	}
	return waitLinkLocal(h, link.Attrs().Index, 0)
}

// WorkloadDelAddr removes one address from a wired workload. Removing an
// address it does not hold succeeds. The default routes stay: they are
// harmless without addresses and needed again when one comes back.
func WorkloadDelAddr(spec WorkloadSpec, addr netip.Prefix, opts ...Option) error {
	a, err := hostPrefix(addr)
	if err != nil {
		return err
	}
	h, link, err := openWorkloadIface(&spec)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := h.AddrDel(link, &netlink.Addr{IPNet: prefixToIPNet(a)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("remove address %s from %s in workload: %w", a, spec.WorkloadIface, err)
	}
	return nil
}

// LinkExists reports whether an interface of that name exists.
func LinkExists(name string, opts ...Option) bool {
	o := buildOptions(opts)
	h, err := openHandle(o.netns)
	if err != nil {
		return false
	}
	defer h.Close()
	_, err = h.LinkByName(name)
	return err == nil
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{
		IP:   net.IP(p.Addr().AsSlice()),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}
}
