"""Zeek conn.log (TSV, JSON) and EVE kernels against their plain-Python twins.

The kernels (flowscope._kernels.connout, used by the writers) must give the bytes of the
Python formatters they replaced (tests/naive_connout.py) on every capture of the corpus and
on records with every extension field set to random and extreme values (live-style records:
kernel drops, interface names, tunnels, DNS, VLANs, MACs, huge counters).
"""

from __future__ import annotations

import hashlib
import io
import json
import random

import numpy as np
import pytest

from conftest import shared_pcaps_dir
from flowscope import FlowTracker, layout
from flowscope._kernels import connout as K
from flowscope.community_id import community_id_v1
from flowscope.config import TrackerConfig
from flowscope.keys import FiveTuple, IpPair, MacPair
from flowscope.output.eve import EveWriter
from flowscope.output.zeek import ZeekJsonWriter, ZeekTsvWriter, make_uid
from flowscope.pcap import CaptureError, CaptureReader
from naive_connout import NaiveEveWriter, NaiveZeekJsonWriter, NaiveZeekTsvWriter
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
PAIRS = ((ZeekTsvWriter, NaiveZeekTsvWriter), (ZeekJsonWriter, NaiveZeekJsonWriter),
         (EveWriter, NaiveEveWriter))


def _corpus() -> list[Path]:
    files = [p for sub in ("", "linktypes", "tunnels", "fuzz")
             for p in sorted((DATA / sub).glob("*.pcap*"))]
    shared = shared_pcaps_dir()
    if shared.is_dir():
        files += sorted(shared.glob("*.pcap*"))
    return files


def _records(path, extractor, verify=False) -> np.ndarray:
    tr = FlowTracker(extractor, config=TrackerConfig(verify_checksums=verify), events="all",
                     zeek=True)
    out = []
    try:
        for b in CaptureReader(str(path)):
            out += [r.copy() for r in tr.process(b)]
    except CaptureError:
        pass  # a cut capture: the flows read so far
    out += [r.copy() for r in tr.process_finish()]
    return np.concatenate(out) if out else np.zeros(0, layout.EVENT_DTYPE)


def _text(cls, recs, names=(), chunk=None, batches=1) -> str:
    s = io.StringIO()
    w = cls(s)
    if names:
        w.iface_names = list(names)
    if chunk is not None and hasattr(w, "_buf"):
        w._buf = np.empty(chunk, dtype=np.uint8)
    for part in np.array_split(recs, batches) if len(recs) else [recs]:
        w.write_records(part)
    w.close()
    assert w.lines == sum(1 for ln in s.getvalue().splitlines() if not ln.startswith("#"))
    return "".join(ln for ln in s.getvalue().splitlines(keepends=True)
                   if not ln.startswith(("#open", "#close")))


def _same(recs, names=(), **kw) -> int:
    n = 0
    for fast, slow in PAIRS:
        a, b = _text(fast, recs, names, **kw), _text(slow, recs, names)
        if a != b:
            for x, y in zip(a.splitlines(), b.splitlines()):
                assert x == y, fast.__name__
        assert a == b, fast.__name__
        n += a.count("\n")
    return n


@pytest.mark.parametrize("path", _corpus(), ids=lambda p: p.name)
def test_kernels_equal_python_on_the_corpus(path):
    lines = 0
    for extractor in (FiveTuple(), FiveTuple.directional(), IpPair(), MacPair()):
        lines += _same(_records(path, extractor))
    lines += _same(_records(path, FiveTuple(), verify=True))
    if path.stat().st_size > 2000 and "empty" not in path.name:
        assert lines > 0


def test_corpus_lines_are_valid_json():
    recs = _records(DATA / "zeek__wikipedia.pcap", FiveTuple())
    for cls in (ZeekJsonWriter, EveWriter):
        text = _text(cls, recs)
        assert text.count("\n") > 10
        for ln in text.splitlines():
            json.loads(ln)


_HIST = b"ShADadFfRrTtWwIiQqCcX^"
_NAME = bytes(c for c in range(33, 127) if c not in b'"\\')


def _mutate(recs: np.ndarray, seed: int) -> np.ndarray:
    """Live-style copies of real Ended records with random and extreme extension fields."""
    rng = np.random.default_rng(seed)
    pyr = random.Random(seed)
    r = recs.copy()
    n = r.shape[0]

    def pick(shape, hi, extremes):
        v = rng.integers(0, hi, size=shape, dtype=np.uint64, endpoint=True)
        mask = rng.random(shape) < 0.3
        v[mask] = rng.choice(np.array(extremes, dtype=np.uint64), size=int(mask.sum()))
        return v

    u64 = 2**64 - 1
    for f in ("pkts", "bytes", "payload", "retrans_pkts", "retrans_bytes", "zero_win",
              "ooo_pkts"):
        r[f] = pick((n, 2), u64, [0, 1, u64, 2**63, 10**19])
    r["drops"] = pick((n, 2), u64, [0, 0, 0, 1, u64])
    r["drop_reason"] = pick(n, 65535, [0, 2, 5, 77, 65535]).astype(np.uint16)
    r["flow_id"] = pick(n, u64, [0, u64])
    span = 2**62
    r["started"] = rng.integers(-span, span, size=n)
    r["last_seen"] = r["started"] + rng.integers(-10**12, 10**13, size=n)
    r["ts"] = r["last_seen"]
    small = rng.random(n) < 0.4
    r["last_seen"][small] = r["started"][small] + rng.integers(0, 10**6, size=int(small.sum()))
    for f in ("rtt_resp", "rtt_init", "dns_rtt"):
        v = rng.integers(-1, 10**13, size=n)
        v[rng.random(n) < 0.3] = -1
        v[rng.random(n) < 0.2] = rng.integers(0, 2000, size=1)[0]
        r[f] = v
    r["dns_rtt"] = np.abs(r["dns_rtt"])
    r["init_rev"] = rng.integers(0, 2, size=n)
    r["reason"] = rng.integers(0, 6, size=n)
    r["to_state"] = rng.integers(0, 10, size=n)
    r["flags_or"] = rng.integers(0, 256, size=(n, 2))
    r["icmp"] = rng.integers(0, 2**17, size=n)
    r["iface"] = rng.integers(0, 6, size=n)
    r["nvlan"] = rng.integers(0, 3, size=n)
    r["vlan"] = rng.integers(0, 4096, size=(n, 2))
    r["has_mac"] = rng.integers(0, 2, size=n)
    r["init_mac"] = rng.integers(0, 2**48, size=n)
    r["resp_mac"] = rng.integers(0, 2**48, size=n)
    tun = rng.integers(0, 2**60, size=n)
    tun[rng.random(n) < 0.5] = 0
    r["tun"] = tun
    r["tun_parent"] = rng.integers(-1, 2**62, size=(n, 2))
    r["tun_parent"][rng.random((n, 2)) < 0.3] = -1
    r["tun_parent_started"] = rng.integers(-span, span, size=(n, 2))
    r["dns"] = rng.integers(0, 8, size=n)
    r["dns_qtype"] = pick(n, 65535, [1, 28, 255, 0, 65535]).astype(np.uint16)
    r["dns_rcode"] = rng.integers(0, 24, size=n)
    r["dns_answers"] = rng.integers(0, 65536, size=n)
    z = r["zeek"]
    z[:, layout.Z_CTL] = rng.integers(0, 4, size=n)
    for w in (layout.Z_EP0, layout.Z_EP0 + 1):
        z[:, w] = (rng.integers(0, 7, size=n) | (rng.integers(0, 7, size=n) << 4)
                   | (rng.integers(0, 4, size=n) << 8))
    for w in (layout.Z_SEQ0, layout.Z_SEQ0 + 1, layout.Z_ACK0, layout.Z_ACK0 + 1):
        z[:, w] = rng.integers(0, 2**62, size=n)
    for w in (layout.Z_PAY0, layout.Z_PAY0 + 1, layout.Z_IP_BYTES0, layout.Z_IP_BYTES0 + 1):
        z[:, w] = pick(n, 2**63 - 1, [0, 2**63 - 1]).astype(np.int64)
    z[:, layout.Z_LAST] = r["started"] + rng.integers(-10**9, 10**13, size=n)
    for i in range(n):
        h = bytes(pyr.choice(_HIST) for _ in range(pyr.randint(0, 32)))
        if pyr.random() < 0.3:
            h = (b"^S" if pyr.random() < 0.5 else b"S") + h[2:]
        r["zhist"][i, :len(h)] = np.frombuffer(h, np.uint8) if h else 0
        r["zhist_len"][i] = len(h)
        q = bytes(pyr.choice(_NAME) for _ in range(pyr.randint(1, 255)))
        r["dns_qname"][i, :len(q)] = np.frombuffer(q, np.uint8)
        r["dns_qlen"][i] = len(q)
        if pyr.random() < 0.3:  # random addresses (IPv4 keys use the low 32 bits)
            r["key"][i, :4] = [pyr.getrandbits(64) for _ in range(4)]
            if pyr.random() < 0.3:
                r["key"][i, 2:4] = r["key"][i, 0:2]
    return r


@pytest.mark.parametrize("name", ["zeek__wikipedia.pcap", "zeek__ftp__ipv6.pcap",
                                  "zeek__icmp__5-pings.pcap", "zeek__q-in-q.pcap",
                                  "zeek__tunnels__vxlan.pcap", "zeek__dns53.pcap"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kernels_equal_python_on_random_live_style_records(name, seed):
    recs = _records(DATA / name, FiveTuple())
    recs = recs[np.isin(recs["kind"], (layout.EV_ENDED, layout.EV_UPDATE))]
    recs = np.concatenate([recs] * max(1, 40 // max(1, recs.shape[0])))
    names = ["eth0", 'we"ird\\name', "", "\u00fcber\u2603", "x" * 40]
    assert _same(_mutate(recs, seed), names) > 0
    # many small chunks: a full buffer is flushed between records
    assert _same(_mutate(recs, seed), names, chunk=K.MAX_LINE + 100, batches=3) > 0


def test_drop_fields_written_by_name_and_number():
    recs = _records(DATA / "zeek__http__get.pcap", FiveTuple())
    recs = recs[recs["kind"] == layout.EV_ENDED][:1].copy()
    recs["drops"] = [[3, 2**64 - 1]]
    for code in (0, 2, 65535):
        recs["drop_reason"] = code
        _same(recs)


@pytest.mark.parametrize("values", [
    [0, 1, 2, 9, 10, 999, 1000, 1001, 123456, 999999, 10**6, 10**9 - 1, 10**9, 10**9 + 1,
     1_500_000_000, 2**53, 2**53 + 1, 10**16 + 1, 1_700_000_000_123_456_789,
     1_700_000_000_999_999_500, 2**63 - 1, -1, -999, -(2**63 - 1), 5 * 10**8, 2_500],
    list(range(0, 3000)),
    [random.Random(7).randrange(-2**63 + 1, 2**63) for _ in range(20000)],
    [random.Random(8).randrange(0, 10**12) for _ in range(20000)],
    [random.Random(9).randrange(1_600_000_000 * 10**9, 1_800_000_000 * 10**9)
     for _ in range(20000)],
], ids=["edges", "small", "int64", "up-to-1000s", "epoch"])
def test_float_text_equals_python(values):
    buf = np.zeros(64, dtype=np.uint8)
    for ns in values:
        d = ns / 1e9
        for fn, want in ((lambda b: K._repr(b, 0, d), repr(d)),
                         (lambda b: K._fixed(b, 0, d, 6), f"{d:.6f}"),
                         (lambda b: K._fixed(b, 0, d, 9), f"{d:.9f}")):
            n = fn(buf)
            assert bytes(buf[:n]).decode() == want, ns


def test_repr_of_doubles_not_made_from_ns():
    rng = random.Random(3)
    vals = [0.1, 0.2, 0.3, 1e-3, 0.0011, 123456789012345.6, 9999999999999998.0, 2.0 ** -9,
            2.0 ** 33, 2.0 ** 52, 2.0 ** 53 + 2]
    vals += [rng.uniform(1e-3, 1e10) for _ in range(20000)]
    vals += [2.0 ** rng.randint(-9, 53) for _ in range(2000)]
    buf = np.zeros(64, dtype=np.uint8)
    for d in vals:  # any double from 1e-3 to 1e16 (smaller ones: those made from ns)
        n = K._repr(buf, 0, d)
        assert bytes(buf[:n]).decode() == repr(d), d


def test_uid_equals_make_uid():
    rng = random.Random(5)
    work = np.zeros(K.WORK_WORDS, dtype=np.uint64)
    out = np.zeros(18, dtype=np.uint8)
    cases = [(0, 0), (2**64 - 1, 2**63 - 1), (1, -(2**63)), (12345, -1)]
    cases += [(rng.getrandbits(64), rng.randrange(-2**63, 2**63)) for _ in range(3000)]
    for fid, st in cases:
        K._uid(work, np.uint64(fid), st, out, 0)
        assert bytes(out).decode() == make_uid(fid, st)


def test_blake2b_and_sha1_equal_hashlib():
    rng = random.Random(6)
    work = np.zeros(K.WORK_WORDS, dtype=np.uint64)
    for n in list(range(0, 56)) + [rng.randrange(0, 56) for _ in range(300)]:
        msg = bytes(rng.getrandbits(8) for _ in range(n))
        work[K.W_MSG:K.W_MSG + n] = np.frombuffer(msg, np.uint8) if n else 0
        K._sha1(work, n)
        got = b"".join(int(w).to_bytes(4, "big") for w in work[K.W_H:K.W_H + 5])
        assert got == hashlib.sha1(msg).digest()
        work[K.W_MSG:K.W_MSG + n] = np.frombuffer(msg, np.uint8) if n else 0
        K._blake2b_96(work, n)
        got = b"".join(int(w).to_bytes(8, "little") for w in work[K.W_H:K.W_H + 2])[:12]
        assert got == hashlib.blake2b(msg, digest_size=12).digest()


def test_community_id_equals_reference():
    rng = random.Random(4)
    work = np.zeros(K.WORK_WORDS, dtype=np.uint64)
    buf = np.zeros(64, dtype=np.uint8)
    for _ in range(3000):
        l3 = rng.choice([4, 6])
        proto = rng.choice([1, 6, 17, 58, 132, 47, 0])
        words = [rng.getrandbits(64) for _ in range(4)]
        if rng.random() < 0.2:
            words[2:] = words[:2]
        if l3 == 4:
            words = [0, words[1] & 0xFFFFFFFF, 0, words[3] & 0xFFFFFFFF]
        if proto in (1, 58):
            sp, dp = rng.choice([0, 8, 128, 129, 3, 146, 255]), rng.randrange(256)
        else:
            sp, dp = rng.randrange(65536), rng.randrange(65536)
        seed = rng.choice([0, 1, 65535])
        n = K._community_id(buf, 0, work, l3, proto, np.uint64(words[0]), np.uint64(words[1]),
                            np.uint64(words[2]), np.uint64(words[3]), sp, dp, seed)

        def packed(hi, lo):
            return (lo & 0xFFFFFFFF).to_bytes(4, "big") if l3 == 4 else (
                (hi << 64) | lo).to_bytes(16, "big")

        want = community_id_v1(proto, packed(*words[:2]), packed(*words[2:]), sp, dp, seed)
        assert bytes(buf[:n]).decode() == want


def test_eve_time_equals_python():
    from flowscope.output.eve import eve_time

    rng = random.Random(2)
    buf = np.zeros(64, dtype=np.uint8)
    for ns in [0, -1, 2**63 - 1, -(2**63), 951782400 * 10**9, 4107542400 * 10**9 - 1] + [
            rng.randrange(-2**63, 2**63) for _ in range(5000)]:
        n = K._eve_time(buf, 0, ns)
        assert bytes(buf[:n]).decode() == eve_time(ns), ns
