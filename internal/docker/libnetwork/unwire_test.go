package libnetwork

import (
	"context"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
)

// The driver removes only its own endpoint records (and with them only the
// interface derived from the name): not a `container add` workload whose
// name happens to be the one an engine endpoint id maps to, and not a
// victim's record named through a lying record's container id.
func TestUnwireRemovesOnlyItsOwn(t *testing.T) {
	p := setup(t)
	ctx := context.Background()
	victimID := "0123456789abcdef0123"
	victim := api.Endpoint{Node: "host1", Workload: Workload(victimID), Orchestrator: api.OrchestratorLibnetwork, ContainerID: victimID,
		InterfaceName: api.WorkloadIfaceName("host1", Workload(victimID))}
	netnsID := "fedcba9876543210fedc"
	other := api.Endpoint{Node: "host1", Workload: Workload(netnsID), Orchestrator: "netns",
		InterfaceName: api.WorkloadIfaceName("host1", Workload(netnsID))}
	// A lying record: a container id that is not live and maps to the
	// victim's workload name.
	liar := api.Endpoint{Node: "host1", Workload: "evil", Orchestrator: api.OrchestratorLibnetwork, ContainerID: victimID[:12] + "zzzz",
		InterfaceName: api.WorkloadIfaceName("host1", "evil")}
	for _, ep := range []api.Endpoint{victim, other, liar} {
		if err := p.c.DS.Put(ctx, datastore.EndpointKey(ep.Node, ep.Workload), ep); err != nil {
			t.Fatal(err)
		}
	}
	p.h1.engine = fakeEngine{victimID: "live"}
	if _, err := p.h1.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if err := (NetworkDriver{p.h1}).Leave(&network.LeaveRequest{EndpointID: netnsID}); err != nil {
		t.Fatal(err)
	}
	for _, ep := range []api.Endpoint{victim, other} {
		if _, _, err := p.c.DS.GetRaw(ctx, datastore.EndpointKey(ep.Node, ep.Workload)); err != nil {
			t.Errorf("%s (%s) was removed: %v", ep.Workload, ep.Orchestrator, err)
		}
	}
	// The driver's own endpoint still goes.
	if err := (NetworkDriver{p.h1}).Leave(&network.LeaveRequest{EndpointID: victimID}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.c.DS.GetRaw(ctx, datastore.EndpointKey("host1", victim.Workload)); err == nil {
		t.Error("Leave did not remove the driver's own endpoint")
	}
}
