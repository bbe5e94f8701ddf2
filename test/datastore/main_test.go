// Package dstest proves the datastore and IPAM promises end to end, with
// real processes: a multi-member etcd cluster that loses a member, IPAM
// under contention from many clients, etcd with TLS client certificates,
// hostile input to calicoctl and hostile records straight into etcd under a
// running agent, and BIRD as a foreign BGP router. Each test logs its
// figures as "FIGURE: ..." lines.
//
// It needs root (network namespaces) and fails without it. Lab names start
// with "cds".
package dstest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/daemon"
	"github.com/calico-go/calico/internal/lab"
)

// labPrefix names every lab of this package.
const labPrefix = "cds"

// binDir holds calicoctl, calico-node and calico-datastore.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "test/datastore: must run as root (it makes network namespaces); CI runs it as root")
		return 1
	}
	if err := lab.Require("ip", "nft", "ping", "bird", "birdc"); err != nil {
		fmt.Fprintln(os.Stderr, "test/datastore:", err)
		return 1
	}
	sweepStateDirs()
	if err := lab.Sweep(labPrefix); err != nil {
		fmt.Fprintln(os.Stderr, "test/datastore: sweeping old labs:", err)
	}
	if dir := os.Getenv("CALICO_BIN"); dir != "" {
		binDir = dir
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "calico-cds-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
		"github.com/calico-go/calico/cmd/calicoctl", "github.com/calico-go/calico/cmd/calico-node", "github.com/calico-go/calico/cmd/calico-datastore")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "test/datastore: building calicoctl and calico-node:", err)
		return 1
	}
	binDir = dir
	return m.Run()
}

// stateDirGlob matches the state directories this package makes: each
// holds an owner file with the test process's pid, and the pid files of the
// daemons (etcd members, calico-nodes) started there.
const stateDirGlob = "calico-cds-state-*"

// newStateDir makes a state directory, stopping its daemons and removing it
// when the test ends.
func newStateDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", strings.TrimSuffix(stateDirGlob, "*"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "owner"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stopDaemons(dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing %s: %v", dir, err)
		}
	})
	return dir
}

// sweepStateDirs cleans up after runs that were killed outright: daemons of
// state directories whose owner is dead are stopped (by their pid files)
// and the directories removed.
func sweepStateDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), stateDirGlob))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "owner"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		stopDaemons(d)
		os.RemoveAll(d)
	}
}

// stopDaemons stops every daemon with a pid file under dir: agents first,
// so they do not spend their last seconds on a dead datastore.
func stopDaemons(dir string) {
	var pidFiles []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && strings.HasSuffix(p, ".pid") {
			pidFiles = append(pidFiles, p)
		}
		return nil
	})
	for _, etcd := range []bool{false, true} {
		for _, p := range pidFiles {
			if strings.HasSuffix(p, "etcd.pid") == etcd {
				daemon.Stop(p, 10*time.Second)
			}
		}
	}
}
