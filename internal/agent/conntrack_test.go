package agent

import (
	"encoding/json"
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/netdev"
	"github.com/calico-go/calico/internal/datastore"
)

// TestReaddedWorkloadOwesFlush: a workload removed and added again under
// the same name before the agent's next pass has the same interface (the
// name is derived from node and workload) and, from IPAM, the same
// address: both passes see the same local address on the same interface.
// The old workload's flows must still be owed a flush; a record of this
// host naming an address that was another interface's must not make one.
func TestReaddedWorkloadOwesFlush(t *testing.T) {
	a := &Agent{cfg: Config{Name: "h1"}, log: slog.New(slog.DiscardHandler), snap: calc.NewSnapshot(),
		trigger: make(chan struct{}, 1), relabeled: map[string]api.Endpoint{},
		epEdits: map[string]calc.EndpointEdit{}, blockEdits: map[string]calc.BlockEdit{},
		conntrack: netdev.NewEndpointConntrack()}
	defer a.conntrack.Close()
	pool := api.Pool{CIDR: "10.90.0.0/16", BlockSize: 26}
	a.snap.Pools[pool.CIDR] = pool
	addr := netip.MustParseAddr("10.90.1.5")
	iface := api.WorkloadIfaceName("h1", "w1")
	rec := func(workload, iface string, ip netip.Addr) []byte {
		b, err := json.Marshal(api.Endpoint{Node: "h1", Workload: workload, Orchestrator: "netns", InterfaceName: iface,
			WorkloadIface: "eth0", IPv4Nets: []string{ip.String() + "/32"}, Profiles: []string{"P"}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	key := datastore.EndpointKey("h1", "w1")
	a.OnUpdate(key, rec("w1", iface, addr))
	if _, ok := a.snap.Endpoints["h1/w1"]; !ok {
		t.Fatalf("endpoint record refused: %v", a.snap.Endpoints)
	}
	local := map[netip.Addr]string{addr: iface}
	a.conntrack.Note(local) // the pass that routed w1
	a.OnUpdate(key, nil)    // container remove w1
	a.OnUpdate(key, rec("w1", iface, addr))
	a.conntrack.Note(local) // one pass for both
	if got := a.conntrack.Owed(); !slices.Equal(got, []netip.Addr{addr}) {
		t.Errorf("w1 removed and added again with %s on %s: owed %v, want %s", addr, iface, got, addr)
	}

	// A hostile record of this host naming w1's address on another
	// interface, then deleted: w1's flows are owed nothing.
	a2 := &Agent{cfg: Config{Name: "h1"}, log: slog.New(slog.DiscardHandler), snap: calc.NewSnapshot(),
		trigger: make(chan struct{}, 1), relabeled: map[string]api.Endpoint{},
		epEdits: map[string]calc.EndpointEdit{}, blockEdits: map[string]calc.BlockEdit{},
		conntrack: netdev.NewEndpointConntrack()}
	defer a2.conntrack.Close()
	a2.snap.Pools[pool.CIDR] = pool
	a2.OnUpdate(key, rec("w1", iface, addr))
	a2.conntrack.Note(local)
	liar := datastore.EndpointKey("h1", "liar")
	a2.OnUpdate(liar, rec("liar", api.WorkloadIfaceName("h1", "liar"), addr))
	if _, ok := a2.snap.Endpoints["h1/liar"]; !ok {
		t.Fatal("the liar's record was refused by the decoder: this test needs it stored (calc ignores it)")
	}
	a2.OnUpdate(liar, nil)
	a2.conntrack.Note(local)
	if got := a2.conntrack.Owed(); len(got) != 0 {
		t.Errorf("a record naming w1's address on another interface came and went: owed %v, want none", got)
	}

	// Another host's workload removed: this host's flows with its
	// address are owed a flush (its next holder would answer on them).
	a3 := &Agent{cfg: Config{Name: "h1"}, log: slog.New(slog.DiscardHandler), snap: calc.NewSnapshot(),
		trigger: make(chan struct{}, 1), relabeled: map[string]api.Endpoint{},
		epEdits: map[string]calc.EndpointEdit{}, blockEdits: map[string]calc.BlockEdit{},
		conntrack: netdev.NewEndpointConntrack()}
	defer a3.conntrack.Close()
	a3.snap.Pools[pool.CIDR] = pool
	remote := netip.MustParseAddr("10.90.2.7")
	b, err := json.Marshal(api.Endpoint{Node: "h2", Workload: "w9", Orchestrator: "netns", InterfaceName: api.WorkloadIfaceName("h2", "w9"),
		WorkloadIface: "eth0", IPv4Nets: []string{remote.String() + "/32"}, Profiles: []string{"P"}})
	if err != nil {
		t.Fatal(err)
	}
	rkey := datastore.EndpointKey("h2", "w9")
	a3.OnUpdate(rkey, b)
	if _, ok := a3.snap.Endpoints["h2/w9"]; !ok {
		t.Fatal("h2's endpoint record refused")
	}
	a3.conntrack.Note(nil)
	a3.OnUpdate(rkey, nil)
	a3.conntrack.Note(nil)
	if got := a3.conntrack.Owed(); !slices.Equal(got, []netip.Addr{remote}) {
		t.Errorf("h2's w9 removed: owed %v here, want %s", got, remote)
	}
}

// A resync (a new snapshot after the watch was down) shows deletions only
// by their absence: the addresses of the records gone, here and on other
// hosts, are owed a flush all the same.
func TestResyncOwesFlushOfRecordsGone(t *testing.T) {
	a := &Agent{cfg: Config{Name: "h1"}, log: slog.New(slog.DiscardHandler), snap: calc.NewSnapshot(),
		trigger: make(chan struct{}, 1), relabeled: map[string]api.Endpoint{},
		epEdits: map[string]calc.EndpointEdit{}, blockEdits: map[string]calc.BlockEdit{},
		conntrack: netdev.NewEndpointConntrack()}
	defer a.conntrack.Close()
	pool, err := json.Marshal(api.Pool{CIDR: "10.90.0.0/16", BlockSize: 26})
	if err != nil {
		t.Fatal(err)
	}
	ep := func(node, workload string, ip netip.Addr) []byte {
		b, err := json.Marshal(api.Endpoint{Node: node, Workload: workload, Orchestrator: "netns", InterfaceName: api.WorkloadIfaceName(node, workload),
			WorkloadIface: "eth0", IPv4Nets: []string{ip.String() + "/32"}, Profiles: []string{"P"}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	mine, theirs, stays := netip.MustParseAddr("10.90.1.5"), netip.MustParseAddr("10.90.2.7"), netip.MustParseAddr("10.90.1.6")
	a.OnSnapshot(map[string][]byte{
		datastore.PoolKey("10.90.0.0/16"): pool,
		datastore.EndpointKey("h1", "w1"): ep("h1", "w1", mine),
		datastore.EndpointKey("h1", "w2"): ep("h1", "w2", stays),
		datastore.EndpointKey("h2", "w9"): ep("h2", "w9", theirs),
	})
	if len(a.snap.Endpoints) != 3 {
		t.Fatalf("snapshot holds %d endpoints, want 3", len(a.snap.Endpoints))
	}
	local := map[netip.Addr]string{mine: api.WorkloadIfaceName("h1", "w1"), stays: api.WorkloadIfaceName("h1", "w2")}
	a.conntrack.Note(local)
	// w1 and h2's w9 removed while the watch was down.
	a.OnSnapshot(map[string][]byte{
		datastore.PoolKey("10.90.0.0/16"): pool,
		datastore.EndpointKey("h1", "w2"): ep("h1", "w2", stays),
	})
	a.conntrack.Note(map[netip.Addr]string{stays: api.WorkloadIfaceName("h1", "w2")})
	if got, want := a.conntrack.Owed(), []netip.Addr{mine, theirs}; !slices.Equal(got, want) {
		t.Errorf("after a resync without w1 and h2's w9: owed %v, want %v", got, want)
	}
}
