// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

// A fast path for IPv4 TCP flows that nftables has already accepted.
//
// fp_from_wl runs at tcx ingress of every workload interface (host side),
// fp_from_uplink at tcx ingress of the uplink. A packet is moved straight to
// its next device, skipping the veth backlog, routing and the netfilter
// hooks, only when all of this holds; anything else returns TCX_NEXT and
// takes the normal path, where every policy decision is made as before:
//
//   - IPv4 without options or fragmentation, TCP with none of SYN, FIN or
//     RST (so conntrack sees every packet that opens or closes a
//     connection, and keeps its state machine);
//   - from a workload: (ingress ifindex, source address) is in fp_wl_src,
//     the same pairs the prerouting chain from-wl-src accepts. That chain
//     runs after tc ingress, so a redirected packet would skip it: the
//     check must be made here, and a mismatch goes the normal way, where
//     nftables drops it;
//   - conntrack holds an entry for the packet's tuple that is confirmed (it
//     passed every hook once: policy accepted the first packet), has seen a
//     reply, is assured, is in TCP state ESTABLISHED (no FIN or RST seen
//     yet), is not dying, and has no NAT in either direction. A flow
//     nftables never accepted has no confirmed entry, so nothing is
//     fast-pathed that the ruleset did not let through;
//   - the FIB forwards it (not to this host) out of a device in fp_ifaces
//     (a workload interface, the uplink, or a tunnel device: ipip.calico or
//     vxlan.calico), with its neighbour resolved and within its MTU, and
//     TTL > 1 (the kernel sends the ICMP otherwise);
//   - not from a workload: the FIB routes its source back out of the
//     device it came in by, or, for a packet ipip_decap decapsulated (it
//     says so in cb[0]), out of ipip.calico (source_routed_back: the
//     normal path's martian and rp_filter tests).
//
// Tunnels. Out of a workload towards a remote VXLAN block, the packet is
// redirected to vxlan.calico's egress, as routing would send it there, and
// the kernel's vxlan driver encapsulates it exactly as on the normal path.
// Towards a remote IPIP block the program builds the packet ipip_encap
// (internal/dataplane/ipip) would, outer source the node's address
// (fp_ipip_src), outer destination the block's node (the route's gateway),
// and sends it out of the uplink with bpf_redirect_neigh; when any of that
// is unknown it redirects the packet into ipip.calico, whose ipip_encap
// encapsulates it as on the normal path. The
// FIB's MTU check is the tunnel device's (1480 or 1450), so a packet that
// would not fit the underlay once encapsulated goes the normal way, which
// answers it with the ICMP. ipip.calico has no link layer, so its
// neighbour may be unresolved (NUD_NOARP entries appear only after the
// first normal packet): that is no reason to pass, nothing is resolved on
// that device. Into a workload from a tunnel: fp_from_uplink runs after
// ipip_decap on the uplink (ipip_decap is attached at the head of the tcx
// chain and has already dropped every protocol-4 packet to this host from
// an address that is no node, or whose inner source is not in a block of
// that node; it hands the inner packet on with TCX_NEXT), and on the tcx
// ingress of vxlan.calico, where the kernel delivers what it decapsulated
// (the datagrams having passed nftables' vxlan-in check of outer and inner
// source on the input hook first).
//
// Conntrack no longer sees these packets, so two things it would do must be
// arranged: the agent sets nf_conntrack_tcp_be_liberal=1 (its TCP window
// bookkeeping goes stale, and the closing FIN, which goes the normal way,
// would otherwise be "invalid" and dropped), and the program refreshes the
// entry's timeout now and then, to the host's configured
// nf_conntrack_tcp_timeout_established (fp_config; five days by default):
// an ESTABLISHED entry left alone expires, and the next packet would be
// picked up mid-stream as a new flow, perhaps in the direction policy
// forbids.
//
// The TTL is decremented as a router does. Into a local workload the packet
// goes with bpf_redirect_peer (straight into the workload's namespace, no
// backlog); towards the uplink with bpf_redirect.

#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "../bpfinc/ipv4.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define BPF_F_CURRENT_NETNS (-1)
// Not ours to decide: the next tcx program, or the normal path (TC_ACT_OK
// would end the tcx chain and skip programs attached after us).
#define PASS (-1) /* TCX_NEXT; these uapi headers predate it */

// The kernel's struct nf_conn, only the fields we read; CO-RE finds their
// offsets in the running kernel's BTF.
struct ip_ct_tcp {
	__u8 state;
} __attribute__((preserve_access_index));

union nf_conntrack_proto {
	struct ip_ct_tcp tcp;
} __attribute__((preserve_access_index));

struct nf_conn {
	unsigned long status;
	union nf_conntrack_proto proto;
} __attribute__((preserve_access_index));

// enum tcp_conntrack's ESTABLISHED (include/uapi/linux/netfilter/
// nf_conntrack_tcp.h): the only TCP state the fast path carries.
#define TCP_CONNTRACK_ESTABLISHED 3

struct bpf_ct_opts {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u16 ct_zone_id;
	__u8 ct_zone_dir;
	__u8 reserved[3];
};

extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple,
					 __u32 tuple__sz, struct bpf_ct_opts *opts,
					 __u32 opts__sz) __ksym;
extern void bpf_ct_release(struct nf_conn *ct) __ksym;
extern int bpf_ct_change_timeout(struct nf_conn *nfct, __u32 timeout) __ksym;

// What Go keeps here (fastpath.go, config*): the host's
// nf_conntrack_tcp_timeout_established in ms, the timeout a refresh sets (0:
// no refresh), read from the sysctl on every Apply rather than assumed; and
// the operator's nf_conntrack_tcp_be_liberal from before the fast path set
// it, which the program never reads (it lives here so that it lasts exactly
// as long as the programs: a restarted agent reuses this map).
enum {
	CONFIG_CT_ESTABLISHED_MS = 0,
	CONFIG_SAVED_LIBERAL,
	CONFIG_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CONFIG_MAX);
	__type(key, __u32);
	__type(value, __u32);
} fp_config SEC(".maps");

// (workload interface, source address) pairs a workload may send from.
struct wl_src_key {
	__u32 ifindex;
	__be32 addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct wl_src_key);
	__type(value, __u32);
} fp_wl_src SEC(".maps");

// The host's address, the outer source of IPIP (what ipip_encap's local_ip
// holds; the agent gives both the node's address), in network order; 0:
// unknown, and a packet routed into ipip.calico is redirected there for
// ipip_encap. A map of its own, not a slot of fp_config: fp_config and
// fp_stats are reused by a restarted agent's programs, and a map whose size
// changed could not be.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __be32);
} fp_ipip_src SEC(".maps");

// Devices a packet may be redirected to: ifindex -> IFACE_WORKLOAD or
// IFACE_UPLINK.
enum {
	IFACE_WORKLOAD = 1,
	IFACE_UPLINK = 2,
	IFACE_IPIP = 3,  // ipip.calico: no link layer, its egress program encapsulates
	IFACE_VXLAN = 4, // vxlan.calico: the kernel's vxlan driver encapsulates
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} fp_ifaces SEC(".maps");

// Counters, one slot per outcome (Go mirrors the names).
enum {
	STAT_FWD_WORKLOAD = 0, // redirected into a local workload
	STAT_FWD_UPLINK,       // redirected out of the uplink
	STAT_PASS_NOT_TCP,     // not IPv4 TCP without options/fragments, or SYN/FIN/RST
	STAT_PASS_SPOOF,       // source not the workload's: nftables drops it
	STAT_PASS_NO_CT,       // no conntrack entry
	STAT_PASS_CT_STATE,    // entry unconfirmed, not yet assured, not ESTABLISHED, dying, or NATed
	STAT_PASS_FIB,         // not forwarded, no neighbour, MTU, a device not ours, or
			       // not from a workload a source not routed back
	STAT_PASS_TTL,
	STAT_FWD_TUNNEL,       // redirected into ipip.calico or vxlan.calico
	STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} fp_stats SEC(".maps");

static __always_inline void count(__u32 what)
{
	__u64 *v = bpf_map_lookup_elem(&fp_stats, &what);
	if (v)
		*v += 1;
}

// Confirmed: it passed every hook once. Seen reply and assured: conntrack
// saw the handshake's last ACK and holds the connection as ESTABLISHED
// (a fast-pathed final ACK would leave it in SYN_RECV, which expires in a
// minute and would be picked up again mid-stream, maybe the wrong way).
#define CT_WANT (IPS_CONFIRMED | IPS_SEEN_REPLY | IPS_ASSURED)

#define L4_OFF (ETH_HLEN + sizeof(struct iphdr))

// ipip_decap (internal/dataplane/ipip/ipip.c) writes cb[0] of every packet
// it sees on the uplink: this value when it decapsulated it (the outer
// source a node, the inner source in a block of that node), 0 otherwise.
// It runs first in the uplink's tcx chain whenever ipip.calico exists, and
// without ipip.calico no source routes back through an IFACE_IPIP device,
// so a stale cb[0] cannot widen the check below.
#define IPIP_DECAPSULATED 0x1e1e0004

// Not from a workload, where nothing like fp_wl_src vouches for the
// source: the host must route the source back out of the device the packet
// came in by (for a packet ipip_decap decapsulated on the uplink, out of
// ipip.calico). The normal path drops a packet from outside whose source is
// one of the host's own addresses (a martian, whatever rp_filter says),
// and with strict rp_filter one whose source it routes elsewhere (a local
// workload, a tunnel's pool); skipping routing, the program skipped both,
// and carried a forged segment of the host's own connection to a workload
// straight in (TestFastPathUplinkSourceCheck). What fails here goes the
// normal way, so a strict check costs asymmetric flows only their short
// cut.
static __always_inline int source_routed_back(struct __sk_buff *skb, __be32 saddr, __be32 daddr,
					      __u8 tos, int decapsulated)
{
	struct bpf_fib_lookup rev = {};
	__u32 *kind;

	rev.family = AF_INET;
	rev.tos = tos;
	rev.l4_protocol = IPPROTO_TCP;
	rev.ipv4_src = daddr;
	rev.ipv4_dst = saddr;
	rev.ifindex = skb->ingress_ifindex;
	// Only the route matters, not the neighbour; tot_len 20: no MTU test.
	rev.tot_len = 20;
	if (bpf_fib_lookup(skb, &rev, sizeof(rev), BPF_FIB_LOOKUP_SKIP_NEIGH) !=
	    BPF_FIB_LKUP_RET_SUCCESS)
		return 0;
	if (!decapsulated)
		return rev.ifindex == skb->ingress_ifindex;
	kind = bpf_map_lookup_elem(&fp_ifaces, &rev.ifindex);
	return kind && *kind == IFACE_IPIP;
}

static __always_inline int forward(struct __sk_buff *skb, int from_wl)
{
	void *data, *data_end;
	struct ethhdr *eth;
	struct iphdr *ip;
	struct tcphdr *tcp;
	struct bpf_sock_tuple tuple = {};
	struct bpf_ct_opts opts = {};
	struct bpf_fib_lookup fib = {};
	struct bpf_fib_lookup under = {};
	__be32 ipip_src = 0;
	struct nf_conn *ct;
	unsigned long status;
	__u8 tcp_state;
	__u32 *kind;
	__u32 check;
	__u8 tos;
	__u16 tot_len;
	__u32 out_kind;
	int rc;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return PASS; // IPv6 and ARP: not counted, the normal way
	// The headers we read and write must be in the linear part.
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + L4_OFF + sizeof(struct tcphdr) > data_end) {
		if (bpf_skb_pull_data(skb, L4_OFF + sizeof(struct tcphdr)) < 0)
			return PASS;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		if (data + L4_OFF + sizeof(struct tcphdr) > data_end)
			return PASS;
	}
	eth = data;
	ip = data + ETH_HLEN;
	tcp = data + L4_OFF;
	if (ip->version != 4 || ip->ihl != 5 || ip->protocol != IPPROTO_TCP ||
	    (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) || tcp->syn || tcp->fin || tcp->rst) {
		count(STAT_PASS_NOT_TCP);
		return PASS;
	}
	if (from_wl) {
		struct wl_src_key k = { .ifindex = skb->ingress_ifindex, .addr = ip->saddr };
		if (!bpf_map_lookup_elem(&fp_wl_src, &k)) {
			count(STAT_PASS_SPOOF);
			return PASS;
		}
	}
	if (ip->ttl <= 1) {
		count(STAT_PASS_TTL);
		return PASS;
	}

	// Packet pointers do not survive the calls below: keep what we need.
	tos = ip->tos;
	tot_len = bpf_ntohs(ip->tot_len);
	tuple.ipv4.saddr = ip->saddr;
	tuple.ipv4.daddr = ip->daddr;
	tuple.ipv4.sport = tcp->source;
	tuple.ipv4.dport = tcp->dest;

	// The FIB first: it is the cheaper test, and it turns away the host's
	// own traffic (not forwarded) before any conntrack lookup.
	fib.family = AF_INET;
	fib.tos = tos;
	fib.l4_protocol = IPPROTO_TCP;
	fib.ipv4_src = tuple.ipv4.saddr;
	fib.ipv4_dst = tuple.ipv4.daddr;
	fib.ifindex = skb->ingress_ifindex;
	// The MTU test. A GSO superpacket goes with tot_len 0, which the helper
	// passes (its segments were sized for the path; the normal path would
	// send it as it is too). Any other packet is tested as a router tests
	// it, its IP length against the route's MTU: with tot_len 0 the helper
	// compares the frame, Ethernet header included (the tc hook pushed it),
	// with the device's MTU plus its own link header, and ipip.calico has
	// none: every full-size segment (14 + 1480 > 1480 + 0 + 4) went the
	// normal way, 1.6% of an IPIP flow's data packets, to arrive behind
	// the fast path's.
	if (!skb->gso_size)
		fib.tot_len = tot_len;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if ((rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) ||
	    fib.ifindex == skb->ingress_ifindex) {
		count(STAT_PASS_FIB);
		return PASS;
	}
	kind = bpf_map_lookup_elem(&fp_ifaces, &fib.ifindex);
	if (!kind || (!from_wl && *kind != IFACE_WORKLOAD)) {
		count(STAT_PASS_FIB);
		return PASS;
	}
	out_kind = *kind;
	if (!from_wl) {
		int decapsulated = skb->cb[0] == IPIP_DECAPSULATED;

		if (decapsulated)
			skb->cb[0] = 0;
		if (!source_routed_back(skb, tuple.ipv4.saddr, tuple.ipv4.daddr, tos, decapsulated)) {
			count(STAT_PASS_FIB);
			return PASS;
		}
	}
	// An unresolved neighbour: the normal path resolves it (ARP), except
	// on ipip.calico, which resolves nothing.
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH && out_kind != IFACE_IPIP) {
		count(STAT_PASS_FIB);
		return PASS;
	}

	// Into ipip.calico: encapsulated here and sent out of the uplink, when
	// the route names the block's node as its gateway ("BLOCK via NODE dev
	// ipip.calico onlink", the FIB put NODE in ipv4_dst) and the node is
	// reached out of the uplink. The same packet ipip_encap would build,
	// without the hop through ipip.calico (a second dev_queue_xmit, its tcx
	// egress, an Ethernet header stripped and pushed back): at 4 streams
	// that hop was a quarter of what IPIP cost over no encapsulation. Looked
	// up before the packet is touched; if anything is missing the packet
	// goes into ipip.calico as before, where ipip_encap decides.
	if (out_kind == IFACE_IPIP && fib.ipv4_dst != tuple.ipv4.daddr) {
		__u32 zero = 0;
		__be32 *src = bpf_map_lookup_elem(&fp_ipip_src, &zero);
		__u32 *ukind;

		under.family = AF_INET;
		under.ipv4_src = src ? *src : 0;
		under.ipv4_dst = fib.ipv4_dst;
		under.ifindex = fib.ifindex;
		// The MTU test against the uplink, as above, of the packet as it
		// will be: the outer header added (the first lookup already held
		// the inner packet to ipip.calico's MTU).
		if (!skb->gso_size)
			under.tot_len = tot_len + sizeof(struct iphdr);
		if (src && *src) {
			rc = bpf_fib_lookup(skb, &under, sizeof(under), 0);
			ukind = bpf_map_lookup_elem(&fp_ifaces, &under.ifindex);
			if ((rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH) &&
			    ukind && *ukind == IFACE_UPLINK)
				ipip_src = *src;
		}
	}

	opts.netns_id = BPF_F_CURRENT_NETNS;
	opts.l4proto = IPPROTO_TCP;
	ct = bpf_skb_ct_lookup(skb, &tuple, sizeof(tuple.ipv4), &opts, sizeof(opts));
	if (!ct) {
		count(STAT_PASS_NO_CT);
		return PASS;
	}
	status = ct->status;
	// Once a FIN or RST went by (the normal way), conntrack moves the
	// entry to a closing state with a timeout of seconds to minutes; a
	// half-closed flow's remaining data must not keep it, nor have its
	// timeout set back to the established one below, or a closed flow's
	// entry would stay open for days. Only ESTABLISHED is carried.
	tcp_state = ct->proto.tcp.state;
	// One packet in 256: cheap, and a busy flow's entry never ages out.
	if ((status & CT_WANT) == CT_WANT && tcp_state == TCP_CONNTRACK_ESTABLISHED &&
	    !(bpf_get_prandom_u32() & 0xff)) {
		__u32 key = CONFIG_CT_ESTABLISHED_MS;
		__u32 *ms = bpf_map_lookup_elem(&fp_config, &key);

		if (ms && *ms)
			bpf_ct_change_timeout(ct, *ms);
	}
	bpf_ct_release(ct);
	if ((status & CT_WANT) != CT_WANT || tcp_state != TCP_CONNTRACK_ESTABLISHED ||
	    (status & (IPS_SRC_NAT | IPS_DST_NAT | IPS_DYING))) {
		count(STAT_PASS_CT_STATE);
		return PASS;
	}

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + L4_OFF > data_end)
		return PASS;
	eth = data;
	ip = data + ETH_HLEN;
	// As ip_decrease_ttl: the checksum moves by the TTL's weight.
	check = ip->check;
	check += bpf_htons(0x0100);
	ip->check = (__u16)(check + (check >= 0xFFFF));
	ip->ttl--;
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);

	if (ipip_src) {
		struct iphdr outer = {};
		struct bpf_redir_neigh nh = {};
		__u32 len = skb->len - ETH_HLEN + sizeof(outer);

		outer.version = 4;
		outer.ihl = 5;
		outer.tos = tos;
		outer.tot_len = bpf_htons(len > 0xffff ? 0 : len);
		outer.frag_off = bpf_htons(IP_DF);
		outer.ttl = 64;
		outer.protocol = IPPROTO_IPIP;
		outer.saddr = ipip_src;
		outer.daddr = fib.ipv4_dst;
		outer.check = ip_csum(&outer);
		// As ipip_encap: SKB_GSO_IPXIP4 keeps large segments large, and
		// FIXED_GSO keeps their size (sized for ipip.calico's MTU, they
		// fill the uplink's exactly once encapsulated). Room after the
		// Ethernet header, which bpf_redirect_neigh rewrites.
		if (bpf_skb_adjust_room(skb, sizeof(outer), BPF_ADJ_ROOM_MAC,
					BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_FIXED_GSO) < 0) {
			// Unchanged but for the TTL and MACs: ipip_encap tries.
			count(STAT_FWD_TUNNEL);
			return bpf_redirect(fib.ifindex, 0);
		}
		if (bpf_skb_store_bytes(skb, ETH_HLEN, &outer, sizeof(outer), 0) < 0)
			return TC_ACT_SHOT;
		nh.nh_family = AF_INET;
		nh.ipv4_nh = under.ipv4_dst; // the gateway, or the node when on-link
		count(STAT_FWD_TUNNEL);
		return bpf_redirect_neigh(under.ifindex, &nh, sizeof(nh), 0);
	}
	if (out_kind == IFACE_WORKLOAD) {
		count(STAT_FWD_WORKLOAD);
		return bpf_redirect_peer(fib.ifindex, 0);
	}
	// Towards a tunnel device: its egress (a packet routed there is sent
	// there). bpf_redirect strips the Ethernet header for ipip.calico,
	// which has none; vxlan.calico keeps it, with the remote VTEP's MAC
	// from its permanent neighbour entry.
	count(out_kind == IFACE_UPLINK ? STAT_FWD_UPLINK : STAT_FWD_TUNNEL);
	return bpf_redirect(fib.ifindex, 0);
}

SEC("tc")
int fp_from_wl(struct __sk_buff *skb)
{
	return forward(skb, 1);
}

SEC("tc")
int fp_from_uplink(struct __sk_buff *skb)
{
	return forward(skb, 0);
}
