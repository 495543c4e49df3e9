/* SPDX-License-Identifier: MIT */
/*
 * fs_parse.h - cursor-style header parsers for the live sensor.
 *
 * Each parse_<hdr>(cur, data_end, ...) bounds-checks its header against data_end, advances
 * the cursor past it and returns the next protocol, or a negative FS_PERR_* code. The rules
 * follow the offline parser (flowscope/_kernels/parse.py) so that one frame gives the same key,
 * flags and lengths on both paths:
 *   Ethernet, then the offline parser's L2 walk (_ethertype_walk): up to FS_MAX_L2_LAYERS
 *   layers, in any order, of VLAN tags (802.1Q 0x8100, 802.1ad 0x88a8, 0x9100), PBB 802.1ah
 *   (0x88e7: I-TAG, inner Ethernet header), Cisco FabricPath (0x8903: FTag/TTL, inner
 *   Ethernet header), VN-Tags (0x8926) and 802.3 length fields (LLC + SNAP with an EtherType),
 *   ending in IPv4/IPv6, an MPLS label stack (0x8847/0x8848, up to FS_MAX_MPLS_LABELS labels,
 *   then IPv4/IPv6 by the version nibble) or a PPPoE session header (0x8864, PPP 0x0021 IPv4 /
 *   0x0057 IPv6);
 *   IPv4 with options skipped by IHL, IPv6 with up to FS_MAX_IPV6_EXT extension headers;
 *   TCP (ports, flags, seq, ack, window), UDP and SCTP (ports), ICMP/ICMPv6 (type, code).
 * Lengths come from the IP length fields, never from the frame length, so Ethernet padding and
 * capture truncation do not change them.
 */
#ifndef FS_PARSE_H
#define FS_PARSE_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>
#include "fs_shared.h"

#ifndef FS_MAX_L2_LAYERS
#define FS_MAX_L2_LAYERS 8 /* same bound as the offline parser's MAX_L2_LAYERS */
#endif
#ifndef FS_MAX_MPLS_LABELS
#define FS_MAX_MPLS_LABELS 8 /* same bound as the offline parser's MAX_MPLS_LABELS */
#endif
/* Longest layer that passes the walk on to another EtherType: a PBB I-TAG and the inner
 * Ethernet header (FabricPath 16, LLC/SNAP 8 or 9, VN-Tag 6, VLAN 4). */
#define FS_L2_MAX_LAYER_BYTES 18
/* Longest header the walk starts after: an 802.11 data frame inside GRE (fs_tunnel.h: 30
 * bytes with four addresses, QoS control 2, HT control 4, an A-MSDU subframe header 14);
 * Ethernet is 14. */
#define FS_L2_FIRST_MAX_BYTES 50
/* Deepest L3 start the walk can return: that header, FS_MAX_L2_LAYERS of the longest layer,
 * then a full MPLS stack or a PPPoE header (8 bytes), whichever is longer. */
#define FS_L2_MAX_BYTES                                                                            \
	(FS_L2_FIRST_MAX_BYTES + FS_L2_MAX_LAYER_BYTES * FS_MAX_L2_LAYERS +                        \
	 (FS_MAX_MPLS_LABELS > 2 ? 4 * FS_MAX_MPLS_LABELS : 8))
#ifndef FS_MAX_IPV6_EXT
#define FS_MAX_IPV6_EXT 8 /* same bound as the offline parser's MAX_IPV6_EXT */
#endif

#define FS_ETH_P_8021Q 0x8100
#define FS_ETH_P_8021AD 0x88A8
#define FS_ETH_P_QINQ_OLD 0x9100
#define FS_ETH_P_MPLS_UC 0x8847
#define FS_ETH_P_MPLS_MC 0x8848
#define FS_ETH_P_PPPOE_SESS 0x8864
#define FS_ETH_P_PBB 0x88E7        /* 802.1ah I-TAG (4 bytes), then the inner Ethernet header */
#define FS_ETH_P_FABRICPATH 0x8903 /* FTag, TTL (2 bytes), then the inner Ethernet header */
#define FS_ETH_P_VNTAG 0x8926      /* 4-byte VN-Tag, then the EtherType */
#define FS_ETH_MAX_8023_LEN 1500   /* EtherType values up to this are 802.3 lengths: LLC follows */
#define FS_LLC_SNAP 0xAA           /* DSAP and SSAP of an LLC header followed by SNAP */
#define FS_OUI_BRIDGE_TUNNEL 0xF8  /* SNAP OUI 0000f8 (802.1H); 000000 is RFC 1042 */
#define FS_PPP_IPV4 0x0021
#define FS_PPP_IPV6 0x0057

#define fs_htons(x) ((__be16)__builtin_bswap16(x))
#define fs_ntohs(x) ((__u16)__builtin_bswap16(x))
#define fs_ntohl(x) ((__u32)__builtin_bswap32(x))

/* Negative parser results; each maps to one unmatched counter. */
enum fs_perr {
	FS_PERR_TRUNCATED = -1,
	FS_PERR_NOT_IP = -2,
	FS_PERR_BAD_HEADER = -3,
};

struct fs_cursor {
	void *pos;
};

/* What the parsers extract from one frame (kernel-internal; not part of the contract). */
struct fs_pkt {
	__u64 src_hi, src_lo, dst_hi, dst_lo; /* same encoding as fs_flow_key */
	__u32 seq, ack;
	__u32 payload_len;
	__u32 ip_len;       /* IP total length (IPv6: 40 + payload length) */
	__u16 sport, dport; /* host order; 0 without FS_PF_PORTS */
	__u16 window;
	__u8 l3, proto, tcp_flags, pflags, icmp_type, icmp_code;
	__u8 l4_short; /* TCP/UDP header cut short: keyed at the IP level (ports 0) */
	__u32 frag_id; /* IPv4 identification / IPv6 fragment id (fragments only) */
	/* context: the link layer of the frame */
	__u64 smac, dmac; /* 48-bit big-endian values (PBB/FabricPath: the inner header's) */
	__u16 vlan[2];    /* the first two VLAN ids, outer first */
	__u8 nvlan;       /* VLAN tags seen */
	__u32 pay_off;    /* TCP/UDP: offset of the L4 payload from the frame start (dns) */
	/* tunnels: where this packet's headers start in the frame, and the encapsulation it came
	 * out of (fs_tunnel.h; depth 0: the frame's outer packet) */
	__u32 l3_off, l4_off;
	__u32 tun_off; /* offset of the encapsulated frame (its frame_len counts from there) */
	__u32 tun_key;
	__u8 tun_type, tun_depth, tun_ether;
};

/* A 6-byte MAC address as its 48-bit big-endian value. */
static __always_inline __u64 fs_mac(const __u8 *m)
{
	return ((__u64)m[0] << 40) | ((__u64)m[1] << 32) | ((__u64)m[2] << 24) |
	       ((__u64)m[3] << 16) | ((__u64)m[4] << 8) | m[5];
}

static __always_inline int fs_is_vlan(__u16 et)
{
	return et == FS_ETH_P_8021Q || et == FS_ETH_P_8021AD || et == FS_ETH_P_QINQ_OLD;
}

/*
 * MPLS label stack at c->pos: pops labels up to the bottom of stack (at most
 * FS_MAX_MPLS_LABELS), then tells IPv4 from IPv6 by the first nibble, as MPLS itself carries
 * no payload type. Returns FS_L3_IPV4/FS_L3_IPV6 with c->pos at the IP header.
 */
static __always_inline int parse_mpls(struct fs_cursor *c, void *data_end)
{
	__u8 *lbl;
#pragma unroll
	for (int i = 0; i < FS_MAX_MPLS_LABELS; i++) {
		lbl = c->pos;
		if ((void *)(lbl + 4) > data_end)
			return FS_PERR_TRUNCATED;
		c->pos = lbl + 4;
		if (lbl[2] & 1) /* bottom of stack */
			goto bottom;
	}
	return FS_PERR_NOT_IP;
bottom:
	lbl = c->pos;
	if ((void *)(lbl + 1) > data_end)
		return FS_PERR_TRUNCATED;
	if ((lbl[0] >> 4) == 4)
		return FS_L3_IPV4;
	if ((lbl[0] >> 4) == 6)
		return FS_L3_IPV6;
	return FS_PERR_NOT_IP;
}

/* PPPoE session header (6 bytes) and the PPP protocol field (2). */
static __always_inline int parse_pppoe(struct fs_cursor *c, void *data_end)
{
	__u8 *h = c->pos;
	if ((void *)(h + 8) > data_end)
		return FS_PERR_TRUNCATED;
	__u16 ppp = ((__u16)h[6] << 8) | h[7];
	c->pos = h + 8;
	if (ppp == FS_PPP_IPV4)
		return FS_L3_IPV4;
	if (ppp == FS_PPP_IPV6)
		return FS_L3_IPV6;
	return FS_PERR_NOT_IP;
}

/*
 * Length of a layer of the walk that is followed by nothing but its next EtherType, held in
 * its last two bytes: a VLAN tag, a VN-Tag, or a PBB/FabricPath header with the inner
 * Ethernet header. 0 for any other EtherType.
 */
static __always_inline __u32 fs_l2_tag_len(__u16 et)
{
	if (fs_is_vlan(et))
		return 4;
	if (et == FS_ETH_P_PBB)
		return 4 + 14;
	if (et == FS_ETH_P_FABRICPATH)
		return 2 + 14;
	if (et == FS_ETH_P_VNTAG)
		return 4 + 2;
	return 0;
}

/*
 * The cursor as data plus a bounded variable offset, the same whatever came before. Each way
 * through the walk would otherwise leave c->pos at its own constant offset, and the verifier
 * would check everything after it once per offset: the rest of the walk once per combination
 * of earlier layers, and the IP and L4 code and the flow update after the walk ~170 k
 * instructions each (the limit is 1 M). The difference of two packet pointers is an unknown
 * scalar to the verifier (pointer subtraction needs CAP_PERFMON, which the sensor holds
 * anyway); bounded, it turns c->pos into one variable-offset pointer. It costs three
 * instructions. The empty asms keep the compiler from computing the difference itself where
 * it knows both pointers, and from folding data + (pos - data) back into pos.
 */
static __always_inline int fs_rebase(struct fs_cursor *c, void *data)
{
	void *pos = c->pos;
	asm volatile("" : "+r"(pos));
	__u64 off = pos - data;
	asm volatile("" : "+r"(off));
	if (off > FS_L2_MAX_BYTES)
		return -1;
	c->pos = data + off;
	return 0;
}

/*
 * Ethernet and the layers below IP, step for step as the offline walk: returns FS_L3_IPV4 or
 * FS_L3_IPV6 with c->pos at the IP header, or FS_PERR_TRUNCATED / FS_PERR_NOT_IP exactly where
 * the offline parser gives up. Up to FS_MAX_L2_LAYERS VLAN, PBB, FabricPath, VN-Tag and
 * LLC/SNAP layers may precede the IP EtherType, an MPLS stack or a PPPoE header; one more such
 * layer is still bounds-checked (a frame cut inside it is truncated), but whatever follows it
 * is not IP.
 */
static __always_inline int parse_l2_walk(struct fs_cursor *c, void *data, void *data_end,
                                         struct fs_pkt *p, __u16 et);

/* The Ethernet header at c->pos: its MACs into p, its EtherType into *et, c->pos past it; -1
 * when the frame ends inside it. */
static __always_inline int fs_eth_hdr(struct fs_cursor *c, void *data_end, struct fs_pkt *p,
                                      __u16 *et)
{
	struct ethhdr *eth = c->pos;
	if ((void *)(eth + 1) > data_end)
		return -1;
	*et = fs_ntohs(eth->h_proto);
	p->dmac = fs_mac(eth->h_dest);
	p->smac = fs_mac(eth->h_source);
	c->pos = eth + 1;
	return 0;
}

static __always_inline int parse_l2(struct fs_cursor *c, void *data, void *data_end,
                                    struct fs_pkt *p)
{
	__u16 et;
	if (fs_eth_hdr(c, data_end, p, &et) < 0)
		return FS_PERR_TRUNCATED;
	return parse_l2_walk(c, data, data_end, p, et);
}

/*
 * The EtherType chain from EtherType et with c->pos at what it heads (parse._ethertype_walk):
 * after an Ethernet header, or after an 802.11 header with et 0 (LLC/SNAP follows).
 */
static __always_inline int parse_l2_walk(struct fs_cursor *c, void *data, void *data_end,
                                         struct fs_pkt *p, __u16 et)
{
	int l3 = FS_PERR_NOT_IP;
	/* Rebased before any layer's bounds check, too: a check on a pointer with data's own
	 * identity also widens the range the verifier knows for data, which would then differ
	 * from one way through the walk to the next and split the verification of everything
	 * after it. Every way to IP thus ends with c->pos in the same state. */
	if (fs_rebase(c, data) < 0)
		return FS_PERR_TRUNCATED; /* cannot happen */
		/* Unrolled: the verifier then sees a fixed number of bounds-checked steps. MPLS and
	 * PPPoE end the walk in their own layer; they are handled once, after the loop. */
#pragma unroll
	for (int i = 0; i < FS_MAX_L2_LAYERS + 1; i++) {
		__u8 *h = c->pos;
		__u32 len;
		/* Marked likely, so the compiler tests it first: untagged IPv4 pays one
		 * comparison for the whole walk. */
		if (__builtin_expect(et == ETH_P_IP, 1))
			return FS_L3_IPV4;
		if (et == ETH_P_IPV6)
			return FS_L3_IPV6;
		len = fs_l2_tag_len(et);
		if (len) {
			if ((void *)(h + len) > data_end)
				return FS_PERR_TRUNCATED;
			/* context: VLAN ids (the first two) and the inner MACs of PBB/FabricPath,
			 * as the offline walk keeps them */
			if (fs_is_vlan(et)) {
				__u16 vid = (((__u16)h[0] << 8) | h[1]) & 0xFFF;
				if (p->nvlan == 0)
					p->vlan[0] = vid;
				else if (p->nvlan == 1)
					p->vlan[1] = vid;
				p->nvlan++;
			} else if (et == FS_ETH_P_PBB) {
				/* checked again with constant offsets: the verifier cannot follow
				 * h + len - 14 through the merged ways of the walk */
				if ((void *)(h + 16) <= data_end) {
					p->dmac = fs_mac(h + 4);
					p->smac = fs_mac(h + 10);
				}
			} else if (et == FS_ETH_P_FABRICPATH) {
				if ((void *)(h + 14) <= data_end) {
					p->dmac = fs_mac(h + 2);
					p->smac = fs_mac(h + 8);
				}
			}
			et = ((__u16)h[len - 2] << 8) | h[len - 1];
		} else if (et <= FS_ETH_MAX_8023_LEN) {
			/* LLC: DSAP, SSAP, control (2 bytes unless an unnumbered frame, low bits 11);
			 * SNAP (DSAP = SSAP = 0xaa): OUI, then the EtherType. */
			if ((void *)(h + 3) > data_end)
				return FS_PERR_TRUNCATED;
			if (h[0] != FS_LLC_SNAP || h[1] != FS_LLC_SNAP)
				return FS_PERR_NOT_IP;
			if ((h[2] & 3) != 3)
				h++; /* 2-byte control: SNAP starts one byte later */
			if ((void *)(h + 8) > data_end)
				return FS_PERR_TRUNCATED;
			if (h[3] != 0 || h[4] != 0 || (h[5] != 0 && h[5] != FS_OUI_BRIDGE_TUNNEL))
				return FS_PERR_NOT_IP;
			et = ((__u16)h[6] << 8) | h[7];
			len = 8;
		} else {
			goto last;
		}
		c->pos = h + len;
		/* One cursor state per step, whichever layers came before. After the last step
		 * the walk ends with not-IP, the cursor unused. */
		if (i < FS_MAX_L2_LAYERS && fs_rebase(c, data) < 0)
			return FS_PERR_TRUNCATED; /* cannot happen */
	}
	return FS_PERR_NOT_IP;
last:
	if (et == FS_ETH_P_MPLS_UC || et == FS_ETH_P_MPLS_MC)
		l3 = parse_mpls(c, data_end);
	else if (et == FS_ETH_P_PPPOE_SESS)
		l3 = parse_pppoe(c, data_end);
	if (l3 >= 0 && fs_rebase(c, data) < 0)
		return FS_PERR_TRUNCATED; /* cannot happen */
	return l3;
}

/*
 * IPv4. Sets addresses, proto and *l4len (IP total length minus header, may be clamped to 0);
 * returns the protocol, or FS_PF_FRAG in *frag for a non-first fragment.
 */
static __always_inline int parse_iphdr(struct fs_cursor *c, void *data_end, struct fs_pkt *p,
                                       __s32 *l4len, int *frag)
{
	struct iphdr *iph = c->pos;
	if ((void *)(iph + 1) > data_end)
		return FS_PERR_TRUNCATED;
	if (iph->version != 4)
		return FS_PERR_BAD_HEADER;
	__u32 ihl = iph->ihl * 4;
	if (ihl < sizeof(*iph))
		return FS_PERR_BAD_HEADER;
	/* Options must be captured, as offline; ihl <= 60 keeps the verifier's range small. */
	if (c->pos + ihl > data_end)
		return FS_PERR_TRUNCATED;
	p->src_hi = 0;
	p->src_lo = fs_ntohl(iph->saddr);
	p->dst_hi = 0;
	p->dst_lo = fs_ntohl(iph->daddr);
	p->ip_len = fs_ntohs(iph->tot_len);
	*l4len = (__s32)p->ip_len - (__s32)ihl;
	__u16 fw = fs_ntohs(iph->frag_off);
	*frag = (fw & 0x1FFF) != 0;
	p->frag_id = fs_ntohs(iph->id);
	if (!*frag && (fw & 0x2000))
		p->pflags |= FS_PF_MORE_FRAGS;
	c->pos += ihl;
	return iph->protocol;
}

static __always_inline __u64 fs_addr_word(__be32 w0, __be32 w1)
{
	return ((__u64)fs_ntohl(w0) << 32) | fs_ntohl(w1);
}

/* IPv6 and its extension headers. Same outputs as parse_iphdr. */
static __always_inline int parse_ip6hdr(struct fs_cursor *c, void *data_end, struct fs_pkt *p,
                                        __s32 *l4len, int *frag)
{
	struct ipv6hdr *ip6 = c->pos;
	if ((void *)(ip6 + 1) > data_end)
		return FS_PERR_TRUNCATED;
	if (ip6->version != 6)
		return FS_PERR_BAD_HEADER;
	p->src_hi = fs_addr_word(ip6->saddr.in6_u.u6_addr32[0], ip6->saddr.in6_u.u6_addr32[1]);
	p->src_lo = fs_addr_word(ip6->saddr.in6_u.u6_addr32[2], ip6->saddr.in6_u.u6_addr32[3]);
	p->dst_hi = fs_addr_word(ip6->daddr.in6_u.u6_addr32[0], ip6->daddr.in6_u.u6_addr32[1]);
	p->dst_lo = fs_addr_word(ip6->daddr.in6_u.u6_addr32[2], ip6->daddr.in6_u.u6_addr32[3]);
	/* Counted from the end of the fixed header; each extension header subtracts itself. */
	__s32 left = fs_ntohs(ip6->payload_len);
	p->ip_len = 40 + left;
	int proto = ip6->nexthdr;
	c->pos = ip6 + 1;
	*frag = 0;
#pragma unroll
	for (int i = 0; i < FS_MAX_IPV6_EXT; i++) {
		__u8 *h = c->pos;
		__u32 hlen;
		if (proto == IPPROTO_HOPOPTS || proto == IPPROTO_ROUTING ||
		    proto == IPPROTO_DSTOPTS || proto == 135 /* mobility */ ||
		    proto == 139 /* HIP */ || proto == 140 /* shim6 */) {
			if ((void *)(h + 2) > data_end)
				return FS_PERR_TRUNCATED;
			hlen = ((__u32)h[1] + 1) * 8;
		} else if (proto == IPPROTO_AH) {
			if ((void *)(h + 2) > data_end)
				return FS_PERR_TRUNCATED;
			hlen = ((__u32)h[1] + 2) * 4;
		} else if (proto == IPPROTO_FRAGMENT) {
			if ((void *)(h + 8) > data_end)
				return FS_PERR_TRUNCATED;
			__u16 fo = ((__u16)h[2] << 8) | h[3];
			proto = h[0];
			p->frag_id = ((__u32)h[4] << 24) | ((__u32)h[5] << 16) |
			             ((__u32)h[6] << 8) | h[7];
			c->pos = h + 8;
			left -= 8;
			if (fo >> 3) {
				*frag = 1;
				break;
			}
			if (fo & 1)
				p->pflags |= FS_PF_MORE_FRAGS;
			continue;
		} else {
			break;
		}
		proto = h[0];
		/* The next header may lie beyond the frame: the next bounds check catches it. */
		c->pos = h + hlen;
		left -= hlen;
	}
	*l4len = left;
	return proto;
}

/* TCP: ports, flags, seq/ack/window; *l4len becomes the payload length. A header cut short
 * (by the captured bytes or the IP length) leaves the packet at the IP level (l4_short). */
static __always_inline int parse_tcphdr(struct fs_cursor *c, void *data_end, struct fs_pkt *p,
                                        __s32 *l4len)
{
	struct tcphdr *th = c->pos;
	if ((void *)(th + 1) > data_end || *l4len < (__s32)sizeof(*th)) {
		p->l4_short = 1;
		return 0;
	}
	__u32 doff = th->doff * 4;
	if (doff < sizeof(*th))
		return FS_PERR_BAD_HEADER;
	p->sport = fs_ntohs(th->source);
	p->dport = fs_ntohs(th->dest);
	p->seq = fs_ntohl(th->seq);
	p->ack = fs_ntohl(th->ack_seq);
	p->window = fs_ntohs(th->window);
	p->tcp_flags = ((__u8 *)th)[13];
	*l4len -= doff;
	p->pay_off = doff; /* parse_frame adds the header's offset */
	p->pflags |= FS_PF_PORTS | FS_PF_TCP;
	return 0;
}

static __always_inline int parse_udphdr(struct fs_cursor *c, void *data_end, struct fs_pkt *p,
                                        __s32 *l4len)
{
	struct udphdr *uh = c->pos;
	if ((void *)(uh + 1) > data_end || *l4len < (__s32)sizeof(*uh)) {
		p->l4_short = 1;
		return 0;
	}
	p->sport = fs_ntohs(uh->source);
	p->dport = fs_ntohs(uh->dest);
	*l4len -= sizeof(*uh);
	p->pay_off = sizeof(*uh); /* parse_frame adds the header's offset */
	p->pflags |= FS_PF_PORTS;
	return 0;
}

/*
 * IP and L4 from c->pos, an IPv4 (l3 FS_L3_IPV4) or IPv6 header; offsets are kept relative to
 * data, the frame start. Returns 0 or a FS_PERR_* code, as parse_frame.
 */
static __always_inline int parse_l3l4(struct fs_cursor *c, void *data, void *data_end,
                                      struct fs_pkt *p, int l3)
{
	__s32 l4len = 0;
	int frag = 0;
	int proto;
	p->l3 = l3;
	p->l3_off = (__u32)(c->pos - data);
	if (l3 == FS_L3_IPV4)
		proto = parse_iphdr(c, data_end, p, &l4len, &frag);
	else
		proto = parse_ip6hdr(c, data_end, p, &l4len, &frag);
	if (proto < 0)
		return proto;
	p->proto = proto;
	p->l4_off = (__u32)(c->pos - data);
	if (l4len < 0)
		l4len = 0;
	if (frag) {
		p->pflags |= FS_PF_FRAG;
		p->payload_len = l4len;
		return 0;
	}
	int r = 0;
	if (proto == IPPROTO_TCP) {
		r = parse_tcphdr(c, data_end, p, &l4len);
	} else if (proto == IPPROTO_UDP) {
		r = parse_udphdr(c, data_end, p, &l4len);
	} else if (proto == IPPROTO_SCTP) {
		__be16 *ports = c->pos;
		if ((void *)(ports + 2) <= data_end) {
			p->sport = fs_ntohs(ports[0]);
			p->dport = fs_ntohs(ports[1]);
			p->pflags |= FS_PF_PORTS;
		}
	} else if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
		__u8 *ic = c->pos;
		if ((void *)(ic + 2) <= data_end) {
			p->icmp_type = ic[0];
			p->icmp_code = ic[1];
			p->pflags |= FS_PF_ICMP;
		}
		l4len -= 8; /* the message after the 8-byte ICMP header, as Zeek sizes it */
	}
	if (r < 0)
		return r;
	if (p->pay_off)
		p->pay_off += p->l4_off;
	if (l4len < 0)
		l4len = 0;
	p->payload_len = l4len;
	return 0;
}

/*
 * The whole frame: fills *p and returns 0, or a FS_PERR_* code (p is then partly filled).
 * p must be zeroed by the caller (ports stay 0 for protocols without them).
 */
static __always_inline int parse_frame(void *data, void *data_end, struct fs_pkt *p)
{
	struct fs_cursor c = {.pos = data};
	int l3 = parse_l2(&c, data, data_end, p);
	if (l3 < 0)
		return l3;
	return parse_l3l4(&c, data, data_end, p, l3);
}

#endif /* FS_PARSE_H */
