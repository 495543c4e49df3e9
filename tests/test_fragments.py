"""IP fragments in their datagram's flow, and TCP/UDP headers cut short (offline engine).

Non-first fragments carry no ports; the engine keys them with the ports of their
datagram's first fragment (fragment table, ``flowscope._kernels.frag``). Scenarios on
frames through the parser, then the engine against its plain-Python twin.
"""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowscope import FlowTracker, TrackerConfig, layout
from flowscope.pcap import parse_bytes
from naive import NaiveTracker, records_to_tuples
from naive_parse import naive_parse
from pktgen import pkt, to_array
from test_parse import eth, ipv4, ipv6, kernel, tcp, udp

SEC = 10**9


def frag4(data: bytes, off: int, mf: bool, proto=17, ident=0x1234, src="10.0.0.1",
          dst="10.0.0.2"):
    """An IPv4 fragment carrying ``data`` at byte offset ``off``."""
    frame = eth(ipv4(data, proto=proto, src=src, dst=dst, frag=(0x2000 if mf else 0) | off // 8))
    ip = bytearray(frame[14:])
    ip[4:6] = struct.pack("!H", ident)
    return bytes(frame[:14] + ip)


def frag6(data: bytes, off: int, mf: bool, nh=6, ident=0xA1BC6572):
    fh = struct.pack("!BBHI", nh, 0, off | int(mf), ident)
    return eth(ipv6(data, nh=44, exts=fh), 0x86DD)


def split(l4: bytes, size: int):
    """(data, offset, more) pieces of an L4 datagram in ``size``-byte fragments."""
    out = []
    for off in range(0, len(l4), size):
        out.append((l4[off:off + size], off, off + size < len(l4)))
    return out


def rows(frames, step=SEC // 10):
    arr = np.concatenate([parse_bytes(f, (i + 1) * step, 1) for i, f in enumerate(frames)])
    return arr


def track(arr, **cfg):
    t = FlowTracker(events="ended", config=TrackerConfig(**cfg))
    ended = t.track_batch(arr) + t.finish()
    return t, ended


UDP_DGRAM = udp(40000, 53, b"x" * 100)  # 108 bytes of L4
FRAGS = [frag4(d, o, m) for d, o, m in split(UDP_DGRAM, 48)]  # 3 fragments


def test_parser_fills_fragment_fields():
    r0, r1, r2 = (kernel(f) for f in FRAGS)
    assert [r["frag_id"] for r in (r0, r1, r2)] == [0x1234] * 3
    assert [r["frag_off"] for r in (r0, r1, r2)] == [0, 48, 96]
    assert [r["frag_mf"] for r in (r0, r1, r2)] == [1, 1, 0]
    assert r0["pflags"] & layout.PF_MORE_FRAGS and r0["pflags"] & layout.PF_PORTS
    assert r1["pflags"] & layout.PF_FRAG and not r1["pflags"] & layout.PF_PORTS
    for f in FRAGS:
        assert kernel(f) == naive_parse(f, 123)
    f6 = frag6(b"y" * 64, 64, False)
    r6 = kernel(f6)
    assert (r6["frag_id"], r6["frag_off"], r6["frag_mf"]) == (0xA1BC6572, 64, 0)
    assert r6 == naive_parse(f6, 123)


def test_fragments_in_order_are_one_flow():
    t, ended = track(rows(FRAGS))
    (e,) = ended
    k = e.key()
    assert (k.a_port, k.b_port) == (53, 40000) or (k.a_port, k.b_port) == (40000, 53)
    assert e.stats.packets == 3 and e.stats.bytes == sum(len(f) for f in FRAGS)
    s = t.stats
    assert (s.fragments_keyed, s.fragments_held, s.fragments_orphaned) == (2, 0, 0)
    assert s.packets_unmatched == 0 and s.packets_matched == 3


def test_fragments_out_of_order_after_the_first():
    t, ended = track(rows([FRAGS[0], FRAGS[2], FRAGS[1]]))
    (e,) = ended
    assert e.stats.packets == 3


def test_late_first_fragment_takes_the_held_fragments():
    t, ended = track(rows([FRAGS[2], FRAGS[1], FRAGS[0]]))
    (e,) = ended
    assert e.stats.packets == 3 and e.stats.bytes == sum(len(f) for f in FRAGS)
    assert e.key().b_port in (53, 40000)
    # the flow starts at its first fragment, the packet that makes it known
    assert e.stats.started.to_ns() == 3 * SEC // 10
    s = t.stats
    assert (s.fragments_keyed, s.fragments_held, s.fragments_orphaned) == (2, 0, 0)
    assert s.packets_matched == 3 and s.packets_ended == 3


def test_held_fragments_while_waiting_are_neither_matched_nor_unmatched():
    t = FlowTracker(events="ended")
    t.track_batch(rows([FRAGS[1], FRAGS[2]]))
    s = t.stats
    assert (s.fragments_held, s.packets_matched, s.packets_unmatched) == (2, 0, 0)
    t.finish()
    s = t.stats
    assert (s.fragments_held, s.fragments_orphaned, s.packets_unmatched) == (0, 2, 2)


def test_fragment_timeout():
    # the first fragment, then the rest 2 s later with a 1 s fragment timeout: orphaned
    arr = rows(FRAGS, step=2 * SEC)
    t, ended = track(arr, fragment_timeout=1.0)
    (e,) = ended
    assert e.stats.packets == 1
    s = t.stats
    assert s.fragments_orphaned == 2 and s.packets_unmatched == 2
    # within the default 30 s they are one flow
    _, ended = track(arr)
    assert [e.stats.packets for e in ended] == [3]


def test_first_fragment_after_the_timeout_orphans_the_held_ones():
    arr = rows([FRAGS[1], FRAGS[0], FRAGS[2]], step=2 * SEC)
    t, ended = track(arr, fragment_timeout=1.0)
    assert [e.stats.packets for e in ended] == [1]
    assert t.stats.fragments_orphaned == 2


def test_two_datagrams_interleaved():
    a = [frag4(d, o, m, ident=1) for d, o, m in split(UDP_DGRAM, 48)]
    b = [frag4(d, o, m, ident=2) for d, o, m in split(udp(40001, 53, b"z" * 90), 48)]
    t, ended = track(rows([a[0], b[1], a[1], b[0], a[2], b[2]]))
    got = sorted((sorted((e.key().a_port, e.key().b_port)), e.stats.packets) for e in ended)
    assert got == [([53, 40000], 3), ([53, 40001], 3)]


def test_ipv6_tcp_fragments_one_flow():
    seg = tcp(12345, 8080, flags=0x10, payload=b"A" * 120)
    pieces = split(seg, 64)
    frames = [frag6(d, o, m) for d, o, m in pieces]
    for order in ([0, 1, 2], [2, 1, 0], [1, 0, 2]):
        t, ended = track(rows([frames[i] for i in order]))
        (e,) = ended
        assert e.stats.packets == 3 and {e.key().a_port, e.key().b_port} == {12345, 8080}


def test_icmp_fragments_share_the_ports_zero_flow():
    icmp = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"p" * 100
    frames = [frag4(d, o, m, proto=1) for d, o, m in split(icmp, 48)]
    t, ended = track(rows(frames[::-1]))
    assert [e.stats.packets for e in ended] == [3]
    assert t.stats.fragments_held == 0 and t.stats.fragments_keyed == 0


def test_ip_pair_ignores_the_table():
    from flowscope.keys import IpPair
    t = FlowTracker(IpPair(), events="ended")
    ended = t.track_batch(rows([FRAGS[2], FRAGS[0], FRAGS[1]])) + t.finish()
    assert [e.stats.packets for e in ended] == [3] and t.stats.fragments_held == 0


# --- TCP / UDP headers cut short -----------------------------------------------

def test_tcp_header_cut_short_is_an_ip_level_flow():
    full = eth(ipv4(tcp(payload=b"hello")))
    short = full[:14 + 20 + 12]  # 12 of the 20 TCP header bytes captured
    r = kernel(short)
    assert r == naive_parse(short, 123)
    assert r["l3"] == 4 and r["error"] == layout.PERR_L4_SHORT and r["sport"] == 0
    assert not r["pflags"] & (layout.PF_PORTS | layout.PF_TCP)
    t, ended = track(rows([short]))
    (e,) = ended
    assert (e.key().a_port, e.key().b_port, int(e.key().proto)) == (0, 0, 6)
    assert t.stats.truncated_l4 == 1 and t.stats.packets_unmatched == 0


def test_udp_without_room_by_ip_length():
    # the IP total length leaves 4 bytes for UDP although 8 + payload were captured
    frame = eth(ipv4(udp(payload=b"abcd"), proto=17, total=24))
    r = kernel(frame)
    assert r == naive_parse(frame, 123)
    assert r["error"] == layout.PERR_L4_SHORT and r["l3"] == 4 and r["payload_len"] == 4
    t, _ = track(rows([frame]))
    assert t.stats.truncated_l4 == 1


# --- the engine against its twin -------------------------------------------------

def _frag_pkt(ts, d, kind, ident, proto, length):
    src, dst = ("10.0.0.1", "10.0.0.2") if d == 0 else ("10.0.0.2", "10.0.0.1")
    sp, dp = (1000, 53) if d == 0 else (53, 1000)
    p = pkt(ts, src, sp, dst, dp, proto=proto, flags=0x10 if proto == 6 else None,
            payload=length // 2, length=length)
    p["ip_len"] = length - 14
    p["frag_id"] = ident
    if kind == 1:  # first fragment
        p["pflags"] |= layout.PF_MORE_FRAGS
        p["frag_mf"] = 1
    elif kind == 2:  # non-first
        p["pflags"] = layout.PF_MAC | layout.PF_FRAG
        p["pflags"] &= ~(layout.PF_PORTS | layout.PF_TCP)
        p["sport"] = p["dport"] = 0
        p["tcp_flags"] = 0
        p["frag_off"] = 64
    return p


frag_packet = st.builds(
    _frag_pkt, ts=st.integers(0, 4), d=st.integers(0, 1), kind=st.sampled_from([0, 1, 2, 2]),
    ident=st.integers(0, 2), proto=st.sampled_from([17, 6, 1]), length=st.integers(40, 1500))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frag_packet, max_size=40), st.sampled_from([1, 3, 30]))
def test_engine_fragments_equal_naive_twin(pkts, tmo):
    t = 0
    for p in pkts:
        t += p["ts"] * SEC
        p["ts"] = t
    fast = FlowTracker(config=TrackerConfig(fragment_timeout=tmo, udp_timeout=1000,
                                            tcp_timeout=1000, icmp_timeout=1000))
    naive = NaiveTracker(timeouts={k: 1000 * SEC for k in ("tcp", "udp", "icmp", "other")},
                         frag_timeout=tmo * SEC)
    got = []
    for recs in fast.process(to_array(pkts)):
        got += records_to_tuples(recs)
    for recs in fast.process_finish():
        got += records_to_tuples(recs)
    want = [e for p in pkts for e in naive.track(p)] + naive.finish()
    assert got == want
    s = fast.stats
    assert (s.packets_matched, s.bytes_matched, s.packets_unmatched) == (
        naive.matched_pkts, naive.matched_bytes, naive.unmatched)
    assert (s.fragments_keyed, s.fragments_held, s.fragments_orphaned) == (
        naive.frag_keyed, naive.frag_held, naive.frag_orphans)
    assert s.packets_matched + s.packets_unmatched == len(pkts)
    assert s.packets_ended == s.packets_matched
