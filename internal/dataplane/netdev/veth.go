package netdev

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
)

// addHostVeth makes the pair every workload starts with, for AddWorkload
// and AddEngineVeth alike: host side hs (its MAC, MTU, sysctls, up) in the
// namespace of h (netnsPath), the peer named peer in the namespace open as
// peerNs (-1: the same namespace). On failure nothing of it is left.
func addHostVeth(h *netlink.Handle, netnsPath string, hs HostSide, peer string, peerNs int) (netlink.Link, error) {
	veth := newHostVeth(hs, peer)
	if peerNs >= 0 {
		veth.PeerNamespace = netlink.NsFd(peerNs)
	}
	if err := h.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("create veth %s/%s: %w", hs.Name, peer, err)
	}
	link, err := h.LinkByName(hs.Name)
	if err != nil {
		return nil, undoVeth(h, hs.Name, fmt.Errorf("look up new host interface %s: %w", hs.Name, err))
	}
	if err := prepareHostSide(h, netnsPath, link, hs); err != nil {
		return nil, undoVeth(h, hs.Name, err)
	}
	return link, nil
}

// undoVeth removes the pair whose host side is name after err (deleting
// one end deletes the other, wherever it is) and returns err, with the
// removal's own failure if any.
func undoVeth(h *netlink.Handle, name string, err error) error {
	if derr := deleteLinkByName(h, name); derr != nil {
		return errors.Join(err, fmt.Errorf("undo: %w", derr))
	}
	return err
}
