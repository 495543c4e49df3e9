"""Writers that turn engine event records into text or export them.

Writers take batches of ``layout.EVENT_DTYPE`` records straight from the engine
(``FlowTracker.process``), so formatting costs one pass over the columns of a
batch, with no event objects in between. Every writer has
``write_records(recs)``, ``flush()`` (hand what was written to the operating
system; the live sensor calls it on a timer) and ``close(summary=None)``; a writer class whose
``ENDED_ONLY`` is true uses only Ended records, and one whose ``NEEDS_ZEEK``
is true needs a tracker made with ``zeek=True``.
"""

import sys
from collections.abc import Mapping
from typing import IO, Optional

from .. import layout, lazy_getattr
from ..config import OutputSettings, UsageError

#: Where each writer class lives: the module of a format is imported only when it is used
#: (a run writing JSON Lines never loads the Zeek and EVE formatters or the IPFIX exporter).
_CLASSES = {"JsonlWriter": "jsonl", "TableWriter": "table", "EveWriter": "eve",
            "ZeekTsvWriter": "zeek", "ZeekJsonWriter": "zeek", "IpfixExporter": "ipfix",
            "RecordFormatter": "common"}


__getattr__ = lazy_getattr(__name__, _CLASSES)


class _Formats(Mapping):
    """``--format`` name -> writer class, each imported on first use."""

    def __init__(self, classes: dict[str, str]) -> None:
        self._classes = classes

    def __getitem__(self, fmt: str):
        return __getattr__(self._classes[fmt])

    def __iter__(self):
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)


#: ``--format`` name -> writer class (constructed with the output text stream).
FORMATS = _Formats({"jsonl": "JsonlWriter", "table": "TableWriter", "eve": "EveWriter",
                    "zeek": "ZeekTsvWriter", "zeek-json": "ZeekJsonWriter"})


class TeeWriter:
    """Sends every batch to several writers (e.g. a file format and an IPFIX export)."""

    def __init__(self, *writers) -> None:
        self.writers = [w for w in writers if w is not None]

    def write_records(self, recs) -> None:
        for w in self.writers:
            w.write_records(recs)

    def flush(self) -> None:
        for w in self.writers:
            w.flush()

    def close(self, summary=None) -> None:
        for w in self.writers:
            w.close(summary)


def set_interface_names(writer, names) -> None:
    """Name the interfaces (by ``iface`` value) for the writers that print them."""
    for w in getattr(writer, "writers", [writer]):
        if hasattr(w, "iface_names"):
            w.iface_names = list(names)


def event_mask(fmt: str, events: str) -> int:
    """The engine's event mask for ``--events`` with format ``fmt`` (Ended always included)."""
    mask = layout.EVENT_MASKS[events]
    if getattr(FORMATS[fmt], "ENDED_ONLY", False):
        mask = layout.EVMASK_ENDED
    return mask | layout.EVMASK_ENDED


def needs_zeek(fmt: str) -> bool:
    """True when the format needs a tracker keeping Zeek-style state."""
    return getattr(FORMATS[fmt], "NEEDS_ZEEK", False)


def _open_file(path: str) -> IO[str]:
    try:
        return open(path, "w", buffering=1 << 20)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write output: {exc.strerror or exc}") from None


def _rotating(settings: OutputSettings):
    from .rotate import RotatingFile

    try:
        return RotatingFile(settings.path, max_bytes=settings.rotate_bytes,
                            interval_s=settings.rotate_seconds, keep=settings.keep)
    except OSError as exc:
        raise UsageError(f"{settings.path}: cannot write output: {exc.strerror or exc}") from None


def open_output(settings: OutputSettings, path: Optional[str] = None, sample_rate: int = 1):
    """``(stream, writer, format)`` for the ``output:`` settings.

    ``path`` (``-o``) wins over ``output.path`` and is never rotated; without
    either the records go to standard output. The format defaults to ``table``
    on a terminal and ``jsonl`` otherwise. With ``output.ipfix`` the ended
    flows are also exported (a ``TeeWriter``), with samplingFlowInterval when
    ``sample_rate`` (the tracker's flow sampling) is above 1.
    """
    if path and path != "-":
        out = _open_file(path)
    elif path == "-" or not settings.path:
        out = sys.stdout
    else:
        out = _rotating(settings)
    fmt = settings.format or ("table" if out.isatty() else "jsonl")
    writer = FORMATS[fmt](out)
    if settings.ipfix:
        host, port = settings.ipfix
        from .ipfix import IpfixExporter

        try:
            exporter = IpfixExporter(host, port, records=settings.ipfix_records,
                                     sample_rate=sample_rate)
        except OSError as exc:
            if out is not sys.stdout:
                out.close()
            raise UsageError(f"--ipfix {host}:{port}: {exc.strerror or exc}") from None
        writer = TeeWriter(writer, exporter)
    return out, writer, fmt


__all__ = ["FORMATS", "EveWriter", "IpfixExporter", "JsonlWriter", "RecordFormatter",
           "TableWriter", "TeeWriter", "ZeekJsonWriter", "ZeekTsvWriter", "event_mask",
           "needs_zeek", "open_output", "set_interface_names"]
