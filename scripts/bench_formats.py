#!/usr/bin/env python3
"""Output formatting benchmark: JSON Lines against Zeek TSV, Zeek JSON and EVE, in one run.

Builds (once) the big capture with ../shared/scripts/make_big_pcap.sh (``--copies 46`` makes
a ~200 k-packet one for a quick run), tracks it once with Zeek-style state, keeps the Ended
records in memory, then measures:

1. formatting alone: each writer's ``write_records`` over the same record batches, to
   /dev/null: ``jsonl`` and the compiled ``zeek``, ``zeek-json``, ``eve`` writers, and the
   former Python formatters of those three (tests/naive_connout.py), "before";
2. unless ``--skip-process``: the whole process, ``flowscope pcap --format F -o /dev/null``,
   for each format, with the compiled writers and with the Python ones (the same CLI with
   the writer classes swapped).

Every time is the best of ``--repeat`` and is printed with its ratio to ``jsonl`` measured
in the same run (the machines here are noisy). Usage:

    .venv/bin/python scripts/bench_formats.py [--pcap /tmp/big.pcap] [--copies 460]
        [--repeat 3] [--skip-process] [--process-python]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = Path(os.environ.get("FLOWSCOPE_SHARED", ROOT.parent / "shared"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))
from bench_offline import build_capture  # noqa: E402

FORMATS = ("jsonl", "zeek", "zeek-json", "eve")

SWAP = r"""
import sys
sys.path.insert(0, {tests!r})
import flowscope.output as O
from naive_connout import NaiveEveWriter, NaiveZeekJsonWriter, NaiveZeekTsvWriter
O.FORMATS.update({{"zeek": NaiveZeekTsvWriter, "zeek-json": NaiveZeekJsonWriter,
                  "eve": NaiveEveWriter}})
from flowscope.cli import main
sys.exit(main(sys.argv[1:]))
"""


def ended_batches(path: Path) -> list[np.ndarray]:
    from flowscope import FlowTracker
    from flowscope.pcap import CaptureReader

    tr = FlowTracker(events="ended", zeek=True)
    out = [r.copy() for b in CaptureReader(str(path)) for r in tr.process(b)]
    out += [r.copy() for r in tr.process_finish()]
    return [b for b in out if b.shape[0]]


def writers() -> dict:
    from naive_connout import NaiveEveWriter, NaiveZeekJsonWriter, NaiveZeekTsvWriter

    from flowscope.output import FORMATS as F

    w = {f"{name}": F[name] for name in FORMATS}
    w.update({"zeek (Python)": NaiveZeekTsvWriter, "zeek-json (Python)": NaiveZeekJsonWriter,
              "eve (Python)": NaiveEveWriter})
    return w


def time_writer(cls, batches, repeat: int) -> float:
    best = None
    for _ in range(repeat):
        with open(os.devnull, "w", buffering=1 << 20) as out:
            w = cls(out)
            t0 = time.perf_counter()
            for b in batches:
                w.write_records(b)
            w.close()
            dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best


def time_process(cmd: list[str], repeat: int) -> float:
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcap", type=Path, default=Path("/tmp/big.pcap"))
    ap.add_argument("--copies", type=int, default=460, help="make_big_pcap.sh copies")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-process", action="store_true", help="formatting alone")
    ap.add_argument("--process-python", action="store_true",
                    help="whole process with the Python formatters too (slow)")
    args = ap.parse_args()
    build_capture(args.pcap, args.copies)

    batches = ended_batches(args.pcap)
    n = sum(b.shape[0] for b in batches)
    ws = writers()
    for cls in ws.values():  # compile / load every kernel before timing
        time_writer(cls, batches[:1], 1)
    print(f"{args.pcap}: {n} Ended records in {len(batches)} batches; best of {args.repeat}")
    print("\nformatting alone (write_records to /dev/null)")
    print(f"{'writer':<20} {'s':>8} {'ns/flow':>9} {'x jsonl':>8}")
    base = None
    times = {}
    for name, cls in ws.items():
        t = time_writer(cls, batches, args.repeat)
        times[name] = t
        base = t if base is None else base
        print(f"{name:<20} {t:8.3f} {t / n * 1e9:9.0f} {t / base:8.2f}")
    for f in ("zeek", "zeek-json", "eve"):
        print(f"{f}: compiled is {times[f + ' (Python)'] / times[f]:.1f} x faster than Python")

    if not args.skip_process:
        print("\nwhole process: flowscope pcap --format F -o /dev/null")
        print(f"{'format':<20} {'s':>8} {'x jsonl':>8}")
        py = sys.executable
        base = None
        for f in FORMATS:
            cmds = [(f, [py, "-m", "flowscope", "pcap", "--no-progress", "--format", f,
                         "-o", os.devnull, str(args.pcap)])]
            if f != "jsonl" and args.process_python:
                cmds.append((f + " (Python)", [py, "-c", SWAP.format(tests=str(ROOT / "tests")),
                                               "pcap", "--no-progress", "--format", f, "-o",
                                               os.devnull, str(args.pcap)]))
            for name, cmd in cmds:
                t = time_process(cmd, args.repeat)
                base = t if base is None else base
                print(f"{name:<20} {t:8.3f} {t / base:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
