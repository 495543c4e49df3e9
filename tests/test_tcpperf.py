"""TCP performance fields: handshake RTT, retransmissions, out-of-order segments, zero windows.

Crafted sequences through the engine (``FlowTracker``), the sequence kernel against its
plain-Python twin (``naive_zeek.SeqTrack``) on random segments, and the Zeek ``T``/``W``
letters that come from the same counts.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowscope import layout
from flowscope._kernels import engine as K
from flowscope._kernels import tcpseq as T
from flowscope.output.zeek import conn_record
from flowscope.tracker import FlowTracker
from naive_zeek import SeqTrack
from pktgen import pkt, to_array
from test_zeek import ACK, FIN, PSH, RST, SYN, tcp

MS = 1_000_000  # tcp() takes its time in ms


def ended(pkts, zeek=False):
    t = FlowTracker(events="ended", zeek=zeek)
    arr = to_array(pkts)
    recs = [r for b in list(t.process(arr)) + list(t.process_finish()) for r in b
            if r["kind"] == layout.EV_ENDED]
    assert len(recs) == 1, recs
    return recs[0]


def hs():
    return [tcp(0, "c", SYN, 100), tcp(3, "s", SYN | ACK, 500, 101), tcp(4, "c", ACK, 101, 501)]


def data(ts, frm, seq, n, ack=0, window=1000, flags=PSH | ACK):
    return tcp(ts, frm, flags, seq, ack, payload=n, window=window)


def test_handshake_rtt_split_at_the_sensor():
    r = ended(hs())
    assert r["rtt_resp"] == 3 * MS and r["rtt_init"] == 1 * MS


def test_rtt_uses_the_syn_the_syn_ack_answered():
    r = ended([tcp(0, "c", SYN, 100), tcp(10, "c", SYN, 100), tcp(12, "s", SYN | ACK, 500, 101),
               tcp(13, "c", ACK, 101, 501)])
    assert r["rtt_resp"] == 2 * MS and r["rtt_init"] == 1 * MS


def test_python_api_carries_the_fields():
    from flowscope import TcpPerf

    t = FlowTracker()
    pk = hs() + [data(5, "c", 101, 100, 501), data(6, "c", 101, 100, 501)]
    ev = t.track_batch(to_array(pk)) + t.finish()
    (e,) = [x for x in ev if x.kind == "ended"]
    assert e.tcp == TcpPerf(0.003, 0.001, 1, 0, 100, 0, 0, 0, 0, 0)
    assert abs(e.tcp.rtt - 0.004) < 1e-12
    u = FlowTracker()
    (e,) = [x for x in u.track_batch(to_array([pkt(0)])) + u.finish() if x.kind == "ended"]
    assert e.tcp is None  # UDP


def test_no_handshake_no_rtt():
    r = ended([data(0, "c", 100, 10), data(1, "s", 500, 10, 110)])
    assert r["rtt_resp"] == -1 and r["rtt_init"] == -1
    r = ended([tcp(0, "c", SYN, 100), tcp(3, "s", SYN | ACK, 500, 101)])
    assert r["rtt_resp"] == 3 * MS and r["rtt_init"] == -1


def test_retransmission_counts_packets_and_bytes():
    r = ended(hs() + [data(5, "c", 101, 100, 501), data(6, "c", 101, 100, 501),
                      data(7, "c", 151, 50, 501), data(8, "s", 501, 10, 201)])
    assert list(r["retrans_pkts"]) == [2, 0] and list(r["retrans_bytes"]) == [150, 0]
    assert list(r["ooo_pkts"]) == [0, 0]


def test_out_of_order_fills_the_hole():
    # 101..201 lost before the sensor, 201..301 arrives, then 101..201 (in the hole)
    r = ended(hs() + [data(5, "c", 201, 100, 501), data(6, "c", 101, 50, 501),
                      data(7, "c", 151, 50, 501), data(8, "c", 151, 50, 501)])
    assert list(r["ooo_pkts"]) == [2, 0]
    assert list(r["retrans_pkts"]) == [1, 0] and list(r["retrans_bytes"]) == [50, 0]


def test_zero_window_until_the_peer_fins():
    r = ended(hs() + [tcp(5, "s", ACK, 501, 101, window=0), tcp(6, "s", ACK, 501, 101, window=0),
                      tcp(7, "c", FIN | ACK, 101, 501), tcp(8, "s", ACK, 501, 102, window=0)])
    assert list(r["zero_win"]) == [0, 2]


def test_a_fin_ahead_of_missing_data_leaves_a_hole():
    r = ended(hs() + [tcp(5, "c", FIN | ACK, 121, 501), data(6, "c", 101, 20, 501),
                      data(7, "c", 101, 20, 501)])
    assert list(r["ooo_pkts"]) == [1, 0] and list(r["retrans_pkts"]) == [1, 0]


def test_rst_and_keepalive_are_not_retransmissions():
    # a window probe / keep-alive without payload is no retransmission
    r = ended(hs() + [data(5, "c", 101, 10, 501), tcp(6, "c", ACK, 110, 501),
                      tcp(7, "c", RST | ACK, 111, 501)])
    assert list(r["retrans_pkts"]) == [0, 0]


def test_zeek_t_letters_at_1_10_100():
    pk = hs() + [data(5, "c", 101, 10, 501)]
    pk += [data(6 + i, "c", 101, 10, 501) for i in range(100)]
    r = ended(pk, zeek=True)
    assert r["retrans_pkts"][0] == 100
    c = conn_record(r)
    assert c["history"] == "ShADTTT"


def test_zeek_w_and_t_follow_the_same_counts():
    pk = hs() + [tcp(5, "s", ACK, 501, 101, window=0)] + [
        data(6, "c", 201, 10, 501), data(7, "c", 101, 10, 501)]
    r = ended(pk, zeek=True)
    assert list(r["zero_win"]) == [0, 1] and list(r["ooo_pkts"]) == [1, 0]
    assert conn_record(r)["history"] == "ShAawDT"


# ---- the kernel and its twin ----------------------------------------------------------

SEGS = st.lists(st.tuples(st.integers(0, 1), st.sampled_from(
    [ACK, PSH | ACK, PSH | ACK, SYN, SYN | ACK, FIN | ACK, RST, RST | ACK, 0]),
    st.integers(-3000, 3000), st.integers(-3000, 3000), st.sampled_from([0, 0, 1, 100, 1460]),
    st.sampled_from([0, 100, 65535])), min_size=1, max_size=60)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SEGS, st.sampled_from([0, 2**31 - 1, 2**32 - 1000, 77]))
def test_seq_step_equals_twin(segs, isn):
    fint = np.zeros((1, K.F_SIZE), dtype=np.int64)
    T.seq_reset(fint, 0)
    twin = SeqTrack()
    for i, (side, fl, dseq, dack, n, win) in enumerate(segs):
        seq, ack = (isn + dseq) % 2**32, (isn + 5000 + dack) % 2**32
        got = T.seq_step(fint, 0, side, fl, seq, ack, n, win)
        want = twin.step(side, fl, seq, ack, n, win)
        assert got == want, i
        for d in range(2):
            assert fint[0, T.F_SQ_START0 + d] == twin.start[d]
            assert fint[0, T.F_SQ_HIGH0 + d] == twin.high[d]
            assert fint[0, T.F_SQ_ACKED0 + d] == twin.acked[d]
            assert fint[0, T.F_RTX0 + d] == twin.rtx[d]
            assert fint[0, T.F_RTXB0 + d] == twin.rtx_bytes[d]
            assert fint[0, T.F_OOO0 + d] == twin.ooo[d]
            assert fint[0, T.F_ZW0 + d] == twin.zw[d]


def test_is_scaled():
    assert [n for n in range(1, 2000) if T.is_scaled(n)] == [1, 10, 100, 1000]


# ---- tshark on the shared captures (docs/semantics.md, "Agreement with tshark") ----------

#: capture -> (TCP flows, flows that differ, retrans, ooo, zero_win, flows with RTT), each
#: count as (tshark, flowscope): the table of docs/semantics.md; every difference is one of
#: the kinds explained there.
TSHARK = {
    "ndpi__1kxun.pcap": (98, 18, (47, 49), (9, 9), (0, 0), (22, 22)),
    "ndpi__tcp_scan.pcapng": (7, 2, (0, 0), (0, 0), (0, 0), (4, 2)),
    "sanders__tcp_retransmissions.pcapng": (1, 0, (5, 5), (0, 0), (0, 0), (0, 0)),
    "sanders__http_espn.pcapng": (25, 0, (0, 0), (0, 0), (0, 0), (25, 25)),
    "tcpdump__ssh.pcap": (1, 0, (1, 1), (0, 0), (0, 0), (1, 1)),
    "zeek__smtp.pcap": (6, 1, (6, 6), (1, 0), (0, 0), (3, 3)),
    "zeek__tcp__ctu-64702-888.pcap": (1, 1, (3, 1), (2, 1), (0, 0), (0, 0)),
    "zeek__tcp__fin_retransmission.pcap": (1, 1, (2, 0), (0, 0), (0, 0), (1, 1)),
    "zeek__tcp__syn-then-stuff-then-rst.pcap": (1, 1, (1, 0), (0, 0), (0, 0), (1, 0)),
    "zeek__tcp__tcp-fast-open.pcap": (2, 1, (0, 1), (0, 0), (0, 0), (2, 2)),
    "zeek__var-services-std-ports.pcap": (6, 1, (1, 0), (0, 0), (0, 0), (6, 6)),
    "zeek__wikipedia.pcap": (10, 0, (0, 0), (0, 0), (0, 0), (8, 8)),
    "zeek__ftp__ipv6.pcap": (6, 0, (0, 0), (0, 0), (0, 0), (6, 6)),
}


def _compare_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "tcpperf_compare.py"
    spec = importlib.util.spec_from_file_location("tcpperf_compare", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark not installed (scripts/setup.sh)")
@pytest.mark.parametrize("name", sorted(TSHARK))
def test_agreement_with_tshark(name):
    from conftest import shared_pcaps_dir

    path = shared_pcaps_dir() / name
    if not path.exists():
        pytest.skip(f"{name} not in the shared captures")
    tot, diff = _compare_module().compare(str(path))
    flows, ndiff, *counts = TSHARK[name]
    got = (tot["flows"], len(diff),
           *(tuple(tot[n]) for n in ("retrans", "ooo", "zero_win", "rtt")))
    assert got == (flows, ndiff, *counts)
    for _key, t, f in diff:  # where both tools time a handshake, they agree to the µs
        if t["rtt"] is not None and f["rtt"] is not None:
            assert t["rtt"] == f["rtt"]


#: capture -> (flows that differ, retrans, ooo, zero_win) as (tcptrace, flowscope), for the
#: captures where tcptrace and flowscope differ (docs/semantics.md, "Agreement with tcptrace")
TCPTRACE = {
    "ndpi__1kxun.pcap": (16, (67, 49), (9, 9), (0, 0)),
    "zeek__smtp.pcap": (1, (7, 6), (0, 0), (0, 0)),
    "zeek__tcp__ctu-64702-888.pcap": (1, (4, 1), (1, 1), (0, 0)),
    "zeek__tcp__fin_retransmission.pcap": (1, (1, 0), (0, 0), (0, 0)),
    "zeek__tcp__syn-then-stuff-then-rst.pcap": (1, (1, 0), (0, 0), (0, 0)),
    "zeek__tcp__tcp-fast-open.pcap": (1, (0, 1), (0, 0), (0, 0)),
    "zeek__var-services-std-ports.pcap": (1, (1, 0), (0, 0), (0, 0)),
    "sanders__tcp_retransmissions.pcapng": (0, (5, 5), (0, 0), (0, 0)),
    "tcpdump__ssh.pcap": (0, (1, 1), (0, 0), (0, 0)),
    "sanders__http_espn.pcapng": (0, (0, 0), (0, 0), (0, 0)),
}


@pytest.mark.skipif(not shutil.which("tcptrace"), reason="tcptrace not installed (setup.sh)")
@pytest.mark.parametrize("name", sorted(TCPTRACE))
def test_agreement_with_tcptrace(name):
    from conftest import shared_pcaps_dir

    path = shared_pcaps_dir() / name
    if not path.exists():
        pytest.skip(f"{name} not in the shared captures")
    tot, diff = _compare_module().compare(str(path), "tcptrace")
    got = (len(diff), *(tuple(tot[n]) for n in ("retrans", "ooo", "zero_win")))
    assert got == TCPTRACE[name]


def _lossy_capture(path) -> None:
    """scripts/live_traffic.py's crafted lossy exchange as an Ethernet pcap, 1 ms apart."""
    import importlib.util
    import struct
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "scripts" / "live_traffic.py"
    spec = importlib.util.spec_from_file_location("live_traffic", src)
    lt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lt)
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, ip in enumerate(lt.lossy_tcp("10.9.0.1", "10.9.0.2", 41000, 8084)):
            fr = b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + ip
            us = 1_700_000_000_000_000 + i * 1000
            f.write(struct.pack("<IIII", us // 10**6, us % 10**6, len(fr), len(fr)) + fr)


@pytest.mark.parametrize("tool, want", [
    # tshark: the second hole filler is a retransmission for it (its reordering heuristic)
    ("tshark", {"flows": 1, "retrans": [106, 105], "ooo": [1, 2], "zero_win": [12, 12],
                "rtt": [1, 1]}),
    # tcptrace: the 95 segments re-sent against the zero window are "zwnd probe pkts"
    ("tcptrace", {"flows": 1, "retrans": [10, 105], "ooo": [2, 2], "zero_win": [12, 12],
                  "rtt": [0, 0]}),
])
def test_crafted_lossy_exchange_against_the_tools(tmp_path, tool, want):
    if not shutil.which(tool):
        pytest.skip(f"{tool} not installed (scripts/setup.sh)")
    cap = tmp_path / "lossy.pcap"
    _lossy_capture(cap)
    tot, diff = _compare_module().compare(str(cap), tool)
    assert tot == want
    if tool == "tshark":
        (_key, t, f), = diff
        assert t["rtt"] == f["rtt"] == 0.002  # SYN, SYN/ACK, ACK 1 ms apart
