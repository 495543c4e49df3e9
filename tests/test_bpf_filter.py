"""The flow filter and the flow sampler in the kernel (BPF_PROG_TEST_RUN), against the engine.

The programs are compiled with the lists in force and the sampling rate, their maps filled
from the same ``TrackerConfig`` the offline tracker gets; the flows the kernel makes entries
for, and the packets it counts as filtered or sampled out, must be the engine's.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from bpf_helpers import require_bpf
from flowscope import FlowTracker, TrackerConfig, layout
from flowscope.pcap import parse_bytes
from test_bpf_kernel import Harness, eth, icmp, ipv4, ipv6, tcp, udp

CFG = TrackerConfig(include_cidrs=("10.0.0.0/8", "fd00::/16"), exclude_cidrs=("10.9.0.0/16",),
                    exclude_ports=(22,), exclude_protocols=(1,))


def _load(cfg):
    from flowscope.sensor import loader, maps
    from flowscope.sensor.ring import RingReader
    from flowscope.sensor.settings import tunables
    from flowscope.config import SensorConfig

    t = tunables(SensorConfig(ring_size=1 << 16), cfg.replace(max_flows=4096))
    m = loader.load(t)
    maps.write_filter(m, cfg)
    return m, RingReader(m.events_fd)


@pytest.fixture(scope="module")
def filt():
    require_bpf()
    m, r = _load(CFG)
    yield Harness(m, r)
    r.close()
    m.close()


@pytest.fixture(scope="module")
def sampled():
    require_bpf()
    cfg = CFG.replace(sample_rate=3, exclude_cidrs=(), include_cidrs=())
    m, r = _load(cfg)
    yield Harness(m, r), cfg
    r.close()
    m.close()


def kernel_keys(h) -> set:
    from flowscope.sensor.live import _engine_keys

    keys, _vals = h.flows()
    return {tuple(int(w) for w in row) for row in _engine_keys(keys)}


def offline(cfg, frames):
    t = FlowTracker(config=cfg.replace(max_flows=4096), events=1 << layout.EV_STARTED)
    keys = set()
    for i, f in enumerate(frames):
        for recs in t.process(_parsed(f, i)):
            keys |= {tuple(int(w) for w in r["key"]) for r in recs}
    return keys, t.stats


def _parsed(frame, i):
    return parse_bytes(frame, 10**9 + i)


def tcp4(src, sport, dst, dport, flags=0x02):
    return eth(ipv4(src, dst, 6, tcp(sport, dport, flags)))


def test_filter_scenarios(filt):
    filt.reset()
    frames = {
        "ssh": tcp4("10.0.0.1", 1000, "10.0.0.2", 22),
        "ssh back": tcp4("10.0.0.2", 22, "10.0.0.1", 1000, 0x12),
        "web": tcp4("10.0.0.1", 1000, "10.0.0.2", 80),
        "outside": tcp4("192.168.0.1", 1000, "192.168.0.2", 80),
        "one end in": tcp4("192.168.0.1", 1000, "10.1.1.1", 80),
        "excluded net": tcp4("10.9.1.1", 1000, "10.1.1.1", 80),
        "v6 in": eth(ipv6("fd00::1", "2001:db8::1", 17, udp(5, 53)), et=0x86DD),
        "v6 out": eth(ipv6("fd01::1", "2001:db8::1", 17, udp(5, 53)), et=0x86DD),
        "icmp": eth(ipv4("10.0.0.1", "10.0.0.2", 1, icmp())),
    }
    for name, f in frames.items():
        filt.run(f, hook="tc" if name == "ssh back" else "xdp")
    c = filt.counters()
    assert c["filtered"] == 6 and c["sampled_out"] == 0
    assert c["flows_new"] == 3 and c["map_full"] == 0
    want, stats = offline(CFG, list(frames.values()))
    assert kernel_keys(filt) == want
    assert stats.packets_filtered == 6


def test_kernel_and_engine_pick_the_same_flows(sampled):
    h, cfg = sampled
    h.reset()
    rnd = random.Random(7)
    frames = []
    for _ in range(300):
        a = f"10.{rnd.randrange(3)}.0.{rnd.randrange(1, 50)}"
        b = f"fd00::{rnd.randrange(1, 9)}" if rnd.random() < 0.2 else "10.0.0.99"
        sp, dp = rnd.choice([22, 53, 80, 40000 + rnd.randrange(200)]), rnd.choice([22, 80, 443])
        proto = rnd.choice([6, 17, 17, 1])
        if ":" in b:
            body = udp(sp, dp) if proto != 6 else tcp(sp, dp, 0x02)
            f = eth(ipv6("fd00::abcd", b, 6 if proto == 6 else 17, body), et=0x86DD)
        elif proto == 1:
            f = eth(ipv4(a, b, 1, icmp()))
        else:
            body = udp(sp, dp) if proto == 17 else tcp(sp, dp, 0x10)
            f = eth(ipv4(a, b, proto, body))
        frames.append(f)
        if rnd.random() < 0.3:  # a second packet of the flow
            frames.append(f)
    for f in frames:
        h.run(f, hook=rnd.choice(["xdp", "tc"]))
    c = h.counters()
    want, stats = offline(cfg, frames)
    assert kernel_keys(h) == want
    assert (c["filtered"], c["sampled_out"]) == (stats.packets_filtered, stats.packets_sampled_out)
    assert c["sampled_out"] > 0 and c["filtered"] > 0
    assert c["packets"] == len(frames)


def test_sampled_flow_takes_both_directions(sampled):
    h, cfg = sampled
    h.reset()
    for i in range(60):
        h.run(eth(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1000 + i, 53))))
        h.run(eth(ipv4("10.0.0.2", "10.0.0.1", 17, udp(53, 1000 + i))), hook="tc")
    _keys, vals = h.flows()
    assert len(vals) and (vals["pkts"][:, 0] == 1).all() and (vals["pkts"][:, 1] == 1).all()
    assert h.counters()["sampled_out"] == 2 * (60 - len(vals))
    assert np.all(vals["first_ns"] > 0)


@pytest.fixture(scope="module")
def vlan_keyed():
    require_bpf()
    cfg = TrackerConfig(key_vlan=True, sample_rate=2)
    m, r = _load(cfg)
    yield Harness(m, r), cfg
    r.close()
    m.close()


def test_key_vlan_in_the_kernel_key_and_the_sampler(vlan_keyed):
    """key_vlan: the kernel keys by the outer VLAN id too; its keys, turned into engine
    words, and the flows its sampler keeps (the hash covers the VLAN bits) are the
    engine's."""
    h, cfg = vlan_keyed
    h.reset()
    frames = []
    for vid in (0, 6, 10, 0x7FF, 0xABC):
        for port in range(1000, 1040):
            tags = [(0x8100, vid)] if vid else []
            frames.append(eth(ipv4("10.0.0.1", "10.0.0.2", 17, udp(port, 53)), tags=tags))
            frames.append(eth(ipv4("10.0.0.2", "10.0.0.1", 17, udp(53, port)),
                              tags=[(0x88A8, vid), (0x8100, 99)] if vid else []))
    for f in frames:
        h.run(f)
    want, stats = offline(cfg, frames)
    got = kernel_keys(h)
    assert got == want
    assert len({(k[4] >> 40) & 0xFF for k in got}) > 3  # several VLANs in the keys
    assert h.counters()["sampled_out"] == stats.packets_sampled_out > 0


@pytest.fixture(scope="module")
def icmp_keyed():
    require_bpf()
    cfg = TrackerConfig(key_icmp=True)
    m, r = _load(cfg)
    yield Harness(m, r), cfg
    r.close()
    m.close()


def test_key_icmp_in_the_kernel_key(icmp_keyed):
    """key_icmp: the kernel keys ICMP/ICMPv6 by type and paired type or code, and keys a
    fragmented echo's non-first fragment (either order) through its fragment map, as the
    engine does."""
    from test_key_icmp import EXCHANGE

    h, cfg = icmp_keyed
    h.reset()
    body = icmp(8, 0, payload=bytes(range(32)))
    frames = list(EXCHANGE)
    for n, src in enumerate(("10.1.0.1", "10.1.0.2")):
        first = eth(ipv4(src, "10.1.0.9", 1, body[:24], mf=True))
        rest = eth(ipv4(src, "10.1.0.9", 1, body[24:], frag=3))
        frames += [first, rest] if n == 0 else [rest, first]
    for f in frames:
        h.run(f)
    want, stats = offline(cfg, frames)
    assert kernel_keys(h) == want
    assert len(want) == 9
    ports = {(int(k[4]) >> 16 & 0xFFFF, int(k[4]) & 0xFFFF) for k in want}
    assert {(8, 0), (3, 3), (13, 14), (5, 1), (128, 129), (135, 136), (1, 4)} <= ports | {
        (b, a) for a, b in ports}
    _keys, vals = h.flows()
    assert int(vals["pkts"].sum()) == stats.packets_matched == len(frames)
    c = h.counters()
    assert c["frag_keyed"] == stats.fragments_keyed == 2


def test_every_option_at_once_passes_the_verifier():
    """Every filter list, sampling and key_vlan together: the largest program still loads."""
    require_bpf()
    from flowscope.sensor import loader

    m = loader.load({"filter": 63, "sample_rate": 7, "key_vlan": 1, "key_icmp": 1,
                     "max_flows": 1024,
                     "ring_pages": 16})
    m.close()
