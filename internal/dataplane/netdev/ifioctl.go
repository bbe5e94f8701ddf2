package netdev

import (
	"errors"
	"fmt"
	"net"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// IfLookup looks host sides up by name with ioctls on a socket of the
// namespace at path ("" the caller's): index, flags, MTU, hardware address
// and driver, all WorkloadIfaceSyncer reads of a link. Netlink describes
// a veth with its peer's namespace id, which the kernel finds by walking
// every namespace id the host has (one per workload): at 1000 workloads
// a link dump cost the read-back of the host sides (every 30 s, after the
// resync) 25-30 ms, half of it that walk, and each one-link request of a
// container start walked them too. A lookup here is a hash lookup by name
// in the kernel, per ioctl.
type IfLookup struct{ fd int }

func NewIfLookup(path string) (*IfLookup, error) {
	fd := -1
	err := runInNetns(path, func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("socket for interface lookups: %w", err)
	}
	return &IfLookup{fd: fd}, nil
}

func (l *IfLookup) Close() { unix.Close(l.fd) }

// hwIfreq is struct ifreq holding a struct sockaddr (SIOCGIFHWADDR), which
// unix.Ifreq does not expose.
type hwIfreq struct {
	name   [unix.IFNAMSIZ]byte
	family uint16
	data   [22]byte
}

// find is the link named name as LinkByName describes what the syncer
// reads of it (a *netlink.Veth for a veth, else a *netlink.Device), or nil
// when there is none.
func (l *IfLookup) find(name string) (netlink.Link, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, nil // not a name an interface can have
	}
	fail := func(what string, err error) (netlink.Link, error) {
		if errors.Is(err, unix.ENODEV) {
			return nil, nil // gone meanwhile
		}
		return nil, fmt.Errorf("look up %s (%s): %w", name, what, err)
	}
	if err := unix.IoctlIfreq(l.fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return fail("index", err)
	}
	attrs := netlink.LinkAttrs{Name: name, Index: int(ifr.Uint32())}
	if err := unix.IoctlIfreq(l.fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fail("flags", err)
	}
	if ifr.Uint16()&unix.IFF_UP != 0 {
		attrs.Flags |= net.FlagUp
	}
	if err := unix.IoctlIfreq(l.fd, unix.SIOCGIFMTU, ifr); err != nil {
		return fail("mtu", err)
	}
	attrs.MTU = int(ifr.Uint32())
	var hw hwIfreq
	copy(hw.name[:], name)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(l.fd), unix.SIOCGIFHWADDR, uintptr(unsafe.Pointer(&hw))); e != 0 {
		return fail("hardware address", e)
	}
	if hw.family == unix.ARPHRD_ETHER {
		attrs.HardwareAddr = net.HardwareAddr(append([]byte(nil), hw.data[:6]...))
	}
	drv, err := unix.IoctlGetEthtoolDrvinfo(l.fd, name)
	if err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
		return fail("driver", err)
	}
	if err == nil && unix.ByteSliceToString(drv.Driver[:]) == "veth" {
		return &netlink.Veth{LinkAttrs: attrs}, nil
	}
	return &netlink.Device{LinkAttrs: attrs}, nil
}

// index is the index of the interface named name; false when there is none.
func (l *IfLookup) Index(name string) (int, bool, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, false, nil
	}
	if err := unix.IoctlIfreq(l.fd, unix.SIOCGIFINDEX, ifr); err != nil {
		if errors.Is(err, unix.ENODEV) {
			return 0, false, nil
		}
		return 0, false, err
	}
	return int(ifr.Uint32()), true, nil
}
