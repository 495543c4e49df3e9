"""Zeek conn.log writers: Zeek's TSV log format and its JSON form.

Records come from a tracker made with ``FlowTracker(..., zeek=True)``: their
``zeek`` words and ``zhist`` letters (see ``flowscope._kernels.zeek``) give
Zeek's originator, endpoint states and history; packets, durations and
addresses come from the flowscope record itself. ``conn_record`` turns one
Ended record into the conn.log fields as Python values (for scripts and tests);
the writers format whole batches of records into bytes with the numba kernel
``flowscope._kernels.connout.format_zeek``, which derives the same fields.

Fields that need Zeek's application analyzers or site configuration are
unset: ``service``, ``local_orig``, ``local_resp``. ``tunnel_parents`` holds the
uids of an inner flow's outer flows (docs/tunnels.md).
``missed_bytes`` is 0: content gaps are not measured (no stream reassembly).
See docs/zeek-compat.md.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from typing import IO, Optional

import numpy as np

from .. import layout
from .. import layout as Z  # Z_*, EP_*, TCP_*: the Zeek-style words of Ended records
from ..community_id import community_id_v1, icmp_port_equivalents
from ..keys import mac_str
from .._kernels.connout import MAX_LINE, ZEEK_FIELDS, ZEEK_PROTO_NAMES, format_zeek
from .common import TCPPERF_COUNTS, KernelTextWriter, dns_fields, drop_fields, tcp_rtts

#: The conn.log fields, in order (extension fields documented in docs/zeek-compat.md):
#: context as Zeek's policy scripts conn/vlan-logging and conn/mac-logging add it, TCP
#: handshake times and loss signals (TCP only), the flow's first DNS query and its response
#: (as Zeek's dns.log names them, with a "dns_" prefix) and kernel drops (live only).
FIELDS = ZEEK_FIELDS
#: Extension fields (TCP only; docs/zeek-compat.md): handshake times, loss signals.
TCPPERF_FIELDS = FIELDS[FIELDS.index("tcp_rtt"):FIELDS.index("dns_query")]
TYPES = ("time", "string", "addr", "port", "addr", "port", "enum", "string", "interval",
         "count", "count", "string", "bool", "bool", "count", "string", "count", "count",
         "count", "count", "set[string]", "string", "int", "int", "string", "string",
         "interval", "interval", "interval", *("count",) * 8,
         "string", "count", "string", "count", "string", "count", "interval",
         "count", "count", "string")
#: The extension fields (unset when the flow carried no DNS / had no kernel drops).
DNS_FIELDS = FIELDS[-10:-3]
DROP_FIELDS = FIELDS[-3:]

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_U32 = 0xFFFFFFFF
_RSTOS0_EXCLUDED = set("HAFGIQ")


def make_uid(flow_id: int, started_ns: int) -> str:
    """Zeek-looking connection uid: ``C`` + 17 base62 digits of a hash of flow id and start."""
    h = int.from_bytes(hashlib.blake2b(f"{flow_id}:{started_ns}".encode(), digest_size=12).digest(),
                       "big")
    out = []
    for _ in range(17):
        h, r = divmod(h, 62)
        out.append(_B62[r])
    return "C" + "".join(out)


def tcp_endpoint_size(zw, side: int) -> int:
    """Payload bytes of one endpoint from its sequence words (Zeek's TCP_Endpoint::Size)."""
    ep, pep = int(zw[Z.Z_EP0 + side]), int(zw[Z.Z_EP0 + 1 - side])
    seqw, ackw = int(zw[Z.Z_SEQ0 + side]), int(zw[Z.Z_ACK0 + side])
    start, last, ack = seqw & _U32, (seqw >> 32) & _U32, ackw & _U32
    state, prev = ep & Z.EP_STATE_MASK, (ep >> Z.EP_PREV_SHIFT) & 0xF
    if (prev == Z.TCP_SYN_SENT and state == Z.TCP_RESET
            and (pep & Z.EP_STATE_MASK) == Z.TCP_INACTIVE
            and ack not in (start, (start + 1) & _U32)):
        return 0
    size = max((last - start) & _U32, (ack - start) & _U32)
    if size > 0:
        size -= 1
    if (ep & Z.EP_FIN) and size > 0:
        size -= 1
    return size


def conn_state(proto: int, os_: int, rs: int, orig_size: int, resp_size: int, history: str,
               orig_pkts: int, resp_pkts: int) -> str:
    """Zeek's ``Conn::conn_state`` (base/protocols/conn/main.zeek)."""
    if proto == layout.IPPROTO_TCP:
        o_inactive = os_ in (Z.TCP_INACTIVE, Z.TCP_PARTIAL)
        r_inactive = rs in (Z.TCP_INACTIVE, Z.TCP_PARTIAL)
        if rs == Z.TCP_RESET:
            if os_ in (Z.TCP_SYN_SENT, Z.TCP_SYN_ACK_SENT) or (
                    os_ == Z.TCP_RESET and orig_size == 0 and resp_size == 0):
                return "REJ"
            return "RSTRH" if o_inactive else "RSTR"
        if os_ == Z.TCP_RESET:
            if r_inactive:
                return "RSTOS0" if _rstos0_history(history) else "OTH"
            return "RSTO"
        if rs == Z.TCP_CLOSED and os_ == Z.TCP_CLOSED:
            return "SF"
        if os_ == Z.TCP_CLOSED:
            return "SH" if r_inactive else "S2"
        if rs == Z.TCP_CLOSED:
            return "SHR" if o_inactive else "S3"
        if os_ == Z.TCP_SYN_SENT and rs == Z.TCP_INACTIVE:
            return "S0"
        if os_ == Z.TCP_ESTABLISHED and rs == Z.TCP_ESTABLISHED:
            return "S1"
        return "OTH"
    if proto == layout.IPPROTO_UDP:
        if orig_pkts:
            return "SF" if resp_pkts else "S0"
        return "SHR" if resp_pkts else "OTH"
    return "OTH"


def _rstos0_history(h: str) -> bool:
    """``/\\^?S[^HAFGIQ]*R.*/ == history`` (anchored)."""
    if h.startswith("^"):
        h = h[1:]
    if not h.startswith("S"):
        return False
    for c in h[1:]:
        if c == "R":
            return True
        if c in _RSTOS0_EXCLUDED:
            return False
    return False


def _addr(l3: int, hi: int, lo: int) -> tuple[str, bytes]:
    if l3 == layout.L3_IPV4:
        a = ipaddress.IPv4Address(lo & _U32)
    else:
        a = ipaddress.IPv6Address((hi << 64) | lo)
    return str(a), a.packed


def conn_record(rec) -> Optional[dict]:
    """The conn.log fields of one Ended record (None for non-IP keys).

    Unset fields are None. ``ts`` and ``duration`` are floats in seconds.
    """
    a_hi, a_lo, b_hi, b_lo, meta = (int(w) for w in rec["key"])
    kind, l3, proto, pa, pb = layout.unpack_meta(meta)
    if kind not in layout.FIVE_TUPLE_KINDS or l3 not in (layout.L3_IPV4, layout.L3_IPV6):
        return None
    ha, hb = _addr(l3, a_hi, a_lo), _addr(l3, b_hi, b_lo)
    # flowscope initiator / responder
    ends = [(ha, pa), (hb, pb)]
    if int(rec["init_rev"]):
        ends.reverse()
    zw = rec["zeek"]
    ctl = int(zw[Z.Z_CTL])
    o = ctl & Z.CTL_ORIG1  # flowscope side of Zeek's originator
    r = 1 - o
    (oh, op), (rh, rp) = ends[o], ends[r]
    pkts = [int(x) for x in rec["pkts"]]
    ipb = [int(zw[Z.Z_IP_BYTES0]), int(zw[Z.Z_IP_BYTES1])]
    hist = bytes(rec["zhist"][: int(rec["zhist_len"])]).decode("ascii")
    icmp = int(rec["icmp"])
    if proto in layout.ICMP_PROTOS:
        # Zeek's ICMP id: orig_p = type, resp_p = the paired type or the code
        itype, icode = ((icmp >> 8) & 0xFF, icmp & 0xFF) if icmp & layout.ICMP_VALID else (0, 0)
        sp, dp, _ = icmp_port_equivalents(proto, itype, icode)
        cid = community_id_v1(proto, oh[1], rh[1], itype, icode)
        op, rp = sp, dp
    else:
        cid = community_id_v1(proto, oh[1], rh[1], op, rp)
    if proto == layout.IPPROTO_TCP:
        sizes = [tcp_endpoint_size(zw, 0), tcp_endpoint_size(zw, 1)]
        os_ = int(zw[Z.Z_EP0 + o]) & Z.EP_STATE_MASK
        rs = int(zw[Z.Z_EP0 + r]) & Z.EP_STATE_MASK
    else:
        sizes = [int(zw[Z.Z_PAY0]), int(zw[Z.Z_PAY1])]
        os_ = rs = 0
    started = int(rec["started"])
    last = int(zw[Z.Z_LAST]) if ctl & Z.CTL_STARTED else int(rec["last_seen"])
    dur_ns = last - started
    state = conn_state(proto, os_, rs, sizes[o], sizes[r], hist, pkts[o], pkts[r])
    nv = int(rec["nvlan"])
    macs = [mac_str(int(rec["init_mac"])), mac_str(int(rec["resp_mac"]))] if int(
        rec["has_mac"]) else [None, None]
    ext = dict.fromkeys(TCPPERF_FIELDS)
    if proto == layout.IPPROTO_TCP:
        ext["tcp_rtt"], ext["tcp_rtt_resp"], ext["tcp_rtt_init"] = tcp_rtts(rec)
        for stem, field in TCPPERF_COUNTS:
            v = rec[field]
            ext[f"orig_{stem}"], ext[f"resp_{stem}"] = int(v[o]), int(v[r])
    return {
        "ts": started / 1e9,
        "uid": make_uid(int(rec["flow_id"]), started),
        "id.orig_h": oh[0], "id.orig_p": op, "id.resp_h": rh[0], "id.resp_p": rp,
        "proto": ZEEK_PROTO_NAMES.get(proto, "unknown_transport"),
        "service": None,
        "duration": dur_ns / 1e9 if dur_ns > 0 else None,
        "orig_bytes": sizes[o] if dur_ns > 0 else None,
        "resp_bytes": sizes[r] if dur_ns > 0 else None,
        "conn_state": state,
        "local_orig": None, "local_resp": None,
        "missed_bytes": 0,
        "history": hist if hist else None,
        "orig_pkts": pkts[o], "orig_ip_bytes": ipb[o],
        "resp_pkts": pkts[r], "resp_ip_bytes": ipb[r],
        "tunnel_parents": tunnel_parent_uids(rec),
        "community_id": cid,
        "vlan": int(rec["vlan"][0]) if nv > 0 else None,
        "inner_vlan": int(rec["vlan"][1]) if nv > 1 else None,
        "orig_l2_addr": macs[o], "resp_l2_addr": macs[r],
        **ext,
        **dict.fromkeys(DNS_FIELDS),
        **dns_fields(rec),
        **dict.fromkeys(DROP_FIELDS),
        **_zeek_drops(rec, o),
    }


def tunnel_parent_uids(rec) -> Optional[list]:
    """The uids of the outer flows of an inner flow (sorted; None when not an inner flow)."""
    if "tun" not in rec.dtype.names or int(rec["tun"]) == 0:
        return None
    uids = sorted(make_uid(int(pid), int(st))
                  for pid, st in zip(rec["tun_parent"], rec["tun_parent_started"]) if pid >= 0)
    return uids or None


def _zeek_drops(rec, o: int) -> dict:
    """Kernel drops by Zeek's originator / responder (``o``: flowscope side of the
    originator)."""
    d = drop_fields(rec)
    if not d:
        return {}
    by_side = (d["init_drops"], d["resp_drops"])
    return {"orig_drops": by_side[o], "resp_drops": by_side[1 - o],
            "drop_reason": d["drop_reason"]}


def _zeek_time(t: float) -> str:
    return time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(t))


class ZeekTsvWriter(KernelTextWriter):
    """Writes Ended records as a Zeek conn.log in Zeek's TSV format (zeek-cut, zat).

    The lines are formatted by ``flowscope._kernels.connout.format_zeek``."""

    ENDED_ONLY = True
    NEEDS_ZEEK = True

    def __init__(self, out: IO[str]) -> None:
        super().__init__(out, MAX_LINE)
        self._header = False
        # a RotatingFile: every file it opens gets its own header, and #close when it closes
        self._rotating = hasattr(out, "on_open")
        if self._rotating:
            out.on_open = lambda stream: self._write_header()
            out.on_close = lambda stream: stream.write(f"#close\t{_zeek_time(time.time())}\n")

    def _write_header(self) -> None:
        self.out.write("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n"
                       "#unset_field\t-\n#path\tconn\n"
                       f"#open\t{_zeek_time(time.time())}\n"
                       "#fields\t" + "\t".join(FIELDS) + "\n"
                       "#types\t" + "\t".join(TYPES) + "\n")
        self._header = True

    def _format(self, recs, buf):
        return format_zeek(recs, buf, False, self._work, *self._reasons)

    def write_records(self, recs: np.ndarray) -> None:
        if not self._header:
            self._write_header()
        self._write(recs)

    def flush(self) -> None:
        """Hand everything written so far to the operating system."""
        self.out.flush()

    def close(self, summary=None) -> None:
        if not self._header:
            self._write_header()
        if not self._rotating:  # a RotatingFile writes #close itself when it is closed
            self.out.write(f"#close\t{_zeek_time(time.time())}\n")
        self.out.flush()


class ZeekJsonWriter(KernelTextWriter):
    """Writes Ended records as Zeek's JSON conn.log: one object per line, unset fields left out.

    The lines are formatted by ``flowscope._kernels.connout.format_zeek``."""

    ENDED_ONLY = True
    NEEDS_ZEEK = True

    def __init__(self, out: IO[str]) -> None:
        super().__init__(out, MAX_LINE)

    def _format(self, recs, buf):
        return format_zeek(recs, buf, True, self._work, *self._reasons)

    def write_records(self, recs: np.ndarray) -> None:
        self._write(recs)

    def flush(self) -> None:
        """Hand everything written so far to the operating system."""
        self.out.flush()

    def close(self, summary=None) -> None:
        self.out.flush()
