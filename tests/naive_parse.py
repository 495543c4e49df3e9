"""Plain-Python twin of ``flowscope._kernels.parse.parse_frame`` (struct-based).

Written independently of the kernel, straight from the rules in the kernel's
docstring, so the tests can compare the two field by field.
"""

from __future__ import annotations

import struct

from flowscope import layout as L

FIELDS = [f for f in L.PKT_DTYPE.names if not f.startswith("_pad")]

VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
MPLS_TYPES = (0x8847, 0x8848)
IPV6_EXT_8 = (0, 43, 60, 135, 139, 140)


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
        return _ethertype(f, 14, struct.unpack_from("!H", f, 12)[0], row, L.L3_ETHER)
    if linktype == 113:
        if len(f) < 16:
            _fail(row, L.PERR_TRUNCATED)
        return _ethertype(f, 16, struct.unpack_from("!H", f, 14)[0], row, L.L3_NONE)
    if linktype == 276:
        if len(f) < 20:
            _fail(row, L.PERR_TRUNCATED)
        return _ethertype(f, 20, struct.unpack_from("!H", f, 0)[0], row, L.L3_NONE)
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


def _ethertype(f, p, et, row, l3_on_fail):
    tagged = False
    for _ in range(9):
        if et == 0x0800:
            return p, 4
        if et == 0x86DD:
            return p, 6
        if et in VLAN_TYPES:
            if len(f) < p + 4:
                _fail(row, L.PERR_TRUNCATED, l3_on_fail)
            tci, et = struct.unpack_from("!HH", f, p)
            if not tagged:
                row["vlan"] = tci & 0xFFF
                tagged = True
            p += 4
        elif et in MPLS_TYPES:
            for _lbl in range(8):
                if len(f) < p + 4:
                    _fail(row, L.PERR_TRUNCATED, l3_on_fail)
                bos = f[p + 2] & 1
                p += 4
                if bos:
                    break
            else:
                _fail(row, L.PERR_NOT_IP, l3_on_fail)
            if len(f) < p + 1:
                _fail(row, L.PERR_TRUNCATED, l3_on_fail)
            if f[p] >> 4 in (4, 6):
                return p, f[p] >> 4
            _fail(row, L.PERR_NOT_IP, l3_on_fail)
        elif et == 0x8864:
            if len(f) < p + 8:
                _fail(row, L.PERR_TRUNCATED, l3_on_fail)
            ppp = struct.unpack_from("!H", f, p + 6)[0]
            p += 8
            if ppp == 0x0021:
                return p, 4
            if ppp == 0x0057:
                return p, 6
            _fail(row, L.PERR_NOT_IP, l3_on_fail)
        else:
            _fail(row, L.PERR_NOT_IP, l3_on_fail)
    _fail(row, L.PERR_NOT_IP, l3_on_fail)


def _parse(f, linktype, row):
    p, ver = _l2(f, linktype, row)
    later_frag = False
    if ver == 4:
        if len(f) < p + 20:
            _fail(row, L.PERR_TRUNCATED)
        vihl, _tos, total, _id, fragw, _ttl, proto = struct.unpack_from("!BBHHHBB", f, p)
        if vihl >> 4 != 4 or (vihl & 15) < 5:
            _fail(row, L.PERR_BAD_HEADER)
        hl = (vihl & 15) * 4
        if len(f) < p + hl:
            _fail(row, L.PERR_TRUNCATED)
        row["src_lo"], row["dst_lo"] = struct.unpack_from("!II", f, p + 12)
        ip_len = total
        l4 = p + hl
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
                offm = struct.unpack_from("!H", f, l4 + 2)[0]
                l4 += 8
                proto = nxt
                if offm >> 3:
                    later_frag = True
                    break
                if offm & 1:
                    row["pflags"] |= L.PF_MORE_FRAGS
            else:
                break
    row.update(l3=L.L3_IPV4 if ver == 4 else L.L3_IPV6, proto=proto, ip_len=ip_len)
    l4len = max(0, p + ip_len - l4)
    row["payload_len"] = l4len
    row["payload_off"] = min(l4, 0xFFFF)
    if later_frag:
        row["pflags"] |= L.PF_FRAG
        return
    avail = len(f) - l4
    if proto == 6:
        if avail < 20:
            _fail(row, L.PERR_TRUNCATED)
        sport, dport, seq, ack, offres, flags, win = struct.unpack_from("!HHIIBBH", f, l4)
        doff = (offres >> 4) * 4
        if doff < 20:
            _fail(row, L.PERR_BAD_HEADER)
        row.update(sport=sport, dport=dport, seq=seq, ack=ack, tcp_flags=flags, window=win,
                   payload_len=max(0, l4len - doff), payload_off=min(l4 + doff, 0xFFFF))
        row["pflags"] |= L.PF_PORTS | L.PF_TCP
    elif proto == 17:
        if avail < 8:
            _fail(row, L.PERR_TRUNCATED)
        row["sport"], row["dport"] = struct.unpack_from("!HH", f, l4)
        row.update(payload_len=max(0, l4len - 8), payload_off=min(l4 + 8, 0xFFFF))
        row["pflags"] |= L.PF_PORTS
    elif proto == 132:
        if avail >= 4:
            row["sport"], row["dport"] = struct.unpack_from("!HH", f, l4)
            row["pflags"] |= L.PF_PORTS
    elif proto in (1, 58):
        if avail >= 2:
            row["icmp_type"], row["icmp_code"] = f[l4], f[l4 + 1]
            row["pflags"] |= L.PF_ICMP
        row["payload_len"] = max(0, l4len - 8)  # after the 8-byte ICMP header
