package docker

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/docker/dockertest"
)

// TestDockerNodeStopCleanup: `calicoctl node stop --cleanup` removes what
// the node installed in its host's namespace. Before, nothing did: after
// node stop, node remove and datastore stop, table inet calico and the two
// cali+ rules in DOCKER-USER stayed in the kernel (and so did the routes
// and the VXLAN device). Host 2 is the one whose engine manages iptables,
// so its DOCKER-USER chain holds our rules.
func TestDockerNodeStopCleanup(t *testing.T) {
	dw := newDockerWorld(t)
	h2 := dw.Host("host2")
	// A VXLAN pool (the tunnel device on both hosts) with a workload on
	// host 1, so host 2 holds a route of protocol 80 to it.
	dw.mustCtl(t, "host1", "pool", "add", "192.168.23.0/24", "--vxlan")
	netC := dw.name("netC")
	dw.docker(t, "host1", "network", "create", "--driver=calico", "--ipam-driver=calico-ipam", "--subnet=192.168.23.0/24", netC)
	dw.docker(t, "host1", "run", "--net", netC, "--name", dw.name("w"), "-tid", dockertest.DefaultImage)

	sockets := []string{filepath.Join(dw.second.PluginDir, "calico.sock"), filepath.Join(dw.second.PluginDir, "calico-ipam.sock")}
	state := func() (have []string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		run := func(argv ...string) string { out, _ := h2.Run(ctx, argv...); return out }
		if strings.Contains(run("nft", "list", "tables"), "inet calico") {
			have = append(have, "table inet calico")
		}
		for _, bin := range []string{"iptables", "ip6tables"} {
			if strings.Contains(run(bin, "-w", "-S", "DOCKER-USER"), "cali+") {
				have = append(have, bin+" DOCKER-USER rules")
			}
		}
		if strings.TrimSpace(run("ip", "-4", "route", "show", "table", "all", "proto", "80")) != "" {
			have = append(have, "routes of protocol 80")
		}
		if _, err := h2.Run(ctx, "ip", "link", "show", "vxlan.calico"); err == nil {
			have = append(have, "vxlan.calico")
		}
		for _, s := range sockets {
			if _, err := os.Stat(s); err == nil {
				have = append(have, s)
			}
		}
		return have
	}
	all := 4 + len(sockets) // the ip6tables rules depend on the engine's IPv6 setting
	waitFor(t, 30*time.Second, "host2's kernel state", func() error {
		if have := state(); len(have) < all {
			return errString("host2 has only " + strings.Join(have, ", "))
		}
		return nil
	})
	out := dw.mustCtl(t, "host2", "node", "stop", "--cleanup", "--plugin-dir", dw.second.PluginDir)
	t.Logf("node stop --cleanup:\n%s", out)
	if have := state(); len(have) > 0 {
		t.Errorf("after node stop --cleanup host2 still has: %s", strings.Join(have, ", "))
	}
	// Again, with the node already stopped: nothing left, no error.
	if out, err := dw.ctl(t, "host2", "node", "stop", "--cleanup", "--plugin-dir", dw.second.PluginDir); err != nil {
		t.Errorf("second node stop --cleanup: %v: %s", err, out)
	}
}
