package routing

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// quietConfig never listens and is given no peers: these tests send nothing
// on any network.
func quietConfig() Config {
	return Config{
		RouterID:   netip.MustParseAddr("10.99.0.1"),
		ASN:        64512,
		ListenPort: -1,
		NextHopV6:  netip.MustParseAddr("fd00:99::1"),
		Logger:     slog.New(slog.DiscardHandler),
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		field string
		edit  func(*Config)
	}{
		{"RouterID", func(c *Config) { c.RouterID = netip.Addr{} }},
		{"RouterID", func(c *Config) { c.RouterID = netip.MustParseAddr("fd00::1") }},
		{"ASN", func(c *Config) { c.ASN = 0 }},
		{"ListenPort", func(c *Config) { c.ListenPort = 70000 }},
		{"ListenPort", func(c *Config) { c.ListenPort = -2 }},
		{"NextHopV4", func(c *Config) { c.NextHopV4 = netip.MustParseAddr("fd00::1") }},
		{"NextHopV6", func(c *Config) { c.NextHopV6 = netip.MustParseAddr("10.0.0.1") }},
		{"NextHopV6", func(c *Config) { c.NextHopV6 = netip.MustParseAddr("fe80::1") }},
		{"HoldTime", func(c *Config) { c.HoldTime = 2 * time.Second }},
		{"GracefulRestartTime", func(c *Config) { c.GracefulRestartTime = time.Hour + time.Second*500 }},
	} {
		c := quietConfig()
		tc.edit(&c)
		sp, err := Start(context.Background(), c)
		if err == nil {
			sp.Stop()
			t.Errorf("%s: Start accepted %+v", tc.field, c)
			continue
		}
		if !strings.Contains(err.Error(), tc.field) {
			t.Errorf("error %q does not name %s", err, tc.field)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := quietConfig().normalize()
	if err != nil {
		t.Fatal(err)
	}
	if c.NextHopV4 != c.RouterID || c.HoldTime != DefaultHoldTime || c.GracefulRestartTime != DefaultGracefulRestartTime {
		t.Errorf("defaults not applied: %+v", c)
	}
	c = quietConfig()
	c.ListenPort = 0
	if c, _ = c.normalize(); c.ListenPort != 179 {
		t.Errorf("ListenPort 0 became %d, want 179", c.ListenPort)
	}
}

// A speaker with no peers: input validation, its own routes are not
// "learned", nothing works after Stop.
func TestSpeakerAlone(t *testing.T) {
	sp, err := Start(context.Background(), quietConfig())
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			sp.Stop()
		}
	}()

	for _, tc := range []struct {
		prefixes []netip.Prefix
		want     string
	}{
		{[]netip.Prefix{netip.MustParsePrefix("192.168.100.1/26")}, "host bits"},
		{[]netip.Prefix{{}}, "invalid"},
		{[]netip.Prefix{netip.MustParsePrefix("::ffff:192.168.0.0/120")}, "IPv4-mapped"},
	} {
		if err := sp.SetAnnounced(tc.prefixes); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("SetAnnounced(%v) = %v, want an error about %q", tc.prefixes, err, tc.want)
		}
	}
	if err := sp.SetAnnounced([]netip.Prefix{blockA, blockA6, blockA}); err != nil {
		t.Fatal(err)
	}
	if err := sp.SetAnnounced([]netip.Prefix{blockA6, blockA2}); err != nil {
		t.Fatal(err)
	}
	if got := ourPaths(t, sp); len(got) != 2 || !got[blockA6] || !got[blockA2] {
		t.Errorf("RIB holds %v, want exactly %s and %s", got, blockA6, blockA2)
	}
	time.Sleep(3 * rebuildDelay)
	if l := sp.Learned(); len(l) != 0 {
		t.Errorf("Learned() = %v: our own routes are not learned", l)
	}

	self := netip.MustParseAddr("10.99.0.1")
	other := netip.MustParseAddr("10.99.0.2")
	for _, tc := range []struct {
		peers []Peer
		want  string
	}{
		{[]Peer{{Address: other, ASN: 64512, Type: "mesh"}}, "Type"},
		{[]Peer{{Address: other, Type: PeerTypeNodeMesh}}, "ASN"},
		{[]Peer{{Address: self, ASN: 64512, Type: PeerTypeNodeMesh}}, "own address"},
		{[]Peer{{ASN: 64512, Type: PeerTypeNodeMesh}}, "Address"},
		{[]Peer{{Address: other, ASN: 1, Type: PeerTypeGlobal}, {Address: other, ASN: 1, Type: PeerTypeNode}}, "twice"},
	} {
		if err := sp.SetPeers(tc.peers); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("SetPeers(%v) = %v, want an error about %q", tc.peers, err, tc.want)
		}
	}
	if st := sp.PeerStates(); len(st) != 0 {
		t.Errorf("invalid SetPeers calls left peers behind: %v", st)
	}

	sp.Stop()
	stopped = true
	if err := sp.SetAnnounced(nil); err == nil {
		t.Error("SetAnnounced after Stop succeeded")
	}
	sp.Stop() // idempotent
}

func TestSetAnnouncedIPv6NeedsNextHop(t *testing.T) {
	c := quietConfig()
	c.NextHopV6 = netip.Addr{}
	sp, err := Start(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Stop()
	if err := sp.SetAnnounced([]netip.Prefix{blockA6}); err == nil || !strings.Contains(err.Error(), "NextHopV6") {
		t.Errorf("SetAnnounced(IPv6) without NextHopV6 = %v", err)
	}
}

// ourPaths lists the prefixes of locally originated paths in the RIB.
func ourPaths(t *testing.T, sp *Speaker) map[netip.Prefix]bool {
	t.Helper()
	got := map[netip.Prefix]bool{}
	for _, fam := range []*api.Family{familyV4, familyV6} {
		err := sp.call(func() error {
			return sp.bgp.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: fam}, func(d *api.Destination) {
				got[netip.MustParsePrefix(d.Prefix)] = true
			})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return got
}

func TestLearnedRoute(t *testing.T) {
	v4 := bgp.NewIPAddrPrefix(26, "192.168.100.0")
	p4, err := apiutil.NewPath(v4, false, []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(0), bgp.NewPathAttributeNextHop("10.99.0.2"),
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	v6 := bgp.NewIPv6AddrPrefix(122, "fd00:1::")
	p6, err := apiutil.NewPath(v6, false, []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(0), bgp.NewPathAttributeMpReachNLRI("fd00:99::2", []bgp.AddrPrefixInterface{v6}),
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	// Local paths carry "<nil>" as neighbour: not learned.
	p4.NeighborIp = "<nil>"
	if _, _, ok, err := learnedRoute(p4); ok || err != nil {
		t.Errorf("own path: ok=%v err=%v", ok, err)
	}
	p4.NeighborIp, p6.NeighborIp = "10.99.0.2", "10.99.0.2"
	for _, tc := range []struct {
		p       *api.Path
		pfx, nh string
	}{{p4, "192.168.100.0/26", "10.99.0.2"}, {p6, "fd00:1::/122", "fd00:99::2"}, {binaryPath(t, p4), "192.168.100.0/26", "10.99.0.2"}, {binaryPath(t, p6), "fd00:1::/122", "fd00:99::2"}} {
		pfx, nh, ok, err := learnedRoute(tc.p)
		if !ok || err != nil || pfx.String() != tc.pfx || nh.String() != tc.nh {
			t.Errorf("learnedRoute = %s %s %v %v, want %s via %s", pfx, nh, ok, err, tc.pfx, tc.nh)
		}
	}
}

// binaryPath is p as a listing with EnableOnlyBinary gives it: NLRI and
// attributes in wire form only.
func binaryPath(t testing.TB, p *api.Path) *api.Path {
	t.Helper()
	nlri, err := apiutil.GetNativeNlri(p)
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := apiutil.GetNativePathAttributes(p)
	if err != nil {
		t.Fatal(err)
	}
	b := &api.Path{Family: p.Family, NeighborIp: p.NeighborIp}
	if b.NlriBinary, err = nlri.Serialize(); err != nil {
		t.Fatal(err)
	}
	for _, a := range attrs {
		raw, err := a.Serialize()
		if err != nil {
			t.Fatal(err)
		}
		b.PattrsBinary = append(b.PattrsBinary, raw)
	}
	return b
}

// BenchmarkLearnedRoute is one path of a reflected route, as the speaker
// decodes every path it reads from its RIB.
func BenchmarkLearnedRoute(b *testing.B) {
	nlri := bgp.NewIPAddrPrefix(26, "10.90.7.0")
	p, err := apiutil.NewPath(nlri, false, []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(0), bgp.NewPathAttributeAsPath(nil), bgp.NewPathAttributeNextHop("10.0.0.7"),
		bgp.NewPathAttributeLocalPref(100), bgp.NewPathAttributeOriginatorId("10.0.0.7"), bgp.NewPathAttributeClusterList([]string{"10.0.0.3"}),
	}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	p.NeighborIp = "10.0.0.3"
	bp := binaryPath(b, p)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok, err := learnedRoute(bp); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

func TestSessionStateNames(t *testing.T) {
	for st, want := range map[api.PeerState_SessionState]string{
		api.PeerState_ESTABLISHED: "Established", api.PeerState_ACTIVE: "Active",
		api.PeerState_IDLE: "Idle", api.PeerState_OPENSENT: "OpenSent", api.PeerState_UNKNOWN: "Unknown",
	} {
		if got := sessionStateName(st); got != want {
			t.Errorf("%v -> %q, want %q", st, got, want)
		}
	}
}

func TestSlogAdapterIsQuiet(t *testing.T) {
	var buf bytes.Buffer
	a := newSlogAdapter(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	a.Info("Add a peer configuration", gobgplog.Fields{"Key": "10.0.0.1"})
	a.Debug("try to connect", nil)
	if buf.Len() != 0 {
		t.Errorf("info/debug passed at the default level: %s", buf.String())
	}
	a.Warn("hold timer expired", gobgplog.Fields{"Topic": "Peer", "Key": "10.0.0.1"})
	if got := buf.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, `msg="hold timer expired"`) ||
		!strings.Contains(got, "component=gobgp Key=10.0.0.1 Topic=Peer") {
		t.Errorf("warning logged as %q", got)
	}
	a.SetLevel(gobgplog.DebugLevel)
	buf.Reset()
	a.Debug("try to connect", nil)
	if !strings.Contains(buf.String(), "level=DEBUG") {
		t.Errorf("SetLevel(Debug) ignored: %q", buf.String())
	}
}

// waitGoroutines waits until this process has at most want goroutines; it
// returns how many it last saw and their stacks. Goroutines of a stopped
// speaker may take a moment to end (a dialler's connection attempt, the
// rebuild loop's timer), so it polls instead of sampling once.
func waitGoroutines(want int, timeout time.Duration) (int, string) {
	deadline := time.Now().Add(timeout)
	for {
		n := runtime.NumGoroutine()
		if n <= want || time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			return n, string(buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// loopbackPeer is a peer GoBGP dials (and fails to reach) on 127.0.0.1, so
// its FSM goroutines exist without sending anything beyond this host.
var loopbackPeer = Peer{Address: netip.MustParseAddr("127.0.0.1"), ASN: 65001, Type: PeerTypeGlobal}

// Each Start/Stop cycle used to leave GoBGP's Serve goroutine (and with it
// the whole server) behind, and so did every failed Start: an agent whose
// BGP port was taken leaked one per retry. Neither leaves anything now.
func TestStartStopLeavesNoGoroutine(t *testing.T) {
	// Settle what earlier tests left (their speakers are stopped).
	base, _ := waitGoroutines(0, time.Second)
	const cycles = 5
	for i := range cycles {
		sp, err := Start(context.Background(), quietConfig())
		if err != nil {
			t.Fatal(err)
		}
		if err := sp.SetAnnounced([]netip.Prefix{blockA, blockA6}); err != nil {
			t.Fatal(err)
		}
		if err := sp.SetPeers([]Peer{loopbackPeer}); err != nil {
			t.Fatal(err)
		}
		_ = sp.PeerStates()
		if i%2 == 0 {
			sp.Stop()
		} else {
			sp.StopAndFlush()
		}
		if sp.PeerStates() != nil || sp.SetPeers(nil) == nil {
			t.Fatal("speaker still answers after Stop")
		}
	}
	// A start that fails half-way: the listener cannot bind an address
	// this host does not have (nothing is sent).
	for range cycles {
		c := quietConfig()
		c.ListenAddr, c.ListenPort = netip.MustParseAddr("192.0.2.1"), 17917
		if sp, err := Start(context.Background(), c); err == nil {
			sp.Stop()
			t.Fatal("Start on an address this host does not have succeeded")
		}
	}
	if n, stacks := waitGoroutines(base, 10*time.Second); n > base {
		t.Fatalf("%d goroutines after %d Start/Stop cycles and %d failed starts, %d before:\n%s", n, cycles, cycles, base, stacks)
	}
}

// endServe relies on every GoBGP request the speaker makes being counted
// by call, and handled by GoBGP as exactly one management request. A GoBGP
// upgrade that changed the second would fail here, not in production.
func TestEveryRequestCounted(t *testing.T) {
	sp, err := Start(context.Background(), quietConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Stop()
	settled := func(what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for sp.hook.requests.Load() != sp.calls.Load() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if h, c := sp.hook.requests.Load(), sp.calls.Load(); h != c {
			t.Fatalf("after %s GoBGP handled %d requests, the speaker made %d", what, h, c)
		}
	}
	settled("Start")
	for _, step := range []struct {
		what string
		do   func() error
	}{
		{"SetAnnounced (add)", func() error { return sp.SetAnnounced([]netip.Prefix{blockA, blockA6}) }},
		{"SetAnnounced (withdraw)", func() error { return sp.SetAnnounced([]netip.Prefix{blockA2}) }},
		{"SetPeers (add)", func() error { return sp.SetPeers([]Peer{loopbackPeer}) }},
		{"PeerStates", func() error { sp.PeerStates(); return nil }},
		{"SetPeers (AS change)", func() error { p := loopbackPeer; p.ASN++; return sp.SetPeers([]Peer{p}) }},
		{"SetPeers (delete)", func() error { return sp.SetPeers(nil) }},
		{"a rebuild of Learned", func() error { _, err := sp.listPaths(context.Background(), true, nil); return err }},
		{"a rebuild of some prefixes", func() error {
			_, err := sp.listPaths(context.Background(), false, []netip.Prefix{blockA, blockA6})
			return err
		}},
	} {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.what, err)
		}
		settled(step.what)
	}
	// A refused request is still one request.
	if err := sp.call(func() error {
		return sp.bgp.DeletePeer(context.Background(), &api.DeletePeerRequest{Address: "10.99.0.77"})
	}); err == nil {
		t.Fatal("deleting a peer that does not exist succeeded")
	}
	settled("a refused DeletePeer")
}

// TestPeerStatesListsOnlyAfterAChange: PeerStates asks GoBGP once and then
// answers from its last listing until something could have changed it (a
// session event, or SetPeers changing the peers), so the agent's status check
// every second costs an idle speaker nothing. The peer sorts below our own
// address, so we wait for it to dial: nothing is sent.
func TestPeerStatesListsOnlyAfterAChange(t *testing.T) {
	sp, err := Start(context.Background(), quietConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Stop()
	listings := func(f func()) int64 {
		before := sp.calls.Load()
		f()
		return sp.calls.Load() - before
	}
	if n := listings(func() { sp.PeerStates(); sp.PeerStates(); sp.PeerStates() }); n != 1 {
		t.Errorf("three PeerStates with nothing changed made %d GoBGP requests, want 1", n)
	}
	peer := Peer{Address: netip.MustParseAddr("10.98.0.1"), ASN: 64512, Type: PeerTypeNodeMesh}
	if err := sp.SetPeers([]Peer{peer}); err != nil {
		t.Fatal(err)
	}
	st := sp.PeerStates()
	if len(st) != 1 || st[0].IP != "10.98.0.1" || st[0].Type != PeerTypeNodeMesh {
		t.Fatalf("after SetPeers, PeerStates = %+v, want the new peer", st)
	}
	// The peer's type changes what is reported, not the session.
	peer.Type = PeerTypeGlobal
	if err := sp.SetPeers([]Peer{peer}); err != nil {
		t.Fatal(err)
	}
	if st := sp.PeerStates(); len(st) != 1 || st[0].Type != PeerTypeGlobal {
		t.Errorf("after the type changed, PeerStates = %+v, want type %s", st, PeerTypeGlobal)
	}
	// A caller's changes to the answer do not reach the next one.
	st = sp.PeerStates()
	st[0].State = "changed by the caller"
	if again := sp.PeerStates(); again[0].State == st[0].State {
		t.Error("PeerStates handed out its own copy")
	}
	if err := sp.SetPeers(nil); err != nil {
		t.Fatal(err)
	}
	if st := sp.PeerStates(); len(st) != 0 {
		t.Errorf("after removing the peer, PeerStates = %+v", st)
	}
}

// BenchmarkRebuild is one rebuild of Learned in a RIB of 200 blocks (two
// per host of a 100-host cluster): reading the whole RIB, as every UPDATE
// used to cost, against reading the one prefix the UPDATE named. The
// blocks are the speaker's own (GoBGP's side of the work is the same;
// learnedRoute skips them early).
func BenchmarkRebuild(b *testing.B) {
	sp, err := Start(context.Background(), quietConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Stop()
	var blocks []netip.Prefix
	for i := range 200 {
		blocks = append(blocks, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 90, byte(i / 4), byte(i % 4 * 64)}), 26))
	}
	if err := sp.SetAnnounced(blocks); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name     string
		all      bool
		prefixes []netip.Prefix
	}{{"whole-RIB", true, nil}, {"one-prefix", false, blocks[77:78]}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := sp.listPaths(context.Background(), bc.all, bc.prefixes); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
