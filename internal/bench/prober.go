package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/calico-go/calico/internal/lab"
)

// probeInterval is how often every pending target is pinged: the resolution
// of the setup latencies. Each target costs one small echo per interval.
const probeInterval = 2 * time.Millisecond

// prober answers "since when is this address reachable from that
// namespace?" with one raw ICMP socket made inside the namespace: it pings
// every pending target each probeInterval and records when the first reply
// arrived. Replies prove the whole path both ways: routes on both hosts and
// the policy of both workloads (the echo needs the target's inbound policy;
// the reply rides conntrack).
type prober struct {
	fd   int
	id   uint16
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	seq     uint16
	pending map[netip.Addr]*probe
}

// probe is one target being watched.
type probe struct {
	addr    netip.Addr
	started time.Time
	reached chan struct{}
	at      time.Time // first reply; valid once reached is closed
}

func newProber(ns *lab.Netns) (*prober, error) {
	var fd int
	err := ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bench: ICMP socket in %s: %w", ns.Name, err)
	}
	// A receive timeout lets the reader notice Close.
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bench: ICMP socket timeout: %w", err)
	}
	var id [2]byte
	rand.Read(id[:])
	p := &prober{fd: fd, id: binary.BigEndian.Uint16(id[:]), stop: make(chan struct{}), pending: map[netip.Addr]*probe{}}
	p.wg.Add(2)
	go p.readLoop()
	go p.sendLoop()
	return p, nil
}

// watch starts pinging addr. Watching an address again restarts its clock.
func (p *prober) watch(addr netip.Addr) *probe {
	pr := &probe{addr: addr, started: time.Now(), reached: make(chan struct{})}
	p.mu.Lock()
	p.pending[addr] = pr
	p.mu.Unlock()
	return pr
}

// wait returns when the target was first reached, or an error after timeout.
// A target that times out is no longer pinged.
func (p *prober) wait(ctx context.Context, pr *probe, timeout time.Duration) (time.Time, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-pr.reached:
		return pr.at, nil
	case <-t.C:
	case <-ctx.Done():
	}
	p.mu.Lock()
	if p.pending[pr.addr] == pr {
		delete(p.pending, pr.addr)
	}
	p.mu.Unlock()
	select {
	case <-pr.reached: // raced with the timeout
		return pr.at, nil
	default:
	}
	if ctx.Err() != nil {
		return time.Time{}, ctx.Err()
	}
	return time.Time{}, fmt.Errorf("%s not reachable within %s", pr.addr, timeout)
}

func (p *prober) close() {
	close(p.stop)
	p.wg.Wait()
	unix.Close(p.fd)
}

func (p *prober) sendLoop() {
	defer p.wg.Done()
	tick := time.NewTicker(probeInterval)
	defer tick.Stop()
	var targets []netip.Addr
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		targets = targets[:0]
		p.mu.Lock()
		for a := range p.pending {
			targets = append(targets, a)
		}
		p.seq++
		seq := p.seq
		p.mu.Unlock()
		for _, a := range targets {
			sa := &unix.SockaddrInet4{Addr: a.As4()}
			// Errors (no route yet, buffer full) just mean "not yet".
			unix.Sendto(p.fd, echoRequest(p.id, seq), unix.MSG_DONTWAIT, sa)
		}
	}
}

func (p *prober) readLoop() {
	defer p.wg.Done()
	buf := make([]byte, 1500)
	for {
		select {
		case <-p.stop:
			return
		default:
		}
		n, from, err := unix.Recvfrom(p.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		now := time.Now()
		src, ok := from.(*unix.SockaddrInet4)
		if !ok || !isEchoReply(buf[:n], p.id) {
			continue
		}
		a := netip.AddrFrom4(src.Addr)
		p.mu.Lock()
		if pr := p.pending[a]; pr != nil {
			delete(p.pending, a)
			pr.at = now
			close(pr.reached)
		}
		p.mu.Unlock()
	}
}

// echoRequest builds an ICMP echo request with a checksum.
func echoRequest(id, seq uint16) []byte {
	b := make([]byte, 16)
	b[0] = 8 // echo request
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], "cbnprobe")
	binary.BigEndian.PutUint16(b[2:], checksum(b))
	return b
}

func checksum(b []byte) uint16 {
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

// isEchoReply checks a raw IPv4 packet for an echo reply with our id.
func isEchoReply(pkt []byte, id uint16) bool {
	if len(pkt) < 20 {
		return false
	}
	ihl := int(pkt[0]&0x0f) * 4
	if len(pkt) < ihl+8 {
		return false
	}
	icmp := pkt[ihl:]
	return icmp[0] == 0 && icmp[1] == 0 && binary.BigEndian.Uint16(icmp[4:]) == id
}
