"""Read the sensor's maps into numpy: counters, flow scans, idle sweeps, drains.

Flow entries move in batches straight into ``FLOW_KEY_DTYPE`` / ``FLOW_DTYPE``
arrays through ``BPF_MAP_LOOKUP_BATCH`` / ``BPF_MAP_LOOKUP_AND_DELETE_BATCH``
(one system call per few thousand entries, made here without BCC, which the
sensor process never loads; BCC's Python wrapper is ~10x slower and aliases its
in/out batch tokens). Idle sweeps scan in
batches (the sensor picks the idle keys in numpy) and remove each with
``BPF_MAP_LOOKUP_AND_DELETE_ELEM``, so the value returned is the final one
even when a packet raced the sweep; ``insert_new`` puts back an entry that a
packet made busy again.
"""

from __future__ import annotations

import ctypes
import errno
import os

import numpy as np

from . import layout
from .loader import bpf_syscall

BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_LOOKUP_AND_DELETE_ELEM = 21
BPF_NOEXIST = 1


class _ElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("_pad0", ctypes.c_uint32),
                ("key", ctypes.c_uint64), ("value", ctypes.c_uint64),
                ("flags", ctypes.c_uint64)]


def possible_cpus() -> int:
    """Number of possible CPUs (per-CPU map values hold one slot per possible CPU)."""
    with open("/sys/devices/system/cpu/possible") as f:
        spec = f.read().strip()
    n = 0
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        n = max(n, int(hi or lo) + 1)
    return n


BPF_MAP_LOOKUP_BATCH = 24
BPF_MAP_LOOKUP_AND_DELETE_BATCH = 25


class _BatchAttr(ctypes.Structure):
    _fields_ = [("in_batch", ctypes.c_uint64), ("out_batch", ctypes.c_uint64),
                ("keys", ctypes.c_uint64), ("values", ctypes.c_uint64),
                ("count", ctypes.c_uint32), ("map_fd", ctypes.c_uint32),
                ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


def read_counters(counters_fd: int) -> np.ndarray:
    """``uint64[FS_CNT_MAX]``: the per-CPU counters summed over CPUs (index: ``Counter``)."""
    ncpu = possible_cpus()
    vals = np.zeros(ncpu, dtype=np.uint64)
    key = ctypes.c_uint32(0)
    out = np.zeros(layout.FS_CNT_MAX, dtype=np.uint64)
    a = _ElemAttr(map_fd=counters_fd, key=ctypes.addressof(key),
                  value=vals.ctypes.data)
    for i in range(layout.FS_CNT_MAX):
        key.value = i
        bpf_syscall(BPF_MAP_LOOKUP_ELEM, a)
        out[i] = vals.sum()
    return out


def read_counter(counters_fd: int, index: int) -> int:
    """One per-CPU counter (index: ``Counter``) summed over CPUs: one system call."""
    vals = np.zeros(possible_cpus(), dtype=np.uint64)
    key = ctypes.c_uint32(index)
    bpf_syscall(BPF_MAP_LOOKUP_ELEM, _ElemAttr(map_fd=counters_fd, key=ctypes.addressof(key),
                                               value=vals.ctypes.data))
    return int(vals.sum())


def change_marks(counters_fd: int) -> tuple[int, int]:
    """``(packets, drops)``: the counters that move whenever a flow entry can change.

    A packet program counts the packet before it touches the map; the drop tracer
    counts a drop (``DROPS``) right after adding it to the flow's entry. While both stay
    the same, the flow map holds what it held (the sensor's own removals aside).
    """
    return (read_counter(counters_fd, layout.Counter.PACKETS),
            read_counter(counters_fd, layout.Counter.DROPS))


def counters_dict(counters_fd: int) -> dict[str, int]:
    """Counters by lower-case name, e.g. ``{"packets": 10, "truncated": 1, ...}``."""
    c = read_counters(counters_fd)
    return {m.name.lower(): int(c[m]) for m in layout.Counter}


def drop_counts(fd: int, max_entries: int = 4096):
    """The fs_drop_counts map: ``(keys DROP_KEY_DTYPE[n], drops uint64[n])``."""
    return _batch(fd, False, 1024, max_entries, layout.DROP_KEY_DTYPE, np.dtype(np.uint64))


def _batch(flows_fd: int, delete: bool, batch: int, max_entries: int,
           kdt=layout.FLOW_KEY_DTYPE, vdt=layout.FLOW_DTYPE):
    cmd = BPF_MAP_LOOKUP_AND_DELETE_BATCH if delete else BPF_MAP_LOOKUP_BATCH
    keys = np.zeros(max_entries, dtype=kdt)
    vals = np.zeros(max_entries, dtype=vdt)
    # Separate tokens: the kernel reads in_batch and writes out_batch in one call.
    tok_in = ctypes.c_uint64(0)
    tok_out = ctypes.c_uint64(0)
    a = _BatchAttr(map_fd=flows_fd, out_batch=ctypes.addressof(tok_out))
    total = 0
    first = True
    # Bounded: each call either returns entries or ends the walk (ENOENT).
    for _ in range(max_entries + 2):
        want = min(batch, max_entries - total)
        if want <= 0:
            break
        a.in_batch = 0 if first else ctypes.addressof(tok_in)
        a.keys = keys.ctypes.data + total * keys.itemsize
        a.values = vals.ctypes.data + total * vals.itemsize
        a.count = want
        err = 0
        try:
            bpf_syscall(cmd, a)
        except OSError as e:
            err = e.errno
        total += a.count  # also set when the walk ends (ENOENT)
        if err:
            if err == errno.ENOENT:
                break
            if err == errno.ENOSPC and want < batch * 64:
                batch *= 2  # a bucket holds more entries than one batch: grow and retry
                continue
            raise OSError(err, f"map batch: {os.strerror(err)}")
        tok_in.value = tok_out.value
        first = False
    return keys[:total], vals[:total]


def lookup_flows(flows_fd: int, max_entries: int, batch: int = 4096):
    """Copy every flow entry: ``(keys FLOW_KEY_DTYPE[n], values FLOW_DTYPE[n])``."""
    return _batch(flows_fd, False, batch, max_entries)


def drain_flows(flows_fd: int, max_entries: int, batch: int = 4096):
    """Remove every flow entry and return it (shutdown flush), as ``lookup_flows``."""
    return _batch(flows_fd, True, batch, max_entries)


def _each(cmd: int, flows_fd: int, keys: np.ndarray, vals: np.ndarray, flags: int,
          tolerated: tuple[int, ...]) -> np.ndarray:
    """``bpf(cmd)`` on every (key, value) pair; True where it succeeded, False where it
    failed with a ``tolerated`` errno (others raise)."""
    done = np.zeros(len(keys), dtype=bool)
    a = _ElemAttr(map_fd=flows_fd, flags=flags)
    for i in range(len(keys)):
        a.key = keys.ctypes.data + i * keys.itemsize
        a.value = vals.ctypes.data + i * vals.itemsize
        try:
            bpf_syscall(cmd, a)
            done[i] = True
        except OSError as e:
            if e.errno not in tolerated:
                raise
    return done


def lookup_and_delete(flows_fd: int, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove ``keys`` one by one, returning the keys found and their final values."""
    keys = np.ascontiguousarray(keys, dtype=layout.FLOW_KEY_DTYPE)
    vals = np.zeros(len(keys), dtype=layout.FLOW_DTYPE)
    found = _each(BPF_MAP_LOOKUP_AND_DELETE_ELEM, flows_fd, keys, vals, 0, (errno.ENOENT,))
    return keys[found], vals[found]


def insert_new(flows_fd: int, keys: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """Insert entries that must not exist yet (``BPF_NOEXIST``), one by one.

    Returns a bool array: True where the entry was inserted, False where the
    key exists again (a newer flow) or the map is full.
    """
    keys = np.ascontiguousarray(keys, dtype=layout.FLOW_KEY_DTYPE)
    vals = np.ascontiguousarray(vals, dtype=layout.FLOW_DTYPE)
    return _each(BPF_MAP_UPDATE_ELEM, flows_fd, keys, vals, BPF_NOEXIST,
                 (errno.EEXIST, errno.E2BIG))


def due_times(keys: np.ndarray, vals: np.ndarray, timeout_table: np.ndarray) -> np.ndarray:
    """The monotonic time (ns) at which each entry turns idle: its last-seen time plus its
    protocol's timeout (``timeout_table``: int64[256], ns by IP protocol, as
    ``TrackerConfig.timeout_table()``)."""
    return vals["last_ns"].astype(np.int64) + timeout_table[keys["proto"]]


def idle_mask(keys: np.ndarray, vals: np.ndarray, now_ns: int,
              timeout_table: np.ndarray) -> np.ndarray:
    """Entries idle for at least their protocol's timeout at monotonic time ``now_ns``."""
    return due_times(keys, vals, timeout_table) <= np.int64(now_ns)


def sweep_idle(flows_fd: int, max_entries: int, now_ns: int, timeout_table: np.ndarray):
    """Remove the flows idle at ``now_ns``; returns their ``(keys, values)``, final counters."""
    keys, vals = lookup_flows(flows_fd, max_entries)
    return lookup_and_delete(flows_fd, keys[idle_mask(keys, vals, now_ns, timeout_table)])


def _update(map_fd: int, key, value) -> None:
    a = _ElemAttr(map_fd=map_fd, key=ctypes.addressof(key), value=ctypes.addressof(value))
    bpf_syscall(BPF_MAP_UPDATE_ELEM, a)


def write_filter(loaded, tracker_config) -> None:
    """Fill the flow filter's maps (``fs_flt_*``) from the tracker's settings; call it
    before attaching, so no packet meets a half-filled filter. ``loaded``: a ``Loaded``."""
    from ..flowfilter import kernel_values, networks

    ports, protos = kernel_values(tracker_config)
    for name, marks in (("fs_flt_ports", ports), ("fs_flt_protos", protos)):
        fd = loaded.map_fd(name)
        for i in np.flatnonzero(marks):
            _update(fd, ctypes.c_uint32(int(i)), ctypes.c_uint8(int(marks[i])))
    tries = [loaded.map_fd(n) for n in ("fs_flt_cidr_in", "fs_flt_cidr_ex")]
    one = ctypes.c_uint8(1)
    for which, l3, plen, addr in networks(tracker_config):
        key = np.zeros(1, layout.CIDR_KEY_DTYPE)
        key["prefixlen"] = 8 + plen
        key["l3"] = l3
        key["addr"][0] = np.frombuffer(addr, dtype=np.uint8)
        kbuf = ctypes.create_string_buffer(key.tobytes(), key.itemsize)
        _update(tries[which], kbuf, one)


def watch(loaded, ifindex: int) -> None:
    """Mark ``ifindex`` in ``fs_watched``: the drop tracer counts drops on it even for
    packets of no known flow."""
    _update(loaded.map_fd("fs_watched"), ctypes.c_uint32(ifindex), ctypes.c_uint8(1))
