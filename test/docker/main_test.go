// Package docker runs the Docker walkthroughs against real engines: the
// machine's running engine is host 1's, and a second dockerd started inside
// host 2's network namespace is host 2's. calico-node runs in each host's
// namespace with --libnetwork; containers on the two engines talk across
// the lab's fabric.
package docker

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/dockertest"
	"github.com/calico-go/calico/internal/walkthrough"
)

const prefix = "cdkr"

var binDir string

func TestMain(m *testing.M) {
	binDir = os.Getenv("CALICO_BIN")
	cleanup := func() {}
	if binDir == "" {
		dir, err := os.MkdirTemp("", "calico-docker-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		cleanup = func() { os.RemoveAll(dir) }
		cmd := exec.Command("go", "build", "-o", dir+"/", "../../cmd/calicoctl", "../../cmd/calico-node")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			cleanup()
			fmt.Fprintln(os.Stderr, "build:", err)
			os.Exit(1)
		}
		binDir = dir
	}
	walkthrough.Down(prefix)
	dockertest.Sweep() // second engines whose test process died
	// The machine's engine must answer: these tests never skip (CI runs
	// scripts/ensure-docker.sh first).
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	err := dockertest.EnsureImage(ctx, "", dockertest.DefaultImage)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "the machine's Docker engine is needed:", err)
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}
