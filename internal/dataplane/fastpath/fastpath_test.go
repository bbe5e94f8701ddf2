package fastpath

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// The lab prefix of this package's worlds.
const labPrefix = "cfp"

func TestMain(m *testing.M) {
	// The worlds run the real agents (their nftables ruleset is what the
	// fast path must not bypass): they need calicoctl and calico-node.
	e2etest.BinDir = os.Getenv("CALICO_BIN")
	if e2etest.BinDir == "" && os.Geteuid() == 0 {
		fmt.Fprintln(os.Stderr, "CALICO_BIN is not set: run `make build` and set CALICO_BIN=$PWD/bin")
		os.Exit(1)
	}
	walkthrough.Down(labPrefix)
	os.Exit(m.Run())
}

type fpHost struct {
	*lab.Host
	m *Manager
}

type fpWL struct {
	*walkthrough.Workload
	host  *fpHost
	iface string
}

type fpWorld struct {
	w     *walkthrough.World
	hosts []*fpHost
	wls   map[string]*fpWL
}

// newWorld builds the walkthrough's two hosts with real agents, a
// nat-outgoing pool, the profile FP, and the workloads named in specs
// (name -> host index, IP, whether it gets the profile). A workload
// without a profile sends and receives nothing.
func newWorld(t *testing.T, specs []wlSpec) *fpWorld {
	t.Helper()
	return newWorldWith(t, walkthrough.Options{}, specs)
}

// newWorldPool is newWorld with more flags for `calicoctl pool add` (an
// encapsulation: --ipip, --vxlan).
func newWorldPool(t *testing.T, specs []wlSpec, poolFlags ...string) *fpWorld {
	t.Helper()
	return newWorldWith(t, walkthrough.Options{}, specs, poolFlags...)
}

// newWorldWith is newWorld with the world's options (extra node flags) and
// pool flags.
func newWorldWith(t *testing.T, opts walkthrough.Options, specs []wlSpec, poolFlags ...string) *fpWorld {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root: makes network namespaces and loads BPF programs; CI runs as root")
	}
	// The tests here attach the programs with their own managers (fh.m):
	// the agents, which would otherwise attach theirs by default and fight
	// over the same interfaces, run with the fast path off, unless the
	// test chose (TestAgentFastPath tests the agents' own).
	if _, set := os.LookupEnv("CALICO_FASTPATH"); !set {
		t.Setenv("CALICO_FASTPATH", "off") // `calicoctl node` passes it on to calico-node
	}
	w := e2etest.World(t, labPrefix, opts, false)
	ctx := e2etest.Ctx(t, 2*time.Minute)
	h1 := w.Hosts[0]
	if _, err := w.Ctl(ctx, h1, append([]string{"pool", "add", walkthrough.Pool, "--nat-outgoing"}, poolFlags...)...); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Ctl(ctx, h1, "profile", "add", "FP"); err != nil {
		t.Fatal(err)
	}
	fw := &fpWorld{w: w, wls: map[string]*fpWL{}}
	for _, h := range w.Hosts {
		fh := &fpHost{Host: h, m: New()}
		t.Cleanup(func() {
			_ = fh.Do(func() error { return fh.m.Apply(Desired{}) })
			fh.m.Close()
		})
		fw.hosts = append(fw.hosts, fh)
	}
	for _, s := range specs {
		fh := fw.hosts[s.host]
		wl, err := w.AddWorkload(ctx, fh.Host, s.name, s.ip)
		if err != nil {
			t.Fatal(err)
		}
		if s.profiled {
			if _, err := w.Ctl(ctx, fh.Host, "container", s.name, "profile", "append", "FP"); err != nil {
				t.Fatal(err)
			}
		}
		fw.wls[s.name] = &fpWL{Workload: wl, host: fh, iface: ifaceTo(t, fh, wl.IP)}
	}
	for _, a := range fw.wls {
		for _, b := range fw.wls {
			if a != b && specFor(specs, a.Name).profiled && specFor(specs, b.Name).profiled {
				if ok, detail := walkthrough.Probe(ctx, a.Netns, b.IP, true); !ok {
					t.Fatalf("%s cannot reach %s before the fast path is on: %s", a.Name, b.Name, detail)
				}
			}
		}
	}
	return fw
}

type wlSpec struct {
	name     string
	host     int
	ip       string
	profiled bool
}

func specFor(specs []wlSpec, name string) wlSpec {
	for _, s := range specs {
		if s.name == name {
			return s
		}
	}
	return wlSpec{}
}

// ifaceTo is the interface h routes ip out of (the workload's cali*),
// once h's agent has routed it: `container add` returns before the agent
// has seen the new endpoint (until then the block's blackhole route
// answers, and RouteGet fails).
func ifaceTo(t *testing.T, h *fpHost, ip netip.Addr) string {
	t.Helper()
	var name string
	e2etest.WaitFor(t, 15*time.Second, fmt.Sprintf("%s routes %s into a workload interface", h.Label, ip), func() (bool, string) {
		err := h.Do(func() error {
			rs, err := netlink.RouteGet(ip.AsSlice())
			if err != nil || len(rs) == 0 {
				return fmt.Errorf("route to %s: %v", ip, err)
			}
			l, err := netlink.LinkByIndex(rs[0].LinkIndex)
			if err != nil {
				return err
			}
			name = l.Attrs().Name
			return nil
		})
		if err != nil {
			return false, err.Error()
		}
		return strings.HasPrefix(name, "cali"), name
	})
	return name
}

// desired is what the agent would give host h: its workloads' interfaces
// and addresses.
func (fw *fpWorld) desired(h *fpHost, on bool) Desired {
	d := Desired{Enabled: on, LocalIP: h.Addr()}
	names := make([]string, 0, len(fw.wls))
	for n := range fw.wls {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if wl := fw.wls[n]; wl.host == h {
			d.Workloads = append(d.Workloads, Workload{Iface: wl.iface, Addrs: []netip.Addr{wl.IP}})
		}
	}
	return d
}

func (fw *fpWorld) set(t *testing.T, on bool) {
	t.Helper()
	for _, h := range fw.hosts {
		if err := h.Do(func() error { return h.m.Apply(fw.desired(h, on)) }); err != nil {
			t.Fatalf("%s: fast path on=%v: %v", h.Label, on, err)
		}
	}
}

func delta(before, after map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

// softirqTime is the machine's softirq time from /proc/stat (USER_HZ ticks
// of every CPU): forwarding work done outside any process's account.
func softirqTime() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("unexpected /proc/stat line %q", line)
	}
	v, err := strconv.ParseUint(f[7], 10, 64)
	if err != nil {
		return 0, err
	}
	return time.Duration(v) * time.Second / 100, nil
}

type sample struct{ gbps, cpuGB, sirqGB, ksoftGB float64 }

// ksoftirqdTime is the CPU time of the ksoftirqd threads: softirq work
// deferred out of the senders' and receivers' context, which their rusage
// does not hold.
func ksoftirqdTime() time.Duration {
	var total time.Duration
	dirs, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, c := range dirs {
		b, err := os.ReadFile(c)
		if err != nil || !strings.HasPrefix(string(b), "ksoftirqd/") {
			continue
		}
		st, err := os.ReadFile(filepath.Join(filepath.Dir(c), "stat"))
		if err != nil {
			continue
		}
		_, rest, ok := strings.Cut(string(st), ") ")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseUint(f[11], 10, 64)
		sy, _ := strconv.ParseUint(f[12], 10, 64)
		total += time.Duration(u+sy) * time.Second / 100
	}
	return total
}

func measure(t *testing.T, ctx context.Context, server, client *lab.Netns, ip netip.Addr, secs int) sample {
	t.Helper()
	s0, _ := softirqTime()
	k0 := ksoftirqdTime()
	r, err := lab.Iperf3(ctx, server, client, ip, secs, 1)
	if err != nil {
		t.Fatal(err)
	}
	s1, _ := softirqTime()
	k1 := ksoftirqdTime()
	gb := r.GB()
	if gb <= 0 {
		t.Fatalf("iperf3 moved nothing: %+v", r)
	}
	return sample{gbps: r.Gbps, cpuGB: r.CPU.Seconds() / gb, sirqGB: (s1 - s0).Seconds() / gb, ksoftGB: (k1 - k0).Seconds() / gb}
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// TestMeasureCPUPerGB is step 1's A/B measurement, not a pass/fail test:
// with FASTPATH_ROUNDS=N it alternates, N rounds, host-to-host (the
// baseline), workload cross-host and workload same-host with the fast path
// off and on (the order flipped every round), and logs Gbit/s and CPU s per
// GB: iperf3's client and server (rusage, as the bench charges them) and
// the machine's softirq time. FASTPATH_PERF=DIR also records `perf record
// -a -g` of one extra cross-host run in each mode there.
func TestMeasureCPUPerGB(t *testing.T) {
	rounds, _ := strconv.Atoi(os.Getenv("FASTPATH_ROUNDS"))
	if rounds <= 0 {
		t.Skip("a measurement: set FASTPATH_ROUNDS=N to run it")
	}
	secs := 4
	if s, _ := strconv.Atoi(os.Getenv("FASTPATH_SECONDS")); s > 0 {
		secs = s
	}
	fw := newWorld(t, []wlSpec{{"fp-a1", 0, "192.168.100.1", true}, {"fp-a2", 0, "192.168.100.2", true}, {"fp-b1", 1, "192.168.100.65", true}})
	ctx := e2etest.Ctx(t, 30*time.Minute)
	h1, h2 := fw.hosts[0], fw.hosts[1]
	a1, a2, b1 := fw.wls["fp-a1"], fw.wls["fp-a2"], fw.wls["fp-b1"]
	type key struct {
		path string
		on   bool
	}
	res := map[key][]sample{}
	run := func(on bool) {
		fw.set(t, on)
		// The uplink program also sees host-to-host packets (and passes
		// them): the baseline is measured in both modes.
		res[key{"host", on}] = append(res[key{"host", on}], measure(t, ctx, h1.Netns, h2.Netns, h1.Addr(), secs))
		b0, b1s := h1.m.Stats(), h2.m.Stats()
		res[key{"cross", on}] = append(res[key{"cross", on}], measure(t, ctx, a1.Netns, b1.Netns, a1.IP, secs))
		res[key{"same", on}] = append(res[key{"same", on}], measure(t, ctx, a1.Netns, a2.Netns, a1.IP, secs))
		if on {
			t.Logf("counters: host1 %v, host2 %v", delta(b0, h1.m.Stats()), delta(b1s, h2.m.Stats()))
		}
	}
	for r := 0; r < rounds; r++ {
		first := r%2 == 0
		run(first)
		run(!first)
	}
	for _, k := range []key{{"host", false}, {"host", true}, {"cross", false}, {"cross", true}, {"same", false}, {"same", true}} {
		xs, host := res[k], res[key{"host", k.on}]
		var g, c, s, ks, gr, cr []float64
		for i, x := range xs {
			g, c, s, ks = append(g, x.gbps), append(c, x.cpuGB), append(s, x.sirqGB), append(ks, x.ksoftGB)
			if i < len(host) {
				gr = append(gr, x.gbps/host[i].gbps)
				cr = append(cr, (x.cpuGB+x.ksoftGB)/(host[i].cpuGB+host[i].ksoftGB))
			}
		}
		// With tick accounting, softirq work in iperf3's context is in its
		// rusage already (and in /proc/stat's softirq too, so the two are
		// not added); ksoftirqd's time is the deferred rest.
		t.Logf("%-5s fast=%-5v: %.2f Gbit/s (ratio to host %.3f); CPU s/GB: iperf3 %.3f + ksoftirqd %.3f (ratio to host %.3f), machine softirq %.3f; Gbit/s %v",
			k.path, k.on, median(g), median(gr), median(c), median(ks), median(cr), median(s), round2(g))
		t.Logf("      iperf3 CPU s/GB %v ksoftirqd %v softirq %v", round2(c), round2(ks), round2(s))
	}
	for _, path := range []string{"cross", "same"} {
		off, on := res[key{path, false}], res[key{path, true}]
		var cr, gr []float64
		for i := range min(len(off), len(on)) {
			cr = append(cr, (on[i].cpuGB+on[i].ksoftGB)/(off[i].cpuGB+off[i].ksoftGB))
			gr = append(gr, on[i].gbps/off[i].gbps)
		}
		t.Logf("%s, fast path on / off, paired by round: CPU s/GB %.3f %v, Gbit/s %.3f %v", path, median(cr), round2(cr), median(gr), round2(gr))
	}
	if dir := os.Getenv("FASTPATH_PERF"); dir != "" {
		for _, on := range []bool{false, true} {
			fw.set(t, on)
			out := filepath.Join(dir, fmt.Sprintf("fast-%v.data", on))
			p := exec.Command("perf", "record", "-a", "-g", "-o", out, "--", "sleep", strconv.Itoa(secs+1))
			if err := p.Start(); err != nil {
				t.Fatal(err)
			}
			measure(t, ctx, a1.Netns, b1.Netns, a1.IP, secs)
			if err := p.Wait(); err != nil {
				t.Logf("perf: %v", err)
			}
		}
	}
}

func round2(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = float64(int(x*100+0.5)) / 100
	}
	return out
}

// sniffer counts IPv4 packets arriving in a namespace whose payload
// contains a marker, whatever the sockets there make of them.
type sniffer struct {
	mu  sync.Mutex
	got map[string]int
}

func newSniffer(t *testing.T, ns *lab.Netns, markers ...string) *sniffer {
	t.Helper()
	var fd int
	err := ns.Do(func() (err error) {
		fd, err = syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM, int(htons(syscall.ETH_P_IP)))
		return err
	})
	if err != nil {
		t.Fatalf("packet socket in %s: %v", ns.Name, err)
	}
	f := os.NewFile(uintptr(fd), "sniffer")
	t.Cleanup(func() { f.Close() })
	s := &sniffer{got: map[string]int{}}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := f.Read(buf)
			if err != nil {
				return
			}
			for _, m := range markers {
				if strings.Contains(string(buf[:n]), m) {
					s.mu.Lock()
					s.got[m]++
					s.mu.Unlock()
				}
			}
		}
	}()
	return s
}

func (s *sniffer) count(m string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[m]
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func csum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// sendTCP sends n hand-made TCP segments (ACK|PSH, payload) from src to dst
// out of ns through a raw socket: the source is whatever the sender claims.
func sendTCP(ns *lab.Netns, src, dst netip.AddrPort, payload string, n int) error {
	return sendRaw(ns, dst.Addr(), tcpPacket(src, dst, payload), n)
}

// sendRaw sends n copies of the IPv4 packet pkt (its own header included)
// to dst out of ns through a raw socket.
func sendRaw(ns *lab.Netns, dst netip.Addr, pkt []byte, n int) error {
	return ns.Do(func() error {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		for i := 0; i < n; i++ {
			if err := syscall.Sendto(fd, pkt, 0, &syscall.SockaddrInet4{Addr: dst.As4()}); err != nil {
				return err
			}
		}
		return nil
	})
}

// ipv4Header is a 20-byte IPv4 header (TTL 64) for a payload of n bytes.
func ipv4Header(src, dst netip.Addr, proto byte, n int) []byte {
	s4, d4 := src.As4(), dst.As4()
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+n))
	ip[8] = 64
	ip[9] = proto
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	binary.BigEndian.PutUint16(ip[10:], csum(ip, 0))
	return ip
}

// tcpPacket is an IPv4 TCP segment (ACK|PSH, payload) from src to dst.
func tcpPacket(src, dst netip.AddrPort, payload string) []byte {
	tcp := make([]byte, 20+len(payload))
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], 1)
	binary.BigEndian.PutUint32(tcp[8:], 1)
	tcp[12] = 5 << 4
	tcp[13] = 0x18 // ACK|PSH
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	copy(tcp[20:], payload)
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	pseudo := append(append(append([]byte{}, s4[:]...), d4[:]...), 0, syscall.IPPROTO_TCP, byte(len(tcp)>>8), byte(len(tcp)))
	var sum uint32
	for i := 0; i < len(pseudo); i += 2 {
		sum += uint32(pseudo[i])<<8 | uint32(pseudo[i+1])
	}
	binary.BigEndian.PutUint16(tcp[16:], csum(tcp, sum))
	return append(ipv4Header(src.Addr(), dst.Addr(), syscall.IPPROTO_TCP, len(tcp)), tcp...)
}

// TestFastPathAttacks, on the real agents' ruleset: honest flows take the
// fast path (its counters move) and still work across hosts and on one
// host; a workload forging another workload's source on that workload's
// established flow is not fast-pathed and never arrives; a workload policy
// denies never gets a packet through, SYN or forged mid-stream segment;
// nat-outgoing flows still work (the normal way).
func TestFastPathAttacks(t *testing.T) {
	fw := newWorld(t, []wlSpec{
		{"fp-a1", 0, "192.168.100.1", true},
		{"fp-a2", 0, "192.168.100.2", true},
		{"fp-b1", 1, "192.168.100.65", true},
		{"fp-b2", 1, "192.168.100.66", true},  // the attacker: profiled, honest source
		{"fp-d1", 1, "192.168.100.67", false}, // no profile: policy denies all of it
	})
	ctx := e2etest.Ctx(t, 5*time.Minute)
	h1, h2 := fw.hosts[0], fw.hosts[1]
	a1, a2, b1, b2, d1 := fw.wls["fp-a1"], fw.wls["fp-a2"], fw.wls["fp-b1"], fw.wls["fp-b2"], fw.wls["fp-d1"]
	fw.set(t, true)
	if s := h1.m.Status(); !strings.HasPrefix(s, "on") {
		t.Fatalf("status %q after enabling", s)
	}

	// Honest bulk TCP across hosts and on one host: it works and is
	// fast-pathed (both directions, both hosts).
	s1, s2 := h1.m.Stats(), h2.m.Stats()
	if _, err := lab.Iperf3(ctx, a1.Netns, b1.Netns, a1.IP, 2, 1); err != nil {
		t.Fatalf("cross-host iperf3 with the fast path: %v", err)
	}
	if _, err := lab.Iperf3(ctx, a1.Netns, a2.Netns, a1.IP, 2, 1); err != nil {
		t.Fatalf("same-host iperf3 with the fast path: %v", err)
	}
	d1s, d2s := delta(s1, h1.m.Stats()), delta(s2, h2.m.Stats())
	t.Logf("honest bulk: host1 %v, host2 %v", d1s, d2s)
	if d1s["fwd_workload"] == 0 || d1s["fwd_uplink"] == 0 || d2s["fwd_workload"] == 0 || d2s["fwd_uplink"] == 0 {
		t.Errorf("honest established flows were not fast-pathed: host1 %v, host2 %v", d1s, d2s)
	}

	// An established flow b1 -> a1:7100 from a fixed port, kept open.
	const port = 7100
	sink(t, a1.Netns, netip.AddrPortFrom(a1.IP, port))
	victim := netip.AddrPortFrom(b1.IP, 41000)
	var conn net.Conn
	if err := b1.Netns.Do(func() (err error) {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(victim), Timeout: 3 * time.Second}
		conn, err = d.DialContext(ctx, "tcp4", fmt.Sprintf("%s:%d", a1.IP, port))
		return err
	}); err != nil {
		t.Fatalf("honest connection: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the handshake's last ACK makes the entry assured
	sn := newSniffer(t, a1.Netns, "HONEST-MARK", "SPOOF-MARK", "DENIED-MARK")
	dst := netip.AddrPortFrom(a1.IP, port)

	// 1. The attacker b2 forges b1's source on b1's established flow.
	s1, s2 = h1.m.Stats(), h2.m.Stats()
	if err := sendTCP(b2.Netns, victim, dst, "SPOOF-MARK", 5); err != nil {
		t.Fatal(err)
	}
	// 2. A workload policy denies: a SYN first (dropped by nftables), then
	// forged mid-stream segments from its own address.
	if err := e2etest.Blocked(ctx, d1.Netns, d1.IP, dst); err != nil {
		t.Errorf("denied workload's connection: %v", err)
	}
	if err := sendTCP(d1.Netns, netip.AddrPortFrom(d1.IP, 41001), dst, "DENIED-MARK", 5); err != nil {
		t.Fatal(err)
	}
	// 3. Honest: the same kind of hand-made segment from b1 itself on its
	// flow. It must arrive (fast-pathed), or the test could not tell a drop
	// from a broken sniffer.
	if err := sendTCP(b1.Netns, victim, dst, "HONEST-MARK", 5); err != nil {
		t.Fatal(err)
	}
	e2etest.WaitFor(t, 5*time.Second, "honest segments arrive", func() (bool, string) {
		return sn.count("HONEST-MARK") == 5, fmt.Sprintf("%d arrived", sn.count("HONEST-MARK"))
	})
	time.Sleep(500 * time.Millisecond)
	if n := sn.count("SPOOF-MARK"); n != 0 {
		t.Errorf("segments forging another workload's source on its flow arrived %d times", n)
	}
	if n := sn.count("DENIED-MARK"); n != 0 {
		t.Errorf("segments from a workload policy denies arrived %d times", n)
	}
	d1s, d2s = delta(s1, h1.m.Stats()), delta(s2, h2.m.Stats())
	t.Logf("attacks: host1 %v, host2 %v", d1s, d2s)
	if d2s["pass_spoof"] < 5 {
		t.Errorf("host2 counters %v: want the 5 forged segments sent the normal way as spoofed", d2s)
	}
	if d2s["pass_no_ct"] < 5 {
		t.Errorf("host2 counters %v: want the denied workload's segments sent the normal way (no conntrack entry)", d2s)
	}
	if d2s["fwd_uplink"] < 5 {
		t.Errorf("host2 counters %v: want the honest segments fast-pathed", d2s)
	}

	// 4. nat-outgoing: a1 to the outside is masqueraded; it works, the
	// normal way.
	s1 = h1.m.Stats()
	if _, err := lab.Iperf3(ctx, fw.w.Outside.Netns, a1.Netns, fw.w.Outside.IP, 1, 1); err != nil {
		t.Fatalf("nat-outgoing flow with the fast path on: %v", err)
	}
	d1s = delta(s1, h1.m.Stats())
	t.Logf("nat-outgoing: host1 %v", d1s)
	if d1s["pass_ct_state"] == 0 {
		t.Errorf("host1 counters %v: want the NATed flow's packets sent the normal way", d1s)
	}

	// Off: programs gone from every interface, status says so, traffic flows.
	fw.set(t, false)
	for _, h := range fw.hosts {
		if err := h.Do(func() error {
			links, err := netlink.LinkList()
			if err != nil {
				return err
			}
			for _, l := range links {
				// (An empty clsact qdisc stays on workload host sides:
				// they are made with it; see tcx.ClsDetach.)
				for p := range ourProgs(l.Attrs().Index) {
					return fmt.Errorf("%s still on %s", p, l.Attrs().Name)
				}
			}
			return nil
		}); err != nil {
			t.Errorf("%s after disabling: %v", h.Label, err)
		}
		if s := h.m.Status(); s != "off" {
			t.Errorf("%s status after disabling = %q", h.Label, s)
		}
	}
	if err := e2etest.Opens(ctx, b1.Netns, netip.Addr{}, dst); err != nil {
		t.Errorf("after disabling: %v", err)
	}
}
