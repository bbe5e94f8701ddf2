package netdev

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calico-go/calico/internal/calc"
)

// RouteProtocol marks every route the agent adds (rtm_protocol). Ownership
// is by this number alone: the syncer deletes only routes that carry it and
// never touches any other, so routes of the administrator (static, boot),
// the kernel, DHCP or a routing daemon (bird 12, zebra 11, bgp 186) are safe.
//
// 80 (0x50) is free in iproute2's /etc/iproute2/rt_protos (which names
// 0-4, 8-16, 18, 42, 99, 186-189 and 192) and in the kernel's RTPROT_*
// list; `ip route show proto 80` lists our routes.
const RouteProtocol = netlink.RouteProtocol(80)

// linkCacheTTL is how long an interface name to index mapping is trusted
// for routes that already look right. A route's index is checked again at
// once when it disagrees, and looked up fresh before every kernel write,
// so the cache only decides how soon a renamed interface is noticed.
const linkCacheTTL = 30 * time.Second

// RouteStats counts what one RouteSyncer.Apply did.
type RouteStats struct {
	Desired   int // valid desired routes
	Unchanged int // desired routes already right in the kernel
	Added     int
	Replaced  int
	Deleted   int
	Failed    int // desired routes not programmed, and stale routes not deleted
}

// Changes is the number of kernel writes that succeeded.
func (s RouteStats) Changes() int { return s.Added + s.Replaced + s.Deleted }

// RouteSyncer converges the main routing table's routes of one protocol
// (RouteProtocol unless WithProtocol) to a desired list. It is
// level-triggered: each Apply compares against a fresh dump of the kernel,
// not against what the previous Apply did, so routes deleted by hand or by
// the kernel (when a device goes down) come back on the next Apply.
//
// It is safe for concurrent use; Applies are serialized.
type RouteSyncer struct {
	mu    sync.Mutex
	o     options
	h     *netlink.Handle
	links map[string]linkEntry
	stats RouteStats
	// ifs looks interface indexes up by ioctl (nil: it could not be
	// opened, and LinkByName does): a veth's LinkByName walks every
	// namespace id of the host for its peer's, and each Apply of the
	// periodic resync checks every workload's device again (linkCacheTTL),
	// which at 1000 workloads made that walk most of the Apply's cost.
	ifs *IfLookup

	// Scratch space reused across Applies, so an Apply that changes nothing
	// allocates little beyond what the netlink library does per route.
	want    []wantRoute
	wantIdx map[netip.Prefix]int
	have    []haveRoute
	now     time.Time

	keepStale bool
}

// KeepStale, while on, makes Apply add and replace routes but delete none.
// A restarting agent uses it until BGP has re-learned the routes it had, so
// a restart never withdraws a working path from the kernel.
func (s *RouteSyncer) KeepStale(on bool) {
	s.mu.Lock()
	s.keepStale = on
	s.mu.Unlock()
}

type linkEntry struct {
	index   int
	checked time.Time
}

type wantRoute struct {
	r       calc.Route
	matched bool
	replace bool // an owned route with this key exists but differs
}

type haveRoute struct {
	dst       netip.Prefix
	typ       int
	scope     netlink.Scope
	gw        netip.Addr
	linkIndex int
	flags     int
	priority  int
	tos       int
	multipath bool
	state     haveState
}

type haveState uint8

const (
	haveStale   haveState = iota // owned, not desired: delete
	haveKeep                     // exactly a desired route
	haveReplace                  // same key as a desired route that differs: replace in place
)

// NewRouteSyncer returns a syncer for the caller's namespace, or the one
// given by InNetns. Its netlink socket is opened here, so it stays in the
// namespace the caller was in even if Apply runs on another thread; if that
// fails, Apply retries and reports the error.
func NewRouteSyncer(opts ...Option) *RouteSyncer {
	s := &RouteSyncer{
		o:       buildOptions(opts),
		links:   map[string]linkEntry{},
		wantIdx: map[netip.Prefix]int{},
	}
	_, _ = s.handle()
	s.ifs, _ = NewIfLookup(s.o.netns) // opened here for the same reason
	return s
}

// Close releases the syncer's netlink socket. The routes stay.
func (s *RouteSyncer) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h != nil {
		s.h.Close()
		s.h = nil
	}
	if s.ifs != nil {
		s.ifs.Close()
		s.ifs = nil
	}
}

// Stats returns what the last Apply did.
func (s *RouteSyncer) Stats() RouteStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

func (s *RouteSyncer) handle() (*netlink.Handle, error) {
	if s.h != nil {
		return s.h, nil
	}
	h, err := openHandle(s.o.netns)
	if err != nil {
		return nil, err
	}
	// With strict checking the kernel filters the dump by protocol and
	// table itself, so an Apply reads only our routes, not the whole table.
	if err := h.SetStrictCheck(true); err != nil {
		h.Close()
		return nil, fmt.Errorf("enable netlink strict checking: %w", err)
	}
	s.h = h
	return h, nil
}

// Apply makes the owned routes of the main table exactly desired, for both
// IPv4 and IPv6: owned routes not desired are deleted, desired routes
// missing are added, and desired routes that differ are replaced. Routes of
// other protocols are never changed: a desired route that collides with one
// fails instead.
//
// A route that cannot be programmed (its device does not exist yet, its
// gateway is unreachable) does not stop the others; the returned error joins
// one error per failure, each naming the route, for example
// "route 192.168.100.64/26 via 10.0.2.2: network is unreachable". The caller
// retries with the next Apply.
func (s *RouteSyncer) Apply(desired []calc.Route) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats = RouteStats{}
	s.now = time.Now()

	h, err := s.handle()
	if err != nil {
		return err
	}

	var errs []error
	s.want = s.want[:0]
	clear(s.wantIdx)
	for _, r := range desired {
		n, err := normalizeRoute(r)
		if err != nil {
			errs = append(errs, err)
			s.stats.Failed++
			continue
		}
		if i, dup := s.wantIdx[n.Dst]; dup {
			errs = append(errs, fmt.Errorf("%s: duplicate destination (keeping %s)", describeRoute(n), describeRoute(s.want[i].r)))
			s.stats.Failed++
			continue
		}
		s.wantIdx[n.Dst] = len(s.want)
		s.want = append(s.want, wantRoute{r: n})
	}
	s.stats.Desired = len(s.want)

	if err := s.dump(h); err != nil {
		return errors.Join(append(errs, err)...)
	}

	// Classify what the kernel has. First exact matches, wherever they
	// are in the dump; then, for desired routes without one, one owned
	// route with the same key (destination, tos 0, default metric) is
	// replaced in place, which never leaves a moment with no route as
	// delete-then-add would. Every other owned route is stale.
	for k := range s.have {
		hr := &s.have[k]
		hr.state = haveStale
		if i, ok := s.wantIdx[hr.dst]; ok && !s.want[i].matched && s.matches(hr, &s.want[i].r) {
			s.want[i].matched = true
			hr.state = haveKeep
		}
	}
	for k := range s.have {
		hr := &s.have[k]
		if hr.state != haveStale {
			continue
		}
		i, ok := s.wantIdx[hr.dst]
		if ok && !s.want[i].matched && !s.want[i].replace && hr.priority == defaultPriority(hr.dst) && hr.tos == 0 {
			s.want[i].replace = true
			hr.state = haveReplace
		}
	}

	// Adds and replacements first, deletions last, so traffic moving from
	// an old route to a new one (a block split into /32s, say) always has
	// one of them.
	for i := range s.want {
		w := &s.want[i]
		if w.matched {
			s.stats.Unchanged++
			continue
		}
		if err := s.program(h, w); err != nil {
			errs = append(errs, err)
			s.stats.Failed++
			continue
		}
		if w.replace {
			s.stats.Replaced++
		} else {
			s.stats.Added++
		}
	}
	for k := range s.have {
		hr := &s.have[k]
		if hr.state != haveStale || s.keepStale {
			continue
		}
		if err := h.RouteDel(s.deleteSpec(hr)); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete stale route %s: %s", hr.dst, errnoText(err)))
			s.stats.Failed++
			continue
		}
		s.stats.Deleted++
	}
	return errors.Join(errs...)
}

// dump fills s.have with the owned routes of the main table, both families.
func (s *RouteSyncer) dump(h *netlink.Handle) error {
	filter := &netlink.Route{Protocol: s.o.proto, Table: unix.RT_TABLE_MAIN}
	const mask = netlink.RT_FILTER_PROTOCOL | netlink.RT_FILTER_TABLE
	s.have = s.have[:0]
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		start := len(s.have)
		_, err := retryDump("routes", func() (struct{}, error) {
			s.have = s.have[:start]
			return struct{}{}, h.RouteListFilteredIter(fam, filter, mask, func(r netlink.Route) bool {
				if hr, ok := toHave(&r); ok {
					s.have = append(s.have, hr)
				}
				return true
			})
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func toHave(r *netlink.Route) (haveRoute, bool) {
	hr := haveRoute{
		typ:       r.Type,
		scope:     r.Scope,
		linkIndex: r.LinkIndex,
		flags:     r.Flags,
		priority:  r.Priority,
		tos:       r.Tos,
		multipath: len(r.MultiPath) > 0,
	}
	if r.Dst == nil {
		// The library leaves Dst nil for default routes.
		if r.Family == netlink.FAMILY_V6 {
			hr.dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		} else {
			hr.dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		}
	} else {
		a, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			return hr, false
		}
		ones, _ := r.Dst.Mask.Size()
		a = a.Unmap()
		hr.dst = netip.PrefixFrom(a, ones)
	}
	if r.Gw != nil {
		if gw, ok := netip.AddrFromSlice(r.Gw); ok {
			hr.gw = gw.Unmap()
		}
	}
	return hr, true
}

// defaultPriority is the metric the kernel gives a route added without one.
func defaultPriority(dst netip.Prefix) int {
	if dst.Addr().Is6() {
		return 1024
	}
	return 0
}

func routeType(k calc.RouteKind) int {
	switch k {
	case calc.RouteBlackhole:
		return unix.RTN_BLACKHOLE
	case calc.RouteUnreachable:
		return unix.RTN_UNREACHABLE
	default:
		return unix.RTN_UNICAST
	}
}

// matches reports whether the kernel route is exactly the desired one.
// Only the onlink flag is compared: the kernel adds others (linkdown,
// offload) by itself.
func (s *RouteSyncer) matches(hr *haveRoute, r *calc.Route) bool {
	if hr.typ != routeType(r.Kind) || hr.priority != defaultPriority(hr.dst) || hr.tos != 0 || hr.multipath {
		return false
	}
	v4 := hr.dst.Addr().Is4()
	switch r.Kind {
	case calc.RouteLocal:
		if hr.gw.IsValid() || hr.flags&unix.RTNH_F_ONLINK != 0 || (v4 && hr.scope != netlink.SCOPE_LINK) {
			return false
		}
		return s.sameLink(r.Dev, hr.linkIndex)
	case calc.RouteVia:
		if hr.gw != r.Gateway || (hr.flags&unix.RTNH_F_ONLINK != 0) != r.OnLink || (v4 && hr.scope != netlink.SCOPE_UNIVERSE) {
			return false
		}
		return r.Dev == "" || s.sameLink(r.Dev, hr.linkIndex)
	default:
		return true
	}
}

// sameLink reports whether interface name has index idx, trusting a recent
// cache entry when it agrees and asking the kernel when it does not (the
// interface may have been recreated under a new index).
func (s *RouteSyncer) sameLink(name string, idx int) bool {
	if e, ok := s.links[name]; ok && e.index == idx && s.now.Sub(e.checked) < linkCacheTTL {
		return true
	}
	got, err := s.linkIndex(name)
	return err == nil && got == idx
}

// linkIndex looks the interface up in the kernel and refreshes the cache.
func (s *RouteSyncer) linkIndex(name string) (int, error) {
	if s.ifs != nil {
		idx, ok, err := s.ifs.Index(name)
		if err == nil {
			if !ok {
				delete(s.links, name)
				return 0, fmt.Errorf("device %s does not exist", name)
			}
			s.links[name] = linkEntry{index: idx, checked: s.now}
			return idx, nil
		}
	}
	link, err := s.h.LinkByName(name)
	if err != nil {
		delete(s.links, name)
		if isNotFound(err) {
			return 0, fmt.Errorf("device %s does not exist", name)
		}
		return 0, fmt.Errorf("look up device %s: %w", name, err)
	}
	idx := link.Attrs().Index
	s.links[name] = linkEntry{index: idx, checked: s.now}
	return idx, nil
}

// program adds or replaces one desired route. New routes use add, which
// fails on a route of another protocol with the same key instead of
// overwriting it; only routes known to be ours are replaced.
func (s *RouteSyncer) program(h *netlink.Handle, w *wantRoute) error {
	r := &w.r
	nr := &netlink.Route{
		Dst:      prefixToIPNet(r.Dst),
		Protocol: s.o.proto,
		Table:    unix.RT_TABLE_MAIN,
		Type:     routeType(r.Kind),
		Scope:    netlink.SCOPE_UNIVERSE,
	}
	switch r.Kind {
	case calc.RouteLocal:
		if r.Dst.Addr().Is4() {
			nr.Scope = netlink.SCOPE_LINK
		}
	case calc.RouteVia:
		nr.Gw = net.IP(r.Gateway.AsSlice())
		if r.OnLink {
			nr.Flags = int(netlink.FLAG_ONLINK)
		}
	}
	if r.Dev != "" && (r.Kind == calc.RouteLocal || r.Kind == calc.RouteVia) {
		idx, err := s.linkIndex(r.Dev)
		if err != nil {
			return fmt.Errorf("%s: %w", describeRoute(*r), err)
		}
		nr.LinkIndex = idx
	}
	var err error
	if w.replace {
		err = h.RouteReplace(nr)
	} else {
		err = h.RouteAdd(nr)
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%s: a route to %s of another protocol exists; leaving it alone", describeRoute(*r), r.Dst)
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %s", describeRoute(*r), errnoText(err))
	}
	return nil
}

// deleteSpec names exactly one kernel route. It carries our protocol, so
// even if the table changed since the dump the kernel cannot delete a route
// of another protocol in its place.
func (s *RouteSyncer) deleteSpec(hr *haveRoute) *netlink.Route {
	r := &netlink.Route{
		Dst:       prefixToIPNet(hr.dst),
		Protocol:  s.o.proto,
		Table:     unix.RT_TABLE_MAIN,
		Type:      hr.typ,
		Priority:  hr.priority,
		Tos:       hr.tos,
		Scope:     hr.scope,
		LinkIndex: hr.linkIndex,
	}
	if hr.gw.IsValid() {
		r.Gw = net.IP(hr.gw.AsSlice())
	}
	if hr.multipath {
		// A multipath route has no single device or gateway to name.
		r.LinkIndex = 0
		r.Gw = nil
	}
	return r
}

// normalizeRoute validates a desired route and puts it in canonical form
// (unmapped addresses, masked prefix) so it compares equal to the dump.
func normalizeRoute(r calc.Route) (calc.Route, error) {
	if !r.Dst.IsValid() {
		return r, fmt.Errorf("%s: invalid destination", describeRoute(r))
	}
	a := r.Dst.Addr()
	bits := r.Dst.Bits()
	if a.Is4In6() {
		a = a.Unmap()
		bits -= 96
		if bits < 0 {
			return r, fmt.Errorf("%s: invalid destination", describeRoute(r))
		}
	}
	r.Dst = netip.PrefixFrom(a, bits).Masked()
	r.Gateway = r.Gateway.Unmap()
	switch r.Kind {
	case calc.RouteLocal:
		if r.Dev == "" {
			return r, fmt.Errorf("%s: a local route needs a device", describeRoute(r))
		}
		r.Gateway, r.OnLink = netip.Addr{}, false
	case calc.RouteVia:
		if !r.Gateway.IsValid() {
			return r, fmt.Errorf("%s: no gateway", describeRoute(r))
		}
		if r.Gateway.Is4() != r.Dst.Addr().Is4() {
			return r, fmt.Errorf("%s: gateway and destination are of different families", describeRoute(r))
		}
		if r.OnLink && r.Dev == "" {
			return r, fmt.Errorf("%s: onlink needs a device", describeRoute(r))
		}
	case calc.RouteBlackhole, calc.RouteUnreachable:
		r.Dev, r.Gateway, r.OnLink = "", netip.Addr{}, false
	default:
		return r, fmt.Errorf("route %s: unknown kind %d", r.Dst, r.Kind)
	}
	return r, nil
}

// describeRoute renders a route the way `ip route` would, for errors.
func describeRoute(r calc.Route) string {
	var b strings.Builder
	b.WriteString("route ")
	switch r.Kind {
	case calc.RouteBlackhole:
		b.WriteString("blackhole ")
	case calc.RouteUnreachable:
		b.WriteString("unreachable ")
	}
	b.WriteString(r.Dst.String())
	if r.Kind == calc.RouteVia {
		b.WriteString(" via ")
		b.WriteString(r.Gateway.String())
	}
	if r.Dev != "" && (r.Kind == calc.RouteLocal || r.Kind == calc.RouteVia) {
		b.WriteString(" dev ")
		b.WriteString(r.Dev)
	}
	if r.Kind == calc.RouteVia && r.OnLink {
		b.WriteString(" onlink")
	}
	return b.String()
}

// errnoText turns the kernel's answer into words: an errno prints as its
// strerror text ("network is unreachable"); other errors print as they are.
func errnoText(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

// Patch adds and deletes a few routes without reading the table: the
// agent's path for a change of BGP's routes alone, where Apply would dump
// every route to change one. It never replaces: a route to add whose key
// is taken (by another protocol, or by one of ours the caller did not
// expect) fails, and the caller converges with Apply, which tells the two
// apart (and says which in its error). A route to delete is
// named with our protocol, so the kernel deletes no other; one already
// gone is no error. While KeepStale is on nothing is deleted. Errors join
// one per route, like Apply's; the next Apply heals whatever Patch did not.
func (s *RouteSyncer) Patch(add, del []calc.Route) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats = RouteStats{}
	s.now = time.Now()
	h, err := s.handle()
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range add {
		n, err := normalizeRoute(r)
		if err == nil {
			err = s.program(h, &wantRoute{r: n})
		}
		if err != nil {
			errs = append(errs, err)
			s.stats.Failed++
			continue
		}
		s.stats.Added++
	}
	for _, r := range del {
		if s.keepStale {
			break
		}
		n, err := normalizeRoute(r)
		if err != nil {
			errs = append(errs, err)
			s.stats.Failed++
			continue
		}
		spec := &netlink.Route{
			Dst:      prefixToIPNet(n.Dst),
			Protocol: s.o.proto,
			Table:    unix.RT_TABLE_MAIN,
			Type:     routeType(n.Kind),
			Priority: defaultPriority(n.Dst),
			Scope:    netlink.SCOPE_NOWHERE, // any scope
		}
		if err := h.RouteDel(spec); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete %s: %s", describeRoute(n), errnoText(err)))
			s.stats.Failed++
			continue
		}
		s.stats.Deleted++
	}
	return errors.Join(errs...)
}
