#!/usr/bin/env python3
"""The engine alone, two source trees against each other, runs interleaved.

Each run is a fresh process with ``PYTHONPATH`` set to one tree: it parses the capture
into memory with that tree's reader, then tracks it five times (CLI settings: sweeps every
second of packet time, Ended events only) and prints the best rate. Trees alternate, so a
noisy machine slows both alike; compare the best and the median of each column.

    .venv/bin/python scripts/bench_engine_ab.py CAPTURE TREE_A TREE_B [--rounds 4]

e.g. a worktree of an older commit against this checkout:
``git worktree add /tmp/base <commit>`` then ``... big.pcap /tmp/base .``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

CHILD = r"""
import os, sys, time
import flowscope
from flowscope.pcap import CaptureReader
from flowscope import FlowTracker, TrackerConfig
reader = CaptureReader(sys.argv[1], batch_size=8192)
if hasattr(reader, "rows"):  # the parser's own form: rows and their DNS name array
    import numpy as np
    batches = []
    for b, n in reader.rows():
        q = np.zeros(n.shape, np.uint8)  # calloc: pages touched only for the DNS rows
        q[b["dns_qlen"] > 0] = n[b["dns_qlen"] > 0]
        batches.append((b.copy(), q))
else:
    batches = [(b.copy(),) for b in reader]
best = float("inf")
for _ in range(5):
    tr = FlowTracker(config=TrackerConfig(sweep_interval=1.0), events="ended")
    t0 = time.perf_counter()
    for b in batches:
        for _r in tr.process(*b):
            pass
    for _r in tr.process_finish():
        pass
    best = min(best, time.perf_counter() - t0)
print(os.path.dirname(os.path.dirname(flowscope.__file__)),
      sum(len(b[0]) for b in batches) / best / 1e6)
"""


def run(tree: str, capture: str) -> float:
    tree = os.path.abspath(tree)
    env = dict(os.environ, PYTHONPATH=tree)
    # run in the tree: ``-c`` puts the working directory first on sys.path, before PYTHONPATH
    out = subprocess.run([sys.executable, "-c", CHILD, os.path.abspath(capture)], env=env,
                         cwd=tree, check=True, capture_output=True, text=True,
                         timeout=900).stdout
    tag, rate = out.split()[-2:]
    if tag != tree:
        raise SystemExit(f"{tree}: the child imported flowscope from {tag}")
    return float(rate)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture")
    ap.add_argument("trees", nargs=2)
    ap.add_argument("--rounds", type=int, default=4)
    a = ap.parse_args()
    for tree in a.trees:  # compile (or load) each tree's kernels once, untimed
        run(tree, a.capture)
    rates: dict[str, list[float]] = {t: [] for t in a.trees}
    for _ in range(a.rounds):
        for tree in a.trees:
            rates[tree].append(run(tree, a.capture))
    for tree, r in rates.items():
        print(f"{tree}: M packets/s best {max(r):.2f} median {statistics.median(r):.2f} "
              f"({', '.join(f'{x:.2f}' for x in r)})")
    best = [max(rates[t]) for t in a.trees]
    print(f"ratio B/A (best): {best[1] / best[0]:.2f}")


if __name__ == "__main__":
    main()
