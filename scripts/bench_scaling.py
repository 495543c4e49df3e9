#!/usr/bin/env python3
"""How flowscope's cost scales: capture size, concurrent flows, kernel map fill.

Every row is a ratio to a baseline measured in the same run; runs are interleaved and
repeated (the machines here are shared), and best-of plus the spread are printed.

1. ``--sizes``: captures made by ../shared/scripts/make_big_pcap.sh with COPIES copies each
   (3 copies ~ 10 MB ... 2900 ~ 10 GB). Whole process ``flowscope pcap --format jsonl`` and
   ``softflowd -r`` (to a local nfcapd), interleaved; throughput in packets/s, its ratio to the
   smallest capture's throughput (1.00 = linear), and softflowd's time over flowscope's.
   Captures are deleted after their rows unless --keep.
2. ``--flows``: synthetic captures of P 60-byte UDP packets (``--packets``) spread round-robin
   over N flows (all open at once: 1 us apart, far inside the UDP timeout), run with
   ``--max-flows 2N``; whole process and peak RSS, throughput ratio to the smallest N.
3. ``--fill`` (root): scripts/bench_kernel.py's churn case (one run per flow, shuffled, on a
   map already holding F flows) for each F with ``--max-flows`` 131072; ns per packet of
   flowscope's program and of the floor program of the same run, and their ratio.

Usage: .venv/bin/python scripts/bench_scaling.py [--sizes 3,29,290,2900] [--flows ...]
       sudo .venv/bin/python scripts/bench_scaling.py --only fill
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_startup import FLOWSCOPE, SHARED, Softflowd, env_for, measured  # noqa: E402

PY = sys.executable


def _spread(xs: list[float]) -> str:
    return f"{min(xs):.2f}-{max(xs):.2f}"


def packets_in(pcap: Path) -> int:
    """Packets of a classic pcap: walk its record headers (a numpy loop over 16-byte heads)."""
    out = subprocess.run(["capinfos", "-c", "-M", str(pcap)], capture_output=True, text=True)
    m = re.search(r"Number of packets:\s*(\d+)", out.stdout)
    if m:
        return int(m.group(1))
    raise RuntimeError(f"capinfos: {out.stderr.strip()}")


def sizes(args, tmp: Path) -> None:
    copies = [int(c) for c in args.sizes.split(",") if c]
    script = SHARED / "scripts" / "make_big_pcap.sh"
    rows = []
    sfd = Softflowd(tmp)
    try:
        for c in copies:
            pcap = Path(args.dir) / f"fs-scale-{c}.pcap"
            if not pcap.exists():
                t0 = time.monotonic()
                print(f"building {pcap} ({c} copies) ...", file=sys.stderr, flush=True)
                subprocess.run(["bash", str(script), str(pcap), str(c)], check=True,
                               stdout=subprocess.DEVNULL)
                print(f"  {time.monotonic() - t0:.0f} s", file=sys.stderr)
            n = packets_in(pcap)
            fs_cmd = [FLOWSCOPE, "pcap", "--no-progress", "--format", "jsonl", "-o",
                      os.devnull, str(pcap)]
            measured(fs_cmd, env_for("aot"))  # untimed: page cache
            fs, sf = [], []
            rep = args.repeat if pcap.stat().st_size < 2e9 else max(1, args.repeat - 1)
            for _ in range(rep):
                fs.append(measured(fs_cmd, env_for("aot")))
                sf.append(measured(sfd.cmd(pcap)))
            rows.append((c, pcap.stat().st_size, n, fs, sf))
            print(f"  {c} copies: flowscope {_spread([w for w, _ in fs])} s, softflowd "
                  f"{_spread([w for w, _ in sf])} s", file=sys.stderr, flush=True)
            if not args.keep:
                pcap.unlink()
    finally:
        sfd.close()
    base = rows[0][2] / min(w for w, _ in rows[0][3])
    print("\nthroughput against capture size (whole process, best of runs; spread min-max)")
    print(f"{'copies':>7} {'MB':>8} {'packets':>11} {'flowscope s':>12} {'spread':>11} "
          f"{'Mpkt/s':>7} {'x smallest':>10} {'marginal':>9} {'peak MiB':>9} "
          f"{'softflowd s':>12} {'sfd/fs':>7}")
    prev = None
    for c, size, n, fs, sf in rows:
        w, s = min(x for x, _ in fs), min(x for x, _ in sf)
        # packets/s of the extra packets over the previous row: the start-up cost cancels
        marg = f"{(n - prev[0]) / (w - prev[1]) / 1e6:9.2f}" if prev and w > prev[1] else " " * 9
        prev = (n, w)
        print(f"{c:>7} {size / 1e6:>8.0f} {n:>11,} {w:>12.3f} {_spread([x for x, _ in fs]):>11} "
              f"{n / w / 1e6:>7.2f} {n / w / base:>10.2f} {marg} {max(r for _, r in fs):>9.0f} "
              f"{s:>12.3f} {s / w:>7.2f}")


def synth(path: Path, flows: int, packets: int) -> None:
    """A classic pcap of ``packets`` UDP frames, packet j in flow j % flows, 1 us apart."""
    rec = np.dtype([("sec", "<u4"), ("usec", "<u4"), ("incl", "<u4"), ("orig", "<u4"),
                    ("frame", "u1", 60)])
    a = np.zeros(packets, dtype=rec)
    j = np.arange(packets, dtype=np.int64)
    t = 1_700_000_000_000_000 + j
    a["sec"], a["usec"] = t // 1_000_000, t % 1_000_000
    a["incl"] = a["orig"] = 60
    tmpl = bytes.fromhex("020000000002" "020000000001" "0800"
                         "4500002e00004000401100000a000001" "0b000001"
                         "04000009001a0000") + bytes(18)
    a["frame"][:] = np.frombuffer(tmpl, dtype=np.uint8)
    f = j % flows
    src = (10 << 24) | (f >> 8)  # 10.x.y.z: flow / 256, port 1024 + flow % 256
    for k in range(4):
        a["frame"][:, 26 + k] = (src >> (8 * (3 - k))) & 0xFF
    port = 1024 + (f & 0xFF)
    a["frame"][:, 34] = port >> 8
    a["frame"][:, 35] = port & 0xFF
    with open(path, "wb") as fh:
        fh.write(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000"))
        a.tofile(fh)


def flows(args, tmp: Path) -> None:
    counts = [int(x) for x in args.flows.split(",") if x]
    files = {}
    for n in counts:
        p = tmp / f"flows-{n}.pcap"
        synth(p, n, max(args.packets, 2 * n))
        files[n] = p
    res = {n: [] for n in counts}
    for n in counts:  # untimed first pass (page cache)
        measured(cmd_for(files[n], n), env_for("aot"))
    for _ in range(args.repeat):
        for n in counts:
            res[n].append(measured(cmd_for(files[n], n), env_for("aot")))
    pk = {n: max(args.packets, 2 * n) for n in counts}
    base = pk[counts[0]] / min(w for w, _ in res[counts[0]])
    print(f"\nthroughput against concurrent flows ({args.packets:,} packets or 2 per flow, "
          "all flows open until the end; --max-flows 2N; whole process)")
    print(f"{'flows':>9} {'packets':>11} {'best s':>8} {'spread':>11} {'Mpkt/s':>7} "
          f"{'x 1st row':>9} {'peak MiB':>9}")
    for n in counts:
        w = min(x for x, _ in res[n])
        print(f"{n:>9,} {pk[n]:>11,} {w:>8.3f} {_spread([x for x, _ in res[n]]):>11} "
              f"{pk[n] / w / 1e6:>7.2f} {pk[n] / w / base:>9.2f} "
              f"{max(r for _, r in res[n]):>9.0f}")


def cmd_for(pcap: Path, n: int) -> list[str]:
    return [FLOWSCOPE, "pcap", "--no-progress", "--format", "jsonl", "-o", os.devnull,
            "--max-flows", str(max(2 * n, 1024)), str(pcap)]


_ROW = re.compile(r"^(XDP|TC)\s+(established|churn \S+)\s+(\d+)\s+(\d+)\s+([\d.]+)", re.M)


def fill(args) -> None:
    fills = [int(x) for x in args.fill.split(",") if x]
    res: dict[tuple[str, int], list] = {}
    for rnd in range(args.fill_repeat):
        for f in fills:
            r = subprocess.run([PY, str(HERE / "bench_kernel.py"), "--flows", str(f),
                                "--max-flows", str(args.max_flows), "--repeat", "200000",
                                "--rounds", "3", "--new", "1000"], capture_output=True,
                               text=True, timeout=1800)
            if r.returncode != 0:
                raise RuntimeError(f"bench_kernel: {r.stderr[-2000:]}")
            for hook, case, ours, floor, _ in _ROW.findall(r.stdout):
                if case.startswith("churn"):
                    res.setdefault((hook, f), []).append((int(ours), int(floor)))
            print(f"  round {rnd + 1}, {f} flows done", file=sys.stderr, flush=True)
    print(f"\nkernel cost against map fill (bench_kernel.py churn: one run per flow, shuffled, "
          f"map of {args.max_flows} entries; ns per packet, best of {args.fill_repeat} runs "
          "of the median)")
    print(f"{'hook':<5} {'flows':>8} {'fill':>6} {'flowscope ns':>13} {'spread':>9} "
          f"{'floor ns':>9} {'ratio':>6} {'x 1st row':>9}")
    for hook in ("XDP", "TC"):
        first = None
        for f in fills:
            rs = res.get((hook, f), [])
            if not rs:
                continue
            o, fl = min(x for x, _ in rs), min(y for _, y in rs)
            first = first or o
            print(f"{hook:<5} {f:>8,} {100 * f / args.max_flows:>5.0f}% {o:>13} "
                  f"{min(x for x, _ in rs)}-{max(x for x, _ in rs):<4} {fl:>9} {o / fl:>6.2f} "
                  f"{o / first:>9.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("sizes", "flows", "fill"))
    ap.add_argument("--sizes", default="3,29,290,2900", help="make_big_pcap.sh copies")
    ap.add_argument("--dir", default="/tmp", help="where the size captures go")
    ap.add_argument("--keep", action="store_true", help="keep the size captures")
    ap.add_argument("--flows", default="1000,10000,100000,1000000")
    ap.add_argument("--packets", type=int, default=2_000_000)
    ap.add_argument("--fill", default="1000,10000,65536,100000,125000")
    ap.add_argument("--max-flows", type=int, default=131072)
    ap.add_argument("--fill-repeat", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        if args.only in (None, "flows"):
            flows(args, tmp)
        if args.only in (None, "sizes"):
            sizes(args, tmp)
    if args.only == "fill" or (args.only is None and os.geteuid() == 0):
        fill(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
