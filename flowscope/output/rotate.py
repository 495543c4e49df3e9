"""A text output stream that rotates its file by size and/or time, keeping the last N.

``RotatingFile`` stands in for the file object the writers print to. Rotation
closes the current file, renames it to ``PATH.YYYYmmdd-HHMMSS`` (the UTC time
of its first record; ``.1``, ``.2``, ... appended when that name is taken, so
no file is ever overwritten), opens a fresh ``PATH`` and deletes the oldest
rotated files beyond ``keep``.

Lines are never split across files and never lost: rotation happens only
before a ``write()`` call and only when everything written so far ends with a
newline. The writers hand over whole batches of complete lines, so a file
can exceed ``max_bytes`` by at most one batch. Time rotation is aligned to
multiples of ``interval_s`` since the epoch (``3600`` rotates on the hour UTC)
and, like size rotation, happens on the first write after it is due; a file
with no records in it is never rotated.

Writers whose files start with a header (Zeek's TSV conn.log) set the
``on_open`` hook to write it again at the top of every new file, and
optionally ``on_close`` to end the old one (Zeek's ``#close`` line).
"""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path
from typing import Callable, Optional

_STAMP = "%Y%m%d-%H%M%S"


class RotatingFile(io.TextIOBase):
    """A write-only text stream over ``path`` that rotates by size and/or time.

    Parameters
    ----------
    path : str or Path
        The file records go to now. An existing non-empty file is rotated
        away first (stamped with its modification time), never truncated.
    max_bytes : int, optional
        Rotate before a write that would take the file beyond this size.
    interval_s : float, optional
        Rotate at every multiple of this many seconds of ``clock()``.
    keep : int, optional
        Rotated files to keep (the oldest beyond it are deleted); None keeps all.
    clock : callable
        Wall-clock seconds (``time.time``); tests pass a fake one.
    on_open, on_close : callable, optional
        ``hook(stream)``, called just after a rotation opened a new file and
        just before it closes the old one; what they write goes to that file.
    buffering : int
        Buffer size of the underlying file; ``flush()`` empties it.
    """

    def __init__(self, path: str | os.PathLike, max_bytes: Optional[int] = None,
                 interval_s: Optional[float] = None, keep: Optional[int] = None,
                 clock: Callable[[], float] = time.time,
                 on_open: Optional[Callable[["RotatingFile"], None]] = None,
                 on_close: Optional[Callable[["RotatingFile"], None]] = None,
                 buffering: int = 1 << 20) -> None:
        super().__init__()
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes: must be at least 1, got {max_bytes}")
        if interval_s is not None and not interval_s > 0:
            raise ValueError(f"interval_s: must be positive, got {interval_s}")
        if keep is not None and keep < 1:
            raise ValueError(f"keep: must be at least 1, got {keep}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.interval_s = interval_s
        self.keep = keep
        self.clock = clock
        self.on_open = on_open
        self.on_close = on_close
        self.buffering = buffering
        self._pattern = re.compile(re.escape(self.path.name) + r"\.(\d{8}-\d{6})(?:\.(\d+))?")
        self._file = None
        self._in_hook = False
        #: Paths of the files this stream rotated, oldest first (also those deleted since).
        self.rotated: list[Path] = []
        try:
            st = self.path.stat()
        except FileNotFoundError:
            st = None
        if st is not None and st.st_size > 0:
            self._move_aside(st.st_mtime)
        self._open()

    # -- the stream -------------------------------------------------------------------------

    def write(self, s: str) -> int:
        if self._file is None:
            raise ValueError("write to a closed RotatingFile")
        if not s:
            return 0
        data = s.encode("utf-8")
        if not self._in_hook:
            if not self._data_bytes:
                self._arm(self.clock())  # a file is named and timed from its first record
            elif self._at_line_start and (
                    (self.max_bytes is not None and self.size + len(data) > self.max_bytes)
                    or (self._due is not None and self.clock() >= self._due)):
                self.rotate()
        self._file.write(data)
        self.size += len(data)
        if not self._in_hook:
            self._data_bytes += len(data)
        self._at_line_start = s.endswith("\n")
        return len(s)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            f, self._file = self._file, None
            f.close()
        super().close()

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:
        return "utf-8"

    # -- rotation ---------------------------------------------------------------------------

    def rotate(self) -> Optional[Path]:
        """Rotate now (e.g. on SIGHUP) if a whole line was last written; the new name or None."""
        if self._file is None or not self._at_line_start:
            return None
        if self.on_close is not None:
            self._hook(self.on_close)
        self._file.close()
        self._file = None
        dest = self._move_aside(self._opened_at)
        self._open()
        if self.on_open is not None:
            self._hook(self.on_open)
        return dest

    def rotated_files(self) -> list[Path]:
        """Rotated files of ``path`` on disk (this run's and earlier ones), oldest first."""
        found = []
        for p in self.path.parent.iterdir():
            m = self._pattern.fullmatch(p.name)
            if m:
                found.append((m.group(1), int(m.group(2) or 0), p))
        return [p for _, _, p in sorted(found)]

    def _hook(self, fn: Callable[["RotatingFile"], None]) -> None:
        self._in_hook = True
        try:
            fn(self)
        finally:
            self._in_hook = False
        self._at_line_start = True  # a hook writes a header or footer, not half a record

    def _open(self) -> None:
        self._file = open(self.path, "wb", buffering=self.buffering)
        self.size = 0
        self._data_bytes = 0
        self._at_line_start = True
        self._arm(self.clock())

    def _arm(self, now: float) -> None:
        self._opened_at = now
        self._due = None
        if self.interval_s is not None:
            self._due = (now // self.interval_s + 1) * self.interval_s

    def _move_aside(self, when: float) -> Path:
        stamp = time.strftime(_STAMP, time.gmtime(when))
        base = self.path.with_name(f"{self.path.name}.{stamp}")
        n = 0
        while True:
            dest = base if n == 0 else base.with_name(f"{base.name}.{n}")
            if _rename_no_clobber(self.path, dest):
                break
            n += 1
        self.rotated.append(dest)
        if self.keep is not None:
            for old in self.rotated_files()[:-self.keep]:
                try:
                    old.unlink()
                except FileNotFoundError:
                    pass
        return dest


def _rename_no_clobber(src: Path, dest: Path) -> bool:
    """Rename ``src`` to ``dest`` unless ``dest`` exists; False if it does."""
    try:
        os.link(src, dest)  # fails if dest exists: no window in which it could be replaced
    except FileExistsError:
        return False
    except OSError:  # no hard links on this file system: check, then rename
        if dest.exists():
            return False
        os.rename(src, dest)
        return True
    os.unlink(src)
    return True
