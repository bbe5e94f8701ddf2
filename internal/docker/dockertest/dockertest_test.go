package dockertest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/lab"
)

// labPrefix keeps this package's labs apart from everyone else's.
const labPrefix = "cdk"

func TestMain(m *testing.M) {
	if ns := os.Getenv(crashChildEnv); ns != "" {
		crashChild(ns)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "internal/docker/dockertest tests need root (network and mount namespaces, the Docker engine)")
		os.Exit(1)
	}
	if err := lab.Require("ip", "ping", "docker", "dockerd", "nsenter", "unshare"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := Sweep(); err != nil {
		fmt.Fprintln(os.Stderr, "sweeping leftover engines:", err)
	}
	if err := lab.Sweep(labPrefix); err != nil {
		fmt.Fprintln(os.Stderr, "sweeping leftover labs:", err)
	}
	os.Exit(m.Run())
}

func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// runID makes names unique to this test run.
func runID() string {
	return fmt.Sprintf("%s%x", labPrefix, time.Now().UnixNano()&0xffffff)
}

// machineClient is the machine's own engine, which must answer: the Docker
// tests fail rather than skip without it.
func machineClient(t *testing.T) *Client {
	t.Helper()
	c := must[*Client](t)(NewClient(""))
	if err := c.Ping(ctxT(t, 10*time.Second)); err != nil {
		t.Fatalf("the machine's Docker engine does not answer: %v (run scripts/ensure-docker.sh as root)", err)
	}
	return c
}

// runContainer runs a container and removes it when the test ends.
func runContainer(t *testing.T, c *Client, o RunOptions) string {
	t.Helper()
	id, err := c.Run(ctxT(t, time.Minute), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c.Ping(ctx) != nil {
			return // a second engine already stopped, taking its containers along
		}
		if err := c.Remove(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
			t.Errorf("removing container %s: %v", o.Name, err)
		}
	})
	return id
}

func execOK(t *testing.T, c *Client, ctx context.Context, id string, cmd ...string) string {
	t.Helper()
	r, err := c.Exec(ctx, id, cmd...)
	if err != nil {
		t.Fatal(err)
	}
	if r.ExitCode != 0 {
		t.Fatalf("%s: exit code %d, stdout %q, stderr %q", strings.Join(cmd, " "), r.ExitCode, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

func TestRootfs(t *testing.T) {
	a := must[[]byte](t)(BuildRootfs())
	b := must[[]byte](t)(BuildRootfs())
	if !bytes.Equal(a, b) {
		t.Error("two builds of the rootfs tarball differ")
	}
	for _, want := range []string{"bin/busybox", "bin/sh", "bin/ping", "bin/nc", "bin/ip", "etc/passwd", "tmp/"} {
		if !bytes.Contains(a, []byte(want)) {
			t.Errorf("rootfs tarball has no %s", want)
		}
	}
	if got, want := must[string](t)(splitTagT("a/b:1")), "a/b 1"; got != want {
		t.Errorf("splitTag: got %q, want %q", got, want)
	}
	if got, want := must[string](t)(splitTagT("reg:5000/b")), "reg:5000/b latest"; got != want {
		t.Errorf("splitTag: got %q, want %q", got, want)
	}
}

func splitTagT(ref string) (string, error) {
	r, tag := splitTag(ref)
	return r + " " + tag, nil
}

// TestMachineEngine: the image, a --net=none container (`docker run
// --net=none -tid IMAGE`), exec, stop/start, inspect and the CLI, on the
// machine's engine.
func TestMachineEngine(t *testing.T) {
	c := machineClient(t)
	ctx := ctxT(t, 3*time.Minute)
	if err := EnsureImage(ctx, "", DefaultImage); err != nil {
		t.Fatal(err)
	}
	if ok := must[bool](t)(c.ImageExists(ctx, DefaultImage)); !ok {
		t.Fatalf("EnsureImage returned but the engine has no %s", DefaultImage)
	}
	// Again: now it must find the image and not import it a second time.
	before := imageID(t, c, DefaultImage)
	if err := c.EnsureImage(ctx, DefaultImage); err != nil {
		t.Fatal(err)
	}
	if after := imageID(t, c, DefaultImage); after != before {
		t.Errorf("second EnsureImage re-imported the image: %s -> %s", before, after)
	}

	id := runID()
	name := id + "-none"
	cid := runContainer(t, c, RunOptions{Name: name, Image: DefaultImage, Network: "none", Tty: true,
		// Not CALICO_IP/CALICO_PROFILE: an agent of another test watching
		// this engine would wire the container.
		Env: []string{"DOCKERTEST_A=1", "DOCKERTEST_ID=" + id}, Labels: map[string]string{"org.calico-go.test": id}})

	ci := must[ContainerInfo](t)(c.Inspect(ctx, name))
	if ci.ID != cid || ci.Name != name || !ci.Running || ci.Pid <= 0 || ci.NetworkMode != "none" {
		t.Fatalf("inspect: %+v", ci)
	}
	if v, _ := ci.EnvValue("DOCKERTEST_ID"); v != id {
		t.Errorf("DOCKERTEST_ID = %q, want %q (env %v)", v, id, ci.Env)
	}
	if _, ok := ci.Networks["none"]; !ok {
		t.Errorf("networks %v: want none", ci.Networks)
	}
	if ids := must[[]string](t)(c.ContainerIDs(ctx, "org.calico-go.test="+id)); len(ids) != 1 || ids[0] != cid {
		t.Errorf("containers labelled %s: %v, want [%s]", id, ids, cid)
	}
	// Its own network namespace, holding only lo.
	if own, _ := os.Readlink("/proc/self/ns/net"); own == "" || own == readlink(t, ci.NetnsPath()) {
		t.Errorf("container %s shares our network namespace", name)
	}
	links := strings.Fields(execOK(t, c, ctx, cid, "sh", "-c", "ls /sys/class/net"))
	if len(links) != 1 || links[0] != "lo" {
		t.Errorf("--net=none container has links %v, want [lo]", links)
	}

	// Exec separates the streams and reports the exit code.
	r := must[ExecResult](t)(c.Exec(ctx, cid, "sh", "-c", "echo out; echo err >&2; exit 3"))
	if r.Stdout != "out\n" || r.Stderr != "err\n" || r.ExitCode != 3 {
		t.Errorf("exec: %+v, want stdout \"out\\n\", stderr \"err\\n\", exit 3", r)
	}
	big := execOK(t, c, ctx, cid, "sh", "-c", "seq 1 20000")
	if n := len(strings.Split(strings.TrimSpace(big), "\n")); n != 20000 {
		t.Errorf("exec of seq 1 20000 gave %d lines", n)
	}
	// As `docker exec` does: the engine's 126 for a command it cannot run.
	if r, err := c.Exec(ctx, cid, "/no/such/command"); err != nil || r.ExitCode != 126 {
		t.Errorf("exec of a missing command: %+v %v, want exit code 126", r, err)
	}

	// Stop and start: a new process, still the same container.
	if err := c.Stop(ctx, cid, 0); err != nil {
		t.Fatal(err)
	}
	if ci := must[ContainerInfo](t)(c.Inspect(ctx, cid)); ci.Running || ci.Pid != 0 {
		t.Errorf("after stop: running=%v pid=%d", ci.Running, ci.Pid)
	}
	if _, err := c.Exec(ctx, cid, "true"); err == nil {
		t.Error("exec in a stopped container succeeded")
	}
	if err := c.Start(ctx, cid); err != nil {
		t.Fatal(err)
	}
	if ci2 := must[ContainerInfo](t)(c.Inspect(ctx, cid)); !ci2.Running || ci2.Pid <= 0 || ci2.Pid == ci.Pid {
		t.Errorf("after start: running=%v pid=%d (was %d)", ci2.Running, ci2.Pid, ci.Pid)
	}

	// The CLI, as the user would type it.
	out := must[string](t)(c.CLI(ctx, "ps", "--filter", "name="+name, "--format", "{{.Names}} {{.Status}}"))
	if !strings.HasPrefix(strings.TrimSpace(out), name+" Up") {
		t.Errorf("docker ps: %q", out)
	}
	if out := must[string](t)(c.CLI(ctx, "exec", name, "cat", "/etc/passwd")); !strings.HasPrefix(out, "root:x:0:0:") {
		t.Errorf("docker exec cat /etc/passwd: %q", out)
	}
	cliName := id + "-cli"
	if _, err := c.CLI(ctx, "run", "--net=none", "--name", cliName, "-tid", DefaultImage); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Remove(context.Background(), cliName) })
	if ci := must[ContainerInfo](t)(c.Inspect(ctx, cliName)); !ci.Running {
		t.Errorf("`docker run --net=none -tid %s` is not running: %+v", DefaultImage, ci)
	}

	// Remove: then the engine does not know it.
	if err := c.Remove(ctx, cid); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Inspect(ctx, cid); !errors.Is(err, ErrNotFound) {
		t.Errorf("inspect after remove: %v, want ErrNotFound", err)
	}
}

func imageID(t *testing.T, c *Client, ref string) string {
	t.Helper()
	var img struct {
		ID string `json:"Id"`
	}
	if err := c.call(ctxT(t, 10*time.Second), "GET", "/images/"+ref+"/json", nil, nil, &img); err != nil {
		t.Fatal(err)
	}
	return img.ID
}

func readlink(t *testing.T, p string) string {
	t.Helper()
	s, err := os.Readlink(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fakePlugin is a legacy network driver on a unix socket that accepts
// everything and records the calls, to prove the second engine discovers
// plugins in its PluginDir.
type fakePlugin struct {
	mu    sync.Mutex
	calls []string
	srv   *http.Server
}

func startFakePlugin(t *testing.T, sock string) *fakePlugin {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	p := &fakePlugin{}
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.calls = append(p.calls, strings.TrimPrefix(r.URL.Path, "/"))
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
		switch r.URL.Path {
		case "/Plugin.Activate":
			json.NewEncoder(w).Encode(map[string]any{"Implements": []string{"NetworkDriver"}})
		case "/NetworkDriver.GetCapabilities":
			json.NewEncoder(w).Encode(map[string]any{"Scope": "local"})
		default:
			w.Write([]byte("{}"))
		}
	})}
	go p.srv.Serve(ln)
	t.Cleanup(func() { p.srv.Close() })
	return p
}

func (p *fakePlugin) called(method string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.calls {
		if c == method {
			return true
		}
	}
	return false
}

// TestSecondEngine: a dockerd inside a lab host's namespace, with the image
// imported there, containers on none, host and a bridge network with a fixed
// IP, exec, its own plugin directory, the CLI; then Stop leaves nothing.
func TestSecondEngine(t *testing.T) {
	machineClient(t) // the image source is local, but CI must have the engine
	l, err := lab.New(labPrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("closing the lab: %v", err)
		}
	})
	fab := must[*lab.Fabric](t)(l.AddFabric("fab", "10.77.0.0/24"))
	h1 := must[*lab.Host](t)(l.AddHost("host1", fab, "10.77.0.1/24", ""))
	h2 := must[*lab.Host](t)(l.AddHost("host2", fab, "10.77.0.2/24", ""))

	e := StartEngine(t, EngineOptions{NetnsPath: h2.Path, Name: "host2"})
	t.Logf("dockerd in %s answered after %v (socket %s, plugins in %s)", h2.Name, e.StartDuration.Round(time.Millisecond), e.Socket, e.PluginDir)
	ctx := ctxT(t, 4*time.Minute)

	// It sees host2's interfaces in /sys (not the machine's), with the
	// cgroup hierarchies still mounted below.
	sysNet, err := os.ReadDir(fmt.Sprintf("/proc/%d/root/sys/class/net", e.Pid))
	if err != nil || len(sysNet) != 2 {
		t.Errorf("dockerd's /sys/class/net: %v %v, want eth0 and lo", sysNet, err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/sys/fs/cgroup/memory/tasks", e.Pid)); err != nil {
		t.Errorf("dockerd's /sys/fs/cgroup: %v", err)
	}

	// ip_forward stays as the lab made it.
	if v := must[string](t)(h2.Sysctl("net.ipv4.ip_forward")); strings.TrimSpace(v) != "0" {
		t.Errorf("ip_forward in host2 = %s after dockerd started, want 0", v)
	}

	began := time.Now()
	if err := e.EnsureImage(ctx, DefaultImage); err != nil {
		t.Fatal(err)
	}
	t.Logf("image imported into the second engine in %v", time.Since(began).Round(time.Millisecond))

	id := l.ID()
	// --net=none: only lo.
	none := runContainer(t, e.Client, RunOptions{Name: id + "-none", Image: DefaultImage, Network: "none", Tty: true})
	if links := strings.Fields(execOK(t, e.Client, ctx, none, "ls", "/sys/class/net")); len(links) != 1 || links[0] != "lo" {
		t.Errorf("--net=none container on the second engine has links %v, want [lo]", links)
	}
	nci := must[ContainerInfo](t)(e.Inspect(ctx, none))
	if readlink(t, nci.NetnsPath()) == readlink(t, fmt.Sprintf("/proc/%d/ns/net", e.Pid)) {
		t.Error("--net=none container shares dockerd's network namespace")
	}

	// --net=host is host2's namespace: its fabric address, and packets
	// reach host1 across the fabric.
	host := runContainer(t, e.Client, RunOptions{Name: id + "-host", Image: DefaultImage, Network: "host", Tty: true})
	if out := execOK(t, e.Client, ctx, host, "ip", "-4", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(out, " "+h2.IP.String()+" ") {
		t.Errorf("--net=host container on the second engine: eth0 has %q, want %s (dockerd is not in host2's namespace?)", out, h2.IP)
	}
	if r := must[ExecResult](t)(e.Exec(ctx, host, "ping", "-c", "1", "-W", "3", h1.Addr().String())); r.ExitCode != 0 {
		t.Errorf("ping host1 from a --net=host container on host2: exit %d: %s%s", r.ExitCode, r.Stdout, r.Stderr)
	}

	// A bridge network with IPv4 and IPv6, a container with a fixed
	// address on it, reachable from host2.
	netName := id + "-br"
	must[string](t)(e.NetworkCreate(ctx, NetworkOptions{Name: netName, Driver: "bridge",
		Subnets: []string{"172.30.77.0/24", "fd00:77::/64"}, IPv6: true,
		Options: map[string]string{"com.docker.network.bridge.name": "br-" + id}}))
	fixed := runContainer(t, e.Client, RunOptions{Name: id + "-fixed", Image: DefaultImage, Network: netName,
		IP: "172.30.77.10", IP6: "fd00:77::10", Tty: true})
	fci := must[ContainerInfo](t)(e.Inspect(ctx, fixed))
	ep, ok := fci.Networks[netName]
	if !ok || ep.IPAddress != "172.30.77.10" || ep.IPPrefixLen != 24 || ep.GlobalIPv6Address != "fd00:77::10" {
		t.Errorf("container on %s: endpoint %+v, want 172.30.77.10/24 and fd00:77::10", netName, ep)
	}
	if out := execOK(t, e.Client, ctx, fixed, "ip", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(out, "172.30.77.10/24") || !strings.Contains(out, "fd00:77::10/64") {
		t.Errorf("container on %s: eth0 has %q", netName, out)
	}
	if res, err := lab.Ping(ctx, h2.Netns, netip.MustParseAddr("172.30.77.10"), 2, 2*time.Second); err != nil || res.Received == 0 {
		t.Errorf("ping from host2 to its container 172.30.77.10: %+v %v", res, err)
	}
	// A second engine on host1: its --net=host container reaches the
	// container on host2 across the fabric, once host1 routes the bridge's
	// subnet via host2 and host2 forwards.
	e1 := StartEngine(t, EngineOptions{NetnsPath: h1.Path, Name: "host1"})
	if e1.PluginDir == e.PluginDir || e1.Socket == e.Socket {
		t.Errorf("two engines share a plugin dir or socket: %s %s", e1.PluginDir, e1.Socket)
	}
	check(t, e1.EnsureImage(ctx, DefaultImage))
	host1 := runContainer(t, e1.Client, RunOptions{Name: id + "-host1", Image: DefaultImage, Network: "host", Tty: true})
	check(t, h1.AddRoute("172.30.77.0/24", h2.Addr().String()))
	check(t, h2.SetSysctl("net.ipv4.ip_forward", "1"))
	if r := must[ExecResult](t)(e1.Exec(ctx, host1, "ping", "-c", "1", "-W", "3", "172.30.77.10")); r.ExitCode != 0 {
		t.Errorf("ping from host1's engine to the container on host2's engine: exit %d: %s%s", r.ExitCode, r.Stdout, r.Stderr)
	}

	ni := must[NetworkInfo](t)(e.NetworkInspect(ctx, netName))
	if ni.Driver != "bridge" || !ni.EnableIPv6 || len(ni.IPAM.Config) != 2 || ni.Containers[fixed].IPv4Address != "172.30.77.10/24" {
		t.Errorf("network inspect %s: %+v", netName, ni)
	}
	if err := e.NetworkRemove(ctx, netName); err == nil {
		t.Error("removing a network with a container on it succeeded")
	}
	if err := e.Remove(ctx, fixed); err != nil {
		t.Fatal(err)
	}
	if err := e.NetworkRemove(ctx, netName); err != nil {
		t.Fatal(err)
	}
	if _, err := e.NetworkInspect(ctx, netName); !errors.Is(err, ErrNotFound) {
		t.Errorf("network inspect after rm: %v, want ErrNotFound", err)
	}

	// Its own plugin directory: a driver whose socket is in PluginDir is
	// found by this engine (through its /run/docker/plugins), and the
	// machine's /run/docker/plugins does not have it.
	driver := id + "-fake"
	fp := startFakePlugin(t, filepath.Join(e.PluginDir, driver+".sock"))
	seen, err := os.ReadDir(fmt.Sprintf("/proc/%d/root/run/docker/plugins", e.Pid))
	if err != nil || len(seen) != 1 || seen[0].Name() != driver+".sock" {
		t.Errorf("dockerd's /run/docker/plugins holds %v (%v), want only %s.sock", seen, err, driver)
	}
	if _, err := os.Stat(filepath.Join("/run/docker/plugins", driver+".sock")); err == nil {
		t.Errorf("the machine's /run/docker/plugins shows the second engine's plugin")
	}
	fakeNet := id + "-fakenet"
	must[string](t)(e.NetworkCreate(ctx, NetworkOptions{Name: fakeNet, Driver: driver, Subnets: []string{"10.78.0.0/24"}}))
	if !fp.called("NetworkDriver.CreateNetwork") {
		t.Errorf("the plugin saw %v, want a NetworkDriver.CreateNetwork", fp.calls)
	}
	if ni := must[NetworkInfo](t)(e.NetworkInspect(ctx, fakeNet)); ni.Driver != driver {
		t.Errorf("network %s has driver %q, want %q", fakeNet, ni.Driver, driver)
	}
	if err := e.NetworkRemove(ctx, fakeNet); err != nil {
		t.Fatal(err)
	}
	if !fp.called("NetworkDriver.DeleteNetwork") {
		t.Errorf("the plugin saw %v, want a NetworkDriver.DeleteNetwork", fp.calls)
	}

	// The CLI against the second engine.
	cliName := id + "-cli"
	if _, err := e.CLI(ctx, "run", "--net=none", "--name", cliName, "-tid", DefaultImage); err != nil {
		t.Fatal(err)
	}
	if out := must[string](t)(e.CLI(ctx, "exec", cliName, "hostname")); len(strings.TrimSpace(out)) != 12 {
		t.Errorf("docker exec %s hostname: %q, want the short container id", cliName, out)
	}
	out := must[string](t)(e.CLI(ctx, "ps", "--format", "{{.Names}}"))
	for _, want := range []string{id + "-none", id + "-host", cliName} {
		if !strings.Contains(out, want) {
			t.Errorf("docker ps on the second engine lacks %s: %q", want, out)
		}
	}

	// Stop with containers still running: every process of the engine
	// goes, and nothing stays mounted, in cgroups or on disk.
	procs := allProcs()
	var mine []proc
	kinds := map[string]bool{}
	for _, p := range procs {
		if strings.Contains(p.cmdline, e.Dir+"/") {
			mine = append(mine, p)
			kinds[strings.Fields(p.cmdline)[0]] = true
		}
	}
	for _, ci := range []string{none, host, cliName} {
		c := must[ContainerInfo](t)(e.Inspect(ctx, ci))
		if p, ok := procs[c.Pid]; ok {
			mine = append(mine, p)
		}
	}
	if !kinds["dockerd"] || !kinds["containerd"] || !kinds["/usr/bin/containerd-shim-runc-v2"] || len(mine) < 6 {
		t.Errorf("before stop: expected dockerd, containerd, shims and 3 containers, found %s", describe(mine))
	}
	if len(cgroupDirs(e.CgroupParent)) == 0 {
		t.Errorf("before stop: no cgroup %s in any hierarchy", e.CgroupParent)
	}
	fp.srv.Close()
	if err := e.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("dockerd stopped with 3 running containers in %v", e.StopDuration.Round(time.Millisecond))
	for _, p := range mine {
		if alive(p) {
			t.Errorf("after stop: process %s still runs", describe([]proc{p}))
		}
	}
	if left := e.Leftovers(); len(left) > 0 {
		t.Errorf("after stop: %v", left)
	}
	if _, err := os.Stat(e.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after stop: %s still exists (%v)", e.Dir, err)
	}
	if m := mountsUnder(os.TempDir() + "/" + filepath.Base(e.Dir)); len(m) > 0 {
		t.Errorf("after stop: mounts %v", m)
	}
	if c := cgroupDirs(e.CgroupParent); len(c) > 0 {
		t.Errorf("after stop: cgroups %v", c)
	}
	if err := e.Ping(ctx); err == nil {
		t.Error("after stop: the engine still answers")
	}
}

// crashChildEnv makes the test binary a child that starts an engine with a
// running container, says where, and waits to be killed.
const crashChildEnv = "DOCKERTEST_CRASH_CHILD_NETNS"

func crashChild(netnsPath string) {
	ctx := context.Background()
	e, err := Start(ctx, EngineOptions{NetnsPath: netnsPath, Name: "crash"})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	if err := e.EnsureImage(ctx, DefaultImage); err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	ci, err := e.Run(ctx, RunOptions{Name: "crash", Image: DefaultImage, Network: "none", Tty: true})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	info, _ := e.Inspect(ctx, ci)
	fmt.Println("READY", e.Dir, e.CgroupParent, info.Pid)
	select {}
}

// TestCrashThenSweep: the process owning an engine dies without stopping
// it; Sweep then removes the engine's processes (dockerd, containerd, the
// shim, the container), cgroup and directory.
func TestCrashThenSweep(t *testing.T) {
	l, err := lab.New(labPrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("closing the lab: %v", err)
		}
	})
	fab := must[*lab.Fabric](t)(l.AddFabric("fab", "10.79.0.0/24"))
	h := must[*lab.Host](t)(l.AddHost("host", fab, "10.79.0.1/24", ""))

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+h.Path)
	cmd.Stderr = os.Stderr
	out := must[io.ReadCloser](t)(cmd.StdoutPipe())
	check(t, cmd.Start())
	var dir, cgroup string
	var ctrPid int
	line, err := bufio.NewReader(out).ReadString('\n')
	if _, serr := fmt.Sscanf(line, "READY %s %s %d", &dir, &cgroup, &ctrPid); err != nil || serr != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("crash child: %q %v %v", line, err, serr)
	}
	// Whatever happens below, nothing of the child's engine may stay.
	t.Cleanup(func() { Sweep() })
	var victims []proc
	for _, p := range allProcs() {
		if strings.Contains(p.cmdline, dir+"/") || p.pid == ctrPid {
			victims = append(victims, p)
		}
	}
	if len(victims) < 4 {
		t.Errorf("before the crash: want dockerd, containerd, a shim and the container, found %s", describe(victims))
	}
	check(t, cmd.Process.Kill())
	cmd.Wait()

	// The owner is dead, so Sweep takes the engine apart, whatever state
	// its dockerd's own shutdown (on Pdeathsig) has reached.
	n := 0
	for _, p := range victims {
		if alive(p) {
			n++
		}
	}
	t.Logf("the owner is dead; %d of the engine's %d processes still run; sweeping", n, len(victims))
	if err := Sweep(); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	for _, p := range victims {
		if alive(p) {
			t.Errorf("after Sweep: %s still runs", describe([]proc{p}))
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Sweep: %s still exists (%v)", dir, err)
	}
	if c := cgroupDirs(cgroup); len(c) > 0 {
		t.Errorf("after Sweep: cgroups %v", c)
	}
}

// TestStartFailureSaysWhy: a dockerd that cannot start gives an error with
// the end of its log, and leaves nothing behind.
func TestStartFailureSaysWhy(t *testing.T) {
	l, err := lab.New(labPrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("closing the lab: %v", err)
		}
	})
	ns := must[*lab.Netns](t)(l.AddNetns("bad"))
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"bad-*"))
	e, err := Start(context.Background(), EngineOptions{NetnsPath: ns.Path, Name: "bad", Args: []string{"--no-such-flag"}})
	if err == nil {
		e.Stop()
		t.Fatal("dockerd with an unknown flag started")
	}
	if !strings.Contains(err.Error(), "exited before answering") || !strings.Contains(err.Error(), "no-such-flag") {
		t.Errorf("error does not say why: %v", err)
	}
	t.Logf("as expected: %v", err)
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"bad-*"))
	if len(after) != len(before) {
		t.Errorf("a failed start left %v", after)
	}
	if _, err := Start(context.Background(), EngineOptions{NetnsPath: "/run/netns/no-such-" + l.ID()}); err == nil || !strings.Contains(err.Error(), "no-such-") {
		t.Errorf("start in a missing namespace: %v", err)
	}
}
