#!/usr/bin/env python3
"""Per-packet cost of tunnel decapsulation in the kernel programs (root needed).

Loads the build with decapsulation (the default) and the one without (``decapsulate:
false``, compiled out) side by side and measures, through BPF_PROG_TEST_RUN (repeat 1e6,
kernel-reported ns per run, median of --rounds calls taken in turns), one packet of an
existing flow: a TCP pure ACK, a UDP datagram that is no tunnel candidate, and a VXLAN frame
(two flows counted). Prints both and the ratio on/off.

Usage: sudo .venv/bin/python scripts/bench_decap.py [--rounds 7] [--repeat 1000000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from flowscope.sensor import loader  # noqa: E402
from flowscope.sensor.ring import RingReader  # noqa: E402
from test_bpf_kernel import ACK, eth, ipv4, tcp, udp  # noqa: E402

VXLAN_HDR = b"\x08\0\0\0\0\0\x2a\0"  # I flag, VNI 42
FRAMES = {
    "tcp ack": eth(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1234, 80, ACK, seq=5000, ack=1))),
    "udp 5353": eth(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1234, 5353, b"x" * 18))),
    "vxlan": eth(ipv4("10.0.0.1", "10.0.0.9", 17, udp(40000, 4789, VXLAN_HDR + eth(
        ipv4("192.168.1.1", "192.168.1.2", 6, tcp(1000, 2000, ACK, seq=9, ack=1)))))),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=1_000_000)
    a = ap.parse_args()
    mods = {d: loader.load({"decapsulate": d}) for d in (0, 1)}
    rings = {d: RingReader(m.events_fd) for d, m in mods.items()}
    try:
        print("hook case       off ns   on ns  on/off")
        for name, frame in FRAMES.items():
            for hook in ("xdp", "tc"):
                ns = {0: [], 1: []}
                fds = {d: (m.xdp_fd if hook == "xdp" else m.tc_fd) for d, m in mods.items()}
                for d, fd in fds.items():  # the flows exist before the timed runs
                    loader.prog_test_run(fd, frame)
                    rings[d].drain_all()
                for _ in range(a.rounds):
                    for d, fd in fds.items():
                        ns[d].append(loader.prog_test_run(fd, frame, repeat=a.repeat)[1])
                        rings[d].drain_all()
                off, on = statistics.median(ns[0]), statistics.median(ns[1])
                print(f"{hook:4} {name:9} {off:7.0f} {on:7.0f}  {on / off:6.2f}")
    finally:
        for r in rings.values():
            r.close()
        for m in mods.values():
            m.close()


if __name__ == "__main__":
    main()
