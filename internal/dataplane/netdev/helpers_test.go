package netdev

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// runID makes every namespace name unique to this test process, so runs
// side by side (and leftovers of a killed run) never collide.
var runID = func() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

var nsCounter atomic.Int64

// newNetns creates a named namespace for the test and removes it when the
// test ends, pass or fail. Deleting a namespace destroys every interface in
// it, and with a veth its peer in whatever namespace that is.
func newNetns(t testing.TB, tag string) (name, path string) {
	t.Helper()
	name = fmt.Sprintf("nd%s-%d%s", runID, nsCounter.Add(1), tag)
	ipCmd(t, "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	path = "/var/run/netns/" + name
	ipCmd(t, "-n", name, "link", "set", "lo", "up")
	return name, path
}

func ipCmd(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func cmd(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// vethBetween joins two namespaces with a veth pair, addresses both ends and
// brings them up.
func vethBetween(t testing.TB, nsA, ifA, addrA, nsB, ifB, addrB string) {
	t.Helper()
	ipCmd(t, "-n", nsA, "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", nsB)
	for _, side := range [][3]string{{nsA, ifA, addrA}, {nsB, ifB, addrB}} {
		for _, a := range strings.Fields(side[2]) {
			args := []string{"-n", side[0], "addr", "add", a, "dev", side[1]}
			if strings.Contains(a, ":") {
				args = append(args, "nodad")
			}
			ipCmd(t, args...)
		}
		ipCmd(t, "-n", side[0], "link", "set", side[1], "up")
	}
}

func readSysctlIn(t testing.TB, nsPath string, key ...string) string {
	t.Helper()
	var v string
	err := runInNetns(nsPath, func() error {
		b, err := os.ReadFile(sysctlPath(key))
		v = strings.TrimSpace(string(b))
		return err
	})
	if err != nil {
		t.Fatalf("read sysctl %v in %s: %v", key, nsPath, err)
	}
	return v
}

func writeSysctlIn(t testing.TB, nsPath, value string, key ...string) {
	t.Helper()
	if err := writeSysctls(nsPath, []sysctl{{key: key, value: value}}); err != nil {
		t.Fatal(err)
	}
}

// checkTCP proves a path works by a TCP round trip from a socket made in
// fromNs to a listener made in toNs at addr: a real exchange both ways, with
// no dependence on a ping binary. Sockets belong to the namespace they are
// created in, so only creation needs the namespace switch.
func checkTCP(t testing.TB, fromNs, toNs string, addr netip.Addr) {
	t.Helper()
	if err := tcpRoundTrip(fromNs, toNs, addr, 5*time.Second); err != nil {
		t.Fatalf("TCP %s -> %s (%s): %v", fromNs, toNs, addr, err)
	}
}

func tcpRoundTrip(fromNs, toNs string, addr netip.Addr, timeout time.Duration) error {
	var ln net.Listener
	if err := runInNetns(toNs, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	}); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err == nil {
			_, _ = c.Write([]byte("pong"))
		}
	}()
	var c net.Conn
	if err := runInNetns(fromNs, func() (err error) {
		c, err = net.DialTimeout("tcp", ln.Addr().String(), timeout)
		return err
	}); err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("read reply: %w", err)
	}
	if string(buf) != "pong" {
		return fmt.Errorf("reply %q", buf)
	}
	return nil
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }
