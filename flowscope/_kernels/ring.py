"""BPF ring buffer drain: records of a mapped ring copied into a numpy array.

The ring layout is the kernel's (see ``flowscope.sensor.ring`` for the
mapping): an 8-byte record header (u32 length with bit 31 BUSY and bit 30
DISCARD, u32 page offset), the payload at +8, records advancing by
``(len + 8 + 7) & ~7``.
"""

import numpy as np

from .common import kernel

_BUSY = np.int64(1 << 31)
_DISCARD = np.int64(1 << 30)


@kernel
def drain_records(cons, prod, data32, data64, mask, out64):
    """Copy ready records into ``out64``; return how many.

    ``cons``: int64[:] over the consumer page (``cons[0]`` = consumer position,
    written once at the end). ``prod``: int64[:] over the producer page.
    ``data32``/``data64``: the doubly mapped data area as uint32/uint64 (2 x size).
    ``mask``: ring size - 1. ``out64``: uint64[n, record size / 8], rows filled in order.
    Records start 8-byte aligned (8-byte header, lengths rounded up to 8), so
    they are copied a word at a time. Stops at the first record still being
    written (BUSY), at the producer position, or after ``out64.shape[0]``
    records. Discarded records are skipped.
    """
    cpos = cons[0]
    ppos = prod[0]
    words = out64.shape[1]
    n = 0
    while cpos < ppos and n < out64.shape[0]:
        off = cpos & mask
        hdr = np.int64(data32[off >> 2])
        if hdr & _BUSY:
            break
        ln = hdr & ~(_BUSY | _DISCARD)
        if not (hdr & _DISCARD):
            m = (ln + 7) >> 3
            if m > words:
                m = words
            base = (off + 8) >> 3
            for j in range(m):
                out64[n, j] = data64[base + j]
            for j in range(m, words):
                out64[n, j] = 0
            n += 1
        cpos += (ln + 8 + 7) & ~np.int64(7)
    cons[0] = cpos
    return n
