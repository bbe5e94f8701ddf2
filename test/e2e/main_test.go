// Package e2e runs calicoctl and calico-node on namespace hosts with a real
// etcd, real BGP sessions and the real kernel, and asserts on packets, routes
// and datastore contents.
package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/walkthrough"
)

func TestMain(m *testing.M) { e2etest.Main(m, "ce2e", nil) }

// world builds the two hosts, datastore and nodes, removed when the test ends.
func world(t *testing.T, o walkthrough.Options) *walkthrough.World {
	t.Helper()
	o.Bin, o.Prefix = e2etest.BinDir, "ce2e"
	o.Progress = e2etest.Writer{T: t}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w, err := walkthrough.Build(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			e2etest.DumpLogs(t, w, 60)
		}
		w.Close()
	})
	return w
}
