"""Writers that turn engine event records into text or export them.

Writers take batches of ``layout.EVENT_DTYPE`` records straight from the engine
(``FlowTracker.process``), so formatting costs one pass over the columns of a
batch, with no event objects in between. Every writer has
``write_records(recs)`` and ``close(summary=None)``; a writer class whose
``ENDED_ONLY`` is true uses only Ended records, and one whose ``NEEDS_ZEEK``
is true needs a tracker made with ``zeek=True``.
"""

from .common import RecordFormatter
from .eve import EveWriter
from .ipfix import IpfixExporter
from .jsonl import JsonlWriter
from .table import TableWriter
from .zeek import ZeekJsonWriter, ZeekTsvWriter

#: ``--format`` name -> writer class (constructed with the output text stream).
FORMATS = {"jsonl": JsonlWriter, "table": TableWriter, "eve": EveWriter,
           "zeek": ZeekTsvWriter, "zeek-json": ZeekJsonWriter}


class TeeWriter:
    """Sends every batch to several writers (e.g. a file format and an IPFIX export)."""

    def __init__(self, *writers) -> None:
        self.writers = [w for w in writers if w is not None]

    def write_records(self, recs) -> None:
        for w in self.writers:
            w.write_records(recs)

    def close(self, summary=None) -> None:
        for w in self.writers:
            w.close(summary)


__all__ = ["FORMATS", "EveWriter", "IpfixExporter", "JsonlWriter", "RecordFormatter",
           "TableWriter", "TeeWriter", "ZeekJsonWriter", "ZeekTsvWriter"]
