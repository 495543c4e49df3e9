"""Active timeout: interim Update records of long flows, offline (engine, JSON Lines, IPFIX)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

from flowscope import FlowTracker, TrackerConfig, layout
from flowscope.config import ConfigError, config_from_mapping
from flowscope.events import Ended, Update
from pktgen import pkt, to_array

SEC = 10**9


def _long_flow(n=36, step=SEC):
    """A UDP exchange: a query every ``step`` and an answer to every other one."""
    out = []
    for i in range(n):
        out.append(pkt(i * step, "10.0.0.1", 1000, "10.0.0.2", 53, payload=10))
        if i % 2:
            out.append(pkt(i * step + 1000, "10.0.0.2", 53, "10.0.0.1", 1000, payload=30))
    return out


def _records(cfg, pkts, events="ended"):
    t = FlowTracker(config=cfg, events=events)
    recs = [r.copy() for r in t.process(to_array(pkts))]
    recs += [r.copy() for r in t.process_finish()]
    return np.concatenate(recs), t


def test_updates_every_interval_with_cumulative_counters():
    recs, t = _records(TrackerConfig(active_timeout=10, sweep_interval=1), _long_flow())
    kinds = [int(k) for k in recs["kind"]]
    assert kinds == [layout.EV_UPDATE] * 3 + [layout.EV_ENDED]
    assert [int(r["ts"]) for r in recs[:3]] == [10 * SEC, 20 * SEC, 30 * SEC]
    # counters so far (the packet at the due time is counted after the sweep)
    assert [int(r["pkts"][0]) for r in recs] == [10, 20, 30, 36]
    assert [int(r["pkts"][1]) for r in recs] == [5, 10, 15, 18]
    assert len(set(int(r["flow_id"]) for r in recs)) == 1  # one flow, not split
    assert t.stats.flows_created == 1 and t.stats.flows_ended == 1
    # what earlier updates reported rides along (for IPFIX deltas)
    assert [int(r["exported_pkts"][0]) for r in recs] == [0, 10, 20, 30]


def test_no_update_for_short_flows_or_without_the_setting():
    short = _long_flow(n=5)
    recs, _ = _records(TrackerConfig(active_timeout=10, sweep_interval=1), short)
    assert [int(k) for k in recs["kind"]] == [layout.EV_ENDED]
    recs, _ = _records(TrackerConfig(sweep_interval=1), _long_flow())
    assert [int(k) for k in recs["kind"]] == [layout.EV_ENDED]


def test_update_due_times_follow_the_flow_start_not_the_sweep():
    # sweeps only every 7 s: updates come at the first sweep at or after each due time, and
    # the next one is due at start + k * interval, not 10 s after the late one
    recs, _ = _records(TrackerConfig(active_timeout=10, sweep_interval=7), _long_flow(n=40))
    ups = recs[recs["kind"] == layout.EV_UPDATE]
    assert [int(r["ts"]) // SEC for r in ups] == [14, 21, 35]


def test_library_events_and_sweep():
    t = FlowTracker(config=TrackerConfig(active_timeout=5), events="ended")
    t.track_batch(to_array(_long_flow(n=8)))
    evs = t.sweep(8 * SEC)
    assert [type(e) for e in evs] == [Update]
    u = evs[0]
    assert u.kind == "update" and u.stats.initiator_packets == 8
    assert t.sweep(9 * SEC) == []  # the next one is due at 10 s
    assert [type(e) for e in t.sweep(10 * SEC)] == [Update]
    assert [type(e) for e in t.finish()] == [Ended]


def test_updates_survive_a_small_event_buffer():
    pkts = [pkt(i * SEC // 4, "10.0.0.1", 1000 + i % 40, "10.0.0.2", 53) for i in range(400)]
    big, _ = _records(TrackerConfig(active_timeout=3, sweep_interval=1), pkts)
    t = FlowTracker(config=TrackerConfig(active_timeout=3, sweep_interval=1), events="ended",
                    event_capacity=64)
    small = np.concatenate([r.copy() for r in t.process(to_array(pkts))]
                           + [r.copy() for r in t.process_finish()])
    assert (small["kind"] == layout.EV_UPDATE).sum() > 64
    # field by field: numpy's copies of a structured array leave its padding bytes undefined
    assert len(small) == len(big)
    for name in layout.EVENT_DTYPE.names:
        np.testing.assert_array_equal(small[name], big[name], err_msg=name)


def test_jsonl_update_lines_match_the_twin():
    from flowscope.output.jsonl import JsonlWriter
    from naive_jsonl import NaiveJsonlWriter

    recs, _ = _records(TrackerConfig(active_timeout=10, sweep_interval=1, sample_rate=1),
                       _long_flow(), events="all")
    fast, naive = io.StringIO(), io.StringIO()
    JsonlWriter(fast).write_records(recs)
    NaiveJsonlWriter(naive).write_records(recs)
    assert fast.getvalue() == naive.getvalue()
    rows = [json.loads(x) for x in fast.getvalue().splitlines()]
    ups = [r for r in rows if r["event"] == "update"]
    assert len(ups) == 3 and all("reason" not in r for r in ups)
    assert [r["init_pkts"] for r in ups] == [10, 20, 30]


@pytest.mark.parametrize("records", ["biflow", "uniflow"])
def test_ipfix_updates_carry_deltas_and_end_reason_2(records):
    from flowscope.output.ipfix import IpfixExporter
    from test_ipfix import UdpSink, decode_ipfix

    recs, _ = _records(TrackerConfig(active_timeout=10, sweep_interval=1), _long_flow())
    sink = UdpSink()
    try:
        exp = IpfixExporter("127.0.0.1", sink.port, records=records)
        exp.write_records(recs)
        exp.close()
        _, _, got = decode_ipfix(sink.take(1000, timeout=1.0))
    finally:
        sink.close()
    reasons = [r[(136, 0)] for r in got]
    assert reasons.count(2) >= 3 and reasons[-1] == 4  # updates, then the shutdown end
    if records == "biflow":
        assert [r[(2, 0)] for r in got] == [10, 10, 10, 6]  # initiator packets, deltas
        assert sum(r[(2, layout_pen())] for r in got) == 18
    else:
        fwd = [r[(2, 0)] for r in got if r[(239, 0)] == 1]
        back = [r[(2, 0)] for r in got if r[(239, 0)] == 2]
        assert sum(fwd) == 36 and sum(back) == 18


def layout_pen():
    from flowscope.output.ipfix import REVERSE_PEN

    return REVERSE_PEN


def test_config_and_flag():
    assert config_from_mapping({"active_timeout": 60}).active_timeout == 60.0
    with pytest.raises(ConfigError, match=r"^active_timeout: "):
        config_from_mapping({"active_timeout": 0})
    r = subprocess.run([sys.executable, "-m", "flowscope", "pcap", "--active-timeout", "-1",
                        "/dev/null"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("flowscope: --active-timeout: ")
