package agent

import (
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/netdev"
	"github.com/calico-go/calico/internal/datastore"
)

// TestOtherHostsContainerIsAnEndpointEdit: another host's container
// starting writes its block's allocation and then its record; both reach
// this agent as edits the endpoint pass may serve (calc.Reendpoint), not
// as a demand for a full pass. A block that changes hands still needs
// one.
func TestOtherHostsContainerIsAnEndpointEdit(t *testing.T) {
	a := &Agent{cfg: Config{Name: "h1"}, log: slog.New(slog.DiscardHandler), snap: calc.NewSnapshot(),
		trigger: make(chan struct{}, 1), relabeled: map[string]api.Endpoint{},
		epEdits: map[string]calc.EndpointEdit{}, blockEdits: map[string]calc.BlockEdit{},
		conntrack: netdev.NewEndpointConntrack()}
	defer a.conntrack.Close()
	js := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a.OnUpdate(datastore.PoolKey("10.90.0.0/16"), js(api.Pool{CIDR: "10.90.0.0/16", BlockSize: 26}))
	bkey := datastore.BlockKey("10.90.2.0/26")
	a.OnUpdate(bkey, js(api.Block{CIDR: "10.90.2.0/26", Affinity: "h2", Allocations: map[int]string{}}))
	a.needFull = false // the first sight of a block is a full pass's
	clear(a.blockEdits)

	a.OnUpdate(bkey, js(api.Block{CIDR: "10.90.2.0/26", Affinity: "h2", Allocations: map[int]string{7: api.WorkloadHandle("h2", "w9")}}))
	ekey := datastore.EndpointKey("h2", "w9")
	a.OnUpdate(ekey, js(api.Endpoint{Node: "h2", Workload: "w9", Orchestrator: "netns", InterfaceName: api.WorkloadIfaceName("h2", "w9"),
		WorkloadIface: "eth0", IPv4Nets: []string{"10.90.2.7/32"}, Profiles: []string{"P"}}))
	if a.needFull {
		t.Error("another host's container start asked for a full pass")
	}
	if e, ok := a.blockEdits["10.90.2.0/26"]; !ok || len(e.Old.Allocations) != 0 {
		t.Errorf("block edit %+v (recorded %v), want the block before the allocation", e, ok)
	}
	if e, ok := a.epEdits["h2/w9"]; !ok || e.Had {
		t.Errorf("endpoint edit %+v (recorded %v), want a new record", e, ok)
	}

	a.OnUpdate(bkey, js(api.Block{CIDR: "10.90.2.0/26", Affinity: "h3", Allocations: map[int]string{7: api.WorkloadHandle("h2", "w9")}}))
	if !a.needFull {
		t.Error("a block that changed hands did not ask for a full pass")
	}
}

// TestEndpointAddrsFollowSnapshot: the endpoint pass's address index
// (calc.EndpointAddrs) and the status's count of this host's endpoints
// follow every record write the agent decodes into its snapshot: records
// added, rewritten with other addresses, deleted, a bad record that keeps
// its last good value, and a new snapshot (resync).
func TestEndpointAddrsFollowSnapshot(t *testing.T) {
	snap := calc.NewSnapshot()
	a := &Agent{cfg: Config{Name: "h1"}, log: slog.New(slog.DiscardHandler), snap: snap, epAddrs: calc.NewEndpointAddrs(snap),
		trigger: make(chan struct{}, 1), relabeled: map[string]api.Endpoint{},
		epEdits: map[string]calc.EndpointEdit{}, blockEdits: map[string]calc.BlockEdit{},
		conntrack: netdev.NewEndpointConntrack()}
	defer a.conntrack.Close()
	js := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ep := func(node, name string, addrs ...string) []byte {
		return js(api.Endpoint{Node: node, Workload: name, Orchestrator: "netns", InterfaceName: api.WorkloadIfaceName(node, name),
			WorkloadIface: "eth0", IPv4Nets: addrs, Profiles: []string{"P"}})
	}
	check := func(what string) {
		t.Helper()
		if !a.epAddrs.Matches(a.snap) {
			t.Fatalf("%s: the index differs from the snapshot's records", what)
		}
		// The status's count of this host's endpoints, kept the same way.
		if n := countLocal(a.snap, "h1"); a.localEndpoints != n {
			t.Fatalf("%s: %d local endpoints counted, the snapshot holds %d", what, a.localEndpoints, n)
		}
	}
	a.OnUpdate(datastore.PoolKey("10.90.0.0/16"), js(api.Pool{CIDR: "10.90.0.0/16", BlockSize: 26}))
	a.OnUpdate(datastore.EndpointKey("h1", "w1"), ep("h1", "w1", "10.90.0.1/32"))
	a.OnUpdate(datastore.EndpointKey("h2", "w2"), ep("h2", "w2", "10.90.1.2/32"))
	check("added")
	a.OnUpdate(datastore.EndpointKey("h1", "w1"), ep("h1", "w1", "10.90.0.3/32"))
	check("rewritten")
	a.OnUpdate(datastore.EndpointKey("h1", "w1"), []byte("{not json"))
	check("a bad record")
	a.OnUpdate(datastore.EndpointKey("h2", "w2"), nil)
	check("deleted")
	a.OnSnapshot(map[string][]byte{
		datastore.PoolKey("10.90.0.0/16"): js(api.Pool{CIDR: "10.90.0.0/16", BlockSize: 26}),
		datastore.EndpointKey("h3", "w3"): ep("h3", "w3", "10.90.2.3/32"),
	})
	check("a new snapshot")
	a.OnUpdate(datastore.EndpointKey("h3", "w4"), ep("h3", "w4", "10.90.2.4/32"))
	check("added after the new snapshot")
	a.OnSnapshot(map[string][]byte{
		datastore.PoolKey("10.90.0.0/16"): js(api.Pool{CIDR: "10.90.0.0/16", BlockSize: 26}),
		datastore.EndpointKey("h1", "w5"): ep("h1", "w5", "10.90.0.5/32"),
		datastore.EndpointKey("h1", "w6"): ep("h1", "w6", "10.90.0.6/32"),
	})
	check("a snapshot with two of ours")
	a.OnUpdate(datastore.EndpointKey("h1", "w7"), ep("h1", "w7", "10.90.0.7/32"))
	a.OnUpdate(datastore.EndpointKey("h1", "w5"), nil)
	a.OnUpdate(datastore.EndpointKey("h1", "w6"), ep("h1", "w6", "10.90.0.8/32"))
	check("ours added, deleted and rewritten")
	if a.localEndpoints != 2 {
		t.Errorf("%d local endpoints, want 2 (w6, w7)", a.localEndpoints)
	}
}
