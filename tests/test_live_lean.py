"""The live sensor's footprint: no compiler in its process, idle syncs that skip the map.

Root + BPF (failed under FLOWSCOPE_REQUIRE_BPF=1): ``flowscope live`` compiles its programs
in a child process, so BCC, LLVM and clang are never mapped in the sensor's own process;
idle syncs read the map only when a packet or a drop may have changed it, sync only the
entries stamped since the previous read, remove the entries that turn idle on a quiet map
by key, and still end idle flows with their exact counters.
"""

from __future__ import annotations

import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bpf_helpers import stop
from test_bpf_kernel import eth, ipv4, udp
from test_live import _Collect, _start_live, topo  # noqa: F401 - fixture
from test_live_filter import SENDER


def _send(ns: str, peer: str, src: str, dst: str, sport: int, n: int) -> None:
    """``n`` UDP frames ``src:sport -> dst:7000`` from the netns end of the pair, to a MAC
    no one has (our side's stack drops them after the XDP program saw them)."""
    frame = eth(ipv4(src, dst, 17, udp(sport, 7000)), dst=bytes.fromhex("020000000099"))
    data = n.to_bytes(4, "big") + (struct.pack("!H", len(frame)) + frame) * n
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", SENDER, peer],
                       input=data.hex(), text=True, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr


def _poll(sensor, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sensor.poll(0.02)


def test_sensor_process_maps_no_compiler(topo, tmp_path):  # noqa: F811
    ifname, v4, _, ns = topo
    proc, err = _start_live(ifname, tmp_path)
    try:
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        _send(ns, ifname[:-1] + "b", v4, v4.rsplit(".", 1)[0] + ".1", 30001, 3)
        time.sleep(0.3)
    finally:
        assert stop(proc, signal.SIGINT) == 0, err.read_text()
    for lib in ("libbcc", "libLLVM", "libclang"):
        assert lib not in maps, f"{lib} is mapped in the sensor process"
    # the programs and maps it got from the child count: 3 packets, ended at shutdown
    text = (tmp_path / "live.jsonl").read_text()
    assert '"src_port":30001' in text and '"init_pkts":3' in text, text + err.read_text()


def test_idle_syncs_skip_the_map_and_sync_only_what_changed(topo, monkeypatch):  # noqa: F811
    from flowscope import FlowTracker, TrackerConfig
    from flowscope import layout as L
    from flowscope.config import SensorConfig
    from flowscope.sensor import live

    ifname, v4, _, ns = topo
    peer, local = ifname[:-1] + "b", v4.rsplit(".", 1)[0] + ".1"
    # no margin: the previous read's time alone tells which entries changed (and no drop
    # tracer: the frames below are dropped by our side's stack, which makes every entry
    # with drops a changed one)
    monkeypatch.setattr(live, "SYNC_SLACK_NS", 0)
    cfg = TrackerConfig(max_flows=64, sweep_interval=None, udp_timeout=2.0)
    tracker = FlowTracker(config=cfg, events="ended")
    out = _Collect()
    sensor = live.Sensor([ifname], tracker, out,
                         SensorConfig(map_size=64, sweep_interval=0.05, report_interval=0,
                                      drops=False))
    synced_ports: list[np.ndarray] = []
    real_sync = sensor._sync

    def spy(keys, vals, last_ns=None):
        synced_ports.append(np.concatenate([keys["port_a"], keys["port_b"]]))
        return real_sync(keys, vals, last_ns)

    sensor._sync = spy
    sensor.start()
    try:
        _send(ns, peer, v4, local, 30001, 3)  # flow A
        t_a = time.monotonic()
        _poll(sensor, 0.6)
        ticks, quiet = sensor.stats.ticks, sensor.stats.quiet_ticks
        _poll(sensor, 0.5)
        # nothing arrived: most ticks (stray link-local traffic aside) skip the map
        assert sensor.stats.ticks - ticks >= 5
        assert sensor.stats.quiet_ticks - quiet >= 3, sensor.stats
        synced_ports.clear()
        _send(ns, peer, v4, local, 30002, 2)  # flow B
        _poll(sensor, 0.5)
        after_b = np.concatenate(synced_ports)
        assert 30002 in after_b, "flow B was not synced"
        assert 30001 not in after_b, "flow A was synced again though it did not change"
        # both turn idle 2 s after their packets; the quiet ticks must not delay that
        end = t_a + 6.0
        while time.monotonic() < end:
            sensor.poll(0.02)
            recs = out.all()
            if (recs["kind"] == L.EV_ENDED).sum() >= 2:
                break
        # a quiet map: due entries are removed by key, known from the last read (link-local
        # chatter can make a sync read the map instead, but hardly at both due times)
        expired_known = sensor.stats.expired_known
    finally:
        sensor.close()
    assert expired_known >= 1, sensor.stats
    recs = out.all()
    ended = recs[recs["kind"] == L.EV_ENDED]
    port = (ended["key"][:, 4] & np.uint64(0xFFFF)).astype(np.int64)
    src = ((ended["key"][:, 4] >> np.uint64(L.META_PORT_A_SHIFT)) & np.uint64(0xFFFF))
    ports = np.where(port == 7000, src.astype(np.int64), port)
    got = {int(p): (int(r["pkts"].sum()), int(r["reason"])) for p, r in zip(ports, ended)}
    assert got.get(30001) == (3, L.END_IDLE), got
    assert got.get(30002) == (2, L.END_IDLE), got
    c = sensor.counters()
    assert c["in_flight"] == 0, c
