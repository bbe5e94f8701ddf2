//go:build !linux

package routing

import (
	"errors"
	"net/netip"
)

// abortSessions needs /proc/self/fd; the node agent only runs on Linux, so
// elsewhere a graceful Stop falls back to GoBGP's stop (peers flush).
func abortSessions(map[netip.Addr]bool, int) (int, error) {
	return 0, errors.New("silent session abort is only implemented on Linux")
}
