#!/usr/bin/env python3
"""Write the small tunnel test captures of tests/data/tunnels/ (one pcap per encapsulation).

Every capture carries the packets of scripts/make_linktype_captures.py's
``TRAFFIC`` (a TCP handshake, a UDP datagram and an ICMP echo request over
IPv4, a UDP datagram over IPv6), each wrapped in one encapsulation between two
tunnel endpoints, over Ethernet. Within a capture the frames rotate through the
encapsulation's variants (GRE with a key, a sequence number, transparent
Ethernet bridging, ERSPAN II/III, PPTP; 802.11 in GRE (Aruba); Geneve with options; GTP-U with a
sequence number; 4in4/6in4/4in6; Teredo with an origin indication; ...). Teredo
carries IPv6 only: its capture carries ``TRAFFIC6``. ``nested`` wraps VXLAN in
GRE in IP in IP (depth 3), and ``deep`` nests five IP-in-IP layers (beyond
the decapsulation bound of four).

Usage: ``python scripts/make_tunnel_captures.py [OUTDIR]`` (default
tests/data/tunnels). The output is deterministic; tests/test_tunnels.py checks
that rerunning gives the same bytes.
"""

from __future__ import annotations

import ipaddress
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_linktype_captures import (  # noqa: E402
    MAC_AP, MAC_B1, MAC_B2, MAC_C, MAC_S, TRAFFIC, _csum, ethertype_of, ip_packet, macs, pcap_file,
)

OUTDIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "tunnels"
#: Tunnel endpoints (outer addresses).
TEP4 = ("203.0.113.1", "203.0.113.2")
TEP6 = ("2001:db8:ffff::1", "2001:db8:ffff::2")
#: Teredo traffic: IPv6 between Teredo (2001:0::/32) addresses.
TEREDO_C, TEREDO_S = "2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001:db8::2"
TRAFFIC6 = [
    (6, 6, TEREDO_C, 40000, TEREDO_S, 80, 0x02),
    (6, 6, TEREDO_S, 80, TEREDO_C, 40000, 0x12),
    (6, 6, TEREDO_C, 40000, TEREDO_S, 80, 0x10),
    (6, 17, TEREDO_C, 5353, TEREDO_S, 53, 0),
]


def outer_ip(proto: int, payload: bytes, k: int, v6: bool = False, layer: int = 0) -> bytes:
    """An outer IPv4 (or IPv6) header from one tunnel endpoint to the other (by ``k``);
    ``layer`` > 0 moves both endpoints by 2 * layer addresses."""
    a, b = TEP6 if v6 else TEP4
    src, dst = (a, b) if k % 2 == 0 else (b, a)
    s = (ipaddress.ip_address(src) + 2 * layer).packed
    d = (ipaddress.ip_address(dst) + 2 * layer).packed
    if v6:
        return struct.pack("!IHBB16s16s", 6 << 28, len(payload), proto, 64, s, d) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0x100 + k, 0, 64, proto, 0,
                      s, d)
    return hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:] + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP header with checksum 0 (allowed over IPv4, as VXLAN senders do)."""
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ether(pkt: bytes, k: int) -> bytes:
    dst, src = macs(k % len(TRAFFIC))
    return dst + src + struct.pack("!H", ethertype_of(pkt)) + pkt


def outer_frame(ip: bytes, k: int) -> bytes:
    dst, src = (MAC_B2, MAC_B1) if k % 2 == 0 else (MAC_B1, MAC_B2)
    return dst + src + struct.pack("!H", ethertype_of(ip)) + ip


def _ports(k: int, port: int) -> tuple[int, int]:
    """(sport, dport): the tunnel port is the destination, or the source of replies."""
    return (50000 + k, port) if k % 2 == 0 else (port, 50000 + k)


def vxlan(k, pkt):
    body = struct.pack("!BxxxI", 0x08, 42 << 8) + ether(pkt, k)
    return outer_frame(outer_ip(17, udp(*_ports(k, 4789), body), k), k)


def geneve(k, pkt):
    """Geneve: Ethernet (0x6558) with a 4-byte option, or IP directly."""
    if k % 2 == 0:
        opt = struct.pack("!HBB", 0x0102, 0x03, 0) + b""  # class, type, length 0 words
        hdr = struct.pack("!BBH", len(opt) // 4, 0, 0x6558) + struct.pack("!I", 7 << 8) + opt
        body = hdr + ether(pkt, k)
    else:
        hdr = struct.pack("!BBH", 0, 0, ethertype_of(pkt)) + struct.pack("!I", 7 << 8)
        body = hdr + pkt
    return outer_frame(outer_ip(17, udp(*_ports(k, 6081), body), k), k)


def _gre_variant(k, pkt):
    v = k % 6
    if v == 0:  # plain GRE
        return struct.pack("!HH", 0, ethertype_of(pkt)) + pkt
    if v == 1:  # key and sequence number
        return struct.pack("!HHII", 0x3000, ethertype_of(pkt), 0x1234, k) + pkt
    if v == 2:  # transparent Ethernet bridging, with a checksum
        body = ether(pkt, k)
        ck = _csum(struct.pack("!HHHH", 0x8000, 0x6558, 0, 0) + body)
        return struct.pack("!HHHH", 0x8000, 0x6558, ck, 0) + body
    if v == 3:  # ERSPAN type II: sequence number, 8-byte ERSPAN header
        return (struct.pack("!HHI", 0x1000, 0x88BE, k) + struct.pack("!II", 0x10010064, 0)
                + ether(pkt, k))
    if v == 4:  # ERSPAN type III: 12-byte header, no optional subheader
        return (struct.pack("!HHI", 0x1000, 0x22EB, k) + struct.pack("!III", 0x20010064, 0, 0)
                + ether(pkt, k))
    # GRE version 1 (PPTP): key (payload length, call id), sequence; PPP ff 03 + protocol
    ppp = b"\xff\x03" + struct.pack("!H", 0x0021 if pkt[0] >> 4 == 4 else 0x0057)
    return struct.pack("!HHHHI", 0x3001, 0x880B, len(pkt) + 4, 7, k) + ppp + pkt


def gre(k, pkt):
    return outer_frame(outer_ip(47, _gre_variant(k, pkt), k), k)


def aruba(k, pkt):
    """IEEE 802.11 data frames in GRE (Aruba, protocol 0x8200-0x82f0 / 0x8300-0x8370), then
    LLC/SNAP: a plain data frame to the DS, a QoS data frame from the DS, a four-address QoS
    frame with HT control (the Order bit), and an A-MSDU whose first subframe is read."""
    a1, a2, a3 = macs(k % len(TRAFFIC)) + (MAC_AP,)
    body = b"\xaa\xaa\x03\x00\x00\x00" + struct.pack("!H", ethertype_of(pkt)) + pkt
    seq = struct.pack("!H", (k << 4) & 0xFFFF)
    v = k % 4
    if v == 0:  # data, ToDS: BSSID, source, destination
        pt, hdr = 0x8200, struct.pack("!BBH", 0x08, 0x01, 0) + a3 + a2 + a1 + seq
    elif v == 1:  # QoS data, FromDS: destination, BSSID, source; QoS control TID 5
        pt, hdr = 0x8300, struct.pack("!BBH", 0x88, 0x02, 0) + a1 + a3 + a2 + seq + b"\x05\x00"
    elif v == 2:  # QoS data, ToDS and FromDS (four addresses), Order bit: + HT control
        pt = 0x8370
        hdr = (struct.pack("!BBH", 0x88, 0x83, 0) + MAC_B1 + MAC_B2 + a1 + seq + a2
               + b"\x00\x00" + bytes(4))
    else:  # QoS data, A-MSDU present: a subframe header (DA, SA, length) first
        pt = 0x8210
        hdr = (struct.pack("!BBH", 0x88, 0x02, 0) + a1 + a3 + a2 + seq + b"\x80\x00"
               + a1 + a2 + struct.pack("!H", len(body)))
    return outer_frame(outer_ip(47, struct.pack("!HH", 0, pt) + hdr + body, k), k)


def ipip(k, pkt):
    """4in4 and 6in4 (protocols 4 / 41 over IPv4); every third frame over IPv6 (4in6, 6in6)."""
    proto = 4 if pkt[0] >> 4 == 4 else 41
    return outer_frame(outer_ip(proto, pkt, k, v6=k % 3 == 2), k)


def gtpu(k, pkt):
    """GTP-U G-PDUs (type 255), every other one with a sequence number."""
    if k % 2:
        hdr = struct.pack("!BBHIHBB", 0x32, 255, len(pkt) + 4, 0x1000 + k, k, 0, 0)
    else:
        hdr = struct.pack("!BBHI", 0x30, 255, len(pkt), 0x1000 + k)
    return outer_frame(outer_ip(17, udp(*_ports(k, 2152), hdr + pkt), k), k)


def teredo(k, pkt):
    """Teredo: IPv6 in UDP 3544, the server's packets with an origin indication."""
    body = pkt
    if k % 2:
        body = struct.pack("!HH4s", 0, 50000 ^ 0xFFFF, bytes(b ^ 0xFF for b in bytes(4))) + pkt
    return outer_frame(outer_ip(17, udp(*_ports(k, 3544), body), k), k)


def ayiya(k, pkt):
    """AYIYA (forward op code) with a 16-byte identity and a 20-byte SHA-1 signature."""
    nh = 4 if pkt[0] >> 4 == 4 else 41
    hdr = struct.pack("!BBBBI", 0x41, 0x52, 0x11, nh, 1700000000) + bytes(16) + bytes(20)
    return outer_frame(outer_ip(17, udp(*_ports(k, 5072), hdr + pkt), k), k)


def nested(k, pkt):
    """VXLAN in GRE in IP in IP: three encapsulations."""
    vx = outer_ip(17, udp(*_ports(k, 4789), struct.pack("!BxxxI", 0x08, 9 << 8) + ether(pkt, k)),
                  k)
    g = outer_ip(47, struct.pack("!HH", 0, 0x0800) + vx, k)
    return outer_frame(outer_ip(4, g, k), k)


def deep(k, pkt):
    """Five IP-in-IP layers: the innermost is beyond the bound of four."""
    for layer in range(5):
        pkt = outer_ip(4 if pkt[0] >> 4 == 4 else 41, pkt, k, layer=5 - layer)
    return outer_frame(pkt, k)


#: file stem -> (frame builder, traffic)
CAPTURES = {
    "vxlan": (vxlan, TRAFFIC), "geneve": (geneve, TRAFFIC), "gre": (gre, TRAFFIC * 2),
    "aruba": (aruba, TRAFFIC * 2),
    "ipip": (ipip, TRAFFIC), "gtpu": (gtpu, TRAFFIC), "teredo": (teredo, TRAFFIC6),
    "ayiya": (ayiya, TRAFFIC), "nested": (nested, TRAFFIC), "deep": (deep, TRAFFIC),
}


def frames(stem):
    build, traffic = CAPTURES[stem]
    return [build(k, ip_packet(*t)) for k, t in enumerate(traffic)]


def pcap_bytes(stem) -> bytes:
    return pcap_file(frames(stem))


def main(argv):
    outdir = Path(argv[1]) if len(argv) > 1 else OUTDIR
    outdir.mkdir(parents=True, exist_ok=True)
    for stem in CAPTURES:
        (outdir / f"{stem}.pcap").write_bytes(pcap_bytes(stem))
    print(f"wrote {len(CAPTURES)} captures to {outdir}")


if __name__ == "__main__":
    main(sys.argv)
