package libnetwork

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"

	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/datastore/etcdtest"
	"github.com/calico-go/calico/internal/docker"
)

// fakeEngine names networks; the engine's process is this one.
type fakeEngine map[string]string

func (f fakeEngine) NetworkInspect(_ context.Context, id string) (docker.Network, error) {
	return docker.Network{ID: id, Name: f[id]}, nil
}
func (fakeEngine) Pid() (int, error) { return os.Getpid(), nil }

// The fake engine lists no endpoints on its networks, so no container is
// learnt (see learn_test.go for an engine that does).
func (fakeEngine) Lookup(_ context.Context, id string) (docker.Container, error) {
	return docker.Container{}, docker.ErrNoSuchContainer
}
func (fakeEngine) RunLabels(_ context.Context, ctr docker.Container) (map[string]string, error) {
	return ctr.Labels, nil
}

// DriverEndpoints: the fake engine has no live endpoints unless listed.
func (f fakeEngine) DriverEndpoints(context.Context, string) (map[string]bool, map[string]bool, error) {
	live := map[string]bool{}
	for k, v := range f {
		if v == "live" {
			live[k] = true
		}
	}
	return map[string]bool{}, live, nil
}

type pair struct {
	c      *client.Client
	h1, h2 *Drivers
}

func setup(t *testing.T) pair {
	url := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ds, err := datastore.Connect(ctx, datastore.Config{Endpoints: []string{url}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ds.Close() })
	c := client.New(ds)
	for _, n := range []string{"host1", "host2"} {
		if err := c.DS.Put(ctx, datastore.NodeKey(n), map[string]string{"name": n, "ipv4": "10.0.0.1"}); err != nil {
			t.Fatal(err)
		}
	}
	eng := fakeEngine{"n1-host1": "net1", "n1-host2": "net1"}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := pair{c: c, h1: New(c, "host1", eng, log), h2: New(c, "host2", eng, log)}
	t.Cleanup(p.h1.Close)
	t.Cleanup(p.h2.Close)
	return p
}

func createReq(id, subnet, space string, opts map[string]any) *network.CreateNetworkRequest {
	return &network.CreateNetworkRequest{
		NetworkID: id,
		Options:   map[string]any{genericOptions: opts},
		IPv4Data:  []*network.IPAMData{{AddressSpace: space, Pool: subnet}},
	}
}

func pools(t *testing.T, c *client.Client) []string {
	ps, err := c.Pools(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range ps {
		out = append(out, p.CIDR)
	}
	return out
}

// One network on two hosts: retries are harmless, the pool and profile
// live until the last host's network goes, and no address leaks.
func TestNetworkLifecycleAcrossHosts(t *testing.T) {
	p := setup(t)
	ctx := context.Background()
	nd1, nd2 := NetworkDriver{p.h1}, NetworkDriver{p.h2}
	id1, id2 := IPAMDriver{p.h1}, IPAMDriver{p.h2}
	opts := map[string]any{"nat-outgoing": "true"}
	for range 2 { // the engine retries
		if err := nd1.CreateNetwork(createReq("n1-host1", "192.168.7.0/24", AddressSpace, opts)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nd2.CreateNetwork(createReq("n1-host2", "192.168.7.0/24", AddressSpace, nil)); err != nil {
		t.Fatal(err)
	}
	if got := pools(t, p.c); !slices.Equal(got, []string{"192.168.7.0/24"}) {
		t.Fatalf("pools %v", got)
	}

	// An address on each host; a fixed one twice is refused the second time.
	a1, err := id1.RequestAddress(&ipam.RequestAddressRequest{PoolID: "192.168.7.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := id2.RequestAddress(&ipam.RequestAddressRequest{PoolID: "192.168.7.0/24", Address: "192.168.7.77"}); err != nil {
		t.Fatal(err)
	}
	if _, err := id1.RequestAddress(&ipam.RequestAddressRequest{PoolID: "192.168.7.0/24", Address: "192.168.7.77"}); err == nil || !strings.Contains(err.Error(), "already assigned") {
		t.Errorf("second request for 192.168.7.77: want 'already assigned', got %v", err)
	}
	gw, err := id1.RequestAddress(&ipam.RequestAddressRequest{PoolID: "192.168.7.0/24", Options: map[string]string{"RequestAddressType": "com.docker.network.gateway"}})
	if err != nil || gw.Address != "169.254.1.1/32" {
		t.Errorf("gateway: %v %v", gw, err)
	}

	ep := &network.CreateEndpointRequest{NetworkID: "n1-host1", EndpointID: "ep1", Interface: &network.EndpointInterface{Address: a1.Address}}
	for range 2 {
		if _, err := nd1.CreateEndpoint(ep); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.c.Profile(ctx, "net1"); err != nil {
		t.Errorf("profile net1 was not created: %v", err)
	}
	for range 2 { // out of order and repeated: delete before and after release
		if err := nd1.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: "n1-host1", EndpointID: "ep1"}); err != nil {
			t.Fatal(err)
		}
		if err := id1.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: "192.168.7.0/24", Address: strings.TrimSuffix(a1.Address, "/32")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := id2.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: "192.168.7.0/24", Address: "192.168.7.77"}); err != nil {
		t.Fatal(err)
	}
	if n, err := p.c.IPAM.InUse(ctx, "192.168.7.0/24"); err != nil || n != 0 {
		t.Errorf("in use after every release: %d %v", n, err)
	}

	// host2's network learns its name too (its first endpoint), so host1's
	// removal hands over both the pool and the profile.
	if _, err := nd2.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: "n1-host2", EndpointID: "ep2", Interface: &network.EndpointInterface{Address: "192.168.7.78/32"}}); err != nil {
		t.Fatal(err)
	}
	if err := nd2.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: "n1-host2", EndpointID: "ep2"}); err != nil {
		t.Fatal(err)
	}
	if err := nd1.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: "n1-host1"}); err != nil {
		t.Fatal(err)
	}
	if got := pools(t, p.c); len(got) != 1 {
		t.Errorf("pool went while host2's network has it: %v", got)
	}
	for range 2 {
		if err := nd2.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: "n1-host2"}); err != nil {
			t.Fatal(err)
		}
	}
	if got := pools(t, p.c); len(got) != 0 {
		t.Errorf("pool stays after the last network: %v", got)
	}
	if _, err := p.c.Profile(ctx, "net1"); err == nil {
		t.Errorf("profile net1 stays after the last network")
	}
}

// Options that clash or make no sense are refused, and nothing is made.
func TestNetworkBadOptions(t *testing.T) {
	p := setup(t)
	nd := NetworkDriver{p.h1}
	for _, c := range []struct {
		opts map[string]any
		want string
	}{
		{map[string]any{"ipip": "maybe"}, "want true or false"},
		{map[string]any{"colour": "true"}, "unknown --opt"},
		{map[string]any{"ipip": "true", "vxlan": "true"}, "choose one"},
	} {
		err := nd.CreateNetwork(createReq("bad", "192.168.8.0/24", AddressSpace, c.opts))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: want %q, got %v", c.opts, c.want, err)
		}
	}
	if err := nd.CreateNetwork(createReq("bad", "192.168.8.0/33", AddressSpace, nil)); err == nil {
		t.Errorf("a bad subnet was accepted")
	}
	if err := nd.CreateNetwork(createReq("ok", "192.168.8.0/24", AddressSpace, map[string]any{"vxlan": "true"})); err != nil {
		t.Fatal(err)
	}
	err := NetworkDriver{p.h2}.CreateNetwork(createReq("other", "192.168.8.0/24", AddressSpace, map[string]any{"ipip": "true"}))
	if err == nil || !strings.Contains(err.Error(), "exists with") {
		t.Errorf("clashing options on the same subnet: got %v", err)
	}
	if got := pools(t, p.c); !slices.Equal(got, []string{"192.168.8.0/24"}) {
		t.Errorf("pools after refused networks: %v", got)
	}
	if _, err := (IPAMDriver{p.h1}).RequestPool(&ipam.RequestPoolRequest{Pool: "192.168.9.0/24", SubPool: "192.168.9.0/25"}); err == nil {
		t.Errorf("--ip-range was accepted")
	}
	if _, err := (NetworkDriver{p.h1}).CreateEndpoint(&network.CreateEndpointRequest{NetworkID: "nope", EndpointID: "x", Interface: &network.EndpointInterface{Address: "192.168.8.5/32"}}); err == nil || !strings.Contains(err.Error(), "unknown to calico") {
		t.Errorf("endpoint on an unknown network: got %v", err)
	}
}

// After the agent was down: endpoints the engine removed meanwhile, and
// addresses no endpoint took, are given back; live ones are kept.
func TestReconcileAfterDowntime(t *testing.T) {
	p := setup(t)
	ctx := context.Background()
	p.h1.engine = fakeEngine{"n1-host1": "net1", "ep-live": "live"}
	nd, id := NetworkDriver{p.h1}, IPAMDriver{p.h1}
	if err := nd.CreateNetwork(createReq("n1-host1", "192.168.7.0/24", AddressSpace, nil)); err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for range 3 {
		a, err := id.RequestAddress(&ipam.RequestAddressRequest{PoolID: "192.168.7.0/24"})
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, a.Address)
	}
	for i, ep := range []string{"ep-live", "ep-gone"} {
		if _, err := nd.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: "n1-host1", EndpointID: ep, Interface: &network.EndpointInterface{Address: addrs[i]}}); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := p.h1.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("removed: %v", removed)
	for i, want := range []bool{true, false, false} {
		a := netip.MustParsePrefix(addrs[i]).Addr()
		info, err := p.c.IPAM.Info(ctx, a)
		if err != nil || info.Assigned != want {
			t.Errorf("%s (endpoint %d): assigned=%v, want %v (%v)", a, i, info.Assigned, want, err)
		}
	}
	if _, _, err := p.c.DS.GetRaw(ctx, endpointKey("host1", "ep-gone")); err == nil {
		t.Errorf("the gone endpoint's record stays")
	}
	if _, _, err := p.c.DS.GetRaw(ctx, endpointKey("host1", "ep-live")); err != nil {
		t.Errorf("the live endpoint's record went: %v", err)
	}
}
