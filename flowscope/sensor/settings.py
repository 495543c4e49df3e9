"""What the live sensor runs with: the tracker and sensor settings it derives from a config.

``live_settings`` turns a whole ``Config`` (file and flags already merged) into
the tracker settings the sensor needs (no automatic sweeps: the sensor sweeps
on its own timer, every ``sensor.sweep_interval``) and refuses what the kernel
side cannot do; ``tunables`` gives the ``-D`` tunables the BPF programs are
compiled with (``--print-bpf`` and ``Sensor.start`` use the same ones).
"""

from __future__ import annotations

from ..config import MAX_FLOWS_LIMIT, Config, ConfigError, SensorConfig, TrackerConfig

from ..layout import NS_PER_S

PAGE_SIZE = 4096


def tunables(sensor: SensorConfig, tracker: TrackerConfig) -> dict:
    """The BPF compile-time tunables (``flowscope.sensor.loader.TUNABLES`` keys).

    The map holds ``sensor.map_size`` flows, by default the tracker's ``max_flows``."""
    return {"max_flows": sensor.map_size or tracker.max_flows,
            "ring_pages": max(1, sensor.ring_size // PAGE_SIZE),
            "frag_timeout_ns": int(round(tracker.fragment_timeout * NS_PER_S))}


def live_settings(config: Config,
                  sweep_interval_flag: float | None = None) -> tuple[TrackerConfig, SensorConfig]:
    """``(tracker settings, sensor settings)`` for ``flowscope live``.

    The sensor's sweep interval is ``--sweep-interval`` when given, else
    ``sensor.sweep_interval`` when the file sets it, else the tracker's
    ``sweep_interval`` (the command line's default: 1 s), else ``SensorConfig``'s.
    Raises ConfigError for what the kernel side cannot do: ``infer_tcp_initiator``
    (the live sensor keys flows by the bidirectional five-tuple only). ``sensor.map_size`` defaults to ``max_flows``, and the
    tracker is sized from it (``tracker_capacity``).
    """
    sensor = config.sensor
    tracker = config.tracker
    if sweep_interval_flag is not None:
        sensor = sensor.replace(sweep_interval=float(sweep_interval_flag))
    elif (tracker.sweep_interval is not None
          and "sweep_interval" not in (tracker.extra.get("sensor") or {})):
        sensor = sensor.replace(sweep_interval=float(tracker.sweep_interval))
    if tracker.verify_checksums:
        raise ConfigError("live: verify_checksums is not supported (the kernel does not "
                          "verify checksums; see docs/live.md)")
    if tracker.infer_tcp_initiator:
        raise ConfigError("live: infer_tcp_initiator is not supported (the kernel's TCP "
                          "mirror takes the first packet's sender as the initiator)")
    sensor = sensor.replace(map_size=sensor.map_size or tracker.max_flows)
    return tracker.replace(sweep_interval=None, max_flows=tracker_capacity(sensor)), sensor


def tracker_capacity(sensor: SensorConfig) -> int:
    """Flows the live tracker must hold so that it never evicts one the kernel still counts.

    The kernel map is the live sensor's flow table (``sensor.map_size``; a new flow that
    finds it full is dropped and counted as ``map_full``); the tracker holds those flows
    plus the ones whose first events are in flight in the ring (at most one per event).
    So a flow is ended only by the kernel's state, an idle sync or shutdown, never evicted
    twice, and every packet the kernel counts reaches exactly one Ended record.
    """
    from .layout import EVENT_DTYPE

    return min(sensor.map_size + sensor.ring_size // EVENT_DTYPE.itemsize + sensor.batch,
               MAX_FLOWS_LIMIT)
