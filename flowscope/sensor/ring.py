"""Drain the sensor's BPF ring buffer straight into numpy, in bounded batches.

The ring map is mmap'ed (consumer page read-write at offset 0; producer page
plus the data area, mapped twice by the kernel so wrapped records read
linearly, read-only at offset PAGE_SIZE) and an ``@njit`` loop copies records
into a caller-owned ``EVENT_DTYPE`` array (``flowscope._kernels.ring``), storing
the consumer position once per batch. No Python object is created per record and no libbpf callback loop
is involved, so a busy producer cannot keep the consumer from returning: each
call handles at most ``len(out)`` records. Wake-ups come from epoll on the map
fd (the kernel signals it when a record is submitted to an empty-looking ring).
"""

from __future__ import annotations

import ctypes
import mmap
import select

import numpy as np

from .._kernels.ring import drain_records
from . import layout
from .loader import bpf_syscall

PAGE_SIZE = mmap.PAGESIZE
BPF_OBJ_GET_INFO_BY_FD = 15


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32),
                ("info", ctypes.c_uint64)]


def map_info(fd: int) -> dict:
    """``type``, ``key_size``, ``value_size``, ``max_entries`` of a map fd."""
    buf = (ctypes.c_uint32 * 32)()
    a = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(buf), info=ctypes.addressof(buf))
    bpf_syscall(BPF_OBJ_GET_INFO_BY_FD, a)
    return {"type": buf[0], "id": buf[1], "key_size": buf[2], "value_size": buf[3],
            "max_entries": buf[4], "map_flags": buf[5]}


class RingReader:
    """Consumer of the ``fs_events`` ring buffer.

    Parameters
    ----------
    map_fd : int
        The ring buffer map fd (``Loaded.events_fd``).
    """

    def __init__(self, map_fd: int):
        info = map_info(map_fd)
        size = info["max_entries"]
        if size <= 0 or size & (size - 1):
            raise ValueError(f"fd {map_fd} is not a ring buffer map (max_entries {size})")
        self.size = size
        self._cons_mm = mmap.mmap(map_fd, PAGE_SIZE, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod_mm = mmap.mmap(map_fd, PAGE_SIZE + 2 * size, mmap.MAP_SHARED,
                                  mmap.PROT_READ, offset=PAGE_SIZE)
        self._cons = np.frombuffer(self._cons_mm, dtype=np.int64, count=1)
        prod_all = np.frombuffer(self._prod_mm, dtype=np.uint8)
        self._prod = prod_all[:8].view(np.int64)
        self._data8 = prod_all[PAGE_SIZE:]
        self._data32 = self._data8.view(np.uint32)
        self._data64 = self._data8.view(np.uint64)
        self._mask = np.int64(size - 1)
        self._ep = select.epoll()
        self._ep.register(map_fd, select.EPOLLIN)

    def pending_bytes(self) -> int:
        """Bytes the producer has written that are not consumed yet."""
        return int(self._prod[0] - self._cons[0])

    def drain(self, out: np.ndarray) -> int:
        """Copy up to ``len(out)`` ready events into ``out`` (``layout.RECORD_DTYPE``, or
        ``layout.EVENT_DTYPE``, which cuts the DNS tail of FS_EVR_DNS records)."""
        if (out.dtype not in (layout.EVENT_DTYPE, layout.RECORD_DTYPE)
                or not out.flags.c_contiguous):
            raise TypeError("out must be a C-contiguous RECORD_DTYPE or EVENT_DTYPE array")
        out64 = out.view(np.uint64).reshape(len(out), out.dtype.itemsize // 8)
        return int(drain_records(self._cons, self._prod, self._data32, self._data64,
                                 self._mask, out64))

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for data; True when the ring has records."""
        if self.pending_bytes() > 0:
            return True
        self._ep.poll(timeout, 1)
        return self.pending_bytes() > 0

    def drain_all(self, batch: int = 4096, max_batches: int = 1024) -> np.ndarray:
        """Everything ready now, as one array (tests and tools; bounded by max_batches)."""
        parts = []
        for _ in range(max_batches):
            out = np.zeros(batch, dtype=layout.RECORD_DTYPE)
            n = self.drain(out)
            if n:
                parts.append(out[:n])
            if n < batch:
                break
        if not parts:
            return np.zeros(0, dtype=layout.RECORD_DTYPE)
        return np.concatenate(parts)

    def close(self) -> None:
        """Unmap and stop polling (numpy views must not be used afterwards)."""
        if self._ep is None:
            return
        self._ep.close()
        self._ep = None
        self._cons = self._prod = self._data8 = self._data32 = self._data64 = None
        self._cons_mm.close()
        self._prod_mm.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
