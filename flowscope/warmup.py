"""``warmup()``: compile (or load from numba's cache) every kernel before real work.

Each kernel runs once on tiny in-memory inputs: both capture walkers and the
frame parser on a one-packet pcap and pcapng image, the engine with and
without Zeek-style state (packets, a sweep, ending flows by key, the final
flush), checksum verification, key extraction, the JSON Lines, Zeek and EVE
formatters, the ring drain and the live sensor's row builders. A live sensor
calls this before attaching, so the first real packet pays no compile time.

Every kernel a flowscope process calls from Python must be called here, with
the argument types real work uses: ``python -m flowscope.aotbuild`` compiles
ahead of time exactly the signatures this produces (other calls then fall back
to numba's JIT; tests/test_aot.py checks that the corpus needs none).
"""

from __future__ import annotations

import io
import time

#: A TCP SYN from 10.0.0.1:1234 to 10.0.0.2:80 in an Ethernet frame.
_TCP_SYN = bytes.fromhex(
    "0000000000020000000000010800"  # Ethernet
    "450000280001000040060000"  # IPv4, TCP
    "0a0000010a000002"
    "04d2005000000001000000005002200000000000"  # TCP SYN
)


def _pcap_image(frame: bytes) -> bytes:
    """A classic little-endian microsecond pcap holding ``frame`` (no file header)."""
    return (bytes(8) + len(frame).to_bytes(4, "little") * 2 + frame)


def _pcapng_image(frame: bytes) -> bytes:
    """A pcapng section header, an Ethernet interface and one Enhanced Packet Block."""
    shb = bytes.fromhex("0a0d0d0a1c0000004d3c2b1a01000000ffffffffffffffff1c000000")
    idb = bytes.fromhex("01000000140000000100000000000000" "14000000")
    body = frame + b"\0" * (-len(frame) % 4)
    epb_len = 32 + len(body)
    epb = (bytes.fromhex("06000000") + epb_len.to_bytes(4, "little") + bytes(4) + bytes(8)
           + len(frame).to_bytes(4, "little") * 2 + body + epb_len.to_bytes(4, "little"))
    return shb + idb + epb


def _walk(image: bytes, pcapng: bool) -> tuple:
    import numpy as np

    from . import layout
    from ._kernels import capture as C

    buf = np.frombuffer(image, dtype=np.uint8).copy()
    out = np.zeros(4, dtype=layout.ROW_DTYPE)
    names = layout.name_array(4)
    st = np.zeros(C.ST_SIZE, dtype=np.int64)
    st[C.ST_FILL] = len(buf)
    if pcapng:
        ifs = np.zeros((C.MAX_IFACES, C.IF_COLS), dtype=np.int64)
        C.walk_pcapng(buf, st, out, names, ifs, np.zeros(65536, dtype=np.uint8))
    else:
        st[C.ST_LINK] = 1
        C.walk_pcap(buf, st, out, names)
    n = int(st[C.ST_N])
    return out[:n], names[:n]


def _ring() -> None:
    import numpy as np

    from ._kernels.ring import drain_records

    # as flowscope.sensor.ring passes them: the producer page and the data pages are
    # mapped read-only
    cons = np.zeros(1, dtype=np.int64)
    prod = np.zeros(1, dtype=np.int64)
    data = np.zeros(64, dtype=np.uint64)
    prod.flags.writeable = data.flags.writeable = False
    drain_records(cons, prod, data.view(np.uint32), data, np.int64(255),
                  np.zeros((1, 2), dtype=np.uint64))


def _sensor_rows() -> None:
    """The live sensor's row builders: ring records (one with a DNS payload, one TCP) and
    map-sync rows, with the dtypes the sensor reads them in (no bcc needed)."""
    import numpy as np

    from . import layout
    from .sensor import layout as SL
    from .sensor.rows import event_rows, sync_rows

    warm = np.zeros(2, SL.RECORD_DTYPE)
    warm["reason"] = SL.EventReason.DNS
    warm["pflags"][1] = layout.PF_TCP
    event_rows(warm, 0, {1: 0})
    sync_rows(np.zeros(1, SL.FLOW_KEY_DTYPE), np.zeros(1, SL.FLOW_DTYPE), 0)


def warmup() -> float:
    """Compile (or load from numba's cache) every kernel; return the seconds it took."""
    import numpy as np

    from ._kernels.textout import MAX_IFNAME, format_jsonl, reason_table
    from .output.eve import EveWriter
    from .output.zeek import ZeekJsonWriter, ZeekTsvWriter
    from .config import TrackerConfig
    from .events import Timestamp
    from .keys import FiveTuple
    from .tracker import FlowTracker, PacketView

    t0 = time.perf_counter()
    batches = [_walk(_pcap_image(_TCP_SYN), False), _walk(_pcapng_image(_TCP_SYN), True)]
    buf = np.zeros(1 << 14, dtype=np.uint8)
    names, name_lens = np.zeros((1, MAX_IFNAME), dtype=np.uint8), np.zeros(1, dtype=np.int64)
    reasons = reason_table({})
    # the Zeek and EVE writers' kernels, with the argument types the writers pass
    sink = io.StringIO()
    text_writers = [ZeekTsvWriter(sink), ZeekJsonWriter(sink), EveWriter(sink)]
    for zeek in (False, True):
        tr = FlowTracker(config=TrackerConfig(max_flows=4, sweep_interval=1.0,
                                              verify_checksums=zeek), zeek=zeek)
        for batch in batches:
            for recs in tr.process(*batch):
                format_jsonl(recs, buf, names, name_lens, *reasons)
                for w in text_writers:
                    w.write_records(recs)
        view = PacketView(_TCP_SYN, Timestamp(2, 0))
        tr.track(view)
        FiveTuple().extract(view)
        for recs in tr.process_end(np.zeros((1, 5), dtype=np.uint64), 3 * 10**9):
            format_jsonl(recs, buf, names, name_lens, *reasons)
        tr.sweep(10**12)
        for recs in tr.process_finish():
            format_jsonl(recs, buf, names, name_lens, *reasons)
            for w in text_writers:
                w.write_records(recs)
    _ring()
    _sensor_rows()
    return time.perf_counter() - t0
