"""Community ID v1 flow hashes, as logged by Zeek's community-id support and Suricata.

The Community ID of a flow is ``"1:" + base64(sha1(...))`` over the seed, the
two endpoints (ordered so both directions give the same value), the IP
protocol and, for protocols with ports, the ports. ICMP and ICMPv6 use the
message type as the source "port" and the paired type (echo request <-> reply,
...) as the destination "port"; messages without a counterpart keep their
code and are hashed in the order seen (one-way).

The pair tables follow the reference implementation (the ``communityid``
package) and Zeek's ``ICMP_counterpart`` / ``ICMP6_counterpart``. For ICMPv6
that is 128<->129, 130<->131, 133<->134, 135<->136, 139<->140 and 144<->145;
Mobile Prefix Solicitation/Advertisement (146/147) have no pair there, so
they are one-way here too, to give the same IDs as Zeek and Suricata.

Only ``hashlib`` and ``base64`` are needed.
"""

from __future__ import annotations

import base64
import hashlib
import struct

from . import layout

__all__ = ["community_id_v1", "community_id_for_record", "icmp_port_equivalents"]

#: Protocols whose hash input carries ports (ICMP/ICMPv6: the type/code mapping).
HASHED_PORT_PROTOS = frozenset(layout.PORT_PROTOS + layout.ICMP_PROTOS)

def icmp_port_equivalents(proto: int, icmp_type: int, icmp_code: int) -> tuple[int, int, bool]:
    """``(sport, dport, one_way)`` standing for an ICMP/ICMPv6 message.

    A paired type maps to ``(type, counterpart)``; any other type to
    ``(type, code)`` with ``one_way`` True (its endpoints are not reordered).
    """
    table = layout.ICMP6_PAIRS if proto == layout.IPPROTO_ICMPV6 else layout.ICMP_PAIRS
    other = table.get(icmp_type)
    if other is None:
        return icmp_type, icmp_code, True
    return icmp_type, other, False


def community_id_v1(proto: int, saddr: bytes, daddr: bytes, sport: int, dport: int,
                    seed: int = 0) -> str:
    """Community ID v1 of one flow.

    Parameters
    ----------
    proto : int
        IP protocol number.
    saddr, daddr : bytes
        Source and destination addresses, 4 (IPv4) or 16 (IPv6) bytes in
        network order, as seen in the flow's first packet.
    sport, dport : int
        Ports for TCP/UDP/SCTP; for ICMP/ICMPv6 the message type and code.
        Ignored for other protocols.
    seed : int
        16-bit seed (0 unless the sensors were configured otherwise).

    Returns
    -------
    str
        ``"1:"`` followed by the base64 SHA-1 digest.
    """
    if len(saddr) != len(daddr) or len(saddr) not in (4, 16):
        raise ValueError("addresses must both be 4 or both be 16 bytes")
    has_ports = proto in HASHED_PORT_PROTOS
    one_way = False
    if proto in layout.ICMP_PROTOS:
        sport, dport, one_way = icmp_port_equivalents(proto, sport, dport)
    if not one_way:
        if saddr > daddr or (saddr == daddr and has_ports and sport > dport):
            saddr, daddr, sport, dport = daddr, saddr, dport, sport
    data = struct.pack("!H", seed & 0xFFFF) + saddr + daddr + struct.pack("!BB", proto, 0)
    if has_ports:
        data += struct.pack("!HH", sport & 0xFFFF, dport & 0xFFFF)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")


def _addr_bytes(l3: int, hi: int, lo: int) -> bytes:
    if l3 == layout.L3_IPV4:
        return (lo & 0xFFFFFFFF).to_bytes(4, "big")
    return ((hi << 64) | lo).to_bytes(16, "big")


def community_id_for_record(rec, seed: int = 0) -> str | None:
    """Community ID of the flow of an ``EVENT_DTYPE`` record.

    The record's key gives the endpoints; ``init_rev`` gives the direction of
    the flow's first packet (which matters only for one-way ICMP types). ICMP
    flows take the type/code of their first packet from ``rec["icmp"]``.
    Returns None for keys that are not IP five-tuples (IpPair, MacPair).
    """
    a_hi, a_lo, b_hi, b_lo, meta = (int(w) for w in rec["key"])
    kind, l3, proto, sport, dport = layout.unpack_meta(meta)
    if kind not in layout.FIVE_TUPLE_KINDS or l3 not in (layout.L3_IPV4, layout.L3_IPV6):
        return None
    saddr, daddr = _addr_bytes(l3, a_hi, a_lo), _addr_bytes(l3, b_hi, b_lo)
    if int(rec["init_rev"]):
        saddr, daddr, sport, dport = daddr, saddr, dport, sport
    if proto in layout.ICMP_PROTOS:
        icmp = int(rec["icmp"])
        if icmp & layout.ICMP_VALID:
            sport, dport = (icmp >> 8) & 0xFF, icmp & 0xFF
        else:
            sport, dport = 0, 0
    return community_id_v1(proto, saddr, daddr, sport, dport, seed)
