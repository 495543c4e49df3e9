"""Writers that turn engine event records into text: JSON Lines and a terminal table.

Writers take batches of ``layout.EVENT_DTYPE`` records straight from the engine
(``FlowTracker.process``), so formatting costs one pass over the columns of a
batch, with no event objects in between.
"""

from .common import RecordFormatter
from .jsonl import JsonlWriter
from .table import TableWriter

FORMATS = {"jsonl": JsonlWriter, "table": TableWriter}

__all__ = ["FORMATS", "JsonlWriter", "RecordFormatter", "TableWriter"]
