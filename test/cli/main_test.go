// Package cli is an end-to-end test of the calicoctl control plane: each
// test starts a real etcd with `calicoctl datastore start`, drives calicoctl
// as a subprocess, and checks what it printed and what it stored.
package cli

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// binDir holds calicoctl and calico-node for the whole package.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if dir := os.Getenv("CALICO_BIN"); dir != "" && haveBinaries(dir) {
		binDir = dir
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "calicoctl-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "cli tests:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
		"github.com/calico-go/calico/cmd/calicoctl",
		"github.com/calico-go/calico/cmd/calico-node",
		"github.com/calico-go/calico/cmd/calico-datastore")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "cli tests: building calicoctl and calico-node:", err)
		return 1
	}
	binDir = dir
	return m.Run()
}

func haveBinaries(dir string) bool {
	for _, b := range []string{"calicoctl", "calico-node", "calico-datastore"} {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.IsDir() {
			return false
		}
	}
	return true
}
