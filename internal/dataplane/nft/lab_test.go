package nft

// A small namespace lab for the kernel tests: a "host" namespace with
// forwarding on, an "outside" namespace behind its default route, and
// workload namespaces wired the Calico way (veth, host side caliX with no
// address and proxy ARP, workload side eth0 with IP/32 and a default route
// via 169.254.1.1 on-link). Production wiring lives elsewhere; this is only
// what the tests need. All traffic stays inside these namespaces, and every
// namespace is deleted by t.Cleanup even when a test fails.

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// requireKernel fails tests that need root, ip and nft when they are
// missing: as every root test of the project, it fails rather than skips,
// so a run without them cannot pass by hiding the kernel tests.
func requireKernel(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("kernel tests need root (they make network namespaces); CI runs as root")
	}
	for _, bin := range []string{"ip", "nft", "sysctl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("kernel tests need %s: install it with scripts/install-deps.sh", bin)
		}
	}
}

func runID(t testing.TB) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "nf" + hex.EncodeToString(b)
}

func sh(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// addNetns creates a namespace and registers its removal first, so nothing
// made afterwards can outlive a failed test.
func addNetns(t testing.TB, name string) {
	t.Helper()
	sh(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v %s", name, err, out)
		}
	})
	sh(t, "ip", "-n", name, "link", "set", "lo", "up")
}

// runIn runs fn on an OS thread switched into namespace ns. The thread is
// never switched back and never unlocked, so Go discards it when the
// goroutine ends and no other goroutine can inherit the namespace. Sockets
// opened and processes started (nft) in fn belong to ns.
func runIn(ns string, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.GetFromName(ns)
		if err != nil {
			done <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			done <- err
			return
		}
		done <- fn()
	}()
	return <-done
}

type workload struct {
	ns, iface string
	ip4, ip6  netip.Addr
}

type lab struct {
	t             *testing.T
	host, outside string
	hostIP        netip.Addr // the host's address on its uplink
	outsideIP     netip.Addr
	wl            map[string]*workload
}

// gatewayV6 is the link-local address of every host-side veth: the MAC is
// set to ee:ee:ee:ee:ee:ee, as Calico does, so workloads can route to it.
const gatewayV6 = "fe80::ecee:eeff:feee:eeee"

func newLab(t *testing.T) *lab { return newLabID(t, runID(t)) }

// newLabID is newLab with namespaces named id-h, id-o, id-NAME.
func newLabID(t *testing.T, id string) *lab {
	l := &lab{t: t, host: id + "-h", outside: id + "-o", wl: map[string]*workload{},
		hostIP: netip.MustParseAddr("172.31.0.1"), outsideIP: netip.MustParseAddr("172.31.0.2")}
	addNetns(t, l.host)
	addNetns(t, l.outside)
	// Every new namespace starts with forwarding off. DAD off so link-local
	// addresses are usable at once.
	sh(t, "ip", "netns", "exec", l.host, "sysctl", "-qw",
		"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
		"net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
	sh(t, "ip", "-n", l.host, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", l.outside)
	sh(t, "ip", "-n", l.host, "addr", "add", "172.31.0.1/24", "dev", "up0")
	sh(t, "ip", "-n", l.host, "link", "set", "up0", "up")
	sh(t, "ip", "-n", l.outside, "addr", "add", "172.31.0.2/24", "dev", "eth0")
	sh(t, "ip", "-n", l.outside, "link", "set", "eth0", "up")
	// The default route also makes proxy ARP answer for 169.254.1.1. The
	// outside has no route back to the pools: only NAT lets it answer.
	sh(t, "ip", "-n", l.host, "route", "add", "default", "via", "172.31.0.2")
	return l
}

// addWorkload wires namespace <id>-<name> to the host through cali<name>.
func (l *lab) addWorkload(name, ip4, ip6 string) *workload {
	t := l.t
	w := &workload{ns: strings.TrimSuffix(l.host, "-h") + "-" + name, iface: "cali" + name,
		ip4: netip.MustParseAddr(ip4), ip6: netip.MustParseAddr(ip6)}
	addNetns(t, w.ns)
	sh(t, "ip", "netns", "exec", w.ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
	sh(t, "ip", "-n", l.host, "link", "add", w.iface, "address", "ee:ee:ee:ee:ee:ee", "type", "veth", "peer", "name", "eth0", "netns", w.ns)
	sh(t, "ip", "netns", "exec", l.host, "sysctl", "-qw",
		"net.ipv4.conf."+w.iface+".proxy_arp=1", "net.ipv4.neigh."+w.iface+".proxy_delay=0")
	sh(t, "ip", "-n", l.host, "link", "set", w.iface, "up")
	sh(t, "ip", "-n", l.host, "route", "add", ip4+"/32", "dev", w.iface)
	sh(t, "ip", "-n", l.host, "-6", "route", "add", ip6+"/128", "dev", w.iface)
	sh(t, "ip", "-n", w.ns, "addr", "add", ip4+"/32", "dev", "eth0")
	sh(t, "ip", "-n", w.ns, "-6", "addr", "add", ip6+"/128", "dev", "eth0", "nodad")
	sh(t, "ip", "-n", w.ns, "link", "set", "eth0", "up")
	sh(t, "ip", "-n", w.ns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0", "onlink")
	sh(t, "ip", "-n", w.ns, "-6", "route", "add", "default", "via", gatewayV6, "dev", "eth0")
	l.wl[name] = w
	return w
}

// listen serves TCP on port in ns: each connection gets "ok\n". The peer
// address of each connection is sent on the returned channel (dropped when
// nobody reads), so a test can see whether it was masqueraded.
func listen(t *testing.T, ns, addr string) <-chan netip.Addr {
	t.Helper()
	var ln net.Listener
	if err := runIn(ns, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	peers := make(chan netip.Addr, 64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case peers <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap():
			default:
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "ok\n")
			c.Close()
		}
	}()
	return peers
}

// tcpProbe connects from ns to dst and reads the listener's greeting, so
// success means packets flowed both ways.
func tcpProbe(ns string, dst netip.AddrPort, timeout time.Duration) error {
	return runIn(ns, func() error {
		c, err := net.DialTimeout("tcp", dst.String(), timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		buf := make([]byte, 3)
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != "ok\n" {
			return fmt.Errorf("unexpected greeting %q", buf)
		}
		return nil
	})
}

// ping sends one ICMP(v6) echo from ns (from address src when valid, like
// ping -I) to dst and waits for the matching reply.
func ping(ns string, src, dst netip.Addr, timeout time.Duration) error {
	return runIn(ns, func() error {
		network, echo, reply := "ip4:icmp", byte(8), byte(0)
		if dst.Is6() {
			network, echo, reply = "ip6:ipv6-icmp", 128, 129
		}
		laddr := ""
		if src.IsValid() {
			laddr = src.String()
		}
		c, err := net.ListenPacket(network, laddr)
		if err != nil {
			return err
		}
		defer c.Close()
		var idb [2]byte
		rand.Read(idb[:])
		id := binary.BigEndian.Uint16(idb[:])
		msg := []byte{echo, 0, 0, 0, idb[0], idb[1], 0, 1, 'n', 'f', 't', '!'}
		if dst.Is4() {
			// The kernel fills in the ICMPv6 checksum, not the ICMP one.
			binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg))
		}
		if _, err := c.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(timeout))
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return err
			}
			fa, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP)
			if n >= 8 && buf[0] == reply && binary.BigEndian.Uint16(buf[4:]) == id && fa.Unmap() == dst {
				return nil
			}
		}
	})
}

func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

const (
	reachTimeout   = 3 * time.Second
	blockedTimeout = 400 * time.Millisecond // a drop is silent: wait this long
)

// expect asserts whether a probe got through.
func expect(t *testing.T, what string, want bool, probe func(time.Duration) error) {
	t.Helper()
	timeout := reachTimeout
	if !want {
		timeout = blockedTimeout
	}
	err := probe(timeout)
	switch {
	case want && err != nil:
		t.Errorf("%s: want reachable, got %v", what, err)
	case !want && err == nil:
		t.Errorf("%s: want blocked, but it got through", what)
	case !want && !isTimeout(err):
		// Anything but a timeout means something other than our silent drop
		// stopped it (a route, a refused port): the test would prove nothing.
		t.Errorf("%s: blocked, but by %v rather than a silent drop", what, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (l *lab) tcp(from string, to netip.Addr, port uint16) func(time.Duration) error {
	return func(d time.Duration) error { return tcpProbe(from, netip.AddrPortFrom(to, port), d) }
}

func (l *lab) ping(from string, src, to netip.Addr) func(time.Duration) error {
	return func(d time.Duration) error { return ping(from, src, to, d) }
}

// udpEcho serves UDP on addr in ns: every datagram's payload is sent on the
// returned channel (dropped when nobody reads) and echoed back.
func udpEcho(t *testing.T, ns, addr string) <-chan string {
	t.Helper()
	var c net.PacketConn
	if err := runIn(ns, func() (err error) {
		c, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatalf("udp listen %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { c.Close() })
	got := make(chan string, 64)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			select {
			case got <- string(buf[:n]):
			default:
			}
			c.WriteTo(buf[:n], from)
		}
	}()
	return got
}

// udpSend sends payload from src to dst inside ns; with wait > 0 it also
// waits that long for the echo.
// injectForged sends one datagram from ns with the forged source flow to
// dst and says whether the echo server behind got received it (earlier
// datagrams drained first).
func injectForged(got <-chan string, ns string, flow, dst netip.AddrPort) bool {
	for len(got) > 0 {
		<-got
	}
	udpSend(ns, flow, dst, "forged", 0)
	select {
	case <-got:
		return true
	case <-time.After(blockedTimeout):
		return false
	}
}

func udpSend(ns string, src, dst netip.AddrPort, payload string, wait time.Duration) error {
	return runIn(ns, func() error {
		c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(src), net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write([]byte(payload)); err != nil || wait <= 0 {
			return err
		}
		c.SetReadDeadline(time.Now().Add(wait))
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if string(buf[:n]) != payload {
			return fmt.Errorf("echo %q, want %q", buf[:n], payload)
		}
		return nil
	})
}
