"""The live sensor end to end: real traffic through a veth pair into a test namespace.

Root + BPF tests (skipped without them, failed under FLOWSCOPE_REQUIRE_BPF=1):
live equals offline on the same packets, nothing left attached after SIGINT, SIGTERM or
SIGKILL, and an overloaded sensor that stays up and accounts for what it dropped.
The CLI error tests at the end need neither.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bpf_helpers import require_bpf, sh, stop as _stop, veth_netns, wait_for
from test_bpf_kernel import MAC_A, MAC_B, RST, SYN, eth, ipv4, tcp

REPO = Path(__file__).resolve().parents[1]
TRAFFIC = REPO / "scripts" / "live_traffic.py"
FLOWSCOPE = [sys.executable, "-m", "flowscope"]


_seq = [0]


@pytest.fixture
def topo():
    """A netns joined by a veth pair: (our ifname, peer v4, peer v6, netns name)."""
    require_bpf("ip", "ethtool", "tcpdump", "bpftool", "ping")
    _seq[0] += 1
    tag = f"{os.getpid() % 10000}{_seq[0]}"
    with veth_netns(f"fslv{tag}", 204, (os.getpid() + _seq[0]) % 200 + 20,
                    offloads_off=True) as t:
        yield t


def _start_live(ifname, tmp, *extra):
    err = tmp / "live.err"
    proc = subprocess.Popen(FLOWSCOPE + ["live", "-i", ifname, "--format", "jsonl", "-o",
                                         str(tmp / "live.jsonl"), "--duration", "90", *extra],
                            stdout=subprocess.DEVNULL, stderr=open(err, "w"), cwd=REPO)
    try:
        wait_for(err, "Tracking flows on", proc)
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    return proc, err


def _drive(ifname, v4, v6, ns):
    srv = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(TRAFFIC), "serve",
                            v4, v6], stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        sh(sys.executable, str(TRAFFIC), "drive", v4, v6, ifname, timeout=30)
        srv.wait(timeout=20)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait(5)


def _live_and_offline(topo, tmp_path, fmt: str, ipfix: bool = False, args=()):
    """Run the traffic script with a live sensor writing ``fmt`` and tcpdump capturing the
    same packets, then ``flowscope pcap`` on the capture in the same format (both with the
    command-line arguments ``args``).

    Returns ``(live_output, offline_output, live_stderr, live_ipfix, offline_ipfix)``;
    with ``ipfix`` both runs also export to a UDP sink and the datagrams are returned.
    """
    from test_ipfix import UdpSink

    ifname, v4, v6, ns = topo
    pcap = tmp_path / "cap.pcap"
    tcpd_err = tmp_path / "tcpdump.err"
    sinks = [UdpSink(), UdpSink()] if ipfix else []
    extra = ["--ipfix", f"127.0.0.1:{sinks[0].port}"] if ipfix else []
    try:
        tcpd = subprocess.Popen(["tcpdump", "-i", ifname, "--immediate-mode", "-U", "-s", "0",
                                 "-w", str(pcap)],
                                stdout=subprocess.DEVNULL, stderr=open(tcpd_err, "w"))
        try:
            wait_for(tcpd_err, "listening on", tcpd, 20)
            live, err = _start_live(ifname, tmp_path, "--format", fmt, *extra, *args)
            try:
                _drive(ifname, v4, v6, ns)
                time.sleep(0.3)
            finally:
                assert _stop(live) == 0, err.read_text()
            time.sleep(0.5)  # let tcpdump write what it has received
        finally:
            _stop(tcpd, signal.SIGINT, 10)
        off_extra = ["--ipfix", f"127.0.0.1:{sinks[1].port}"] if ipfix else []
        off = sh(*FLOWSCOPE, "pcap", "--format", fmt, "-o", str(tmp_path / "off.out"),
                  *off_extra, *args, str(pcap), timeout=120)
        assert off.returncode == 0, off.stderr
        dgrams = [sink.take(10_000, timeout=1.0) for sink in sinks]
    finally:
        for sink in sinks:
            sink.close()
    return (tmp_path / "live.jsonl", tmp_path / "off.out", err.read_text(),
            *(dgrams or [None, None]))


COMPARED = ("proto", "src_ip", "src_port", "dst_ip", "dst_port", "reason", "state", "history",
            "init_pkts", "resp_pkts", "init_bytes", "resp_bytes", "init_payload_bytes",
            "resp_payload_bytes", "init_tcp_flags", "resp_tcp_flags", "vlan", "init_mac",
            "resp_mac",
            # tcpperf (TCP flows; handshake times are compared as measured / not measured)
            "init_retrans_pkts", "resp_retrans_pkts", "init_retrans_bytes", "resp_retrans_bytes",
            "init_zero_win", "resp_zero_win", "init_ooo_pkts", "resp_ooo_pkts", "rtt_measured",
            "dns_query", "dns_qtype", "dns_qtype_name", "dns_rcode", "dns_rcode_name",
            "dns_answers")
RTTS = ("tcp_rtt", "tcp_rtt_resp", "tcp_rtt_init")
#: Fields that hold times or ids, which live and offline cannot share (the capture's clock is
#: tcpdump's, the sensor's is the hook's), per format. The DNS RTT is a time: compared as
#: present or not (``has_rtt``).
#: ``in_iface``: the live sensor names the interface, a tcpdump capture (classic pcap) has no
#: interface names (JSON Lines ``iface`` is left out of COMPARED for the same reason).
VOLATILE = {"eve": ("timestamp", "flow_id", "flow.start", "flow.end", "flow.age", "in_iface",
                    *(f"tcp.{k}" for k in RTTS), "flowscope.dns.rtt"),
            "zeek-json": ("ts", "uid", "duration", *RTTS, "dns_rtt"),
            "zeek": ("ts", "uid", "duration", *RTTS, "dns_rtt")}
#: Kernel drops exist only live (a capture has none): left out of the comparison, checked
#: on their own.
LIVE_ONLY = {"eve": ("flowscope.drops.toserver", "flowscope.drops.toclient",
                     "flowscope.drops.reason"),
             "zeek-json": ("orig_drops", "resp_drops", "drop_reason"),
             "zeek": ("orig_drops", "resp_drops", "drop_reason")}


def _ours(src: str, prefixes) -> bool:
    return any(src.startswith(p) for p in prefixes)


def _flat(obj: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in obj.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _val(v):
    """A JSON value as something sortable beside strings and numbers (lists as JSON text)."""
    return json.dumps(v) if isinstance(v, list) else v


def _records(path: Path, fmt: str, prefixes) -> list:
    """The comparable content of one output file, sorted; IPv6 ICMP (neighbour discovery,
    whose timing is the kernel's, not the test's) left out."""
    text = path.read_text()
    out = []
    if fmt == "jsonl":
        for line in text.splitlines():
            r = json.loads(line)
            if r["event"] == "ended" and r["proto"] != "icmp6" and _ours(r["src_ip"], prefixes):
                r["rtt_measured"] = tuple(r.get(k) is not None for k in RTTS)
                out.append(tuple(_val(r.get(k, "")) for k in COMPARED) + ("dns_rtt" in r,))
    elif fmt in ("eve", "zeek-json"):
        src = "src_ip" if fmt == "eve" else "id.orig_h"
        for line in text.splitlines():
            r = _flat(json.loads(line))
            if not _ours(r[src], prefixes) or r.get("proto") == "IPv6-ICMP" or (
                    r.get("proto") == "icmp" and ":" in r[src]):
                continue
            rtt = r.get("flowscope.dns.rtt", r.get("dns_rtt"))
            out.append(tuple(sorted((k, v) for k, v in r.items() if k not in VOLATILE[fmt]
                                    and k not in LIVE_ONLY[fmt]))
                       + (("has_rtt", rtt is not None),))
    elif fmt == "zeek":
        fields = next(line.split("\t")[1:] for line in text.splitlines()
                      if line.startswith("#fields"))
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            r = dict(zip(fields, line.split("\t")))
            if not _ours(r["id.orig_h"], prefixes) or (r["proto"] == "icmp"
                                                      and ":" in r["id.orig_h"]):
                continue
            out.append(tuple(sorted((k, v) for k, v in r.items() if k not in VOLATILE[fmt]
                                    and k not in LIVE_ONLY[fmt]))
                       + (("has_rtt", r["dns_rtt"] != "-"),))
    else:  # table: the flow lines (the summary counts neighbour discovery too)
        for line in text.splitlines():
            cols = line.split()
            if len(cols) >= 6 and cols[0] != "icmp6" and _ours(cols[1].strip("[]"), prefixes):
                out.append(line)
    return sorted(out)


def _ipfix_records(dgrams, prefixes, drops=None) -> list:
    """The comparable IPFIX records (times and kernel drops left out); ``drops`` collects
    the droppedPacketDeltaCount pairs (forward, reverse) of the records that have any."""
    from test_ipfix import decode_ipfix

    _, _, recs = decode_ipfix(dgrams)
    out = []
    for r in recs:
        src = r.get((8, 0), r.get((27, 0)))
        if not _ours(str(src), prefixes) or r.get((4, 0)) == 58:
            continue
        if drops is not None and (r.get((133, 0)) or r.get((133, 29305))):
            drops.append((r.get((133, 0)), r.get((133, 29305))))
        out.append(tuple(sorted((k, str(v)) for k, v in r.items()  # flow start / end ms,
                                if k not in ((152, 0), (153, 0), (133, 0), (133, 29305)))))
    return sorted(out)


@pytest.mark.parametrize("fmt", ["jsonl", "eve", "zeek", "zeek-json", "table"])
def test_live_equals_offline(topo, tmp_path, fmt):
    """flowscope live writes the records flowscope pcap writes on a capture of the same
    traffic, in every format (and, with jsonl, in IPFIX), apart from times and ids."""
    ifname, v4, v6, ns = topo
    ipfix = fmt == "jsonl"
    live, off, err, live_ipfix, off_ipfix = _live_and_offline(topo, tmp_path, fmt, ipfix)
    prefixes = (v4.rsplit(".", 1)[0] + ".", v6[:-1])
    got, want = _records(live, fmt, prefixes), _records(off, fmt, prefixes)
    assert got == want
    assert len(want) >= (8 if fmt == "table" else 10)  # the table shortens IPv6 endpoints
    if ipfix:
        live_drops, off_drops = [], []
        got_i = _ipfix_records(live_ipfix, prefixes, live_drops)
        want_i = _ipfix_records(off_ipfix, prefixes, off_drops)
        assert got_i == want_i and len(want_i) >= 10
        # kernel drops, live only: droppedPacketDeltaCount holds what the JSON Lines records say
        lines = [json.loads(x) for x in live.read_text().splitlines()]
        want_d = sorted((r["init_drops"], r["resp_drops"]) for r in lines
                        if r["event"] == "ended" and "init_drops" in r
                        and r["proto"] != "icmp6" and _ours(r["src_ip"], prefixes))
        assert sorted(live_drops) == want_d and (1, 0) in want_d and off_drops == []
    if fmt == "jsonl":
        rows = [dict(zip(COMPARED, r)) for r in want]
        kinds = {(r["proto"], r["reason"]) for r in rows}
        # the scripted mix really happened: clean closes, refused and aborted connects,
        # open flows at the end, the bulk transfer
        assert {("tcp", "fin"), ("tcp", "rst"), ("udp", "shutdown"), ("icmp", "shutdown"),
                ("tcp", "shutdown")} <= kinds
        assert any(r["src_ip"].startswith(v6[:-1]) and r["proto"] == "tcp" for r in rows)
        assert sum(1 for r in rows if r["dst_port"] == 7777) == 2  # the VLAN-tagged frames
        # their context: the first packet's VLAN id, and every flow's MACs
        assert sorted(r["vlan"] for r in rows if r["dst_port"] == 7777) == ["[100]", "[200]"]
        assert all(r["init_mac"] and r["resp_mac"] for r in rows)
        # two fragmented datagrams (3 fragments each, one with its first fragment last): one
        # flow with every fragment in it
        frag = [r for r in rows if r["proto"] == "udp" and 7778 in (r["src_port"], r["dst_port"])]
        assert [(r["init_pkts"], r["resp_pkts"]) for r in frag] == [(6, 0)]
        # the bulk transfer (live_traffic.py: BULK_BYTES to BULK_PORT): every byte once,
        # apart from what the server sent again (a busy machine's veth drops segments now
        # and then: 62 of 273 resent in one run)
        assert any(r["proto"] == "tcp" and r["dst_port"] == 8082
                   and r["resp_payload_bytes"] - r["resp_retrans_bytes"] == 300_000 for r in rows)
        assert sum(1 for r in rows if r["dst_port"] == 8083 and r["reason"] == "rst") == 1
        # DNS over UDP (an answer and an NXDOMAIN) and over TCP, each with its RTT
        dns = sorted((r["proto"], r["dns_query"], r["dns_qtype"], r["dns_rcode"],
                      r["dns_answers"]) for r, w in zip(rows, want) if r["dst_port"] == 53
                     and w[-1])
        assert dns == [("tcp", "flow.scope.test", 1, 0, 1), ("udp", "flow.scope.test", 1, 0, 1),
                       ("udp", "nowhere.test", 28, 3, 0)]
        # the datagram to the closed port: dropped by the peer's kernel (live only)
        drops = [json.loads(x) for x in live.read_text().splitlines()]
        drops = [(r.get("init_drops"), r.get("resp_drops"), r.get("drop_reason")) for r in drops
                 if r["event"] == "ended" and r.get("dst_port") == 9091]
        assert drops == [(1, 0, "NO_SOCKET")]
        assert not any("drop_reason" in line for line in off.read_text().splitlines())
        lossy = [r for r in rows if r["dst_port"] == 8084]  # retransmissions, holes, zero windows
        assert [(r["init_retrans_pkts"], r["init_ooo_pkts"], r["resp_zero_win"], r["history"])
                for r in lossy] == [(105, 2, 12, "Ss" + "D" * 14)]
        assert all(r["rtt_measured"] == (True, True, True) for r in lossy)
    if fmt == "zeek-json":  # T and W after the 16th history letter, sizes without a FIN
        lossy = [json.loads(line) for line in live.read_text().splitlines()
                 if '"id.resp_p":8084' in line]
        assert [(r["history"], r["orig_bytes"], r["resp_bytes"]) for r in lossy] == [
            ("ShADTaTwwTd", 3300, 50)]
    assert "ring_full 0" in err and "map_full 0" in err
    assert "in flight 0" in err  # the conservation identity holds at exit


def test_live_equals_offline_with_key_icmp(topo, tmp_path):
    """--key-icmp live and offline: the same records, ICMP keyed by type as Zeek keys it
    (the pings' echo flow apart from the port unreachable the closed UDP port draws)."""
    ifname, v4, v6, ns = topo
    live, off, err, _, _ = _live_and_offline(topo, tmp_path, "zeek", args=("--key-icmp",))
    prefixes = (v4.rsplit(".", 1)[0] + ".", v6[:-1])
    got, want = _records(live, "zeek", prefixes), _records(off, "zeek", prefixes)
    assert got == want and len(want) >= 10
    icmp = sorted((d["id.orig_p"], d["id.resp_p"]) for d in map(dict, want)
                  if d["proto"] == "icmp")
    assert ("8", "0") in icmp and ("3", "3") in icmp, icmp
    assert "ring_full 0" in err and "in flight 0" in err


def _links() -> dict[int, object]:
    """BPF link id -> type (bpftool 7.1 prints tcx links as type 11 with no interface)."""
    out = sh("bpftool", "-j", "link", "show", check=False).stdout or "[]"
    return {int(x["id"]): x["type"] for x in json.loads(out)}


def _link_ids_of(pid: int) -> set[int]:
    """The BPF links process ``pid`` holds open (their fds' ``link_id`` in fdinfo): the
    sensor's own, whatever other sensors run on the machine at the same time."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        m = re.search(r"^link_id:\s*(\d+)", text, re.M)
        if m:
            ids.add(int(m.group(1)))
    return ids


def _xdp_on(ifname: str) -> bool:
    return "xdp" in sh("ip", "link", "show", "dev", ifname).stdout


@pytest.mark.parametrize("sig,how", [(signal.SIGINT, ()), (signal.SIGTERM, ()),
                                     (signal.SIGKILL, ()),
                                     (signal.SIGKILL, ("--xdp-mode", "generic"))],
                         ids=["SIGINT", "SIGTERM", "SIGKILL", "SIGKILL-xdp"])
def test_no_leftovers_after_signal(topo, tmp_path, sig, how):
    ifname = topo[0]
    live, err = _start_live(ifname, tmp_path, *how)
    try:
        mine = _link_ids_of(live.pid)
        ours = {i: t for i, t in _links().items() if i in mine}
        # ingress (tcx on veth by default, XDP on request), tcx egress and the drop tracer's
        # tracepoint link (sensor.drops, default on); older bpftools name tcx links 11
        tcx = "tcx" if "tcx" in ours.values() else "11"
        want = [tcx, "xdp"] if how else [tcx, tcx]
        assert sorted(map(str, ours.values())) == sorted(want + ["raw_tracepoint"]), ours
        assert _xdp_on(ifname) == bool(how)
    finally:
        rc = _stop(live, sig)
    if sig != signal.SIGKILL:
        assert rc == 0, err.read_text()
        assert "flowscope: kernel: packets" in err.read_text()
    deadline = time.monotonic() + 10
    while _xdp_on(ifname) or set(ours) & set(_links()):  # freed after an RCU grace period
        assert time.monotonic() < deadline, (_xdp_on(ifname), set(ours) & set(_links()))
        time.sleep(0.1)


class _Collect:
    def __init__(self):
        self.recs = []

    def write_records(self, recs):
        self.recs.append(recs.copy())

    def all(self):
        from flowscope import layout

        return np.concatenate(self.recs) if self.recs else np.zeros(0, layout.EVENT_DTYPE)


def test_overload_stays_up_and_accounts_for_drops(topo):
    import resource
    import socket

    from flowscope import FlowTracker, TrackerConfig
    from flowscope.config import SensorConfig
    from flowscope.sensor.live import Sensor

    ifname, v4, _, _ = topo
    tracker = FlowTracker(config=TrackerConfig(max_flows=64, sweep_interval=None),
                          events="ended")
    out = _Collect()
    # 32 map entries, a one-page ring (~28 events): 60 new UDP flows overflow both
    sensor = Sensor([ifname], tracker, out,
                    SensorConfig(map_size=32, ring_size=4096, sweep_interval=0.2,
                                 report_interval=0, batch=64))
    lines = []
    sensor.report = lines.append
    sensor.start()
    try:
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # 40 TCP flows that open and reset at once (raw frames out of our side: TC egress),
        # each reset twice: once the ring is full their terminal events are lost, the entries
        # keep counting, and the map sync must still end them with every packet; then 60 UDP
        # flows find the map full
        local = str(ipaddress.ip_address(v4) - 1)
        frames = []
        for port in range(30000, 30040):
            for fl in (SYN, RST, RST):
                frames.append(eth(ipv4(local, v4, 6, tcp(port, 9, fl)), dst=MAC_B, src=MAC_A))
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
            raw.bind((ifname, 0))
            for f in frames:
                raw.send(f)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            for port in range(20000, 20060):  # bounded: 60 packets, nothing drained meanwhile
                u.sendto(b"x" * 16, (v4, port))
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            sensor.poll(0.05)
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 64 * 1024  # KiB
    finally:
        sensor.close()
    c = sensor.counters()
    assert c["map_full"] >= 60 - 32
    assert c["ring_full"] > 0
    # every matched packet the kernel counted reaches the tracker (through events or syncs),
    # every entry it created becomes a flow, and what it could not track is counted
    assert c["tracked_packets"] == c["matched"] == c["packets"] - c["unparseable"] - c["map_full"]
    assert c["flows_created"] == c["flows_new"] + c["flows_restart"]
    assert c["flows_created"] == c["flows_ended"] and c["open_flows"] == 0
    ended = out.all()
    assert len(ended) == c["flows_created"]
    assert int(ended["pkts"].sum()) == c["tracked_packets"]
    # the conservation identity: every packet the kernel counted is in an Ended record or
    # in a named drop counter, with terminal events lost on the way
    assert sensor.stats.lost_ends > 0
    assert c["packets"] == int(ended["pkts"].sum()) + c["unparseable"] + c["map_full"]
    assert c["open_packets"] == 0 and c["in_flight"] == 0
    assert "in flight 0" in sensor.counters_line(c)


# --- CLI errors (no root needed) ---------------------------------------------------------


def _cli(*args):
    return subprocess.run(FLOWSCOPE + list(args), capture_output=True, text=True, timeout=60,
                          cwd=REPO)


def test_live_missing_interface_is_one_line_exit_2():
    r = _cli("live", "-i", "fsnosuch0")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "fsnosuch0" in lines[0], r.stderr


def test_live_unknown_sensor_key_exit_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sensor:\n  ring_size: 65536\n  turbo: true\n")
    r = _cli("live", "-i", "lo", "--config", str(cfg))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "sensor.turbo" in lines[0], r.stderr


@pytest.mark.parametrize("body, key", [
    ("sensor:\n  ring_size: 5000\n", "sensor.ring_size"),
    ("sensor:\n  hooks: [ingress, sideways]\n", "sensor.hooks"),
    ("sensor:\n  xdp_mode: turbo\n", "sensor.xdp_mode"),
    ("sensor:\n  sweep_interval: 0\n", "sensor.sweep_interval"),
    ("sensor:\n  map_size: -1\n", "sensor.map_size"),
    ("sensor:\n  report_interval: fast\n", "sensor.report_interval"),
])
def test_live_bad_sensor_values_exit_2(tmp_path, body, key):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(body)
    r = _cli("live", "-i", "lo", "--config", str(cfg))
    assert r.returncode == 2 and key in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_print_bpf_shows_program_and_cflags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sensor:\n  map_size: 4096\n  ring_size: 65536\n")
    r = _cli("live", "-i", "lo", "--config", str(cfg), "--print-bpf")
    assert r.returncode == 0
    assert "fs_xdp" in r.stdout and "-DFS_MAX_FLOWS=4096 -DFS_RING_PAGES=16" in r.stdout


def test_idle_flows_are_synced_and_ended_then_restart(topo):
    import socket

    from flowscope import FlowTracker, TrackerConfig, layout
    from flowscope.config import SensorConfig
    from flowscope.sensor.live import Sensor

    ifname, v4, _, _ = topo
    tracker = FlowTracker(config=TrackerConfig(udp_timeout=0.5, sweep_interval=None),
                          events="ended")
    out = _Collect()
    sensor = Sensor([ifname], tracker, out,
                    SensorConfig(sweep_interval=0.1, report_interval=0, hooks=("egress",)))
    sensor.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("0.0.0.0", 0))
            for _ in range(3):  # one event, two packets aggregated in the kernel
                u.sendto(b"abc", (v4, 5555))
            end = time.monotonic() + 3.0
            while time.monotonic() < end and not out.recs:
                sensor.poll(0.05)
            assert out.recs, "the idle flow was not ended"
            first = out.all()
            u.sendto(b"abcd", (v4, 5555))  # same key, after the timeout: a new flow
            for _ in range(4):
                sensor.poll(0.02)
    finally:
        sensor.close()
    ended = out.all()
    udp = ended[(ended["key"][:, 4] >> 32 & 0xFF) == 17]
    assert [int(r) for r in udp["reason"]] == [layout.END_IDLE, layout.END_SHUTDOWN]
    assert udp["pkts"][:, 0].tolist() == [3, 1] and udp["payload"][:, 0].tolist() == [9, 4]
    assert len(first) >= 1 and sensor.stats.idle_removed >= 1


def _free_tcp_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_are_served_and_interfaces_come_from_the_config(topo, tmp_path):
    """Interfaces from sensor.interfaces, output from the output: section, metrics scraped."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    ifname, v4, v6, ns = topo
    port = _free_tcp_port()
    out = tmp_path / "flows.jsonl"
    cfg = tmp_path / "flowscope.yaml"
    cfg.write_text(f"sensor:\n  interfaces: [{ifname}]\n  sweep_interval: 0.5\n"
                   f"output:\n  format: jsonl\n  path: {out}\n  metrics: 127.0.0.1:{port}\n")
    err = tmp_path / "live.err"
    proc = subprocess.Popen(FLOWSCOPE + ["live", "--config", str(cfg), "--duration", "60"],
                            stdout=subprocess.DEVNULL, stderr=open(err, "w"), cwd=REPO)
    try:
        wait_for(err, f"Tracking flows on {ifname}", proc)
        sh("ip", "netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", "-W", "1",
            v4.rsplit(".", 1)[0] + ".1", check=False)
        families = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            families = {f.name: f for f in text_string_to_metric_families(text.decode())}
            pk = families.get("flowscope_seen_packets")
            if pk and pk.samples and pk.samples[0].value >= 6:
                break
            time.sleep(0.3)
        assert families["flowscope_seen_packets"].samples[0].value >= 6  # 3 echo requests + replies
        assert families["flowscope_flows_created"].samples[0].value >= 1
        drops = {s.labels["reason"] for s in families["flowscope_drops"].samples}
        assert {"map_full", "ring_full"} <= drops
    finally:
        assert _stop(proc) == 0, err.read_text()
    assert any(json.loads(line)["proto"] == "icmp" for line in out.read_text().splitlines())


def test_print_bpf_drops_switch(tmp_path):
    """sensor.drops (default on) compiles the drop tracer with this kernel's sk_buff offsets;
    sensor.drops: false leaves it out."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sensor:\n  map_size: 4096\n")
    on = _cli("live", "-i", "lo", "--config", str(cfg), "--print-bpf")
    assert on.returncode == 0 and "fs_kfree_skb" in on.stdout
    flags = on.stdout.splitlines()[-1]
    assert "-DFS_DROPS=1" in flags and "-DFS_DNS=1" in flags
    if os.path.exists("/sys/kernel/btf/vmlinux"):
        assert "-DFS_SKB_HEAD=" in flags and "-DFS_NETDEV_IFINDEX=" in flags
    cfg.write_text("dns: false\nsensor:\n  map_size: 4096\n  drops: false\n")
    off = _cli("live", "-i", "lo", "--config", str(cfg), "--print-bpf")
    flags = off.stdout.splitlines()[-1]
    assert off.returncode == 0 and "-DFS_DROPS=0" in flags and "-DFS_DNS=0" in flags
    assert "FS_SKB_HEAD" not in flags
