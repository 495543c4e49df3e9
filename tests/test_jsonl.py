"""The numba JSON Lines formatter equals its plain-Python twin, byte for byte."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowscope import FlowTracker, layout
from flowscope.keys import FiveTuple, IpPair, MacPair
from flowscope.output.jsonl import JsonlWriter
from flowscope.pcap import CaptureReader
from naive_jsonl import NaiveJsonlWriter

DATA = Path(__file__).parent / "data"


def both(recs):
    fast, slow = io.StringIO(), io.StringIO()
    JsonlWriter(fast, buffer_bytes=4096).write_records(recs)
    NaiveJsonlWriter(slow).write_records(recs)
    return fast.getvalue(), slow.getvalue()


def records_of(path, extractor, events="all"):
    tr = FlowTracker(extractor, events=events)
    out = []
    for b in CaptureReader(str(path)):
        out += [r.copy() for r in tr.process(b)]
    out += [r.copy() for r in tr.process_finish()]
    return np.concatenate(out) if out else np.zeros(0, layout.EVENT_DTYPE)


@pytest.mark.parametrize("name", ["zeek__wikipedia.pcap", "zeek__ftp__ipv6.pcap",
                                  "zeek__q-in-q.pcap", "zeek__icmp__5-pings.pcap"])
@pytest.mark.parametrize("extractor", [FiveTuple(), FiveTuple.directional(), IpPair(), MacPair()],
                         ids=["five", "directional", "ip-pair", "mac-pair"])
def test_formatter_equals_twin_on_real_captures(name, extractor):
    if not (DATA / name).exists():
        pytest.skip(f"{name} not shipped")
    recs = records_of(DATA / name, extractor)
    fast, slow = both(recs)
    assert fast == slow
    assert len(fast.splitlines()) == recs.shape[0]
    for line in fast.splitlines():
        json.loads(line)


words = st.integers(0, 2**64 - 1)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(
    st.integers(1, 5), st.integers(-2**62, 2**62), words, words, words, words,
    st.sampled_from([4, 6]), st.integers(0, 255), st.integers(0, 65535), st.integers(0, 65535),
    st.integers(0, 3), st.integers(0, 1), st.integers(0, 2**62), st.integers(0, 2**62),
    st.integers(0, 16), st.integers(0, 8), st.integers(0, 4),
    st.sampled_from([0, 0, 0xFFFF, 0x10000, 0xFFFF_0000_0000_0000])), min_size=1, max_size=20))
def test_formatter_equals_twin_on_random_records(rows):
    recs = np.zeros(len(rows), dtype=layout.EVENT_DTYPE)
    for i, (kind, ts, a0, a1, b0, b1, l3, proto, pa, pb, xk, rev, n1, n2, hl, st_, rs,
            mask) in enumerate(rows):
        r = recs[i]
        r["kind"], r["ts"], r["flow_id"] = kind, ts, n1
        if mask:  # sprinkle zero groups into IPv6 addresses
            a0 &= mask
            b1 &= mask
        if l3 == 4:
            a0 = b0 = 0
            a1 &= 0xFFFFFFFF
            b1 &= 0xFFFFFFFF
        r["key"] = (a0, a1, b0, b1, xk << 56 | l3 << 48 | proto << 32 | pa << 16 | pb)
        r["init_rev"], r["side"], r["length"] = rev, rev, n2 & 0xFFFFFFFF
        r["from_state"], r["to_state"], r["reason"] = st_, st_, rs
        r["pkts"], r["bytes"], r["payload"] = (n1, n2), (n2, n1), (n1 // 3, n2 // 7)
        r["started"], r["last_seen"] = n1, n2
        r["flags_or"] = (proto, 255 - proto)
        r["hist_len"] = hl
        r["history"][:hl] = np.frombuffer(b"SsDdFfRrSsDdFfRr"[:hl], dtype=np.uint8)
    fast, slow = both(recs)
    assert fast == slow
