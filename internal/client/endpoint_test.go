package client

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/calico-go/calico/internal/api"
)

func TestNewEndpoint(t *testing.T) {
	ep := NewEndpoint(EndpointSpec{Node: "h1", Name: "web", Orchestrator: "netns", NetnsPath: "/run/netns/web", Interface: "eth0",
		Addrs: []netip.Addr{netip.MustParseAddr("192.168.0.2"), netip.MustParseAddr("fd00::2")}, Profiles: []string{"p"}})
	if ep.InterfaceName != api.WorkloadIfaceName("h1", "web") || !slices.Equal(ep.IPv4Nets, []string{"192.168.0.2/32"}) ||
		!slices.Equal(ep.IPv6Nets, []string{"fd00::2/128"}) || ep.IPAMHandles != nil || ep.MAC != "" {
		t.Fatalf("NewEndpoint = %+v", ep)
	}
}

// What counts as the same workload when a record is already there: the
// same container of the same orchestrator (a retry, whatever else moved),
// or without a container id the same record but for the MAC.
func TestSameWorkloadAs(t *testing.T) {
	lib := NewEndpoint(EndpointSpec{Node: "h1", Name: "docker-aaaaaaaaaaaa", Orchestrator: api.OrchestratorLibnetwork, ContainerID: "aaaaaaaaaaaa1",
		NetnsPath: "/var/run/docker/netns/1", Interface: "cali0", Addrs: []netip.Addr{netip.MustParseAddr("192.168.0.2")}})
	retry := lib
	retry.NetnsPath, retry.MAC = "/var/run/docker/netns/2", "02:00:00:00:00:01"
	other := lib
	other.ContainerID = "bbbbbbbbbbbb2"
	netns := lib
	netns.Orchestrator, netns.ContainerID = "netns", ""
	moved := netns
	moved.NetnsPath = "/run/netns/elsewhere"
	lying := lib
	lying.InterfaceName = api.WorkloadIfaceName("h1", "victim")
	for _, c := range []struct {
		name     string
		old, new api.Endpoint
		want     bool
	}{
		{"engine retry", lib, retry, true},
		{"another container", lib, other, false},
		{"container add record under the engine's name", netns, lib, false},
		{"same netns record, new MAC", netns, func() api.Endpoint { e := netns; e.MAC = "x"; return e }(), true},
		{"netns record of another namespace", netns, moved, false},
		{"record naming another interface", lying, lib, false},
	} {
		if got := sameWorkloadAs(c.old, c.new); got != c.want {
			t.Errorf("%s: sameWorkloadAs = %t, want %t", c.name, got, c.want)
		}
	}
}
