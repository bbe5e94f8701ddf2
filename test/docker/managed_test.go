package docker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/docker/dockertest"
)

// TestDockerManagedPlugin: calico as a Docker managed (v2) plugin, made
// from the local build with no registry (`calicoctl node docker-plugin
// DIR`, `docker plugin create`), runs calico-node for host 2 in place of
// the legacy socket plugin. Its containers get addresses from calico's
// IPAM, reach each other, and reach a container on the same network on
// host 1 (served by the legacy plugin) across the fabric.
func TestDockerManagedPlugin(t *testing.T) {
	dw := newDockerWorld(t)
	h1, h2 := "host1", "host2"
	img := dockertest.DefaultImage
	// The managed plugin is host 2's agent: the legacy one goes, with its
	// sockets, so only the plugin answers to the driver name calico.
	dw.mustCtl(t, h2, "node", "stop", "--cleanup", "--plugin-dir", dw.second.PluginDir)

	bundle := filepath.Join(t.TempDir(), "calico-plugin")
	t.Logf("%s", dw.mustCtl(t, h2, "node", "docker-plugin", bundle))
	plugin := "calico"
	net := dw.name("netM")
	m1, m2, r1 := dw.name("m1"), dw.name("m2"), dw.name("r1")
	t.Cleanup(func() {
		// Before the world's cleanup: the plugin must still answer while
		// its containers and network go.
		for _, c := range []string{m1, m2} {
			dw.dockerErr(h2, "rm", "-f", c)
		}
		dw.dockerErr(h2, "network", "rm", net)
		if out, err := dw.dockerErr(h2, "plugin", "disable", "-f", plugin); err != nil {
			t.Logf("plugin disable: %v: %s", err, out)
		}
		if out, err := dw.dockerErr(h2, "plugin", "rm", "-f", plugin); err != nil {
			t.Errorf("plugin rm: %v: %s", err, out)
		}
	})
	begin := time.Now()
	dw.docker(t, h2, "plugin", "create", plugin, bundle)
	created := time.Since(begin)
	dw.docker(t, h2, "plugin", "set", plugin,
		"ETCD_ENDPOINTS=http://"+dw.Etcd, "CALICO_IP="+dw.Host(h2).Addr().String(), "CALICO_IP6=fd00::2",
		"CALICO_NODENAME="+h2, "docker-sock.source="+strings.TrimPrefix(dw.second.Host, "unix://"))
	begin = time.Now()
	if out, err := dw.dockerErr(h2, "plugin", "enable", plugin); err != nil {
		t.Fatalf("docker plugin enable: %v: %s\nengine log: %s", err, out, dw.engineLogTail(40))
	}
	enabled := time.Since(begin)
	waitFor(t, 30*time.Second, "host2's agent (the plugin) ready", func() error {
		out, err := dw.ctl(t, h2, "status")
		if err != nil || !strings.Contains(out, "is ready") {
			return errString(out)
		}
		return nil
	})
	t.Logf("FIGURE: managed plugin: docker plugin create %.2f s, enable %.2f s (bundle: static calico-node, config.json)", created.Seconds(), enabled.Seconds())

	// The engine finds a managed plugin's driver by its full name.
	dw.docker(t, h2, "network", "create", "--driver", plugin+":latest", "--ipam-driver", plugin+":latest", "--subnet=192.168.44.0/24", net)
	driver := dw.docker(t, h2, "network", "inspect", "-f", "{{.Driver}}", net)
	t.Logf("the engine names the network's driver %q", driver)
	dw.docker(t, h2, "run", "--net", net, "--name", m1, "-tid", img)
	dw.docker(t, h2, "run", "--net", net, "--name", m2, "-tid", img)
	ip1, ip2 := dw.ipOn(t, h2, m1, net), dw.ipOn(t, h2, m2, net)
	for _, ip := range []string{ip1, ip2} {
		if !strings.HasPrefix(ip, "192.168.44.") {
			t.Errorf("address %s is not from the network's pool 192.168.44.0/24", ip)
		}
	}
	if out := dw.mustCtl(t, h1, "endpoint", "show"); !strings.Contains(out, m1) {
		t.Errorf("calicoctl endpoint show lacks %s (the plugin's endpoint):\n%s", m1, out)
	}
	dw.expectReach(t, h2, m1, ip2, true)

	// The same network on host 1 (legacy plugin): one pool, one profile.
	dw.docker(t, h1, "network", "create", "--driver=calico", "--ipam-driver=calico-ipam", "--subnet=192.168.44.0/24", net)
	dw.docker(t, h1, "run", "--net", net, "--name", r1, "-tid", img)
	rip := dw.ipOn(t, h1, r1, net)
	dw.expectReach(t, h2, m2, rip, true)
	dw.expectReach(t, h1, r1, ip1, true)

	// A restart of the plugin keeps its containers' endpoints (the agent
	// reconciles against the engine's networks of its driver name).
	dw.docker(t, h2, "plugin", "disable", "-f", plugin)
	dw.docker(t, h2, "plugin", "enable", plugin)
	waitFor(t, 30*time.Second, "endpoint of "+m1+" after the plugin's restart", func() error {
		if out, err := dw.ctl(t, h1, "endpoint", "show"); err != nil || !strings.Contains(out, m1) {
			return errString("no endpoint of " + m1)
		}
		return nil
	})
	dw.expectReach(t, h1, r1, ip1, true)
	dw.docker(t, h1, "rm", "-f", r1)
	dw.docker(t, h1, "network", "rm", net)
}

// engineLogTail is the last n lines of the second engine's log.
func (dw *dockerWorld) engineLogTail(n int) string {
	b, _ := os.ReadFile(dw.second.LogPath)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
