package bench

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/calico-go/calico/internal/lab"
)

// routeProto is the protocol number on every route the agent installs.
const routeProto = 80

// routeWatch records when routes of ours appear in a set of namespaces, from
// netlink notifications: exact times without polling, even across twenty
// hosts.
type routeWatch struct {
	done chan struct{}
	wg   sync.WaitGroup

	mu     sync.Mutex
	events map[string][]routeEvent // namespace name -> additions, in order
	// first is when each destination first appeared in each namespace: a
	// lookup for checks over many hosts and blocks, where scanning the
	// events would cost hosts times routes on every addition.
	first  map[string]map[netip.Prefix]time.Time
	notify chan struct{} // closed and replaced on every addition
}

type routeEvent struct {
	dst netip.Prefix
	at  time.Time
}

func watchRoutes(nss ...*lab.Netns) (*routeWatch, error) {
	rw := &routeWatch{done: make(chan struct{}), events: map[string][]routeEvent{},
		first: map[string]map[netip.Prefix]time.Time{}, notify: make(chan struct{})}
	for _, ns := range nss {
		if err := rw.add(ns); err != nil {
			rw.close()
			return nil, err
		}
	}
	return rw, nil
}

// add watches one more namespace.
func (rw *routeWatch) add(ns *lab.Netns) error {
	h, err := netns.GetFromPath(ns.Path)
	if err != nil {
		return fmt.Errorf("bench: watching routes in %s: %w", ns.Name, err)
	}
	ch := make(chan netlink.RouteUpdate, 4096)
	err = netlink.RouteSubscribeWithOptions(ch, rw.done, netlink.RouteSubscribeOptions{
		Namespace:         &h,
		ReceiveBufferSize: 4 << 20,
	})
	h.Close() // the subscription holds its own socket in the namespace
	if err != nil {
		return fmt.Errorf("bench: watching routes in %s: %w", ns.Name, err)
	}
	rw.wg.Add(1)
	go rw.collect(ns.Name, ch)
	return nil
}

// firstCovering is when a route covering ip first appeared in ns.
func (rw *routeWatch) firstCovering(ns string, ip netip.Addr) (time.Time, bool) {
	seen := rw.first[ns]
	var at time.Time
	found := false
	for bits := ip.BitLen(); bits >= 0; bits-- {
		p, _ := ip.Prefix(bits)
		if t, ok := seen[p]; ok && (!found || t.Before(at)) {
			at, found = t, true
		}
	}
	return at, found
}

func (rw *routeWatch) collect(name string, ch chan netlink.RouteUpdate) {
	defer rw.wg.Done()
	for u := range ch {
		if u.Type != unix.RTM_NEWROUTE || int(u.Protocol) != routeProto || u.Dst == nil {
			continue
		}
		now := time.Now()
		a, ok := netip.AddrFromSlice(u.Dst.IP)
		if !ok {
			continue
		}
		bits, _ := u.Dst.Mask.Size()
		rw.mu.Lock()
		dst := netip.PrefixFrom(a.Unmap(), bits)
		rw.events[name] = append(rw.events[name], routeEvent{dst: dst, at: now})
		if rw.first[name] == nil {
			rw.first[name] = map[netip.Prefix]time.Time{}
		}
		if _, ok := rw.first[name][dst]; !ok {
			rw.first[name][dst] = now
		}
		close(rw.notify)
		rw.notify = make(chan struct{})
		rw.mu.Unlock()
	}
}

// find returns when a route covering ip (exactly ip/32 when exact) first
// appeared in ns at or after since.
func (rw *routeWatch) find(ns string, ip netip.Addr, exact bool, since time.Time) (time.Time, bool) {
	for _, e := range rw.events[ns] {
		if e.at.Before(since) {
			continue
		}
		if exact && e.dst == netip.PrefixFrom(ip, ip.BitLen()) || !exact && e.dst.Contains(ip) {
			return e.at, true
		}
	}
	return time.Time{}, false
}

// wait blocks until a route covering ip has appeared in every namespace
// named, after since, and returns each one's time (by namespace name).
func (rw *routeWatch) wait(ctx context.Context, nss []string, ip netip.Addr, exact bool, since time.Time, timeout time.Duration) (map[string]time.Time, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		rw.mu.Lock()
		got := map[string]time.Time{}
		for _, ns := range nss {
			if t, ok := rw.find(ns, ip, exact, since); ok {
				got[ns] = t
			}
		}
		notify := rw.notify
		rw.mu.Unlock()
		if len(got) == len(nss) {
			return got, nil
		}
		select {
		case <-notify:
		case <-deadline.C:
			return got, fmt.Errorf("route to %s reached %d of %d hosts within %s", ip, len(got), len(nss), timeout)
		case <-ctx.Done():
			return got, ctx.Err()
		}
	}
}

// forget drops recorded events, so long runs do not accumulate them (first
// times stay: one entry per destination).
func (rw *routeWatch) forget() {
	rw.mu.Lock()
	rw.events = map[string][]routeEvent{}
	rw.mu.Unlock()
}

func (rw *routeWatch) close() {
	select {
	case <-rw.done:
	default:
		close(rw.done)
	}
	// The library closes each channel once its socket is shut down.
	rw.wg.Wait()
}
