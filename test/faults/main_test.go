// Package faults proves, on the namespace lab with the real binaries, real
// etcd, real BGP and the real kernel, that the network keeps forwarding
// through faults (agent restarts, a datastore outage, a lost host) and lets
// nobody through who should not pass (anti-spoofing, host services, no
// profile, outbound deny). Each test logs its measured figure on a line
// starting with "FIGURE:" and fails when the promise breaks.
//
// The tests share one walkthrough world (two hosts, etcd on host 1, the
// seed's workers and profiles), built once in TestFaults, to keep the
// package within a few minutes.
package faults

import (
	"context"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// labPrefix names every namespace these tests make.
const labPrefix = "cflt"

// BGP timers of the world: short, so a lost host is noticed within the
// test's time. Its routes go after hold time + restart time (the hold timer
// expiring is a graceful-restart trigger too).
const (
	holdTime    = 9 * time.Second
	restartTime = 10 * time.Second
)

func TestMain(m *testing.M) { e2etest.Main(m, labPrefix, nil) }

// nodeArgs are the `calicoctl node` flags every node of the world runs with.
func nodeArgs() []string {
	return []string{"--bgp-hold-time=" + holdTime.String(), "--bgp-restart-time=" + restartTime.String()}
}

// newWorld builds the seed's walkthrough (pool with nat-outgoing, workers
// 1-3, PROF_1 = workers 1 and 3, PROF_2 = worker 2), removed when t ends.
func newWorld(t *testing.T) *walkthrough.World {
	t.Helper()
	return e2etest.World(t, labPrefix, walkthrough.Options{PoolArgs: []string{"--nat-outgoing"}, NodeArgs: nodeArgs()}, true)
}

// ctl runs calicoctl on h and fails the test on error.
func ctl(t *testing.T, ctx context.Context, w *walkthrough.World, h *lab.Host, args ...string) string {
	t.Helper()
	out, err := w.Ctl(ctx, h, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// startNode starts calico-node on h the way the world did, plus extra flags.
func startNode(ctx context.Context, w *walkthrough.World, h *lab.Host, extra ...string) error {
	args := append([]string{"node", "--ip=" + h.Addr().String(), "--name=" + h.Label}, nodeArgs()...)
	_, err := w.Ctl(ctx, h, append(args, extra...)...)
	return err
}

// ourRoutes lists the IPv4 routes calico-node installed on h (protocol 80).
func ourRoutes(ctx context.Context, h *lab.Host) string {
	out, err := h.Run(ctx, "ip", "-4", "route", "show", "proto", "80")
	if err != nil {
		return "error: " + err.Error()
	}
	return out
}

// TestFaults builds one world and runs every fault and security test on it,
// the destructive ones last.
func TestFaults(t *testing.T) {
	if err := lab.Require("ip", "ping", "nft", "iperf3"); err != nil {
		t.Fatal(err)
	}
	w := newWorld(t)
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *walkthrough.World)
	}{
		{"Security", testSecurity},
		{"DatastoreOutage", testDatastoreOutage},
		// After the outage both agents have run for over a minute, past
		// their start-up hold of stale routes: the first restart below then
		// relies on the peer's graceful restart alone, as in production.
		{"AgentRestart", testAgentRestart},
		{"HostLoss", testHostLoss},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, w) })
	}
}
