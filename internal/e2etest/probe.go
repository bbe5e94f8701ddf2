package e2etest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/lab"
)

// Probes that end-to-end tests use to show a packet delivered or dropped.
// A TCP probe tells a silent drop (our policy) from a refusal or an
// unreachable destination (which proves nothing about policy).

// Ctx is a context that ends after d or with the test.
func Ctx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// WaitFor polls cond every 200 ms until it holds or d passes, and returns how
// long it took. It fails the test with the last state seen.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	return WaitEvery(t, d, 200*time.Millisecond, what, cond)
}

// WaitEvery is WaitFor polling every interval: short for a test that
// measures how long something takes.
func WaitEvery(t testing.TB, d, interval time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < d {
		var ok bool
		if ok, last = cond(); ok {
			return time.Since(start)
		}
		time.Sleep(interval)
	}
	t.Fatalf("%s: not true after %s; last seen:\n%s", what, d, last)
	return 0
}

// AP joins an address and a port.
func AP(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

// ListenTCP opens a TCP listener in ns unless something listens on the
// port already (closed with the lab).
func ListenTCP(t testing.TB, ns *lab.Netns, addr string) {
	t.Helper()
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		if ok, _ := ns.Listening(int(ap.Port())); ok {
			return
		}
	}
	if _, err := ns.Listen("tcp", addr); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns.Name, err)
	}
}

// DialTCP connects from ns to dst, from src when valid, and closes.
func DialTCP(ctx context.Context, ns *lab.Netns, src netip.Addr, dst netip.AddrPort, timeout time.Duration) error {
	return ns.Do(func() error {
		d := net.Dialer{Timeout: timeout}
		if src.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		}
		c, err := d.DialContext(ctx, "tcp", dst.String())
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// Blocked says a TCP connection attempt was silently dropped: it timed out,
// rather than being refused or unroutable.
func Blocked(ctx context.Context, ns *lab.Netns, src netip.Addr, dst netip.AddrPort) error {
	err := DialTCP(ctx, ns, src, dst, 1500*time.Millisecond)
	var ne net.Error
	switch {
	case err == nil:
		return fmt.Errorf("connected to %s", dst)
	case errors.As(err, &ne) && ne.Timeout():
		return nil
	default:
		return fmt.Errorf("stopped by %v, not by a silent drop", err)
	}
}

// BecomesBlocked allows policy up to 10 s to take effect, then requires a
// silent drop.
func BecomesBlocked(ctx context.Context, ns *lab.Netns, dst netip.AddrPort) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := Blocked(ctx, ns, netip.Addr{}, dst)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Opens says a TCP connection gets through, allowing up to 10 s for policy
// and routes to converge.
func Opens(ctx context.Context, ns *lab.Netns, src netip.Addr, dst netip.AddrPort) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := DialTCP(ctx, ns, src, dst, 2*time.Second)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var pingStatsRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received`)

// PingStats reads ping's summary line.
func PingStats(out string) (sent, received int, ok bool) {
	m := pingStatsRE.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, false
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return sent, received, true
}

// PingReplies sends n pings (from src when valid) and counts the replies.
func PingReplies(ctx context.Context, ns *lab.Netns, src, dst netip.Addr, n int) int {
	args := []string{"ping", "-n", "-q", "-c", fmt.Sprint(n), "-i", "0.2", "-W", "1"}
	if src.IsValid() {
		args = append(args, "-I", src.String())
	}
	out, _ := ns.Run(ctx, append(args, dst.String())...)
	_, got, _ := PingStats(out)
	return got
}

// UDPCounter counts datagrams arriving at an address, by payload, and
// echoes each (an echo makes the flow established in conntrack).
type UDPCounter struct {
	mu  sync.Mutex
	got map[string]int
}

// NewUDPCounter listens on addr (udp4) in ns until the test ends.
func NewUDPCounter(t testing.TB, ns *lab.Netns, addr string) *UDPCounter {
	t.Helper()
	var c net.PacketConn
	if err := ns.Do(func() (err error) {
		c, err = net.ListenPacket("udp4", addr)
		return err
	}); err != nil {
		t.Fatalf("udp listen %s in %s: %v", addr, ns.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	u := &UDPCounter{got: map[string]int{}}
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			u.mu.Lock()
			u.got[string(buf[:n])]++
			u.mu.Unlock()
			c.WriteTo(buf[:n], from)
		}
	}()
	return u
}

// Count is how many datagrams with payload arrived.
func (u *UDPCounter) Count(payload string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.got[payload]
}

// SendUDP sends n datagrams with payload from src to dst, from inside ns
// (src may be 0.0.0.0:0 for any).
func SendUDP(ns *lab.Netns, src, dst netip.AddrPort, payload string, n int) error {
	return ns.Do(func() error {
		var la *net.UDPAddr
		if src.IsValid() {
			la = net.UDPAddrFromAddrPort(src)
		}
		c, err := net.DialUDP("udp4", la, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		for range n {
			if _, err := c.Write([]byte(payload)); err != nil {
				return err
			}
			time.Sleep(20 * time.Millisecond)
		}
		return nil
	})
}
