"""Running the live sensor: prompt records, coexistence, interfaces that come and go, limits.

Root + BPF tests (skipped without them, failed under FLOWSCOPE_REQUIRE_BPF=1), each on a netns
and veth pair of its own, removed on the way out: an ended record reaches a file, a rotated
file and a pipe within about a second; other programs on the same tcx hook keep counting
before and after ours; an interface already held by another XDP program is refused unless
``sensor.ingress: tc``; native and generic XDP; interfaces deleted, re-created, set down and
up. The config limit tests at the end need no root.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bpf_helpers import free_subnet, frame_to, require_bpf, sh, stop as _stop, wait_for

REPO = Path(__file__).resolve().parents[1]
FLOWSCOPE = [sys.executable, "-m", "flowscope"]


_seq = [0]


def _veth(tag: str, ns: str, n: int):
    """A veth pair ``fso{tag}a`` (here, 10.205.n.1, n moved on past a subnet in use) --
    ``fso{tag}b`` (in ``ns``, .2)."""
    a, b = f"fso{tag}a", f"fso{tag}b"
    sh("ip", "link", "del", a, check=False)
    n = free_subnet(205, n)
    sh("ip", "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns)
    sh("ip", "addr", "add", f"10.205.{n}.1/24", "dev", a)
    sh("ip", "link", "set", a, "up")
    sh("ip", "-n", ns, "addr", "add", f"10.205.{n}.2/24", "dev", b)
    sh("ip", "-n", ns, "link", "set", b, "up")
    sh("ethtool", "-K", a, "gso", "off", "tso", "off", "gro", "off", check=False)
    return a, b, f"10.205.{n}.2"


@pytest.fixture
def net():
    """A netns and a factory of veth pairs into it; everything is removed afterwards."""
    require_bpf("ip", "ethtool", "bpftool")
    _seq[0] += 1
    tag = f"{os.getpid() % 1000}{_seq[0]}"
    ns = f"fsop{tag}"
    made = []

    def pair(i: int = 0):
        n = (os.getpid() + 7 * _seq[0] + i) % 200 + 20
        a, b, peer = _veth(f"{tag}{i}", ns, n)
        made.append(a)
        return a, peer

    sh("ip", "netns", "del", ns, check=False)
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield ns, pair
    finally:
        for a in made:
            sh("ip", "link", "del", a, check=False)
        sh("ip", "netns", "del", ns, check=False)


def _live(args, err: Path, stdout=subprocess.DEVNULL):
    proc = subprocess.Popen(FLOWSCOPE + ["live", "--duration", "90", *args], stdout=stdout,
                            stderr=open(err, "w"), cwd=REPO)
    try:
        wait_for(err, "Tracking flows on", proc, 180)  # a cold numba cache compiles first
    except BaseException:
        _stop(proc, signal.SIGKILL)
        raise
    return proc


def _tcp_server(ns: str, port: int):
    """A one-connection echo server in ``ns`` that closes after the client's FIN."""
    code = ("import socket,sys\n"
            "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('0.0.0.0', {port})); s.listen(4); s.settimeout(30)\n"
            "print('ready', flush=True)\n"
            "c,_=s.accept(); c.settimeout(10)\n"
            "while True:\n"
            "    d=c.recv(4096)\n"
            "    if not d: break\n"
            "    c.sendall(d)\n"
            "c.close()\n")
    srv = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                           stdout=subprocess.PIPE, text=True)
    assert srv.stdout.readline().strip() == "ready"
    return srv


def _tcp_exchange(peer: str, port: int) -> float:
    """Connect, send, read the echo, half-close, read to EOF (history SsDdFf, in that order);
    returns the monotonic time the FIN handshake ended."""
    with socket.create_connection((peer, port), timeout=5) as c:
        c.sendall(b"hello")
        got = b""
        while len(got) < 5:
            got += c.recv(5 - len(got))
        c.shutdown(socket.SHUT_WR)
        while c.recv(4096):
            pass
        return time.monotonic()  # the server's FIN is in; our last ACK left with it


def _ended_tcp(text: str, port: int) -> list[dict]:
    out = []
    for line in text.splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("event") == "ended" and r.get("dst_port") == port:
            out.append(r)
    return out


# --- 4: records leave promptly ------------------------------------------------------------


def _first_seen(read, port: int, limit: float) -> float | None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if _ended_tcp(read(), port):
            return time.monotonic()
        time.sleep(0.01)
    return None


@pytest.mark.parametrize("where", ["file", "rotated", "pipe", "terminal"])
def test_ended_record_is_written_within_a_second(net, tmp_path, where):
    ns, pair = net
    ifname, peer = pair()
    port = 20000 + _seq[0]
    err = tmp_path / "live.err"
    out = tmp_path / "flows.jsonl"
    args = ["-i", ifname, "--format", "jsonl"]
    chunks: list[str] = []
    if where == "file":
        args += ["-o", str(out)]
    elif where == "rotated":
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"output:\n  path: {out}\n  rotate_size: 1M\n  keep: 2\n")
        args += ["--config", str(cfg)]
    tty = os.openpty() if where == "terminal" else None
    stdout = {"pipe": subprocess.PIPE, "terminal": tty and tty[1]}.get(where, subprocess.DEVNULL)
    proc = _live(args, err, stdout=stdout)
    try:
        if where in ("pipe", "terminal"):
            def pump():
                if tty is None:
                    for line in proc.stdout:  # ends when the sensor exits
                        chunks.append(line.decode())
                    return
                while True:
                    try:
                        data = os.read(tty[0], 65536)
                    except OSError:  # EIO: the sensor closed the terminal
                        return
                    if not data:
                        return
                    chunks.append(data.decode(errors="replace").replace("\r\n", "\n"))
            threading.Thread(target=pump, daemon=True).start()
            read = lambda: "".join(chunks)  # noqa: E731
        else:
            read = lambda: out.read_text() if out.exists() else ""  # noqa: E731
        srv = _tcp_server(ns, port)
        try:
            t_end = _tcp_exchange(peer, port)
            seen = _first_seen(read, port, 5.0)
        finally:
            srv.kill()
            srv.wait(5)
        assert seen is not None, f"no ended record within 5 s: {err.read_text()}"
        latency = seen - t_end
        print(f"flush latency ({where}): {latency * 1000:.0f} ms")
        assert latency < 1.0
        recs = _ended_tcp(read(), port)
        assert [r["reason"] for r in recs] == ["fin"]
    finally:
        try:
            assert _stop(proc) == 0, err.read_text()
        finally:
            if tty is not None:
                os.close(tty[1])
                os.close(tty[0])


def test_idle_udp_record_is_written_within_a_second_of_its_timeout(net, tmp_path):
    ns, pair = net
    ifname, peer = pair()
    err = tmp_path / "live.err"
    out = tmp_path / "flows.jsonl"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("timeouts: {udp: 0.5}\nsensor:\n  sweep_interval: 0.2\n")
    proc = _live(["-i", ifname, "--format", "jsonl", "-o", str(out), "--config", str(cfg)], err)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.sendto(b"x", (peer, 9))
            t_last = time.monotonic()
        seen = None
        end = time.monotonic() + 5.0
        while time.monotonic() < end and seen is None:
            for r in _ended_tcp(out.read_text() if out.exists() else "", 9):
                if r["proto"] == "udp":
                    seen = time.monotonic()
            time.sleep(0.01)
        assert seen is not None, err.read_text()
        # due 0.5 s after the packet, found by a sweep within 0.2 s, flushed within 1 s
        print(f"idle record after {seen - t_last:.2f} s (timeout 0.5 s)")
        assert seen - t_last < 0.5 + 0.2 + 1.0
    finally:
        assert _stop(proc) == 0, err.read_text()


def test_sigterm_flushes_open_flows(net, tmp_path):
    ns, pair = net
    ifname, peer = pair()
    err = tmp_path / "live.err"
    out = tmp_path / "flows.jsonl"
    proc = _live(["-i", ifname, "--format", "jsonl", "-o", str(out)], err)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.sendto(b"x", (peer, 9))
        time.sleep(0.3)
    finally:
        assert _stop(proc, signal.SIGTERM) == 0, err.read_text()
    recs = [r for r in _ended_tcp(out.read_text(), 9) if r["proto"] == "udp"]
    assert [r["reason"] for r in recs] == ["shutdown"]


# --- 7: limits checked before compiling ---------------------------------------------------


def _cli(*args):
    return subprocess.run(FLOWSCOPE + list(args), capture_output=True, text=True, timeout=60,
                          cwd=REPO)


@pytest.mark.parametrize("body, key", [
    ("sensor:\n  ring_size: 4294967296\n", "sensor.ring_size"),
    ("sensor:\n  ring_size: 2147483648\n  map_size: 268435456\n", "sensor.map_size"),
    ("sensor:\n  map_size: 268435456\n", "sensor.map_size"),
    ("max_flows: 268435456\n", "max_flows"),
    ("sensor:\n  map_size: 2147483648\n", "sensor.map_size"),
    ("sensor:\n  batch: 1099511627776\n", "sensor.batch"),
])
def test_limits_are_one_line_exit_2_before_compiling(tmp_path, body, key):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(body)
    t0 = time.monotonic()
    r = _cli("live", "-i", "lo", "--config", str(cfg), "--duration", "1", "-o", os.devnull)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], r.stderr
    assert time.monotonic() - t0 < 20  # nothing was compiled or allocated


def test_memory_check_uses_the_per_entry_cost():
    from flowscope.config import ConfigError, SensorConfig, TrackerConfig
    from flowscope.sensor import layout as SL
    from flowscope.sensor.settings import check_limits, map_bytes, sensor_bytes

    t = TrackerConfig()
    s = SensorConfig(map_size=1 << 20)
    entry = 48 + SL.FLOW_KEY_DTYPE.itemsize + SL.FLOW_DTYPE.itemsize  # both multiples of 8
    assert map_bytes(1 << 20) == (1 << 20) * entry + (1 << 20) * 16
    assert map_bytes(3 << 20) == (3 << 20) * entry + (4 << 20) * 16  # buckets: a power of 2
    need = sensor_bytes(s, t)
    check_limits(s, t, available=need)
    with pytest.raises(ConfigError, match=r"^sensor\.map_size: 1048576 flow map entries"):
        check_limits(s, t, available=need - 1)
    big_ring = SensorConfig(map_size=1024, ring_size=1 << 30)
    with pytest.raises(ConfigError, match=r"^sensor\.ring_size: "):
        check_limits(big_ring, t, available=1 << 29)


def test_slow_start_is_announced_in_one_line():
    from flowscope.config import SensorConfig, TrackerConfig
    from flowscope.sensor.settings import slow_start_line

    t = TrackerConfig()
    assert slow_start_line(SensorConfig(map_size=1 << 17), t) is None
    line = slow_start_line(SensorConfig(map_size=1 << 26), t)
    assert "67108864-entry flow map" in line and "\n" not in line


def test_compile_failure_is_one_line_with_the_output_in_a_file(capfd, monkeypatch):
    require_bpf()
    from flowscope.sensor import loader
    from flowscope.sensor.live import StartError, load_quietly

    monkeypatch.delenv("FLOWSCOPE_BPF_DEBUG", raising=False)
    good = loader.program_source
    monkeypatch.setattr(loader, "program_source", lambda: good() + "\nint broken = ;\n")
    with pytest.raises(StartError) as info:
        load_quietly(loader, {"max_flows": 1024, "ring_pages": 1})
    msg = str(info.value)
    assert "\n" not in msg and "BPF compile failed" in msg
    log = Path(msg.split("compiler output in ")[1].split(")")[0])
    try:
        assert "broken" in log.read_text()
        out, err = capfd.readouterr()
        assert "broken" not in err and "error:" not in err  # nothing on the terminal
    finally:
        log.unlink()


# --- 5: coexistence -----------------------------------------------------------------------

COUNTER_TC = """
BPF_ARRAY(cnt, u64, 1);
int count(struct __sk_buff *skb)
{
	int k = 0;
	u64 *v = cnt.lookup(&k);
	if (v)
		__sync_fetch_and_add(v, 1);
	return -1; /* TCX_NEXT */
}
"""


def _counter_prog():
    """A tiny counting TC program (its own BCC module): ``(bpf, prog fd, read())``."""
    from flowscope.sensor.loader import import_bcc

    bcc = import_bcc()
    b = bcc.BPF(text=COUNTER_TC.encode())
    fn = b.load_func(b"count", bcc.BPF.SCHED_CLS)
    table = b.get_table(b"cnt")
    return b, fn.fd, lambda: int(table[table.Key(0)].value)


def _ping(peer: str, n: int = 3):
    r = sh("ping", "-c", str(n), "-i", "0.2", "-W", "1", peer, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("hook", ["egress", "ingress"])
def test_programs_before_and_after_ours_on_tcx_keep_counting(net, hook):
    from flowscope import FlowTracker, TrackerConfig
    from flowscope.config import SensorConfig
    from flowscope.sensor import attach
    from flowscope.sensor.live import Sensor

    ns, pair = net
    ifname, peer = pair()
    where = attach.BPF_TCX_EGRESS if hook == "egress" else attach.BPF_TCX_INGRESS
    progs, links = [], []
    sensor = None
    try:
        for _ in range(2):
            progs.append(_counter_prog())
        ifindex = attach.ifindex_of(ifname)
        # first of the chain, then ours (appended), then last of the chain
        links.append(attach.link_create(progs[0][1], ifindex, where, attach.BPF_F_BEFORE))
        tracker = FlowTracker(config=TrackerConfig(sweep_interval=None), events="ended")
        sensor = Sensor([ifname], tracker, lambda recs: None,
                        SensorConfig(hooks=(hook,), ingress="tc", report_interval=0))
        sensor.writer = type("W", (), {"write_records": lambda self, r: None})()
        sensor.start()
        links.append(attach.link_create(progs[1][1], ifindex, where, attach.BPF_F_AFTER))
        b0, a0, o0 = progs[0][2](), progs[1][2](), sensor.counters()["packets"]
        _ping(peer, 3)
        sensor.poll(0.05)
        before, after = progs[0][2]() - b0, progs[1][2]() - a0
        ours = sensor.counters()["packets"] - o0
        assert before >= 3 and after >= 3, (before, after)
        assert after == before == ours  # ours counted and handed every packet on
    finally:
        if sensor is not None:
            sensor.close()
        for fd in links:
            os.close(fd)
        for b, _, _ in progs:
            b.cleanup()


_HOLDER = """
import os, sys
from flowscope.sensor import attach, loader
bcc = loader.import_bcc()
b = bcc.BPF(text=b"int pass_all(struct xdp_md *ctx) { return XDP_PASS; }")
fn = b.load_func(b"pass_all", bcc.BPF.XDP)
ifname, how = sys.argv[1], sys.argv[2]
if how == "link":
    fd = attach.link_create(fn.fd, attach.ifindex_of(ifname), attach.BPF_XDP,
                            attach.XDP_FLAGS_SKB_MODE)
else:
    b.attach_xdp(ifname, fn, attach.XDP_FLAGS_SKB_MODE)
print("ready", flush=True)
sys.stdin.read()
if how == "netlink":
    b.remove_xdp(ifname, attach.XDP_FLAGS_SKB_MODE)
"""


@pytest.mark.parametrize("how", ["link", "netlink"])
def test_xdp_held_by_another_program_exit_2_then_tc_ingress(net, tmp_path, how):
    ns, pair = net
    ifname, peer = pair()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, ifname, how], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        prog_before = sh("ip", "-j", "link", "show", "dev", ifname).stdout
        # an XDP mode asks for XDP (ingress auto takes tcx on veth and never meets the holder)
        r = subprocess.run(FLOWSCOPE + ["live", "-i", ifname, "--xdp-mode", "generic",
                                        "--duration", "5", "-o", os.devnull],
                           capture_output=True, text=True, timeout=120, cwd=REPO)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "sensor.ingress: tc" in lines[0] and ifname in lines[0]
        assert sh("ip", "-j", "link", "show", "dev", ifname).stdout == prog_before
        # the offered way out: count ingress on tcx, the other program stays
        cfg = tmp_path / "c.yaml"
        cfg.write_text("sensor:\n  ingress: tc\n")
        err = tmp_path / "live.err"
        out = tmp_path / "flows.jsonl"
        proc = _live(["-i", ifname, "--config", str(cfg), "--format", "jsonl", "-o", str(out)],
                     err)
        try:
            assert f"{ifname} (tcx ingress + tcx egress, promiscuous)" in err.read_text()
            _ping(peer, 2)
        finally:
            assert _stop(proc) == 0, err.read_text()
        recs = [json.loads(line) for line in out.read_text().splitlines()]
        icmp = [r for r in recs if r["proto"] == "icmp" and r["dst_ip"] == peer]
        assert [(r["init_pkts"], r["resp_pkts"]) for r in icmp] == [(2, 2)]
        assert sh("ip", "-j", "link", "show", "dev", ifname).stdout == prog_before
    finally:
        holder.stdin.close()
        holder.wait(20)


def _exchange_records(args, tmp_path, ns, ifname, peer, port) -> dict:
    err = tmp_path / f"live{port}.err"
    out = tmp_path / f"flows{port}.jsonl"
    proc = _live(["-i", ifname, "--format", "jsonl", "-o", str(out), *args], err)
    try:
        srv = _tcp_server(ns, port)
        try:
            _tcp_exchange(peer, port)
        finally:
            srv.wait(10)
        _ping(peer, 2)
        time.sleep(0.3)
    finally:
        assert _stop(proc) == 0, err.read_text()
    keep = ("proto", "reason", "state", "history", "init_pkts", "resp_pkts", "init_bytes",
            "resp_bytes", "init_payload_bytes", "resp_payload_bytes")
    got = {}
    for line in out.read_text().splitlines():
        r = json.loads(line)
        if r["event"] == "ended" and r["dst_ip"] == peer:
            got[r["proto"]] = tuple(r[k] for k in keep)
    return got, err.read_text()


def test_tc_ingress_and_xdp_modes_give_the_same_records(net, tmp_path):
    ns, pair = net
    ifname, peer = pair()
    cfg = tmp_path / "tc.yaml"
    cfg.write_text("sensor:\n  ingress: tc\n")
    runs = {}
    for i, (name, args) in enumerate([("native", ["--xdp-mode", "native"]),
                                      ("generic", ["--xdp-mode", "generic"]),
                                      ("auto", []),
                                      ("tc", ["--config", str(cfg)])]):
        runs[name], text = _exchange_records(args, tmp_path, ns, ifname, peer, 21000 + i)
        # auto: tcx on veth (attach.SKB_NATIVE_DRIVERS); an XDP mode asks for XDP
        want = {"native": "xdp native", "generic": "xdp generic", "auto": "tcx ingress",
                "tc": "tcx ingress"}[name]
        assert f"{ifname} ({want} + tcx egress, promiscuous)" in text, text
    assert set(runs["native"]) == {"tcp", "icmp"}
    assert runs["native"]["tcp"][1] == "fin"
    assert runs["native"] == runs["generic"] == runs["auto"] == runs["tc"]


def test_auto_xdp_mode_is_generic_on_veth_only(net, monkeypatch):
    """``xdp_mode: auto`` asks the driver (ETHTOOL_GDRVINFO): veth gets generic XDP at once,
    any other driver native first (a bridge has no native XDP: generic after the refusal);
    ``ingress: auto`` takes tcx where ``xdp_mode: auto`` would take generic XDP."""
    from flowscope.sensor import attach, loader

    ns, pair = net
    ifname, _peer = pair()
    br = f"{ns}br"
    sh("ip", "link", "add", br, "type", "bridge")
    assert attach.driver_of(ifname) == "veth" and attach.driver_of(br) == "bridge"
    assert attach.driver_of("fs-no-such-if") == ""
    seen = []
    real = attach.link_create

    def spy(prog_fd, ifindex, attach_type, flags=0, relative=0):
        if attach_type == attach.BPF_XDP:
            seen.append("native" if flags & attach.XDP_FLAGS_DRV_MODE else "generic")
        elif attach_type == attach.BPF_TCX_INGRESS:
            seen.append("tcx")
        return real(prog_fd, ifindex, attach_type, flags, relative)

    monkeypatch.setattr(attach, "link_create", spy)
    m = loader.load()
    try:
        for dev, tried in ((ifname, ["generic"]), (br, ["native", "generic"])):
            seen.clear()
            with attach.attach(m, dev, xdp_mode="auto", egress=False) as at:
                assert at.xdp_mode == "generic" and at.label == "xdp generic"
            assert seen == tried, (dev, seen)
        # ingress auto: tcx at once on veth; native first elsewhere, tcx after the refusal
        for dev, tried in ((ifname, ["tcx"]), (br, ["native", "tcx"])):
            seen.clear()
            with attach.attach(m, dev, xdp_mode="auto", egress=False, ingress="auto") as at:
                assert at.label == "tcx ingress"
            assert seen == tried, (dev, seen)
        # an XDP mode other than auto: XDP in that mode
        seen.clear()
        with attach.attach(m, ifname, xdp_mode="generic", egress=False, ingress="auto") as at:
            assert at.label == "xdp generic" and seen == ["generic"]
        # a kernel without tcx (before 6.6) refuses the link: generic XDP then
        def no_tcx(prog_fd, ifindex, attach_type, flags=0, relative=0):
            if attach_type == attach.BPF_TCX_INGRESS:
                seen.append("tcx")
                raise OSError(errno.EINVAL, "tcx links unsupported")
            return spy(prog_fd, ifindex, attach_type, flags, relative)

        monkeypatch.setattr(attach, "link_create", no_tcx)
        seen.clear()
        with attach.attach(m, ifname, xdp_mode="auto", egress=False, ingress="auto") as at:
            assert at.label == "xdp generic" and seen == ["tcx", "generic"]
    finally:
        m.close()
        sh("ip", "link", "del", br, check=False)


# --- 6: interfaces come and go ------------------------------------------------------------


def _udp(peer: str, port: int, n: int = 1):
    """``n`` datagrams to ``peer:port`` from source port ``port + 10000`` (one flow per port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        u.bind(("0.0.0.0", port + 10000))
        for _ in range(n):
            u.sendto(b"x", (peer, port))


def _records(out: Path) -> list[dict]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def _wait_records(out: Path, pred, limit: float = 5.0) -> list[dict]:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        got = [r for r in _records(out) if pred(r)]
        if got:
            return got
        time.sleep(0.05)
    return []


def test_only_interface_deleted_ends_its_flows_and_exits_1(net, tmp_path):
    ns, pair = net
    ifname, peer = pair()
    err = tmp_path / "live.err"
    out = tmp_path / "flows.jsonl"
    proc = _live(["-i", ifname, "--format", "jsonl", "-o", str(out)], err)
    try:
        _udp(peer, 5001, 2)
        time.sleep(0.3)
        sh("ip", "link", "del", ifname)
        rc = proc.wait(10)
    finally:
        _stop(proc, signal.SIGKILL)
    text = err.read_text()
    assert rc == 1, text
    assert re.search(rf"interface {ifname} is gone: \d+ of its flows ended \(shutdown\); "
                     r"none left", text), text
    udp = [r for r in _records(out) if r["proto"] == "udp" and r["dst_port"] == 5001]
    assert [(r["reason"], r["init_pkts"]) for r in udp] == [("shutdown", 2)]


def test_one_of_two_interfaces_deleted_the_other_goes_on(net, tmp_path):
    ns, pair = net
    if1, peer1 = pair(0)
    if2, peer2 = pair(1)
    err = tmp_path / "live.err"
    out = tmp_path / "flows.jsonl"
    proc = _live(["-i", if1, "-i", if2, "--format", "jsonl", "-o", str(out)], err)
    try:
        _udp(peer1, 5001, 2)
        _udp(peer2, 5002, 3)
        time.sleep(0.3)
        sh("ip", "link", "del", if1)
        gone = _wait_records(out, lambda r: r["dst_port"] == 5001 and r["proto"] == "udp")
        assert [(r["reason"], r["init_pkts"]) for r in gone] == [("shutdown", 2)], \
            err.read_text()
        assert proc.poll() is None, err.read_text()
        _udp(peer2, 5002, 1)  # the other interface is still counted
        time.sleep(0.3)
    finally:
        assert _stop(proc) == 0, err.read_text()
    text = err.read_text()
    assert re.search(rf"interface {if1} is gone: \d+ of its flows ended \(shutdown\); "
                     rf"still tracking {if2}\n", text), text
    other = [r for r in _records(out) if r["dst_port"] == 5002 and r["proto"] == "udp"]
    assert [(r["reason"], r["init_pkts"]) for r in other] == [("shutdown", 4)]


def test_interface_that_returns_is_attached_again(net, tmp_path):
    ns, pair = net
    ifname, peer = pair()
    err = tmp_path / "live.err"
    out = tmp_path / "flows.jsonl"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sensor:\n  reattach: true\n")
    proc = _live(["-i", ifname, "--format", "jsonl", "-o", str(out), "--config", str(cfg)],
                 err)
    try:
        _udp(peer, 5001, 1)
        time.sleep(0.3)
        sh("ip", "link", "del", ifname)
        wait_for(err, f"interface {ifname} is gone", proc, 5)
        assert proc.poll() is None
        pair()  # the same names again
        wait_for(err, f"interface {ifname} is back: tracking it again", proc, 5)
        _udp(peer, 5003, 2)
        time.sleep(0.3)
    finally:
        assert _stop(proc) == 0, err.read_text()
    recs = [r for r in _records(out) if r["proto"] == "udp"]
    got = sorted((r["dst_port"], r["reason"], r["init_pkts"]) for r in recs)
    assert got == [(5001, "shutdown", 1), (5003, "shutdown", 2)], err.read_text()


def test_link_down_and_up_keeps_the_attachment(net, tmp_path):
    ns, pair = net
    ifname, peer = pair()
    err = tmp_path / "live.err"
    out = tmp_path / "flows.jsonl"
    proc = _live(["-i", ifname, "--format", "jsonl", "-o", str(out)], err)
    try:
        _udp(peer, 5001, 1)
        sh("ip", "link", "set", ifname, "down")
        time.sleep(1.5)  # at least one interface check while down
        sh("ip", "link", "set", ifname, "up")
        end = time.monotonic() + 5  # wait until the peer answers again
        while sh("ping", "-c", "1", "-W", "1", peer, check=False).returncode != 0:
            assert time.monotonic() < end
        _udp(peer, 5001, 2)
        time.sleep(0.3)
        assert proc.poll() is None
    finally:
        assert _stop(proc) == 0, err.read_text()
    assert "is gone" not in err.read_text()
    udp = [r for r in _records(out) if r["proto"] == "udp" and r["dst_port"] == 5001]
    assert [(r["reason"], r["init_pkts"]) for r in udp] == [("shutdown", 3)]


# --- the new sensor keys (no root needed) -------------------------------------------------


def test_new_sensor_keys_and_their_defaults():
    from flowscope.config import ConfigError, sensor_settings

    s = sensor_settings({})
    assert (s.ingress, s.xdp_mode, s.reattach) == ("auto", "auto", False)
    s = sensor_settings({"ingress": "tc", "xdp_mode": "native", "reattach": True})
    assert (s.ingress, s.xdp_mode, s.reattach) == ("tc", "native", True)
    for key, bad in (("ingress", "egress"), ("xdp_mode", "turbo"), ("reattach", "yes")):
        with pytest.raises(ConfigError, match=rf"^sensor\.{key}: "):
            sensor_settings({key: bad})


def test_engine_keys_match_the_tracker_keys():
    """A kernel key turned into engine key words ends exactly that flow in the engine."""
    import numpy as np

    from flowscope import FlowTracker, TrackerConfig, layout
    from flowscope.sensor import layout as SL
    from flowscope.sensor.live import _engine_keys
    from flowscope.sensor.rows import sync_rows

    keys = np.zeros(2, SL.FLOW_KEY_DTYPE)
    vals = np.zeros(2, SL.FLOW_DTYPE)
    for i, (proto, pa, pb) in enumerate(((17, 1000, 53), (1, 0, 0))):
        keys[i]["a_lo"], keys[i]["b_lo"] = 0x0A000001, 0x0A000002
        keys[i]["l3"], keys[i]["proto"], keys[i]["port_a"], keys[i]["port_b"] = 4, proto, pa, pb
        vals[i]["pkts"] = (2, 1)
        vals[i]["first_ns"], vals[i]["last_ns"] = 10, 20
    t = FlowTracker(config=TrackerConfig(sweep_interval=None), events="ended")
    for _ in t.process(sync_rows(keys, vals, 0)):
        pass
    assert t.stats.open_flows == 2
    ended = np.concatenate(list(t.process_end(_engine_keys(keys[:1]), 30)))
    assert len(ended) == 1 and int(ended["reason"][0]) == layout.END_SHUTDOWN
    assert t.stats.open_flows == 1
    assert ended["pkts"][0].tolist() == [2, 1]


def _promiscuity(ifname: str) -> int:
    return json.loads(sh("ip", "-d", "-j", "link", "show", "dev", ifname).stdout)[0][
        "promiscuity"]


@pytest.mark.parametrize("end", ["sigint", "sigkill"])
def test_promiscuous_while_attached_and_never_after(net, tmp_path, end):
    """A sensor on a mirror port must see frames addressed to other hosts: each interface is
    promiscuous while the sensor is attached (one count of the device's promiscuity, so a
    tcpdump beside it keeps its own), and is not once the sensor is gone, even by SIGKILL;
    ``--no-promisc`` leaves it alone."""
    _ns, pair = net
    ifname, _peer = pair()
    assert _promiscuity(ifname) == 0
    err = tmp_path / "live.err"
    proc = _live(["-i", ifname, "-o", os.devnull], err)
    try:
        assert f"{ifname} (tcx ingress + tcx egress, promiscuous)" in err.read_text()
        assert _promiscuity(ifname) == 1
    finally:
        if end == "sigkill":
            _stop(proc, signal.SIGKILL)
        else:
            assert _stop(proc) == 0, err.read_text()
    assert _promiscuity(ifname) == 0
    proc = _live(["-i", ifname, "--no-promisc", "-o", os.devnull], err)
    try:
        assert f"{ifname} (tcx ingress + tcx egress)" in err.read_text()
        assert _promiscuity(ifname) == 0
    finally:
        assert _stop(proc) == 0, err.read_text()


# --- segmentation offloads ------------------------------------------------------------------


def _ethtool_k(ifname: str) -> set[str]:
    """The merging offloads ``ethtool -k`` shows on (the reference for attach.offloads_on)."""
    names = {"large-receive-offload": "LRO", "generic-receive-offload": "GRO",
             "tcp-segmentation-offload": "TSO", "generic-segmentation-offload": "GSO"}
    on = set()
    for line in sh("ethtool", "-k", ifname).stdout.splitlines():
        key, _, val = line.partition(":")
        if key.strip() in names and val.split() and val.split()[0] == "on":
            on.add(names[key.strip()])
    return on


def test_offload_notice_names_what_merges_packets(net, tmp_path):
    """GRO, LRO, TSO and GSO hand the hooks merged packets, each counted as one (as tcpdump on
    the host shows them, not as the wire carries them): the sensor names the ones that are on
    after its start-up line, with the ethtool command that turns them off, and says nothing
    when they are off."""
    from flowscope.sensor import attach

    _ns, pair = net
    ifname, _peer = pair()  # made with gso, tso and gro off
    assert attach.offloads_on(ifname) == _ethtool_k(ifname) == set()
    sh("ethtool", "-K", ifname, "gro", "on", "tso", "on", "gso", "on")
    assert attach.offloads_on(ifname) == _ethtool_k(ifname) == {"GRO", "TSO", "GSO"}
    err = tmp_path / "live.err"
    proc = _live(["-i", ifname, "-o", os.devnull], err)
    assert _stop(proc) == 0, err.read_text()
    notes = [ln for ln in err.read_text().splitlines() if "offloads merge" in ln]
    assert notes == [f"flowscope: {ifname}: GRO, TSO, GSO on: packets these offloads merge "
                     f"count as one, as a capture on this host shows them, not as the wire "
                     f"carries them (ethtool -K {ifname} gro off tso off gso off)"]
    sh("ethtool", "-K", ifname, "gro", "off", "tso", "off", "gso", "off")
    proc = _live(["-i", ifname, "-o", os.devnull], err)
    assert _stop(proc) == 0, err.read_text()
    text = err.read_text()
    assert "Tracking flows on" in text and "offloads merge" not in text


def test_native_xdp_counts_ingress_before_gro():
    """Which offloads merge what a hook sees: native XDP runs before GRO (LRO still merges in
    the NIC); tcx and generic XDP run after it; TSO and GSO only matter with an egress hook."""
    from flowscope.sensor.attach import Attachment
    from flowscope.sensor.live import offload_note

    every = {"LRO", "GRO", "TSO", "GSO"}
    native = Attachment("eth9", 9, "native", "auto", xdp_link_fd=5, tc_link_fd=6, offloads=every)
    assert native.merging == ["LRO", "TSO", "GSO"]
    tcx = Attachment("eth9", 9, "auto", "auto", tci_link_fd=5, tc_link_fd=6, offloads=every)
    assert tcx.merging == ["LRO", "GRO", "TSO", "GSO"]
    generic = Attachment("eth9", 9, "generic", "xdp", xdp_link_fd=5, offloads={"GRO", "TSO"})
    assert generic.merging == ["GRO"]
    none = Attachment("eth9", 9, "auto", "tc", tci_link_fd=5, tc_link_fd=6)
    assert none.merging == []
    # the line at start-up, and again when an interface that came back is attached
    assert offload_note(native).endswith("(ethtool -K eth9 lro off tso off gso off)")
    assert offload_note(native).startswith("flowscope: eth9: LRO, TSO, GSO on: ")
    assert offload_note(none) == ""


def test_mirror_note_speaks_when_most_frames_are_for_other_hosts():
    from flowscope.sensor.live import MIRROR_NOTE_FRAMES, mirror_note

    n = MIRROR_NOTE_FRAMES
    assert mirror_note({"packets": n - 1, "otherhost": n - 1}) == ""  # too few to matter
    assert mirror_note({"packets": 2 * n, "otherhost": n - 1}) == ""  # not most
    line = mirror_note({"packets": 2 * n, "otherhost": n})
    assert line.startswith(f"flowscope: {n} frames were for other hosts, against {2 * n} ")
    assert line.endswith("sensor.drops: false saves it")


def test_mirror_note_on_a_link_of_frames_for_another_host(net, tmp_path):
    """Frames to another MAC (as a mirror port carries) are freed by the receiving stack as
    OTHERHOST: no drops, but the drop tracer is called for each; once most frames the hooks
    saw were such, the sensor says so once, with the setting that saves it. A link of this
    host's own traffic gets no such line."""
    from flowscope.sensor.live import MIRROR_NOTE_FRAMES

    ns, pair = net
    ifname, peer = pair()
    err = tmp_path / "live.err"
    proc = _live(["-i", ifname, "-o", os.devnull], err)
    try:
        _udp(peer, 5301, 20)
        time.sleep(1.5)  # a check or two of the counters
        assert "frames were for other hosts" not in err.read_text()
        frame = frame_to(ifname, b"\x02\x00\x00\x00\x00\x99", peer, 5302)
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as p:
            p.bind((ifname, 0))
            for _ in range(MIRROR_NOTE_FRAMES + 2000):  # bounded: ~12 k frames, < 1 s
                p.send(frame)
        end = time.monotonic() + 10
        while "frames were for other hosts" not in err.read_text():
            assert time.monotonic() < end, err.read_text()
            time.sleep(0.1)
    finally:
        assert _stop(proc) == 0, err.read_text()
    notes = [ln for ln in err.read_text().splitlines() if "frames were for other hosts" in ln]
    assert len(notes) == 1 and "sensor.drops: false" in notes[0], notes
