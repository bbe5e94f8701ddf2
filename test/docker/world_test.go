package docker

import (
	"context"
	"fmt"
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

// dockerWorld is the walkthrough's two hosts, each with an engine.
type dockerWorld struct {
	*walkthrough.World
	engines map[string]*dockertest.Client // by host label
	second  *dockertest.Engine
	run     string // unique per run: container and network names carry it
}

// newDockerWorld builds the hosts, starting the second engine inside host 2
// just before its node, and the nodes with --libnetwork.
func newDockerWorld(t *testing.T) *dockerWorld {
	t.Helper()
	machine, err := dockertest.NewClient("")
	if err != nil {
		t.Fatal(err)
	}
	dw := &dockerWorld{engines: map[string]*dockertest.Client{}, run: fmt.Sprintf("%x", time.Now().UnixNano()&0xffffff)}
	requireNoOtherPlugin(t)
	o := walkthrough.Options{
		Bin: e2etest.BinDir, Prefix: prefix, Progress: e2etest.Writer{T: t},
		IPv6: true, // hosts fd00::N, nodes with --ip6, for IPv6 networks
		HostNodeArgs: func(ctx context.Context, h *lab.Host) ([]string, error) {
			if h.Label == "host1" {
				dw.engines["host1"] = machine
				return []string{"--libnetwork"}, nil
			}
			// As a real host's engine: it manages iptables and turns on
			// forwarding, setting the FORWARD policy to DROP.
			e, err := dockertest.Start(ctx, dockertest.EngineOptions{NetnsPath: h.Path, Name: "h2-" + dw.run, IPForward: true, Args: []string{"--iptables=true"}})
			if err != nil {
				return nil, err
			}
			dw.second = e
			if err := e.EnsureImage(ctx, dockertest.DefaultImage); err != nil {
				return nil, err
			}
			dw.engines[h.Label] = e.Client
			return []string{"--libnetwork", "--docker-host=" + e.Host, "--plugin-dir=" + e.PluginDir}, nil
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	w, err := walkthrough.Build(ctx, o)
	if err != nil {
		if dw.second != nil {
			dw.second.Stop()
		}
		t.Fatal(err)
	}
	dw.World = w
	t.Cleanup(func() {
		if t.Failed() {
			e2etest.DumpLogs(t, w, 60)
		}
		// Containers and networks first, while the drivers still answer;
		// then the agents; then the second engine.
		dw.removeOurs(t)
		w.Close()
		if dw.second != nil {
			if err := dw.second.Stop(); err != nil {
				t.Errorf("stop second engine: %v", err)
			}
		}
	})
	if _, err := w.Ctl(ctx, w.Hosts[0], "pool", "add", walkthrough.Pool); err != nil {
		t.Fatal(err)
	}
	for _, h := range w.Hosts {
		waitFor(t, 30*time.Second, "plugin sockets of "+h.Label, func() error { return dw.pluginsUp(h.Label) })
	}
	return dw
}

func (dw *dockerWorld) pluginsUp(host string) error {
	dir := "/run/docker/plugins"
	if host != "host1" {
		dir = dw.second.PluginDir
	}
	for _, s := range []string{"calico.sock", "calico-ipam.sock"} {
		if _, err := os.Stat(filepath.Join(dir, s)); err != nil {
			return err
		}
	}
	return nil
}

// requireNoOtherPlugin fails when another calico plugin serves the machine's
// engine: a second driver of the same name cannot be started beside it.
func requireNoOtherPlugin(t *testing.T) {
	for _, s := range []string{"calico.sock", "calico-ipam.sock"} {
		p := filepath.Join("/run/docker/plugins", s)
		if _, err := os.Stat(p); err == nil {
			t.Logf("note: %s exists (a stale socket is taken over; a live one fails the node start)", p)
		}
	}
}

// name makes a container or network name unique to this run.
func (dw *dockerWorld) name(s string) string { return prefix + "-" + dw.run + "-" + s }

// docker runs the docker CLI against host's engine, as a user there would.
func (dw *dockerWorld) docker(t *testing.T, host string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := dw.engines[host].CLI(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// dockerErr runs the docker CLI and returns its error.
func (dw *dockerWorld) dockerErr(host string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return dw.engines[host].CLI(ctx, args...)
}

// ctl runs calicoctl on host with its engine as DOCKER_HOST.
func (dw *dockerWorld) ctl(t *testing.T, host string, args ...string) (string, error) {
	if t != nil {
		t.Helper()
	}
	h := dw.Host(host)
	argv := append([]string{"env",
		"ETCD_AUTHORITY=" + dw.Etcd,
		"CALICO_NODENAME=" + host,
		"CALICO_STATE_DIR=" + dw.StateDir,
		"DOCKER_HOST=" + dw.engines[host].Host,
		filepath.Join(e2etest.BinDir, "calicoctl")}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := h.Run(ctx, argv...)
	return strings.TrimSpace(out), err
}

func (dw *dockerWorld) mustCtl(t *testing.T, host string, args ...string) string {
	t.Helper()
	out, err := dw.ctl(t, host, args...)
	if err != nil {
		t.Fatalf("%s: calicoctl %s: %v: %s", host, strings.Join(args, " "), err, out)
	}
	return out
}

// pid is a running container's process id on host's engine.
func (dw *dockerWorld) pid(t *testing.T, host, ctr string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ci, err := dw.engines[host].Inspect(ctx, ctr)
	if err != nil {
		t.Fatal(err)
	}
	if !ci.Running {
		t.Fatalf("container %s on %s is not running", ctr, host)
	}
	return ci.Pid
}

// inCtr runs a host binary inside a container's network namespace.
func (dw *dockerWorld) inCtr(t *testing.T, host, ctr string, argv ...string) (string, error) {
	t.Helper()
	ns := fmt.Sprintf("--net=/proc/%d/ns/net", dw.pid(t, host, ctr))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nsenter", append([]string{ns, "--"}, argv...)...).CombinedOutput()
	return string(out), err
}

// ping tells whether ctr on host reaches ip (two tries of one second).
func (dw *dockerWorld) ping(t *testing.T, host, ctr, ip string) bool {
	t.Helper()
	_, err := dw.inCtr(t, host, ctr, "ping", "-c", "2", "-i", "0.2", "-W", "1", "-q", ip)
	return err == nil
}

// expectReach asserts ctr reaches ip (allowing the network a few seconds to
// converge) or, with want false, that it does not.
func (dw *dockerWorld) expectReach(t *testing.T, host, ctr, ip string, want bool) {
	t.Helper()
	if !want {
		if dw.ping(t, host, ctr, ip) {
			t.Errorf("%s on %s reaches %s; it must not", ctr, host, ip)
		}
		return
	}
	deadline := time.Now().Add(15 * time.Second)
	for !dw.ping(t, host, ctr, ip) {
		if time.Now().After(deadline) {
			t.Errorf("%s on %s does not reach %s", ctr, host, ip)
			return
		}
	}
}

// ipOn is the container's address on a network, from the engine.
func (dw *dockerWorld) ipOn(t *testing.T, host, ctr, network string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ci, err := dw.engines[host].Inspect(ctx, ctr)
	if err != nil {
		t.Fatal(err)
	}
	ep, ok := ci.Networks[network]
	if !ok || ep.IPAddress == "" {
		t.Fatalf("container %s has no address on network %s (networks: %v)", ctr, network, ci.Networks)
	}
	return ep.IPAddress
}

// removeOurs removes this run's containers and networks from both engines.
func (dw *dockerWorld) removeOurs(t *testing.T) {
	for host, c := range dw.engines {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		out, _ := c.CLI(ctx, "ps", "-aq", "--filter", "name="+prefix+"-"+dw.run)
		for _, id := range strings.Fields(out) {
			if _, err := c.CLI(ctx, "rm", "-f", id); err != nil {
				t.Errorf("%s: remove container %s: %v", host, id, err)
			}
		}
		out, _ = c.CLI(ctx, "network", "ls", "-q", "--filter", "name="+prefix+"-"+dw.run)
		for _, id := range strings.Fields(out) {
			if _, err := c.CLI(ctx, "network", "rm", id); err != nil {
				t.Errorf("%s: remove network %s: %v", host, id, err)
			}
		}
		cancel()
	}
}

func waitFor(t *testing.T, d time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s: %v", d, what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// agentLog is host's calico-node log so far.
func (dw *dockerWorld) agentLog(host string) string {
	b, _ := os.ReadFile(filepath.Join(dw.StateDir, "log", "calico", host, "calico-node.log"))
	return string(b)
}
