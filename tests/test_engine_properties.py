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
    lambda ts, s, d, sp, dp, proto, flags, payload, length, matched, live: _mk(
        ts, s, d, sp, dp, proto, flags, payload, length, matched, live),
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
    # live sensor rows: None = an ordinary packet, else (kind, counters, first_ts back-off)
    live=st.one_of(
        st.none(), st.none(),
        st.tuples(st.sampled_from([layout.PF_ABS, layout.PF_SYNC]),
                  st.tuples(*[st.integers(0, 9)] * 6), st.integers(0, 30)),
    ),
)


def _mk(ts, s, d, sp, dp, proto, flags, payload, length, matched, live=None):
    v6 = s == 2 and d == 2
    src = HOSTS[3] if v6 else HOSTS[s]
    dst = HOSTS[4] if v6 else HOSTS[d]
    p = pkt(ts, src, sp, dst, dp, flags=flags if proto == 6 else None, proto=proto,
            payload=payload, length=length, smac=s + 1, dmac=d + 1)
    if matched == 0:
        p["l3"] = 0
        p["pflags"] = 0
    if live is not None:
        kind, cnt, back = live
        p["pflags"] |= kind
        (p["cnt_pkts0"], p["cnt_pkts1"], p["cnt_bytes0"], p["cnt_bytes1"], p["cnt_pay0"],
         p["cnt_pay1"]) = cnt
        p["first_ts"] = -back  # made absolute by _times
    return p


def _times(pkts, spread):
    """Make timestamps non-decreasing (packet time), scaled to seconds."""
    t = 0
    for p in pkts:
        t += p["ts"] * spread
        p["ts"] = t
        if p["first_ts"] < 0:
            p["first_ts"] = max(0, t + p["first_ts"] * spread)
    return pkts


def _live(p) -> bool:
    return bool(p["pflags"] & (layout.PF_ABS | layout.PF_SYNC))


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
    assert (st_.packets_matched, st_.bytes_matched) == (naive.matched_pkts, naive.matched_bytes)


# many flows over several blocks of the sweep's deadline bounds (K.DL_BLOCK slots each),
# the last one partly used, with sweeps in between: flows of every timeout in every block
packet_many = st.builds(
    lambda ts, s, d, sp, dp, proto, flags: _mk(ts, s, d, sp, dp, proto, flags, 0, 60, 1),
    ts=st.integers(0, 4), s=st.integers(0, 2), d=st.integers(0, 2),
    sp=st.integers(0, 150), dp=st.integers(0, 3), proto=st.sampled_from([6, 17, 1]),
    flags=st.sampled_from([0x02, 0x10, 0x11, 0x04, 0x00]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(packet_many, min_size=50, max_size=400), st.integers(K.DL_BLOCK + 1, 200),
       st.lists(st.integers(0, 399), max_size=6))
def test_sweeps_over_many_blocks_equal_naive_twin(pkts, max_flows, cuts):
    pkts = _times(pkts, SEC)
    cfg = {"max_flows": max_flows, "infer": True, "kind": 0, "interval": 0}
    fast, naive = _trackers(cfg, capacity=1 << 10)
    arr = to_array(pkts)
    got, want, start = [], [], 0
    for cut in sorted(set(c for c in cuts if c < len(pkts))) + [len(pkts)]:
        got += _records(fast, fast.process(arr[start:cut]))
        want += [e for p in pkts[start:cut] for e in naive.track(p)]
        start = cut
        now = pkts[cut - 1]["ts"] + 5 * SEC if cut else 0
        got += _records(fast, fast.process_sweep(now))
        want += naive.sweep(now)
    got += _records(fast, fast.process_sweep(int(fast._ctl[K.C_LAST_TS]), K.END_SHUTDOWN))
    want += naive.finish()
    assert got == want


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
    # absolute (live) rows add their counter differences: nothing is lost either way
    assert sum(e.stats.packets for e in ended) == s.packets_matched
    assert sum(e.stats.bytes for e in ended) == s.bytes_matched
    matched = [p for p in pkts if naive_key(p, cfg["kind"]) is not None]
    if not any(_live(p) for p in matched):
        assert len(matched) == s.packets_matched
        assert sum(p["caplen"] for p in matched) == s.bytes_matched


@settings(max_examples=100, deadline=None)
@given(st.lists(packet, max_size=60), config_st)
def test_track_equals_batch_path(pkts, cfg):
    pkts = _times(pkts, SEC)
    one, _ = _trackers(cfg)
    many, _ = _trackers(cfg, capacity=1 << 12)
    singles = [e for p in pkts for e in one.track_batch(to_array([p]))] + one.finish()
    batch = many.track_batch(to_array(pkts)) + many.finish()
    assert singles == batch


@settings(deadline=None)  # the first call may compile
@given(st.integers(0, 8), st.integers(0, 1), st.integers(0, 255), st.integers(-1, 1))
def test_tcp_transition_equals_twin(state, side, flags, fin_side):
    assert K.tcp_transition(state, side, flags, fin_side) == naive_transition(
        state, side, flags, fin_side)


@settings(deadline=None)  # the first call may compile
@given(st.text("SsFfRrDd", max_size=16), st.integers(0, 1), st.integers(0, 255),
       st.integers(0, 3))
def test_history_append_equals_twin(hist, side, flags, payload):
    buf = np.zeros((1, 16), dtype=np.uint8)
    buf[0, : len(hist)] = np.frombuffer(hist.encode(), dtype=np.uint8)
    n = K.history_append(buf, 0, len(hist), side, flags, payload)
    assert bytes(buf[0, :n]).decode() == naive_history(hist, side, flags, payload)


@settings(deadline=None)  # the first call may compile
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


# --- kernel aggregation: the live sensor's rows give the offline events ---------------


class _KernelTwin:
    """What bpf/fs_flow.h does per packet, in plain Python: aggregate into a map keyed like
    the five-tuple key, and pass on (as an absolute-counter row) only the packets its event
    rule selects (new flow, SYN/FIN/RST, data while the history has room, state change)."""

    def __init__(self):
        self.flows = {}

    def packet(self, p):
        key, rev = naive_key(p, 0)
        o = int(rev)
        f = self.flows.get(key)
        new = f is None or f["state"] in (6, 7)  # Closed / Reset restart the entry
        if new:
            f = self.flows[key] = {"first": o, "state": 0, "fin": -1, "hl": 0,
                                   "cnt": [[0, 0], [0, 0], [0, 0], [0, 0]], "ts0": p["ts"],
                                   "flags": [0, 0]}
        f["cnt"][0][o] += 1
        f["cnt"][1][o] += p["caplen"]
        f["cnt"][2][o] += p["payload_len"]
        f["cnt"][3][o] += p["ip_len"]
        if p["pflags"] & layout.PF_TCP:
            f["flags"][o] |= p["tcp_flags"]
        f["last"] = p["ts"]
        evented = new
        if p["pflags"] & layout.PF_TCP:
            fl = p["tcp_flags"]
            if fl & 0x07 or (p["payload_len"] and f["hl"] < 16):
                evented = True
            f["hl"] = min(16, f["hl"] + bool(fl & 2) + bool(fl & 1) + bool(fl & 4)
                          + bool(p["payload_len"]))
            side = int(o != f["first"])
            ns, f["fin"] = naive_transition(f["state"], side, fl, f["fin"])
            if ns != f["state"]:
                f["state"] = ns
                evented = True
        if not evented:
            return None
        row = dict(p)
        row["pflags"] |= layout.PF_ABS
        row["first_ts"] = f["ts0"]
        row["kstate"] = f["state"]
        self._counters(row, f)
        return row

    @staticmethod
    def _counters(row, f):
        c = f["cnt"]
        (row["cnt_pkts0"], row["cnt_pkts1"], row["cnt_bytes0"], row["cnt_bytes1"],
         row["cnt_pay0"], row["cnt_pay1"]) = (c[0][0], c[0][1], c[1][0], c[1][1], c[2][0],
                                              c[2][1])
        row["cnt_ipb0"], row["cnt_ipb1"] = c[3]
        row["cnt_flags0"], row["cnt_flags1"] = f["flags"]
        row["kstate"] = f["state"]

    def sync_rows(self, template):
        """Every remaining entry as a sync row oriented like its first packet."""
        rows = []
        for key, f in self.flows.items():
            if f["state"] in (6, 7):
                continue  # already ended by its terminal packet
            a, b = (key[0], key[1]), (key[2], key[3])
            meta = key[4]
            pa, pb = (meta >> 16) & 0xFFFF, meta & 0xFFFF
            if f["first"]:
                a, b, pa, pb = b, a, pb, pa
            row = dict(template)
            row.update(ts=f["last"], first_ts=f["ts0"], src_hi=a[0], src_lo=a[1], dst_hi=b[0],
                       dst_lo=b[1], sport=pa, dport=pb, l3=(meta >> 48) & 0xFF,
                       proto=(meta >> 32) & 0xFF, pflags=layout.PF_SYNC | layout.PF_PORTS,
                       tcp_flags=0, payload_len=0, caplen=0)
            self._counters(row, f)
            rows.append(row)
        return rows


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(packet, max_size=80))
def test_kernel_aggregated_rows_give_offline_events(pkts):
    pkts = [p for p in pkts if naive_key(p, 0) is not None and not _live(p)]
    pkts = _times(pkts, SEC)
    cfg = {"max_flows": 1000, "infer": False, "kind": 0, "interval": 0}
    offline, _ = _trackers(cfg)
    live, _ = _trackers(cfg)
    want = offline.track_batch(to_array(pkts)) + offline.finish()
    kern = _KernelTwin()
    rows = [r for r in (kern.packet(p) for p in pkts) if r is not None]
    got = live.track_batch(to_array(rows)) if rows else []
    if pkts:
        got += live.track_batch(to_array(kern.sync_rows(pkts[0])))
    got += live.finish()

    def ended(evs):
        return sorted((str(e.flow_key), e.reason, e.state, e.history, e.initiator, e.ts,
                       e.stats.initiator_packets,
                       e.stats.responder_packets, e.stats.initiator_bytes,
                       e.stats.responder_bytes, e.stats.initiator_payload_bytes,
                       e.stats.responder_payload_bytes, e.stats.started, e.stats.last_seen)
                      for e in evs if e.kind == "ended")

    assert ended(got) == ended(want)
    assert live.stats.packets_matched == offline.stats.packets_matched
    assert live.stats.bytes_matched == offline.stats.bytes_matched
