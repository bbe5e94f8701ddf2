package routing

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
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
		err := sp.bgp.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: fam}, func(d *api.Destination) {
			got[netip.MustParsePrefix(d.Prefix)] = true
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
	}{{p4, "192.168.100.0/26", "10.99.0.2"}, {p6, "fd00:1::/122", "fd00:99::2"}} {
		pfx, nh, ok, err := learnedRoute(tc.p)
		if !ok || err != nil || pfx.String() != tc.pfx || nh.String() != tc.nh {
			t.Errorf("learnedRoute = %s %s %v %v, want %s via %s", pfx, nh, ok, err, tc.pfx, tc.nh)
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
