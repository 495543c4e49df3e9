"""pcap/pcapng reading into packet batches (``PKT_DTYPE`` arrays), in bounded memory.

``CaptureReader`` streams a capture file in fixed-size chunks: a window of the
file sits in one preallocated byte buffer, numba kernels
(``flowscope._kernels.capture``) walk its records and parse each frame into
a batch of ``PKT_DTYPE`` rows, and a record cut by the end of the window is
carried to the front of the buffer before the next read. Memory stays at
about ``chunk_bytes`` + ``batch_size`` rows whatever the file size; the
buffer grows only for a single record bigger than the chunk (up to
``MAX_BUFFER_BYTES``).

Records and blocks of any size are read in that bounded memory:

* a classic pcap record longer than ``MAX_CAPLEN`` (above any real snaplen)
  is damage: ``CaptureError``;
* a pcapng block longer than ``MAX_BLOCK`` (4 MiB: a packet block needs at
  most MAX_CAPLEN plus its options) is never buffered: the reader streams
  past it in chunk-sized reads and checks its trailing length (a mismatch
  or the end of the file inside it is damage, as for any block). Skipping
  costs nothing for a block flowscope does not read (statistics, name
  resolution, decryption secrets, custom blocks...) and a Section Header
  Block still starts its section. A packet block (EPB, PB, SPB) skipped
  that way loses its packet, and a skipped Interface Description Block
  leaves its interface's packets unmatched (``PERR_LINKTYPE``): both are
  counted (``skipped_packets``, ``skipped_interfaces``, not in ``frames``)
  and, once every later record has been read and yielded, reported by a
  ``CaptureError`` (the output is incomplete).

Timestamps are int64 ns since the epoch. Every conversion saturates at the
int64 limits instead of wrapping: a pcapng timestamp is an unsigned 64-bit
count of ``if_tsresol`` units, scaled to ns and shifted by ``if_tsoffset``
(signed seconds), each step clamped to [INT64_MIN, INT64_MAX]. (A classic
pcap timestamp, two unsigned 32-bit words, always fits.)

Formats are told apart by their magic number, never by the file name:

* classic pcap, microsecond (``a1b2c3d4``) or nanosecond (``a1b23c4d``)
  timestamps, either byte order;
* pcapng: any number of sections (either byte order; each resets the
  interfaces), Interface Description Blocks (link type, snaplen,
  ``if_tsresol``, ``if_tsoffset``), Enhanced, Simple and obsolete Packet
  Blocks; every other block is skipped by its length. A Simple Packet Block
  belongs to interface 0 and gets the timestamp of the last timed packet.

Link types: an unsupported link type in a classic pcap header is an error at
open (``CaptureError``); in pcapng it is per interface, so the frames of such
an interface (or of an undefined one) are yielded as unmatched rows with
``error = PERR_LINKTYPE``.

Errors are ``CaptureError`` with a one-line message naming the file. A
corrupt or truncated file yields every good record before the damage first;
the error is raised by the iterator after that last good batch.
"""

from __future__ import annotations

import os
import queue
import stat
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ._kernels import capture as K
from ._kernels.csum import verify_frame
from ._kernels.parse import (
    SUPPORTED_LINKTYPES, TC_DECAP, TC_GENEVE, TC_SIZE, TC_VXLAN, parse_frame_rows,
)
from .layout import (GENEVE_PORT, PKT_DTYPE, ROW_DTYPE, TUN_MAX_ROWS, VXLAN_PORT, join_rows,
                     name_array)

__all__ = [
    "CaptureError",
    "CaptureReader",
    "MAX_BLOCK",
    "MAX_BUFFER_BYTES",
    "MAX_CAPLEN",
    "SUPPORTED_LINKTYPES",
    "iter_captures",
    "open_capture",
    "parse_bytes",
    "parse_rows",
]

#: The read buffer never grows beyond this: no record or block that is read into it is
#: bigger (pcap records are at most MAX_CAPLEN, bigger pcapng blocks are streamed past).
MAX_BUFFER_BYTES = K.MAX_BLOCK + (1 << 20)
MAX_BLOCK = K.MAX_BLOCK
MAX_CAPLEN = K.MAX_CAPLEN

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": (False, False),  # (big-endian, ns timestamps)
    b"\xa1\xb2\xc3\xd4": (True, False),
    b"\x4d\x3c\xb2\xa1": (False, True),
    b"\xa1\xb2\x3c\x4d": (True, True),
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


class CaptureError(Exception):
    """A capture file cannot be read (or not further). ``str()`` is one line naming the file."""


def tunnel_settings(decapsulate: bool = True, vxlan_port: int = VXLAN_PORT,
                    geneve_port: int = GENEVE_PORT) -> np.ndarray:
    """The ``tcfg`` array of the parser (``parse.TC_*``) for these settings."""
    tcfg = np.zeros(TC_SIZE, dtype=np.int64)
    tcfg[TC_DECAP] = int(bool(decapsulate))
    tcfg[TC_VXLAN] = int(vxlan_port)
    tcfg[TC_GENEVE] = int(geneve_port)
    return tcfg


def parse_bytes(frame: bytes, ts_ns: int, linktype: int = 1,
                verify_checksums: bool = False, decapsulate: bool = True,
                vxlan_port: int = VXLAN_PORT, geneve_port: int = GENEVE_PORT) -> np.ndarray:
    """Parse one frame into a ``PKT_DTYPE`` array: one row, and one more per decapsulated
    tunnel layer (docs/tunnels.md).

    Parameters
    ----------
    frame : bytes-like
        The captured bytes, link-layer header included.
    ts_ns : int
        Timestamp, ns since the Unix epoch.
    linktype : int
        pcap LINKTYPE of ``frame`` (1 = Ethernet).
    verify_checksums : bool
        Also verify the IPv4 header and TCP/UDP/ICMP checksums (``csum`` bits).
    decapsulate, vxlan_port, geneve_port
        Tunnel decapsulation (the ``decapsulate``, ``vxlan_port``, ``geneve_port``
        settings).

    Returns
    -------
    numpy.ndarray
        Shape (rows,), dtype ``PKT_DTYPE``; row 0 has ``caplen`` = ``wirelen`` =
        ``len(frame)``.
    """
    return join_rows(*parse_rows(frame, ts_ns, linktype, verify_checksums, decapsulate,
                                 vxlan_port, geneve_port))


def parse_rows(frame: bytes, ts_ns: int, linktype: int = 1, verify_checksums: bool = False,
               decapsulate: bool = True, vxlan_port: int = VXLAN_PORT,
               geneve_port: int = GENEVE_PORT) -> tuple[np.ndarray, np.ndarray]:
    """``parse_bytes`` in the parser's own form: ``ROW_DTYPE`` rows and their name array."""
    buf = np.frombuffer(frame, dtype=np.uint8).copy()
    out = np.empty(TUN_MAX_ROWS, dtype=ROW_DTYPE)
    names = name_array(TUN_MAX_ROWS)
    n = buf.shape[0]
    tcfg = tunnel_settings(decapsulate, vxlan_port, geneve_port)
    rows = abs(parse_frame_rows(buf, 0, n, n, int(linktype), int(ts_ns), out, names, 0, tcfg,
                                TUN_MAX_ROWS))
    if verify_checksums:
        for k in range(rows):
            verify_frame(buf, 0, n, out, k)
    return out[:rows], names[:rows]


def _read_exactly(f, n: int) -> bytes:
    """Up to ``n`` bytes from a stream (fewer only at its end)."""
    parts = []
    while n > 0:
        b = f.read(n)
        if not b:
            break
        parts.append(b)
        n -= len(b)
    return b"".join(parts)


def _os_error(path: str, exc: OSError) -> CaptureError:
    return CaptureError(f"{path}: {exc.strerror or exc}")


class CaptureReader:
    """Stream a pcap or pcapng file as batches of parsed packets.

    Parameters
    ----------
    path : str or os.PathLike
        The capture file.
    batch_size : int
        Rows per yielded batch (the last batch may be shorter).
    chunk_bytes : int
        Size of the read buffer (one read fills it).
    verify_checksums : bool
        Verify the IPv4 header and TCP/UDP/ICMP checksums of every frame and
        set the rows' ``csum`` bits (``layout.CSUM_*``); off by default.
    decapsulate, vxlan_port, geneve_port
        Tunnel decapsulation (docs/tunnels.md): a frame carrying a tunnel gives one
        more row per decapsulated packet, right after its outer packet's row.

    Iterating yields ``PKT_DTYPE`` arrays of up to ``batch_size`` rows. The
    array is a view of a buffer reused for the next batch: process (or copy)
    each batch before asking for the next. Each iteration reads the file
    from the start again. ``rows()`` and ``prefetched_rows()`` yield the
    parser's own form, cheaper to make and to track: ``(rows, names)`` pairs of
    ``ROW_DTYPE`` rows and their DNS query names (``layout.ROW_DTYPE``), which
    ``FlowTracker.process(rows, names)`` takes.

    Attributes
    ----------
    path : str
    format : str
        ``"pcap"``, ``"pcap-ns"`` or ``"pcapng"``.
    frames : int
        Packet records read (and yielded) so far in the current iteration.
    skipped_packets, skipped_interfaces : int
        pcapng packet blocks and Interface Description Blocks longer than
        ``MAX_BLOCK`` streamed past so far (see the module docstring).
    bytes_read : int
        File bytes read so far in the current iteration.
    file_size : int
    linktypes : set of int
        Link types seen (pcap: the header's; pcapng: every interface's).
    big_endian : bool
        Byte order of the file (pcapng: of the first section).

    Raises
    ------
    CaptureError
        At construction for a missing/unreadable file, an empty file, an
        unknown magic number or an unsupported pcap link type; while
        iterating, for a truncated or corrupt file (after the good records
        before the damage were yielded), and after the last batch when
        oversized pcapng packet or interface blocks had to be skipped.
    """

    def __init__(self, path, batch_size: int = 65536, chunk_bytes: int = 16 << 20,
                 verify_checksums: bool = False, decapsulate: bool = True,
                 vxlan_port: int = VXLAN_PORT, geneve_port: int = GENEVE_PORT):
        self.path = os.fspath(path)
        self.verify_checksums = bool(verify_checksums)
        self.tcfg = tunnel_settings(decapsulate, vxlan_port, geneve_port)
        if int(batch_size) < 1:
            raise ValueError("batch_size must be >= 1")
        if int(chunk_bytes) < 64:
            raise ValueError("chunk_bytes must be >= 64")
        self.batch_size = int(batch_size)
        self.chunk_bytes = int(chunk_bytes)
        self.frames = 0
        self.bytes_read = 0
        self.skipped_packets = 0
        self.skipped_interfaces = 0
        self.linktypes: set[int] = set()
        self._stream = None  # a pipe (or "-" = standard input): read once, in order
        self._head = None
        try:
            if self.path == "-":
                self._stream = os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=0)
                self.path = "<stdin>"
            else:
                f = open(self.path, "rb", buffering=0)
                info = os.fstat(f.fileno())
                if stat.S_ISDIR(info.st_mode):
                    f.close()
                    raise IsADirectoryError(21, "Is a directory")
                if stat.S_ISREG(info.st_mode) or stat.S_ISBLK(info.st_mode):
                    with f:
                        self.file_size = info.st_size
                        head = f.read(24)
                else:
                    self._stream = f
            if self._stream is not None:
                self.file_size = 0
                head = _read_exactly(self._stream, 24)
                self._head = head
        except OSError as exc:
            raise _os_error(self.path, exc) from None
        if not head:
            raise CaptureError(f"{self.path}: empty file")
        magic = head[:4]
        if magic in _PCAP_MAGICS:
            self.big_endian, ns = _PCAP_MAGICS[magic]
            self.format = "pcap-ns" if ns else "pcap"
            if len(head) < 24:
                raise CaptureError(f"{self.path}: file ends inside the pcap file header "
                                   f"({len(head)} of 24 bytes)")
            order = "big" if self.big_endian else "little"
            self.snaplen = int.from_bytes(head[16:20], order)
            self.linktype = int.from_bytes(head[20:24], order) & 0xFFFF
            if self.linktype not in SUPPORTED_LINKTYPES:
                raise CaptureError(f"{self.path}: unsupported link type {self.linktype}")
            self._header_len = 24
        elif magic == _PCAPNG_MAGIC:
            self.format = "pcapng"
            bom = head[8:12]
            self.big_endian = bom == b"\x1a\x2b\x3c\x4d"
            if len(head) < 12:
                raise CaptureError(f"{self.path}: file ends inside the first pcapng block header")
            if bom not in (b"\x1a\x2b\x3c\x4d", b"\x4d\x3c\x2b\x1a"):
                raise CaptureError(f"{self.path}: corrupt pcapng section header "
                                   f"(byte-order magic 0x{bom.hex()})")
            self.snaplen = 0
            self.linktype = None
            self._header_len = 0
        else:
            raise CaptureError(f"{self.path}: not a pcap or pcapng file "
                               f"(magic 0x{magic.hex()})")

    def __repr__(self) -> str:
        return (f"CaptureReader({self.path!r}, format={self.format!r}, "
                f"frames={self.frames}, bytes_read={self.bytes_read})")

    def __iter__(self) -> Iterator[np.ndarray]:
        for rows, names in self._batches():
            yield join_rows(rows, names)

    def rows(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Iterate over ``(rows, names)`` batches: ``ROW_DTYPE`` rows and their name array
        (uint8[len(rows), DNS_NAME_MAX]), views of buffers reused for the next batch."""
        return self._batches()

    @property
    def interface_names(self) -> list[str]:
        """pcapng: the if_name of each interface of the current section, by index (``""``
        for an interface without one); classic pcap: empty. Row ``iface`` values index it."""
        ifs, st = getattr(self, "_ifs", None), getattr(self, "_st", None)
        if ifs is None:
            return []
        out = []
        for k in range(min(int(st[K.ST_NIF]), K.MAX_IFACES)):
            n = int(ifs[k, K.IF_NAME_LEN])
            raw = ifs[k, K.IF_NAME:K.IF_NAME + K.IF_NAME_WORDS].astype("<i8").tobytes()[:n]
            out.append(raw.decode("utf-8", "replace"))
        return out

    def prefetched(self, depth: int = 2) -> Iterator[np.ndarray]:
        """Iterate with reading and parsing in a background thread.

        The file reads and the numba walkers release the GIL, so on a machine
        with two cores reading/parsing the next batches overlaps with whatever
        the caller does with the current one. Yields copies (each stays valid);
        at most ``depth`` batches wait in between. Errors (``CaptureError``)
        are raised here, in order, after every batch read before them.
        """
        return self._prefetch((join_rows(r, n) for r, n in self._batches()), depth)

    def prefetched_rows(self, depth: int = 2) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``prefetched()`` in the form of ``rows()``: ``(rows, names)`` batches, parsed by
        the background thread straight into a ring of ``depth + 3`` buffers (no copy).
        A batch stays valid until the next one is requested."""
        depth = max(1, int(depth))
        # in flight at once: one with the caller, ``depth`` queued, one being filled, one
        # filled and waiting for room in the queue
        return self._prefetch(self._batches(ring=depth + 3), depth)

    def _prefetch(self, batches: Iterator, depth: int) -> Iterator:
        q: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
        stop = threading.Event()
        done = object()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for batch in batches:
                    if not put(batch):
                        return
                put(done)
            except BaseException as exc:  # handed to the consumer, raised there
                put(exc)

        worker = threading.Thread(target=produce, name=f"flowscope-read:{self.path}", daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            worker.join()

    def _batches(self, ring: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(rows, names) batches, parsed into ``ring`` buffers used in turn."""
        name = self.path
        self.frames = 0
        self.bytes_read = 0
        self.skipped_packets = 0
        self.skipped_interfaces = 0
        pcapng = self.format == "pcapng"
        if self._stream is not None:
            if self._head is None:
                raise CaptureError(f"{name}: a stream can be read only once")
            f, head, self._head = self._stream, self._head, None
        else:
            try:
                f = open(self.path, "rb", buffering=0)
            except OSError as exc:
                raise _os_error(self.path, exc) from None
            head = None
        with f:
            buf = np.empty(self.chunk_bytes, dtype=np.uint8)
            # the name arrays are written for DNS rows only: the other pages stay untouched
            bufs = [(np.empty(self.batch_size, dtype=ROW_DTYPE), name_array(self.batch_size))
                    for _ in range(max(1, ring))]
            turn = 0
            out, names = bufs[0]
            st = np.zeros(K.ST_SIZE, dtype=np.int64)
            st[K.ST_BE] = int(self.big_endian)
            st[K.ST_VERIFY] = int(self.verify_checksums)
            st[K.ST_DECAP:K.ST_DECAP + TC_SIZE] = self.tcfg
            if pcapng:
                ifs = np.zeros((K.MAX_IFACES, K.IF_COLS), dtype=np.int64)
                self._ifs, self._st = ifs, st
                seen = np.zeros(65536, dtype=np.uint8)
            else:
                st[K.ST_NSRES] = int(self.format == "pcap-ns")
                st[K.ST_LINK] = self.linktype
                self.linktypes.add(self.linktype)
            base = self._header_len  # file offset of buf[0]
            fill = 0
            if head is None:
                f.seek(self._header_len)
            else:  # a stream: the bytes read at open after the file header come first
                rest = head[self._header_len:]
                buf[:len(rest)] = np.frombuffer(rest, dtype=np.uint8)
                fill = len(rest)
            self.bytes_read = self._header_len + fill
            eof = False
            while True:
                # Refill: keep buf[pos:fill], then read until the buffer is full or EOF.
                pos = int(st[K.ST_POS])
                rem = fill - pos
                need = int(st[K.ST_NEED])
                if pos:
                    buf[:rem] = buf[pos:fill]
                    base += pos
                    fill = rem
                    st[K.ST_POS] = 0
                if need > buf.shape[0]:
                    if need > MAX_BUFFER_BYTES:
                        raise CaptureError(f"{name}: corrupt record header at offset {base} "
                                           f"(record of {need} bytes)")
                    size = buf.shape[0]
                    while size < need:
                        size *= 2
                    grown = np.empty(min(size, MAX_BUFFER_BYTES), dtype=np.uint8)
                    grown[:fill] = buf[:fill]
                    buf = grown
                view = memoryview(buf)
                while fill < buf.shape[0]:
                    try:
                        got = f.readinto(view[fill:])
                    except OSError as exc:
                        raise _os_error(self.path, exc) from None
                    if not got:
                        eof = True
                        break
                    fill += got
                    self.bytes_read += got
                del view
                if not eof and fill < need:
                    continue
                st[K.ST_FILL] = fill
                # Walk the records in the buffer, handing on every full batch.
                while True:
                    if pcapng:
                        K.walk_pcapng(buf, st, out, names, ifs, seen)
                    else:
                        K.walk_pcap(buf, st, out, names)
                    self.frames = int(st[K.ST_FRAMES])
                    status = int(st[K.ST_STATUS])
                    if status != K.S_FULL:
                        break
                    # a frame whose inner packets do not fit ends a batch early
                    full = int(st[K.ST_N])
                    st[K.ST_N] = 0
                    if pcapng:
                        self._note_linktypes(seen)
                    if full == out.shape[0]:
                        yield out, names
                    else:
                        yield out[:full], names[:full]
                    turn = (turn + 1) % len(bufs)
                    out, names = bufs[turn]
                n = int(st[K.ST_N])
                if pcapng:
                    self._note_linktypes(seen)
                    self.skipped_packets = int(st[K.ST_BIG_PKTS])
                    self.skipped_interfaces = int(st[K.ST_BIG_IDBS])
                if status == K.S_CORRUPT:
                    if n:
                        st[K.ST_N] = 0
                        yield out[:n], names[:n]
                    off = base + int(st[K.ST_POS])
                    raise CaptureError(f"{name}: corrupt record header at offset {off} "
                                       f"(after {self.frames} packets)")
                if eof:
                    if n:
                        st[K.ST_N] = 0
                        yield out[:n], names[:n]
                    if fill - int(st[K.ST_POS]) > 0 or st[K.ST_SKIP] or st[K.ST_TRAIL]:
                        what = "block" if pcapng else "packet record"
                        raise CaptureError(f"{name}: file ends in the middle of a {what} "
                                           f"(after {self.frames} packets)")
                    if self.skipped_packets or self.skipped_interfaces:
                        raise CaptureError(
                            f"{name}: skipped {self.skipped_packets} packet and "
                            f"{self.skipped_interfaces} interface blocks longer than "
                            f"{MAX_BLOCK >> 20} MiB (read the other {self.frames} packets)")
                    return

    def _note_linktypes(self, seen: np.ndarray) -> None:
        for lt in np.flatnonzero(seen):
            self.linktypes.add(int(lt))

    def read_all(self) -> np.ndarray:
        """All packets of the file in one (copied) array: for small files and tests."""
        parts = list(self)  # each batch is a new array
        if not parts:
            return np.empty(0, dtype=PKT_DTYPE)
        return np.concatenate(parts)


def open_capture(path, **kwargs) -> CaptureReader:
    """Open a capture file for streaming: ``CaptureReader(path, **kwargs)``."""
    return CaptureReader(path, **kwargs)


def iter_captures(paths: Iterable, **kwargs) -> Iterator[tuple[CaptureReader, np.ndarray]]:
    """Yield ``(reader, batch)`` for every batch of every file in ``paths``, in order.

    Each file is opened only when the previous one is done; a ``CaptureError``
    of any file propagates after that file's good batches.
    """
    for path in paths:
        reader = CaptureReader(path, **kwargs)
        for batch in reader:
            yield reader, batch


if __name__ == "__main__":  # pragma: no cover - quick manual check
    for p in sys.argv[1:]:
        r = CaptureReader(Path(p))
        total = sum(len(b) for b in r)
        print(f"{p}: {r.format}, {total} frames, link types {sorted(r.linktypes)}")
