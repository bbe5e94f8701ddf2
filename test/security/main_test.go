// Package security performs, on the namespace lab with the real binaries,
// real etcd, real BGP and the real kernel, the attacks a workload, a host on
// the fabric, a BGP peer or a stray datastore record could try against the
// cluster, and shows each fail while honest traffic still flows. Each test
// logs a line starting with "FIGURE:" with what the attack achieved (which
// must be nothing) and what honest traffic did.
//
// Every test builds the world it needs (walkthrough.Build: two hosts, etcd
// on host 1 at 10.0.0.1:2379, an outside network behind a gateway), so the
// tests are independent of each other.
package security

import (
	"context"
	"testing"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// labPrefix names every namespace these tests make.
const labPrefix = "csec"

func TestMain(m *testing.M) { e2etest.Main(m, labPrefix, nil) }

// world builds the hosts, datastore and nodes, removed when the test ends;
// with seed it also runs the seed's configuration (pool, workers 1-3,
// PROF_1 = workers 1 and 3, PROF_2 = worker 2).
func world(t *testing.T, o walkthrough.Options, seed bool) *walkthrough.World {
	t.Helper()
	return e2etest.World(t, labPrefix, o, seed)
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
