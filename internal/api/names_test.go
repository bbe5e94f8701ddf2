package api

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

func TestWorkloadIfaceName(t *testing.T) {
	sum := sha256.Sum256([]byte("host1/worker-1"))
	want := "cali" + hex.EncodeToString(sum[:])[:11]
	if got := WorkloadIfaceName("host1", "worker-1"); got != want || len(got) != 15 {
		t.Fatalf("WorkloadIfaceName = %q, want %q (15 chars)", got, want)
	}
	if WorkloadIfaceName("host1", "a") == WorkloadIfaceName("host2", "a") {
		t.Fatal("same workload name on two hosts, same interface name")
	}
}

func TestHandles(t *testing.T) {
	if got := WorkloadHandle("host1", "worker-1"); got != "host1~worker-1" {
		t.Errorf("WorkloadHandle = %q", got)
	}
	if got := LibnetworkHandle("host1"); got != "host1~~libnetwork" {
		t.Errorf("LibnetworkHandle = %q", got)
	}
	ep := Endpoint{Node: "h", Workload: "w"}
	if hs := EndpointHandles(ep); len(hs) != 1 || hs[0] != "h~w" {
		t.Errorf("EndpointHandles(netns endpoint) = %v", hs)
	}
	ep.Orchestrator = OrchestratorLibnetwork
	if hs := EndpointHandles(ep); len(hs) != 2 || hs[1] != "h~~libnetwork" {
		t.Errorf("EndpointHandles(libnetwork endpoint) = %v", hs)
	}
}

func TestOwnsHandle(t *testing.T) {
	eps := []Endpoint{{Node: "h", Workload: "w"}, {Node: "h", Workload: "w", Orchestrator: OrchestratorLibnetwork}, {Node: "h~", Workload: "w"}}
	handles := []string{"h~w", "h~~libnetwork", "h~w2", "h2~w", "h~", "h~~w", "hh~w", "h~~libnetworkx", ""}
	for _, ep := range eps {
		for _, h := range handles {
			want := false
			for _, o := range EndpointHandles(ep) {
				want = want || o == h
			}
			if got := OwnsHandle(ep, h); got != want {
				t.Errorf("OwnsHandle(%+v, %q) = %t, want %t", ep, h, got, want)
			}
		}
	}
	if IfaceNameForID(EndpointID("n", "w")) != WorkloadIfaceName("n", "w") {
		t.Error("IfaceNameForID and WorkloadIfaceName disagree")
	}
}
