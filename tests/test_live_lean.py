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
from test_bpf_kernel import ACK, MAC_A, SYN, eth, ipv4, tcp, udp
from test_live import _Collect, _start_live, topo  # noqa: F401 - fixture
from test_live_filter import SENDER


def _send_frame(ns: str, peer: str, frame: bytes, n: int) -> None:
    """``n`` copies of ``frame`` from the netns end of the pair."""
    data = n.to_bytes(4, "big") + (struct.pack("!H", len(frame)) + frame) * n
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", SENDER, peer],
                       input=data.hex(), text=True, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr


#: a MAC no one has: our side's stack drops the frames after the XDP program saw them
NOBODY = bytes.fromhex("020000000099")


def _send(ns: str, peer: str, src: str, dst: str, sport: int, n: int) -> None:
    """``n`` UDP frames ``src:sport -> dst:7000``."""
    _send_frame(ns, peer, eth(ipv4(src, dst, 17, udp(sport, 7000)), dst=NOBODY), n)


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


def _send_tcp(ns: str, peer: str, src: str, dst: str, sport: int, n: int) -> None:
    """``n`` pure ACKs ``src:sport -> dst:7000`` of a connection seen mid-stream."""
    _send_frame(ns, peer, eth(ipv4(src, dst, 6, tcp(sport, 7000, ACK)), dst=NOBODY), n)


def _until(t: float) -> float:
    return max(0.0, t - time.monotonic())


def test_idle_syncs_skip_the_map_and_sync_only_what_changed(topo, monkeypatch):  # noqa: F811
    """No active timeout: packets do not make a tick read the map; the read waits for the
    next due time and then syncs only the entries stamped since the previous read; an entry
    due on a quiet map is removed by key; every idle flow ends with its exact counters."""
    from flowscope import FlowTracker, TrackerConfig
    from flowscope import layout as L
    from flowscope.config import SensorConfig
    from flowscope.sensor import live, maps

    ifname, v4, _, ns = topo
    peer, local = ifname[:-1] + "b", v4.rsplit(".", 1)[0] + ".1"
    # a silent link: no IPv6 neighbour discovery or MLD chatter moving the counters
    for where in ([], ["ip", "netns", "exec", ns]):
        subprocess.run([*where, "sysctl", "-q", "-w",
                        f"net.ipv6.conf.{ifname if not where else peer}.disable_ipv6=1"],
                       check=True, timeout=10)
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
    synced: list[np.ndarray] = []  # the ports of each sync (a map read's, a removal's)
    real_sync = sensor._sync

    def spy(keys, vals, last_ns=None):
        synced.append(np.concatenate([keys["port_a"], keys["port_b"]]))
        return real_sync(keys, vals, last_ns)

    sensor._sync = spy
    # the clock offset as measured at start: a step of this VM's wall clock (a read after
    # every offset change syncs every entry) is not what this test is about
    sensor._refresh_clock = lambda: None
    sensor.start()
    try:
        _poll(sensor, 0.3)  # the first tick reads the (empty) map
        _send_tcp(ns, peer, v4, local, 30009, 2)  # T: TCP, due only after 300 s
        t_a = time.monotonic()
        _send(ns, peer, v4, local, 30001, 3)  # A: due 2 s after its packets
        a_sent = time.monotonic()
        _poll(sensor, _until(t_a + 0.6))
        _send(ns, peer, v4, local, 30003, 1)  # A2: due at least 0.6 s after A
        _poll(sensor, 0.1)
        ticks, quiet, reads = (sensor.stats.ticks, sensor.stats.quiet_ticks,
                               sensor.stats.map_reads)
        n = len(synced)
        _poll(sensor, _until(t_a + 1.9))
        # packets arrived, but nothing can be due before A: every tick skipped the map
        assert sensor.stats.ticks - ticks >= 10, sensor.stats
        assert sensor.stats.quiet_ticks - quiet == sensor.stats.ticks - ticks, sensor.stats
        assert sensor.stats.map_reads == reads, sensor.stats
        # the periodic report meanwhile reads nothing either: open as of the last read
        # (before T), the 6 packets since (and any chatter) in flight
        lookups = []
        real_lookup = maps.lookup_flows
        monkeypatch.setattr(maps, "lookup_flows", lambda *a: lookups.append(a) or
                            real_lookup(*a))
        c = sensor.counters(cheap=True)
        monkeypatch.setattr(maps, "lookup_flows", real_lookup)
        assert not lookups, lookups
        assert c["open_packets"] == sensor.stats.open_packets and c["in_flight"] >= 6, c
        _poll(sensor, _until(a_sent + 2.3))
        # A's due time: a read removed A and synced what changed since the first read
        assert sensor.stats.map_reads > reads, sensor.stats
        assert {30009, 30001, 30003} <= set(synced[n].tolist()), synced[n:]
        expired_known = sensor.stats.expired_known
        _poll(sensor, _until(a_sent + 3.2))  # A2 turns idle on a quiet map
        expired_known = sensor.stats.expired_known - expired_known
        n = len(synced)
        _send(ns, peer, v4, local, 30002, 2)  # B
        _poll(sensor, 2.4)
        # B's due time: T did not change since the read at A's, so it was not synced again
        later = np.concatenate(synced[n:])
        assert 30002 in later, (synced[n:], sensor.stats)
        assert 30009 not in later, "T was synced again though it did not change"
    finally:
        sensor.close()
    # a quiet map: A2 was removed by key, known from the last read
    assert expired_known >= 1, sensor.stats
    recs = out.all()
    ended = recs[recs["kind"] == L.EV_ENDED]
    port = (ended["key"][:, 4] & np.uint64(0xFFFF)).astype(np.int64)
    src = ((ended["key"][:, 4] >> np.uint64(L.META_PORT_A_SHIFT)) & np.uint64(0xFFFF))
    ports = np.where(port == 7000, src.astype(np.int64), port)
    got = {int(p): (int(r["pkts"].sum()), int(r["reason"])) for p, r in zip(ports, ended)}
    assert got.get(30001) == (3, L.END_IDLE), got
    assert got.get(30003) == (1, L.END_IDLE), got
    assert got.get(30002) == (2, L.END_IDLE), got
    assert got.get(30009) == (2, L.END_SHUTDOWN), got
    c = sensor.counters()
    assert c["in_flight"] == 0, c


def test_a_flow_whose_first_packet_races_a_read_starts_from_its_event(topo, monkeypatch):  # noqa: F811
    """A flow's first packets land between an idle sync's ring drain and its map read: the
    read holds the entry, the NEW event comes after it. The flow is created from its event
    (MAC addresses, the SYN's history letter), as without the race, and the entry's later
    counts still reach the record."""
    from flowscope import FlowTracker, TrackerConfig
    from flowscope import layout as L
    from flowscope.config import SensorConfig
    from flowscope.sensor import live, maps

    ifname, v4, _, ns = topo
    peer, local = ifname[:-1] + "b", v4.rsplit(".", 1)[0] + ".1"
    tracker = FlowTracker(config=TrackerConfig(max_flows=64, sweep_interval=None,
                                               udp_timeout=30.0), events="ended")
    out = _Collect()
    sensor = live.Sensor([ifname], tracker, out,
                         SensorConfig(map_size=64, sweep_interval=0.05, report_interval=0,
                                      drops=False))
    sensor._refresh_clock = lambda: None  # a clock step would force reads of its own
    real_lookup, raced = maps.lookup_flows, []

    def racing(*a):  # the packets arrive after step 1 drained the ring, before step 2
        if not raced:
            raced.append(True)
            _send(ns, peer, v4, local, 30011, 3)
            _send_frame(ns, peer, eth(ipv4(v4, local, 6, tcp(30012, 7000, SYN)), dst=NOBODY),
                        1)
            time.sleep(0.05)
        return real_lookup(*a)

    sensor.start()
    try:
        _poll(sensor, 0.3)
        reads = sensor.stats.map_reads
        monkeypatch.setattr(maps, "lookup_flows", racing)
        sensor._reread = True  # the next tick reads the map
        _poll(sensor, 0.3)
        monkeypatch.setattr(maps, "lookup_flows", real_lookup)
        assert raced and sensor.stats.map_reads > reads, sensor.stats
        _send(ns, peer, v4, local, 30011, 2)  # no events: only a read brings these
        sensor._reread = True
        _poll(sensor, 0.3)
    finally:
        sensor.close()
    recs = out.all()
    ended = recs[recs["kind"] == L.EV_ENDED]
    src = ((ended["key"][:, 4] >> np.uint64(L.META_PORT_A_SHIFT)) & np.uint64(0xFFFF))
    dst = ended["key"][:, 4] & np.uint64(0xFFFF)
    by_port = {int(a if b == 7000 else b): r for a, b, r in zip(src, dst, ended)}
    for port, pkts, first in ((30011, 5, ""), (30012, 1, "S")):
        r = by_port[port]
        assert int(r["pkts"].sum()) == pkts, (port, r["pkts"])
        assert r["has_mac"] and int(r["init_mac"]) == int.from_bytes(MAC_A, "big"), (
            port, r["has_mac"], hex(int(r["init_mac"])))
        assert bytes(r["history"][:r["hist_len"]]).decode() == first, (port, r["history"])
