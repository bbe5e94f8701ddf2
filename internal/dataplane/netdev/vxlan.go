package netdev

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
)

// VXLANStats counts what one VXLANSyncer.Apply did.
type VXLANStats struct {
	LinkChanges  int // device created, deleted or modified
	NeighAdded   int // neighbour entries added or corrected
	NeighDeleted int
	FDBAdded     int // forwarding entries added or corrected
	FDBDeleted   int
}

// Changes is the number of kernel writes that succeeded.
func (s VXLANStats) Changes() int {
	return s.LinkChanges + s.NeighAdded + s.NeighDeleted + s.FDBAdded + s.FDBDeleted
}

// VXLANSyncer converges the VXLAN tunnel device and its per-peer entries to
// a calc.VXLAN. Like RouteSyncer it works from a fresh read of the kernel
// on every Apply. It is safe for concurrent use.
//
// Apply it before the routes: recreating the device (when its VNI or local
// address changes) drops the routes through it, which the next route Apply
// restores.
type VXLANSyncer struct {
	mu    sync.Mutex
	o     options
	h     *netlink.Handle
	stats VXLANStats
}

// NewVXLANSyncer returns a syncer for the caller's namespace, or the one
// given by InNetns. Like NewRouteSyncer it opens its socket at once and
// retries in Apply if that fails.
func NewVXLANSyncer(opts ...Option) *VXLANSyncer {
	s := &VXLANSyncer{o: buildOptions(opts)}
	if h, err := openHandle(s.o.netns); err == nil {
		s.h = h
	}
	return s
}

// Close releases the syncer's netlink socket. The device stays.
func (s *VXLANSyncer) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h != nil {
		s.h.Close()
		s.h = nil
	}
}

// Stats returns what the last Apply did.
func (s *VXLANSyncer) Stats() VXLANStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Apply makes the kernel match v. Enabled: the device exists with v's VNI,
// local address, port 4789, learning off, MAC and MTU, and is up; each
// peer has a permanent neighbour entry HostIP -> MAC on the device and a
// forwarding entry MAC -> HostIP, and entries for hosts no longer peers are
// removed. Disabled: the device (and with it every entry) is deleted.
//
// A bad peer does not stop the others; the error joins one per failure.
func (s *VXLANSyncer) Apply(v calc.VXLAN) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats = VXLANStats{}
	if s.h == nil {
		h, err := openHandle(s.o.netns)
		if err != nil {
			return err
		}
		s.h = h
	}
	if v.Device == "" {
		v.Device = api.VXLANDevice
	}
	if !v.Enabled {
		return s.remove(v.Device)
	}
	want, err := vxlanLink(v)
	if err != nil {
		return fmt.Errorf("vxlan %s: %w", v.Device, err)
	}
	link, err := s.ensureLink(want)
	if err != nil {
		return fmt.Errorf("vxlan %s: %w", v.Device, err)
	}
	idx := link.Attrs().Index

	var errs []error
	neighs := map[netip.Addr]net.HardwareAddr{}
	fdb := map[string]netip.Addr{}
	for _, p := range v.Peers {
		ip := p.HostIP.Unmap()
		mac, err := net.ParseMAC(p.MAC)
		switch {
		case !ip.IsValid():
			err = errors.New("invalid host address")
		case err != nil:
		case len(mac) != 6:
			err = fmt.Errorf("%s is not an Ethernet MAC", p.MAC)
		case ip == v.LocalIP.Unmap():
			err = errors.New("peer is this host")
		case neighs[ip] != nil:
			err = errors.New("duplicate peer")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("vxlan %s: peer %s (%s): %w", v.Device, p.HostIP, p.MAC, err))
			continue
		}
		neighs[ip] = mac
		fdb[mac.String()] = ip
	}
	if err := s.syncNeighs(v.Device, idx, neighs); err != nil {
		errs = append(errs, err)
	}
	if err := s.syncFDB(v.Device, idx, fdb); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func vxlanLink(v calc.VXLAN) (*netlink.Vxlan, error) {
	if err := checkIfaceName(v.Device); err != nil {
		return nil, fmt.Errorf("Device: %w", err)
	}
	if v.VNI < 1 || v.VNI > 1<<24-1 {
		return nil, fmt.Errorf("VNI: %d is outside 1..16777215", v.VNI)
	}
	local := v.LocalIP.Unmap()
	if !local.IsValid() || local.IsUnspecified() {
		return nil, errors.New("LocalIP: required")
	}
	if v.MAC == "" {
		v.MAC = api.VTEPMAC(local)
	}
	mac, err := net.ParseMAC(v.MAC)
	if err != nil || len(mac) != 6 || mac[0]&1 != 0 {
		return nil, fmt.Errorf("MAC: %q is not a unicast Ethernet MAC", v.MAC)
	}
	if v.MTU == 0 {
		v.MTU = api.VXLANMTU
	}
	if v.MTU < 68 || v.MTU > 65535 {
		return nil, fmt.Errorf("MTU: %d is outside 68..65535", v.MTU)
	}
	la := netlink.NewLinkAttrs()
	la.Name = v.Device
	la.MTU = v.MTU
	la.HardwareAddr = mac
	la.Flags = net.FlagUp // created up, in the same request
	// Offloads stay at the kernel's defaults (outer UDP checksum on, GRO
	// on, source port from the inner flow hash), measured on the bench's
	// routed world: TCP superpackets (~60 KB) cross both hosts intact, so
	// the device does no per-MTU work. Turning GRO off here halves the
	// receivers' ACKs (the gro_cells pass changes their timing) but saves
	// under 2% of CPU per GB, within noise. These settings are exactly the
	// raw recipe's (`ip link add type vxlan ... nolearning`: same `ip -d
	// link` output), and an ablation in the bench's world (agents
	// stopped, nftables removed) put this device, its routes, neighbours
	// and FDB entries and the workload veth hop at 1.03-1.10x the CPU per
	// GB of host-to-host, the raw recipe at 1.01-1.02x: what the path
	// costs beyond that is netfilter (see the nft package's vxlan-in).
	// That host-to-host kept the hosts' ruleset; against bare hosts the
	// recipe itself costs 1.3x (1 stream) to 1.5x (4) the CPU per GB and
	// reaches 0.76 / 0.69 of their throughput (calico-bench's "bare
	// kernel" rows): the device's own ceiling on this machine.
	return &netlink.Vxlan{
		LinkAttrs: la,
		VxlanId:   v.VNI,
		SrcAddr:   net.IP(local.AsSlice()),
		Port:      api.VXLANPort,
		Learning:  false, // peers come from the datastore, never from traffic
	}, nil
}

// ensureLink creates the device or brings an existing one in line. VNI,
// local address, port and learning cannot be changed on a live device, so
// a device that differs in those is deleted and created again.
func (s *VXLANSyncer) ensureLink(want *netlink.Vxlan) (netlink.Link, error) {
	h := s.h
	link, err := h.LinkByName(want.Name)
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("look up device: %w", err)
	}
	if err == nil {
		have, ok := link.(*netlink.Vxlan)
		if !ok {
			return nil, fmt.Errorf("an interface of that name exists and is a %s, not a vxlan device; not touching it", link.Type())
		}
		if have.VxlanId != want.VxlanId || !have.SrcAddr.Equal(want.SrcAddr) || have.Port != want.Port ||
			have.Learning || have.Group != nil && !have.Group.IsUnspecified() || have.FlowBased {
			if err := h.LinkDel(link); err != nil {
				return nil, fmt.Errorf("delete device to recreate it with new parameters: %w", err)
			}
			s.stats.LinkChanges++
			link = nil
		}
	}
	if link == nil {
		if err := h.LinkAdd(want); err != nil {
			return nil, fmt.Errorf("create device (vni %d local %s dstport %d): %w", want.VxlanId, want.SrcAddr, want.Port, err)
		}
		s.stats.LinkChanges++
		if link, err = h.LinkByName(want.Name); err != nil {
			return nil, fmt.Errorf("look up new device: %w", err)
		}
	}
	attrs := link.Attrs()
	if !bytes.Equal(attrs.HardwareAddr, want.HardwareAddr) {
		if err := h.LinkSetHardwareAddr(link, want.HardwareAddr); err != nil {
			return nil, fmt.Errorf("set MAC %s: %w", want.HardwareAddr, err)
		}
		s.stats.LinkChanges++
	}
	if attrs.MTU != want.MTU {
		if err := h.LinkSetMTU(link, want.MTU); err != nil {
			return nil, fmt.Errorf("set MTU %d: %w", want.MTU, err)
		}
		s.stats.LinkChanges++
	}
	if attrs.Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("set up: %w", err)
		}
		s.stats.LinkChanges++
	}
	return link, nil
}

// syncNeighs reconciles the permanent neighbour entries on the device.
// Entries the kernel learned by itself (not permanent) are left to it,
// except that a desired peer's entry is overwritten with the permanent one.
func (s *VXLANSyncer) syncNeighs(dev string, idx int, want map[netip.Addr]net.HardwareAddr) error {
	var errs []error
	done := map[netip.Addr]bool{}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		have, err := retryDump("neighbours", func() ([]netlink.Neigh, error) { return s.h.NeighList(idx, fam) })
		if err != nil {
			return fmt.Errorf("vxlan %s: %w", dev, err)
		}
		for _, n := range have {
			ip, ok := netip.AddrFromSlice(n.IP)
			if !ok || n.LinkIndex != idx {
				continue
			}
			ip = ip.Unmap()
			mac, desired := want[ip]
			if n.State&netlink.NUD_PERMANENT == 0 {
				continue // kernel-managed; a desired one is overwritten below
			}
			if desired && bytes.Equal(n.HardwareAddr, mac) {
				done[ip] = true
				continue
			}
			if desired {
				continue // wrong MAC: NeighSet below replaces it
			}
			if err := s.h.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("vxlan %s: delete stale neighbour %s: %w", dev, ip, err))
				continue
			}
			s.stats.NeighDeleted++
		}
	}
	for ip, mac := range want {
		if done[ip] {
			continue
		}
		n := &netlink.Neigh{
			LinkIndex:    idx,
			Family:       familyOf(ip),
			State:        netlink.NUD_PERMANENT,
			Type:         unix.RTN_UNICAST,
			IP:           net.IP(ip.AsSlice()),
			HardwareAddr: mac,
		}
		if err := s.h.NeighSet(n); err != nil {
			errs = append(errs, fmt.Errorf("vxlan %s: neighbour %s lladdr %s: %w", dev, ip, mac, err))
			continue
		}
		s.stats.NeighAdded++
	}
	return errors.Join(errs...)
}

// syncFDB reconciles the device's forwarding entries. The device is ours
// and learns nothing, so every entry on it is ours: each MAC keeps exactly
// one destination, its peer's address, and other entries go.
func (s *VXLANSyncer) syncFDB(dev string, idx int, want map[string]netip.Addr) error {
	have, err := retryDump("forwarding entries", func() ([]netlink.Neigh, error) { return s.h.NeighList(idx, unix.AF_BRIDGE) })
	if err != nil {
		return fmt.Errorf("vxlan %s: %w", dev, err)
	}
	var errs []error
	done := map[string]bool{}
	for _, n := range have {
		if n.LinkIndex != idx {
			continue
		}
		mac := n.HardwareAddr.String()
		dst, _ := netip.AddrFromSlice(n.IP)
		dst = dst.Unmap()
		if wdst, ok := want[mac]; ok && wdst == dst && !done[mac] && n.State&netlink.NUD_PERMANENT != 0 {
			done[mac] = true
			continue
		}
		// Stale MAC, a wrong or extra destination, or not permanent:
		// delete exactly this destination.
		del := &netlink.Neigh{
			LinkIndex:    idx,
			Family:       unix.AF_BRIDGE,
			Flags:        netlink.NTF_SELF,
			HardwareAddr: n.HardwareAddr,
			IP:           n.IP,
		}
		if err := s.h.NeighDel(del); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("vxlan %s: delete forwarding entry %s dst %s: %w", dev, mac, dst, err))
			continue
		}
		s.stats.FDBDeleted++
	}
	for mac, dst := range want {
		if done[mac] {
			continue
		}
		hw, _ := net.ParseMAC(mac)
		n := &netlink.Neigh{
			LinkIndex:    idx,
			Family:       unix.AF_BRIDGE,
			Flags:        netlink.NTF_SELF,
			State:        netlink.NUD_PERMANENT,
			HardwareAddr: hw,
			IP:           net.IP(dst.AsSlice()),
		}
		if err := s.h.NeighSet(n); err != nil {
			errs = append(errs, fmt.Errorf("vxlan %s: forwarding entry %s dst %s: %w", dev, mac, dst, err))
			continue
		}
		s.stats.FDBAdded++
	}
	return errors.Join(errs...)
}

// remove deletes the device if it exists. A same-named interface of
// another type is somebody else's and is left alone.
func (s *VXLANSyncer) remove(dev string) error {
	link, err := s.h.LinkByName(dev)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("vxlan %s: look up device: %w", dev, err)
	}
	if _, ok := link.(*netlink.Vxlan); !ok {
		return fmt.Errorf("vxlan %s: an interface of that name is a %s, not a vxlan device; not deleting it", dev, link.Type())
	}
	if err := s.h.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("vxlan %s: delete device: %w", dev, err)
	}
	s.stats.LinkChanges++
	return nil
}

func familyOf(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}
