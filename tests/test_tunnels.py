"""Tunnel decapsulation (docs/tunnels.md) on hand-built captures, checked against tshark.

tests/data/tunnels/ holds one capture per encapsulation (written by
scripts/make_tunnel_captures.py): the packets of the link-layer captures, each
inside VXLAN, Geneve, GRE (plain, key, TEB, ERSPAN II/III, PPTP, 802.11), IP in IP,
GTP-U, Teredo or AYIYA, plus three nested encapsulations and a five-deep one.
For every frame, the innermost packet flowscope decapsulates is the one tshark
decodes innermost; every inner flow is linked to the outer flows that carried
it; the JSON Lines, EVE and Zeek records carry the link.
"""

from __future__ import annotations

import importlib.util
import io
import ipaddress
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from flowscope import layout
from flowscope.output.eve import EveWriter
from flowscope.output.jsonl import JsonlWriter
from flowscope.output.zeek import ZeekJsonWriter, make_uid
from flowscope.pcap import CaptureReader, parse_bytes
from flowscope.tracker import FlowTracker

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "tunnels"
_spec = importlib.util.spec_from_file_location("make_tunnel_captures",
                                               ROOT / "scripts" / "make_tunnel_captures.py")
MK = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(MK)
STEMS = sorted(MK.CAPTURES)
#: stem -> (TUN_* of the innermost encapsulation, its depth) for every frame
TYPES = {"vxlan": (layout.TUN_VXLAN, 1), "geneve": (layout.TUN_GENEVE, 1),
         "gre": (layout.TUN_GRE, 1), "aruba": (layout.TUN_GRE, 1), "ipip": (layout.TUN_IP, 1), "gtpu": (layout.TUN_GTPV1, 1),
         "teredo": (layout.TUN_TEREDO, 1), "ayiya": (layout.TUN_AYIYA, 1),
         "nested": (layout.TUN_VXLAN, 3), "deep": (layout.TUN_IP, layout.TUN_MAX_DEPTH)}


def rows_of(stem, **kw):
    return np.concatenate([b.copy() for b in CaptureReader(DATA / f"{stem}.pcap", **kw)])


def _addr(hi, lo, l3):
    if l3 == 4:
        return ipaddress.ip_address(int(lo))
    return ipaddress.ip_address((int(hi) << 64) | int(lo))


def _tuple(r):
    return (_addr(r["src_hi"], r["src_lo"], r["l3"]), _addr(r["dst_hi"], r["dst_lo"], r["l3"]),
            int(r["proto"]), int(r["sport"]), int(r["dport"]))


def test_captures_are_regenerated_identically():
    for stem in STEMS:
        assert (DATA / f"{stem}.pcap").read_bytes() == MK.pcap_bytes(stem), stem


@pytest.mark.parametrize("stem", STEMS)
def test_every_frame_gives_its_inner_packets(stem):
    rows = rows_of(stem)
    n = len(MK.CAPTURES[stem][1])
    ttype, depth = TYPES[stem]
    assert np.count_nonzero(rows["tun_depth"] == 0) == n
    assert len(rows) == n * (depth + 1)
    assert (rows["error"] == layout.PERR_NONE).all() and np.isin(rows["l3"], (4, 6)).all()
    inner = rows[rows["tun_depth"] == depth]
    assert (inner["tun_type"] == ttype).all()
    # the inner packets are the traffic the capture was made from
    if stem != "deep":
        want = [(ipaddress.ip_address(t[2]), ipaddress.ip_address(t[4]), t[1],
                 t[3] if t[1] != 1 else 0, t[5] if t[1] != 1 else 0)
                for t in MK.CAPTURES[stem][1]]
        assert [_tuple(r) for r in inner] == want


def test_tunnel_keys():
    assert (rows_of("vxlan")["tun_key"][1::2] == 42).all()
    assert (rows_of("geneve")["tun_key"][1::2] == 7).all()
    gtp = rows_of("gtpu")
    assert list(gtp["tun_key"][1::2]) == [0x1000 + k for k in range(6)]
    gre = rows_of("gre")[1::2]
    assert list(gre["tun_key"][[1, 7]]) == [0x1234, 0x1234]
    assert gre["tun_key"][0] == 0


def test_aruba_frames_give_the_80211_source_and_destination():
    """802.11 in GRE: the inner packet's MACs are the frame's source and destination
    addresses (by its ToDS / FromDS bits), for every header variant the capture has."""
    inner = rows_of("aruba")[1::2]
    traffic = MK.CAPTURES["aruba"][1]
    assert len(inner) == len(traffic) == 12
    for k, r in enumerate(inner):
        dst, src = MK.macs(k % len(MK.TRAFFIC))
        assert int(r["pflags"]) & layout.PF_MAC
        assert (int(r["smac"]), int(r["dmac"])) == (int.from_bytes(src, "big"),
                                                    int.from_bytes(dst, "big")), k


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize("stem", STEMS)
def test_innermost_packet_is_the_one_tshark_decodes(stem):
    """tshark's layers per frame (frame.protocols and every ip/ipv6/port occurrence): the
    deepest packet flowscope decapsulates is tshark's innermost one (for ``deep``, the
    fifth IP header: the four encapsulations flowscope opens)."""
    out = subprocess.run(
        ["tshark", "-n", "-r", str(DATA / f"{stem}.pcap"), "-T", "fields", "-E", "separator=|",
         "-E", "occurrence=a", "-E", "aggregator=,", "-e", "frame.protocols", "-e", "ip.src",
         "-e", "ip.dst", "-e", "ipv6.src", "-e", "ipv6.dst", "-e", "tcp.srcport",
         "-e", "tcp.dstport", "-e", "udp.srcport", "-e", "udp.dstport"],
        capture_output=True, text=True, check=True).stdout.splitlines()
    rows = rows_of(stem)
    frames = np.flatnonzero(rows["tun_depth"] == 0)
    assert len(out) == len(frames)
    for line, start in zip(out, frames):
        protos, s4, d4, s6, d6, ts, td, us, ud = line.split("|")
        chain = protos.split(":")
        ips = [p for p in chain if p in ("ip", "ipv6")]
        s4, d4, s6, d6 = (x.split(",") if x else [] for x in (s4, d4, s6, d6))
        k = layout.TUN_MAX_DEPTH if stem == "deep" else len(ips) - 1
        layer = ips[k]
        nth = ips[:k + 1].count(layer) - 1
        src, dst = (s4[nth], d4[nth]) if layer == "ip" else (s6[nth], d6[nth])
        mine = rows[start + k]
        assert mine["tun_depth"] == k
        assert _tuple(mine)[:2] == (ipaddress.ip_address(src), ipaddress.ip_address(dst))
        if stem != "deep":
            last = chain[-1] if chain[-1] in ("tcp", "udp", "icmp") else chain[-2]
            if last == "tcp":
                assert (mine["sport"], mine["dport"]) == (int(ts), int(td))
            elif last == "udp":
                assert (mine["sport"], mine["dport"]) == (int(us.split(",")[-1]),
                                                          int(ud.split(",")[-1]))
            else:
                assert mine["proto"] in (1, 58)
        # nothing beyond what flowscope decapsulates
        nxt = start + k + 1
        assert nxt == len(rows) or rows[nxt]["tun_depth"] == 0


def _records(stem, **cfg):
    from flowscope.config import TrackerConfig
    t = FlowTracker(config=TrackerConfig(**cfg), events="ended", zeek=True)
    recs = []
    for b in CaptureReader(DATA / f"{stem}.pcap", decapsulate=cfg.get("decapsulate", True)):
        recs.extend(r.copy() for r in t.process(b))
    recs.extend(r.copy() for r in t.process_finish())
    return np.concatenate(recs)


@pytest.mark.parametrize("stem", STEMS)
def test_inner_flows_link_to_their_outer_flows(stem):
    recs = _records(stem)
    by_id = {int(r["flow_id"]): r for r in recs}
    inner = [r for r in recs if int(r["tun"]) != 0]
    outer = [r for r in recs if int(r["tun"]) == 0]
    ttype, depth = TYPES[stem]
    assert inner and outer
    for r in inner:
        t, d, _key, seen, _changes = layout.unpack_tun(r["tun"])
        parents = [int(p) for p in r["tun_parent"] if p >= 0]
        assert parents and len(parents) == min(seen, layout.TUN_PARENTS_MAX)
        for p, st in zip(parents, r["tun_parent_started"]):
            assert p in by_id and int(by_id[p]["started"]) == int(st)
            # a parent is one encapsulation further out
            pd = layout.unpack_tun(by_id[p]["tun"])[1] if int(by_id[p]["tun"]) else 0
            assert pd == d - 1
        if d == depth:
            assert t == ttype
    # the frames are counted once by the outermost flows
    assert sum(int(r["pkts"].sum()) for r in outer) == len(MK.CAPTURES[stem][1])


def test_decapsulate_off_and_ports_configurable():
    rows = rows_of("vxlan", decapsulate=False)
    assert (rows["tun_depth"] == 0).all() and len(rows) == 6
    rows = rows_of("vxlan", vxlan_port=8472)  # 4789 is no longer VXLAN
    assert (rows["tun_depth"] == 0).all()
    rows = rows_of("geneve", geneve_port=4789, vxlan_port=6081)
    assert (rows["tun_depth"] == 0).all()  # Geneve parsed as VXLAN: no I flag; and the other way
    recs = _records("gre", decapsulate=False)
    assert all(int(r["tun"]) == 0 for r in recs) and len(recs) == 1


def test_parse_bytes_gives_one_row_per_layer():
    f = MK.frames("nested")[0]
    assert [int(x) for x in parse_bytes(f, 0)["tun_depth"]] == [0, 1, 2, 3]
    assert len(parse_bytes(f, 0, decapsulate=False)) == 1


def test_batches_never_split_a_frame():
    whole = rows_of("nested")
    for size in (1, 2, 3, 4, 5, 7):
        got = np.concatenate([b.copy() for b in CaptureReader(DATA / "nested.pcap",
                                                               batch_size=size)])
        if size < 4:  # a batch too small for one frame keeps its outer rows only
            assert (np.diff(got["tun_depth"].astype(int)) <= 1).all()
            continue
        assert _defined(got).tobytes() == _defined(whole).tobytes(), size


def _defined(rows: np.ndarray) -> np.ndarray:
    """``rows`` with the bytes of ``dns_qname`` after ``dns_qlen`` (undefined: the parser
    leaves them as they were) zeroed."""
    names = rows["dns_qname"]
    names[np.arange(names.shape[1]) >= rows["dns_qlen"][:, None]] = 0
    return rows


def test_outputs_carry_the_link():
    recs = _records("vxlan")
    inner = {int(r["flow_id"]): sorted(int(p) for p in r["tun_parent"] if p >= 0)
             for r in recs if int(r["tun"]) != 0}
    seen = {int(r["flow_id"]): layout.unpack_tun(r["tun"])[3] for r in recs if int(r["tun"])}
    assert len(inner) == 4  # TCP, UDP, ICMP, UDP over IPv6
    assert seen[min(inner)] == 3  # the TCP handshake came through three outer flows
    buf = io.StringIO()
    w = JsonlWriter(buf)
    w.write_records(recs)
    w.close()
    objs = [json.loads(x) for x in buf.getvalue().splitlines()]
    tun = {o["flow_id"]: o["tunnel"] for o in objs if "tunnel" in o}
    assert tun == {f: {"type": "vxlan", "depth": 1, "key": 42, "parents": p,
                       "parents_seen": seen[f]} for f, p in inner.items()}
    buf = io.StringIO()
    EveWriter(buf).write_records(recs)
    eve = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert sorted(o["tunnel"]["parents"] for o in eve if "tunnel" in o) == sorted(inner.values())
    buf = io.StringIO()
    ZeekJsonWriter(buf).write_records(recs)
    zk = [json.loads(x) for x in buf.getvalue().splitlines()]
    uids = {int(r["flow_id"]): make_uid(int(r["flow_id"]), int(r["started"])) for r in recs}
    child = {o["uid"]: o["tunnel_parents"] for o in zk if "tunnel_parents" in o}
    assert child == {uids[f]: sorted(uids[x] for x in p) for f, p in inner.items()}


def test_jsonl_twin_formats_tunnels_the_same():
    from naive_jsonl import NaiveJsonlWriter
    for stem in STEMS:
        recs = _records(stem)
        a, b = io.StringIO(), io.StringIO()
        JsonlWriter(a).write_records(recs)
        NaiveJsonlWriter(b).write_records(recs)
        assert a.getvalue() == b.getvalue(), stem


def test_parent_ended_before_its_inner_packet_is_still_the_parent():
    """max_flows 1: the inner packet's flow evicts its outer flow before it is linked."""
    recs = _records("vxlan", max_flows=1)
    outer = {int(r["flow_id"]): int(r["started"]) for r in recs if int(r["tun"]) == 0}
    inner = [r for r in recs if int(r["tun"]) != 0]
    assert len(inner) == 6 and len(outer) == 6  # every flow evicted by the next one
    for r in inner:
        p, st = int(r["tun_parent"][0]), int(r["tun_parent_started"][0])
        assert outer[p] == st


def _depths(frame):
    rows = parse_bytes(frame, 0)
    return [(int(r["tun_depth"]), int(r["tun_type"])) for r in rows]


def test_zeek_rules_on_the_edges():
    tcp4 = MK.ip_packet(*MK.TRAFFIC[0])
    tcp6 = MK.ip_packet(*MK.TRAFFIC6[0])
    # Teredo and AYIYA are recognised by content on any UDP port (Zeek's protocol detection)
    f = MK.outer_frame(MK.outer_ip(17, MK.udp(40000, 40001, tcp6), 0), 0)
    assert _depths(f) == [(0, 0), (1, layout.TUN_TEREDO)]
    ay = MK.ayiya(0, tcp4)[14 + 20 + 8:]
    f = MK.outer_frame(MK.outer_ip(17, MK.udp(40000, 40001, ay), 0), 0)
    assert _depths(f) == [(0, 0), (1, layout.TUN_AYIYA)]
    # ... but not a plain IPv6 packet without Teredo addresses
    plain6 = MK.ip_packet(*MK.TRAFFIC[5])
    assert _depths(MK.outer_frame(MK.outer_ip(17, MK.udp(40000, 40001, plain6), 0), 0)) == [
        (0, 0)]
    # IP in IP: the inner length must be the bytes left, the version the protocol's
    assert _depths(MK.outer_frame(MK.outer_ip(4, tcp4 + b"xx", 0), 0)) == [(0, 0)]
    assert _depths(MK.outer_frame(MK.outer_ip(41, tcp4, 0), 0)) == [(0, 0)]
    assert _depths(MK.outer_frame(MK.outer_ip(4, tcp4, 0), 0)) == [(0, 0), (1, layout.TUN_IP)]
    # GTP is never tunnelled in GTP
    inner = MK.gtpu(0, tcp4)[14:]
    f = MK.gtpu(0, inner)
    assert _depths(f) == [(0, 0), (1, layout.TUN_GTPV1)]
    # VXLAN without the I flag, Geneve of another version: no tunnel
    vx = bytearray(MK.vxlan(0, tcp4))
    vx[14 + 20 + 8] = 0
    assert _depths(bytes(vx)) == [(0, 0)]
    gn = bytearray(MK.geneve(0, tcp4))
    gn[14 + 20 + 8] |= 0x40
    assert _depths(bytes(gn)) == [(0, 0)]
    # an ARP frame inside VXLAN gives no inner packet
    arp = MK.MAC_S + MK.MAC_C + b"\x08\x06" + bytes(28)
    body = b"\x08\0\0\0\0\0\x2a\0" + arp
    f = MK.outer_frame(MK.outer_ip(17, MK.udp(40000, 4789, body), 0), 0)
    assert _depths(f) == [(0, 0)]


def _all_frames():
    out = []
    for stem in STEMS:
        out += MK.frames(stem)
    for name in ("vxlan", "geneve", "gre-sample"):
        p = Path("/work/shared/pcaps") / f"zeek__tunnels__{name}.pcap"
        if p.exists():
            data = p.read_bytes()
            pos = 24
            while pos + 16 <= len(data):
                incl = int.from_bytes(data[pos + 8:pos + 12], "little")
                out.append(data[pos + 16:pos + 16 + incl])
                pos += 16 + incl
    return out


def test_parser_equals_its_twin_on_tunnel_frames_and_mutations():
    """parse_frame_rows against tests/naive_parse.py's naive_parse_rows (written from the
    rules in docs/tunnels.md): every tunnel frame, then 3000 mutations of them (bytes
    changed after the outer Ethernet header, frames cut short)."""
    import random

    from naive_parse import FIELDS, naive_parse_rows

    def same(frame):
        got = [{k: int(r[k]) for k in FIELDS} for r in parse_bytes(frame, 0)]
        want = naive_parse_rows(frame, 0)
        assert got == want, frame.hex()

    frames = _all_frames()
    for f in frames:
        same(f)
    rng = random.Random(20261201)
    for _ in range(3000):
        f = bytearray(rng.choice(frames))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(14, len(f))
            f[at] = rng.choice((0, 1, 4, 6, 0x08, 0x11, 0x20, 0x30, 0x52, 0x60, 0x65, 0x88,
                                0xFF, rng.randrange(256)))
        if rng.random() < 0.3:
            f = f[:rng.randint(14, len(f))]
        same(bytes(f))


def test_ended_events_carry_the_tunnel():
    from flowscope import Ended, Tunnel
    t = FlowTracker(events="ended")
    evs = [e for b in CaptureReader(DATA / "gtpu.pcap") for e in t.track_batch(b.copy())]
    evs += t.finish()
    ended = [e for e in evs if isinstance(e, Ended)]
    inner = [e for e in ended if e.tunnel is not None]
    outer_ids = {e.flow_id for e in ended if e.tunnel is None}
    assert len(inner) == 4 and all(isinstance(e.tunnel, Tunnel) for e in inner)
    for e in inner:
        assert (e.tunnel.type, e.tunnel.depth) == ("gtpv1", 1)
        assert set(e.tunnel.parents) <= outer_ids and e.tunnel.parents
        assert len(e.tunnel.parents) == min(e.tunnel.parents_seen, layout.TUN_PARENTS_MAX)
