"""DNS per flow: the parser (against its plain-Python twin), the engine's query/response
matching, and the fields in every output format."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowscope import FlowTracker, TrackerConfig
from flowscope import layout as L
from flowscope.output.eve import EveWriter
from flowscope.output.jsonl import JsonlWriter
from flowscope.output.zeek import ZeekJsonWriter, ZeekTsvWriter
from flowscope.pcap import parse_bytes
from naive_dns import naive_dns
from naive_jsonl import NaiveJsonlWriter
from naive_parse import naive_parse
from test_parse import FIELDS, eth, ipv4, ipv6, tcp, udp

DNS_KEYS = ("dns_flags", "dns_rcode", "dns_id", "dns_qtype", "dns_answers", "dns_qlen")


def qname(name: str) -> bytes:
    if name == ".":
        return b"\0"
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


def dns_msg(tid=0x1234, qr=False, rcode=0, name="www.example.com", qtype=1, answers=0,
            body=b"", qd=1) -> bytes:
    flags = (0x8000 if qr else 0) | 0x0100 | rcode
    q = qname(name) + struct.pack("!HH", qtype, 1) if qd else b""
    return struct.pack("!HHHHHH", tid, flags, qd, answers, 0, 0) + q + body


def answer_a(addr=b"\x0a\0\0\x01") -> bytes:
    return b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + addr


def udp_dns(msg, sport=40000, dport=53, src="10.0.0.1", dst="10.0.0.2") -> bytes:
    return eth(ipv4(udp(sport, dport, msg), 17, src=src, dst=dst))


def tcp_dns(msg, sport=40000, dport=53, src="10.0.0.1", dst="10.0.0.2", prefix=True) -> bytes:
    pay = (struct.pack("!H", len(msg)) + msg) if prefix else msg
    return eth(ipv4(tcp(sport, dport, flags=0x18, payload=pay), 6, src=src, dst=dst))


def row(frame: bytes) -> dict:
    r = parse_bytes(frame, 7)[0]
    d = {f: int(r[f]) for f in DNS_KEYS}
    d["dns_qname"] = bytes(r["dns_qname"][: d["dns_qlen"]])
    return d


def check(frame: bytes) -> dict:
    """Kernel row == twin row, DNS name included."""
    r = parse_bytes(frame, 123)[0]
    got = {f: int(r[f]) for f in FIELDS}
    assert got == naive_parse(frame, 123)
    return row(frame)


def test_udp_query_fields():
    r = check(udp_dns(dns_msg(qtype=28)))
    assert r["dns_flags"] == L.DNS_VALID | L.DNS_QUESTION
    assert r["dns_id"] == 0x1234 and r["dns_qtype"] == 28 and r["dns_qname"] == b"www.example.com"


def test_udp_response_fields():
    m = dns_msg(qr=True, rcode=3, answers=2, body=answer_a() + answer_a())
    r = check(udp_dns(m, 53, 40000, "10.0.0.2", "10.0.0.1"))
    assert r["dns_flags"] == L.DNS_VALID | L.DNS_QR | L.DNS_QUESTION
    assert r["dns_rcode"] == 3 and r["dns_answers"] == 2


def test_tcp_length_prefix():
    r = check(tcp_dns(dns_msg(name="a.b", qtype=15)))
    assert r["dns_flags"] == L.DNS_VALID | L.DNS_QUESTION | L.DNS_TCP
    assert r["dns_qname"] == b"a.b" and r["dns_qtype"] == 15


def test_tcp_length_prefix_shorter_than_message_cuts_it():
    m = dns_msg()
    frame = eth(ipv4(tcp(40000, 53, payload=struct.pack("!H", 14) + m), 6))
    r = check(frame)
    assert r["dns_flags"] == L.DNS_VALID | L.DNS_TCP  # question beyond the stated length


def test_other_ports_are_not_parsed():
    assert check(udp_dns(dns_msg(), 5353, 5353))["dns_flags"] == 0


def test_compressed_question_name():
    # header, then the question's name points back into ... nothing before it: refused
    m = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c" + struct.pack("!HH", 1, 1)
    r = check(udp_dns(m))
    assert r["dns_flags"] == L.DNS_VALID  # a pointer to itself is not followed


def test_compression_pointer_backwards_is_followed():
    # the question's name continues through a pointer into the header's count fields,
    # which spell "\x01y\x01x\x00" at offset 6: "www" + pointer 6 = "www.y.x"
    m = (struct.pack("!HHH", 9, 0, 1) + b"\x01y\x01x\x00\x00" + b"\x03www\xc0\x06"
         + struct.pack("!HH", 16, 1))
    r = check(udp_dns(m))
    assert r["dns_qname"] == b"www.y.x" and r["dns_qtype"] == 16


def test_forward_pointer_is_refused():
    fwd = (struct.pack("!HHHHHH", 9, 0, 1, 0, 0, 0) + b"\x03ftp\xc0\x12\x03abc\x00"
           + struct.pack("!HH", 1, 1))
    assert check(udp_dns(fwd))["dns_flags"] == L.DNS_VALID


def test_pointer_loops_and_chains_end():
    # two pointers pointing at each other, and a long chain of jumps
    loop = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0e\xc0\x0c" + b"\0" * 4
    assert check(udp_dns(loop))["dns_flags"] == L.DNS_VALID


def test_every_byte_mutation_of_a_compressed_response_matches_twin():
    base = dns_msg(qr=True, answers=1, body=answer_a())
    for pos in range(len(base)):
        for val in (0, 0x3F, 0xC0, 0xC0 | 0x0C, 0xFF):
            m = bytearray(base)
            m[pos] = val
            check(udp_dns(bytes(m)))


def test_truncated_at_every_byte():
    m = dns_msg(qr=True, answers=1, body=answer_a())
    full = udp_dns(m)
    for cut in range(len(full) + 1):
        check(full[:cut])
    for cut in range(len(m) + 1):
        r = check(udp_dns(m[:cut]))
        if cut < 12:
            assert r["dns_flags"] == 0
        elif cut < 12 + len(qname("www.example.com")) + 4:
            assert r["dns_flags"] == L.DNS_VALID | L.DNS_QR
        else:
            assert r["dns_flags"] & L.DNS_QUESTION


def test_root_name_and_odd_bytes():
    assert check(udp_dns(dns_msg(name=".", qtype=2)))["dns_qname"] == b"."
    m = (struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b'\x04a"\\\x01\x03a.b\x00'
         + struct.pack("!HH", 16, 1))
    assert check(udp_dns(m))["dns_qname"] == b"a???.a?b"


def test_longest_name():
    name = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 characters
    assert check(udp_dns(dns_msg(name=name)))["dns_qname"] == name.encode()
    over = ".".join(["a" * 63] * 4)  # 255 characters: longer than a legal name, still kept
    assert check(udp_dns(dns_msg(name=over)))["dns_qlen"] == 255
    longer = ".".join(["a" * 63] * 4 + ["b"])  # does not fit
    assert check(udp_dns(dns_msg(name=longer)))["dns_flags"] == L.DNS_VALID


def test_ipv6_dns():
    frame = eth(ipv6(udp(40000, 53, dns_msg(qtype=28)), 17), 0x86DD)
    assert check(frame)["dns_qtype"] == 28


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=80), qr=st.booleans(), tcp_=st.booleans())
def test_header_then_noise_match_twin(data, qr, tcp_):
    head = struct.pack("!HHHHHH", 7, 0x8000 if qr else 0, 1, 1, 0, 0)
    frame = tcp_dns(head + data) if tcp_ else udp_dns(head + data)
    r = check(frame)
    tw = naive_dns(head + data, tcp_)
    assert r["dns_qname"] == tw["dns_qname"]


@settings(max_examples=300, deadline=None)
@given(pos=st.integers(0, 60), val=st.integers(0, 255), cut=st.integers(0, 120))
def test_mutated_dns_frames_match_twin(pos, val, cut):
    m = bytearray(dns_msg(qr=True, answers=1, body=answer_a()))
    if pos < len(m):
        m[pos] = val
    check(udp_dns(bytes(m))[:cut])


# --- the engine ------------------------------------------------------------


def frames_to_rows(frames) -> np.ndarray:
    """(ts_ns, frame) pairs -> PKT rows."""
    return np.concatenate([parse_bytes(f, ts) for ts, f in frames])


def ended(frames, **cfg):
    t = FlowTracker(config=TrackerConfig(**cfg), events="ended", zeek=True)
    recs = [r.copy() for r in t.process(frames_to_rows(frames))]
    recs += [r.copy() for r in t.process_finish()]
    return np.concatenate(recs), t


def query_response(q_ts=1_000_000_000, r_ts=1_012_345_678, tid=0x4242, rtid=None, **kw):
    q = udp_dns(dns_msg(tid=tid, **kw))
    r = udp_dns(dns_msg(tid=tid if rtid is None else rtid, qr=True, answers=1,
                        body=answer_a(), **kw), 53, 40000, "10.0.0.2", "10.0.0.1")
    return [(q_ts, q), (r_ts, r)]


def test_query_response_rtt():
    recs, t = ended(query_response(qtype=28))
    (r,) = recs
    assert r["dns"] == L.EVD_QUERY | L.EVD_RESPONSE | L.EVD_RTT
    assert r["dns_rtt"] == 12_345_678 and r["dns_qtype"] == 28 and r["dns_answers"] == 1
    assert bytes(r["dns_qname"][: r["dns_qlen"]]) == b"www.example.com"
    assert t.stats.dns_messages == 2 and t.stats.dns_matched == 1


def test_response_with_other_id_is_not_matched():
    recs, t = ended(query_response(rtid=1))
    (r,) = recs
    assert r["dns"] == L.EVD_QUERY and t.stats.dns_matched == 0


def test_only_first_query_counts():
    frames = query_response(tid=1) + [
        (2_000_000_000, udp_dns(dns_msg(tid=2, name="other.example", qtype=16)))]
    (r,) = ended(frames)[0]
    assert bytes(r["dns_qname"][: r["dns_qlen"]]) == b"www.example.com" and r["dns_qtype"] == 1


def test_second_response_does_not_replace_the_first():
    frames = query_response()
    frames.append((1_500_000_000, udp_dns(dns_msg(tid=0x4242, qr=True, rcode=2), 53, 40000,
                                          "10.0.0.2", "10.0.0.1")))
    (r,) = ended(frames)[0]
    assert r["dns_rcode"] == 0 and r["dns_rtt"] == 12_345_678


def test_response_without_query():
    (r,) = ended(query_response()[1:])[0]
    assert r["dns"] == L.EVD_QUERY | L.EVD_RESPONSE
    assert r["dns_answers"] == 1 and r["dns_rtt"] == 0


def test_query_from_the_server_side_is_matched_by_side():
    # the same id echoed by the querier itself is no response
    q = udp_dns(dns_msg(tid=5))
    echo = udp_dns(dns_msg(tid=5, qr=True))
    (r,) = ended([(1, q), (2, echo)])[0]
    assert r["dns"] == L.EVD_QUERY


def test_dns_over_tcp_rtt():
    q = tcp_dns(dns_msg(tid=9))
    a = tcp_dns(dns_msg(tid=9, qr=True, answers=1, body=answer_a()), 53, 40000, "10.0.0.2",
                "10.0.0.1")
    (r,) = ended([(10, q), (35, a)])[0]
    assert r["dns"] == L.EVD_QUERY | L.EVD_RESPONSE | L.EVD_RTT and r["dns_rtt"] == 25


def test_dns_off():
    (r,) = ended(query_response(), dns=False)[0]
    assert r["dns"] == 0
    t = FlowTracker(config=TrackerConfig(dns=False, max_flows=100))
    assert t._fhist.shape == (100, L.HISTORY_MAX)  # history only: no name pool


def test_name_pool_hands_out_and_takes_back_slots():
    """300 DNS flows, each with its own query name (some of the longest, crossing every
    row of a pool slot), at most 8 open at once: every Ended record carries its own
    flow's name, the pool never holds more names than open flows, and every slot is
    back on the free stack at the end."""
    from flowscope._kernels import engine as K

    longest = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    names = [f"h{i}." + (longest[len(f"h{i}."):] if i % 50 == 7 else "x" * (1 + i % 62) + ".org")
             for i in range(300)]
    frames = [(i * 1_000_000, udp_dns(dns_msg(tid=i, name=n), sport=20000 + i))
              for i, n in enumerate(names)]
    t = FlowTracker(config=TrackerConfig(max_flows=8), events="ended")
    recs = [r.copy() for r in t.process(frames_to_rows(frames))]
    recs += [r.copy() for r in t.process_finish()]
    got = sorted(bytes(r["dns_qname"][: r["dns_qlen"]]).decode() for r in np.concatenate(recs))
    assert got == sorted(names) and max(map(len, names)) == 253
    assert 0 < t._ctl[K.C_NAME_HIGH] <= 8
    assert t._ctl[K.C_NAME_TOP] == t._ctl[K.C_NAME_HIGH]
    assert t._fhist.shape == (8 * (1 + K.NAME_ROWS), L.HISTORY_MAX)


def test_non_dns_flow_has_no_dns():
    f = eth(ipv4(udp(1000, 2000, dns_msg()), 17))
    (r,) = ended([(1, f)])[0]
    assert r["dns"] == 0


def test_slot_reuse_clears_dns():
    frames = query_response()
    other = eth(ipv4(udp(1000, 2000, b"x"), 17))
    t = FlowTracker(config=TrackerConfig(max_flows=1), events="ended")
    recs = [r.copy() for r in t.process(frames_to_rows(frames + [(3_000_000_000, other)]))]
    recs += [r.copy() for r in t.process_finish()]
    recs = np.concatenate(recs)
    assert recs[0]["dns"] != 0 and recs[1]["dns"] == 0


# --- outputs ---------------------------------------------------------------


def test_jsonl_fields_and_twin():
    recs, _t = ended(query_response(qtype=28))
    out = io.StringIO()
    w = JsonlWriter(out)
    w.write_records(recs)
    w.flush()
    naive = io.StringIO()
    NaiveJsonlWriter(naive).write_records(recs)
    assert out.getvalue() == naive.getvalue()
    obj = json.loads(out.getvalue())
    assert obj["dns_query"] == "www.example.com" and obj["dns_qtype"] == 28
    assert obj["dns_qtype_name"] == "AAAA" and obj["dns_rcode"] == 0
    assert obj["dns_rcode_name"] == "NOERROR" and obj["dns_answers"] == 1
    assert obj["dns_rtt"] == pytest.approx(0.012345678)


def test_jsonl_unknown_qtype_and_rcode_have_no_name():
    q = udp_dns(dns_msg(tid=3, qtype=4000))
    a = udp_dns(dns_msg(tid=3, qtype=4000, qr=True, rcode=15), 53, 40000, "10.0.0.2",
                "10.0.0.1")
    recs, _t = ended([(1, q), (2, a)])
    out = io.StringIO()
    JsonlWriter(out).write_records(recs)
    obj = json.loads(out.getvalue())
    assert obj["dns_qtype"] == 4000 and "dns_qtype_name" not in obj
    assert obj["dns_rcode"] == 15 and "dns_rcode_name" not in obj
    naive = io.StringIO()
    NaiveJsonlWriter(naive).write_records(recs)
    assert out.getvalue() == naive.getvalue()


def test_eve_extension():
    recs, _t = ended(query_response())
    out = io.StringIO()
    EveWriter(out).write_records(recs)
    obj = json.loads(out.getvalue())
    assert obj["flowscope"]["dns"] == {"rrname": "www.example.com", "rrtype": "A", "qtype": 1,
                                       "rcode": "NOERROR", "answers": 1,
                                       "rtt": pytest.approx(0.012345678)}


def test_zeek_extension_fields():
    recs, _t = ended(query_response())
    out = io.StringIO()
    ZeekJsonWriter(out).write_records(recs)
    obj = json.loads(out.getvalue())
    assert obj["dns_query"] == "www.example.com" and obj["dns_rtt"] == pytest.approx(0.0123457,
                                                                                      abs=1e-6)
    tsv = io.StringIO()
    w = ZeekTsvWriter(tsv)
    w.write_records(recs)
    lines = tsv.getvalue().splitlines()
    fields = next(x for x in lines if x.startswith("#fields")).split("\t")[1:]
    values = next(x for x in lines if not x.startswith("#")).split("\t")
    rec = dict(zip(fields, values))
    assert rec["dns_query"] == "www.example.com" and rec["dns_rtt"] == "0.012346"
    assert rec["dns_qtype_name"] == "A" and rec["dns_answers"] == "1"


def test_zeek_tsv_non_dns_flow_unset():
    recs, _t = ended([(1, eth(ipv4(udp(1000, 2000, b"x"), 17)))])
    tsv = io.StringIO()
    ZeekTsvWriter(tsv).write_records(recs)
    values = [x for x in tsv.getvalue().splitlines() if not x.startswith("#")][0].split("\t")
    assert values[-10:] == ["-"] * 10
