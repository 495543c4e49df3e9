"""IPFIX exporter: ended flows as RFC 7011 IPFIX biflow records over UDP.

Each ended flow becomes one data record of a bidirectional flow (RFC 5103):
the forward direction is the initiator's (source = initiator), and the
responder's packets, octets and TCP flags go in reverse information elements
(the same element ids under Private Enterprise Number 29305). IPv4 and IPv6
flows use two templates (ids 256 and 257). With ``records="uniflow"`` each
direction of a flow is a record of its own instead (templates 258 and 259),
for collectors that drop reverse TCP flags. Messages stay under ``mtu`` bytes
(1400 by default, so an IP+UDP datagram fits a 1500-byte link); over UDP the
templates are re-sent every ``template_refresh_s`` seconds or every
``template_refresh_msgs`` messages, whichever comes first (RFC 7011 8.4).
With flow sampling on (``sample_rate`` > 1), every template ends with
samplingFlowInterval (IE 396, RFC 7014: one flow in that many was selected) and
every record carries the rate. The template and element list is in
``docs/output-formats-eve-ipfix.md``.

Records are packed with numpy: one structured big-endian array per batch and
per address family, no Python object per flow.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Callable

import numpy as np

from .. import layout
from ..config import IPFIX_RECORDS

IPFIX_VERSION = 10
SET_ID_TEMPLATE = 2
#: RFC 5103 reverse information elements: the forward element id under this PEN.
REVERSE_PEN = 29305
TEMPLATE_ID_V4 = 256
TEMPLATE_ID_V6 = 257
MSG_HEADER = struct.Struct("!HHIII")  # version, length, export time, sequence, domain
SET_HEADER = struct.Struct("!HH")  # set id, length

#: flowEndReason (RFC 7011 / IANA IE 136) per flowscope end reason (layout.END_*).
#: 1 idle timeout, 2 active timeout (the interim records of ``active_timeout``,
#: ``FLOW_END_ACTIVE``), 3 end of flow detected, 4 forced end, 5 lack of resources.
FLOW_END_REASONS = {
    layout.END_IDLE: 1,
    layout.END_FIN: 3,
    layout.END_RST: 3,
    layout.END_SHUTDOWN: 4,
    layout.END_EVICTED: 5,
}
FLOW_END_ACTIVE = 2

# (field name, information element id, enterprise number or 0, numpy type)
_COMMON_HEAD = [
    ("sport", 7, 0, ">u2"),  # sourceTransportPort
    ("dport", 11, 0, ">u2"),  # destinationTransportPort
    ("proto", 4, 0, "u1"),  # protocolIdentifier
]
# The reverse tcpControlBits comes BEFORE the forward one. nfdump (1.7.x) maps
# only the reverse counters (ids 1, 2, 85, 86 under PEN 29305) to its "out"
# fields; any other reverse element is stored as its forward element, and a
# later element of a record overwrites an earlier one. Sent after the forward
# flags, the responder's flags would replace the initiator's in nfdump; sent
# first, they are overwritten by the initiator's. RFC 5103 decoders (tshark,
# IPFIX libraries) read elements by id and are indifferent to the order.
_COMMON_TAIL = [
    ("rev_tcp_flags", 6, REVERSE_PEN, ">u2"),  # reverse tcpControlBits (first: see above)
    ("tcp_flags", 6, 0, ">u2"),  # tcpControlBits (RFC 7125: 2 octets)
    ("pkts", 2, 0, ">u8"),  # packetDeltaCount
    ("octets", 1, 0, ">u8"),  # octetDeltaCount
    ("start_ms", 152, 0, ">u8"),  # flowStartMilliseconds
    ("end_ms", 153, 0, ">u8"),  # flowEndMilliseconds
    ("end_reason", 136, 0, "u1"),  # flowEndReason
    ("rev_pkts", 2, REVERSE_PEN, ">u8"),  # reverse packetDeltaCount
    ("rev_octets", 1, REVERSE_PEN, ">u8"),  # reverse octetDeltaCount
]
# Context of the flow's first packet, at the end of every template.
_CONTEXT = [
    ("iface", 10, 0, ">u4"),  # ingressInterface: the iface value (live: -i position)
    ("vlan", 58, 0, ">u2"),  # vlanId: the outer VLAN id (0: untagged)
    ("vlan_inner", 245, 0, ">u2"),  # dot1qCustomerVlanId: the inner (QinQ) VLAN id, or 0
    ("smac", 56, 0, "V6"),  # sourceMacAddress: the initiator's (the record's source)
    ("dmac", 80, 0, "V6"),  # destinationMacAddress: the responder's
]
# Kernel drops of the flow's packets (live; 0 offline): droppedPacketDeltaCount and its
# reverse, the reverse first for nfdump's sake (see _COMMON_TAIL).
_DROPS = [
    ("rev_drops", 133, REVERSE_PEN, ">u8"),  # reverse droppedPacketDeltaCount
    ("drops", 133, 0, ">u8"),  # droppedPacketDeltaCount
]
_V4_HEAD = [("src", 8, 0, ">u4"), ("dst", 12, 0, ">u4")]  # source/destinationIPv4Address
_V6_HEAD = [("src", 27, 0, "V16"), ("dst", 28, 0, "V16")]  # source/destinationIPv6Address
_ICMP_V4 = [("icmp", 32, 0, ">u2")]  # icmpTypeCodeIPv4
_ICMP_V6 = [("icmp", 139, 0, ">u2")]  # icmpTypeCodeIPv6
TEMPLATE_V4 = _V4_HEAD + _COMMON_HEAD + _ICMP_V4 + _COMMON_TAIL + _CONTEXT + _DROPS
TEMPLATE_V6 = _V6_HEAD + _COMMON_HEAD + _ICMP_V6 + _COMMON_TAIL + _CONTEXT + _DROPS

# Uniflow records (``records="uniflow"``): one record per direction that sent
# packets, source = the sender of that direction. biflowDirection (RFC 5103
# 6.3) tells the two apart: 1 initiator (source is the initiator), 2
# reverseInitiator (destination is the initiator).
TEMPLATE_ID_UNI_V4 = 258
TEMPLATE_ID_UNI_V6 = 259
BIFLOW_DIR_INITIATOR = 1
BIFLOW_DIR_REVERSE_INITIATOR = 2
_UNI_TAIL = [f for f in _COMMON_TAIL if f[2] != REVERSE_PEN] + [
    ("direction", 239, 0, "u1"),  # biflowDirection
]
_UNI_DROPS = [f for f in _DROPS if f[2] != REVERSE_PEN]
TEMPLATE_UNI_V4 = _V4_HEAD + _COMMON_HEAD + _ICMP_V4 + _UNI_TAIL + _CONTEXT + _UNI_DROPS
TEMPLATE_UNI_V6 = _V6_HEAD + _COMMON_HEAD + _ICMP_V6 + _UNI_TAIL + _CONTEXT + _UNI_DROPS


#: Appended to every template when flows are sampled (1 in N): samplingFlowInterval.
SAMPLING = [("sampling", 396, 0, ">u8")]


def _dtype(fields) -> np.dtype:
    return np.dtype([(name, t) for name, _ie, _pen, t in fields])  # packed: no alignment


REC_V4 = _dtype(TEMPLATE_V4)
REC_V6 = _dtype(TEMPLATE_V6)
REC_UNI_V4 = _dtype(TEMPLATE_UNI_V4)
REC_UNI_V6 = _dtype(TEMPLATE_UNI_V6)
REC_S_V4 = _dtype(TEMPLATE_V4 + SAMPLING)
REC_S_V6 = _dtype(TEMPLATE_V6 + SAMPLING)
REC_S_UNI_V4 = _dtype(TEMPLATE_UNI_V4 + SAMPLING)
REC_S_UNI_V6 = _dtype(TEMPLATE_UNI_V6 + SAMPLING)
_UNI_OF = {REC_V4: REC_UNI_V4, REC_V6: REC_UNI_V6, REC_S_V4: REC_S_UNI_V4,
           REC_S_V6: REC_S_UNI_V6}

#: records mode -> ((template id, fields) for IPv4, same for IPv6)
TEMPLATES = dict(zip(IPFIX_RECORDS, (
    ((TEMPLATE_ID_V4, TEMPLATE_V4), (TEMPLATE_ID_V6, TEMPLATE_V6)),  # biflow
    ((TEMPLATE_ID_UNI_V4, TEMPLATE_UNI_V4), (TEMPLATE_ID_UNI_V6, TEMPLATE_UNI_V6)),  # uniflow
)))


def templates(records: str, sampled: bool = False):
    """``((template id, fields) for IPv4, same for IPv6)`` of a records mode."""
    extra = SAMPLING if sampled else []
    return tuple((tid, fields + extra) for tid, fields in TEMPLATES[records])


def template_record(template_id: int, fields) -> bytes:
    """The bytes of one template record (RFC 7011 3.4.1)."""
    out = [struct.pack("!HH", template_id, len(fields))]
    for name, ie, pen, t in fields:
        size = np.dtype(t).itemsize
        if pen:
            out.append(struct.pack("!HHI", ie | 0x8000, size, pen))
        else:
            out.append(struct.pack("!HH", ie, size))
    return b"".join(out)


def template_set(records: str = "biflow", sampled: bool = False) -> bytes:
    """A template set holding the IPv4 and the IPv6 template of a records mode."""
    body = b"".join(template_record(tid, fields) for tid, fields in templates(records, sampled))
    return SET_HEADER.pack(SET_ID_TEMPLATE, SET_HEADER.size + len(body)) + body


_REASON_LUT = np.zeros(256, dtype=np.uint8)
for _r, _v in FLOW_END_REASONS.items():
    _REASON_LUT[_r] = _v


def pack_records(ended: np.ndarray, sampled: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Pack Ended records into IPFIX data records: ``(ipv4_records, ipv6_records)``.

    Parameters
    ----------
    ended : ndarray of layout.EVENT_DTYPE
        Ended and Update records only. Records whose key is not IPv4/IPv6
        (MacPair) are left out. Counters are deltas: what the flow's earlier
        Update records did not report (all of it without an active timeout);
        Update records get flowEndReason 2 (active timeout).
    sampled : bool
        Add samplingFlowInterval (each record's ``sample_rate``).

    Returns
    -------
    tuple of ndarray
        Arrays of ``REC_V4`` and ``REC_V6`` (``REC_S_V4``, ``REC_S_V6`` when
        ``sampled``); ``.tobytes()`` of a slice is the body of a data set.
    """
    key = ended["key"]
    kind, l3, proto, port_a, port_b = layout.unpack_meta(key[:, 4])
    ip = kind != layout.EXTRACT_MAC_PAIR
    rev = ended["init_rev"] != 0
    proto = proto.astype(np.uint8)
    port_a = port_a.astype(np.uint16)
    port_b = port_b.astype(np.uint16)
    icmp = ended["icmp"]
    icmp_tc = np.where((icmp & layout.ICMP_VALID) != 0, icmp & 0xFFFF, 0).astype(np.uint16)
    out = []
    dts = (REC_S_V4, REC_S_V6) if sampled else (REC_V4, REC_V6)
    for fam, dt in ((layout.L3_IPV4, dts[0]), (layout.L3_IPV6, dts[1])):
        m = ip & (l3 == fam)
        n = int(m.sum())
        r = np.zeros(n, dtype=dt)
        if n:
            k = key[m]
            rv = rev[m]
            if fam == layout.L3_IPV4:
                a = (k[:, 1] & np.uint64(0xFFFFFFFF)).astype(np.uint32)
                b = (k[:, 3] & np.uint64(0xFFFFFFFF)).astype(np.uint32)
                r["src"] = np.where(rv, b, a)
                r["dst"] = np.where(rv, a, b)
            else:
                words = np.empty((n, 4), dtype=">u8")
                words[:, 0] = np.where(rv, k[:, 2], k[:, 0])
                words[:, 1] = np.where(rv, k[:, 3], k[:, 1])
                words[:, 2] = np.where(rv, k[:, 0], k[:, 2])
                words[:, 3] = np.where(rv, k[:, 1], k[:, 3])
                raw = words.view("V16").reshape(n, 2)
                r["src"] = raw[:, 0]
                r["dst"] = raw[:, 1]
            pa, pb = port_a[m], port_b[m]
            r["sport"] = np.where(rv, pb, pa)
            r["dport"] = np.where(rv, pa, pb)
            r["proto"] = proto[m]
            r["icmp"] = icmp_tc[m]
            e = ended[m]
            r["tcp_flags"] = e["flags_or"][:, 0]
            r["rev_tcp_flags"] = e["flags_or"][:, 1]
            r["pkts"] = e["pkts"][:, 0] - e["exported_pkts"][:, 0]
            r["rev_pkts"] = e["pkts"][:, 1] - e["exported_pkts"][:, 1]
            r["octets"] = e["bytes"][:, 0] - e["exported_bytes"][:, 0]
            r["rev_octets"] = e["bytes"][:, 1] - e["exported_bytes"][:, 1]
            r["start_ms"] = e["started"] // 1_000_000
            r["end_ms"] = e["last_seen"] // 1_000_000
            r["end_reason"] = np.where(e["kind"] == layout.EV_UPDATE, FLOW_END_ACTIVE,
                                       _REASON_LUT[e["reason"]])
            if sampled:
                r["sampling"] = np.maximum(e["sample_rate"], 1)
            r["iface"] = e["iface"]
            nv = e["nvlan"]
            r["vlan"] = np.where(nv > 0, e["vlan"][:, 0], 0)
            r["vlan_inner"] = np.where(nv > 1, e["vlan"][:, 1], 0)
            r["smac"] = _mac6(e["init_mac"])
            r["dmac"] = _mac6(e["resp_mac"])
            # drops are reported once, on the Ended record (Updates carry 0): the deltas of a
            # flow's records still add up to its total
            upd = e["kind"] == layout.EV_UPDATE
            r["drops"] = np.where(upd, 0, e["drops"][:, 0])
            r["rev_drops"] = np.where(upd, 0, e["drops"][:, 1])
        out.append(r)
    return out[0], out[1]


def _mac6(macs: np.ndarray) -> np.ndarray:
    """48-bit MAC values (uint64) as 6-byte fields (``V6``), network order."""
    b = macs.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 2:]
    return np.ascontiguousarray(b).view("V6").ravel()


def to_uniflow(bi: np.ndarray) -> np.ndarray:
    """Split biflow records (``REC_V4`` or ``REC_V6``) into uniflow records.

    Each flow gives its initiator's record, then its responder's if the
    responder sent packets (``REC_UNI_V4`` / ``REC_UNI_V6``). The responder's
    record has source and destination swapped, the flow's start and end
    times, and icmpTypeCode 0 (only the first packet's type is known).
    """
    n = bi.shape[0]
    u = np.zeros(2 * n, dtype=_UNI_OF[bi.dtype])
    init, resp = u[0::2], u[1::2]
    names = ("proto", "start_ms", "end_ms", "end_reason", "iface", "vlan", "vlan_inner")
    for name in names + (("sampling",) if "sampling" in bi.dtype.names else ()):
        init[name] = bi[name]
        resp[name] = bi[name]
    for fwd, rev in (("src", "dst"), ("sport", "dport"), ("smac", "dmac")):
        init[fwd], init[rev] = bi[fwd], bi[rev]
        resp[fwd], resp[rev] = bi[rev], bi[fwd]
    init["icmp"] = bi["icmp"]
    for name in ("tcp_flags", "pkts", "octets", "drops"):
        init[name] = bi[name]
        resp[name] = bi["rev_" + name]
    init["direction"] = BIFLOW_DIR_INITIATOR
    resp["direction"] = BIFLOW_DIR_REVERSE_INITIATOR
    keep = np.ones(2 * n, dtype=bool)
    keep[1::2] = bi["rev_pkts"] != 0
    return u[keep]


class IpfixExporter:
    """Sends ended flows to an IPFIX collector over UDP (RFC 7011, biflows per RFC 5103).

    Parameters
    ----------
    host : str
        Collector address or name (IPv4 or IPv6).
    port : int
        Collector UDP port (4739 is IPFIX's registered port).
    observation_domain : int
        Observation Domain ID written in every message header.
    mtu : int
        Largest IPFIX message (UDP payload) in bytes; at least 512.
    template_refresh_s : float
        Re-send the templates when this many seconds have passed since they
        were last sent ...
    template_refresh_msgs : int
        ... or after this many messages, whichever comes first.
    clock : callable
        Returns the current time in seconds (export time, refresh timer).
    sample_rate : int
        Flow sampling rate (``sample_rate``); above 1 every record carries
        samplingFlowInterval.
    records : {"biflow", "uniflow"}
        ``"biflow"``: one RFC 5103 record per flow, the responder's counters
        and TCP flags in reverse elements. ``"uniflow"``: one record per
        direction (initiator's, then responder's if it sent packets), marked
        by biflowDirection; for collectors that keep no reverse TCP flags
        (nfdump 1.7 keeps only reverse packets and octets of a biflow;
        ``nfdump -b`` pairs uniflow records and shows the responder's flags).

    The templates go out in a message of their own when the exporter is
    created, then at the head of the next message whenever a refresh is due.
    Each ``write_records`` call sends its flows at once (full messages, then
    one for the rest). Send errors (no route, buffer full) are counted in
    ``send_errors`` and do not raise: a collector being away must not stop
    the sensor.

    Attributes
    ----------
    messages, records, bytes_sent, templates_sent, send_errors, skipped : int
    """

    def __init__(self, host: str, port: int, observation_domain: int = 0, mtu: int = 1400,
                 template_refresh_s: float = 60.0, template_refresh_msgs: int = 100,
                 clock: Callable[[], float] = time.time, records: str = "biflow",
                 sample_rate: int = 1) -> None:
        if int(mtu) < 512:
            raise ValueError("mtu must be >= 512")
        if not 0 < int(port) < 65536:
            raise ValueError("port must be 1..65535")
        if template_refresh_s <= 0 or int(template_refresh_msgs) < 1:
            raise ValueError("template refresh interval must be positive")
        if records not in TEMPLATES:
            raise ValueError(f"records must be one of {sorted(TEMPLATES)}, not {records!r}")
        info = socket.getaddrinfo(host, int(port), 0, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        family, _type, _proto, _name, addr = info[0]
        self.addr = addr
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.domain = int(observation_domain) & 0xFFFFFFFF
        self.mtu = int(mtu)
        self.refresh_s = float(template_refresh_s)
        self.refresh_msgs = int(template_refresh_msgs)
        self.clock = clock
        self.uniflow = records == "uniflow"
        self._tid_v4, self._tid_v6 = (tid for tid, _fields in TEMPLATES[records])
        self.sampled = int(sample_rate) > 1
        self._template_set = template_set(records, self.sampled)
        self.messages = 0
        self.records = 0
        self.bytes_sent = 0
        self.templates_sent = 0
        self.send_errors = 0
        self.skipped = 0
        self._tmpl_time = 0.0
        self._msgs_since_tmpl = 0
        self._closed = False
        self._send([], 0, True)

    # ---- message building ----------------------------------------------

    def _template_due(self) -> bool:
        return (self._msgs_since_tmpl >= self.refresh_msgs
                or self.clock() - self._tmpl_time >= self.refresh_s)

    def _send(self, sets: list[bytes], nrec: int, with_tmpl: bool) -> None:
        now = self.clock()
        if with_tmpl:
            sets = [self._template_set] + sets
        body = b"".join(sets)
        length = MSG_HEADER.size + len(body)
        head = MSG_HEADER.pack(IPFIX_VERSION, length, int(now) & 0xFFFFFFFF,
                               self.records & 0xFFFFFFFF, self.domain)
        try:
            self.sock.sendto(head + body, self.addr)
        except OSError:
            self.send_errors += 1
        # the sequence number counts records handed to the transport, sent or not
        self.records += nrec
        self.messages += 1
        self.bytes_sent += length
        if with_tmpl:
            self.templates_sent += 1
            self._tmpl_time = now
            self._msgs_since_tmpl = 0
        else:
            self._msgs_since_tmpl += 1

    def _send_family(self, recs: np.ndarray, template_id: int) -> None:
        size = recs.dtype.itemsize
        i, n = 0, recs.shape[0]
        while i < n:
            with_tmpl = self._template_due()
            room = self.mtu - MSG_HEADER.size - SET_HEADER.size
            if with_tmpl:
                room -= len(self._template_set)
            take = min(n - i, room // size)
            chunk = recs[i:i + take].tobytes()
            self._send([SET_HEADER.pack(template_id, SET_HEADER.size + len(chunk)) + chunk], take,
                       with_tmpl)
            i += take

    # ---- writer interface ------------------------------------------------

    def write_records(self, recs: np.ndarray) -> None:
        """Export the Ended (and Update) records of a batch of ``layout.EVENT_DTYPE``
        records."""
        if self._closed or recs.shape[0] == 0:
            return
        ended = recs[(recs["kind"] == layout.EV_ENDED) | (recs["kind"] == layout.EV_UPDATE)]
        if ended.shape[0] == 0:
            return
        v4, v6 = pack_records(ended, self.sampled)
        self.skipped += ended.shape[0] - v4.shape[0] - v6.shape[0]
        if self.uniflow:
            v4, v6 = to_uniflow(v4), to_uniflow(v6)
        self._send_family(v4, self._tid_v4)
        self._send_family(v6, self._tid_v6)

    def flush(self) -> None:
        """Nothing to do: every batch is sent as it is written."""

    def close(self, summary: dict | None = None) -> None:
        if not self._closed:
            self._closed = True
            self.sock.close()
