package cni

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/docker/dockertest"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
)

// ctrImage is the busybox-static test image in the private containerd.
const ctrImage = "docker.io/calico-go-test/busybox:1"

// containerd is a private containerd (its own root, state, socket and
// /opt, the CRI plugin off) whose ctr runs on one lab host. `ctr run
// --cni` reads /etc/cni/net.d and /opt/cni/bin: each ctr runs in a mount
// namespace of its own where the test's directories are mounted there,
// so the machine's are never touched.
type containerd struct {
	host    *lab.Host
	dir     string
	sock    string
	confDir string
	binDir  string
}

func newContainerd(t *testing.T, ctx context.Context, h *lab.Host, conflist string) *containerd {
	t.Helper()
	for _, b := range []string{"containerd", "ctr", "containerd-shim-runc-v2", "runc", "unshare"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s is not installed (scripts/install-deps.sh installs containerd)", b)
		}
	}
	if _, err := os.Stat("/etc/cni/net.d"); err != nil {
		t.Skip("/etc/cni/net.d is missing (installing podman or containernetworking-plugins makes it)")
	}
	dir, err := os.MkdirTemp("", "calico-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &containerd{host: h, dir: dir, sock: filepath.Join(dir, "c.sock"), confDir: filepath.Join(dir, "net.d"), binDir: filepath.Join(dir, "bin")}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, d := range []string{c.confDir, c.binDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(c.confDir, "10-calico.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{"calico": filepath.Join(pluginDir, "calico"), "calico-ipam": filepath.Join(pluginDir, "calico-ipam"),
		"portmap": "/usr/lib/cni/portmap", "loopback": "/usr/lib/cni/loopback"}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(c.binDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, c.sock+".ttrpc", filepath.Join(dir, "debug.sock"), filepath.Join(dir, "opt"))
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	d := exec.Command("nsenter", "--net="+h.Path, "containerd", "--config", filepath.Join(dir, "config.toml"))
	d.Stdout, d.Stderr = log, log
	d.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Containers first (their shims exit with them), then the daemon.
		bg := context.Background()
		out, _ := c.ctr(bg, "task", "ls", "-q")
		for _, id := range strings.Fields(out) {
			c.ctr(bg, "task", "kill", "-s", "KILL", id)
			c.ctr(bg, "task", "delete", "-f", id)
		}
		out, _ = c.ctr(bg, "container", "ls", "-q")
		for _, id := range strings.Fields(out) {
			c.ctr(bg, "container", "rm", id)
		}
		d.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { d.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			d.Process.Kill()
			<-done
		}
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
			t.Logf("containerd log:\n%s", tail(string(b), 30))
		}
	})
	e2etest.WaitFor(t, 20*time.Second, "containerd answers", func() (bool, string) {
		out, err := c.ctr(ctx, "version")
		return err == nil, out
	})
	rootfs, err := dockertest.BuildRootfs()
	if err != nil {
		t.Fatal(err)
	}
	arch, err := dockerArchive(rootfs, ctrImage)
	if err != nil {
		t.Fatal(err)
	}
	cmd := c.cmd(ctx, "images", "import", "--snapshotter", "native", "-")
	cmd.Stdin = bytes.NewReader(arch)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ctr images import: %v: %s", err, out)
	}
	return c
}

func tail(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// cmd is ctr with args on the host, in a mount namespace of its own with
// the test's CNI configuration and plugins at the paths ctr reads.
func (c *containerd) cmd(ctx context.Context, args ...string) *exec.Cmd {
	script := `set -e
mount -t tmpfs calico-test /opt
mkdir -p /opt/cni/bin
mount --bind "$BIN" /opt/cni/bin
mount --bind "$CONF" /etc/cni/net.d
exec ctr --address "$SOCK" "$@"`
	argv := append([]string{"--net=" + c.host.Path, "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	cmd.Env = append(os.Environ(), "BIN="+c.binDir, "CONF="+c.confDir, "SOCK="+c.sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

func (c *containerd) ctr(ctx context.Context, args ...string) (string, error) {
	out, err := c.cmd(ctx, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// dockerArchive is rootfs (a tar) as a one-layer `docker save` archive,
// which `ctr images import` reads.
func dockerArchive(rootfs []byte, tag string) ([]byte, error) {
	diffID := fmt.Sprintf("sha256:%x", sha256.Sum256(rootfs))
	config, err := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Cmd": []string{"/bin/sh"}, "Env": []string{"PATH=/bin:/sbin"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{diffID}},
	})
	if err != nil {
		return nil, err
	}
	manifest, err := json.Marshal([]map[string]any{{"Config": "config.json", "RepoTags": []string{tag}, "Layers": []string{"layer.tar"}}})
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		data []byte
	}{{"layer.tar", rootfs}, {"config.json", config}, {"manifest.json", manifest}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: time.Unix(0, 0)}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// TestContainerd runs `ctr run --cni` on a lab host with the calico
// conflist: the container gets an endpoint (orchestrator cni), reaches and
// is reached by a workload of its network on the other host, not by one of
// another network, and when its task ends ctr's DEL releases the address.
func TestContainerd(t *testing.T) {
	w := world(t)
	ctx := e2etest.Ctx(t, 4*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	c := newContainerd(t, ctx, h1, podmanConflist("net1", w.Etcd))

	// ctr run in the foreground: it runs DEL when the task exits.
	run := c.cmd(ctx, "run", "--snapshotter", "native", "--cni", "--rm", ctrImage, "c1", "sleep", "600")
	var out bytes.Buffer
	run.Stdout, run.Stderr = &out, &out
	// The container's shim may inherit ctr's output: do not wait for it.
	run.WaitDelay = 2 * time.Second
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed when ctr run returns
	go func() { run.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			syscall.Kill(-run.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	var a1 netip.Addr
	e2etest.WaitFor(t, 30*time.Second, "ctr's container has an endpoint", func() (bool, string) {
		ep, ok := findEndpoint(t, ctx, w, "default-c1.eth0")
		if ok && len(ep.IPv4Nets) == 1 {
			a1 = netip.MustParsePrefix(ep.IPv4Nets[0]).Addr()
			return ep.Orchestrator == "cni" && ep.Node == h1.Label, fmt.Sprintf("%+v", ep)
		}
		return false, "no endpoint default-c1.eth0; ctr says: " + out.String()
	})

	rt2 := runtime(t, h2)
	ns2, _, _ := attach(t, ctx, w, rt2, conflist(t, "net1", w.Etcd, nil), h2, "peer")
	ns3, _, _ := attach(t, ctx, w, rt2, conflist(t, "net2", w.Etcd, nil), h2, "stranger")
	e2etest.WaitFor(t, 30*time.Second, "a net1 workload on host2 reaches ctr's container", func() (bool, string) {
		return lab.Reachable(ctx, ns2, a1), "no ping reply"
	})
	if lab.Reachable(ctx, ns3, a1) {
		t.Errorf("a net2 workload reaches ctr's net1 container %s; their profiles differ", a1)
	}

	// The task ends: ctr runs DEL and removes the container.
	if _, err := c.ctr(ctx, "task", "kill", "-s", "KILL", "c1"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("ctr run did not return after its task was killed: %s", out.String())
	}
	if _, ok := findEndpoint(t, ctx, w, "default-c1.eth0"); ok {
		t.Errorf("the endpoint of ctr's container remains after it ended")
	}
	if out, err := w.Ctl(ctx, h1, "ipam", "info", a1.String()); err != nil || !strings.Contains(out, "false") {
		t.Errorf("after ctr's container ended %s is still assigned: %v\n%s", a1, err, out)
	}
}
