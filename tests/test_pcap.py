"""Capture-file reading: formats, chunking, damage, and agreement with a naive reader."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from flowscope import layout as L
from flowscope.pcap import CaptureError, CaptureReader, iter_captures, open_capture, parse_bytes

from naive_parse import FIELDS, naive_parse

HTTP = "zeek__http__get.pcap"
CUT = "derived__zeek__http__get.cut-mid-record.pcap"


# --- helpers ------------------------------------------------------------------

def naive_pcap_records(data: bytes):
    """(ts_ns, wirelen, frame bytes), link type and format of a classic pcap, read with struct."""
    magic = data[:4]
    order = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    ns = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    link = struct.unpack_from(order + "I", data, 20)[0] & 0xFFFF
    recs, p = [], 24
    while p + 16 <= len(data):
        sec, frac, incl, orig = struct.unpack_from(order + "IIII", data, p)
        if p + 16 + incl > len(data):
            break
        recs.append((sec * 10**9 + frac * (1 if ns else 1000), orig, data[p + 16:p + 16 + incl]))
        p += 16 + incl
    return recs, link


def rows(arr):
    return [{f: int(r[f]) for f in FIELDS} for r in arr]


def read(path, **kw):
    return CaptureReader(path, **kw).read_all()


def write_pcap(path, recs, link=1, big=False, ns=False, snap=65535):
    o = ">" if big else "<"
    magic = 0xA1B23C4D if ns else 0xA1B2C3D4
    out = [struct.pack(o + "IHHiIII", magic, 2, 4, 0, 0, snap, link)]
    for ts, wirelen, frame in recs:
        sec, sub = divmod(ts, 10**9)
        out.append(struct.pack(o + "IIII", sec, sub if ns else sub // 1000, len(frame), wirelen) + frame)
    Path(path).write_bytes(b"".join(out))


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def ng_block(o, btype, body):
    body = _pad4(body)
    n = 12 + len(body)
    return struct.pack(o + "II", btype, n) + body + struct.pack(o + "I", n)


def ng_option(o, code, value):
    return struct.pack(o + "HH", code, len(value)) + _pad4(value)


def write_pcapng(path, recs, big=False):
    """Two sections; interfaces with µs, ns (if_tsresol 9) and 2^-20 s + offset resolutions;
    EPB, obsolete PB, SPB and an unknown block. Returns the expected (iface, ts, frame) list."""
    o = ">" if big else "<"
    shb = struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    end_opt = struct.pack(o + "HH", 0, 0)
    blocks, expect = [], []
    # section 1: iface 0 (µs, default), iface 1 (ns)
    blocks.append(ng_block(o, 0x0A0D0D0A, shb + ng_option(o, 4, b"flowscope-test") + end_opt))
    blocks.append(ng_block(o, 1, struct.pack(o + "HHI", 1, 0, 0)))
    blocks.append(ng_block(o, 1, struct.pack(o + "HHI", 1, 0, 0) + ng_option(o, 9, b"\x09") + end_opt))
    blocks.append(ng_block(o, 0x0BAD, b"unknown block body"))
    last_ts = 0
    for k, (ts, wirelen, frame) in enumerate(recs):
        iface = k % 3
        if iface == 0:
            raw = ts // 1000
            blocks.append(ng_block(o, 6, struct.pack(o + "IIIII", 0, raw >> 32, raw & 0xFFFFFFFF,
                                                     len(frame), wirelen) + frame))
            last_ts = raw * 1000
            expect.append((0, last_ts, frame))
        elif iface == 1:
            blocks.append(ng_block(o, 2, struct.pack(o + "HHIIII", 1, 0, ts >> 32, ts & 0xFFFFFFFF,
                                                     len(frame), wirelen) + frame))
            last_ts = ts
            expect.append((1, ts, frame))
        else:
            blocks.append(ng_block(o, 3, struct.pack(o + "I", len(frame)) + frame))
            expect.append((0, last_ts, frame))
    # section 2 (resets interfaces): iface 0 with 2^-20 s units and a 100 s offset
    blocks.append(ng_block(o, 0x0A0D0D0A, shb))
    opts = ng_option(o, 9, b"\x94") + ng_option(o, 14, struct.pack(o + "q", 100)) + end_opt
    blocks.append(ng_block(o, 1, struct.pack(o + "HHI", 1, 0, 0) + opts))
    ts, wirelen, frame = recs[0]
    raw = (5 << 20) | (1 << 19)  # 5.5 s
    blocks.append(ng_block(o, 6, struct.pack(o + "IIIII", 0, raw >> 32, raw & 0xFFFFFFFF,
                                             len(frame), wirelen) + frame))
    expect.append((0, 105_500_000_000, frame))
    Path(path).write_bytes(b"".join(blocks))
    return expect


def manifest_counts(shared: Path) -> dict[str, int]:
    counts = {}
    for line in (shared / "MANIFEST.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 7 and cells[0].startswith("`"):
            counts[cells[0].strip("`")] = int(cells[5])
    return counts


# --- real captures ------------------------------------------------------------

def test_shared_captures_read_with_manifest_counts(shared_pcaps):
    counts = manifest_counts(shared_pcaps)
    files = sorted(p for p in shared_pcaps.iterdir() if p.is_file() and p.name != "MANIFEST.md")
    assert len(counts) == len(files) >= 50
    for p in files:
        n = 0
        try:
            for batch in CaptureReader(p):
                n += int(np.count_nonzero(batch["tun_depth"] == 0))  # frames, not inner rows
        except CaptureError as exc:
            assert p.name.startswith("derived__"), str(exc)
            assert "\n" not in str(exc) and p.name in str(exc)
        assert n == counts[p.name], p.name


def test_committed_captures_read(data_dir):
    files = sorted(data_dir.glob("*.pcap*"))
    assert len(files) >= 40
    for p in files:
        try:
            arr = read(p)
        except CaptureError:
            assert p.name.startswith("derived__")
            continue
        assert arr.shape[0] == 0 or (arr["caplen"] > 0).all()


def test_classic_pcaps_equal_naive_reader_and_parser(data_dir):
    for p in sorted(data_dir.glob("*.pcap")):
        data = p.read_bytes()
        if p.name.startswith("derived__"):
            continue
        recs, link = naive_pcap_records(data)
        # the twin parses frames: decapsulated rows are checked in test_tunnels.py
        got = [r for r in rows(read(p, batch_size=5)) if r["tun_depth"] == 0]
        want = [naive_parse(frame, ts, link, wirelen) for ts, wirelen, frame in recs]
        assert got == want, p.name


def test_cut_mid_record_yields_good_packets_then_raises(data_dir):
    reader = CaptureReader(data_dir / CUT)
    seen = 0
    with pytest.raises(CaptureError) as err:
        for batch in reader:
            seen += len(batch)
    assert seen == 7 and reader.frames == 7
    msg = str(err.value)
    assert CUT in msg and "ends in the middle of a packet record" in msg and "after 7 packets" in msg


def test_empty_pcap_has_no_packets(data_dir):
    reader = CaptureReader(data_dir / "zeek__empty.pcap")
    assert [len(b) for b in reader] == [] and reader.frames == 0
    assert reader.format == "pcap" and reader.linktypes == {1}


def test_nanosecond_timestamps_exact(data_dir):
    reader = CaptureReader(data_dir / "tcpdump__tcp-handshake-nano.pcap")
    arr = reader.read_all()
    assert reader.format == "pcap-ns" and reader.linktypes == {113}
    assert arr["ts"].tolist() == [1418145369924505488, 1418145370052027262, 1418145370052115157]
    assert arr["seq"].tolist() == [797190859, 3078856592, 797190860]
    assert arr["l3"].tolist() == [4, 4, 4]


def test_pcapng_multi_interface(data_dir, shared_pcaps):
    reader = CaptureReader(shared_pcaps / "zeek__pcapng-multi-interface.pcapng")
    arr = reader.read_all()
    assert reader.format == "pcapng" and reader.linktypes == {1}
    assert arr["iface"].tolist() == [0, 0, 1, 1, 1, 1]
    assert arr["ts"].tolist() == [1767663089500330493, 1767663089514291940, 1767663437111897000,
                                  1767663437126460000, 1767663437128303000, 1767663437140942000]
    assert arr["sport"].tolist() == [36343, 53, 56351, 53, 56352, 53]


def test_pcap_2038_timestamp(data_dir):
    arr = read(data_dir / "tcpdump__time_2038.pcap")
    assert arr["ts"].tolist() == [2145916800 * 10**9]  # 2038-01-01, as tshark shows


def test_link_types_of_committed_files(data_dir):
    assert CaptureReader(data_dir / "suri__decode-sll2-01__input.pcap").read_all()["l3"].tolist() \
        == [4] * 5
    raw = read(data_dir / "suri__defrag__bug-6887-defrag-ipv6-tcp__frag-ip-tcp.pcap")
    assert raw["l3"].tolist() == [6, 6, 6]
    assert (raw["pflags"] & L.PF_FRAG).astype(bool).tolist() == [False, True, True]
    q = read(data_dir / "zeek__q-in-q.pcap")
    assert q["l3"].tolist() == [4, 4, 4, 4, L.L3_ETHER] and q["vlan"].tolist() == [13] * 5  # last: ARP
    pppoe = read(data_dir / "zeek__pppoe.pcap")
    assert (pppoe["l3"] != 0).sum() > 50


# --- synthesized files ----------------------------------------------------------

@pytest.fixture(scope="module")
def http_records(data_dir):
    recs, link = naive_pcap_records((data_dir / HTTP).read_bytes())
    assert link == 1
    return recs


@pytest.fixture(scope="module")
def mixed_records(data_dir):
    recs = []
    for name in (HTTP, "zeek__wikipedia.pcap", "zeek__q-in-q.pcap", "zeek__ftp__ipv6.pcap"):
        recs += naive_pcap_records((data_dir / name).read_bytes())[0]
    return recs


def test_chunk_boundaries_do_not_change_packets(tmp_path, mixed_records):
    f = tmp_path / "mixed.pcap"
    write_pcap(f, mixed_records)
    big = rows(read(f))
    assert len(big) == len(mixed_records)
    for chunk, batch in ((64, 3), (100, 7), (1000, 65536), (4096, 1)):
        assert rows(read(f, chunk_bytes=chunk, batch_size=batch)) == big
    want = [naive_parse(fr, ts, 1, wl) for ts, wl, fr in mixed_records]
    assert big == want


def test_big_endian_and_nanosecond_pcap(tmp_path, http_records):
    want = [naive_parse(fr, ts, 1, wl) for ts, wl, fr in http_records]
    for big in (False, True):
        f = tmp_path / f"be{big}.pcap"
        write_pcap(f, http_records, big=big)
        assert rows(read(f, chunk_bytes=128)) == want
        fns = tmp_path / f"ns{big}.pcap"
        recs = [(ts + 789, wl, fr) for ts, wl, fr in http_records]
        write_pcap(fns, recs, big=big, ns=True)
        reader = CaptureReader(fns)
        assert reader.format == "pcap-ns" and reader.big_endian == big
        assert read(fns)["ts"].tolist() == [r[0] for r in recs]


@pytest.mark.parametrize("big", [False, True])
def test_pcapng_both_byte_orders_all_packet_blocks(tmp_path, http_records, big):
    f = tmp_path / "t.pcapng"
    expect = write_pcapng(f, http_records, big=big)
    for chunk in (64, 300, 1 << 20):
        reader = CaptureReader(f, chunk_bytes=chunk, batch_size=4)
        arr = reader.read_all()
        assert reader.format == "pcapng" and reader.big_endian == big and reader.linktypes == {1}
        assert arr["iface"].tolist() == [e[0] for e in expect]
        assert arr["ts"].tolist() == [e[1] for e in expect]
        got = rows(arr)
        for g, (iface, ts, frame) in zip(got, expect):
            want = naive_parse(frame, ts, 1, g["wirelen"])
            want["iface"] = iface
            assert g == want


def test_pcapng_unknown_link_type_frames_are_unmatched(tmp_path, http_records):
    o = "<"
    shb = struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    frame = http_records[0][2]
    data = (ng_block(o, 0x0A0D0D0A, shb) + ng_block(o, 1, struct.pack(o + "HHI", 147, 0, 0))
            + ng_block(o, 6, struct.pack(o + "IIIII", 0, 0, 0, len(frame), len(frame)) + frame)
            + ng_block(o, 6, struct.pack(o + "IIIII", 5, 0, 0, len(frame), len(frame)) + frame))
    f = tmp_path / "lt.pcapng"
    f.write_bytes(data)
    reader = CaptureReader(f)
    arr = reader.read_all()
    assert arr["error"].tolist() == [L.PERR_LINKTYPE] * 2 and arr["iface"].tolist() == [0, 5]
    assert reader.linktypes == {147}


def test_truncated_at_every_offset_only_capture_errors(tmp_path, http_records):
    full = tmp_path / "full.pcap"
    write_pcap(full, http_records[:4])
    data = full.read_bytes()
    bounds = [24]
    for _ts, _wl, fr in http_records[:4]:
        bounds.append(bounds[-1] + 16 + len(fr))
    cut_file = tmp_path / "cut.pcap"
    for cut in range(0, len(data) + 1):
        cut_file.write_bytes(data[:cut])
        complete = sum(1 for b in bounds[1:] if b <= cut)
        seen = 0
        try:
            for batch in CaptureReader(cut_file, chunk_bytes=256, batch_size=2):
                seen += len(batch)
        except CaptureError as exc:
            assert "\n" not in str(exc) and "cut.pcap" in str(exc)
            assert cut < 24 or cut not in bounds
        else:
            assert cut in bounds
        assert seen == complete


def test_truncated_pcapng_only_capture_errors(tmp_path, http_records):
    f = tmp_path / "t.pcapng"
    write_pcapng(f, http_records[:5])
    data = f.read_bytes()
    cut_file = tmp_path / "cut.pcapng"
    for cut in range(0, len(data), 7):
        cut_file.write_bytes(data[:cut])
        try:
            for _ in CaptureReader(cut_file, chunk_bytes=128):
                pass
        except CaptureError as exc:
            assert "cut.pcapng" in str(exc)


def test_corrupt_record_header_after_good_packets(tmp_path, http_records):
    f = tmp_path / "bad.pcap"
    write_pcap(f, http_records[:5])
    data = bytearray(f.read_bytes())
    off = 24 + 16 + len(http_records[0][2]) + 16 + len(http_records[1][2])
    data[off + 8:off + 12] = struct.pack("<I", 0xFFFFFF00)
    f.write_bytes(bytes(data))
    seen = 0
    with pytest.raises(CaptureError, match=rf"bad\.pcap: corrupt record header at offset {off} "):
        for batch in CaptureReader(f, batch_size=1):
            seen += len(batch)
    assert seen == 2


def test_corrupt_pcapng_block_length(tmp_path, http_records):
    f = tmp_path / "bad.pcapng"
    write_pcapng(f, http_records[:3])
    data = bytearray(f.read_bytes())
    data[4:8] = struct.pack("<I", 13)
    f.write_bytes(bytes(data))
    with pytest.raises(CaptureError, match="corrupt record header at offset 0"):
        read(f)


def test_record_bigger_than_chunk_grows_buffer(tmp_path, http_records):
    jumbo = http_records[3][2] + b"\0" * 9000
    recs = [http_records[0], (http_records[3][0], len(jumbo), jumbo), http_records[5]]
    f = tmp_path / "jumbo.pcap"
    write_pcap(f, recs)
    assert rows(read(f, chunk_bytes=64)) == rows(read(f))
    assert read(f, chunk_bytes=64)["caplen"].tolist() == [len(r[2]) for r in recs]


def test_not_a_capture_file(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("hello, world\n")
    with pytest.raises(CaptureError, match=r"x\.txt: not a pcap or pcapng file \(magic 0x68656c6c\)"):
        CaptureReader(f)


def test_zero_byte_file(tmp_path):
    f = tmp_path / "zero.pcap"
    f.write_bytes(b"")
    with pytest.raises(CaptureError, match=r"zero\.pcap: empty file"):
        CaptureReader(f)


def test_short_pcap_header(tmp_path, data_dir):
    f = tmp_path / "short.pcap"
    f.write_bytes((data_dir / HTTP).read_bytes()[:10])
    with pytest.raises(CaptureError, match="short.pcap: file ends inside the pcap file header"):
        CaptureReader(f)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CaptureError, match="nope.pcap: No such file or directory"):
        CaptureReader(tmp_path / "nope.pcap")
    with pytest.raises(CaptureError, match="Is a directory"):
        CaptureReader(tmp_path)


def test_unsupported_pcap_link_type_fails_at_open(tmp_path, http_records):
    f = tmp_path / "usb.pcap"
    write_pcap(f, http_records[:1], link=147)
    with pytest.raises(CaptureError, match=r"usb\.pcap: unsupported link type 147$"):
        CaptureReader(f)


def test_fcs_bits_of_link_type_ignored(tmp_path, http_records):
    f = tmp_path / "fcs.pcap"
    write_pcap(f, http_records[:2], link=1 | 0x14000000)
    assert read(f)["l3"].tolist() == [4, 4]


def test_reader_attributes_and_helpers(data_dir):
    p = data_dir / HTTP
    reader = open_capture(p, batch_size=4)
    sizes = [len(b) for b in reader]
    assert sizes == [4, 4, 4, 2]
    assert reader.frames == 14 and reader.bytes_read == reader.file_size == p.stat().st_size
    assert reader.path == str(p) and reader.format == "pcap"
    pairs = list(iter_captures([p, data_dir / "zeek__tcp__syn.pcap"]))
    assert sum(len(b) for _, b in pairs) == 15
    assert len(list(reader)) == 4  # re-iterable


def test_parse_bytes_single_frame(http_records):
    ts, wl, fr = http_records[0]
    row = parse_bytes(fr, ts)
    assert row.shape == (1,) and row.dtype == L.PKT_DTYPE
    assert rows(row)[0] == naive_parse(fr, ts, 1)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_values_agree_with_tshark(data_dir):
    p = data_dir / "zeek__wikipedia.pcap"
    res = subprocess.run(["tshark", "-r", str(p), "-T", "fields", "-E", "separator=,",
                          "-e", "frame.time_epoch", "-e", "ip.src", "-e", "ipv6.src",
                          "-e", "tcp.srcport", "-e", "udp.srcport", "-e", "tcp.len", "-e", "udp.length"],
                         capture_output=True, text=True, check=True)
    arr = read(p)
    lines = res.stdout.splitlines()
    assert len(lines) == len(arr)
    for row, line in zip(arr, lines):
        t, ip4, ip6, tsp, usp, tlen, ulen = (line.split(",") + [""] * 7)[:7]
        sec, _, frac = t.partition(".")
        assert int(row["ts"]) == int(sec) * 10**9 + int(frac.ljust(9, "0")[:9])
        if ip4:
            assert ".".join(str(b) for b in int(row["src_lo"]).to_bytes(4, "big")) == ip4.split(",")[0]
        if tsp:
            assert int(row["sport"]) == int(tsp) and int(row["payload_len"]) == int(tlen)
        elif usp:
            assert int(row["sport"]) == int(usp) and int(row["payload_len"]) == int(ulen) - 8


def _defined(rows: np.ndarray) -> np.ndarray:
    """``rows`` with the bytes of ``dns_qname`` after ``dns_qlen`` (left as they were by the
    parser: undefined) zeroed."""
    names = rows["dns_qname"]
    names[np.arange(names.shape[1]) >= rows["dns_qlen"][:, None]] = 0
    return rows


def test_prefetched_iteration_gives_the_same_batches_and_errors(data_dir):
    from flowscope.pcap import CaptureError, CaptureReader

    path = data_dir / "zeek__wikipedia.pcap"
    plain = _defined(np.concatenate([b.copy() for b in CaptureReader(path, batch_size=7)]))
    pre = _defined(np.concatenate(list(CaptureReader(path, batch_size=7).prefetched())))
    assert np.array_equal(plain, pre)
    cut = data_dir / "derived__zeek__http__get.cut-mid-record.pcap"
    got = []
    with pytest.raises(CaptureError, match="middle of a packet record"):
        for b in CaptureReader(cut, batch_size=2).prefetched():
            got.append(b)
    assert sum(len(b) for b in got) == 7
    it = CaptureReader(path, batch_size=3).prefetched(depth=1)
    next(it)
    it.close()  # stopping early ends the reading thread


def _ng_file(o, blocks, tsresol=None, tsoffset=None):
    shb = struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    opts = b""
    if tsresol is not None:
        opts += ng_option(o, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += ng_option(o, 14, struct.pack(o + "q", tsoffset))
    if opts:
        opts += struct.pack(o + "HH", 0, 0)
    head = [ng_block(o, 0x0A0D0D0A, shb), ng_block(o, 1, struct.pack(o + "HHI", 1, 0, 0) + opts)]
    return b"".join(head + blocks)


def _epb(o, raw, frame, iface=0):
    return ng_block(o, 6, struct.pack(o + "IIIII", iface, raw >> 32, raw & 0xFFFFFFFF,
                                      len(frame), len(frame)) + frame)


I64_MAX, I64_MIN = 2**63 - 1, -(2**63)


@pytest.mark.parametrize("res, off, raw, want", [
    (9, None, 0x7FFFFFFFFFFFFFFF, I64_MAX),
    (9, None, 0xFFFFFFFFFFFFFFFF, I64_MAX),  # unsigned, not -1
    (6, None, 0xFFFFFFFFFFFFFFFF, I64_MAX),
    (6, None, 9223372036854775, 9223372036854775000),
    (6, None, 9223372036854776, I64_MAX),
    (0, None, 2**40, I64_MAX),
    (19, None, 0xFFFFFFFFFFFFFFFF, 1844674407),  # 10^-19 s units
    (28, None, 0xFFFFFFFFFFFFFFFF, 1),
    (29, None, 0xFFFFFFFFFFFFFFFF, 0),
    (255, None, 0xFFFFFFFFFFFFFFFF, 0),
    (0x80, None, 2**62, I64_MAX),  # 2^0 s units
    (0x80 | 20, None, (5 << 20) | (1 << 19), 5_500_000_000),
    (0x80 | 64, None, 2**63, 500_000_000),
    (0x80 | 127, None, 0xFFFFFFFFFFFFFFFF, 0),
    (6, 2**62, 1, I64_MAX),  # offset * 10^9 saturates
    (6, -(2**62), 1, I64_MIN + 1000),
    (6, I64_MIN, 0, I64_MIN),
    (9, -1, 0x7FFFFFFFFFFFFFFF, I64_MAX - 10**9),
    (9, 9_000_000_000, 2**62, I64_MAX),  # sum saturates
])
@pytest.mark.parametrize("big", [False, True], ids=["le", "be"])
def test_pcapng_timestamps_saturate(tmp_path, http_records, res, off, raw, want, big):
    o = ">" if big else "<"
    f = tmp_path / "ts.pcapng"
    f.write_bytes(_ng_file(o, [_epb(o, raw, http_records[0][2])], tsresol=res, tsoffset=off))
    assert read(f)["ts"].tolist() == [want]


def test_pcap_timestamp_extremes_fit(tmp_path, http_records):
    f = tmp_path / "ts.pcap"
    frame = http_records[0][2]
    data = bytearray()
    write_pcap(f, [(0, len(frame), frame)], ns=True)
    data = bytearray(f.read_bytes())
    data[24:32] = b"\xff" * 8
    f.write_bytes(bytes(data))
    assert read(f)["ts"].tolist() == [(2**32 - 1) * 10**9 + 2**32 - 1]


def _big_block(o, btype, size):
    return struct.pack(o + "II", btype, size) + b"\0" * (size - 12) + struct.pack(o + "I", size)


@pytest.mark.parametrize("btype", [5, 4, 0x0BAD])  # statistics, name resolution, unknown
def test_oversized_non_packet_block_is_streamed_past(tmp_path, http_records, btype):
    from flowscope.pcap import MAX_BLOCK

    o = "<"
    frames = [r[2] for r in http_records[:4]]
    body = [_epb(o, 1, frames[0]), _epb(o, 2, frames[1]), _big_block(o, btype, MAX_BLOCK + 8),
            _epb(o, 3, frames[2]), _epb(o, 4, frames[3])]
    f = tmp_path / "big.pcapng"
    f.write_bytes(_ng_file(o, body))
    r = CaptureReader(f, chunk_bytes=1 << 16, batch_size=3)
    got = r.read_all()
    assert got["ts"].tolist() == [1000, 2000, 3000, 4000]
    assert r.frames == 4 and r.skipped_packets == 0
    assert r.bytes_read == f.stat().st_size


@pytest.mark.parametrize("btype", [6, 2, 3])
def test_oversized_packet_block_is_skipped_counted_and_reported(tmp_path, http_records, btype):
    from flowscope.pcap import MAX_BLOCK

    o = "<"
    frames = [r[2] for r in http_records[:3]]
    body = [_epb(o, 1, frames[0]), _big_block(o, btype, MAX_BLOCK + 1024), _epb(o, 3, frames[1]),
            _big_block(o, btype, 2 * MAX_BLOCK), _epb(o, 4, frames[2])]
    f = tmp_path / "big.pcapng"
    f.write_bytes(_ng_file(o, body))
    r = CaptureReader(f, chunk_bytes=1 << 16)
    seen = []
    with pytest.raises(CaptureError, match=r"big\.pcapng: skipped 2 packet and 0 interface blocks"):
        for b in r:
            seen += b["ts"].tolist()
    assert seen == [1000, 3000, 4000]
    assert (r.frames, r.skipped_packets, r.bytes_read) == (3, 2, f.stat().st_size)


def test_oversized_interface_block_leaves_its_packets_unmatched(tmp_path, http_records):
    from flowscope.pcap import MAX_BLOCK

    o = "<"
    frame = http_records[0][2]
    body = [_big_block(o, 1, MAX_BLOCK + 4), _epb(o, 1, frame, iface=1), _epb(o, 2, frame)]
    f = tmp_path / "bigidb.pcapng"
    f.write_bytes(_ng_file(o, body))
    r = CaptureReader(f)
    out = []
    with pytest.raises(CaptureError, match="skipped 0 packet and 1 interface blocks"):
        for b in r:
            out.append(b.copy())
    got = np.concatenate(out)
    assert got["error"].tolist() == [L.PERR_LINKTYPE, 0]


def test_oversized_block_damage_is_a_capture_error(tmp_path, http_records):
    from flowscope.pcap import MAX_BLOCK

    o = "<"
    frame = http_records[0][2]
    good = _ng_file(o, [_epb(o, 1, frame)])
    big = _big_block(o, 5, MAX_BLOCK + 4)
    f = tmp_path / "cut.pcapng"
    f.write_bytes(good + big[: len(big) // 2])
    with pytest.raises(CaptureError, match="file ends in the middle of a block"):
        read(f)
    f.write_bytes(good + big[:-4] + struct.pack("<I", 12) + _epb(o, 2, frame))
    with pytest.raises(CaptureError, match="corrupt record header"):
        read(f)
