"""Plain-Python twin of the sensor's ring buffer drain (``drain_records``), and ring builders.

A BPF ring buffer (kernel/bpf/ringbuf.c) is a consumer position, a producer position and a data
area of ``size`` = 2**k bytes. Positions only grow; a record lives at ``pos % size``. Each record
starts with an 8-byte header, a little-endian u32 length whose bit 31 says the producer is still
writing it (BUSY) and bit 30 that it was discarded (DISCARD), then a u32 page offset; its payload
follows at +8 and the next record starts at ``pos + round_up(length + 8, 8)``. The kernel maps
the data area twice in a row so that a record which wraps can be read in one piece; the twin
reads byte by byte modulo ``size`` instead.
"""

from __future__ import annotations

BUSY = 1 << 31
DISCARD = 1 << 30
HDR = 8


def record_span(length: int) -> int:
    """Bytes a record of ``length`` payload bytes takes in the ring, header included."""
    return (length + HDR + 7) // 8 * 8


def naive_drain(ring: bytes, cons: int, prod: int, capacity: int, row_bytes: int):
    """Consume ready records from ``ring`` (the ``size`` data bytes, not mapped twice).

    Returns ``(rows, cons)``: up to ``capacity`` rows of ``row_bytes`` bytes each, one per
    ready record in order, and the consumer position after the consumed records. A record is
    copied a whole 8-byte word at a time (its padding up to the next multiple of 8 included),
    cut to ``row_bytes`` and zero-filled to it. Discarded records are consumed but give no
    row; the drain stops at a record still BUSY, at ``prod``, or when ``capacity`` rows are
    filled.
    """
    size = len(ring)
    rows: list[bytes] = []
    while cons < prod and len(rows) < capacity:
        at = cons % size
        hdr = int.from_bytes(bytes(ring[(at + i) % size] for i in range(4)), "little")
        if hdr & BUSY:
            break
        length = hdr & ~(BUSY | DISCARD)
        if not hdr & DISCARD:
            take = min((length + 7) // 8 * 8, row_bytes)
            body = bytes(ring[(at + HDR + i) % size] for i in range(take))
            rows.append(body + bytes(row_bytes - take))
        cons += record_span(length)
    return rows, cons


def write_ring(ring: bytearray, pos: int, length: int, flags: int, payload: bytes,
               pg_off: int = 0x5A5A5A5A) -> int:
    """Write one record (header with ``flags`` BUSY/DISCARD, then ``payload``) at ``pos``.

    ``ring`` is the data area (``size`` bytes); returns the position of the next record.
    The header's page offset is of no use to a consumer; ``pg_off`` fills it.
    """
    size = len(ring)
    hdr = (length | flags).to_bytes(4, "little") + pg_off.to_bytes(4, "little")
    for i, b in enumerate(hdr + payload[:length]):
        ring[(pos + i) % size] = b
    return pos + record_span(length)
