"""The ring buffer drain kernel equals its plain-Python twin (tests/naive_ring.py).

Synthetic BPF ring buffers are built in numpy as the kernel lays them out (data area mapped
twice: a 2 x size array whose second half mirrors the first) and drained by both; no root and
no BPF needed.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from flowscope._kernels.ring import drain_records
from naive_ring import BUSY, DISCARD, naive_drain, record_span, write_ring

SENTINEL = np.uint64(0xDEADBEEFDEADBEEF)


def _kernel_drain(ring: bytes, cons: int, prod: int, capacity: int, words: int):
    """``drain_records`` on ``ring`` mapped twice; (rows, count, cons, rows left untouched)."""
    size = len(ring)
    data8 = np.frombuffer(bytes(ring) * 2, dtype=np.uint8).copy()
    cons_page = np.array([cons], dtype=np.int64)
    prod_page = np.array([prod], dtype=np.int64)
    out64 = np.full((capacity, words), SENTINEL, dtype=np.uint64)
    n = int(drain_records(cons_page, prod_page, data8.view(np.uint32), data8.view(np.uint64),
                          np.int64(size - 1), out64))
    rows = [out64[i].tobytes() for i in range(n)]
    untouched = bool((out64[n:] == SENTINEL).all())
    return rows, n, int(cons_page[0]), untouched


def _build(size: int, start: int, records, seed: int) -> tuple[bytes, int]:
    """A ring of ``size`` bytes holding ``records`` from position ``start``; (ring, prod).

    ``records`` are (length, flags) pairs; the ring starts as noise so that padding and stale
    bytes are not zeros.
    """
    rng = np.random.default_rng(seed)
    ring = bytearray(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    pos = start
    for k, (length, flags) in enumerate(records):
        payload = bytes((k * 37 + i) & 0xFF for i in range(length))
        pos = write_ring(ring, pos, length, flags, payload)
    return bytes(ring), pos


@st.composite
def rings(draw):
    """A ring (2**6 .. 2**11 bytes), a consumer position anywhere, records that fit."""
    size = 1 << draw(st.integers(6, 11))
    start = draw(st.integers(0, 2**40)) * 8  # records start 8-byte aligned
    lengths = st.one_of(st.integers(0, 24), st.integers(0, 200))
    status = st.sampled_from([0] * 6 + [DISCARD, BUSY])
    records, used = [], 0
    for _ in range(draw(st.integers(0, 30))):
        length, flags = draw(lengths), draw(status)
        if used + record_span(length) > size:  # the producer stays within one ring of data
            break
        records.append((length, flags))
        used += record_span(length)
    return size, start, records, draw(st.integers(0, 12)), draw(st.integers(1, 9))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(rings(), st.integers(0, 2**32))
def test_drain_equals_twin_on_random_rings(ring_case, seed):
    size, start, records, capacity, words = ring_case
    ring, prod = _build(size, start, records, seed)
    rows, n, cons, untouched = _kernel_drain(ring, start, prod, capacity, words)
    want_rows, want_cons = naive_drain(ring, start, prod, capacity, 8 * words)
    assert (rows, n, cons) == (want_rows, len(want_rows), want_cons)
    assert untouched  # rows past the count are left alone


def test_drain_stops_at_a_busy_record_and_skips_discarded():
    records = [(16, 0), (5, DISCARD), (16, 0), (16, BUSY), (16, 0)]
    start = 256 - 16  # the first record's payload wraps past the end of the data area
    ring, prod = _build(256, start, records, seed=1)
    rows, n, cons, _ = _kernel_drain(ring, start, prod, 10, 2)
    want_rows, want_cons = naive_drain(ring, start, prod, 10, 16)
    assert (rows, n, cons) == (want_rows, 2, want_cons)
    assert cons == start + 24 + 16 + 24  # two ready records and the discarded one, not the busy
    assert rows[0] == bytes(i & 0xFF for i in range(16))  # the wrapped record reads in one piece


def test_drain_stops_when_the_output_is_full():
    records = [(8, 0)] * 5
    ring, prod = _build(128, 0, records, seed=2)
    rows, n, cons, untouched = _kernel_drain(ring, 0, prod, 3, 1)
    assert (rows, cons) == naive_drain(ring, 0, prod, 3, 8)
    assert (n, cons, untouched) == (3, 48, True)
    # the next call goes on from there and empties the ring
    rows, n, cons, _ = _kernel_drain(ring, cons, prod, 3, 1)
    assert (rows, cons) == naive_drain(ring, 48, prod, 3, 8)
    assert (n, cons) == (2, prod)
