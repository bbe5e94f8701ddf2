package datastore

import (
	"fmt"
	"testing"
)

func TestControlPlane(t *testing.T) {
	c := Config{Endpoints: []string{"http://10.0.0.1:2379", "https://10.0.0.5:4001", "http://etcd.example:2379", "http://[fd00::1]:2379", "::bad"}}
	hosts, ports := c.ControlPlane()
	if fmt.Sprint(hosts) != "[10.0.0.1 10.0.0.5 fd00::1]" {
		t.Errorf("hosts = %v", hosts)
	}
	if fmt.Sprint(ports) != "[2379 2380 4001 4002]" {
		t.Errorf("ports = %v", ports)
	}
	if PeerPort(2379) != 2380 || PeerPort(12379) != 12380 {
		t.Error("PeerPort")
	}
}
