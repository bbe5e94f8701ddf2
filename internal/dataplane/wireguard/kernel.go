package wireguard

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/calico-go/calico/internal/calc"
)

// kernel drives the kernel's WireGuard through wgctrl (generic netlink).
// This machine's kernel lacks the module, so this path is exercised only
// where it exists; CALICO_WIREGUARD=userspace forces wireguard-go there.
type kernel struct {
	name string
	c    *wgctrl.Client
}

func (k *kernel) ensure(st calc.WireGuard) error {
	if _, err := netlink.LinkByName(st.Device); err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return err
		}
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU = st.Device, st.MTU
		if err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: la}); err != nil {
			return fmt.Errorf("make kernel WireGuard device %s: %w", st.Device, err)
		}
	}
	c, err := wgctrl.New()
	if err != nil {
		return fmt.Errorf("open wgctrl: %w", err)
	}
	k.c = c
	return nil
}

func (k *kernel) configure(cfg wgtypes.Config) error { return k.c.ConfigureDevice(k.name, cfg) }

func (k *kernel) peers() ([]wgtypes.Peer, error) {
	d, err := k.c.Device(k.name)
	if err != nil {
		return nil, err
	}
	return d.Peers, nil
}

func (k *kernel) up() error { return nil }

func (k *kernel) stop() {
	if k.c != nil {
		k.c.Close()
	}
}
