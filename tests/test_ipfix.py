"""IPFIX export: message framing, templates, biflow records, and real collectors.

The wire format is checked three ways:

* an IPFIX decoder written here from RFC 7011 / RFC 5103 (templates are
  read from the wire, not taken from the exporter's tables) reads back every
  record and compares it with the engine's Ended records;
* ``nfcapd`` (nfdump's collector) receives the export on 127.0.0.1 and
  ``nfdump -o csv`` must list the same flows with the same per-direction
  packet and byte counts;
* ``tshark`` decodes a pcap of the exported datagrams as CFLOW/IPFIX with no
  malformed-packet mark or expert warning, and its decoded counts match.

The collector tests skip when the tool is missing (scripts/setup.sh installs them).
"""

from __future__ import annotations

import csv
import io
import ipaddress
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from flowscope import FlowTracker, layout
from flowscope.config import TrackerConfig
from flowscope.output.ipfix import IpfixExporter, pack_records, to_uniflow
from flowscope.pcap import CaptureReader

from conftest import shared_pcaps_dir

DATA = Path(__file__).parent / "data"
CAPTURES = ["zeek__wikipedia.pcap", "zeek__http__get.pcap", "zeek__ftp__ipv6.pcap",
            "zeek__icmp__5-pings.pcap"]
PEN_REVERSE = 29305


# ---- helpers -------------------------------------------------------------

def ended_records(path: Path, config: TrackerConfig | None = None) -> list[np.ndarray]:
    """The Ended records of a capture, as the engine yields them (copied)."""
    tracker = FlowTracker(config=config, events="ended")
    out = []
    for batch in CaptureReader(str(path)):
        out += [r.copy() for r in tracker.process(batch)]
    out += [r.copy() for r in tracker.process_finish()]
    return out


class UdpSink:
    """A UDP socket on 127.0.0.1 that collects datagrams (bounded in count and time)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def take(self, count: int, timeout: float = 5.0) -> list[bytes]:
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                out.append(self.sock.recv(65535))
            except socket.timeout:
                break
        return out

    def close(self) -> None:
        self.sock.close()


def export(path: Path, port: int, **kwargs) -> tuple[IpfixExporter, np.ndarray]:
    exp = IpfixExporter("127.0.0.1", port, **kwargs)
    recs = ended_records(path)
    for r in recs:
        exp.write_records(r)
    exp.close()
    allrecs = np.concatenate(recs) if recs else np.zeros(0, dtype=layout.EVENT_DTYPE)
    return exp, allrecs


def export_to_sink(name: str, **kwargs):
    sink = UdpSink()
    try:
        exp, recs = export(DATA / name, sink.port, **kwargs)
        dgrams = sink.take(exp.messages)
    finally:
        sink.close()
    assert len(dgrams) == exp.messages
    return exp, recs, dgrams


def decode_ipfix(dgrams: list[bytes]):
    """Decode IPFIX messages: ``(headers, template_ids_per_message, records)``.

    Each record is a dict keyed by ``(ie, pen)`` with ints (addresses as
    ``ipaddress`` objects).
    """
    templates: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    headers, tmpl_msgs, records = [], [], []
    for d in dgrams:
        ver, length, etime, seq, dom = struct.unpack_from("!HHIII", d, 0)
        headers.append((ver, length, etime, seq, dom, len(d)))
        off, seen_tmpl, nrec = 16, [], 0
        while off < length:
            sid, slen = struct.unpack_from("!HH", d, off)
            assert slen >= 4 and off + slen <= length
            body, p = d[off + 4: off + slen], 0
            if sid == 2:
                while p + 4 <= len(body):
                    tid, count = struct.unpack_from("!HH", body, p)
                    p += 4
                    fields = []
                    for _ in range(count):
                        ie, flen = struct.unpack_from("!HH", body, p)
                        p += 4
                        pen = 0
                        if ie & 0x8000:
                            (pen,) = struct.unpack_from("!I", body, p)
                            p += 4
                        fields.append((ie & 0x7FFF, pen, flen))
                    templates[(dom, tid)] = fields
                    seen_tmpl.append(tid)
            elif sid >= 256:
                fields = templates[(dom, sid)]
                size = sum(f[2] for f in fields)
                while p + size <= len(body):
                    rec = {}
                    for ie, pen, flen in fields:
                        raw = body[p: p + flen]
                        p += flen
                        if ie in (8, 12, 27, 28):
                            rec[(ie, pen)] = ipaddress.ip_address(raw)
                        else:
                            rec[(ie, pen)] = int.from_bytes(raw, "big")
                    records.append(rec)
                    nrec += 1
                assert len(body) - p < size  # only padding may follow
            off += slen
        tmpl_msgs.append(seen_tmpl)
        headers[-1] = headers[-1] + (nrec,)
    return headers, tmpl_msgs, records


def record_tuple(rec) -> tuple:
    """(src, sport, dst, dport, proto, pkts, octets, rpkts, roctets) of a decoded record."""
    src = rec.get((8, 0), rec.get((27, 0)))
    dst = rec.get((12, 0), rec.get((28, 0)))
    return (str(src), rec[(7, 0)], str(dst), rec[(11, 0)], rec[(4, 0)], rec[(2, 0)], rec[(1, 0)],
            rec[(2, PEN_REVERSE)], rec[(1, PEN_REVERSE)])


def engine_tuples(recs: np.ndarray) -> list[tuple]:
    from flowscope.output.common import RecordFormatter

    fmt = RecordFormatter()
    out = []
    for r in recs:
        _k, proto, src, sport, dst, dport = fmt.endpoints(r["key"].tolist(), int(r["init_rev"]))
        out.append((src, sport, dst, dport, proto, int(r["pkts"][0]), int(r["bytes"][0]),
                    int(r["pkts"][1]), int(r["bytes"][1])))
    return out


# ---- framing and templates -----------------------------------------------

def test_message_headers_and_sequence_numbers():
    exp, recs, dgrams = export_to_sink("zeek__wikipedia.pcap", observation_domain=7)
    headers, tmpl, records = decode_ipfix(dgrams)
    count = 0
    for ver, length, etime, seq, dom, size, nrec in headers:
        assert ver == 10
        assert length == size <= 1400
        assert dom == 7
        assert abs(etime - time.time()) < 60
        assert seq == count  # data records sent before this message
        count += nrec
    assert count == exp.records == recs.shape[0] == len(records)
    assert tmpl[0] == [256, 257] and headers[0][6] == 0  # templates first, on their own


def test_records_match_engine_ipv4_and_ipv6():
    for name in CAPTURES:
        _exp, recs, dgrams = export_to_sink(name)
        _h, _t, records = decode_ipfix(dgrams)
        assert sorted(map(record_tuple, records)) == sorted(engine_tuples(recs)), name


def test_times_flags_and_end_reasons():
    _exp, recs, dgrams = export_to_sink("zeek__http__get.pcap")
    _h, _t, records = decode_ipfix(dgrams)
    by_port = {r[(7, 0)]: r for r in records}
    fmt_recs = engine_tuples(recs)
    for r, t in zip(recs, fmt_recs):
        d = by_port[t[1]]
        assert d[(152, 0)] == int(r["started"]) // 1_000_000
        assert d[(153, 0)] == int(r["last_seen"]) // 1_000_000
        assert d[(6, 0)] == int(r["flags_or"][0])
        assert d[(6, PEN_REVERSE)] == int(r["flags_or"][1])
        want = {layout.END_FIN: 3, layout.END_RST: 3, layout.END_SHUTDOWN: 4}[int(r["reason"])]
        assert d[(136, 0)] == want


def test_reverse_flags_precede_forward_flags_in_template():
    """nfdump 1.7 stores a reverse tcpControlBits as the forward one (the last
    wins), so the template carries the reverse element first."""
    _exp, _recs, dgrams = export_to_sink("zeek__http__get.pcap")
    body = dgrams[0][16 + 4:]
    for tid in (256, 257):
        tid_got, count = struct.unpack_from("!HH", body, 0)
        assert tid_got == tid
        p, fields = 4, []
        for _ in range(count):
            ie, _len = struct.unpack_from("!HH", body, p)
            p += 4
            pen = 0
            if ie & 0x8000:
                (pen,) = struct.unpack_from("!I", body, p)
                p += 4
            fields.append((ie & 0x7FFF, pen))
        assert fields.index((6, PEN_REVERSE)) < fields.index((6, 0))
        body = body[p:]


def test_uniflow_records_match_engine():
    """records="uniflow": the initiator's record, then the responder's when it
    sent packets, told apart by biflowDirection (239)."""
    for name in CAPTURES + ["zeek__smtp.pcap"]:
        exp, recs, dgrams = export_to_sink(name, records="uniflow")
        _h, tmpl, records = decode_ipfix(dgrams)
        assert tmpl[0] == [258, 259]
        assert all((ie, pen) != (6, PEN_REVERSE) for r in records for ie, pen in r)
        got, i = [], 0
        while i < len(records):
            init = records[i]
            assert init[(239, 0)] == 1
            t = record_tuple({**init, (2, PEN_REVERSE): 0, (1, PEN_REVERSE): 0})
            rflags = 0
            if i + 1 < len(records) and records[i + 1][(239, 0)] == 2:
                resp = records[i + 1]
                rt = record_tuple({**resp, (2, PEN_REVERSE): 0, (1, PEN_REVERSE): 0})
                assert (rt[0], rt[1], rt[2], rt[3], rt[4]) == (t[2], t[3], t[0], t[1], t[4])
                for ie in (152, 153, 136):
                    assert resp[(ie, 0)] == init[(ie, 0)]
                t = t[:7] + (rt[5], rt[6])
                rflags = resp[(6, 0)]
                i += 1
            got.append(t + (init[(6, 0)], rflags))
            i += 1
        want = [t + (int(r["flags_or"][0]), int(r["flags_or"][1]))
                for r, t in zip(recs, engine_tuples(recs))]
        assert sorted(got) == sorted(want), name
        assert exp.records == len(records) == recs.shape[0] + int((recs["pkts"][:, 1] > 0).sum())


def test_to_uniflow_drops_silent_responders():
    recs = np.zeros(2, dtype=layout.EVENT_DTYPE)
    recs["kind"] = layout.EV_ENDED
    recs["key"][:, 1] = 0x0A000001
    recs["key"][:, 3] = 0x0A000002
    recs["key"][:, 4] = (layout.L3_IPV4 << 48) | (6 << 32) | (1000 << 16) | 80
    recs["init_rev"] = [0, 1]
    recs["pkts"] = [[3, 2], [1, 0]]
    recs["flags_or"] = [[0x1b, 0x12], [0x02, 0]]
    v4, _v6 = pack_records(recs)
    u = to_uniflow(v4)
    assert u["direction"].tolist() == [1, 2, 1]
    assert u["src"].tolist() == [0x0A000001, 0x0A000002, 0x0A000002]
    assert u["sport"].tolist() == [1000, 80, 80]
    assert u["dport"].tolist() == [80, 1000, 1000]
    assert u["tcp_flags"].tolist() == [0x1b, 0x12, 0x02]
    assert u["pkts"].tolist() == [3, 2, 1]


def test_flow_end_reason_mapping():
    recs = np.zeros(5, dtype=layout.EVENT_DTYPE)
    recs["kind"] = layout.EV_ENDED
    recs["key"][:, 1] = 0x0A000001
    recs["key"][:, 3] = 0x0A000002
    recs["key"][:, 4] = (layout.L3_IPV4 << 48) | (17 << 32) | (1000 << 16) | 53
    recs["reason"] = [layout.END_FIN, layout.END_RST, layout.END_IDLE, layout.END_EVICTED,
                      layout.END_SHUTDOWN]
    recs["init_rev"] = [0, 1, 0, 1, 0]
    v4, v6 = pack_records(recs)
    assert v6.shape[0] == 0
    assert v4["end_reason"].tolist() == [3, 3, 1, 5, 4]
    assert v4["sport"].tolist() == [1000, 53, 1000, 53, 1000]
    assert v4["src"].tolist() == [0x0A000001, 0x0A000002] * 2 + [0x0A000001]


def test_mac_pair_flows_are_skipped():
    recs = np.zeros(2, dtype=layout.EVENT_DTYPE)
    recs["kind"] = layout.EV_ENDED
    recs["key"][0, 4] = layout.EXTRACT_MAC_PAIR << 56
    recs["key"][1, 4] = (layout.L3_IPV6 << 48) | (6 << 32)
    v4, v6 = pack_records(recs)
    assert (v4.shape[0], v6.shape[0]) == (0, 1)


def test_messages_stay_under_mtu_and_split():
    _exp, recs, dgrams = export_to_sink("zeek__wikipedia.pcap", mtu=512)
    headers, _t, records = decode_ipfix(dgrams)
    assert all(h[5] <= 512 for h in headers)
    assert len(records) == recs.shape[0]
    assert len(dgrams) > 4


def test_template_refresh_every_n_messages():
    _exp, _recs, dgrams = export_to_sink("zeek__wikipedia.pcap", mtu=512,
                                         template_refresh_msgs=3, template_refresh_s=1e9)
    _h, tmpl, _r = decode_ipfix(dgrams)
    with_tmpl = [i for i, t in enumerate(tmpl) if t]
    assert with_tmpl == list(range(0, len(dgrams), 4))  # template, then 3 without


def test_template_refresh_by_time():
    now = [1000.0]

    def clock():
        now[0] += 4.0  # every message is 4 s later
        return now[0]

    _exp, _recs, dgrams = export_to_sink("zeek__wikipedia.pcap", mtu=512, clock=clock,
                                         template_refresh_s=10.0, template_refresh_msgs=1000)
    headers, tmpl, _r = decode_ipfix(dgrams)
    with_tmpl = [i for i, t in enumerate(tmpl) if t]
    assert len(with_tmpl) >= 2 and with_tmpl[0] == 0
    assert all(b - a <= 3 for a, b in zip(with_tmpl, with_tmpl[1:]))
    assert [h[2] for h in headers] == sorted(h[2] for h in headers)


def test_evicted_and_idle_flows_exported():
    cfg = TrackerConfig(max_flows=2)
    recs = np.concatenate(ended_records(DATA / "zeek__wikipedia.pcap", cfg))
    v4, v6 = pack_records(recs)
    reasons = set(v4["end_reason"].tolist()) | set(v6["end_reason"].tolist())
    assert 5 in reasons  # lack of resources = evicted
    assert v4.shape[0] + v6.shape[0] == recs.shape[0]


def test_bad_arguments():
    with pytest.raises(ValueError):
        IpfixExporter("127.0.0.1", 0)
    with pytest.raises(ValueError):
        IpfixExporter("127.0.0.1", 4739, mtu=100)
    with pytest.raises(ValueError):
        IpfixExporter("127.0.0.1", 4739, records="both")


# ---- real collectors -------------------------------------------------------

def _free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _wait_bound(port: int, timeout: float = 5.0) -> bool:
    """True once something holds UDP 127.0.0.1:port (a bind attempt fails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        finally:
            s.close()
        time.sleep(0.05)
    return False


def _nfdump_rows(flowdir: Path) -> list[dict]:
    files = sorted(p for p in flowdir.iterdir() if p.name.startswith("nfcapd.") and
                   "current" not in p.name)
    assert files, f"nfcapd wrote no file in {flowdir}: {os.listdir(flowdir)}"
    rows = []
    for f in files:
        out = subprocess.run(["nfdump", "-r", str(f), "-o", "csv"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
        lines = []
        for line in out.splitlines():
            if line.startswith("Summary") or not line.strip():
                break
            lines.append(line)
        rows += list(csv.DictReader(io.StringIO("\n".join(lines))))
    return rows


def run_nfcapd(flowdir: Path, path: Path, **kwargs) -> tuple[IpfixExporter, np.ndarray]:
    """Export a capture to an nfcapd on 127.0.0.1 writing into ``flowdir``."""
    port = _free_udp_port()
    proc = subprocess.Popen(["nfcapd", "-b", "127.0.0.1", "-p", str(port), "-w", str(flowdir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert _wait_bound(port), "nfcapd did not bind"
        exp, recs = export(path, port, **kwargs)
        time.sleep(0.3)  # let nfcapd drain its socket
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            log = proc.communicate(timeout=15)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            proc.kill()
            log = proc.communicate()[0].decode(errors="replace")
    assert exp.send_errors == 0
    assert "Sequence Errors: 0" in log and "Bad Packets: 0" in log, log
    return exp, recs


def _nfdump(flowdir: Path, *args: str) -> str:
    """``nfdump -q -N -6 ARGS -r FILE`` over nfcapd's files, in file order."""
    files = sorted(p for p in flowdir.iterdir() if p.name.startswith("nfcapd.") and
                   "current" not in p.name)
    assert files, f"nfcapd wrote no file in {flowdir}: {os.listdir(flowdir)}"
    return "".join(subprocess.run(["nfdump", "-q", "-N", "-6", *args, "-r", str(f)],
                                  capture_output=True, text=True, timeout=30,
                                  check=True).stdout for f in files)


def nfdump_flags(text: str) -> int:
    """The TCP flags byte of nfdump's flag string (``...AP.S.`` = 0x1a)."""
    assert len(text) == 8, text
    return sum(1 << (7 - i) for i, c in enumerate(text) if c != ".")


#: nfdump's per-record fields for the flag tests; '|' separates, addresses in full (-6)
NFDUMP_FMT = "fmt:%sa|%sp|%da|%dp|%pr|%flg|%ipkt|%opkt|%bfd|%end"


def nfdump_records(flowdir: Path) -> list[tuple]:
    """(src, sport, dst, dport, proto, flags, ipkt, opkt, biflowDirection, end reason) per record.

    With ``-N`` nfdump prints the protocol as a number. The destination port
    of protocols other than TCP and UDP stays a string (ICMP's is ``type.code``).
    """
    out = []
    for line in _nfdump(flowdir, "-o", NFDUMP_FMT).splitlines():
        f = [x.strip() for x in line.split("|")]
        proto = int(f[4])
        dport = int(f[3]) if proto in (6, 17) else f[3]
        out.append((str(ipaddress.ip_address(f[0])), int(f[1]), str(ipaddress.ip_address(f[2])),
                    dport, proto, nfdump_flags(f[5]), int(f[6]), int(f[7]), int(f[8]),
                    int(f[9])))
    return out


def tcp_flows(recs: np.ndarray) -> list[tuple]:
    """(src, sport, dst, dport, initiator flags, responder flags, pkts, rpkts) of each TCP flow."""
    return [(t[0], t[1], t[2], t[3], int(r["flags_or"][0]), int(r["flags_or"][1]), t[5], t[7])
            for r, t in zip(recs, engine_tuples(recs)) if t[4] == 6]


#: captures whose TCP flows have initiator and responder flags that differ
FLAG_CAPTURES = ["zeek__http__get.pcap", "zeek__smtp.pcap", "zeek__ftp__ipv6.pcap",
                 "zeek__workshop_2011_browse.pcap", "shared:ndpi__fins.pcap"]


def capture_path(name: str) -> Path:
    if name.startswith("shared:"):
        path = shared_pcaps_dir() / name.split(":", 1)[1]
        if not path.is_file():
            pytest.skip(f"{path} not present")
        return path
    return DATA / name


needs_nfdump = pytest.mark.skipif(
    not (shutil.which("nfcapd") and shutil.which("nfdump")),
    reason="nfcapd/nfdump not installed (scripts/setup.sh installs them)")


@needs_nfdump
@pytest.mark.parametrize("name", CAPTURES)
def test_nfcapd_collects_same_flows(tmp_path, name):
    exp, recs = run_nfcapd(tmp_path, DATA / name)
    rows = _nfdump_rows(tmp_path)
    got = []
    for r in rows:
        proto = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMP6": 58}.get(r["pr"], None)
        proto = proto if proto is not None else int(r["pr"])
        ports = (int(r["sp"]), int(r["dp"])) if proto in (6, 17) else (0, 0)
        got.append((str(ipaddress.ip_address(r["sa"])), ports[0],
                    str(ipaddress.ip_address(r["da"])), ports[1], proto,
                    int(r["ipkt"]), int(r["ibyt"]), int(r["opkt"]), int(r["obyt"])))
    want = [(t[0], t[1], t[2], t[3], t[4], *t[5:]) if t[4] in (6, 17) else
            (t[0], 0, t[2], 0, t[4], *t[5:]) for t in engine_tuples(recs)]
    assert len(rows) == recs.shape[0] == exp.records
    assert sorted(got) == sorted(want)


@needs_nfdump
@pytest.mark.parametrize("name", FLAG_CAPTURES)
def test_nfcapd_biflow_keeps_initiator_flags(tmp_path, name):
    """nfdump shows the initiator's flags of every TCP biflow, not the responder's.

    nfdump 1.7 files a reverse tcpControlBits under its forward flags field;
    the template sends it before the forward one, so the forward value is
    the one left. nfdump keeps no reverse flags of a biflow record.
    """
    _exp, recs = run_nfcapd(tmp_path, capture_path(name))
    flows = tcp_flows(recs)
    got = sorted((r[0], r[1], r[2], r[3], r[5], r[6], r[7])
                 for r in nfdump_records(tmp_path) if r[4] == 6)
    assert got == sorted((f[0], f[1], f[2], f[3], f[4], f[6], f[7]) for f in flows)
    assert "revtcp" not in _nfdump(tmp_path, "-o", "raw")


@needs_nfdump
@pytest.mark.parametrize("name", FLAG_CAPTURES)
def test_nfcapd_uniflow_shows_both_flag_sets(tmp_path, name):
    """records="uniflow": nfdump lists each TCP flow as the initiator's record
    (biflowDirection 1) followed by the responder's (2, when it sent
    packets), each with that side's flags; ``nfdump -b`` pairs them and
    shows the responder's as "revtcp flags"."""
    exp, recs = run_nfcapd(tmp_path, capture_path(name), records="uniflow")
    rows = nfdump_records(tmp_path)
    assert len(rows) == exp.records == recs.shape[0] + int((recs["pkts"][:, 1] > 0).sum())
    got, i = [], 0
    while i < len(rows):
        init = rows[i]
        assert init[8] == 1, init
        resp = rows[i + 1] if i + 1 < len(rows) and rows[i + 1][8] == 2 else None
        i += 2 if resp else 1
        if init[4] != 6:
            continue
        rflags, rpkts = 0, 0
        if resp:
            assert (resp[0], resp[1], resp[2], resp[3]) == (init[2], init[3], init[0], init[1])
            assert resp[9] == init[9]
            rflags, rpkts = resp[5], resp[6]
        got.append((init[0], init[1], init[2], init[3], init[5], rflags, init[6], rpkts))
    flows = tcp_flows(recs)
    assert sorted(got) == sorted(flows)
    # nfdump -b: one row per flow, the responder's flags as "revtcp flags" (printed when
    # not 0). It pairs records by address and port, so only flows whose pair is unique
    # in the capture can be compared.
    pairs = [frozenset([(f[0], f[1]), (f[2], f[3])]) for f in flows]
    unique = {p for p in pairs if pairs.count(p) == 1}
    paired = {}
    for block in _nfdump(tmp_path, "-b", "-o", "raw").split("Flow Record:")[1:]:
        fields = {}
        for line in block.splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                fields[k.strip()] = v.split()
        if fields["proto"][0] != "6":
            continue
        src = (str(ipaddress.ip_address(fields["src addr"][0])), int(fields["src port"][0]))
        dst = (str(ipaddress.ip_address(fields["dst addr"][0])), int(fields["dst port"][0]))
        paired[(src, dst)] = (int(fields["tcp flags"][0], 16),
                              int(fields.get("revtcp flags", ["0"])[0], 16))
    checked = 0
    for f, p in zip(flows, pairs):
        if p in unique:
            assert paired[((f[0], f[1]), (f[2], f[3]))] == (f[4], f[5]), f
            checked += 1
    assert checked >= 1


def _write_udp_pcap(path: Path, dgrams: list[bytes], dport: int) -> None:
    """A pcap of the datagrams with made-up Ethernet/IPv4/UDP headers (127.0.0.1)."""
    lo = socket.inet_aton("127.0.0.1")
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, d in enumerate(dgrams):
            udp = struct.pack("!HHHH", 40000, dport, 8 + len(d), 0) + d
            hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0,
                              lo, lo)
            csum = sum(struct.unpack("!10H", hdr))
            csum = (csum & 0xFFFF) + (csum >> 16)
            csum = ~((csum & 0xFFFF) + (csum >> 16)) & 0xFFFF
            hdr = hdr[:10] + struct.pack("!H", csum) + hdr[12:]
            frame = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00" + hdr + udp
            f.write(struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame)


@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark not installed")
@pytest.mark.parametrize("name", ["zeek__wikipedia.pcap", "zeek__ftp__ipv6.pcap"])
def test_tshark_decodes_export(tmp_path, name):
    exp, recs, dgrams = export_to_sink(name)
    port = 4739
    pcap = tmp_path / "export.pcap"
    _write_udp_pcap(pcap, dgrams, port)
    base = ["tshark", "-n", "-r", str(pcap), "-d", f"udp.port=={port},cflow"]
    bad = subprocess.run(base + ["-Y", "_ws.malformed || _ws.expert.severity >= warning"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 0, bad.stderr
    assert bad.stdout.strip() == ""
    out = subprocess.run(base + ["-T", "fields", "-E", "occurrence=a", "-e", "cflow.version",
                                 "-e", "cflow.sequence", "-e", "cflow.packets",
                                 "-e", "cflow.octets"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    pkts = [0, 0]
    octs = [0, 0]
    nflows = 0
    for line in out.splitlines():
        ver, _seq, p, o = (line.split("\t") + ["", "", ""])[:4]
        assert ver == "10"
        if not p:
            continue
        pv = [int(x) for x in p.split(",")]
        ov = [int(x) for x in o.split(",")]
        # forward and reverse alternate: packetDeltaCount then its reverse, per record
        pkts[0] += sum(pv[0::2])
        pkts[1] += sum(pv[1::2])
        octs[0] += sum(ov[0::2])
        octs[1] += sum(ov[1::2])
        nflows += len(pv) // 2
    assert nflows == recs.shape[0] == exp.records
    assert pkts == [int(recs["pkts"][:, 0].sum()), int(recs["pkts"][:, 1].sum())]
    assert octs == [int(recs["bytes"][:, 0].sum()), int(recs["bytes"][:, 1].sum())]


def tshark_records(pcap: Path, port: int) -> list[dict]:
    """tshark's decode of each data record: {field: value}, reverse elements as ``rev.<field>``.

    tshark names a reverse element like its forward one (``cflow.tcpflags``)
    and marks it "(Reverse Type ...)" in the display name.
    """
    import xml.etree.ElementTree as ET

    pdml = subprocess.run(["tshark", "-n", "-r", str(pcap), "-d", f"udp.port=={port},cflow",
                           "-T", "pdml"], capture_output=True, text=True, timeout=60,
                          check=True).stdout
    out = []
    for flow in ET.fromstring(pdml).iter("field"):
        if not flow.get("show", "").startswith("Flow ") or flow.get("name"):
            continue
        rec = {}
        for f in flow:
            name = f.get("name", "").removeprefix("cflow.")
            if "(Reverse Type" in f.get("showname", ""):
                name = "rev." + name
            rec[name] = f.get("show")
        out.append(rec)
    return out


@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark not installed")
@pytest.mark.parametrize("records", ["biflow", "uniflow"])
@pytest.mark.parametrize("name", FLAG_CAPTURES)
def test_tshark_tcp_flags_per_flow(tmp_path, name, records):
    """tshark reads every TCP flow's initiator and responder flags where they were put:
    biflow: forward and reverse tcpControlBits of one record; uniflow: the
    tcpControlBits of the records with biflowDirection 1 and 2."""
    path = capture_path(name)
    sink = UdpSink()
    try:
        exp, recs = export(path, sink.port, records=records)
        dgrams = sink.take(exp.messages)
    finally:
        sink.close()
    assert len(dgrams) == exp.messages
    pcap = tmp_path / "export.pcap"
    _write_udp_pcap(pcap, dgrams, 4739)
    bad = subprocess.run(["tshark", "-n", "-r", str(pcap), "-d", "udp.port==4739,cflow", "-Y",
                          "_ws.malformed || _ws.expert.severity >= warning"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 0 and bad.stdout.strip() == "", bad.stdout + bad.stderr
    got = []
    for r in tshark_records(pcap, 4739):
        if r["protocol"] != "6":
            continue
        src = r.get("srcaddr", r.get("srcaddrv6"))
        dst = r.get("dstaddr", r.get("dstaddrv6"))
        ends = (src, int(r["srcport"]), dst, int(r["dstport"]))
        flags = int(r["tcpflags"], 16)
        if records == "biflow":
            got.append((*ends, flags, int(r["rev.tcpflags"], 16), int(r["packets"]),
                        int(r["rev.packets"])))
        elif r["biflow_direction"] == "1":
            got.append([*ends, flags, 0, int(r["packets"]), 0])
        else:
            assert r["biflow_direction"] == "2"
            init = got[-1]
            assert tuple(init[:4]) == (ends[2], ends[3], ends[0], ends[1])
            init[5], init[7] = flags, int(r["packets"])
    assert sorted(map(tuple, got)) == sorted(tcp_flows(recs))


def test_ipv6_collector_address():
    try:
        sink = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sink.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        sink.settimeout(5.0)
        exp = IpfixExporter("::1", sink.getsockname()[1])
        exp.close()
        head = sink.recv(65535)
    finally:
        sink.close()
    assert struct.unpack_from("!H", head, 0)[0] == 10 and exp.messages == 1


@pytest.mark.parametrize("flag, config, template_ids", [
    ([], "", {256}),
    (["--ipfix-records", "uniflow"], "", {258}),
    ([], "output:\n  ipfix_records: uniflow\n", {258}),
])
def test_cli_ipfix_records_mode(tmp_path, flag, config, template_ids):
    """--ipfix-records and output.ipfix_records pick the template the data sets use."""
    from flowscope.cli import main

    args = ["pcap", "--format", "jsonl", "-o", str(tmp_path / "o.jsonl")]
    if config:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(config)
        args += ["--config", str(cfg)]
    sink = UdpSink()
    try:
        code = main(args + ["--ipfix", f"127.0.0.1:{sink.port}"] + flag
                    + [str(DATA / "zeek__http__get.pcap")])
        dgrams = sink.take(8, timeout=2.0)
    finally:
        sink.close()
    assert code == 0 and dgrams
    data_sets = set()
    for d in dgrams:
        pos = 16
        while pos + 4 <= len(d):
            set_id, length = struct.unpack_from("!HH", d, pos)
            if set_id >= 256:
                data_sets.add(set_id)
            pos += max(length, 4)
    assert data_sets == template_ids


def test_kernel_drops_in_dropped_packet_delta_count():
    """droppedPacketDeltaCount (133): biflow forward = init_drops, reverse = resp_drops (sent
    first); uniflow: each direction's own; interim Update records carry 0."""
    from flowscope.output.ipfix import TEMPLATE_V4

    recs = np.zeros(3, dtype=layout.EVENT_DTYPE)
    recs["kind"] = [layout.EV_ENDED, layout.EV_ENDED, layout.EV_UPDATE]
    recs["key"][:, 1] = 0x0A000001
    recs["key"][:, 3] = 0x0A000002
    recs["key"][:, 4] = (np.uint64(layout.L3_IPV4) << np.uint64(layout.META_L3_SHIFT)) | (
        np.uint64(17) << np.uint64(layout.META_PROTO_SHIFT))
    recs["pkts"] = [[3, 2], [1, 0], [5, 5]]
    recs["drops"] = [[2, 1], [0, 0], [4, 4]]
    v4, _v6 = pack_records(recs)
    assert v4["drops"].tolist() == [2, 0, 0] and v4["rev_drops"].tolist() == [1, 0, 0]
    names = [f[0] for f in TEMPLATE_V4]
    assert names.index("rev_drops") < names.index("drops")
    uni = to_uniflow(v4)
    assert uni["drops"].tolist() == [2, 1, 0, 0, 0]
