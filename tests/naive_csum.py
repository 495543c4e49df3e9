"""Plain-Python twin of ``flowscope._kernels.csum.verify_frame`` (struct-based).

Written from RFC 791 / 768 / 793 / 792 / 4443 and the kernel's docstring: it finds the
headers from the row's ``l3_off``/``l4_off`` and the IP lengths, and returns the csum bits.
"""

from __future__ import annotations

import struct

from flowscope import layout as L


def ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def naive_csum(frame: bytes, row: dict) -> int:
    if row["error"] != L.PERR_NONE or row["l3"] not in (4, 6):
        return 0
    ip, l4 = row["l3_off"], row["l4_off"]
    bad = 0
    if row["l3"] == 4:
        ihl = (frame[ip] & 15) * 4
        if ip + ihl <= len(frame) and ones_sum(frame[ip:ip + ihl]) != 0xFFFF:
            bad |= L.CSUM_IP_BAD
    proto = row["proto"]
    fragment = row["pflags"] & (L.PF_FRAG | L.PF_MORE_FRAGS)
    seg_len = ip + row["ip_len"] - l4
    if not fragment and proto in (1, 6, 17, 58) and 0 < seg_len and l4 + seg_len <= len(frame):
        seg = frame[l4:l4 + seg_len]
        if proto == 17 and row["l3"] == 4 and seg[6:8] == b"\0\0":
            return bad  # no UDP checksum
        if proto == 1:
            pseudo = b""
        elif row["l3"] == 4:
            pseudo = frame[ip + 12:ip + 20] + struct.pack("!BBH", 0, proto, seg_len)
        else:
            pseudo = frame[ip + 8:ip + 40] + struct.pack("!IxxxB", seg_len, proto)
        if ones_sum(pseudo + seg) != 0xFFFF:
            bad |= L.CSUM_L4_BAD
    return bad
