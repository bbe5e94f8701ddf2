package wireguard

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/calico-go/calico/internal/calc"
)

// userspace runs wireguard-go in the agent's process on a persistent TUN.
type userspace struct {
	log *slog.Logger
	dev *device.Device
}

func (u *userspace) ensure(st calc.WireGuard) error {
	t, err := tun.CreateTUN(st.Device, st.MTU)
	if err != nil {
		return fmt.Errorf("make TUN device %s for wireguard-go: %w", st.Device, err)
	}
	if nt, ok := t.(*tun.NativeTun); ok {
		// Through the raw conn: File().Fd() would make the fd blocking.
		rc, err := nt.File().SyscallConn()
		if err == nil {
			var serr error
			cerr := rc.Control(func(fd uintptr) { serr = unix.IoctlSetInt(int(fd), unix.TUNSETPERSIST, 1) })
			err = errors.Join(cerr, serr)
		}
		if err != nil {
			t.Close()
			return fmt.Errorf("make %s persistent: %w", st.Device, err)
		}
	}
	logger := &device.Logger{
		Verbosef: func(string, ...any) {},
		Errorf:   func(f string, args ...any) { u.log.Debug("wireguard-go: " + fmt.Sprintf(f, args...)) },
	}
	u.dev = device.NewDevice(t, conn.NewDefaultBind(), logger)
	return nil
}

// configure speaks wireguard-go's UAPI (hex keys).
func (u *userspace) configure(cfg wgtypes.Config) error {
	var b strings.Builder
	if cfg.PrivateKey != nil {
		fmt.Fprintf(&b, "private_key=%s\n", hexKey(*cfg.PrivateKey))
	}
	if cfg.ListenPort != nil {
		fmt.Fprintf(&b, "listen_port=%d\n", *cfg.ListenPort)
	}
	for _, p := range cfg.Peers {
		fmt.Fprintf(&b, "public_key=%s\n", hexKey(p.PublicKey))
		if p.Remove {
			b.WriteString("remove=true\n")
			continue
		}
		if p.Endpoint != nil {
			fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint)
		}
		if p.ReplaceAllowedIPs {
			b.WriteString("replace_allowed_ips=true\n")
		}
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a.String())
		}
	}
	return u.dev.IpcSet(b.String())
}

func (u *userspace) peers() ([]wgtypes.Peer, error) {
	get, err := u.dev.IpcGet()
	if err != nil {
		return nil, err
	}
	var out []wgtypes.Peer
	var sec int64
	sc := bufio.NewScanner(strings.NewReader(get))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		if k != "public_key" && len(out) == 0 {
			continue // device lines
		}
		switch k {
		case "public_key":
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != wgtypes.KeyLen {
				return nil, fmt.Errorf("wireguard-go peer key %q", v)
			}
			out = append(out, wgtypes.Peer{PublicKey: wgtypes.Key(b)})
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(v, 10, 64)
			if sec > 0 {
				out[len(out)-1].LastHandshakeTime = time.Unix(sec, 0)
			}
		case "allowed_ip":
			if _, n, err := net.ParseCIDR(v); err == nil {
				out[len(out)-1].AllowedIPs = append(out[len(out)-1].AllowedIPs, *n)
			}
		}
	}
	return out, nil
}

// up starts wireguard-go's sockets (it also follows the link's state).
func (u *userspace) up() error { return u.dev.Up() }

// stop closes wireguard-go and the TUN file; the persistent device stays.
func (u *userspace) stop() { u.dev.Close() }

func hexKey(k wgtypes.Key) string { return hex.EncodeToString(k[:]) }
