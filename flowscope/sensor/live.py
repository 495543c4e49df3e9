"""The live sensor loop: kernel events and map syncs in, the same flow events as offline out.

The BPF programs (XDP on ingress, TC on egress) keep every flow's counters in
the ``fs_flows`` map and send a ring buffer event only for the packets that
can change what the tracker reports: the first packet of a flow, SYN/FIN/RST,
data while the history has room, and ACKs that move the TCP state (see
``bpf/fs_flow.h``). Each event carries the flow's counters after that packet.
The :class:`Sensor` turns events into ``PKT_DTYPE`` rows flagged ``PF_ABS``
(``flowscope.sensor.rows``) and runs them through the same engine as the
offline path, so history, state and end reasons come out as offline.

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
   offset as ``now``, so kernel and engine agree on who is idle; an entry whose
   flow's first (NEW) event is among those drained in step 3 is synced at the next
   read instead: its event creates the flow, with what only a packet carries (MACs,
   history);
5. the events drained in step 3 follow.

A tick reads the map only when it has to: when an entry may have turned idle (the
earliest due time of the last read, or of an event drained since), after a clock
step, or, with ``active_timeout`` set, after any change (an interim record must
carry the counters so far). Without an active timeout, packets on known flows
only mark the engine's view as behind: the engine has nothing due before the next
due time (a packet only moves a flow's due time later), so the read waits for it
and then syncs everything stamped since the previous read; the engine's sweep
waits with it.

Shutdown detaches first (no packet is counted after that), drains the ring,
removes every map entry, syncs them and ends every open flow as ``finish()``
does (reason Shutdown, at the latest packet time), as the offline path does at
the end of its input. The kernel's failure counters (map full, ring full,
unparseable frames, ...) are reported on the way and at exit.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from .. import layout as L
from ..config import SensorConfig
from . import layout as SL
from .rows import event_rows, key_bytes, sync_rows
from .settings import tunables

CLOCK_MONOTONIC = time.CLOCK_MONOTONIC
#: Seconds between flushes of the output: a record reaches its file, pipe or terminal at most
#: this long (plus one ring wait, 0.1 s) after the sensor produced it. A flush with nothing
#: buffered costs no system call, so the timer is cheap when idle and under load alike.
FLUSH_INTERVAL = 0.25
#: Seconds between checks that every monitored interface still exists under its index.
IFACE_CHECK_INTERVAL = 1.0
#: An idle sync reads the whole map but syncs only the entries stamped (``last_ns``) since
#: the previous read minus this margin: it covers a packet stamped before that read whose
#: map write landed after it (microseconds) and the coarse clock's lag (one jiffy).
SYNC_SLACK_NS = 1_000_000_000
INT64_MAX = np.iinfo(np.int64).max
#: A read remembers the keys of this many entries that turn idle first: a quiet sync removes
#: those when they are due without reading the map again.
DUE_KEYS = 4096


class StartError(RuntimeError):
    """The sensor could not start; ``str()`` is one line saying why and what to do."""


#: Set to 1 to let BCC's compiler messages reach the terminal instead of a file.
DEBUG_ENV = "FLOWSCOPE_BPF_DEBUG"


def load_quietly(loader, tunables: dict, tc_ingress: bool = False):
    """``loader.load_detached(tunables)`` with BCC's compiler output (on fd 2) kept in a file.

    A failure becomes one StartError line naming the file and a hint; the file is
    removed when the compile succeeds. With ``FLOWSCOPE_BPF_DEBUG=1`` nothing is captured.
    """
    if os.environ.get(DEBUG_ENV) == "1":
        try:
            return loader.load_detached(tunables, tc_ingress)
        except loader.LayoutMismatch as exc:
            raise StartError(f"live: BPF compile failed: {str(exc).splitlines()[0]}") from exc
    fd, path = tempfile.mkstemp(prefix="flowscope-bpf-", suffix=".log")
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(fd, 2)
    ok = False
    try:
        loaded = loader.load_detached(tunables, tc_ingress)
        ok = True
        return loaded
    except loader.LayoutMismatch as exc:
        cause = exc
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
        if ok:
            os.unlink(path)
    with open(path, errors="replace") as f:
        text = f.read()
    if "flowscope.sensor.layout" in text:
        hint = "bpf/fs_shared.h and flowscope/sensor/layout.py disagree"
    elif "file not found" in text or "fatal error" in text:
        hint = ("kernel headers missing: check BCC_KERNEL_SOURCE "
                "(scripts/make_kinclude.sh builds a small set)")
    else:
        hint = f"{DEBUG_ENV}=1 shows the compiler's messages"
    errors = sum(1 for line in text.splitlines() if "error:" in line)
    raise StartError(f"live: BPF compile failed ({errors} errors; compiler output in {path}): "
                     f"{hint}") from cause


#: glibc's mallopt parameter numbers.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Heap blocks at least this large get their own mapping, given back to the system when freed
#: (a map read of 100 k entries is ~26 MiB). Setting it also stops glibc from raising the
#: threshold after such a block is freed, which would keep later ones in the heap for good.
MMAP_THRESHOLD = 256 * 1024


def lean_heap() -> None:
    """glibc only (elsewhere nothing happens): large blocks as their own mappings, and the
    heap's free top returned above 1 MiB."""
    from .loader import _libc as libc  # noqa: PLC0415 - this process's C library

    if hasattr(libc, "mallopt"):
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, 1024 * 1024)


def trim_heap() -> None:
    """Give the heap's free pages back to the system (glibc ``malloc_trim(0)``): after the
    BPF compile, most of the compiler's heap is free but still resident."""
    from .loader import _libc as libc  # noqa: PLC0415

    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _lost(vals: np.ndarray) -> np.ndarray:
    """Map entries in a terminal state whose terminal event never reached userspace."""
    return (vals["state"] >= SL.TcpState.CLOSED) & (vals["ev_lost"] != 0)


def _unreported(vals: np.ndarray) -> np.ndarray:
    """Map entries whose flow the engine has not ended: open ones and lost terminal ones."""
    return (vals["state"] < SL.TcpState.CLOSED) | (vals["ev_lost"] != 0)


# --- the sensor ----------------------------------------------------------------------------


@dataclass
class SensorStats:
    """Userspace side of the accounting (the kernel's is in the counters map)."""

    events: int = 0  # ring events read
    events_by_hook: dict = field(default_factory=dict)  # (ifindex, hook) -> ring events read
    stale_events: int = 0  # events of removed flows dropped after an idle sync (step 3)
    lost_ends: int = 0  # flows ended from the map because their terminal event was lost
    open_packets: int = 0  # packets of the flows still open in the map, at the last sync
    idle_removed: int = 0  # map entries removed as idle
    put_back: int = 0  # entries removed while a packet raced the sweep, then reinserted
    sweep_races: int = 0  # ... that could not be put back (a newer entry existed)
    synced: int = 0  # sync rows sent to the engine
    quiet_ticks: int = 0  # idle syncs that did not read the map (nothing due, or wait)
    map_reads: int = 0  # idle syncs that read the map
    expired_known: int = 0  # entries removed as idle by a quiet sync (known from a read)
    ticks: int = 0
    extra: dict = field(default_factory=dict)
    # ifindex -> [retransmitted segments, their bytes, out-of-order segments, zero windows,
    #             cumulative RTT bucket counts (metrics.RTT_BUCKETS + Inf), RTT sum (s)]
    #             of the ended TCP flows (metrics on only)
    tcp: dict = field(default_factory=dict)

    def count_tcp(self, recs: np.ndarray, ifindex: np.ndarray) -> None:
        """Add the Ended TCP records ``recs`` (``layout.EVENT_DTYPE``) seen on ``ifindex``."""
        from ..metrics import RTT_BUCKETS

        resp, init = recs["rtt_resp"], recs["rtt_init"]
        has = (resp >= 0) & (init >= 0)
        rtt = (resp + init) / 1e9
        edges = np.asarray(RTT_BUCKETS + (np.inf,))
        for i in np.unique(ifindex).tolist():
            m = ifindex == i
            c = self.tcp.setdefault(i, [0, 0, 0, 0, np.zeros(len(edges), np.int64), 0.0])
            c[0] += int(recs["retrans_pkts"][m].sum())
            c[1] += int(recs["retrans_bytes"][m].sum())
            c[2] += int(recs["ooo_pkts"][m].sum())
            c[3] += int(recs["zero_win"][m].sum())
            r = rtt[m & has]
            if len(r):
                c[4] += (r[:, None] <= edges[None, :]).sum(axis=0)
                c[5] += float(r.sum())
    kernel_drops: dict = field(default_factory=dict)  # (ifindex or 0, reason name) -> drops

    def count_hooks(self, ev: np.ndarray) -> None:
        """Add ring events (``EVENT_DTYPE``) to ``events_by_hook``, by interface and hook."""
        pairs, counts = np.unique(ev["ifindex"].astype(np.int64) << 1 | ev["hook"],
                                  return_counts=True)
        for p, c in zip(pairs.tolist(), counts.tolist()):
            key = (p >> 1, p & 1)
            self.events_by_hook[key] = self.events_by_hook.get(key, 0) + c


def offload_note(at) -> str:
    """The line naming the offloads that hand ``at``'s hooks merged packets
    (``Attachment.merging``; docs/live.md, "Segmentation offloads"), "" when none does."""
    names = at.merging
    if not names:
        return ""
    off = " ".join(f"{n.lower()} off" for n in names)
    return (f"flowscope: {at.ifname}: {', '.join(names)} on: packets these offloads merge "
            f"count as one, as a capture on this host shows them, not as the wire carries "
            f"them (ethtool -K {at.ifname} {off})")


#: frames the hooks must have seen before the mirror-port note can speak
MIRROR_NOTE_FRAMES = 10_000


def mirror_note(c: dict) -> str:
    """The line saying that most frames were for other hosts, from the kernel counters ``c``
    (``packets``: frames the hooks saw; ``otherhost``: frames the stack freed as addressed to
    another host, host-wide), "" while they are few or not most (docs/live.md, "Kernel
    drops")."""
    seen, other = c["packets"], c["otherhost"]
    if seen < MIRROR_NOTE_FRAMES or 2 * other < seen:
        return ""
    return (f"flowscope: {other} frames were for other hosts, against {seen} packets seen (a "
            "mirror port or a promiscuous link): no drops, but the drop tracer is called for "
            "each; where this host's own flows are not in that traffic, sensor.drops: false "
            "saves it")


class Sensor:
    """Attach to interfaces, turn kernel events into flow events, write them.

    Parameters
    ----------
    ifnames : sequence of str
        Interfaces (in the calling thread's network namespace). Nothing else is touched.
    tracker : FlowTracker
        Five-tuple tracker with no automatic sweeps (the sensor sweeps on its timer).
    writer : object
        Has ``write_records(recs)``; gets every batch of event records. Its ``flush()``,
        when it has one, is called every ``FLUSH_INTERVAL`` seconds.
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
        if tracker.config.max_flows < (config.map_size or tracker.config.max_flows):
            raise ValueError("the tracker must hold at least sensor.map_size flows "
                             "(see flowscope.sensor.settings.tracker_capacity)")
        if tracker.config.sweep_interval is not None:
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
        self._evbuf = np.zeros(max(16, config.batch), dtype=SL.RECORD_DTYPE)
        self._slots: dict[int, int] = {}
        self._timeouts = tracker.config.timeout_table()  # ns, indexed by IP protocol
        self._next_sweep = 0.0
        # idle syncs (sync_idle): the change marks of the last tick; whether the map may
        # hold changes the last read did not see; the clock offset, drop mark and time of
        # the last map read; when its first entry turns idle
        self._marks: tuple = ()
        self._pending = True
        self._reread = False
        # the map changed since the last read, which waits for the next due time (no
        # active timeout: nothing in the engine can come due before that)
        self._behind = False
        self._lazy = tracker.config.active_timeout is None
        self._synced_off: Optional[int] = None
        self._synced_drops = -1
        self._t_ref = 0
        # entries read before their flow's first event reached the engine: synced at the
        # next read whatever their stamp (see sync_idle, step 4)
        self._resync = _key_void(np.zeros(0, SL.FLOW_KEY_DTYPE))
        self._next_due = 0
        # the keys that turn idle first (by due time), and when the next of the others does
        self._due_keys = np.zeros(0, SL.FLOW_KEY_DTYPE)
        self._due_at = np.zeros(0, np.int64)
        self._due_horizon = 0
        # the earliest an entry of an event drained since the last read can turn idle: a
        # flow that starts and goes idle between two reads is not waited for
        self._event_due = INT64_MAX
        self._next_report = 0.0
        self._closed = False
        self._drop_names: dict[int, str] = {}
        self._mirror_noted = False  # mirror_note said its line (once a run)
        self.metrics = None  # a flowscope.metrics.MetricsServer, updated about once a second
        self._next_metrics = 0.0
        self._next_flush = 0.0
        self._next_ifcheck = 0.0
        self._lag = 0.0
        # interfaces that disappeared: name -> the line last reported about re-attaching
        self.gone: dict[str, str] = {}
        # ifindex -> keys (FLOW_KEY_DTYPE as void) of the events seen there, with several
        # interfaces only: which flows to end when one of them disappears
        self._seen: dict[int, list[np.ndarray]] = {}
        self._seen_n: dict[int, int] = {}
        # metrics with several interfaces: engine key -> ifindex of the TCP flow's last event
        self._iface_of: dict[tuple, int] = {}

    # ---- set-up ------------------------------------------------------------------------

    def tunables(self) -> dict:
        return tunables(self.config, self.tracker.config)

    def start(self) -> float:
        """Compile the engine, load and attach the programs; returns the warm-up seconds."""
        from ..warmup import warmup
        from . import attach, loader, maps
        from .clock import MonoToWall
        from .ring import RingReader

        lean_heap()
        secs = warmup()
        self.clock = MonoToWall()
        tun = self.tunables()
        if tun.get("drops"):
            from .btf import BtfError, drop_reason_names, drop_tracer_cflags

            try:
                drop_tracer_cflags()
                loader.drop_tracepoint_id()
                self._drop_names = drop_reason_names()
            except BtfError as exc:
                tun["drops"] = 0
                self.report(f"flowscope: kernel drops not tracked: {exc}")
        self.loaded = load_quietly(loader, tun, tc_ingress=(
            "ingress" in self.config.hooks and self.config.ingress in ("auto", "tc")))
        if tun.get("drops") and not self.loaded.drops:
            self.report(f"flowscope: kernel drops not tracked: {self.loaded.drops_error}")
        try:
            maps.write_filter(self.loaded, self.tracker.config)
            self.ring = RingReader(self.loaded.events_fd)
            self._warm_sensor_paths()
            if tun.get("drops"):  # the parsed kernel BTF (tens of MiB) served its purpose
                from .btf import vmlinux

                vmlinux.cache_clear()
            trim_heap()
            for i, name in enumerate(self.ifnames):
                self.attachments.append(self._attach_one(attach, name))
                self._slots[self.attachments[-1].ifindex] = i
            if self.loaded.drops:
                self.loaded.attach_drops()
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
        at = attach.attach(self.loaded, name, xdp_mode=self.config.xdp_mode,
                           egress="egress" in hooks,
                           ingress=self.config.ingress if "ingress" in hooks else "",
                           promisc=self.config.promisc)
        if self.loaded.drops:  # drops on this device count even without a known flow
            from . import maps

            maps.watch(self.loaded, at.ifindex)
        return at

    def read_kernel_drops(self) -> dict:
        """``{(ifindex or 0, reason name): drops}`` from the kernel's fs_drop_counts (also
        kept in ``stats.kernel_drops``); {} when drops are not tracked."""
        if self.loaded is None or not self.loaded.drops:
            return {}
        from . import maps

        keys, vals = maps.drop_counts(self.loaded.map_fd("fs_drop_counts"))
        out: dict = {}
        for i, r, n in zip(keys["ifindex"].tolist(), keys["reason"].tolist(), vals.tolist()):
            name = self._drop_names.get(r, str(r))
            out[(i, name)] = out.get((i, name), 0) + n
        self.stats.kernel_drops = out
        return out

    def describe(self) -> str:
        """The interfaces and what is attached to each: ``eth0 (xdp native + tcx egress)``."""
        return ", ".join(f"{at.ifname} ({at.label})" for at in self.attachments)

    def offload_notes(self) -> list[str]:
        """One line per interface whose offloads hand the hooks merged packets."""
        return [ln for ln in map(offload_note, self.attachments) if ln]

    def _warm_sensor_paths(self) -> None:
        # the ring drain on an empty ring (nothing is attached yet); warmup() ran the row
        # builders
        self.ring.drain(self._evbuf[:1])
        for _ in self.tracker.process_end(np.zeros((1, 5), np.uint64), 0):  # no such flow
            pass

    # ---- running -----------------------------------------------------------------------

    def _feed(self, rows: np.ndarray, names: np.ndarray | None = None) -> None:
        if len(rows):
            for recs in self.tracker.process(rows, names, scratch=True):  # rows built here
                self._count_tcp(recs)
                self.writer.write_records(recs)

    def _count_tcp(self, recs: np.ndarray) -> None:
        """Metrics on: the TCP loss signals and handshake times of the Ended records, by the
        interface of the flow's events (with one interface, that one)."""
        if self.metrics is None or not len(recs):
            return
        meta = recs["key"][:, 4]
        tcp = recs[(recs["kind"] == L.EV_ENDED)
                   & (((meta >> np.uint64(L.META_PROTO_SHIFT)) & np.uint64(0xFF))
                      == L.IPPROTO_TCP)]
        if not len(tcp):
            return
        if len(self.attachments) <= 1 and not self._iface_of:
            ifx = self.attachments[0].ifindex if self.attachments else 0
            self.stats.count_tcp(tcp, np.full(len(tcp), ifx, np.int64))
            return
        keys = [tuple(k) for k in tcp["key"].tolist()]
        self.stats.count_tcp(tcp, np.array([self._iface_of.pop(k, 0) for k in keys], np.int64))

    def _drain_once(self) -> np.ndarray:
        n = self.ring.drain(self._evbuf)
        self.stats.events += n
        if n:
            ev = self._evbuf[:n]
            self._event_due = min(self._event_due, int(
                (ev["ts_ns"].astype(np.int64) + self._timeouts[ev["key"]["proto"]]).min()))
            self.stats.count_hooks(self._evbuf[:n])
            # how far behind the kernel the newest event is when it reaches the engine
            newest = int(self._evbuf["ts_ns"][:n].max())
            self._lag = max(0.0, (time.clock_gettime_ns(time.CLOCK_MONOTONIC) - newest) / 1e9)
            if len(self.ifnames) > 1:
                self._remember_interfaces(self._evbuf[:n])
                if self.metrics is not None:
                    self._note_tcp_interfaces(self._evbuf[:n])
        return self._evbuf[:n]

    def drain(self, max_batches: int = 64) -> int:
        """Move up to ``max_batches`` ring batches into the engine; returns the events read."""
        total = 0
        for _ in range(max_batches):
            ev = self._drain_once()
            if len(ev) == 0:
                break
            total += len(ev)
            self._feed(*event_rows(ev, self.clock.offset_ns, self._slots))
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
            self.read_kernel_drops()
            self.metrics.update(self.tracker.stats, maps.counters_dict(self.loaded.counters_fd),
                                self.stats, {at.ifindex: at.ifname for at in self.attachments},
                                self._lag if drained else 0.0)
        if now >= self._next_sweep:
            self._refresh_clock()
            self.sync_idle()
            self._next_sweep = now + self.config.sweep_interval
        if now >= self._next_ifcheck:
            self._next_ifcheck = now + IFACE_CHECK_INTERVAL
            self.check_interfaces()
            if self.loaded is not None and self.loaded.drops_attached and not self._mirror_noted:
                self.note_mirror()
        if now >= self._next_flush:
            self._next_flush = now + FLUSH_INTERVAL
            flush = getattr(self.writer, "flush", None)
            if flush is not None:
                flush()
        if self._next_report and now >= self._next_report:
            self.report(self.counters_line(self.counters(cheap=True)))
            self._next_report = now + self.config.report_interval

    def run(self, should_stop: Callable[[], bool], duration: Optional[float] = None) -> None:
        """Poll until ``should_stop()`` is true (or ``duration`` seconds passed)."""
        end = None if duration is None else time.monotonic() + duration
        while not should_stop():
            if end is not None and time.monotonic() >= end:
                break
            if not self.attachments and not self.config.reattach:
                break  # every interface is gone
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

    def sync_idle(self) -> None:
        """Remove idle entries from the map and end them in the engine (steps 1-5 above)."""
        from . import maps

        self.stats.ticks += 1
        self._drain_everything()  # 1
        off = self.clock.offset_ns
        now_mono = time.clock_gettime_ns(CLOCK_MONOTONIC)
        marks = maps.change_marks(self.loaded.counters_fd)
        moved = marks != self._marks  # since the previous tick
        self._marks = marks
        is_due = now_mono >= min(self._next_due, self._event_due)
        must = off != self._synced_off or self._reread
        if not must and not self._pending:
            if not moved and not self._behind and (
                    not is_due or self._expire_known(now_mono, off)):
                # the map holds what the last read saw (less what was just removed)
                self.stats.quiet_ticks += 1
                for recs in self.tracker.process_sweep(now_mono + off):  # active timeouts
                    self.writer.write_records(recs)
                return
            if (moved or self._behind) and not is_due and self._lazy:
                # packets on known flows (or new flows, whose events the engine has): no
                # entry can be due before the earliest due time seen, so the read, and the
                # engine's sweep, wait for it
                self._behind = True
                self.stats.quiet_ticks += 1
                return
            if moved and not is_due:
                # first change after a quiet spell: read next tick, when every write of the
                # packets counted so far has landed (the engine's sweep waits too: its view
                # of the changed flows is behind)
                self._pending = True
                self.stats.quiet_ticks += 1
                return
        # a read taken while packets keep coming may miss the last ones' writes: read again
        # after a tick without any
        self._pending, self._reread, self._behind = moved, False, False
        self.stats.map_reads += 1
        self._event_due = INT64_MAX  # the read has every entry of the events drained so far
        keys, vals = maps.lookup_flows(self.loaded.flows_fd, self.map_size)  # 2
        due = maps.due_times(keys, vals, self._timeouts)
        idle = (due <= now_mono) & ~_lost(vals)
        gone_k, gone_v = maps.lookup_and_delete(self.loaded.flows_fd, keys[idle])
        if len(gone_k):
            gone_k, gone_v = self._put_back_raced(gone_k, gone_v, now_mono)
        self.stats.idle_removed += len(gone_k)
        # 2b: entries whose terminal event was lost: removed too, and ended below from their
        # final values; one whose terminal event got through meanwhile is left to that event
        lost = _lost(vals)
        lost_k, lost_v = maps.lookup_and_delete(self.loaded.flows_fd, keys[lost])
        still = _lost(lost_v)
        self.stats.lost_ends += int(still.sum())
        n_idle = len(gone_k)
        gone_k = np.concatenate([gone_k, lost_k[still]])
        gone_v = np.concatenate([gone_v, lost_v[still]])
        idle |= lost
        # 3: events produced since step 1; drop removed flows' events up to a NEW one
        later = self._drain_later(gone_k)
        # 4: sync the live entries stamped since the last read (all of them after a clock
        # step; with a new kernel drop, those with drops too), the removed ones with their
        # final values
        keep = ~idle
        self.stats.open_packets = int(vals["pkts"][keep & _unreported(vals)].sum())
        self._remember_due(keys, due, keep)
        del due
        kv = _key_void(keys)
        if self._synced_off == off and self._t_ref:
            changed = vals["last_ns"].astype(np.int64) >= self._t_ref - SYNC_SLACK_NS
            if marks[1] != self._synced_drops:  # a drop changes an entry without a stamp
                changed |= (vals["drops"] != 0).any(axis=1)
            if len(self._resync):
                changed |= np.isin(kv, self._resync)
            keep &= changed
        # a flow whose first packet landed between steps 1 and 2 has its NEW event in
        # ``later``: a sync row now would create the flow without that packet (no MACs,
        # history or start as the first packet gives them), so the event creates it and
        # the entry is synced at the next read
        new = (later["reason"] & SL.EventReason.NEW) != 0
        if new.any():
            held = keep & np.isin(kv, _key_void(later["key"][new]))
            keep &= ~held
            self._resync = kv[held]  # a copy already (fancy indexing)
        else:
            self._resync = kv[:0].copy()  # not a view holding this read's keys
        self._t_ref, self._synced_off, self._synced_drops = now_mono, off, marks[1]
        self._end_removed(keys[keep], vals[keep], gone_k, gone_v, n_idle, later, now_mono, off)

    def _drain_later(self, gone_k: np.ndarray) -> np.ndarray:
        """Step 3: the events produced since step 1, less those of the removed flows
        ``gone_k`` produced before their removal (up to a NEW one)."""
        later = [self._drain_once().copy()]
        while len(later[-1]) == len(self._evbuf) and len(later) < 256:
            later.append(self._drain_once().copy())
        later = np.concatenate(later)
        if len(gone_k) and len(later):
            later = self._drop_stale(later, gone_k)
        return later

    def _end_removed(self, live_k, live_v, gone_k, gone_v, n_idle, later, now_mono, off):
        """Steps 4-5: sync the live entries ``live_*`` and the removed ones ``gone_*`` (the
        first ``n_idle`` removed as idle), sweep the engine, feed the ``later`` events."""
        all_k = np.concatenate([live_k, gone_k])
        all_v = np.concatenate([live_v, gone_v])
        last = all_v["last_ns"].astype(np.int64)
        # a removed idle flow ends as idle even when a racing packet made it look busy
        idle_rows = slice(len(live_k), len(live_k) + n_idle)
        tmo_all = self._timeouts[all_k["proto"]]
        last[idle_rows] = np.minimum(last[idle_rows], now_mono - tmo_all[idle_rows])
        self._sync(all_k, all_v, last)
        for recs in self.tracker.process_sweep(now_mono + off):
            self.writer.write_records(recs)
        # 5
        self._feed(*event_rows(later, off, self._slots))

    def _remember_due(self, keys: np.ndarray, due: np.ndarray, keep: np.ndarray) -> None:
        """After a read: the keys of the ``DUE_KEYS`` entries (of ``keys[keep]``) that turn
        idle first, by due time, and when the next of the others does."""
        idx = np.flatnonzero(keep)
        d = due[idx]
        if len(d) > DUE_KEYS:
            part = np.argpartition(d, DUE_KEYS)
            self._due_horizon = int(d[part[DUE_KEYS:]].min())
            idx, d = idx[part[:DUE_KEYS]], d[part[:DUE_KEYS]]
        else:
            self._due_horizon = INT64_MAX
        order = np.argsort(d, kind="stable")
        self._due_keys = keys[idx[order]]
        self._due_at = d[order]
        self._next_due = int(d[order[0]]) if len(d) else self._due_horizon

    def _expire_known(self, now_mono: int, off: int) -> bool:
        """Quiet map, some entries due: remove and end exactly those (known from the last
        read) without reading the map. False when the known ones run out (read the map)."""
        from . import maps

        n = int(np.searchsorted(self._due_at, now_mono, side="right"))
        if n == len(self._due_at) and self._due_horizon <= now_mono:
            return False
        ks = self._due_keys[:n]
        self._due_keys, self._due_at = self._due_keys[n:], self._due_at[n:]
        self._next_due = int(self._due_at[0]) if len(self._due_at) else self._due_horizon
        self.stats.expired_known += n
        gone_k, gone_v = maps.lookup_and_delete(self.loaded.flows_fd, ks)
        if len(gone_k):
            gone_k, gone_v = self._put_back_raced(gone_k, gone_v, now_mono)
        self.stats.idle_removed += len(gone_k)
        self.stats.open_packets -= int(gone_v["pkts"][_unreported(gone_v)].sum())
        later = self._drain_later(gone_k)
        none = gone_k[:0]
        self._end_removed(none, gone_v[:0], gone_k, gone_v, len(gone_k), later, now_mono, off)
        return True

    def _sync(self, keys: np.ndarray, vals: np.ndarray,
              last_ns: Optional[np.ndarray] = None) -> np.ndarray:
        """Feed PF_SYNC rows for the map entries whose flow the engine has not ended (open
        ones and lost terminal ones; terminal ones were ended by their event); ``last_ns``
        overrides their last-seen times. Returns the keys synced."""
        keep = _unreported(vals)
        rows = sync_rows(keys[keep], vals[keep], self.clock.offset_ns,
                         None if last_ns is None else last_ns[keep])
        self.stats.synced += len(rows)
        self._feed(rows)
        return keys[keep]

    def _put_back_raced(self, keys, vals, now_mono):
        """Reinsert removed entries that a packet made busy again; return the really removed."""
        from . import maps

        busy = ~maps.idle_mask(keys, vals, now_mono, self._timeouts)
        if not busy.any():
            return keys, vals
        self._reread = True  # entries changed after this tick's read: read again next tick
        back = maps.insert_new(self.loaded.flows_fd, keys[busy], vals[busy])
        self.stats.put_back += int(back.sum())
        self.stats.sweep_races += int((~back).sum())
        removed = np.ones(len(keys), dtype=bool)
        removed[np.flatnonzero(busy)[back]] = False
        return keys[removed], vals[removed]

    def _drop_stale(self, ev: np.ndarray, gone_keys: np.ndarray) -> np.ndarray:
        gone = set(key_bytes(gone_keys))
        cand = np.flatnonzero(np.isin(ev["key"]["a_lo"], gone_keys["a_lo"])
                              & np.isin(ev["key"]["b_lo"], gone_keys["b_lo"]))
        if len(cand) == 0:
            return ev
        keep = np.ones(len(ev), dtype=bool)
        kb = key_bytes(ev["key"][cand])
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

    # ---- interfaces that come and go ---------------------------------------------------

    def _remember_interfaces(self, ev: np.ndarray) -> None:
        """Note the keys of events per interface (several interfaces only)."""
        keys = _key_void(ev["key"])
        for at in self.attachments:
            mine = keys[ev["ifindex"] == at.ifindex]
            if len(mine):
                self._seen.setdefault(at.ifindex, []).append(mine.copy())
                self._seen_n[at.ifindex] = self._seen_n.get(at.ifindex, 0) + len(mine)
                if self._seen_n[at.ifindex] > 2 * self.map_size + 4096:
                    self._compact_seen(at.ifindex)

    def _note_tcp_interfaces(self, ev: np.ndarray) -> None:
        """Metrics with several interfaces: the interface of each TCP flow's latest event,
        which its loss signals are counted to when it ends (bounded like ``_seen``)."""
        tcp = ev[ev["key"]["proto"] == L.IPPROTO_TCP]
        if not len(tcp):
            return
        for k, i in zip(map(tuple, _engine_keys(tcp["key"]).tolist()), tcp["ifindex"].tolist()):
            self._iface_of[k] = i
        if len(self._iface_of) > 2 * self.map_size + 4096:
            self._iface_of.clear()  # flows ended without a record (never: a safety bound)

    def _seen_keys(self, ifindex: int) -> np.ndarray:
        """The distinct keys seen on ``ifindex`` (void view of FLOW_KEY_DTYPE)."""
        parts = self._seen.get(ifindex) or [_key_void(np.zeros(0, SL.FLOW_KEY_DTYPE))]
        return np.unique(np.concatenate(parts))

    def _compact_seen(self, ifindex: int) -> None:
        """Keep only distinct keys that still have a map entry (bounds the memory)."""
        from . import maps

        keys, _ = maps.lookup_flows(self.loaded.flows_fd, self.map_size)
        live = _key_void(keys)
        seen = self._seen_keys(ifindex)
        seen = seen[np.isin(seen, live)]
        self._seen[ifindex] = [seen]
        self._seen_n[ifindex] = len(seen)

    def note_mirror(self) -> None:
        """Say once when most frames were for other hosts (``mirror_note``)."""
        from . import maps

        line = mirror_note(maps.counters_dict(self.loaded.counters_fd))
        if line:
            self._mirror_noted = True
            self.report(line)

    def check_interfaces(self) -> None:
        """End the flows of interfaces that disappeared; re-attach returning ones on request.

        An interface counts as gone when its name no longer resolves to the index we attached
        to (deleted, or deleted and re-created in between). Down/up keeps the index and the
        attachment.
        """
        for at in list(self.attachments):
            try:
                idx = socket.if_nametoindex(at.ifname)
            except OSError:
                idx = 0
            if idx != at.ifindex:
                self._interface_gone(at)
        if self.config.reattach:
            for name in list(self.gone):
                self._try_reattach(name)

    def _interface_gone(self, at) -> None:
        from . import maps

        self.drain()  # every event seen there reaches the engine (and the key record) first
        try:
            at.detach()  # the kernel already dropped the links: this closes our fds
        except Exception:  # noqa: BLE001 - a netlink/clsact removal on a missing device
            pass
        self.attachments.remove(at)
        self.gone[at.ifname] = ""
        off = self.clock.offset_ns
        now = time.clock_gettime_ns(CLOCK_MONOTONIC) + off
        if len(self.ifnames) == 1:
            # one interface: every flow is its flow
            keys, vals = maps.drain_flows(self.loaded.flows_fd, self.map_size)
        else:
            want = self._seen_keys(at.ifindex).view(SL.FLOW_KEY_DTYPE)
            self._seen.pop(at.ifindex, None)
            self._seen_n.pop(at.ifindex, None)
            keys, vals = maps.lookup_and_delete(self.loaded.flows_fd, want)
        keys = self._sync(keys, vals)
        before = self.tracker.stats.flows_ended
        for recs in self.tracker.process_end(_engine_keys(keys), now):
            self.writer.write_records(recs)
        ended = self.tracker.stats.flows_ended - before
        left = ", ".join(a.ifname for a in self.attachments)
        tail = f"still tracking {left}" if left else (
            f"waiting for {at.ifname} to return" if self.config.reattach else "none left")
        self.report(f"flowscope: interface {at.ifname} is gone: {ended} of its flows ended "
                    f"(shutdown); {tail}")

    def _try_reattach(self, name: str) -> None:
        from . import attach

        try:
            socket.if_nametoindex(name)
        except OSError:
            return
        try:
            at = self._attach_one(attach, name)
        except Exception as exc:  # noqa: BLE001 - report once, try again next check
            line = f"flowscope: interface {name} is back but cannot be attached: {exc}"
            if self.gone[name] != line:
                self.gone[name] = line
                self.report(line)
            return
        del self.gone[name]
        self.attachments.append(at)
        self._slots[at.ifindex] = self.ifnames.index(name)
        self.report(f"flowscope: interface {name} is back: tracking it again ({at.label})")
        note = offload_note(at)
        if note:
            self.report(note)

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
                self._sync(*maps.drain_flows(self.loaded.flows_fd, self.map_size))
                for recs in self.tracker.process_finish():
                    self.writer.write_records(recs)
                self.final_counters = self.counters()
        finally:
            self._release()
        if errors:
            raise RuntimeError(f"detach failed: {errors}")

    # ---- counters ----------------------------------------------------------------------

    def counters(self, cheap: bool = False) -> dict[str, int]:
        """Kernel counters (``Counter`` names) plus the tracker's and the sensor's.

        ``packets + decap = ended_packets + open_packets + unparseable + map_full +
        frag_unresolved + filtered + sampled_out + in_flight`` is the conservation identity
        (``decap``: packets decapsulated from tunnel frames, each in an inner flow of its own
        besides the frame's outer packet): every packet the
        kernel counted is in an Ended record, in a flow still open in the kernel map, or in a
        named counter (``frag_unresolved``: non-first fragments held for a first fragment
        that has not come, orphaned after the fragment timeout or evicted from the fragment
        map; ``filtered`` / ``sampled_out``: packets of flows the flow filter or the sampler
        kept out of the map).
        ``in_flight`` (packets counted between the reads) is 0 once detached.

        ``cheap``: take ``open_packets`` from the last idle sync's map read when no packet
        has been counted since, or when the next read waits for a due time (the periodic
        report; the packets counted since are in flight), instead of reading the map.
        """
        from . import maps

        if self.loaded is None:
            return dict(getattr(self, "final_counters", {}))
        # the map is as the last read saw it, or its read waits for a due time (what came
        # since counts as in flight)
        reuse = cheap and not self._reread and (self._behind or (
            not self._pending and maps.change_marks(self.loaded.counters_fd) == self._marks))
        c = maps.counters_dict(self.loaded.counters_fd)
        s = self.tracker.stats
        c["unparseable"] = c["truncated"] + c["not_ip"] + c["bad_header"]
        c["frag_unresolved"] = c["frag_held"] - c["frag_resolved"]
        c["not_tracked"] = c["filtered"] + c["sampled_out"]
        c["matched"] = (c["packets"] + c["decap"] - c["unparseable"] - c["map_full"]
                        - c["frag_unresolved"] - c["not_tracked"])
        c["tracked_packets"] = s.packets_matched
        c["ended_packets"] = s.packets_ended
        if reuse:
            c["open_packets"] = self.stats.open_packets
        else:
            _, vals = maps.lookup_flows(self.loaded.flows_fd, self.map_size)
            c["open_packets"] = int(vals["pkts"][_unreported(vals)].sum())
            del vals
        c["in_flight"] = (c["packets"] + c["decap"] - c["ended_packets"] - c["open_packets"]
                          - c["unparseable"] - c["map_full"] - c["frag_unresolved"]
                          - c["not_tracked"])
        c["open_flows"] = s.open_flows
        c["flows_created"] = s.flows_created
        c["flows_ended"] = s.flows_ended
        c["stale_events"] = self.stats.stale_events
        c["sweep_races"] = self.stats.sweep_races
        c["lost_ends"] = self.stats.lost_ends
        return c

    def counters_line(self, c: dict | None = None) -> str:
        c = c if c is not None else self.counters()
        return ("flowscope: kernel: packets {packets} events {events} flows {flows_new}+"
                "{flows_restart} | dropped: map_full {map_full} ring_full {ring_full} "
                "unparseable {unparseable} (truncated {truncated} not_ip {not_ip} "
                "bad_header {bad_header}) pull_fail {pull_fail} | tracker: open {open_flows} "
                "ended {flows_ended} | packets {packets} + decapsulated {decap} = ended "
                "{ended_packets} + open "
                "{open_packets} + unparseable {unparseable} + map_full {map_full} + fragments "
                "unresolved {frag_unresolved} + filtered {filtered} + sampled out "
                "{sampled_out} + in flight {in_flight}".format(**c))


def _key_void(keys: np.ndarray) -> np.ndarray:
    """``FLOW_KEY_DTYPE`` keys as one opaque value each (for ``np.isin``)."""
    return np.ascontiguousarray(keys).view(f"V{SL.FLOW_KEY_DTYPE.itemsize}")


def _engine_keys(keys: np.ndarray) -> np.ndarray:
    """Kernel flow keys (FLOW_KEY_DTYPE) -> the engine's key words, uint64[n, 5]."""
    out = np.zeros((len(keys), 5), dtype=np.uint64)
    out[:, 0] = keys["a_hi"]
    out[:, 1] = keys["a_lo"]
    out[:, 2] = keys["b_hi"]
    out[:, 3] = keys["b_lo"]
    out[:, 4] = ((keys["l3"].astype(np.uint64) << np.uint64(L.META_L3_SHIFT))
                 | (keys["proto"].astype(np.uint64) << np.uint64(L.META_PROTO_SHIFT))
                 | (keys["port_a"].astype(np.uint64) << np.uint64(L.META_PORT_A_SHIFT))
                 | keys["port_b"].astype(np.uint64))
    v = keys["vlan"].astype(np.uint64)  # key_vlan (0 otherwise)
    out[:, 4] |= (((v & np.uint64(0xFF)) << np.uint64(L.META_VLAN_LO_SHIFT))
                  | (((v >> np.uint64(8)) & np.uint64(0xF)) << np.uint64(L.META_VLAN_HI_SHIFT)))
    return out


__all__ = ["Sensor", "SensorStats", "StartError"]
