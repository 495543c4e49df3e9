"""Scenario tests of the tracker against semantics.md, one test per scenario."""

from __future__ import annotations

import pytest

from flowscope import (
    EndReason,
    FiveTuple,
    FlowSide,
    FlowState,
    FlowTracker,
    IpPair,
    L4Proto,
    MacPair,
    TrackerConfig,
)
from flowscope.events import Ended, Established, Packet, Started, StateChange
from pktgen import pkt, to_array

S, SA, A, FA, R, PA = 0x02, 0x12, 0x10, 0x11, 0x04, 0x18
C = "10.0.0.1"
SRV = "10.0.0.2"


def fwd(ts, flags=None, payload=0, **kw):
    return pkt(ts, C, 1234, SRV, 80, flags=flags, payload=payload, **kw)


def rev(ts, flags=None, payload=0, **kw):
    return pkt(ts, SRV, 80, C, 1234, flags=flags, payload=payload, **kw)


def run(tracker, *pkts):
    """Events of each packet, one list per packet."""
    return [tracker.track_batch(to_array([p])) for p in pkts]


def kinds(events):
    return [type(e).__name__ for e in events]


def test_reference_trace_event_by_event():
    tr = FlowTracker()
    per_packet = run(
        tr, fwd(1, S), rev(2, SA), fwd(3, A), fwd(4, PA, 10), rev(5, PA, 20), fwd(6, FA),
        rev(7, FA), fwd(8, A),
    )
    assert [kinds(p) for p in per_packet] == [
        ["Started", "StateChange", "Packet"],
        ["StateChange", "Packet"],
        ["Established", "Packet"],
        ["Packet"],
        ["Packet"],
        ["StateChange", "Packet"],
        ["StateChange", "Packet"],
        ["StateChange", "Packet", "Ended"],
    ]
    started = per_packet[0][0]
    assert started.side == FlowSide.Initiator and started.l4 == L4Proto.Tcp
    assert (per_packet[0][1].from_state, per_packet[0][1].to_state) == (
        FlowState.Active, FlowState.SynSent)
    assert (per_packet[1][0].from_state, per_packet[1][0].to_state) == (
        FlowState.SynSent, FlowState.SynReceived)
    assert per_packet[1][1].side == FlowSide.Responder
    assert (per_packet[5][0].from_state, per_packet[5][0].to_state) == (
        FlowState.Established, FlowState.FinWait)
    assert (per_packet[6][0].from_state, per_packet[6][0].to_state) == (
        FlowState.FinWait, FlowState.ClosingTcp)
    assert (per_packet[7][0].from_state, per_packet[7][0].to_state) == (
        FlowState.ClosingTcp, FlowState.Closed)
    ended = per_packet[7][2]
    assert ended.reason == EndReason.Fin
    assert ended.history == "SsDdFf"
    assert ended.stats.initiator_packets == 5 and ended.stats.responder_packets == 3
    assert ended.stats.initiator_bytes == 300 and ended.stats.responder_bytes == 180
    assert str(ended.stats.started) == "0.000000001"
    assert ended.key() == started.key()
    assert str(ended.key()) == "tcp 10.0.0.1:1234 <-> 10.0.0.2:80"
    assert len(tr) == 0 and tr.stats.flows_ended == 1


def test_three_way_handshake():
    tr = FlowTracker()
    evs = [e for p in run(tr, fwd(1, S), rev(2, SA), fwd(3, A)) for e in p]
    est = [e for e in evs if isinstance(e, Established)]
    assert len(est) == 1 and est[0].ts.nsec == 3
    # Established is never also reported as a StateChange
    assert not any(isinstance(e, StateChange) and e.to_state == FlowState.Established for e in evs)


def test_udp_first_packet_gives_started_and_packet():
    tr = FlowTracker()
    (evs,) = run(tr, pkt(1, "10.0.0.9", 5353, "10.0.0.1", 53, payload=30))
    assert kinds(evs) == ["Started", "Packet"]
    assert evs[0].l4 == L4Proto.Udp and evs[0].side == FlowSide.Initiator


def test_rst_in_any_state():
    for prefix in ([], [S], [S, SA], [S, SA, A], [S, SA, A, FA]):
        tr = FlowTracker()
        pk = []
        for i, f in enumerate(prefix):
            pk.append((fwd if f in (S, A, FA) else rev)(i + 1, f))
        evs = [e for p in run(tr, *pk, rev(10, R)) for e in p]
        assert isinstance(evs[-1], Ended) and evs[-1].reason == EndReason.Rst
        sc = evs[-3]
        assert isinstance(sc, StateChange) and sc.to_state == FlowState.Reset
        assert evs[-1].history.endswith("r" if prefix else "R")


def test_rst_on_new_flow():
    tr = FlowTracker()
    (evs,) = run(tr, fwd(1, R))
    assert kinds(evs) == ["Started", "StateChange", "Packet", "Ended"]
    assert (evs[1].from_state, evs[1].to_state) == (FlowState.Active, FlowState.Reset)
    assert evs[3].reason == EndReason.Rst and evs[3].history == "R"


def test_syn_retransmit_stays():
    tr = FlowTracker()
    a, b, c = run(tr, fwd(1, S), fwd(2, S), fwd(3, S))
    assert kinds(b) == ["Packet"] and kinds(c) == ["Packet"]
    (ended,) = tr.finish()
    assert ended.history == "SSS" and ended.state == FlowState.SynSent


def test_midstream_pickup_stays_active_and_ignores_fin():
    tr = FlowTracker()
    evs = [e for p in run(tr, fwd(1, PA, 100), rev(2, A), fwd(3, FA), rev(4, FA), fwd(5, A))
           for e in p]
    assert kinds(evs) == ["Started"] + ["Packet"] * 5
    (ended,) = tr.finish()
    assert ended.state == FlowState.Active and ended.history == "DFf"
    assert ended.reason == EndReason.Shutdown


def test_synack_first_stays_in_synsent_without_inference():
    tr = FlowTracker()
    (evs,) = run(tr, rev(1, SA))
    assert evs[0].side == FlowSide.Initiator
    assert (evs[1].from_state, evs[1].to_state) == (FlowState.Active, FlowState.SynSent)
    run(tr, fwd(2, A), rev(3, PA, 5))
    (ended,) = tr.finish()
    assert ended.state == FlowState.SynSent and ended.history == "SD"


def test_synack_first_with_inference_makes_sender_responder():
    tr = FlowTracker(config=TrackerConfig(infer_tcp_initiator=True))
    (evs,) = run(tr, rev(1, SA))
    assert kinds(evs) == ["Started", "Packet"]
    assert evs[0].side == FlowSide.Responder and evs[1].side == FlowSide.Responder
    run(tr, fwd(2, A))
    (ended,) = tr.finish()
    assert ended.stats.initiator_packets == 1 and ended.stats.responder_packets == 1
    assert ended.history == "s"


def test_fin_retransmit_from_same_side_changes_nothing():
    tr = FlowTracker()
    run(tr, fwd(1, S), rev(2, SA), fwd(3, A), fwd(4, FA))
    (evs,) = run(tr, fwd(5, FA))
    assert kinds(evs) == ["Packet"]
    (evs,) = run(tr, fwd(6, A))  # an ACK in FinWait does not close
    assert kinds(evs) == ["Packet"]
    (evs,) = run(tr, rev(7, FA))
    assert kinds(evs) == ["StateChange", "Packet"] and evs[0].to_state == FlowState.ClosingTcp
    (evs,) = run(tr, rev(8, A))  # the ACK may come from either side
    assert kinds(evs) == ["StateChange", "Packet", "Ended"]
    assert evs[2].history == "SsFFf"


def test_history_is_capped_at_16():
    tr = FlowTracker()
    run(tr, fwd(1, S), rev(2, SA), fwd(3, A))
    for i in range(40):
        run(tr, (fwd if i % 2 else rev)(10 + i, PA, 1))
    (ended,) = tr.finish()
    assert len(ended.history) == 16 and ended.history.startswith("SsdDdD")


def test_side_is_the_first_packets_orientation_not_the_syn_sender():
    tr = FlowTracker()
    (evs,) = run(tr, rev(1, A))  # server-side ACK seen first
    assert evs[0].side == FlowSide.Initiator
    (evs,) = run(tr, fwd(2, S))
    assert evs[-1].side == FlowSide.Responder
    (ended,) = tr.finish()
    assert ended.history == "s"  # the SYN came from the responder side: no SynSent
    assert ended.state == FlowState.Active


def test_bidirectional_keys_are_equal_and_directional_keys_are_not():
    tr = FlowTracker()
    a, b = run(tr, fwd(1, S), rev(2, SA))
    assert a[0].key() == b[0].key()
    assert tr.stats.flows_created == 1
    tr = FlowTracker(FiveTuple.directional())
    a, b = run(tr, fwd(1, S), rev(2, SA))
    assert tr.stats.flows_created == 2
    assert all(e.side == FlowSide.Initiator for e in a + b if hasattr(e, "side"))
    assert a[0].key().a_port == 1234 and b[0].key().a_port == 80


def test_idle_expiry_is_inclusive():
    tr = FlowTracker(config=TrackerConfig(udp_timeout=60))
    run(tr, pkt(10**9, "10.0.0.1", 1, "10.0.0.2", 2))
    assert tr.sweep(60 * 10**9 + 10**9 - 1) == []
    (ended,) = tr.sweep(61 * 10**9)
    assert ended.reason == EndReason.IdleTimeout and str(ended.ts) == "61.000000000"
    assert len(tr) == 0


def test_protocol_timeouts_defaults():
    tr = FlowTracker()
    run(tr, fwd(0, S), pkt(0, proto=17), pkt(0, proto=1), pkt(0, proto=47))
    assert {e.key().proto for e in tr.sweep(30 * 10**9)} == {1, 47}
    assert {e.key().proto for e in tr.sweep(60 * 10**9)} == {17}
    assert [e.key().proto for e in tr.sweep(300 * 10**9)] == [6]


def test_per_key_timeout_function():
    cfg = TrackerConfig(timeout_fn=lambda k: 5.0 if k.b_port == 53 else None)
    tr = FlowTracker(config=cfg)
    run(tr, pkt(0, "10.0.0.1", 1000, "10.0.0.2", 53), pkt(0, "10.0.0.1", 1000, "10.0.0.2", 54))
    (ended,) = tr.sweep(5 * 10**9)
    assert ended.key().b_port == 53
    assert [e.key().b_port for e in tr.sweep(60 * 10**9)] == [54]


def test_eviction_by_access_order_not_timestamps():
    tr = FlowTracker(config=TrackerConfig(max_flows=2))
    run(tr, pkt(100, dport=1), pkt(50, dport=2), pkt(200, dport=1))  # flow 2 least recently touched
    (evs,) = run(tr, pkt(300, dport=3))
    assert kinds(evs) == ["Ended", "Started", "Packet"]
    assert evs[0].reason == EndReason.Evicted and evs[0].key().b_port == 2
    st = tr.stats
    assert st.flows_evicted == 1 and len(tr) == 2
    assert st.flows_created == st.flows_ended + st.open_flows


def test_max_flows_one():
    tr = FlowTracker(config=TrackerConfig(max_flows=1))
    for i in range(5):
        run(tr, pkt(i, dport=i + 1))
        assert len(tr) == 1
    assert tr.stats.flows_evicted == 4


def test_later_packet_after_close_starts_a_new_flow():
    tr = FlowTracker()
    run(tr, fwd(1, R))
    (evs,) = run(tr, fwd(2, A))
    assert kinds(evs) == ["Started", "Packet"]
    assert tr.stats.flows_created == 2


def test_ip_pair_has_no_tcp_state_or_history():
    tr = FlowTracker(IpPair())
    run(tr, fwd(1, S), rev(2, SA), pkt(3, C, 5, SRV, 6))
    assert tr.stats.flows_created == 1
    (ended,) = tr.finish()
    assert ended.history == "" and ended.state == FlowState.Active
    assert ended.stats.packets == 3
    assert str(ended.key()) == "10.0.0.1 <-> 10.0.0.2"


def test_mac_pair_keys_by_sorted_macs():
    tr = FlowTracker(MacPair())
    run(tr, pkt(1, smac=0x020000000002, dmac=0x020000000001),
        pkt(2, smac=0x020000000001, dmac=0x020000000002))
    (ended,) = tr.finish()
    assert ended.key().a == "02:00:00:00:00:01" and ended.key().b == "02:00:00:00:00:02"
    assert ended.stats.initiator_packets == 1 and ended.stats.responder_packets == 1


def test_unmatched_packets_are_counted_without_events():
    tr = FlowTracker()
    p = pkt(1)
    p["l3"] = 0
    (evs,) = run(tr, p)
    assert evs == [] and tr.stats.packets_unmatched == 1 and tr.stats.flows_created == 0


def test_ipv4_sorts_before_and_apart_from_ipv6():
    tr = FlowTracker()
    (a,) = run(tr, pkt(1, "::1", 5, "::2", 6))
    (b,) = run(tr, pkt(1, "0.0.0.1", 5, "0.0.0.2", 6))
    assert a[0].key() != b[0].key() and tr.stats.flows_created == 2
    assert str(a[0].key()) == "udp [::1]:5 <-> [::2]:6"


def test_automatic_sweep_by_packet_time():
    tr = FlowTracker(config=TrackerConfig(sweep_interval=1.0, udp_timeout=2.0))
    run(tr, pkt(10**9, dport=1))
    evs = [e for p in run(tr, pkt(2 * 10**9, dport=2), pkt(3 * 10**9 + 1, dport=2)) for e in p]
    assert kinds(evs) == ["Started", "Packet", "Ended", "Packet"]
    assert evs[2].key().b_port == 1 and evs[2].reason == EndReason.IdleTimeout


def test_finish_ends_everything_oldest_activity_first():
    tr = FlowTracker()
    run(tr, pkt(1, dport=1), pkt(2, dport=2), pkt(3, dport=1))
    ended = tr.finish()
    assert [e.key().b_port for e in ended] == [2, 1]
    assert all(e.reason == EndReason.Shutdown for e in ended)
    assert tr.finish() == []


def test_events_mask_ended_only():
    tr = FlowTracker(events="ended")
    evs = [e for p in run(tr, fwd(1, S), rev(2, SA), fwd(3, A), fwd(4, R)) for e in p]
    assert kinds(evs) == ["Ended"]
    with pytest.raises(ValueError):
        FlowTracker(events="some")


def test_small_event_buffer_gives_the_same_stream():
    pk = [pkt(i, dport=i % 7) for i in range(200)] + [fwd(300, S), rev(301, R)]
    big = FlowTracker(config=TrackerConfig(max_flows=3, sweep_interval=1e-8, udp_timeout=1e-7))
    small = FlowTracker(config=TrackerConfig(max_flows=3, sweep_interval=1e-8, udp_timeout=1e-7),
                        event_capacity=64)
    arr = to_array(pk)
    assert big.track_batch(arr) + big.finish() == small.track_batch(arr) + small.finish()


def test_event_objects_have_keys_and_kinds():
    tr = FlowTracker()
    evs = [e for p in run(tr, fwd(1, S), rev(2, SA), fwd(3, A), fwd(4, R)) for e in p]
    assert {e.kind for e in evs} == {"started", "state_change", "packet", "established", "ended"}
    assert all(e.key() == evs[0].key() for e in evs)
    assert isinstance(evs[0], Started) and isinstance(evs[2], Packet)


def test_warmup_compiles_every_kernel_and_reports_the_time():
    from flowscope import warmup

    secs = warmup()
    assert isinstance(secs, float) and secs > 0


def test_icmp_type_and_code_of_the_first_packet_reach_ended_records():
    from flowscope import layout

    p = pkt(1, proto=1)
    p["pflags"] |= layout.PF_ICMP
    p["icmp_type"], p["icmp_code"] = 8, 0
    tr = FlowTracker(events="ended")
    tr.track_batch(to_array([p]))
    (recs,) = list(tr.process_finish())
    assert int(recs[0]["icmp"]) == layout.ICMP_VALID | 8 << 8


def test_layout_codes_match_the_kernels():
    from flowscope import layout
    from flowscope._kernels import zeek

    assert (layout.ZEEK_WORDS, layout.ZEEK_HISTORY_MAX) == (zeek.ZEEK_WORDS, zeek.ZEEK_HISTORY_MAX)


@pytest.mark.parametrize("name", ["zeek__wikipedia.pcap", "zeek__ftp__ipv6.pcap",
                                  "zeek__tcp__fin_retransmission.pcap"])
def test_track_packet_views_equals_batch_path_on_real_frames(name):
    """track(PacketView) frame by frame == track_batch over the reader's batches."""
    from pathlib import Path

    from flowscope import PacketView, Timestamp
    from flowscope.pcap import CaptureReader
    from test_pcap import naive_pcap_records

    path = Path(__file__).parent / "data" / name
    one = FlowTracker(config=TrackerConfig(max_flows=8))
    many = FlowTracker(config=TrackerConfig(max_flows=8))
    singles = []
    recs, link = naive_pcap_records(path.read_bytes())
    for ts_ns, _, frame in recs:
        singles += one.track(PacketView(frame, Timestamp.from_ns(ts_ns), link))
    batch = []
    for b in CaptureReader(path):
        batch += many.track_batch(b)
    assert singles and singles + one.finish() == batch + many.finish()


def test_extractors_extract_key_orientation_and_tcp_info():
    from flowscope import Orientation, PacketView, Timestamp

    syn = bytes.fromhex(
        "0000000000020000000000010800"
        "450000280001000040060000" "0a0000020a000001"
        "0050162e00000064000000005012200000000000")  # 10.0.0.2:80 -> 10.0.0.1:5678 SYN+ACK
    view = PacketView(syn, Timestamp(1, 0))
    got = FiveTuple().extract(view)
    assert str(got.key) == "tcp 10.0.0.1:5678 <-> 10.0.0.2:80"
    assert got.orientation == Orientation.Reverse and got.l4 == L4Proto.Tcp
    assert got.tcp.flags == 0x12 and got.tcp.seq == 100 and got.tcp.payload_len == 0
    assert got.tcp.payload_offset == 54
    assert FiveTuple.directional().extract(view).orientation == Orientation.Forward
    assert IpPair().extract(view).tcp is None
    assert MacPair().extract(view).key.a == "00:00:00:00:00:01"
    assert FiveTuple().extract(PacketView(b"\x00" * 10)) is None
