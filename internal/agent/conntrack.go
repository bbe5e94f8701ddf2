package agent

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/netdev"
)

// maxFreeBlockBits bounds the blocks whose free addresses a starting agent
// lists (freeAddrs): IPAM's blocks are /26 and /122 (6 bits).
const maxFreeBlockBits = 10

// noteConntrack hands the local workload addresses of dp to the conntrack
// owner before the routes change; the first pass primes it with what the
// kernel and the datastore show (EndpointConntrack.Prime). If the kernel's
// routes cannot be read, the next pass (the retry) tries again.
//
// The first pass also owes a flush to the addresses of every endpoint
// record modified after the revision the last agent saved (changedAddrs):
// an address that changed hands on another host while no agent ran here
// is held again, so OweUnheld misses it, and this host's entries of its
// old holder's flows would take the new holder's packets as replies.
func (a *Agent) noteConntrack(dp calc.Dataplane) error {
	local := localAddrs(dp)
	if a.conntrack.Primed() {
		a.noteConntrackAgain(local)
		return nil
	}
	kernel, err := netdev.WorkloadRoutes()
	if err != nil {
		return fmt.Errorf("conntrack: read the workload routes: %w", err)
	}
	free := a.freeAddrs(dp)
	// One hold of the lock: no record's change falls between what the
	// snapshot shows and the revision saved after the flush.
	a.mu.Lock()
	defer a.mu.Unlock()
	a.conntrack.Prime(local, kernel, free)
	a.conntrack.OweUnheld(a.unheldAddrsLocked())
	a.conntrack.Owe(a.changedAddrsLocked())
	a.ctRev = a.dsRev
	return nil
}

// noteConntrackAgain is every Note after the first: the revision it has
// seen is saved once the flush that follows succeeds (a Note consumes the
// Left and LeftElsewhere of every change OnUpdateAt applied before it).
func (a *Agent) noteConntrackAgain(local map[netip.Addr]string) {
	a.mu.Lock()
	a.ctRev = a.dsRev
	a.mu.Unlock()
	a.conntrack.Note(local)
}

// noteConntrackChange is noteConntrackAgain for an endpoint pass, given
// only the local routes it adds and deletes: the last Note was of the
// last clean pass's local routes, which the endpoint pass starts from
// (any pass that fails after its Note leaves no clean pass, and the next
// is a full one). localAddrs and Note read every workload's routes: half
// a millisecond per container start next to 1000.
func (a *Agent) noteConntrackChange(ch calc.EndpointChange) {
	a.mu.Lock()
	a.ctRev = a.dsRev
	a.mu.Unlock()
	var gone []netip.Addr
	now := map[netip.Addr]string{}
	for _, r := range ch.DelRoutes {
		if r.Kind == calc.RouteLocal && r.Dst.IsSingleIP() {
			gone = append(gone, r.Dst.Addr())
		}
	}
	for _, r := range ch.AddRoutes {
		if r.Kind == calc.RouteLocal && r.Dst.IsSingleIP() {
			now[r.Dst.Addr()] = r.Dev
		}
	}
	a.conntrack.NoteChange(gone, now)
}

// changedAddrsLocked lists the addresses of the endpoint records modified
// after the revision saved by the last agent (revFile). Without a usable
// one (none, unreadable, another datastore's, or ahead of this
// datastore), every other host's endpoint address: any of them may have
// changed hands since this host's entries were made. (This host's are
// Prime's: an address that changed hands here is not routed to its new
// interface yet.) Unit tests, which set no revFile, get none.
func (a *Agent) changedAddrsLocked() []netip.Addr {
	if a.revFile == "" || a.dsRev == 0 {
		return nil
	}
	saved, why := loadConntrackRev(a.revFile, ctDatastore{a.dsCluster, a.dsEpoch}, a.dsRev)
	var out []netip.Addr
	if why != "" {
		for id, ep := range a.snap.Endpoints {
			if !strings.HasPrefix(id, a.cfg.Name+"/") {
				out = append(out, endpointAddrs(ep)...)
			}
		}
		a.log.Info("conntrack: no usable record of the last agent's datastore revision; flushing every other host's workload address",
			"reason", why, "file", a.revFile, "addresses", len(out))
		return out
	}
	a.savedRev = saved
	for id, ep := range a.snap.Endpoints {
		if r, ok := a.epRev[id]; !ok || r > saved {
			out = append(out, endpointAddrs(ep)...)
		}
	}
	a.log.Info("conntrack: flushing the addresses of endpoint records changed since the last agent's revision",
		"revision", saved, "now", a.dsRev, "addresses", len(out))
	return out
}

// unheldAddrs accepts the pool addresses that no endpoint record, of any
// host, holds: a starting agent cannot know which of them changed hands
// while no agent ran here, and no live workload's flow names one.
func (a *Agent) unheldAddrsLocked() func(netip.Addr) bool {
	held := map[netip.Addr]bool{}
	for _, ep := range a.snap.Endpoints {
		for _, n := range slices.Concat(ep.IPv4Nets, ep.IPv6Nets) {
			if p, err := netip.ParsePrefix(n); err == nil {
				held[p.Addr().Unmap()] = true
			} else if ad, err := netip.ParseAddr(n); err == nil {
				held[ad.Unmap()] = true
			}
		}
	}
	var pools []netip.Prefix
	for _, p := range a.snap.Pools {
		if pp, err := netip.ParsePrefix(p.CIDR); err == nil {
			pools = append(pools, pp.Masked())
		}
	}
	return func(ad netip.Addr) bool {
		if held[ad] {
			return false
		}
		for _, p := range pools {
			if p.Contains(ad) {
				return true
			}
		}
		return false
	}
}

// freeAddrs lists the addresses of this host's blocks (dp's blackhole
// routes) that no endpoint record, of any host, holds.
func (a *Agent) freeAddrs(dp calc.Dataplane) []netip.Addr {
	held := map[netip.Addr]bool{}
	a.mu.Lock()
	for _, ep := range a.snap.Endpoints {
		for _, ad := range endpointAddrs(ep) {
			held[ad] = true
		}
	}
	a.mu.Unlock()
	var out []netip.Addr
	for _, r := range dp.Routes {
		if r.Kind != calc.RouteBlackhole || r.Dst.Addr().BitLen()-r.Dst.Bits() > maxFreeBlockBits {
			continue
		}
		for ad := r.Dst.Masked().Addr(); r.Dst.Contains(ad); ad = ad.Next() {
			if !held[ad] {
				out = append(out, ad)
			}
		}
	}
	return out
}

// endpointAddrs lists the addresses of ep's IPv4 and IPv6 nets (an
// address with or without its /32 or /128).
func endpointAddrs(ep api.Endpoint) []netip.Addr {
	var out []netip.Addr
	for _, n := range slices.Concat(ep.IPv4Nets, ep.IPv6Nets) {
		if p, err := netip.ParsePrefix(n); err == nil {
			out = append(out, p.Addr().Unmap())
		} else if ad, err := netip.ParseAddr(n); err == nil {
			out = append(out, ad.Unmap())
		}
	}
	return out
}

// localAddrs is each local workload address of dp with its host-side
// interface: the routes into workload interfaces (WireGuard's routes are
// local routes too, into its device, and are no workload's).
func localAddrs(dp calc.Dataplane) map[netip.Addr]string {
	ifaces := make(map[string]bool, len(dp.Workloads))
	for _, w := range dp.Workloads {
		ifaces[w.Interface] = true
	}
	out := make(map[netip.Addr]string, len(dp.Workloads))
	for _, r := range dp.Routes {
		if r.Kind == calc.RouteLocal && ifaces[r.Dev] && r.Dst.IsSingleIP() {
			out[r.Dst.Addr()] = r.Dev
		}
	}
	return out
}

// flushMovedConntrack runs before the routes change: the flows of an
// address that moved to another local workload go before its new route
// makes the old entries reach the new workload (EndpointConntrack).
func (a *Agent) flushMovedConntrack() error {
	n, addrs, err := a.conntrack.FlushMoved()
	if len(addrs) > 0 {
		a.log.Debug("deleted conntrack entries of addresses moving to another workload", "entries", n, "addresses", addrs)
	}
	if err != nil {
		return fmt.Errorf("conntrack: %w", err)
	}
	return nil
}

// flushConntrack runs after routes and policy: the flows of every address
// that left a local workload, or moved, go (EndpointConntrack). Once
// nothing is owed, the revision the last Note had seen is saved: every
// address that changed hands up to it has been flushed here.
func (a *Agent) flushConntrack() error {
	n, addrs, err := a.conntrack.Flush()
	if len(addrs) > 0 {
		a.log.Debug("deleted conntrack entries of former workload addresses", "entries", n, "addresses", addrs)
	}
	if err != nil {
		return fmt.Errorf("conntrack: %w", err)
	}
	a.mu.Lock()
	a.flushedRev = a.ctRev
	a.mu.Unlock()
	a.saveConntrackRev(false)
	return nil
}

// ctRevSaveEvery spaces the saves of the revision: each costs about 0.1 ms
// (a file written and renamed, BenchmarkSaveConntrackRev), a tenth of
// a pass for another host's workload, and an older revision only makes
// the next start flush the records changed since (the resync pass and the
// agent's exit save the newest).
const ctRevSaveEvery = time.Second

// saveConntrackRev saves the revision of the last successful flush, if
// not the one saved and (unless now) ctRevSaveEvery after the last save.
// A revision below the saved one is saved too: the datastore went back
// (etcd restored from a backup, under the same cluster ID), and counts
// the revisions above it again for other changes. Keeping the higher one
// would make the next start take changes made up to it since the restore,
// while no agent ran here, as flushed. Saving a lower revision only ever
// makes the next start flush more.
func (a *Agent) saveConntrackRev(now bool) {
	a.mu.Lock()
	rev, ds := a.flushedRev, ctDatastore{a.dsCluster, a.dsEpoch}
	a.mu.Unlock()
	if a.revFile == "" || rev <= 0 || rev == a.savedRev || (!now && time.Since(a.savedAt) < ctRevSaveEvery) {
		return
	}
	if err := saveConntrackRev(a.revFile, ds, rev); err != nil {
		// An old revision only costs the next start more flushes.
		a.log.Warn("conntrack: cannot save the datastore revision; the next start flushes more", "err", err)
		return
	}
	a.savedRev, a.savedAt = rev, time.Now()
}
