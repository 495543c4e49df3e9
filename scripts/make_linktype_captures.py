#!/usr/bin/env python3
"""Write the small link-layer test captures of tests/data/linktypes/ (one pcap per encapsulation).

Every capture carries the same six packets (``TRAFFIC``): a TCP three-way
handshake, a UDP datagram and an ICMP echo request over IPv4, and a UDP
datagram over IPv6. Only the link layer differs, and within a capture the
frames rotate through that link layer's variants (with/without PPP
address/control bytes, QoS/4-address/HT-control 802.11 headers, VLAN tags
around PBB, ...), so each file exercises several header shapes.

Usage: ``python scripts/make_linktype_captures.py [OUTDIR]`` (default
tests/data/linktypes). The output is deterministic: rerunning rewrites the
same bytes, and tests/test_linktypes.py checks that it does.
"""

from __future__ import annotations

import ipaddress
import struct
import sys
import zlib
from pathlib import Path

OUTDIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "linktypes"
TS0 = 1_700_000_000  # first packet's timestamp (s); packets are 1 ms apart

CLIENT4, SERVER4 = "192.0.2.1", "198.51.100.2"
CLIENT6, SERVER6 = "2001:db8::1", "2001:db8::2"
MAC_C, MAC_S = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
MAC_AP = bytes.fromhex("020000000003")
MAC_B1, MAC_B2 = bytes.fromhex("0200000000b1"), bytes.fromhex("0200000000b2")

#: The packets of every capture: (ip version, protocol, src, sport, dst, dport, TCP flags).
#: ICMP "ports" are 0 (echo request: type 8, code 0).
TRAFFIC = [
    (4, 6, CLIENT4, 40000, SERVER4, 80, 0x02),
    (4, 6, SERVER4, 80, CLIENT4, 40000, 0x12),
    (4, 6, CLIENT4, 40000, SERVER4, 80, 0x10),
    (4, 17, CLIENT4, 5353, SERVER4, 53, 0),
    (4, 1, CLIENT4, 0, SERVER4, 0, 0),
    (6, 17, CLIENT6, 5353, SERVER6, 53, 0),
]


# --- IP packets --------------------------------------------------------------

def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _l4(proto, sport, dport, flags, pseudo):
    if proto == 6:
        seq, ack = (1000, 0) if flags == 0x02 else (5000, 1001) if flags == 0x12 else (1001, 5001)
        seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0)
    elif proto == 17:
        # a DNS query: example.org A IN
        body = b"\x12\x34\x01\x00\x00\x01\0\0\0\0\0\0\x07example\x03org\x00\x00\x01\x00\x01"
        seg = struct.pack("!HHHH", sport, dport, 8 + len(body), 0) + body
    else:
        seg = struct.pack("!BBHHH", 8, 0, 0, 0x77, 1) + b"flowscope"
        return seg[:2] + struct.pack("!H", _csum(seg)) + seg[4:]
    ck = _csum(pseudo + struct.pack("!BBH", 0, proto, len(seg)) + seg)
    at = 16 if proto == 6 else 6
    return seg[:at] + struct.pack("!H", ck) + seg[at + 2:]


def ip_packet(ver, proto, src, sport, dst, dport, flags):
    """One IPv4/IPv6 packet with valid checksums."""
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    if ver == 4:
        l4 = _l4(proto, sport, dport, flags, s + d)
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0x1234, 0x4000, 64, proto, 0, s, d)
        return hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:] + l4
    l4 = _l4(proto, sport, dport, flags, s + d + b"\0\0")
    return struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64, s, d) + l4


def ethertype_of(pkt: bytes) -> int:
    return 0x0800 if pkt[0] >> 4 == 4 else 0x86DD


def ppp_protocol(pkt: bytes) -> int:
    return 0x0021 if pkt[0] >> 4 == 4 else 0x0057


def macs(k):
    """(dst, src) of packet ``k``: the server answers only in the SYN-ACK."""
    return (MAC_C, MAC_S) if TRAFFIC[k][6] == 0x12 else (MAC_S, MAC_C)


# --- link layers: frame(k, pkt) -> bytes ---------------------------------------

def ppp(k, pkt):
    """PPP, rotating: ff 03 + protocol; protocol only; compressed protocol; MPLS."""
    proto = ppp_protocol(pkt)
    variant = k % 4
    if variant == 0:
        return b"\xff\x03" + struct.pack("!H", proto) + pkt
    if variant == 1:
        return struct.pack("!H", proto) + pkt
    if variant == 2:
        return bytes([proto & 0xFF]) + pkt
    label = struct.pack("!I", (16 << 12) | 0x100 | 64)
    return b"\xff\x03\x02\x81" + label + pkt


def ppp_hdlc(k, pkt):
    return b"\xff\x03" + struct.pack("!H", ppp_protocol(pkt)) + pkt


def ppp_with_dir(k, pkt):
    return bytes([k % 2]) + b"\xff\x03" + struct.pack("!H", ppp_protocol(pkt)) + pkt


def ppp_ether(k, pkt):
    body = struct.pack("!H", ppp_protocol(pkt)) + pkt
    return struct.pack("!BBHH", 0x11, 0, 0x0042, len(body)) + body


def c_hdlc(k, pkt):
    return bytes([0x0F if k % 2 else 0x8F, 0]) + struct.pack("!H", ethertype_of(pkt)) + pkt


def _snap(pkt):
    return b"\xaa\xaa\x03\0\0\0" + struct.pack("!H", ethertype_of(pkt)) + pkt


def wlan(k, pkt):
    """802.11 data frames, rotating: ToDS data; FromDS QoS data; 4-address QoS
    data with HT control (Order bit); 4-address data; ToDS QoS A-MSDU."""
    dst, src = macs(k)
    variant = k % 5
    seqctl = struct.pack("<H", k << 4)
    if variant == 0:
        hdr = b"\x08\x01\0\0" + MAC_AP + src + dst + seqctl
    elif variant == 1:
        hdr = b"\x88\x02\0\0" + dst + MAC_AP + src + seqctl + b"\x00\x00"
    elif variant == 2:
        hdr = (b"\x88\x83\0\0" + MAC_AP + MAC_B1 + dst + seqctl + src
               + b"\x05\x00" + b"\0\0\0\0")
    elif variant == 3:
        hdr = b"\x08\x03\0\0" + MAC_AP + MAC_B1 + dst + seqctl + src
    else:
        sub = _snap(pkt)
        hdr = b"\x88\x01\0\0" + MAC_AP + src + dst + seqctl + b"\x80\x00"
        return hdr + dst + src + struct.pack("!H", len(sub)) + sub
    return hdr + _snap(pkt)


def radiotap(k, pkt):
    """Radiotap (flags field; every other frame says "FCS at end" and has one), then 802.11."""
    body = wlan(k, pkt)
    if k % 2:
        return struct.pack("<BBHIB", 0, 0, 9, 0x2, 0x10) + body + struct.pack("<I", zlib.crc32(body))
    return struct.pack("<BBHIBB", 0, 0, 10, 0x6, 0x00, 0x02) + body  # flags, rate 1 Mb/s


def _nflog(pkt, order):
    fam = 2 if pkt[0] >> 4 == 4 else 10

    def tlv(ttype, value):
        t = struct.pack(order + "HH", 4 + len(value), ttype) + value
        return t + b"\0" * (-len(t) % 4)

    hw = struct.pack("!HBB", ethertype_of(pkt), 3, 0)  # NFULA_PACKET_HDR: hw protocol, hook
    return (struct.pack("!BBH", fam, 0, 7) + tlv(1, hw) + tlv(10, b"fs\0")
            + struct.pack(order + "HH", 4 + len(pkt), 9) + pkt)


def nflog(k, pkt):
    return _nflog(pkt, "<")


def nflog_be(k, pkt):
    return _nflog(pkt, ">")


def fddi(k, pkt):
    """FDDI: frame control (LLC, async), destination, source; then LLC/SNAP."""
    dst, src = macs(k)
    return b"\x50" + dst + src + _snap(pkt)


def eth(dst, src, *layers):
    return dst + src + b"".join(layers)


def pbb(k, pkt):
    """802.1ad B-TAG, 802.1ah I-TAG, customer Ethernet (every other one with a C-TAG)."""
    dst, src = macs(k)
    inner = dst + src + (struct.pack("!HH", 0x8100, 20) if k % 2 else b"")
    return eth(MAC_B2, MAC_B1, struct.pack("!HHH", 0x88A8, 100, 0x88E7),
               struct.pack("!I", 0x00010203 + k), inner, struct.pack("!H", ethertype_of(pkt)), pkt)


def vntag(k, pkt):
    """VN-Tag, then the EtherType (every other frame: a VLAN tag around the VN-Tag)."""
    dst, src = macs(k)
    tag = struct.pack("!HI", 0x8926, 0x80010002 + k)
    if k % 2:
        return eth(dst, src, struct.pack("!HH", 0x8100, 30), tag, struct.pack("!H", ethertype_of(pkt)), pkt)
    return eth(dst, src, tag, struct.pack("!H", ethertype_of(pkt)), pkt)


def fabricpath(k, pkt):
    """Cisco FabricPath: outer switch addresses, 0x8903, FTag/TTL, inner Ethernet, FCS
    (as in captures from FabricPath ports; tshark expects the 4 FCS bytes)."""
    dst, src = macs(k)
    f = eth(MAC_B2, MAC_B1, struct.pack("!HH", 0x8903, 0x0101 + k), dst, src,
            struct.pack("!H", ethertype_of(pkt)), pkt)
    return f + struct.pack("<I", zlib.crc32(f))


def llc_snap(k, pkt):
    """802.3 length field, LLC (aa aa 03) + SNAP (OUI 0 / 0000f8) + EtherType."""
    dst, src = macs(k)
    oui = b"\0\0\xf8" if k % 3 == 2 else b"\0\0\0"
    body = b"\xaa\xaa\x03" + oui + struct.pack("!H", ethertype_of(pkt)) + pkt
    if k % 2:  # inside an 802.1Q tag
        return eth(dst, src, struct.pack("!HHH", 0x8100, 40, len(body)), body)
    return eth(dst, src, struct.pack("!H", len(body)), body)


#: file stem -> (pcap LINKTYPE, frame builder, big-endian file)
CAPTURES = {
    "ppp": (9, ppp, False),
    "fddi": (10, fddi, False),
    "ppp_hdlc": (50, ppp_hdlc, False),
    "ppp_ether": (51, ppp_ether, False),
    "c_hdlc": (104, c_hdlc, False),
    "ieee802_11": (105, wlan, False),
    "radiotap": (127, radiotap, False),
    "ppp_with_dir": (204, ppp_with_dir, False),
    "nflog": (239, nflog, False),
    "nflog_be": (239, nflog_be, True),
    "pbb": (1, pbb, False),
    "vntag": (1, vntag, False),
    "fabricpath": (1, fabricpath, False),
    "llc_snap": (1, llc_snap, False),
}


def frames(stem):
    _lt, build, _be = CAPTURES[stem]
    return [build(k, ip_packet(*t)) for k, t in enumerate(TRAFFIC)]


def pcap_file(frames_, linktype: int = 1, big: bool = False) -> bytes:
    """A classic pcap of ``frames_``, one every millisecond from TS0."""
    e = ">" if big else "<"
    out = [struct.pack(e + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)]
    for k, f in enumerate(frames_):
        out.append(struct.pack(e + "IIII", TS0, k * 1000, len(f), len(f)) + f)
    return b"".join(out)


def pcap_bytes(stem) -> bytes:
    linktype, _build, big = CAPTURES[stem]
    return pcap_file(frames(stem), linktype, big)


def main(argv):
    outdir = Path(argv[1]) if len(argv) > 1 else OUTDIR
    outdir.mkdir(parents=True, exist_ok=True)
    for stem in CAPTURES:
        (outdir / f"{stem}.pcap").write_bytes(pcap_bytes(stem))
    print(f"wrote {len(CAPTURES)} captures to {outdir}")


if __name__ == "__main__":
    main(sys.argv)
