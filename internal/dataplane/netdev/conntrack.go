package netdev

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
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
// The same holds for this host's entries of another host's workload
// address (its local peers' flows with it): the next holder would answer
// on them past this host's policy. The agent therefore also reports every
// address that leaves an endpoint record, here or elsewhere (Left,
// LeftElsewhere: a workload removed and added again under its name between
// two passes keeps its interface and address, so only the records show
// it), and a starting agent owes a flush to every pool address no record
// holds (OweUnheld) and to the addresses of the records changed since the
// last agent's saved datastore revision (Owe: an address that changed
// hands while no agent ran here is held again).
//
// It is fed the desired local addresses on every pass (Note) and compares
// them with the last ones, so a resync that changes nothing costs a map
// comparison and no netlink at all. Addresses owed a flush stay owed until
// a flush succeeds, so a failed one is retried by the next pass.
// ctnetlink deletes one exact entry at a time, so a flush finds the
// entries first: per IPv4 address, two dumps the kernel filters (Linux
// 5.8+; it walks the table and sends only the entries with that address as
// the original or the reply source, ctFilterFields), or, for many
// addresses at once and for IPv6, one whole dump of the family, matched
// here on all four addresses; then one delete per entry found.
//
// Safe for concurrent use.
type EndpointConntrack struct {
	mu sync.Mutex
	o  options
	ct *conntrackConn
	// owner: each local workload address and its host-side interface, as
	// last noted; primed once the first Note has set it.
	owner  map[netip.Addr]string
	primed bool
	// owed: addresses whose entries must go; true for one that moved to
	// another local workload (its new route may appear before the flush
	// that follows the routes, so it is flushed before them too).
	owed map[netip.Addr]bool
	// left: addresses whose endpoint record went, or dropped them, since
	// the last Note, with the interface the record named. A workload
	// removed and added again under the same name between two passes has
	// the same address and interface at both Notes; only the records'
	// coming and going show the address changed hands.
	left map[netip.Addr]string
	// leftElsewhere: addresses that left another host's workload since the
	// last Note. This host's entries of their flows (its workloads' flows
	// with them) would take the next holder's packets as replies, past
	// this host's policy.
	leftElsewhere map[netip.Addr]bool
	// unheld, set by OweUnheld, owes a flush to every address it accepts
	// (a starting agent's: pool addresses no workload holds); the next
	// Flush takes one whole dump per family for it.
	unheld func(netip.Addr) bool
}

// NewEndpointConntrack returns a tracker for the caller's namespace, or the
// one given by InNetns. It touches nothing until a flush is owed.
func NewEndpointConntrack(opts ...Option) *EndpointConntrack {
	return &EndpointConntrack{o: buildOptions(opts), owner: map[netip.Addr]string{}, owed: map[netip.Addr]bool{},
		left: map[netip.Addr]string{}, leftElsewhere: map[netip.Addr]bool{}}
}

// Close releases the netlink socket.
func (c *EndpointConntrack) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ct != nil {
		c.ct.Close()
		c.ct = nil
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
	// The kernel's routes and the free addresses told what changed hands.
	clear(c.left)
	clear(c.leftElsewhere)
	clear(c.owner)
	for a, dev := range local {
		c.owner[a] = dev
	}
}

// Left records that an endpoint record of this host naming iface went, or
// no longer holds addr. The next Note owes addr a flush if it was that
// interface's at the last Note, even if it is again now (the workload
// removed and added again between the two: same name, same interface,
// same address, new flows owed nothing). A record naming an address that
// was another interface's (which the agents ignore) changes nothing.
func (c *EndpointConntrack) Left(addr netip.Addr, iface string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.left[addr.Unmap()] = iface
}

// LeftElsewhere records that addr left a workload of another host (its
// record went, or no longer holds it): the next Note owes it a flush here
// too, since IPAM may give it to a workload that this host's policy
// treats differently.
func (c *EndpointConntrack) LeftElsewhere(addr netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.leftElsewhere[addr.Unmap()] = true
}

// OweUnheld makes the next Flush also delete the entries that name an
// address unheld accepts: a starting agent's addresses that no workload
// holds anywhere, in any block or none (blocks are released when empty).
// An address that left another host's workload while no agent ran here,
// or one this host had borrowed, is in none of this host's blocks, and
// its entries here would carry its next holder's packets as replies.
func (c *EndpointConntrack) OweUnheld(unheld func(netip.Addr) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.unheld = unheld
}

// Owe owes a flush to addrs (after the routes; one that is also owed
// before them stays so): a starting agent's addresses of endpoint records
// changed since the last agent's saved revision, which may have changed
// hands while no agent ran here, though a workload holds them again.
func (c *EndpointConntrack) Owe(addrs []netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range addrs {
		if _, ok := c.owed[a.Unmap()]; !ok {
			c.owed[a.Unmap()] = false
		}
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
		c.oweLeft()
		// An address owed a flush that is a local workload's again (back
		// on the same interface, or a flush that failed before another
		// workload got it) is flushed before its route appears too.
		for a := range local {
			if _, ok := c.owed[a]; ok {
				c.owed[a] = true
			}
		}
	}
	clear(c.left)
	clear(c.leftElsewhere)
	c.primed = true
	clear(c.owner)
	for a, dev := range local {
		c.owner[a] = dev
	}
}

// NoteChange is Note for a change of a few local workloads, given as the
// change from the addresses of the last Note (or Prime): gone are no
// longer local (unless in now), now are local with their interface (new,
// or moved to another interface). Note reads and copies every local
// address: at 1000 workloads that, and building its map, cost about half
// a millisecond of each container start's endpoint pass; this costs what
// changed and the addresses owed a flush. The caller must know the last
// Note's addresses to give the change (the agent's endpoint pass derives
// it from the routes it adds and deletes, relative to the last clean
// pass, which noted its own); TestNoteChangeIsNote holds it to Note.
func (c *EndpointConntrack) NoteChange(gone []netip.Addr, now map[netip.Addr]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.primed {
		// As Note's loops, over the addresses that can differ.
		for _, a := range gone {
			if _, still := now[a]; still {
				continue
			}
			if _, was := c.owner[a]; was {
				if _, moved := c.owed[a]; !moved {
					c.owed[a] = false
				}
			}
		}
		for a, dev := range now {
			if was, ok := c.owner[a]; ok && was != dev {
				c.owed[a] = true
			}
		}
		c.oweLeft()
	}
	for _, a := range gone {
		if _, still := now[a]; !still {
			delete(c.owner, a)
		}
	}
	for a, dev := range now {
		c.owner[a] = dev
	}
	if c.primed {
		// Note's last loop, from the other side: an owed address that
		// is local again.
		for a := range c.owed {
			if _, ok := c.owner[a]; ok {
				c.owed[a] = true
			}
		}
	}
	clear(c.left)
	clear(c.leftElsewhere)
	c.primed = true
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
	if unheld := c.unheld; unheld != nil {
		// A starting agent's whole dumps for unheld serve the addresses
		// owed too (after an upgrade, every other host's: more than
		// filtered dumps are worth).
		owed := maps.Clone(c.owed)
		c.unheld = func(a netip.Addr) bool { _, ok := owed[a]; return ok || unheld(a) }
		deleted, err = c.flushUnheld()
		if err != nil {
			c.unheld = unheld
			return deleted, addrs, err
		}
		clear(c.owed)
		return deleted, addrs, nil
	}
	deleted, err = c.flush(addrs)
	if err == nil {
		clear(c.owed)
	}
	return deleted, addrs, err
}

// flushUnheld deletes the entries unheld accepts, with one whole dump per
// family; unheld is done with once that worked.
func (c *EndpointConntrack) flushUnheld() (int, error) {
	if c.ct == nil {
		ct, err := openConntrack(c.o.netns)
		if err != nil {
			return 0, err
		}
		c.ct = ct
	}
	total := 0
	var errs []error
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		n, err := c.ct.deleteMatching(c.unheld, fam, nil)
		total += n
		errs = append(errs, err)
	}
	err := errors.Join(errs...)
	if err == nil {
		c.unheld = nil
	}
	return total, err
}

func (c *EndpointConntrack) flush(addrs []netip.Addr) (int, error) {
	if len(addrs) == 0 {
		return 0, nil
	}
	if c.ct == nil {
		ct, err := openConntrack(c.o.netns)
		if err != nil {
			return 0, err
		}
		c.ct = ct
	}
	return c.ct.deleteOf(addrs)
}

// ctFilteredMax is the most IPv4 addresses deleted with the kernel's
// filtered dumps (two per address, ctFilterFields); more take one whole
// dump matched here. A filtered dump walks every hash bucket in the kernel
// and sends only matches (a few ms however small the table); a whole one
// sends every entry and parses it here, about 2 µs of CPU per entry
// (BenchmarkDeleteConntrackOf).
const ctFilteredMax = 8

// conntrackConn is a NETLINK_NETFILTER socket in one namespace.
type conntrackConn struct {
	sh *nl.SocketHandle
	// unfiltered: the kernel answered a filtered dump with entries outside
	// the filter (before Linux 5.8 it ignores CTA_FILTER) or refused it;
	// whole dumps only from then on.
	unfiltered bool
}

func openConntrack(path string) (*conntrackConn, error) {
	ns, err := openNetns(path)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("open a netfilter netlink socket in netns %s: %w", nsName(path), err)
	}
	tv := unix.NsecToTimeval(netlinkTimeout.Nanoseconds())
	_ = s.SetSendTimeout(&tv)
	_ = s.SetReceiveTimeout(&tv)
	return &conntrackConn{sh: &nl.SocketHandle{Socket: s}}, nil
}

func (c *conntrackConn) Close() { c.sh.Close() }

// ctField is one address of a conntrack entry: the original or reply
// direction's source or destination.
type ctField struct {
	reply bool
	dst   bool
}

// ctFilterFields are the fields a filtered dump asks for: the original
// source (the address's own flows, masqueraded or not) and the reply
// source (flows to it, published ports' DNAT included). Packets reach an
// address only through these two: the original direction goes to the
// reply source, the reply direction to the original source. The other
// two hold it only where it is a NAT address itself, which a workload
// address never is here; a whole dump checks all four anyway.
var ctFilterFields = []ctField{{reply: false}, {reply: true}}

// deleteOf deletes every conntrack entry that has one of addrs as source
// or destination in either direction, and says how many it deleted.
//
// IPv6 addresses always take one whole IPv6 dump: the kernel's IPv6 tuple
// filter is inverted (ctnetlink_filter_match_tuple tests
// !ipv6_addr_cmp, so it sends the entries that do not have the address;
// still so in 6.18), which entryAddrs's check here would catch at the
// price of a dump that sends nearly everything.
func (c *conntrackConn) deleteOf(addrs []netip.Addr) (int, error) {
	v4, v6 := map[netip.Addr]bool{}, map[netip.Addr]bool{}
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() {
			v4[a] = true
		} else {
			v6[a] = true
		}
	}
	total := 0
	var errs []error
	if len(v4) > 0 {
		n, err := c.deleteV4(v4)
		total += n
		errs = append(errs, err)
	}
	if len(v6) > 0 {
		n, err := c.deleteMatching(inSet(v6), unix.AF_INET6, nil)
		total += n
		errs = append(errs, err)
	}
	return total, errors.Join(errs...)
}

// deleteV4 asks the kernel, per address and field, for the entries with
// that address there; for many addresses, or if the kernel turns out not
// to filter, it takes one whole IPv4 dump.
func (c *conntrackConn) deleteV4(set map[netip.Addr]bool) (int, error) {
	total := 0
	if len(set) <= ctFilteredMax && !c.unfiltered {
		for _, a := range sortedSet(set) {
			for _, f := range ctFilterFields {
				n, err := c.deleteMatching(inSet(set), unix.AF_INET, &ctFilter{f, a})
				total += n
				if err != nil {
					return total, err
				}
				if c.unfiltered {
					// What it deleted was matched here too; a whole
					// dump finishes the job.
					n, err := c.deleteMatching(inSet(set), unix.AF_INET, nil)
					return total + n, err
				}
			}
		}
		return total, nil
	}
	return c.deleteMatching(inSet(set), unix.AF_INET, nil)
}

func inSet(set map[netip.Addr]bool) func(netip.Addr) bool {
	return func(a netip.Addr) bool { return set[a] }
}

type ctFilter struct {
	field ctField
	addr  netip.Addr
}

// deleteMatching dumps the entries of family fam (AF_UNSPEC: all), only those
// matching filter if given, and deletes those that name an address match
// accepts. An entry outside the filter shows the kernel ignored it
// (unfiltered is set). Every entry is checked here whatever the kernel
// did, so a kernel that ignores a filter costs time, never a wrong delete.
func (c *conntrackConn) deleteMatching(match func(netip.Addr) bool, fam uint8, filter *ctFilter) (int, error) {
	req := c.request(nl.IPCTNL_MSG_CT_GET, unix.NLM_F_DUMP, fam)
	if filter != nil {
		addFilter(req, filter)
	}
	var doomed [][]byte
	err := req.ExecuteIter(unix.NETLINK_NETFILTER, 0, func(msg []byte) bool {
		addrs, ok := entryAddrs(msg)
		if !ok {
			return true
		}
		if filter != nil && addrs[fieldIndex(filter.field)] != filter.addr {
			c.unfiltered = true
		}
		for _, a := range addrs {
			if match(a) {
				doomed = append(doomed, slices.Clone(msg))
				break
			}
		}
		return true
	})
	if err != nil && filter != nil && (errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)) {
		c.unfiltered = true
		return 0, nil
	}
	if err != nil {
		// An interrupted dump may have missed entries: the address stays
		// owed and the next pass dumps again.
		return 0, fmt.Errorf("dump conntrack: %w", err)
	}
	n := 0
	var errs []error
	for _, msg := range doomed {
		// The entry as dumped: its tuple and ID, so only that very entry
		// goes, not one made since with the same tuple.
		del := c.request(nl.IPCTNL_MSG_CT_DELETE, unix.NLM_F_ACK, msg[0])
		del.AddRawData(msg[nfgenHeaderLen:])
		if _, err := del.Execute(unix.NETLINK_NETFILTER, 0); err == nil {
			n++
		} else if !errors.Is(err, unix.ENOENT) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return n, fmt.Errorf("delete %d conntrack entries: %w", len(errs), errs[0])
	}
	return n, nil
}

// nfgenHeaderLen is the size of struct nfgenmsg, before the attributes.
const nfgenHeaderLen = 4

func (c *conntrackConn) request(op, flags int, fam uint8) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(int(netlink.ConntrackTable)<<8|op, flags)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_NETFILTER: c.sh}
	req.AddData(&nl.Nfgenmsg{NfgenFamily: fam, Version: nl.NFNETLINK_V0})
	return req
}

// The kernel's filter attributes (uapi nfnetlink_conntrack.h) and tuple
// filter flags (net/netfilter/nf_internals.h).
const (
	ctaFilter           = 25
	ctaFilterOrigFlags  = 1
	ctaFilterReplyFlags = 2
	ctaFilterFlagIPSrc  = 1 << 0
	ctaFilterFlagIPDst  = 1 << 1
)

// addFilter asks for the entries with f.addr at f.field only.
func addFilter(req *nl.NetlinkRequest, f *ctFilter) {
	tupleType, flagsType := nl.CTA_TUPLE_ORIG, ctaFilterOrigFlags
	if f.field.reply {
		tupleType, flagsType = nl.CTA_TUPLE_REPLY, ctaFilterReplyFlags
	}
	ipType, flag := nl.CTA_IP_V4_SRC, uint32(ctaFilterFlagIPSrc)
	if f.field.dst {
		ipType, flag = nl.CTA_IP_V4_DST, ctaFilterFlagIPDst
	}
	if f.addr.Is6() {
		ipType += nl.CTA_IP_V6_SRC - nl.CTA_IP_V4_SRC
	}
	tuple := nl.NewRtAttr(unix.NLA_F_NESTED|tupleType, nil)
	ip := nl.NewRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_IP, nil)
	ip.AddChild(nl.NewRtAttr(ipType, f.addr.AsSlice()))
	tuple.AddChild(ip)
	filter := nl.NewRtAttr(unix.NLA_F_NESTED|ctaFilter, nil)
	filter.AddChild(nl.NewRtAttr(flagsType, nl.Uint32Attr(flag)))
	req.AddData(tuple)
	req.AddData(filter)
}

func fieldIndex(f ctField) int {
	i := 0
	if f.reply {
		i += 2
	}
	if f.dst {
		i++
	}
	return i
}

// entryAddrs reads a dumped entry's four addresses: original source and
// destination, reply source and destination (fieldIndex's order).
func entryAddrs(msg []byte) (out [4]netip.Addr, ok bool) {
	if len(msg) < nfgenHeaderLen {
		return out, false
	}
	attrs, err := nl.ParseRouteAttr(msg[nfgenHeaderLen:])
	if err != nil {
		return out, false
	}
	found := 0
	for _, a := range attrs {
		base := -1
		switch a.Attr.Type & nl.NLA_TYPE_MASK {
		case nl.CTA_TUPLE_ORIG:
			base = 0
		case nl.CTA_TUPLE_REPLY:
			base = 2
		}
		if base < 0 {
			continue
		}
		tuple, err := nl.ParseRouteAttr(a.Value)
		if err != nil {
			return out, false
		}
		for _, t := range tuple {
			if t.Attr.Type&nl.NLA_TYPE_MASK != nl.CTA_TUPLE_IP {
				continue
			}
			ips, err := nl.ParseRouteAttr(t.Value)
			if err != nil {
				return out, false
			}
			for _, ip := range ips {
				addr, ok := netip.AddrFromSlice(ip.Value)
				if !ok {
					continue
				}
				switch ip.Attr.Type & nl.NLA_TYPE_MASK {
				case nl.CTA_IP_V4_SRC, nl.CTA_IP_V6_SRC:
					out[base] = addr.Unmap()
					found++
				case nl.CTA_IP_V4_DST, nl.CTA_IP_V6_DST:
					out[base+1] = addr.Unmap()
					found++
				}
			}
		}
	}
	return out, found == 4
}

func sortedSet(m map[netip.Addr]bool) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
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

// oweLeft marks for a flush (without its interface, unless already owed
// with it) every address that left an endpoint record while this host
// still owned it on that interface, and every address that left another
// host's record.
func (c *EndpointConntrack) oweLeft() {
	for a, dev := range c.left {
		if c.owner[a] != dev {
			continue
		}
		if _, ok := c.owed[a]; !ok {
			c.owed[a] = false
		}
	}
	for a := range c.leftElsewhere {
		if _, ok := c.owed[a]; !ok {
			c.owed[a] = false
		}
	}
}
