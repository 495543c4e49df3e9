"""The public FlowTracker: validates input, runs the numba engine, builds events.

Two ways in, one engine:

* ``track(view)`` takes one ``PacketView`` (raw frame bytes + timestamp) and
  returns that packet's events as objects, as the reference API does;
* ``track_batch(pkts)`` / ``process(pkts)`` take a numpy array of parsed
  packets (``layout.PKT_DTYPE``; or ``layout.ROW_DTYPE`` rows and their DNS
  name array, as the capture reader's ``rows()`` and the live sensor produce
  them) and create no Python object per packet: ``process`` yields the
  raw event records (``layout.EVENT_DTYPE``) for writers, ``track_batch``
  turns them into event objects.

Both give identical event streams for the same packets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from . import layout
from ._kernels import engine as K
from ._kernels import frag as KF
from .config import TrackerConfig
from .events import (
    EndReason,
    Ended,
    Established,
    FlowEvent,
    FlowSide,
    FlowState,
    FlowStats,
    HistoryString,
    L4Proto,
    Orientation,
    Packet,
    Started,
    StateChange,
    TcpPerf,
    Tunnel,
    Timestamp,
    Update,
)
from .flowfilter import engine_table
from .keys import Extractor, FiveTuple
from .layout import NS_PER_S

#: Event records per engine call; a call stops early when this fills up.
DEFAULT_EVENT_CAPACITY = 1 << 13

@dataclass(frozen=True, slots=True)
class PacketView:
    """One captured frame: its bytes, its time and its link type (pcap LINKTYPE_*)."""

    frame: bytes
    timestamp: Timestamp = Timestamp()
    linktype: int = 1


@dataclass(frozen=True, slots=True)
class TrackerStats:
    """Counters of a tracker; ``flows_created == flows_ended + open_flows`` always."""

    flows_created: int
    flows_ended: int
    flows_evicted: int
    packets_unmatched: int
    open_flows: int
    packets_matched: int
    bytes_matched: int
    ended_fin: int
    ended_rst: int
    ended_idle: int
    ended_shutdown: int
    packets_ended: int = 0  # packets of the ended flows (the sum over their Ended records)
    fragments_keyed: int = 0  # non-first fragments counted to their datagram's flow (ports)
    fragments_held: int = 0  # non-first fragments now waiting for their first fragment
    fragments_orphaned: int = 0  # held fragments whose first fragment never came (unmatched)
    truncated_l4: int = 0  # packets whose TCP/UDP header was cut short (keyed with ports 0)
    bad_checksums: int = 0  # matched packets with a bad checksum (verify_checksums)
    packets_filtered: int = 0  # packets of flows the flow filter dropped (never tracked)
    packets_sampled_out: int = 0  # packets of flows flow sampling left out (never tracked)
    packets_decapsulated: int = 0  # rows of decapsulated (inner) packets, in the counts above
    frames_not_ip: int = 0  # frames with no IP packet (ARP, LLDP, ...; error PERR_NOT_IP)
    dns_messages: int = 0  # DNS messages on matched packets (header decoded; dns on)
    dns_matched: int = 0  # responses matched to their flow's first query (dns_rtt)


#: The name array of rows that carry no DNS query name.
_NO_NAMES = np.zeros((1, layout.DNS_NAME_MAX), dtype=np.uint8)


def event_mask(events: str | int) -> int:
    """Event mask from ``"all" | "lifecycle" | "ended"`` or an int mask."""
    if isinstance(events, int):
        return events
    try:
        return layout.EVENT_MASKS[events]
    except KeyError:
        raise ValueError(f"events: expected one of all, lifecycle, ended; got {events!r}") from None


def _zeros_aligned(shape: tuple[int, int], align: int = 64) -> np.ndarray:
    """int64 zeros whose first element (so, with rows of 8k columns, every row) starts on an
    ``align``-byte boundary: a flow's columns never straddle one cache line more than they
    must."""
    n = shape[0] * shape[1]
    buf = np.zeros(n + align // 8, dtype=np.int64)
    off = (-buf.ctypes.data % align) // 8
    return buf[off:off + n].reshape(shape)


def _pow2_at_least(n: int) -> int:
    size = 16
    while size < n:
        size <<= 1
    return size


def _table_size(max_flows: int) -> int:
    return _pow2_at_least(2 * max_flows)


def _ts_ns(now: Timestamp | int | float) -> int:
    if isinstance(now, Timestamp):
        return now.to_ns()
    if isinstance(now, float):
        return int(round(now * NS_PER_S))
    return int(now)


class FlowTracker:
    """Tracks flows and TCP sessions and reports them as events.

    Parameters
    ----------
    extractor : Extractor, optional
        What a flow is: ``FiveTuple()`` (default, bidirectional),
        ``FiveTuple.directional()``, ``IpPair()`` or ``MacPair()``.
    config : TrackerConfig, optional
        Timeouts, ``max_flows``, ``infer_tcp_initiator``, sweep interval.
    events : {"all", "lifecycle", "ended"} or int
        Which events to produce. Leaving out Packet events is much cheaper.
    event_capacity : int
        Size of the engine's event buffer (records per engine call).
    zeek : bool
        Also keep Zeek-style connection state per flow (history letters,
        endpoint states, IP bytes) for the Zeek and EVE writers.
    """

    def __init__(
        self,
        extractor: Optional[Extractor] = None,
        config: Optional[TrackerConfig] = None,
        events: str | int = "all",
        event_capacity: int = DEFAULT_EVENT_CAPACITY,
        zeek: bool = False,
    ) -> None:
        self.extractor = extractor if extractor is not None else FiveTuple()
        if not isinstance(self.extractor, Extractor):
            raise TypeError("extractor: expected FiveTuple(), IpPair() or MacPair()")
        self.config = config if config is not None else TrackerConfig()
        cap = self.config.max_flows
        self._ctl = np.zeros(K.C_SIZE, dtype=np.int64)
        self._table = np.zeros(_table_size(cap), dtype=np.int32)
        self._fkey = np.zeros((cap, layout.KEY_WORDS), dtype=np.uint64)
        self._fint = _zeros_aligned((cap, K.F_SIZE))  # rows on whole cache lines
        # per-flow history letters, then (dns) the pool of first DNS query names: pages of
        # the pool are touched only as names are handed out
        rows = cap * (1 + K.NAME_ROWS) if self.config.dns else cap
        self._fhist = np.zeros((rows, layout.HISTORY_MAX), dtype=np.uint8)
        # slot rows at and above C_HIGH are never read: no need to touch their pages
        self._fdl = np.empty((K.dl_rows(cap), 2), dtype=np.int64)
        self._fdl[cap:] = (K.NO_FLOW, K.FREE_SERIAL)  # the blocks' deadline bounds
        self._lq = np.zeros((_pow2_at_least(2 * cap + 16), 2), dtype=np.int64)
        self._sbuf = np.zeros((cap, 2), dtype=np.int64)
        zcap = cap if zeek else 1
        self._fz = np.zeros((zcap, layout.ZEEK_WORDS), dtype=np.int64)
        self._fzh = np.zeros((zcap, layout.ZEEK_HISTORY_MAX), dtype=np.uint8)
        self._frk = np.zeros((layout.FRAG_SLOTS, 5), dtype=np.uint64)
        self._frv = np.zeros((layout.FRAG_SLOTS, KF.FV_SIZE), dtype=np.int64)
        ctl = self._ctl
        ctl[K.C_MAX_FLOWS] = cap
        ctl[K.C_EXTRACT] = self.extractor.kind
        ctl[K.C_INFER] = int(self.config.infer_tcp_initiator)
        ctl[K.C_MASK] = event_mask(events)
        if self.config.active_timeout is not None:
            ctl[K.C_ACTIVE_TMO] = max(1, int(round(self.config.active_timeout * NS_PER_S)))
            ctl[K.C_MASK] |= 1 << layout.EV_UPDATE
        ctl[K.C_TMO:K.C_TMO + 256] = self.config.timeout_table()
        ctl[K.C_SWEEP_POS] = -1
        if self.config.sweep_interval is not None:
            ctl[K.C_SWEEP_INTERVAL] = int(round(self.config.sweep_interval * NS_PER_S))
        ctl[K.C_PAUSE_NEW] = int(self.config.timeout_fn is not None)
        ctl[K.C_TABLE_MASK] = self._table.shape[0] - 1
        ctl[K.C_ZEEK] = int(zeek)
        ctl[K.C_FRAG_TMO] = int(round(self.config.fragment_timeout * NS_PER_S))
        ctl[K.C_VERIFY] = int(self.config.verify_checksums)
        ctl[K.C_FILTER], self._flt = engine_table(self.config)
        ctl[K.C_SAMPLE_RATE] = self.config.sample_rate
        ctl[K.C_TUN_PID:K.C_TUN_PID + layout.TUN_MAX_DEPTH] = -1
        ctl[K.C_KEY_VLAN] = int(self.config.key_vlan)
        ctl[K.C_KEY_ICMP] = int(self.config.key_icmp)
        ctl[K.C_DNS] = int(self.config.dns)
        self._ev = np.zeros(max(int(event_capacity), 64), dtype=layout.EVENT_DTYPE)
        self._keys: dict[int, object] = {}  # flow_id -> decoded key, for open flows

    # ---- raw (array) interface ------------------------------------------

    def _state(self) -> tuple:
        return (self._ctl, self._table, self._fkey, self._fint, self._fhist, self._fz, self._fzh,
                self._fdl, self._lq, self._sbuf)

    def process(self, pkts: np.ndarray, names: Optional[np.ndarray] = None,
                scratch: bool = False) -> Iterator[np.ndarray]:
        """Run a batch of parsed packets; yield event records in order.

        ``pkts``: ``PKT_DTYPE`` rows, or ``ROW_DTYPE`` rows with their DNS query names
        ``names`` (uint8[len(pkts), DNS_NAME_MAX], as the capture reader's ``rows()``
        gives them; may be left out when no row has ``DNS_QUESTION``).
        ``scratch``: the rows may be changed in place (a buffer that is refilled next, as
        the capture reader's are); otherwise they are left as they were (with
        ``key_icmp`` the engine writes the ICMP key ports into a copy).
        Each yielded array is a view of the engine's buffer, valid until the
        next item is requested.
        """
        if pkts.dtype == layout.PKT_DTYPE:
            pkts, names = layout.split_rows(pkts)
            scratch = True  # rows of our own
        elif pkts.dtype != layout.ROW_DTYPE:
            raise TypeError("pkts: expected an array of flowscope.layout.PKT_DTYPE")
        elif names is None:
            if (pkts["dns_flags"] & layout.DNS_QUESTION).any():
                raise ValueError("names: the rows carry DNS query names")
            names = _NO_NAMES
        elif (names.dtype != np.uint8 or names.ndim != 2 or names.shape[0] < len(pkts)
              or names.shape[1] != layout.DNS_NAME_MAX or not names.flags.c_contiguous):
            raise TypeError("names: expected a C-contiguous uint8[len(pkts), DNS_NAME_MAX]")
        if not scratch and self.config.key_icmp and (
                (pkts["pflags"] & (layout.PF_ICMP | layout.PF_PORTS)) == layout.PF_ICMP).any():
            pkts = pkts.copy()
        i = 0
        args = self._state() + (self._frk, self._frv, self._flt, self._ev)
        while True:
            i, e, status = K.track_batch(pkts, names, i, *args, 0)
            if status == K.S_PAUSED:
                self._apply_timeout_fn()
            if e:
                yield self._ev[:e]
            if status == K.S_DONE:
                return

    def process_sweep(self, now_ns: int, reason: int = K.END_IDLE) -> Iterator[np.ndarray]:
        """Sweep (``reason`` END_IDLE) or flush (END_SHUTDOWN); yield Ended records."""
        args = self._state() + (self._ev,)
        while True:
            e, finished = K.sweep(*args, 0, now_ns, reason)
            if e:
                yield self._ev[:e]
            if finished:
                return

    def process_end(self, keys: np.ndarray, now_ns: int,
                    reason: int = K.END_SHUTDOWN) -> Iterator[np.ndarray]:
        """End the open flows with key words ``keys`` (uint64[n, 5]) at ``now_ns`` with
        ``reason`` (default Shutdown); keys of no open flow are skipped. Yield Ended records."""
        keys = np.ascontiguousarray(keys, dtype=np.uint64).reshape(-1, 5)
        i = 0
        while i < keys.shape[0]:
            e, i = K.end_keys(self._ctl, self._table, self._fkey, self._fint, self._fhist,
                              self._fz, self._fzh, self._fdl, self._ev, 0, keys, i, now_ns,
                              reason)
            if e:
                yield self._ev[:e]

    def process_finish(self) -> Iterator[np.ndarray]:
        """End every open flow (reason Shutdown, time of the latest packet); yield records.

        Fragments still held for a first fragment are orphaned (``fragments_orphaned``).
        """
        n = int(KF.frag_flush(self._frv))
        c = self._ctl
        c[K.C_FRAG_HELD] -= n
        c[K.C_FRAG_ORPHANS] += n
        c[K.C_UNMATCHED] += n
        yield from self.process_sweep(int(self._ctl[K.C_LAST_TS]), K.END_SHUTDOWN)

    def _apply_timeout_fn(self) -> None:
        s = int(self._ctl[K.C_NEW_SLOT])
        if s < 0:
            return
        seconds = self.config.timeout_fn(self.extractor.decode(self._fkey[s]))
        if seconds is not None:
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
                raise ValueError(f"timeout_fn returned {seconds!r}; expected seconds > 0 or None")
            self._fint[s, K.F_TIMEOUT] = int(round(seconds * NS_PER_S))
            deadline = self._fint[s, K.F_LAST] + self._fint[s, K.F_TIMEOUT]
            self._fdl[s, 0] = deadline
            b = self.config.max_flows + (s >> K.DL_BLOCK_SHIFT)
            self._fdl[b, 0] = min(self._fdl[b, 0], deadline)

    # ---- object interface -----------------------------------------------

    def track(self, view: PacketView) -> list[FlowEvent]:
        """Track one packet; return its events in order."""
        from .pcap import parse_rows

        pkts, names = parse_rows(view.frame, view.timestamp.to_ns(), view.linktype,
                                 self.config.verify_checksums, self.config.decapsulate,
                                 self.config.vxlan_port, self.config.geneve_port)
        return self.track_batch(pkts, names)

    def track_batch(self, pkts: np.ndarray, names: Optional[np.ndarray] = None
                    ) -> list[FlowEvent]:
        """Track a batch of parsed packets (as ``process`` takes them); return all their
        events in order."""
        out: list[FlowEvent] = []
        for recs in self.process(pkts, names):
            out.extend(self.events_from_records(recs))
        return out

    def sweep(self, now: Timestamp | int | float) -> list[FlowEvent]:
        """End every flow idle for at least its timeout at ``now``."""
        out: list[FlowEvent] = []
        for recs in self.process_sweep(_ts_ns(now), K.END_IDLE):
            out.extend(self.events_from_records(recs))
        return out

    def finish(self) -> list[FlowEvent]:
        """End every open flow (reason ``Shutdown``), oldest activity first."""
        out: list[FlowEvent] = []
        for recs in self.process_finish():
            out.extend(self.events_from_records(recs))
        return out

    @property
    def stats(self) -> TrackerStats:
        c = self._ctl
        return TrackerStats(
            flows_created=int(c[K.C_CREATED]),
            flows_ended=int(c[K.C_ENDED]),
            flows_evicted=int(c[K.C_EVICTED]),
            packets_unmatched=int(c[K.C_UNMATCHED]),
            open_flows=int(c[K.C_COUNT]),
            packets_matched=int(c[K.C_MATCHED_PKTS]),
            bytes_matched=int(c[K.C_MATCHED_BYTES]),
            ended_fin=int(c[K.C_ENDED_FIN]),
            ended_rst=int(c[K.C_ENDED_RST]),
            ended_idle=int(c[K.C_ENDED_IDLE]),
            ended_shutdown=int(c[K.C_ENDED_SHUTDOWN]),
            packets_ended=int(c[K.C_ENDED_PKTS]),
            fragments_keyed=int(c[K.C_FRAG_KEYED]),
            fragments_held=int(c[K.C_FRAG_HELD]),
            fragments_orphaned=int(c[K.C_FRAG_ORPHANS]),
            truncated_l4=int(c[K.C_TRUNC_L4]),
            bad_checksums=int(c[K.C_BAD_CSUM]),
            packets_filtered=int(c[K.C_FILTERED]),
            packets_sampled_out=int(c[K.C_SAMPLED_OUT]),
            packets_decapsulated=int(c[K.C_DECAP]),
            frames_not_ip=int(c[K.C_NOT_IP]),
            dns_messages=int(c[K.C_DNS_MSGS]),
            dns_matched=int(c[K.C_DNS_MATCHED]),
        )

    def __len__(self) -> int:
        return int(self._ctl[K.C_COUNT])

    # ---- record -> object ------------------------------------------------

    def _key(self, rec: np.void, drop: bool = False) -> object:
        fid = int(rec["flow_id"])
        key = self._keys.pop(fid, None) if drop else self._keys.get(fid)
        if key is None:
            key = self.extractor.decode(rec["key"])
            if not drop:
                self._keys[fid] = key
        return key

    def events_from_records(self, recs: np.ndarray) -> list[FlowEvent]:
        """Turn engine event records into event objects."""
        out: list[FlowEvent] = []
        for rec in recs:
            kind = int(rec["kind"])
            ts = Timestamp.from_ns(int(rec["ts"]))
            if kind == layout.EV_PACKET:
                out.append(Packet(self._key(rec), FlowSide(int(rec["side"])), int(rec["length"]), ts))
            elif kind == layout.EV_STARTED:
                key = self._key(rec)
                kind, _l3, proto, _pa, _pb = layout.unpack_meta(rec["key"][4])
                if kind not in layout.FIVE_TUPLE_KINDS:
                    proto = 0
                out.append(Started(key, FlowSide(int(rec["side"])), ts, L4Proto(proto)))
            elif kind == layout.EV_ESTABLISHED:
                out.append(Established(self._key(rec), ts))
            elif kind == layout.EV_STATE_CHANGE:
                out.append(
                    StateChange(
                        self._key(rec),
                        FlowState(int(rec["from_state"])),
                        FlowState(int(rec["to_state"])),
                        ts,
                    )
                )
            elif kind == layout.EV_ENDED:
                out.append(ended_from_record(rec, self._key(rec, drop=True)))
            elif kind == layout.EV_UPDATE:
                out.append(update_from_record(rec, self._key(rec)))
        return out


def _stats(rec: np.void) -> FlowStats:
    return FlowStats(
        initiator_packets=int(rec["pkts"][0]),
        responder_packets=int(rec["pkts"][1]),
        initiator_bytes=int(rec["bytes"][0]),
        responder_bytes=int(rec["bytes"][1]),
        started=Timestamp.from_ns(int(rec["started"])),
        last_seen=Timestamp.from_ns(int(rec["last_seen"])),
        initiator_payload_bytes=int(rec["payload"][0]),
        responder_payload_bytes=int(rec["payload"][1]),
        initiator_tcp_flags=int(rec["flags_or"][0]),
        responder_tcp_flags=int(rec["flags_or"][1]),
    )


def update_from_record(rec: np.void, key: object) -> Update:
    """Build an Update event (active timeout) from an engine record."""
    hl = int(rec["hist_len"])
    return Update(key, _stats(rec), HistoryString(bytes(rec["history"][:hl]).decode("ascii")),
                  Timestamp.from_ns(int(rec["ts"])), FlowState(int(rec["to_state"])),
                  int(rec["flow_id"]), Orientation(int(rec["init_rev"])))


def ended_from_record(rec: np.void, key: object) -> Ended:
    """Build an Ended event from an engine record."""
    hl = int(rec["hist_len"])
    stats = _stats(rec)
    kind, _l3, proto, _pa, _pb = layout.unpack_meta(rec["key"][4])
    tcp = None
    if proto == layout.IPPROTO_TCP and kind in layout.FIVE_TUPLE_KINDS:
        resp, init = int(rec["rtt_resp"]), int(rec["rtt_init"])
        rp, rb, zw, oo = (rec[f] for f in ("retrans_pkts", "retrans_bytes", "zero_win",
                                            "ooo_pkts"))
        tcp = TcpPerf(resp / 1e9 if resp >= 0 else None, init / 1e9 if init >= 0 else None,
                      int(rp[0]), int(rp[1]), int(rb[0]), int(rb[1]), int(zw[0]), int(zw[1]),
                      int(oo[0]), int(oo[1]))
    return Ended(
        key,
        EndReason(int(rec["reason"])),
        stats,
        HistoryString(bytes(rec["history"][:hl]).decode("ascii")),
        Timestamp.from_ns(int(rec["ts"])),
        FlowState(int(rec["to_state"])),
        int(rec["flow_id"]),
        Orientation(int(rec["init_rev"])),
        tcp,
        _tunnel_of(rec),
    )


def _tunnel_of(rec) -> Optional[Tunnel]:
    """The ``Tunnel`` of an inner flow's Ended record (None for other flows)."""
    if int(rec["tun"]) == 0:
        return None
    ttype, depth, key, seen, _changes = layout.unpack_tun(rec["tun"])
    return Tunnel(layout.TUN_SLUGS.get(ttype, "other"), depth, key,
                  tuple(int(p) for p in rec["tun_parent"] if p >= 0), seen)
