package netdev

import (
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Netlink's copies of the per-interface settings the host sides' read-back
// compares (linux/ipv6.h DEVCONF_*, linux/netconf.h NETCONFA_*,
// linux/neighbour.h NDTA_* and NDTPA_*).
const (
	devconfForwarding   = 0
	devconfAcceptRA     = 3
	devconfDisableIPv6  = 26
	devconfAcceptDAD    = 27
	devconfAddrGenMode  = 47
	netconfaIfindex     = 1
	netconfaForwarding  = 2
	netconfaProxyNeigh  = 5
	ndtaParms           = 6
	ndtpaIfindex        = 1
	ndtpaProxyDelay     = 13
	bulkSysctlThreshold = 16
	nlaTypeMask         = 0x3fff // the type without NLA_F_NESTED and NLA_F_NET_BYTEORDER
)

// bulkSysctls reads the values of the host sides' settings for every
// interface of the caller's namespace (run it in the one wanted) in three
// netlink dumps: IPv6's per-interface configuration (RTM_GETLINK for
// AF_INET6), IPv4's (RTM_GETNETCONF) and the ARP parameters
// (RTM_GETNEIGHTBL), keyed as sysctlPath keys them, with the text /proc
// would show for the values the syncer sets (anything else as "?"). The
// read-back of the host sides every 30 s at 1000 workloads otherwise
// opened, read and closed 7000 files under /proc/sys, half of its cost.
// What it cannot tell (a dump that failed, an interface it missed) is
// simply absent, and the caller reads the file as before: these values
// only ever spare a read whose file holds the wanted value; every write,
// and every value that differs, still goes through /proc.
func bulkSysctls() map[string]string {
	out := map[string]string{}
	names := map[int32]string{}
	if msgs, err := dump(unix.RTM_GETLINK, unix.RTM_NEWLINK, nl.NewIfInfomsg(unix.AF_INET6), unix.SizeofIfInfomsg); err == nil {
		for _, m := range msgs {
			ifi := nl.DeserializeIfInfomsg(m.head)
			var name string
			var conf []byte
			for _, a := range m.attrs {
				switch a.Attr.Type & nlaTypeMask {
				case unix.IFLA_IFNAME:
					name = strings.TrimRight(string(a.Value), "\x00")
				case unix.IFLA_PROTINFO:
					if inner, err := nl.ParseRouteAttr(a.Value); err == nil {
						for _, b := range inner {
							if b.Attr.Type&nlaTypeMask == unix.IFLA_INET6_CONF {
								conf = b.Value
							}
						}
					}
				}
			}
			if name == "" {
				continue
			}
			names[ifi.Index] = name
			for key, i := range map[string]int{"forwarding": devconfForwarding, "accept_ra": devconfAcceptRA,
				"disable_ipv6": devconfDisableIPv6, "accept_dad": devconfAcceptDAD, "addr_gen_mode": devconfAddrGenMode} {
				if len(conf) >= 4*(i+1) {
					v := int32(binary.NativeEndian.Uint32(conf[4*i:]))
					out[sysctlPath([]string{"net", "ipv6", "conf", name, key})] = strconv.Itoa(int(v))
				}
			}
		}
	}
	if msgs, err := dump(unix.RTM_GETNETCONF, unix.RTM_NEWNETCONF, rawReq{unix.AF_INET, 0, 0, 0}, 4); err == nil {
		for _, m := range msgs {
			var name string
			vals := map[string]string{}
			for _, a := range m.attrs {
				if len(a.Value) < 4 {
					continue
				}
				v := int32(binary.NativeEndian.Uint32(a.Value))
				switch a.Attr.Type {
				case netconfaIfindex:
					name = names[v]
				case netconfaForwarding:
					vals["forwarding"] = strconv.Itoa(int(v))
				case netconfaProxyNeigh:
					vals["proxy_arp"] = strconv.Itoa(int(v))
				}
			}
			if name == "" {
				continue
			}
			for k, v := range vals {
				out[sysctlPath([]string{"net", "ipv4", "conf", name, k})] = v
			}
		}
	}
	if msgs, err := dump(unix.RTM_GETNEIGHTBL, unix.RTM_NEWNEIGHTBL, rawReq{unix.AF_INET, 0, 0, 0}, 4); err == nil {
		for _, m := range msgs {
			for _, a := range m.attrs {
				if a.Attr.Type&nlaTypeMask != ndtaParms {
					continue
				}
				inner, err := nl.ParseRouteAttr(a.Value)
				if err != nil {
					continue
				}
				var name string
				delay := "?"
				for _, b := range inner {
					switch {
					case b.Attr.Type == ndtpaIfindex && len(b.Value) >= 4:
						name = names[int32(binary.NativeEndian.Uint32(b.Value))]
					case b.Attr.Type == ndtpaProxyDelay && len(b.Value) >= 8:
						// Milliseconds here, clock ticks under /proc:
						// only zero reads the same in both.
						if binary.NativeEndian.Uint64(b.Value) == 0 {
							delay = "0"
						}
					}
				}
				if name != "" {
					out[sysctlPath([]string{"net", "ipv4", "neigh", name, "proxy_delay"})] = delay
				}
			}
		}
	}
	return out
}

// rawReq is a request's fixed header given as bytes.
type rawReq []byte

func (r rawReq) Len() int          { return len(r) }
func (r rawReq) Serialize() []byte { return r }

// dumpMsg is one message of a dump: its fixed header and its attributes.
type dumpMsg struct {
	head  []byte
	attrs []syscall.NetlinkRouteAttr
}

// dump runs one netlink dump in the caller's namespace and splits each
// message after its fixed header of hdrLen bytes; a message too short or
// whose attributes do not parse is left out (its values are then read from
// /proc). An interrupted dump (the table changed meanwhile) is used as far
// as it got: bulkSysctls only spares reads of what it saw.
func dump(req, resp uint16, data nl.NetlinkRequestData, hdrLen int) ([]dumpMsg, error) {
	r := nl.NewNetlinkRequest(int(req), unix.NLM_F_DUMP)
	r.AddData(data)
	msgs, err := r.Execute(unix.NETLINK_ROUTE, resp)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, err
	}
	out := make([]dumpMsg, 0, len(msgs))
	for _, m := range msgs {
		if len(m) < hdrLen {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[hdrLen:])
		if err != nil {
			continue
		}
		out = append(out, dumpMsg{head: m[:hdrLen], attrs: attrs})
	}
	return out, nil
}
