package client

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/datastore"
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

// AddWorkload's veth MTU comes from the pools and the encryption setting
// read with everything else (mtuFrom), as workloadMTU reads them: the
// smallest of the address's pool's encapsulation and WireGuard, 1500
// without either; an undecodable pool is skipped, an undecodable setting
// is an error naming its key.
func TestMTUFrom(t *testing.T) {
	rec := func(key string, v any) datastore.Record {
		b, _ := json.Marshal(v)
		return datastore.Record{Key: key, Value: b}
	}
	pools := []datastore.Record{
		rec(datastore.PoolKey("10.1.0.0/16"), api.Pool{CIDR: "10.1.0.0/16", VXLANMode: api.EncapAlways}),
		rec(datastore.PoolKey("10.2.0.0/16"), api.Pool{CIDR: "10.2.0.0/16"}),
		{Key: datastore.PoolKey("10.3.0.0/16"), Value: []byte("{not json")},
	}
	on := []datastore.Record{rec(datastore.KeyEncryption, api.EncryptionConfig{Enabled: true})}
	for _, c := range []struct {
		addr string
		enc  []datastore.Record
		want int
	}{
		{"10.1.0.5", nil, api.VXLANMTU},
		{"10.2.0.5", nil, 1500},
		{"10.3.0.5", nil, 1500},
		{"10.2.0.5", on, calc.WireGuardMTU},
		{"10.1.0.5", on, min(api.VXLANMTU, calc.WireGuardMTU)},
	} {
		got, err := mtuFrom(pools, c.enc, []netip.Addr{netip.MustParseAddr(c.addr)})
		if err != nil || got != c.want {
			t.Errorf("%s (encryption %v): MTU %d, %v; want %d", c.addr, c.enc != nil, got, err, c.want)
		}
	}
	bad := []datastore.Record{{Key: datastore.KeyEncryption, Value: []byte("[")}}
	if _, err := mtuFrom(pools, bad, []netip.Addr{netip.MustParseAddr("10.2.0.5")}); err == nil || !strings.Contains(err.Error(), datastore.KeyEncryption) {
		t.Errorf("an undecodable encryption setting: %v, want an error naming %s", err, datastore.KeyEncryption)
	}
}
