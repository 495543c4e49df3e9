"""The kernel's DNS records (FS_EVR_DNS): which packets send one, the payload bytes they carry,
and the same DNS fields through the live rows as through the offline parser.

Root + BPF (BPF_PROG_TEST_RUN on the loaded programs; skipped without, failed under
FLOWSCOPE_REQUIRE_BPF=1).
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from flowscope import FlowTracker
from flowscope import layout as EL
from flowscope.pcap import parse_bytes
from flowscope.sensor import layout as L
from test_bpf_kernel import ACK, PSH, SYN, eth, h, ipv4, mod, ring, tcp, udp  # noqa: F401
from test_dns import answer_a, dns_msg

DNS = L.EventReason.DNS


def udp4(payload, sport=40000, dport=53, src="10.0.0.1", dst="10.0.0.2") -> bytes:
    return eth(ipv4(src, dst, 17, udp(sport, dport, payload)))


def tcp4(payload, sport=40000, dport=53, src="10.0.0.1", dst="10.0.0.2", flags=PSH | ACK):
    return eth(ipv4(src, dst, 6, tcp(sport, dport, flags, payload=payload)))


@pytest.mark.parametrize("hook", ["xdp", "tc"])
def test_udp_query_and_response_carry_their_message(h, hook):
    q = dns_msg(tid=7)
    a = dns_msg(tid=7, qr=True, answers=1, body=answer_a())
    h.run(udp4(q), hook)
    h.run(udp4(a, 53, 40000, "10.0.0.2", "10.0.0.1"), hook)
    ev = h.events()
    assert [bool(e["reason"] & DNS) for e in ev] == [True, True]
    for e, m in zip(ev, (q, a)):
        assert int(e["dns_len"]) == len(m)
        assert bytes(e["dns"][: len(m)]) == m and not e["dns"][len(m):].any()
    assert h.counters()["dns"] == 2


def test_tcp_message_carries_its_length_prefix(h):
    m = dns_msg(tid=9)
    pay = struct.pack("!H", len(m)) + m
    h.run(tcp4(b"", flags=SYN))
    h.run(tcp4(pay))
    ev = h.events()
    assert not ev[0]["reason"] & DNS  # no payload: no DNS record
    assert ev[1]["reason"] & DNS and bytes(ev[1]["dns"][: len(pay)]) == pay


def test_long_message_is_cut_to_the_record(h):
    m = dns_msg(body=b"\0" * 600)
    h.run(udp4(m))
    (e,) = h.events()
    assert int(e["dns_len"]) == L.FS_DNS_BYTES and bytes(e["dns"]) == m[: L.FS_DNS_BYTES]


def test_short_payloads_and_other_ports_send_none(h):
    h.run(udp4(b"x" * 11))  # cannot hold a header: only the flow's first-packet event
    h.run(udp4(dns_msg(), 40000, 5353))
    h.run(udp4(dns_msg(), 40000, 5353))
    ev = h.events()
    assert len(ev) == 2 and not any(e["reason"] & DNS for e in ev)
    assert h.counters()["dns"] == 0


def test_every_dns_packet_sends_a_record(h):
    for k in range(5):
        h.run(udp4(dns_msg(tid=k)))
    ev = h.events()
    assert len(ev) == 5 and all(e["reason"] & DNS for e in ev)


def _frames():
    """Queries and responses over UDP and TCP, good and damaged, long and short."""
    out = []
    for i, (q, a) in enumerate([
        (dns_msg(tid=1, qtype=28), dns_msg(tid=1, qr=True, answers=1, body=answer_a())),
        (dns_msg(tid=2, name="a." * 60 + "b"), dns_msg(tid=2, qr=True, rcode=3)),
        (dns_msg(tid=3)[:20], dns_msg(tid=3, qr=True)[:12]),
        (struct.pack("!HHHHHH", 4, 0, 1, 0, 0, 0) + b"\xc0\x0c\0\1\0\1",
         dns_msg(tid=4, qr=True, name="x" * 63 + "." + "y" * 63 + "." + "z" * 63)),
    ]):
        sport = 41000 + i
        out.append(udp4(q, sport))
        out.append(udp4(a, 53, sport, "10.0.0.2", "10.0.0.1"))
    q, a = dns_msg(tid=5), dns_msg(tid=5, qr=True, answers=2, body=answer_a() * 2)
    out.append(tcp4(struct.pack("!H", len(q)) + q, 42000))
    out.append(tcp4(struct.pack("!H", len(a)) + a, 53, 42000, "10.0.0.2", "10.0.0.1"))
    q = dns_msg(tid=6, body=b"\0" * 400)  # longer than the record: the question fits
    out.append(tcp4(struct.pack("!H", 12) + q, 42001))  # a length shorter than the message
    out.append(udp4(q, 42002))
    return out


def _dns_by_key(tracker, recs):
    recs = np.concatenate([r.copy() for r in recs]) if recs else np.zeros(0, EL.EVENT_DTYPE)
    out = {}
    for r in recs:
        out[tuple(int(w) for w in r["key"])] = (
            int(r["dns"]), bytes(r["dns_qname"][: int(r["dns_qlen"])]), int(r["dns_qtype"]),
            int(r["dns_rcode"]), int(r["dns_answers"]), int(r["dns_rtt"]) > 0)
    return out


@pytest.mark.parametrize("hook", ["xdp", "tc"])
def test_dns_fields_live_equal_offline(h, hook):
    from flowscope.sensor.rows import rows_from_events, sync_rows

    frames = _frames()
    for f in frames:
        h.run(f, hook)
    ev = h.events()
    keys, vals = h.flows()
    live = FlowTracker(events="ended")
    got = _dns_by_key(live, [r for r in (live.process(rows_from_events(ev, 0, {})),
                                         live.process(sync_rows(keys, vals, 0)),
                                         live.process_finish()) for r in r])
    off = FlowTracker(events="ended")
    arr = np.concatenate([parse_bytes(f, (i + 1) * 1000, 1) for i, f in enumerate(frames)])
    want = _dns_by_key(off, [r for r in (off.process(arr), off.process_finish()) for r in r])
    assert got == want
    assert sum(1 for v in want.values() if v[0] & EL.EVD_RTT) == 5
    assert live.stats.dns_messages == off.stats.dns_messages == len(frames)
