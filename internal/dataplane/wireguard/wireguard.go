// Package wireguard owns the host's WireGuard device (calc.WireGuardDevice)
// and converges it to calc's desired state: listen port, private key, and
// peers with their endpoints and allowed IPs. Where the kernel has no
// WireGuard module (CONFIG_WIREGUARD off, as on the project's build
// machine) the agent runs wireguard-go in-process on a TUN device with its
// offloads (virtio-net headers: GSO out, GRO in); the wire format is the
// same, so hosts of either kind interoperate.
//
// The TUN device is made persistent: when the agent stops (or restarts),
// the device and the routes through it stay, and packets routed to it are
// dropped, never sent out of the uplink in the clear. The next agent
// attaches to the same device and handshakes again with the same key.
package wireguard

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
)

// ModeUserspace is what `calicoctl status` shows for wireguard-go.
const ModeUserspace = "userspace (wireguard-go on a TUN device, offloads on)"

// Manager is the only owner of the WireGuard device.
type Manager struct {
	log *slog.Logger

	mu      sync.Mutex
	key     wgtypes.Key
	hasKey  bool
	dev     *device.Device
	tun     tun.Device
	keySet  wgtypes.Key                   // the private key the device has
	peers   map[string]calc.WireGuardPeer // by public key (base64), as applied
	port    int
	problem string
}

// New returns a manager; nothing happens in the kernel until Apply.
func New(log *slog.Logger) *Manager {
	if log == nil {
		log = slog.Default()
	}
	m := &Manager{log: log, peers: map[string]calc.WireGuardPeer{}}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		m.problem = "no /dev/net/tun for wireguard-go (and no kernel WireGuard module)"
	}
	return m
}

// SetKey sets the host's private key; the device takes it on the next Apply.
func (m *Manager) SetKey(k wgtypes.Key) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.key, m.hasKey = k, true
}

// PublicKey is the public half of the host's key, "" without one.
func (m *Manager) PublicKey() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.hasKey {
		return ""
	}
	return m.key.PublicKey().String()
}

// Support is what calc needs to know about this host.
func (m *Manager) Support() calc.WireGuardSupport {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := calc.WireGuardSupport{Problem: m.problem}
	if m.hasKey {
		s.PublicKey = m.key.PublicKey().String()
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
		return m.removeLocked()
	}
	if !m.hasKey {
		return errors.New("WireGuard has no private key yet")
	}
	if err := m.ensureDeviceLocked(st); err != nil {
		m.problem = err.Error()
		return err
	}
	var b strings.Builder
	if m.keySet != m.key || m.port != st.ListenPort {
		fmt.Fprintf(&b, "private_key=%s\nlisten_port=%d\n", hexKey(m.key), st.ListenPort)
	}
	want := map[string]calc.WireGuardPeer{}
	for _, p := range st.Peers {
		want[p.PublicKey] = p
	}
	for k := range m.peers {
		if _, ok := want[k]; !ok {
			pk, err := wgtypes.ParseKey(k)
			if err != nil {
				continue
			}
			fmt.Fprintf(&b, "public_key=%s\nremove=true\n", hexKey(pk))
		}
	}
	for _, p := range st.Peers {
		if old, ok := m.peers[p.PublicKey]; ok && old.Endpoint == p.Endpoint && slices.Equal(old.AllowedIPs, p.AllowedIPs) {
			continue
		}
		pk, err := wgtypes.ParseKey(p.PublicKey)
		if err != nil {
			m.log.Warn("skipping a WireGuard peer with a bad key", "node", p.Node, "err", err)
			continue
		}
		fmt.Fprintf(&b, "public_key=%s\nendpoint=%s\nreplace_allowed_ips=true\n", hexKey(pk), p.Endpoint)
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a)
		}
	}
	if b.Len() > 0 {
		if err := m.dev.IpcSet(b.String()); err != nil {
			return fmt.Errorf("configure %s: %w", st.Device, err)
		}
	}
	m.keySet, m.port, m.peers = m.key, st.ListenPort, want
	return m.linkUpLocked(st)
}

// ensureDeviceLocked makes (or, after a restart, re-attaches to) the
// persistent TUN device and starts wireguard-go on it.
func (m *Manager) ensureDeviceLocked(st calc.WireGuard) error {
	if m.dev != nil {
		return nil
	}
	t, err := tun.CreateTUN(st.Device, st.MTU)
	if err != nil {
		return fmt.Errorf("make TUN device %s for wireguard-go: %w", st.Device, err)
	}
	if nt, ok := t.(*tun.NativeTun); ok {
		// Through the raw conn: File().Fd() would make the fd blocking.
		rc, err := nt.File().SyscallConn()
		if err == nil {
			cerr := rc.Control(func(fd uintptr) { err = unix.IoctlSetInt(int(fd), unix.TUNSETPERSIST, 1) })
			err = errors.Join(err, cerr)
		}
		if err != nil {
			t.Close()
			return fmt.Errorf("make %s persistent: %w", st.Device, err)
		}
	}
	logger := &device.Logger{
		Verbosef: func(string, ...any) {},
		Errorf:   func(f string, args ...any) { m.log.Debug("wireguard-go: " + fmt.Sprintf(f, args...)) },
	}
	m.tun, m.dev = t, device.NewDevice(t, conn.NewDefaultBind(), logger)
	m.keySet, m.port, m.peers = wgtypes.Key{}, 0, map[string]calc.WireGuardPeer{}
	m.problem = ""
	return nil
}

// linkUpLocked sets the MTU and brings the link up (wireguard-go follows
// the link state), idempotently.
func (m *Manager) linkUpLocked(st calc.WireGuard) error {
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
	return m.dev.Up()
}

// removeLocked stops wireguard-go and deletes the device (and with it
// every route through it), also one left by an earlier agent.
func (m *Manager) removeLocked() error {
	if m.dev != nil {
		m.dev.Close() // closes the TUN too
		m.dev, m.tun = nil, nil
	}
	m.peers = map[string]calc.WireGuardPeer{}
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

// Close stops wireguard-go but leaves the persistent device and its
// routes: until the next agent attaches, traffic for remote workloads is
// dropped rather than sent in the clear.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dev != nil {
		m.dev.Close()
		m.dev, m.tun = nil, nil
	}
}

// Status is the device as `calicoctl status` shows it; nil when off.
func (m *Manager) Status() *api.WireGuardStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dev == nil {
		return nil
	}
	st := &api.WireGuardStatus{Mode: ModeUserspace, Device: calc.WireGuardDevice, PublicKey: m.key.PublicKey().String()}
	get, err := m.dev.IpcGet()
	if err != nil {
		return st
	}
	byHex := map[string]calc.WireGuardPeer{}
	for k, p := range m.peers {
		if pk, err := wgtypes.ParseKey(k); err == nil {
			byHex[hexKey(pk)] = p
		}
	}
	var cur *api.WireGuardPeer
	sc := bufio.NewScanner(strings.NewReader(get))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "public_key":
			p := byHex[v]
			st.Peers = append(st.Peers, api.WireGuardPeer{Node: p.Node, Endpoint: p.Endpoint.String(), AllowedIPs: len(p.AllowedIPs)})
			cur = &st.Peers[len(st.Peers)-1]
		case "last_handshake_time_sec":
			if sec, _ := strconv.ParseInt(v, 10, 64); cur != nil && sec > 0 {
				cur.LastHandshake = time.Unix(sec, 0).UTC().Format(time.RFC3339)
			}
		}
	}
	slices.SortFunc(st.Peers, func(a, b api.WireGuardPeer) int { return strings.Compare(a.Node, b.Node) })
	return st
}

func hexKey(k wgtypes.Key) string { return hex.EncodeToString(k[:]) }
