"""Suricata EVE flow records: field mapping, and suricata-verify's expectations.

suricata-verify ships, next to several of our shared captures, the checks
Suricata's own ``eve.json`` must pass (``*.suricata-test.yaml``). Every
``event_type: flow`` check found there is listed below as either applying
to flowscope (run here with the same matcher semantics as suricata-verify:
dotted keys, exact values, exact count) or differing by design (with the
reason, also in docs/output-formats-eve-ipfix.md). Checks on other event
types (alert, http, stats) concern Suricata's detection engine and
application-layer parsers, which flowscope does not have.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import shared_pcaps_dir
from flowscope import FlowTracker, IpPair, MacPair, layout
from flowscope.community_id import community_id_for_record
from flowscope.config import TrackerConfig
from flowscope.output.eve import EveWriter, eve_flow_ids, eve_time
from flowscope.pcap import CaptureReader

DATA = Path(__file__).parent / "data"
SHARED = shared_pcaps_dir()
EXPECTED = SHARED / "expected"

#: (capture, index of the check in its test.yaml) of the flow checks that apply.
APPLIES = {
    ("suri__bug-6733-syn-packet-flow-output__input.pcap", 0):
        "single SYN flushed at end of input: new / syn_sent / shutdown, all fields",
    ("suri__eve-flow-vlan__input.pcap", 0):
        "the flow's 'vlan' list is its first packet's VLAN ids (single tag here)",
}

#: Flow checks that differ by design, with the reason.
DIFFERS = {
    ("suri__eve-flow-vlan__input.pcap", 1):
        "flowscope keys flows by the five-tuple without VLAN ids (as the reference "
        "semantics define keys), so the single- and the double-tagged ping are one flow, "
        "whose 'vlan' is its first packet's",
}


def eve_lines(path: Path, extractor=None, config=None) -> list[dict]:
    buf = io.StringIO()
    writer = EveWriter(buf)
    tracker = FlowTracker(extractor=extractor, config=config, events="ended")
    for batch in CaptureReader(str(path)):
        for recs in tracker.process(batch):
            writer.write_records(recs)
    for recs in tracker.process_finish():
        writer.write_records(recs)
    writer.close()
    text = buf.getvalue()
    assert text.endswith("\n") or text == ""
    return [json.loads(line) for line in text.splitlines()]


def ended_records(path: Path) -> np.ndarray:
    tracker = FlowTracker(events="ended")
    out = []
    for batch in CaptureReader(str(path)):
        out += [r.copy() for r in tracker.process(batch)]
    out += [r.copy() for r in tracker.process_finish()]
    return np.concatenate(out)


def _lookup(obj, dotted: str):
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


_MISSING = object()


def matches(event: dict, match: dict) -> bool:
    """suricata-verify's filter match: every dotted key present with an equal value."""
    return all(_lookup(event, k) == v for k, v in match.items())


def _flow_checks():
    """Every ``event_type: flow`` filter check in the shared suricata-verify files."""
    out = []
    if not EXPECTED.is_dir():
        return out
    for yml in sorted(EXPECTED.glob("*.suricata-test.yaml")):
        capture = yml.name[: -len(".suricata-test.yaml")]
        doc = yaml.safe_load(yml.read_text()) or {}
        flow_i = 0
        for check in doc.get("checks") or []:
            f = check.get("filter") if isinstance(check, dict) else None
            if f and (f.get("match") or {}).get("event_type") == "flow":
                out.append((capture, flow_i, f))
                flow_i += 1
    return out


FLOW_CHECKS = _flow_checks()


def test_every_suricata_flow_check_is_classified(shared_pcaps):
    found = {(c, i) for c, i, _f in FLOW_CHECKS}
    assert found, "no suricata-verify flow checks found"
    assert found == set(APPLIES) | set(DIFFERS)
    assert not set(APPLIES) & set(DIFFERS)


@pytest.mark.parametrize("capture,index", sorted(APPLIES))
def test_suricata_verify_flow_check(shared_pcaps, capture, index):
    check = next(f for c, i, f in FLOW_CHECKS if (c, i) == (capture, index))
    events = eve_lines(shared_pcaps / capture)
    hits = [e for e in events if matches(e, check["match"])]
    assert len(hits) == check["count"], (check["match"], events)


@pytest.mark.parametrize("capture,index", sorted(DIFFERS))
def test_suricata_verify_flow_check_differs_by_design(shared_pcaps, capture, index):
    check = next(f for c, i, f in FLOW_CHECKS if (c, i) == (capture, index))
    events = eve_lines(shared_pcaps / capture)
    # the difference is the documented one: without the vlan condition the check's
    # other conditions hold, with it nothing matches (one flow, the first packet's vlan)
    rest = {k: v for k, v in check["match"].items() if k != "vlan"}
    assert "vlan" in check["match"]
    assert any(matches(e, rest) for e in events)
    assert not any(matches(e, check["match"]) for e in events)
    assert [e.get("vlan") for e in events] == [[6]]


# ---- field mapping -------------------------------------------------------

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+0000$")


def test_timestamp_format():
    assert eve_time(1_704_164_645_123_456_789) == "2024-01-02T03:04:05.123456+0000"
    assert eve_time(0) == "1970-01-01T00:00:00.000000+0000"


def test_http_get_fin_close():
    (e,) = eve_lines(DATA / "zeek__http__get.pcap")
    assert e["event_type"] == "flow" and e["proto"] == "TCP"
    assert (e["src_ip"], e["src_port"], e["dest_ip"], e["dest_port"]) == (
        "141.142.228.5", 59856, "192.150.187.43", 80)
    assert e["flow"]["pkts_toserver"] + e["flow"]["pkts_toclient"] == 14
    assert e["flow"]["state"] == "closed"
    assert e["flow"]["reason"] == "timeout"  # Suricata logs closed flows on their timeout
    assert e["flow"]["alerted"] is False
    assert e["tcp"]["state"] == "closed"
    assert e["tcp"]["tcp_flags"] == "1b" and e["tcp"]["syn"] and e["tcp"]["fin"]
    assert "rst" not in e["tcp"]
    for k in ("timestamp",):
        assert TS_RE.match(e[k])
    assert TS_RE.match(e["flow"]["start"]) and TS_RE.match(e["flow"]["end"])
    assert e["timestamp"] == e["flow"]["end"]


def test_rst_is_closed():
    (e,) = eve_lines(DATA / "zeek__tcp__single-rst.pcap")
    assert e["flow"]["state"] == "closed" and e["tcp"]["state"] == "closed"
    assert e["tcp"]["rst"] is True and e["tcp"]["tcp_flags_tc"] == "00"


def test_midstream_tcp_has_no_tcp_state():
    # first packet: the server's data segment; flowscope stays Active for life
    (e,) = eve_lines(DATA / "suri__alert-testmyids-midstream__input.pcap")
    assert "state" not in e["tcp"]
    assert e["flow"]["state"] == "established"  # both sides sent, as with stream.midstream
    assert (e["src_port"], e["dest_port"]) == (80, 54186)  # initiator = first sender
    assert "syn" not in e["tcp"] and e["tcp"]["fin"] is True


def test_syn_ack_seen_first_stays_new():
    (e,) = eve_lines(DATA / "zeek__tcp__missing-syn.pcap")
    assert e["tcp"]["state"] == "syn_sent" and e["flow"]["state"] == "new"


def test_icmp_has_type_code_and_no_ports():
    (e,) = eve_lines(DATA / "zeek__icmp__5-pings.pcap")
    assert e["proto"] == "ICMP" and (e["icmp_type"], e["icmp_code"]) == (8, 0)
    assert "src_port" not in e and "dest_port" not in e and "tcp" not in e
    assert e["flow"]["state"] == "established"
    assert e["flow"]["age"] == 5


def test_ipv6_proto_names_and_udp_state():
    events = eve_lines(DATA / "zeek__wikipedia.pcap")
    protos = {e["proto"] for e in events}
    assert protos <= {"TCP", "UDP", "ICMP", "IPv6-ICMP"}
    assert any(":" in e["src_ip"] for e in events)
    for e in events:
        if e["proto"] == "UDP":
            assert e["flow"]["state"] == ("established" if e["flow"]["pkts_toclient"] else "new")
            assert "tcp" not in e


def test_counts_match_engine_and_community_id():
    recs = ended_records(DATA / "zeek__wikipedia.pcap")
    events = eve_lines(DATA / "zeek__wikipedia.pcap")
    assert len(events) == recs.shape[0]
    for e, r in zip(events, recs):
        f = e["flow"]
        assert [f["pkts_toserver"], f["pkts_toclient"]] == r["pkts"].tolist()
        assert [f["bytes_toserver"], f["bytes_toclient"]] == r["bytes"].tolist()
        assert e["community_id"] == community_id_for_record(r)


def test_flow_ids_stable_and_distinct():
    a = eve_lines(DATA / "zeek__wikipedia.pcap")
    b = eve_lines(DATA / "zeek__wikipedia.pcap")
    ids = [e["flow_id"] for e in a]
    assert ids == [e["flow_id"] for e in b]
    assert len(set(ids)) == len(ids)
    assert all(0 < i < 1 << 51 for i in ids)
    assert any(i > 1 << 40 for i in ids)  # large ints, as Suricata's


def test_flow_id_depends_on_key_and_start_only():
    keys = np.array([[1, 2, 3, 4, 5], [1, 2, 3, 4, 6]], dtype=np.uint64)
    st = np.array([10**18, 10**18], dtype=np.int64)
    x = eve_flow_ids(keys, st)
    assert x[0] != x[1]
    assert eve_flow_ids(keys[:1], st[:1])[0] == x[0]


def _synthetic(reasons, states=None, proto=17):
    recs = np.zeros(len(reasons), dtype=layout.EVENT_DTYPE)
    recs["kind"] = layout.EV_ENDED
    recs["key"][:, 1] = 0x0A000001
    recs["key"][:, 3] = 0x0A000002
    recs["key"][:, 4] = (layout.L3_IPV4 << 48) | (proto << 32) | (1000 << 16) | 53
    recs["reason"] = reasons
    if states is not None:
        recs["to_state"] = states
    recs["pkts"][:, 0] = 1
    return recs


def _write(recs, **kw):
    buf = io.StringIO()
    w = EveWriter(buf, **kw)
    w.write_records(recs)
    w.close()
    return [json.loads(x) for x in buf.getvalue().splitlines()], w


def test_reason_mapping():
    events, _w = _write(_synthetic([layout.END_FIN, layout.END_RST, layout.END_IDLE,
                                    layout.END_EVICTED, layout.END_SHUTDOWN]))
    assert [e["flow"]["reason"] for e in events] == [
        "timeout", "timeout", "timeout", "forced", "shutdown"]


def test_tcp_state_mapping():
    st = [layout.ST_SYN_SENT, layout.ST_SYN_RECEIVED, layout.ST_ESTABLISHED,
          layout.ST_FIN_WAIT, layout.ST_CLOSING_TCP, layout.ST_CLOSED, layout.ST_RESET]
    recs = _synthetic([layout.END_SHUTDOWN] * len(st), st, proto=6)
    events, _w = _write(recs)
    assert [e["tcp"]["state"] for e in events] == [
        "syn_sent", "syn_recv", "established", "fin_wait1", "last_ack", "closed", "closed"]
    assert [e["flow"]["state"] for e in events] == [
        "new", "new", "established", "established", "established", "closed", "closed"]
    recs = _synthetic([layout.END_SHUTDOWN], [layout.ST_FIN_WAIT], proto=6)
    recs["flags_or"][0] = [0x11, 0x10]  # the client sent the FIN
    (e,), _w = _write(recs)
    assert e["tcp"]["state"] == "close_wait"
    assert (e["tcp"]["tcp_flags_ts"], e["tcp"]["tcp_flags_tc"]) == ("11", "10")


def test_only_ended_records_and_mac_pairs_skipped():
    recs = _synthetic([layout.END_IDLE, layout.END_IDLE])
    recs["kind"][0] = layout.EV_STARTED
    events, _w = _write(recs)
    assert len(events) == 1
    mac = ended_records_with(DATA / "zeek__http__get.pcap", MacPair())
    events, w = _write(mac)
    assert events == [] and w.skipped == mac.shape[0]


def test_ip_pair_flows_have_addresses_only():
    events = eve_lines(DATA / "zeek__http__get.pcap", extractor=IpPair())
    (e,) = events
    assert "proto" not in e and "src_port" not in e and "community_id" not in e
    assert {e["src_ip"], e["dest_ip"]} == {"141.142.228.5", "192.150.187.43"}


def test_evicted_flows_are_forced():
    events = eve_lines(DATA / "zeek__wikipedia.pcap", config=TrackerConfig(max_flows=2))
    assert any(e["flow"]["reason"] == "forced" for e in events)


def test_community_id_seed():
    recs = _synthetic([layout.END_IDLE])
    (a,), _w = _write(recs)
    (b,), _w = _write(recs, community_id_seed=1)
    assert a["community_id"] != b["community_id"]
    assert b["community_id"] == community_id_for_record(recs[0], 1)


def ended_records_with(path: Path, extractor) -> np.ndarray:
    tracker = FlowTracker(extractor=extractor, events="ended")
    out = []
    for batch in CaptureReader(str(path)):
        out += [r.copy() for r in tracker.process(batch)]
    out += [r.copy() for r in tracker.process_finish()]
    return np.concatenate(out)
