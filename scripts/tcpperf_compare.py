#!/usr/bin/env python3
"""flowscope's TCP loss signals and handshake RTT beside tshark's TCP analysis, per capture.

    python3 scripts/tcpperf_compare.py [CAPTURE ...]     # default: ../shared/pcaps/*

For each TCP flow (bidirectional 5-tuple) of each capture, tshark's expert flags are counted
per direction: ``retrans`` = segments tshark flags tcp.analysis.retransmission,
fast_retransmission or spurious_retransmission; ``ooo`` = tcp.analysis.out_of_order;
``zero_win`` = tcp.analysis.zero_window; ``rtt`` = tcp.analysis.initial_rtt. flowscope's
are its Ended records (``flowscope pcap``'s engine): retrans_pkts, ooo_pkts, zero_win and
tcp_rtt. ``--tool tcptrace`` compares with ``tcptrace -l -n`` instead (rexmt data pkts,
outoforder pkts, zero win adv; no RTT). One line per capture: flows, flows with a
difference, and the totals of both (reference / flowscope). With ``--flows`` every flow that
differs is printed. docs/semantics.md explains the differences.
"""

from __future__ import annotations

import argparse
import glob
import ipaddress
import os
import re
import subprocess
import sys
from collections import defaultdict

FIELDS = ("ip.src", "ipv6.src", "tcp.srcport", "ip.dst", "ipv6.dst", "tcp.dstport",
          "tcp.analysis.retransmission", "tcp.analysis.fast_retransmission",
          "tcp.analysis.spurious_retransmission", "tcp.analysis.out_of_order",
          "tcp.analysis.zero_window", "tcp.analysis.initial_rtt")


def _end(addr: str, port: str) -> tuple[int, int]:
    return int(ipaddress.ip_address(addr.split(",")[-1])), int(port)


def tshark_flows(path: str) -> dict:
    """{(lo end, hi end): {"retrans": [lo->hi, hi->lo], "ooo": .., "zero_win": .., "rtt"}}."""
    cmd = ["tshark", "-n", "-r", path, "-Y", "tcp", "-T", "fields", "-E", "separator=\t",
           "-o", "tcp.desegment_tcp_streams:FALSE"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    flows: dict = defaultdict(lambda: {"retrans": [0, 0], "ooo": [0, 0], "zero_win": [0, 0],
                                       "rtt": None})
    for line in out.splitlines():
        v = line.split("\t")
        v += [""] * (len(FIELDS) - len(v))
        src, dst = (v[0] or v[1]), (v[3] or v[4])
        if not src or not dst or not v[2] or not v[5]:
            continue
        a, b = _end(src, v[2].split(",")[0]), _end(dst, v[5].split(",")[0])
        key, d = ((a, b), 0) if a <= b else ((b, a), 1)
        f = flows[key]
        if v[6] or v[7] or v[8]:
            f["retrans"][d] += 1
        if v[9]:
            f["ooo"][d] += 1
        if v[10]:
            f["zero_win"][d] += 1
        if v[11] and f["rtt"] is None:
            f["rtt"] = round(float(v[11]), 6)
    return flows


_TCPTRACE_ROWS = {"rexmt data pkts": "retrans", "outoforder pkts": "ooo",
                  "zero win adv": "zero_win"}


def tcptrace_flows(path: str) -> dict:
    """The same view from ``tcptrace -l -n``: ``rexmt data pkts`` (data segments whose range
    was already seen), ``outoforder pkts``, ``zero win adv``; tcptrace has no initial RTT
    (``rtt`` stays None)."""
    out = subprocess.run(["tcptrace", "-l", "-n", path], capture_output=True, text=True,
                         timeout=300).stdout
    flows: dict = {}
    cur, flip = None, False
    hosts: list = []
    for line in out.splitlines():
        t = line.strip()
        m = re.match(r"host [a-z]+:\s+(\S+)$", t)  # two per connection: a/b, c/d, ..., aa/ab
        if t.startswith("TCP connection "):
            hosts, cur = [], None
        elif m:
            h, p = m.group(1).rsplit(":", 1)
            hosts.append((int(ipaddress.ip_address(h)), int(p)))
            if len(hosts) == 2:
                a, b = hosts
                key, flip = ((a, b), False) if a <= b else ((b, a), True)
                cur = flows.setdefault(key, {"retrans": [0, 0], "ooo": [0, 0],
                                             "zero_win": [0, 0], "rtt": None})
        elif cur is not None and ":" in t:
            name = t.split(":", 1)[0].strip()
            if name in _TCPTRACE_ROWS:
                nums = [int(x) for x in t.replace(":", " ").split() if x.isdigit()]
                ab, ba = nums[0], nums[1]
                v = cur[_TCPTRACE_ROWS[name]]
                if flip:
                    ab, ba = ba, ab
                v[0] += ab
                v[1] += ba
    return flows


def flowscope_flows(path: str) -> dict:
    """The same view of flowscope's Ended records of TCP flows."""
    from flowscope import layout
    from flowscope.pcap import CaptureError, CaptureReader
    from flowscope.tracker import FlowTracker

    t = FlowTracker(events="ended")
    recs = []
    try:
        for batch in CaptureReader(path):
            for r in t.process(batch):
                recs.append(r.copy())
    except CaptureError:
        pass
    recs.extend(r.copy() for r in t.process_finish())
    flows: dict = {}
    for batch in recs:
        for r in batch:
            if int(r["kind"]) != layout.EV_ENDED:
                continue
            k0, k1, k2, k3, meta = (int(w) for w in r["key"])
            _kind, _l3, proto, pa, pb = layout.unpack_meta(meta)
            if proto != layout.IPPROTO_TCP:
                continue
            a, b = ((k0 << 64) | k1, pa), ((k2 << 64) | k3, pb)
            rev = int(r["init_rev"])  # the initiator sends b -> a
            by_dir = (lambda v: [int(v[1]), int(v[0])] if rev else [int(v[0]), int(v[1])])
            resp, init = int(r["rtt_resp"]), int(r["rtt_init"])
            f = flows.setdefault((a, b), {"retrans": [0, 0], "ooo": [0, 0], "zero_win": [0, 0],
                                          "rtt": None})
            for name, field in (("retrans", "retrans_pkts"), ("ooo", "ooo_pkts"),
                                ("zero_win", "zero_win")):
                f[name] = [x + y for x, y in zip(f[name], by_dir(r[field]))]
            if resp >= 0 and init >= 0 and f["rtt"] is None:
                f["rtt"] = round((resp + init) / 1e9, 6)
    return flows


def compare(path: str, tool: str = "tshark") -> tuple[dict, list]:
    """Per-field totals of both tools and the flows that differ (``tool``: tshark or
    tcptrace; tcptrace's flows have no RTT, so flowscope's is left out too)."""
    ts = tshark_flows(path) if tool == "tshark" else tcptrace_flows(path)
    fs = flowscope_flows(path)
    if tool != "tshark":
        for f in fs.values():
            f["rtt"] = None
    totals = {n: [0, 0] for n in ("retrans", "ooo", "zero_win", "rtt")}
    diff = []
    for key in sorted(set(ts) | set(fs)):
        t = ts.get(key, {"retrans": [0, 0], "ooo": [0, 0], "zero_win": [0, 0], "rtt": None})
        f = fs.get(key, {"retrans": [0, 0], "ooo": [0, 0], "zero_win": [0, 0], "rtt": None})
        for n in ("retrans", "ooo", "zero_win"):
            totals[n][0] += sum(t[n])
            totals[n][1] += sum(f[n])
        totals["rtt"][0] += t["rtt"] is not None
        totals["rtt"][1] += f["rtt"] is not None
        if any(t[n] != f[n] for n in ("retrans", "ooo", "zero_win", "rtt")):
            diff.append((key, t, f))
    return {"flows": len(set(ts) | set(fs)), **totals}, diff


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("captures", nargs="*")
    ap.add_argument("--flows", action="store_true", help="print every flow that differs")
    ap.add_argument("--tool", choices=("tshark", "tcptrace"), default="tshark",
                    help="the reference (default tshark)")
    args = ap.parse_args(argv)
    here = os.path.dirname(os.path.abspath(__file__))
    caps = args.captures or sorted(glob.glob(os.path.join(here, "..", "..", "shared", "pcaps",
                                                          "*.pcap*")))
    print("capture\tflows\tdiffer\tretrans r/f\tooo r/f\tzero_win r/f\trtt r/f")
    for c in caps:
        tot, diff = compare(c, args.tool)
        if tot["flows"] == 0:
            continue
        cols = [f"{tot[n][0]}/{tot[n][1]}" for n in ("retrans", "ooo", "zero_win", "rtt")]
        print(f"{os.path.basename(c)}\t{tot['flows']}\t{len(diff)}\t" + "\t".join(cols))
        if args.flows:
            for key, t, f in diff:
                print(f"  {key}\n    tshark    {t}\n    flowscope {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
