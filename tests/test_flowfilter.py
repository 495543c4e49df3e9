"""Flow filter and flow sampling, offline: config keys, scenarios and the plain-Python twin."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowscope import FlowTracker, TrackerConfig, layout
from flowscope._kernels import engine as K
from flowscope.config import ConfigError, config_from_mapping
from flowscope.flowfilter import engine_table, sample_hash
from flowscope.keys import FiveTuple, IpPair, MacPair
from naive import NaiveTracker, naive_passes, naive_sample_hash, records_to_tuples
from pktgen import pkt, to_array

SEC = 10**9


def ended_keys(tracker, pkts):
    evs = tracker.track_batch(to_array(pkts)) + tracker.finish()
    return [(k.a_addr.compressed, k.a_port, k.b_addr.compressed, k.b_port)
            for k in (e.flow_key for e in evs)]


# ---- configuration --------------------------------------------------------------------------


def test_yaml_filter_section():
    cfg = config_from_mapping({"filter": {"include": {"cidrs": ["10.0.0.0/8", "fd00::/8"],
                                                      "protocols": ["tcp", 17]},
                                          "exclude": {"ports": [22, 22, 3389]}},
                               "sample_rate": 10})
    assert cfg.include_cidrs == ("10.0.0.0/8", "fd00::/8")
    assert cfg.include_protocols == (6, 17)
    assert cfg.exclude_ports == (22, 3389)
    assert cfg.sample_rate == 10
    mode, _flt = engine_table(cfg)
    assert mode == layout.FLT_INC_CIDRS | layout.FLT_INC_PROTOS | layout.FLT_EXC_PORTS


@pytest.mark.parametrize("doc, msg", [
    ({"filter": {"include": {"cidrs": ["10.0.0.1/8"]}}}, "filter.include.cidrs: expected"),
    ({"filter": {"include": {"cidrs": ["nonsense"]}}}, "filter.include.cidrs: expected"),
    ({"filter": {"exclude": {"ports": [70000]}}}, "filter.exclude.ports: expected"),
    ({"filter": {"exclude": {"protocols": ["tpc"]}}}, "filter.exclude.protocols: expected"),
    ({"filter": {"exclude": {"port": [22]}}}, "filter.exclude.port: unknown key"),
    ({"filter": {"sideways": {"ports": [22]}}}, "filter.sideways.ports: unknown key"),
    ({"filter": ["x"]}, "filter: expected a mapping"),
    ({"filter": {"include": [22]}}, "filter.include: expected a mapping"),
    ({"sample_rate": 0}, "sample_rate: must be between"),
    ({"sample_rate": True}, "sample_rate: expected an integer"),
])
def test_bad_filter_config(doc, msg):
    with pytest.raises(ConfigError, match=msg.replace(".", r"\.")):
        config_from_mapping(doc)


def test_cli_sample_rate_flag_error():
    r = subprocess.run([sys.executable, "-m", "flowscope", "pcap", "--sample-rate", "0",
                        "/dev/null"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("flowscope: --sample-rate: must be")


# ---- scenarios --------------------------------------------------------------------------------


def test_exclude_port_drops_both_directions():
    t = FlowTracker(config=TrackerConfig(exclude_ports=(22,)), events="ended")
    got = ended_keys(t, [pkt(1 * SEC, "10.0.0.1", 1000, "10.0.0.2", 22, flags=0x02),
                         pkt(2 * SEC, "10.0.0.2", 22, "10.0.0.1", 1000, flags=0x12),
                         pkt(3 * SEC, "10.0.0.1", 1000, "10.0.0.2", 80, flags=0x02)])
    assert got == [("10.0.0.1", 1000, "10.0.0.2", 80)]
    assert (t.stats.packets_filtered, t.stats.packets_matched, t.stats.flows_created) == (2, 1, 1)


def test_include_cidr_either_address():
    t = FlowTracker(config=TrackerConfig(include_cidrs=("10.1.0.0/16", "fd00:1::/32")),
                    events="ended")
    got = ended_keys(t, [pkt(1 * SEC, "192.168.0.1", 5, "10.1.2.3", 53),
                         pkt(2 * SEC, "10.1.2.3", 53, "192.168.0.1", 5),
                         pkt(3 * SEC, "10.2.0.1", 5, "10.3.0.1", 53),
                         pkt(4 * SEC, "fd00:1::5", 5, "fd00:2::5", 53),
                         pkt(5 * SEC, "fd00:2::5", 5, "fd00:3::5", 53)])
    assert got == [("10.1.2.3", 53, "192.168.0.1", 5), ("fd00:1::5", 5, "fd00:2::5", 53)]
    assert t.stats.packets_filtered == 2


def test_include_protocol_and_exclude_cidr_combine():
    cfg = TrackerConfig(include_protocols=(17,), exclude_cidrs=("10.9.0.0/16",))
    t = FlowTracker(config=cfg, events="ended")
    got = ended_keys(t, [pkt(1 * SEC, "10.0.0.1", 1, "10.0.0.2", 2),  # udp: kept
                         pkt(2 * SEC, "10.0.0.1", 1, "10.0.0.2", 2, flags=0x02),  # tcp
                         pkt(3 * SEC, "10.0.0.1", 1, "10.9.0.2", 2),  # udp, excluded net
                         pkt(4 * SEC, "10.0.0.1", 0, "10.0.0.2", 0, proto=1)])  # icmp
    assert got == [("10.0.0.1", 1, "10.0.0.2", 2)]
    assert t.stats.packets_filtered == 3


def test_include_ports_leave_out_protocols_without_ports():
    t = FlowTracker(config=TrackerConfig(include_ports=(53,)), events="ended")
    got = ended_keys(t, [pkt(1 * SEC, "10.0.0.1", 0, "10.0.0.2", 0, proto=1),
                         pkt(2 * SEC, "10.0.0.1", 40000, "10.0.0.2", 53)])
    assert got == [("10.0.0.1", 40000, "10.0.0.2", 53)]


def test_sampling_keeps_both_directions_and_counts_the_rest():
    rate = 4
    fwd = [pkt(i * 1000, "10.0.0.1", 1000 + i, "10.0.0.2", 53) for i in range(400)]
    rev = [pkt(SEC + i * 1000, "10.0.0.2", 53, "10.0.0.1", 1000 + i) for i in range(400)]
    t = FlowTracker(config=TrackerConfig(sample_rate=rate), events="ended")
    evs = t.track_batch(to_array(fwd + rev)) + t.finish()
    kept = {e.flow_key.a_port if e.flow_key.a_port != 53 else e.flow_key.b_port for e in evs}
    assert all(e.stats.initiator_packets == 1 and e.stats.responder_packets == 1 for e in evs)
    assert 60 < len(kept) < 140  # about 1 in 4 of 400
    assert t.stats.packets_sampled_out == 800 - 2 * len(kept)
    # the same flows as the plain-Python hash picks
    words = np.array([[0, 0x0A000001, 0, 0x0A000002, 4 << 48 | 17 << 32 | (1000 + i) << 16 | 53]
                      for i in range(400)], dtype=np.uint64)
    assert kept == {1000 + i for i in range(400)
                    if naive_sample_hash(map(int, words[i])) % rate == 0}
    assert [int(h) for h in sample_hash(words)] == [naive_sample_hash(map(int, w)) for w in words]


def test_sampled_flows_spread_over_the_hash_index():
    # sampled keys must not share the low bits the engine's index uses
    keys = np.array([[0, 0x0A000001, 0, 0x0A000002, 4 << 48 | 6 << 32 | i << 16 | 80]
                     for i in range(20000)], dtype=np.uint64)
    sel = keys[sample_hash(keys) % np.uint64(16) == 0]
    pos = {int(K.key_hash(*(np.uint64(w) for w in k))) & 1023 for k in sel}
    assert len(pos) > 600


def test_fragments_held_for_a_filtered_first_fragment_are_filtered():
    first = pkt(1 * SEC, "10.0.0.1", 5000, "10.0.0.2", 22)
    first["pflags"] |= layout.PF_MORE_FRAGS
    first["frag_id"] = 7
    later = pkt(0, "10.0.0.1", 0, "10.0.0.2", 0)
    later["pflags"] = layout.PF_FRAG | layout.PF_MAC
    later["frag_id"] = 7
    later["frag_off"] = 1480
    t = FlowTracker(config=TrackerConfig(exclude_ports=(22,)), events="ended")
    evs = t.track_batch(to_array([later, first])) + t.finish()
    s = t.stats
    assert evs == []
    assert (s.packets_filtered, s.fragments_held, s.packets_unmatched) == (2, 0, 0)


# ---- the twin ---------------------------------------------------------------------------------

HOSTS = ["10.0.0.1", "10.0.1.2", "192.168.5.5", "fd00::1", "fd00:9::2"]
packet = st.builds(
    lambda ts, s, d, sp, dp, proto, flags: pkt(
        ts, HOSTS[s] if (s < 3) == (d < 3) else HOSTS[d], sp, HOSTS[d], dp,
        flags=flags if proto == 6 else None, proto=proto, smac=s + 1, dmac=d + 1),
    ts=st.integers(0, 5), s=st.integers(0, 4), d=st.integers(0, 4),
    sp=st.sampled_from([22, 53, 80, 1000]), dp=st.sampled_from([22, 53, 80, 1000]),
    proto=st.sampled_from([6, 17, 1, 58]), flags=st.sampled_from([0x02, 0x12, 0x10, 0x11]))
lists = st.fixed_dictionaries({
    "cidrs": st.lists(st.sampled_from(["10.0.0.0/16", "10.0.0.1/32", "192.168.0.0/16",
                                       "fd00::/16", "fd00:9::/32", "0.0.0.0/0"]), max_size=2),
    "ports": st.lists(st.sampled_from([22, 53, 80, 0]), max_size=2),
    "protocols": st.lists(st.sampled_from([6, 17, 1]), max_size=2),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(packet, max_size=40), lists, lists, st.sampled_from([1, 2, 3]),
       st.sampled_from([0, 2, 3]))
def test_engine_equals_naive_twin(pkts, inc, exc, rate, kind):
    t = 0
    for p in pkts:
        t += p["ts"] * SEC
        p["ts"] = t
    cfg = TrackerConfig(sample_rate=rate, **{f"include_{k}": tuple(v) for k, v in inc.items()},
                        **{f"exclude_{k}": tuple(v) for k, v in exc.items()})
    ext = {0: FiveTuple(), 2: IpPair(), 3: MacPair()}[kind]
    fast = FlowTracker(ext, cfg)
    naive = NaiveTracker(kind, flt={"include": inc, "exclude": exc}, sample_rate=rate)
    got = []
    for recs in fast.process(to_array(pkts)):
        got += records_to_tuples(recs)
    for recs in fast.process_sweep(int(fast._ctl[K.C_LAST_TS]), K.END_SHUTDOWN):
        got += records_to_tuples(recs)
    want = [e for p in pkts for e in naive.track(p)] + naive.finish()
    assert got == want
    s = fast.stats
    assert (s.packets_filtered, s.packets_sampled_out) == (naive.filtered, naive.sampled_out)
    assert s.packets_matched + s.packets_filtered + s.packets_sampled_out == len(pkts)


def test_naive_passes_reads_both_ends():
    p = pkt(0, "10.0.0.1", 1, "192.168.0.1", 2)
    assert naive_passes({"include": {"cidrs": ["192.168.0.0/16"]}}, p)
    assert not naive_passes({"exclude": {"ports": [2]}}, p)


# ---- records carry the rate -------------------------------------------------------------------


def _sampled_records(rate):
    t = FlowTracker(config=TrackerConfig(sample_rate=rate), events="ended")
    pkts = [pkt(i * 1000, *(("fd00::1", 1000 + i, "fd00::2") if i % 2 else
                            ("10.0.0.1", 1000 + i, "10.0.0.2")), 53) for i in range(64)]
    recs = [r.copy() for r in t.process(to_array(pkts))] + [r.copy() for r in t.process_finish()]
    return np.concatenate(recs)


def test_jsonl_ended_records_carry_the_rate():
    import io

    from flowscope.output.jsonl import JsonlWriter
    from naive_jsonl import NaiveJsonlWriter

    for rate, want in ((1, None), (4, 4)):
        recs = _sampled_records(rate)
        fast, naive = io.StringIO(), io.StringIO()
        JsonlWriter(fast).write_records(recs)
        NaiveJsonlWriter(naive).write_records(recs)
        assert fast.getvalue() == naive.getvalue()
        import json

        rows = [json.loads(x) for x in fast.getvalue().splitlines()]
        assert rows and all(r.get("sample_rate") == want for r in rows)


@pytest.mark.parametrize("records", ["biflow", "uniflow"])
def test_ipfix_records_carry_sampling_flow_interval(records):
    from flowscope.output.ipfix import IpfixExporter
    from test_ipfix import UdpSink, decode_ipfix

    recs = _sampled_records(4)
    sink = UdpSink()
    try:
        exp = IpfixExporter("127.0.0.1", sink.port, records=records, sample_rate=4)
        exp.write_records(recs)
        exp.close()
        _, _, got = decode_ipfix(sink.take(1000, timeout=1.0))
    finally:
        sink.close()
    assert len(got) >= len(recs)
    assert all(r[(396, 0)] == 4 for r in got)
