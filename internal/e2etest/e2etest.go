// Package e2etest is what the end-to-end test packages (test/...) share:
// the binaries under test, a TestMain, and the agents' logs on failure.
package e2etest

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

// BinDir holds calicoctl, calico-node and calico-datastore: $CALICO_BIN (make test sets it
// to bin/), else a build made for this run.
var BinDir string

// Main runs a test package: it finds or builds the binaries, removes what
// an earlier run of the package that was killed outright left behind
// (labs with prefix), runs setup, then the tests, and exits.
func Main(m *testing.M, prefix string, setup func() error) {
	BinDir = os.Getenv("CALICO_BIN")
	cleanup := func() {}
	if BinDir == "" {
		dir, err := os.MkdirTemp("", "calico-test-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		cleanup = func() { os.RemoveAll(dir) }
		// Test packages live in test/NAME, two levels below the module.
		cmd := exec.Command("go", "build", "-o", dir+"/", "../../cmd/calicoctl", "../../cmd/calico-node", "../../cmd/calico-datastore")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			cleanup()
			fmt.Fprintln(os.Stderr, "build:", err)
			os.Exit(1)
		}
		BinDir = dir
	}
	walkthrough.Down(prefix)
	if setup != nil {
		if err := setup(); err != nil {
			cleanup()
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// DumpLogs shows the last lines of every agent's log of w: when a test
// fails, that is where the cause is.
func DumpLogs(t testing.TB, w *walkthrough.World, lines int) {
	logs, _ := filepath.Glob(filepath.Join(w.StateDir, "log", "calico", "*", "calico-node.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		ls := strings.Split(string(b), "\n")
		if len(ls) > lines {
			ls = ls[len(ls)-lines:]
		}
		t.Logf("--- %s\n%s", l, strings.Join(ls, "\n"))
	}
}

// Writer sends progress lines to the test log.
type Writer struct{ T testing.TB }

func (w Writer) Write(p []byte) (int, error) {
	w.T.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// World builds a walkthrough world for a test with prefix (o.Bin and
// o.Progress filled in), and with seed also the seed's configuration (pool,
// workers 1-3, PROF_1 = workers 1 and 3, PROF_2 = worker 2). It is removed
// when the test ends, after the agents' logs are shown if the test failed.
func World(t testing.TB, prefix string, o walkthrough.Options, seed bool) *walkthrough.World {
	t.Helper()
	o.Bin, o.Prefix = BinDir, prefix
	o.Progress = Writer{T: t}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w, err := walkthrough.Build(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			DumpLogs(t, w, 60)
		}
		w.Close()
	})
	if seed {
		if err := w.Seed(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return w
}
