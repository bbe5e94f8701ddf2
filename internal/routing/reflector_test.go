package routing

import (
	"net/netip"
	"testing"
	"time"
)

// TestRouteReflector: r reflects between its clients a and b, which have
// no session with each other, next hops kept; it passes neither its
// clients' routes to an eBGP router c, nor c's routes to its clients (the
// export policy allows iBGP to iBGP only). Before the export policy let
// internal routes through, b learned nothing from a.
func TestRouteReflector(t *testing.T) {
	t.Parallel()
	hs := newLab(t, "a", "b", "r", "c")
	ha, hb, hr, hc := hs[0], hs[1], hs[2], hs[3]
	const torAS = 65001
	a := spawn(t, ha, ha.config(meshAS))
	b := spawn(t, hb, hb.config(meshAS))
	r := spawn(t, hr, hr.config(meshAS))
	c := spawn(t, hc, hc.config(torAS))

	a.announce(blockA)
	b.announce(blockB)
	c.announce(torNet)
	toR := Peer{Address: hr.ip4, ASN: meshAS, Type: PeerTypeGlobal, Role: RoleReflector}
	a.peers(toR)
	b.peers(toR)
	r.peers(
		Peer{Address: ha.ip4, ASN: meshAS, Type: PeerTypeGlobal, Role: RoleClient},
		Peer{Address: hb.ip4, ASN: meshAS, Type: PeerTypeGlobal, Role: RoleClient},
		Peer{Address: hc.ip4, ASN: torAS, Type: PeerTypeNode},
	)
	c.peers(Peer{Address: hr.ip4, ASN: meshAS, Type: PeerTypeNode})
	waitEstablished(t, r, 20*time.Second, ha, hb, hc)

	waitPaths(t, b, 10*time.Second, map[netip.Prefix][]Path{blockA: {{Neighbor: hr.ip4, NextHop: ha.ip4}}})
	waitPaths(t, a, 10*time.Second, map[netip.Prefix][]Path{blockB: {{Neighbor: hr.ip4, NextHop: hb.ip4}}})
	waitLearned(t, r, 10*time.Second, map[netip.Prefix]netip.Addr{blockA: ha.ip4, blockB: hb.ip4, torNet: hc.ip4})
	// Settled: the router still has nothing from r, the clients nothing
	// from the router.
	time.Sleep(2 * time.Second)
	if got := c.learned(); len(got) != 0 {
		t.Errorf("the eBGP router learned %v from the reflector, want nothing (r announces no block of its own)", got)
	}
	if got := a.learned(); len(got) != 1 {
		t.Errorf("client a learned %v, want only b's block", got)
	}
	for _, s := range r.states() {
		want := map[string]string{ha.ip4.String(): RoleClient, hb.ip4.String(): RoleClient, hc.ip4.String(): ""}[s.IP]
		if s.Role != want {
			t.Errorf("r reports %s with role %q, want %q", s.IP, s.Role, want)
		}
	}
	if st, _ := a.state(hr.ip4); st.Role != RoleReflector {
		t.Errorf("a reports its reflector with role %q, want %q", st.Role, RoleReflector)
	}

	// Neither is a client any more (r peers with them as plain iBGP
	// peers): each session is re-made without reflection, and a and b
	// lose each other's blocks for good.
	r.peers(
		Peer{Address: ha.ip4, ASN: meshAS, Type: PeerTypeGlobal},
		Peer{Address: hb.ip4, ASN: meshAS, Type: PeerTypeGlobal},
		Peer{Address: hc.ip4, ASN: torAS, Type: PeerTypeNode},
	)
	waitLearned(t, r, 20*time.Second, map[netip.Prefix]netip.Addr{blockA: ha.ip4, blockB: hb.ip4, torNet: hc.ip4})
	waitPaths(t, a, 20*time.Second, map[netip.Prefix][]Path{})
	waitPaths(t, b, 20*time.Second, map[netip.Prefix][]Path{})
	time.Sleep(2 * time.Second)
	if got := a.learned(); len(got) != 0 {
		t.Errorf("a learned %v through a reflector that no longer has it as a client", got)
	}

	// b removed (it leaves the iBGP neighbour set), then both back as
	// clients (b re-enters it): reflection resumes.
	r.peers(
		Peer{Address: ha.ip4, ASN: meshAS, Type: PeerTypeGlobal, Role: RoleClient},
		Peer{Address: hc.ip4, ASN: torAS, Type: PeerTypeNode},
	)
	waitLearned(t, r, 20*time.Second, map[netip.Prefix]netip.Addr{blockA: ha.ip4, torNet: hc.ip4})
	r.peers(
		Peer{Address: ha.ip4, ASN: meshAS, Type: PeerTypeGlobal, Role: RoleClient},
		Peer{Address: hb.ip4, ASN: meshAS, Type: PeerTypeGlobal, Role: RoleClient},
		Peer{Address: hc.ip4, ASN: torAS, Type: PeerTypeNode},
	)
	waitPaths(t, b, 30*time.Second, map[netip.Prefix][]Path{blockA: {{Neighbor: hr.ip4, NextHop: ha.ip4}}})
	waitPaths(t, a, 30*time.Second, map[netip.Prefix][]Path{blockB: {{Neighbor: hr.ip4, NextHop: hb.ip4}}})
	if got := c.learned(); len(got) != 0 {
		t.Errorf("the eBGP router learned %v from the reflector after the changes, want nothing", got)
	}
}

// TestUpdateReadsOnlyItsPrefixes: once the sessions are up, a block
// announced or withdrawn through a reflector reaches its other client
// with a read of that prefix alone, not of the whole RIB (which every
// agent used to pay for each new block anywhere in the cluster), and the
// paths learned are exactly those a whole read gives.
func TestUpdateReadsOnlyItsPrefixes(t *testing.T) {
	t.Parallel()
	hs := newLab(t, "a", "b", "r")
	ha, hb, hr := hs[0], hs[1], hs[2]
	a := spawn(t, ha, ha.config(meshAS))
	b := spawn(t, hb, hb.config(meshAS))
	r := spawn(t, hr, hr.config(meshAS))
	a.announce(blockA)
	toR := Peer{Address: hr.ip4, ASN: meshAS, Type: PeerTypeGlobal, Role: RoleReflector}
	a.peers(toR)
	b.peers(toR)
	r.peers(
		Peer{Address: ha.ip4, ASN: meshAS, Type: PeerTypeGlobal, Role: RoleClient},
		Peer{Address: hb.ip4, ASN: meshAS, Type: PeerTypeGlobal, Role: RoleClient},
	)
	waitEstablished(t, r, 20*time.Second, ha, hb)
	viaR := func(nh netip.Addr) []Path { return []Path{{Neighbor: hr.ip4, NextHop: nh}} }
	waitPaths(t, b, 10*time.Second, map[netip.Prefix][]Path{blockA: viaR(ha.ip4)})
	// Let the End-of-RIB and session events of the start settle.
	time.Sleep(time.Second)
	before := b.must(helperReq{Op: "learned"})

	a.announce(blockA, blockA2)
	waitPaths(t, b, 10*time.Second, map[netip.Prefix][]Path{blockA: viaR(ha.ip4), blockA2: viaR(ha.ip4)})
	a.announce(blockA2)
	waitPaths(t, b, 10*time.Second, map[netip.Prefix][]Path{blockA2: viaR(ha.ip4)})

	after := b.must(helperReq{Op: "learned"})
	if after.WholeReads != before.WholeReads {
		t.Errorf("b read its whole RIB %d times for one announcement and one withdrawal, want 0", after.WholeReads-before.WholeReads)
	}
	if after.SomeReads < before.SomeReads+2 {
		t.Errorf("b read some prefixes %d times, want at least 2 (one per UPDATE)", after.SomeReads-before.SomeReads)
	}
}
