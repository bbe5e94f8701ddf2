package libnetwork

import (
	"context"
	"maps"
	"reflect"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/docker"
)

// learnEngine lists endpoint epID on network n1 as container ctr's, after
// the first ask (the engine lists a joined endpoint a moment later).
type learnEngine struct {
	fakeEngine
	epID   string
	ctr    docker.Container
	netLbl map[string]string
	asked  *int
}

func (e learnEngine) NetworkInspect(_ context.Context, id string) (docker.Network, error) {
	*e.asked++
	n := docker.Network{ID: id, Name: "net1", Labels: e.netLbl, Endpoints: map[string]string{}}
	if *e.asked > 1 {
		n.Endpoints[e.epID] = e.ctr.ID
	}
	return n, nil
}

func (e learnEngine) Lookup(_ context.Context, id string) (docker.Container, error) {
	if id != e.ctr.ID {
		return docker.Container{}, docker.ErrNoSuchContainer
	}
	return e.ctr, nil
}

// After Join the driver records the container's name and id and its
// labels with the network's: the container's win, invalid ones and ones
// under calico's own prefixes are skipped, and labels set meanwhile stay.
// A record of that name that is not this endpoint's is left alone.
func TestLearnContainer(t *testing.T) {
	p := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	epID := "0123456789abcdef0123"
	asked := 0
	eng := learnEngine{epID: epID, asked: &asked,
		ctr: docker.Container{ID: "c0ffee", Name: "web-1", Labels: map[string]string{
			"env": "prod", "app": "web", "bad key": "x", api.LabelNode: "host2", "long": "a value with spaces"}},
		netLbl: map[string]string{"env": "test", "tier": "front", api.ProfileLabelPrefix + "admin": ""},
	}
	p.h1.engine = eng
	ep := client.NewEndpoint(client.EndpointSpec{Node: "host1", Name: Workload(epID), Orchestrator: api.OrchestratorLibnetwork,
		ContainerID: epID, Interface: "cali0", Profiles: []string{"net1"}, Labels: map[string]string{"app": "mine"}})
	key := datastore.EndpointKey("host1", ep.Workload)
	if err := p.c.DS.Put(ctx, key, ep); err != nil {
		t.Fatal(err)
	}
	if err := p.h1.learnContainer(ctx, epID, "n1-host1"); err != nil {
		t.Fatal(err)
	}
	got, _, err := datastore.Get[api.Endpoint](ctx, p.c.DS, key)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"env": "prod", "app": "mine", "tier": "front"}
	if got.ContainerName != "web-1" || got.DockerID != "c0ffee" || !maps.Equal(got.Labels, want) {
		t.Errorf("learnt name %q id %q labels %v; want web-1 c0ffee %v", got.ContainerName, got.DockerID, got.Labels, want)
	}
	if id, name := got.DockerContainer(); id != "c0ffee" || name != "web-1" {
		t.Errorf("DockerContainer() = %q %q", id, name)
	}

	// Another workload's record under that name is not touched.
	other := client.NewEndpoint(client.EndpointSpec{Node: "host1", Name: Workload(epID), Orchestrator: api.OrchestratorNetns, Interface: "eth0"})
	if err := p.c.DS.Put(ctx, key, other); err != nil {
		t.Fatal(err)
	}
	if err := p.h1.learnContainer(ctx, epID, "n1-host1"); err != nil {
		t.Fatal(err)
	}
	if got, _, err := datastore.Get[api.Endpoint](ctx, p.c.DS, key); err != nil || !reflect.DeepEqual(got, other) {
		t.Errorf("another workload's record changed: %+v (%v)", got, err)
	}
}

// An endpoint joined while the agent stopped before it learnt its
// container (the background run died with it) learns it at Reconcile.
func TestReconcileLearnsContainer(t *testing.T) {
	p := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	epID := "0123456789abcdef0123"
	asked := 0
	p.h1.engine = learnEngine{fakeEngine: fakeEngine{epID: "live"}, epID: epID, asked: &asked,
		ctr: docker.Container{ID: "c0ffee", Name: "web-1", Labels: map[string]string{"app": "web"}}}
	erec := endpointRecord{ID: epID, NetworkID: "n1-host1", Profile: "net1"}
	if err := p.c.DS.Put(ctx, endpointKey("host1", epID), erec); err != nil {
		t.Fatal(err)
	}
	ep := client.NewEndpoint(client.EndpointSpec{Node: "host1", Name: Workload(epID), Orchestrator: api.OrchestratorLibnetwork,
		ContainerID: epID, Interface: "cali0", Profiles: []string{"net1"}})
	key := datastore.EndpointKey("host1", ep.Workload)
	if err := p.c.DS.Put(ctx, key, ep); err != nil {
		t.Fatal(err)
	}
	if removed, err := p.h1.Reconcile(ctx); err != nil || len(removed) != 0 {
		t.Fatalf("Reconcile: removed %v, %v", removed, err)
	}
	for {
		got, _, err := datastore.Get[api.Endpoint](ctx, p.c.DS, key)
		if err == nil && got.DockerID == "c0ffee" && got.ContainerName == "web-1" && got.Labels["app"] == "web" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the endpoint did not learn its container: %+v (%v)", got, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
