"""Frame parser: one captured frame -> one ``ROW_DTYPE`` row, inside numba.

Logic of ``parse_row`` (``parse_frame``: the same into a ``PKT_DTYPE`` row):

1) Link layer by pcap LINKTYPE (the header rules follow Zeek's packet
   analyzers): Ethernet; Linux cooked v1/v2; BSD null/loopback; raw IP; PPP
   (optional ff 03 address/control, 1- or 2-byte protocol), PPP in HDLC
   framing, PPP with a direction byte, PPPoE; Cisco HDLC; FDDI (then LLC);
   IEEE 802.11 data frames, bare or behind radiotap; NFLOG (the IP packet is
   the NFULA_PAYLOAD TLV). Whatever gives an EtherType then walks the
   EtherType chain: 802.1Q / 802.1ad / 0x9100 tags, MPLS label stacks, PPPoE
   sessions, PBB 802.1ah I-TAGs and Cisco FabricPath headers (inner
   Ethernet: its MACs replace the outer ones), VN-Tags, and 802.3 length
   fields followed by LLC/SNAP, up to ``MAX_L2_LAYERS`` layers.
2) IPv4 (options skipped by IHL) or IPv6 (extension headers walked, at most
   ``MAX_IPV6_EXT`` of them).
3) L4: TCP (ports + TcpInfo), UDP and SCTP (ports), ICMP/ICMPv6 (type/code in
   ``icmp_type``/``icmp_code``, ports 0); any other protocol is matched with
   ports 0. Non-first fragments carry no L4 header: ports 0, ``PF_FRAG``; every
   fragment has its IP id, offset and MF flag in ``frag_id``/``frag_off``/
   ``frag_mf`` (the engine gives non-first fragments their datagram's ports).
   A TCP or UDP header cut short (captured bytes end inside it, or the IP
   length leaves no room for it) is matched at the IP level: ports 0, no
   TcpInfo, ``error`` = ``PERR_L4_SHORT``. A UDP datagram to or from port 53, or a
   TCP segment there whose payload starts with a DNS message (two-byte length
   first), has the message's header and first question decoded into the
   ``dns_*`` fields (``flowscope._kernels.dns``).

Rules that shape the code:

* Only ``buf[off:off + caplen]`` is read (further clamped to ``len(buf)``);
  every header is bounds-checked before it is read and no input raises.
* Every field of the output row is written, so rows can be reused. Rows are
  ``ROW_DTYPE``; a DNS query name goes to the row's line of the name array
  (``names[i]``): its first ``dns_qlen`` bytes, the only ones defined, are written only
  for DNS packets.
* Lengths (``ip_len``, ``payload_len``) come from the IP header length fields,
  never from ``caplen``: Ethernet padding and snaplen truncation do not change
  them. A bogus IP length simply clamps ``payload_len`` at 0.
* An unmatched frame has ``l3`` = ``L3_NONE`` (or ``L3_ETHER`` when the
  Ethernet header was complete but no IP header was reached) and a nonzero
  ``error``. The fields parsed before the failure are left in the row (they
  help debugging); consumers look at ``l3``/``error``/``pflags`` only.
  ``PF_MAC`` stays set whenever the 14-byte Ethernet header (or the address
  fields of an 802.11 data frame) was captured, so a MAC-pair key can use
  every such frame; such a frame without IP is ``L3_ETHER``.
* Unknown link types are unmatched with ``PERR_LINKTYPE``; encrypted 802.11
  frames and non-data 802.11 frames are ``PERR_NOT_IP``.
"""

from __future__ import annotations

import numpy as np

from ..layout import (
    DNS_PORT,
    L3_ETHER,
    L3_IPV4,
    L3_IPV6,
    L3_NONE,
    PERR_BAD_HEADER,
    PERR_L4_SHORT,
    PERR_LINKTYPE,
    PERR_NONE,
    PERR_NOT_IP,
    PERR_TRUNCATED,
    PF_FRAG,
    PF_ICMP,
    PF_MAC,
    PF_MORE_FRAGS,
    PF_PORTS,
    PF_TCP,
    TUN_AYIYA,
    TUN_GENEVE,
    TUN_GRE,
    TUN_GTPV1,
    TUN_IP,
    TUN_MAX_DEPTH,
    TUN_TEREDO,
    TUN_VXLAN,
    AYIYA_PORT,
    GRE_UDP_PORT,
    TEREDO_PORT,
)
from .common import inline_kernel, kernel
from .dns import parse_dns

#: Link types parse_frame understands (pcap LINKTYPE_* values).
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_PPP = 9  # PPP, with or without ff 03 (RFC 1661/1662)
LINKTYPE_FDDI = 10  # frame control, destination, source (13 bytes), then LLC
LINKTYPE_RAW_OLD12 = 12
LINKTYPE_RAW_OLD14 = 14
LINKTYPE_PPP_HDLC = 50  # PPP in HDLC-like framing, or Cisco HDLC (first byte 0x0f/0x8f)
LINKTYPE_PPP_ETHER = 51  # a PPPoE session header, then PPP
LINKTYPE_RAW = 101
LINKTYPE_C_HDLC = 104  # Cisco HDLC: address, control, EtherType
LINKTYPE_IEEE802_11 = 105
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IEEE802_11_RADIOTAP = 127
LINKTYPE_PPP_WITH_DIR = 204  # one direction byte, then PPP
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_NFLOG = 239
LINKTYPE_LINUX_SLL2 = 276
SUPPORTED_LINKTYPES = frozenset((
    LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_PPP, LINKTYPE_FDDI, LINKTYPE_RAW_OLD12,
    LINKTYPE_RAW_OLD14, LINKTYPE_PPP_HDLC, LINKTYPE_PPP_ETHER, LINKTYPE_RAW, LINKTYPE_C_HDLC,
    LINKTYPE_IEEE802_11, LINKTYPE_LOOP, LINKTYPE_LINUX_SLL, LINKTYPE_IEEE802_11_RADIOTAP,
    LINKTYPE_PPP_WITH_DIR, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_NFLOG, LINKTYPE_LINUX_SLL2,
))

#: Most EtherType-chain layers (VLAN tags, MPLS stacks, PPPoE, PBB, VN-Tag,
#: FabricPath, LLC/SNAP headers) looked through in one frame.
MAX_L2_LAYERS = 8
#: Most MPLS labels popped in one stack.
MAX_MPLS_LABELS = 8
#: Most IPv6 extension headers walked before giving up on finding L4.
MAX_IPV6_EXT = 8

ETH_P_IPV4 = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ETH_P_QINQ_OLD = 0x9100
ETH_P_MPLS_UC = 0x8847
ETH_P_MPLS_MC = 0x8848
ETH_P_PPPOE_SESS = 0x8864
ETH_P_PBB = 0x88E7  # 802.1ah I-TAG (4 bytes), then the customer's Ethernet header
ETH_P_VNTAG = 0x8926  # 4-byte VN-Tag, then the EtherType
ETH_P_FABRICPATH = 0x8903  # 2 bytes (FTag, TTL), then the inner Ethernet header
#: EtherType values up to this one are 802.3 lengths: an LLC header follows.
ETH_MAX_8023_LEN = 1500
#: Passed as the EtherType when a link layer is followed by an LLC header.
_ET_LLC = 0
#: Passed as the EtherType for a payload that is not one the walk knows.
_ET_NONE = -1
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057
PPP_MPLS_UC = 0x0281
PPP_MPLS_MC = 0x0283
#: SNAP OUIs whose protocol field is an EtherType (RFC 1042; 802.1H bridge tunnel).
OUI_ENCAP_ETHER = 0x000000
OUI_BRIDGE_TUNNEL = 0x0000F8
#: IEEE 802.11 frame control: type data, subtype bits of its first byte, flag
#: bits of its second byte.
WLAN_TYPE_DATA = 2
WLAN_SUBTYPE_NODATA = 0x40  # null function / CF subtypes without a body
WLAN_SUBTYPE_QOS = 0x80
WLAN_FLAG_PROTECTED = 0x40
WLAN_FLAG_ORDER = 0x80
#: NFLOG: header family bytes, and the TLV type holding the packet.
NFLOG_AF_INET = 2
NFLOG_AF_INET6 = 10
NFULA_PAYLOAD = 9

#: ``tcfg`` (int64[TC_SIZE]) slots: the decapsulation settings of ``parse_frame_rows``.
TC_DECAP = 0  # 1: decapsulate tunnels
TC_VXLAN = 1  # VXLAN UDP port
TC_GENEVE = 2  # Geneve UDP port
TC_SIZE = 3
GTPV1_U_PORT = 2152
GTPV1_C_PORT = 2123
ETH_P_TEB = 0x6558  # transparent Ethernet bridging (GRE, Geneve)
ETH_P_ERSPAN2 = 0x88BE  # ERSPAN type I (no header) / II (8-byte header with GRE seq)
ETH_P_ERSPAN3 = 0x22EB
ETH_P_PPTP = 0x880B  # GRE version 1 (enhanced GRE, PPTP)
#: GTP-U extension headers walked at most.
MAX_GTP_EXT = 8
#: ``_tunnel`` results: what follows the encapsulation header.
_TK_NONE = 0
_TK_ETHER = 1
_TK_IP = 2  # IP by its version nibble
_TK_WLAN = 3  # IEEE 802.11 (Aruba GRE)

_NOT_IP = -1  # _link_layer result: no IP inside (error PERR_NOT_IP)
_TRUNC = -2  # _link_layer result: captured bytes end inside an L2 header


@inline_kernel
def _be16(buf, p):
    return (np.int64(buf[p]) << 8) | np.int64(buf[p + 1])


@inline_kernel
def _be32(buf, p):
    return ((np.int64(buf[p]) << 24) | (np.int64(buf[p + 1]) << 16)
            | (np.int64(buf[p + 2]) << 8) | np.int64(buf[p + 3]))


@inline_kernel
def _be_u64(buf, p, n):
    """``n`` bytes at ``p`` as a big-endian uint64."""
    v = np.uint64(0)
    for k in range(n):
        v = (v << np.uint64(8)) | np.uint64(buf[p + k])
    return v


@inline_kernel
def _clear(r):
    r.ts = 0
    r.caplen = 0
    r.wirelen = 0
    r.src_hi = 0
    r.src_lo = 0
    r.dst_hi = 0
    r.dst_lo = 0
    r.smac = 0
    r.dmac = 0
    r.seq = 0
    r.ack = 0
    r.payload_len = 0
    r.ip_len = 0
    r.sport = 0
    r.dport = 0
    r.window = 0
    r.payload_off = 0
    r.vlan = 0
    r.iface = 0
    r.l3 = 0
    r.proto = 0
    r.tcp_flags = 0
    r.pflags = 0
    r.error = 0
    r.icmp_type = 0
    r.icmp_code = 0
    r.frag_mf = 0
    r.frag_off = 0
    r.l3_off = 0
    r.frag_id = 0
    r.l4_off = 0
    r.csum = 0
    r._pad = 0
    r.first_ts = 0
    r.cnt_pkts0 = 0
    r.cnt_pkts1 = 0
    r.cnt_bytes0 = 0
    r.cnt_bytes1 = 0
    r.cnt_pay0 = 0
    r.cnt_pay1 = 0
    r.cnt_ipb0 = 0
    r.cnt_ipb1 = 0
    r.cnt_flags0 = 0
    r.cnt_flags1 = 0
    r.kstate = 0
    for k in range(5):
        r._pad2[k] = 0
    r.vlan_inner = 0
    r.nvlan = 0
    for k in range(5):
        r._pad3[k] = 0
    # tcpperf: live rows only
    r.sq_start0 = 0
    r.sq_start1 = 0
    r.sq_high0 = 0
    r.sq_high1 = 0
    r.sq_acked0 = 0
    r.sq_acked1 = 0
    r.rtx0 = 0
    r.rtx1 = 0
    r.ooo0 = 0
    r.ooo1 = 0
    r.zw0 = 0
    r.zw1 = 0
    r.rtxb0 = 0
    r.rtxb1 = 0
    r.sq_flags = 0
    for k in range(7):
        r._pad4[k] = 0
    r.tun_type = 0
    r.tun_depth = 0
    r._pad5 = 0
    r.tun_key = 0
    # the name array is defined only up to dns_qlen: not cleared per packet
    r.dns_flags = 0
    r.dns_rcode = 0
    r.dns_id = 0
    r.dns_qtype = 0
    r.dns_answers = 0
    r.drops0 = 0
    r.drops1 = 0
    r.drop_reason = 0
    r.dns_qlen = 0
    for k in range(5):
        r._pad6[k] = 0


@inline_kernel
def _ppp_ethertype(proto):
    """The EtherType of what a PPP protocol number carries (``_ET_NONE`` if not IP/MPLS)."""
    if proto == PPP_IPV4:
        return ETH_P_IPV4
    if proto == PPP_IPV6:
        return ETH_P_IPV6
    if proto == PPP_MPLS_UC or proto == PPP_MPLS_MC:
        return ETH_P_MPLS_UC
    return _ET_NONE


@inline_kernel
def _ethertype_walk(buf, p, end, et, r):
    """Follow the EtherType chain from EtherType ``et`` at ``p``.

    Layers: VLAN tags, MPLS stacks, PPPoE sessions, PBB I-TAGs and
    FabricPath headers (both carry an inner Ethernet header, whose MACs are
    written to ``r``), VN-Tags and LLC/SNAP headers (``et`` <=
    ``ETH_MAX_8023_LEN``). Returns ``(l3_start, version)`` with version 4 or
    6, or ``(p, _NOT_IP)`` / ``(p, _TRUNC)``. Sets ``r.vlan`` from the first
    tag, ``r.vlan_inner`` from the second and counts the tags in ``r.nvlan``.
    """
    first_tag = True
    for _ in range(MAX_L2_LAYERS + 1):
        if et == ETH_P_IPV4:
            return p, 4
        if et == ETH_P_IPV6:
            return p, 6
        if et == ETH_P_8021Q or et == ETH_P_8021AD or et == ETH_P_QINQ_OLD:
            if p + 4 > end:
                return p, _TRUNC
            if first_tag:
                r.vlan = _be16(buf, p) & 0xFFF
                first_tag = False
            elif r.nvlan == 1:
                r.vlan_inner = _be16(buf, p) & 0xFFF
            r.nvlan += 1
            et = _be16(buf, p + 2)
            p += 4
        elif et == ETH_P_MPLS_UC or et == ETH_P_MPLS_MC:
            bottom = False
            for _lbl in range(MAX_MPLS_LABELS):
                if p + 4 > end:
                    return p, _TRUNC
                bottom = (buf[p + 2] & 1) != 0
                p += 4
                if bottom:
                    break
            if not bottom:
                return p, _NOT_IP
            if p + 1 > end:
                return p, _TRUNC
            v = buf[p] >> 4
            if v == 4:
                return p, 4
            if v == 6:
                return p, 6
            return p, _NOT_IP
        elif et == ETH_P_PPPOE_SESS:
            # version/type, code, session id, length; then the PPP protocol:
            # IPv4 or IPv6 only (Zeek's PPPoE analyzer forwards nothing else)
            if p + 8 > end:
                return p, _TRUNC
            ppp = _be16(buf, p + 6)
            p += 8
            if ppp == PPP_IPV4:
                return p, 4
            if ppp == PPP_IPV6:
                return p, 6
            return p, _NOT_IP
        elif et == ETH_P_PBB or et == ETH_P_FABRICPATH:
            skip = 4 if et == ETH_P_PBB else 2
            if p + skip + 14 > end:
                return p, _TRUNC
            p += skip
            r.dmac = _be_u64(buf, p, 6)
            r.smac = _be_u64(buf, p + 6, 6)
            r.pflags |= PF_MAC
            et = _be16(buf, p + 12)
            p += 14
        elif et == ETH_P_VNTAG:
            if p + 6 > end:
                return p, _TRUNC
            et = _be16(buf, p + 4)
            p += 6
        elif et >= 0 and et <= ETH_MAX_8023_LEN:
            # LLC: DSAP, SSAP, control (2 bytes unless an unnumbered frame);
            # SNAP (DSAP = SSAP = 0xaa): OUI, then the EtherType.
            if p + 3 > end:
                return p, _TRUNC
            if buf[p] != 0xAA or buf[p + 1] != 0xAA:
                return p, _NOT_IP
            llc = 3 if (buf[p + 2] & 3) == 3 else 4
            if p + llc + 5 > end:
                return p, _TRUNC
            oui = _be_u64(buf, p + llc, 3)
            if oui != OUI_ENCAP_ETHER and oui != OUI_BRIDGE_TUNNEL:
                return p, _NOT_IP
            et = _be16(buf, p + llc + 3)
            p += llc + 5
        else:
            return p, _NOT_IP
    return p, _NOT_IP


@inline_kernel
def _ppp(buf, p, end):
    """PPP at ``p``: optional ff 03, then a 1-byte (compressed) or 2-byte protocol.

    Returns ``(next, ethertype)``; ``ethertype`` is ``_TRUNC`` when the
    header is cut.
    """
    if end - p >= 2 and buf[p] == 0xFF and buf[p + 1] == 0x03:
        p += 2
    if end - p < 1:
        return p, _TRUNC
    if (buf[p] & 1) != 0:  # protocol field compression: odd first byte
        return p + 1, _ppp_ethertype(np.int64(buf[p]))
    if end - p < 2:
        return p, _TRUNC
    return p + 2, _ppp_ethertype(_be16(buf, p))


@inline_kernel
def _wlan(buf, p, end, r):
    """IEEE 802.11 frame at ``p`` -> ``(next, ethertype)`` (``_ET_LLC``: LLC follows).

    Data frames only (not null/no-data subtypes, not protected); the header
    is 24 bytes, + 6 for a 4-address frame (ToDS and FromDS), + 2 for the
    QoS field, + 4 for HT control (QoS data with the Order bit). Of an
    A-MSDU the first subframe is read. Writes the source and destination
    MACs (by ToDS/FromDS, as Zeek does). ``ethertype`` is ``_TRUNC`` or
    ``_ET_NONE`` when the frame cannot carry IP.
    """
    if end - p < 24:
        return p, _TRUNC
    fc = buf[p]
    flags = buf[p + 1]
    if ((fc >> 2) & 3) != WLAN_TYPE_DATA or (fc & WLAN_SUBTYPE_NODATA) != 0:
        return p, _ET_NONE
    ds = flags & 3
    hdr = 30 if ds == 3 else 24
    if end - p < hdr:
        return p, _TRUNC
    if ds == 0:
        src, dst = 10, 4
    elif ds == 1:
        src, dst = 10, 16
    elif ds == 2:
        src, dst = 16, 4
    else:
        src, dst = 24, 16
    r.smac = _be_u64(buf, p + src, 6)
    r.dmac = _be_u64(buf, p + dst, 6)
    r.pflags |= PF_MAC
    if (flags & WLAN_FLAG_PROTECTED) != 0:
        return p, _ET_NONE
    amsdu = False
    if (fc & WLAN_SUBTYPE_QOS) != 0:
        if end - p < hdr + 2:
            return p, _TRUNC
        amsdu = (buf[p + hdr] & 0x80) != 0
        hdr += 2
        if (flags & WLAN_FLAG_ORDER) != 0:
            hdr += 4
    p += hdr
    if amsdu:  # subframe header: DA, SA, length
        p += 14
    if p > end:
        return end, _TRUNC
    return p, _ET_LLC


@inline_kernel
def _ip_l4(buf, start, p, end, ver, r, nm):
    """Sections 2) and 3) of ``parse_row``: the IP header at ``p`` (version ``ver``)
    and its L4 header, into ``r``; offsets are relative to the frame at ``start``."""
    # ---- 2) IP -----------------------------------------------------------
    frag_later = False
    if ver == 4:
        if end - p < 20:
            r.error = PERR_TRUNCATED
            return
        if (buf[p] >> 4) != 4:
            r.error = PERR_BAD_HEADER
            return
        ihl = np.int64(buf[p] & 0xF) * 4
        if ihl < 20:
            r.error = PERR_BAD_HEADER
            return
        if end - p < ihl:
            r.error = PERR_TRUNCATED
            return
        ip_len = _be16(buf, p + 2)
        fragw = _be16(buf, p + 6)
        r.frag_id = _be16(buf, p + 4)
        r.frag_off = (fragw & 0x1FFF) * 8
        r.frag_mf = 1 if (fragw & 0x2000) != 0 else 0
        proto = np.int64(buf[p + 9])
        r.src_lo = _be_u64(buf, p + 12, 4)
        r.dst_lo = _be_u64(buf, p + 16, 4)
        l4 = p + ihl
        if (fragw & 0x1FFF) != 0:
            frag_later = True
        elif (fragw & 0x2000) != 0:
            r.pflags |= PF_MORE_FRAGS
    else:
        if end - p < 40:
            r.error = PERR_TRUNCATED
            return
        if (buf[p] >> 4) != 6:
            r.error = PERR_BAD_HEADER
            return
        ip_len = 40 + _be16(buf, p + 4)
        proto = np.int64(buf[p + 6])
        r.src_hi = _be_u64(buf, p + 8, 8)
        r.src_lo = _be_u64(buf, p + 16, 8)
        r.dst_hi = _be_u64(buf, p + 24, 8)
        r.dst_lo = _be_u64(buf, p + 32, 8)
        l4 = p + 40
        for _ in range(MAX_IPV6_EXT):
            if (proto == 0 or proto == 43 or proto == 60 or proto == 135
                    or proto == 139 or proto == 140):
                if end - l4 < 2:
                    r.error = PERR_TRUNCATED
                    return
                nxt = np.int64(buf[l4])
                l4 += (np.int64(buf[l4 + 1]) + 1) * 8
                proto = nxt
            elif proto == 51:
                if end - l4 < 2:
                    r.error = PERR_TRUNCATED
                    return
                nxt = np.int64(buf[l4])
                l4 += (np.int64(buf[l4 + 1]) + 2) * 4
                proto = nxt
            elif proto == 44:
                if end - l4 < 8:
                    r.error = PERR_TRUNCATED
                    return
                nxt = np.int64(buf[l4])
                fo = _be16(buf, l4 + 2)
                r.frag_id = _be32(buf, l4 + 4)
                r.frag_off = fo & 0xFFF8
                r.frag_mf = fo & 1
                l4 += 8
                proto = nxt
                if (fo >> 3) != 0:
                    frag_later = True
                    break
                if (fo & 1) != 0:
                    r.pflags |= PF_MORE_FRAGS
            else:
                break

    r.l3 = L3_IPV4 if ver == 4 else L3_IPV6
    r.proto = proto
    r.ip_len = ip_len
    r.l3_off = min(p - start, 0xFFFF)
    r.l4_off = min(l4 - start, 0xFFFF)
    # L4 bytes by the IP length fields (may be < 0 for a bogus length).
    l4len = (p + ip_len) - l4
    if l4len < 0:
        l4len = 0
    r.payload_len = l4len
    pofs = l4 - start
    r.payload_off = pofs if pofs < 0xFFFF else 0xFFFF
    if frag_later:
        r.pflags |= PF_FRAG
        return

    # ---- 3) L4 -----------------------------------------------------------
    if proto == 6:
        if end - l4 < 20 or l4len < 20:
            r.error = PERR_L4_SHORT  # keyed at the IP level (ports 0)
            return
        doff = np.int64(buf[l4 + 12] >> 4) * 4
        if doff < 20:
            r.l3 = L3_NONE
            r.error = PERR_BAD_HEADER
            return
        r.sport = _be16(buf, l4)
        r.dport = _be16(buf, l4 + 2)
        r.seq = _be32(buf, l4 + 4)
        r.ack = _be32(buf, l4 + 8)
        r.tcp_flags = buf[l4 + 13]
        r.window = _be16(buf, l4 + 14)
        pl = l4len - doff
        r.payload_len = pl if pl > 0 else 0
        pofs = l4 + doff - start
        r.payload_off = pofs if pofs < 0xFFFF else 0xFFFF
        r.pflags |= PF_PORTS | PF_TCP
        if (r.sport == DNS_PORT or r.dport == DNS_PORT) and pl >= 14:
            # a segment that starts with a DNS message: two-byte length, then the message
            m = l4 + doff + 2
            mend = min(min(end, p + ip_len), m + _be16(buf, m - 2))
            parse_dns(buf, m, mend, r, True, nm)
    elif proto == 17:
        if end - l4 < 8 or l4len < 8:
            r.error = PERR_L4_SHORT  # keyed at the IP level (ports 0)
            return
        r.sport = _be16(buf, l4)
        r.dport = _be16(buf, l4 + 2)
        pl = l4len - 8
        r.payload_len = pl if pl > 0 else 0
        pofs = l4 + 8 - start
        r.payload_off = pofs if pofs < 0xFFFF else 0xFFFF
        r.pflags |= PF_PORTS
        if r.sport == DNS_PORT or r.dport == DNS_PORT:
            parse_dns(buf, l4 + 8, min(end, p + ip_len), r, False, nm)
    elif proto == 132:
        if end - l4 >= 4:
            r.sport = _be16(buf, l4)
            r.dport = _be16(buf, l4 + 2)
            r.pflags |= PF_PORTS
    elif proto == 1 or proto == 58:
        if end - l4 >= 2:
            r.icmp_type = buf[l4]
            r.icmp_code = buf[l4 + 1]
            r.pflags |= PF_ICMP
        # the message after the 8-byte ICMP header, as Zeek sizes it
        pl = l4len - 8
        r.payload_len = pl if pl > 0 else 0
    r.error = PERR_NONE


@kernel
def parse_row(buf, off, caplen, wirelen, linktype, ts, out, i, nm):
    """Parse one frame into ``out[i]`` and its DNS query name into ``nm``.

    Parameters
    ----------
    buf : uint8[:] (1-D, C-contiguous)
        Bytes holding the frame at ``buf[off:off + caplen]``.
    off, caplen, wirelen, linktype, ts : int
        Frame offset in ``buf``, captured and on-the-wire lengths, pcap
        LINKTYPE and timestamp (ns since the epoch).
    out : ROW_DTYPE[:]
        Output rows; every field of ``out[i]`` is written (``iface`` = 0).
    nm : uint8[DNS_NAME_MAX]
        The row's DNS query name (its line of the name array; written for DNS packets
        only).
    i : int
        Row to fill.
    """
    r = out[i]
    _clear(r)
    r.ts = ts
    r.caplen = caplen
    r.wirelen = wirelen
    start = off
    end = off + caplen
    if end > buf.shape[0]:
        end = buf.shape[0]
    if start < 0 or end < start:
        r.error = PERR_TRUNCATED
        return

    # ---- 1) link layer ---------------------------------------------------
    # Each link type either knows the IP version (ver) or hands an EtherType
    # (et) to the EtherType walk.
    p = start
    ver = _NOT_IP
    et = _ET_NONE
    walk = True
    if linktype == LINKTYPE_ETHERNET:
        if end - p < 14:
            r.error = PERR_TRUNCATED
            return
        r.dmac = _be_u64(buf, p, 6)
        r.smac = _be_u64(buf, p + 6, 6)
        r.pflags = PF_MAC
        et = _be16(buf, p + 12)
        p += 14
    elif linktype == LINKTYPE_LINUX_SLL:
        if end - p < 16:
            r.error = PERR_TRUNCATED
            return
        et = _be16(buf, p + 14)
        p += 16
    elif linktype == LINKTYPE_LINUX_SLL2:
        if end - p < 20:
            r.error = PERR_TRUNCATED
            return
        et = _be16(buf, p)
        p += 20
    elif (linktype == LINKTYPE_PPP or linktype == LINKTYPE_PPP_WITH_DIR
          or linktype == LINKTYPE_PPP_HDLC):
        if linktype == LINKTYPE_PPP_WITH_DIR:
            p += 1
        if end - p >= 1 and linktype == LINKTYPE_PPP_HDLC and (buf[p] == 0x0F or buf[p] == 0x8F):
            if end - p < 4:  # Cisco HDLC framing
                r.error = PERR_TRUNCATED
                return
            et = _be16(buf, p + 2)
            p += 4
        else:
            p, et = _ppp(buf, p, end)
    elif linktype == LINKTYPE_C_HDLC:
        if end - p < 4:
            r.error = PERR_TRUNCATED
            return
        et = _be16(buf, p + 2)
        p += 4
    elif linktype == LINKTYPE_PPP_ETHER:
        et = ETH_P_PPPOE_SESS
    elif linktype == LINKTYPE_FDDI:
        if end - p < 13:
            r.error = PERR_TRUNCATED
            return
        et = _ET_LLC
        p += 13
    elif linktype == LINKTYPE_IEEE802_11:
        p, et = _wlan(buf, p, end, r)
    elif linktype == LINKTYPE_IEEE802_11_RADIOTAP:
        if end - p < 4:
            r.error = PERR_TRUNCATED
            return
        rtlen = np.int64(buf[p + 2]) | (np.int64(buf[p + 3]) << 8)  # little-endian
        if end - p < rtlen:
            r.error = PERR_TRUNCATED
            return
        p, et = _wlan(buf, p + rtlen, end, r)
    elif linktype == LINKTYPE_NFLOG:
        # family, version, resource id; then TLVs (length, type: in the byte
        # order of the capturing host, told by the first type's zero byte;
        # each padded to 4 bytes) up to the NFULA_PAYLOAD TLV.
        walk = False
        if end - p < 4:
            r.error = PERR_TRUNCATED
            return
        fam = buf[p]
        if buf[p + 1] != 0 or (fam != NFLOG_AF_INET and fam != NFLOG_AF_INET6):
            r.error = PERR_NOT_IP
            return
        p += 4
        big = end - p >= 4 and (buf[p + 2] & 0x7F) == 0 and buf[p + 3] != 0
        found = False
        while end - p >= 4:
            if big:
                tlen = _be16(buf, p)
                ttype = _be16(buf, p + 2) & 0x7FFF
            else:
                tlen = (np.int64(buf[p + 1]) << 8) | np.int64(buf[p])
                ttype = ((np.int64(buf[p + 3]) << 8) | np.int64(buf[p + 2])) & 0x7FFF
            if ttype == NFULA_PAYLOAD:
                p += 4
                found = True
                break
            if tlen < 4:
                r.error = PERR_BAD_HEADER
                return
            tlen = (tlen + 3) & ~3
            if tlen > end - p:
                r.error = PERR_TRUNCATED
                return
            p += tlen
        if not found:
            r.error = PERR_NOT_IP if p == end else PERR_TRUNCATED
            return
        ver = 4 if fam == NFLOG_AF_INET else 6
    elif linktype == LINKTYPE_NULL or linktype == LINKTYPE_LOOP:
        walk = False
        if end - p < 4:
            r.error = PERR_TRUNCATED
            return
        fam_be = _be32(buf, p)
        fam_le = ((np.int64(buf[p + 3]) << 24) | (np.int64(buf[p + 2]) << 16)
                  | (np.int64(buf[p + 1]) << 8) | np.int64(buf[p]))
        p += 4
        if fam_be == 2 or fam_le == 2:
            ver = 4
        elif (fam_be == 24 or fam_be == 28 or fam_be == 30
              or fam_le == 24 or fam_le == 28 or fam_le == 30):
            ver = 6
        else:
            ver = _NOT_IP
    elif (linktype == LINKTYPE_RAW or linktype == LINKTYPE_RAW_OLD12
          or linktype == LINKTYPE_RAW_OLD14):
        walk = False
        if end - p < 1:
            r.error = PERR_TRUNCATED
            return
        v = buf[p] >> 4
        if v == 4:
            ver = 4
        elif v == 6:
            ver = 6
        else:
            r.error = PERR_BAD_HEADER
            return
    elif linktype == LINKTYPE_IPV4:
        walk = False
        ver = 4
    elif linktype == LINKTYPE_IPV6:
        walk = False
        ver = 6
    else:
        r.error = PERR_LINKTYPE
        return
    if walk:
        if et == _TRUNC:
            ver = _TRUNC
        else:
            p, ver = _ethertype_walk(buf, p, end, et, r)

    if ver < 0:
        if (r.pflags & PF_MAC) != 0:
            r.l3 = L3_ETHER
        r.error = PERR_TRUNCATED if ver == _TRUNC else PERR_NOT_IP
        return

    _ip_l4(buf, start, p, end, ver, r, nm)


@inline_kernel
def _gre(buf, q, pend):
    """GRE at ``q`` (payload ends at ``pend``) -> ``(inner, kind, key)``, as Zeek's
    GRE analyzer: version 0 carries IP (by its version nibble), Ethernet (0x6558),
    ERSPAN I/II (0x88be: an 8-byte header when the GRE sequence bit is set, then
    Ethernet), ERSPAN III (0x22eb: 12 bytes, + 8 with the O flag) or 802.11 (Aruba);
    version 1 (0x880b) carries PPP with IPv4/IPv6. The routing bit and the flag bits
    0x0078 are refused."""
    if pend - q < 4:
        return q, _TK_NONE, 0
    fv = _be16(buf, q)
    pt = _be16(buf, q + 2)
    ver = fv & 7
    glen = 4
    if (fv & 0x8000) != 0:
        glen += 4
    key = 0
    if (fv & 0x2000) != 0:
        if pend - q >= glen + 4:
            key = _be32(buf, q + glen)
        glen += 4
    if (fv & 0x1000) != 0:
        glen += 4
    if (fv & 0x0080) != 0:
        glen += 4
    if ver > 1 or (fv & 0x4000) != 0 or (fv & 0x0078) != 0:
        return q, _TK_NONE, 0
    n = pend - q
    kind = _TK_IP
    skip = glen
    if ver == 0:
        if pt == ETH_P_TEB:
            if n <= glen + 14:
                return q, _TK_NONE, 0
            kind = _TK_ETHER
        elif pt == ETH_P_ERSPAN2:
            if n <= glen + 14:
                return q, _TK_NONE, 0
            kind = _TK_ETHER
            if (fv & 0x1000) != 0:
                skip += 8
        elif pt == ETH_P_ERSPAN3:
            if n <= glen + 14 + 12:
                return q, _TK_NONE, 0
            kind = _TK_ETHER
            skip += 12
            if (buf[q + glen + 11] & 1) != 0:
                if n <= glen + 12 + 8 + 14:
                    return q, _TK_NONE, 0
                skip += 8
        elif (((pt & 0x8200) == 0x8200 and (pt & 0x0F) == 0)
              or ((pt & 0x8300) == 0x8300 and (pt & 0x0F) == 0 and pt <= 0x8370)
              or pt == 0x9000):
            if n <= glen:
                return q, _TK_NONE, 0
            kind = _TK_WLAN
        if kind == _TK_ETHER and n < skip + 14:
            return q, _TK_NONE, 0
    else:
        if pt != ETH_P_PPTP or n < glen + 4:
            return q, _TK_NONE, 0
        ppp = _be16(buf, q + glen + 2)
        if ppp != PPP_IPV4 and ppp != PPP_IPV6:
            return q, _TK_NONE, 0
        skip += 4
        if not _exact_ip(buf, q + skip, pend, 4 if ppp == PPP_IPV4 else 6, False):
            return q, _TK_NONE, 0
    return q + skip, kind, key


@inline_kernel
def _exact_ip(buf, q, pend, ver, bubble):
    """Zeek's ``IP::ParsePacket`` check (IP in IP, GRE version 1, GTP, Teredo): an IP
    header at ``q`` of version ``ver`` (0: either) whose total length is exactly the bytes
    left; with ``bubble``, a Teredo bubble (IPv6, next header 59, no payload) may have more.
    """
    n = pend - q
    if n < 1:
        return False
    v = buf[q] >> 4
    if ver != 0 and v != ver:
        return False
    if v == 6:
        if n < 40:
            return False
        tot = 40 + _be16(buf, q + 4)
        if tot == n:
            return True
        return bubble and tot < n and buf[q + 6] == 59 and tot == 40
    if v == 4:
        return n >= 20 and _be16(buf, q + 2) == n
    return False


@inline_kernel
def _teredo(buf, q, pend):
    """Teredo at ``q``: optional authentication and origin indication headers, then
    IPv6 -> the inner offset, or -1 (Zeek's TeredoEncapsulation::DoParse)."""
    origin = False
    auth = False
    for _ in range(3):
        n = pend - q
        if n < 2:
            return -1
        tag = _be16(buf, q)
        if tag == 0:
            if origin or n < 8:
                return -1
            origin = True
            q += 8
        elif tag == 1:
            if origin or auth or n < 4:
                return -1
            tot = 4 + np.int64(buf[q + 2]) + np.int64(buf[q + 3]) + 9
            if n < tot:
                return -1
            auth = True
            q += tot
        elif (tag >> 12) == 6:
            if n < 40 or not _exact_ip(buf, q, pend, 6, True):
                return -1
            return q
        else:
            return -1
    return -1


@inline_kernel
def _teredo_detect(buf, q, pend):
    """Zeek's Teredo protocol detection (UDP payloads on other ports)."""
    n = pend - q
    if n < 40:
        return False
    if (buf[q] >> 4) != 6 and (buf[q] != 0 or (buf[q + 1] != 0 and buf[q + 1] != 1)):
        return False
    if (buf[q] >> 4) == 6:
        # an IPv6 header with a Teredo (2001:0::/32) source or destination
        if (buf[q + 8] == 0x20 and buf[q + 9] == 0x01 and buf[q + 10] == 0
                and buf[q + 11] == 0):
            return True
        if (buf[q + 24] == 0x20 and buf[q + 25] == 0x01 and buf[q + 26] == 0
                and buf[q + 27] == 0):
            return True
    val = np.int64(buf[q + 1])
    if val == 1:
        skip = 13 + np.int64(buf[q + 2]) + np.int64(buf[q + 3])
        if n < skip:
            return False
        q += skip
        n -= skip
        if n < 40:
            return False
        val = _be16(buf, q)
    if val == 0:
        q += 8
        n -= 8
        if n < 40:
            return False
        return (buf[q] >> 4) == 6
    return False


@inline_kernel
def _ayiya(buf, q, pend):
    """AYIYA at ``q`` -> the inner IP offset or -1 (forwarding op code, next header
    IPv4/IPv6, as Zeek's AYIYA analyzer)."""
    n = pend - q
    if n < 8:
        return -1
    hdr = 8 + (np.int64(1) << (buf[q] >> 4)) + (buf[q + 1] >> 4) * 4
    if n < hdr or (buf[q + 2] & 0x0F) != 1:
        return -1
    nh = buf[q + 3]
    if (nh != 4 and nh != 41) or n == hdr:
        return -1
    return q + hdr


@inline_kernel
def _tunnel(buf, start, end, r, tcfg, prev_type):
    """The encapsulation carried by the parsed packet ``r`` (docs/tunnels.md).

    Returns ``(inner, kind, type, key)``: the offset of what it carries, ``_TK_*``
    (``_TK_NONE``: not a tunnel), ``TUN_*`` and the VNI / GRE key / TEID.
    """
    none = (start, _TK_NONE, 0, 0)
    if (r.l3 != 4 and r.l3 != 6) or (r.pflags & (PF_FRAG | PF_MORE_FRAGS)) != 0:
        return none
    if r.error != PERR_NONE:
        return none
    # the IP payload as Zeek sees it: by the IP length, cut by the capture
    pend = start + np.int64(r.l3_off) + np.int64(r.ip_len)
    if pend > end:
        pend = end
    proto = r.proto
    q = start + np.int64(r.l4_off)
    if proto == 4 or proto == 41:
        # the inner version must be the protocol's, its length the bytes left
        if not _exact_ip(buf, q, pend, 4 if proto == 4 else 6, False):
            return none
        return q, _TK_IP, TUN_IP, 0
    if proto == 47:
        q2, kind, key = _gre(buf, q, pend)
        return q2, kind, TUN_GRE, key
    if proto != 17 or (r.pflags & PF_PORTS) == 0:
        return none
    q += 8
    if pend - q <= 0:
        return none
    # Zeek dispatches on the responder port; its likely-server-port rule makes a
    # tunnel port the responder's whichever side sends it
    vx = tcfg[TC_VXLAN]
    gn = tcfg[TC_GENEVE]
    port = np.int64(r.dport)
    sp = np.int64(r.sport)
    if (port != vx and port != gn and port != GTPV1_U_PORT and port != GTPV1_C_PORT
            and port != TEREDO_PORT and port != AYIYA_PORT and port != GRE_UDP_PORT):
        port = sp
    n = pend - q
    if port == vx:
        if n <= 8 or (buf[q] & 0x08) == 0:
            return none
        return q + 8, _TK_ETHER, TUN_VXLAN, np.int64(_be_u64(buf, q + 4, 3))
    if port == gn:
        if n < 8 or (buf[q] >> 6) != 0:
            return none
        hdr = 8 + np.int64(buf[q] & 0x3F) * 4
        if n <= hdr:
            return none
        nh = _be16(buf, q + 2)
        vni = np.int64(_be_u64(buf, q + 4, 3))
        if nh == ETH_P_TEB:
            return q + hdr, _TK_ETHER, TUN_GENEVE, vni
        if nh == ETH_P_IPV4 or nh == ETH_P_IPV6:
            return q + hdr, _TK_IP, TUN_GENEVE, vni
        return none
    if port == GTPV1_U_PORT or port == GTPV1_C_PORT:
        if prev_type == TUN_GTPV1 or n < 8:
            return none
        fl = buf[q]
        if (fl >> 5) != 1 or (fl & 0x10) == 0 or buf[q + 1] != 255:
            return none
        teid = _be32(buf, q + 4)
        hdr = 8
        if (fl & 0x07) != 0:
            hdr += 4
        if (fl & 0x04) != 0:
            ok = False
            for _ in range(MAX_GTP_EXT):
                if n < hdr + 1:
                    return none
                el = np.int64(buf[q + hdr]) * 4
                if el == 0 or n < hdr + el:
                    return none
                nxt = buf[q + hdr + el - 1]
                hdr += el
                if nxt == 0:
                    ok = True
                    break
            if not ok:
                return none
        if not _exact_ip(buf, q + hdr, pend, 0, False):
            return none
        return q + hdr, _TK_IP, TUN_GTPV1, teid
    if port == GRE_UDP_PORT:
        q2, kind, key = _gre(buf, q, pend)
        return q2, kind, TUN_GRE, key
    if port == TEREDO_PORT:
        t = _teredo(buf, q, pend)
        if t < 0:
            return none
        return t, _TK_IP, TUN_TEREDO, 0
    if port == AYIYA_PORT:
        t = _ayiya(buf, q, pend)
        if t < 0:
            return none
        return t, _TK_IP, TUN_AYIYA, 0
    # protocol detection on any other port: AYIYA, then Teredo (Zeek's order)
    if n >= 3 and buf[q + 1] == 0x52 and buf[q + 2] == 0x11:
        t = _ayiya(buf, q, pend)
        if t < 0:
            return none
        return t, _TK_IP, TUN_AYIYA, 0
    if _teredo_detect(buf, q, pend):
        t = _teredo(buf, q, pend)
        if t < 0:
            return none
        return t, _TK_IP, TUN_TEREDO, 0
    return none


@kernel
def parse_frame_rows(buf, off, caplen, wirelen, linktype, ts, out, names, i, tcfg, room):
    """Parse one frame into ``out[i]`` and, when it carries a tunnel, one more row per
    decapsulated packet (at most ``TUN_MAX_DEPTH`` and ``room - 1``).

    ``tcfg``: int64[TC_SIZE] (``TC_*``). Inner rows have ``tun_depth`` 1, 2, ... and
    the encapsulation's ``tun_type`` / ``tun_key``; their ``caplen`` / ``wirelen`` are
    the bytes from the start of the encapsulated frame (its Ethernet header, or its IP
    header); ``l3_off``, ``l4_off`` and ``payload_off`` stay relative to the captured
    frame. A decapsulated payload that is not IP, or whose IP header is unusable,
    gives no row (the frame is counted by its outer packet). Returns the rows
    written, negated when ``room`` rows were not enough for every decapsulated
    packet (the rows written are still valid: outer packet first).
    """
    parse_row(buf, off, caplen, wirelen, linktype, ts, out, i, names[i])
    if tcfg[TC_DECAP] == 0:
        return 1
    start = off
    end = off + caplen
    if end > buf.shape[0]:
        end = buf.shape[0]
    rows = 1
    prev_type = 0
    for depth in range(1, TUN_MAX_DEPTH + 1):
        q, kind, ttype, key = _tunnel(buf, start, end, out[i + rows - 1], tcfg, prev_type)
        if kind == _TK_NONE:
            break
        if rows >= room:
            return -rows  # out of rows: the caller parses the frame again with more room
        r = out[i + rows]
        _clear(r)
        r.ts = ts
        r.caplen = end - q if end > q else 0
        w = wirelen - (q - start)
        r.wirelen = w if w > 0 else 0
        p = q
        ver = _NOT_IP
        if kind == _TK_IP:
            if end - p < 1:
                break
            v = buf[p] >> 4
            if v != 4 and v != 6:
                break
            ver = v
        else:
            if kind == _TK_ETHER:
                if end - p < 14:
                    break
                r.dmac = _be_u64(buf, p, 6)
                r.smac = _be_u64(buf, p + 6, 6)
                r.pflags = PF_MAC
                et = _be16(buf, p + 12)
                p += 14
            else:
                p, et = _wlan(buf, p, end, r)
                if et < _ET_LLC:
                    break
            p, ver = _ethertype_walk(buf, p, end, et, r)
            if ver < 0:
                break
        _ip_l4(buf, start, p, end, ver, r, names[i + rows])
        if (r.l3 != 4 and r.l3 != 6) or (r.error != PERR_NONE and r.error != PERR_L4_SHORT):
            break
        r.tun_type = ttype
        r.tun_depth = depth
        r.tun_key = key
        prev_type = ttype
        rows += 1
    return rows


@kernel
def parse_frame(buf, off, caplen, wirelen, linktype, ts, out, i):
    """``parse_row`` into a ``PKT_DTYPE`` row ``out[i]``, the query name in the row
    (``dns_qname``): the form of the public API and of the tests' twins."""
    parse_row(buf, off, caplen, wirelen, linktype, ts, out, i, out[i].dns_qname)


@kernel
def parse_batch(buf, offs, caplens, wirelens, linktypes, tss, out):
    """Parse ``len(offs)`` frames of ``buf`` into ``out[:len(offs)]``.

    ``offs``, ``caplens``, ``wirelens``, ``linktypes``, ``tss``: int64[n];
    ``buf``: uint8[:]; ``out``: PKT_DTYPE[>= n].
    """
    for k in range(offs.shape[0]):
        parse_frame(buf, offs[k], caplens[k], wirelens[k], linktypes[k], tss[k], out, k)
