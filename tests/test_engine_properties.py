"""Property tests: the numba engine equals its plain-Python twin and keeps its invariants."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowscope import FlowTracker, TrackerConfig, layout
from flowscope._kernels import engine as K
from flowscope.keys import FiveTuple, IpPair, MacPair
from naive import NaiveTracker, naive_history, naive_key, naive_transition, records_to_tuples
from pktgen import pkt, to_array

HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "::1", "fe80::2"]

packet = st.builds(
    lambda ts, s, d, sp, dp, proto, flags, payload, length, matched: _mk(
        ts, s, d, sp, dp, proto, flags, payload, length, matched),
    ts=st.integers(0, 50),
    s=st.integers(0, 2),
    d=st.integers(0, 2),
    sp=st.sampled_from([1, 2, 80]),
    dp=st.sampled_from([1, 2, 80]),
    proto=st.sampled_from([6, 6, 6, 17, 1]),
    flags=st.sampled_from([0x02, 0x12, 0x10, 0x18, 0x11, 0x04, 0x14, 0x01, 0x00, 0x03]),
    payload=st.sampled_from([0, 0, 1, 100]),
    length=st.integers(14, 1514),
    matched=st.integers(0, 9),
)


def _mk(ts, s, d, sp, dp, proto, flags, payload, length, matched):
    v6 = s == 2 and d == 2
    src = HOSTS[3] if v6 else HOSTS[s]
    dst = HOSTS[4] if v6 else HOSTS[d]
    p = pkt(ts, src, sp, dst, dp, flags=flags if proto == 6 else None, proto=proto,
            payload=payload, length=length, smac=s + 1, dmac=d + 1)
    if matched == 0:
        p["l3"] = 0
        p["pflags"] = 0
    return p


def _times(pkts, spread):
    """Make timestamps non-decreasing (packet time), scaled to seconds."""
    t = 0
    for p in pkts:
        t += p["ts"] * spread
        p["ts"] = t
    return pkts


config_st = st.fixed_dictionaries({
    "max_flows": st.integers(1, 6),
    "infer": st.booleans(),
    "kind": st.sampled_from([0, 1, 2, 3]),
    "interval": st.sampled_from([0, 3]),
})

EXTRACTORS = {0: FiveTuple(), 1: FiveTuple.directional(), 2: IpPair(), 3: MacPair()}
SEC = 10**9
TIMEOUTS = {"tcp": 20 * SEC, "udp": 6 * SEC, "icmp": 3 * SEC, "other": 3 * SEC}


def _trackers(cfg, capacity=64):
    tc = TrackerConfig(
        max_flows=cfg["max_flows"], infer_tcp_initiator=cfg["infer"],
        tcp_timeout=20, udp_timeout=6, icmp_timeout=3, other_timeout=3,
        sweep_interval=cfg["interval"] or None,
    )
    fast = FlowTracker(EXTRACTORS[cfg["kind"]], tc, event_capacity=capacity)
    naive = NaiveTracker(cfg["kind"], cfg["max_flows"], cfg["infer"], TIMEOUTS,
                         cfg["interval"] * SEC)
    return fast, naive


def _records(tracker, it):
    out = []
    for recs in it:
        out += records_to_tuples(recs)
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(packet, max_size=60), config_st, st.integers(0, 3))
def test_engine_equals_naive_twin(pkts, cfg, sweep_at):
    pkts = _times(pkts, SEC)
    fast, naive = _trackers(cfg)
    arr = to_array(pkts)
    half = len(pkts) // 2
    got = _records(fast, fast.process(arr[:half]))
    want = [e for p in pkts[:half] for e in naive.track(p)]
    now = (pkts[half - 1]["ts"] if half else 0) + sweep_at * SEC
    got += _records(fast, fast.process_sweep(now))
    want += naive.sweep(now)
    got += _records(fast, fast.process(arr[half:]))
    want += [e for p in pkts[half:] for e in naive.track(p)]
    got += _records(fast, fast.process_sweep(int(fast._ctl[K.C_LAST_TS]), K.END_SHUTDOWN))
    want += naive.finish()
    assert got == want
    st_ = fast.stats
    assert (st_.flows_created, st_.flows_ended, st_.flows_evicted, st_.packets_unmatched) == (
        naive.created, naive.ended, naive.evicted, naive.unmatched)


@settings(max_examples=150, deadline=None)
@given(st.lists(packet, max_size=80), config_st)
def test_invariants(pkts, cfg):
    pkts = _times(pkts, SEC // 2)
    fast, _ = _trackers(cfg)
    ended = []
    for i, p in enumerate(pkts):
        ended += [e for e in fast.track_batch(to_array([p])) if e.kind == "ended"]
        s = fast.stats
        assert len(fast) <= cfg["max_flows"]
        assert s.flows_created == s.flows_ended + s.open_flows
    ended += fast.finish()
    s = fast.stats
    assert s.open_flows == 0 and s.flows_created == s.flows_ended == len(ended)
    matched = [p for p in pkts if naive_key(p, cfg["kind"]) is not None]
    assert sum(e.stats.packets for e in ended) == len(matched) == s.packets_matched
    assert sum(e.stats.bytes for e in ended) == sum(p["caplen"] for p in matched)


@settings(max_examples=100, deadline=None)
@given(st.lists(packet, max_size=60), config_st)
def test_track_equals_batch_path(pkts, cfg):
    pkts = _times(pkts, SEC)
    one, _ = _trackers(cfg)
    many, _ = _trackers(cfg, capacity=1 << 12)
    singles = [e for p in pkts for e in one.track_batch(to_array([p]))] + one.finish()
    batch = many.track_batch(to_array(pkts)) + many.finish()
    assert singles == batch


@given(st.integers(0, 8), st.integers(0, 1), st.integers(0, 255), st.integers(-1, 1))
def test_tcp_transition_equals_twin(state, side, flags, fin_side):
    assert K.tcp_transition(state, side, flags, fin_side) == naive_transition(
        state, side, flags, fin_side)


@given(st.text("SsFfRrDd", max_size=16), st.integers(0, 1), st.integers(0, 255),
       st.integers(0, 3))
def test_history_append_equals_twin(hist, side, flags, payload):
    buf = np.zeros((1, 16), dtype=np.uint8)
    buf[0, : len(hist)] = np.frombuffer(hist.encode(), dtype=np.uint8)
    n = K.history_append(buf, 0, len(hist), side, flags, payload)
    assert bytes(buf[0, :n]).decode() == naive_history(hist, side, flags, payload)


@given(packet, st.sampled_from([0, 1, 2, 3]))
def test_extract_key_equals_twin(p, kind):
    arr = to_array([p])
    ok, *words, rev = K.extract_key(arr, 0, kind)
    want = naive_key(p, kind)
    if want is None:
        assert not ok
    else:
        assert ok and (tuple(int(w) for w in words), bool(rev)) == want


def test_bidirectional_key_is_canonical():
    a = to_array([pkt(0, "10.0.0.2", 80, "10.0.0.1", 1234, flags=0x02),
                  pkt(0, "10.0.0.1", 1234, "10.0.0.2", 80, flags=0x12)])
    ka = K.extract_key(a, 0, layout.EXTRACT_FIVE_TUPLE)
    kb = K.extract_key(a, 1, layout.EXTRACT_FIVE_TUPLE)
    assert ka[:6] == kb[:6] and ka[6] != kb[6]
