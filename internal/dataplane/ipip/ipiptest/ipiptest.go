// Package ipiptest crafts IPIP packets by hand, for tests that play an
// attacker: a protocol-4 packet whose inner packet claims any source.
package ipiptest

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/calico-go/calico/internal/lab"
)

// InnerUDP is an IPv4 UDP datagram from src to dst carrying payload (UDP
// checksum 0, which IPv4 allows).
func InnerUDP(src, dst netip.AddrPort, payload string) []byte {
	n := 20 + 8 + len(payload)
	b := make([]byte, n)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(n))
	b[8] = 64
	b[9] = unix.IPPROTO_UDP
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[10:], checksum(b[:20]))
	binary.BigEndian.PutUint16(b[20:], src.Port())
	binary.BigEndian.PutUint16(b[22:], dst.Port())
	binary.BigEndian.PutUint16(b[24:], uint16(8+len(payload)))
	copy(b[28:], payload)
	return b
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// Send sends inner, n times, wrapped by the kernel in an outer IPv4 header
// with protocol 4 to outer, from inside ns (outer source: ns's address
// towards outer).
func Send(ns *lab.Netns, outer netip.Addr, inner []byte, n int) error {
	return ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_IPIP)
		if err != nil {
			return fmt.Errorf("raw IPIP socket: %w", err)
		}
		defer unix.Close(fd)
		for range n {
			if err := unix.Sendto(fd, inner, 0, &unix.SockaddrInet4{Addr: outer.As4()}); err != nil {
				return fmt.Errorf("send IPIP to %s: %w", outer, err)
			}
		}
		return nil
	})
}
