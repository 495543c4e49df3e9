#!/usr/bin/env python3
"""Compare flowscope's per-flow DNS fields with tshark's DNS dissector on captures.

For every Ended flow of ``flowscope pcap --format jsonl`` on port 53, the DNS
messages tshark decodes in that flow (same 5-tuple, between the flow's start and
end) are run through flowscope's documented rule (first query; the first
response from the other side with its transaction id; a response before any
query gives name, qtype, rcode and answers) and compared field by field:
``dns_query`` with ``dns.qry.name``, ``dns_qtype`` with ``dns.qry.type``,
``dns_rcode`` with ``dns.flags.rcode``, ``dns_answers`` with
``dns.count.answers`` and ``dns_rtt`` with ``dns.time`` (to 1 µs: tshark prints
times in µs for µs captures).

Usage: scripts/dns_compare.py CAPTURE... (prints one line per capture; exit 1 on
any difference). Needs tshark.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIELDS = ("frame.time_epoch", "ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "udp.srcport",
          "tcp.srcport", "udp.dstport", "tcp.dstport", "dns.id", "dns.flags.response",
          "dns.qry.name", "dns.qry.type", "dns.flags.rcode", "dns.count.answers", "dns.time")


def tshark_messages(path: str) -> list[dict]:
    out = subprocess.run(
        ["tshark", "-r", path, "-Y", "dns && (udp.port == 53 || tcp.port == 53)", "-T",
         "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=|"]
        + [x for f in FIELDS for x in ("-e", f)],
        capture_output=True, text=True, check=True).stdout
    msgs = []
    for line in out.splitlines():
        v = dict(zip(FIELDS, line.split("\t")))
        last = {k: (x.split("|")[-1] if x else "") for k, x in v.items()}  # inner headers
        first = {k: (x.split("|")[0] if x else "") for k, x in v.items()}
        src = last["ip.src"] or last["ipv6.src"]
        dst = last["ip.dst"] or last["ipv6.dst"]
        tcp = bool(last["tcp.srcport"])
        sp = int(last["tcp.srcport"] or last["udp.srcport"])
        dp = int(last["tcp.dstport"] or last["udp.dstport"])
        ids = v["dns.id"].split("|")
        # one line per frame; a TCP segment may carry several messages: take the first
        msgs.append(dict(ts=float(first["frame.time_epoch"]), src=src, dst=dst, sport=sp,
                         dport=dp, proto="tcp" if tcp else "udp", id=int(ids[0], 16),
                         qr=first["dns.flags.response"] in ("1", "True"),
                         name=first["dns.qry.name"], qtype=first["dns.qry.type"],
                         rcode=first["dns.flags.rcode"], answers=first["dns.count.answers"],
                         time=first["dns.time"]))
    return msgs


def expected(msgs: list[dict]) -> dict:
    """flowscope's rule over one flow's messages, with tshark's values."""
    q = None
    for m in msgs:
        if not m["qr"]:
            if q is None:
                q = m
            continue
        if q is None:
            return dict(dns_query=m["name"], dns_qtype=m["qtype"], dns_rcode=m["rcode"],
                        dns_answers=m["answers"])
        if m["id"] == q["id"] and m["src"] == q["dst"] and m["sport"] == q["dport"]:
            return dict(dns_query=q["name"], dns_qtype=q["qtype"], dns_rcode=m["rcode"],
                        dns_answers=m["answers"], dns_rtt=m["time"])
    if q is None:
        return {}
    return dict(dns_query=q["name"], dns_qtype=q["qtype"])


def _norm(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if k == "dns_query" and v == "<Root>":
            v = "."
        if k == "dns_rtt":
            v = round(float(v), 6) if v != "" else None
        elif k != "dns_query":
            v = int(v) if v != "" else None
        out[k] = v
    return out


def compare(path: str) -> tuple[int, int, list[str]]:
    run = subprocess.run([sys.executable, "-m", "flowscope", "pcap", "--format", "jsonl",
                          "--events", "ended", path], capture_output=True, text=True,
                         cwd=REPO)
    msgs = tshark_messages(path)
    flows = 0
    same = 0
    diffs = []
    for line in run.stdout.splitlines():
        r = json.loads(line)
        if r.get("event") != "ended" or 53 not in (r.get("src_port"), r.get("dst_port")):
            continue
        ends = {(r["src_ip"], r["src_port"]), (r["dst_ip"], r["dst_port"])}
        mine = [m for m in msgs if m["proto"] == r["proto"]
                and {(m["src"], m["sport"]), (m["dst"], m["dport"])} == ends
                and r["start"] - 1e-6 <= m["ts"] <= r["end"] + 1e-6]
        want = _norm(expected(mine))
        got = {k: r[k] for k in ("dns_query", "dns_qtype", "dns_rcode", "dns_answers",
                                 "dns_rtt") if k in r}
        if "dns_rtt" in got:
            got["dns_rtt"] = round(got["dns_rtt"], 6)
        if not want and not got:
            continue
        flows += 1
        if got == want:
            same += 1
        else:
            diffs.append(f"  {r['src_ip']}:{r['src_port']} -> {r['dst_ip']}:{r['dst_port']} "
                         f"{r['proto']}: flowscope {got} tshark {want}")
    return flows, same, diffs


def main(argv: list[str]) -> int:
    bad = 0
    for path in argv:
        flows, same, diffs = compare(path)
        print(f"{Path(path).name}: {same}/{flows} DNS flows agree")
        for d in diffs:
            print(d)
        bad += len(diffs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
