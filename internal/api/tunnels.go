package api

import (
	"crypto/sha256"
	"net"
	"net/netip"
)

// Tunnel facts every host shares, so peers agree without asking.
const (
	// VXLANDevice is every host's VXLAN tunnel device.
	VXLANDevice = "vxlan.calico"
	// VXLANVNI is the one VXLAN network of the cluster.
	VXLANVNI = 4096
	// VXLANMTU leaves room for the 50-byte VXLAN/UDP/IPv4/Ethernet header
	// inside a 1500-byte underlay.
	VXLANMTU = 1450
	// VXLANPort is the IANA VXLAN port; every host uses it, so a peer's FDB
	// entry needs no port (and the policy guards it).
	VXLANPort = 4789
)

// VTEPMAC is the tunnel device MAC of the host with address hostIP: 66:cb
// followed by the four bytes of the IPv4 address (66 has the locally
// administered bit set and the multicast bit clear). Any host computes any
// peer's MAC from its address, so no datastore round trip is needed before
// the tunnel works. For an IPv6 host address the four bytes are the first
// four of its SHA-256: still deterministic, no longer reversible.
func VTEPMAC(hostIP netip.Addr) string {
	ip := hostIP.Unmap()
	var b [4]byte
	if ip.Is4() {
		b = ip.As4()
	} else {
		sum := sha256.Sum256(ip.AsSlice())
		copy(b[:], sum[:4])
	}
	return net.HardwareAddr{0x66, 0xcb, b[0], b[1], b[2], b[3]}.String()
}

// OrNever is the mode, with "" (not given) read as EncapNever.
func (m EncapMode) OrNever() EncapMode {
	if m == "" {
		return EncapNever
	}
	return m
}

// Encapsulates says whether traffic may be encapsulated at all in this
// mode (Always or CrossSubnet).
func (m EncapMode) Encapsulates() bool { return m.OrNever() != EncapNever }

// UsesVXLAN says whether the pool's traffic may travel in VXLAN.
func (p Pool) UsesVXLAN() bool { return p.VXLANMode.Encapsulates() }

// UsesIPIP says whether the pool's traffic may travel in IPIP.
func (p Pool) UsesIPIP() bool { return p.IPIPMode.Encapsulates() }
