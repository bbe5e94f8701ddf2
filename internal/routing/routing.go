// Package routing is the node agent's BGP speaker: an embedded GoBGP v3
// server that announces this host's workload blocks to its peers (the other
// nodes of the full mesh, and configured routers) and reports every path it
// learns from them, best first. It never touches the kernel and judges no
// route: the agent's import policy (calc) decides what Learned may install.
//
// What GoBGP v3.37.0 does, found by reading its source and checked by the
// tests in this package:
//
//   - Graceful restart (RFC 4724) is honoured by the receiving side when the
//     session ends without a NOTIFICATION: the TCP connection closing (the
//     speaker's process died), or the hold timer expiring. The peer keeps the
//     routes, marked stale and still best, for the restart time the
//     restarting speaker advertised, and drops those not re-announced once
//     the speaker is back and has sent End-of-RIB for each family.
//   - A NOTIFICATION always makes the peer flush (RFC 8538's "N" bit, which
//     would change that, is not negotiated here). GoBGP's own
//     BgpServer.Stop/StopBgp sends Cease/Peer-Deconfigured to every peer,
//     and so do DeletePeer and DisablePeer: none of them lets a peer keep
//     our routes. So Speaker.Stop, when graceful restart is on, first shuts
//     down the session sockets itself (see abortSessions) and only then
//     stops GoBGP, whose NOTIFICATIONs then have nowhere to go.
//   - The hold timer expiring is also a graceful-restart trigger, so a host
//     that vanishes (cable cut, kernel panic) keeps its routes at its peers
//     for hold time + restart time, not just hold time. That is the price of
//     surviving agent restarts; GracefulRestartTime trades one for the other.
//   - The listening socket is created synchronously by StartBgp, but inside
//     GoBGP's own Serve goroutine, and outgoing connections are dialled later
//     by per-peer goroutines: the process must already be in the right
//     network namespace. The agent is; the tests run each speaker as a child
//     process inside its namespace.
//   - Serve has no way to return, and StopBgp leaves it parked: each
//     Start/Stop cycle (an AS change, a failed start retried) would leave a
//     goroutine and the whole server behind. GoBGP calls a timing hook on
//     Serve's goroutine after every event it handles, so Stop ends Serve
//     from there with runtime.Goexit (see serveHook), once its own last
//     request is provably the next one Serve handles.
//   - The same hook says when a BGP message or session change has been
//     handled (PeerStates uses it). What changed in the RIB comes from a
//     watch instead (see watchRIB): a watch on best paths would not do, as
//     Learned reports every path and a new path that does not win
//     best-path selection changes it too, but the pre-policy Adj-RIB-In
//     watch reports every path of every UPDATE, withdrawals included, on
//     Serve's goroutine before the RIB is changed. Everything else that
//     changes the RIB without an UPDATE is a session event (a peer down
//     flushing or marking stale, a restart timer expiring), an End-of-RIB
//     (stale paths dropped) or a peer deleted by SetPeers.
package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/config/oc"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"

	calicoapi "github.com/calico-go/calico/internal/api"
)

// Peer types, as `calicoctl status` shows them.
const (
	PeerTypeNodeMesh = "node-mesh" // another node of the full mesh
	PeerTypeGlobal   = "global"    // a BGPPeer for every node
	PeerTypeNode     = "node"      // a BGPPeer for this node only
)

// Route reflection roles of a session.
const (
	// RoleClient: this node reflects the peer's routes to its other iBGP
	// peers, and theirs to it (RFC 4456); the peer needs no setting.
	RoleClient = "client"
	// RoleReflector: the peer is a route reflector. The session is
	// ordinary iBGP; the role is only reported.
	RoleReflector = "reflector"
)

// Defaults for Config fields left zero.
const (
	DefaultHoldTime            = 90 * time.Second
	DefaultGracefulRestartTime = 120 * time.Second
)

const (
	bgpPort = 179

	// connectRetrySeconds is how long a peer's FSM waits between failed
	// connection attempts (GoBGP draws it from [n, 2n) seconds). GoBGP's
	// default, 120, means a node whose first attempt hit a peer that was not
	// up yet stays disconnected for up to four minutes unless the peer dials
	// back; 5 keeps mesh convergence in seconds at a negligible cost.
	connectRetrySeconds = 5

	// rebuildDelay gathers a burst of BGP messages (a peer sending its
	// whole table, a graceful restart ending) into one rebuild of Learned.
	// It adds to every new workload's time to reachable on other hosts
	// (bench: 20 ms was about half of it), so it stays short.
	rebuildDelay = 5 * time.Millisecond

	// maxDirty bounds the prefixes remembered between two rebuilds: past
	// it (a peer sending its whole table, or flooding UPDATEs) the next
	// rebuild reads the whole RIB instead, which then costs less than as
	// many lookups, and memory stays bounded whatever a peer sends.
	maxDirty = 256

	// relistEvery is how often the whole RIB is read even when no event
	// asked for it: a safety net, should a change ever reach the RIB
	// without an event saying so, that costs one listing a minute.
	relistEvery = time.Minute

	exportPolicyName = "calico-export"
	// ibgpSetName is the neighbour set of this node's iBGP peers: the only
	// ones a route learned over iBGP may be exported to (reflected).
	ibgpSetName = "calico-ibgp-peers"
	// ibgpSetPlaceholder keeps the set from being empty, which GoBGP takes
	// as "every neighbour". No peer can have it (validatePeers).
	ibgpSetPlaceholder = "0.0.0.0/32"
)

var (
	familyV4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	familyV6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

// Config is what a node's speaker needs to know about its host.
type Config struct {
	// RouterID is the host's IPv4 address; GoBGP requires one.
	RouterID netip.Addr
	// ASN is this node's AS number.
	ASN uint32
	// ListenAddr binds the BGP listener, and the source of outgoing sessions
	// to peers of the same family, to the host's address, so peers see the
	// address they have configured. Invalid: listen on all addresses.
	ListenAddr netip.Addr
	// ListenPort: 0 means 179; -1 means do not listen (sessions are then
	// only dialled by this side).
	ListenPort int32
	// NextHopV4 is announced as next hop of IPv4 prefixes. Invalid: RouterID.
	NextHopV4 netip.Addr
	// NextHopV6 is announced as next hop of IPv6 prefixes (in MP_REACH_NLRI,
	// so they travel over IPv4 sessions too). Invalid: this host announces
	// no IPv6 prefixes.
	NextHopV6 netip.Addr
	// HoldTime of every session; 0 means 90 s, otherwise at least 3 s.
	// Keepalives are sent every HoldTime/3. A shorter hold time detects a
	// lost host sooner, but see GracefulRestartTime.
	HoldTime time.Duration
	// GracefulRestartTime is the restart time advertised in the graceful
	// restart capability: how long peers keep this node's routes while its
	// agent restarts. 0 means 120 s; negative disables graceful restart
	// (peers drop our routes as soon as the session ends, and we drop
	// theirs). At most 4095 s, the field's width.
	GracefulRestartTime time.Duration
	// ClusterID is the route reflector cluster ID sent to RoleClient peers
	// (RFC 4456's CLUSTER_LIST). Invalid: RouterID.
	ClusterID netip.Addr
	// Logger receives GoBGP's warnings and errors (nil: slog.Default()).
	Logger *slog.Logger
}

// Peer is one BGP neighbour. Sessions to peers of the node's own AS are
// iBGP (the full mesh), others eBGP to a directly connected router.
type Peer struct {
	Address netip.Addr
	ASN     uint32
	Type    string // PeerTypeNodeMesh, PeerTypeGlobal or PeerTypeNode
	Role    string // RoleClient, RoleReflector or ""
	// MaxPrefixes: more prefixes than this in one family and GoBGP resets
	// the session (Cease, "maximum number of prefixes reached"); the
	// UPDATE that crossed it is dropped whole. 0: no limit.
	MaxPrefixes int
}

// Path is one route a peer sent us for a prefix.
type Path struct {
	// Neighbor is the address of the session it came over.
	Neighbor netip.Addr
	NextHop  netip.Addr
}

// Speaker is one node's BGP speaker. Its methods are safe for concurrent use.
type Speaker struct {
	cfg        Config
	holdSecs   uint64
	grSecs     uint32 // 0: graceful restart disabled
	listenPort int    // the local port of accepted sessions; <= 0 when none
	bgp        *server.BgpServer
	hook       *serveHook
	log        *slog.Logger

	// calls counts the GoBGP requests made (each is one request handled
	// on Serve's goroutine); see endServe.
	calls atomic.Int64

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	kick    chan struct{} // the RIB may have changed; buffer 1
	changes chan struct{} // Learned changed; buffer 1

	opMu  sync.Mutex // serialises SetPeers, SetAnnounced, PeerStates and Stop
	peers map[netip.Addr]Peer
	// statusGen counts what can change PeerStates: every session event
	// GoBGP handles (a state change or an UPDATE; keepalives are none) and
	// every change to peers. PeerStates asks GoBGP again only when it
	// moved: the agent reads the states every second to see whether its
	// status changed, and listing GoBGP's peers (a configuration and
	// capabilities conversion per peer) was most of an idle agent's CPU,
	// growing with its sessions (49 in a mesh of 50, 99 on a reflector of
	// 100). states and statesGen are the last answer (under opMu).
	statusGen atomic.Uint64
	// limitResets counts, per neighbour address, the sessions GoBGP reset
	// for going over the prefix limit, and when the last one was.
	limitMu     sync.Mutex
	limitResets map[string]limitReset
	states      []calicoapi.PeerState
	statesGen   uint64
	haveState   bool
	ibgpSet     map[netip.Addr]bool // the addresses in ibgpSetName
	announced   map[netip.Prefix]*api.Path
	stopped     bool

	mu      sync.RWMutex
	learned map[netip.Prefix][]Path

	// dirty is what the next rebuild reads again: the prefixes of the
	// paths UPDATEs brought, or the whole RIB (dirtyAll). Filled by the
	// RIB watch and SetPeers, emptied by rebuildLoop.
	dirtyMu  sync.Mutex
	dirty    map[netip.Prefix]bool
	dirtyAll bool
	// watching: the RIB watch is registered; its unregistering is one
	// more GoBGP request, made by GoBGP's own goroutine (see stop).
	watching bool
	// wholeReads and someReads count the rebuilds that read the whole RIB
	// and those that read some prefixes (tests).
	wholeReads, someReads atomic.Int64
}

// serveHook is GoBGP's timing hook, which GoBGP calls on its Serve
// goroutine right after each event it has handled: a management request
// (FSMMgmtOp, after the caller got its answer), or a message or state
// change from a peer's session (FSMMessage). Keepalives never get there.
type serveHook struct {
	// onMessage is called after each session event: the RIB may have changed.
	onMessage func()
	// requests counts the management requests handled so far.
	requests atomic.Int64
	// quit makes the next management request handled the last: Serve's
	// goroutine ends right after it (see Speaker.endServe).
	quit atomic.Bool
	// ended is closed by Serve's goroutine as it ends.
	ended chan struct{}
}

func (h *serveHook) Observe(op server.FSMOperation, _, _ time.Duration) {
	switch op {
	case server.FSMMgmtOp:
		h.requests.Add(1)
		if h.quit.Load() {
			close(h.ended)
			// Serve defers nothing, holds no lock here, and nobody
			// waits for it: ending its goroutine is all that stopping
			// it takes.
			runtime.Goexit()
		}
	case server.FSMMessage:
		h.onMessage()
	}
}

// normalize validates c and fills in defaults, naming the field at fault.
func (c Config) normalize() (Config, error) {
	c.RouterID = c.RouterID.Unmap()
	if !c.RouterID.Is4() {
		return c, fmt.Errorf("RouterID %q: must be an IPv4 address", c.RouterID)
	}
	if c.ASN == 0 {
		return c, errors.New("ASN: must not be 0")
	}
	if c.ListenAddr.IsValid() {
		c.ListenAddr = c.ListenAddr.Unmap()
		if c.ListenAddr.IsUnspecified() {
			c.ListenAddr = netip.Addr{}
		}
	}
	switch {
	case c.ListenPort == 0:
		c.ListenPort = bgpPort
	case c.ListenPort == -1:
	case c.ListenPort < 1 || c.ListenPort > 65535:
		return c, fmt.Errorf("ListenPort %d: must be 1-65535, 0 (179) or -1 (do not listen)", c.ListenPort)
	}
	if !c.NextHopV4.IsValid() {
		c.NextHopV4 = c.RouterID
	}
	c.NextHopV4 = c.NextHopV4.Unmap()
	if !c.NextHopV4.Is4() || c.NextHopV4.IsUnspecified() {
		return c, fmt.Errorf("NextHopV4 %s: must be a unicast IPv4 address", c.NextHopV4)
	}
	if c.NextHopV6.IsValid() && (!c.NextHopV6.Is6() || c.NextHopV6.Is4In6() || c.NextHopV6.IsUnspecified() || c.NextHopV6.IsLinkLocalUnicast()) {
		return c, fmt.Errorf("NextHopV6 %s: must be a global IPv6 address", c.NextHopV6)
	}
	if c.HoldTime == 0 {
		c.HoldTime = DefaultHoldTime
	}
	if c.HoldTime < 3*time.Second || c.HoldTime > 65535*time.Second {
		return c, fmt.Errorf("HoldTime %s: must be between 3s and 65535s (RFC 4271)", c.HoldTime)
	}
	if c.GracefulRestartTime == 0 {
		c.GracefulRestartTime = DefaultGracefulRestartTime
	}
	if !c.ClusterID.IsValid() {
		c.ClusterID = c.RouterID
	}
	if c.ClusterID = c.ClusterID.Unmap(); !c.ClusterID.Is4() {
		return c, fmt.Errorf("ClusterID %s: must be an IPv4 address", c.ClusterID)
	}
	if c.GracefulRestartTime > 4095*time.Second {
		return c, fmt.Errorf("GracefulRestartTime %s: must be at most 4095s (12-bit field)", c.GracefulRestartTime)
	}
	return c, nil
}

// ceilSeconds rounds up, so a configured 2.5 s restart time is not cut to 2.
func ceilSeconds(d time.Duration) uint64 {
	return uint64((d + time.Second - 1) / time.Second)
}

// Start starts the speaker: it listens (unless ListenPort is -1) and is ready
// for SetAnnounced and SetPeers. ctx bounds the start-up only; the speaker
// runs until Stop.
//
// After an agent restart, call SetAnnounced before the first SetPeers: a peer
// keeping our routes under graceful restart drops every one we have not
// re-announced when it receives our End-of-RIB, which GoBGP sends right after
// the routes it holds when the session comes up.
func Start(ctx context.Context, cfg Config) (*Speaker, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, fmt.Errorf("routing: %w", err)
	}
	s := &Speaker{
		cfg:        cfg,
		holdSecs:   ceilSeconds(cfg.HoldTime),
		listenPort: int(cfg.ListenPort),
		log:        cfg.Logger,
		kick:       make(chan struct{}, 1),
		changes:    make(chan struct{}, 1),
		peers:      map[netip.Addr]Peer{},
		ibgpSet:    map[netip.Addr]bool{},
		announced:  map[netip.Prefix]*api.Path{},
		learned:    map[netip.Prefix][]Path{},
		dirty:      map[netip.Prefix]bool{},
		dirtyAll:   true, // the first rebuild reads the whole RIB
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if cfg.GracefulRestartTime > 0 {
		s.grSecs = uint32(ceilSeconds(cfg.GracefulRestartTime))
	}

	s.hook = &serveHook{onMessage: func() { s.statusGen.Add(1) }, ended: make(chan struct{})}
	logger := newSlogAdapter(cfg.Logger)
	logger.onPrefixLimit = s.noteLimitReset
	s.bgp = server.NewBgpServer(server.LoggerOption(logger), server.TimingHookOption(s.hook))
	go s.bgp.Serve()

	global := &api.Global{
		Asn:        cfg.ASN,
		RouterId:   cfg.RouterID.String(),
		ListenPort: cfg.ListenPort,
		// The RIB needs only the two families we carry.
		Families: []uint32{uint32(oc.AFI_SAFI_TYPE_IPV4_UNICAST.ToInt()), uint32(oc.AFI_SAFI_TYPE_IPV6_UNICAST.ToInt())},
	}
	if cfg.ListenAddr.IsValid() {
		global.ListenAddresses = []string{cfg.ListenAddr.String()}
	}
	fail := func(err error) (*Speaker, error) {
		s.stopServer()
		return nil, fmt.Errorf("routing: %w", err)
	}
	if err := s.call(func() error { return s.bgp.StartBgp(ctx, &api.StartBgpRequest{Global: global}) }); err != nil {
		return fail(fmt.Errorf("start BGP on %s port %d: %w", cfg.ListenAddr, cfg.ListenPort, err))
	}
	if err := s.installExportPolicy(ctx); err != nil {
		return fail(err)
	}

	// The watch only says which prefixes changed; rebuildLoop reads
	// their paths again from the RIB. Applying each event's paths to the
	// map instead would need every corner right (a best path moving from
	// a peer to our own, a stale path replaced, the initial dump racing
	// the first events); reading a prefix's destination is consistent by
	// construction, and each path read goes through learnedRoute as in a
	// whole listing. Reading the whole RIB after every UPDATE (a route or
	// two per block of each host) was the agent's largest CPU cost at
	// scale: every host re-read 100 hosts' routes for each new block.
	wctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if err := s.watchRIB(wctx); err != nil {
		cancel()
		return fail(err)
	}
	s.wg.Add(1)
	go s.rebuildLoop(wctx)
	s.poke()
	return s, nil
}

// watchRIB registers the watch that tells rebuildLoop what to read again.
// It is registered before the first rebuild, which reads the whole RIB, so
// no change falls between the two. GoBGP calls fn on a goroutine of its
// own, in order, never blocking Serve (the watch's queue is unbounded); fn
// only marks and pokes.
func (s *Speaker) watchRIB(ctx context.Context) error {
	req := &api.WatchEventRequest{
		Peer: &api.WatchEventRequest_Peer{},
		Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{
			{Type: api.WatchEventRequest_Table_Filter_ADJIN},
			{Type: api.WatchEventRequest_Table_Filter_EOR},
		}},
	}
	err := s.call(func() error { return s.bgp.WatchEvent(ctx, req, s.onWatchEvent) })
	if err != nil {
		return fmt.Errorf("watch the RIB: %w", err)
	}
	s.watching = true
	return nil
}

// onWatchEvent marks what an event may have changed: a session event or
// an End-of-RIB the whole RIB, an UPDATE's paths their prefixes.
func (s *Speaker) onWatchEvent(ev *api.WatchEventResponse) {
	var prefixes []netip.Prefix
	all := false
	switch e := ev.Event.(type) {
	case *api.WatchEventResponse_Peer:
		if e.Peer.GetType() == api.WatchEventResponse_PeerEvent_STATE {
			all = true
		}
	case *api.WatchEventResponse_Table:
		for _, p := range e.Table.GetPaths() {
			pfx, ok := watchedPrefix(p)
			if !ok {
				// An End-of-RIB (no NLRI), or a path we cannot place:
				// read everything rather than miss a change.
				all = true
				break
			}
			prefixes = append(prefixes, pfx)
		}
	}
	if !all && len(prefixes) == 0 {
		return
	}
	s.markDirty(all, prefixes)
}

// watchedPrefix is the prefix of a path of a watch event.
func watchedPrefix(p *api.Path) (netip.Prefix, bool) {
	if p.GetNlri() == nil && len(p.GetNlriBinary()) == 0 {
		return netip.Prefix{}, false
	}
	nlri, err := apiutil.GetNativeNlri(p)
	if err != nil {
		return netip.Prefix{}, false
	}
	pfx, err := netip.ParsePrefix(nlri.String())
	if err != nil {
		return netip.Prefix{}, false
	}
	return pfx, true
}

// markDirty makes the next rebuild read prefixes again, or the whole RIB.
func (s *Speaker) markDirty(all bool, prefixes []netip.Prefix) {
	s.dirtyMu.Lock()
	if all {
		s.dirtyAll = true
	}
	if !s.dirtyAll {
		for _, p := range prefixes {
			s.dirty[p] = true
		}
		if len(s.dirty) > maxDirty {
			s.dirtyAll = true
		}
	}
	if s.dirtyAll {
		clear(s.dirty)
	}
	s.dirtyMu.Unlock()
	s.poke()
}

// takeDirty returns what the next rebuild must read, and forgets it.
func (s *Speaker) takeDirty() (all bool, prefixes []netip.Prefix) {
	s.dirtyMu.Lock()
	defer s.dirtyMu.Unlock()
	all, s.dirtyAll = s.dirtyAll, false
	if !all {
		prefixes = slices.Collect(maps.Keys(s.dirty))
	}
	clear(s.dirty)
	return all, prefixes
}

// call makes one GoBGP request, and counts it. Every request this package
// makes goes through call: endServe relies on the count.
func (s *Speaker) call(req func() error) error {
	defer s.calls.Add(1)
	return req()
}

// installExportPolicy makes the speaker announce its own prefixes, and
// pass on routes learned over iBGP to iBGP peers only. Nothing else: GoBGP
// would otherwise pass routes learned over eBGP to the mesh and routes
// learned from the mesh to eBGP routers (rewriting the next hop to this
// node), so a router could send a block's traffic through the wrong host;
// every node announces its own blocks directly instead.
//
// iBGP to iBGP is route reflection, which GoBGP itself limits to what RFC
// 4456 allows: only towards RoleClient peers or from them, next hop kept.
// A node with no clients reflects nothing, so the rule is the same on
// every node.
func (s *Speaker) installExportPolicy(ctx context.Context) error {
	err := s.call(func() error {
		return s.bgp.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
			DefinedType: api.DefinedType_NEIGHBOR,
			Name:        ibgpSetName,
			List:        []string{ibgpSetPlaceholder},
		}})
	})
	if err != nil {
		return fmt.Errorf("add iBGP neighbour set: %w", err)
	}
	err = s.call(func() error {
		return s.bgp.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{
			Name: exportPolicyName,
			Statements: []*api.Statement{{
				Name:       exportPolicyName + "-local",
				Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
				Actions:    &api.Actions{RouteAction: api.RouteAction_ACCEPT},
			}, {
				Name: exportPolicyName + "-reflect",
				Conditions: &api.Conditions{
					RouteType: api.Conditions_ROUTE_TYPE_INTERNAL,
					// In the export direction GoBGP matches the neighbour
					// the route is sent to.
					NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: ibgpSetName},
				},
				Actions: &api.Actions{RouteAction: api.RouteAction_ACCEPT},
			}},
		}})
	})
	if err != nil {
		return fmt.Errorf("add export policy: %w", err)
	}
	err = s.call(func() error {
		return s.bgp.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name:          "global",
			Direction:     api.PolicyDirection_EXPORT,
			Policies:      []*api.Policy{{Name: exportPolicyName}},
			DefaultAction: api.RouteAction_REJECT,
		}})
	})
	if err != nil {
		return fmt.Errorf("assign export policy: %w", err)
	}
	return nil
}

// syncIBGPSet makes ibgpSetName hold exactly the addresses in want. It is
// called with opMu held, after the peers gone are deleted and before new
// ones are added, so a new peer's first UPDATEs already see it.
func (s *Speaker) syncIBGPSet(ctx context.Context, want map[netip.Addr]bool) error {
	var gone, added []netip.Addr
	for a := range s.ibgpSet {
		if !want[a] {
			gone = append(gone, a)
		}
	}
	for a := range want {
		if !s.ibgpSet[a] {
			added = append(added, a)
		}
	}
	set := func(addrs []netip.Addr) *api.DefinedSet {
		list := make([]string, len(addrs))
		for i, a := range addrs {
			list[i] = netip.PrefixFrom(a, a.BitLen()).String()
		}
		return &api.DefinedSet{DefinedType: api.DefinedType_NEIGHBOR, Name: ibgpSetName, List: list}
	}
	if len(gone) > 0 {
		if err := s.call(func() error {
			return s.bgp.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: set(gone)})
		}); err != nil {
			return fmt.Errorf("remove %v from the iBGP neighbour set: %w", gone, err)
		}
		for _, a := range gone {
			delete(s.ibgpSet, a)
		}
	}
	if len(added) > 0 {
		if err := s.call(func() error {
			return s.bgp.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: set(added)})
		}); err != nil {
			return fmt.Errorf("add %v to the iBGP neighbour set: %w", added, err)
		}
		for _, a := range added {
			s.ibgpSet[a] = true
		}
	}
	return nil
}

func (s *Speaker) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Speaker) rebuildLoop(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTimer(0)
	<-t.C
	relist := time.NewTicker(relistEvery)
	defer relist.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-relist.C:
			s.markDirty(true, nil)
			continue
		case <-s.kick:
		}
		t.Reset(rebuildDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		// Events that came during the delay are covered by this rebuild.
		select {
		case <-s.kick:
		default:
		}
		all, prefixes := s.takeDirty()
		if !all && len(prefixes) == 0 {
			continue
		}
		if all {
			s.wholeReads.Add(1)
		} else {
			s.someReads.Add(1)
		}
		m, err := s.listPaths(ctx, all, prefixes)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("routing: reading the RIB failed; retrying", "err", err)
			s.markDirty(all, prefixes)
			continue
		}
		s.mu.Lock()
		var changed bool
		if all {
			changed = !maps.EqualFunc(m, s.learned, slices.Equal)
			if changed {
				s.learned = m
			}
		} else {
			for _, p := range prefixes {
				paths, ok := m[p]
				if slices.Equal(paths, s.learned[p]) {
					continue
				}
				changed = true
				if ok {
					s.learned[p] = paths
				} else {
					delete(s.learned, p)
				}
			}
		}
		s.mu.Unlock()
		if changed {
			select {
			case s.changes <- struct{}{}:
			default:
			}
		}
	}
}

// listPaths reads every path that a peer sent of every prefix in the
// global RIB (all) or of the given prefixes only, in GoBGP's order (best
// first), leaving out our own. A prefix with no such path is absent.
func (s *Speaker) listPaths(ctx context.Context, all bool, prefixes []netip.Prefix) (map[netip.Prefix][]Path, error) {
	m := map[netip.Prefix][]Path{}
	var errs []error
	for _, fam := range []*api.Family{familyV4, familyV6} {
		req := &api.ListPathRequest{
			TableType:        api.TableType_GLOBAL,
			Family:           fam,
			EnableOnlyBinary: true, // skips marshalling every path to protobuf Any
		}
		if !all {
			for _, p := range prefixes {
				if p.Addr().Is4() == (fam == familyV4) {
					req.Prefixes = append(req.Prefixes, &api.TableLookupPrefix{Prefix: p.String(), Type: api.TableLookupPrefix_EXACT})
				}
			}
			if len(req.Prefixes) == 0 {
				continue
			}
		}
		err := s.call(func() error {
			return s.bgp.ListPath(ctx, req, func(d *api.Destination) {
				for _, p := range d.Paths {
					pfx, nh, ok, err := learnedRoute(p)
					if err != nil {
						errs = append(errs, fmt.Errorf("%s: %w", d.Prefix, err))
					} else if ok {
						nb, _ := netip.ParseAddr(p.NeighborIp)
						m[pfx] = append(m[pfx], Path{Neighbor: nb.Unmap(), NextHop: nh})
					}
				}
			})
		})
		if err != nil {
			return nil, err
		}
	}
	if len(errs) > 0 {
		// A path we cannot decode should never happen; say so, but report
		// the rest rather than nothing.
		s.log.Warn("routing: undecodable paths skipped", "err", errors.Join(errs...))
	}
	return m, nil
}

// learnedRoute returns the prefix and next hop of p, and ok=false when p is
// our own (GoBGP gives local paths no neighbour address).
func learnedRoute(p *api.Path) (netip.Prefix, netip.Addr, bool, error) {
	if p.IsWithdraw {
		return netip.Prefix{}, netip.Addr{}, false, nil
	}
	if _, err := netip.ParseAddr(p.NeighborIp); err != nil {
		return netip.Prefix{}, netip.Addr{}, false, nil
	}
	nlri, err := apiutil.GetNativeNlri(p)
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, false, err
	}
	pfx, err := netip.ParsePrefix(nlri.String())
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, false, err
	}
	attrs, err := nextHopAttributes(p)
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, false, err
	}
	var nh netip.Addr
	for _, a := range attrs {
		switch a := a.(type) {
		case *bgp.PathAttributeMpReachNLRI:
			// The global next hop; a link-local one may follow it.
			if v, ok := netip.AddrFromSlice(a.Nexthop); ok {
				nh = v.Unmap()
			}
		case *bgp.PathAttributeNextHop:
			if v, ok := netip.AddrFromSlice(a.Value); ok && !nh.IsValid() {
				nh = v.Unmap()
			}
		}
	}
	if !nh.IsValid() {
		return netip.Prefix{}, netip.Addr{}, false, errors.New("no next hop")
	}
	return pfx, nh, true, nil
}

// nextHopAttributes decodes the attributes of p that carry its next hop.
// The speaker reads its whole RIB on session events (and used to after
// every UPDATE); decoding every attribute of every path (AS path,
// communities, a reflector's cluster list) was most of that. In the
// binary form the listing asks for, the others are skipped by their type
// code.
func nextHopAttributes(p *api.Path) ([]bgp.PathAttributeInterface, error) {
	if len(p.PattrsBinary) == 0 {
		return apiutil.GetNativePathAttributes(p)
	}
	var out []bgp.PathAttributeInterface
	for _, raw := range p.PattrsBinary {
		if len(raw) < 2 {
			return nil, errors.New("truncated path attribute")
		}
		if t := bgp.BGPAttrType(raw[1]); t != bgp.BGP_ATTR_TYPE_NEXT_HOP && t != bgp.BGP_ATTR_TYPE_MP_REACH_NLRI {
			continue
		}
		a, err := bgp.GetPathAttribute(raw)
		if err != nil {
			return nil, err
		}
		if err := a.DecodeFromBytes(raw); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// Learned returns every path learned from peers, per prefix, best first
// (BGP's best-path selection), including routes a restarting peer's session
// left stale. Nothing is judged here: a hostile peer's path may come first.
// The map is the caller's.
func (s *Speaker) Learned() map[netip.Prefix][]Path {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[netip.Prefix][]Path, len(s.learned))
	for p, paths := range s.learned {
		out[p] = slices.Clone(paths)
	}
	return out
}

// Changes receives a value (coalesced, buffer 1) whenever Learned changed.
// Stop does not close it: a caller's select loop still holding the channel of
// a stopped speaker then simply never fires, instead of spinning.
func (s *Speaker) Changes() <-chan struct{} { return s.changes }

func (s *Speaker) validatePeers(peers []Peer) (map[netip.Addr]Peer, error) {
	want := make(map[netip.Addr]Peer, len(peers))
	for i, p := range peers {
		p.Address = p.Address.Unmap()
		switch {
		case !p.Address.IsValid() || p.Address.IsUnspecified() || p.Address.IsMulticast():
			return nil, fmt.Errorf("peer %d: Address %q: must be a unicast IP address", i, p.Address)
		case p.Address == s.cfg.RouterID || p.Address == s.cfg.ListenAddr:
			return nil, fmt.Errorf("peer %d: Address %s: is this node's own address", i, p.Address)
		case p.ASN == 0:
			return nil, fmt.Errorf("peer %s: ASN: must not be 0", p.Address)
		case p.Type != PeerTypeNodeMesh && p.Type != PeerTypeGlobal && p.Type != PeerTypeNode:
			return nil, fmt.Errorf("peer %s: Type %q: must be %s, %s or %s", p.Address, p.Type, PeerTypeNodeMesh, PeerTypeGlobal, PeerTypeNode)
		case p.Role != "" && p.Role != RoleClient && p.Role != RoleReflector:
			return nil, fmt.Errorf("peer %s: Role %q: must be %s, %s or empty", p.Address, p.Role, RoleClient, RoleReflector)
		case p.Role == RoleClient && p.ASN != s.cfg.ASN:
			return nil, fmt.Errorf("peer %s: Role %s: a route reflector client must be in this node's AS %d, not %d", p.Address, RoleClient, s.cfg.ASN, p.ASN)
		}
		if _, dup := want[p.Address]; dup {
			return nil, fmt.Errorf("peer %s: listed twice", p.Address)
		}
		want[p.Address] = p
	}
	return want, nil
}

// SetPeers makes the configured peers exactly peers: it adds new ones,
// deletes those gone (GoBGP sends them a Cease, so they drop our routes at
// once, and we drop theirs), and re-creates those whose AS changed or that
// became or ceased to be our route reflector clients. A change of Type, or
// of Role between reflector and none, only changes what PeerStates reports. Nothing is changed when the
// input is invalid; when GoBGP refuses one peer the others are still applied
// and the error names it.
func (s *Speaker) SetPeers(peers []Peer) error {
	want, err := s.validatePeers(peers)
	if err != nil {
		return fmt.Errorf("routing: %w", err)
	}
	s.opMu.Lock()
	defer s.opMu.Unlock()
	if s.stopped {
		return errors.New("routing: speaker stopped")
	}
	ctx := context.Background()
	var errs []error
	for addr, cur := range s.peers {
		// A new prefix limit re-creates the session too: one that was reset
		// for going over the old limit starts again under the new one.
		if w, ok := want[addr]; ok && w.ASN == cur.ASN && (w.Role == RoleClient) == (cur.Role == RoleClient) && w.MaxPrefixes == cur.MaxPrefixes {
			continue
		}
		if err := s.call(func() error { return s.bgp.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}) }); err != nil {
			errs = append(errs, fmt.Errorf("delete peer %s: %w", addr, err))
			continue
		}
		delete(s.peers, addr)
		// Its limit resets went with the session: a session made again
		// under a new limit (or AS) must not be reported as over it.
		s.limitMu.Lock()
		delete(s.limitResets, addr.String())
		s.limitMu.Unlock()
		s.statusGen.Add(1)
		// The peer's paths left the RIB with it, without a message.
		s.markDirty(true, nil)
	}
	ibgp := map[netip.Addr]bool{}
	for a, p := range want {
		if p.ASN == s.cfg.ASN {
			ibgp[a] = true
		}
	}
	if err := s.syncIBGPSet(ctx, ibgp); err != nil {
		errs = append(errs, err)
	}
	// Sorted so a failure part-way leaves a predictable state.
	addrs := make([]netip.Addr, 0, len(want))
	for a := range want {
		addrs = append(addrs, a)
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].Less(addrs[j]) })
	for _, addr := range addrs {
		w := want[addr]
		if cur, ok := s.peers[addr]; ok {
			if cur != w {
				s.peers[addr] = w // same AS and client-ness; only what is reported differs
				s.statusGen.Add(1)
			}
			continue
		}
		if err := s.call(func() error { return s.bgp.AddPeer(ctx, &api.AddPeerRequest{Peer: s.apiPeer(w)}) }); err != nil {
			errs = append(errs, fmt.Errorf("add peer %s: %w", addr, err))
			continue
		}
		s.peers[addr] = w
		s.statusGen.Add(1)
	}
	if len(errs) > 0 {
		return fmt.Errorf("routing: %w", errors.Join(errs...))
	}
	return nil
}

func (s *Speaker) apiPeer(p Peer) *api.Peer {
	gr := s.grSecs > 0
	afiSafi := func(f *api.Family) *api.AfiSafi {
		return &api.AfiSafi{
			Config: &api.AfiSafiConfig{Family: f, Enabled: true},
			// Per-family flag: without it the capability carries no tuple
			// for the family and the peer drops that family's routes
			// instead of keeping them.
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: gr}},
			PrefixLimits:      &api.PrefixLimit{Family: f, MaxPrefixes: uint32(p.MaxPrefixes)},
		}
	}
	ap := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			Description:     p.Type,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      connectRetrySeconds,
			HoldTime:          s.holdSecs,
			KeepaliveInterval: max(s.holdSecs/3, 1),
		}},
		// Both families on every session: IPv6 blocks travel over the IPv4
		// session with an IPv6 next hop in MP_REACH_NLRI.
		AfiSafis: []*api.AfiSafi{afiSafi(familyV4), afiSafi(familyV6)},
	}
	if gr {
		ap.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: s.grSecs}
	}
	if p.Role == RoleClient {
		ap.RouteReflector = &api.RouteReflector{RouteReflectorClient: true, RouteReflectorClusterId: s.cfg.ClusterID.String()}
	}
	ap.Transport = &api.Transport{PassiveMode: s.passiveTowards(p)}
	if la := s.cfg.ListenAddr; la.IsValid() && la.Is4() == p.Address.Is4() {
		ap.Transport.LocalAddress = la.String()
	}
	return ap
}

// passiveTowards says whether we wait for p to connect rather than dial it.
// Between two of our own nodes only the lower address dials. When both
// dial, they can lock each other out for a long time: a GoBGP FSM in Idle
// (5 s after any failed session) closes incoming connections, the dialler
// whose connection was closed goes Idle for 5 s in turn, and two nodes
// whose retry phases are 1-5 s apart keep hitting each other's Idle (seen
// after a graceful restart: 40 s without a session). With one dialler the
// passive side, once out of Idle, waits in Active and the next dial
// succeeds. Sessions with a route reflection role are between two of our
// nodes too (both ends compute the role). Other peers (routers) may be
// passive themselves, so we always dial them; a node that does not listen
// must dial everyone.
type limitReset struct {
	count int
	last  time.Time
}

// noteLimitReset records that GoBGP reset the session with neighbour (its
// address as GoBGP prints it) for going over the prefix limit. GoBGP
// reports this only through its log (see slogAdapter.Warn); the session's
// state alone cannot tell it from any other reset.
func (s *Speaker) noteLimitReset(neighbour string) {
	if a, err := netip.ParseAddr(neighbour); err == nil {
		neighbour = a.Unmap().String()
	}
	s.limitMu.Lock()
	if s.limitResets == nil {
		s.limitResets = map[string]limitReset{}
	}
	r := s.limitResets[neighbour]
	now := time.Now()
	// UPDATEs already read when the limit was crossed each say so again
	// before the session ends: one reset, not several.
	if now.Sub(r.last) < time.Second {
		s.limitMu.Unlock()
		return
	}
	r.count++
	r.last = now
	s.limitResets[neighbour] = r
	s.limitMu.Unlock()
	s.statusGen.Add(1)
	s.log.Warn("routing: BGP peer sent more prefixes than its limit; session reset (raise it with `calicoctl bgp peer add IP as AS --max-prefixes N` if the routes are wanted)", "peer", neighbour)
}

func (s *Speaker) passiveTowards(p Peer) bool {
	if (p.Type != PeerTypeNodeMesh && p.Role == "") || s.listenPort <= 0 {
		return false
	}
	self := s.cfg.ListenAddr
	if !self.IsValid() || self.Is4() != p.Address.Is4() {
		self = s.cfg.RouterID
	}
	return p.Address.Less(self)
}

// SetAnnounced makes the announced prefixes exactly prefixes: IPv4 ones with
// NextHopV4 (ipv4-unicast), IPv6 ones with NextHopV6 (ipv6-unicast,
// MP_REACH_NLRI). Nothing is changed when the input is invalid.
func (s *Speaker) SetAnnounced(prefixes []netip.Prefix) error {
	want := make(map[netip.Prefix]bool, len(prefixes))
	for _, p := range prefixes {
		switch {
		case !p.IsValid():
			return fmt.Errorf("routing: prefix %q: invalid", p)
		case p.Addr().Is4In6():
			return fmt.Errorf("routing: prefix %s: IPv4-mapped IPv6 is not announced; use the IPv4 form", p)
		case p.Masked() != p:
			return fmt.Errorf("routing: prefix %s: host bits set (did you mean %s?)", p, p.Masked())
		case p.Addr().Is6() && !s.cfg.NextHopV6.IsValid():
			return fmt.Errorf("routing: prefix %s: IPv6 needs Config.NextHopV6", p)
		}
		want[p] = true
	}
	s.opMu.Lock()
	defer s.opMu.Unlock()
	if s.stopped {
		return errors.New("routing: speaker stopped")
	}
	ctx := context.Background()
	var errs []error
	for p, path := range s.announced {
		if want[p] {
			continue
		}
		if err := s.call(func() error {
			return s.bgp.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: path.Family, Path: path})
		}); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %s: %w", p, err))
			continue
		}
		delete(s.announced, p)
	}
	for p := range want {
		if _, ok := s.announced[p]; ok {
			continue
		}
		path, err := s.apiPath(p)
		if err == nil {
			err = s.call(func() error {
				_, err := s.bgp.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path})
				return err
			})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("announce %s: %w", p, err))
			continue
		}
		s.announced[p] = path
	}
	if len(errs) > 0 {
		return fmt.Errorf("routing: %w", errors.Join(errs...))
	}
	return nil
}

func (s *Speaker) apiPath(p netip.Prefix) (*api.Path, error) {
	origin := bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)
	if p.Addr().Is4() {
		nlri := bgp.NewIPAddrPrefix(uint8(p.Bits()), p.Addr().String())
		return apiutil.NewPath(nlri, false, []bgp.PathAttributeInterface{
			origin,
			bgp.NewPathAttributeNextHop(s.cfg.NextHopV4.String()),
		}, time.Now())
	}
	nlri := bgp.NewIPv6AddrPrefix(uint8(p.Bits()), p.Addr().String())
	return apiutil.NewPath(nlri, false, []bgp.PathAttributeInterface{
		origin,
		bgp.NewPathAttributeMpReachNLRI(s.cfg.NextHopV6.String(), []bgp.AddrPrefixInterface{nlri}),
	}, time.Now())
}

// sessionStates names GoBGP's FSM states the way BIRD and `calicoctl
// status` do.
var sessionStates = map[api.PeerState_SessionState]string{
	api.PeerState_IDLE:        "Idle",
	api.PeerState_CONNECT:     "Connect",
	api.PeerState_ACTIVE:      "Active",
	api.PeerState_OPENSENT:    "OpenSent",
	api.PeerState_OPENCONFIRM: "OpenConfirm",
	api.PeerState_ESTABLISHED: "Established",
}

func sessionStateName(st api.PeerState_SessionState) string {
	if n, ok := sessionStates[st]; ok {
		return n
	}
	return "Unknown"
}

// PeerStates reports every configured peer, sorted by address: its session
// state, since when (RFC 3339: when it came up if Established, else when it
// last went down, empty if it never came up) and how many routes it sent us
// (counting those kept stale through its restart).
func (s *Speaker) PeerStates() []calicoapi.PeerState {
	// Held throughout: Stop must not end GoBGP under a request.
	s.opMu.Lock()
	defer s.opMu.Unlock()
	if s.stopped {
		return nil
	}
	// Read before listing: an event during the listing moves it again, so
	// the next call lists anew.
	gen := s.statusGen.Load()
	if s.haveState && gen == s.statesGen {
		return slices.Clone(s.states)
	}
	types := make(map[netip.Addr]Peer, len(s.peers))
	for a, p := range s.peers {
		types[a] = p
	}
	var out []calicoapi.PeerState
	err := s.call(func() error {
		return s.bgp.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) {
			if p.Conf == nil || p.State == nil {
				return
			}
			addr, err := netip.ParseAddr(p.Conf.NeighborAddress)
			if err != nil {
				return
			}
			ps := calicoapi.PeerState{
				IP:       addr.String(),
				ASNumber: p.Conf.PeerAsn,
				Type:     types[addr].Type,
				Role:     types[addr].Role,
				State:    sessionStateName(p.State.SessionState),
			}
			if t := p.Timers.GetState(); t != nil {
				since := t.Downtime
				if p.State.SessionState == api.PeerState_ESTABLISHED {
					since = t.Uptime
				}
				if since != nil && since.GetSeconds() > 0 {
					ps.Since = since.AsTime().UTC().Format(time.RFC3339)
				}
			}
			for _, af := range p.AfiSafis {
				if st := af.GetState(); st != nil {
					ps.Received += int(st.Received)
				}
			}
			ps.MaxPrefixes = types[addr].MaxPrefixes
			s.limitMu.Lock()
			if r, ok := s.limitResets[addr.String()]; ok {
				ps.LimitResets, ps.LastLimitReset = r.count, r.last.UTC().Format(time.RFC3339)
			}
			s.limitMu.Unlock()
			out = append(out, ps)
		})
	})
	if err != nil {
		s.log.Warn("routing: listing peers failed", "err", err)
	}
	sort.Slice(out, func(i, j int) bool {
		a, _ := netip.ParseAddr(out[i].IP)
		b, _ := netip.ParseAddr(out[j].IP)
		return a.Less(b)
	})
	// A failed listing is not kept: the next call tries again.
	s.states, s.statesGen, s.haveState = out, gen, err == nil
	return slices.Clone(out)
}

// Stop stops the speaker. With graceful restart configured it ends the
// sessions without a NOTIFICATION, exactly as if the process had died, so
// peers keep our routes for GracefulRestartTime while the agent restarts;
// otherwise peers are sent a Cease and drop our routes at once. See the
// package comment for why this takes more than GoBGP's own Stop.
func (s *Speaker) Stop() { s.stop(s.grSecs == 0) }

// StopAndFlush stops the speaker and tells every peer (with a Cease
// NOTIFICATION) to drop our routes now: for a node leaving the cluster,
// whose routes must not linger for the restart time.
func (s *Speaker) StopAndFlush() { s.stop(true) }

func (s *Speaker) stop(flush bool) {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	if s.stopped {
		return
	}
	s.stopped = true
	if s.watching {
		// Cancelling the watch makes GoBGP's watch goroutine unregister
		// it, a request endServe must count.
		s.calls.Add(1)
	}
	s.cancel()
	s.wg.Wait()
	if !flush {
		peers := make(map[netip.Addr]bool, len(s.peers))
		for a := range s.peers {
			peers[a] = true
		}
		// A peer whose FSM reads EOF sees "read failed" and keeps our
		// routes. Its next reconnect attempt comes seconds later (GoBGP's
		// idle hold timer), by which time StopBgp below has closed our
		// listener, so no session can come back up to receive a Cease.
		n, err := abortSessions(peers, s.listenPort)
		if err != nil {
			s.log.Warn("routing: could not end sessions silently; peers will flush our routes", "err", err)
		} else {
			s.log.Debug("routing: sessions ended without notification", "sockets", n)
		}
	}
	s.stopServer()
}

// stopServer stops GoBGP (its sessions, listeners and FSM goroutines) and
// then ends its Serve goroutine. No other request may be made meanwhile.
func (s *Speaker) stopServer() {
	// StopBgp returns once every peer's FSM has been torn down by Serve.
	_ = s.call(func() error { return s.bgp.StopBgp(context.Background(), &api.StopBgpRequest{}) })
	s.endServe()
}

// endServe ends GoBGP's Serve goroutine, which has no way to return.
//
// The hook ends it right after it handles a management request with quit
// set. That must be a request of ours that nobody waits on any more, not
// the one before it: GoBGP answers a request and only then calls the hook,
// so the hook of our previous request (StopBgp) may still be pending when
// we get its answer. Every request we make is counted (call), and the hook
// counts those it has seen handled; once the two agree, Serve is idle (no
// other request can come: the rebuild loop is stopped and opMu is held),
// and the next request it handles is the one made below.
func (s *Speaker) endServe() {
	deadline := time.Now().Add(5 * time.Second)
	for s.hook.requests.Load() < s.calls.Load() {
		if time.Now().After(deadline) {
			s.log.Warn("routing: GoBGP did not settle; leaving its idle goroutine behind",
				"requests", s.calls.Load(), "handled", s.hook.requests.Load())
			return
		}
		time.Sleep(100 * time.Microsecond)
	}
	s.hook.quit.Store(true)
	answered := make(chan struct{})
	go func() {
		// Any request will do; this one changes nothing.
		_, _ = s.bgp.GetBgp(context.Background(), &api.GetBgpRequest{})
		close(answered)
	}()
	for _, ch := range []chan struct{}{answered, s.hook.ended} {
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			s.log.Warn("routing: GoBGP's Serve goroutine did not end")
			return
		}
	}
}
