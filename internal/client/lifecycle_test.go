package client

import (
	"net/netip"
	"testing"

	"github.com/calico-go/calico/internal/api"
)

// A rerun of container add is done when the record is what the request
// would make; anything else is another workload's endpoint.
func TestSameWorkload(t *testing.T) {
	req := WorkloadRequest{Node: "h1", Name: "w", IPs: []string{"10.0.0.5", "auto", "auto6"}, NetnsPath: "/run/netns/w",
		Interface: "eth0", Orchestrator: "netns", Profiles: []string{"P"}}
	fixed := []netip.Addr{netip.MustParseAddr("10.0.0.5")}
	rec := api.Endpoint{Node: "h1", Workload: "w", Orchestrator: "netns", NetnsPath: "/run/netns/w",
		InterfaceName: api.WorkloadIfaceName("h1", "w"), WorkloadIface: "eth0", Profiles: []string{"P"},
		IPv4Nets: []string{"10.0.0.9/32", "10.0.0.5/32"}, IPv6Nets: []string{"fd00::7/128"}}
	if !sameWorkload(rec, req, fixed) {
		t.Fatal("the record the request made is not recognised")
	}
	change := map[string]func(*api.Endpoint){
		"another interface": func(e *api.Endpoint) { e.InterfaceName = api.WorkloadIfaceName("h1", "x") },
		"another netns":     func(e *api.Endpoint) { e.NetnsPath = "/run/netns/x" },
		"another profile":   func(e *api.Endpoint) { e.Profiles = []string{"Q"} },
		"no profile":        func(e *api.Endpoint) { e.Profiles = nil },
		"inside interface":  func(e *api.Endpoint) { e.WorkloadIface = "cali0" },
		"orchestrator":      func(e *api.Endpoint) { e.Orchestrator = "docker" },
		"container id":      func(e *api.Endpoint) { e.ContainerID = "abc" },
		"fixed address":     func(e *api.Endpoint) { e.IPv4Nets = []string{"10.0.0.9/32", "10.0.0.6/32"} },
		"an extra address":  func(e *api.Endpoint) { e.IPv4Nets = append(e.IPv4Nets, "10.0.0.10/32") },
		"no IPv6 for auto6": func(e *api.Endpoint) { e.IPv6Nets = nil },
		"IPv6 for auto": func(e *api.Endpoint) {
			e.IPv4Nets = []string{"10.0.0.5/32"}
			e.IPv6Nets = []string{"fd00::7/128", "fd00::8/128"}
		},
	}
	for what, f := range change {
		e := rec
		e.IPv4Nets = append([]string{}, rec.IPv4Nets...)
		f(&e)
		if sameWorkload(e, req, fixed) {
			t.Errorf("%s: taken for the same workload", what)
		}
	}
	// No profiles on either side is the same, however the empty list is written.
	r2, e2 := req, rec
	r2.Profiles, e2.Profiles = nil, []string{}
	if !sameWorkload(e2, r2, fixed) {
		t.Error("empty profile lists differ")
	}
}
