"""Prometheus metrics for the live sensor (``flowscope live --metrics HOST:PORT``).

The sensor loop calls ``MetricsServer.update`` with a snapshot of the tracker
stats, the kernel counters, the number of ring events drained and how far the
engine lags behind the newest packet; a scrape formats the latest snapshot.
Totals are the tracker's and the kernel's own monotonic counters, exposed as
counter families, so a scrape never does more than read one tuple. A process
restart (or a reloaded BPF program) starts the totals again from zero, which
Prometheus' ``rate()`` treats as an ordinary counter reset.

``prometheus-client`` is an optional dependency, imported only here and only
when a server is made: ``flowscope pcap`` never loads it. The exporter uses
its own registry, so nothing else registered in the process leaks into it.

Exposed (metric names as scraped):

======================================================  =======  =========================
``flowscope_flows_active``                              gauge    flows held now
``flowscope_flows_created_total``                       counter
``flowscope_flows_ended_total{reason}``                 counter  fin, rst, idle_timeout,
                                                                 evicted, shutdown
``flowscope_packets_total``                             counter  matched + unmatched
``flowscope_packets_unmatched_total``                   counter  no flow key (not IP, ...)
``flowscope_bytes_total``                               counter  frame bytes of matched packets
``flowscope_events_drained_total``                      counter  ring buffer events read
``flowscope_kernel_counter_total{counter}``             counter  every ``fs_counter`` by name
``flowscope_engine_lag_seconds``                        gauge    wall clock - newest packet
======================================================  =======  =========================
"""

from __future__ import annotations

import threading
from typing import Any, Mapping, NamedTuple, Optional

#: ``reason`` label value -> ``TrackerStats`` field (labels are the JSON Lines ``reason`` slugs).
END_REASONS = (("fin", "ended_fin"), ("rst", "ended_rst"), ("idle_timeout", "ended_idle"),
               ("evicted", "flows_evicted"), ("shutdown", "ended_shutdown"))

MISSING_CLIENT = ("--metrics needs the prometheus-client package: "
                  "pip install 'prometheus-client>=0.17'")


class MetricsUnavailable(ImportError):
    """prometheus-client is not installed; the message says how to install it."""


class Snapshot(NamedTuple):
    """What one scrape reports; built by ``MetricsServer.update``."""

    flows_active: int
    flows_created: int
    flows_ended: tuple[tuple[str, int], ...]
    packets: int
    packets_unmatched: int
    bytes: int
    events_drained: int
    kernel: tuple[tuple[str, int], ...]
    engine_lag_seconds: float


def snapshot(tracker_stats: Any, kernel_counters: Optional[Mapping[str, int]],
             events_drained: int, engine_lag_seconds: float) -> Snapshot:
    """A ``Snapshot`` from a ``TrackerStats`` (or anything with its fields) and the rest."""
    s = tracker_stats
    return Snapshot(
        flows_active=int(s.open_flows),
        flows_created=int(s.flows_created),
        flows_ended=tuple((label, int(getattr(s, field))) for label, field in END_REASONS),
        packets=int(s.packets_matched) + int(s.packets_unmatched),
        packets_unmatched=int(s.packets_unmatched),
        bytes=int(s.bytes_matched),
        events_drained=int(events_drained),
        kernel=tuple((str(k), int(v)) for k, v in (kernel_counters or {}).items()),
        engine_lag_seconds=float(engine_lag_seconds),
    )


def _import_client():
    try:
        import prometheus_client  # noqa: F401
        from prometheus_client import core, exposition, registry
    except ImportError:
        raise MetricsUnavailable(MISSING_CLIENT) from None
    return core, exposition, registry


def families(snap: Optional[Snapshot]):
    """The metric families of one snapshot (none before the first ``update``)."""
    if snap is None:
        return []
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    out = [GaugeMetricFamily("flowscope_flows_active", "Flows held by the tracker now.",
                             value=snap.flows_active),
           CounterMetricFamily("flowscope_flows_created", "Flows created since start.",
                               value=snap.flows_created)]
    ended = CounterMetricFamily("flowscope_flows_ended", "Flows ended since start, by reason.",
                                labels=["reason"])
    for reason, n in snap.flows_ended:
        ended.add_metric([reason], n)
    out.append(ended)
    out += [
        CounterMetricFamily("flowscope_packets", "Packets given to the tracker "
                            "(matched and unmatched).", value=snap.packets),
        CounterMetricFamily("flowscope_packets_unmatched", "Packets with no flow key "
                            "(not IP, unparseable, ...).", value=snap.packets_unmatched),
        CounterMetricFamily("flowscope_bytes", "Frame bytes of the packets matched to flows.",
                            value=snap.bytes),
        CounterMetricFamily("flowscope_events_drained", "Events read from the kernel "
                            "ring buffer.", value=snap.events_drained),
    ]
    kern = CounterMetricFamily("flowscope_kernel_counter", "Counters of the BPF programs "
                               "(fs_counter), summed over CPUs.", labels=["counter"])
    for name, n in snap.kernel:
        kern.add_metric([name], n)
    out.append(kern)
    out.append(GaugeMetricFamily("flowscope_engine_lag_seconds", "Wall-clock time minus the "
                                 "time of the newest packet the engine has tracked.",
                                 value=snap.engine_lag_seconds))
    return out


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
        #: The bound address; ``port`` is the one picked when constructed with port 0.
        self.host, self.port = self._httpd.server_address[:2]

    def update(self, tracker_stats: Any, kernel_counters: Optional[Mapping[str, int]],
               events_drained: int, engine_lag_seconds: float) -> None:
        """Replace what the next scrape reports.

        Parameters
        ----------
        tracker_stats : TrackerStats
            ``FlowTracker.stats`` now.
        kernel_counters : dict of str to int, optional
            ``sensor.maps.counters_dict(fd)``: every kernel counter by lower-case name.
        events_drained : int
            Ring buffer events read since start.
        engine_lag_seconds : float
            Wall-clock time minus the time of the newest packet tracked.
        """
        self._collector.snap = snapshot(tracker_stats, kernel_counters, events_drained,
                                        engine_lag_seconds)

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
