"""RotatingFile: size and time rotation, keep-N, unique names, whole lines only, header hooks."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from flowscope.output.rotate import RotatingFile
from flowscope.output.zeek import FIELDS

DATA = Path(__file__).parent / "data"
STAMPED = re.compile(r"flows\.jsonl\.\d{8}-\d{6}(\.\d+)?")


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def contents(rf: RotatingFile) -> list[str]:
    """Text of every file of the stream, oldest first, the current one last."""
    rf.flush()
    return [p.read_text() for p in rf.rotated_files()] + [rf.path.read_text()]


def test_size_rotation_keeps_files_under_the_limit(tmp_path):
    rf = RotatingFile(tmp_path / "flows.jsonl", max_bytes=100, clock=FakeClock(0.0))
    lines = [f"line {i:02d} {'x' * 20}\n" for i in range(10)]  # 29 bytes each
    for line in lines:
        rf.write(line)
    files = contents(rf)
    rf.close()
    assert len(files) == 4  # 3 + 3 + 3 + 1 lines
    assert all(len(f.encode()) <= 100 for f in files)
    assert "".join(files) == "".join(lines)


def test_time_rotation_on_clock_boundaries(tmp_path):
    clock = FakeClock(1_000_000_000.5)  # 2001-09-09 01:46:40.5 UTC
    rf = RotatingFile(tmp_path / "flows.jsonl", interval_s=60, clock=clock)
    rf.write("a\n")
    clock.t = 1_000_000_019.9  # still before the minute boundary (..020)
    rf.write("b\n")
    assert rf.rotated_files() == []
    clock.t = 1_000_000_020.0
    rf.write("c\n")
    clock.t = 1_000_000_079.0
    rf.write("d\n")
    clock.t = 1_000_000_200.0
    rf.write("e\n")
    names = [p.name for p in rf.rotated_files()]
    # named after the UTC time each file was opened
    assert names == ["flows.jsonl.20010909-014640", "flows.jsonl.20010909-014700"]
    assert contents(rf) == ["a\nb\n", "c\nd\n", "e\n"]
    rf.close()


def test_time_rotation_skips_files_without_records(tmp_path):
    clock = FakeClock(0.0)
    rf = RotatingFile(tmp_path / "flows.jsonl", interval_s=10, clock=clock)
    clock.t = 100.0
    rf.write("first\n")  # nothing to rotate yet: no empty file is made
    assert rf.rotated_files() == []
    clock.t = 125.0
    rf.write("second\n")
    assert contents(rf) == ["first\n", "second\n"]
    rf.close()


def test_keep_deletes_the_oldest(tmp_path):
    clock = FakeClock(0.0)
    rf = RotatingFile(tmp_path / "flows.jsonl", max_bytes=5, keep=2, clock=clock)
    for i in range(6):
        clock.t = 3600.0 * i
        rf.write(f"r{i}\n")
    assert [p.read_text() for p in rf.rotated_files()] == ["r3\n", "r4\n"]
    assert len(rf.rotated) == 5  # every rotation is remembered, deleted or not
    assert contents(rf)[-1] == "r5\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["flows.jsonl"] + [p.name for p in rf.rotated_files()])
    rf.close()


def test_names_are_unique_within_one_second_and_never_clobber(tmp_path):
    path = tmp_path / "flows.jsonl"
    squatter = tmp_path / "flows.jsonl.19700101-000000.2"
    squatter.write_text("not ours\n")
    rf = RotatingFile(path, max_bytes=3, clock=FakeClock(0.25))
    for i in range(5):
        rf.write(f"{i}\n")
    names = [p.name for p in rf.rotated]
    assert names == ["flows.jsonl.19700101-000000", "flows.jsonl.19700101-000000.1",
                     "flows.jsonl.19700101-000000.3", "flows.jsonl.19700101-000000.4"]
    assert squatter.read_text() == "not ours\n"
    assert [p.read_text() for p in rf.rotated] == ["0\n", "1\n", "2\n", "3\n"]
    rf.close()


def test_partial_line_is_never_split(tmp_path):
    rf = RotatingFile(tmp_path / "flows.jsonl", max_bytes=10, clock=FakeClock(0.0))
    rf.write("1234\n")
    rf.write("abc")
    rf.write("def")  # over the limit, but rotating now would cut this line in two
    rf.write("ghi\n")
    assert rf.rotated_files() == []
    assert rf.rotate() is not None  # whole lines again: rotation allowed
    rf.write("next\n")
    rf.write("half")
    assert rf.rotate() is None  # refused in the middle of a line
    rf.write(" line\n")
    assert contents(rf) == ["1234\nabcdefghi\n", "next\nhalf line\n"]
    rf.close()


def test_random_batches_lose_nothing(tmp_path):
    rng = random.Random(7)
    clock = FakeClock(0.0)
    rf = RotatingFile(tmp_path / "flows.jsonl", max_bytes=200, interval_s=5.0, clock=clock,
                      buffering=64)
    written = []
    for i in range(300):
        clock.t += rng.random()
        batch = "".join(f"{i}:{j}:{'é' * rng.randrange(40)}\n" for j in range(rng.randrange(4)))
        rf.write(batch)
        written.append(batch)
    files = contents(rf)
    rf.close()
    assert "".join(files) == "".join(written)
    assert len(files) > 20
    lines = [ln for f in files for ln in f.splitlines(keepends=True)]
    assert all(ln.endswith("\n") for ln in lines)
    assert all(STAMPED.fullmatch(p.name) for p in rf.rotated)


def test_existing_file_is_moved_aside_not_truncated(tmp_path):
    path = tmp_path / "flows.jsonl"
    path.write_text("from the last run\n")
    rf = RotatingFile(path, max_bytes=1 << 20)
    rf.write("new\n")
    old = rf.rotated_files()
    assert len(old) == 1 and old[0].read_text() == "from the last run\n"
    assert contents(rf)[-1] == "new\n"
    rf.close()


def test_hooks_write_headers_that_do_not_count_as_records(tmp_path):
    opened = []
    rf = RotatingFile(tmp_path / "flows.jsonl", max_bytes=8, clock=FakeClock(0.0),
                      on_open=lambda s: (opened.append(1), s.write("#a long header line\n")),
                      on_close=lambda s: s.write("#close\n"))
    for i in range(1, 5):
        rf.write(f"r{i}\n")
    files = contents(rf)
    rf.close()
    # a header longer than max_bytes cannot make rotation loop: only records fill a file
    assert files == ["r1\nr2\n#close\n", "#a long header line\nr3\n#close\n",
                     "#a long header line\nr4\n"]
    assert opened == [1, 1]


def test_stream_protocol(tmp_path):
    rf = RotatingFile(tmp_path / "flows.jsonl", max_bytes=1000)
    assert not rf.isatty() and rf.writable() and rf.encoding == "utf-8"
    print("via print", file=rf)
    rf.close()
    assert rf.closed
    assert (tmp_path / "flows.jsonl").read_text() == "via print\n"
    with pytest.raises(ValueError):
        rf.write("late\n")
    with pytest.raises(ValueError):
        RotatingFile(tmp_path / "x", max_bytes=0)


def _track(path: Path, writer):
    from flowscope import layout
    from flowscope.config import TrackerConfig
    from flowscope.keys import FiveTuple
    from flowscope.pcap import CaptureReader
    from flowscope.tracker import FlowTracker

    zeek = getattr(writer, "NEEDS_ZEEK", False)
    mask = layout.EVMASK_ENDED if zeek else layout.EVMASK_ALL
    tracker = FlowTracker(FiveTuple(), TrackerConfig(sweep_interval=1.0), events=mask, zeek=zeek)
    for batch in CaptureReader(path):
        for recs in tracker.process(batch):
            writer.write_records(recs)
    for recs in tracker.process_finish():
        writer.write_records(recs)
    writer.close()


def test_jsonl_writer_output_is_the_same_rotated_or_not(tmp_path):
    import io

    from flowscope.output import JsonlWriter

    pcap = DATA / "zeek__wikipedia.pcap"
    plain = io.StringIO()
    _track(pcap, JsonlWriter(plain))
    rf = RotatingFile(tmp_path / "flows.jsonl", max_bytes=4096)
    _track(pcap, JsonlWriter(rf))
    files = contents(rf)
    rf.close()
    assert len(files) > 1
    assert "".join(files) == plain.getvalue()


def test_zeek_tsv_header_in_every_file(tmp_path):
    import io

    from flowscope.output import ZeekTsvWriter

    rf = RotatingFile(tmp_path / "conn.log", max_bytes=1)
    w = ZeekTsvWriter(rf)
    rf.on_open = lambda s: w._write_header()  # what ZeekTsvWriter does for a RotatingFile
    _track(DATA / "zeek__wikipedia.pcap", w)
    files = contents(rf)
    rf.close()
    assert len(files) > 1
    for f in files:
        lines = f.splitlines()
        assert lines[0] == "#separator \\x09"
        assert sum(ln.startswith("#fields\t") for ln in lines) == 1
        assert all(len(ln.split("\t")) == len(FIELDS) for ln in lines if not ln.startswith("#"))
    plain = io.StringIO()
    _track(DATA / "zeek__wikipedia.pcap", ZeekTsvWriter(plain))
    records = [ln for ln in plain.getvalue().splitlines() if not ln.startswith("#")]
    assert [ln for f in files for ln in f.splitlines() if not ln.startswith("#")] == records
