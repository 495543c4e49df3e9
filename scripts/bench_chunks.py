#!/usr/bin/env python3
"""Read sizes and batch sizes of the offline pipeline, against each other, runs interleaved.

Each run is what ``flowscope pcap --format jsonl`` does in process: the reader thread
(``CaptureReader.prefetched_rows``), the engine (CLI settings: sweeps every second of packet
time, Ended events only) and the JSON Lines writer to /dev/null. Every (chunk, batch) pair
runs once per round; the best and every run are printed.

    .venv/bin/python scripts/bench_chunks.py CAPTURE [--rounds 3] [--pairs 4096:8192,1024:8192]

Pairs are KiB:rows.
"""

from __future__ import annotations

import argparse
import os
import time

from flowscope import FlowTracker, TrackerConfig
from flowscope.output.jsonl import JsonlWriter
from flowscope.pcap import CaptureReader


def pipeline(path: str, chunk: int, batch: int) -> float:
    t0 = time.perf_counter()
    tr = FlowTracker(config=TrackerConfig(sweep_interval=1.0), events="ended")
    with open(os.devnull, "w") as out:
        w = JsonlWriter(out)
        for rows, names in CaptureReader(path, batch_size=batch,
                                         chunk_bytes=chunk).prefetched_rows():
            for recs in tr.process(rows, names):
                w.write_records(recs)
        for recs in tr.process_finish():
            w.write_records(recs)
        w.close()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pairs", default="4096:8192,1024:8192,2048:8192,512:8192,1024:4096,"
                    "1024:16384")
    a = ap.parse_args()
    pairs = [tuple(int(x) for x in p.split(":")) for p in a.pairs.split(",")]
    runs: dict[tuple, list[float]] = {p: [] for p in pairs}
    for _ in range(a.rounds):
        for kib, rows in pairs:
            runs[(kib, rows)].append(pipeline(a.capture, kib << 10, rows))
    base = min(runs[pairs[0]])
    for (kib, rows), ts in runs.items():
        print(f"{kib:6d} KiB reads, {rows:6d}-row batches: best {min(ts):.3f} s "
              f"(x {base / min(ts):.2f} of the first pair); runs "
              + ", ".join(f"{t:.2f}" for t in ts))


if __name__ == "__main__":
    main()
