"""Plain-Python twins of the Zeek conn.log and EVE writers (flowscope._kernels.connout).

These are the writers' formatting code from before it moved into numba kernels: the tests
require the kernels to give the same bytes, and scripts/bench_formats.py times both.
"""

from __future__ import annotations

import json
import time

import numpy as np

from flowscope import layout
from flowscope.community_id import community_id_for_record
from flowscope.keys import mac_str
from flowscope.output.common import (
    TCPPERF_COUNTS, RecordFormatter, dns_fields, drop_fields, tcp_rtts,
)
from flowscope.output.eve import EveWriter, eve_flow_ids, eve_time
from flowscope.output.zeek import FIELDS, ZeekJsonWriter, ZeekTsvWriter, conn_record

EVE_PROTO_NAMES = {layout.IPPROTO_ICMP: "ICMP", layout.IPPROTO_TCP: "TCP",
                   layout.IPPROTO_UDP: "UDP", layout.IPPROTO_ICMPV6: "IPv6-ICMP",
                   layout.IPPROTO_SCTP: "SCTP"}

#: Suricata ``flow.reason`` per flowscope end reason (layout.END_*).
EVE_REASONS = {
    layout.END_FIN: "timeout",
    layout.END_RST: "timeout",
    layout.END_IDLE: "timeout",
    layout.END_EVICTED: "forced",
    layout.END_SHUTDOWN: "shutdown",
}

#: Suricata ``tcp.state`` per final flowscope state (None: left out).
#: FinWait / ClosingTcp depend on which side closed first; see _tcp_state.
EVE_TCP_STATES = {
    layout.ST_ACTIVE: None,
    layout.ST_SYN_SENT: "syn_sent",
    layout.ST_SYN_RECEIVED: "syn_recv",
    layout.ST_ESTABLISHED: "established",
    layout.ST_FIN_WAIT: "fin_wait1",
    layout.ST_CLOSING_TCP: "last_ack",
    layout.ST_CLOSED: "closed",
    layout.ST_RESET: "closed",
    layout.ST_ABORTED: "closed",
}

#: Suricata's EveTcpFlags order: only flags that were seen appear, as ``true``.
_FLAG_NAMES = ((layout.TH_SYN, "syn"), (layout.TH_FIN, "fin"), (layout.TH_RST, "rst"),
               (layout.TH_PSH, "psh"), (layout.TH_ACK, "ack"), (layout.TH_URG, "urg"),
               (layout.TH_ECE, "ecn"), (layout.TH_CWR, "cwr"))
_FLAG_JSON = [",".join(f'"{n}":true' for bit, n in _FLAG_NAMES if f & bit) for f in range(256)]

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _tcpperf(rec) -> str:
    """flowscope's extension fields of the ``tcp`` object: handshake times (seconds, left
    out when not measured) and loss signals to server (initiator) and to client."""
    out = []
    for name, v in zip(("tcp_rtt", "tcp_rtt_resp", "tcp_rtt_init"), tcp_rtts(rec)):
        if v is not None:
            out.append(f',"{name}":{v:.9f}')
    for stem, field in TCPPERF_COUNTS:
        ts, tc = (int(x) for x in rec[field])
        out.append(f',"{stem}_toserver":{ts},"{stem}_toclient":{tc}')
    return "".join(out)


def tunnel_json(rec) -> str:
    """``,"tunnel":{...}`` of an inner flow's Ended record (as in JSON Lines, docs/output.md)."""
    ttype, depth, key, seen, _changes = layout.unpack_tun(rec["tun"])
    parents = ",".join(str(int(p)) for p in rec["tun_parent"] if p >= 0)
    return (f',"tunnel":{{"type":"{layout.TUN_SLUGS.get(ttype, "other")}","depth":{depth},'
            f'"key":{key},"parents":[{parents}],"parents_seen":{seen}}}')


def eve_dns(rec) -> str:
    """The ``flowscope.dns`` extension object of an Ended record with DNS fields: the
    names of Suricata's ``dns`` event (``rrname``, ``rrtype``, ``rcode``) plus
    ``qtype`` (number), ``answers`` and ``rtt`` (seconds)."""
    f = dns_fields(rec)
    parts = []
    if "dns_query" in f:
        parts.append(f'"rrname":"{f["dns_query"]}"')
        parts.append(f'"rrtype":"{f.get("dns_qtype_name", f["dns_qtype"])}"')
        parts.append(f'"qtype":{f["dns_qtype"]}')
    if "dns_rcode" in f:
        parts.append(f'"rcode":"{f.get("dns_rcode_name", f["dns_rcode"])}"')
        parts.append(f'"answers":{f["dns_answers"]}')
    if "dns_rtt" in f:
        parts.append(f'"rtt":{f["dns_rtt"]:.9f}')
    return "{" + ",".join(parts) + "}"


def eve_flow_state(proto: int, to_state: int, pkts_tc: int) -> str:
    """Suricata's ``flow.state``: ``new``, ``established`` or ``closed``.

    TCP follows the session: closed after RST or a completed FIN exchange,
    established from the completed handshake through the FIN exchange (as
    Suricata's stream engine does up to LAST_ACK), new before that. A TCP
    flow picked up mid-stream (state Active) counts as established once both
    sides have sent, as with Suricata's ``stream.midstream: true``. Other
    protocols are established once the responder has sent a packet.
    """
    if proto == layout.IPPROTO_TCP:
        if to_state in (layout.ST_CLOSED, layout.ST_RESET, layout.ST_ABORTED):
            return "closed"
        if to_state in (layout.ST_ESTABLISHED, layout.ST_FIN_WAIT, layout.ST_CLOSING_TCP):
            return "established"
        if to_state == layout.ST_ACTIVE and pkts_tc > 0:
            return "established"
        return "new"
    return "established" if pkts_tc > 0 else "new"


def _tcp_state(to_state: int, flags_ts: int, flags_tc: int) -> str | None:
    st = EVE_TCP_STATES.get(to_state)
    if (to_state == layout.ST_FIN_WAIT and (flags_ts & layout.TH_FIN)
            and not (flags_tc & layout.TH_FIN)):
        # Suricata names states from the server's side: a client FIN is CLOSE_WAIT
        return "close_wait"
    return st



def _ended(recs: np.ndarray):
    if recs.shape[0] == 0:
        return
    for i in np.flatnonzero(recs["kind"] == layout.EV_ENDED):
        c = conn_record(recs[i])
        if c is not None:
            yield c



class NaiveZeekTsvWriter(ZeekTsvWriter):
    """Zeek TSV conn.log, formatted in Python."""

    @staticmethod
    def _fmt(name: str, v) -> str:
        if v is None:
            return "-"
        if name in ("ts", "duration", "tcp_rtt", "tcp_rtt_resp", "tcp_rtt_init", "dns_rtt"):
            return f"{v:.6f}"
        if isinstance(v, bool):
            return "T" if v else "F"
        if isinstance(v, str):
            return v if v else "(empty)"
        if isinstance(v, list):
            return ",".join(v) if v else "(empty)"
        return str(v)

    def write_records(self, recs: np.ndarray) -> None:
        if not self._header:
            self._write_header()
        lines = ["\t".join(self._fmt(k, c[k]) for k in FIELDS) + "\n" for c in _ended(recs)]
        self.out.write("".join(lines))
        self.lines += len(lines)


class NaiveZeekJsonWriter(ZeekJsonWriter):
    """Zeek JSON conn.log, formatted in Python."""

    def write_records(self, recs: np.ndarray) -> None:
        lines = []
        for c in _ended(recs):
            obj = {k: v for k, v in c.items() if v is not None}
            lines.append(json.dumps(obj, separators=(",", ":")) + "\n")
        self.out.write("".join(lines))
        self.lines += len(lines)


class NaiveEveWriter(EveWriter):
    """EVE ``flow`` records, formatted in Python."""

    def write_records(self, recs: np.ndarray) -> None:
        if recs.shape[0] == 0:
            return
        ended = recs[recs["kind"] == layout.EV_ENDED]
        if ended.shape[0] == 0:
            return
        fids = eve_flow_ids(ended["key"], ended["started"]).tolist()
        keys = ended["key"].tolist()
        revs = ended["init_rev"].tolist()
        tss = ended["ts"].tolist()
        pk = ended["pkts"].tolist()
        by = ended["bytes"].tolist()
        st = ended["started"].tolist()
        ls = ended["last_seen"].tolist()
        rs = ended["reason"].tolist()
        sta = ended["to_state"].tolist()
        fl = ended["flags_or"].tolist()
        icmp = ended["icmp"].tolist()
        ifcs = ended["iface"].tolist()
        nvl = ended["nvlan"].tolist()
        vls = ended["vlan"].tolist()
        macs = ended["has_mac"].tolist()
        imac = ended["init_mac"].tolist()
        rmac = ended["resp_mac"].tolist()
        names = self.iface_names
        tun = ended["tun"].tolist()
        dns = ended["dns"].tolist()
        drops = ended["drops"].any(axis=1).tolist()
        self.fmt = getattr(self, 'fmt', None) or RecordFormatter()
        lines = []
        for i in range(ended.shape[0]):
            kind, proto, src, sport, dst, dport = self.fmt.endpoints(keys[i], revs[i])
            if kind == layout.EXTRACT_MAC_PAIR:
                self.skipped += 1
                continue
            parts = [f'{{"timestamp":"{eve_time(tss[i])}","flow_id":{fids[i]},']
            # context as Suricata writes it: in_iface (live capture), vlan, ether
            if ifcs[i] < len(names) and names[ifcs[i]]:
                parts.append(f'"in_iface":{json.dumps(names[ifcs[i]])},')
            parts.append('"event_type":"flow",')
            if nvl[i]:
                parts.append('"vlan":[' + ",".join(map(str, vls[i][:min(nvl[i], 2)])) + "],")
            parts.append(f'"src_ip":"{src}"')
            five = kind in layout.FIVE_TUPLE_KINDS
            if five and proto in layout.PORT_PROTOS:
                parts.append(f',"src_port":{sport}')
            parts.append(f',"dest_ip":"{dst}"')
            if five and proto in layout.PORT_PROTOS:
                parts.append(f',"dest_port":{dport}')
            if five:
                parts.append(f',"proto":"{EVE_PROTO_NAMES.get(proto, str(proto))}"')
                if proto in layout.ICMP_PROTOS and icmp[i] & layout.ICMP_VALID:
                    parts.append(f',"icmp_type":{(icmp[i] >> 8) & 0xFF},'
                                 f'"icmp_code":{icmp[i] & 0xFF}')
            pts, ptc = pk[i]
            bts, btc = by[i]
            age = ls[i] // 1_000_000_000 - st[i] // 1_000_000_000
            parts.append(
                f',"flow":{{"pkts_toserver":{pts},"pkts_toclient":{ptc},'
                f'"bytes_toserver":{bts},"bytes_toclient":{btc},'
                f'"start":"{eve_time(st[i])}","end":"{eve_time(ls[i])}","age":{age},'
                f'"state":"{eve_flow_state(proto if five else 0, sta[i], ptc)}",'
                f'"reason":"{EVE_REASONS.get(rs[i], "unknown")}","alerted":false}}')
            if five and proto == layout.IPPROTO_TCP:
                fts, ftc = fl[i]
                both = fts | ftc
                tcp = [f'"tcp_flags":"{both:02x}","tcp_flags_ts":"{fts:02x}",'
                       f'"tcp_flags_tc":"{ftc:02x}"']
                if both:
                    tcp.append("," + _FLAG_JSON[both])
                tstate = _tcp_state(sta[i], fts, ftc)
                if tstate is not None:
                    tcp.append(f',"state":"{tstate}"')
                tcp.append(_tcpperf(ended[i]))
                parts.append(',"tcp":{' + "".join(tcp) + "}")
            if macs[i]:
                parts.append(f',"ether":{{"src_macs":["{mac_str(imac[i])}"],'
                             f'"dest_macs":["{mac_str(rmac[i])}"]}}')
            if five:
                cid = community_id_for_record(ended[i], self.seed)
                if cid is not None:
                    parts.append(f',"community_id":"{cid}"')
            if tun[i]:
                parts.append(tunnel_json(ended[i]))
            ext = []
            if dns[i]:
                ext.append('"dns":' + eve_dns(ended[i]))
            if drops[i]:
                d = drop_fields(ended[i])
                ext.append(f'"drops":{{"toserver":{d["init_drops"]},'
                           f'"toclient":{d["resp_drops"]},"reason":"{d["drop_reason"]}"}}')
            if ext:
                parts.append(',"flowscope":{' + ",".join(ext) + "}")
            parts.append("}\n")
            lines.append("".join(parts))
        self.out.write("".join(lines))
        self.lines += len(lines)

