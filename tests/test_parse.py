"""Frame parser: the numba kernel against its plain-Python twin and hand-checked values."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowscope import layout as L
from flowscope._kernels.parse import parse_batch
from flowscope.pcap import parse_bytes

from naive_parse import FIELDS, naive_parse

MAC_D = bytes.fromhex("001122334455")
MAC_S = bytes.fromhex("66778899aabb")


# --- frame builders ----------------------------------------------------------

def tcp(sport=1234, dport=80, seq=1, ack=2, flags=0x18, win=512, payload=b"", opts=b""):
    doff = (20 + len(opts)) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, win, 0, 0) + opts + payload


def udp(sport=5353, dport=53, payload=b"abcd"):
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ipv4(l4, proto=6, src="10.0.0.1", dst="10.0.0.2", opts=b"", frag=0, total=None):
    ihl = (20 + len(opts)) // 4
    tot = 20 + len(opts) + len(l4) if total is None else total
    s = bytes(int(x) for x in src.split("."))
    d = bytes(int(x) for x in dst.split("."))
    return struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, tot, 7, frag, 64, proto, 0, s, d) + opts + l4


def ipv6(l4, nh=6, exts=b"", src=bytes(range(16)), dst=bytes(range(16, 32))):
    return struct.pack("!IHBB16s16s", 6 << 28, len(exts) + len(l4), nh, 64, src, dst) + exts + l4


def eth(payload, ethertype=0x0800, tags=()):
    hdr = MAC_D + MAC_S
    for tpid, vid in tags:
        hdr += struct.pack("!HH", tpid, vid)
    return hdr + struct.pack("!H", ethertype) + payload


def kernel(frame, linktype=1, ts=123):
    row = parse_bytes(frame, ts, linktype)[0]
    return {f: int(row[f]) for f in FIELDS}


def check(frame, linktype=1):
    """Kernel row == twin row; returns the row."""
    got = kernel(frame, linktype)
    want = naive_parse(frame, 123, linktype)
    assert got == want
    return got


TCP4 = eth(ipv4(tcp(payload=b"hello")))


# --- scenarios ---------------------------------------------------------------

def test_ipv4_tcp_fields():
    r = check(TCP4)
    assert r["l3"] == L.L3_IPV4 and r["error"] == L.PERR_NONE and r["proto"] == 6
    assert r["src_lo"] == 0x0A000001 and r["dst_lo"] == 0x0A000002 and r["src_hi"] == 0
    assert (r["sport"], r["dport"], r["seq"], r["ack"], r["window"]) == (1234, 80, 1, 2, 512)
    assert r["tcp_flags"] == 0x18 and r["payload_len"] == 5 and r["payload_off"] == 54
    assert r["pflags"] == L.PF_MAC | L.PF_PORTS | L.PF_TCP
    assert r["dmac"] == 0x001122334455 and r["smac"] == 0x66778899AABB
    assert r["ip_len"] == 45 and r["caplen"] == len(TCP4) and r["ts"] == 123


def test_vlan():
    r = check(eth(ipv4(tcp()), tags=[(0x8100, 0x2064)]))
    assert r["vlan"] == 0x064 and r["l3"] == L.L3_IPV4 and r["sport"] == 1234


def test_qinq_outermost_vlan_kept():
    r = check(eth(ipv6(udp(), nh=17), 0x86DD, tags=[(0x88A8, 10), (0x8100, 20), (0x9100, 30)]))
    assert r["vlan"] == 10 and r["l3"] == L.L3_IPV6 and r["dport"] == 53 and r["payload_len"] == 4


def test_vlan_stack_too_deep_is_not_ip():
    r = check(eth(ipv4(tcp()), tags=[(0x8100, k) for k in range(1, 10)]))
    assert r["l3"] == L.L3_ETHER and r["error"] == L.PERR_NOT_IP and r["vlan"] == 1


def test_mpls_label_stack():
    labels = struct.pack("!I", (100 << 12) | 64) + struct.pack("!I", (200 << 12) | 0x100 | 64)
    r = check(eth(labels + ipv4(udp(), 17), 0x8847, tags=[(0x8100, 5)]))
    assert r["l3"] == L.L3_IPV4 and r["vlan"] == 5 and r["sport"] == 5353


def test_pppoe_session():
    ppp = struct.pack("!BBHHH", 0x11, 0, 1, 0, 0x0057)
    r = check(eth(ppp + ipv6(tcp(), 6), 0x8864))
    assert r["l3"] == L.L3_IPV6 and r["sport"] == 1234
    r = check(eth(struct.pack("!BBHHH", 0x11, 0, 1, 0, 0xC021) + b"\0" * 20, 0x8864))
    assert r["l3"] == L.L3_ETHER and r["error"] == L.PERR_NOT_IP


def test_arp_is_ether_not_ip():
    r = check(eth(b"\0" * 28, 0x0806))
    assert r["l3"] == L.L3_ETHER and r["error"] == L.PERR_NOT_IP and r["pflags"] == L.PF_MAC


def test_short_frame_unmatched():
    r = check(TCP4[:13])
    assert r["l3"] == L.L3_NONE and r["error"] == L.PERR_TRUNCATED and r["pflags"] == 0


def test_ipv4_options():
    r = check(eth(ipv4(tcp(payload=b"xy"), opts=b"\x01\x01\x01\x00" * 3)))
    assert r["l3"] == L.L3_IPV4 and r["sport"] == 1234 and r["payload_len"] == 2
    assert r["payload_off"] == 14 + 32 + 20


def test_ipv4_bad_ihl():
    f = bytearray(TCP4)
    f[14] = 0x44
    r = check(bytes(f))
    assert r["l3"] == L.L3_NONE and r["error"] == L.PERR_BAD_HEADER


def test_tcp_bad_data_offset():
    f = bytearray(TCP4)
    f[14 + 20 + 12] = 0x40
    r = check(bytes(f))
    assert r["l3"] == L.L3_NONE and r["error"] == L.PERR_BAD_HEADER


def test_ipv4_fragments():
    first = check(eth(ipv4(udp(payload=b"x" * 40), 17, frag=0x2000)))
    assert first["pflags"] & L.PF_MORE_FRAGS and first["sport"] == 5353 and not first["pflags"] & L.PF_FRAG
    later = check(eth(ipv4(b"y" * 24, 17, frag=0x2000 | 6)))
    assert later["pflags"] & L.PF_FRAG and later["sport"] == 0 and later["dport"] == 0
    assert not later["pflags"] & L.PF_PORTS and later["l3"] == L.L3_IPV4 and later["error"] == 0
    assert later["payload_len"] == 24


def test_ipv6_extension_headers():
    hop = bytes([60, 0]) + b"\0" * 6
    dst = bytes([43, 1]) + b"\0" * 14
    rt = bytes([51, 0]) + b"\0" * 6
    ah = bytes([6, 4]) + b"\0" * 22
    exts = hop + dst + rt + ah
    r = check(eth(ipv6(tcp(payload=b"abc"), 0, exts), 0x86DD))
    assert r["proto"] == 6 and r["sport"] == 1234 and r["payload_len"] == 3
    assert r["ip_len"] == 40 + len(exts) + 23
    assert r["src_hi"] == 0x0001020304050607 and r["src_lo"] == 0x08090A0B0C0D0E0F


def test_ipv6_no_next_header():
    r = check(eth(ipv6(b"", 59), 0x86DD))
    assert r["proto"] == 59 and r["l3"] == L.L3_IPV6 and r["error"] == 0


def test_ipv6_fragments():
    first = check(eth(ipv6(udp(), 44, bytes([17, 0, 0, 1]) + b"\0\0\0\x09"), 0x86DD))
    assert first["proto"] == 17 and first["pflags"] & L.PF_MORE_FRAGS and first["dport"] == 53
    later = check(eth(ipv6(b"z" * 16, 44, bytes([17, 0, 0, 0x10]) + b"\0\0\0\x09"), 0x86DD))
    assert later["proto"] == 17 and later["pflags"] & L.PF_FRAG and later["sport"] == 0


def test_ipv6_extension_walk_bounded():
    exts = b"".join(bytes([0, 0]) + b"\0" * 6 for _ in range(9))
    r = check(eth(ipv6(tcp(), 0, exts), 0x86DD))
    assert r["proto"] == 0 and r["l3"] == L.L3_IPV6 and not r["pflags"] & L.PF_PORTS


def test_icmp_type_code():
    r = check(eth(ipv4(bytes([8, 0, 0, 0, 0, 1, 0, 1]), 1)))
    assert r["pflags"] & L.PF_ICMP and (r["icmp_type"], r["icmp_code"]) == (8, 0)
    assert r["sport"] == 0 and r["dport"] == 0 and not r["pflags"] & L.PF_PORTS
    r = check(eth(ipv6(bytes([129, 0, 0, 0]), 58), 0x86DD))
    assert r["icmp_type"] == 129 and r["proto"] == 58
    r = check(eth(ipv4(b"\x08", 1)))
    assert r["l3"] == L.L3_IPV4 and not r["pflags"] & L.PF_ICMP


def test_sctp_and_other_protocols():
    r = check(eth(ipv4(struct.pack("!HHI", 2905, 2906, 0), 132)))
    assert (r["sport"], r["dport"]) == (2905, 2906) and r["pflags"] & L.PF_PORTS
    r = check(eth(ipv4(b"\0\1", 132)))
    assert r["sport"] == 0 and r["l3"] == L.L3_IPV4 and not r["pflags"] & L.PF_PORTS
    r = check(eth(ipv4(b"gre!" * 4, 47)))
    assert r["proto"] == 47 and r["l3"] == L.L3_IPV4 and r["error"] == 0


def test_ethernet_padding_does_not_change_lengths():
    small = eth(ipv4(tcp(flags=0x10)))
    padded = small + b"\0" * 6
    a, b = check(small), check(padded)
    assert b["payload_len"] == 0 and b["ip_len"] == 40 and b["caplen"] == 60
    assert {k: v for k, v in a.items() if k != "caplen" and k != "wirelen"} == \
           {k: v for k, v in b.items() if k != "caplen" and k != "wirelen"}


def test_snaplen_truncation_keeps_ip_lengths():
    full = eth(ipv4(tcp(payload=b"p" * 1000)))
    r = check(full[:70])
    assert r["payload_len"] == 1000 and r["ip_len"] == 1040 and r["error"] == 0


def test_truncated_at_every_byte_of_a_tcp_frame():
    full = eth(ipv4(tcp(payload=b"data"), opts=b"\x01" * 4), tags=[(0x8100, 7)])
    for cut in range(len(full) + 1):
        r = check(full[:cut])
        l4_end = 14 + 4 + 24 + 20
        if cut < 14:
            assert r["l3"] == L.L3_NONE and r["error"] == L.PERR_TRUNCATED
        elif cut < 18:
            assert r["l3"] == L.L3_ETHER and r["error"] == L.PERR_TRUNCATED
        elif cut < l4_end:
            assert r["l3"] == L.L3_NONE and r["error"] == L.PERR_TRUNCATED
        else:
            assert r["l3"] == L.L3_IPV4 and r["error"] == 0 and r["payload_len"] == 4


def test_garbage():
    rng = np.random.default_rng(7)
    for n in (0, 1, 13, 14, 40, 60, 200):
        for _ in range(50):
            check(rng.integers(0, 256, n, dtype=np.uint8).tobytes())


@pytest.mark.parametrize("linktype,prefix", [
    (101, b""), (12, b""), (14, b""), (228, b""),
    (113, b"\0\0\0\1\0\6" + MAC_S + b"\0\0" + b"\x08\x00"),
    (276, b"\x08\x00\0\0\0\0\0\2\0\1\0\6" + MAC_S + b"\0\0"),
    (0, struct.pack("<I", 2)), (0, struct.pack(">I", 2)), (108, struct.pack(">I", 2)),
])
def test_link_types_ipv4(linktype, prefix):
    r = check(prefix + ipv4(tcp()), linktype)
    assert r["l3"] == L.L3_IPV4 and r["sport"] == 1234 and not r["pflags"] & L.PF_MAC


@pytest.mark.parametrize("linktype,prefix", [
    (101, b""), (229, b""), (0, struct.pack("<I", 30)), (0, struct.pack("<I", 24)),
    (108, struct.pack(">I", 28)),
    (113, b"\0\0\0\1\0\6" + MAC_S + b"\0\0" + b"\x86\xdd"),
])
def test_link_types_ipv6(linktype, prefix):
    r = check(prefix + ipv6(udp(), 17), linktype)
    assert r["l3"] == L.L3_IPV6 and r["dport"] == 53


def test_unknown_link_type_and_version_mismatch():
    assert check(ipv4(tcp()), 147)["error"] == L.PERR_LINKTYPE
    assert check(ipv6(tcp()), 228)["error"] == L.PERR_BAD_HEADER
    assert check(b"\x50" + b"\0" * 30, 101)["error"] == L.PERR_BAD_HEADER
    assert check(struct.pack("<I", 7) + ipv4(tcp()), 0)["error"] == L.PERR_NOT_IP


def test_row_reuse_clears_every_field():
    out = np.zeros(2, L.PKT_DTYPE)
    buf = np.frombuffer(TCP4 + b"\x00" * 3, np.uint8).copy()
    offs = np.array([0, len(TCP4)], np.int64)
    lens = np.array([len(TCP4), 3], np.int64)
    links = np.array([1, 1], np.int64)
    tss = np.array([5, 6], np.int64)
    out[:] = np.frombuffer(b"\xff" * out.nbytes, L.PKT_DTYPE)
    parse_batch(buf, offs, lens, lens, links, tss, out)
    assert kernel(TCP4, ts=5) == {f: int(out[0][f]) for f in FIELDS}
    assert out[1]["l3"] == 0 and out[1]["error"] == L.PERR_TRUNCATED and out[1]["src_lo"] == 0
    assert out[1]["ts"] == 6 and not out["_pad"].any()


def test_parse_batch_never_reads_past_caplen():
    # Two frames back to back: the first one's caplen stops inside its TCP header.
    buf = np.frombuffer(TCP4 + TCP4, np.uint8).copy()
    out = np.zeros(1, L.PKT_DTYPE)
    one = np.array([1], np.int64)
    parse_batch(buf, np.array([0], np.int64), np.array([40], np.int64), one * 40, one,
                one, out)
    assert out[0]["error"] == L.PERR_TRUNCATED


# --- properties --------------------------------------------------------------

LINKTYPES = st.sampled_from([1, 1, 1, 0, 9, 10, 12, 14, 50, 51, 101, 104, 105, 108, 113, 127,
                             204, 228, 229, 239, 276, 147])

PREFIXES = [
    b"", eth(b"", 0x0800)[:14], eth(b"", 0x86DD)[:14], eth(b"", 0x8100)[:14],
    eth(b"", 0x8847)[:14], eth(b"", 0x8864)[:14],
    TCP4[:34], eth(ipv6(b"", 0), 0x86DD), eth(ipv6(b"", 44), 0x86DD), eth(ipv4(b"", 17))[:34],
    eth(ipv4(b"", 1))[:34], eth(ipv4(b"", 132))[:34], eth(ipv4(b"", 6, frag=0x2000))[:34],
]


#: (link type, bytes that reach into its headers): noise after them exercises the later checks.
_WLAN = b"\x88\x03\0\0" + MAC_D + MAC_S + MAC_D + b"\0\0" + MAC_S
_SNAP = b"\xaa\xaa\x03\0\0\0"
LINK_PREFIXES = [
    (9, b"\xff\x03\x00\x21"), (9, b"\x21"), (9, b"\x57"), (9, b"\xff\x03\x02\x81"), (9, b"\xff\x03"),
    (50, b"\xff\x03\x00"), (50, b"\x0f\x00\x08\x00"), (50, b"\x8f"), (204, b"\x01\xff\x03\x00\x21"),
    (51, b"\x11\x00\x00\x01\x00\x30\x00"), (104, b"\x0f\x00\x08\x00"), (104, b"\x0f\x00\x88"),
    (10, b"\x50" + MAC_D + MAC_S + _SNAP), (10, b"\x50" + MAC_D + MAC_S + b"\xaa\xaa"),
    (105, _WLAN), (105, _WLAN[:24]), (105, _WLAN + b"\x80\x00"),
    (105, b"\x88\x81" + _WLAN[2:24] + b"\0\0"),
    (105, b"\x08\x01" + _WLAN[2:24] + _SNAP), (105, b"\x08\x41" + _WLAN[2:24]),
    (127, b"\0\0\x08\0\0\0\0\0" + _WLAN), (127, b"\0\0\x08\0\0\0\0\0\x08\x02"), (127, b"\0\0"),
    (239, b"\x02\0\0\0"), (239, b"\x0a\0\0\0\x08\0\x01\0"), (239, b"\x02\0\0\0\0\x08\0\x01"),
    (239, b"\x02\0\0\0\x05\0\x0a\0"), (239, b"\x02\0\0\0\x20\0\x09\0"),
    (1, eth(b"", 0x88E7)[:14]), (1, eth(b"\0\0\0\0" + MAC_D + MAC_S, 0x88E7)),
    (1, eth(b"", 0x8926)[:14]), (1, eth(b"", 0x8903)[:14]), (1, eth(b"\0\0" + MAC_D + MAC_S, 0x8903)),
    (1, eth(b"", 0x0040)[:14]), (1, eth(_SNAP, 0x0040)), (1, eth(b"\xaa\xaa\x00", 0x0040)),
    (1, eth(b"", 0x8100)[:14] + b"\0\x05\x00\x40" + _SNAP),
    (1, eth(b"", 0x8864)[:14] + b"\x11\0\0\1\0\0\x02\x81"),
    (113, b"\0\0\0\1\0\6" + MAC_S + b"\0\0" + b"\x00\x04"),
]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(link=st.sampled_from(LINK_PREFIXES), data=st.binary(max_size=100))
def test_link_layer_prefix_then_noise_match_twin(link, data):
    linktype, prefix = link
    check(prefix + data, linktype)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=120), linktype=LINKTYPES)
def test_arbitrary_bytes_match_twin(data, linktype):
    check(data, linktype)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(PREFIXES), data=st.binary(max_size=100))
def test_structured_prefix_then_noise_match_twin(prefix, data):
    check(prefix + data, 1)


@settings(max_examples=300, deadline=None)
@given(frame=st.sampled_from([TCP4, eth(ipv6(udp(), 17), 0x86DD), eth(ipv4(tcp()), tags=[(0x8100, 3)])]),
       pos=st.integers(0, 80), val=st.integers(0, 255), cut=st.integers(0, 90))
def test_mutated_frames_match_twin(frame, pos, val, cut):
    f = bytearray(frame)
    if pos < len(f):
        f[pos] = val
    check(bytes(f[:cut]), 1)
