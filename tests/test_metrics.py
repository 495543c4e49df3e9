"""Prometheus exporter: names, types, labels and values as scraped; own registry; pcap untouched."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")
from prometheus_client import REGISTRY  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from flowscope import metrics  # noqa: E402
from flowscope.metrics import MetricsServer, MetricsUnavailable  # noqa: E402
from flowscope.sensor.layout import Counter  # noqa: E402
from flowscope.tracker import TrackerStats  # noqa: E402

DATA = Path(__file__).parent / "data"


def stats(k: int = 1) -> TrackerStats:
    return TrackerStats(flows_created=100 * k, flows_ended=90 * k, flows_evicted=5 * k,
                        packets_unmatched=7 * k, open_flows=10 * k, packets_matched=1000 * k,
                        bytes_matched=123_456 * k, ended_fin=40 * k, ended_rst=20 * k,
                        ended_idle=15 * k, ended_shutdown=10 * k)


def kernel(k: int = 1) -> dict[str, int]:
    return {c.name.lower(): (int(c) + 1) * k for c in Counter}


def scrape(server: MetricsServer) -> dict:
    """``{sample name: {labels tuple: value}}`` plus ``{family name: type}`` under "types"."""
    url = f"http://127.0.0.1:{server.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out: dict = {"types": {}}
    for fam in text_string_to_metric_families(text):
        out["types"][fam.name] = fam.type
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


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
    server.update(stats(), kernel(), events_drained=4242, engine_lag_seconds=0.25)
    m = scrape(server)
    assert m["types"] == {
        "flowscope_flows_active": "gauge", "flowscope_flows_created": "counter",
        "flowscope_flows_ended": "counter", "flowscope_packets": "counter",
        "flowscope_packets_unmatched": "counter", "flowscope_bytes": "counter",
        "flowscope_events_drained": "counter", "flowscope_kernel_counter": "counter",
        "flowscope_engine_lag_seconds": "gauge",
    }
    assert m["flowscope_flows_active"] == {(): 10}
    assert m["flowscope_flows_created_total"] == {(): 100}
    assert m["flowscope_flows_ended_total"] == {
        (("reason", "fin"),): 40, (("reason", "rst"),): 20, (("reason", "idle_timeout"),): 15,
        (("reason", "evicted"),): 5, (("reason", "shutdown"),): 10}
    assert sum(m["flowscope_flows_ended_total"].values()) == stats().flows_ended
    assert m["flowscope_packets_total"] == {(): 1007}
    assert m["flowscope_packets_unmatched_total"] == {(): 7}
    assert m["flowscope_bytes_total"] == {(): 123_456}
    assert m["flowscope_events_drained_total"] == {(): 4242}
    assert m["flowscope_engine_lag_seconds"] == {(): 0.25}
    kern = m["flowscope_kernel_counter_total"]
    assert len(kern) == len(Counter)
    for c in Counter:
        assert kern[(("counter", c.name.lower()),)] == int(c) + 1
    assert {"map_full", "ring_full", "truncated"} <= {k[0][1] for k in kern}


def test_later_updates_replace_the_snapshot(server):
    server.update(stats(1), kernel(1), 10, 0.5)
    first = scrape(server)
    server.update(stats(3), kernel(3), 30, 0.01)
    second = scrape(server)
    for name, samples in first.items():
        if name.endswith("_total"):
            for labels, v in samples.items():
                assert second[name][labels] >= v, name
    assert second["flowscope_flows_created_total"] == {(): 300}
    assert second["flowscope_engine_lag_seconds"] == {(): 0.01}


def test_without_kernel_counters_the_family_is_empty(server):
    server.update(stats(), None, 0, 0.0)
    m = scrape(server)
    assert m["types"]["flowscope_kernel_counter"] == "counter"
    assert "flowscope_kernel_counter_total" not in m
    assert m["flowscope_events_drained_total"] == {(): 0}


def test_own_registry_not_the_global_one(server):
    server.update(stats(), kernel(), 1, 0.0)
    assert REGISTRY.get_sample_value("flowscope_flows_created_total") is None
    assert not any(n.startswith("python_gc") for n in scrape(server))
    with MetricsServer("127.0.0.1", 0) as other:
        other.update(stats(2), None, 2, 0.0)
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
