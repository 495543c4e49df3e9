"""`flowscope pcap`: formats, event selection, config, and bad input handling."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flowscope.cli import main

DATA = Path(__file__).parent / "data"
HTTP = DATA / "zeek__http__get.pcap"
WIKI = DATA / "zeek__wikipedia.pcap"
CUT = DATA / "derived__zeek__http__get.cut-mid-record.pcap"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def jsonl(text):
    return [json.loads(line) for line in text.splitlines()]


def test_jsonl_ended_flows_have_the_documented_fields(capsys):
    code, out, err = run(capsys, "pcap", "--format", "jsonl", HTTP)
    assert code == 0 and err == ""
    recs = jsonl(out)
    assert recs and all(r["event"] == "ended" for r in recs)
    tcp = [r for r in recs if r["proto"] == "tcp"]
    assert len(tcp) == 1
    r = tcp[0]
    for field in ("ts", "flow_id", "ip_proto", "src_ip", "src_port", "dst_ip", "dst_port",
                  "reason", "state", "history", "start", "end", "duration", "init_pkts",
                  "init_bytes", "resp_pkts", "resp_bytes", "init_payload_bytes",
                  "resp_payload_bytes", "init_tcp_flags", "resp_tcp_flags"):
        assert field in r
    assert r["dst_port"] == 80 and r["reason"] == "fin" and r["history"].startswith("Ss")
    assert r["init_pkts"] + r["resp_pkts"] == 14


def test_events_selection(capsys):
    _, out_all, _ = run(capsys, "pcap", "--json", "--events", "all", WIKI)
    _, out_life, _ = run(capsys, "pcap", "--json", "--events", "lifecycle", WIKI)
    _, out_end, _ = run(capsys, "pcap", "--json", WIKI)
    every = jsonl(out_all)
    life = jsonl(out_life)
    ended = jsonl(out_end)
    assert [r for r in every if r["event"] != "packet"] == life
    assert [r for r in life if r["event"] == "ended"] == ended
    packets = [r for r in every if r["event"] == "packet"]
    assert len(packets) == sum(r["init_pkts"] + r["resp_pkts"] for r in ended)
    assert {r["event"] for r in life} >= {"started", "ended"}


def test_table_lines_fit_80_columns_and_end_with_a_summary(capsys):
    code, out, _ = run(capsys, "pcap", "--format", "table", WIKI)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("PROTO")
    assert all(len(line) < 80 for line in lines)
    assert "packets" in lines[-2] and "flows" in lines[-2] and lines[-1].startswith("ended:")


def test_output_file(tmp_path, capsys):
    dest = tmp_path / "flows.jsonl"
    code, out, _ = run(capsys, "pcap", "--json", "-o", dest, HTTP)
    assert code == 0 and out == ""
    assert jsonl(dest.read_text())


def test_missing_file_is_one_line_and_exit_1(capsys, tmp_path):
    code, out, err = run(capsys, "pcap", "--json", tmp_path / "nope.pcap", HTTP)
    assert code == 1
    assert err.count("\n") == 1 and "nope.pcap" in err and "Traceback" not in err
    assert jsonl(out), "the readable file is still processed"


def test_not_a_capture(capsys, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello, this is not a capture file\n" * 10)
    code, out, err = run(capsys, "pcap", "--json", bad)
    assert code == 1 and err.count("\n") == 1 and "notes.txt" in err


def test_file_cut_mid_record_flushes_what_was_read(capsys):
    code, out, err = run(capsys, "pcap", "--json", CUT)
    assert code == 1 and CUT.name in err and err.count("\n") == 1
    recs = jsonl(out)
    assert sum(r["init_pkts"] + r["resp_pkts"] for r in recs) == 7
    assert all(r["reason"] == "shutdown" for r in recs)


def test_several_files_are_one_trace(capsys):
    _, one, _ = run(capsys, "pcap", "--json", WIKI)
    _, two, _ = run(capsys, "pcap", "--json", WIKI, WIKI)
    assert len(jsonl(two)) >= len(jsonl(one))
    assert sum(r["init_pkts"] + r["resp_pkts"] for r in jsonl(two)) == 2 * sum(
        r["init_pkts"] + r["resp_pkts"] for r in jsonl(one))


def test_config_unknown_key_exits_2_naming_it(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("timeouts:\n  tcp: 10\n  tpc: 5\n")
    code, out, err = run(capsys, "pcap", "--config", cfg, HTTP)
    assert code == 2 and "timeouts.tpc" in err and err.count("\n") == 1 and out == ""


def test_config_bad_value_exits_2_naming_it(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_flows: many\n")
    code, _, err = run(capsys, "pcap", "--config", cfg, HTTP)
    assert code == 2 and "max_flows" in err


def test_config_file_is_applied_and_flags_win(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_flows: 1\ntimeouts: {udp: 5}\n")
    _, out, _ = run(capsys, "pcap", "--json", "--config", cfg, WIKI)
    assert any(r["reason"] == "evicted" for r in jsonl(out))
    _, out, _ = run(capsys, "pcap", "--json", "--config", cfg, "--max-flows", "100000", WIKI)
    assert not any(r["reason"] == "evicted" for r in jsonl(out))


def test_bad_flag_value_exits_2(capsys):
    code, _, err = run(capsys, "pcap", "--max-flows", "0", HTTP)
    assert code == 2 and "max-flows" in err
    code, _, err = run(capsys, "pcap", "--udp-timeout", "-1", HTTP)
    assert code == 2 and "udp-timeout" in err


def test_unwritable_output_exits_2(capsys, tmp_path):
    code, _, err = run(capsys, "pcap", "-o", tmp_path / "no" / "such" / "dir.jsonl", HTTP)
    assert code == 2 and err.count("\n") == 1


@pytest.mark.parametrize("extractor", ["directional", "ip-pair", "mac-pair"])
def test_other_extractors(capsys, extractor):
    code, out, _ = run(capsys, "pcap", "--json", "--extractor", extractor, WIKI)
    recs = jsonl(out)
    assert code == 0 and recs
    if extractor == "mac-pair":
        assert "src_mac" in recs[0]


def test_no_traceback_from_the_installed_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "flowscope", "pcap", str(tmp_path / "x.pcap")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("flowscope: ") and "Traceback" not in proc.stderr


def test_eve_format_writes_flow_records(capsys):
    code, out, _ = run(capsys, "pcap", "--format", "eve", HTTP)
    recs = jsonl(out)
    assert code == 0 and recs and all(r["event_type"] == "flow" for r in recs)
    assert all("community_id" in r for r in recs)


def test_ipfix_export_with_a_bad_address_exits_2(capsys):
    code, _, err = run(capsys, "pcap", "--ipfix", "nohost", HTTP)
    assert code == 2 and "--ipfix" in err and err.count("\n") == 1


def _flowscope(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "flowscope", *map(str, args)], stdin=stdin,
                          capture_output=True, timeout=120)


def test_standard_input_and_pipes_read_as_streams(tmp_path):
    direct = _flowscope("pcap", "--json", WIKI)
    with open(WIKI, "rb") as f:
        piped = _flowscope("pcap", "--json", "-", stdin=f)
    assert piped.returncode == 0 and piped.stdout == direct.stdout and piped.stdout
    ng = DATA / "zeek__pcapng-multi-interface.pcapng"
    with open(ng, "rb") as f:
        assert _flowscope("pcap", "--json", "-", stdin=f).stdout == _flowscope(
            "pcap", "--json", ng).stdout
    fifo = tmp_path / "capture.fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"cat '{HTTP}' > '{fifo}'"])
    try:
        via_fifo = _flowscope("pcap", "--json", fifo)
    finally:
        writer.wait(30)
    assert via_fifo.returncode == 0 and via_fifo.stdout == _flowscope("pcap", "--json",
                                                                      HTTP).stdout


def test_a_cut_stream_flushes_what_was_read():
    with open(CUT, "rb") as f:
        proc = _flowscope("pcap", "--json", "-", stdin=f)
    assert proc.returncode == 1 and proc.stderr.decode().count("\n") == 1
    assert "<stdin>" in proc.stderr.decode()
    recs = jsonl(proc.stdout.decode())
    assert sum(r["init_pkts"] + r["resp_pkts"] for r in recs) == 7


# --- --help: width, examples, options and defaults --------------------------------------------

HELP_COMMANDS = ([], ["pcap"], ["live"], ["warmup"])


def _help(command, columns):
    env = {**os.environ, "COLUMNS": str(columns)}
    proc = subprocess.run([sys.executable, "-m", "flowscope", *command, "--help"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return proc.stdout


@pytest.mark.parametrize("columns", [200, 80])
@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: " ".join(c) or "flowscope")
def test_help_lines_fit_79_columns(command, columns):
    text = _help(command, columns)
    assert text.count("\n") > 5
    too_wide = [line for line in text.splitlines() if len(line) > 79]
    assert too_wide == []


def _examples(text):
    return [line.strip() for line in text.split("\nexamples:\n", 1)[1].splitlines()
            if line.strip()]


def test_each_command_shows_its_own_examples():
    every = _examples(_help([], 80))
    shown = []
    for command in ("pcap", "live", "warmup"):
        mine = _examples(_help([command], 80))
        assert mine and all(f"flowscope {command}" in line for line in mine), mine
        shown += mine
    assert every == shown


def _options(text):
    return set(re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", text))


def test_live_lists_only_the_options_it_accepts(capsys):
    from flowscope.cli import build_parser

    text = _help(["live"], 80)
    assert "--extractor" not in text and "--infer-tcp-initiator" not in text
    assert "five-tuple" not in text and "mac-pair" not in text
    live = build_parser()._subparsers._group_actions[0].choices["live"]
    accepted = {o for a in live._actions for o in a.option_strings}
    assert _options(text.split("\nexamples:\n")[0]) <= accepted
    for flag in ("--extractor", "--infer-tcp-initiator"):
        with pytest.raises(SystemExit) as exc:
            main(["live", "-i", "lo", flag, *(["ip-pair"] if flag == "--extractor" else [])])
        assert exc.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err
    pcap = _help(["pcap"], 80)
    assert "--extractor" in pcap and "--infer-tcp-initiator" in pcap


def test_help_defaults_come_from_the_config():
    from flowscope.cli import SWEEP_INTERVAL
    from flowscope.config import SCHEMA, OutputSettings, SensorConfig, TrackerConfig

    t, s = TrackerConfig(), SensorConfig()
    pcap, live = _help(["pcap"], 80), _help(["live"], 80)
    for text in (pcap, live):
        flat = " ".join(text.split())
        assert f"--max-flows N flows held at once (default {t.max_flows})" in flat
        for proto in ("tcp", "udp", "icmp", "other"):
            secs = getattr(t, f"{proto}_timeout")
            assert f"--{proto}-timeout SEC {proto} idle timeout in seconds (default {secs:g})" \
                in flat
        assert f"{OutputSettings().ipfix_records} (default)" in flat
        assert f"else {SWEEP_INTERVAL:g})" in flat or f"(default {SWEEP_INTERVAL:g})" in flat
    assert f"else {s.xdp_mode})" in " ".join(live.split())
    # every value quoted as a default: "(default X)", "(default: X)", "..., else X)"
    found = re.findall(r"\(default:? ([\w.-]+)[,;)]|else ([\w.-]+)\)",
                       " ".join((pcap + live).split()))
    quoted = {a or b for a, b in found}
    known = {str(t.max_flows), f"{SWEEP_INTERVAL:g}", s.xdp_mode, "five-tuple", "ended",
             str(t.vxlan_port), str(t.geneve_port),
             *(f"{getattr(t, f'{p}_timeout'):g}" for p in ("tcp", "udp", "icmp", "other")),
             *(k.path for keys in SCHEMA.values() for k in keys)}  # or the config key
    assert len(quoted) >= 6
    assert quoted <= known, quoted - known


def test_live_refuses_infer_tcp_initiator_from_the_config_by_its_key(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("infer_tcp_initiator: true\n")
    code, out, err = run(capsys, "live", "-i", "lo", "--config", cfg)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "infer_tcp_initiator" in err and "--infer-tcp-initiator" not in err


def test_tunnels_decapsulated_unless_turned_off(capsys, tmp_path):
    vx = DATA / "tunnels" / "vxlan.pcap"
    _, out, err = run(capsys, "pcap", "--json", vx)
    recs = jsonl(out)
    assert sum(1 for r in recs if "tunnel" in r) == 4
    _, out, _ = run(capsys, "pcap", "--json", "--no-decapsulate", vx)
    assert not any("tunnel" in r for r in jsonl(out)) and len(jsonl(out)) == 6
    _, out, _ = run(capsys, "pcap", "--json", "--vxlan-port", "8472", vx)
    assert not any("tunnel" in r for r in jsonl(out))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("decapsulate: false\n")
    _, out, _ = run(capsys, "pcap", "--json", "--config", cfg, vx)
    assert not any("tunnel" in r for r in jsonl(out))
    cfg.write_text("geneve_port: 0\n")
    code, out, err = run(capsys, "pcap", "--config", cfg, vx)
    assert code == 2 and "geneve_port" in err and err.count("\n") == 1 and out == ""
    code, _, err = run(capsys, "pcap", "--vxlan-port", "70000", vx)
    assert code == 2 and "vxlan-port" in err
    _, out, err = run(capsys, "pcap", "--format", "table", vx)
    assert "6 packets (0 unmatched)" in err + out and "tunnels: 6 decapsulated" in err + out


def test_importing_the_package_loads_nothing_heavy():
    """``import flowscope`` imports no numpy (its names load on first use), so the command
    line can set up the process first; every public name still resolves."""
    code = ("import sys, flowscope; loaded = sorted(m for m in sys.modules if m == 'numpy' "
            "or m.startswith(('numpy.', 'flowscope.')) and m != 'flowscope.warmup'); "
            "print(loaded, callable(flowscope.warmup)); "
            "[getattr(flowscope, n) for n in flowscope.__all__]")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["[]", "True"], r.stdout


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
@pytest.mark.parametrize("preset, threads", [(None, 1), ("2", 2)])
def test_the_command_line_starts_no_blas_threads(preset, threads):
    """numpy's OpenBLAS would start a thread per core that spins at start-up; the command
    line asks for none (one thread: the main one), unless the user's environment says."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if preset:
        env["OPENBLAS_NUM_THREADS"] = preset
    code = "import os, flowscope.cli, numpy; print(len(os.listdir('/proc/self/task')))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == threads, r.stdout


_LOADED_WRITERS = """
import sys
from flowscope.cli import main
main(sys.argv[1:])
print(sorted(m for m in sys.modules if m.startswith("flowscope.output.")), file=sys.stderr)
"""


@pytest.mark.parametrize("fmt, own", [("jsonl", {"jsonl"}), ("zeek", {"zeek"}),
                                      ("eve", {"eve"})])
def test_a_run_loads_only_its_own_writer(tmp_path, fmt, own):
    """Each format's module (and the IPFIX exporter's) is imported only when used: a run
    does not pay for the others' imports and tables."""
    r = subprocess.run([sys.executable, "-c", _LOADED_WRITERS, "pcap", str(HTTP), "--format",
                        fmt, "-o", str(tmp_path / "out")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    loaded = {m.split(".")[-1] for m in ast.literal_eval(r.stderr.strip().splitlines()[-1])}
    # common: the shared helpers; table: the summary line
    assert loaded == {"common", "table"} | own, loaded
