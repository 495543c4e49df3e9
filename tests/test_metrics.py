"""Prometheus exporter: names, types, labels and values as scraped; own registry; pcap untouched."""

from __future__ import annotations

import importlib.metadata
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("prometheus_client")
from prometheus_client import REGISTRY  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import flowscope  # noqa: E402
from flowscope import metrics  # noqa: E402
from flowscope.config import HOOKS  # noqa: E402
from flowscope.metrics import MetricsServer, MetricsUnavailable  # noqa: E402
from flowscope.sensor.layout import EVENT_DTYPE, Counter, Hook  # noqa: E402
from flowscope.sensor.live import SensorStats  # noqa: E402
from flowscope.tracker import TrackerStats  # noqa: E402

DATA = Path(__file__).parent / "data"
DOCS = Path(__file__).resolve().parents[1] / "docs"


def stats(k: int = 1) -> TrackerStats:
    return TrackerStats(flows_created=100 * k, flows_ended=90 * k, flows_evicted=5 * k,
                        packets_unmatched=7 * k, open_flows=10 * k, packets_matched=1000 * k,
                        bytes_matched=123_456 * k, ended_fin=40 * k, ended_rst=20 * k,
                        ended_idle=15 * k, ended_shutdown=10 * k)


def kernel(k: int = 1) -> dict[str, int]:
    return {c.name.lower(): (int(c) + 1) * k for c in Counter}


def sensor(k: int = 1) -> SensorStats:
    s = SensorStats(events=13 * k, events_by_hook={(3, Hook.XDP): 5 * k, (3, Hook.TC): 7 * k,
                                                   (9, Hook.XDP): 1 * k},
                    stale_events=2 * k, lost_ends=4 * k, sweep_races=1 * k)
    s.count_tcp(tcp_records(), np.array([3, 3, 9]))
    return s


def tcp_records():
    """Three Ended TCP records: RTTs 0.3 ms, 40 ms and none; some loss signals."""
    from flowscope import layout as FL

    r = np.zeros(3, dtype=FL.EVENT_DTYPE)
    r["kind"] = FL.EV_ENDED
    r["rtt_resp"], r["rtt_init"] = [200_000, 39_000_000, -1], [100_000, 1_000_000, -1]
    r["retrans_pkts"] = [[1, 2], [0, 0], [5, 0]]
    r["retrans_bytes"] = [[100, 2800], [0, 0], [500, 0]]
    r["ooo_pkts"] = [[0, 1], [0, 0], [0, 0]]
    r["zero_win"] = [[0, 0], [3, 0], [0, 0]]
    return r


IFACES = {3: "eth0", 9: "eth1"}


def scrape(server: MetricsServer) -> dict:
    """``{sample name: {labels tuple: value}}`` plus ``{family name: type}`` under "types"."""
    return parse(scrape_text(server.port))


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        return resp.read().decode()


def parse(text: str) -> dict:
    out: dict = {"types": {}}
    for fam in text_string_to_metric_families(text):
        out["types"][fam.name] = fam.type
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


UNITS = {"packets", "bytes", "flows", "events", "drops", "races", "seconds", "info",
         "segments", "windows"}
BASE_UNITS = {"bytes", "seconds"}  # Prometheus base units: the name's last word


def check_naming_rules(text: str) -> None:
    """Every family: ``^flowscope_[a-z_]+$``, exactly one unit word (its declared one), a base
    unit as the last word, counters' samples ending in ``_total`` and no gauge's."""
    declared = {f.name: f for f in metrics.FAMILIES}
    seen = list(text_string_to_metric_families(text))
    assert {f.name for f in seen} == set(declared)
    for fam in seen:
        spec = declared[fam.name]
        assert re.fullmatch(r"flowscope_[a-z_]+", fam.name), fam.name
        assert fam.type == spec.type, fam.name
        words = fam.name.split("_")
        assert spec.unit in UNITS and {w for w in words if w in UNITS} == {spec.unit}, fam.name
        if spec.unit in BASE_UNITS:
            assert words[-1] == spec.unit, fam.name
        for s in fam.samples:
            assert re.fullmatch(r"flowscope_[a-z_]+", s.name), s.name
            if fam.type == "histogram":
                assert s.name in (fam.name + "_bucket", fam.name + "_sum", fam.name + "_count")
                extra = {"le"} if s.name.endswith("_bucket") else set()
                assert set(s.labels) == set(spec.labels) | extra, (s.name, s.labels)
                continue
            assert s.name == (fam.name + "_total" if fam.type == "counter" else fam.name)
            assert set(s.labels) == set(spec.labels), (s.name, s.labels)


@pytest.fixture
def server():
    srv = MetricsServer("127.0.0.1", 0)
    try:
        yield srv
    finally:
        srv.close()


def test_nothing_reported_before_the_first_update(server):
    assert server.port > 0
    assert scrape(server) == {"types": {}}


def test_values_types_and_labels(server):
    server.update(stats(), kernel(), sensor(), IFACES, engine_lag_seconds=0.25)
    m = scrape(server)
    assert m["types"] == {f.name: f.type for f in metrics.FAMILIES}
    k = {c: int(c) + 1 for c in Counter}
    assert m["flowscope_seen_packets_total"] == {(): k[Counter.PACKETS]}
    assert m["flowscope_tracked_packets_total"] == {(): 1000}
    assert m["flowscope_tracked_bytes_total"] == {(): 123_456}
    assert m["flowscope_unparsed_packets_total"] == {
        (("kind", "truncated"),): k[Counter.TRUNCATED], (("kind", "not_ip"),): k[Counter.NOT_IP],
        (("kind", "bad_header"),): k[Counter.BAD_HEADER]}
    assert m["flowscope_drops_total"] == {
        (("reason", "map_full"),): k[Counter.MAP_FULL],
        (("reason", "ring_full"),): k[Counter.RING_FULL],
        (("reason", "pull_fail"),): k[Counter.PULL_FAIL],
        (("reason", "tun_lost"),): k[Counter.TUN_LOST]}
    assert m["flowscope_decapsulated_packets_total"] == {(): k[Counter.DECAP]}
    assert m["flowscope_flows_active"] == {(): 10}
    assert m["flowscope_flows_created_total"] == {(): 100}
    assert m["flowscope_flows_ended_total"] == {
        (("reason", "fin"),): 40, (("reason", "rst"),): 20, (("reason", "idle_timeout"),): 15,
        (("reason", "evicted"),): 5, (("reason", "shutdown"),): 10}
    assert sum(m["flowscope_flows_ended_total"].values()) == stats().flows_ended
    assert m["flowscope_flows_ended_from_map_total"] == {(): 4}
    assert m["flowscope_kernel_flows_started_total"] == {
        (("kind", "new"),): k[Counter.FLOWS_NEW], (("kind", "restart"),): k[Counter.FLOWS_RESTART]}
    assert m["flowscope_kernel_insert_races_total"] == {(): k[Counter.INSERT_RACE]}
    assert m["flowscope_sweep_races_total"] == {(): 1}
    assert m["flowscope_ring_events_submitted_total"] == {(): k[Counter.EVENTS]}
    assert m["flowscope_ring_events_drained_total"] == {
        (("direction", "ingress"), ("interface", "eth0")): 5,
        (("direction", "egress"), ("interface", "eth0")): 7,
        (("direction", "ingress"), ("interface", "eth1")): 1}
    assert sum(m["flowscope_ring_events_drained_total"].values()) == sensor().events
    assert m["flowscope_ring_events_stale_total"] == {(): 2}
    assert m["flowscope_engine_lag_seconds"] == {(): 0.25}
    e0, e1 = (("interface", "eth0"),), (("interface", "eth1"),)
    assert m["flowscope_tcp_retransmitted_segments_total"] == {e0: 3, e1: 5}
    assert m["flowscope_tcp_retransmitted_bytes_total"] == {e0: 2900, e1: 500}
    assert m["flowscope_tcp_out_of_order_segments_total"] == {e0: 1, e1: 0}
    assert m["flowscope_tcp_zero_windows_total"] == {e0: 3, e1: 0}
    b = m["flowscope_tcp_handshake_rtt_seconds_bucket"]
    assert b[(("interface", "eth0"), ("le", "0.00025"))] == 0
    assert b[(("interface", "eth0"), ("le", "0.0005"))] == 1
    assert b[(("interface", "eth0"), ("le", "0.05"))] == 2
    assert b[(("interface", "eth0"), ("le", "+Inf"))] == 2
    assert b[(("interface", "eth1"), ("le", "+Inf"))] == 0  # no handshake timed there
    assert m["flowscope_tcp_handshake_rtt_seconds_count"][e0] == 2
    assert abs(m["flowscope_tcp_handshake_rtt_seconds_sum"][e0] - 0.0403) < 1e-9
    check_naming_rules(scrape_text(server.port))


def test_build_info(server):
    server.update(stats(), kernel(), sensor(), IFACES, 0.0)
    (labels, value), = scrape(server)["flowscope_build_info"].items()
    assert value == 1
    assert dict(labels) == {"version": flowscope.__version__,
                            "python": platform.python_version(),
                            # numba: loaded, or installed (it built the compiled kernels)
                            "numba": sys.modules["numba"].__version__ if "numba" in sys.modules
                            else importlib.metadata.version("numba"),
                            "bcc": sys.modules["bcc"].__version__ if "bcc" in sys.modules
                            else "none"}
    assert "bcc" not in sys.modules or dict(labels)["bcc"] != "none"


def test_every_kernel_counter_has_one_family():
    """A new ``fs_counter`` must be given its family (and its label) here, never left out."""
    assert set(metrics.KERNEL) == set(Counter)
    families = {f.name: f for f in metrics.FAMILIES}
    seen = set()
    for family, label in metrics.KERNEL.values():
        assert len(families[family].labels) == (label is not None)
        assert families[family].type == "counter"
        assert (family, label) not in seen
        seen.add((family, label))


def test_directions_are_the_config_hook_names():
    assert set(metrics.DIRECTIONS) == set(Hook)
    assert set(metrics.DIRECTIONS.values()) == set(HOOKS)


def test_docs_list_every_family():
    text = (DOCS / "metrics.md").read_text()
    for f in metrics.FAMILIES:
        shown = f.name + ("_total" if f.type == "counter" else "")
        assert f"`{shown}" in text, shown
        for label in f.labels:
            assert label in text


def test_interface_names_stay_once_given(server):
    server.update(stats(), kernel(), sensor(), IFACES, 0.0)
    server.update(stats(2), kernel(2), sensor(2), {}, 0.0)  # e.g. an interface went away
    drained = scrape(server)["flowscope_ring_events_drained_total"]
    assert drained[(("direction", "egress"), ("interface", "eth0"))] == 14
    server.update(stats(2), kernel(2), SensorStats(events_by_hook={(42, Hook.TC): 1}), {}, 0.0)
    assert scrape(server)["flowscope_ring_events_drained_total"] == {
        (("direction", "egress"), ("interface", "42")): 1}


def test_events_are_counted_by_interface_and_hook():
    ev = np.zeros(6, dtype=EVENT_DTYPE)
    ev["ifindex"] = [3, 3, 9, 3, 9, 3]
    ev["hook"] = [Hook.XDP, Hook.TC, Hook.XDP, Hook.TC, Hook.XDP, Hook.TC]
    s = SensorStats()
    s.count_hooks(ev)
    s.count_hooks(ev[:2])
    assert s.events_by_hook == {(3, Hook.XDP): 2, (3, Hook.TC): 4, (9, Hook.XDP): 2}


def test_later_updates_replace_the_snapshot(server):
    server.update(stats(1), kernel(1), sensor(1), IFACES, 0.5)
    first = scrape(server)
    server.update(stats(3), kernel(3), sensor(3), IFACES, 0.01)
    second = scrape(server)
    for name, samples in first.items():
        if name.endswith("_total"):
            for labels, v in samples.items():
                assert second[name][labels] >= v, name
    assert second["flowscope_flows_created_total"] == {(): 300}
    assert second["flowscope_engine_lag_seconds"] == {(): 0.01}


def test_without_kernel_counters_their_families_are_empty(server):
    server.update(stats(), None)
    m = scrape(server)
    assert m["types"]["flowscope_drops"] == "counter"
    assert "flowscope_drops_total" not in m and "flowscope_seen_packets_total" not in m
    assert "flowscope_ring_events_drained_total" not in m
    assert m["flowscope_tracked_packets_total"] == {(): 1000}
    check_naming_rules(scrape_text(server.port))


def test_own_registry_not_the_global_one(server):
    server.update(stats(), kernel(), sensor(), IFACES, 0.0)
    assert REGISTRY.get_sample_value("flowscope_flows_created_total") is None
    assert not any(n.startswith("python_gc") for n in scrape(server))
    with MetricsServer("127.0.0.1", 0) as other:
        other.update(stats(2), None)
        assert scrape(other)["flowscope_flows_created_total"] == {(): 200}
        assert scrape(server)["flowscope_flows_created_total"] == {(): 100}


def test_port_in_use_is_an_oserror(server):
    with pytest.raises(OSError):
        MetricsServer("127.0.0.1", server.port)


def test_close_releases_the_port():
    srv = MetricsServer("127.0.0.1", 0)
    port = srv.port
    srv.close()
    srv.close()
    MetricsServer("127.0.0.1", port).close()


def test_missing_client_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(MetricsUnavailable) as exc:
        MetricsServer("127.0.0.1", 0)
    msg = str(exc.value)
    assert "\n" not in msg and "prometheus-client" in msg and msg == metrics.MISSING_CLIENT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pcap_is_not_affected(tmp_path):
    """``flowscope pcap`` ignores ``output.metrics``: same records, no exporter, no import."""
    port = _free_port()
    cfg = tmp_path / "flowscope.yaml"
    cfg.write_text(f"output:\n  metrics: 127.0.0.1:{port}\n")
    pcap = str(DATA / "zeek__http__get.pcap")
    probe = (
        "import socket, sys\n"
        "from flowscope.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "assert 'prometheus_client' not in sys.modules, 'prometheus_client imported'\n"
        "assert 'flowscope.metrics' not in sys.modules, 'flowscope.metrics imported'\n"
        "s = socket.socket()\n"
        f"assert s.connect_ex(('127.0.0.1', {port})) != 0, 'something listens'\n"
        "sys.exit(code)\n"
    )

    def run(*extra):
        return subprocess.run([sys.executable, "-c", probe, "pcap", "--json", *extra, pcap],
                              capture_output=True, text=True, timeout=120)

    with_cfg, plain = run("--config", str(cfg)), run()
    assert with_cfg.returncode == 0, with_cfg.stderr
    assert plain.returncode == 0, plain.stderr
    assert with_cfg.stdout == plain.stdout and with_cfg.stdout.count("\n") >= 1


# --- a live sensor, scraped (root + BPF) ------------------------------------------------------


from test_live import topo  # noqa: E402, F401 - the veth pair into a new netns


def _tcp_exchange(ours: str, ns: str) -> None:
    """A TCP connection from the netns to us with a few bytes each way and a clean close:
    events on ingress (SYN, ACK, data, FIN) and on egress (SYN+ACK, data, FIN)."""
    with socket.socket() as lsn:
        lsn.bind((ours, 0))
        lsn.listen(1)
        lsn.settimeout(20)
        port = lsn.getsockname()[1]
        client = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c",
             "import socket, sys\n"
             f"s = socket.create_connection(({ours!r}, {port}), timeout=10)\n"
             "s.sendall(b'ping'); s.recv(4); s.close()\n"])
        try:
            conn, _ = lsn.accept()
            with conn:
                conn.settimeout(10)
                assert conn.recv(4) == b"ping"
                conn.sendall(b"pong")
                conn.recv(1)  # the client's FIN
            assert client.wait(20) == 0
        finally:
            if client.poll() is None:
                client.kill()
                client.wait(5)


def test_a_live_sensor_exports_every_family(topo, tmp_path):
    """Scrape ``flowscope live``: every family, the naming rules, build info, interface and
    direction labels of the drained events, and totals that agree with each other."""
    ifname, peer, _, ns = topo
    ours = peer.rsplit(".", 1)[0] + ".1"
    port = _free_port()
    err = tmp_path / "live.err"
    proc = subprocess.Popen([sys.executable, "-m", "flowscope", "live", "-i", ifname, "--json",
                             "-o", str(tmp_path / "flows.jsonl"), "--metrics",
                             f"127.0.0.1:{port}", "--duration", "60"],
                            stdout=subprocess.DEVNULL, stderr=open(err, "w"))
    try:
        deadline = time.monotonic() + 60
        while "Tracking flows on" not in err.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
        _tcp_exchange(ours, ns)
        m, text = {}, ""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            text = scrape_text(port)
            m = parse(text)
            drained = m.get("flowscope_ring_events_drained_total", {})
            ended = m.get("flowscope_flows_ended_total", {}).get((("reason", "fin"),), 0)
            if ended >= 1 and {dict(k)["direction"] for k in drained} == {"ingress", "egress"}:
                break
            time.sleep(0.3)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, err.read_text()
    check_naming_rules(text)
    assert m["types"] == {f.name: f.type for f in metrics.FAMILIES}
    (labels, one), = m["flowscope_build_info"].items()
    info = dict(labels)
    assert one == 1 and info["version"] == flowscope.__version__
    assert info["numba"] != "none" and info["bcc"] != "none"
    drained = m["flowscope_ring_events_drained_total"]
    assert {dict(k)["interface"] for k in drained} == {ifname}
    assert {dict(k)["direction"] for k in drained} == {"ingress", "egress"}
    assert all(v >= 3 for v in drained.values())  # SYN, ACK, data, FIN in; SYN+ACK, ... out
    submitted = m["flowscope_ring_events_submitted_total"][()]
    assert sum(drained.values()) <= submitted
    seen = m["flowscope_seen_packets_total"][()]
    tracked = m["flowscope_tracked_packets_total"][()]
    assert tracked >= 8 and seen >= tracked  # the handshake, 2 data, 2 FINs and their ACKs
    assert m["flowscope_tracked_bytes_total"][()] >= 60 * tracked
    assert set(dict(k)["kind"] for k in m["flowscope_unparsed_packets_total"]) == {
        "truncated", "not_ip", "bad_header"}
    assert m["flowscope_drops_total"] == {(("reason", r),): 0
                                          for r in ("map_full", "ring_full", "pull_fail",
                                                    "tun_lost")}
    assert m["flowscope_kernel_flows_started_total"][(("kind", "new"),)] >= 1
    assert m["flowscope_flows_active"][()] + sum(m["flowscope_flows_ended_total"].values()) == \
        m["flowscope_flows_created_total"][()]
    assert m["flowscope_engine_lag_seconds"][()] >= 0
    # the TCP exchange ended with a FIN after a full handshake: one timed handshake, no loss
    iface = (("interface", ifname),)
    assert m["flowscope_tcp_handshake_rtt_seconds_count"][iface] >= 1
    assert m["flowscope_tcp_retransmitted_segments_total"][iface] == 0


def test_kernel_drops_by_reason_and_interface():
    s = SensorStats()
    s.kernel_drops = {(3, "NO_SOCKET"): 4, (0, "NETFILTER_DROP"): 2}
    snap = metrics.snapshot(flowscope.FlowTracker().stats, {"drops": 6, "drops_other": 0}, s,
                            {3: "veth0"}, build=("v", "p", "n", "b"))
    got = {(n, lab): v for n, lab, v in snap.samples if n.startswith("flowscope_kernel_drops")}
    assert got == {("flowscope_kernel_drops", ("NETFILTER_DROP", "other")): 2,
                   ("flowscope_kernel_drops", ("NO_SOCKET", "veth0")): 4,
                   ("flowscope_kernel_drops_matched", ("flow",)): 6,
                   ("flowscope_kernel_drops_matched", ("interface",)): 0}
