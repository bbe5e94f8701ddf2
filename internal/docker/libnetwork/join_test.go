package libnetwork

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/datastore"
)

// Join never overwrites another workload's endpoint record: a `container
// add` workload (or a record written straight to etcd) whose name is the one
// an engine endpoint id maps to keeps its record, and Join fails before
// making any veth, with an error naming the other workload. (Before, Join
// replaced the derived veth, which is the other workload's, and Put its own
// record over the other's.)
func TestJoinDoesNotOverwriteAnotherWorkload(t *testing.T) {
	p := setup(t)
	t.Setenv("CALICO_STATE_DIR", t.TempDir()) // Join's workload lock
	ctx := context.Background()
	id := "0123456789abcdef0123"
	victim := client.NewEndpoint(client.EndpointSpec{Node: "host1", Name: Workload(id), Orchestrator: "netns",
		NetnsPath: "/var/run/netns/victim", Interface: "eth0", Addrs: []netip.Addr{netip.MustParseAddr("192.168.7.7")}, Profiles: []string{"web"}})
	key := datastore.EndpointKey("host1", victim.Workload)
	if err := p.c.DS.Put(ctx, key, victim); err != nil {
		t.Fatal(err)
	}
	erec := endpointRecord{ID: id, NetworkID: "n1-host1", Profile: "net1", Addrs: []string{"192.168.8.8/32"}}
	if err := p.c.DS.Put(ctx, endpointKey("host1", id), erec); err != nil {
		t.Fatal(err)
	}
	_, err := (NetworkDriver{p.h1}).Join(&network.JoinRequest{EndpointID: id, SandboxKey: "/var/run/docker/netns/x"})
	if !errors.Is(err, client.ErrEndpointTaken) || !strings.Contains(err.Error(), "orchestrator netns") {
		t.Fatalf("Join over another workload's record: %v", err)
	}
	got, _, err := datastore.Get[api.Endpoint](ctx, p.c.DS, key)
	if err != nil || !reflect.DeepEqual(got, victim) {
		t.Fatalf("the other workload's record changed: %+v (%v)", got, err)
	}
}

// RecordEndpoint creates a record, replaces its own (an engine's retry,
// with a new MAC), and refuses another workload's.
func TestRecordEndpoint(t *testing.T) {
	p := setup(t)
	ctx := context.Background()
	spec := client.EndpointSpec{Node: "host1", Name: "docker-aaaaaaaaaaaa", Orchestrator: api.OrchestratorLibnetwork,
		ContainerID: "aaaaaaaaaaaa1", Interface: "cali0", Profiles: []string{"net1"}}
	ep := client.NewEndpoint(spec)
	if ep.InterfaceName != api.WorkloadIfaceName("host1", spec.Name) {
		t.Fatalf("interface %s is not the derived one", ep.InterfaceName)
	}
	ep.MAC = "02:00:00:00:00:01"
	if err := p.c.RecordEndpoint(ctx, ep); err != nil {
		t.Fatal(err)
	}
	ep.MAC = "02:00:00:00:00:02"
	ep.NetnsPath = "/var/run/docker/netns/retry"
	if err := p.c.RecordEndpoint(ctx, ep); err != nil {
		t.Fatalf("a retry of the same endpoint: %v", err)
	}
	key := datastore.EndpointKey("host1", spec.Name)
	if got, _, _ := datastore.Get[api.Endpoint](ctx, p.c.DS, key); got.MAC != ep.MAC {
		t.Fatalf("the retry's record was not written: %+v", got)
	}
	other := ep
	other.ContainerID = "bbbbbbbbbbbb2"
	other.MAC = "02:00:00:00:00:03"
	if err := p.c.RecordEndpoint(ctx, other); !errors.Is(err, client.ErrEndpointTaken) {
		t.Fatalf("another container's record over it: %v", err)
	}
	if got, _, _ := datastore.Get[api.Endpoint](ctx, p.c.DS, key); got.MAC != ep.MAC || got.ContainerID != ep.ContainerID {
		t.Fatalf("overwritten: %+v", got)
	}
}
