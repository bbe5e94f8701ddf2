// Package e2e runs calicoctl and calico-node on namespace hosts with a real
// etcd, real BGP sessions and the real kernel, and asserts on packets, routes
// and datastore contents.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/walkthrough"
)

var binDir string

func TestMain(m *testing.M) {
	binDir = os.Getenv("CALICO_BIN")
	cleanup := func() {}
	if binDir == "" {
		dir, err := os.MkdirTemp("", "calico-e2e-bin")
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
	// Leftovers of an earlier run that was killed outright.
	walkthrough.Down("ce2e")
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// world builds the two hosts, datastore and nodes, removed when the test ends.
func world(t *testing.T, o walkthrough.Options) *walkthrough.World {
	t.Helper()
	o.Bin, o.Prefix = binDir, "ce2e"
	o.Progress = testWriter{t}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w, err := walkthrough.Build(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, w)
		}
		w.Close()
	})
	return w
}

// dumpLogs shows the agents' logs when a test fails, which is where the cause is.
func dumpLogs(t *testing.T, w *walkthrough.World) {
	logs, _ := filepath.Glob(filepath.Join(w.StateDir, "log", "calico", "*", "calico-node.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		lines := strings.Split(string(b), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		t.Logf("--- %s\n%s", l, strings.Join(lines, "\n"))
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
