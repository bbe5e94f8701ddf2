package nft

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The kernel numbers the states of a network namespace's whole nftables
// ruleset: every committed transaction, of any table and any process
// (nft, iptables-nft, another agent), moves the generation id on by
// exactly one, and nothing else moves it. So if the id is the one we read
// right after our own last write, nobody has changed anything since, our
// table included: the periodic resync need not read the table back or
// rewrite it. If it moved, something committed (maybe only another
// table's change), and we cannot tell what without looking, so the resync
// rewrites our table as before.

// errNoGeneration: the Enforcer cannot read the generation (a
// knftables.Fake), so every resync rewrites the table.
var errNoGeneration = errors.New("nftables: ruleset generation not available")

// readGeneration asks the kernel for the nftables ruleset generation id
// (NFT_MSG_GETGEN) of the calling thread's network namespace, the one our
// nft processes run in: the netlink socket belongs to the namespace of the
// thread that opens it.
func readGeneration() (uint32, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return 0, fmt.Errorf("nftables generation: %w", err)
	}
	defer c.Close()
	req := netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN),
			Flags: netlink.Request,
		},
		// struct nfgenmsg: family, version, resource id (big-endian).
		Data: []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	}
	msgs, err := c.Execute(req)
	if err != nil {
		return 0, fmt.Errorf("nftables generation: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWGEN) || len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, fmt.Errorf("nftables generation: %w", err)
		}
		ad.ByteOrder = binary.BigEndian // NLA_U32 in network order
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
		if err := ad.Err(); err != nil {
			return 0, fmt.Errorf("nftables generation: %w", err)
		}
	}
	return 0, errors.New("nftables generation: the kernel's reply carried no generation id")
}

// nextGeneration is the id the kernel gives the commit after g (it skips 0
// when the counter wraps).
func nextGeneration(g uint32) uint32 {
	if g+1 == 0 {
		return 1
	}
	return g + 1
}
