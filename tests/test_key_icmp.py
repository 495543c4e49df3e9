"""key_icmp: ICMP and ICMPv6 keyed by type and paired type (or code), as Zeek keys them."""

from __future__ import annotations

import os
import sys

import numpy as np
from flowscope import FlowTracker, TrackerConfig, layout
from flowscope.community_id import icmp_port_equivalents
from flowscope.pcap import parse_bytes
from test_bpf_kernel import eth, icmp, ipv4, ipv6
from test_context import _jsonl

SEC = 10**9
A, B = "10.0.0.1", "10.0.0.2"
A6, B6 = "fd00::1", "fd00::2"


def _icmp6(t, c=0):
    return icmp(t, c)


def _records(frames, cfg):
    t = FlowTracker(config=cfg, events="ended")
    rows = np.concatenate([parse_bytes(f, (i + 1) * SEC) for i, f in enumerate(frames)])
    out = [r.copy() for r in t.process(rows)] + [r.copy() for r in t.process_finish()]
    return np.concatenate(out), t.stats


def _flows(frames, key_icmp):
    recs, stats = _records(frames, TrackerConfig(key_icmp=key_icmp))
    rows = _jsonl(recs)
    return sorted((r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"],
                   r["init_pkts"], r["resp_pkts"]) for r in rows), stats


# one exchange between the same two hosts: an echo, an unreachable each way, a timestamp
# exchange, and a one-way message (redirect) twice
EXCHANGE = [
    eth(ipv4(A, B, 1, icmp(8, 0))), eth(ipv4(B, A, 1, icmp(0, 0))),
    eth(ipv4(B, A, 1, icmp(3, 3))), eth(ipv4(A, B, 1, icmp(3, 3))),
    eth(ipv4(A, B, 1, icmp(13, 0))), eth(ipv4(B, A, 1, icmp(14, 0))),
    eth(ipv4(B, A, 1, icmp(5, 1))), eth(ipv4(B, A, 1, icmp(5, 1))),
    eth(ipv4(A, B, 1, icmp(8, 0))),
    eth(ipv6(A6, B6, 58, _icmp6(128)), et=0x86DD), eth(ipv6(B6, A6, 58, _icmp6(129)), et=0x86DD),
    eth(ipv6(A6, B6, 58, _icmp6(135)), et=0x86DD), eth(ipv6(B6, A6, 58, _icmp6(136)), et=0x86DD),
    eth(ipv6(B6, A6, 58, _icmp6(1, 4)), et=0x86DD),
]


def test_reference_keys_join_every_icmp_message_of_two_hosts():
    flows, _ = _flows(EXCHANGE, False)
    assert flows == [(A, 0, B, 0, 4, 5), (A6, 0, B6, 0, 2, 3)]


def test_key_icmp_keys_as_zeek():
    flows, stats = _flows(EXCHANGE, True)
    assert flows == sorted([
        (B, 3, A, 3, 1, 1),  # the unreachables: (type, code), one flow both ways
        (A, 8, B, 0, 2, 1),  # echo request 8 <-> reply 0
        (A, 13, B, 14, 1, 1),  # timestamp 13 <-> 14
        (B, 5, A, 1, 2, 0),  # redirect: one-way, (type, code)
        (A6, 128, B6, 129, 1, 1),
        (A6, 135, B6, 136, 1, 1),
        (B6, 1, A6, 4, 1, 0),
    ])
    assert stats.packets_matched == len(EXCHANGE)


def test_pair_tables_agree_with_zeek_counterparts():
    """The engine's table (layout.icmp_pair_table) is the one Community ID uses."""
    t = layout.icmp_pair_table()
    for proto, row in ((1, 0), (58, 1)):
        for ty in range(256):
            sp, dp, one_way = icmp_port_equivalents(proto, ty, 7)
            assert sp == ty and (dp == 7) == one_way or dp == int(t[row, ty])
            assert one_way == (t[row, ty] < 0)
    assert t[0, 8] == 0 and t[0, 0] == 8 and t[1, 146] == -1


def test_key_icmp_fragments_join_their_echo():
    """A fragmented echo request: its non-first fragment has no ICMP header, and is keyed
    with the first fragment's type ports through the fragment table (either order)."""
    body = icmp(8, 0, payload=bytes(range(32)))
    first = eth(ipv4(A, B, 1, body[:24], mf=True))
    rest = eth(ipv4(A, B, 1, body[24:], frag=3))
    reply = eth(ipv4(B, A, 1, icmp(0, 0, payload=bytes(range(32)))))
    for order in ([first, rest, reply], [rest, first, reply]):
        flows, stats = _flows(order, True)
        assert flows == [(A, 8, B, 0, 2, 1)], order
        assert stats.packets_matched == 3 and stats.fragments_keyed == 1


GRE = "zeek__tunnels__gre-sample.pcap"


def test_gre_sample_as_zeek_only_with_key_icmp(shared_pcaps):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
    import zeek_compare

    cap = str(shared_pcaps / GRE)
    base = str(shared_pcaps / "expected" / (GRE + ".zeek.core.tunnels.gre.conn.log"))
    zeek = zeek_compare.compare(cap, base, zeek_compare.run_flowscope(cap, True))
    assert zeek.conns == zeek.matched == 7 and not zeek.diffs
    ref = zeek_compare.compare(cap, base, zeek_compare.run_flowscope(cap, False))
    # the reference keys make one flow of Zeek's echo and port-unreachable connections
    assert ref.conns == 7 and ref.matched == 6
    hosts = {"66.59.111.190", "172.28.2.3"}
    assert ref.diffs and all(d[0][0] == "icmp" and {d[0][1], d[0][3]} == hosts
                             for d in ref.diffs)


def test_a_callers_rows_are_left_as_they_were():
    """key_icmp keys ICMP rows by ports the engine sets: on a copy of a caller's rows,
    unless the caller hands them over as scratch (a buffer it refills next)."""
    rows = np.concatenate([parse_bytes(f, (i + 1) * SEC) for i, f in enumerate(EXCHANGE)])
    plain, pnames = layout.split_rows(rows)
    before = plain.copy()
    t = FlowTracker(config=TrackerConfig(key_icmp=True), events="ended")
    for _ in t.process(plain, pnames):
        pass
    assert (plain == before).all()
    for _ in t.process(plain):  # no DNS names: the rows may come without their array
        pass
    assert (plain == before).all()
    t = FlowTracker(config=TrackerConfig(key_icmp=True), events="ended")
    for _ in t.process(plain, pnames, scratch=True):
        pass
    icmp = (before["pflags"] & layout.PF_ICMP) != 0
    assert icmp.all() and (plain["pflags"][icmp] & layout.PF_PORTS != 0).all()
    assert plain["sport"].tolist() == before["icmp_type"].tolist()
