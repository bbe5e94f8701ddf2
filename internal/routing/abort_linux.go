package routing

import (
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// abortSessions shuts down, without a BGP NOTIFICATION, every TCP socket of
// this process that carries a BGP session with one of peers: the peer sees
// the connection end (FIN) exactly as if this process had died, which is
// what makes a GoBGP (or BIRD) helper keep our routes under graceful
// restart. GoBGP offers no API for this: every way it has of stopping a
// peer (StopBgp, DeletePeer, DisablePeer) queues a Cease NOTIFICATION, and
// a received NOTIFICATION makes the peer flush our routes at once.
//
// A socket is ours when its remote address is a configured peer and either
// its remote port is 179 (we dialled) or its local port is listenPort (we
// accepted). shutdown(2) does not close the descriptor, so GoBGP still owns
// it and closes it normally; the only race is a descriptor being closed and
// reused between the two system calls below, and the match is re-made on
// the live descriptor right before shutting it down.
//
// It returns how many sockets it shut down.
func abortSessions(peers map[netip.Addr]bool, listenPort int) (int, error) {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || !strings.HasPrefix(target, "socket:") {
			continue
		}
		if !isSessionSocket(fd, peers, listenPort) {
			continue
		}
		if err := syscall.Shutdown(fd, syscall.SHUT_RDWR); err == nil {
			n++
		}
	}
	return n, nil
}

func isSessionSocket(fd int, peers map[netip.Addr]bool, listenPort int) bool {
	typ, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE)
	if err != nil || typ != syscall.SOCK_STREAM {
		return false
	}
	rsa, err := syscall.Getpeername(fd)
	if err != nil {
		return false // listening or unconnected socket
	}
	raddr, rport, ok := sockaddr(rsa)
	if !ok || !peers[raddr] {
		return false
	}
	if rport == bgpPort {
		return true
	}
	lsa, err := syscall.Getsockname(fd)
	if err != nil {
		return false
	}
	_, lport, ok := sockaddr(lsa)
	return ok && lport == listenPort
}

func sockaddr(sa syscall.Sockaddr) (netip.Addr, int, bool) {
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return netip.AddrFrom4(sa.Addr), sa.Port, true
	case *syscall.SockaddrInet6:
		// An IPv4 peer reached over a dual-stack socket shows up mapped.
		return netip.AddrFrom16(sa.Addr).Unmap(), sa.Port, true
	}
	return netip.Addr{}, 0, false
}
