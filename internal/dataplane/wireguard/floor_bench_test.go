package wireguard

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// The floor of the userspace device on this machine, part by part. Besides
// the cipher (BenchmarkChaCha20Poly1305), every byte a workload sends
// through wireguard-go is copied in and out of the kernel twice (TUN read,
// UDP send; UDP receive, TUN write), copied between buffers in userspace
// (wireguard-go splits the TUN's 64 KB GSO super-packet into one buffer per
// segment, packs the sealed segments into one UDP GSO message, unpacks the
// UDP GRO message into one buffer per datagram, coalesces the opened
// segments into a super-packet for the TUN: four passes), and checksummed
// twice in software (the inner TCP checksum of every segment is computed by
// the sender, whose TUN hands over CHECKSUM_PARTIAL packets, and verified by
// the receiver before it coalesces). These benchmarks time one pass of each
// on the benchmark thread's CPU clock, so that other load on the machine
// inflates them only through caches and frequency; cpu-s/GB is the figure
// to add up against the host path's CPU per GB.

const segment = 1420 // inner segment with workload MTU 1440, as sealed

// BenchmarkCopyPass is one userspace copy of a 64 KB super-packet into
// per-segment buffers 64 KB apart (wireguard-go's message buffers are
// 64 KB each), the shape of its GSO split and of its UDP GRO split.
func BenchmarkCopyPass(b *testing.B) {
	const n = 65536 / segment
	src := make([]byte, n*segment)
	dst := make([][]byte, n)
	for i := range dst {
		dst[i] = make([]byte, 65536)
	}
	cpuBench(b, n*segment, func() {
		for i := range dst {
			copy(dst[i], src[i*segment:(i+1)*segment])
		}
	})
}

// BenchmarkChecksumPass is one Internet checksum (RFC 1071) over every
// segment, 64 bits at a time: what computing or verifying the inner TCP
// checksums costs in Go.
func BenchmarkChecksumPass(b *testing.B) {
	buf := make([]byte, segment)
	for i := range buf {
		buf[i] = byte(i)
	}
	var sink uint16
	cpuBench(b, segment, func() { sink ^= internetChecksum(buf) })
	_ = sink
}

func internetChecksum(b []byte) uint16 {
	var sum uint64
	for len(b) >= 8 {
		v := binary.BigEndian.Uint64(b)
		// Add with end-around carry (ones' complement).
		s := sum + v
		if s < sum {
			s++
		}
		sum = s
		b = b[8:]
	}
	for len(b) >= 2 {
		sum += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint64(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// BenchmarkUDPGSOCrossing is one UDP crossing as wireguard-go makes it: a
// 64 KB message sent with UDP GSO (1452-byte datagrams, the outer size at
// MTU 1500) over 127.0.0.1 to a socket with UDP GRO, and received, both on
// the benchmark's thread, so its CPU clock holds the send copy, the IP and
// UDP stack (run in the sender's softirq) and the receive copy. It is the
// cheapest a crossing gets: no veth, no second namespace, no nftables.
func BenchmarkUDPGSOCrossing(b *testing.B) {
	const gso = 1452
	const n = 45 // 45 * 1452 = 65340 bytes: under the 64 KB UDP limit
	rx := udpSocket(b)
	if err := unix.SetsockoptInt(rx, unix.IPPROTO_UDP, unix.UDP_GRO, 1); err != nil {
		b.Skipf("no UDP GRO here: %v", err) // kernels before 5.0
	}
	if err := unix.SetsockoptInt(rx, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20); err != nil {
		b.Fatal(err)
	}
	tx := udpSocket(b)
	if err := unix.SetsockoptInt(tx, unix.IPPROTO_UDP, unix.UDP_SEGMENT, gso); err != nil {
		b.Skipf("no UDP GSO here: %v", err)
	}
	sa, err := unix.Getsockname(rx)
	if err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, gso*n)
	buf := make([]byte, 65536)
	oob := make([]byte, 64)
	cpuBench(b, len(msg), func() {
		if err := unix.Sendto(tx, msg, 0, sa); err != nil {
			b.Fatal(err)
		}
		got := 0
		for got < len(msg) {
			m, _, _, _, err := unix.Recvmsg(rx, buf, oob, unix.MSG_DONTWAIT)
			if err != nil {
				b.Fatalf("receive after %d of %d bytes: %v", got, len(msg), err)
			}
			got += m
		}
	})
}

func udpSocket(b *testing.B) int {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(fd) })
	lo := netip.MustParseAddr("127.0.0.1").As4()
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: lo}); err != nil {
		b.Fatal(err)
	}
	return fd
}
