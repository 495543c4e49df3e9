"""Hardened input: a short fixed-seed fuzz run, the fuzz regression inputs, extreme timestamps
in JSON Lines and the memory bound for huge pcapng blocks."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flowscope import layout
from flowscope.output.jsonl import JsonlWriter
from flowscope.pcap import CaptureError, CaptureReader
from naive_jsonl import NaiveJsonlWriter

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
FUZZ = DATA / "fuzz"
FORMATS = ("jsonl", "eve", "zeek", "zeek-json", "table")


def _load_fuzz():
    spec = importlib.util.spec_from_file_location("flowscope_fuzz", ROOT / "scripts" / "fuzz.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


fuzz = _load_fuzz()


def test_fuzzer_container_model_agrees_with_the_reader():
    for p in sorted(DATA.glob("*.pcap*")) + sorted(FUZZ.glob("*.pcap*")):
        expect, frames = fuzz.model(p.read_bytes())
        reader = CaptureReader(p)
        status = 0
        try:
            for _ in reader:
                pass
        except CaptureError:
            status = 1
        assert (status, reader.frames) == (expect, frames), p.name


def test_short_fixed_seed_fuzz_run():
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "fuzz.py"), "--seed", "20261201",
                        "--cases", "1000", "--cli-every", "500", "--timeout", "60",
                        "--seed-dir", str(DATA), "--seed-dir", str(FUZZ)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(r"^1000 cases in .* 0 failing", p.stdout, re.M), p.stdout


def test_output_checks_catch_bad_lines():
    assert fuzz.check_output("jsonl", '{"event":"ended","ts":-.5,"flow_id":0}\n', 9)
    assert fuzz.check_output("jsonl", '{"event":"ended","ts":1.0,"flow_id":0,"init_pkts":5,'
                                      '"resp_pkts":5}\n', 9)
    ok = '{"event":"ended","ts":-0.5,"flow_id":0,"init_pkts":5,"resp_pkts":4}\n'
    assert fuzz.check_output("jsonl", ok, 9) == []
    assert fuzz.check_output("jsonl", ok + ok, 20) == ["jsonl: flow 0 ended twice"]
    assert fuzz.check_output("zeek", "#fields\ta\tb\n1\t2\t3\n#close\tx\n", 9)


REGRESSIONS = sorted(FUZZ.glob("*.exit[01].*"))


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.name for p in REGRESSIONS])
def test_fuzz_regression_input(path):
    """Each kept input, named ``<what>.exit<status>.<ext>``: the CLI's exit status and output,
    then every writer in-process (valid output, packets conserved)."""
    want = int(re.search(r"\.exit([01])\.", path.name).group(1))
    expect, frames = fuzz.model(path.read_bytes())
    assert expect == want
    p = subprocess.run([sys.executable, "-m", "flowscope", "pcap", "--no-progress", "--format",
                        "jsonl", str(path)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == want, p.stderr
    assert "Traceback" not in p.stderr
    assert fuzz.check_output("jsonl", p.stdout, frames) == []
    for events_all in (False, True):
        ans = fuzz.run_inprocess(str(path), frames, events_all)
        assert ans["status"] == want and ans["problems"] == [], ans


I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def test_jsonl_extreme_timestamps_and_durations_are_json_numbers():
    vals = [I64_MIN, I64_MIN + 1, -145224192, -1_000_000_000, -1, 0, 1, I64_MAX - 1, I64_MAX]
    recs = np.zeros(len(vals) ** 2, dtype=layout.EVENT_DTYPE)
    for i, (a, b) in enumerate((a, b) for a in vals for b in vals):
        recs[i]["kind"], recs[i]["ts"] = layout.EV_ENDED, a
        recs[i]["started"], recs[i]["last_seen"] = a, b
        recs[i]["flow_id"] = 2**64 - 1
        recs[i]["pkts"] = (2**64 - 1, 2**63)
        recs[i]["key"][4] = (4 << 48) | (6 << 32)
    fast, slow = io.StringIO(), io.StringIO()
    JsonlWriter(fast, buffer_bytes=4096).write_records(recs)
    NaiveJsonlWriter(slow).write_records(recs)
    assert fast.getvalue() == slow.getvalue()
    lines = fast.getvalue().splitlines()
    assert len(lines) == recs.shape[0]
    for (a, b), line in zip(((a, b) for a in vals for b in vals), lines):
        d = json.loads(line, parse_float=str)
        for key, ns in (("ts", a), ("start", a), ("end", b), ("duration", b - a)):
            sign = "-" if ns < 0 else ""
            s, frac = divmod(abs(ns), 10**9)
            assert d[key] == f"{sign}{s}.{frac:09d}"
        assert d["flow_id"] == 2**64 - 1 and d["init_pkts"] == 2**64 - 1
    assert '"start":-0.145224192,' in fast.getvalue()


def _oversized_file(path: Path, size: int) -> int:
    """A pcapng with a ``size``-byte (sparse) packet block between two real packets."""
    src = (FUZZ / "epb-ts-uint64-max.exit0.pcapng").read_bytes()
    with open(path, "wb") as f:
        f.write(src)
        f.write(struct.pack("<II", 6, size))
        f.seek(size - 12, 1)
        f.write(struct.pack("<I", size))
        f.write(src[28:])  # another interface and its two packets
    return 4


def test_256_mib_block_is_streamed_past_in_bounded_memory(tmp_path):
    """Peak RSS stays under the documented 250 MiB; the block is reported, the rest read."""
    f = tmp_path / "huge-block.pcapng"
    frames = _oversized_file(f, 256 << 20)
    # VmHWM, not ru_maxrss: the latter keeps the (pytest) parent's high-water mark over exec.
    script = ("import sys\nfrom flowscope.cli import main\nrc = main(sys.argv[1:])\n"
              "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')]\n"
              "print(hwm[0].split()[1], file=sys.stderr)\nsys.exit(rc)\n")
    p = subprocess.run([sys.executable, "-c", script, "pcap", "--no-progress", "--format", "jsonl",
                        str(f)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 1
    assert "skipped 1 packet and 0 interface blocks longer than 4 MiB (read the other 4 packets)" \
        in p.stderr
    peak_kib = int(p.stderr.strip().splitlines()[-1])
    assert peak_kib < 250 * 1024, f"peak RSS {peak_kib >> 10} MiB"
    assert fuzz.check_output("jsonl", p.stdout, frames) == []
    assert sum(json.loads(ln)["init_pkts"] + json.loads(ln)["resp_pkts"]
               for ln in p.stdout.splitlines()) == frames


def test_fuzzer_damages_dns_messages_and_the_parser_matches_its_twin():
    """The fuzzer's DNS mutations (pointer loops, forward pointers, long names, bad counts)
    reach the DNS parser, which stays in bounds and agrees with its plain-Python twin."""
    import random

    from flowscope.pcap import parse_bytes
    from naive_dns import naive_dns
    from naive_parse import FIELDS, naive_parse

    rng = random.Random(20261201)
    mut = fuzz.Mutator(rng, [])
    frames = []
    for name in ("tcpdump__dns_udp.pcap", "tcpdump__dns_tcp.pcap", "zeek__dns53.pcap"):
        _kind, _o, _head, units = fuzz.split_units((DATA / name).read_bytes())
        frames += [bytes(u[16:]) for u in units]
    damaged = 0
    for k in range(3000):
        f = mut.dns_message(frames[k % len(frames)])
        if f is None:
            continue
        damaged += 1
        row = parse_bytes(f, 1)[0]
        assert {n: int(row[n]) for n in FIELDS} == naive_parse(f, 1)
        ql = int(row["dns_qlen"])
        assert ql <= layout.DNS_NAME_MAX - 1
        if row["dns_flags"] & layout.DNS_QUESTION:
            name = bytes(row["dns_qname"][:ql])
            assert all(33 <= c <= 126 and c not in b'"\\' for c in name)
    assert damaged >= 1000
