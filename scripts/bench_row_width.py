#!/usr/bin/env python3
"""The engine alone on the same parsed packets in full-width and in narrow rows, alternating.

Parses the capture into memory once, then copies every batch into a second dtype that is
``PKT_DTYPE`` with a one-byte ``dns_qname`` (the 256-byte DNS query name is the widest field of
a row, and the only one read by DNS packets alone). Both copies are tracked in turn (CLI
settings: sweeps every second of packet time, Ended events only; DNS off, so no row's name is
read) and the rates printed with their ratio: what the name in the row costs the engine.

    .venv/bin/python scripts/bench_row_width.py CAPTURE [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from flowscope import FlowTracker, TrackerConfig, layout
from flowscope._kernels import engine as K
from flowscope.pcap import CaptureReader


def narrow_dtype() -> np.dtype:
    d = layout.PKT_DTYPE
    return np.dtype([(n, np.uint8, (1,)) if n == "dns_qname" else (n, d.fields[n][0])
                     for n in d.names], align=True)


def track(batches: list[np.ndarray]) -> tuple[float, int]:
    """M packets/s and the number of records made (the same for both widths)."""
    tr = FlowTracker(config=TrackerConfig(sweep_interval=1.0), events="ended")
    args = tr._state() + (tr._frk, tr._frv, tr._flt, tr._ev)
    n = sum(len(b) for b in batches)
    recs = 0
    t0 = time.perf_counter()
    for b in batches:
        i = 0
        while i < len(b):
            i, e, _status = K.track_batch(b, i, *args, 0)
            recs += e
    return n / (time.perf_counter() - t0) / 1e6, recs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    wide = [b.copy() for b in CaptureReader(a.capture, batch_size=8192)]
    nd = narrow_dtype()
    narrow = []
    for b in wide:
        x = np.zeros(len(b), dtype=nd)
        for name in layout.PKT_DTYPE.names:
            if name != "dns_qname":
                x[name] = b[name]
        narrow.append(x)
    print(f"row bytes: {layout.PKT_DTYPE.itemsize} and {nd.itemsize}")
    track(wide[:2])  # compile (or load) both specialisations, untimed
    track(narrow[:2])
    for _ in range(a.rounds):
        (w, rw), (m, rn) = track(wide), track(narrow)
        assert rw == rn
        print(f"M packets/s: full rows {w:.2f}, narrow rows {m:.2f}, narrow / full {m / w:.2f}")


if __name__ == "__main__":
    main()
