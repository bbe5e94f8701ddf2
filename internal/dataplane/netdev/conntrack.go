package netdev

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EndpointConntrack forgets the connections of an address that stops being
// a local workload's, or moves to another local workload.
//
// IPAM hands a removed workload's address to the next one. The forward
// chains accept "ct state established,related" on their first rule, so a
// conntrack entry the old workload's policy admitted (a peer it allowed in,
// the replies of its own outbound flow) would carry the old flow's packets
// into the new workload, whatever the new one's policy says, until the
// entry times out (five days for established TCP). With the entries gone,
// the next packet of such a flow is new to conntrack and meets the new
// workload's policy.
//
// It is fed the desired local addresses on every pass (Note) and compares
// them with the last ones, so a resync that changes nothing costs a map
// comparison and no netlink at all. Addresses owed a flush stay owed until
// a flush succeeds, so a failed one is retried by the next pass. The
// kernel only dumps the whole table (ctnetlink's delete takes one exact
// tuple), so a flush is one dump per address family that has addresses
// owed, and one delete per entry that names one of them, in either
// direction, as source or destination.
//
// Safe for concurrent use.
type EndpointConntrack struct {
	mu sync.Mutex
	o  options
	h  *netlink.Handle
	// owner: each local workload address and its host-side interface, as
	// last noted; primed once the first Note has set it.
	owner  map[netip.Addr]string
	primed bool
	// owed: addresses whose entries must go; true for one that moved to
	// another local workload (its new route may appear before the flush
	// that follows the routes, so it is flushed before them too).
	owed map[netip.Addr]bool
}

// NewEndpointConntrack returns a tracker for the caller's namespace, or the
// one given by InNetns. It touches nothing until a flush is owed.
func NewEndpointConntrack(opts ...Option) *EndpointConntrack {
	return &EndpointConntrack{o: buildOptions(opts), owner: map[netip.Addr]string{}, owed: map[netip.Addr]bool{}}
}

// Close releases the netlink socket.
func (c *EndpointConntrack) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.h != nil {
		c.h.Close()
		c.h = nil
	}
}

// Primed says whether Prime or Note has run.
func (c *EndpointConntrack) Primed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.primed
}

// Prime is an agent's first Note. Workloads may have come and gone while
// no agent ran (`container remove` needs none), and what the last agent
// saw is lost, so it owes a flush to the local addresses the kernel does
// not yet route to their interface (kernel: the workload routes found,
// WorkloadRoutes; a workload that is new, or whose address was another's),
// flushed before the routes too, and to the free addresses (addresses of
// this host's blocks that no workload holds now: the entries of a workload
// removed meanwhile, waiting for the address's next holder).
func (c *EndpointConntrack) Prime(local, kernel map[netip.Addr]string, free []netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for a, dev := range local {
		if kernel[a] != dev {
			c.owed[a] = true
		}
	}
	for _, a := range free {
		if _, ok := c.owed[a]; !ok {
			c.owed[a] = false
		}
	}
	c.primed = true
	clear(c.owner)
	for a, dev := range local {
		c.owner[a] = dev
	}
}

// WorkloadRoutes lists the owned routes (RouteProtocol unless
// WithProtocol) of the main table that lead into an interface without a
// gateway, to a single address: the local workload routes an agent left,
// address -> interface.
func WorkloadRoutes(opts ...Option) (map[netip.Addr]string, error) {
	o := buildOptions(opts)
	h, err := openHandle(o.netns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	routes, err := retryDump("routes", func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: o.proto, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, err
	}
	links, err := retryDump("links", h.LinkList)
	if err != nil {
		return nil, err
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	out := map[netip.Addr]string{}
	for _, r := range routes {
		if r.Dst == nil || r.Gw != nil || r.Type != unix.RTN_UNICAST || names[r.LinkIndex] == "" {
			continue
		}
		p, ok := netipPrefix(r.Dst)
		if ok && p.IsSingleIP() {
			out[p.Addr()] = names[r.LinkIndex]
		}
	}
	return out, nil
}

func netipPrefix(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits), true
}

// Note records the local workloads' addresses (address -> host-side
// interface) about to be applied. An address that was a local workload's
// at the last Note and is no longer one, or is now another interface's,
// is owed a flush. A first Note (without Prime) only learns.
func (c *EndpointConntrack) Note(local map[netip.Addr]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.primed {
		for a, was := range c.owner {
			now, ok := local[a]
			switch {
			case !ok:
				if _, moved := c.owed[a]; !moved {
					c.owed[a] = false
				}
			case now != was:
				c.owed[a] = true
			}
		}
	}
	c.primed = true
	clear(c.owner)
	for a, dev := range local {
		c.owner[a] = dev
	}
}

// Owed lists the addresses owed a flush, sorted.
func (c *EndpointConntrack) Owed() []netip.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	return sortedAddrs(c.owed, false)
}

// FlushMoved deletes the entries of the addresses owed a flush that moved
// to another local workload, and leaves them owed: the caller runs it
// before the routes change, so that no old entry is there when the new
// owner's route appears, and Flush again after routes and policy, for
// any entry made meanwhile through the old path.
func (c *EndpointConntrack) FlushMoved() (deleted int, addrs []netip.Addr, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	addrs = sortedAddrs(c.owed, true)
	deleted, err = c.flush(addrs)
	return deleted, addrs, err
}

// Flush deletes the conntrack entries of every address owed a flush, and
// says how many it deleted and for which addresses. The caller runs it
// after the routes and the policy have been applied: the old workload then
// has no route and no policy left, so nothing can make a new accepted
// entry for its address through it.
func (c *EndpointConntrack) Flush() (deleted int, addrs []netip.Addr, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	addrs = sortedAddrs(c.owed, false)
	deleted, err = c.flush(addrs)
	if err == nil {
		clear(c.owed)
	}
	return deleted, addrs, err
}

func (c *EndpointConntrack) flush(addrs []netip.Addr) (int, error) {
	if len(addrs) == 0 {
		return 0, nil
	}
	if c.h == nil {
		h, err := openHandleFamily(c.o.netns, unix.NETLINK_NETFILTER)
		if err != nil {
			return 0, err
		}
		c.h = h
	}
	return DeleteConntrackOf(c.h, addrs)
}

// DeleteConntrackOf deletes, through h (nil: the calling thread's
// namespace), every conntrack entry whose original or reply direction has
// one of addrs as source or destination: one table dump per address family
// present in addrs.
func DeleteConntrackOf(h *netlink.Handle, addrs []netip.Addr) (int, error) {
	v4, v6 := addrSet{}, addrSet{}
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() {
			v4[a] = struct{}{}
		} else {
			v6[a] = struct{}{}
		}
	}
	if h == nil {
		h = &netlink.Handle{} // the package's sockets, in the thread's namespace
	}
	total := 0
	var errs []error
	for _, f := range []struct {
		family netlink.InetFamily
		set    addrSet
	}{{unix.AF_INET, v4}, {unix.AF_INET6, v6}} {
		if len(f.set) == 0 {
			continue
		}
		n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, f.family, f.set)
		total += int(n)
		if err != nil {
			errs = append(errs, fmt.Errorf("delete conntrack entries of %d former workload address(es): %w", len(f.set), err))
		}
	}
	return total, errors.Join(errs...)
}

// addrSet matches a conntrack entry that names one of its addresses in
// either direction, as source or destination (netlink.ConntrackFilter
// matches all of its fields at once, and one address per field).
type addrSet map[netip.Addr]struct{}

func (s addrSet) MatchConntrackFlow(f *netlink.ConntrackFlow) bool {
	for _, ip := range []net.IP{f.Forward.SrcIP, f.Forward.DstIP, f.Reverse.SrcIP, f.Reverse.DstIP} {
		if a, ok := netip.AddrFromSlice(ip); ok {
			if _, hit := s[a.Unmap()]; hit {
				return true
			}
		}
	}
	return false
}

func sortedAddrs(m map[netip.Addr]bool, movedOnly bool) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a, moved := range m {
		if moved || !movedOnly {
			out = append(out, a)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}
