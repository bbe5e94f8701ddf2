// Package wireguard owns the host's WireGuard device (calc.WireGuardDevice)
// and converges it to calc's desired state: listen port, private key, and
// peers with their endpoints and allowed IPs. Two backends take the same
// configuration (a wgtypes.Config): the kernel's WireGuard through wgctrl
// where the module exists, and otherwise (CONFIG_WIREGUARD off, as on the
// project's build machine) wireguard-go run in-process on a TUN device with
// its offloads (virtio-net headers: GSO out, GRO in). The wire format is
// WireGuard either way, so hosts of either kind interoperate.
//
// The userspace device is a persistent TUN: when the agent stops (or
// restarts), the device and the routes through it stay, and packets routed
// to it are dropped, never sent out of the uplink in the clear. The next
// agent attaches to the same device and handshakes again with the same key.
// A kernel device simply stays, keys and peers included.
package wireguard

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/netdev"
)

// Modes, as `calicoctl status` shows them.
const (
	ModeKernel    = "kernel"
	ModeUserspace = "userspace (wireguard-go on a TUN device, offloads on)"
)

// backend is one way to run the device.
type backend interface {
	// ensure makes the device (or attaches to one left by an earlier agent).
	ensure(st calc.WireGuard) error
	// configure applies an incremental configuration.
	configure(cfg wgtypes.Config) error
	// peers reads the device's peers with their handshake times.
	peers() ([]wgtypes.Peer, error)
	// up is called once the link is up (wireguard-go starts its sockets).
	up() error
	// stop leaves the device in the kernel; remove deletes it.
	stop()
}

// Manager is the only owner of the WireGuard device.
type Manager struct {
	log  *slog.Logger
	mode string

	mu     sync.Mutex
	key    wgtypes.Key
	hasKey bool
	// pub is key's public half as text, derived once per SetKey: the
	// derivation (a curve25519 scalar multiplication, about 0.1 ms) was
	// paid on every computation of the agent's desired state, which
	// asks for Support each time.
	pub     string
	b       backend // nil while there is no device
	keySet  wgtypes.Key
	port    int
	applied map[wgtypes.Key]calc.WireGuardPeer // as applied, by public key
	problem string
	clear   *cleartext
	off     bool // CALICO_WIREGUARD=off: no key is published, no device made
}

// New returns a manager; nothing happens in the kernel until Apply. It
// picks the kernel's WireGuard when this kernel has it.
func New(log *slog.Logger) *Manager {
	if log == nil {
		log = slog.Default()
	}
	m := &Manager{log: log, applied: map[wgtypes.Key]calc.WireGuardPeer{}, clear: newCleartext()}
	switch {
	case os.Getenv("CALICO_WIREGUARD") == "off":
		// A host that cannot or must not run WireGuard publishes no key;
		// the others treat it as unencrypted (unreachable unless allowed).
		m.off = true
		m.problem = "WireGuard is turned off on this host (CALICO_WIREGUARD=off)"
	case os.Getenv("CALICO_WIREGUARD") != "userspace" && netdev.HaveLinkType("wireguard"):
		m.mode = ModeKernel
	default:
		m.mode = ModeUserspace
		if _, err := os.Stat("/dev/net/tun"); err != nil {
			m.problem = "this kernel has no WireGuard module and there is no /dev/net/tun for wireguard-go"
		}
	}
	return m
}

// Mode is the backend this host uses.
func (m *Manager) Mode() string { return m.mode }

// SetKey sets the host's private key; the device takes it on the next Apply.
func (m *Manager) SetKey(k wgtypes.Key) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.key, m.hasKey, m.pub = k, true, k.PublicKey().String()
}

// PublicKey is the public half of the host's key, "" without one.
func (m *Manager) PublicKey() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.hasKey || m.off {
		return ""
	}
	return m.pub
}

// Support is what calc needs to know about this host.
func (m *Manager) Support() calc.WireGuardSupport {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := calc.WireGuardSupport{Problem: m.problem}
	if m.hasKey && !m.off {
		s.PublicKey = m.pub
	}
	return s
}

// Apply converges the device to st. Disabled removes the device. Peers are
// changed one by one, so a change to one peer never resets the sessions
// of the others.
func (m *Manager) Apply(st calc.WireGuard) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !st.Enabled {
		return errors.Join(m.clear.apply(st), m.removeLocked())
	}
	if !m.hasKey || m.off {
		return errors.New("WireGuard has no private key here")
	}
	if m.b == nil {
		var b backend
		if m.mode == ModeKernel {
			b = &kernel{name: st.Device}
		} else {
			b = &userspace{log: m.log}
		}
		if err := b.ensure(st); err != nil {
			m.problem = err.Error()
			return err
		}
		m.b, m.problem = b, ""
		m.keySet, m.port, m.applied = wgtypes.Key{}, 0, map[wgtypes.Key]calc.WireGuardPeer{}
	}
	cfg, want := m.diffLocked(st)
	if cfg.PrivateKey != nil || cfg.ListenPort != nil || len(cfg.Peers) > 0 {
		if err := m.b.configure(cfg); err != nil {
			return fmt.Errorf("configure %s: %w", st.Device, err)
		}
	}
	m.keySet, m.port, m.applied = m.key, st.ListenPort, want
	if err := linkUp(st); err != nil {
		return err
	}
	if err := m.b.up(); err != nil {
		return err
	}
	// Only once the device carries traffic: refusing cleartext earlier
	// would cut hosts off while they switch over.
	return m.clear.apply(st)
}

// diffLocked is the configuration that takes the device from what was
// applied to st, and the peers as they will be.
func (m *Manager) diffLocked(st calc.WireGuard) (wgtypes.Config, map[wgtypes.Key]calc.WireGuardPeer) {
	var cfg wgtypes.Config
	if m.keySet != m.key || m.port != st.ListenPort {
		k, port := m.key, st.ListenPort
		cfg.PrivateKey, cfg.ListenPort = &k, &port
	}
	want := map[wgtypes.Key]calc.WireGuardPeer{}
	for _, p := range st.Peers {
		pk, err := wgtypes.ParseKey(p.PublicKey)
		if err != nil {
			m.log.Warn("skipping a WireGuard peer with a bad key", "node", p.Node, "err", err)
			continue
		}
		want[pk] = p
	}
	for pk := range m.applied {
		if _, ok := want[pk]; !ok {
			cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: pk, Remove: true})
		}
	}
	for pk, p := range want {
		if old, ok := m.applied[pk]; ok && old.Endpoint == p.Endpoint && slices.Equal(old.AllowedIPs, p.AllowedIPs) {
			continue
		}
		pc := wgtypes.PeerConfig{PublicKey: pk, Endpoint: net.UDPAddrFromAddrPort(p.Endpoint), ReplaceAllowedIPs: true}
		for _, a := range p.AllowedIPs {
			pc.AllowedIPs = append(pc.AllowedIPs, net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())})
		}
		cfg.Peers = append(cfg.Peers, pc)
	}
	slices.SortFunc(cfg.Peers, func(a, b wgtypes.PeerConfig) int { return strings.Compare(a.PublicKey.String(), b.PublicKey.String()) })
	return cfg, want
}

// linkUp sets the MTU and brings the link up, idempotently.
func linkUp(st calc.WireGuard) error {
	l, err := netlink.LinkByName(st.Device)
	if err != nil {
		return fmt.Errorf("find %s: %w", st.Device, err)
	}
	if l.Attrs().MTU != st.MTU {
		if err := netlink.LinkSetMTU(l, st.MTU); err != nil {
			return fmt.Errorf("set %s MTU: %w", st.Device, err)
		}
	}
	if l.Attrs().Flags&unix.IFF_UP == 0 {
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("bring %s up: %w", st.Device, err)
		}
	}
	return nil
}

// removeLocked stops the backend and deletes the device (and with it every
// route through it), also one left by an earlier agent.
func (m *Manager) removeLocked() error {
	if m.b != nil {
		m.b.stop()
		m.b = nil
	}
	m.applied = map[wgtypes.Key]calc.WireGuardPeer{}
	l, err := netlink.LinkByName(calc.WireGuardDevice)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return err
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s: %w", calc.WireGuardDevice, err)
	}
	return nil
}

// Close stops the backend but leaves the device and its routes: until the
// next agent attaches, traffic for remote workloads is dropped (userspace)
// or still encrypted (kernel), never sent in the clear.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.b != nil {
		m.b.stop()
		m.b = nil
	}
}

// Status is the device as `calicoctl status` shows it; nil when off.
func (m *Manager) Status() *api.WireGuardStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.b == nil {
		return nil
	}
	st := &api.WireGuardStatus{Mode: m.mode, Device: calc.WireGuardDevice, PublicKey: m.pub}
	peers, err := m.b.peers()
	if err != nil {
		return st
	}
	for _, p := range peers {
		want := m.applied[p.PublicKey]
		ps := api.WireGuardPeer{Node: want.Node, Endpoint: want.Endpoint.String(), AllowedIPs: len(p.AllowedIPs)}
		if !p.LastHandshakeTime.IsZero() && p.LastHandshakeTime.Unix() > 0 {
			ps.LastHandshake = p.LastHandshakeTime.UTC().Format(time.RFC3339)
		}
		st.Peers = append(st.Peers, ps)
	}
	slices.SortFunc(st.Peers, func(a, b api.WireGuardPeer) int { return strings.Compare(a.Node, b.Node) })
	return st
}
