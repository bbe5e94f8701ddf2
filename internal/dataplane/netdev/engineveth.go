package netdev

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

// EngineVethSpec describes a veth pair for a container engine that
// configures the container side itself, as Docker does with a libnetwork
// driver: the driver makes the pair, names the container side, and the
// engine moves that side into the container, renames it and gives it the
// addresses and routes the driver returned.
type EngineVethSpec struct {
	HostIface   string // host side, cali...
	PeerIface   string // the container side's temporary name, in EngineNetns
	EngineNetns string // the engine's namespace; "" is the host's own
	MTU         int    // 0 means DefaultMTU
	IPv6        bool   // prepare the host side to route IPv6 too
	Group       uint32 // the host side's device group (HostSide.Group)
}

// AddEngineVeth makes the pair. The host side is the same HostSide
// AddWorkload makes (fixed MAC, proxy ARP, forwarding, EUI-64 link-local
// as the IPv6 gateway), brought up; the peer is left down
// and unconfigured for the engine. A pair left over from an earlier,
// retried call of the engine is replaced, so retries do not fail. It
// returns the peer's MAC.
func AddEngineVeth(spec EngineVethSpec, opts ...Option) (mac string, err error) {
	o := buildOptions(opts)
	if spec.MTU == 0 {
		spec.MTU = DefaultMTU
	}
	if err := checkIfaceName(spec.HostIface); err != nil {
		return "", fmt.Errorf("HostIface: %w", err)
	}
	if err := checkIfaceName(spec.PeerIface); err != nil {
		return "", fmt.Errorf("PeerIface: %w", err)
	}
	hostH, err := openHandle(o.netns)
	if err != nil {
		return "", err
	}
	defer hostH.Close()
	engineH := hostH
	if spec.EngineNetns != "" {
		if engineH, err = openHandle(spec.EngineNetns); err != nil {
			return "", fmt.Errorf("engine netns: %w", err)
		}
		defer engineH.Close()
	}
	for _, x := range []struct {
		h    *netlink.Handle
		name string
	}{{hostH, spec.HostIface}, {engineH, spec.PeerIface}} {
		if err := deleteVethByName(x.h, x.name); err != nil {
			return "", err
		}
	}

	hs := HostSide{Name: spec.HostIface, MTU: spec.MTU, IPv6: spec.IPv6, Group: spec.Group}
	peerNs := -1 // the engine's namespace is this one
	if spec.EngineNetns != "" {
		ns, err := openNetns(spec.EngineNetns)
		if err != nil {
			return "", fmt.Errorf("engine netns: %w", err)
		}
		defer ns.Close()
		peerNs = int(ns)
	}
	if _, err := addHostVeth(hostH, o.netns, hs, spec.PeerIface, peerNs); err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			err = undoVeth(hostH, spec.HostIface, err)
		}
	}()
	peer, err := engineH.LinkByName(spec.PeerIface)
	if err != nil {
		return "", fmt.Errorf("look up new interface %s in the engine's namespace: %w", spec.PeerIface, err)
	}
	return peer.Attrs().HardwareAddr.String(), nil
}

// deleteVethByName removes a veth of ours. A missing one is not an error,
// so removal can be retried; a link of that name that is not a veth is
// somebody else's, an error, and left alone.
func deleteVethByName(h *netlink.Handle, name string) error {
	link, err := h.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if link.Type() != "veth" {
		return fmt.Errorf("interface %s exists and is a %s, not our veth; not touching it", name, link.Type())
	}
	if err := h.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}
