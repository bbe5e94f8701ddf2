// Package agent is calico-node's wiring: the datastore syncer feeds a
// snapshot, calc turns it into desired state, and the dataplane and BGP
// speaker apply it. The loop is level-triggered: a pass converges the
// kernel to the whole desired state, so a missed event or a restart heals.
// Two changes that reach every agent in the cluster cost less: another
// host's new workload skips the kernel when it leaves this host's desired
// state as it was, and a route learned or withdrawn over BGP is one kernel
// route (learnedPass); this host's own container starting or stopping is
// its interface, routes and nftables objects (endpointPass), a label
// change its policy objects (labelPass); the resync converges everything
// every 30 s.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/fastpath"
	"github.com/calico-go/calico/internal/dataplane/ipip"
	"github.com/calico-go/calico/internal/dataplane/netdev"
	"github.com/calico-go/calico/internal/dataplane/nft"
	"github.com/calico-go/calico/internal/dataplane/wireguard"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/decode"
	"github.com/calico-go/calico/internal/options"
	"github.com/calico-go/calico/internal/routing"
)

// Config is how calico-node was started.
type Config struct {
	Name      string
	IP        netip.Addr // host IPv4
	IP6       netip.Addr // host IPv6, optional
	ASN       uint32     // 0: the cluster default
	Datastore datastore.Config
	// BGPPort 0 means 179.
	BGPPort        int32
	HoldTime       time.Duration
	ResyncInterval time.Duration // full reconcile of the kernel; 0: options.DefaultResyncInterval
	StatusInterval time.Duration // status heartbeat; default 10 s (changes are reported within a second)
	Log            *slog.Logger

	// GracefulRestartTime is how long peers keep our routes while the agent
	// restarts (and after our hold timer expires at theirs); 0 means 120 s,
	// negative disables graceful restart.
	GracefulRestartTime time.Duration
	// WorkloadToHost is what workloads may send to this host's own services
	// (default: nothing; see nft.HostAccess).
	WorkloadToHost nft.HostAccess
	// SweepGrace is how long a veth or IPAM handle of this host stays
	// unowned before the sweeper removes it (0: DefaultSweepGrace).
	SweepGrace time.Duration
	// WorkloadToControlPlane is what this host's workloads may send to
	// any node's control plane (default: nothing; see nft.ControlPlaneAccess).
	WorkloadToControlPlane nft.ControlPlaneAccess
	// StateDir holds this node's private files (the WireGuard key).
	StateDir string
	// RouteReflector makes this node a BGP route reflector (written to its
	// node record, so every agent knows); ClusterID is its cluster ID
	// (invalid: IP).
	RouteReflector bool
	ClusterID      netip.Addr
	// PublishPorts are the host ports workloads may publish (0-0: the default).
	PublishPorts api.PortRange
	// PrometheusListen is where /metrics is served (invalid: nowhere).
	PrometheusListen netip.AddrPort
	// MoreProblems, when set, adds the problems of what runs beside the
	// agent (Docker containers the watcher could not wire) to the status.
	MoreProblems func() []string
}

// Agent is one running calico-node.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	ds       *datastore.Client
	hostNet  netip.Prefix
	haveIPIP bool
	// controlHosts and controlPorts: the control plane as this agent knows
	// it beyond every node's BGP and VXLAN ports (controlPlane).
	controlHosts []netip.Addr
	controlPorts []uint16

	mu   sync.Mutex
	snap *calc.Snapshot
	// epAddrs indexes snap's endpoint records by address and interface
	// for the endpoint pass's clash check; it is updated beside every
	// record decode writes to snap and built again with every new snap
	// (calc.EndpointAddrs).
	epAddrs *calc.EndpointAddrs
	// localEndpoints counts snap's endpoint records whose Node is this
	// host, kept with every record decoded: the status reported every
	// second counted them by walking every endpoint of the cluster under
	// mu, 40% of the idle agent's CPU next to 1000 endpoints and
	// growing with the cluster, not the host.
	localEndpoints int
	synced         bool
	trigger        chan struct{}
	// dsChanged: a record that matters arrived since the last pass.
	dsChanged bool
	// converge: something other than another host's workload records
	// asked for the next pass (kick), so it converges the kernel even if
	// the desired state is as it was (see pass).
	converge atomic.Bool
	// needFull: something since the last pass needs a full one (any
	// record but an endpoint's new version, a timer, a resync).
	// relabeled: the endpoint records that have a new version since the
	// last pass, each as it was then; when they changed only their labels
	// a label pass serves them (relabel.go).
	needFull  bool
	relabeled map[string]api.Endpoint
	// epEdits and blockEdits: the endpoint records (this host's or
	// another's) added, removed or rewritten since the last pass, and the
	// IPAM blocks whose allocations alone changed, each as it was then; an
	// endpoint pass serves them when it can (endpoints.go).
	epEdits    map[string]calc.EndpointEdit
	blockEdits map[string]calc.BlockEdit
	// last is what the last full pass computed, with the label passes
	// since applied to it; nil after a pass that did not converge. Only
	// the loop's goroutine uses it.
	last *calc.Result

	routes *netdev.RouteSyncer
	// conntrack forgets the flows of addresses that leave a local
	// workload (conntrack.go).
	conntrack *netdev.EndpointConntrack
	// dsCluster and dsRev: the datastore and the revision of the last
	// snapshot or change applied to snap; dsEpoch: the creation revision
	// of this node's record (etcd's cluster ID is the same for every
	// datastore started with the same member URLs and token, so one wiped
	// and filled again has the same; this record is new in it); epRev:
	// each endpoint record's last modification (by id). A starting agent
	// flushes the addresses of the records modified after the revision
	// the last agent saved in revFile (conntrack.go); ctRev is dsRev as
	// of the last Note or Prime, flushedRev ctRev as of the last flush
	// that succeeded, savedRev the last one saved, at savedAt.
	dsCluster  uint64
	dsEpoch    int64
	dsRev      int64
	epRev      map[string]int64
	ctRev      int64
	flushedRev int64
	savedRev   int64
	savedAt    time.Time
	revFile    string
	ifaces     *netdev.WorkloadIfaceSyncer // the host sides of local workloads (workloads.go)
	// ifaceRecheck signals ifaceDue when host sides are due to be read
	// back (ifaceRecheckEvery), so a setting changed by hand is restored
	// within about a second even with no other change. The loop then
	// reads them back alone (ifaceAudit), not in a whole pass.
	ifaceRecheck *time.Timer
	ifaceDue     chan struct{}
	// lastMissing: the endpoints without an interface last pass, logged on change.
	lastMissing []string
	vxlan       *netdev.VXLANSyncer
	ipip        *ipip.Manager
	ipipOff     string // why the eBPF IPIP path is off by the operator's choice
	policy      *nft.Enforcer
	// policyWritten: a policy write of this process succeeded (and no
	// write failed since over a kernel without a whole table of ours);
	// until then a whole pass writes the policy before anything else,
	// and does nothing else if that fails (policygate.go).
	policyWritten bool
	// fastpath: the eBPF short cut for flows nftables already accepted,
	// on unless CALICO_FASTPATH=off (fastpathOn); fastpathOff says why it
	// is off (the operator's choice, or a kernel that cannot load it).
	fastpath    *fastpath.Manager
	fastpathOn  bool
	fastpathOff string
	speaker     *routing.Speaker
	asn         uint32
	wg          *wireguard.Manager
	wgRot       int // the rotation count the WireGuard key was last checked against

	problems []string
	ready    bool
	// rejected counts, per peer address, the learned routes the import
	// policy refused in the last pass (reported with the peer's session).
	rejected map[netip.Addr]int

	// A failed pass is retried by one timer, sooner after a datastore
	// change, later while the failure persists.
	retry   *time.Timer
	backoff retryBackoff
	// holdCheck re-runs the pass while start-up keeps stale routes.
	holdCheck *time.Timer
	sweeper   *sweeper // leftovers of interrupted workload changes (sweep.go)

	metrics *metrics // nil without --prometheus-listen (metrics.go)
	flows   *flowLog // recent denied packets (flows.go)
	// named: the flow log and the drop metrics know the names of the
	// policy last applied (afterPolicy).
	named bool

	// imports and learned: how the last pass turned BGP's paths into
	// routes, and the paths the kernel's routes now follow (learnedPass);
	// imports is nil while that pass was not clean.
	imports *calc.RouteImport
	learned map[netip.Prefix][]calc.LearnedPath
	// applied is the desired state the last clean pass converged the
	// kernel to (nil: none), and ifaceProblems what that pass found wrong
	// with workload interfaces.
	applied       *calc.Result
	ifaceProblems []string

	lastStatus     api.NodeStatus // as last written, Updated cleared and route counts zeroed
	lastStatusTime time.Time

	// Until BGP has converged after a start, learned routes already in the
	// kernel are kept even if the new speaker has not re-learned them yet.
	started        time.Time
	bgpConvergedAt time.Time
	// startupOver latches once BGP has converged after the start: a peer
	// lost later is BGP's business (graceful restart, then withdrawal
	// after hold + restart time), not the start-up hold's.
	startupOver bool
}

// startupHold is the longest a start keeps routes it has not re-learned.
const startupHold = 60 * time.Second

// holdingRoutes says whether stale routes must still be kept: until every
// peer is Established and has had a moment to send its table, or the hold ends.
func (a *Agent) holdingRoutes(peers int) bool {
	if a.startupOver || time.Since(a.started) > startupHold {
		return false
	}
	if a.speaker == nil {
		return true
	}
	established := 0
	for _, p := range a.speaker.PeerStates() {
		if p.State == "Established" {
			established++
		}
	}
	if established < peers {
		a.bgpConvergedAt = time.Time{}
		return true
	}
	if a.bgpConvergedAt.IsZero() {
		a.bgpConvergedAt = time.Now()
	}
	// Peers send their whole table right after the session opens. (While
	// holding, pass re-checks every second.)
	if time.Since(a.bgpConvergedAt) < 2*time.Second {
		return true
	}
	a.startupOver = true
	return false
}

// Run starts the agent and blocks until ctx ends. It leaves routes and
// policy in the kernel when it stops, so a restart does not disturb traffic.
func Run(ctx context.Context, cfg Config) error {
	if cfg.ResyncInterval == 0 {
		cfg.ResyncInterval = options.DefaultResyncInterval
	}
	if cfg.StatusInterval == 0 {
		cfg.StatusInterval = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	snap := calc.NewSnapshot()
	a := &Agent{cfg: cfg, log: cfg.Log, snap: snap, epAddrs: calc.NewEndpointAddrs(snap), trigger: make(chan struct{}, 1), ifaceDue: make(chan struct{}, 1), started: time.Now(),
		backoff: retryBackoff{min: retryMin, max: retryMax}, relabeled: map[string]api.Endpoint{},
		epEdits: map[string]calc.EndpointEdit{}, blockEdits: map[string]calc.BlockEdit{},
		// Before any datastore update: OnUpdate tells it of records going.
		conntrack: netdev.NewEndpointConntrack()}

	hostNet, _, err := netdev.HostIPPrefix(cfg.IP)
	if err != nil {
		return err
	}
	a.hostNet = hostNet
	if err := netdev.EnableForwarding(); err != nil {
		return fmt.Errorf("enable forwarding: %w", err)
	}
	a.haveIPIP = netdev.HaveLinkType("ipip")
	a.ipip = ipip.New()
	defer a.ipip.Close()
	if os.Getenv("CALICO_IPIP_EBPF") == "off" {
		a.ipipOff = "the eBPF path is turned off (CALICO_IPIP_EBPF=off)"
	}
	if a.haveIPIP {
		a.log.Info("IPIP pools use the kernel's tunl0")
	} else if s := a.ipipSupport(); s.BPF {
		a.log.Info("this kernel has no ipip module; IPIP pools use the eBPF path (ipip.calico)")
	} else {
		a.log.Warn("IPIP pools cannot be carried here", "reason", s.Problem)
	}
	if a.policy, err = nft.New(); err != nil {
		return err
	}
	a.fastpath = fastpath.New()
	defer a.fastpath.Close() // programs stay: the next agent replaces them in place
	if a.fastpathOn, err = fastpathSetting(os.Getenv("CALICO_FASTPATH")); err != nil {
		return err
	}
	if !a.fastpathOn {
		a.fastpathOff = "off (CALICO_FASTPATH=off)"
	}
	a.policy.SetHostAccess(cfg.WorkloadToHost)
	a.policy.SetControlPlaneAccess(cfg.WorkloadToControlPlane)
	a.controlHosts, a.controlPorts = controlPlane(cfg)
	a.wg = wireguard.New(a.log)
	defer a.wg.Close() // keeps the device: traffic waits for the next agent, never goes in the clear
	if err := a.loadKey(0); err != nil {
		return err
	}
	a.routes = netdev.NewRouteSyncer()
	defer a.routes.Close()
	defer a.conntrack.Close()
	a.revFile = filepath.Join(a.stateDir(), conntrackRevFile)
	a.ifaces = netdev.NewWorkloadIfaceSyncer()
	a.ifaces.RecheckEvery = ifaceRecheckEvery
	a.vxlan = netdev.NewVXLANSyncer()

	ds, err := datastore.Connect(ctx, cfg.Datastore)
	if err != nil {
		return err
	}
	defer ds.Close()
	a.ds = ds
	if err := a.register(ctx); err != nil {
		return err
	}

	a.flows = newFlowLog()
	go a.flows.runLogged(ctx, a.log)
	if cfg.PrometheusListen.IsValid() {
		a.metrics = newMetrics()
		stopMetrics, err := a.metrics.serve(ctx, cfg.PrometheusListen)
		if err != nil {
			return fmt.Errorf("--prometheus-listen=%s: %w", cfg.PrometheusListen, err)
		}
		defer stopMetrics()
		a.policy.SetBeforeRewrite(a.pollDrops)
		a.log.Info("serving Prometheus metrics", "url", "http://"+cfg.PrometheusListen.String()+"/metrics")
	}

	go ds.SyncRange(ctx, datastore.Root, datastore.AgentKeysEnd, a, a.log)
	// Program nothing until the first full snapshot has arrived.
	if err := a.waitSynced(ctx); err != nil {
		return err
	}
	a.log.Info("in sync with the datastore", "node", cfg.Name)
	a.sweeper = newSweeper(a, cfg.SweepGrace)
	go a.sweeper.run(ctx)
	defer a.stopSpeaker()
	return a.loop(ctx)
}

// register writes this node's record: its address with the subnet prefix,
// which CrossSubnet decisions on other hosts need.
func (a *Agent) register(ctx context.Context) error {
	n := api.Node{Name: a.cfg.Name, IPv4: a.hostNet.String(), ASNumber: a.cfg.ASN, WireGuardPublicKey: a.wg.PublicKey(), RouteReflector: a.cfg.RouteReflector,
		MetricsPort: a.cfg.PrometheusListen.Port()}
	if a.cfg.ClusterID.IsValid() {
		n.ClusterID = a.cfg.ClusterID.String()
	}
	if a.cfg.IP6.IsValid() {
		p6, _, err := netdev.HostIPPrefix(a.cfg.IP6)
		if err != nil {
			return err
		}
		n.IPv6 = p6.String()
	}
	if err := api.ValidateNode(n); err != nil {
		return err
	}
	return a.ds.Put(ctx, datastore.NodeKey(a.cfg.Name), n)
}

// OnSnapshot implements datastore.SyncHandler.
func (a *Agent) OnSnapshot(kvs map[string][]byte) {
	a.OnSnapshotAt(kvs, datastore.Revisions{})
}

// OnSnapshotAt implements datastore.RevisionHandler.
func (a *Agent) OnSnapshotAt(kvs map[string][]byte, revs datastore.Revisions) {
	a.mu.Lock()
	old := a.snap
	a.mu.Unlock()
	fresh, errs := decode.Snapshot(old, kvs) // pools first; bad records keep their last good value
	for _, err := range errs {
		a.log.Warn("skipping bad datastore record; keeping the last good value", "err", err)
	}
	a.mu.Lock()
	resync := a.synced
	a.snap, a.synced, a.dsChanged = fresh, true, true
	a.epAddrs = calc.NewEndpointAddrs(fresh)
	a.localEndpoints = countLocal(fresh, a.cfg.Name)
	if revs.Rev != 0 {
		a.dsCluster, a.dsRev = revs.Cluster, revs.Rev
		a.dsEpoch = revs.Created[datastore.NodeKey(a.cfg.Name)]
		a.epRev = map[string]int64{}
		for k, r := range revs.Mod {
			if id, ok := decode.EndpointID(k); ok {
				a.epRev[id] = r
			}
		}
	}
	if resync {
		// Deletions missed while the watch was down come as a new
		// snapshot, not as updates: their addresses left all the same.
		for id, ep := range old.Endpoints {
			cur, still := fresh.Endpoints[id]
			a.noteLeft(id, ep, cur, still)
		}
	}
	a.mu.Unlock()
	if m := a.metrics; m != nil {
		m.inSync.Set(1)
		if resync {
			m.resyncs.Inc()
		}
	}
	a.kick()
}

// OnUpdate implements datastore.SyncHandler.
func (a *Agent) OnUpdate(key string, value []byte) {
	a.OnUpdateAt(key, value, 0)
}

// OnUpdateAt implements datastore.RevisionHandler.
func (a *Agent) OnUpdateAt(key string, value []byte, rev int64) {
	a.mu.Lock()
	elsewhere := otherHosts(a.snap, key, a.cfg.Name)
	id, isEndpoint := decode.EndpointID(key)
	if rev > 0 {
		// Under the lock that noteLeft below runs in: a Note that sees
		// this revision has seen the addresses it took away (ctRev).
		a.dsRev = max(a.dsRev, rev)
		if isEndpoint && a.epRev != nil {
			if value == nil {
				delete(a.epRev, id)
			} else {
				a.epRev[id] = rev
			}
		}
	}
	old, had := a.snap.Endpoints[id]
	blockID, isBlock := decode.BlockID(key)
	oldBlock, hadBlock := a.snap.Blocks[blockID]
	relevant, err := decode.Into(a.snap, key, value)
	if isEndpoint {
		// Whatever decode did (a bad record keeps its last good value).
		cur, has := a.snap.Endpoints[id]
		a.epAddrs.Update(a.snap, id, old, had, cur, has)
		if had && old.Node == a.cfg.Name {
			a.localEndpoints--
		}
		if has && cur.Node == a.cfg.Name {
			a.localEndpoints++
		}
	}
	elsewhere = elsewhere && otherHosts(a.snap, key, a.cfg.Name)
	a.dsChanged = a.dsChanged || relevant
	newVersion := isEndpoint && had && value != nil && err == nil
	if newVersion {
		if _, pending := a.relabeled[id]; !pending {
			a.relabeled[id] = old
		}
	}
	// This host's own container starting or stopping: its record comes
	// or goes, its address is taken or released in one of our blocks.
	// Another host's does the same to its records and blocks, which every
	// agent receives: the endpoint pass serves those too when only tag
	// and selector sets change here (calc.Reendpoint).
	ownEndpoint := isEndpoint && err == nil && !newVersion && strings.HasPrefix(id, a.cfg.Name+"/")
	otherEndpoint := isEndpoint && err == nil && !newVersion && elsewhere && relevant
	if isEndpoint && had && err == nil {
		cur, still := a.snap.Endpoints[id]
		a.noteLeft(id, old, cur, still)
	}
	if ownEndpoint || otherEndpoint {
		if _, pending := a.epEdits[id]; !pending {
			a.epEdits[id] = calc.EndpointEdit{Key: id, Old: old, Had: had}
		}
	}
	cur, hasBlock := a.snap.Blocks[blockID]
	allocation := isBlock && err == nil && hadBlock && hasBlock && oldBlock.CIDR == cur.CIDR && oldBlock.Affinity == cur.Affinity
	ownAllocation := allocation && oldBlock.Affinity == a.cfg.Name
	otherAllocation := allocation && elsewhere && relevant
	if ownAllocation || otherAllocation {
		if _, pending := a.blockEdits[blockID]; !pending {
			a.blockEdits[blockID] = calc.BlockEdit{CIDR: blockID, Old: oldBlock}
		}
	}
	a.mu.Unlock()
	if err != nil {
		a.log.Warn("skipping bad datastore record; keeping the last good value", "err", err)
		return
	}
	switch {
	case newVersion && elsewhere:
		a.wake() // the next pass finds out whether only labels changed
	case newVersion, ownEndpoint, ownAllocation:
		// This host's own workload: a pass that converges the kernel
		// unless the label or the endpoint pass serves it.
		a.converge.Store(true)
		a.wake()
	case otherEndpoint, otherAllocation:
		// The endpoint pass; when it declines, a full pass without
		// converge, as for any other host's change.
		a.wake()
	case relevant && elsewhere:
		a.poke()
	case relevant:
		a.kick()
	}
}

// noteLeft tells the conntrack owner of the addresses that endpoint id's
// record old held and its record now (cur, if still) does not: the
// flows of an address leaving one of our records are owed a flush even if
// the next pass finds it on the same interface again (removed and added
// again under the same name meanwhile); those of one leaving another
// host's are owed one here too, before its next holder answers on them.
// A record of another container (a new id or MAC) holds nothing of the
// old one's.
func (a *Agent) noteLeft(id string, old, cur api.Endpoint, still bool) {
	mine := strings.HasPrefix(id, a.cfg.Name+"/")
	keep := map[netip.Addr]bool{}
	other := func(a, b string) bool { return a != "" && b != "" && a != b }
	if still && !other(old.ContainerID, cur.ContainerID) && !other(old.MAC, cur.MAC) {
		for _, ad := range endpointAddrs(cur) {
			keep[ad] = true
		}
	}
	for _, ad := range endpointAddrs(old) {
		switch {
		case keep[ad]:
		case mine:
			a.conntrack.Left(ad, old.InterfaceName)
		default:
			a.conntrack.LeftElsewhere(ad)
		}
	}
}

// countLocal counts s's endpoint records whose Node is node.
func countLocal(s *calc.Snapshot, node string) int {
	n := 0
	for _, ep := range s.Endpoints {
		if ep.Node == node {
			n++
		}
	}
	return n
}

// otherHosts says whether a record (as the snapshot has it) is another
// host's workload or IPAM block. Every new workload anywhere writes both,
// to every agent; a pass they cause that leaves this host's desired state
// as it was need not read the kernel back (see pass).
func otherHosts(s *calc.Snapshot, key, me string) bool {
	if rest, ok := strings.CutPrefix(key, datastore.PrefixHosts); ok {
		node, tail, _ := strings.Cut(rest, "/")
		return node != me && strings.HasPrefix(tail, "endpoint/")
	}
	if rest, ok := strings.CutPrefix(key, datastore.PrefixBlocks); ok {
		return s.Blocks[datastore.UnescapeCIDR(rest)].Affinity != me
	}
	return false
}

// kick asks for a full pass that converges the kernel.
func (a *Agent) kick() {
	a.converge.Store(true)
	a.poke()
}

// poke asks for a full pass, which applies nothing when the desired state
// is as the last clean pass left it.
func (a *Agent) poke() {
	a.needFullPass()
	a.wake()
}

// needFullPass says the next pass may not be a label pass.
func (a *Agent) needFullPass() {
	a.mu.Lock()
	a.needFull = true
	a.mu.Unlock()
}

// wake makes the loop run a pass: a label pass when only endpoints'
// labels changed, else a full one.
func (a *Agent) wake() {
	select {
	case a.trigger <- struct{}{}:
	default:
	}
}

func (a *Agent) waitSynced(ctx context.Context) error {
	for {
		a.mu.Lock()
		ok := a.synced
		a.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.trigger:
			a.kick()
			time.Sleep(5 * time.Millisecond)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (a *Agent) loop(ctx context.Context) error {
	resync := time.NewTicker(a.cfg.ResyncInterval)
	defer resync.Stop()
	// Check once a second whether anything users see in `calicoctl status`
	// changed (BGP sessions come and go on their own schedule); write only then,
	// or as a heartbeat every StatusInterval.
	status := time.NewTicker(time.Second)
	defer status.Stop()
	var bgpChanges <-chan struct{}
	a.pass(ctx, true)
	a.reportStatus(ctx)
	for {
		if a.speaker != nil {
			bgpChanges = a.speaker.Changes()
		}
		converge := true
		select {
		case <-ctx.Done():
			a.ready = false
			a.reportStatus(context.WithoutCancel(ctx))
			a.saveConntrackRev(true)
			return nil
		case <-a.trigger:
			converge = false // unless a kick asked (below)
		case <-bgpChanges:
			// Coalesce a burst, as below; with nothing else to do, BGP's
			// change alone costs a route or two (learnedPass).
			time.Sleep(2 * time.Millisecond)
			if len(a.trigger) == 0 && a.learnedPass() {
				continue
			}
			a.needFullPass()
		case <-resync.C:
			// Undo drift made by hand now and then: the full pass
			// converges routes and links, and the policy table is
			// rewritten atomically unless the kernel's nftables
			// generation shows no commit since our last write (then the
			// pass writes nothing to nft, and a label change arriving
			// meanwhile does not wait for a rewrite).
			a.policy.Resync()
			a.needFullPass()
		case <-status.C:
			a.reportStatus(ctx)
			continue
		case <-a.ifaceDue:
			if a.ifaceAudit() {
				continue
			}
			// It found something: a whole pass (routes through a link
			// that was down come back).
			a.needFullPass()
		}
		// Coalesce bursts: one pass covers every change that arrived meanwhile.
		time.Sleep(2 * time.Millisecond)
		select {
		case <-a.trigger:
		default:
		}
		if a.converge.Swap(false) {
			converge = true
		}
		// A label pass serves a converge asked for by this host's own
		// relabelled workload too: nothing but labels changed; an
		// endpoint pass one of its workloads starting or stopping.
		if a.labelPass() || a.endpointPass() {
			continue
		}
		wasReady := a.ready
		a.pass(ctx, converge)
		if !wasReady && a.ready {
			a.reportStatus(ctx)
		}
	}
}

// pass computes the desired state and applies it everywhere. Without
// converge (only other hosts' workloads changed), a desired state equal to
// the one the last clean pass applied is not applied again: at 100 hosts
// every new workload reached every agent twice (its block, its endpoint),
// and reading back routes, links and tunnels for nothing was half of what
// that cost. Drift made by hand is then put right by the next pass with
// converge: any change of this host or of the cluster's configuration, a
// BGP change, a timer (interface recheck, retry) or the resync.
func (a *Agent) pass(ctx context.Context, converge bool) {
	if a.metrics != nil {
		defer a.metrics.observePass(time.Now())
	}
	// dsChanged: a datastore change since the last pass, which may be the
	// fix for a failure, so the retry series starts over.
	dsChanged := false
	var learned map[netip.Prefix][]calc.LearnedPath // what the last compute saw
	a.imports = nil                                 // until this pass is known clean
	compute := func() calc.Result {
		ipipSupport := a.ipipSupport()
		a.mu.Lock()
		defer a.mu.Unlock()
		in := calc.Input{Node: a.cfg.Name, Snap: a.snap, HaveIPIP: a.haveIPIP, IPIP: ipipSupport,
			ControlHosts: a.controlHosts, ControlTCPPorts: withMetricsPorts(a.controlPorts, a.snap), WireGuard: a.wg.Support(),
			PublishPorts: a.cfg.PublishPorts}
		if a.speaker != nil {
			in.Learned = toCalcPaths(a.speaker.Learned())
		}
		if a.dsChanged {
			dsChanged, a.dsChanged = true, false
		}
		learned = in.Learned
		// This pass serves every change so far.
		a.needFull = false
		clear(a.relabeled)
		clear(a.epEdits)
		clear(a.blockEdits)
		return calc.Compute(in)
	}
	a.checkRotation(ctx)
	res := compute()
	a.rejected = res.RejectedByNeighbor()
	a.sweeper.noteIgnored(res.Ignored)
	if !converge && a.startupOver && a.applied != nil && sameDesired(res, *a.applied) {
		a.imports, a.learned = res.Imports, learned
		a.last = &res // the kernel holds it: the label pass may start from it
		a.problems = append(slices.Clone(res.Problems), a.ifaceProblems...)
		// Another host's workload went: this host applies nothing new, but
		// its flows with that address go (EndpointConntrack.LeftElsewhere;
		// a map comparison and no netlink when nothing is owed).
		a.noteConntrackAgain(localAddrs(res.Dataplane))
		ctErr := a.flushConntrack()
		if ctErr != nil {
			a.log.Warn("conntrack flush failed; retrying", "err", ctErr)
		}
		a.scheduleRetry(ctErr != nil, dsChanged)
		a.ready = true
		return
	}
	a.applied = nil // until this pass is known clean

	var errs []error
	if !a.policyWritten {
		// The policy before the tunnels and routes that lead into this
		// host and its workloads: on a first start with no table (after a
		// boot, with a CNI runtime that wired its containers before this
		// agent ran, or after `node stop --cleanup`), a workload routed
		// before the table existed took anybody's packets with no policy
		// at all, and a new VXLAN device decapsulated datagrams with no
		// guard. With the table written first, each route meets its
		// workload's chains, or the catch-all drop. Written again below
		// as every pass does (nothing to do then). Until a write
		// succeeds, nothing else is done (gatedPass). The host sides'
		// device groups first, which the table dispatches most endpoints
		// by: veths made before the agent kept groups (an upgrade) would
		// otherwise drop their new flows until the interfaces' turn below.
		if err := a.ifaces.SetGroups(hostSides(res.Dataplane.Workloads)); err != nil {
			a.log.Warn("cannot set the workload interfaces' device groups before the first policy write", "err", err)
		}
		if _, err := a.policy.Apply(res.Dataplane.Policy); err != nil {
			a.gatedPass(ctx, res, err, dsChanged)
			return
		}
		a.policyWritten = true
	}
	if err := a.ensureSpeaker(ctx, res.ASN); err != nil {
		errs = append(errs, err)
	}
	if a.speaker != nil {
		// Announce before peering: a peer that reconnects gets our whole
		// table at once, and would drop stale routes we had not re-announced.
		if err := a.speaker.SetAnnounced(res.Announce); err != nil {
			errs = append(errs, fmt.Errorf("bgp announcements: %w", err))
		}
		if err := a.speaker.SetPeers(toRoutingPeers(res.Peers)); err != nil {
			errs = append(errs, fmt.Errorf("bgp peers: %w", err))
		}
	}
	if err := a.vxlan.Apply(res.Dataplane.VXLAN); err != nil {
		errs = append(errs, fmt.Errorf("vxlan: %w", err))
	}
	hold := a.holdingRoutes(len(res.Peers))
	a.routes.KeepStale(hold)
	if hold {
		// Re-check soon. One timer, re-armed: a timer per pass would
		// multiply passes with every other trigger until the hold ends.
		a.holdCheck = rearm(a.holdCheck, time.Second, a.kick)
	}
	// The tunnel before the routes through it. If it fails, calculate
	// again: Support now says so, and IPIP blocks become unreachable (with
	// one problem line) instead of half-routed.
	a.ipip.KeepStale(hold)
	ipipFailed := false
	if err := a.ipip.Apply(res.Dataplane.IPIP); err != nil {
		// Support now says so (one problem line), so the recalculation
		// leaves the IPIP blocks unreachable; retried with the backoff.
		a.log.Warn("IPIP dataplane failed; its blocks are unreachable until it works", "err", err)
		res = compute()
		a.rejected = res.RejectedByNeighbor()
		ipipFailed = true
	}
	// The interfaces before the routes through them (a link set down by
	// hand loses its routes; it comes up here and the routes come back).
	ifaceProblems, err := a.applyWorkloadIfaces(res.Dataplane.Workloads)
	if err != nil {
		errs = append(errs, fmt.Errorf("workload interfaces: %w", err))
	}
	// The WireGuard device before the routes through it; when it goes,
	// the plain routes first, so no packet meets a missing device.
	wgOn := res.Dataplane.WireGuard.Enabled
	if wgOn {
		if err := a.wg.Apply(res.Dataplane.WireGuard); err != nil {
			a.log.Warn("WireGuard device failed; encrypted routes are unreachable until it works", "err", err)
			res = compute()
			time.AfterFunc(time.Second, a.kick)
		}
	}
	if err := a.noteConntrack(res.Dataplane); err != nil {
		errs = append(errs, err)
	}
	if err := a.flushMovedConntrack(); err != nil {
		errs = append(errs, err)
	}
	if err := a.routes.Apply(res.Dataplane.Routes); err != nil {
		errs = append(errs, fmt.Errorf("routes: %w", err))
		a.countError(func(m *metrics) prometheus.Counter { return m.routeErrors })
	}
	if !wgOn {
		if err := a.wg.Apply(res.Dataplane.WireGuard); err != nil {
			errs = append(errs, fmt.Errorf("wireguard: %w", err))
		}
	}
	st, err := a.policy.Apply(res.Dataplane.Policy)
	if err != nil {
		// Over a whole table of ours this is a hiccup: the table last
		// written guards (every new interface meets its catch-all drop),
		// and the next pass retries. Over none (deleted behind our back),
		// or with a VXLAN device whose guard was never written, the gate
		// closes.
		if ts := a.policy.Intact(ctx); !ts.Whole || res.Dataplane.VXLAN.Enabled && !ts.VXLANGuarded {
			a.policyWritten = false
			a.gatedPass(ctx, res, err, dsChanged)
			return
		}
		errs = append(errs, fmt.Errorf("policy: %w", err))
		a.countError(func(m *metrics) prometheus.Counter { return m.nftErrors })
	} else {
		a.policyWritten = true
	}
	if err == nil && st.ResyncRewrite {
		// Something committed to nftables since our last write (a hand
		// edit of our table, or any other table's change): worth knowing,
		// as each such resync costs a whole rewrite.
		a.log.Info("policy table rewritten by the periodic resync: the nftables ruleset changed since our last write", "ops", st.Ops)
	}
	a.afterPolicy(res.Dataplane.Policy, res.Dataplane.Workloads, st, err == nil)
	if err := a.flushConntrack(); err != nil {
		errs = append(errs, err)
	}
	// After the ruleset: the fast path's anti-spoofing map must never run
	// ahead of the ruleset's. A ruleset that failed to apply takes it down
	// (everything then goes the normal way, which is always right).
	if ferr := a.fastpath.Apply(fastpathDesired(a.fastpathOn && err == nil, a.cfg.IP, res.Dataplane.Policy)); ferr != nil {
		a.fastpathFailed(ferr)
	}
	a.last = nil
	if len(errs) == 0 && !ipipFailed {
		a.last = &res
	}
	problems := append(slices.Clone(res.Problems), ifaceProblems...)
	for _, e := range errs {
		problems = append(problems, e.Error())
	}
	a.scheduleRetry(len(errs) > 0 || ipipFailed, dsChanged)
	if len(errs) > 0 {
		a.log.Warn("dataplane not fully converged; will retry", "err", errors.Join(errs...), "retry_in", a.backoff.next)
	}
	a.problems = problems
	a.ready = true
	a.ifaceProblems = ifaceProblems
	if len(errs) == 0 && !ipipFailed {
		a.imports, a.learned, a.applied = res.Imports, learned, &res
	}
}

// sameDesired says whether two results ask the same of the kernel and of
// BGP. Routes are compared in any order: learnedPass appends to the list
// of the pass before, which Compute sorts otherwise.
func sameDesired(a, b calc.Result) bool {
	if a.ASN != b.ASN || !slices.Equal(a.Announce, b.Announce) || !slices.Equal(a.Peers, b.Peers) ||
		!sameRoutes(a.Dataplane.Routes, b.Dataplane.Routes) {
		return false
	}
	a.Dataplane.Routes, b.Dataplane.Routes = nil, nil
	return reflect.DeepEqual(a.Dataplane, b.Dataplane)
}

func sameRoutes(a, b []calc.Route) bool {
	if len(a) != len(b) {
		return false
	}
	byDst := func(x, y calc.Route) int {
		if c := x.Dst.Addr().Compare(y.Dst.Addr()); c != 0 {
			return c
		}
		return x.Dst.Bits() - y.Dst.Bits()
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, byDst)
	slices.SortFunc(b, byDst)
	return slices.Equal(a, b)
}

// learnedPass applies a change of BGP's learned paths alone as the few
// kernel routes it adds or deletes (calc.RouteImport.Delta,
// netdev.RouteSyncer.Patch), instead of a whole pass: every agent gets
// every new block in the cluster, and a pass per agent per block was what
// made a route take seconds to reach 100 hosts on two cores. It returns
// false, having changed nothing or only routes the pass then converges,
// when a pass is needed: a datastore change is waiting, the last pass was
// not clean, start-up still holds stale routes, the change reaches beyond
// routes (Delta), or the kernel refused a route.
func (a *Agent) learnedPass() bool {
	if a.speaker == nil || a.imports == nil || !a.startupOver {
		return false
	}
	learned := toCalcPaths(a.speaker.Learned())
	a.mu.Lock()
	if a.dsChanged {
		// The snapshot the imports read has moved on.
		a.mu.Unlock()
		return false
	}
	delta, ok := a.imports.Delta(a.learned, learned)
	a.mu.Unlock()
	if !ok {
		return false
	}
	if len(delta.Add) > 0 || len(delta.Del) > 0 {
		if err := a.routes.Patch(delta.Add, delta.Del); err != nil {
			a.log.Info("learned routes: patch failed; converging with a full pass", "err", err)
			a.applied = nil
			return false
		}
		if a.applied != nil {
			// What the kernel now has, for the next pass to compare with.
			next := *a.applied
			next.Dataplane.Routes = append(slices.DeleteFunc(slices.Clone(next.Dataplane.Routes), func(r calc.Route) bool {
				return slices.Contains(delta.Del, r)
			}), delta.Add...)
			a.applied = &next
		}
	}
	a.learned = learned
	return true
}

// ipipSupport is what the eBPF IPIP path can do here, unless the operator
// turned it off.
func (a *Agent) ipipSupport() calc.IPIPSupport {
	if a.ipipOff != "" {
		return calc.IPIPSupport{Problem: a.ipipOff}
	}
	return a.ipip.Support()
}

// scheduleRetry arms the one retry timer after a failed pass, or disarms it
// after a clean one. The first retry comes soon (a workload's veth may
// appear a moment after its record), later ones ever less often while the
// failure persists (a route the kernel refuses, a BGP port in use), so a
// lasting fault costs a pass every half minute, not a hot loop; a datastore
// change may be the fix, so it starts the series again.
func (a *Agent) scheduleRetry(failed, dsChanged bool) {
	if !failed {
		a.backoff.reset()
		if a.retry != nil {
			a.retry.Stop()
		}
		return
	}
	if dsChanged {
		a.backoff.reset()
	}
	a.retry = rearm(a.retry, a.backoff.failed(), a.kick)
}

// rearm makes t (nil: none yet) fire f once, d from now, replacing what it
// was set to.
func rearm(t *time.Timer, d time.Duration, f func()) *time.Timer {
	if t == nil {
		return time.AfterFunc(d, f)
	}
	t.Reset(d)
	return t
}

// toCalcPaths hands the speaker's paths to calc, which knows nothing of it.
func toCalcPaths(m map[netip.Prefix][]routing.Path) map[netip.Prefix][]calc.LearnedPath {
	out := make(map[netip.Prefix][]calc.LearnedPath, len(m))
	for pfx, paths := range m {
		cp := make([]calc.LearnedPath, len(paths))
		for i, p := range paths {
			cp[i] = calc.LearnedPath{Neighbor: p.Neighbor, NextHop: p.NextHop}
		}
		out[pfx] = cp
	}
	return out
}

func toRoutingPeers(ps []calc.Peer) []routing.Peer {
	out := make([]routing.Peer, 0, len(ps))
	for _, p := range ps {
		out = append(out, routing.Peer{Address: p.IP, ASN: p.ASN, Type: p.Type, Role: p.Role, MaxPrefixes: p.MaxPrefixes})
	}
	return out
}

// ensureSpeaker starts BGP, or restarts it when our AS number changed.
func (a *Agent) ensureSpeaker(ctx context.Context, asn uint32) error {
	if a.speaker != nil && a.asn == asn {
		return nil
	}
	a.stopSpeaker()
	s, err := routing.Start(ctx, routing.Config{
		RouterID:   a.cfg.IP,
		ASN:        asn,
		ListenAddr: a.cfg.IP,
		ListenPort: a.cfg.BGPPort,
		NextHopV4:  a.cfg.IP,
		NextHopV6:  a.cfg.IP6,
		HoldTime:   a.cfg.HoldTime,
		ClusterID:  a.cfg.ClusterID,
		Logger:     a.log,

		GracefulRestartTime: a.cfg.GracefulRestartTime,
	})
	if err != nil {
		return fmt.Errorf("start BGP (AS %d on %s): %w", asn, a.cfg.IP, err)
	}
	a.speaker, a.asn = s, asn
	return nil
}

func (a *Agent) stopSpeaker() {
	if a.speaker != nil {
		a.speaker.Stop()
		a.speaker = nil
	}
}

func (a *Agent) reportStatus(ctx context.Context) {
	a.mu.Lock()
	eps := a.localEndpoints
	a.mu.Unlock()
	st := api.NodeStatus{
		Node:      a.cfg.Name,
		Ready:     a.ready,
		Updated:   time.Now().UTC().Format(time.RFC3339),
		PID:       os.Getpid(),
		Problems:  a.problems,
		Endpoints: eps,
		Swept:     a.sweeper.reported(),
	}
	if a.cfg.MoreProblems != nil {
		st.Problems = append(slices.Clone(st.Problems), a.cfg.MoreProblems()...)
	}
	if a.cfg.RouteReflector {
		st.ClusterID = a.cfg.IP.String()
		if a.cfg.ClusterID.IsValid() {
			st.ClusterID = a.cfg.ClusterID.String()
		}
	}
	if a.speaker != nil {
		st.BGPPeers = a.speaker.PeerStates()
		for i, p := range st.BGPPeers {
			if ip, err := netip.ParseAddr(p.IP); err == nil {
				st.BGPPeers[i].Rejected = a.rejected[ip]
			}
		}
	}
	if a.metrics != nil {
		a.metrics.setBGP(st.BGPPeers)
	}
	st.Flows = a.flows.list()
	st.IPIP = a.ipip.Status()
	st.FastPath = a.fastpathOff
	if a.fastpathOn {
		st.FastPath = a.fastpath.Status()
	}
	st.WireGuard = a.wg.Status()
	cmp := st
	cmp.Updated = ""
	// Route counts only with the heartbeat: every route anywhere in the
	// cluster moves them on every host, and writing 100 status records
	// per new workload kept etcd busy for nothing a user waits for. A
	// session's state, and a route refused, are written at once.
	cmp.BGPPeers = slices.Clone(st.BGPPeers)
	for i := range cmp.BGPPeers {
		cmp.BGPPeers[i].Received = 0
	}
	// A new kind of denied packet is reported at once; the counts of
	// known ones only with the heartbeat, so a steady stream of denied
	// packets does not write the record every second.
	cmp.Flows = flowKinds(st.Flows)
	if reflect.DeepEqual(cmp, a.lastStatus) && time.Since(a.lastStatusTime) < a.cfg.StatusInterval && ctx.Err() == nil {
		return
	}
	a.lastStatus, a.lastStatusTime = cmp, time.Now()
	if err := a.ds.Put(ctx, datastore.StatusKey(a.cfg.Name), st); err != nil && !errors.Is(err, context.Canceled) {
		a.log.Warn("cannot report status", "err", err)
	}
}

// loadKey reads (or makes) this host's WireGuard key for the cluster's
// rotation count.
func (a *Agent) loadKey(rotation int) error {
	k, err := wireguard.LoadOrCreateKey(a.stateDir(), rotation)
	if err != nil {
		return err
	}
	a.wg.SetKey(k)
	a.wgRot = rotation
	return nil
}

// stateDir is where this node's private files live.
func (a *Agent) stateDir() string {
	if a.cfg.StateDir == "" {
		return "/var/lib/calico/" + a.cfg.Name
	}
	return a.cfg.StateDir
}

// checkRotation makes a new key when `calicoctl encryption rotate` asked
// for one, and publishes its public half in the node record.
func (a *Agent) checkRotation(ctx context.Context) {
	a.mu.Lock()
	rot := a.snap.Encryption.Rotation
	a.mu.Unlock()
	if rot <= a.wgRot {
		return
	}
	old := a.wg.PublicKey()
	if err := a.loadKey(rot); err != nil {
		a.log.Warn("cannot rotate the WireGuard key", "err", err)
		return
	}
	if a.wg.PublicKey() != old {
		a.log.Info("WireGuard key rotated", "rotation", rot)
		if err := a.register(ctx); err != nil {
			a.log.Warn("cannot publish the new WireGuard key", "err", err)
			a.wgRot = 0 // try again next pass
		}
	}
}
