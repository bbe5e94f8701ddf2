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
