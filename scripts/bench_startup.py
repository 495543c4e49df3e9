#!/usr/bin/env python3
"""Whole-process cost of ``flowscope pcap`` and ``flowscope live``: wall time, peak RSS, idle CPU.

Offline (any user), every run a separate process measured by GNU time, runs interleaved
(``--repeat`` rounds of: softflowd, flowscope with the ahead-of-time kernels, flowscope with
``FLOWSCOPE_JIT=1``) so that load from other work on the machine hits all alike; best-of and
the spread (min-max) are printed, and every ratio is against softflowd of the same run:

1. a tiny capture (tests/data/zeek__http__get.pcap, 14 packets);
2. the big capture that ../shared/scripts/make_big_pcap.sh makes (built once);
3. peak RSS of ``flowscope pcap`` over every capture of the corpus (tests/data, shared pcaps)
   and the big one;
4. where the tiny run's time and memory go: the interpreter alone, ``import numpy``,
   ``import flowscope``, and the slowest imports (``python -X importtime``).

Live (root, ``--live``): ``flowscope live`` on one end of a veth pair, the other end in a
netns. Its RSS and CPU while idle with no flow, then after ``--flows`` distinct UDP flows
(one packet each, sent over AF_PACKET from the netns) while it holds them, CPU again while
idle with them held (utime + stime from /proc/PID/stat over ``--idle`` seconds), with the
packets the link carried meanwhile (``--silent-link``: IPv6 off on both ends, so none).

``--base TREE`` adds another source tree to the interleaved runs (``PYTHONPATH=TREE``; the
tree needs its own compiled kernels, ``python -m flowscope.aotbuild`` run in it), for a before
and after in the same run; ``--no-jit`` leaves the JIT runs out.

Usage: .venv/bin/python scripts/bench_startup.py [--repeat 5] [--pcap /tmp/big.pcap]
       .venv/bin/python scripts/bench_startup.py --base /tmp/base --no-jit --big-repeat 5
       sudo .venv/bin/python scripts/bench_startup.py --live [--flows 100000] [--silent-link]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = Path(os.environ.get("FLOWSCOPE_SHARED", ROOT.parent / "shared"))
TINY = ROOT / "tests" / "data" / "zeek__http__get.pcap"
PY = Path(sys.executable)
FLOWSCOPE = str(PY.with_name("flowscope"))


def measured(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one run of ``cmd`` (GNU time)."""
    with tempfile.NamedTemporaryFile("r") as tf:
        t0 = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", tf.name, *cmd],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            err = p.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"{cmd[0]} exited {p.returncode}: {' | '.join(err)}")
        return wall, int(tf.read().split()[-1]) / 1024.0


class Softflowd:
    """softflowd -r exporting NetFlow v9 to a local nfcapd (as scripts/bench_offline.py)."""

    def __init__(self, tmp: Path):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        out = tmp / "nfcapd"
        out.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(["nfcapd", "-b", "127.0.0.1", "-p", str(self.port), "-l",
                                      str(out)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def cmd(self, pcap: Path) -> list[str]:
        return ["softflowd", "-r", str(pcap), "-n", f"127.0.0.1:{self.port}", "-v", "9"]

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


BASE: Path | None = None  # --base: another source tree, run with PYTHONPATH set to it
JIT = True  # --no-jit: False


def env_for(mode: str) -> dict:
    # as a user runs it: bytecode cached (PYTHONDONTWRITEBYTECODE would recompile every module)
    env = {k: v for k, v in os.environ.items()
           if k not in ("FLOWSCOPE_JIT", "PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    if mode == "jit":
        env["FLOWSCOPE_JIT"] = "1"
    if mode == "base":
        env["PYTHONPATH"] = str(BASE)
    return env


def check_base(base: Path) -> None:
    """Stop unless a process with ``env_for("base")`` imports flowscope, with its compiled
    kernels, from ``base``."""
    p = subprocess.run([str(PY), "-c", "import flowscope, flowscope._kernels as K; "
                        "print(flowscope.__file__, K.MODE)"], capture_output=True, text=True,
                       env=env_for("base"), cwd="/")
    where, mode = p.stdout.split()
    if not Path(where).resolve().is_relative_to(base.resolve()) or mode != "aot":
        raise SystemExit(f"--base {base}: imported {where} ({mode})")


def flowscope_cmd(pcap: Path, out: str = os.devnull) -> list[str]:
    return [FLOWSCOPE, "pcap", "--no-progress", "--format", "jsonl", "-o", out, str(pcap)]


def interleaved(pcap: Path, repeat: int, sfd: Softflowd | None) -> dict[str, list]:
    """{name: [(wall, rss), ...]} over ``repeat`` interleaved rounds."""
    modes = {"flowscope (AOT)": "aot"}
    if BASE is not None:
        modes["base (AOT)"] = "base"
    if JIT:
        modes["flowscope (JIT)"] = "jit"
    runs: dict[str, list] = {"softflowd": [], **{k: [] for k in modes}}
    for mode in modes.values():  # untimed first runs: the JIT's cache is filled
        measured(flowscope_cmd(pcap), env_for(mode))
    for _ in range(repeat):
        if sfd is not None:
            runs["softflowd"].append(measured(sfd.cmd(pcap)))
        for name, mode in modes.items():
            runs[name].append(measured(flowscope_cmd(pcap), env_for(mode)))
    return {k: v for k, v in runs.items() if v}


def table(title: str, runs: dict[str, list]) -> None:
    base = min(w for w, _ in runs["softflowd"]) if "softflowd" in runs else None
    print(f"\n{title}")
    print(f"  {'':<18} {'best s':>8} {'spread s':>15} {'peak MiB':>9} {'best / softflowd':>17}")
    for name, rs in runs.items():
        walls = [w for w, _ in rs]
        ratio = f"{min(walls) / base:17.2f}" if base else ""
        print(f"  {name:<18} {min(walls):8.3f} {min(walls):7.3f}-{max(walls):<7.3f} "
              f"{max(r for _, r in rs):9.1f} {ratio}")


def breakdown(repeat: int) -> None:
    """Where the tiny run's wall time and memory go (best of ``repeat`` each)."""
    steps = [("python -c pass", [str(PY), "-c", "pass"]),
             ("import numpy", [str(PY), "-c", "import numpy"]),
             ("import flowscope (AOT)", [str(PY), "-c", "import flowscope"]),
             ("flowscope pcap tiny (AOT)", flowscope_cmd(TINY))]
    res = {name: [] for name, _ in steps}
    for _ in range(repeat):
        for name, cmd in steps:
            res[name].append(measured(cmd, env_for("aot")))
    print("\ntiny run, step by step (best of %d)" % repeat)
    print(f"  {'':<28} {'best s':>8} {'peak MiB':>9}")
    for name, rs in res.items():
        print(f"  {name:<28} {min(w for w, _ in rs):8.3f} {min(r for _, r in rs):9.1f}")
    p = subprocess.run([str(PY), "-X", "importtime", "-m", "flowscope",
                        *flowscope_cmd(TINY)[1:]], capture_output=True, text=True,
                       env=env_for("aot"))
    rows = []
    for ln in p.stderr.splitlines():
        if ln.startswith("import time:") and "[us]" not in ln:
            parts = ln[len("import time:"):].split("|")
            rows.append((int(parts[0]), int(parts[1]), parts[2].strip()))
    rows.sort(reverse=True)
    print("  slowest imports by own time (python -X importtime, one run, ms self / cumulative):")
    for self_us, cum_us, name in rows[:8]:
        print(f"    {self_us / 1e3:6.1f} {cum_us / 1e3:7.1f}  {name}")
    mods = [r[2] for r in rows]
    heavy = [m for m in mods if m.split(".")[0] in ("numba", "llvmlite")]
    print(f"  numba/llvmlite modules imported: {len(heavy)}")


def corpus() -> list[Path]:
    files = sorted((ROOT / "tests" / "data").rglob("*.pcap*"))
    if (SHARED / "pcaps").is_dir():
        files += sorted((SHARED / "pcaps").glob("*.pcap*"))
    return files


def offline(args) -> None:
    import flowscope._kernels as K

    if K.MODE != "aot":
        print(f"note: this checkout runs the JIT ({K.JIT_REASON}); build the module with "
              "scripts/setup.sh or python -m flowscope.aotbuild", file=sys.stderr)
    if not args.pcap.exists():
        script = SHARED / "scripts" / "make_big_pcap.sh"
        print(f"building {args.pcap} ...", file=sys.stderr)
        subprocess.run(["bash", str(script), str(args.pcap), str(args.copies)], check=True,
                       stdout=subprocess.DEVNULL)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory() as td:
        sfd = Softflowd(Path(td)) if shutil.which("softflowd") and shutil.which("nfcapd") \
            else None
        try:
            table(f"tiny capture: {TINY.name} (targets: <= 0.15 s, <= 80 MiB)",
                  interleaved(TINY, args.repeat, sfd))
            big = interleaved(args.pcap, args.big_repeat, sfd)
            table(f"big capture: {args.pcap} ({args.pcap.stat().st_size / 1e9:.2f} GB; "
                  "target: softflowd / flowscope >= 2)", big)
            for name in ("flowscope (AOT)", "base (AOT)"):
                if "softflowd" in big and name in big:
                    s = min(w for w, _ in big["softflowd"])
                    a = min(w for w, _ in big[name])
                    print(f"  softflowd / {name}, best of each: {s / a:.2f}x; per round: "
                          + ", ".join(f"{x[0] / y[0]:.2f}" for x, y in
                                      zip(big["softflowd"], big[name])))
        finally:
            if sfd is not None:
                sfd.close()
    if args.no_corpus:
        return
    peaks = []
    for f in corpus():
        try:
            peaks.append((measured(flowscope_cmd(f), env_for("aot"))[1], f.name))
        except RuntimeError:
            pass  # a capture flowscope rejects (exit 1) is not a memory figure
    peaks.append((max(r for _, r in big["flowscope (AOT)"]), args.pcap.name))
    peaks.sort(reverse=True)
    print(f"\npeak RSS over {len(peaks)} captures (target <= 250 MiB): "
          f"max {peaks[0][0]:.1f} MiB ({peaks[0][1]}), min {peaks[-1][0]:.1f} MiB")
    breakdown(args.repeat)


# --------------------------------------------------------------------------------------------
# live


def _sh(*a, check=True):
    return subprocess.run(a, check=check, capture_output=True, text=True)


def _cpu_ticks(pid: int) -> int:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])  # utime + stime


def _status(pid: int) -> dict:
    out = {}
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = ln.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) / 1024.0
    return out


def _link_packets(ifname: str) -> int:
    st = Path(f"/sys/class/net/{ifname}/statistics")
    return int((st / "rx_packets").read_text()) + int((st / "tx_packets").read_text())


def _idle_cpu(pid: int, seconds: float, ifname: str) -> tuple[float, int]:
    """(percent of one CPU the process used over ``seconds``, packets on ``ifname`` meanwhile:
    link-local chatter such as IPv6 router solicitations and MLD reports)."""
    hz = os.sysconf("SC_CLK_TCK")
    t0, c0, p0 = time.monotonic(), _cpu_ticks(pid), _link_packets(ifname)
    time.sleep(seconds)
    cpu = 100.0 * (_cpu_ticks(pid) - c0) / hz / (time.monotonic() - t0)
    return cpu, _link_packets(ifname) - p0


SENDER = r"""
import socket, struct, sys
ifname, src_mac, dst_mac, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((ifname, 0))
eth = (bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", ""))
       + b"\x08\x00")
for i in range(n):  # bounded: n frames, one per flow
    sip = struct.pack("!I", (10 << 24) | (215 << 16) | ((i >> 8) & 0xFFFF))
    udp = struct.pack("!HHHH", 1024 + (i & 0xFF), 9, 8 + 18, 0) + bytes(18)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, sip,
                     socket.inet_aton("10.214.0.1"))
    c = sum(struct.unpack("!10H", ip))
    c = (c & 0xFFFF) + (c >> 16); c = (c & 0xFFFF) + (c >> 16)
    s.send(eth + ip[:10] + struct.pack("!H", ~c & 0xFFFF) + ip[12:] + udp)
print(n)
"""


def live(args) -> None:
    tag = f"fsst{os.getpid() % 100000}"
    ns, a, b = tag, f"{tag}a", f"{tag}b"
    tmp = Path(tempfile.mkdtemp(prefix="fs-bench-startup-"))
    proc = None
    try:
        _sh("ip", "netns", "add", ns)
        _sh("ip", "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns)
        if args.silent_link:  # no IPv6 on either end: no link-local chatter while idle
            _sh("sysctl", "-q", "-w", f"net.ipv6.conf.{a}.disable_ipv6=1")
            _sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                f"net.ipv6.conf.{b}.disable_ipv6=1")
        _sh("ip", "addr", "add", "10.214.0.1/16", "dev", a)
        _sh("ip", "link", "set", a, "up")
        _sh("ip", "-n", ns, "link", "set", b, "up")
        mac_a = Path(f"/sys/class/net/{a}/address").read_text().strip()
        mac_b = _sh("ip", "netns", "exec", ns, "cat", f"/sys/class/net/{b}/address").stdout
        err = tmp / "live.err"
        cmd = [FLOWSCOPE, "live", "-i", a, "--format", "jsonl", "-o", str(tmp / "live.jsonl"),
               "--max-flows", str(max(2 * args.flows, 100000)), "--udp-timeout", "3600",
               "--sweep-interval", str(args.sweep_interval), "--duration", "600"]
        with open(err, "w") as ef:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=ef,
                                    env=env_for(args.mode))
        end = time.monotonic() + 120
        while "Tracking flows on" not in err.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"flowscope live did not start: {err.read_text()}")
            time.sleep(0.1)
        time.sleep(2)
        st0 = _status(proc.pid)
        idle0, pk0 = _idle_cpu(proc.pid, args.idle, a)
        t0 = time.monotonic()
        sent = _sh("ip", "netns", "exec", ns, str(PY), "-c", SENDER, b, mac_b.strip(), mac_a,
                   str(args.flows)).stdout.strip()
        time.sleep(max(3.0, 2 * (time.monotonic() - t0)))
        st1 = _status(proc.pid)
        idle1, pk1 = _idle_cpu(proc.pid, args.idle, a)
        st2 = _status(proc.pid)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        jit = [n for n in ("libllvmlite", "libLLVM", "libclang") if n in maps]
        proc.send_signal(signal.SIGINT)
        proc.wait(120)
        flows = sum(1 for ln in open(tmp / "live.jsonl") if '"ended"' in ln)
        print(f"\nflowscope live ({args.mode}, max_flows {max(2 * args.flows, 100000)}, "
              f"sweep_interval {args.sweep_interval:g} s) on veth; "
              f"targets: <= 150 MiB with 100k flows, <= 1% CPU idle")
        print(f"  no flows:            RSS {st0['VmRSS']:6.1f} MiB (peak {st0['VmHWM']:.1f}), "
              f"idle CPU {idle0:.2f}% over {args.idle:g} s ({pk0} link packets)")
        print(f"  {sent} flows held:    RSS {st1['VmRSS']:6.1f} MiB (peak {st2['VmHWM']:.1f}), "
              f"idle CPU {idle1:.2f}% over {args.idle:g} s ({pk1} link packets)")
        print(f"  flows ended at exit: {flows}; LLVM libraries mapped in the process: "
              f"{', '.join(jit) or 'none'} (libllvmlite = numba's JIT ran; libLLVM/libclang = "
              "BCC's compiler)")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        _sh("ip", "link", "del", a, check=False)
        _sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="interleaved rounds, tiny capture")
    ap.add_argument("--big-repeat", type=int, default=3, help="interleaved rounds, big capture")
    ap.add_argument("--pcap", type=Path, default=Path("/tmp/big.pcap"))
    ap.add_argument("--copies", type=int, default=460)
    ap.add_argument("--live", action="store_true", help="the live part only (root)")
    ap.add_argument("--flows", type=int, default=100000)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds per idle CPU figure")
    ap.add_argument("--mode", choices=("aot", "jit"), default="aot", help="live: kernels")
    ap.add_argument("--sweep-interval", type=float, default=1.0,
                    help="live: sensor.sweep_interval (idle syncs), seconds")
    ap.add_argument("--silent-link", action="store_true",
                    help="live: IPv6 off on the veth pair (no link-local chatter)")
    ap.add_argument("--base", type=Path, help="offline: also run this source tree (its own "
                    "compiled kernels), PYTHONPATH set to it, interleaved with the others")
    ap.add_argument("--no-jit", action="store_true", help="offline: leave out the JIT runs")
    ap.add_argument("--no-corpus", action="store_true",
                    help="offline: only the tiny and big captures (no corpus RSS, no breakdown)")
    args = ap.parse_args()
    global BASE, JIT
    BASE, JIT = args.base, not args.no_jit
    if BASE is not None:
        check_base(BASE)
    if args.live:
        live(args)
    else:
        offline(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
