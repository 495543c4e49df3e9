"""Plain-Python twin of ``flowscope._kernels.dns.parse_dns`` (struct-based).

Written from the rules in the kernel's docstring: returns the ``dns_*`` fields
of a ``PKT_DTYPE`` row as a dict, with ``dns_qname`` as bytes.
"""

from __future__ import annotations

import struct

from flowscope import layout as L

_BAD = set(range(0, 33)) | set(range(127, 256)) | {ord('"'), ord("\\"), ord(".")}


def _name(msg: bytes, pos: int):
    """(text, next offset) or None."""
    labels = []
    nxt = None
    jumps = 0
    seg = pos
    while True:
        if pos >= len(msg):
            return None
        ln = msg[pos]
        if ln == 0:
            if nxt is None:
                nxt = pos + 1
            break
        if ln & 0xC0 == 0xC0:
            if pos + 1 >= len(msg) or jumps >= L.DNS_MAX_JUMPS:
                return None
            target = ((ln & 0x3F) << 8) | msg[pos + 1]
            if target >= seg:
                return None
            if nxt is None:
                nxt = pos + 2
            jumps += 1
            pos = seg = target
            continue
        if ln & 0xC0:
            return None
        if pos + 1 + ln > len(msg):
            return None
        labels.append(bytes(b if b not in _BAD else ord("?") for b in msg[pos + 1:pos + 1 + ln]))
        pos += 1 + ln
        if len(b".".join(labels)) > L.DNS_NAME_MAX:
            return None
    text = b".".join(labels) or b"."
    if len(text) > 255:
        return None
    return text, nxt


def naive_dns(msg: bytes, tcp: bool = False) -> dict:
    """The ``dns_*`` fields of one DNS message (``dns_flags`` 0 when it has no header)."""
    row = dict(dns_flags=0, dns_rcode=0, dns_id=0, dns_qtype=0, dns_answers=0, dns_qlen=0,
               dns_qname=b"")
    if len(msg) < 12:
        return row
    tid, flags, qd, an = struct.unpack_from("!HHHH", msg)
    f = L.DNS_VALID | (L.DNS_QR if flags & 0x8000 else 0) | (L.DNS_TCP if tcp else 0)
    row.update(dns_id=tid, dns_rcode=flags & 15, dns_answers=an)
    if qd:
        got = _name(msg, 12)
        if got is not None and got[1] + 4 <= len(msg):
            text, q = got
            f |= L.DNS_QUESTION
            row.update(dns_qtype=struct.unpack_from("!H", msg, q)[0], dns_qlen=len(text),
                       dns_qname=text)
    row["dns_flags"] = f
    return row
