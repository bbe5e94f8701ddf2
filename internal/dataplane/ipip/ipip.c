// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

// IPIP (IPv4 in IPv4, protocol 4) for kernels without the ipip module.
//
// ipip_encap runs at tc egress of ipip.calico, a TUN device with no reader
// that the kernel routes remote IPIP blocks to ("BLOCK via NODE dev
// ipip.calico onlink"). The device has no link layer, so no neighbour is
// resolved before the program runs. It finds the block's node in
// ipip_routes, prepends the outer IPv4 header with bpf_skb_adjust_room (which
// marks GSO packets SKB_GSO_IPXIP4, so large TCP segments stay large), looks
// the underlay next hop towards the node up with bpf_fib_lookup and sends the
// packet out of that device with bpf_redirect_neigh, which resolves the next
// hop's MAC like the kernel's own output path does.
//
// ipip_decap runs at tc ingress of the uplink. Protocol-4 packets to this
// host are taken apart only when the outer source is a known node and the
// inner source lies in a block routed to that node (or is the node itself);
// every other protocol-4 packet to this host is dropped, and so is every
// plain packet with a source in a block routed through the tunnel
// (plain_source_ok). The inner packet is
// handed on as any packet arriving on the uplink: to the next tcx program
// (internal/dataplane/fastpath's fp_from_uplink, attached after this one,
// which may move an accepted flow's packet straight into its workload), else
// to the stack, where routing, rp_filter and nftables see it. Every packet
// this program does not drop goes on with TCX_NEXT, never TC_ACT_OK, which
// would end the tcx chain and keep later programs from ever seeing the
// uplink's traffic.
//
// On the wire this is plain IPIP: a kernel tunl0 on the other side
// interoperates. With decap set to 0 (hosts whose kernel has tunl0, which
// decapsulates by itself) ipip_decap only filters.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "../bpfinc/ipv4.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
// Not ours to decide: the next tcx program, or the stack (TC_ACT_OK would
// end the tcx chain). These uapi headers predate TCX_NEXT.
#define NEXT (-1)

// Set by the loader: this host's address, the outer source of every packet
// we encapsulate and the only outer destination we decapsulate.
volatile const __be32 local_ip = 0;
// 1: ipip_decap decapsulates (eBPF mode); 0: it only filters (kernel tunl0).
volatile const __u32 decap = 1;

// A route to a remote block: key {prefix length, address}, value: the node
// that owns it. Kept by the agent from the same desired state as the kernel
// routes through ipip.calico.
struct route_key {
	__u32 prefixlen;
	__be32 addr;
};

struct route_val {
	__be32 node;
	__u32 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__type(key, struct route_key);
	__type(value, struct route_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} ipip_routes SEC(".maps");

// Node addresses: the only outer sources accepted.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __be32);
	__type(value, __u32);
} ipip_nodes SEC(".maps");

// Counters, one slot per outcome (see the STAT_ names; Go mirrors them).
enum {
	STAT_ENCAP_OK = 0,
	STAT_ENCAP_NO_ROUTE,   // routed into the tunnel but no block in ipip_routes
	STAT_ENCAP_NO_UNDERLAY, // no underlay route to the node, or it loops back
	STAT_ENCAP_ERROR,      // not IPv4, or the kernel refused to grow the packet
	STAT_DECAP_OK,
	STAT_DROP_UNKNOWN_NODE, // protocol 4 to us from an address that is no node
	STAT_DROP_INNER_SOURCE, // inner source not in a block of the sending node
	STAT_DROP_MALFORMED,    // outer options, fragments, short or non-IPv4 inner
	STAT_DROP_PLAIN_SOURCE, // not encapsulated, from a block routed through the tunnel
	STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} ipip_stats SEC(".maps");

static __always_inline void count(__u32 what)
{
	__u64 *v = bpf_map_lookup_elem(&ipip_stats, &what);
	if (v)
		*v += 1;
}

SEC("tc")
int ipip_encap(struct __sk_buff *skb)
{
	struct iphdr inner, outer = {};
	struct route_key key = {};
	struct route_val *rv;
	struct bpf_fib_lookup fib = {};
	struct bpf_redir_neigh nh = {};
	struct ethhdr eth = {};
	__be32 node;
	int rc;

	if (skb->protocol != bpf_htons(ETH_P_IP) ||
	    bpf_skb_load_bytes(skb, 0, &inner, sizeof(inner)) < 0 || inner.version != 4) {
		count(STAT_ENCAP_ERROR);
		return TC_ACT_SHOT;
	}
	key.prefixlen = 32;
	key.addr = inner.daddr;
	rv = bpf_map_lookup_elem(&ipip_routes, &key);
	if (!rv) {
		count(STAT_ENCAP_NO_ROUTE);
		return TC_ACT_SHOT;
	}
	node = rv->node;

	// The underlay next hop towards the node, looked up as if forwarded
	// from this device; tot_len 0 makes the helper check the (GSO-aware)
	// packet against the egress device's MTU.
	fib.family = AF_INET;
	fib.ipv4_src = local_ip;
	fib.ipv4_dst = node;
	fib.ifindex = skb->ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if ((rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) ||
	    fib.ifindex == skb->ifindex) {
		count(STAT_ENCAP_NO_UNDERLAY);
		return TC_ACT_SHOT;
	}

	outer.version = 4;
	outer.ihl = 5;
	outer.tos = inner.tos;
	outer.tot_len = bpf_htons(skb->len + sizeof(outer) > 0xffff ? 0 : skb->len + sizeof(outer));
	outer.frag_off = bpf_htons(IP_DF);
	outer.ttl = 64;
	outer.protocol = IPPROTO_IPIP;
	outer.saddr = local_ip;
	outer.daddr = node;
	outer.check = ip_csum(&outer);

	// Room for the outer header in front of the inner one. FIXED_GSO: the
	// inner segments were sized for this device's MTU (1480), so with the
	// outer header they fill the underlay's 1500 exactly.
	if (bpf_skb_adjust_room(skb, sizeof(outer), BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_FIXED_GSO) < 0 ||
	    // bpf_redirect_neigh wants an Ethernet header to strip: this
	    // device has none, so push a placeholder (unicast zero MAC).
	    bpf_skb_change_head(skb, sizeof(eth), 0) < 0) {
		count(STAT_ENCAP_ERROR);
		return TC_ACT_SHOT;
	}
	eth.h_proto = bpf_htons(ETH_P_IP);
	if (bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0) < 0 ||
	    bpf_skb_store_bytes(skb, sizeof(eth), &outer, sizeof(outer), 0) < 0) {
		count(STAT_ENCAP_ERROR);
		return TC_ACT_SHOT;
	}

	nh.nh_family = AF_INET;
	nh.ipv4_nh = fib.ipv4_dst; // the gateway, or the node itself when on-link
	count(STAT_ENCAP_OK);
	return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
}

// What cb[0] holds after a decapsulation, for the fast path's source check
// (internal/dataplane/fastpath/fastpath.c defines the same value).
#define IPIP_DECAPSULATED 0x1e1e0004

// A packet that is not IPIP, from a source in an IPIP block whose route
// goes through the tunnel (tunl0 or ipip.calico: the block's node is not
// reached directly, as CrossSubnet does on a shared subnet): that node
// sends its blocks' packets only encapsulated, so this one was forged by
// whoever sent it, a fabric machine or another node, claiming a remote
// workload's address (and with it that workload's policy identity, and a
// place on its established flows). The normal path cannot tell: the
// uplink's rp_filter is loose (loosenRPFilter: decapsulated packets enter
// on the uplink), and loose accepts any routable source. Dropped for every
// protocol, fast path or not. The LPM lookup first: a source outside every
// IPIP block (most plain traffic) costs no FIB lookup.
static __always_inline int plain_source_ok(struct __sk_buff *skb, struct iphdr *ip)
{
	struct route_key key = { .prefixlen = 32, .addr = ip->saddr };
	struct bpf_fib_lookup rev = {};

	if (!bpf_map_lookup_elem(&ipip_routes, &key))
		return 1;
	rev.family = AF_INET;
	rev.tos = ip->tos;
	rev.l4_protocol = ip->protocol;
	rev.ipv4_src = ip->daddr;
	rev.ipv4_dst = ip->saddr;
	rev.ifindex = skb->ingress_ifindex;
	rev.tot_len = 20; // the route only: no MTU test
	if (bpf_fib_lookup(skb, &rev, sizeof(rev), BPF_FIB_LOOKUP_SKIP_NEIGH) ==
		    BPF_FIB_LKUP_RET_SUCCESS &&
	    rev.ifindex == skb->ingress_ifindex)
		return 1; // routed straight back out of the uplink: sent plain
	count(STAT_DROP_PLAIN_SOURCE);
	return 0;
}

SEC("tc")
int ipip_decap(struct __sk_buff *skb)
{
	struct iphdr outer, inner;
	struct route_key key = {};
	struct route_val *rv;

	// cb[0] tells the fast path after us (fastpath.c, IPIP_DECAPSULATED)
	// whether this program decapsulated the packet: written for every
	// packet, so nothing left there by an earlier layer counts.
	skb->cb[0] = 0;
	if (skb->protocol != bpf_htons(ETH_P_IP) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, &outer, sizeof(outer)) < 0)
		return NEXT;
	if (outer.protocol != IPPROTO_IPIP)
		return plain_source_ok(skb, &outer) ? NEXT : TC_ACT_SHOT;
	if (outer.daddr != local_ip)
		return NEXT; // not for this host: routing and policy decide

	if (!bpf_map_lookup_elem(&ipip_nodes, &outer.saddr)) {
		count(STAT_DROP_UNKNOWN_NODE);
		return TC_ACT_SHOT;
	}
	// Our senders never use options or fragment (DF); the inner header
	// must follow at once and be IPv4.
	if (outer.ihl != 5 || (outer.frag_off & bpf_htons(IP_MF | IP_OFFSET)) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(outer), &inner, sizeof(inner)) < 0 ||
	    inner.version != 4 || inner.ihl < 5) {
		count(STAT_DROP_MALFORMED);
		return TC_ACT_SHOT;
	}
	if (inner.saddr != outer.saddr) {
		key.prefixlen = 32;
		key.addr = inner.saddr;
		rv = bpf_map_lookup_elem(&ipip_routes, &key);
		if (!rv || rv->node != outer.saddr) {
			count(STAT_DROP_INNER_SOURCE);
			return TC_ACT_SHOT;
		}
	}
	if (!decap)
		return NEXT;

	if (bpf_skb_adjust_room(skb, -(__s32)sizeof(outer), BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO) < 0) {
		count(STAT_DROP_MALFORMED);
		return TC_ACT_SHOT;
	}
	count(STAT_DECAP_OK);
	skb->cb[0] = IPIP_DECAPSULATED;
	return NEXT;
}
