/* SPDX-License-Identifier: MIT */
/*
 * fs_tunnel.h - tunnel decapsulation for the live sensor (FS_DECAP), the rules of the offline
 * parser (flowscope/_kernels/parse.py: _tunnel, _gre, _teredo, _ayiya, parse_frame_rows) and
 * docs/tunnels.md, step for step.
 *
 * Logic:
 *  1) fs_tunnel() looks at the payload of a parsed packet (by its IP length, cut by the frame)
 *     and returns the offset of what an encapsulation carries (IP in IP, GRE v0/v1 with
 *     Ethernet, ERSPAN I/II/III or PPP, VXLAN, Geneve, GTP-U, Teredo, AYIYA), its kind
 *     (Ethernet or IP) and its type and key; or -1.
 *  2) fs_tun_inner() parses the encapsulated packet as a frame of its own (the L2 walk of
 *     fs_parse.h for Ethernet, then IP and L4).
 * Offsets are scalars from the frame start, each read bounds-checked on its own (fs_ld*):
 * the verifier then sees each header field as one bounded access, whatever came before.
 *     802.11 inside GRE (Aruba) is read as parse._wlan reads it, then the same walk from its
 *     LLC/SNAP header.
 */
#ifndef FS_TUNNEL_H
#define FS_TUNNEL_H

#include "fs_parse.h"
#include "fs_maps.h"

#ifndef FS_VXLAN_PORT
#define FS_VXLAN_PORT 4789 /* vxlan_port (layout.VXLAN_PORT) */
#endif
#ifndef FS_GENEVE_PORT
#define FS_GENEVE_PORT 6081 /* geneve_port (layout.GENEVE_PORT) */
#endif
/* Nested encapsulations opened per frame: layout.TUN_MAX_DEPTH, Zeek's Tunnel::max_depth. */
#define FS_TUN_MAX_DEPTH 4
/* Deepest frame offset decapsulation reads (a header beyond it: not a tunnel). */
#define FS_TUN_OFF_MAX 2047
#define FS_GTPV1_U_PORT 2152 /* layout.GTPV1_PORTS */
#define FS_GTPV1_C_PORT 2123
#define FS_TEREDO_PORT 3544  /* layout.TEREDO_PORT */
#define FS_AYIYA_PORT 5072   /* layout.AYIYA_PORT */
#define FS_GRE_UDP_PORT 4754 /* layout.GRE_UDP_PORT */
#define FS_MAX_GTP_EXT 8     /* parse.MAX_GTP_EXT */
#define FS_ETH_P_TEB 0x6558
#define FS_ETH_P_ERSPAN2 0x88BE
#define FS_ETH_P_ERSPAN3 0x22EB
#define FS_ETH_P_PPTP 0x880B

/* What an encapsulation carries (parse._TK_*). */
#define FS_TK_NONE 0
#define FS_TK_ETHER 1
#define FS_TK_IP 2
#define FS_TK_WLAN 3 /* IEEE 802.11 (Aruba GRE) */

/* IEEE 802.11 frame control (parse.WLAN_*). */
#define FS_WLAN_TYPE_DATA 2
#define FS_WLAN_SUBTYPE_NODATA 0x40
#define FS_WLAN_SUBTYPE_QOS 0x80
#define FS_WLAN_FLAG_PROTECTED 0x40
#define FS_WLAN_FLAG_ORDER 0x80

/* The bytes [off, off + len) of the frame, or NULL beyond it. The barriers keep the bound
 * check and the pointer arithmetic on one register, so the verifier sees the bounded offset. */
static __always_inline __u8 *fs_at(void *data, void *data_end, __s64 off, int len)
{
	__u64 o = (__u64)off;
	asm volatile("" : "+r"(o));
	if (o > FS_TUN_OFF_MAX)
		return (__u8 *)0;
	asm volatile("" : "+r"(o));
	__u8 *b = data + o;
	if ((void *)(b + len) > data_end)
		return (__u8 *)0;
	return b;
}

/* One byte, two, three or four big-endian bytes at frame offset off, or -1 beyond the frame. */
static __always_inline int fs_ld8(void *data, void *data_end, __s64 off)
{
	__u8 *b = fs_at(data, data_end, off, 1);
	return b ? b[0] : -1;
}

static __always_inline int fs_ld16(void *data, void *data_end, __s64 off)
{
	__u8 *b = fs_at(data, data_end, off, 2);
	return b ? ((int)b[0] << 8) | b[1] : -1;
}

static __always_inline __s64 fs_ld32(void *data, void *data_end, __s64 off, int n)
{
	__u8 *b = fs_at(data, data_end, off, 4);
	if (!b)
		return -1;
	__u32 v = ((__u32)b[0] << 24) | ((__u32)b[1] << 16) | ((__u32)b[2] << 8) | b[3];
	return n == 3 ? (__s64)(v >> 8) : (__s64)v;
}

/* Zeek's IP::ParsePacket check (parse._exact_ip): an IP header at q of version ver (0: either)
 * whose total length is exactly the bytes left; with bubble, a Teredo bubble may have more. */
static __always_inline int fs_exact_ip(void *data, void *data_end, __s64 q, __s64 pend, int ver,
                                       int bubble)
{
	__s64 n = pend - q;
	if (n < 1)
		return 0;
	int b0 = fs_ld8(data, data_end, q);
	if (b0 < 0)
		return 0;
	int v = b0 >> 4;
	if (ver && v != ver)
		return 0;
	if (v == 6) {
		if (n < 40)
			return 0;
		int pl = fs_ld16(data, data_end, q + 4);
		if (pl < 0)
			return 0;
		__s64 tot = 40 + pl;
		if (tot == n)
			return 1;
		return bubble && tot < n && tot == 40 && fs_ld8(data, data_end, q + 6) == 59;
	}
	if (v == 4)
		return n >= 20 && fs_ld16(data, data_end, q + 2) == n;
	return 0;
}

/* GRE at q (parse._gre): the inner offset, or -1; *kind and *key. */
static __always_inline __s64 fs_gre(void *data, void *data_end, __s64 q, __s64 pend, __u8 *kind,
                                    __u32 *key)
{
	if (pend - q < 4)
		return -1;
	int fv = fs_ld16(data, data_end, q);
	int pt = fs_ld16(data, data_end, q + 2);
	if (fv < 0 || pt < 0)
		return -1;
	int ver = fv & 7;
	__s64 glen = 4;
	if (fv & 0x8000)
		glen += 4;
	if (fv & 0x2000) {
		if (pend - q >= glen + 4)
			*key = (__u32)fs_ld32(data, data_end, q + glen, 4);
		glen += 4;
	}
	if (fv & 0x1000)
		glen += 4;
	if (fv & 0x0080)
		glen += 4;
	if (ver > 1 || (fv & 0x4000) || (fv & 0x0078))
		return -1;
	__s64 n = pend - q;
	__s64 skip = glen;
	*kind = FS_TK_IP;
	if (ver == 0) {
		if (pt == FS_ETH_P_TEB) {
			if (n <= glen + 14)
				return -1;
			*kind = FS_TK_ETHER;
		} else if (pt == FS_ETH_P_ERSPAN2) {
			if (n <= glen + 14)
				return -1;
			*kind = FS_TK_ETHER;
			if (fv & 0x1000)
				skip += 8;
		} else if (pt == FS_ETH_P_ERSPAN3) {
			if (n <= glen + 14 + 12)
				return -1;
			*kind = FS_TK_ETHER;
			skip += 12;
			int o = fs_ld8(data, data_end, q + glen + 11);
			if (o < 0)
				return -1;
			if (o & 1) {
				if (n <= glen + 12 + 8 + 14)
					return -1;
				skip += 8;
			}
		} else if ((((pt & 0x8200) == 0x8200) && (pt & 0x0F) == 0) ||
		           (((pt & 0x8300) == 0x8300) && (pt & 0x0F) == 0 && pt <= 0x8370) ||
		           pt == 0x9000) {
			if (n <= glen)
				return -1;
			*kind = FS_TK_WLAN;
		}
		if (*kind == FS_TK_ETHER && n < skip + 14)
			return -1;
	} else {
		if (pt != FS_ETH_P_PPTP || n < glen + 4)
			return -1;
		int ppp = fs_ld16(data, data_end, q + glen + 2);
		if (ppp != FS_PPP_IPV4 && ppp != FS_PPP_IPV6)
			return -1;
		skip += 4;
		if (!fs_exact_ip(data, data_end, q + skip, pend, ppp == FS_PPP_IPV4 ? 4 : 6, 0))
			return -1;
	}
	return q + skip;
}

/* Teredo at q (parse._teredo): optional authentication and origin indication, then IPv6. */
static __always_inline __s64 fs_teredo(void *data, void *data_end, __s64 q, __s64 pend)
{
	int origin = 0, auth = 0;
#pragma unroll
	for (int i = 0; i < 3; i++) {
		__s64 n = pend - q;
		if (n < 2)
			return -1;
		int tag = fs_ld16(data, data_end, q);
		if (tag < 0)
			return -1;
		if (tag == 0) {
			if (origin || n < 8)
				return -1;
			origin = 1;
			q += 8;
		} else if (tag == 1) {
			if (origin || auth || n < 4)
				return -1;
			int a = fs_ld8(data, data_end, q + 2), b = fs_ld8(data, data_end, q + 3);
			if (a < 0 || b < 0)
				return -1;
			__s64 tot = 4 + a + b + 9;
			if (n < tot)
				return -1;
			auth = 1;
			q += tot;
		} else if ((tag >> 12) == 6) {
			if (n < 40 || !fs_exact_ip(data, data_end, q, pend, 6, 1))
				return -1;
			return q;
		} else {
			return -1;
		}
	}
	return -1;
}

/* Zeek's Teredo protocol detection on other UDP ports (parse._teredo_detect). */
static __always_inline int fs_teredo_detect(void *data, void *data_end, __s64 q, __s64 pend)
{
	__s64 n = pend - q;
	if (n < 40)
		return 0;
	int b0 = fs_ld8(data, data_end, q), b1 = fs_ld8(data, data_end, q + 1);
	if (b0 < 0 || b1 < 0)
		return 0;
	if ((b0 >> 4) != 6 && (b0 != 0 || (b1 != 0 && b1 != 1)))
		return 0;
	if ((b0 >> 4) == 6) {
		/* an IPv6 header with a Teredo (2001:0::/32) source or destination */
		if (fs_ld32(data, data_end, q + 8, 4) == 0x20010000)
			return 1;
		if (fs_ld32(data, data_end, q + 24, 4) == 0x20010000)
			return 1;
	}
	int val = b1;
	if (val == 1) {
		int a = fs_ld8(data, data_end, q + 2), b = fs_ld8(data, data_end, q + 3);
		if (a < 0 || b < 0)
			return 0;
		__s64 skip = 13 + a + b;
		if (n < skip)
			return 0;
		q += skip;
		n -= skip;
		if (n < 40)
			return 0;
		val = fs_ld16(data, data_end, q);
	}
	if (val == 0) {
		q += 8;
		n -= 8;
		if (n < 40)
			return 0;
		return (fs_ld8(data, data_end, q) >> 4) == 6;
	}
	return 0;
}

/* AYIYA at q (parse._ayiya): forwarding op code, next header IPv4/IPv6. */
static __always_inline __s64 fs_ayiya(void *data, void *data_end, __s64 q, __s64 pend)
{
	__s64 n = pend - q;
	if (n < 8)
		return -1;
	int b0 = fs_ld8(data, data_end, q), b1 = fs_ld8(data, data_end, q + 1);
	int b2 = fs_ld8(data, data_end, q + 2), nh = fs_ld8(data, data_end, q + 3);
	if (b0 < 0 || b1 < 0 || b2 < 0 || nh < 0)
		return -1;
	__s64 hdr = 8 + ((__s64)1 << (b0 >> 4)) + (b1 >> 4) * 4;
	if (n < hdr || (b2 & 0x0F) != 1)
		return -1;
	if ((nh != 4 && nh != 41) || n == hdr)
		return -1;
	return q + hdr;
}

/*
 * The encapsulation carried by the parsed packet p (parse._tunnel): returns the offset of
 * what it carries, or -1 (not a tunnel); *kind (FS_TK_*), *ttype (enum fs_tun_type), *key.
 * end: the frame's bytes; prev_type: the encapsulation p came out of (GTP in GTP is refused).
 */
static __always_inline __s64 fs_tunnel(void *data, void *data_end, const struct fs_pkt *p,
                                       __s64 end, __u8 prev_type, __u8 *kind, __u8 *ttype,
                                       __u32 *key)
{
	if (p->pflags & (FS_PF_FRAG | FS_PF_MORE_FRAGS) || p->l4_short)
		return -1;
	__s64 pend = (__s64)p->l3_off + p->ip_len;
	if (pend > end)
		pend = end;
	__u8 proto = p->proto;
	__s64 q = p->l4_off;
	*key = 0;
	if (proto == IPPROTO_IPIP || proto == IPPROTO_IPV6) {
		if (!fs_exact_ip(data, data_end, q, pend, proto == IPPROTO_IPIP ? 4 : 6, 0))
			return -1;
		*kind = FS_TK_IP;
		*ttype = FS_TUN_IP;
		return q;
	}
	if (proto == IPPROTO_GRE) {
		*ttype = FS_TUN_GRE;
		return fs_gre(data, data_end, q, pend, kind, key);
	}
	if (proto != IPPROTO_UDP || !(p->pflags & FS_PF_PORTS))
		return -1;
	q += 8;
	if (pend - q <= 0)
		return -1;
	/* Zeek dispatches on the responder port; a tunnel port is the responder's whichever
	 * side sends it */
	__u32 port = p->dport;
	if (port != FS_VXLAN_PORT && port != FS_GENEVE_PORT && port != FS_GTPV1_U_PORT &&
	    port != FS_GTPV1_C_PORT && port != FS_TEREDO_PORT && port != FS_AYIYA_PORT &&
	    port != FS_GRE_UDP_PORT)
		port = p->sport;
	__s64 n = pend - q;
	__s64 t;
	*kind = FS_TK_IP;
	if (port == FS_VXLAN_PORT) {
		int fl = fs_ld8(data, data_end, q);
		if (n <= 8 || fl < 0 || !(fl & 0x08))
			return -1;
		*kind = FS_TK_ETHER;
		*ttype = FS_TUN_VXLAN;
		*key = (__u32)fs_ld32(data, data_end, q + 4, 3);
		return q + 8;
	}
	if (port == FS_GENEVE_PORT) {
		int b0 = fs_ld8(data, data_end, q);
		if (n < 8 || b0 < 0 || (b0 >> 6) != 0)
			return -1;
		__s64 hdr = 8 + (__s64)(b0 & 0x3F) * 4;
		if (n <= hdr)
			return -1;
		int nh = fs_ld16(data, data_end, q + 2);
		*key = (__u32)fs_ld32(data, data_end, q + 4, 3);
		*ttype = FS_TUN_GENEVE;
		if (nh == FS_ETH_P_TEB)
			*kind = FS_TK_ETHER;
		else if (nh != ETH_P_IP && nh != ETH_P_IPV6)
			return -1;
		return q + hdr;
	}
	if (port == FS_GTPV1_U_PORT || port == FS_GTPV1_C_PORT) {
		if (prev_type == FS_TUN_GTPV1 || n < 8)
			return -1;
		int fl = fs_ld8(data, data_end, q);
		if (fl < 0 || (fl >> 5) != 1 || !(fl & 0x10) ||
		    fs_ld8(data, data_end, q + 1) != 255)
			return -1;
		__s64 teid = fs_ld32(data, data_end, q + 4, 4);
		__s64 hdr = 8;
		if (fl & 0x07)
			hdr += 4;
		if (fl & 0x04) {
			int ok = 0;
#pragma unroll
			for (int i = 0; i < FS_MAX_GTP_EXT; i++) {
				if (n < hdr + 1)
					return -1;
				int el = fs_ld8(data, data_end, q + hdr);
				if (el <= 0 || n < hdr + el * 4)
					return -1;
				int nxt = fs_ld8(data, data_end, q + hdr + el * 4 - 1);
				hdr += el * 4;
				if (nxt == 0) {
					ok = 1;
					break;
				}
			}
			if (!ok)
				return -1;
		}
		if (!fs_exact_ip(data, data_end, q + hdr, pend, 0, 0))
			return -1;
		*ttype = FS_TUN_GTPV1;
		*key = (__u32)teid;
		return q + hdr;
	}
	if (port == FS_GRE_UDP_PORT) {
		*ttype = FS_TUN_GRE;
		return fs_gre(data, data_end, q, pend, kind, key);
	}
	if (port == FS_TEREDO_PORT) {
		*ttype = FS_TUN_TEREDO;
		return fs_teredo(data, data_end, q, pend);
	}
	if (port == FS_AYIYA_PORT) {
		*ttype = FS_TUN_AYIYA;
		return fs_ayiya(data, data_end, q, pend);
	}
	/* protocol detection on any other port: AYIYA, then Teredo (Zeek's order) */
	if (n >= 3 && fs_ld16(data, data_end, q + 1) == 0x5211) {
		*ttype = FS_TUN_AYIYA;
		return fs_ayiya(data, data_end, q, pend);
	}
	if (fs_teredo_detect(data, data_end, q, pend)) {
		*ttype = FS_TUN_TEREDO;
		return fs_teredo(data, data_end, q, pend);
	}
	return -1;
}

/*
 * The IEEE 802.11 frame at frame offset q (parse._wlan): the length of its header (the
 * offset of its LLC header from q), or -1 when it carries no IP or is cut short. Data frames
 * only (not the null / no-data subtypes, not protected); 24 bytes, + 6 with four addresses
 * (ToDS and FromDS), + 2 of QoS control, + 4 of HT control (QoS with the Order bit); of an
 * A-MSDU the first subframe (after its 14-byte header). Sets the MACs by ToDS / FromDS.
 */
static __always_inline __s64 fs_wlan(void *data, void *data_end, __s64 q, __s64 end,
                                     struct fs_pkt *np)
{
	if (end - q < 24)
		return -1;
	int fc = fs_ld8(data, data_end, q), flags = fs_ld8(data, data_end, q + 1);
	if (fc < 0 || flags < 0)
		return -1;
	if (((fc >> 2) & 3) != FS_WLAN_TYPE_DATA || (fc & FS_WLAN_SUBTYPE_NODATA))
		return -1;
	int ds = flags & 3;
	__s64 hdr = ds == 3 ? 30 : 24;
	if (end - q < hdr)
		return -1;
	/* source and destination address offsets: ds 0: 10, 4; 1 (ToDS): 10, 16;
	 * 2 (FromDS): 16, 4; 3: 24, 16 */
	__s64 so = ds == 0 || ds == 1 ? 10 : ds == 2 ? 16 : 24;
	__s64 dof = ds == 0 || ds == 2 ? 4 : 16;
	__u8 *sm = fs_at(data, data_end, q + so, 6), *dm = fs_at(data, data_end, q + dof, 6);
	if (!sm || !dm)
		return -1;
	np->smac = fs_mac(sm);
	np->dmac = fs_mac(dm);
	if (flags & FS_WLAN_FLAG_PROTECTED)
		return -1;
	int amsdu = 0;
	if (fc & FS_WLAN_SUBTYPE_QOS) {
		if (end - q < hdr + 2)
			return -1;
		int qos = fs_ld8(data, data_end, q + hdr);
		if (qos < 0)
			return -1;
		amsdu = qos & 0x80;
		hdr += 2;
		if (flags & FS_WLAN_FLAG_ORDER)
			hdr += 4;
	}
	if (amsdu)
		hdr += 14;
	if (hdr > end - q)
		return -1;
	return hdr;
}

/*
 * The encapsulated packet at frame offset q (of kind FS_TK_ETHER, FS_TK_WLAN or FS_TK_IP) into
 * *np, as parse_frame_rows parses it: 0, or -1 when it is no usable IP packet (the frame then
 * counts in its outer packets only). Offsets in *np stay relative to the frame start.
 */
static __always_inline int fs_tun_inner(void *data, void *data_end, __s64 q, __u8 kind, __s64 end,
                                        struct fs_pkt *np)
{
	struct fs_cursor c;
	int l3;
	void *base = fs_at(data, data_end, q, 1);
	if (!base)
		return -1;
	c.pos = base;
	if (kind == FS_TK_IP) {
		int b0 = fs_ld8(data, data_end, q);
		if (b0 < 0)
			return -1;
		if ((b0 >> 4) == 4)
			l3 = FS_L3_IPV4;
		else if ((b0 >> 4) == 6)
			l3 = FS_L3_IPV6;
		else
			return -1;
	} else {
		__u16 et;
		if (kind == FS_TK_WLAN) {
			__s64 hdr = fs_wlan(data, data_end, q, end, np);
			if (hdr < 0)
				return -1;
			/* the LLC header (its first bytes are bounds-checked by the walk) */
			__u8 *llc = fs_at(data, data_end, q + hdr, 0);
			if (!llc)
				return -1;
			c.pos = llc;
			et = 0;
		} else if (end - q < 14 || fs_eth_hdr(&c, data_end, np, &et) < 0) {
			return -1;
		}
		np->tun_ether = 1;
		l3 = parse_l2_walk(&c, base, data_end, np, et);
		if (l3 < 0)
			return -1;
	}
	if (parse_l3l4(&c, data, data_end, np, l3) < 0)
		return -1;
	return 0;
}

/* IP protocols that may carry a tunnel (bits of a 64-bit word; all are below 64). */
#define FS_TUN_PROTOS                                                                              \
	((1ULL << IPPROTO_IPIP) | (1ULL << IPPROTO_UDP) | (1ULL << IPPROTO_IPV6) |                 \
	 (1ULL << IPPROTO_GRE))

/* Might p carry a tunnel (the rules of fs_tunnel decide)? 1 or 0, computed without a branch:
 * a branch on p->proto would give the verifier one known protocol per way, and it would walk
 * everything after once per candidate protocol. Not a fragment, protocol in FS_TUN_PROTOS. */
static __always_inline __u64 fs_tun_candidate(const struct fs_pkt *p)
{
	__u64 pr = p->proto, fl = p->pflags;
	__u64 c = (FS_TUN_PROTOS >> (pr & 63)) & (1 >> (pr >> 6));
	return c & ~((fl >> 2) | (fl >> 4)) & 1; /* FS_PF_FRAG 0x04, FS_PF_MORE_FRAGS 0x10 */
}

/* A UDP port fs_tunnel dispatches on. */
static __always_inline int fs_tun_port(__u32 port)
{
	return port == FS_VXLAN_PORT || port == FS_GENEVE_PORT || port == FS_GTPV1_U_PORT ||
	       port == FS_GTPV1_C_PORT || port == FS_TEREDO_PORT || port == FS_AYIYA_PORT ||
	       port == FS_GRE_UDP_PORT;
}

/* Might the UDP packet p carry a tunnel? A cheap superset of fs_tunnel's UDP rules, so that
 * other UDP traffic stays on the entry point: a tunnel port on either side, or a payload that
 * Zeek's AYIYA or Teredo detection could take (bytes 1-2 52 11; at least 40 bytes starting
 * with an IPv6 version nibble or a Teredo authentication / origin indication header). */
static __always_inline int fs_tun_udp_candidate(const struct fs_pkt *p, void *data, void *data_end)
{
	if (fs_tun_port(p->dport) || fs_tun_port(p->sport))
		return 1;
	__s64 end = data_end - data;
	__s64 pend = (__s64)p->l3_off + p->ip_len;
	if (pend > end)
		pend = end;
	__s64 q = (__s64)p->l4_off + 8;
	__s64 n = pend - q;
	if (n < 3)
		return 0;
	int b0 = fs_ld8(data, data_end, q), b1 = fs_ld8(data, data_end, q + 1);
	int b2 = fs_ld8(data, data_end, q + 2);
	if (b1 == 0x52 && b2 == 0x11)
		return 1;
	return n >= 40 && ((b0 >> 4) == 6 || (b0 == 0 && (b1 == 0 || b1 == 1)));
}

#endif /* FS_TUNNEL_H */
