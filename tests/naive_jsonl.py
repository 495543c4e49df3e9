"""Plain-Python twin of flowscope._kernels.textout.format_jsonl (same bytes, docs/output.md)."""

from __future__ import annotations

from typing import IO

import numpy as np

from flowscope import layout
from flowscope.layout import KIND_SLUGS, REASON_SLUGS, SIDE_SLUGS, STATE_SLUGS, proto_slug
from flowscope.keys import mac_str
from flowscope.output.common import RecordFormatter, drop_reason_names


def _tunnel(r) -> str:
    """The ``tunnel`` object of an inner flow's Ended record ('' for other flows)."""
    if int(r["tun"]) == 0:
        return ""
    ttype, depth, key, seen, _changes = layout.unpack_tun(r["tun"])
    parents = ",".join(str(int(p)) for p in r["tun_parent"] if p >= 0)
    return (f',"tunnel":{{"type":"{layout.TUN_SLUGS.get(ttype, "other")}","depth":{depth},'
            f'"key":{key},"parents":[{parents}],"parents_seen":{seen}}}')


def _num_ts(ns: int) -> str:
    sign = "-" if ns < 0 else ""
    s, n = divmod(abs(ns), 1_000_000_000)
    return f"{sign}{s}.{n:09d}"


def _dns(r) -> str:
    d = int(r["dns"])
    out = ""
    if d & layout.EVD_QUERY:
        name = bytes(r["dns_qname"][: int(r["dns_qlen"])]).decode("ascii")
        qt = int(r["dns_qtype"])
        out += f',"dns_query":"{name}","dns_qtype":{qt}'
        if qt in layout.DNS_QTYPE_NAMES:
            out += f',"dns_qtype_name":"{layout.DNS_QTYPE_NAMES[qt]}"'
    if d & layout.EVD_RESPONSE:
        rc = int(r["dns_rcode"])
        out += f',"dns_rcode":{rc}'
        if rc < len(layout.DNS_RCODE_NAMES):
            out += f',"dns_rcode_name":"{layout.DNS_RCODE_NAMES[rc]}"'
        out += f',"dns_answers":{int(r["dns_answers"])}'
    if d & layout.EVD_RTT:
        out += f',"dns_rtt":{_num_ts(int(r["dns_rtt"]))}'
    return out


def _drops(r) -> str:
    if not r["drops"].any():
        return ""
    code = int(r["drop_reason"])
    return (f',"init_drops":{int(r["drops"][0])},"resp_drops":{int(r["drops"][1])},'
            f'"drop_reason":"{drop_reason_names().get(code, str(code))}"')


class NaiveJsonlWriter:
    """Writes engine event records as JSON Lines to a text stream.

    Every line has ``event``, ``ts`` (seconds with 9 decimals, exact),
    ``flow_id`` and the flow's endpoints oriented initiator -> responder;
    the rest depends on the event kind. Field names never change.
    """

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.fmt = RecordFormatter()
        self.lines = 0
        self.iface_names: list[str] = []

    def _context(self, r) -> str:
        ifc = int(r["iface"])
        name = self.iface_names[ifc] if ifc < len(self.iface_names) else ""
        out = f',"iface":"{name or ifc}"'
        nv = min(int(r["nvlan"]), 2)
        if nv:
            out += ',"vlan":[' + ",".join(str(int(v)) for v in r["vlan"][:nv]) + "]"
        if r["has_mac"]:
            out += (f',"init_mac":"{mac_str(int(r["init_mac"]))}",'
                    f'"resp_mac":"{mac_str(int(r["resp_mac"]))}"')
        return out

    def _flow(self, key, init_rev: int) -> str:
        kind, proto, src, sport, dst, dport = self.fmt.endpoints(key, init_rev)
        if kind == layout.EXTRACT_MAC_PAIR:
            return f'"src_mac":"{src}","dst_mac":"{dst}"'
        if kind == layout.EXTRACT_IP_PAIR:
            return f'"src_ip":"{src}","dst_ip":"{dst}"'
        return (f'"proto":"{proto_slug(proto)}","ip_proto":{proto},"src_ip":"{src}",'
                f'"src_port":{sport},"dst_ip":"{dst}","dst_port":{dport}')

    @staticmethod
    def _tcpperf(r, key) -> str:
        kind, _l3, proto, _pa, _pb = layout.unpack_meta(key[4])
        if proto != layout.IPPROTO_TCP or kind in (layout.EXTRACT_MAC_PAIR,
                                                    layout.EXTRACT_IP_PAIR):
            return ""
        resp, init = int(r["rtt_resp"]), int(r["rtt_init"])
        rtt = resp + init if resp >= 0 and init >= 0 else -1

        def t(ns):
            return "null" if ns < 0 else _num_ts(ns)
        out = f',"tcp_rtt":{t(rtt)},"tcp_rtt_resp":{t(resp)},"tcp_rtt_init":{t(init)}'
        for name, col in (("retrans_pkts", "retrans_pkts"), ("retrans_bytes", "retrans_bytes"),
                          ("zero_win", "zero_win"), ("ooo_pkts", "ooo_pkts")):
            out += f',"init_{name}":{int(r[col][0])},"resp_{name}":{int(r[col][1])}'
        return out

    def write_records(self, recs: np.ndarray) -> None:
        if recs.shape[0] == 0:
            return
        kinds = recs["kind"].tolist()
        tss = recs["ts"].tolist()
        ids = recs["flow_id"].tolist()
        keys = recs["key"].tolist()
        revs = recs["init_rev"].tolist()
        lines = []
        ended_cols = None
        for i, kind in enumerate(kinds):
            rev = revs[i]
            head = (f'{{"event":"{KIND_SLUGS[kind]}","ts":{_num_ts(tss[i])},"flow_id":{ids[i]},'
                    f'{self._flow(keys[i], rev)}')
            if kind in (layout.EV_ENDED, layout.EV_UPDATE):
                if ended_cols is None:
                    ended_cols = (recs["pkts"].tolist(), recs["bytes"].tolist(),
                                  recs["payload"].tolist(), recs["flags_or"].tolist(),
                                  recs["started"].tolist(), recs["last_seen"].tolist(),
                                  recs["reason"].tolist(), recs["to_state"].tolist(),
                                  recs["hist_len"].tolist(), recs["sample_rate"].tolist())
                pk, by, pay, fl, st, ls, rs, sta, hl, sr = ended_cols
                hist = recs["history"][i, : hl[i]].tobytes().decode("ascii")
                lines.append(
                    f'{head}'
                    + (f',"reason":"{REASON_SLUGS[rs[i]]}"' if kind == layout.EV_ENDED else "")
                    + f',"state":"{STATE_SLUGS[sta[i]]}",'
                    f'"history":"{hist}","start":{_num_ts(st[i])},"end":{_num_ts(ls[i])},'
                    f'"duration":{_num_ts(ls[i] - st[i])},'
                    f'"init_pkts":{pk[i][0]},"init_bytes":{by[i][0]},'
                    f'"resp_pkts":{pk[i][1]},"resp_bytes":{by[i][1]},'
                    f'"init_payload_bytes":{pay[i][0]},"resp_payload_bytes":{pay[i][1]},'
                    f'"init_tcp_flags":{fl[i][0]},"resp_tcp_flags":{fl[i][1]}'
                    + self._context(recs[i])
                    + (f',"sample_rate":{sr[i]}' if sr[i] > 1 else "")
                    + f'{self._tcpperf(recs[i], keys[i])}{_tunnel(recs[i])}'
                    f'{_dns(recs[i])}{_drops(recs[i])}}}\n')
            elif kind == layout.EV_PACKET:
                r = recs[i]
                lines.append(f'{head},"side":"{SIDE_SLUGS[r["side"]]}","len":{r["length"]}}}\n')
            elif kind == layout.EV_STARTED:
                lines.append(f'{head},"side":"{SIDE_SLUGS[recs[i]["side"]]}"}}\n')
            elif kind == layout.EV_STATE_CHANGE:
                r = recs[i]
                lines.append(f'{head},"from":"{STATE_SLUGS[r["from_state"]]}",'
                             f'"to":"{STATE_SLUGS[r["to_state"]]}"}}\n')
            else:
                lines.append(head + "}\n")
        self.out.write("".join(lines))
        self.lines += len(lines)

    def close(self, summary: dict | None = None) -> None:
        self.out.flush()
