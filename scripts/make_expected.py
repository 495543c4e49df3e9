#!/usr/bin/env python3
"""Make reference FiveTuple key tables for the shared captures, with tshark.

For every capture in the pcaps directory this writes
``<out>/<capture file name>.keys.tsv``: one line per canonical bidirectional
5-tuple key with per-direction packet and byte counts, as flowscope's
``FiveTuple`` extractor should key the frames.  The values come from tshark's
dissection (PDML output), never from flowscope, so that a test can compare the
two independently.

Usage:
    python3 scripts/make_expected.py [--pcaps DIR] [--out tests/expected]

Keying rules (see tests/expected/README.md for the reasoning):

* Only frames with an IPv4 or IPv6 header count; the FIRST (outermost) IP
  layer is the key.  Whatever tshark sees through before it (Ethernet,
  Linux SLL/SLL2, raw IP, 802.1Q/QinQ, MPLS, PPPoE) is seen through; tunnels
  are not decapsulated.  Frames without an IP layer are unmatched.
* proto = IP protocol number of the L4 header (IPv6: after extension headers).
  TCP (6), UDP (17) and SCTP (132) take their ports from the header; every
  other protocol has ports 0.
* A non-first fragment (IPv4 fragment offset != 0, IPv6 fragment header offset
  != 0) has proto = the fragment's protocol (IPv6: the fragment header's next
  header).  Of TCP, UDP and SCTP it takes the ports of its datagram's first
  fragment: the one with the same (proto, source, destination, IP id / IPv6
  fragment id), the latest before it, else the first after it (the shared
  captures' datagrams span well under the 30 s fragment timeout); with no such
  first fragment it is unmatched (``fragment-without-first``).  Other
  protocols have ports 0 anyway.
* A frame whose IP header or SCTP common header (12 bytes) is not wholly inside
  the captured bytes is unmatched (it is counted, not keyed).  A TCP fixed
  header (20 bytes) or UDP header (8 bytes) cut short -- by the captured bytes
  or by the IP length -- is keyed at the IP level, with ports 0.
* Canonical order: endpoint (address bytes in network order, port) a <= b.
  ``ab`` counts frames sent from a to b.  bytes = frame.cap_len, the whole
  captured frame with its link-layer header and any trailer.

Only the Python standard library is used; tshark must be on PATH.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

# Captures not keyed, with the reason (recorded in the README and printed).
SKIP_EXACT = {
    "zeek__empty.pcap": "valid pcap header but zero packets: nothing to key",
    "tcpdump__tcp_header_heapoverflow.pcap": (
        "crafted/fuzzed regression input (garbled TCP header, record larger than "
        "the snaplen); not a capture with a defined reference answer"
    ),
}
SKIP_PREFIX = {
    "derived__": "file-level corruption made for reader tests (truncated record); "
    "tshark stops with an error, so there is no complete reference",
}
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap")

# Reassembly off: every frame is dissected on its own.
TSHARK_PREFS = [
    "ip.defragment:FALSE",
    "ipv6.defragment:FALSE",
    "tcp.desegment_tcp_streams:FALSE",
    "sctp.reassembly:FALSE",
]

PROTO_TCP, PROTO_UDP, PROTO_SCTP = 6, 17, 132
# Bytes of the L4 header that must be captured to read the ports.
MIN_L4_HEADER = {PROTO_TCP: 20, PROTO_UDP: 8, PROTO_SCTP: 12}
L4_DISSECTOR = {PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_SCTP: "sctp"}
# IPv6 extension headers that tshark nests inside the "ipv6" element.
IPV6_EXT_NXT = (
    "ipv6.hopopts.nxt",
    "ipv6.routing.nxt",
    "ipv6.fraghdr.nxt",
    "ipv6.dstopts.nxt",
)

HEADER = ["proto", "a_addr", "a_port", "b_addr", "b_port", "pkts_ab", "bytes_ab", "pkts_ba", "bytes_ba"]


def skip_reason(name: str) -> str | None:
    if name in SKIP_EXACT:
        return SKIP_EXACT[name]
    for prefix, why in SKIP_PREFIX.items():
        if name.startswith(prefix):
            return why
    return None


def tshark_version() -> str:
    out = subprocess.run(["tshark", "--version"], capture_output=True, text=True, check=True).stdout
    return out.splitlines()[0].strip().rstrip(".")


def _int(text: str | None) -> int:
    if text is None:
        raise ValueError("missing field")
    return int(text, 0)


def _fields(elem: ET.Element) -> dict[str, ET.Element]:
    """First occurrence of every field name directly or deeper inside elem."""
    found: dict[str, ET.Element] = {}
    for f in elem.iter("field"):
        name = f.get("name")
        if name and name not in found:
            found[name] = f
    return found


class Frame:
    """What one frame contributes: a (directional) tuple or an unmatched reason."""

    __slots__ = ("number", "cap_len", "key", "unmatched", "note", "frag")

    def __init__(self, number: int, cap_len: int):
        self.number = number
        self.cap_len = cap_len
        self.key: tuple | None = None  # (proto, src_bytes, sport, dst_bytes, dport)
        self.unmatched: str | None = None
        self.note: str | None = None
        # (proto, src, dst, id, first) for fragments of TCP/UDP/SCTP datagrams
        self.frag: tuple | None = None


def key_frame(packet: ET.Element) -> Frame:
    protos = [p for p in packet if p.tag == "proto"]
    frame_el = next(p for p in protos if p.get("name") == "frame")
    ff = _fields(frame_el)
    fr = Frame(_int(ff["frame.number"].get("show")), _int(ff["frame.cap_len"].get("show")))
    cap_len = fr.cap_len

    # First (outermost) IP layer among the top-level protocol elements.
    idx = next((i for i, p in enumerate(protos) if p.get("name") in ("ip", "ipv6")), None)
    if idx is None:
        fr.unmatched = "non-ip"
        return fr
    ip_el = protos[idx]
    ip_pos = _int(ip_el.get("pos"))
    nxt_el = protos[idx + 1] if idx + 1 < len(protos) else None
    f = _fields(ip_el)

    if ip_el.get("name") == "ip":
        need = ("ip.src", "ip.dst", "ip.proto", "ip.hdr_len", "ip.frag_offset", "ip.id",
                "ip.flags.mf", "ip.len")
        if any(n not in f for n in need):
            fr.unmatched = "ip-header-short"
            return fr
        hdr_len = _int(f["ip.hdr_len"].get("show"))
        if hdr_len < 20 or ip_pos + hdr_len > cap_len:
            fr.unmatched = "ip-header-short"
            return fr
        src = bytes.fromhex(f["ip.src"].get("value"))
        dst = bytes.fromhex(f["ip.dst"].get("value"))
        proto = _int(f["ip.proto"].get("show"))
        non_first_frag = _int(f["ip.frag_offset"].get("show")) != 0
        more = _int(f["ip.flags.mf"].get("show")) != 0
        ident = _int(f["ip.id"].get("show"))
        ip_end = ip_pos + _int(f["ip.len"].get("show"))
        l4_off = ip_pos + hdr_len
    else:
        if any(n not in f for n in ("ipv6.src", "ipv6.dst", "ipv6.nxt")) or ip_pos + 40 > cap_len:
            fr.unmatched = "ip-header-short"
            return fr
        src = bytes.fromhex(f["ipv6.src"].get("value"))
        dst = bytes.fromhex(f["ipv6.dst"].get("value"))
        # Walk the next-header chain in document order: the last one names L4.
        proto = _int(f["ipv6.nxt"].get("show"))
        non_first_frag = more = False
        ident = None
        ip_end = ip_pos + 40 + _int(f["ipv6.plen"].get("show"))
        for el in ip_el.iter("field"):
            name = el.get("name")
            if name in IPV6_EXT_NXT:
                proto = _int(el.get("show"))
            elif name == "ipv6.fraghdr.offset" and _int(el.get("show")) != 0:
                non_first_frag = True
            elif name == "ipv6.fraghdr.more":
                more = _int(el.get("show")) != 0
            elif name == "ipv6.fraghdr.ident":
                ident = _int(el.get("show"))
        if proto in (0, 43, 44, 60) and not non_first_frag:
            # An extension header tshark did not finish (cut short by the capture).
            fr.unmatched = "ip-header-short"
            return fr
        l4_off = ip_pos + _int(ip_el.get("size"))
        if l4_off > cap_len:
            fr.unmatched = "ip-header-short"
            return fr

    sport = dport = 0
    if proto in MIN_L4_HEADER and ident is not None and (non_first_frag or more):
        fr.frag = (proto, src, dst, ident, not non_first_frag)
    if not non_first_frag and proto in MIN_L4_HEADER:
        short = l4_off + MIN_L4_HEADER[proto] > cap_len
        if short and proto == PROTO_SCTP:
            fr.unmatched = f"{L4_DISSECTOR[proto]}-header-truncated"
            return fr
        if short or l4_off + MIN_L4_HEADER[proto] > ip_end:
            fr.note = f"{L4_DISSECTOR[proto]} header cut short: keyed with ports 0"
            fr.key = (proto, src, 0, dst, 0)
            return fr
        want = L4_DISSECTOR[proto]
        if nxt_el is None or nxt_el.get("name") != want or _int(nxt_el.get("pos")) != l4_off:
            raise RuntimeError(
                f"frame {fr.number}: expected {want} at offset {l4_off}, tshark gave "
                f"{None if nxt_el is None else (nxt_el.get('name'), nxt_el.get('pos'))}"
            )
        lf = _fields(nxt_el)
        try:
            sport = _int(lf[f"{want}.srcport"].get("show"))
            dport = _int(lf[f"{want}.dstport"].get("show"))
        except (KeyError, ValueError):
            raise RuntimeError(f"frame {fr.number}: tshark gave no {want} ports") from None
        if any(el.get("name") == "_ws.malformed" for el in nxt_el.iter()):
            fr.note = f"tshark marks the {want} layer malformed (header captured; keyed)"
    fr.key = (proto, src, sport, dst, dport)
    return fr


def run_tshark(pcap: Path):
    cmd = ["tshark", "-n", "-r", str(pcap), "-T", "pdml"]
    for pref in TSHARK_PREFS:
        cmd += ["-o", pref]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    frames: list[Frame] = []
    for _event, elem in ET.iterparse(proc.stdout, events=("end",)):
        if elem.tag == "packet":
            frames.append(key_frame(elem))
            elem.clear()
    assign_fragments(frames)
    err = proc.stderr.read().decode(errors="replace")
    rc = proc.wait()
    err_lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("Running as user")]
    if rc != 0 or err_lines:
        raise RuntimeError(f"tshark failed on {pcap.name} (rc={rc}): {' | '.join(err_lines)}")
    return frames


def assign_fragments(frames: list[Frame]) -> None:
    """Give non-first fragments of TCP/UDP/SCTP their datagram's first fragment's ports."""
    firsts: dict[tuple, list[Frame]] = defaultdict(list)
    for fr in frames:
        if fr.frag and fr.frag[4] and fr.key is not None:
            firsts[fr.frag[:4]].append(fr)
    for fr in frames:
        if not fr.frag or fr.frag[4] or fr.key is None:
            continue
        cands = firsts.get(fr.frag[:4], [])
        before = [c for c in cands if c.number < fr.number]
        first = before[-1] if before else (cands[0] if cands else None)
        if first is None:
            fr.key = None
            fr.unmatched = "fragment-without-first"
            continue
        proto, src, sport, dst, dport = first.key
        fr.key = (proto, src, sport, dst, dport)


def addr_str(b: bytes) -> str:
    return str(ipaddress.ip_address(b))


def build_table(frames: list[Frame]):
    table: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    unmatched: Counter[str] = Counter()
    for fr in frames:
        if fr.key is None:
            unmatched[fr.unmatched or "?"] += 1
            continue
        proto, src, sport, dst, dport = fr.key
        if (src, sport) <= (dst, dport):
            k, forward = (proto, src, sport, dst, dport), True
        else:
            k, forward = (proto, dst, dport, src, sport), False
        row = table[k]
        if forward:
            row[0] += 1
            row[1] += fr.cap_len
        else:
            row[2] += 1
            row[3] += fr.cap_len
    return table, unmatched


def sort_key(k: tuple):
    proto, a, ap, b, bp = k
    return (len(a), a, ap, b, bp, proto)


def write_tsv(path: Path, pcap_name: str, frames: list[Frame], version: str) -> tuple[int, int]:
    table, unmatched = build_table(frames)
    lines = ["\t".join(HEADER)]
    for k in sorted(table, key=sort_key):
        proto, a, ap, b, bp = k
        lines.append("\t".join(map(str, [proto, addr_str(a), ap, addr_str(b), bp, *table[k]])))
    n_unm = sum(unmatched.values())
    lines.append(f"# source {pcap_name}; {version}; prefs {' '.join(TSHARK_PREFS)}")
    lines.append(f"# frames {len(frames)}")
    lines.append(f"# flows {len(table)}")
    for reason in sorted(unmatched):
        lines.append(f"# unmatched_{reason} {unmatched[reason]}")
    notes = [fr for fr in frames if fr.note]
    for fr in notes:
        lines.append(f"# note frame {fr.number}: {fr.note}")
    lines.append(f"# unmatched {n_unm}")
    path.write_text("\n".join(lines) + "\n")
    return len(table), n_unm


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pcaps", default=os.environ.get("FLOWSCOPE_PCAPS", str(root.parent / "shared" / "pcaps")),
                    help="directory of captures (default: ../shared/pcaps beside the repo)")
    ap.add_argument("--out", default=str(root / "tests" / "expected"), help="output directory")
    args = ap.parse_args(argv)

    pcaps = Path(args.pcaps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    version = tshark_version()
    captures = sorted(p for p in pcaps.iterdir() if p.is_file() and p.name.endswith(CAPTURE_SUFFIXES))
    if not captures:
        print(f"no captures in {pcaps}", file=sys.stderr)
        return 1
    for pcap in captures:
        why = skip_reason(pcap.name)
        if why:
            print(f"skip  {pcap.name}: {why}")
            continue
        frames = run_tshark(pcap)
        n_flows, n_unm = write_tsv(out / f"{pcap.name}.keys.tsv", pcap.name, frames, version)
        print(f"wrote {pcap.name}.keys.tsv: {len(frames)} frames, {n_flows} keys, {n_unm} unmatched")
    return 0


if __name__ == "__main__":
    sys.exit(main())
