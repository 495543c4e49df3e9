"""Shared formatting: packed keys to readable (proto, initiator, responder) endpoints."""

from __future__ import annotations

import ipaddress

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
