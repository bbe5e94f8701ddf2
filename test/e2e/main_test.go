// Package e2e runs calicoctl and calico-node on namespace hosts with a real
// etcd, real BGP sessions and the real kernel, and asserts on packets, routes
// and datastore contents.
package e2e

import (
	"testing"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/walkthrough"
)

func TestMain(m *testing.M) { e2etest.Main(m, "ce2e", nil) }

// world builds the two hosts, datastore and nodes, removed when the test ends.
func world(t *testing.T, o walkthrough.Options) *walkthrough.World {
	t.Helper()
	return e2etest.World(t, "ce2e", o, false)
}
