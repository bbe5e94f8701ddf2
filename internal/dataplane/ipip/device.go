package ipip

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/calico-go/calico/internal/dataplane/netdev"
)

// uplinkOf is the interface holding the host's address: where IPIP from
// other nodes arrives.
func uplinkOf(local netip.Addr) (netlink.Link, error) {
	_, name, err := netdev.HostIPPrefix(local)
	if err != nil {
		return nil, fmt.Errorf("find the uplink: %w", err)
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find the uplink %s: %w", name, err)
	}
	return l, nil
}

// ensureTun makes name a persistent TUN device (layer 3, no packet info,
// no reader) with the MTU, up. A device of that name of another kind is
// replaced: the name is ours.
func ensureTun(name string, mtu int) (netlink.Link, error) {
	l, err := netlink.LinkByName(name)
	if err == nil {
		if t, ok := l.(*netlink.Tuntap); !ok || t.Mode != netlink.TUNTAP_MODE_TUN {
			if err := netlink.LinkDel(l); err != nil {
				return nil, fmt.Errorf("replace %s (a %s): %w", name, l.Type(), err)
			}
			l = nil
		}
	} else if !isNotFound(err) {
		return nil, fmt.Errorf("look up %s: %w", name, err)
	} else {
		l = nil
	}
	if l == nil {
		t := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}, Mode: netlink.TUNTAP_MODE_TUN, Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_ONE_QUEUE}
		if err := netlink.LinkAdd(t); err != nil {
			return nil, fmt.Errorf("create %s (tun): %w", name, err)
		}
		if l, err = netlink.LinkByName(name); err != nil {
			return nil, fmt.Errorf("look up %s: %w", name, err)
		}
	}
	if err := upWithMTU(l, mtu); err != nil {
		return nil, err
	}
	return l, nil
}

// deleteTun removes our TUN device if it exists (with its tc programs and
// the routes through it).
func deleteTun(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if t, ok := l.(*netlink.Tuntap); !ok || t.Mode != netlink.TUNTAP_MODE_TUN {
		return nil // not ours
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// ensureKernelTunnel readies the kernel's IPIP fallback device (it exists
// in every namespace once the ipip module is loaded; created otherwise):
// any remote, any local, so the route's gateway is the outer destination
// and the outer source is the address the route lookup picks, the host's.
func ensureKernelTunnel(name string, mtu int) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		if !isNotFound(err) {
			return fmt.Errorf("look up %s: %w", name, err)
		}
		if err := netlink.LinkAdd(&netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
			return fmt.Errorf("create %s (ipip): %w", name, err)
		}
		if l, err = netlink.LinkByName(name); err != nil {
			return err
		}
	}
	return upWithMTU(l, mtu)
}

func upWithMTU(l netlink.Link, mtu int) error {
	if l.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("set %s MTU %d: %w", l.Attrs().Name, mtu, err)
		}
	}
	if l.Attrs().Flags&1 == 0 { // net.FlagUp
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", l.Attrs().Name, err)
		}
	}
	return nil
}

// loosenRPFilter: decapsulated packets enter the stack on the uplink, while
// the route back to their (workload) source goes through the tunnel, so a
// strict reverse-path filter (1) would drop them. The kernel uses the larger
// of conf/all and conf/<dev>, so setting the device to loose (2) is enough
// and changes nothing for hosts that already run loose or off.
func loosenRPFilter(dev string) error {
	read := func(d string) (string, error) {
		b, err := os.ReadFile(filepath.Join("/proc/sys/net/ipv4/conf", d, "rp_filter"))
		return strings.TrimSpace(string(b)), err
	}
	all, err := read("all")
	if err != nil {
		return fmt.Errorf("read rp_filter: %w", err)
	}
	mine, err := read(dev)
	if err != nil {
		return fmt.Errorf("read rp_filter of %s: %w", dev, err)
	}
	if all != "1" && mine != "1" {
		return nil
	}
	if err := os.WriteFile(filepath.Join("/proc/sys/net/ipv4/conf", dev, "rp_filter"), []byte("2"), 0o644); err != nil {
		return fmt.Errorf("set rp_filter of %s to loose: %w", dev, err)
	}
	return nil
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}
