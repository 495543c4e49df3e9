"""``flowscope pcap``: capture files in, flow records out.

Files are read in the order given as one trace (``-`` or a named pipe as a
stream), each on a background reading thread, through one tracker that is
finished at the end (flows still open end with reason ``shutdown``). Bad input
never crashes and never loses what was read: a file that cannot be read, or
not further, gives one line on stderr and the exit status
``EXIT_INCOMPLETE``, but the flows read so far are still ended and written.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, Sequence

from .config import Config
from .output import event_mask, needs_zeek, open_output, set_interface_names
from .output.table import format_summary, summary_of

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE = 0, 1, 2


def err(msg: str) -> None:
    """One line on stderr, prefixed ``flowscope:``."""
    print(f"flowscope: {msg}", file=sys.stderr, flush=True)


class Progress:
    """A self-overwriting progress line on stderr, only when stderr is a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.next = self.t0 + 0.5
        self.shown = False

    def update(self, name: str, done: int, total: int, packets: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self.next:
            return
        self.next = now + 0.5
        pct = 100.0 * done / total if total else 0.0
        rate = packets / max(now - self.t0, 1e-9)
        sys.stderr.write(f"\r{name[-30:]}: {pct:5.1f}%  {packets:,} packets  "
                         f"{rate / 1e6:.2f} M/s ")
        sys.stderr.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * 72 + "\r")
            sys.stderr.flush()


def run_pcap(config: Config, files: Sequence[str], events: str = "ended",
             extractor=None, output_file: Optional[str] = None, progress: bool = True) -> int:
    """Track the flows of ``files``; returns the exit status."""
    from .pcap import CaptureError, CaptureReader
    from .tracker import FlowTracker

    out, writer, fmt = open_output(config.output, output_file, config.tracker.sample_rate)
    tracker = FlowTracker(extractor, config.tracker, events=event_mask(fmt, events),
                          zeek=needs_zeek(fmt))
    bar = Progress(progress)
    complete = True
    files_read = 0
    frames = 0
    try:
        for path in files:
            reader = None
            try:
                # 1 MiB reads: the bytes each read copies are still in the core's cache when
                # the parser walks them (docs/benchmarks.md)
                reader = CaptureReader(path, batch_size=8192, chunk_bytes=1 << 20,
                                       verify_checksums=config.tracker.verify_checksums,
                                       decapsulate=config.tracker.decapsulate,
                                       vxlan_port=config.tracker.vxlan_port,
                                       geneve_port=config.tracker.geneve_port)
                files_read += 1
                names: list[str] = []
                for batch, qnames in reader.prefetched_rows():
                    if reader.interface_names != names:  # pcapng if_name options
                        names = reader.interface_names
                        set_interface_names(writer, names)
                    for recs in tracker.process(batch, qnames, scratch=True):
                        writer.write_records(recs)
                    bar.update(path, reader.bytes_read, reader.file_size, frames + reader.frames)
                frames += reader.frames
            except CaptureError as exc:
                bar.clear()
                err(str(exc))
                complete = False
                if reader is not None:
                    frames += reader.frames
    except KeyboardInterrupt:
        bar.clear()
        err("interrupted: writing the flows read so far")
        complete = False
    finally:
        bar.clear()
        for recs in tracker.process_finish():
            writer.write_records(recs)
        summary = summary_of(tracker.stats, files=files_read)
        writer.close(summary if fmt == "table" else None)
        if out is not sys.stdout:
            out.close()
        if fmt != "table" and sys.stderr.isatty():
            print(format_summary(summary), file=sys.stderr)
    return EXIT_OK if complete else EXIT_INCOMPLETE
