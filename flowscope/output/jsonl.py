"""JSON Lines writer: one JSON object per event (schema in docs/output.md).

The text is made by a numba kernel (``flowscope._kernels.textout``) straight
from the engine's record batches into a byte buffer, so writing costs about
as much per event as tracking does.
"""

from __future__ import annotations

from typing import IO

import numpy as np

from .._kernels.textout import MAX_IFNAME, MAX_LINE, format_jsonl, reason_table
from .common import ByteSink, drop_reason_names


class JsonlWriter:
    """Writes engine event records as JSON Lines to a text (or binary) stream.

    Every line has ``event``, ``ts`` (seconds with 9 decimals, exact),
    ``flow_id`` and the flow's endpoints oriented initiator -> responder;
    the rest depends on the event kind. Field names never change.
    """

    def __init__(self, out: IO[str], buffer_bytes: int = 1 << 20) -> None:
        self.out = out
        self._buf = np.empty(max(buffer_bytes, 4 * MAX_LINE), dtype=np.uint8)
        self.lines = 0
        self._sink = ByteSink(out)
        self.iface_names: list[str] = []

    @property
    def iface_names(self) -> list[str]:
        """Interface names by ``iface`` value (JSON ``iface``; unnamed ones print their
        number)."""
        return self._iface_names

    @iface_names.setter
    def iface_names(self, names) -> None:
        self._iface_names = list(names)
        n = max(1, len(self._iface_names))
        self._names = np.zeros((n, MAX_IFNAME), dtype=np.uint8)
        self._name_lens = np.zeros(n, dtype=np.int64)
        for i, name in enumerate(self._iface_names):
            b = name.encode("utf-8", "replace")[:MAX_IFNAME]
            b = b.replace(b'"', b"_").replace(b"\\", b"_")
            self._names[i, :len(b)] = np.frombuffer(b, dtype=np.uint8)
            self._name_lens[i] = len(b)
        self._reasons = reason_table({})
        self._reasons_loaded = False

    def _emit(self, n: int) -> None:
        self._sink.write(self._buf[:n].tobytes())

    def write_records(self, recs: np.ndarray) -> None:
        start = 0
        total = recs.shape[0]
        if not self._reasons_loaded and total and recs["drops"].any():
            # live records with kernel drops: the running kernel's reason names, read once
            self._reasons = reason_table(drop_reason_names())
            self._reasons_loaded = True
        while start < total:
            done, n = format_jsonl(recs[start:], self._buf, self._names, self._name_lens,
                                   *self._reasons)
            self._emit(n)
            start += done
        self.lines += total

    def flush(self) -> None:
        """Hand everything written so far to the operating system."""
        self.out.flush()
        if self._sink.raw is not None:
            self._sink.raw.flush()

    def close(self, summary: dict | None = None) -> None:
        self.flush()
