#!/usr/bin/env python3
"""Compare flowscope's Zeek conn records with Zeek's own baselines on the shared captures.

For every capture in the pcap directory with a Zeek baseline in ``expected/``
(``*.zeek.*conn*.log``: a full conn.log or a zeek-cut of some columns;
``*.zeek.conn_state-RST-behavior.txt``: ``history, conn_state`` lines), run
``FlowTracker(zeek=True)`` over the capture (with ``key_icmp``, as Zeek keys ICMP,
unless ``--reference-icmp``), match connections by
(proto, orig_h, orig_p, resp_h, resp_p) -- or, for baselines without the
endpoints, by position -- and count agreement per field.

``tunnel_parents`` is compared as the set of parent connections each uid names:
a parent in the same log by its endpoints, one that is not (Zeek logs no
connection for IP-in-IP and GRE tunnels; flowscope logs them with
``unknown_transport``) as an IP tunnel.

Usage: scripts/zeek_compare.py [PCAP_DIR] [--verbose]
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys
from dataclasses import dataclass, field

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from flowscope.output.zeek import conn_record  # noqa: E402
from flowscope.pcap import CaptureReader  # noqa: E402
from flowscope.config import TrackerConfig  # noqa: E402
from flowscope.tracker import FlowTracker  # noqa: E402

DEFAULT_DIR = "/work/shared/pcaps"
COMPARED = ("conn_state", "history", "orig_pkts", "resp_pkts", "orig_ip_bytes", "resp_ip_bytes",
            "duration", "vlan", "inner_vlan", "orig_l2_addr", "resp_l2_addr", "tunnel_parents")
#: Baselines whose Zeek run did not decapsulate (a skip analyzer stripped the outer headers):
#: their tunnel_parents are not compared.
NO_TUNNEL_RUN = ("core.skip_analyzer",)
KEY = ("proto", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p")


@dataclass
class Result:
    capture: str
    baseline: str
    conns: int = 0  # baseline connections
    matched: int = 0
    agree: dict = field(default_factory=dict)  # field -> [agree, compared]
    diffs: list = field(default_factory=list)  # (key, field, ours, zeek)
    tunnel: bool = False


def run_flowscope(path: str, key_icmp: bool = True) -> list[dict]:
    t = FlowTracker(config=TrackerConfig(key_icmp=key_icmp), events="ended", zeek=True)
    out = []
    for batch in CaptureReader(path):
        for recs in t.process(batch):
            out.extend(c for c in (conn_record(r) for r in recs if r["kind"] == 5) if c)
    for recs in t.process_finish():
        out.extend(c for c in (conn_record(r) for r in recs if r["kind"] == 5) if c)
    return out


def parse_baseline(path: str) -> tuple[list[str], list[dict]]:
    """Columns and rows of a conn.log or zeek-cut baseline (``-`` kept as a string)."""
    cols: list[str] = []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("#fields\t"):
                cols = line.split("\t")[1:]
                continue
            if not line or line.startswith("#"):
                continue
            parts = line.split("\t")
            if not cols:  # zeek-cut -m: the first line names the columns
                cols = parts
                continue
            rows.append(dict(zip(cols, parts)))
    return cols, rows


def parse_rst_behavior(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or "," not in line:
                continue
            h, st = (x.strip() for x in line.split(",", 1))
            rows.append({"history": h, "conn_state": st})
    return rows


def capture_filter_port(baseline: str):
    """The port of a ``-f 'tcp port N'`` capture filter in the baseline's TEST-EXEC line."""
    m = re.search(r"-f '?tcp port (\d+)", open(baseline, encoding="utf-8").read(4000))
    return int(m.group(1)) if m else None


def _ours(c: dict, name: str) -> str:
    v = c.get(name)
    if v is None:
        return "-"
    if name == "duration":
        return f"{v:.6f}"
    return str(v)


def _parents(value, by_uid: dict) -> str:
    """The parent connections a tunnel_parents value names, in a comparable form."""
    if value in (None, "-", "(empty)"):
        return "-"
    uids = value if isinstance(value, list) else value.split(",")
    out = []
    for uid in uids:
        c = by_uid.get(uid)
        if c is None or c["proto"] not in ("tcp", "udp", "icmp"):
            out.append("ip-tunnel")
        else:
            ends = sorted([(str(c["id.orig_h"]), str(c["id.orig_p"])),
                           (str(c["id.resp_h"]), str(c["id.resp_p"]))])
            out.append(f'{c["proto"]}:{ends[0][0]}:{ends[0][1]}-{ends[1][0]}:{ends[1][1]}')
    return ",".join(sorted(out))


def _same(name: str, ours: str, zeek: str) -> bool:
    if name == "duration" and ours != "-" and zeek != "-":
        return abs(float(ours) - float(zeek)) <= 2e-6
    return ours == zeek


def compare(capture: str, baseline: str, ours: list[dict]) -> Result:
    res = Result(os.path.basename(capture), os.path.basename(baseline))
    res.tunnel = "tunnel" in capture
    if baseline.endswith("RST-behavior.txt"):
        zrows = parse_rst_behavior(baseline)
        cols = ["history", "conn_state"]
        pairs = list(zip(zrows, ours))
    else:
        cols, zrows = parse_baseline(baseline)
        if all(k in cols for k in KEY[1:]):
            index = {}
            for c in ours:
                index.setdefault(tuple(str(c[k]) for k in KEY[1:]), []).append(c)
            pairs = []
            for z in zrows:
                zk = tuple(z[k] for k in KEY[1:])
                # an originator chosen the other way round still matches (and then differs)
                cand = index.get(zk) or index.get((zk[2], zk[3], zk[0], zk[1]), [])
                if "proto" in z:
                    cand = [c for c in cand if c["proto"] == z["proto"]]
                pairs.append((z, cand.pop(0) if cand else None))
        else:
            # zeek-cut of a few columns: in start order, after the run's capture filter
            port = capture_filter_port(baseline)
            sel = [c for c in ours if port is None or (
                c["proto"] == "tcp" and port in (c["id.orig_p"], c["id.resp_p"]))]
            pairs = list(zip(zrows, sorted(sel, key=lambda c: c["ts"])))
    res.conns = len(zrows)
    compare_parents = ("tunnel_parents" in cols and "uid" in cols
                       and not any(b in baseline for b in NO_TUNNEL_RUN))
    zuid = {z["uid"]: z for z in zrows} if compare_parents else {}
    ouid = {c["uid"]: c for c in ours} if compare_parents else {}
    for z, c in pairs:
        if c is None:
            res.diffs.append((tuple(z.get(k, "?") for k in KEY), "missing", "-", "conn"))
            continue
        res.matched += 1
        for name in COMPARED:
            if name not in cols:
                continue
            if name == "tunnel_parents":
                if not compare_parents:
                    continue
                o, zv = _parents(c.get(name), ouid), _parents(z[name], zuid)
            else:
                o, zv = _ours(c, name), z[name]
            a = res.agree.setdefault(name, [0, 0])
            a[1] += 1
            if _same(name, o, zv):
                a[0] += 1
            else:
                res.diffs.append((tuple(str(c[k]) for k in KEY), name, o, zv))
    return res


def baselines(pcap_dir: str) -> list[tuple[str, str]]:
    out = []
    exp = os.path.join(pcap_dir, "expected")
    pats = ("*.zeek.*conn*.log*", "*.zeek.conn_state-RST-behavior.txt")
    for pat in pats:
        for b in sorted(glob.glob(os.path.join(exp, pat))):
            cap = os.path.join(pcap_dir, os.path.basename(b).split(".zeek.")[0])
            if os.path.exists(cap):
                out.append((cap, b))
    return out


def compare_all(pcap_dir: str = DEFAULT_DIR, key_icmp: bool = True) -> list[Result]:
    """Every baseline's comparison; ``key_icmp`` (default, as Zeek keys ICMP) or not."""
    cache: dict[str, list[dict]] = {}
    results = []
    for cap, b in baselines(pcap_dir):
        if cap not in cache:
            cache[cap] = run_flowscope(cap, key_icmp)
        results.append(compare(cap, b, cache[cap]))
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pcap_dir", nargs="?", default=DEFAULT_DIR)
    ap.add_argument("-v", "--verbose", action="store_true", help="list every difference")
    ap.add_argument("--reference-icmp", action="store_true",
                    help="key ICMP with ports 0 (the default keys; without it: key_icmp)")
    args = ap.parse_args(argv)
    results = compare_all(args.pcap_dir, not args.reference_icmp)
    short = {"conn_state": "state", "history": "hist", "orig_pkts": "opkt", "resp_pkts": "rpkt",
             "orig_ip_bytes": "oipb", "resp_ip_bytes": "ripb", "duration": "dur", "vlan": "vlan",
             "inner_vlan": "ivlan", "orig_l2_addr": "omac", "resp_l2_addr": "rmac",
             "tunnel_parents": "tunp"}
    hdr = f"{'baseline':58} {'conns':>5} " + " ".join(f"{short[n]:>7}" for n in COMPARED)
    print(hdr)
    tot: dict = {}
    for r in results:
        cells = []
        for n in COMPARED:
            a = r.agree.get(n)
            cells.append(f"{a[0]:>3}/{a[1]:<3}" if a else f"{'':>7}")
            if a:
                t = tot.setdefault(n, [0, 0])
                t[0] += a[0]
                t[1] += a[1]
        name = r.baseline.replace(".pcap.zeek.", ":")[:57]
        print(f"{name:58} {r.matched:>2}/{r.conns:<2} " + " ".join(cells))
        if args.verbose:
            for key, name_, o, z in r.diffs:
                print(f"    {' '.join(key)}  {name_}: ours {o!r} zeek {z!r}")
    print("totals" + " " * 59 + " ".join(
        f"{tot[n][0]:>3}/{tot[n][1]:<3}" if n in tot else f"{'':>7}" for n in COMPARED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
