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
 * against), and its IP header and ports through bpf_probe_read_kernel; 3) build the canonical
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
 * tens of ns each on a VM (docs/benchmarks.md). Only the packet bytes, behind the untyped
 * skb->head, still need bpf_probe_read_kernel.
 */
#include "fs_shared.h"
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

static __always_inline __u64 fs_be64(const __u8 *b)
{
	__u64 v = 0;
#pragma unroll
	for (int i = 0; i < 8; i++)
		v = (v << 8) | b[i];
	return v;
}

/* IP header bytes read at once: an IPv6 header or an IPv4 one with options, and the ports
 * right after an IPv6 or option-less IPv4 header */
#define FS_IP_READ 48

/* A member of a BTF-typed struct, read with a plain load (the offset comes from the kernel's
 * BTF; the verifier checks the access against the same BTF) */
#define FS_BTF_READ(type, base, off) (*(type *)((char *)(base) + (off)))

int fs_kfree_skb(__u64 *ctx)
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
	__u8 ip[FS_IP_READ] = {};
	/* 0: nothing read; 1: 40 bytes; 2: FS_IP_READ bytes */
	int got = 0;
	if (head && nh != FS_NO_HEADER) {
		if (bpf_probe_read_kernel(ip, FS_IP_READ, head + nh) == 0)
			got = 2;
		else if (bpf_probe_read_kernel(ip, 40, head + nh) == 0)
			got = 1; /* the buffer may end sooner: the 40 bytes read before */
	}
	if (got) {
		__u64 s_hi = 0, s_lo, d_hi = 0, d_lo;
		__u8 proto;
		__u32 l4 = 0; /* IP header length, when the transport header is unset */
		int frag = 0;
		if ((ip[0] >> 4) == 4) {
			k.l3 = FS_L3_IPV4;
			proto = ip[9];
			s_lo = ((__u64)ip[12] << 24) | (ip[13] << 16) | (ip[14] << 8) | ip[15];
			d_lo = ((__u64)ip[16] << 24) | (ip[17] << 16) | (ip[18] << 8) | ip[19];
			l4 = (ip[0] & 0xf) * 4;
			frag = ((ip[6] & 0x1f) | ip[7]) != 0; /* a non-first fragment: no ports */
		} else if ((ip[0] >> 4) == 6) {
			k.l3 = FS_L3_IPV6;
			proto = ip
			        [6]; /* extension headers are not walked: such drops match no flow */
			s_hi = fs_be64(ip + 8);
			s_lo = fs_be64(ip + 16);
			d_hi = fs_be64(ip + 24);
			d_lo = fs_be64(ip + 32);
			l4 = 40;
		} else {
			goto count;
		}
		__u16 sp = 0, dp = 0;
		if (!frag &&
		    (proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP)) {
			__u8 ports[4] = {};
			__u32 at = (th != FS_NO_HEADER && th > nh) ? th : nh + l4;
			__u32 rel = at - nh;
			/* in the bytes read already after an option-less IPv4 or an IPv6 header
			 * (constant indexes: the verifier needs no variable stack offset) */
			if (rel == 20) {
				sp = ((__u16)ip[20] << 8) | ip[21];
				dp = ((__u16)ip[22] << 8) | ip[23];
			} else if (rel == 40 && got == 2) {
				sp = ((__u16)ip[40] << 8) | ip[41];
				dp = ((__u16)ip[42] << 8) | ip[43];
			} else if (bpf_probe_read_kernel(ports, sizeof(ports), head + at) == 0) {
				sp = (ports[0] << 8) | ports[1];
				dp = (ports[2] << 8) | ports[3];
			}
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

#endif /* FS_DROPS */
