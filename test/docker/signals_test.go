package docker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/docker/dockertest"
)

// TestDockerFailureSignals: what went wrong reaches the user who caused it,
// not only the agent's log. Before, `docker network rm` reported success
// while the network's pool stayed for a CALICO_IP container; a bad
// CALICO_IP left a running, unwired container and one log line; and with
// the agent stopped `docker run --net` waited 15 s and `docker rm` 60 s
// for a plugin socket that was gone.
func TestDockerFailureSignals(t *testing.T) {
	dw := newDockerWorld(t)
	h1, h2 := "host1", "host2"
	img := dockertest.DefaultImage
	start2 := []string{"node", "--ip=" + dw.Host(h2).Addr().String(), "--ip6=fd00::2", "--name=" + h2,
		"--libnetwork", "--docker-host=" + dw.second.Host, "--plugin-dir=" + dw.second.PluginDir}

	t.Run("plugin sockets exist when calicoctl node returns", func(t *testing.T) {
		dw.mustCtl(t, h2, "node", "stop", "--cleanup", "--plugin-dir", dw.second.PluginDir)
		for _, s := range []string{"calico.sock", "calico-ipam.sock"} {
			if _, err := os.Stat(filepath.Join(dw.second.PluginDir, s)); err == nil {
				t.Fatalf("%s stays after node stop --cleanup", s)
			}
		}
		dw.mustCtl(t, h2, start2...)
		for _, s := range []string{"calico.sock", "calico-ipam.sock"} {
			if _, err := os.Stat(filepath.Join(dw.second.PluginDir, s)); err != nil {
				t.Errorf("just after calicoctl node returned: %v", err)
			}
		}
		// And they answer at once: a network made right away works.
		n := dw.name("early")
		dw.docker(t, h2, "network", "create", "--driver=calico", "--ipam-driver=calico-ipam", "--subnet=192.168.42.0/24", n)
		dw.docker(t, h2, "run", "--net", n, "--name", dw.name("early-1"), "-tid", img)
		dw.docker(t, h2, "rm", "-f", dw.name("early-1"))
		dw.docker(t, h2, "network", "rm", n)
	})

	t.Run("docker network rm says its pool stays, and the pool goes with its last user", func(t *testing.T) {
		// On host 2, whose engine's log the test reads.
		n := dw.name("netP")
		dw.docker(t, h2, "network", "create", "--driver=calico", "--ipam-driver=calico-ipam", "--subnet=192.168.41.0/24", n)
		user := dw.name("pool-user")
		dw.docker(t, h2, "run", "--net=none", "-e", "CALICO_IP=192.168.41.7", "--name", user, "-tid", img)
		waitFor(t, 15*time.Second, user+" wired", func() error {
			_, err := dw.endpointIPErr(h2, user)
			return err
		})
		id := dw.docker(t, h2, "network", "inspect", "-f", "{{.Id}}", n)
		// The engine removes the network whatever the driver answers; it
		// logs the driver's error, and calicoctl status shows it.
		dw.docker(t, h2, "network", "rm", n)
		waitFor(t, 10*time.Second, "the engine's log names the pool's user", func() error {
			b, _ := os.ReadFile(dw.second.LogPath)
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "192.168.41.0/24") && strings.Contains(l, user) {
					t.Logf("engine log: %s", l)
					return nil
				}
			}
			return errString("no line naming 192.168.41.0/24 and " + user)
		})
		// The network had no endpoint, so the driver never learnt its
		// name: the status names it by its id.
		want := "problem: pool 192.168.41.0/24 of removed Docker network " + id[:12] + " stays: still used by Docker container \"" + user + "\""
		waitFor(t, 5*time.Second, "calicoctl status names the pool's user", func() error {
			if status := dw.mustCtl(t, h2, "status"); !strings.Contains(status, want) {
				return errString("calicoctl status lacks " + want + ":\n" + status)
			}
			return nil
		})
		if !strings.Contains(dw.mustCtl(t, h2, "pool", "show"), "192.168.41.0/24") {
			t.Fatalf("the pool went while %s uses it", user)
		}
		dw.docker(t, h2, "rm", "-f", user)
		waitFor(t, 20*time.Second, "pool 192.168.41.0/24 gone with its last user", func() error {
			if strings.Contains(dw.mustCtl(t, h2, "pool", "show"), "192.168.41.0/24") {
				return errString("pool stays")
			}
			if strings.Contains(dw.mustCtl(t, h2, "status"), "192.168.41.0/24") {
				return errString("status still names the pool")
			}
			return nil
		})
	})

	t.Run("a bad CALICO_IP is a status problem naming the container", func(t *testing.T) {
		bad := dw.name("bad-ip")
		dw.docker(t, h1, "run", "--net=none", "-e", "CALICO_IP=300.1.1.1", "--name", bad, "-tid", img)
		var status string
		waitFor(t, 15*time.Second, "status problem for "+bad, func() error {
			status = dw.mustCtl(t, h1, "status")
			if !strings.Contains(status, "problem: Docker container "+bad) {
				return errString("no problem line for " + bad)
			}
			return nil
		})
		for _, l := range strings.Split(status, "\n") {
			if strings.Contains(l, bad) {
				t.Logf("calicoctl status: %s", l)
			}
		}
		dw.docker(t, h1, "rm", "-f", bad)
		waitFor(t, 15*time.Second, "problem of removed "+bad+" gone", func() error {
			if strings.Contains(dw.mustCtl(t, h1, "status"), bad) {
				return errString("status still names " + bad)
			}
			return nil
		})
	})

	t.Run("with the agent down the engine fails at once", func(t *testing.T) {
		n := dw.name("netD")
		dw.docker(t, h1, "network", "create", "--driver=calico", "--ipam-driver=calico-ipam", "--subnet=192.168.43.0/24", n)
		old := dw.name("down-old")
		dw.docker(t, h1, "run", "--net", n, "--name", old, "-tid", img)
		dw.mustCtl(t, h1, "node", "stop")
		restarted := false
		defer func() {
			if !restarted {
				dw.ctl(t, h1, "node", "--ip="+dw.Host(h1).Addr().String(), "--ip6=fd00::1", "--name="+h1, "--libnetwork")
			}
		}()
		begin := time.Now()
		out, err := dw.dockerErr(h1, "run", "--net", n, "--name", dw.name("down-new"), "-tid", img)
		runTook := time.Since(begin)
		if err == nil || !strings.Contains(out, "calico-node host1 is not running") {
			t.Errorf("docker run with the agent down: want the engine to say the agent is not running: %v: %s", err, out)
		}
		begin = time.Now()
		rmOut, rmErr := dw.dockerErr(h1, "rm", "-f", old)
		rmTook := time.Since(begin)
		t.Logf("FIGURE: agent down: docker run --net failed after %.2f s (%s); docker rm -f took %.2f s (%v %s)",
			runTook.Seconds(), strings.TrimSpace(out), rmTook.Seconds(), rmErr, strings.TrimSpace(rmOut))
		if runTook > 5*time.Second || rmTook > 10*time.Second {
			t.Errorf("the engine waited: docker run %v, docker rm %v", runTook, rmTook)
		}
		dw.mustCtl(t, h1, "node", "--ip="+dw.Host(h1).Addr().String(), "--ip6=fd00::1", "--name="+h1, "--libnetwork")
		restarted = true
		dw.dockerErr(h1, "rm", "-f", dw.name("down-new")) // created, never started, if at all
		dw.docker(t, h1, "run", "--net", n, "--name", dw.name("down-after"), "-tid", img)
		dw.docker(t, h1, "rm", "-f", dw.name("down-after"))
		if _, err := dw.dockerErr(h1, "rm", "-f", old); err != nil {
			t.Logf("note: %s already gone", old)
		}
		dw.docker(t, h1, "network", "rm", n)
	})
}
