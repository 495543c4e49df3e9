"""Operator controls live: flow filter, flow sampling and the active timeout, with real
traffic through a veth pair into a netns.

Root + BPF (failed under FLOWSCOPE_REQUIRE_BPF=1): a flood of excluded flows leaves a tiny
flow map free for the included ones (and, without the filter, the same flood fills it);
``flowscope live`` with a filter and sampling writes the records ``flowscope pcap`` writes on
a capture of the same traffic; a long flow gets its Update records from the map syncs.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time

import pytest

from bpf_helpers import sh
from test_live import _Collect, _live_and_offline, _records, topo  # noqa: F401 - fixture
from test_bpf_kernel import eth, ipv4, udp

FLOOD_PORT, KEPT_PORT = 9999, 7000
N_FLOOD, N_KEPT, MAP = 400, 20, 32

#: Sends raw UDP frames from the netns end of the veth pair: ``N_FLOOD`` flows to FLOOD_PORT,
#: then ``N_KEPT`` flows to KEPT_PORT (one packet each, bounded). The destination MAC is no
#: one's, so our side's stack drops them after the XDP program saw them (no ICMP replies).
SENDER = """
import socket, sys
ifname, frames = sys.argv[1], bytes.fromhex(sys.stdin.read())
with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
    s.bind((ifname, 0))
    n = int.from_bytes(frames[:4], "big")
    off = 4
    for _ in range(n):
        ln = int.from_bytes(frames[off:off + 2], "big")
        s.send(frames[off + 2:off + 2 + ln])
        off += 2 + ln
"""


def _frames(src: str, dst: str) -> bytes:
    out = []
    other = bytes.fromhex("020000000099")
    for i in range(N_FLOOD):
        out.append(eth(ipv4(src, dst, 17, udp(10000 + i, FLOOD_PORT)), dst=other))
    for i in range(N_KEPT):
        out.append(eth(ipv4(src, dst, 17, udp(30000 + i, KEPT_PORT)), dst=other))
    return len(out).to_bytes(4, "big") + b"".join(struct.pack("!H", len(f)) + f for f in out)


@pytest.mark.parametrize("excluded", [True, False])
def test_exclude_filter_keeps_the_map_free_under_a_flood(topo, excluded):  # noqa: F811
    from flowscope import FlowTracker, TrackerConfig
    from flowscope.config import SensorConfig
    from flowscope.sensor.live import Sensor

    ifname, v4, _, ns = topo
    local = v4.rsplit(".", 1)[0] + ".1"
    cfg = TrackerConfig(max_flows=MAP, sweep_interval=None,
                        exclude_ports=(FLOOD_PORT,) if excluded else ())
    tracker = FlowTracker(config=cfg, events="ended")
    out = _Collect()
    sensor = Sensor([ifname], tracker, out,
                    SensorConfig(map_size=MAP, sweep_interval=30, report_interval=0))
    sensor.start()
    try:
        peer = ifname[:-1] + "b"
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", SENDER, peer],
                           input=_frames(v4, local).hex(), text=True, capture_output=True,
                           timeout=30)
        assert r.returncode == 0, r.stderr
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            sensor.poll(0.05)
    finally:
        sensor.close()
    c = sensor.counters()
    ended = out.all()
    kept = [rec for rec in ended if KEPT_PORT in _ports(rec)]
    if excluded:
        assert c["filtered"] == N_FLOOD and c["map_full"] == 0
        assert len(kept) == N_KEPT  # every included flow found room
    else:  # the control: the same flood takes the whole map
        assert c["filtered"] == 0 and c["map_full"] >= N_FLOOD + N_KEPT - MAP
        assert len(kept) < N_KEPT
    # the identity with the filtered packets as a named term
    assert c["packets"] == (int(ended["pkts"].sum()) + c["unparseable"] + c["map_full"]
                            + c["filtered"] + c["sampled_out"])
    assert c["in_flight"] == 0
    assert f"filtered {c['filtered']}" in sensor.counters_line(c)


def _ports(rec) -> tuple[int, int]:
    meta = int(rec["key"][4])
    return (meta >> 16) & 0xFFFF, meta & 0xFFFF


def test_live_equals_offline_with_filter_and_sampling(topo, tmp_path):  # noqa: F811
    """The same flows are left out live (in the kernel) and offline, and the rest are the
    same records; IPFIX too."""
    ifname, v4, v6, _ns = topo
    net4 = v4.rsplit(".", 1)[0] + ".0/24"
    conf = tmp_path / "f.yaml"
    conf.write_text(f"filter:\n  include:\n    cidrs: [{net4}, '{v6[:-1]}/64']\n"
                    "  exclude:\n    ports: [8083]\n    protocols: [icmp6]\nsample_rate: 2\n")
    live, off, err, live_ipfix, off_ipfix = _live_and_offline(
        topo, tmp_path, "jsonl", ipfix=True, args=("--config", str(conf)))
    prefixes = (v4.rsplit(".", 1)[0] + ".", v6[:-1])
    got, want = _records(live, "jsonl", prefixes), _records(off, "jsonl", prefixes)
    assert got == want and len(want) >= 3
    ports = {p for r in want for p in (r[2], r[4])}
    assert 8083 not in ports
    from test_live import _ipfix_records

    assert _ipfix_records(live_ipfix, prefixes) == _ipfix_records(off_ipfix, prefixes)
    line = [ln for ln in err.splitlines() if "in flight" in ln][-1]
    assert "in flight 0" in line
    filtered = int(line.split("filtered ")[-1].split()[0])
    sampled = int(line.split("sampled out ")[-1].split()[0])
    assert filtered > 0 and sampled > 0
    unsampled = [json.loads(x) for x in live.read_text().splitlines()]
    assert all(r.get("sample_rate", 2) == 2 for r in unsampled)


def test_live_active_timeout_updates_a_long_flow(topo):  # noqa: F811
    import socket

    from flowscope import FlowTracker, TrackerConfig, layout
    from flowscope.config import SensorConfig
    from flowscope.output.ipfix import pack_records
    from flowscope.sensor.live import Sensor

    ifname, v4, _, _ = topo
    tracker = FlowTracker(config=TrackerConfig(active_timeout=1.0, sweep_interval=None),
                          events="ended")
    out = _Collect()
    sensor = Sensor([ifname], tracker, out,
                    SensorConfig(sweep_interval=0.25, report_interval=0))
    sensor.start()
    n = 26
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((v4.rsplit(".", 1)[0] + ".1", 0))
            port = u.getsockname()[1]
            for _ in range(n):  # bounded: 26 datagrams over ~2.6 s
                u.sendto(b"x" * 20, (v4, 9))
                end = time.monotonic() + 0.1
                while time.monotonic() < end:
                    sensor.poll(0.02)
    finally:
        sensor.close()
    recs = out.all()
    mine = recs[[port in _ports(r) and int(r["key"][4]) >> 32 & 0xFF == 17 for r in recs]]
    kinds = [int(k) for k in mine["kind"]]
    assert kinds.count(layout.EV_UPDATE) >= 2 and kinds[-1] == layout.EV_ENDED
    assert kinds.count(layout.EV_ENDED) == 1  # the flow is not split
    pk = [int(r["pkts"][0]) for r in mine]
    assert pk == sorted(pk) and pk[-1] == n  # cumulative, all of them at the end
    v4recs, _ = pack_records(mine)
    assert int(v4recs["pkts"].sum()) == n  # IPFIX deltas add up to the flow
    assert list(v4recs["end_reason"][:-1]) == [2] * (len(mine) - 1)
