"""What the live sensor runs with: the tracker and sensor settings it derives from a config.

``live_settings`` turns a whole ``Config`` (file and flags already merged) into
the tracker settings the sensor needs (no automatic sweeps: the sensor sweeps
on its own timer, every ``sensor.sweep_interval``) and refuses what the kernel
side cannot do; ``tunables`` gives the ``-D`` tunables the BPF programs are
compiled with (``--print-bpf`` and ``Sensor.start`` use the same ones);
``check_limits`` refuses, before anything is compiled, a map or ring the kernel
or the memory cannot hold, and ``slow_start_line`` says when start-up will take
a while.
"""

from __future__ import annotations

from ..config import MAX_FLOWS_LIMIT, Config, ConfigError, SensorConfig, TrackerConfig
from . import layout as SL

from ..layout import NS_PER_S

PAGE_SIZE = 4096
#: The kernel's largest hash map: its buckets (max_entries rounded up to a power of two)
#: must not exceed 2^31 (kernel/bpf/hashtab.c, -E2BIG).
MAX_MAP_ENTRIES = 1 << 31
#: The largest ring buffer: max_entries is a u32 power of two (kernel/bpf/ringbuf.c).
MAX_RING_BYTES = 1 << 31
#: Kernel bytes per preallocated hash entry besides key and value (struct htab_elem header).
HTAB_ELEM_HEADER = 48
#: Kernel bytes per hash bucket (lock + list head).
HTAB_BUCKET = 16
#: Start-up seconds per map entry (the kernel preallocates and links every entry) and the
#: fixed part (compile and load); a start-up estimated beyond SLOW_START seconds is announced.
START_S_PER_ENTRY = 450e-9  # measured: 2^24 entries 7 s beyond the fixed part
START_S_FIXED = 4.0  # BCC compile + load on 2 shared cores
SLOW_START = 6.0


def tunables(sensor: SensorConfig, tracker: TrackerConfig) -> dict:
    """The BPF compile-time tunables (``flowscope.sensor.loader.TUNABLES`` keys).

    The map holds ``sensor.map_size`` flows, by default the tracker's ``max_flows``; the
    flow filter's lists in force and the sampling rate are compiled in (``FS_FILTER``,
    ``FS_SAMPLE_RATE``): without them the programs carry no filter code at all."""
    from ..flowfilter import filter_mode

    return {"max_flows": sensor.map_size or tracker.max_flows,
            "ring_pages": max(1, sensor.ring_size // PAGE_SIZE),
            "frag_timeout_ns": int(round(tracker.fragment_timeout * NS_PER_S)),
            "filter": filter_mode(tracker), "sample_rate": tracker.sample_rate,
            "key_vlan": int(tracker.key_vlan),
            "key_icmp": int(tracker.key_icmp),
            "filter_cidrs_max": max(16, len(tracker.include_cidrs), len(tracker.exclude_cidrs)),
            "dns": int(tracker.dns),
            "drops": int(sensor.drops),
            "decapsulate": int(tracker.decapsulate), "vxlan_port": tracker.vxlan_port,
            "geneve_port": tracker.geneve_port}


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


def _round8(n: int) -> int:
    return (n + 7) & ~7


def map_bytes(entries: int) -> int:
    """Kernel memory of a preallocated ``fs_flows`` hash map with ``entries`` entries."""
    per = HTAB_ELEM_HEADER + _round8(SL.FLOW_KEY_DTYPE.itemsize) + _round8(SL.FLOW_DTYPE.itemsize)
    buckets = 1 << max(0, (entries - 1).bit_length())
    return entries * per + buckets * HTAB_BUCKET


def sensor_bytes(sensor: SensorConfig, tracker: TrackerConfig) -> int:
    """Memory the sensor needs beside the tracker: the kernel's map and ring, and the
    userspace copies of the whole map that a sweep and the shutdown drain make."""
    entries = sensor.map_size or tracker.max_flows
    scan = 2 * entries * (SL.FLOW_KEY_DTYPE.itemsize + SL.FLOW_DTYPE.itemsize)
    return map_bytes(entries) + sensor.ring_size + scan + sensor.batch * SL.RECORD_DTYPE.itemsize


def mem_available() -> int | None:
    """``MemAvailable`` from /proc/meminfo in bytes, or None when it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def check_limits(sensor: SensorConfig, tracker: TrackerConfig,
                 available: int | None = None) -> None:
    """Raise ConfigError (one line naming the key) for a map or ring the kernel refuses or
    the memory cannot hold; ``available`` defaults to MemAvailable."""
    entries = sensor.map_size or tracker.max_flows
    key = "sensor.map_size" if sensor.map_size else "max_flows"
    if entries > MAX_MAP_ENTRIES:
        raise ConfigError(f"{key}: the kernel allows at most {MAX_MAP_ENTRIES} hash map "
                          f"entries, got {entries}")
    if sensor.ring_size > MAX_RING_BYTES:
        raise ConfigError(f"sensor.ring_size: the kernel allows at most {MAX_RING_BYTES} "
                          f"bytes (2G), got {sensor.ring_size}")
    available = mem_available() if available is None else available
    if available is None:
        return
    need = sensor_bytes(sensor, tracker)
    if need <= available:
        return
    if sensor.ring_size > entries * SL.FLOW_DTYPE.itemsize:
        raise ConfigError(f"sensor.ring_size: {sensor.ring_size} bytes with a "
                          f"{entries}-entry map need about {_gib(need)}, more than the "
                          f"{_gib(available)} available (MemAvailable)")
    raise ConfigError(f"{key}: {entries} flow map entries need about {_gib(need)} "
                      f"({map_bytes(entries) // entries} bytes each in the kernel, "
                      f"{2 * (SL.FLOW_KEY_DTYPE.itemsize + SL.FLOW_DTYPE.itemsize)} to read "
                      f"them), more than the {_gib(available)} available (MemAvailable)")


def start_seconds(sensor: SensorConfig, tracker: TrackerConfig) -> float:
    """Rough start-up time: compile and load, plus the kernel filling the map's entries."""
    return START_S_FIXED + (sensor.map_size or tracker.max_flows) * START_S_PER_ENTRY


def slow_start_line(sensor: SensorConfig, tracker: TrackerConfig) -> str | None:
    """One line announcing a start-up longer than ``SLOW_START`` seconds, or None."""
    secs = start_seconds(sensor, tracker)
    if secs <= SLOW_START:
        return None
    entries = sensor.map_size or tracker.max_flows
    return (f"flowscope: preparing a {entries}-entry flow map "
            f"({_gib(map_bytes(entries))} of kernel memory): start-up takes about "
            f"{secs:.0f} s")


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
