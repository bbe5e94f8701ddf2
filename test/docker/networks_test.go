package docker

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/docker/dockertest"
)

// TestDockerSeveralNetworks: a container on two calico networks, and calico
// beside the engine's bridge in both orders. Before, `docker network
// connect netB a1` failed with "error setting interface ... routes to
// [169.254.1.1/32]: file exists" (every Join gave the same gateway route),
// the engine kept a ghost netB entry so that `docker restart a1` left a1
// Exited, and the compose pattern (create --net netA, network connect netB,
// start) never started; a bridge container connected to a calico network
// had no route to the pool, and a calico container connected to the bridge
// lost its route to calico peers.
func TestDockerSeveralNetworks(t *testing.T) {
	dw := newDockerWorld(t)
	img := dockertest.DefaultImage
	h1, h2 := "host1", "host2"
	netA, netB := dw.name("netA"), dw.name("netB")
	for _, h := range []string{h1, h2} {
		dw.docker(t, h, "network", "create", "--driver=calico", "--ipam-driver=calico-ipam", "--subnet=192.168.20.0/24", netA)
		dw.docker(t, h, "network", "create", "--driver=calico", "--ipam-driver=calico-ipam", "--subnet=192.168.21.0/24", netB)
	}
	// Peers on host 2, one per network.
	pa, pb := dw.name("pa"), dw.name("pb")
	dw.docker(t, h2, "run", "--net", netA, "--name", pa, "-tid", img)
	dw.docker(t, h2, "run", "--net", netB, "--name", pb, "-tid", img)
	ipPA, ipPB := dw.ipOn(t, h2, pa, netA), dw.ipOn(t, h2, pb, netB)

	a1 := dw.name("a1")
	dw.docker(t, h1, "run", "--net", netA, "--name", a1, "-tid", img)
	// onBoth checks ctr reaches both networks' peers (each through its own
	// interface: the host drops a source that is not the interface's) and
	// that both peers reach it; with defaultA, that the default route is
	// still netA's (a connect never moves it; at a start the engine joins
	// the networks in no fixed order, and the first joined gives it).
	onBoth := func(t *testing.T, ctr string, defaultA bool) {
		t.Helper()
		ipA, ipB := dw.ipOn(t, h1, ctr, netA), dw.ipOn(t, h1, ctr, netB)
		dw.expectReach(t, h1, ctr, ipPA, true)
		dw.expectReach(t, h1, ctr, ipPB, true)
		dw.expectReach(t, h2, pa, ipA, true)
		dw.expectReach(t, h2, pb, ipB, true)
		dw.expectReach(t, h2, pa, ipB, false) // profiles still separate the networks
		dw.expectReach(t, h2, pb, ipA, false)
		if defaultA {
			dw.expectDefaultVia(t, h1, ctr, ipA)
		} else {
			dw.expectDefaultVia(t, h1, ctr, ipA, ipB)
		}
	}
	t.Run("network connect adds a second calico interface", func(t *testing.T) {
		if out, err := dw.dockerErr(h1, "network", "connect", netB, a1); err != nil {
			t.Fatalf("network connect: %v: %s", err, out)
		}
		onBoth(t, a1, true)
	})
	t.Run("restart keeps both networks", func(t *testing.T) {
		if out, err := dw.dockerErr(h1, "restart", "-t", "1", a1); err != nil {
			t.Fatalf("restart: %v: %s", err, out)
		}
		onBoth(t, a1, false)
	})
	t.Run("compose pattern: create on netA, connect netB, start", func(t *testing.T) {
		a2 := dw.name("a2")
		dw.docker(t, h1, "create", "--net", netA, "--name", a2, "-t", img)
		dw.docker(t, h1, "network", "connect", netB, a2)
		if out, err := dw.dockerErr(h1, "start", a2); err != nil {
			t.Fatalf("start: %v: %s", err, out)
		}
		onBoth(t, a2, false)
	})
	t.Run("disconnect removes one network, the other stays", func(t *testing.T) {
		// a3 is made on netA and connected to netB: netA holds the default.
		a3 := dw.name("a3")
		dw.docker(t, h1, "run", "--net", netA, "--name", a3, "-tid", img)
		dw.docker(t, h1, "network", "connect", netB, a3)
		onBoth(t, a3, true)
		ipB := dw.ipOn(t, h1, a3, netB)
		dw.docker(t, h1, "network", "disconnect", netB, a3)
		ipA := dw.ipOn(t, h1, a3, netA)
		dw.expectReach(t, h1, a3, ipPA, true)
		dw.expectReach(t, h2, pa, ipA, true)
		dw.expectReach(t, h2, pb, ipB, false)
		dw.expectDefaultVia(t, h1, a3, ipA)
		waitFor(t, 15*time.Second, "netB address released", func() error { return dw.noEndpointWith(h1, ipB) })
		// And back: the second interface again; the default stays.
		dw.docker(t, h1, "network", "connect", netB, a3)
		onBoth(t, a3, true)
		// Disconnecting the network with the default route leaves the
		// other network's peers reachable through its own interface.
		dw.docker(t, h1, "network", "disconnect", netA, a3)
		dw.expectReach(t, h1, a3, ipPB, true)
	})

	// The engine's bridge beside calico, in both orders. A container made
	// on the bridge keeps its default route there; for one made on calico
	// and connected to the bridge the engine chooses (by network name); the
	// calico interface keeps the routes to its pool either way.
	b2 := dw.name("b2")
	dw.docker(t, h1, "run", "--name", b2, "-tid", img) // the bridge peer
	ipB2 := dw.ipOn(t, h1, b2, "bridge")
	t.Run("bridge container connected to a calico network", func(t *testing.T) {
		b1 := dw.name("b1")
		dw.docker(t, h1, "run", "--name", b1, "-tid", img)
		if out, err := dw.dockerErr(h1, "network", "connect", netA, b1); err != nil {
			t.Fatalf("network connect: %v: %s", err, out)
		}
		dw.expectReach(t, h1, b1, ipPA, true)
		dw.expectReach(t, h2, pa, dw.ipOn(t, h1, b1, netA), true)
		dw.expectReach(t, h1, b1, ipB2, true)
		dw.expectDefaultVia(t, h1, b1, dw.ipOn(t, h1, b1, "bridge"))
		if out, err := dw.dockerErr(h1, "restart", "-t", "1", b1); err != nil {
			t.Fatalf("restart: %v: %s", err, out)
		}
		dw.expectReach(t, h1, b1, ipPA, true)
		dw.expectReach(t, h1, b1, ipB2, true)
	})
	t.Run("calico container connected to the bridge", func(t *testing.T) {
		c1 := dw.name("c1")
		dw.docker(t, h1, "run", "--net", netA, "--name", c1, "-tid", img)
		if out, err := dw.dockerErr(h1, "network", "connect", "bridge", c1); err != nil {
			t.Fatalf("network connect: %v: %s", err, out)
		}
		dw.expectReach(t, h1, c1, ipPA, true)
		dw.expectReach(t, h2, pa, dw.ipOn(t, h1, c1, netA), true)
		dw.expectReach(t, h1, c1, ipB2, true)
		dw.docker(t, h1, "network", "disconnect", "bridge", c1)
		dw.expectReach(t, h1, c1, ipPA, true)
	})
}

// expectDefaultVia asserts that ctr's IPv4 default route leaves through
// the interface holding one of addrs.
func (dw *dockerWorld) expectDefaultVia(t *testing.T, host, ctr string, addrs ...string) {
	t.Helper()
	out, err := dw.inCtr(t, host, ctr, "ip", "-4", "-o", "route", "show", "default")
	if err != nil {
		t.Fatalf("ip route: %v: %s", err, out)
	}
	m := regexp.MustCompile(`dev (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("%s has no default route: %q", ctr, out)
	}
	have, err := dw.inCtr(t, host, ctr, "ip", "-4", "-o", "addr", "show", "dev", m[1])
	if err != nil {
		t.Fatalf("ip addr: %v: %s", err, have)
	}
	for _, a := range addrs {
		if strings.Contains(have, " "+a+"/") {
			return
		}
	}
	t.Errorf("%s's default route is %q, not through the interface of %v (%s)", ctr, strings.TrimSpace(out), addrs, strings.TrimSpace(have))
}

// noEndpointWith: no endpoint of host holds ip, and IPAM has it free.
func (dw *dockerWorld) noEndpointWith(host, ip string) error {
	out, err := dw.ctl(nil, host, "endpoint", "show", "-o", "json")
	if err != nil {
		return errString("endpoint show: " + err.Error())
	}
	if strings.Contains(out, "\""+ip+"/32\"") {
		return errString("an endpoint still holds " + ip)
	}
	return nil
}
