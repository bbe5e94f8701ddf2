// Package docker runs the Docker walkthroughs against real engines: the
// machine's running engine is host 1's, and a second dockerd started inside
// host 2's network namespace is host 2's. calico-node runs in each host's
// namespace with --libnetwork; containers on the two engines talk across
// the lab's fabric.
package docker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/docker/dockertest"
	"github.com/calico-go/calico/internal/e2etest"
)

const prefix = "cdkr"

func TestMain(m *testing.M) {
	e2etest.Main(m, prefix, func() error {
		dockertest.Sweep() // second engines whose test process died
		rootBefore = rootState()
		// The machine's engine must answer: these tests never skip (make
		// test runs scripts/ensure-docker.sh first).
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := dockertest.EnsureImage(ctx, "", dockertest.DefaultImage); err != nil {
			return fmt.Errorf("the machine's Docker engine is needed: %w", err)
		}
		return nil
	})
}
