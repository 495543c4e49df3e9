"""Real captures: every file processes; clean ones match independent per-key counts.

The expected files in tests/expected/ were made with tshark by scripts/make_expected.py (see
tests/expected/README.md), not by flowscope. For each canonical five-tuple key they hold the
packets and bytes sent a -> b and b -> a. flowscope may split one key into several flows (a new
flow after a FIN/RST close), so its Ended events are summed per key and direction; the number
of distinct keys must match exactly, and so must every per-direction count.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import shared_pcaps_dir
from flowscope import FlowTracker, Orientation
from flowscope.pcap import CaptureError, CaptureReader

HERE = Path(__file__).parent
EXPECTED = HERE / "expected"
DATA = HERE / "data"
SHARED = shared_pcaps_dir()

BROKEN = {
    "derived__zeek__http__get.cut-mid-record.pcap": "middle of a packet record",
}


def _captures():
    found = {}
    for d in (SHARED, DATA):
        if d.is_dir():
            for p in sorted(d.iterdir()):
                if p.suffix in (".pcap", ".pcapng") and p.name not in found:
                    found[p.name] = p
    return found


CAPTURES = _captures()


def track_file(path: Path, decapsulate: bool = True):
    tracker = FlowTracker(events="ended")
    ended = []
    error = None
    try:
        for batch in CaptureReader(str(path), decapsulate=decapsulate):
            ended += tracker.track_batch(batch)
    except CaptureError as exc:
        error = exc
    ended += tracker.finish()
    return tracker, ended, error


def load_expected(path: Path):
    rows = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#") or line.startswith("proto\t"):
            continue
        proto, a, ap, b, bp, pab, bab, pba, bba = line.split("\t")
        rows[(int(proto), a, int(ap), b, int(bp))] = (int(pab), int(bab), int(pba), int(bba))
    return rows


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_every_capture_processes(name):
    tracker, ended, error = track_file(CAPTURES[name])
    if name in BROKEN:
        assert error is not None and BROKEN[name] in str(error) and name in str(error)
    else:
        assert error is None, str(error)
    s = tracker.stats
    assert s.open_flows == 0 and s.flows_created == s.flows_ended == len(ended)
    assert sum(e.stats.packets for e in ended) == s.packets_matched


EXPECTED_FILES = sorted(p for p in EXPECTED.glob("*.keys.tsv"))


@pytest.mark.parametrize("exp", EXPECTED_FILES, ids=lambda p: p.name.replace(".keys.tsv", ""))
def test_per_key_counts_match_tshark(exp):
    name = exp.name[: -len(".keys.tsv")]
    if name not in CAPTURES:
        pytest.skip(f"{name} not available here (only in ../shared/pcaps)")
    # the expected keys are tshark's outermost IP layer (scripts/make_expected.py): the
    # inner flows of tunnels are compared with Zeek's baselines (test_zeek.py) and with
    # tshark's innermost layer in test_tunnels.py
    _, ended, error = track_file(CAPTURES[name], decapsulate=False)
    assert error is None
    got = defaultdict(lambda: [0, 0, 0, 0])
    for e in ended:
        k = e.key()
        row = got[(k.proto, str(k.a_addr), k.a_port, str(k.b_addr), k.b_port)]
        st = e.stats
        if e.initiator == Orientation.Forward:
            ab = (st.initiator_packets, st.initiator_bytes, st.responder_packets, st.responder_bytes)
        else:
            ab = (st.responder_packets, st.responder_bytes, st.initiator_packets, st.initiator_bytes)
        for i in range(4):
            row[i] += ab[i]
    want = load_expected(exp)
    assert set(got) == set(want)
    assert {k: tuple(v) for k, v in got.items()} == want


# ---- every shared capture fully accounted ------------------------------------------
#: Files whose flowscope count legitimately differs from tshark's IP frames, with the reason.
#: Empty: every IP frame tshark finds in the shared captures is in a flow or counted.
ACCOUNTING_EXCEPTIONS: dict[str, str] = {}


def _tshark_ip_frames(path: Path) -> int:
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-Y", "ip or ipv6", "-T", "fields",
                          "-e", "frame.number"], capture_output=True, text=True)
    return len(out.stdout.split())


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.skipif(SHARED is None or not SHARED.is_dir(), reason="no shared captures")
def test_every_shared_capture_is_fully_accounted():
    """Per file: the frames counted in flows plus the IP frames flowscope counts as
    unmatched (``packets_unmatched`` less ``frames_not_ip``: IP headers it could not use,
    orphaned fragments) equal the frames tshark decodes with an IP or IPv6 layer; the
    non-IP frames are the rest. A frame counts once, in its outermost flow: an inner
    flow's packets are the same frames again (``packets_decapsulated``)."""
    files = sorted(p for p in SHARED.iterdir() if p.suffix in (".pcap", ".pcapng"))
    assert len(files) >= 50
    wrong = {}
    for path in files:
        tracker = FlowTracker(events="ended")
        reader = CaptureReader(str(path))
        outer_pkts = inner_pkts = 0
        try:
            for batch in reader:
                for recs in tracker.process(batch):
                    ended = recs[recs["kind"] == 5]
                    inner = ended["tun"] != 0
                    outer_pkts += int(ended["pkts"][~inner].sum())
                    inner_pkts += int(ended["pkts"][inner].sum())
        except CaptureError:
            assert path.name in BROKEN
        for recs in tracker.process_finish():
            inner = recs["tun"] != 0
            outer_pkts += int(recs["pkts"][~inner].sum())
            inner_pkts += int(recs["pkts"][inner].sum())
        s = tracker.stats
        assert inner_pkts == s.packets_decapsulated, path.name  # no packet outside a tunnel
        assert outer_pkts + s.packets_unmatched == reader.frames, path.name
        ours = outer_pkts + s.packets_unmatched - s.frames_not_ip
        want = _tshark_ip_frames(path)
        if ours != want:
            wrong[path.name] = (ours, want)
    assert set(wrong) == set(ACCOUNTING_EXCEPTIONS), wrong
