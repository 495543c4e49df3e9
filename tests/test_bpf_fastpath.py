"""The kernel's established fast path (fs_quiet_ack in bpf/fs_flow.h) changes nothing.

Needs root and BPF (see tests/bpf_helpers.py). The same random TCP conversations run through
the default build and one without the fast path (-DFS_FAST_PATH=0), packet by packet with
BPF_PROG_TEST_RUN; the flow entries and ring events must be identical apart from clock
readings. The conversations are mostly pure ACKs of established flows (the fast path), mixed
with what must leave it: data, SYN/FIN/RST, zero windows, retransmissions and holes, ACKs of
a silent peer, both hooks.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from bpf_helpers import require_bpf
from flowscope import layout as plo
from flowscope.sensor import layout as L
from test_bpf_kernel import eth, ipv4, ipv6, tcp

#: fields that hold clock readings (the two builds run at different times)
FLOW_CLOCKS = ("first_ns", "last_ns", "last_jif")
EVENT_CLOCKS = ("ts_ns", "first_ns")

ACK, SYN, FIN, RST, PSH = plo.TH_ACK, plo.TH_SYN, plo.TH_FIN, plo.TH_RST, plo.TH_PSH


@pytest.fixture(scope="module")
def builds():
    require_bpf()
    from flowscope.sensor import loader
    from flowscope.sensor.ring import RingReader

    mods = [loader.load({"max_flows": 1024, "ring_pages": 256}),
            loader.load({"max_flows": 1024, "ring_pages": 256},
                        extra_cflags=["-DFS_FAST_PATH=0"])]
    rings = [RingReader(m.events_fd) for m in mods]
    yield list(zip(mods, rings))
    for r in rings:
        r.close()
    for m in mods:
        m.close()


def _conversation(rng: random.Random, n: int):
    """n frames of a few TCP flows: (frame, hook)."""
    hosts = [("10.9.0.1", "10.9.0.2", 4), ("fd00::1", "fd00::2", 6)]
    flows = []
    for i in range(4):
        a, b, v = hosts[i % 2]
        flows.append({"addr": (a, b), "v": v, "port": (40000 + i, 80 + i),
                      "seq": [rng.randrange(1 << 32), rng.randrange(1 << 32)]})
    out = []
    for _ in range(n):
        f = rng.choice(flows)
        d = rng.random() < 0.4  # mostly one direction: pure ACKs of a silent peer too
        s, o = (1, 0) if d else (0, 1)
        r = rng.random()
        payload = b""
        flags, win = ACK, 8192
        if r < 0.6:
            pass  # pure ACK (the fast path once the direction has sent one)
        elif r < 0.72:
            payload = bytes(rng.randrange(1, 40))
            flags |= PSH
        elif r < 0.76:
            flags = rng.choice([SYN, SYN | ACK, FIN | ACK, RST, RST | ACK, FIN])
        elif r < 0.8:
            win = 0
        elif r < 0.84:
            flags = 0  # no ACK bit
        seq = f["seq"][s]
        step = rng.random()
        if step < 0.1:
            seq = (seq - rng.randrange(1, 200)) & 0xFFFFFFFF  # retransmission / old ACK
        elif step < 0.15:
            seq = (seq + rng.randrange(1, 200)) & 0xFFFFFFFF  # a hole
        ack = (f["seq"][o] + rng.choice([0, 0, 1, -50, 30])) & 0xFFFFFFFF
        end = seq + len(payload) + bool(flags & (SYN | FIN))
        f["seq"][s] = max(f["seq"][s], end) & 0xFFFFFFFF
        src, dst = f["addr"][s], f["addr"][o]
        seg = tcp(f["port"][s], f["port"][o], flags, seq=seq, ack=ack, win=win, payload=payload)
        ip = ipv4(src, dst, 6, seg) if f["v"] == 4 else ipv6(src, dst, 6, seg)
        out.append((eth(ip, 0x0800 if f["v"] == 4 else 0x86DD), rng.choice(["xdp", "tc"])))
    return out


def _state(mod, ring):
    from flowscope.sensor import maps

    keys, vals = maps.lookup_flows(mod.flows_fd, 1024)
    order = np.argsort(keys.view(np.dtype((np.void, keys.itemsize))).ravel())
    ev = ring.drain_all()
    return keys[order], vals[order], ev


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_path_gives_the_same_entries_and_events(builds, seed):
    from flowscope.sensor import loader

    for m, r in builds:
        m.bpf[b"fs_flows"].clear()
        r.drain_all()
    frames = _conversation(random.Random(seed), 3000)
    for frame, hook in frames:
        for m, _ in builds:
            loader.prog_test_run(m.xdp_fd if hook == "xdp" else m.tc_fd, frame)
    (k0, v0, e0), (k1, v1, e1) = (_state(m, r) for m, r in builds)
    assert len(k0) == 4 and k0.tobytes() == k1.tobytes()
    for name in L.FLOW_DTYPE.names:
        if name not in FLOW_CLOCKS:
            assert np.array_equal(v0[name], v1[name]), name
    assert len(e0) == len(e1) > 0
    for name in L.RECORD_DTYPE.names:
        if name not in EVENT_CLOCKS:
            assert np.array_equal(e0[name], e1[name]), name
    # the stream really exercised the fast path: most packets sent no event, and the
    # sequence tracking moved (acks of both orientations, retransmissions)
    assert len(e0) < len(frames) // 2
    assert (v0["seq_acked"] != 0).all() and v0["rtx_pkts"].sum() > 0
