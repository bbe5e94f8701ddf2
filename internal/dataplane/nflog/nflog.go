// Package nflog receives packets that nftables rules log to an NFLOG group
// (`log group N`) over netfilter netlink, in the network namespace of the
// calling thread. Only the first bytes of each packet (the rule's snaplen)
// are copied; the kernel drops messages when the socket's buffer is full,
// so a flood costs the reader at most one buffer of work at a time.
package nflog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Packet is one logged packet.
type Packet struct {
	Prefix string // the rule's log prefix
	// Family is unix.AF_INET or unix.AF_INET6; Payload starts at the
	// network header.
	Family  uint8
	Payload []byte
	InDev   uint32 // ifindex, 0 if none
	OutDev  uint32
	Time    time.Time // when it arrived here
}

// Netfilter netlink constants (linux/netfilter/nfnetlink_log.h).
const (
	msgPacket = unix.NFNL_SUBSYS_ULOG<<8 | 0
	msgConfig = unix.NFNL_SUBSYS_ULOG<<8 | 1

	attrCfgCmd     = 1
	attrCfgMode    = 2
	attrCfgTimeout = 4 // in 1/100 s
	attrCfgQThresh = 5
	cmdBind        = 1
	copyPacket     = 2

	attrIndev   = 4
	attrOutdev  = 5
	attrPayload = 9
	attrPrefix  = 10
)

// Batching of the kernel's messages to us.
const (
	batch     = 32
	batchWait = 100 * time.Millisecond
)

// Listen binds NFLOG group and calls fn for every packet logged to it until
// ctx ends. Only one listener per group and namespace can bind; a second
// gets an error. Packets lost to a full socket buffer are skipped.
func Listen(ctx context.Context, group uint16, snaplen uint32, fn func(Packet)) error {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return fmt.Errorf("nflog: netfilter netlink socket: %w", err)
	}
	defer c.Close()
	mode := make([]byte, 6)
	binary.BigEndian.PutUint32(mode, snaplen)
	mode[4] = copyPacket
	// The kernel sends up to batch packets in one message, or what it has
	// after batchWait: a flood costs a read per batch, not per packet.
	for _, a := range []netlink.Attribute{
		{Type: attrCfgCmd, Data: []byte{cmdBind}},
		{Type: attrCfgMode, Data: mode},
		{Type: attrCfgQThresh, Data: binary.BigEndian.AppendUint32(nil, batch)},
		{Type: attrCfgTimeout, Data: binary.BigEndian.AppendUint32(nil, uint32(batchWait/(10*time.Millisecond)))},
	} {
		b, err := netlink.MarshalAttributes([]netlink.Attribute{a})
		if err != nil {
			return err
		}
		msg := netlink.Message{
			Header: netlink.Header{Type: msgConfig, Flags: netlink.Request | netlink.Acknowledge},
			Data:   append(nfgenmsg(group), b...),
		}
		if _, err := c.Execute(msg); err != nil {
			return fmt.Errorf("nflog: binding group %d (another listener in this namespace?): %w", group, err)
		}
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	for {
		msgs, err := c.Receive()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) {
				continue // the kernel dropped messages we were too slow for
			}
			return fmt.Errorf("nflog: receiving: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type != msgPacket || len(m.Data) < 4 {
				continue
			}
			if p, ok := decode(m.Data); ok {
				fn(p)
			}
		}
	}
}

// nfgenmsg is the netfilter header: family (unspecified), version 0, and
// the group in network order.
func nfgenmsg(group uint16) []byte {
	b := []byte{unix.AF_UNSPEC, 0, 0, 0}
	binary.BigEndian.PutUint16(b[2:], group)
	return b
}

func decode(b []byte) (Packet, bool) {
	p := Packet{Family: b[0], Time: time.Now()}
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return p, false
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		switch ad.Type() {
		case attrIndev:
			p.InDev = ad.Uint32()
		case attrOutdev:
			p.OutDev = ad.Uint32()
		case attrPayload:
			p.Payload = ad.Bytes()
		case attrPrefix:
			p.Prefix = ad.String()
		}
	}
	return p, ad.Err() == nil && p.Payload != nil
}
