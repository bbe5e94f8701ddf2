package node

import (
	"testing"

	"github.com/calico-go/calico/internal/calc"
)

func TestDecodeIntoRoutesEveryKindAndKeepsLastGoodOnGarbage(t *testing.T) {
	s := calc.NewSnapshot()
	records := []struct {
		key, value string
		relevant   bool
	}{
		{"/calico/v1/config/bgp", `{"defaultASNumber":65000,"nodeMesh":false}`, true},
		{"/calico/v1/bgp/peer/10.0.0.254", `{"ip":"10.0.0.254","asNumber":65001}`, true},
		{"/calico/v1/pool/192.168.100.0-24", `{"cidr":"192.168.100.0/24"}`, true},
		{"/calico/v1/profile/P1", `{"name":"P1","tags":["P1"]}`, true},
		{"/calico/v1/host/h1/node", `{"name":"h1","ipv4":"10.0.0.1/24"}`, true},
		{"/calico/v1/host/h1/endpoint/w1", `{"node":"h1","workload":"w1","interfaceName":"cali1"}`, true},
		{"/calico/v1/host/h1/bgp/peer/10.0.0.253", `{"ip":"10.0.0.253","asNumber":65002,"node":"h1"}`, true},
		{"/calico/v1/ipam/block/192.168.100.0-26", `{"cidr":"192.168.100.0/26","affinity":"h1"}`, true},
		{"/calico/v1/status/h1", `{"node":"h1"}`, false},
		{"/calico/v1/ipam/handle/h1~w1", `{"id":"h1~w1"}`, false},
		{"/other/key", `x`, false},
	}
	for _, r := range records {
		relevant, err := decodeInto(s, r.key, []byte(r.value))
		if err != nil || relevant != r.relevant {
			t.Errorf("%s: relevant=%v err=%v, want relevant=%v", r.key, relevant, err, r.relevant)
		}
	}
	if s.BGP.DefaultASNumber != 65000 || len(s.GlobalPeers) != 1 || len(s.Pools) != 1 || len(s.Profiles) != 1 ||
		len(s.Nodes) != 1 || len(s.Endpoints) != 1 || len(s.NodePeers) != 1 || len(s.Blocks) != 1 {
		t.Fatalf("snapshot incomplete: %+v", s)
	}
	if _, ok := s.Pools["192.168.100.0/24"]; !ok {
		t.Errorf("pool key not unescaped: %v", s.Pools)
	}
	// Garbage over a good record is an error and leaves the good one.
	if _, err := decodeInto(s, "/calico/v1/host/h1/endpoint/w1", []byte(`{not json`)); err == nil {
		t.Error("garbage decoded without error")
	}
	if s.Endpoints["h1/w1"].InterfaceName != "cali1" {
		t.Errorf("good endpoint lost after garbage: %+v", s.Endpoints)
	}
	// Deletion removes.
	if _, err := decodeInto(s, "/calico/v1/host/h1/endpoint/w1", nil); err != nil || len(s.Endpoints) != 0 {
		t.Errorf("delete: err=%v endpoints=%v", err, s.Endpoints)
	}
	if _, err := decodeInto(s, "/calico/v1/config/bgp", nil); err != nil || s.BGP.DefaultASNumber != 64512 {
		t.Errorf("deleted BGP config should fall back to defaults, got %+v", s.BGP)
	}
}
