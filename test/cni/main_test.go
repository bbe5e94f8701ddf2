// Package cni drives the calico CNI plugins (cmd/calico, cmd/calico-ipam)
// on the namespace lab with real etcd, agents and kernel: through libcni,
// as a runtime does (the spec's cases), and through podman and containerd
// from Debian's packages where they are installed.
package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// labPrefix names every namespace these tests make.
const labPrefix = "ccni"

// pluginDir holds calico and calico-ipam: $CALICO_BIN when it has them
// (make build puts them there), else a build made for this run.
var pluginDir string

func TestMain(m *testing.M) {
	e2etest.Main(m, labPrefix, func() error {
		pluginDir = e2etest.BinDir
		if _, err := os.Stat(filepath.Join(pluginDir, "calico")); err == nil {
			if _, err := os.Stat(filepath.Join(pluginDir, "calico-ipam")); err == nil {
				return nil
			}
		}
		dir, err := os.MkdirTemp("", "calico-cni-bin")
		if err != nil {
			return err
		}
		cmd := exec.Command("go", "build", "-o", dir+"/", "../../cmd/calico", "../../cmd/calico-ipam")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building the plugins: %w", err)
		}
		pluginDir = dir // left in /tmp: TestMain exits without a hook after m.Run
		return nil
	})
}

func world(t *testing.T) *walkthrough.World {
	t.Helper()
	w := e2etest.World(t, labPrefix, walkthrough.Options{}, false)
	ctx := e2etest.Ctx(t, time.Minute)
	if _, err := w.Ctl(ctx, w.Hosts[0], "pool", "add", walkthrough.Pool); err != nil {
		t.Fatal(err)
	}
	waitCNIServed(t, w)
	return w
}

// waitCNIServed waits until every host's agent serves the CNI socket (it
// starts once the node record is there, a moment after `calicoctl node`
// returns): before that the plugin rightly runs the full plugin itself,
// and the tests that count which way calls went would see it.
func waitCNIServed(t *testing.T, w *walkthrough.World) {
	t.Helper()
	if os.Getenv("CALICO_CNI_SOCKET") == "none" {
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, h := range w.Hosts {
		logf := filepath.Join(w.StateDir, "log", "calico", h.Label, "calico-node.log")
		for {
			b, _ := os.ReadFile(logf)
			if strings.Contains(string(b), `msg="serving the CNI plugin"`) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the agent does not serve the CNI socket after 30s (see %s)", h.Label, logf)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// runtime is libcni driving the plugins on host h.
func runtime(t *testing.T, h *lab.Host) *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir([]string{pluginDir}, t.TempDir(), lab.CNIExec{Host: h})
}

// conflist is a calico network named name reaching the world's datastore
// at etcd (host:port), with extra fields in the calico plugin's entry.
func conflist(t *testing.T, name, etcd string, extra map[string]any) *libcni.NetworkConfigList {
	t.Helper()
	plugin := map[string]any{"type": "calico", "etcd_endpoints": "http://" + etcd, "ipam": map[string]any{"type": "calico-ipam"}}
	for k, v := range extra {
		plugin[k] = v
	}
	b, err := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": name, "plugins": []any{plugin}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// cniCode is err's CNI error code, or -1.
func cniCode(err error) int {
	var te *types.Error
	if errors.As(err, &te) {
		return int(te.Code)
	}
	return -1
}
