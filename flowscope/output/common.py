"""Shared formatting: packed keys to readable (proto, initiator, responder) endpoints."""

from __future__ import annotations

import io
import ipaddress

from functools import lru_cache

import numpy as np

from .. import layout
from ..keys import mac_str


class RecordFormatter:
    """Turns packed keys into readable endpoints, oriented initiator -> responder.

    Address strings are cached: a sensor sees the same hosts again and again.
    """

    def __init__(self) -> None:
        self._addr: dict[tuple[int, int, int], str] = {}

    def addr(self, l3: int, hi: int, lo: int) -> str:
        k = (l3, hi, lo)
        s = self._addr.get(k)
        if s is None:
            if l3 == layout.L3_IPV4:
                s = str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
            elif l3 == layout.L3_IPV6:
                s = str(ipaddress.IPv6Address((hi << 64) | lo))
            else:
                s = mac_str(lo)
            if len(self._addr) > 1 << 20:
                self._addr.clear()
            self._addr[k] = s
        return s

    def endpoints(self, key, init_rev: int):
        """``(extract_kind, proto, src, sport, dst, dport)``; src is the initiator.

        ``proto`` is the L4 protocol number (0 for IpPair/MacPair keys); ports
        are None where the key has none.
        """
        k0, k1, k2, k3, meta = key
        kind, l3, proto, pa, pb = layout.unpack_meta(meta)
        if kind == layout.EXTRACT_MAC_PAIR:
            a, b = self.addr(0, 0, k1), self.addr(0, 0, k3)
            proto, pa, pb = 0, None, None
        else:
            a, b = self.addr(l3, k0, k1), self.addr(l3, k2, k3)
            if kind == layout.EXTRACT_IP_PAIR:
                proto, pa, pb = 0, None, None
        if init_rev:
            return kind, proto, b, pb, a, pa
        return kind, proto, a, pa, b, pb



#: Loss signals of TCP Ended records: (name stem, EVENT_DTYPE field), [initiator, responder].
TCPPERF_COUNTS = (("retrans_pkts", "retrans_pkts"), ("retrans_bytes", "retrans_bytes"),
                  ("zero_win", "zero_win"), ("ooo_pkts", "ooo_pkts"))


def tcp_rtts(rec) -> tuple:
    """``(tcp_rtt, tcp_rtt_resp, tcp_rtt_init)`` of an Ended record, seconds or None."""
    resp, init = int(rec["rtt_resp"]), int(rec["rtt_init"])
    total = resp + init if resp >= 0 and init >= 0 else -1
    return tuple(None if v < 0 else v / 1e9 for v in (total, resp, init))


@lru_cache(maxsize=1)
def drop_reason_names() -> dict[int, str]:
    """The running kernel's ``enum skb_drop_reason`` names by value ({} without its BTF).
    Only live records carry kernel drops, and they come from this kernel."""
    from ..sensor.btf import drop_reason_names as names

    return names()


def drop_fields(rec) -> dict:
    """The kernel drop fields of a live Ended record by their JSON names (empty without
    drops): ``init_drops``, ``resp_drops``, ``drop_reason`` (its name, or the number)."""
    d0, d1 = int(rec["drops"][0]), int(rec["drops"][1])
    if not d0 and not d1:
        return {}
    code = int(rec["drop_reason"])
    return {"init_drops": d0, "resp_drops": d1,
            "drop_reason": drop_reason_names().get(code, str(code))}


def dns_fields(rec) -> dict:
    """The DNS fields of an Ended record (``EVENT_DTYPE``) by their JSON names, in order;
    empty when the flow carried no DNS. ``dns_rtt`` is in seconds (float)."""
    d = int(rec["dns"])
    out: dict = {}
    if d & layout.EVD_QUERY:
        out["dns_query"] = bytes(rec["dns_qname"][: int(rec["dns_qlen"])]).decode("ascii")
        qt = int(rec["dns_qtype"])
        out["dns_qtype"] = qt
        if qt in layout.DNS_QTYPE_NAMES:
            out["dns_qtype_name"] = layout.DNS_QTYPE_NAMES[qt]
    if d & layout.EVD_RESPONSE:
        rc = int(rec["dns_rcode"])
        out["dns_rcode"] = rc
        if rc < len(layout.DNS_RCODE_NAMES):
            out["dns_rcode_name"] = layout.DNS_RCODE_NAMES[rc]
        out["dns_answers"] = int(rec["dns_answers"])
    if d & layout.EVD_RTT:
        out["dns_rtt"] = int(rec["dns_rtt"]) / layout.NS_PER_S
    return out


class ByteSink:
    """Bytes to a text stream: to its binary layer when it has one (after flushing the text
    layer), else decoded as ASCII."""

    def __init__(self, out) -> None:
        self.out = out
        self.raw = getattr(out, "buffer", None) if isinstance(out, io.TextIOWrapper) else None

    def write(self, data: bytes) -> None:
        if self.raw is not None:
            self.out.flush()
            self.raw.write(data)
        else:
            self.out.write(data.decode("ascii"))


class KernelTextWriter:
    """Base of the writers whose text a numba kernel formats into a byte buffer.

    ``_format(recs, buf)`` (the subclass) returns ``(done, nbytes, lines, skipped)``; the
    bytes go to the binary layer below a text stream when there is one, else as ASCII
    text. Kernel drop reason names are read once, from the first batch with drops.
    """

    def __init__(self, out, max_line: int, buffer_bytes: int = 1 << 20) -> None:
        from .._kernels.connout import WORK_WORDS
        from .._kernels.textout import reason_table

        self.out = out
        self.lines = 0
        self.skipped = 0
        self._buf = np.empty(max(buffer_bytes, 4 * max_line), dtype=np.uint8)
        self._work = np.zeros(WORK_WORDS, dtype=np.uint64)
        self._sink = ByteSink(out)
        self._reasons = reason_table({})
        self._reasons_loaded = False

    def _emit(self, n: int) -> None:
        if n:
            self._sink.write(self._buf[:n].tobytes())

    def _format(self, recs: np.ndarray, buf: np.ndarray):
        raise NotImplementedError

    def _write(self, recs: np.ndarray) -> None:
        from .._kernels.textout import reason_table

        total = recs.shape[0]
        if not self._reasons_loaded and total and recs["drops"].any():
            # live records with kernel drops: the running kernel's reason names, read once
            self._reasons = reason_table(drop_reason_names())
            self._reasons_loaded = True
        start = 0
        while start < total:
            done, n, lines, skipped = self._format(recs[start:], self._buf)
            self._emit(n)
            self.lines += lines
            self.skipped += skipped
            start += done
