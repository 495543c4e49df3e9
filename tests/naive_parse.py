"""Plain-Python twin of ``flowscope._kernels.parse.parse_frame`` (struct-based).

Written independently of the kernel, straight from the rules in the kernel's
docstring, so the tests can compare the two field by field.
"""

from __future__ import annotations

import struct

from flowscope import layout as L
from naive_dns import naive_dns

FIELDS = [f for f in L.PKT_DTYPE.names if not f.startswith("_pad") and f != "dns_qname"]

VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
MPLS_TYPES = (0x8847, 0x8848)
IPV6_EXT_8 = (0, 43, 60, 135, 139, 140)
#: PPP protocol -> EtherType of what it carries.
PPP_PROTOCOLS = {0x0021: 0x0800, 0x0057: 0x86DD, 0x0281: 0x8847, 0x0283: 0x8847}
SNAP_ETHER_OUIS = (b"\0\0\0", b"\0\0\xf8")
LLC = "llc"  # pseudo EtherType: an LLC header comes next


class _Stop(Exception):
    """Parsing ended (matched or not); the row is final."""


def naive_parse(frame: bytes, ts: int = 0, linktype: int = 1, wirelen: int | None = None) -> dict:
    """Parse ``frame`` (the captured bytes) into a dict of PKT_DTYPE fields."""
    row = dict.fromkeys(FIELDS, 0)
    row.update(ts=ts, caplen=len(frame), wirelen=len(frame) if wirelen is None else wirelen)
    try:
        _parse(bytes(frame), linktype, row)
    except _Stop:
        pass
    return row


def _dns(row, msg, tcp):
    d = naive_dns(msg, tcp)
    d.pop("dns_qname")
    row.update(d)


def _fail(row, err, l3=L.L3_NONE):
    row["error"] = err
    row["l3"] = l3
    raise _Stop


def _l2(f, linktype, row):
    """Return (offset of the IP header, IP version)."""
    if linktype == 1:
        if len(f) < 14:
            _fail(row, L.PERR_TRUNCATED)
        row["dmac"] = int.from_bytes(f[0:6], "big")
        row["smac"] = int.from_bytes(f[6:12], "big")
        row["pflags"] = L.PF_MAC
        return _ethertype(f, 14, struct.unpack_from("!H", f, 12)[0], row)
    if linktype == 113:
        if len(f) < 16:
            _fail(row, L.PERR_TRUNCATED)
        return _ethertype(f, 16, struct.unpack_from("!H", f, 14)[0], row)
    if linktype == 276:
        if len(f) < 20:
            _fail(row, L.PERR_TRUNCATED)
        return _ethertype(f, 20, struct.unpack_from("!H", f, 0)[0], row)
    if linktype in (9, 204):
        return _ppp(f, 1 if linktype == 204 else 0, row)
    if linktype == 50:
        if f[:1] in (b"\x0f", b"\x8f"):
            return _chdlc(f, 0, row)
        return _ppp(f, 0, row)
    if linktype == 104:
        return _chdlc(f, 0, row)
    if linktype == 10:  # FDDI: frame control, DA, SA
        if len(f) < 13:
            _fail(row, L.PERR_TRUNCATED)
        return _ethertype(f, 13, LLC, row)
    if linktype == 51:
        return _ethertype(f, 0, 0x8864, row)
    if linktype == 105:
        return _wlan(f, 0, row)
    if linktype == 127:
        if len(f) < 4:
            _fail(row, L.PERR_TRUNCATED)
        (rtlen,) = struct.unpack_from("<H", f, 2)
        if len(f) < rtlen:
            _fail(row, L.PERR_TRUNCATED)
        return _wlan(f, rtlen, row)
    if linktype == 239:
        return _nflog(f, row)
    if linktype in (0, 108):
        if len(f) < 4:
            _fail(row, L.PERR_TRUNCATED)
        fams = set(struct.unpack_from("<I", f)) | set(struct.unpack_from(">I", f))
        if 2 in fams:
            return 4, 4
        if fams & {24, 28, 30}:
            return 4, 6
        _fail(row, L.PERR_NOT_IP)
    if linktype in (12, 14, 101):
        if len(f) < 1:
            _fail(row, L.PERR_TRUNCATED)
        if f[0] >> 4 not in (4, 6):
            _fail(row, L.PERR_BAD_HEADER)
        return 0, f[0] >> 4
    if linktype == 228:
        return 0, 4
    if linktype == 229:
        return 0, 6
    _fail(row, L.PERR_LINKTYPE)


def _ppp(f, p, row):
    """PPP (RFC 1661/1662): [ff 03] protocol (1 byte when odd, else 2)."""
    if f[p:p + 2] == b"\xff\x03":
        p += 2
    if len(f) < p + 1:
        _fail(row, L.PERR_TRUNCATED)
    if f[p] % 2:
        return _ethertype(f, p + 1, PPP_PROTOCOLS.get(f[p]), row)
    if len(f) < p + 2:
        _fail(row, L.PERR_TRUNCATED)
    (proto,) = struct.unpack_from("!H", f, p)
    return _ethertype(f, p + 2, PPP_PROTOCOLS.get(proto), row)


def _chdlc(f, p, row):
    """Cisco HDLC: address, control, EtherType."""
    if len(f) < p + 4:
        _fail(row, L.PERR_TRUNCATED)
    return _ethertype(f, p + 4, struct.unpack_from("!H", f, p + 2)[0], row)


def _wlan(f, p, row):
    """IEEE 802.11 data frame; then LLC/SNAP."""
    if len(f) < p + 24:
        _fail(row, L.PERR_TRUNCATED)
    fc, flags = f[p], f[p + 1]
    ftype, subtype = (fc >> 2) & 3, fc >> 4
    if ftype != 2 or subtype & 4:  # not data, or a null (no data) subtype
        _fail(row, L.PERR_NOT_IP)
    to_ds, from_ds = flags & 1, (flags >> 1) & 1
    hlen = 30 if to_ds and from_ds else 24
    if len(f) < p + hlen:
        _fail(row, L.PERR_TRUNCATED)
    a1, a2, a3 = (f[p + k:p + k + 6] for k in (4, 10, 16))
    src, dst = {(0, 0): (a2, a1), (1, 0): (a2, a3), (0, 1): (a3, a1),
                (1, 1): (f[p + 24:p + 30], a3)}[(to_ds, from_ds)]
    row["smac"] = int.from_bytes(src, "big")
    row["dmac"] = int.from_bytes(dst, "big")
    row["pflags"] |= L.PF_MAC
    if flags & 0x40:  # protected: encrypted body
        _fail(row, L.PERR_NOT_IP, L.L3_ETHER)
    amsdu = False
    if subtype & 8:  # QoS data: 2-byte QoS control, then HT control if Order is set
        if len(f) < p + hlen + 2:
            _fail(row, L.PERR_TRUNCATED, L.L3_ETHER)
        amsdu = bool(f[p + hlen] & 0x80)
        hlen += 2 + (4 if flags & 0x80 else 0)
    p += hlen + (14 if amsdu else 0)
    return _ethertype(f, p, LLC, row)


def _nflog(f, row):
    """NFLOG: family, version 0, resource id; TLVs up to NFULA_PAYLOAD (type 9)."""
    if len(f) < 4:
        _fail(row, L.PERR_TRUNCATED)
    if f[1] != 0 or f[0] not in (2, 10):
        _fail(row, L.PERR_NOT_IP)
    ver = 4 if f[0] == 2 else 6
    # TLV header fields are in the capturing host's byte order: a big-endian
    # first type has its high byte zero (apart from the flag bit) and its low byte not.
    order = ">" if len(f) >= 8 and f[6] & 0x7F == 0 and f[7] else "<"
    p = 4
    while len(f) - p >= 4:
        tlen, ttype = struct.unpack_from(order + "HH", f, p)
        if ttype & 0x7FFF == 9:
            return p + 4, ver
        if tlen < 4:
            _fail(row, L.PERR_BAD_HEADER)
        tlen += -tlen % 4
        if tlen > len(f) - p:
            _fail(row, L.PERR_TRUNCATED)
        p += tlen
    _fail(row, L.PERR_NOT_IP if p == len(f) else L.PERR_TRUNCATED)


def _ethertype(f, p, et, row):
    """Walk the EtherType chain from ``et`` at ``p``; return (IP offset, version).

    Failures are L3_ETHER when MAC addresses were read (PF_MAC), else L3_NONE.
    """
    def fail(err):
        _fail(row, err, L.L3_ETHER if row["pflags"] & L.PF_MAC else L.L3_NONE)

    def need(n):
        if len(f) < p + n:
            fail(L.PERR_TRUNCATED)

    tagged = False
    for _ in range(9):
        if et == 0x0800:
            return p, 4
        if et == 0x86DD:
            return p, 6
        if et in VLAN_TYPES:
            need(4)
            tci, et = struct.unpack_from("!HH", f, p)
            if not tagged:
                row["vlan"] = tci & 0xFFF
                tagged = True
            elif row.get("nvlan", 0) == 1:
                row["vlan_inner"] = tci & 0xFFF
            row["nvlan"] = row.get("nvlan", 0) + 1
            p += 4
        elif et in MPLS_TYPES:
            for _lbl in range(8):
                need(4)
                bos = f[p + 2] & 1
                p += 4
                if bos:
                    break
            else:
                fail(L.PERR_NOT_IP)
            need(1)
            if f[p] >> 4 in (4, 6):
                return p, f[p] >> 4
            fail(L.PERR_NOT_IP)
        elif et == 0x8864:  # PPPoE session: 6-byte header + PPP protocol (IPv4/IPv6 only)
            need(8)
            ppp = struct.unpack_from("!H", f, p + 6)[0]
            p += 8
            if ppp in (0x0021, 0x0057):
                return p, 4 if ppp == 0x0021 else 6
            fail(L.PERR_NOT_IP)
        elif et in (0x88E7, 0x8903):  # PBB I-TAG / FabricPath FTag+TTL, then inner Ethernet
            p += 4 if et == 0x88E7 else 2
            need(14)
            row["dmac"] = int.from_bytes(f[p:p + 6], "big")
            row["smac"] = int.from_bytes(f[p + 6:p + 12], "big")
            row["pflags"] |= L.PF_MAC
            (et,) = struct.unpack_from("!H", f, p + 12)
            p += 14
        elif et == 0x8926:  # VN-Tag
            need(6)
            (et,) = struct.unpack_from("!H", f, p + 4)
            p += 6
        elif et == LLC or (isinstance(et, int) and et <= 1500):  # 802.3 length: LLC
            need(3)
            if f[p:p + 2] != b"\xaa\xaa":
                fail(L.PERR_NOT_IP)
            p += 3 if f[p + 2] & 3 == 3 else 4
            need(5)
            if f[p:p + 3] not in SNAP_ETHER_OUIS:
                fail(L.PERR_NOT_IP)
            (et,) = struct.unpack_from("!H", f, p + 3)
            p += 5
        else:
            fail(L.PERR_NOT_IP)
    fail(L.PERR_NOT_IP)


def _parse(f, linktype, row):
    p, ver = _l2(f, linktype, row)
    _ip(f, p, ver, row)


def _ip(f, p, ver, row):
    """The IP header at ``p`` (version ``ver``) and its L4 header (offsets from f[0])."""
    later_frag = False
    if ver == 4:
        if len(f) < p + 20:
            _fail(row, L.PERR_TRUNCATED)
        vihl, _tos, total, ipid, fragw, _ttl, proto = struct.unpack_from("!BBHHHBB", f, p)
        if vihl >> 4 != 4 or (vihl & 15) < 5:
            _fail(row, L.PERR_BAD_HEADER)
        hl = (vihl & 15) * 4
        if len(f) < p + hl:
            _fail(row, L.PERR_TRUNCATED)
        row["src_lo"], row["dst_lo"] = struct.unpack_from("!II", f, p + 12)
        ip_len = total
        l4 = p + hl
        row.update(frag_id=ipid, frag_off=(fragw & 0x1FFF) * 8, frag_mf=(fragw >> 13) & 1)
        later_frag = (fragw & 0x1FFF) != 0
        if not later_frag and fragw & 0x2000:
            row["pflags"] |= L.PF_MORE_FRAGS
    else:
        if len(f) < p + 40:
            _fail(row, L.PERR_TRUNCATED)
        if f[p] >> 4 != 6:
            _fail(row, L.PERR_BAD_HEADER)
        plen, proto = struct.unpack_from("!HB", f, p + 4)
        row["src_hi"], row["src_lo"], row["dst_hi"], row["dst_lo"] = struct.unpack_from("!QQQQ", f, p + 8)
        ip_len = 40 + plen
        l4 = p + 40
        for _ in range(8):
            if proto in IPV6_EXT_8 or proto == 51:
                if len(f) < l4 + 2:
                    _fail(row, L.PERR_TRUNCATED)
                nxt, hlen = f[l4], f[l4 + 1]
                l4 += (hlen + 1) * 8 if proto != 51 else (hlen + 2) * 4
                proto = nxt
            elif proto == 44:
                if len(f) < l4 + 8:
                    _fail(row, L.PERR_TRUNCATED)
                nxt = f[l4]
                offm, fid = struct.unpack_from("!HI", f, l4 + 2)
                row.update(frag_id=fid, frag_off=offm & 0xFFF8, frag_mf=offm & 1)
                l4 += 8
                proto = nxt
                if offm >> 3:
                    later_frag = True
                    break
                if offm & 1:
                    row["pflags"] |= L.PF_MORE_FRAGS
            else:
                break
    row.update(l3=L.L3_IPV4 if ver == 4 else L.L3_IPV6, proto=proto, ip_len=ip_len,
               l3_off=min(p, 0xFFFF), l4_off=min(l4, 0xFFFF))
    l4len = max(0, p + ip_len - l4)
    row["payload_len"] = l4len
    row["payload_off"] = min(l4, 0xFFFF)
    if later_frag:
        row["pflags"] |= L.PF_FRAG
        return
    avail = len(f) - l4
    if proto == 6:
        if avail < 20 or l4len < 20:
            row["error"] = L.PERR_L4_SHORT  # keyed at the IP level, ports 0
            return
        sport, dport, seq, ack, offres, flags, win = struct.unpack_from("!HHIIBBH", f, l4)
        doff = (offres >> 4) * 4
        if doff < 20:
            _fail(row, L.PERR_BAD_HEADER)
        row.update(sport=sport, dport=dport, seq=seq, ack=ack, tcp_flags=flags, window=win,
                   payload_len=max(0, l4len - doff), payload_off=min(l4 + doff, 0xFFFF))
        row["pflags"] |= L.PF_PORTS | L.PF_TCP
        pl = l4len - doff
        if L.DNS_PORT in (sport, dport) and pl >= 14:
            m = l4 + doff + 2
            (mlen,) = struct.unpack_from("!H", f, m - 2)
            _dns(row, f[m:min(len(f), p + ip_len, m + mlen)], True)
    elif proto == 17:
        if avail < 8 or l4len < 8:
            row["error"] = L.PERR_L4_SHORT
            return
        row["sport"], row["dport"] = struct.unpack_from("!HH", f, l4)
        row.update(payload_len=max(0, l4len - 8), payload_off=min(l4 + 8, 0xFFFF))
        row["pflags"] |= L.PF_PORTS
        if L.DNS_PORT in (row["sport"], row["dport"]):
            _dns(row, f[l4 + 8:min(len(f), p + ip_len)], False)
    elif proto == 132:
        if avail >= 4:
            row["sport"], row["dport"] = struct.unpack_from("!HH", f, l4)
            row["pflags"] |= L.PF_PORTS
    elif proto in (1, 58):
        if avail >= 2:
            row["icmp_type"], row["icmp_code"] = f[l4], f[l4 + 1]
            row["pflags"] |= L.PF_ICMP
        row["payload_len"] = max(0, l4len - 8)  # after the 8-byte ICMP header


# ---- tunnels (docs/tunnels.md), written from the rules, struct-based --------------------

TUN_PORTS_FIXED = {2152: "gtp", 2123: "gtp", 3544: "teredo", 5072: "ayiya", 4754: "gre"}


def _exact(f, q, end, ver, bubble=False):
    """An IP header at q of version ver (0: any) whose total length is end - q exactly."""
    n = end - q
    if n < 1 or (ver and f[q] >> 4 != ver):
        return False
    if f[q] >> 4 == 6:
        if n < 40:
            return False
        tot = 40 + struct.unpack_from("!H", f, q + 4)[0]
        return tot == n or (bubble and tot == 40 < n and f[q + 6] == 59)
    if f[q] >> 4 == 4:
        return n >= 20 and struct.unpack_from("!H", f, q + 2)[0] == n
    return False


def _gre_naive(f, q, end):
    if end - q < 4:
        return None
    fv, pt = struct.unpack_from("!HH", f, q)
    opt = [fv & 0x8000, fv & 0x2000, fv & 0x1000, fv & 0x0080]
    glen = 4 + 4 * sum(1 for o in opt if o)
    key = 0
    if fv & 0x2000:
        at = q + 4 + (4 if fv & 0x8000 else 0)
        if end - q >= at - q + 4:
            key = struct.unpack_from("!I", f, at)[0]
    if (fv & 7) > 1 or fv & 0x4000 or fv & 0x0078:
        return None
    n = end - q
    if fv & 7 == 1:
        if pt != 0x880B or n < glen + 4:
            return None
        ppp = struct.unpack_from("!H", f, q + glen + 2)[0]
        if ppp not in (0x21, 0x57) or not _exact(f, q + glen + 4, end, 4 if ppp == 0x21 else 6):
            return None
        return q + glen + 4, "ip", key
    if pt == 0x6558:
        return (q + glen, "eth", key) if n > glen + 14 else None
    if pt == 0x88BE:
        if n <= glen + 14:
            return None
        skip = glen + (8 if fv & 0x1000 else 0)
        return (q + skip, "eth", key) if n >= skip + 14 else None
    if pt == 0x22EB:
        if n <= glen + 26:
            return None
        skip = glen + 12
        if f[q + glen + 11] & 1:
            if n <= glen + 34:
                return None
            skip += 8
        return (q + skip, "eth", key) if n >= skip + 14 else None
    if (pt & 0x8200 == 0x8200 and pt & 15 == 0) or (
            pt & 0x8300 == 0x8300 and pt & 15 == 0 and pt <= 0x8370) or pt == 0x9000:
        return (q + glen, "wlan", key) if n > glen else None
    return q + glen, "ip", key


def _teredo_naive(f, q, end):
    seen_origin = seen_auth = False
    while True:
        n = end - q
        if n < 2:
            return None
        tag = struct.unpack_from("!H", f, q)[0]
        if tag == 0 and not seen_origin and n >= 8:
            seen_origin, q = True, q + 8
        elif tag == 1 and not seen_origin and not seen_auth and n >= 4:
            tot = 13 + f[q + 2] + f[q + 3]
            if n < tot:
                return None
            seen_auth, q = True, q + tot
        elif tag >> 12 == 6 and n >= 40 and _exact(f, q, end, 6, bubble=True):
            return q
        else:
            return None


def _teredo_detect_naive(f, q, end):
    d = f[q:end]
    if len(d) < 40 or (d[0] >> 4 != 6 and not (d[0] == 0 and d[1] in (0, 1))):
        return False
    if d[0] >> 4 == 6 and (d[8:12] == b"\x20\x01\0\0" or d[24:28] == b"\x20\x01\0\0"):
        return True
    val = d[1]
    if val == 1:
        skip = 13 + d[2] + d[3]
        d = d[skip:]
        if len(d) < 40:
            return False
        val = struct.unpack_from("!H", d, 0)[0]
    if val == 0:
        d = d[8:]
        return len(d) >= 40 and d[0] >> 4 == 6
    return False


def _ayiya_naive(f, q, end):
    n = end - q
    if n < 8:
        return None
    hdr = 8 + (1 << (f[q] >> 4)) + (f[q + 1] >> 4) * 4
    if n < hdr or f[q + 2] & 15 != 1 or f[q + 3] not in (4, 41) or n == hdr:
        return None
    return q + hdr


def _tunnel_naive(f, r, prev, vx, gn):
    """(inner offset, kind, TUN_*, key) of the packet in row r, or None."""
    if r["l3"] not in (4, 6) or r["pflags"] & (L.PF_FRAG | L.PF_MORE_FRAGS) or r["error"]:
        return None
    end = min(len(f), r["l3_off"] + r["ip_len"])
    q = r["l4_off"]
    if r["proto"] in (4, 41):
        if _exact(f, q, end, 4 if r["proto"] == 4 else 6):
            return q, "ip", L.TUN_IP, 0
        return None
    if r["proto"] == 47:
        g = _gre_naive(f, q, end)
        return g and (g[0], g[1], L.TUN_GRE, g[2])
    if r["proto"] != 17 or not r["pflags"] & L.PF_PORTS:
        return None
    q += 8
    n = end - q
    if n <= 0:
        return None
    ports = {vx: "vxlan", gn: "geneve", **{p: k for p, k in TUN_PORTS_FIXED.items()
                                            if p not in (vx, gn)}}
    kind = ports.get(r["dport"]) or ports.get(r["sport"])
    if kind == "vxlan":
        if n <= 8 or not f[q] & 8:
            return None
        return q + 8, "eth", L.TUN_VXLAN, int.from_bytes(f[q + 4:q + 7], "big")
    if kind == "geneve":
        if n < 8 or f[q] >> 6:
            return None
        hdr = 8 + (f[q] & 0x3F) * 4
        nh = struct.unpack_from("!H", f, q + 2)[0]
        vni = int.from_bytes(f[q + 4:q + 7], "big")
        if n <= hdr or nh not in (0x6558, 0x0800, 0x86DD):
            return None
        return q + hdr, "eth" if nh == 0x6558 else "ip", L.TUN_GENEVE, vni
    if kind == "gtp":
        if prev == L.TUN_GTPV1 or n < 8 or f[q] >> 5 != 1 or not f[q] & 0x10 or f[q + 1] != 255:
            return None
        hdr = 8 + (4 if f[q] & 7 else 0)
        if f[q] & 4:
            for _ in range(8):
                if n < hdr + 1 or f[q + hdr] == 0 or n < hdr + f[q + hdr] * 4:
                    return None
                hdr += f[q + hdr] * 4
                if f[q + hdr - 1] == 0:
                    break
            else:
                return None
        if not _exact(f, q + hdr, end, 0):
            return None
        return q + hdr, "ip", L.TUN_GTPV1, struct.unpack_from("!I", f, q + 4)[0]
    if kind == "gre":
        g = _gre_naive(f, q, end)
        return g and (g[0], g[1], L.TUN_GRE, g[2])
    if kind == "teredo" or (kind is None and not (n >= 3 and f[q + 1] == 0x52
                                                   and f[q + 2] == 0x11)
                             and _teredo_detect_naive(f, q, end)):
        t = _teredo_naive(f, q, end)
        return None if t is None else (t, "ip", L.TUN_TEREDO, 0)
    if kind == "ayiya" or (kind is None and n >= 3 and f[q + 1] == 0x52 and f[q + 2] == 0x11):
        t = _ayiya_naive(f, q, end)
        return None if t is None else (t, "ip", L.TUN_AYIYA, 0)
    return None


def naive_parse_rows(frame: bytes, ts: int = 0, linktype: int = 1, wirelen=None,
                     vx: int = 4789, gn: int = 6081) -> list:
    """``naive_parse`` and one more row per decapsulated packet (as parse_frame_rows)."""
    f = bytes(frame)
    wl = len(f) if wirelen is None else wirelen
    rows = [naive_parse(f, ts, linktype, wl)]
    prev = 0
    for depth in range(1, L.TUN_MAX_DEPTH + 1):
        t = _tunnel_naive(f, rows[-1], prev, vx, gn)
        if t is None:
            break
        q, kind, ttype, key = t
        row = dict.fromkeys(FIELDS, 0)
        row.update(ts=ts, caplen=max(0, len(f) - q), wirelen=max(0, wl - q))
        try:
            if kind == "ip":
                if len(f) - q < 1 or f[q] >> 4 not in (4, 6):
                    break
                p, ver = q, f[q] >> 4
            elif kind == "eth":
                if len(f) - q < 14:
                    break
                row["dmac"] = int.from_bytes(f[q:q + 6], "big")
                row["smac"] = int.from_bytes(f[q + 6:q + 12], "big")
                row["pflags"] = L.PF_MAC
                p, ver = _ethertype(f, q + 14, struct.unpack_from("!H", f, q + 12)[0], row)
            else:
                p, ver = _wlan(f, q, row)
            _ip(f, p, ver, row)
        except _Stop:
            break
        if row["l3"] not in (4, 6) or row["error"] not in (0, L.PERR_L4_SHORT):
            break
        row.update(tun_type=ttype, tun_depth=depth, tun_key=key)
        rows.append(row)
        prev = ttype
    return rows
