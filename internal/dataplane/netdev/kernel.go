package netdev

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"

	"github.com/calico-go/calico/internal/api"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// EnableForwarding turns on IPv4 and IPv6 forwarding in the namespace. A new
// namespace starts with both off, which would make every host a dead end.
// IPv6 is skipped where the kernel has none.
func EnableForwarding(opts ...Option) error {
	o := buildOptions(opts)
	return writeSysctls(o.netns, []sysctl{
		{key: []string{"net", "ipv4", "ip_forward"}, value: "1"},
		{key: []string{"net", "ipv6", "conf", "all", "forwarding"}, value: "1", optional: true},
	})
}

var linkTypes struct {
	sync.Mutex
	probed map[string]error
}

// HaveLinkType reports whether the kernel can create links of kind (ipip,
// vxlan, wireguard, ...). See ProbeLinkType.
func HaveLinkType(kind string) bool {
	return ProbeLinkType(kind) == nil
}

// ProbeLinkType finds out whether the kernel can create links of kind by
// creating one and deleting it, and says why not if it cannot: a kernel
// without the type answers "operation not supported". That is the only
// reliable test here, where features are built in or absent and there are
// no modules to look for.
//
// The probe runs in a private namespace made for it and dropped after, so
// it never shows up in (or collides with anything in) the host's. The
// answer is a property of the kernel and is cached for the process.
func ProbeLinkType(kind string) error {
	linkTypes.Lock()
	defer linkTypes.Unlock()
	if err, ok := linkTypes.probed[kind]; ok {
		return err
	}
	err := probeLinkType(kind)
	if linkTypes.probed == nil {
		linkTypes.probed = map[string]error{}
	}
	linkTypes.probed[kind] = err
	return err
}

func probeLinkType(kind string) error {
	h, closeNs, err := privateNetnsHandle()
	if err != nil {
		return fmt.Errorf("probe link type %s: %w", kind, err)
	}
	defer closeNs()
	defer h.Close()

	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	name := "probe" + hex.EncodeToString(suffix[:])
	la := netlink.NewLinkAttrs()
	la.Name = name

	var link netlink.Link
	switch kind {
	case "veth":
		link = &netlink.Veth{LinkAttrs: la, PeerName: name + "p", PeerTxQLen: -1}
	case "vxlan":
		link = &netlink.Vxlan{LinkAttrs: la, VxlanId: 1, Port: api.VXLANPort}
	case "vrf":
		link = &netlink.Vrf{LinkAttrs: la, Table: 1000}
	case "macvlan", "ipvlan", "macvtap", "ipvtap":
		// These need a parent link: make one (a veth) first.
		pa := netlink.NewLinkAttrs()
		pa.Name = name + "p"
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: pa, PeerName: name + "q", PeerTxQLen: -1}); err != nil {
			return fmt.Errorf("probe link type %s: create parent veth: %w", kind, err)
		}
		parent, err := h.LinkByName(pa.Name)
		if err != nil {
			return fmt.Errorf("probe link type %s: %w", kind, err)
		}
		la.ParentIndex = parent.Attrs().Index
		link = &netlink.GenericLink{LinkAttrs: la, LinkType: kind}
	default:
		// ipip, gre, sit, wireguard, dummy, bridge...: no arguments needed.
		link = &netlink.GenericLink{LinkAttrs: la, LinkType: kind}
	}
	if err := h.LinkAdd(link); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("this kernel has no %s support (creating a %s link: %w)", kind, kind, err)
		}
		return fmt.Errorf("probe link type %s: %w", kind, err)
	}
	if l, err := h.LinkByName(name); err == nil {
		_ = h.LinkDel(l) // the namespace goes anyway; this is tidiness
	}
	return nil
}

// privateNetnsHandle makes a new, unnamed namespace and returns a netlink
// handle inside it. The namespace lives as long as the handle or the
// returned closer holds it.
func privateNetnsHandle() (*netlink.Handle, func(), error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: err}
			return
		}
		defer orig.Close()
		// netns.New moves this thread into the new namespace.
		ns, err := netns.New()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("create namespace: %w", err)}
			return
		}
		if err := netns.Set(orig); err != nil {
			ns.Close()
			done <- result{err: fmt.Errorf("leave new namespace: %w", err)}
			return // still locked: the runtime discards this thread
		}
		runtime.UnlockOSThread()
		done <- result{ns: ns}
	}()
	res := <-done
	if res.err != nil {
		return nil, nil, res.err
	}
	h, err := netlink.NewHandleAt(res.ns, unix.NETLINK_ROUTE)
	if err != nil {
		res.ns.Close()
		return nil, nil, err
	}
	return h, func() { res.ns.Close() }, nil
}

// HostIPPrefix finds the interface holding ip in the namespace and returns
// the address with its prefix length (10.0.2.15/24) and the interface name.
// It is how the agent checks that --ip really is this host's address.
func HostIPPrefix(ip netip.Addr, opts ...Option) (netip.Prefix, string, error) {
	o := buildOptions(opts)
	ip = ip.Unmap()
	if !ip.IsValid() {
		return netip.Prefix{}, "", errors.New("host address: invalid")
	}
	h, err := openHandle(o.netns)
	if err != nil {
		return netip.Prefix{}, "", err
	}
	defer h.Close()
	addrs, err := retryDump("addresses", func() ([]netlink.Addr, error) { return h.AddrList(nil, familyOf(ip)) })
	if err != nil {
		return netip.Prefix{}, "", err
	}
	for _, a := range addrs {
		got, ok := netip.AddrFromSlice(a.IP)
		if !ok || got.Unmap() != ip || a.IPNet == nil {
			continue
		}
		ones, _ := a.Mask.Size()
		link, err := h.LinkByIndex(a.LinkIndex)
		if err != nil {
			return netip.Prefix{}, "", fmt.Errorf("host address %s: interface %d: %w", ip, a.LinkIndex, err)
		}
		return netip.PrefixFrom(ip, ones), link.Attrs().Name, nil
	}
	return netip.Prefix{}, "", fmt.Errorf("host address %s is not assigned to any interface in network namespace %s", ip, nsName(o.netns))
}
