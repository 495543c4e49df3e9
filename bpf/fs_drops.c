/* SPDX-License-Identifier: MIT */
/*
 * fs_drops.c - the kernel's packet drops (tracepoint skb:kfree_skb), counted to their flow.
 *
 * Logic: 1) skip frees that are no drop (reason <= NOT_SPECIFIED: consumed, not dropped yet,
 * or a free that gives no reason) and frames addressed to another host (OTHERHOST: on a mirror
 * port or a promiscuous link every frame not for this host is freed so, and nothing was lost;
 * values from BTF, -1 when the kernel has no such reason); 2) read the dropped skb's fields
 * and its device's ifindex, at the offsets of struct sk_buff and struct net_device this kernel
 * has (-D flags from its BTF, flowscope/sensor/btf.py: there are no kernel headers to compile
 * against), and its IP header and ports (fs_drop_trace: two builds); 3) build the canonical
 * key and, when fs_flows holds that flow, add the drop to it
 * (per orientation, and to the majority vote of its reason); 4) count the drop by (interface,
 * reason) in fs_drop_counts when it belongs to a known flow or happened on a watched
 * interface. Drops of other packets are ignored: the host's unrelated traffic is not the
 * sensor's business.
 * Compiled only with -DFS_DROPS=1.
 *
 * Loaded as a BTF-typed tracepoint program (tp_btf; flowscope/sensor/loader.py
 * load_tp_btf): the verifier knows args[0] is a struct sk_buff *, so the fields above are
 * plain loads (one instruction each, a fault reads as 0) instead of helper calls, which cost
 * tens of ns each on a VM (docs/benchmarks.md). The packet bytes behind skb->head are plain
 * loads too where the kernel allows it (fs_drop_trace).
 */
#include "fs_shared.h"
#include "fs_parse.h"
#include "fs_maps.h"

#ifndef FS_DROPS
#define FS_DROPS 0
#endif
#if FS_DROPS

#define FS_DROP_NOT_SPECIFIED 2 /* SKB_DROP_REASON_NOT_SPECIFIED (0, 1: not dropped, consumed) */
#define FS_NO_HEADER 0xffff     /* an unset skb header offset */
#ifndef FS_DROP_OTHERHOST
#define FS_DROP_OTHERHOST -1
#endif
#ifndef FS_DROP_NS_OTHERHOST
#define FS_DROP_NS_OTHERHOST -1
#endif

static __always_inline void fs_drop_count(__u32 idx)
{
	__u64 *v = fs_counters.lookup(&idx);
	if (v)
		*v += 1;
}

/* IP header bytes read at once: an IPv6 header or an IPv4 one with options, and the ports
 * right after an IPv6 or option-less IPv4 header */
#define FS_IP_READ 48

/* A member of a BTF-typed struct, read with a plain load (the offset comes from the kernel's
 * BTF; the verifier checks the access against the same BTF) */
#define FS_BTF_READ(type, base, off) (*(type *)((char *)(base) + (off)))

/* Big-endian fields at byte offset i of the IP header bytes ip (fs_ntohs/fs_ntohl of
 * fs_parse.h, and the 64-bit halves of an IPv6 address) */
#define FS_IP16(ip, i) fs_ntohs(*(const __u16 *)((ip) + (i)))
#define FS_IP32(ip, i) fs_ntohl(*(const __u32 *)((ip) + (i)))
#define FS_IP64(ip, i) __builtin_bswap64(*(const __u64 *)((ip) + (i)))

/*
 * The tracer's body, in two builds (direct is a constant in each):
 * direct 1 (fs_kfree_skb): the packet bytes are loaded through skb->head like the fields.
 *   Kernels from 6.17 type a pointer to a primitive (head is an unsigned char *) read from a
 *   typed struct as read-only untrusted memory: loads through it are plain loads that read 0
 *   where they fault. Older verifiers refuse the program (head is a number there).
 * direct 0 (fs_kfree_skb_probe): the bytes are copied with bpf_probe_read_kernel (one call for
 *   the header, a shorter retry where the buffer may end sooner, one for the ports after
 *   options), for those kernels. loader._load_drop_tracer tries the first, then this one.
 */
static __always_inline int fs_drop_trace(__u64 *ctx, const int direct)
{
	void *skb = (void *)ctx[0];
	__u32 reason = (__u32)ctx[2];
	if (reason <= FS_DROP_NOT_SPECIFIED)
		return 0;
	if (reason == (__u32)FS_DROP_OTHERHOST || reason == (__u32)FS_DROP_NS_OTHERHOST) {
		fs_drop_count(FS_CNT_OTHERHOST); /* for the sensor's mirror-port note */
		return 0;
	}
	unsigned char *head = FS_BTF_READ(unsigned char *, skb, FS_SKB_HEAD);
	void *dev = FS_BTF_READ(void *, skb, FS_SKB_DEV);
	__u16 nh = FS_BTF_READ(__u16, skb, FS_SKB_NETWORK_HEADER);
	__u16 th = FS_BTF_READ(__u16, skb, FS_SKB_TRANSPORT_HEADER);
	__u32 ifindex = 0;
	if (dev)
		ifindex = FS_BTF_READ(__u32, dev, FS_NETDEV_IFINDEX);
	__u8 *watched = fs_watched.lookup(&ifindex);
	struct fs_flow_key k = {};
	struct fs_flow *f = 0;
	__u8 dir = 0;
	__u64 buf[FS_IP_READ / 8] = {}; /* direct 0: the copied bytes (8-aligned loads) */
	const __u8 *ip = (const __u8 *)buf;
	/* bytes of ip that may be parsed: 0 (none), 40 or FS_IP_READ */
	int got = 0;
	if (head && nh != FS_NO_HEADER) {
		if (direct) {
			ip = head + nh;
			got = FS_IP_READ;
		} else if (bpf_probe_read_kernel(buf, FS_IP_READ, head + nh) == 0) {
			got = FS_IP_READ;
		} else if (bpf_probe_read_kernel(buf, 40, head + nh) == 0) {
			got = 40; /* the buffer may end sooner: the 40 bytes read before */
		}
	}
	if (got) {
		__u64 s_hi = 0, s_lo, d_hi = 0, d_lo;
		__u8 proto;
		__u32 l4 = 0; /* IP header length, when the transport header is unset */
		int frag = 0;
		__u8 v = ip[0];
		if ((v >> 4) == 4) {
			k.l3 = FS_L3_IPV4;
			proto = ip[9];
			s_lo = FS_IP32(ip, 12);
			d_lo = FS_IP32(ip, 16);
			l4 = (v & 0xf) * 4;
			frag = (FS_IP16(ip, 6) & 0x1fff) != 0; /* a non-first fragment: no ports */
		} else if ((v >> 4) == 6) {
			k.l3 = FS_L3_IPV6;
			/* extension headers are not walked: such drops match no flow */
			proto = ip[6];
			s_hi = FS_IP64(ip, 8);
			s_lo = FS_IP64(ip, 16);
			d_hi = FS_IP64(ip, 24);
			d_lo = FS_IP64(ip, 32);
			l4 = 40;
		} else {
			goto count;
		}
		__u16 sp = 0, dp = 0;
		if (!frag &&
		    (proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP)) {
			__u32 at = (th != FS_NO_HEADER && th > nh) ? th : nh + l4;
			__u32 rel = at - nh;
			__u32 ports = 0;
			if (direct) {
				ports = *(const __u32 *)(head + at);
			} else if (rel == 20) {
				/* in the bytes read already after an option-less IPv4 or an IPv6
				 * header (constant offsets: the verifier allows no variable stack
				 * offset) */
				ports = *(const __u32 *)(ip + 20);
			} else if (rel == 40 && got == FS_IP_READ) {
				ports = *(const __u32 *)(ip + 40);
			} else {
				bpf_probe_read_kernel(&ports, sizeof(ports), head + at);
			}
			ports = fs_ntohl(ports);
			sp = ports >> 16;
			dp = ports & 0xffff;
		}
		/* the canonical key, as fs_flow.h builds it */
		if (s_hi < d_hi || (s_hi == d_hi && (s_lo < d_lo || (s_lo == d_lo && sp <= dp)))) {
			k.a_hi = s_hi;
			k.a_lo = s_lo;
			k.b_hi = d_hi;
			k.b_lo = d_lo;
			k.port_a = sp;
			k.port_b = dp;
		} else {
			dir = 1;
			k.a_hi = d_hi;
			k.a_lo = d_lo;
			k.b_hi = s_hi;
			k.b_lo = s_lo;
			k.port_a = dp;
			k.port_b = sp;
		}
		k.proto = proto;
		f = fs_flows.lookup(&k);
	}
count:
	if (!f && !watched)
		return 0;
	if (f) {
		if (dir)
			__sync_fetch_and_add(&f->drops[1], 1);
		else
			__sync_fetch_and_add(&f->drops[0], 1);
		/* majority vote (plain stores: a race only blurs a tie) */
		if (f->drop_votes == 0) {
			f->drop_reason = reason;
			f->drop_votes = 1;
		} else if (f->drop_reason == reason) {
			if (f->drop_votes < 0xffff)
				f->drop_votes += 1;
		} else {
			f->drop_votes -= 1;
		}
		fs_drop_count(FS_CNT_DROPS);
	} else {
		fs_drop_count(FS_CNT_DROPS_OTHER);
	}
	struct fs_drop_key dk = {.ifindex = watched ? ifindex : 0, .reason = reason};
	__u64 one = 1;
	__u64 *c = fs_drop_counts.lookup(&dk);
	if (c)
		__sync_fetch_and_add(c, 1);
	else
		fs_drop_counts.update(&dk, &one);
	return 0;
}

int fs_kfree_skb(__u64 *ctx)
{
	return fs_drop_trace(ctx, 1);
}

int fs_kfree_skb_probe(__u64 *ctx)
{
	return fs_drop_trace(ctx, 0);
}

#endif /* FS_DROPS */
