"""Terminal table: one line per ended flow (under 80 columns), a summary at the end."""

from __future__ import annotations

from typing import IO

import numpy as np

from .. import layout
from ..layout import PORT_PROTOS, proto_slug
from .common import RecordFormatter

_REASON_SHORT = ["fin", "rst", "idle", "evict", "end"]
HEADER = f"{'PROTO':<5} {'INITIATOR':<21} {'RESPONDER':<21} {'PKTS':>6} {'BYTES':>7} {'END':<5} HIST"


def _ep(addr: str, port) -> str:
    if port is None:
        s = addr
    elif ":" in addr:
        s = f"[{addr}]:{port}"
    else:
        s = f"{addr}:{port}"
    if len(s) > 21:  # keep the port, shorten the middle of the address
        s = s[:9] + "~" + s[-11:]
    return s


def human(n: int) -> str:
    for unit in ("", "k", "M", "G", "T"):
        if n < 10_000:
            return f"{n}{unit}"
        n //= 1000
    return f"{n}P"


class TableWriter:
    """Readable output for terminals; only Ended events are listed."""

    ENDED_ONLY = True

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.fmt = RecordFormatter()
        self.lines = 0
        self._header_done = False

    def write_records(self, recs: np.ndarray) -> None:
        ended = recs[recs["kind"] == layout.EV_ENDED]
        if ended.shape[0] == 0:
            return
        if not self._header_done:
            self.out.write(HEADER + "\n")
            self._header_done = True
        lines = []
        for r in ended:
            kind, proto, src, sport, dst, dport = self.fmt.endpoints(r["key"].tolist(),
                                                                     int(r["init_rev"]))
            pr = "-" if kind in (layout.EXTRACT_IP_PAIR, layout.EXTRACT_MAC_PAIR) else proto_slug(proto)
            if proto not in PORT_PROTOS:  # ICMP and others: no ports to show
                sport = dport = None
            hist = r["history"][: r["hist_len"]].tobytes().decode("ascii")
            pk = int(r["pkts"][0] + r["pkts"][1])
            by = int(r["bytes"][0] + r["bytes"][1])
            lines.append(
                f"{pr:<5} {_ep(src, sport):<21} {_ep(dst, dport):<21} {human(pk):>6} "
                f"{human(by):>7} {_REASON_SHORT[r['reason']]:<5} {hist[:10]}\n"
            )
        self.out.write("".join(lines))
        self.lines += len(lines)

    def flush(self) -> None:
        """Hand everything written so far to the operating system."""
        self.out.flush()

    def close(self, summary: dict | None = None) -> None:
        if summary:
            self.out.write(format_summary(summary) + "\n")
        self.out.flush()


def summary_of(stats, files: int = 0) -> dict:
    """The figures of the table's closing lines, from a ``TrackerStats``."""
    return {
        "files": files,
        "packets": (stats.packets_matched + stats.packets_unmatched + stats.packets_filtered
                    + stats.packets_sampled_out - stats.packets_decapsulated),
        "unmatched": stats.packets_unmatched, "flows": stats.flows_created,
        "fin": stats.ended_fin, "rst": stats.ended_rst, "idle": stats.ended_idle,
        "evicted": stats.flows_evicted, "shutdown": stats.ended_shutdown,
        "fragments_keyed": stats.fragments_keyed,
        "fragments_orphaned": stats.fragments_orphaned, "truncated_l4": stats.truncated_l4,
        "filtered": stats.packets_filtered, "sampled_out": stats.packets_sampled_out,
        "decapsulated": stats.packets_decapsulated,
    }


def format_summary(s: dict) -> str:
    """Lines under 80 columns: what was read, then how the flows ended; a third line
    for fragments and cut-short TCP/UDP headers, and one for the packets of flows the filter
    or the sampler left out, when there were any."""
    source = f" in {s['files']} file(s)" if s.get("files") else ""
    text = (
        f"{s['packets']} packets ({s['unmatched']} unmatched){source}, {s['flows']} flows\n"
        f"ended: {s['fin']} fin, {s['rst']} rst, {s['idle']} idle, {s['evicted']} evicted, "
        f"{s['shutdown']} still open at the end"
    )
    fk, fo, tl = (s.get("fragments_keyed", 0), s.get("fragments_orphaned", 0),
                  s.get("truncated_l4", 0))
    if fk or fo or tl:
        text += (f"\nfragments: {fk} in their datagram's flow, {fo} orphaned (unmatched); "
                 f"{tl} cut-short L4")
    fl, so = s.get("filtered", 0), s.get("sampled_out", 0)
    if fl or so:
        text += f"\nnot tracked: {fl} packets filtered, {so} sampled out"
    if s.get("decapsulated"):
        text += f"\ntunnels: {s['decapsulated']} decapsulated packets in inner flows"
    return text
