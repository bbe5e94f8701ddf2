package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// testPrefix keeps this package's labs apart from the demo's and e2e's, so
// the Sweep at start only ever touches leftovers of earlier runs of these tests.
const testPrefix = "lt"

// rootForward is the root namespace's ip_forward when the tests start; lab
// sysctls must never change it.
var rootForward []byte

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild()
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "internal/lab tests need root (network namespaces)")
		os.Exit(1)
	}
	if err := Require("ip", "ping", "iperf3"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var err error
	if rootForward, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := Sweep(testPrefix); err != nil {
		fmt.Fprintln(os.Stderr, "sweeping leftovers:", err)
	}
	os.Exit(m.Run())
}

func newLab(t *testing.T) *Lab {
	t.Helper()
	l, err := New(testPrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return l
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

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestHostsOnFabricPing(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := ctxT(t)
	f := must[*Fabric](t)(l.AddFabric("fab", "10.0.0.0/24"))
	h1 := must[*Host](t)(l.AddHost("host1", f, "10.0.0.1/24", ""))
	h2 := must[*Host](t)(l.AddHost("host2", f, "10.0.0.2", "")) // length from the fabric

	if h2.IP.String() != "10.0.0.2/24" {
		t.Errorf("host2 IP = %s, want 10.0.0.2/24", h2.IP)
	}
	res, err := Ping(ctx, h1.Netns, h2.Addr(), 3, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 3 || res.Received != 3 || res.AvgRTT <= 0 {
		t.Errorf("ping host1 -> host2: %+v, want 3/3 with an RTT", res)
	}

	// IPv6 on the same fabric.
	if err := h1.AddAddr("eth0", "fd00:10::1/64"); err != nil {
		t.Fatal(err)
	}
	if err := h2.AddAddr("eth0", "fd00:10::2/64"); err != nil {
		t.Fatal(err)
	}
	if !Reachable(ctx, h2.Netns, netip.MustParseAddr("fd00:10::1")) {
		t.Error("host2 cannot reach host1 over IPv6")
	}

	// An address nobody has: a result with nothing received, not an error.
	res, err = Ping(ctx, h1.Netns, netip.MustParseAddr("10.0.0.77"), 2, 300*time.Millisecond)
	if err != nil {
		t.Fatalf("ping to nobody: %v", err)
	}
	if res.Received != 0 || res.Sent != 2 {
		t.Errorf("ping to nobody: %+v", res)
	}

	// Hosts start with forwarding off, whatever the root namespace has,
	// and setting it there leaves the root namespace alone.
	if v, err := h1.Sysctl("net.ipv4.ip_forward"); err != nil || v != "0" {
		t.Errorf("host ip_forward = %q, %v; want 0", v, err)
	}
	if v, err := h1.Sysctl("net/ipv6/conf/all/forwarding"); err != nil || v != "0" {
		t.Errorf("host IPv6 forwarding = %q, %v; want 0", v, err)
	}
	if rootFwd, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err != nil || string(rootFwd) != string(rootForward) {
		t.Errorf("root ip_forward changed from %q to %q (%v)", rootForward, rootFwd, err)
	}

	// Duplicate addresses and names are refused with a clear error.
	if _, err := l.AddHost("host3", f, "10.0.0.1/24", ""); err == nil || !strings.Contains(err.Error(), "already used by host1") {
		t.Errorf("duplicate address: err = %v", err)
	}
	if _, err := l.AddHost("host1", f, "10.0.0.9/24", ""); err == nil {
		t.Error("duplicate host name accepted")
	}
	// The failed attempt gave its address back.
	if _, err := l.AddHost("host5", f, "10.0.0.9/24", ""); err != nil {
		t.Errorf("address of a failed host not reusable: %v", err)
	}
	if _, err := l.AddHost("host4", f, "10.9.0.1/24", ""); err == nil {
		t.Error("address outside the fabric accepted")
	}
}

// TestPinnedNeighbours: on a pinned fabric every member, the ones plugged in
// before PinNeighbours and after, holds a permanent entry with the right MAC
// for every other, so traffic flows with no address resolved.
func TestPinnedNeighbours(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := ctxT(t)
	f := must[*Fabric](t)(l.AddFabric("fab", "10.0.0.0/24"))
	hosts := []*Host{
		must[*Host](t)(l.AddHost("host1", f, "10.0.0.1/24", "")),
		must[*Host](t)(l.AddHost("host2", f, "10.0.0.2/24", "")),
	}
	if err := f.PinNeighbours(); err != nil {
		t.Fatal(err)
	}
	hosts = append(hosts, must[*Host](t)(l.AddHost("host3", f, "10.0.0.3/24", "")))
	macOf := map[string]string{}
	for _, h := range hosts {
		link, err := h.Netlink().LinkByName(h.Iface)
		if err != nil {
			t.Fatal(err)
		}
		macOf[h.Addr().String()] = link.Attrs().HardwareAddr.String()
	}
	for _, h := range hosts {
		neighs, err := h.Netlink().NeighList(0, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, n := range neighs {
			if n.State&netlink.NUD_PERMANENT != 0 {
				got[n.IP.String()] = n.HardwareAddr.String()
			}
		}
		for _, o := range hosts {
			if o == h {
				continue
			}
			if got[o.Addr().String()] != macOf[o.Addr().String()] {
				t.Errorf("%s: permanent entry for %s = %q, want %s", h.Label, o.Addr(), got[o.Addr().String()], macOf[o.Addr().String()])
			}
		}
	}
	// The pinned MACs are the right ones: host3 (pinned on joining) and
	// host1 (pinned by PinNeighbours) reach each other. (A wrong MAC would
	// lose every packet; the first may go before host3's link has carrier.)
	if !Reachable(ctx, hosts[2].Netns, hosts[0].Addr()) {
		t.Error("host3 cannot reach host1")
	}
}

// TestDisableIPv6: after DisableIPv6 no interface of the lab, made before or
// after, holds an IPv6 address (so none joins a group or holds a neighbour
// entry), and IPv4 still flows.
func TestDisableIPv6(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := ctxT(t)
	f := must[*Fabric](t)(l.AddFabric("fab", "10.0.0.0/24"))
	h1 := must[*Host](t)(l.AddHost("host1", f, "10.0.0.1/24", ""))
	if err := l.DisableIPv6(); err != nil {
		t.Fatal(err)
	}
	h2 := must[*Host](t)(l.AddHost("host2", f, "10.0.0.2/24", ""))
	for _, ns := range []*Netns{f.Netns, h1.Netns, h2.Netns} {
		addrs, err := ns.Netlink().AddrList(nil, netlink.FAMILY_V6)
		if err != nil {
			t.Fatal(err)
		}
		if len(addrs) != 0 {
			t.Errorf("%s: IPv6 addresses %v after DisableIPv6", ns.Label, addrs)
		}
	}
	if !Reachable(ctx, h2.Netns, h1.Addr()) {
		t.Error("host2 cannot reach host1 over IPv4")
	}
}

func TestOutsideThroughGateway(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := ctxT(t)
	f := must[*Fabric](t)(l.AddFabric("fab", "10.0.0.0/24"))
	out := must[*Outside](t)(l.AddOutside("inet", f, "10.0.0.254/24", "198.51.100.0/24"))
	h := must[*Host](t)(l.AddHost("host1", f, "10.0.0.1/24", "10.0.0.254"))

	if out.IP != netip.MustParseAddr("198.51.100.1") || out.GatewayIP != netip.MustParseAddr("10.0.0.254") {
		t.Errorf("outside IP %s gateway %s", out.IP, out.GatewayIP)
	}
	if !Reachable(ctx, h.Netns, out.IP) {
		t.Fatal("host cannot reach the outside namespace through the gateway")
	}
	// A source outside the fabric subnet (what an unmasqueraded workload
	// would send from) gets no reply: the outside only routes back to the fabric.
	if err := h.AddAddr("lo", "192.168.100.1/32"); err != nil {
		t.Fatal(err)
	}
	if out, err := h.Run(ctx, "ping", "-n", "-c", "2", "-i", "0.2", "-W", "0.5", "-I", "192.168.100.1", "198.51.100.1"); err == nil {
		t.Errorf("pool-sourced ping reached the outside:\n%s", out)
	}
	// TCP from the host to a listener in the outside namespace.
	ln, err := out.Listen("tcp", "198.51.100.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	if err := TCPConnect(ctx, h.Netns, netip.AddrPortFrom(out.IP, port), 2*time.Second); err != nil {
		t.Errorf("TCP host -> outside: %v", err)
	}
	if err := TCPConnect(ctx, h.Netns, netip.AddrPortFrom(out.IP, port+1), 2*time.Second); err == nil {
		t.Error("TCP to a closed port succeeded")
	}
}

func TestSecondFabricBehindRouter(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := ctxT(t)
	f1 := must[*Fabric](t)(l.AddFabric("fab1", "10.0.0.0/24"))
	f2 := must[*Fabric](t)(l.AddFabric("fab2", "10.0.1.0/24"))
	r := must[*Netns](t)(l.AddRouter("router", map[*Fabric]string{f1: "10.0.0.253/24", f2: "10.0.1.253/24"}))
	h1 := must[*Host](t)(l.AddHost("host1", f1, "10.0.0.1/24", "10.0.0.253"))
	h2 := must[*Host](t)(l.AddHost("host2", f2, "10.0.1.1/24", "10.0.1.253"))

	res, err := Ping(ctx, h2.Netns, h1.Addr(), 3, time.Second)
	if err != nil || res.Received != 3 {
		t.Fatalf("host2 -> host1 across the router: %+v, %v", res, err)
	}
	if v, err := r.Sysctl("net.ipv4.ip_forward"); err != nil || v != "1" {
		t.Errorf("router ip_forward = %q, %v", v, err)
	}
	// The router knows nothing of workload pools.
	out, err := r.Run(ctx, "ip", "route", "get", "192.168.100.1")
	if err == nil {
		t.Errorf("router has a route to a pool address: %s", out)
	}

	// The outside, on fabric 1, reached from fabric 2 through the router.
	o := must[*Outside](t)(l.AddOutside("inet", f1, "10.0.0.254/24", "198.51.100.0/24"))
	if Reachable(ctx, h2.Netns, o.IP) {
		t.Error("outside answered fabric 2 before it had a route back")
	}
	if err := r.AddRoute("default", o.GatewayIP.String()); err != nil {
		t.Fatal(err)
	}
	if err := o.AddReturnRoute(f2.Subnet.String(), "10.0.0.253"); err != nil {
		t.Fatal(err)
	}
	if !Reachable(ctx, h2.Netns, o.IP) {
		t.Error("host on fabric 2 cannot reach the outside through router and gateway")
	}
}

func TestNetnsDoRunStart(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := ctxT(t)
	f := must[*Fabric](t)(l.AddFabric("fab", "10.0.0.0/24"))
	h := must[*Host](t)(l.AddHost("host1", f, "10.0.0.1/24", ""))
	w := must[*Netns](t)(l.AddWorkloadNetns(h, "wl1"))
	if w.Name != l.ID()+"-host1-wl1" || w.Path != filepath.Join(NetnsDir, w.Name) {
		t.Errorf("workload ns %s at %s", w.Name, w.Path)
	}

	// Do sees the namespace's interfaces, then the caller's view is back.
	var inside []string
	if err := h.Do(func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			inside = append(inside, i.Name)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(inside)
	if !slices.Equal(inside, []string{"eth0", "lo"}) {
		t.Errorf("interfaces inside host1: %v", inside)
	}
	errBoom := errors.New("boom")
	if err := w.Do(func() error { return errBoom }); err != errBoom {
		t.Errorf("Do error = %v", err)
	}
	func() {
		defer func() {
			if recover() != "p" {
				t.Error("panic in Do was not re-raised")
			}
		}()
		w.Do(func() error { panic("p") })
	}()

	out, err := w.Run(ctx, "ip", "-o", "link")
	if err != nil || !strings.Contains(out, "lo:") || strings.Contains(out, "eth0") {
		t.Errorf("links in empty workload ns: %q %v", out, err)
	}
	if _, err := w.Run(ctx, "sh", "-c", "echo oops-output; exit 3"); err == nil || !strings.Contains(err.Error(), "oops-output") {
		t.Errorf("Run error should carry the output: %v", err)
	}

	// A background process, its log, and Stop by process group (the sleep
	// below is the shell's child and must go too).
	p, err := h.Start("sh", "-c", "echo started; ip -o addr show dev eth0; sleep 300 & wait")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.Log(), "10.0.0.1/24") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(p.Log(), "started") || !strings.Contains(p.Log(), "10.0.0.1/24") {
		t.Errorf("log: %q", p.Log())
	}
	if err := p.Stop(); err != nil {
		t.Error(err)
	}
	if !p.Exited() {
		t.Error("process still running after Stop")
	}
	// SIGKILLed children may stay zombies for a moment until init reaps them.
	var left string
	for range 50 {
		out, _ := exec.Command("ps", "-e", "-o", "pgid=,stat=,pid=,comm=").Output()
		left = ""
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) > 1 && f[0] == fmt.Sprint(p.Pid) && !strings.HasPrefix(f[1], "Z") {
				left += line + "\n"
			}
		}
		if left == "" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if left != "" {
		t.Errorf("process group still has live members after Stop:\n%s", left)
	}
}

func TestIperf3(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := ctxT(t)
	f := must[*Fabric](t)(l.AddFabric("fab", "10.0.0.0/24"))
	h1 := must[*Host](t)(l.AddHost("host1", f, "10.0.0.1/24", ""))
	h2 := must[*Host](t)(l.AddHost("host2", f, "10.0.0.2/24", ""))
	res, err := Iperf3(ctx, h1.Netns, h2.Netns, h1.Addr(), 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("iperf3 host2 -> host1 through the fabric bridge: %.2f Gbit/s, %d retransmits, %.1f s, %v CPU (%.2f s per GB)",
		res.Gbps, res.Retransmits, res.Seconds, res.CPU, res.CPU.Seconds()/res.GB())
	// Moving bytes costs the client and the server CPU; zero would mean
	// the rusage of one of them was lost.
	if res.Gbps <= 0 || res.Seconds < 1 || res.CPU <= 0 {
		t.Errorf("iperf3: %+v", res)
	}
}

// rootState lists named namespaces and root-namespace links.
func rootState(t *testing.T) (nss, links []string) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			nss = append(nss, f[0])
		}
	}
	out, err = exec.Command("ip", "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v: %s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			links = append(links, strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":"))
		}
	}
	return nss, links
}

func TestCloseRemovesEverything(t *testing.T) {
	t.Parallel()
	_, linksBefore := rootState(t)
	l, err := New(testPrefix)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			l.Close()
		}
	}()
	f1 := must[*Fabric](t)(l.AddFabric("fab1", "10.0.0.0/24"))
	f2 := must[*Fabric](t)(l.AddFabric("fab2", "10.0.1.0/24"))
	must[*Netns](t)(l.AddRouter("router", map[*Fabric]string{f1: "10.0.0.253", f2: "10.0.1.253"}))
	must[*Outside](t)(l.AddOutside("inet", f1, "10.0.0.254/24", "198.51.100.0/24"))
	h := must[*Host](t)(l.AddHost("host1", f1, "10.0.0.1/24", "10.0.0.254"))
	w := must[*Netns](t)(l.AddWorkloadNetns(h, "wl"))
	p := must[*Proc](t)(h.Start("sleep", "300"))
	must[net.Listener](t)(w.Listen("tcp", "127.0.0.1:0"))

	nss, _ := rootState(t)
	var ours int
	for _, n := range nss {
		if strings.HasPrefix(n, l.ID()+"-") {
			ours++
		}
	}
	// fab1, fab2, router, inet, inet-gw, host1, host1-wl
	if ours != 7 {
		t.Errorf("lab namespaces while open: %d, want 7 (%v)", ours, nss)
	}

	closed = true
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("Close took %v", time.Since(start))
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if !p.Exited() {
		t.Error("process started in the lab is still running")
	}
	nss, linksAfter := rootState(t)
	for _, n := range nss {
		if strings.Contains(n, l.ID()) {
			t.Errorf("namespace %s left after Close", n)
		}
	}
	for _, ln := range linksAfter {
		if !slices.Contains(linksBefore, ln) {
			t.Errorf("root namespace gained link %s", ln)
		}
	}
	for _, pth := range []string{recordPath(l.ID()), l.LogDir()} {
		if _, err := os.Stat(pth); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after Close (%v)", pth, err)
		}
	}
	if _, err := l.AddNetns("late"); !errors.Is(err, ErrClosed) {
		t.Errorf("AddNetns after Close: %v", err)
	}
}

// deadPid returns the pid of a process that has exited and been reaped.
func deadPid(t *testing.T) int {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func TestSweep(t *testing.T) {
	// Not parallel: it sweeps this test prefix, and while the other tests'
	// labs are alive and recorded (so safe), keeping it alone makes a
	// failure easy to read.
	dead := newLab(t)
	live := newLab(t)
	f := must[*Fabric](t)(dead.AddFabric("fab", "10.0.0.0/24"))
	must[*Host](t)(dead.AddHost("host1", f, "10.0.0.1/24", ""))
	must[*Netns](t)(live.AddNetns("alive"))

	// The dead lab's creator "is gone": its record names a reaped pid.
	if err := os.WriteFile(recordPath(dead.ID()), fmt.Appendf(nil, "%d 12345\n", deadPid(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	// A namespace carrying a run id of this prefix but with no record at all.
	var b [2]byte
	rand.Read(b[:])
	orphanID := testPrefix + hex.EncodeToString(b[:])
	orphan := orphanID + "-orphan"
	if out, err := exec.Command("ip", "netns", "add", orphan).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	defer deleteNamespace(orphan)

	var err error
	if rootForward, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := Sweep(testPrefix); err != nil {
		t.Fatal(err)
	}
	nss, _ := rootState(t)
	for _, n := range nss {
		if strings.HasPrefix(n, dead.ID()+"-") || n == orphan {
			t.Errorf("Sweep left %s", n)
		}
	}
	if !slices.Contains(nss, live.ID()+"-alive") {
		t.Errorf("Sweep removed a live lab's namespace (have %v)", nss)
	}
	if _, err := os.Stat(recordPath(dead.ID())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dead lab's record still there: %v", err)
	}
	if _, err := os.Stat(recordPath(live.ID())); err != nil {
		t.Errorf("live lab's record: %v", err)
	}
	// Closing the swept lab afterwards is harmless (Cleanup checks the error).
}

const crashChildEnv = "CALICO_LAB_CRASH_CHILD"

// crashChild is the test binary re-run as a process that builds a lab,
// starts a process in it, reports, and waits to be killed without Close.
func crashChild() {
	l, err := New(testPrefix)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	f, err := l.AddFabric("fab", "10.0.0.0/24")
	if err == nil {
		var h *Host
		if h, err = l.AddHost("host1", f, "10.0.0.1/24", ""); err == nil {
			var p *Proc
			if p, err = h.Start("sleep", "300"); err == nil {
				st, _ := procStartTime(p.Pid)
				fmt.Println(l.ID(), p.Pid, st)
				select {} // until killed
			}
		}
	}
	l.Close()
	fmt.Println("error", err)
	os.Exit(1)
}

// TestCrashThenSweep kills a lab's creator outright (no Close): what it
// started must die with it, and Sweep must remove the namespaces it left.
func TestCrashThenSweep(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), crashChildEnv+"=1")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	var id string
	var pid int
	var start uint64
	if _, err := fmt.Fscan(stdout, &id, &pid, &start); err != nil || id == "error" {
		t.Fatalf("child: %v %s", err, id)
	}
	cmd.Process.Kill()
	cmd.Wait()
	killed = true

	// Pdeathsig: the child's process dies with it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := procStartTime(pid)
		if err != nil || st != start {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d started by the killed lab is still running", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(namespacesOf(id)); n != 2 {
		t.Fatalf("killed lab %s left %d namespaces, want 2 (fab, host1)", id, n)
	}
	if err := Sweep(testPrefix); err != nil {
		t.Fatal(err)
	}
	if left := namespacesOf(id); len(left) != 0 {
		t.Errorf("after Sweep: %v", left)
	}
	for _, p := range []string{recordPath(id), logDirOf(id)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after Sweep %s: %v", p, err)
		}
	}
}

// TestConcurrentHosts builds hosts on one fabric from several goroutines, as
// the e2e tests and the bench do to save time.
func TestConcurrentHosts(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := ctxT(t)
	f := must[*Fabric](t)(l.AddFabric("fab", "10.0.0.0/24"))
	const n = 6
	hosts := make([]*Host, n)
	errs := make([]error, n)
	done := make(chan int)
	for i := range n {
		go func() {
			hosts[i], errs[i] = l.AddHost(fmt.Sprintf("h%d", i), f, fmt.Sprintf("10.0.0.%d/24", i+1), "")
			done <- i
		}()
	}
	for range n {
		<-done
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("host %d: %v", i, err)
		}
	}
	for _, h := range hosts[1:] {
		if !Reachable(ctx, h.Netns, hosts[0].Addr()) {
			t.Errorf("%s cannot reach %s", h.Label, hosts[0].Label)
		}
	}
}
