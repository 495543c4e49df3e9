#!/usr/bin/env python3
"""Offline throughput and memory benchmark: flowscope against its peers, in one run.

Builds (once) the big capture with ../shared/scripts/make_big_pcap.sh, then measures on that
same file:

1. whole process, wall time and peak RSS: ``flowscope pcap --format jsonl`` writing the ended
   flows, ``softflowd -r`` exporting NetFlow v9 to a local ``nfcapd``, and ``argus -r``;
2. inside one process, after warm-up: the I/O floor (a numba loop that only walks every record
   header of the file, read in the same chunks), the reader + parser, the engine alone on parsed
   batches held in memory, and the whole pipeline (read + parse + track).

Every figure is printed with its ratio to a baseline measured in the same run (the machines here
are noisy; absolute numbers are not comparable across runs). Usage:

    .venv/bin/python scripts/bench_offline.py [--pcap /tmp/big.pcap] [--copies 460] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from numba import njit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = Path(os.environ.get("FLOWSCOPE_SHARED", ROOT.parent / "shared"))


def build_capture(path: Path, copies: int) -> None:
    if path.exists():
        return
    script = SHARED / "scripts" / "make_big_pcap.sh"
    if not script.exists():
        sys.exit(f"bench: {script} not found; pass --pcap with an existing capture")
    print(f"building {path} ({copies} copies) ...", file=sys.stderr)
    subprocess.run(["bash", str(script), str(path), str(copies)], check=True,
                   stdout=subprocess.DEVNULL)


def run_measured(cmd: list[str], repeat: int = 1) -> tuple[float, float]:
    """Run a command; return (best wall seconds, peak RSS MiB) of that process alone.

    Peak RSS comes from GNU time (``%M``): the rusage of a child forked from this
    (large) Python process would include the parent's pages copied before exec.
    """
    best_wall, peak = None, 0.0
    for _ in range(repeat):
        with tempfile.NamedTemporaryFile("r") as tf:
            t0 = time.perf_counter()
            p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", tf.name, *cmd],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            wall = time.perf_counter() - t0
            if p.returncode != 0:
                err = p.stderr.decode(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"{cmd[0]} exited {p.returncode}: {' | '.join(err)}")
            rss = int(tf.read().split()[-1]) / 1024.0
        best_wall = wall if best_wall is None else min(best_wall, wall)
        peak = max(peak, rss)
    return best_wall, peak


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_softflowd(pcap: Path, tmp: Path, repeat: int) -> tuple[float, float]:
    port = free_udp_port()
    outdir = tmp / "nfcapd"
    outdir.mkdir()
    collector = subprocess.Popen(
        ["nfcapd", "-b", "127.0.0.1", "-p", str(port), "-l", str(outdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        return run_measured(["softflowd", "-r", str(pcap), "-n", f"127.0.0.1:{port}", "-v", "9"],
                            repeat)
    finally:
        collector.send_signal(signal.SIGTERM)
        try:
            collector.wait(5)
        except subprocess.TimeoutExpired:
            collector.kill()


@njit(cache=True, nogil=True)
def _walk_headers(buf, n, swapped):
    """Walk classic-pcap record headers in buf[:n]; return (records, consumed bytes)."""
    off = 0
    recs = 0
    while off + 16 <= n:
        if swapped:
            cap = (np.int64(buf[off + 8]) << 24) | (np.int64(buf[off + 9]) << 16) | (
                np.int64(buf[off + 10]) << 8) | np.int64(buf[off + 11])
        else:
            cap = np.int64(buf[off + 8]) | (np.int64(buf[off + 9]) << 8) | (
                np.int64(buf[off + 10]) << 16) | (np.int64(buf[off + 11]) << 24)
        if off + 16 + cap > n:
            break
        off += 16 + cap
        recs += 1
    return recs, off


def io_floor(pcap: Path, chunk: int) -> int:
    """Read the file in chunks and walk every record header (no parsing, no tracking)."""
    buf = np.empty(chunk, dtype=np.uint8)
    total = 0
    with open(pcap, "rb", buffering=0) as f:
        head = f.read(24)
        swapped = head[:4] in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d")
        carry = 0
        while True:
            got = f.readinto(memoryview(buf)[carry:])
            n = carry + (got or 0)
            if n == 0:
                break
            recs, used = _walk_headers(buf, n, swapped)
            total += recs
            carry = n - used
            if carry:
                buf[:carry] = buf[used:n]
            if not got:
                break
    return total


def best_of(fn, repeat: int):
    best = None
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best, result


def held_names(rows, names):
    """A copy of ``names`` whose pages are touched only for the DNS rows (as the reader's)."""
    out = np.zeros(names.shape, dtype=np.uint8)  # calloc: pages untouched until written
    dns = np.flatnonzero(rows["dns_qlen"])
    out[dns] = names[dns]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcap", type=Path, default=Path("/tmp/big.pcap"))
    ap.add_argument("--copies", type=int, default=460)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-peers", action="store_true", help="only the in-process figures")
    args = ap.parse_args()

    from flowscope import FlowTracker, TrackerConfig, warmup
    from flowscope.pcap import CaptureReader

    build_capture(args.pcap, args.copies)
    size = args.pcap.stat().st_size
    print(f"capture: {args.pcap} ({size / 1e9:.2f} GB)")
    print(f"warm-up (numba compile or cache load): {warmup():.2f} s")
    flowscope_bin = str(Path(sys.executable).with_name("flowscope"))

    chunk = 16 << 20
    # in-process figures
    t_floor, npk = best_of(lambda: io_floor(args.pcap, chunk), args.repeat)

    def read_parse():
        n = 0
        for b, _names in CaptureReader(str(args.pcap)).rows():
            n += b.shape[0]
        return n

    t_read, n_read = best_of(read_parse, args.repeat)
    assert n_read == npk, (n_read, npk)

    # the engine alone: the whole file's parsed packets held in memory (~160 bytes a packet),
    # run through a fresh tracker each time so every run does the same work
    held = [(b.copy(), held_names(b, q)) for b, q in CaptureReader(str(args.pcap)).rows()]
    count = sum(b.shape[0] for b, _q in held)
    cfg = TrackerConfig(sweep_interval=1.0)

    def engine_only():
        tr = FlowTracker(config=cfg, events="ended")
        for b, q in held:
            for _ in tr.process(b, q):
                pass
        for _ in tr.process_finish():
            pass
        return count

    t_engine, _ = best_of(engine_only, args.repeat)

    def pipeline():
        tr = FlowTracker(config=cfg, events="ended")
        reader = CaptureReader(str(args.pcap), batch_size=8192, chunk_bytes=1 << 20)
        for b, q in reader.prefetched_rows():
            for _ in tr.process(b, q):
                pass
        for _ in tr.process_finish():
            pass
        return tr.stats

    t_pipe, stats = best_of(pipeline, args.repeat)

    floor_rate = npk / t_floor
    rows = [
        ("I/O floor: walk record headers", npk / t_floor, 1.0),
        ("reader + parser", n_read / t_read, (n_read / t_read) / floor_rate),
        ("engine alone (parsed, in memory)", count / t_engine, (count / t_engine) / floor_rate),
        ("read + parse + track", npk / t_pipe, (npk / t_pipe) / floor_rate),
    ]
    print(f"\npackets: {npk:,}  flows: {stats.flows_created:,}  "
          f"(unmatched {stats.packets_unmatched:,})")
    print(f"\n{'in-process (best of %d)' % args.repeat:<36} {'M pkt/s':>8} {'x floor':>8}")
    for name, rate, ratio in rows:
        print(f"{name:<36} {rate / 1e6:8.2f} {ratio:8.2f}")

    if args.skip_peers:
        return 0
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        results = []
        out = tmp / "flows.jsonl"
        cli = [flowscope_bin, "pcap", "--no-progress", "--format", "jsonl", "-o", str(out),
               str(args.pcap)]
        run_measured(cli)  # first run: numba compiles what the CLI uses and caches it
        results.append(("flowscope pcap --format jsonl", *run_measured(cli, args.repeat)))
        lines = sum(1 for _ in open(out))
        if shutil.which("softflowd") and shutil.which("nfcapd"):
            results.append(("softflowd -r -> nfcapd", *bench_softflowd(args.pcap, tmp, args.repeat)))
        if shutil.which("argus"):
            results.append(("argus -r -w", *run_measured(
                ["argus", "-r", str(args.pcap), "-w", str(tmp / "out.argus")], args.repeat)))
    base = results[0][1]
    print(f"\n{'whole process (best of %d)' % args.repeat:<32} {'wall s':>7} {'M pkt/s':>8} {'peak MiB':>9} "
          f"{'time / flowscope':>17}")
    for name, wall, rss in results:
        print(f"{name:<32} {wall:7.2f} {npk / wall / 1e6:8.2f} {rss:9.0f} {wall / base:17.2f}")
    print(f"\nflowscope wrote {lines:,} ended flows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
