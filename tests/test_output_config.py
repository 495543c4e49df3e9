"""The ``output:`` config section: human sizes and durations, addresses, errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowscope.config import ConfigError, load_config
from flowscope.config import (OutputSettings, output_settings, parse_duration, parse_size,
                              sensor_settings)


def test_empty_section_is_all_defaults():
    assert output_settings(None) == OutputSettings()
    assert output_settings({}) == OutputSettings()
    assert not OutputSettings().rotates


def test_full_section_from_a_yaml_file(tmp_path):
    p = tmp_path / "flowscope.yaml"
    p.write_text("max_flows: 1000\n"
                 "output:\n"
                 "  format: zeek\n"
                 "  path: /var/log/flowscope/conn.log\n"
                 "  rotate_size: 100M\n"
                 "  rotate_interval: 1h\n"
                 "  keep: 48\n"
                 "  ipfix: 127.0.0.1:4739\n"
                 "  metrics: '[::1]:9464'\n")
    cfg = load_config(p)
    s = output_settings(cfg.extra["output"])
    assert s == OutputSettings(format="zeek", path="/var/log/flowscope/conn.log",
                               rotate_bytes=100 << 20, rotate_seconds=3600.0, keep=48,
                               ipfix=("127.0.0.1", 4739), metrics=("::1", 9464))
    assert s.rotates


@pytest.mark.parametrize("text, expected", [
    (4096, 4096), ("4096", 4096), ("512k", 512 << 10), ("512KiB", 512 << 10),
    ("100M", 100 << 20), ("100MB", 100 << 20), ("1.5G", 3 << 29), ("2 g", 2 << 30),
    ("1T", 1 << 40),
])
def test_human_sizes(text, expected):
    assert parse_size(text, "output.rotate_size") == expected


@pytest.mark.parametrize("text, expected", [
    (90, 90.0), (0.5, 0.5), ("30s", 30.0), ("15m", 900.0), ("1h", 3600.0), ("1d", 86400.0),
    ("1w", 604800.0), ("1h30m", 5400.0), ("1h 30m", 5400.0), ("1.5h", 5400.0),
])
def test_human_durations(text, expected):
    assert parse_duration(text, "output.rotate_interval") == expected


@pytest.mark.parametrize("section, key", [
    ({"rotate_size": "100X", "path": "f"}, "output.rotate_size"),
    ({"rotate_size": 0, "path": "f"}, "output.rotate_size"),
    ({"rotate_size": True, "path": "f"}, "output.rotate_size"),
    ({"rotate_size": "-5M", "path": "f"}, "output.rotate_size"),
    ({"rotate_interval": "soon", "path": "f"}, "output.rotate_interval"),
    ({"rotate_interval": "1h30", "path": "f"}, "output.rotate_interval"),
    ({"rotate_interval": 0, "path": "f"}, "output.rotate_interval"),
    ({"rotate_interval": float("nan"), "path": "f"}, "output.rotate_interval"),
    ({"keep": 0, "path": "f", "rotate_size": "1M"}, "output.keep"),
    ({"keep": "3", "path": "f", "rotate_size": "1M"}, "output.keep"),
    ({"keep": 3, "path": "f"}, "output.keep"),
    ({"rotate_size": "1M"}, "output.rotate_size"),
    ({"rotate_interval": "1h", "path": "-"}, "output.rotate_interval"),
    ({"format": "csv"}, "output.format"),
    ({"path": ""}, "output.path"),
    ({"path": 3}, "output.path"),
    ({"metrics": "9464"}, "output.metrics"),
    ({"metrics": 9464}, "output.metrics"),
    ({"metrics": "127.0.0.1:70000"}, "output.metrics"),
    ({"ipfix": "collector"}, "output.ipfix"),
    ({"rotate_sise": "1M"}, "output.rotate_sise"),
])
def test_bad_values_name_the_key(section, key):
    with pytest.raises(ConfigError) as exc:
        output_settings(section)
    assert str(exc.value).startswith(f"{key}: "), str(exc.value)


def test_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match=r"^output: expected a mapping"):
        output_settings(["jsonl"])


def test_dash_path_and_null_values_mean_stdout_and_unset():
    s = output_settings({"path": "-", "format": None, "metrics": None})
    assert s == OutputSettings()


def test_bad_value_read_from_a_file_names_the_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("output:\n  path: flows.jsonl\n  rotate_size: lots\n")
    with pytest.raises(ConfigError) as exc:
        output_settings(load_config(p).extra["output"])
    assert "output.rotate_size: " in str(exc.value)


def test_example_config_is_valid():
    """docs/flowscope.example.yaml: every section passes its own validation."""
    from pathlib import Path

    from flowscope.config import TrackerConfig

    example = Path(__file__).resolve().parents[1] / "docs" / "flowscope.example.yaml"
    cfg = load_config(example)
    assert cfg.replace(extra={}) == TrackerConfig(sweep_interval=1.0)  # the documented defaults
    out = output_settings(cfg.extra["output"])
    assert out.format == "jsonl" and out.rotate_bytes == 100 << 20 and out.keep == 48
    assert out.metrics == ("127.0.0.1", 9464)
    sensor = sensor_settings(cfg.extra["sensor"])
    assert sensor.interfaces == ("eth0",)


def test_config_doc_lists_every_key():
    """docs/config.md names every YAML key of the one schema."""
    from flowscope.config import SCHEMA

    text = (Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text()
    missing = [k.path for keys in SCHEMA.values() for k in keys
               if k.yaml and f"`{k.path}`" not in text and not k.path.startswith("timeouts.")]
    assert missing == []
    assert "`timeouts.tcp` / `.udp` / `.icmp` / `.other`" in text
