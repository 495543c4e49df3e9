"""Prometheus metrics for the live sensor (``flowscope live --metrics HOST:PORT``).

The sensor loop calls ``MetricsServer.update`` about once a second with the
tracker stats, the kernel counters, the sensor's own stats and how far the
engine lags behind the newest packet; ``update`` turns them into one
``Snapshot`` tuple and a scrape formats the latest one, so a scrape never does
more than read one attribute. Counters are the tracker's, the kernel's and
the sensor's own monotonic totals; a process restart (or a reloaded BPF
program) starts them again from zero, which Prometheus' ``rate()`` treats as
an ordinary counter reset.

One family per meaning, in Prometheus conventions: counters end in
``_total``, a base unit is the name's suffix (``_bytes``, ``_seconds``), and
summing a family over its labels gives a meaningful total. The kernel's
counters are per-CPU sums over every interface and both hooks, so the
families made from them carry no ``interface`` or ``direction`` label; only
the ring events drained by userspace do, because every event names its
interface (``ifindex``) and hook. ``FAMILIES`` is the list, ``KERNEL`` says
which family each ``fs_counter`` goes to; ``docs/metrics.md`` explains both.

``prometheus-client`` is an optional dependency, imported only here and only
when a server is made: ``flowscope pcap`` never loads it. The exporter uses
its own registry, so nothing else registered in the process leaks into it.

Exposed (metric names as scraped):

============================================================  =======  =============================
``flowscope_build_info{version,python,numba,bcc}``            gauge    always 1
``flowscope_seen_packets_total``                              counter  kernel: every frame
``flowscope_tracked_packets_total``                           counter  counted into flows
``flowscope_tracked_bytes_total``                             counter  their frame bytes
``flowscope_ended_packets_total``                             counter  in Ended records
``flowscope_open_packets``                                    gauge    open in the map (last sync)
``flowscope_short_header_packets_total``                      counter  TCP/UDP header cut short
``flowscope_fragment_packets_total{outcome}``                 counter  keyed, held, resolved, ...
``flowscope_unparsed_packets_total{kind}``                    counter  truncated, not_ip, bad_header
``flowscope_drops_total{reason}``                             counter  map_full, ring_full, ...
``flowscope_decapsulated_packets_total``                      counter  taken out of tunnel frames
``flowscope_untracked_packets_total{reason}``                 counter  filtered, sampled_out
``flowscope_flows_active``                                    gauge    flows held now
``flowscope_flows_created_total``                             counter  by the tracker
``flowscope_flows_ended_total{reason}``                       counter  fin, rst, idle_timeout, ...
``flowscope_flows_ended_from_map_total``                      counter  FIN/RST event lost
``flowscope_kernel_flows_started_total{kind}``                counter  new, restart
``flowscope_kernel_insert_races_total``                       counter  insert lost to another CPU
``flowscope_sweep_races_total``                               counter  swept entry not put back
``flowscope_ring_events_submitted_total``                     counter  by the kernel
``flowscope_ring_events_drained_total{interface,direction}``  counter  by userspace
``flowscope_ring_events_stale_total``                         counter  dropped after an idle sync
``flowscope_engine_lag_seconds``                              gauge    wall clock - newest event
``flowscope_tcp_handshake_rtt_seconds{interface}``            hist.    tcp_rtt of ended flows
``flowscope_tcp_retransmitted_segments_total{interface}``     counter  of ended TCP flows
``flowscope_tcp_retransmitted_bytes_total{interface}``        counter  their payload bytes
``flowscope_tcp_out_of_order_segments_total{interface}``      counter  of ended TCP flows
``flowscope_tcp_zero_windows_total{interface}``               counter  of ended TCP flows
``flowscope_ring_dns_events_total``                           counter  DNS records (port 53)
``flowscope_kernel_drops_total{reason,interface}``            counter  host drops, by reason
``flowscope_kernel_drops_matched_total{match}``               counter  flow, interface
============================================================  =======  =============================
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
import threading
from typing import Any, Mapping, NamedTuple, Optional

from . import __version__
from .sensor.layout import Counter, Hook

#: ``reason`` label value -> ``TrackerStats`` field (labels are the JSON Lines ``reason`` slugs).
END_REASONS = (("fin", "ended_fin"), ("rst", "ended_rst"), ("idle_timeout", "ended_idle"),
               ("evicted", "flows_evicted"), ("shutdown", "ended_shutdown"))

#: ``fs_event.hook`` (``enum fs_hook``) -> ``direction`` label: XDP sees ingress, TC egress.
DIRECTIONS = {Hook.XDP: "ingress", Hook.TC: "egress"}


class Family(NamedTuple):
    """One metric family: name as scraped (without ``_total``), type, unit, labels, help."""

    name: str
    type: str  # "counter", "gauge" or "histogram"
    unit: str  # what one count is: packets, bytes, flows, events, drops, races, seconds, info
    labels: tuple[str, ...]
    help: str


#: Every family, in scrape order.
FAMILIES = (
    Family("flowscope_build_info", "gauge", "info", ("version", "python", "numba", "bcc"),
           "Always 1; the labels give the versions of flowscope, Python, numba and BCC."),
    Family("flowscope_seen_packets", "counter", "packets", (),
           "Frames the BPF programs saw, on every interface and hook."),
    Family("flowscope_tracked_packets", "counter", "packets", (),
           "Packets counted into flows by the tracker."),
    Family("flowscope_tracked_bytes", "counter", "bytes", (),
           "Frame bytes of the packets counted into flows."),
    Family("flowscope_unparsed_packets", "counter", "packets", ("kind",),
           "Frames the kernel could not parse into a flow key, by kind."),
    Family("flowscope_ended_packets", "counter", "packets", (),
           "Packets of the ended flows (the sum over their Ended records)."),
    Family("flowscope_open_packets", "gauge", "packets", (),
           "Packets of the flows still open in the kernel map, at the last map sync."),
    Family("flowscope_short_header_packets", "counter", "packets", (),
           "TCP/UDP packets whose header was cut short, counted to an IP-level flow."),
    Family("flowscope_fragment_packets", "counter", "packets", ("outcome",),
           "Non-first IP fragments by outcome: keyed (counted to their datagram's flow), "
           "held (waiting for their first fragment), resolved (held, then counted), "
           "orphaned (held, given up)."),
    Family("flowscope_drops", "counter", "drops", ("reason",),
           "Packets (map_full, pull_fail, tun_lost) or ring events (ring_full) the kernel "
           "could not handle in full, by reason."),
    Family("flowscope_decapsulated_packets", "counter", "packets", (),
           "Packets taken out of tunnel frames, each counted in an inner flow besides its "
           "frame's outer packet."),
    Family("flowscope_untracked_packets", "counter", "packets", ("reason",),
           "Packets of flows kept out of the flow map on purpose, by reason: filtered (the "
           "flow filter), sampled_out (flow sampling)."),
    Family("flowscope_flows_active", "gauge", "flows", (),
           "Flows held by the tracker now."),
    Family("flowscope_flows_created", "counter", "flows", (),
           "Flows created by the tracker."),
    Family("flowscope_flows_ended", "counter", "flows", ("reason",),
           "Flows ended by the tracker, by end reason."),
    Family("flowscope_flows_ended_from_map", "counter", "flows", (),
           "Flows whose FIN/RST event was lost (ring full), ended from the kernel map."),
    Family("flowscope_kernel_flows_started", "counter", "flows", ("kind",),
           "Flow map entries started by the kernel: new entries and Closed/Reset entries "
           "restarted."),
    Family("flowscope_kernel_insert_races", "counter", "races", (),
           "New flow entries another CPU inserted first (the packet used that entry)."),
    Family("flowscope_sweep_races", "counter", "races", (),
           "Idle entries a racing packet made busy that could not be put back."),
    Family("flowscope_ring_events_submitted", "counter", "events", (),
           "Events the kernel put in the ring buffer."),
    Family("flowscope_ring_events_drained", "counter", "events", ("interface", "direction"),
           "Events userspace read from the ring buffer, by interface and direction."),
    Family("flowscope_ring_events_stale", "counter", "events", (),
           "Drained events of flows removed as idle, dropped as stale."),
    Family("flowscope_engine_lag_seconds", "gauge", "seconds", (),
           "Wall-clock time minus the kernel time of the newest event at the last drain."),
    Family("flowscope_tcp_handshake_rtt_seconds", "histogram", "seconds", ("interface",),
           "Handshake round-trip time (SYN to the ACK completing it, seen at the sensor) of "
           "the ended TCP flows that had one, by interface."),
    Family("flowscope_tcp_retransmitted_segments", "counter", "segments", ("interface",),
           "Retransmitted TCP segments (both sides) of the ended flows, by interface."),
    Family("flowscope_tcp_retransmitted_bytes", "counter", "bytes", ("interface",),
           "Payload bytes of those retransmitted segments, by interface."),
    Family("flowscope_tcp_out_of_order_segments", "counter", "segments", ("interface",),
           "Out-of-order TCP segments (both sides) of the ended flows, by interface."),
    Family("flowscope_tcp_zero_windows", "counter", "windows", ("interface",),
           "Zero-window advertisements (both sides) of the ended TCP flows, by interface."),
    # dns
    Family("flowscope_ring_dns_events", "counter", "events", (),
           "DNS records (a port-53 packet's first payload bytes) the kernel put in the ring "
           "buffer."),
    # drops
    Family("flowscope_kernel_drops", "counter", "drops", ("reason", "interface"),
           "Packets the host kernel dropped (skb:kfree_skb) that belong to a tracked flow "
           "or were dropped on a watched interface, by the kernel's drop reason and by "
           "interface (\"other\": a device the sensor does not watch, such as the far end "
           "of a veth pair)."),
    Family("flowscope_kernel_drops_matched", "counter", "drops", ("match",),
           "Kernel drops counted, by what made them count: flow (a flow of the map) or "
           "interface (a watched interface, no known flow)."),
    Family("flowscope_other_host_packets", "counter", "packets", (),
           "Frames the host's stack freed as addressed to another host (OTHERHOST: a mirror "
           "port or a promiscuous link, on any interface), which the drop tracer skips: no "
           "drops, but each costs the tracer a call."),
)

#: Upper bounds (seconds) of the handshake RTT histogram buckets (+Inf added).
RTT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
               0.5, 1.0, 2.5)
#: ``SensorStats.tcp`` counters per ifindex -> family.
TCP_COUNTS = (("flowscope_tcp_retransmitted_segments", 0),
              ("flowscope_tcp_retransmitted_bytes", 1),
              ("flowscope_tcp_out_of_order_segments", 2), ("flowscope_tcp_zero_windows", 3))

#: ``fs_counter`` -> (family, label value): where each kernel counter is exposed.
KERNEL = {
    Counter.PACKETS: ("flowscope_seen_packets", None),
    Counter.TRUNCATED: ("flowscope_unparsed_packets", "truncated"),
    Counter.NOT_IP: ("flowscope_unparsed_packets", "not_ip"),
    Counter.BAD_HEADER: ("flowscope_unparsed_packets", "bad_header"),
    Counter.MAP_FULL: ("flowscope_drops", "map_full"),
    Counter.RING_FULL: ("flowscope_drops", "ring_full"),
    Counter.PULL_FAIL: ("flowscope_drops", "pull_fail"),
    Counter.TUN_LOST: ("flowscope_drops", "tun_lost"),
    Counter.DECAP: ("flowscope_decapsulated_packets", None),
    Counter.EVENTS: ("flowscope_ring_events_submitted", None),
    Counter.FLOWS_NEW: ("flowscope_kernel_flows_started", "new"),
    Counter.FLOWS_RESTART: ("flowscope_kernel_flows_started", "restart"),
    Counter.INSERT_RACE: ("flowscope_kernel_insert_races", None),
    Counter.TRUNCATED_L4: ("flowscope_short_header_packets", None),
    Counter.FRAG_KEYED: ("flowscope_fragment_packets", "keyed"),
    Counter.FRAG_HELD: ("flowscope_fragment_packets", "held"),
    Counter.FRAG_RESOLVED: ("flowscope_fragment_packets", "resolved"),
    Counter.FRAG_ORPHANED: ("flowscope_fragment_packets", "orphaned"),
    Counter.FILTERED: ("flowscope_untracked_packets", "filtered"),
    Counter.SAMPLED_OUT: ("flowscope_untracked_packets", "sampled_out"),
    Counter.DNS: ("flowscope_ring_dns_events", None),
    Counter.DROPS: ("flowscope_kernel_drops_matched", "flow"),
    Counter.DROPS_OTHER: ("flowscope_kernel_drops_matched", "interface"),
    Counter.OTHERHOST: ("flowscope_other_host_packets", None),
}
_KERNEL_BY_NAME = {c.name.lower(): where for c, where in KERNEL.items()}

MISSING_CLIENT = ("--metrics needs the prometheus-client package: "
                  "pip install 'prometheus-client>=0.17'")


class MetricsUnavailable(ImportError):
    """prometheus-client is not installed; the message says how to install it."""


class Snapshot(NamedTuple):
    """What one scrape reports: ``(family name, labels tuple, value)`` samples."""

    samples: tuple[tuple[str, tuple[str, ...], float], ...]


def _version(module: str) -> str:
    """The version of ``module`` as loaded in this process; when it is not loaded, BCC's as
    the loader's child process reported it, numba's as installed (it compiled the kernel
    module in use); "none" when neither is known."""
    if module in sys.modules:
        return str(getattr(sys.modules[module], "__version__", "none"))
    if module == "bcc":  # the programs loaded in a child
        loader = sys.modules.get("flowscope.sensor.loader")
        return loader.BCC_VERSION if loader is not None and loader.BCC_VERSION else "none"
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def build_info() -> tuple[str, ...]:
    """``flowscope_build_info`` label values: flowscope, Python, numba and BCC versions.

    Making this never imports numba or BCC (see ``_version``).
    """
    return (__version__, platform.python_version(), _version("numba"), _version("bcc"))


def snapshot(tracker_stats: Any, kernel_counters: Optional[Mapping[str, int]],
             sensor_stats: Any = None, interfaces: Optional[Mapping[int, str]] = None,
             engine_lag_seconds: float = 0.0, build: Optional[tuple[str, ...]] = None
             ) -> Snapshot:
    """A ``Snapshot`` from ``TrackerStats``, kernel counters and ``SensorStats`` (or anything
    with their fields); ``interfaces`` names the ifindexes of ``events_by_hook``."""
    t = tracker_stats
    out: list = [("flowscope_build_info", build or build_info(), 1)]
    out += [("flowscope_tracked_packets", (), int(t.packets_matched)),
            ("flowscope_ended_packets", (), int(t.packets_ended)),
            ("flowscope_tracked_bytes", (), int(t.bytes_matched)),
            ("flowscope_flows_active", (), int(t.open_flows)),
            ("flowscope_flows_created", (), int(t.flows_created))]
    out += [("flowscope_flows_ended", (label,), int(getattr(t, f))) for label, f in END_REASONS]
    for name, n in (kernel_counters or {}).items():
        where = _KERNEL_BY_NAME.get(name)  # a counter KERNEL lacks fails the tests, not a scrape
        if where is not None:
            out.append((where[0], () if where[1] is None else (where[1],), int(n)))
    if sensor_stats is not None:
        s, names = sensor_stats, interfaces or {}
        out += [("flowscope_open_packets", (), int(s.open_packets)),
                ("flowscope_flows_ended_from_map", (), int(s.lost_ends)),
                ("flowscope_sweep_races", (), int(s.sweep_races)),
                ("flowscope_ring_events_stale", (), int(s.stale_events))]
        out += [("flowscope_ring_events_drained", (names.get(i, str(i)), DIRECTIONS[h]), int(n))
                for (i, h), n in sorted(s.events_by_hook.items())]
        for i, c in sorted(getattr(s, "tcp", {}).items()):
            name = names.get(i, str(i))
            out += [(fam, (name,), int(c[k])) for fam, k in TCP_COUNTS]
            # histogram: (cumulative bucket counts ..., +Inf = count), sum
            out.append(("flowscope_tcp_handshake_rtt_seconds", (name,),
                        (tuple(int(x) for x in c[4]), float(c[5]))))
        # {(ifindex or 0, reason name): drops}
        out += [("flowscope_kernel_drops", (reason, names.get(i, str(i)) if i else "other"),
                 int(n)) for (i, reason), n in sorted(getattr(s, "kernel_drops", {}).items())]
    out.append(("flowscope_engine_lag_seconds", (), float(engine_lag_seconds)))
    return Snapshot(tuple(out))


def _import_client():
    try:
        import prometheus_client  # noqa: F401
        from prometheus_client import core, exposition, registry
    except ImportError:
        raise MetricsUnavailable(MISSING_CLIENT) from None
    return core, exposition, registry


def families(snap: Optional[Snapshot]):
    """The metric families of one snapshot (none before the first ``update``); every family
    of ``FAMILIES`` is there, without samples when the snapshot has none for it."""
    if snap is None:
        return []
    from prometheus_client.core import (
        CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
    )

    kinds = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily,
             "histogram": HistogramMetricFamily}
    out = {f.name: kinds[f.type](f.name, f.help, labels=f.labels) for f in FAMILIES}
    for name, labels, value in snap.samples:
        if isinstance(value, tuple):  # a histogram: cumulative bucket counts, sum
            counts, total = value
            les = [repr(b) for b in RTT_BUCKETS] + ["+Inf"]
            out[name].add_metric(labels, list(zip(les, counts)), total)
        else:
            out[name].add_metric(labels, value)
    return list(out.values())


class _SnapshotCollector:
    """A custom collector: every scrape formats the latest snapshot."""

    def __init__(self) -> None:
        self.snap: Optional[Snapshot] = None

    def collect(self):
        return families(self.snap)  # one attribute read: a whole snapshot or the previous one

    def describe(self):
        return []  # registering must not call collect() before the first update


class MetricsServer:
    """An HTTP exporter of flowscope metrics on ``http://HOST:PORT/metrics``.

    Parameters
    ----------
    host : str
        Address to listen on (``127.0.0.1``, ``0.0.0.0``, ``::``, ...).
    port : int
        TCP port; 0 picks a free one (see ``port``).

    Raises
    ------
    MetricsUnavailable
        prometheus-client is not installed.
    OSError
        The address cannot be bound (in use, not local, no permission).
    """

    def __init__(self, host: str, port: int) -> None:
        core, exposition, registry = _import_client()
        self.registry = registry.CollectorRegistry(auto_describe=False)
        self._collector = _SnapshotCollector()
        self.registry.register(self._collector)
        started = exposition.start_http_server(port, addr=host, registry=self.registry)
        if started is None:  # prometheus-client < 0.17 gives no handle to stop it
            raise MetricsUnavailable(MISSING_CLIENT)
        self._httpd, self._thread = started
        self._lock = threading.Lock()
        self._build: Optional[tuple[str, ...]] = None
        self._ifnames: dict[int, str] = {}
        #: The bound address; ``port`` is the one picked when constructed with port 0.
        self.host, self.port = self._httpd.server_address[:2]

    def update(self, tracker_stats: Any, kernel_counters: Optional[Mapping[str, int]],
               sensor_stats: Any = None, interfaces: Optional[Mapping[int, str]] = None,
               engine_lag_seconds: float = 0.0) -> None:
        """Replace what the next scrape reports.

        Parameters
        ----------
        tracker_stats : TrackerStats
            ``FlowTracker.stats`` now.
        kernel_counters : dict of str to int, optional
            ``sensor.maps.counters_dict(fd)``: every kernel counter by lower-case name.
        sensor_stats : SensorStats, optional
            The sensor's own totals: ``events_by_hook`` (``{(ifindex, hook): events
            drained}``), ``stale_events``, ``lost_ends``, ``sweep_races``.
        interfaces : dict of int to str, optional
            Interface name by ifindex. Names once given are kept, so an interface the
            sensor no longer watches keeps its label.
        engine_lag_seconds : float
            Wall-clock time minus the time of the newest event drained.
        """
        if self._build is None:  # on the first update: the programs are loaded (BCC_VERSION)
            self._build = build_info()
        self._ifnames.update(interfaces or {})
        self._collector.snap = snapshot(tracker_stats, kernel_counters, sensor_stats,
                                        self._ifnames, engine_lag_seconds, self._build)

    def close(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        with self._lock:
            if self._httpd is None:
                return
            httpd, self._httpd = self._httpd, None
        httpd.shutdown()
        httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "MetricsServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
