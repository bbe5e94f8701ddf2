package routing

import (
	"maps"
	"net/netip"
	"testing"
	"time"
)

const meshAS = 64512

var (
	blockA  = netip.MustParsePrefix("192.168.100.0/26")
	blockA6 = netip.MustParsePrefix("fd00:1::/122")
	blockA2 = netip.MustParsePrefix("192.168.100.128/26")
	blockB  = netip.MustParsePrefix("192.168.100.64/26")
	torNet  = netip.MustParsePrefix("10.200.0.0/24")
)

func meshPeer(h *host) Peer { return Peer{Address: h.ip4, ASN: meshAS, Type: PeerTypeNodeMesh} }

// TestMesh: two nodes of one AS in a full mesh, both peering with a router
// of another AS (a third speaker standing in for a ToR): sessions come up,
// IPv4 and IPv6 blocks travel with the right next hops, only a node's own
// routes are announced, withdrawals and peer removal propagate.
func TestMesh(t *testing.T) {
	t.Parallel()
	hs := newLab(t, "a", "b", "c")
	ha, hb, hc := hs[0], hs[1], hs[2]
	const torAS = 65001

	a := spawn(t, ha, ha.config(meshAS))
	b := spawn(t, hb, hb.config(meshAS))
	c := spawn(t, hc, hc.config(torAS))

	a.announce(blockA, blockA6)
	b.announce(blockB)
	c.announce(torNet)
	tor := Peer{Address: hc.ip4, ASN: torAS, Type: PeerTypeGlobal}
	a.peers(meshPeer(hb), tor)
	b.peers(meshPeer(ha), tor)
	c.peers(Peer{Address: ha.ip4, ASN: meshAS, Type: PeerTypeNode}, Peer{Address: hb.ip4, ASN: meshAS, Type: PeerTypeNode})

	up := waitEstablished(t, a, 20*time.Second, hb, hc)
	waitEstablished(t, b, 20*time.Second, ha, hc)
	waitEstablished(t, c, 20*time.Second, ha, hb)
	t.Logf("sessions established %s after configuration", up.Round(10*time.Millisecond))

	// B learns A's IPv4 block with A's IPv4 next hop and A's IPv6 block
	// with A's IPv6 next hop, over the one IPv4 session; the router's
	// network over eBGP.
	waitLearned(t, b, 10*time.Second, map[netip.Prefix]netip.Addr{
		blockA: ha.ip4, blockA6: ha.ip6, torNet: hc.ip4,
	})
	waitLearned(t, a, 10*time.Second, map[netip.Prefix]netip.Addr{
		blockB: hb.ip4, torNet: hc.ip4,
	})
	// The router hears each block from its own node only: without the
	// local-only export policy A would also pass it B's block (next hop
	// rewritten to A) and C could route B's block through A.
	waitLearned(t, c, 10*time.Second, map[netip.Prefix]netip.Addr{
		blockA: ha.ip4, blockA6: ha.ip6, blockB: hb.ip4,
	})
	for _, s := range c.states() {
		want := map[string]int{ha.ip4.String(): 2, hb.ip4.String(): 1}[s.IP]
		if s.Received != want {
			t.Errorf("router received %d routes from %s, want %d (only the node's own)", s.Received, s.IP, want)
		}
	}
	if n := b.must(helperReq{Op: "learned"}).Changes; n == 0 {
		t.Error("B learned routes but Changes() never fired")
	}

	// What `calicoctl status` shows on B.
	st, ok := b.state(ha.ip4)
	if !ok {
		t.Fatalf("B reports no state for A: %v", b.states())
	}
	if st.ASNumber != meshAS || st.Type != PeerTypeNodeMesh || st.State != "Established" || st.Received != 2 {
		t.Errorf("B's view of A = %+v, want AS %d node-mesh Established received 2", st, meshAS)
	}
	if since, err := time.Parse(time.RFC3339, st.Since); err != nil || time.Since(since) > time.Minute {
		t.Errorf("B's view of A: Since %q is not a recent RFC 3339 time (%v)", st.Since, err)
	}
	if st, _ := b.state(hc.ip4); st.ASNumber != torAS || st.Type != PeerTypeGlobal {
		t.Errorf("B's view of the router = %+v", st)
	}
	t.Logf("B's peers: %+v", b.states())

	// A withdraws its IPv4 block: both peers lose it, keep the IPv6 one.
	a.announce(blockA6)
	d := waitLearned(t, b, 10*time.Second, map[netip.Prefix]netip.Addr{blockA6: ha.ip6, torNet: hc.ip4})
	waitLearned(t, c, 10*time.Second, map[netip.Prefix]netip.Addr{blockA6: ha.ip6, blockB: hb.ip4})
	t.Logf("withdrawal seen by B after %s", d.Round(10*time.Millisecond))

	// B drops A from its peers: the session goes down at both ends and
	// each forgets the other's routes (C does not pass them on).
	b.peers(tor)
	d = waitFor(t, 10*time.Second, "A sees the session to B go down", func() (bool, string) {
		st, _ := a.state(hb.ip4)
		return st.State != "Established", st.State
	})
	t.Logf("session torn down %s after B removed A", d.Round(10*time.Millisecond))
	if _, ok := b.state(ha.ip4); ok {
		t.Errorf("B still reports A after removing it: %v", b.states())
	}
	waitLearned(t, b, 10*time.Second, map[netip.Prefix]netip.Addr{torNet: hc.ip4})
	waitLearned(t, a, 10*time.Second, map[netip.Prefix]netip.Addr{torNet: hc.ip4})
	// And it stays down: A keeps trying, B refuses an unconfigured peer.
	time.Sleep(2 * time.Second)
	if st, _ := a.state(hb.ip4); st.State == "Established" {
		t.Errorf("A re-established a session with B, which no longer has A as a peer")
	}
}

// TestGracefulRestart: while a node's speaker is gone, whether it crashed or
// was stopped gracefully, its peer keeps (and still reports) its routes; a
// restarted speaker replaces them; one that does not return has its routes
// dropped after its restart time; StopAndFlush makes them go at once.
//
// A has the lower address, so A dials and B listens (see passiveTowards):
// B's graceful Stop ends an accepted session, A's a dialled one.
func TestGracefulRestart(t *testing.T) {
	t.Parallel()
	hs := newLab(t, "a", "b")
	ha, hb := hs[0], hs[1]

	cfgA, cfgB := ha.config(meshAS), hb.config(meshAS)
	cfgA.GracefulRestartTime = time.Minute
	a := spawn(t, ha, cfgA)
	b := spawn(t, hb, cfgB) // default restart time, 120s
	a.announce(blockA, blockA6)
	b.announce(blockB)
	a.peers(meshPeer(hb))
	b.peers(meshPeer(ha))
	fromA := map[netip.Prefix]netip.Addr{blockA: ha.ip4, blockA6: ha.ip6}
	fromB := map[netip.Prefix]netip.Addr{blockB: hb.ip4}
	waitLearned(t, b, 20*time.Second, fromA)
	waitLearned(t, a, 20*time.Second, fromB)

	// keeps checks that p goes on reporting want for d.
	keeps := func(p *proc, want map[netip.Prefix]netip.Addr, since time.Time, d time.Duration, what string) {
		t.Helper()
		for time.Since(since) < d {
			if got := p.learned(); !maps.Equal(got, want) {
				t.Fatalf("%s after %s, %s's learned routes are %v, want kept: %v",
					time.Since(since).Round(time.Millisecond), what, p.h.name, got, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	sessionDown := func(p *proc, peer *host) {
		t.Helper()
		waitFor(t, 10*time.Second, p.h.name+" sees the session end", func() (bool, string) {
			st, _ := p.state(peer.ip4)
			return st.State != "Established", st.State
		})
	}

	// 1. A's process dies: the kernel closes its sockets, no NOTIFICATION.
	a.kill()
	killed := time.Now()
	sessionDown(b, ha)
	keeps(b, fromA, killed, 3*time.Second, "A died")
	st, _ := b.state(ha.ip4)
	t.Logf("3s after A died B still has A's routes; B's view of A: %+v", st)

	// A comes back announcing a different set (as an agent would after
	// re-reading the datastore): announcements first, then peers. B ends
	// with exactly the new set: the stale IPv6 block goes at A's End-of-RIB.
	cfgA.GracefulRestartTime = 4 * time.Second // for step 3
	a = spawn(t, ha, cfgA)
	a.announce(blockA, blockA2)
	a.peers(meshPeer(hb))
	fromA = map[netip.Prefix]netip.Addr{blockA: ha.ip4, blockA2: ha.ip4}
	d := waitLearned(t, b, 30*time.Second, fromA)
	t.Logf("B converged on the restarted A's routes %s after A restarted (%s after it died)",
		d.Round(10*time.Millisecond), time.Since(killed).Round(10*time.Millisecond))
	waitLearned(t, a, 10*time.Second, fromB)

	// 2. B stops gracefully (its session socket was accepted, not dialled):
	// A keeps B's routes; B comes back and A has them fresh.
	b.stop(false)
	stopped := time.Now()
	sessionDown(a, hb)
	keeps(a, fromB, stopped, 2*time.Second, "B's graceful Stop")
	st, _ = a.state(hb.ip4)
	t.Logf("2s after B's graceful Stop A still has B's routes; A's view of B: %+v", st)
	b = spawn(t, hb, cfgB)
	b.announce(blockB)
	b.peers(meshPeer(ha))
	waitEstablished(t, a, 30*time.Second, hb)
	waitLearned(t, b, 10*time.Second, fromA)
	keeps(a, fromB, time.Now(), time.Second, "B's return")

	// 3. A stops gracefully and does not come back: B keeps the routes,
	// then drops them when A's advertised restart time (4s) runs out.
	a.stop(false)
	stopped = time.Now()
	keeps(b, fromA, stopped, time.Second, "A's graceful Stop")
	waitLearned(t, b, 20*time.Second, map[netip.Prefix]netip.Addr{})
	d = time.Since(stopped)
	t.Logf("B kept A's routes %s after A's graceful Stop (restart time 4s)", d.Round(10*time.Millisecond))
	if d < 3*time.Second {
		t.Errorf("B dropped A's routes %s after a graceful Stop, before A's 4s restart time", d)
	}

	// 4. StopAndFlush: B is told, and drops A's routes at once.
	cfgA.GracefulRestartTime = time.Minute
	a = spawn(t, ha, cfgA)
	a.announce(blockA)
	a.peers(meshPeer(hb))
	waitLearned(t, b, 30*time.Second, map[netip.Prefix]netip.Addr{blockA: ha.ip4})
	a.stop(true)
	d = waitLearned(t, b, 10*time.Second, map[netip.Prefix]netip.Addr{})
	t.Logf("B dropped A's routes %s after StopAndFlush (restart time 60s)", d.Round(10*time.Millisecond))
	if d > 5*time.Second {
		t.Errorf("StopAndFlush: B took %s to drop A's routes", d)
	}
}

// TestHoldTime: the link to A is cut (no FIN, no NOTIFICATION can pass), so
// only B's hold timer notices. Without graceful restart B drops A's routes
// at hold time; with it, B keeps them for A's restart time on top.
func TestHoldTime(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		gr   time.Duration
		min  time.Duration // loose lower bound: hold time expiry is at least ~2s after the cut
		max  time.Duration
	}{
		{"graceful-restart-off", -1, 1 * time.Second, 15 * time.Second},
		{"graceful-restart-4s", 4 * time.Second, 5 * time.Second, 20 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hs := newLab(t, "a", "b")
			ha, hb := hs[0], hs[1]
			cfgA, cfgB := ha.config(meshAS), hb.config(meshAS)
			cfgA.HoldTime, cfgB.HoldTime = 3*time.Second, 3*time.Second
			cfgA.GracefulRestartTime, cfgB.GracefulRestartTime = tc.gr, tc.gr
			a := spawn(t, ha, cfgA)
			b := spawn(t, hb, cfgB)
			a.announce(blockA, blockA6)
			a.peers(meshPeer(hb))
			b.peers(meshPeer(ha))
			waitLearned(t, b, 20*time.Second, map[netip.Prefix]netip.Addr{blockA: ha.ip4, blockA6: ha.ip6})

			run(t, "ip", "-n", ha.ns, "link", "set", "eth0", "down")
			d := waitLearned(t, b, tc.max, map[netip.Prefix]netip.Addr{})
			t.Logf("hold time 3s, %s: B dropped A's routes %s after the link was cut", tc.name, d.Round(10*time.Millisecond))
			if d < tc.min {
				t.Errorf("dropped after %s, sooner than %s", d, tc.min)
			}
		})
	}
}

// TestLearnedReportsEveryPath: a router (eBGP) and a node (iBGP) both
// announce the node's block and a more specific of it. Learned lists both
// paths of each prefix, best first, so the agent's import policy can skip
// the router's winning path and install the node's; a path that arrives or
// leaves without changing the best one still changes Learned.
func TestLearnedReportsEveryPath(t *testing.T) {
	t.Parallel()
	hs := newLab(t, "a", "b", "c")
	ha, hb, hc := hs[0], hs[1], hs[2]
	const torAS = 65001
	a := spawn(t, ha, ha.config(meshAS))
	b := spawn(t, hb, hb.config(meshAS))
	c := spawn(t, hc, hc.config(torAS))
	tor := Peer{Address: hc.ip4, ASN: torAS, Type: PeerTypeGlobal}
	a.peers(meshPeer(hb), tor)
	b.peers(meshPeer(ha))
	c.peers(Peer{Address: ha.ip4, ASN: meshAS, Type: PeerTypeNode})
	waitEstablished(t, a, 20*time.Second, hb, hc)

	fromB := Path{Neighbor: hb.ip4, NextHop: hb.ip4}
	fromC := Path{Neighbor: hc.ip4, NextHop: hc.ip4}
	// The router first: its path is the only one, hence best.
	c.announce(blockB)
	waitPaths(t, a, 10*time.Second, map[netip.Prefix][]Path{blockB: {fromC}})
	// Then the node: its path has the shorter AS path (iBGP, none) and
	// wins; the router's stays listed behind it.
	b.announce(blockB)
	waitPaths(t, a, 10*time.Second, map[netip.Prefix][]Path{blockB: {fromB, fromC}})
	// A more specific from the router only.
	half := netip.MustParsePrefix("192.168.100.64/27")
	c.announce(blockB, half)
	waitPaths(t, a, 10*time.Second, map[netip.Prefix][]Path{blockB: {fromB, fromC}, half: {fromC}})
	// The router withdraws the block: the best path is unchanged (the
	// node's), Learned changes all the same.
	before := a.must(helperReq{Op: "learned"}).Changes
	c.announce(half)
	waitPaths(t, a, 10*time.Second, map[netip.Prefix][]Path{blockB: {fromB}, half: {fromC}})
	if after := a.must(helperReq{Op: "learned"}).Changes; after <= before {
		t.Errorf("Changes() did not fire when a non-best path left (%d -> %d)", before, after)
	}
	// Removing the router as a peer drops its paths (GoBGP sends no
	// message for that: the speaker pokes itself).
	a.peers(meshPeer(hb))
	waitPaths(t, a, 10*time.Second, map[netip.Prefix][]Path{blockB: {fromB}})
}

// TestRestartLeavesNoGoroutine: the agent restarts its speaker in-process
// when its AS number changes. Each restart, with sessions up before and
// after, leaves the process with as many goroutines as before it.
func TestRestartLeavesNoGoroutine(t *testing.T) {
	t.Parallel()
	hs := newLab(t, "a", "b")
	ha, hb := hs[0], hs[1]
	a := spawn(t, ha, ha.config(meshAS))
	b := spawn(t, hb, hb.config(meshAS))
	up := func() {
		t.Helper()
		a.announce(blockA)
		a.peers(meshPeer(hb))
		b.announce(blockB)
		b.peers(meshPeer(ha))
		waitEstablished(t, a, 30*time.Second, hb)
		waitLearned(t, a, 10*time.Second, map[netip.Prefix]netip.Addr{blockB: hb.ip4})
	}
	// goroutines polls until a has at most want goroutines (transient
	// ones, such as a connection being dialled, come and go).
	goroutines := func(want int, d time.Duration) (int, string) {
		deadline := time.Now().Add(d)
		for {
			r := a.must(helperReq{Op: "goroutines"})
			if r.Goroutines <= want || time.Now().After(deadline) {
				return r.Goroutines, r.Stacks
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	up()
	base, _ := goroutines(0, 2*time.Second)
	const restarts = 3
	for range restarts {
		a.must(helperReq{Op: "restart"})
		up()
	}
	n, stacks := goroutines(base, 20*time.Second)
	t.Logf("goroutines with a session up: %d before, %d after %d in-process restarts", base, n, restarts)
	if n > base {
		t.Fatalf("%d goroutines after %d restarts, %d before:\n%s", n, restarts, base, stacks)
	}
}
