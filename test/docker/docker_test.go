package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/docker/dockertest"
)

// TestDockerWalkthrough is the seeds' Docker flows on two real engines:
// `container add` of --net=none containers, profiles, the libnetwork driver
// with calico-ipam and with the engine's own IPAM, --ip, the CALICO_IP
// events flow, stop/start/rm, the reachability matrix, and network rm.
func TestDockerWalkthrough(t *testing.T) {
	dw := newDockerWorld(t)
	img := dockertest.DefaultImage
	h1, h2 := "host1", "host2"

	// Seed 1: containers with no network, wired by calicoctl.
	w1, w2, w3 := dw.name("worker-1"), dw.name("worker-2"), dw.name("worker-3")
	dw.docker(t, h1, "run", "--net=none", "--name", w1, "-tid", img)
	dw.docker(t, h1, "run", "--net=none", "--name", w2, "-tid", img)
	dw.docker(t, h2, "run", "--net=none", "--name", w3, "-tid", img)
	dw.mustCtl(t, h1, "profile", "add", "PROF_1_3")
	dw.mustCtl(t, h1, "profile", "add", "PROF_2")
	dw.mustCtl(t, h1, "container", "add", w1, "192.168.100.1")
	dw.mustCtl(t, h1, "container", "add", w2, "192.168.100.2", "--profile", "PROF_2") // one command
	dw.mustCtl(t, h2, "container", "add", w3, "192.168.100.3")
	dw.mustCtl(t, h1, "container", w1, "profile", "append", "PROF_1_3")
	dw.mustCtl(t, h2, "container", w3, "profile", "append", "PROF_1_3")
	t.Run("container add: same profile reaches across hosts, other profiles do not", func(t *testing.T) {
		dw.expectReach(t, h1, w1, "192.168.100.3", true)
		dw.expectReach(t, h2, w3, "192.168.100.1", true)
		dw.expectReach(t, h1, w1, "192.168.100.2", false)
		dw.expectReach(t, h2, w3, "192.168.100.2", false)
	})
	t.Run("container add: a stopped or unknown container is a clear error", func(t *testing.T) {
		out, err := dw.ctl(t, h1, "container", "add", dw.name("ghost"), "192.168.100.9")
		if err == nil || !strings.Contains(out, "unknown container") {
			t.Errorf("unknown container: want an 'unknown container' error, got %v: %s", err, out)
		}
		stopped := dw.name("stopped")
		dw.docker(t, h1, "create", "--net=none", "--name", stopped, img)
		out, err = dw.ctl(t, h1, "container", "add", stopped, "192.168.100.9")
		if err == nil || !strings.Contains(out, "not running") {
			t.Errorf("stopped container: want a 'not running' error, got %v: %s", err, out)
		}
		dw.expectAssigned(t, "192.168.100.9", false)
	})

	// The libnetwork driver: the same network created on both hosts.
	net1, net2 := dw.name("net1"), dw.name("net2")
	for _, h := range []string{h1, h2} {
		dw.docker(t, h, "network", "create", "--driver=calico", "--ipam-driver=calico-ipam", "--subnet=192.168.0.0/24", net1)
		dw.docker(t, h, "network", "create", "--driver=calico", "--ipam-driver=calico-ipam", "--opt", "nat-outgoing=true", "--opt", "vxlan=true", "--subnet=192.168.1.0/24", net2)
	}
	c2, c3, c4 := dw.name("c2"), dw.name("c3"), dw.name("c4")
	c5, c6 := dw.name("c5"), dw.name("c6")
	dw.docker(t, h1, "run", "--net", net1, "--name", c2, "-tid", img)
	dw.docker(t, h1, "run", "--net", net1, "--ip", "192.168.0.50", "--name", c3, "-tid", img)
	dw.docker(t, h2, "run", "--net", net1, "--name", c4, "-tid", img)
	dw.docker(t, h1, "run", "--net", net2, "--name", c5, "-tid", img)
	dw.docker(t, h2, "run", "--net", net2, "--name", c6, "-tid", img)
	ip2, ip3, ip4 := dw.ipOn(t, h1, c2, net1), dw.ipOn(t, h1, c3, net1), dw.ipOn(t, h2, c4, net1)
	ip5, ip6 := dw.ipOn(t, h1, c5, net2), dw.ipOn(t, h2, c6, net2)
	t.Logf("net1: %s=%s %s=%s %s=%s; net2: %s=%s %s=%s", c2, ip2, c3, ip3, c4, ip4, c5, ip5, c6, ip6)
	t.Run("libnetwork: --ip is honoured and addresses come from the network's pool", func(t *testing.T) {
		if ip3 != "192.168.0.50" {
			t.Errorf("--ip 192.168.0.50 gave %s", ip3)
		}
		for _, ip := range []string{ip2, ip4} {
			if !strings.HasPrefix(ip, "192.168.0.") {
				t.Errorf("net1 address %s outside 192.168.0.0/24", ip)
			}
		}
		for _, ip := range []string{ip5, ip6} {
			if !strings.HasPrefix(ip, "192.168.1.") {
				t.Errorf("net2 address %s outside 192.168.1.0/24", ip)
			}
		}
		if ip2 == ip4 {
			t.Errorf("two containers share %s", ip2)
		}
		pools := dw.mustCtl(t, h1, "pool", "show", "-o", "json")
		if !strings.Contains(pools, "192.168.0.0/24") || !strings.Contains(pools, "192.168.1.0/24") {
			t.Errorf("pools of the networks missing: %s", pools)
		}
	})
	t.Run("libnetwork: reachability matrix", func(t *testing.T) {
		dw.expectReach(t, h1, c2, ip3, true)  // same network, same host
		dw.expectReach(t, h1, c2, ip4, true)  // same network, across hosts
		dw.expectReach(t, h2, c4, ip3, true)  // --ip container, across hosts
		dw.expectReach(t, h1, c5, ip6, true)  // net2 (VXLAN) across hosts
		dw.expectReach(t, h1, c2, ip5, false) // net1 -/-> net2
		dw.expectReach(t, h2, c6, ip4, false) // net2 -/-> net1
		dw.expectReach(t, h1, c2, "192.168.100.1", false)
		dw.expectReach(t, h1, w1, ip2, false)
	})
	t.Run("libnetwork: the engine's own IPAM works on one host; a clash across hosts is refused", func(t *testing.T) {
		n := dw.name("net3")
		for _, h := range []string{h1, h2} {
			dw.docker(t, h, "network", "create", "--driver=calico", "--subnet=192.168.3.0/24", n)
		}
		a, b := dw.name("c7"), dw.name("c8")
		dw.docker(t, h1, "run", "--net", n, "--name", a, "-tid", img)
		ipa := dw.ipOn(t, h1, a, n)
		dw.expectAssigned(t, ipa, true)
		out, err := dw.dockerErr(h2, "run", "--net", n, "--name", b, "-tid", img)
		if err == nil {
			// The engines chose different addresses: no clash to refuse.
			t.Logf("second host's container got %s", dw.ipOn(t, h2, b, n))
		} else if !strings.Contains(out, "already assigned") || !strings.Contains(out, "calico-ipam") {
			t.Errorf("clashing address: want an 'already assigned ... calico-ipam' error, got: %s", out)
		}
		dw.dockerErr(h2, "rm", "-f", b)
		dw.docker(t, h1, "rm", "-f", a)
		dw.expectAssigned(t, ipa, false)
		for _, h := range []string{h1, h2} {
			dw.docker(t, h, "network", "rm", n)
		}
	})
	t.Run("libnetwork: IPv6 network across hosts", func(t *testing.T) {
		n := dw.name("net6")
		for _, h := range []string{h1, h2} {
			dw.docker(t, h, "network", "create", "--driver=calico", "--ipam-driver=calico-ipam", "--ipv6", "--subnet=192.168.4.0/24", "--subnet=fd00:4::/64", n)
		}
		a, b := dw.name("v6a"), dw.name("v6b")
		dw.docker(t, h1, "run", "--net", n, "--name", a, "-tid", img)
		dw.docker(t, h2, "run", "--net", n, "--name", b, "-tid", img)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ci, err := dw.engines[h2].Inspect(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		ip6 := ci.Networks[n].GlobalIPv6Address
		if !strings.HasPrefix(ip6, "fd00:4:") {
			t.Fatalf("container %s has no address in fd00:4::/64: %+v", b, ci.Networks[n])
		}
		dw.expectReach(t, h1, a, ip6, true)
		dw.expectReach(t, h1, a, dw.ipOn(t, h2, b, n), true)
		for _, c := range []struct{ h, n string }{{h1, a}, {h2, b}} {
			dw.docker(t, c.h, "rm", "-f", c.n)
		}
		for _, h := range []string{h1, h2} {
			dw.docker(t, h, "network", "rm", n)
		}
	})
	t.Run("libnetwork: ipip network makes an IPIP pool", func(t *testing.T) {
		n := dw.name("netipip")
		dw.docker(t, h1, "network", "create", "--driver=calico", "--opt", "nat-outgoing=true", "--opt", "ipip=true", "--subnet=192.168.2.0/24", n)
		var pools []map[string]any
		if err := json.Unmarshal([]byte(dw.mustCtl(t, h1, "pool", "show", "-o", "json")), &pools); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, p := range pools {
			if p["cidr"] == "192.168.2.0/24" {
				found = true
				if p["ipipMode"] != "Always" || p["natOutgoing"] != true {
					t.Errorf("pool of the ipip network: %v", p)
				}
			}
		}
		if !found {
			t.Errorf("no pool 192.168.2.0/24 after docker network create: %v", pools)
		}
		dw.docker(t, h1, "network", "rm", n)
		if strings.Contains(dw.mustCtl(t, h1, "pool", "show"), "192.168.2.0/24") {
			t.Errorf("pool 192.168.2.0/24 stays after docker network rm")
		}
	})

	// Seed 2: containers that ask for an address in their environment.
	q1, q2, bad := dw.name("qperf-server"), dw.name("qperf-client"), dw.name("bad")
	dw.docker(t, h1, "run", "--net=none", "--name", q1, "-e", "CALICO_IP=auto", "-e", "CALICO_PROFILE=test", "-tid", img)
	dw.docker(t, h2, "run", "--net=none", "--name", q2, "-e", "CALICO_IP=auto", "-e", "CALICO_PROFILE=test", "-tid", img)
	dw.docker(t, h1, "run", "--net=none", "--name", bad, "-e", "CALICO_IP=10.9.9.9", "-e", "CALICO_PROFILE=test", "-tid", img)
	var qip1 string
	t.Run("CALICO_IP: containers are wired when they start", func(t *testing.T) {
		qip1 = dw.endpointIP(t, h1, q1)
		qip2 := dw.endpointIP(t, h2, q2)
		dw.expectReach(t, h2, q2, qip1, true)
		dw.expectReach(t, h1, q1, qip2, true)
		dw.expectReach(t, h1, q1, "192.168.100.1", false)
		if !strings.Contains(dw.mustCtl(t, h1, "profile", "show"), "test") {
			t.Errorf("profile test was not created")
		}
	})
	t.Run("CALICO_IP: a bad value is logged and nothing is half made", func(t *testing.T) {
		waitFor(t, 10*time.Second, "the agent's error about "+bad, func() error {
			if l := dw.agentLog(h1); !strings.Contains(l, bad) || !strings.Contains(l, "not wiring container") {
				return errString("no error line naming the container yet")
			}
			return nil
		})
		if out := dw.mustCtl(t, h1, "endpoint", "show"); strings.Contains(out, bad) {
			t.Errorf("endpoint of the bad container exists:\n%s", out)
		}
	})
	t.Run("CALICO_IP: a container never takes over another workload's endpoint", func(t *testing.T) {
		n := dw.name("clash")
		if _, err := dw.AddWorkload(context.Background(), dw.Host(h1), n, "192.168.100.20"); err != nil {
			t.Fatal(err)
		}
		dw.docker(t, h1, "run", "--net=none", "--name", n, "-e", "CALICO_IP=auto", "-tid", img)
		waitFor(t, 10*time.Second, "the agent's refusal to wire "+n, func() error {
			if l := dw.agentLog(h1); !strings.Contains(l, n) || !strings.Contains(l, "already belongs to another workload") {
				return errString("no refusal logged yet")
			}
			return nil
		})
		if ip, err := dw.endpointIPErr(h1, n); err != nil || ip != "192.168.100.20" {
			t.Errorf("the namespace workload's endpoint changed: %s %v", ip, err)
		}
		dw.expectAssigned(t, "192.168.100.20", true)
	})
	t.Run("stop, start and rm release and re-take addresses", func(t *testing.T) {
		dw.docker(t, h1, "stop", "-t", "1", w1)
		waitFor(t, 10*time.Second, "endpoint of stopped "+w1+" gone", func() error { return dw.noEndpoint(h1, w1) })
		dw.awaitReleased(t, "192.168.100.1")
		dw.docker(t, h1, "start", w1)
		dw.mustCtl(t, h1, "container", "add", w1, "192.168.100.1")
		// Added by name, then named by its id, as Docker users do.
		id := dw.docker(t, h1, "inspect", "-f", "{{.Id}}", w1)
		dw.mustCtl(t, h1, "container", id[:12], "profile", "append", "PROF_1_3")
		dw.expectReach(t, h2, w3, "192.168.100.1", true)

		dw.docker(t, h1, "restart", "-t", "1", q1)
		waitFor(t, 15*time.Second, "restarted "+q1+" wired again", func() error {
			_, err := dw.endpointIPErr(h1, q1)
			return err
		})
		nip := dw.endpointIP(t, h1, q1)
		dw.expectReach(t, h2, q2, nip, true)

		qip2 := dw.endpointIP(t, h2, q2)
		dw.docker(t, h2, "rm", "-f", q2)
		waitFor(t, 10*time.Second, "endpoint of removed "+q2+" gone", func() error { return dw.noEndpoint(h2, q2) })
		dw.awaitReleased(t, qip2)

		// A libnetwork container stops: the engine calls the driver.
		dw.docker(t, h1, "stop", "-t", "1", c2)
		dw.expectAssigned(t, ip2, false)
		dw.docker(t, h1, "start", c2)
		nip2 := dw.ipOn(t, h1, c2, net1)
		dw.expectReach(t, h2, c4, nip2, true)
	})
	t.Run("agent down while a container goes: resync on start releases it", func(t *testing.T) {
		dw.mustCtl(t, h1, "node", "stop")
		dw.docker(t, h1, "rm", "-f", q1)
		// The engine cannot tell the driver this container's endpoint went.
		c3ep := dw.docker(t, h1, "inspect", "-f", "{{(index .NetworkSettings.Networks \""+net1+"\").EndpointID}}", c3)
		out, err := dw.dockerErr(h1, "rm", "-f", c3)
		t.Logf("docker rm -f %s with the driver down: %v %s", c3, err, out)
		dw.mustCtl(t, h1, "node", "--ip="+dw.Host(h1).Addr().String(), "--ip6=fd00::1", "--name="+h1, "--libnetwork")
		waitFor(t, 20*time.Second, "endpoint of "+q1+" gone after resync", func() error { return dw.noEndpoint(h1, q1) })
		waitFor(t, 20*time.Second, "endpoint of "+c3+" gone after reconcile", func() error { return dw.noEndpoint(h1, "docker-"+c3ep[:12]) })
		dw.awaitReleased(t, "192.168.0.50")
	})
	t.Run("throughput between containers on two hosts, beside host to host", func(t *testing.T) {
		nip2 := dw.ipOn(t, h1, c2, net1)
		c2ns := fmt.Sprintf("/proc/%d/ns/net", dw.pid(t, h1, c2))
		c4ns := fmt.Sprintf("/proc/%d/ns/net", dw.pid(t, h2, c4))
		host := iperf3(t, dw.Host(h1).Path, dw.Host(h2).Path, dw.Host(h1).Addr().String(), 3)
		ctr := iperf3(t, c2ns, c4ns, nip2, 3)
		t.Logf("FIGURE: iperf3 1 stream 3 s: host-to-host %.2f Gbit/s, container-to-container across hosts (libnetwork, policy on) %.2f Gbit/s, ratio %.2f", host, ctr, ctr/host)
	})
	t.Run("docker network rm on every host removes the pool and profile", func(t *testing.T) {
		for _, c := range []struct{ h, n string }{{h1, c2}, {h2, c4}} {
			dw.docker(t, c.h, "rm", "-f", c.n)
		}
		dw.docker(t, h1, "network", "rm", net1)
		if !strings.Contains(dw.mustCtl(t, h1, "pool", "show"), "192.168.0.0/24") {
			t.Errorf("pool 192.168.0.0/24 went with host1's network while host2 still has it")
		}
		dw.docker(t, h2, "network", "rm", net1)
		if strings.Contains(dw.mustCtl(t, h1, "pool", "show"), "192.168.0.0/24") {
			t.Errorf("pool 192.168.0.0/24 stays after the last docker network rm")
		}
		if strings.Contains(dw.mustCtl(t, h1, "profile", "show"), net1) {
			t.Errorf("profile %s stays after the last docker network rm", net1)
		}
		out := dw.mustCtl(t, h1, "ipam", "check")
		t.Logf("ipam check: %s", out)
	})
	t.Run("host2's engine drops forwarded traffic by policy; workload traffic passes", func(t *testing.T) {
		// The reachability checks above crossed host2's FORWARD path; this
		// shows the engine's DROP policy was really there.
		ctx := context.Background()
		out, err := dw.Host(h2).Run(ctx, "iptables", "-S", "FORWARD")
		if err != nil || !strings.Contains(out, "-P FORWARD DROP") {
			t.Errorf("host2's engine did not set FORWARD to DROP (%v): %s", err, out)
		}
		out, err = dw.Host(h2).Run(ctx, "iptables", "-S", "DOCKER-USER")
		if err != nil || !strings.Contains(out, "-i cali+") || !strings.Contains(out, "-o cali+") {
			t.Errorf("DOCKER-USER lacks the workload rules (%v): %s", err, out)
		}
		// Without them the engine's policy drops the traffic (shown with
		// host2's agent stopped, so it cannot put them back); the agent
		// restores them when it starts (and checks every 10 s).
		dw.mustCtl(t, h2, "node", "stop")
		if _, err := dw.Host(h2).Run(ctx, "iptables", "-F", "DOCKER-USER"); err != nil {
			t.Fatal(err)
		}
		dw.Host(h2).Run(ctx, "iptables", "-A", "DOCKER-USER", "-j", "RETURN")
		dw.expectReach(t, h1, w1, "192.168.100.3", false)
		dw.mustCtl(t, h2, "node", "--ip="+dw.Host(h2).Addr().String(), "--ip6=fd00::2", "--name="+h2,
			"--libnetwork", "--docker-host="+dw.second.Host, "--plugin-dir="+dw.second.PluginDir)
		deadline := time.Now().Add(20 * time.Second)
		for !dw.ping(t, h1, w1, "192.168.100.3") {
			if time.Now().After(deadline) {
				t.Fatalf("the agent did not restore the DOCKER-USER rules within 20 s")
			}
		}
	})
	t.Run("plugin sockets are not world-writable", func(t *testing.T) {
		for _, dir := range []string{"/run/docker/plugins", dw.second.PluginDir} {
			for _, s := range []string{"calico.sock", "calico-ipam.sock"} {
				fi, err := statMode(dir + "/" + s)
				if err != nil {
					t.Fatal(err)
				}
				if fi&0o002 != 0 {
					t.Errorf("%s/%s is world-writable: %v", dir, s, fi)
				}
			}
		}
	})
}
