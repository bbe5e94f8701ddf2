// Helpers shared by the tc programs of internal/dataplane/ipip and
// internal/dataplane/fastpath: both build IPIP outer headers, which must be
// byte for byte the same whichever program built them.
#ifndef CALICO_BPFINC_IPV4_H
#define CALICO_BPFINC_IPV4_H

#include <linux/ip.h>

// The IPv4 header checksum of a header built here (no options).
static __always_inline __u16 ip_csum(struct iphdr *ip)
{
	__u32 sum = 0;
	__u16 *p = (__u16 *)ip;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(*ip) / 2); i++)
		sum += p[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

#endif
