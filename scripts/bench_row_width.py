#!/usr/bin/env python3
"""The engine alone on the same parsed packets in full-width and in narrow rows, alternating.

Parses the capture into memory once (``ROW_DTYPE`` rows, the DNS query names in a separate
array), then copies every batch into ``PKT_DTYPE`` rows (the 256-byte query name in every row,
as the engine took them before the names moved out). Both are tracked in turn, with the same
name array (CLI settings: sweeps every second of packet time, Ended events only; DNS off, so no
name is read) and the rates printed with their ratio: what the name in the row costs the
engine.

    .venv/bin/python scripts/bench_row_width.py CAPTURE [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from flowscope import FlowTracker, TrackerConfig, layout
from flowscope._kernels import engine as K
from flowscope.pcap import CaptureReader


def track(batches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, int]:
    """M packets/s and the number of records made (the same for both widths)."""
    tr = FlowTracker(config=TrackerConfig(sweep_interval=1.0), events="ended")
    args = tr._state() + (tr._frk, tr._frv, tr._flt, tr._ev)
    n = sum(len(b) for b, _q in batches)
    recs = 0
    t0 = time.perf_counter()
    for b, q in batches:
        i = 0
        while i < len(b):
            i, e, _status = K.track_batch(b, q, i, *args, 0)
            recs += e
    return n / (time.perf_counter() - t0) / 1e6, recs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    narrow = [(b.copy(), q.copy()) for b, q in CaptureReader(a.capture, batch_size=8192).rows()]
    wide = [(layout.join_rows(b, q), q) for b, q in narrow]
    print(f"row bytes: {layout.PKT_DTYPE.itemsize} and {layout.ROW_DTYPE.itemsize}")
    track(wide[:2])  # compile (or load) both specialisations, untimed
    track(narrow[:2])
    for _ in range(a.rounds):
        (w, rw), (m, rn) = track(wide), track(narrow)
        assert rw == rn
        print(f"M packets/s: full rows {w:.2f}, narrow rows {m:.2f}, narrow / full {m / w:.2f}")


if __name__ == "__main__":
    main()
