"""The live sensor: kernel events and map syncs in, the same flow events as offline out.

The BPF programs (XDP on ingress, TC on egress) keep every flow's counters in
the ``fs_flows`` map and send a ring buffer event only for the packets that
can change what the tracker reports: the first packet of a flow, SYN/FIN/RST,
data while the history has room, and ACKs that move the TCP state (see
``bpf/fs_flow.h``). Each event carries the flow's counters after that packet.
The :class:`Sensor` turns events into ``PKT_DTYPE`` rows flagged ``PF_ABS``
(absolute counters: set, do not add) and runs them through the same engine as
the offline path, so history, state and end reasons come out as offline.

Idle flows, on a timer (``sweep_interval``):

1. drain the ring, so the engine has every event produced so far;
2. read the whole map once; remove the entries idle for their timeout with
   ``BPF_MAP_LOOKUP_AND_DELETE_ELEM`` (the value returned is final, even if a
   packet raced the removal; an entry that turns out not to be idle any more
   is put back);
3. drain the ring again, dropping the events of removed flows that were
   produced before their removal (their counters are in the final value); a
   removed flow's next packet creates a new entry whose first event has the
   NEW reason, and everything from it on is kept;
4. sync rows (``PF_SYNC``) with every entry's counters and last_seen go to the
   engine, then the engine's ``sweep(now)`` ends the removed flows as
   IdleTimeout: their last_seen is the kernel's, converted with the same clock
   offset as ``now``, so kernel and engine agree on who is idle;
5. the events drained in step 3 follow.

Shutdown detaches first (no packet is counted after that), drains the ring,
removes every map entry, syncs them and ends every open flow as ``finish()``
does (reason Shutdown, at the latest packet time), as the offline path does at
the end of its input. The kernel's failure counters (map full, ring full,
unparseable frames, ...) are reported on the way and at exit.
"""

from __future__ import annotations

import errno
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from .. import layout as L
from . import layout as SL

CLOCK_MONOTONIC = time.CLOCK_MONOTONIC
BPF_MAP_UPDATE_ELEM = 2
BPF_NOEXIST = 1

HOOKS = ("ingress", "egress")
XDP_MODES = ("generic", "native")


class SensorConfigError(ValueError):
    """A bad ``sensor:`` key or value; the message names the key."""


@dataclass(frozen=True)
class SensorConfig:
    """Settings of the live sensor (the ``sensor:`` section of the YAML config).

    Attributes
    ----------
    map_size : int or None
        Flow map entries (``FS_MAX_FLOWS``); None = the tracker's ``max_flows``.
    ring_size : int
        Ring buffer bytes, a power of two and a multiple of the page size.
    hooks : tuple of str
        ``ingress`` (XDP) and/or ``egress`` (TC, tcx link).
    xdp_mode : str
        ``generic`` (works everywhere) or ``native`` (driver support needed).
    sweep_interval : float
        Seconds between idle syncs of the flow map.
    report_interval : float
        Seconds between counter reports on stderr; 0 = only at exit.
    batch : int
        Ring events per drain (bounds the memory of one step).
    interfaces : tuple of str
        Interfaces to attach to when ``-i`` is not given on the command line.
    """

    map_size: Optional[int] = None
    ring_size: int = 4 << 20
    hooks: tuple = HOOKS
    xdp_mode: str = "generic"
    sweep_interval: float = 1.0
    report_interval: float = 10.0
    batch: int = 4096
    interfaces: tuple = ()


def _pos_int(key, v, minimum=1):
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise SensorConfigError(f"sensor.{key}: expected an integer >= {minimum}, got {v!r}")
    return v


def _pos_seconds(key, v, allow_zero=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v < 0 or (
            v == 0 and not allow_zero) or v > 1e6:
        raise SensorConfigError(f"sensor.{key}: expected a positive number of seconds, got {v!r}")
    return float(v)


def sensor_config_from_mapping(data, base: SensorConfig | None = None) -> SensorConfig:
    """Validate a ``sensor:`` mapping; SensorConfigError names the first bad key."""
    base = base or SensorConfig()
    if data is None:
        return base
    if not isinstance(data, dict):
        raise SensorConfigError(f"sensor: expected a mapping of keys, got {type(data).__name__}")
    known = ("map_size", "ring_size", "hooks", "xdp_mode", "sweep_interval", "report_interval",
             "batch", "interfaces")
    ch = {}
    for key, v in data.items():
        if key not in known:
            raise SensorConfigError(f"sensor.{key}: unknown key (known: {', '.join(known)})")
        if key == "map_size":
            ch[key] = _pos_int(key, v)
        elif key == "batch":
            ch[key] = _pos_int(key, v, 16)
        elif key == "ring_size":
            _pos_int(key, v, 4096)
            if v & (v - 1) or v % 4096:
                raise SensorConfigError(
                    f"sensor.ring_size: expected a power of two >= 4096 bytes, got {v!r}")
            ch[key] = v
        elif key == "hooks":
            hooks = [v] if isinstance(v, str) else v
            if (not isinstance(hooks, list) or not hooks
                    or any(h not in HOOKS for h in hooks) or len(set(hooks)) != len(hooks)):
                raise SensorConfigError(
                    f"sensor.hooks: expected a list of ingress and/or egress, got {v!r}")
            ch[key] = tuple(h for h in HOOKS if h in hooks)
        elif key == "interfaces":
            names = [v] if isinstance(v, str) else v
            if (not isinstance(names, list) or not names
                    or any(not isinstance(n, str) or not n or len(n) > 15 for n in names)):
                raise SensorConfigError(
                    f"sensor.interfaces: expected a list of interface names, got {v!r}")
            ch[key] = tuple(names)
        elif key == "xdp_mode":
            if v not in XDP_MODES:
                raise SensorConfigError(f"sensor.xdp_mode: expected generic or native, got {v!r}")
            ch[key] = v
        elif key == "sweep_interval":
            ch[key] = _pos_seconds(key, v)
        else:
            ch[key] = _pos_seconds(key, v, allow_zero=True)
    return SensorConfig(**{**base.__dict__, **ch})


# --- kernel records -> engine rows ---------------------------------------------------------


def rows_from_events(ev: np.ndarray, offset_ns: int, slots: dict[int, int]) -> np.ndarray:
    """Ring events (``sensor.layout.EVENT_DTYPE``) -> ``PKT_DTYPE`` rows with PF_ABS.

    ``offset_ns`` turns CLOCK_MONOTONIC into wall time; ``slots`` maps ifindex
    -> the ``iface`` value (position of the interface on the command line).
    """
    n = len(ev)
    rows = np.zeros(n, dtype=L.PKT_DTYPE)
    if n == 0:
        return rows
    k = ev["key"]
    rev = ev["dir"] == SL.Dir.REV
    rows["ts"] = ev["ts_ns"].astype(np.int64) + offset_ns
    rows["caplen"] = ev["frame_len"]
    rows["wirelen"] = ev["frame_len"]
    for s, d in (("src", "a"), ("dst", "b")):
        o = "b" if d == "a" else "a"
        rows[f"{s}_hi"] = np.where(rev, k[f"{o}_hi"], k[f"{d}_hi"])
        rows[f"{s}_lo"] = np.where(rev, k[f"{o}_lo"], k[f"{d}_lo"])
    rows["sport"] = np.where(rev, k["port_b"], k["port_a"])
    rows["dport"] = np.where(rev, k["port_a"], k["port_b"])
    for f in ("seq", "ack", "payload_len", "window", "tcp_flags", "icmp_type", "icmp_code"):
        rows[f] = ev[f]
    rows["l3"] = k["l3"]
    rows["proto"] = k["proto"]
    # the kernel's FS_PF_* bits have the values of layout.PF_*
    rows["pflags"] = ev["pflags"] | L.PF_ABS
    # IP length is not carried: frame length less an untagged Ethernet header
    rows["ip_len"] = np.maximum(ev["frame_len"].astype(np.int64) - 14, 0)
    if slots:
        idx = ev["ifindex"]
        iface = np.zeros(n, dtype=np.uint16)
        for ifindex, slot in slots.items():
            iface[idx == ifindex] = slot
        rows["iface"] = iface
    _counters(rows, ev["pkts"], ev["bytes"], ev["payload"])
    return rows


def _counters(rows, pkts, byts, pay):
    rows["cnt_pkts0"] = pkts[:, 0]
    rows["cnt_pkts1"] = pkts[:, 1]
    rows["cnt_bytes0"] = byts[:, 0]
    rows["cnt_bytes1"] = byts[:, 1]
    rows["cnt_pay0"] = pay[:, 0]
    rows["cnt_pay1"] = pay[:, 1]


def sync_rows(keys: np.ndarray, vals: np.ndarray, offset_ns: int,
              last_ns: np.ndarray | None = None) -> np.ndarray:
    """Map entries (``FLOW_KEY_DTYPE``, ``FLOW_DTYPE``) -> PF_SYNC rows.

    Each row is oriented like the flow's first packet (so a flow the engine
    does not hold is created with the kernel's initiator); ``last_ns``
    overrides the entries' last-seen times (monotonic ns).
    """
    n = len(keys)
    rows = np.zeros(n, dtype=L.PKT_DTYPE)
    if n == 0:
        return rows
    rev = vals["first_dir"] == SL.Dir.REV
    last = vals["last_ns"].astype(np.int64) if last_ns is None else last_ns
    rows["ts"] = last + offset_ns
    rows["first_ts"] = vals["first_ns"].astype(np.int64) + offset_ns
    for s, d in (("src", "a"), ("dst", "b")):
        o = "b" if d == "a" else "a"
        rows[f"{s}_hi"] = np.where(rev, keys[f"{o}_hi"], keys[f"{d}_hi"])
        rows[f"{s}_lo"] = np.where(rev, keys[f"{o}_lo"], keys[f"{d}_lo"])
    rows["sport"] = np.where(rev, keys["port_b"], keys["port_a"])
    rows["dport"] = np.where(rev, keys["port_a"], keys["port_b"])
    rows["l3"] = keys["l3"]
    rows["proto"] = keys["proto"]
    # ports as keyed by the kernel (0 for ICMP and fragments) give the same engine key
    rows["pflags"] = L.PF_SYNC | L.PF_PORTS
    _counters(rows, vals["pkts"], vals["bytes"], vals["payload"])
    return rows


def _key_bytes(keys: np.ndarray) -> list[bytes]:
    raw = np.ascontiguousarray(keys).view(np.uint8).reshape(len(keys), SL.FLOW_KEY_DTYPE.itemsize)
    return [bytes(r) for r in raw]


# --- the sensor ----------------------------------------------------------------------------


@dataclass
class SensorStats:
    """Userspace side of the accounting (the kernel's is in the counters map)."""

    events: int = 0  # ring events read
    stale_events: int = 0  # events of removed flows dropped after an idle sync (step 3)
    idle_removed: int = 0  # map entries removed as idle
    put_back: int = 0  # entries removed while a packet raced the sweep, then reinserted
    sweep_races: int = 0  # ... that could not be put back (a newer entry existed)
    synced: int = 0  # sync rows sent to the engine
    ticks: int = 0
    extra: dict = field(default_factory=dict)


class Sensor:
    """Attach to interfaces, turn kernel events into flow events, write them.

    Parameters
    ----------
    ifnames : sequence of str
        Interfaces (in the calling thread's network namespace). Nothing else is touched.
    tracker : FlowTracker
        Five-tuple tracker with no automatic sweeps (the sensor sweeps on its timer).
    writer : object
        Has ``write_records(recs)``; gets every batch of event records.
    config : SensorConfig
    report : callable, optional
        Called with one line of counters (default: print to stderr).
    """

    def __init__(self, ifnames: Sequence[str], tracker, writer, config: SensorConfig,
                 report: Optional[Callable[[str], None]] = None):
        if tracker.extractor.kind != L.EXTRACT_FIVE_TUPLE:
            raise ValueError("the live sensor keys flows by the bidirectional five-tuple only")
        if tracker.config.infer_tcp_initiator:
            raise ValueError("infer_tcp_initiator is not supported by the live sensor "
                             "(the kernel's TCP mirror takes the first packet's sender)")
        if int(tracker._ctl[_K().C_SWEEP_INTERVAL]):
            raise ValueError("the tracker must not sweep by itself (sweep_interval=None)")
        self.ifnames = list(ifnames)
        self.tracker = tracker
        self.writer = writer
        self.config = config
        self.map_size = config.map_size or tracker.config.max_flows
        self.report = report or (lambda line: print(line, file=sys.stderr, flush=True))
        self.loaded = None
        self.attachments: list = []
        self.ring = None
        self.clock = None
        self.stats = SensorStats()
        self._evbuf = np.zeros(max(16, config.batch), dtype=SL.EVENT_DTYPE)
        self._slots: dict[int, int] = {}
        self._timeouts = {6: tracker.config.timeout_ns("tcp"),
                          17: tracker.config.timeout_ns("udp"),
                          1: tracker.config.timeout_ns("icmp"),
                          58: tracker.config.timeout_ns("icmp")}
        self._default_timeout = tracker.config.timeout_ns("other")
        self._next_sweep = 0.0
        self._next_report = 0.0
        self._closed = False
        self.metrics = None  # a flowscope.metrics.MetricsServer, updated about once a second
        self._next_metrics = 0.0
        self._lag = 0.0

    # ---- set-up ------------------------------------------------------------------------

    def tunables(self) -> dict:
        return {"max_flows": self.map_size,
                "ring_pages": max(1, self.config.ring_size // 4096)}

    def start(self) -> float:
        """Compile the engine, load and attach the programs; returns the warm-up seconds."""
        from ..tracker import warmup
        from . import attach, loader
        from .clock import MonoToWall
        from .ring import RingReader

        secs = warmup()
        self.clock = MonoToWall()
        self.loaded = loader.load(self.tunables())
        try:
            self.ring = RingReader(self.loaded.events_fd)
            self._warm_sensor_paths()
            for i, name in enumerate(self.ifnames):
                self.attachments.append(self._attach_one(attach, name))
                self._slots[self.attachments[-1].ifindex] = i
        except BaseException:
            self._detach()
            self._release()
            raise
        now = time.monotonic()
        self._next_sweep = now + self.config.sweep_interval
        if self.config.report_interval > 0:
            self._next_report = now + self.config.report_interval
        return secs

    def _attach_one(self, attach, name):
        hooks = self.config.hooks
        if "ingress" in hooks:
            return attach.attach(self.loaded, name, xdp_mode=self.config.xdp_mode,
                                 egress="egress" in hooks)
        at = attach.Attachment(ifname=name, ifindex=attach.ifindex_of(name),
                               xdp_mode=self.config.xdp_mode)
        try:
            at.tc_link_fd = attach.link_create(self.loaded.tc_fd, at.ifindex,
                                               attach.BPF_TCX_EGRESS)
            at.how.append("tcx egress link")
        except BaseException:
            at.detach()
            raise
        return at

    def _warm_sensor_paths(self) -> None:
        # the ring drain kernel and the row builders, on an empty ring: nothing is attached yet
        self.ring.drain(self._evbuf[:1])
        rows_from_events(np.zeros(1, SL.EVENT_DTYPE), 0, {1: 0})
        sync_rows(np.zeros(1, SL.FLOW_KEY_DTYPE), np.zeros(1, SL.FLOW_DTYPE), 0)

    # ---- running -----------------------------------------------------------------------

    def _feed(self, rows: np.ndarray) -> None:
        if len(rows):
            for recs in self.tracker.process(rows):
                self.writer.write_records(recs)

    def _drain_once(self) -> np.ndarray:
        n = self.ring.drain(self._evbuf)
        self.stats.events += n
        if n:  # how far behind the kernel the newest event is when it reaches the engine
            newest = int(self._evbuf["ts_ns"][:n].max())
            self._lag = max(0.0, (time.clock_gettime_ns(time.CLOCK_MONOTONIC) - newest) / 1e9)
        return self._evbuf[:n]

    def drain(self, max_batches: int = 64) -> int:
        """Move up to ``max_batches`` ring batches into the engine; returns the events read."""
        total = 0
        for _ in range(max_batches):
            ev = self._drain_once()
            if len(ev) == 0:
                break
            total += len(ev)
            self._feed(rows_from_events(ev, self.clock.offset_ns, self._slots))
            if len(ev) < len(self._evbuf):
                break
        return total

    def _drain_everything(self, limit_s: float = 2.0) -> None:
        deadline = time.monotonic() + limit_s
        while self.drain() and time.monotonic() < deadline:
            pass

    def poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for events, drain, and run the timers when due."""
        self.ring.wait(timeout)
        drained = self.drain()
        now = time.monotonic()
        if self.metrics is not None and now >= self._next_metrics:
            from . import maps

            self._next_metrics = now + 1.0
            self.metrics.update(self.tracker.stats, maps.counters_dict(self.loaded.counters_fd),
                                self.stats.events, self._lag if drained else 0.0)
            flush = getattr(self.writer, "flush", None)
            if flush is not None:
                flush()
        if now >= self._next_sweep:
            self._refresh_clock()
            self.sync_idle()
            self._next_sweep = now + self.config.sweep_interval
        if self._next_report and now >= self._next_report:
            self.report(self.counters_line())
            self._next_report = now + self.config.report_interval

    def run(self, should_stop: Callable[[], bool], duration: Optional[float] = None) -> None:
        """Poll until ``should_stop()`` is true (or ``duration`` seconds passed)."""
        end = None if duration is None else time.monotonic() + duration
        while not should_stop():
            if end is not None and time.monotonic() >= end:
                break
            wait = max(0.0, min(0.1, self._next_sweep - time.monotonic()))
            self.poll(wait)

    def _refresh_clock(self) -> None:
        """Re-measure the clock offset; keep the old one when the change is only noise.

        A jittering offset would put a flow's last_seen (converted later) a few ns before
        its start (converted earlier); real NTP slews and steps still move it.
        """
        old = self.clock.offset_ns
        new = self.clock.refresh()
        if abs(new - old) <= max(2 * self.clock.uncertainty_ns, 2000):
            self.clock.offset_ns = old

    def _timeout_of(self, protos: np.ndarray) -> np.ndarray:
        tmo = np.full(len(protos), self._default_timeout, dtype=np.int64)
        for proto, t in self._timeouts.items():
            tmo[protos == proto] = t
        return tmo

    def sync_idle(self) -> None:
        """Remove idle entries from the map and end them in the engine (steps 1-5 above)."""
        from . import maps

        self.stats.ticks += 1
        self._drain_everything()  # 1
        off = self.clock.offset_ns
        now_mono = time.clock_gettime_ns(CLOCK_MONOTONIC)
        keys, vals = maps.lookup_flows(self.loaded.flows_fd, self.map_size)  # 2
        tmo = self._timeout_of(keys["proto"])
        idle = (now_mono - vals["last_ns"].astype(np.int64)) >= tmo
        gone_k, gone_v = maps.lookup_and_delete(self.loaded.flows_fd, keys[idle])
        if len(gone_k):
            gone_k, gone_v = self._put_back_raced(gone_k, gone_v, now_mono)
        self.stats.idle_removed += len(gone_k)
        # 3: events produced since step 1; drop removed flows' events up to a NEW one
        later = [self._drain_once().copy()]
        while len(later[-1]) == len(self._evbuf) and len(later) < 256:
            later.append(self._drain_once().copy())
        later = np.concatenate(later)
        if len(gone_k) and len(later):
            later = self._drop_stale(later, gone_k)
        # 4: sync every live entry, the removed ones with their final values
        keep = ~idle
        live_k, live_v = keys[keep], vals[keep]
        all_k = np.concatenate([live_k, gone_k])
        all_v = np.concatenate([live_v, gone_v])
        open_ = all_v["state"] < SL.TcpState.CLOSED  # terminal ones were ended by their event
        last = all_v["last_ns"].astype(np.int64)
        # a removed flow ends as idle even when a racing packet made it look busy
        n_live = len(live_k)
        tmo_all = self._timeout_of(all_k["proto"])
        last[n_live:] = np.minimum(last[n_live:], now_mono - tmo_all[n_live:])
        rows = sync_rows(all_k[open_], all_v[open_], off, last[open_])
        self.stats.synced += len(rows)
        self._feed(rows)
        for recs in self.tracker.process_sweep(now_mono + off):
            self.writer.write_records(recs)
        # 5
        self._feed(rows_from_events(later, off, self._slots))

    def _put_back_raced(self, keys, vals, now_mono):
        """Reinsert removed entries that a packet made busy again; return the really removed."""
        tmo = self._timeout_of(keys["proto"])
        busy = (now_mono - vals["last_ns"].astype(np.int64)) < tmo
        if not busy.any():
            return keys, vals
        from .loader import bpf_syscall
        from .maps import _ElemAttr

        removed = np.ones(len(keys), dtype=bool)
        kc = np.ascontiguousarray(keys)
        vc = np.ascontiguousarray(vals)
        a = _ElemAttr(map_fd=self.loaded.flows_fd, flags=BPF_NOEXIST)
        for i in np.flatnonzero(busy):
            a.key = kc.ctypes.data + int(i) * kc.itemsize
            a.value = vc.ctypes.data + int(i) * vc.itemsize
            try:
                bpf_syscall(BPF_MAP_UPDATE_ELEM, a)
                removed[i] = False
                self.stats.put_back += 1
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.E2BIG):
                    raise
                self.stats.sweep_races += 1
        return keys[removed], vals[removed]

    def _drop_stale(self, ev: np.ndarray, gone_keys: np.ndarray) -> np.ndarray:
        gone = set(_key_bytes(gone_keys))
        cand = np.flatnonzero(np.isin(ev["key"]["a_lo"], gone_keys["a_lo"])
                              & np.isin(ev["key"]["b_lo"], gone_keys["b_lo"]))
        if len(cand) == 0:
            return ev
        keep = np.ones(len(ev), dtype=bool)
        kb = _key_bytes(ev["key"][cand])
        restarted: set[bytes] = set()
        for j, b in zip(cand, kb):
            if b not in gone or b in restarted:
                continue
            if ev["reason"][j] & SL.EventReason.NEW:
                restarted.add(b)  # the new flow: keep it and what follows
            else:
                keep[j] = False
                self.stats.stale_events += 1
        return ev[keep]

    # ---- shutdown ----------------------------------------------------------------------

    def _detach(self) -> list:
        errors = []
        for at in self.attachments:
            try:
                at.detach()
            except Exception as e:  # noqa: BLE001 - detach the others anyway
                errors.append(e)
        self.attachments = []
        return errors

    def _release(self) -> None:
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        if self.loaded is not None:
            self.loaded.close()
            self.loaded = None

    def close(self) -> None:
        """Detach, drain, sync and end every flow (reason Shutdown); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        errors = self._detach()
        try:
            if self.loaded is not None and self.ring is not None:
                from . import maps

                self._drain_everything()
                keys, vals = maps.drain_flows(self.loaded.flows_fd, self.map_size)
                open_ = vals["state"] < SL.TcpState.CLOSED
                rows = sync_rows(keys[open_], vals[open_], self.clock.offset_ns)
                self.stats.synced += len(rows)
                self._feed(rows)
                for recs in self.tracker.process_finish():
                    self.writer.write_records(recs)
                self.final_counters = self.counters()
        finally:
            self._release()
        if errors:
            raise RuntimeError(f"detach failed: {errors}")

    # ---- counters ----------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Kernel counters (``Counter`` names) plus the tracker's and the sensor's."""
        from . import maps

        if self.loaded is None:
            return dict(getattr(self, "final_counters", {}))
        c = maps.counters_dict(self.loaded.counters_fd)
        s = self.tracker.stats
        c["unparseable"] = c["truncated"] + c["not_ip"] + c["bad_header"]
        c["matched"] = c["packets"] - c["unparseable"] - c["map_full"]
        c["tracked_packets"] = s.packets_matched
        c["open_flows"] = s.open_flows
        c["flows_created"] = s.flows_created
        c["flows_ended"] = s.flows_ended
        c["stale_events"] = self.stats.stale_events
        c["sweep_races"] = self.stats.sweep_races
        return c

    def counters_line(self, c: dict | None = None) -> str:
        c = c if c is not None else self.counters()
        return ("flowscope: kernel: packets {packets} events {events} flows {flows_new}+"
                "{flows_restart} | dropped: map_full {map_full} ring_full {ring_full} "
                "unparseable {unparseable} (truncated {truncated} not_ip {not_ip} "
                "bad_header {bad_header}) pull_fail {pull_fail} | tracker: open {open_flows} "
                "ended {flows_ended}".format(**c))


def _K():
    from .._kernels import engine

    return engine


__all__ = ["Sensor", "SensorConfig", "SensorConfigError", "sensor_config_from_mapping",
           "rows_from_events", "sync_rows", "HOOKS", "XDP_MODES"]
