"""Context of a flow offline: interface, VLAN ids and MACs of its first packet, in every format."""

from __future__ import annotations

import io
import json

import numpy as np

from flowscope import FlowTracker, TrackerConfig, layout
from flowscope.output.eve import EveWriter
from flowscope.output.jsonl import JsonlWriter
from flowscope.output.zeek import conn_record
from flowscope.pcap import parse_bytes
from test_bpf_kernel import MAC_A, MAC_B, eth, ipv4, tcp, udp

SEC = 10**9


def _records(frames, cfg=None, zeek=False):
    t = FlowTracker(config=cfg or TrackerConfig(), events="ended", zeek=zeek)
    rows = np.concatenate([parse_bytes(f, (i + 1) * SEC) for i, f in enumerate(frames)])
    return np.concatenate([r.copy() for r in t.process(rows)]
                          + [r.copy() for r in t.process_finish()])


def _jsonl(recs, names=()):
    buf = io.StringIO()
    w = JsonlWriter(buf)
    w.iface_names = list(names)
    w.write_records(recs)
    return [json.loads(x) for x in buf.getvalue().splitlines()]


QINQ = eth(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1000, 53)), tags=[(0x88A8, 13), (0x8100, 10)])
BACK = eth(ipv4("10.0.0.2", "10.0.0.1", 17, udp(53, 1000)), dst=MAC_A, src=MAC_B)


def test_first_packet_context_in_jsonl():
    (r,) = _jsonl(_records([QINQ, BACK]))
    assert r["vlan"] == [13, 10]  # outer first; the untagged answer changes nothing
    assert (r["init_mac"], r["resp_mac"]) == ("02:00:00:00:00:01", "02:00:00:00:00:02")
    assert r["iface"] == "0"
    (r,) = _jsonl(_records([BACK, QINQ]), names=["eth7"])
    assert "vlan" not in r and r["iface"] == "eth7"
    assert r["init_mac"] == "02:00:00:00:00:02"


def test_macs_follow_the_initiator_not_the_first_packet():
    # a SYN+ACK first with infer_tcp_initiator: the initiator is its receiver
    synack = eth(ipv4("10.0.0.2", "10.0.0.1", 6, tcp(80, 1000, 0x12)), dst=MAC_A, src=MAC_B)
    (r,) = _jsonl(_records([synack], TrackerConfig(infer_tcp_initiator=True)))
    assert (r["src_ip"], r["init_mac"], r["resp_mac"]) == (
        "10.0.0.1", "02:00:00:00:00:01", "02:00:00:00:00:02")


def test_eve_vlan_and_ether():
    buf = io.StringIO()
    w = EveWriter(buf)
    w.write_records(_records([QINQ, BACK]))
    (e,) = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert e["vlan"] == [13, 10] and "in_iface" not in e
    assert e["ether"] == {"src_macs": ["02:00:00:00:00:01"], "dest_macs": ["02:00:00:00:00:02"]}
    w.iface_names = ["eth0"]
    buf.seek(0)
    buf.truncate()
    w.write_records(_records([BACK]))
    (e,) = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert e["in_iface"] == "eth0" and "vlan" not in e


def test_zeek_fields_follow_zeeks_originator():
    (rec,) = _records([QINQ, BACK], zeek=True)
    c = conn_record(rec)
    assert (c["vlan"], c["inner_vlan"]) == (13, 10)
    assert (c["orig_l2_addr"], c["resp_l2_addr"]) == ("02:00:00:00:00:01", "02:00:00:00:00:02")
    one = eth(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1000, 53)), tags=[(0x8100, 5)])
    c = conn_record(_records([one], zeek=True)[0])
    assert (c["vlan"], c["inner_vlan"]) == (5, None)


def test_ipfix_context_elements():
    from flowscope.output.ipfix import IpfixExporter
    from test_ipfix import UdpSink, decode_ipfix

    sink = UdpSink()
    try:
        for records in ("biflow", "uniflow"):
            exp = IpfixExporter("127.0.0.1", sink.port, records=records)
            exp.write_records(_records([QINQ, BACK]))
            exp.close()
        _, _, got = decode_ipfix(sink.take(1000, timeout=1.0))
    finally:
        sink.close()
    assert len(got) == 3  # one biflow record, two uniflow records
    for r in got:
        assert (r[(58, 0)], r[(245, 0)], r[(10, 0)]) == (13, 10, 0)
    # sourceMacAddress: the record's source (the responder's in its uniflow record)
    assert [r[(56, 0)] for r in got] == [0x020000000001, 0x020000000001, 0x020000000002]
    assert [r[(80, 0)] for r in got] == [0x020000000002, 0x020000000002, 0x020000000001]


def test_non_ethernet_flows_have_no_macs():
    raw = ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2))
    t = FlowTracker(events="ended")
    rows = parse_bytes(raw, SEC, 101)  # LINKTYPE_RAW
    recs = np.concatenate([r.copy() for r in t.process(rows)]
                          + [r.copy() for r in t.process_finish()])
    (r,) = _jsonl(recs)
    assert "init_mac" not in r and int(recs[0]["has_mac"]) == 0
    assert int(recs[0]["kind"]) == layout.EV_ENDED


def test_pcapng_interface_names_name_the_iface(tmp_path):
    """``flowscope pcap`` on a pcapng whose interfaces have if_name options: JSON Lines
    ``iface`` and EVE ``in_iface`` are the names; an interface without one prints its index."""
    import struct
    import subprocess
    import sys

    from test_pcap import ng_block, ng_option

    o = "<"
    end = struct.pack(o + "HH", 0, 0)
    blocks = [ng_block(o, 0x0A0D0D0A, struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1)),
              ng_block(o, 1, struct.pack(o + "HHI", 1, 0, 0) + ng_option(o, 2, b"eth7\0") + end),
              ng_block(o, 1, struct.pack(o + "HHI", 1, 0, 0))]
    for iface, frame in ((0, QINQ), (1, eth(ipv4("10.0.0.5", "10.0.0.6", 17, udp(7, 8))))):
        blocks.append(ng_block(o, 6, struct.pack(o + "IIIII", iface, 0, 1000, len(frame),
                                                 len(frame)) + frame))
    path = tmp_path / "names.pcapng"
    path.write_bytes(b"".join(blocks))
    got = {}
    for fmt in ("jsonl", "eve"):
        r = subprocess.run([sys.executable, "-m", "flowscope", "pcap", "--format", fmt,
                            str(path)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        got[fmt] = [json.loads(x) for x in r.stdout.splitlines()]
    assert sorted(r["iface"] for r in got["jsonl"]) == ["1", "eth7"]
    assert sorted(str(r.get("in_iface")) for r in got["eve"]) == ["None", "eth7"]


def test_key_vlan_splits_a_five_tuple_by_vlan():
    a = eth(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1000, 53)), tags=[(0x8100, 6)])
    b = eth(ipv4("10.0.0.2", "10.0.0.1", 17, udp(53, 1000)), tags=[(0x88A8, 1), (0x8100, 10)],
            dst=MAC_A, src=MAC_B)
    c = eth(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1000, 53)), tags=[(0x8100, 0x7FF)])
    assert [r["vlan"] for r in _jsonl(_records([a, b, c]))] == [[6]]
    rows = _jsonl(_records([a, b, c, a], TrackerConfig(key_vlan=True)))
    assert sorted((r["vlan"], r["init_pkts"], r["resp_pkts"]) for r in rows) == [
        ([1, 10], 1, 0), ([6], 2, 0), ([0x7FF], 1, 0)]
    # the key holds the VLAN id: the same five-tuple decodes to the same addresses
    recs = _records([a, c], TrackerConfig(key_vlan=True))
    assert sorted(layout.key_vlan_of(int(r["key"][4])) for r in recs) == [6, 0x7FF]
    assert {layout.unpack_meta(int(r["key"][4])) for r in recs} == {
        (layout.EXTRACT_FIVE_TUPLE, 4, 17, 1000, 53)}


def test_key_vlan_makes_both_suricata_vlan_checks_apply(shared_pcaps):
    from test_eve import FLOW_CHECKS, eve_lines, matches

    cap = "suri__eve-flow-vlan__input.pcap"
    events = eve_lines(shared_pcaps / cap, config=TrackerConfig(key_vlan=True))
    checks = [f for c, _i, f in FLOW_CHECKS if c == cap]
    assert len(checks) == 2
    for check in checks:
        assert sum(matches(e, check["match"]) for e in events) == check["count"]
