package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/docker/dockertest"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// podmanImage is the busybox-static test image, imported into each host's
// podman storage.
const podmanImage = "localhost/calico-go-test/busybox:1"

// podman is a podman of its own on one lab host: its storage, run
// directory and CNI configuration under dir, its CNI plugins run in the
// host's namespace (nsenter, not `ip netns exec`, which remounts /sys and
// loses the cgroup mounts), with the flags MACHINE-NOTES gives for this
// machine.
type podman struct {
	host  *lab.Host
	dir   string
	flags []string
	env   []string
}

// podmanConflist is the calico network name as the README gives it, with
// the portmap plugin chained for -p.
func podmanConflist(name, etcd string) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {"type": "calico", "etcd_endpoints": "http://%s", "ipam": {"type": "calico-ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
  ]
}`, name, etcd)
}

// newPodman sets up podman on h with the networks given (name -> conflist)
// and the test image; everything is removed when the test ends.
func newPodman(t *testing.T, ctx context.Context, h *lab.Host, networks map[string]string) *podman {
	t.Helper()
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman is not installed (scripts/install-deps.sh installs it)")
	}
	dir, err := os.MkdirTemp("", "calico-podman-"+h.Label+"-")
	if err != nil {
		t.Fatal(err)
	}
	p := &podman{host: h, dir: dir}
	t.Cleanup(func() {
		p.run(context.Background(), "rm", "--all", "--force", "--time", "0")
		os.RemoveAll(dir)
	})
	confDir := filepath.Join(dir, "net.d")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, conf := range networks {
		if err := os.WriteFile(filepath.Join(confDir, "10-"+name+".conflist"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The plugins: ours first, then Debian's (portmap, loopback).
	conf := fmt.Sprintf("[network]\ncni_plugin_dirs = [%q, \"/usr/lib/cni\"]\n", pluginDir)
	if err := os.WriteFile(filepath.Join(dir, "containers.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p.env = append(os.Environ(), "CONTAINERS_CONF="+filepath.Join(dir, "containers.conf"))
	p.flags = []string{
		"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"), "--tmpdir", filepath.Join(dir, "tmp"),
		"--storage-driver", "vfs", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
		"--network-backend", "cni", "--cni-config-dir", confDir,
	}
	rootfs, err := dockertest.BuildRootfs()
	if err != nil {
		t.Fatal(err)
	}
	cmd := p.cmd(ctx, "import", "--change", `CMD ["/bin/sh"]`, "--change", "ENV PATH=/bin:/sbin", "-", podmanImage)
	cmd.Stdin = bytes.NewReader(rootfs)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("podman import: %v: %s", err, out)
	}
	return p
}

func (p *podman) cmd(ctx context.Context, args ...string) *exec.Cmd {
	argv := append([]string{"--net=" + p.host.Path, "podman"}, p.flags...)
	cmd := exec.CommandContext(ctx, "nsenter", append(argv, args...)...)
	cmd.Env = p.env
	return cmd
}

// run runs podman with args on the host and returns its trimmed output.
func (p *podman) run(ctx context.Context, args ...string) (string, error) {
	out, err := p.cmd(ctx, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: podman %s: %v: %s", p.host.Label, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return strings.TrimSpace(string(out)), nil
}

func (p *podman) must(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	out, err := p.run(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ulimits: podman otherwise raises hard limits, which this sandbox refuses.
var ulimits = []string{"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"}

// start runs a container named name on network with extra run flags and
// command, and returns its address there.
func (p *podman) start(t *testing.T, ctx context.Context, name, network string, extra []string, command ...string) netip.Addr {
	t.Helper()
	args := append([]string{"run", "-d", "--name", name, "--network", network}, ulimits...)
	args = append(append(append(args, extra...), podmanImage), command...)
	p.must(t, ctx, args...)
	out := p.must(t, ctx, "inspect", "--format", "{{json .NetworkSettings.Networks}}", name)
	var nets map[string]struct{ IPAddress string }
	if err := json.Unmarshal([]byte(out), &nets); err != nil {
		t.Fatalf("podman inspect %s: %v: %s", name, err, out)
	}
	a, err := netip.ParseAddr(nets[network].IPAddress)
	if err != nil {
		t.Fatalf("podman inspect %s: no address on %s: %s", name, network, out)
	}
	return a
}

// pings says whether container name on p reaches dst.
func (p *podman) pings(ctx context.Context, name string, dst netip.Addr) bool {
	_, err := p.run(ctx, "exec", name, "ping", "-c", "1", "-W", "1", dst.String())
	return err == nil
}

// TestPodman runs podman with the CNI backend and a calico network on two
// lab hosts, as the README shows: containers of one network reach each
// other across hosts, a network with another profile does not, -p
// publishes a port reachable from the outside namespace, and podman rm -f
// releases the address.
func TestPodman(t *testing.T) {
	w := world(t)
	ctx := e2etest.Ctx(t, 5*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	networks := map[string]string{"net1": podmanConflist("net1", w.Etcd), "net2": podmanConflist("net2", w.Etcd)}
	p1, p2 := newPodman(t, ctx, h1, networks), newPodman(t, ctx, h2, networks)

	start := time.Now()
	a1 := p1.start(t, ctx, "web", "net1", []string{"-p", "8080:80"}, "httpd", "-f", "-p", "80", "-h", "/")
	t.Logf("FIGURE: podman run (create, CNI ADD, start) took %s", time.Since(start).Round(time.Millisecond))
	a2 := p2.start(t, ctx, "client", "net1", nil, "sleep", "600")
	if !netip.MustParsePrefix(walkthrough.Pool).Contains(a1) || !netip.MustParsePrefix(walkthrough.Pool).Contains(a2) {
		t.Errorf("podman's containers got %s and %s, outside the pool %s", a1, a2, walkthrough.Pool)
	}
	a3 := p2.start(t, ctx, "other", "net2", nil, "sleep", "600")

	out, err := w.Ctl(ctx, h1, "endpoint", "show")
	if err != nil || strings.Count(out, ".eth0") != 3 || !strings.Contains(out, "net2") {
		t.Errorf("endpoint show does not list the three containers: %v\n%s", err, out)
	}

	e2etest.WaitFor(t, 30*time.Second, "client (host2, net1) reaches web (host1, net1)", func() (bool, string) {
		return p2.pings(ctx, "client", a1), "no ping reply"
	})
	// Honest traffic within net2 flows, so the silence below is policy.
	a4 := p1.start(t, ctx, "other2", "net2", nil, "sleep", "600")
	e2etest.WaitFor(t, 30*time.Second, "other (host2, net2) reaches other2 (host1, net2)", func() (bool, string) {
		return p2.pings(ctx, "other", a4), "no ping reply"
	})
	if p2.pings(ctx, "other", a1) || p1.pings(ctx, "web", a3) {
		t.Errorf("net2's container and net1's reach each other (%s <-> %s); their profiles differ", a3, a1)
	}

	// -p 8080:80 through portmap: the outside namespace reaches web's
	// httpd at host1:8080 once the profile lets port 80 in.
	if _, err := w.Ctl(ctx, h1, "profile", "net1", "rule", "add", "inbound", "allow", "tcp", "to", "ports", "80"); err != nil {
		t.Fatal(err)
	}
	hp := netip.AddrPortFrom(h1.Addr(), 8080)
	e2etest.WaitFor(t, 30*time.Second, "the outside reaches web through -p 8080:80", func() (bool, string) {
		err := lab.TCPConnect(ctx, w.Outside.Netns, hp, 2*time.Second)
		return err == nil, fmt.Sprint(err)
	})

	// podman rm -f: DEL releases the address and the interface.
	p1.must(t, ctx, "rm", "--force", "--time", "0", "web")
	if out, err := w.Ctl(ctx, h1, "ipam", "info", a1.String()); err != nil || !strings.Contains(out, "false") {
		t.Errorf("after podman rm -f, %s is still assigned: %v\n%s", a1, err, out)
	}
	if out, err := w.Ctl(ctx, h1, "endpoint", "show"); err != nil || strings.Contains(out, a1.String()+"/") {
		t.Errorf("after podman rm -f the endpoint remains: %v\n%s", err, out)
	}
	if err := lab.TCPConnect(ctx, w.Outside.Netns, hp, 2*time.Second); err == nil {
		t.Errorf("host1:8080 still answers after podman rm -f")
	}
}
