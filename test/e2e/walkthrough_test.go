package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/walkthrough"
)

// TestSeedWalkthrough is the seed document end to end: same profile reaches
// across hosts, other profiles do not, nat-outgoing reaches the outside, and
// appending PROF_1 to worker-2 opens its paths.
func TestSeedWalkthrough(t *testing.T) {
	w := world(t, walkthrough.Options{PoolArgs: []string{"--nat-outgoing"}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := w.Seed(ctx); err != nil {
		t.Fatal(err)
	}
	checks, err := w.SeedChecks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range checks {
		if !c.OK() {
			t.Errorf("%s: %s -> %s: expected reach=%v, got %v (%s)", c.What, c.From, c.To, c.Expect, c.Got, c.Detail)
		}
	}
	// The node reports its Established BGP session to the other host.
	var out string
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		var err error
		if out, err = w.Ctl(ctx, w.Hosts[0], "status"); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, "10.0.0.2") && strings.Contains(out, "Established") && strings.Contains(out, "2 endpoints") {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Errorf("status on host1 does not show an established session to host2 and 2 endpoints:\n%s", out)
}
