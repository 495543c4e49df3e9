"""The sensor's BPF programs in the kernel: parsing, flow map, ring events, counters, attach.

Needs root and BPF (see tests/bpf_helpers.py). Functional checks run the real programs on
crafted frames with BPF_PROG_TEST_RUN (repeat=1); the live checks attach to a veth pair inside
a network namespace the test creates and removes.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpf_helpers import require_bpf, veth_netns
from flowscope import layout as plo
from flowscope._kernels import parse as offline_parse
from flowscope.sensor import layout as L

# ---------------------------------------------------------------------------
# frame builders

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eth(payload: bytes, et: int = 0x0800, tags=(), dst=MAC_B, src=MAC_A) -> bytes:
    """Ethernet frame; ``tags`` = [(tpid, vid), ...] outermost first."""
    hdr = dst + src
    for tpid, vid in tags:
        hdr += struct.pack("!HH", tpid, vid)
    return hdr + struct.pack("!H", et) + payload


def ipv4(src, dst, proto, payload: bytes, options: bytes = b"", frag: int = 0, mf=False,
         tot_len=None, version=4, ihl=None) -> bytes:
    assert len(options) % 4 == 0
    ihl = ihl if ihl is not None else 5 + len(options) // 4
    tl = tot_len if tot_len is not None else 20 + len(options) + len(payload)
    fw = (0x2000 if mf else 0) | (frag & 0x1FFF)
    h = struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0, tl, 1, fw, 64, proto, 0,
                    ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    h += options
    h = h[:10] + struct.pack("!H", _csum(h)) + h[12:]
    return h + payload


def ipv6(src, dst, nh, payload: bytes, plen=None) -> bytes:
    pl = plen if plen is not None else len(payload)
    return struct.pack("!IHBB16s16s", 6 << 28, pl, nh, 64, ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + payload


def ext6(nh: int, body_len8: int = 0) -> bytes:
    """A generic IPv6 extension header (hop-by-hop/routing/dest options): 8*(n+1) bytes."""
    return struct.pack("!BB", nh, body_len8) + b"\x01\x04\0\0\0\0" + b"\0" * (8 * body_len8)


def frag6(nh: int, offset8: int, more: bool) -> bytes:
    return struct.pack("!BBHI", nh, 0, (offset8 << 3) | int(more), 0x1234)


def tcp(sport, dport, flags, seq=1000, ack=0, win=8192, payload=b"", options=b"") -> bytes:
    doff = 5 + len(options) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, win, 0,
                       0) + options + payload


def udp(sport, dport, payload=b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp(t=8, c=0, payload=b"abcd") -> bytes:
    return struct.pack("!BBHHH", t, c, 0, 1, 1) + payload


SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


def tcp4(src="10.0.0.1", sport=1234, dst="10.0.0.2", dport=80, flags=SYN, payload=b"",
         **kw) -> bytes:
    return eth(ipv4(src, dst, 6, tcp(sport, dport, flags, payload=payload, **kw)))


# ---------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def mod():
    require_bpf()
    from flowscope.sensor import loader

    m = loader.load()
    yield m
    m.close()


@pytest.fixture(scope="module")
def ring(mod):
    from flowscope.sensor.ring import RingReader

    r = RingReader(mod.events_fd)
    yield r
    r.close()


class Harness:
    """Runs frames through a loaded module and reads back map entries, events, counters."""

    def __init__(self, mod, ring):
        from flowscope.sensor import loader, maps

        self.mod, self.ring, self.loader, self.maps = mod, ring, loader, maps
        self.reset()

    def reset(self):
        self.mod.bpf[b"fs_flows"].clear()
        self.mod.bpf[b"fs_frags"].clear()
        self.ring.drain_all()
        self.c0 = self.maps.read_counters(self.mod.counters_fd)

    def run(self, frame: bytes, hook="xdp", may_refuse=False) -> bool:
        """Run one frame; False when the kernel refused it (``may_refuse`` only).

        BPF_PROG_TEST_RUN itself rejects frames under 14 bytes and, for TC, IPv4/IPv6
        frames too short for the IP header (the skb set-up pulls it).
        """
        fd = self.mod.xdp_fd if hook == "xdp" else self.mod.tc_fd
        try:
            rv, _ = self.loader.prog_test_run(fd, frame)
        except OSError as e:
            if may_refuse and e.errno == 22:
                return False
            raise
        # XDP_PASS / TCX_NEXT (-1 as u32: the next program of the chain), always
        assert rv == (2 if hook == "xdp" else 0xFFFFFFFF)
        return True

    def counters(self) -> dict:
        c = self.maps.read_counters(self.mod.counters_fd) - self.c0
        return {m.name.lower(): int(c[m]) for m in L.Counter}

    def flows(self):
        return self.maps.lookup_flows(self.mod.flows_fd, 1 << 17)

    def events(self):
        return self.ring.drain_all()


@pytest.fixture
def h(mod, ring):
    return Harness(mod, ring)


def key_of(src, sport, dst, dport, proto, l3=4):
    """Canonical key tuple (a_hi, a_lo, b_hi, b_lo, port_a, port_b, l3, proto), and dir."""
    s, d = int(ipaddress.ip_address(src)), int(ipaddress.ip_address(dst))
    sa = (s >> 64, s & (2**64 - 1), sport)
    da = (d >> 64, d & (2**64 - 1), dport)
    if sa <= da:
        return (sa[0], sa[1], da[0], da[1], sport, dport, l3, proto), 0
    return (da[0], da[1], sa[0], sa[1], dport, sport, l3, proto), 1


def ktuple(k):
    return tuple(int(k[n]) for n in ("a_hi", "a_lo", "b_hi", "b_lo", "port_a", "port_b", "l3",
                                     "proto"))


# ---------------------------------------------------------------------------
# parsing and keys


def test_ipv4_tcp_syn_creates_flow_and_event(h):
    f = tcp4(flags=SYN, seq=0x11223344, win=4321)
    h.run(f)
    keys, vals = h.flows()
    assert len(keys) == 1
    want, d = key_of("10.0.0.1", 1234, "10.0.0.2", 80, 6)
    assert ktuple(keys[0]) == want and d == 0
    v = vals[0]
    assert v["pkts"].tolist() == [1, 0] and v["bytes"].tolist() == [len(f), 0]
    assert v["tcp_flags"].tolist() == [SYN, 0]
    assert int(v["state"]) == L.TcpState.SYN_SENT and int(v["hist_len"]) == 1
    ev = h.events()
    assert len(ev) == 1
    e = ev[0]
    assert ktuple(e["key"]) == want
    assert int(e["reason"]) == L.EventReason.NEW | L.EventReason.CTRL | L.EventReason.STATE
    assert (int(e["seq"]), int(e["window"]), int(e["frame_len"])) == (0x11223344, 4321, len(f))
    assert int(e["tcp_flags"]) == SYN and int(e["dir"]) == 0 and int(e["hook"]) == L.Hook.XDP
    assert int(e["pflags"]) == L.PktFlag.PORTS | L.PktFlag.TCP
    assert e["pkts"].tolist() == [1, 0] and int(e["ts_ns"]) > 0
    c = h.counters()
    assert c["packets"] == 1 and c["flows_new"] == 1 and c["events"] == 1


def test_both_directions_share_one_key(h):
    h.run(tcp4(flags=SYN))
    h.run(tcp4(src="10.0.0.2", sport=80, dst="10.0.0.1", dport=1234, flags=SYN | ACK), "tc")
    keys, vals = h.flows()
    assert len(keys) == 1
    v = vals[0]
    assert v["pkts"].tolist() == [1, 1]
    assert v["tcp_flags"].tolist() == [SYN, SYN | ACK]
    assert int(v["first_dir"]) == 0 and int(v["state"]) == L.TcpState.SYN_RECEIVED
    ev = h.events()
    assert [int(e["dir"]) for e in ev] == [0, 1]
    assert [int(e["hook"]) for e in ev] == [L.Hook.XDP, L.Hook.TC]


def test_reverse_first_packet_keys_by_address_order(h):
    h.run(tcp4(src="10.0.0.9", sport=80, dst="10.0.0.2", dport=5555, flags=SYN))
    keys, vals = h.flows()
    want, d = key_of("10.0.0.9", 80, "10.0.0.2", 5555, 6)
    assert ktuple(keys[0]) == want and d == 1
    assert vals[0]["pkts"].tolist() == [0, 1] and int(vals[0]["first_dir"]) == 1


def test_same_address_orders_by_port(h):
    h.run(tcp4(src="127.0.0.1", sport=9000, dst="127.0.0.1", dport=80, flags=SYN))
    keys, _ = h.flows()
    assert (int(keys[0]["port_a"]), int(keys[0]["port_b"])) == (80, 9000)


@pytest.mark.parametrize("tags", [[(0x8100, 10)], [(0x88A8, 100), (0x8100, 10)],
                                  [(0x9100, 5), (0x8100, 6)]], ids=["vlan", "qinq", "q9100"])
def test_vlan_tags_are_seen_through(h, tags):
    f = eth(ipv4("10.0.0.1", "10.0.0.2", 17, udp(53, 4000, b"x" * 7)), tags=tags)
    h.run(f)
    keys, vals = h.flows()
    want, _ = key_of("10.0.0.1", 53, "10.0.0.2", 4000, 17)
    assert ktuple(keys[0]) == want
    assert vals[0]["bytes"].tolist() == [len(f), 0]  # the whole frame, tags included
    assert vals[0]["payload"].tolist() == [7, 0]


def test_ipv4_options_are_skipped(h):
    opts = b"\x94\x04\x00\x00" + b"\x01\x01\x01\x00"  # router alert, NOPs, EOL
    f = eth(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2, PSH | ACK, payload=b"hello"),
                 options=opts))
    h.run(f)
    ev = h.events()
    assert ktuple(ev[0]["key"]) == key_of("10.0.0.1", 1, "10.0.0.2", 2, 6)[0]
    assert int(ev[0]["payload_len"]) == 5 and int(ev[0]["tcp_flags"]) == PSH | ACK


def test_ipv6_extension_headers_are_walked(h):
    body = tcp(443, 50000, SYN | ACK, payload=b"")
    pl = ext6(60, 1) + ext6(6, 0) + body  # hop-by-hop (16 B) -> dest opts (8 B) -> TCP
    f = eth(ipv6("2001:db8::1", "2001:db8::2", 0, pl), et=0x86DD)
    h.run(f)
    keys, _ = h.flows()
    want, _ = key_of("2001:db8::1", 443, "2001:db8::2", 50000, 6, l3=6)
    assert ktuple(keys[0]) == want
    ev = h.events()
    assert int(ev[0]["tcp_flags"]) == SYN | ACK and int(ev[0]["payload_len"]) == 0


def test_ipv4_fragments(h):
    first = eth(ipv4("10.0.0.1", "10.0.0.2", 17, udp(7, 9, b"a" * 16), mf=True))
    later = eth(ipv4("10.0.0.1", "10.0.0.2", 17, b"b" * 24, frag=3))
    h.run(first)
    h.run(later)
    keys, vals = h.flows()
    assert [ktuple(k) for k in keys] == [key_of("10.0.0.1", 7, "10.0.0.2", 9, 17)[0]]
    assert vals[0]["pkts"].tolist() == [2, 0]
    assert vals[0]["payload"].tolist() == [16 + 24, 0]
    c = h.counters()
    assert (c["frag_keyed"], c["frag_held"], c["frag_resolved"]) == (1, 0, 0)


def test_late_first_fragment_brings_the_held_ones(h):
    first = eth(ipv4("10.0.0.1", "10.0.0.2", 17, udp(7, 9, b"a" * 16), mf=True))
    later = eth(ipv4("10.0.0.1", "10.0.0.2", 17, b"b" * 24, frag=3))
    h.run(later)
    assert len(h.flows()[0]) == 0 and len(h.events()) == 0
    h.run(first)
    keys, vals = h.flows()
    assert [ktuple(k) for k in keys] == [key_of("10.0.0.1", 7, "10.0.0.2", 9, 17)[0]]
    assert vals[0]["pkts"].tolist() == [2, 0]
    assert vals[0]["bytes"].tolist() == [len(first) + len(later), 0]
    (ev,) = h.events()
    assert ev["pkts"].tolist() == [2, 0]
    c = h.counters()
    assert (c["frag_keyed"], c["frag_held"], c["frag_resolved"], c["frag_orphaned"]) == (
        1, 1, 1, 0)


def test_ipv6_non_first_fragment_waits_for_its_first(h):
    f = eth(ipv6("2001:db8::1", "2001:db8::2", 44, frag6(17, 10, False) + b"z" * 32),
            et=0x86DD)
    h.run(f)
    assert len(h.flows()[0]) == 0 and h.counters()["frag_held"] == 1
    first = eth(ipv6("2001:db8::1", "2001:db8::2", 44, frag6(17, 0, True) + udp(5, 6, b"q" * 72)),
                et=0x86DD)
    h.run(first)
    keys, vals = h.flows()
    assert ktuple(keys[0]) == key_of("2001:db8::1", 5, "2001:db8::2", 6, 17, l3=6)[0]
    assert int(vals[0]["pkts"].sum()) == 2


def test_icmp_fragments_need_no_table(h):
    h.run(eth(ipv4("10.0.0.1", "10.0.0.2", 1, b"c" * 24, frag=3)))
    h.run(eth(ipv4("10.0.0.1", "10.0.0.2", 1, icmp(8, 0, b"d" * 20), mf=True)))
    keys, vals = h.flows()
    assert [ktuple(k) for k in keys] == [key_of("10.0.0.1", 0, "10.0.0.2", 0, 1)[0]]
    assert int(vals[0]["pkts"].sum()) == 2 and h.counters()["frag_held"] == 0


def test_tcp_header_cut_short_counts_to_the_ip_level_flow(h):
    frame = tcp4(flags=SYN)[:14 + 20 + 12]
    h.run(frame)
    keys, vals = h.flows()
    assert [ktuple(k) for k in keys] == [key_of("10.0.0.1", 0, "10.0.0.2", 0, 6)[0]]
    c = h.counters()
    assert c["truncated_l4"] == 1 and c["truncated"] == 0


def test_icmp_has_ports_zero(h):
    h.run(eth(ipv4("10.0.0.2", "10.0.0.1", 1, icmp(8, 0))))
    ev = h.events()
    e = ev[0]
    assert ktuple(e["key"]) == key_of("10.0.0.2", 0, "10.0.0.1", 0, 1)[0]
    assert int(e["pflags"]) == L.PktFlag.ICMP
    assert (int(e["icmp_type"]), int(e["icmp_code"])) == (8, 0)
    assert int(e["reason"]) == L.EventReason.NEW


@pytest.mark.parametrize(
    "frame,counter",
    [
        (eth(b"\x00\x01\x08\x00\x06\x04\x00\x01" + b"\0" * 20, et=0x0806), "not_ip"),
        (tcp4()[:14 + 12], "truncated"),  # ends inside the IPv4 header
        (eth(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2), version=5)), "bad_header"),
        (eth(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2), ihl=4)), "bad_header"),
        (eth(ipv6("::1", "::2", 6, tcp(1, 2, SYN))[:30], et=0x86DD), "truncated"),
        (eth(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2, SYN)[:12] + b"\x30" + b"\0" * 7)),
         "bad_header"),  # TCP data offset 3
        (eth(ipv6("::1", "::2", 0, b"\x06"), et=0x86DD), "truncated"),  # cut ext header
    ],
    ids=["arp", "trunc-ip", "ip-version", "ihl", "trunc-ip6", "tcp-doff",
         "trunc-ext6"],
)
def test_unparseable_frames_are_counted(h, frame, counter):
    ran = sum(h.run(frame, hook, may_refuse=True) for hook in ("xdp", "tc"))
    assert ran >= 1
    c = h.counters()
    assert c[counter] == ran and c["packets"] == ran
    assert len(h.flows()[0]) == 0 and len(h.events()) == 0


def test_ethernet_header_only(h):
    h.run(eth(b"", et=0x0800))
    h.run(eth(b"", et=0x8100))  # a VLAN tag announced but missing
    h.run(eth(b"", et=0x0000))  # an 802.3 length: the LLC header is missing
    assert h.counters()["truncated"] == 3


def test_random_garbage_never_breaks(h):
    rng = random.Random(1234)
    base = [tcp4(flags=SYN, payload=b"x" * 20),
            eth(ipv6("2001:db8::1", "2001:db8::2", 0, ext6(44, 0) + frag6(6, 0, True)
                     + tcp(1, 2, SYN)), et=0x86DD),
            eth(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2, b"q" * 9)), tags=[(0x8100, 1)])]
    n = 0
    for _ in range(300):
        f = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 6)):
            f[rng.randrange(len(f))] = rng.randrange(256)
        f = bytes(f[: rng.randint(14, len(f))])
        n += h.run(f, rng.choice(["xdp", "tc"]), may_refuse=True)
    c = h.counters()
    assert c["packets"] == n
    assert n > 200
    unmatched = c["truncated"] + c["not_ip"] + c["bad_header"] + c["map_full"]
    matched = sum(int(v["pkts"].sum()) for v in h.flows()[1])
    if c["flows_restart"] == 0:  # a restart resets an entry's counters
        assert matched + unmatched == n
    assert unmatched < n


def _offline_row(frame: bytes):
    out = np.zeros(1, dtype=plo.PKT_DTYPE)
    buf = np.frombuffer(frame, dtype=np.uint8).copy()
    offline_parse.parse_frame(buf, 0, len(frame), len(frame), 1, 0, out, 0)
    return out[0]


OFFLINE_FRAMES = [
    tcp4(flags=SYN),
    tcp4(src="10.9.9.9", sport=80, dst="10.0.0.1", dport=1, flags=PSH | ACK, payload=b"x" * 33),
    eth(ipv4("10.0.0.1", "10.0.0.2", 17, udp(53, 4000, b"x" * 7)), tags=[(0x8100, 10)]),
    eth(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(5, 6, FIN | ACK, payload=b"abc")),
        tags=[(0x88A8, 1), (0x8100, 2)]),
    eth(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2, ACK, payload=b"hello"),
             options=b"\x01\x01\x01\x00")),
    eth(ipv6("2001:db8::1", "2001:db8::2", 0, ext6(60, 1) + ext6(6, 0)
             + tcp(443, 50000, SYN | ACK, payload=b"12")), et=0x86DD),
    eth(ipv6("2001:db8::2", "2001:db8::1", 44, frag6(17, 10, False) + b"z" * 32), et=0x86DD),
    eth(ipv6("2001:db8::2", "2001:db8::1", 44, frag6(17, 0, True) + udp(9, 10, b"q" * 8)),
        et=0x86DD),
    eth(ipv4("10.0.0.1", "10.0.0.2", 17, b"b" * 24, frag=3)),
    eth(ipv4("10.0.0.2", "10.0.0.1", 1, icmp(0, 0))),
    eth(ipv6("2001:db8::2", "2001:db8::1", 58, icmp(128, 0)), et=0x86DD),
    eth(ipv4("10.0.0.1", "10.0.0.2", 132, b"\x00\x07\x00\x09" + b"\0" * 8)),
    eth(ipv4("10.0.0.1", "10.0.0.2", 47, b"\0" * 20)),  # GRE: no ports
    eth(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2, b"p" * 10), tot_len=20 + 8 + 4)
        + b"\0" * 6),  # IP length shorter than the frame (padding)
]


def _assert_event_matches_row(e, row):
    """One kernel event against the offline parser's row for the same frame."""
    sp = int(row["sport"]) if int(row["pflags"]) & plo.PF_PORTS else 0
    dp = int(row["dport"]) if int(row["pflags"]) & plo.PF_PORTS else 0
    s = (int(row["src_hi"]), int(row["src_lo"]), sp)
    d = (int(row["dst_hi"]), int(row["dst_lo"]), dp)
    a, b = (s, d) if s <= d else (d, s)
    assert ktuple(e["key"]) == (a[0], a[1], b[0], b[1], a[2], b[2], int(row["l3"]),
                                int(row["proto"]))
    assert int(e["dir"]) == (0 if s <= d else 1)
    assert int(e["frame_len"]) == int(row["caplen"])
    assert int(e["payload_len"]) == int(row["payload_len"])
    assert int(e["tcp_flags"]) == int(row["tcp_flags"])
    pf = int(row["pflags"])
    assert bool(int(e["pflags"]) & L.PktFlag.TCP) == bool(pf & plo.PF_TCP)
    assert bool(int(e["pflags"]) & L.PktFlag.FRAG) == bool(pf & plo.PF_FRAG)
    assert bool(int(e["pflags"]) & L.PktFlag.PORTS) == bool(pf & plo.PF_PORTS)
    assert bool(int(e["pflags"]) & L.PktFlag.ICMP) == bool(pf & plo.PF_ICMP)
    if pf & plo.PF_TCP:
        assert (int(e["seq"]), int(e["ack"]), int(e["window"])) == (
            int(row["seq"]), int(row["ack"]), int(row["window"]))
    if pf & plo.PF_ICMP:
        assert (int(e["icmp_type"]), int(e["icmp_code"])) == (
            int(row["icmp_type"]), int(row["icmp_code"]))
    # context: the link layer as the offline parser sees it
    assert (int(e["smac"]), int(e["dmac"])) == (int(row["smac"]), int(row["dmac"]))
    assert int(e["nvlan"]) == int(row["nvlan"])
    assert e["vlan"].tolist() == [int(row["vlan"]), int(row["vlan_inner"])]


def _held_fragment(row) -> bool:
    """A non-first fragment of a TCP/UDP/SCTP datagram: alone, it waits for its first one."""
    return bool(int(row["pflags"]) & plo.PF_FRAG) and int(row["proto"]) in plo.PORT_PROTOS


def _tunnel_frames():
    """(capture, frame index) of every frame of the tunnel captures (tests/data/tunnels)."""
    d = Path(__file__).parent / "data" / "tunnels"
    out = []
    for p in sorted(d.glob("*.pcap")):
        data = p.read_bytes()
        pos, k = 24, 0
        while pos + 16 <= len(data):
            incl = int.from_bytes(data[pos + 8:pos + 12], "little")
            out.append((p.stem, k, data[pos + 16:pos + 16 + incl]))
            pos += 16 + incl
            k += 1
    return out


TUNNEL_FRAMES = _tunnel_frames()


def _offline_rows(frame: bytes, decap=True, vxlan=plo.VXLAN_PORT, geneve=plo.GENEVE_PORT):
    """The offline parser's rows of one frame: its outer packet, then one per encapsulation."""
    out = np.zeros(plo.TUN_MAX_ROWS, dtype=plo.ROW_DTYPE)
    names = plo.name_array(plo.TUN_MAX_ROWS)
    buf = np.frombuffer(frame, dtype=np.uint8).copy()
    tcfg = np.array([int(decap), vxlan, geneve], dtype=np.int64)
    n = offline_parse.parse_frame_rows(buf, 0, len(frame), len(frame), 1, 0, out, names, 0,
                                       tcfg, plo.TUN_MAX_ROWS)
    assert n > 0
    return out[:n]


def _row_key(row):
    """(canonical key tuple, orientation) of an offline row."""
    sp = int(row["sport"]) if int(row["pflags"]) & plo.PF_PORTS else 0
    dp = int(row["dport"]) if int(row["pflags"]) & plo.PF_PORTS else 0
    s = (int(row["src_hi"]), int(row["src_lo"]), sp)
    d = (int(row["dst_hi"]), int(row["dst_lo"]), dp)
    a, b = (s, d) if s <= d else (d, s)
    return (a[0], a[1], b[0], b[1], a[2], b[2], int(row["l3"]), int(row["proto"]))


@pytest.mark.parametrize("hook", ["xdp", "tc"])
@pytest.mark.parametrize("i", range(len(TUNNEL_FRAMES)),
                         ids=[f"{s}-{k}" for s, k, _f in TUNNEL_FRAMES])
def test_kernel_decapsulates_as_the_offline_parser(h, i, hook):
    """Every frame of the tunnel captures through the kernel (docs/tunnels.md): one packet
    of each flow the offline parser gives it rows for, outer first, each decapsulated one
    with its encapsulation (type, depth, key) and the key of the flow around it."""
    _stem, _k, frame = TUNNEL_FRAMES[i]
    rows = _offline_rows(frame)
    assert int(rows[0]["error"]) == 0 and int(rows[0]["tun_depth"]) == 0
    if not h.run(frame, hook, may_refuse=True):
        pytest.skip("BPF_PROG_TEST_RUN refuses this frame for this hook")
    ev = h.events()
    c = h.counters()
    assert c["packets"] == 1 and c["tun_lost"] == 0
    assert c["decap"] == len(rows) - 1
    assert len(ev) == len(rows) and len(h.flows()[1]) == len({_row_key(r) for r in rows})
    for depth, (e, row) in enumerate(zip(ev, rows)):
        _assert_event_matches_row(e, row)
        assert int(e["reason"]) & L.EventReason.NEW
        assert (int(e["tun_depth"]), int(e["tun_type"]), int(e["tun_key"])) == (
            depth, int(row["tun_type"]), int(row["tun_key"]))
        if depth:
            assert ktuple(e["tun_parent"]) == _row_key(rows[depth - 1])
        else:
            assert ktuple(e["tun_parent"]) == (0,) * 8


@pytest.mark.parametrize("hook", ["xdp", "tc"])
@pytest.mark.parametrize("k", range(4))
def test_kernel_reads_80211_in_gre_type_9000_as_offline(h, k, hook):
    """GRE protocol 0x9000 is 802.11 as well (Zeek's rule; tshark does not decode it, so
    the capture uses Aruba's 0x82xx / 0x83xx types): each 802.11 header variant of
    aruba.pcap with that type gives the offline parser's rows."""
    frame = bytearray(next(f for s, i, f in TUNNEL_FRAMES if s == "aruba" and i == k))
    assert frame[12:14] == b"\x08\x00" and frame[23] == 47  # Ethernet, IPv4, GRE
    frame[36:38] = b"\x90\x00"
    rows = _offline_rows(bytes(frame))
    assert len(rows) == 2 and int(rows[1]["tun_type"]) == plo.TUN_GRE
    assert h.run(bytes(frame), hook)
    ev = h.events()
    assert len(ev) == 2
    for e, row in zip(ev, rows):
        _assert_event_matches_row(e, row)
    assert int(ev[1]["tun_ether"]) == 1


def test_tunnel_frames_reach_every_depth_and_type():
    """The parity test above covers every encapsulation and the deepest frames."""
    types, depth = set(), 0
    for _s, _k, frame in TUNNEL_FRAMES:
        rows = _offline_rows(frame)
        types |= {int(t) for t in rows["tun_type"][1:]}
        depth = max(depth, len(rows) - 1)
    assert types == set(plo.TUN_SLUGS) and depth == plo.TUN_MAX_DEPTH


def test_later_packets_through_another_parent_send_an_event(h):
    """An inner flow's packet through another outer flow is an event (Zeek's encapsulation
    change); the same encapsulation again is not."""
    inner = ipv4("192.168.1.1", "192.168.1.2", 17, udp(1000, 2000, b"q" * 20))
    def vx(src):
        return eth(ipv4(src, "10.0.0.9", 17, udp(40000, 4789, b"\x08\0\0\0\0\0\x2a\0"
                                               + eth(inner))))
    for src in ("10.0.0.1", "10.0.0.1", "10.0.0.2"):
        h.run(vx(src))
    ev = h.events()
    inner_ev = ev[ev["tun_depth"] == 1]
    assert len(inner_ev) == 2  # the first packet and the change of parent
    assert int(inner_ev[1]["reason"]) == L.EventReason.ZEEK
    assert int(inner_ev[1]["tun_parent"]["a_lo"]) == int(ipaddress.ip_address("10.0.0.2"))
    assert int(inner_ev[0]["tun_key"]) == 42


@pytest.fixture(scope="module")
def mod_nodecap():
    require_bpf()
    from flowscope.sensor import loader
    m = loader.load({"decapsulate": 0})
    yield m
    m.close()


@pytest.mark.parametrize("i", range(0, len(TUNNEL_FRAMES), 3))
def test_without_decapsulation_a_tunnel_frame_is_its_outer_packet(mod_nodecap, i):
    """decapsulate: false compiles decapsulation out: a tunnel frame is one packet of its
    outer flow, exactly the offline parser's outer row."""
    from flowscope.sensor.ring import RingReader
    _stem, _k, frame = TUNNEL_FRAMES[i]
    r = RingReader(mod_nodecap.events_fd)
    try:
        hn = Harness(mod_nodecap, r)
        rows = _offline_rows(frame, decap=False)
        assert len(rows) == 1
        hn.run(frame)
        ev = hn.events()
        assert len(ev) == 1 and len(hn.flows()[1]) == 1
        _assert_event_matches_row(ev[0], rows[0])
        assert int(ev[0]["tun_depth"]) == 0
    finally:
        r.close()


def test_tunnel_ports_follow_the_configuration():
    """vxlan_port / geneve_port are compiled in: VXLAN on another port is decapsulated
    there, and no longer on 4789."""
    from flowscope.sensor import loader
    from flowscope.sensor.ring import RingReader
    inner = ipv4("192.168.1.1", "192.168.1.2", 17, udp(1000, 2000, b"q" * 20))
    def vx(port):
        return eth(ipv4("10.0.0.1", "10.0.0.9", 17, udp(40000, port, b"\x08\0\0\0\0\0\x07\0"
                                                       + eth(inner))))
    m = loader.load({"vxlan_port": 8472})
    r = RingReader(m.events_fd)
    try:
        hm = Harness(m, r)
        hm.run(vx(4789))
        assert len(hm.events()) == 1
        assert len(_offline_rows(vx(8472), vxlan=8472)) == 2
        hm.run(vx(8472))
        ev = hm.events()
        assert len(ev) == 2 and int(ev[1]["tun_type"]) == plo.TUN_VXLAN
        assert hm.counters()["decap"] == 1
    finally:
        r.close()
        m.close()


@pytest.mark.parametrize("i", range(len(OFFLINE_FRAMES)))
def test_kernel_matches_offline_parser(h, i):
    frame = OFFLINE_FRAMES[i]
    row = _offline_row(frame)
    assert int(row["error"]) == 0
    h.run(frame)
    ev = h.events()
    if _held_fragment(row):
        assert len(ev) == 0 and h.counters()["frag_held"] == 1
        return
    assert len(ev) == 1
    _assert_event_matches_row(ev[0], row)


# ---------------------------------------------------------------------------
# L2 walk parity: VLAN tags, MPLS label stacks and PPPoE, as the offline parser walks them

_PERR_COUNTER = {plo.PERR_TRUNCATED: "truncated", plo.PERR_NOT_IP: "not_ip",
                 plo.PERR_BAD_HEADER: "bad_header"}
TPIDS = (0x8100, 0x88A8, 0x9100)
MAX_L2_LAYERS = offline_parse.MAX_L2_LAYERS
MAX_MPLS_LABELS = offline_parse.MAX_MPLS_LABELS


def check_parity(h, frame: bytes, hooks=("xdp", "tc")) -> int:
    """Run ``frame`` through each hook on an empty map; the outcome must equal the offline
    parser's: the same key, orientation and fields in a NEW event, or the same unmatched
    counter and nothing else. Returns the offline error code."""
    row = _offline_row(frame)
    err = int(row["error"])
    for hook in hooks:
        h.reset()
        if not h.run(frame, hook, may_refuse=True):
            continue  # BPF_PROG_TEST_RUN refuses this frame for this hook
        c = h.counters()
        ev = h.events()
        ctx = f"{hook} frame={frame.hex()} offline error={err}"
        assert c["packets"] == 1, ctx
        if err in (plo.PERR_NONE, plo.PERR_L4_SHORT) and _held_fragment(row):
            assert len(ev) == 0 and c["frag_held"] == 1, (ctx, c)
        elif err in (plo.PERR_NONE, plo.PERR_L4_SHORT):
            assert c["truncated_l4"] == int(err == plo.PERR_L4_SHORT), (ctx, c)
            assert (c["truncated"], c["not_ip"], c["bad_header"]) == (0, 0, 0), (ctx, c)
            assert len(ev) == 1 and int(ev[0]["reason"]) & L.EventReason.NEW, ctx
            assert c["flows_new"] == 1, (ctx, c)
            try:
                _assert_event_matches_row(ev[0], row)
            except AssertionError as exc:
                raise AssertionError(ctx) from exc
            d = int(ev[0]["dir"])
            _, vals = h.flows()
            want = [[1, 0], [len(frame), 0], [int(row["payload_len"]), 0]]
            if d:
                want = [w[::-1] for w in want]
            got = [vals[0][n].tolist() for n in ("pkts", "bytes", "payload")]
            assert got == want and int(vals[0]["first_dir"]) == d, (ctx, got)
        else:
            name = _PERR_COUNTER[err]
            got = {k: c[k] for k in _PERR_COUNTER.values()}
            assert got == {k: int(k == name) for k in got}, (ctx, got)
            assert len(ev) == 0 and c["flows_new"] == 0, ctx
    return err


def mpls(n: int, bos_at: int | None = -1) -> bytes:
    """``n`` MPLS label stack entries; bottom-of-stack on entry ``bos_at`` (-1: the last,
    None: none)."""
    if bos_at is not None and bos_at < 0:
        bos_at += n
    return b"".join(struct.pack("!I", ((100 + i) << 12) | ((i == bos_at) << 8) | 64)
                    for i in range(n))


def pppoe(ppp_proto: int, payload: bytes) -> bytes:
    """PPPoE session header (version/type 0x11, code 0, session 0x1234) + PPP protocol."""
    return struct.pack("!BBHHH", 0x11, 0, 0x1234, len(payload) + 2, ppp_proto) + payload


MAC_C = bytes.fromhex("0a0000000003")
MAC_D = bytes.fromhex("0a0000000004")


def layer_bytes(layer, next_et: int):
    """(EtherType announcing ``layer``, or None for an 802.3 length; its bytes, ending in
    ``next_et`` where the layer carries one). Layers: a VLAN tag ``(tpid, vid)``;
    ``("pbb", i_tag)``: 802.1ah I-TAG, then an inner Ethernet header; ``("fp", ftag_ttl)``:
    FabricPath, then an inner Ethernet header; ``("vntag", word)``; ``("llc", control, oui)``:
    LLC (1- or 2-byte control) + SNAP; ``("llcraw", bytes)``: any other 802.2 header."""
    kind, arg = layer[0], layer[1]
    nxt = struct.pack("!H", next_et)
    if kind in TPIDS:
        return kind, struct.pack("!H", arg) + nxt
    if kind == "pbb":
        return offline_parse.ETH_P_PBB, struct.pack("!I", arg) + MAC_D + MAC_C + nxt
    if kind == "fp":
        return offline_parse.ETH_P_FABRICPATH, struct.pack("!H", arg) + MAC_D + MAC_C + nxt
    if kind == "vntag":
        return offline_parse.ETH_P_VNTAG, struct.pack("!I", arg) + nxt
    if kind == "llc":
        return None, b"\xaa\xaa" + arg + layer[2].to_bytes(3, "big") + nxt
    assert kind == "llcraw"
    return None, arg


def stack(body: bytes, et: int, layers=()) -> bytes:
    """Ethernet frame: ``layers`` (see ``layer_bytes``) outermost first, then EtherType ``et``
    and ``body``. The 802.3 length before an LLC layer is the length of what follows, capped
    at 1500, unless the layer gives one as its last item (``("llc", control, oui, length)``)."""
    for layer in reversed(layers):
        own, hdr = layer_bytes(layer, et)
        body = hdr + body
        if own is None:
            n = 3 if layer[0] == "llc" else 2
            own = layer[n] if len(layer) > n else min(len(body), 1500)
        et = own
    return MAC_B + MAC_A + struct.pack("!H", et) + body


# One of each layer the walk passes through besides VLAN tags.
LAYER_SAMPLES = [
    ("pbb", ("pbb", 0x00123456)),
    ("fp", ("fp", 0x0401)),
    ("vntag", ("vntag", 0x80010002)),
    ("snap", ("llc", b"\x03", 0)),  # RFC 1042
    ("snap-f8", ("llc", b"\x03", 0xF8)),  # 802.1H bridge tunnel
    ("snap-ui-p", ("llc", b"\x13", 0)),  # UI with the P/F bit: still 1 byte
    ("snap-i", ("llc", b"\x00\x00", 0)),  # I-frame: 2-byte control
    ("snap-s", ("llc", b"\x01\x00", 0xF8)),  # S-frame: 2-byte control
]


def _inner_packets():
    """(name, IP packet, EtherType, version) for TCP, UDP and ICMP over IPv4 and IPv6."""
    a4, b4, a6, b6 = "10.1.0.9", "10.1.0.2", "2001:db8::9", "2001:db8::2"
    return [
        ("tcp4", ipv4(a4, b4, 6, tcp(4321, 443, PSH | ACK, seq=7, ack=9, payload=b"hi!")),
         0x0800, 4),
        ("udp4", ipv4(a4, b4, 17, udp(53, 5353, b"dns")), 0x0800, 4),
        ("icmp4", ipv4(a4, b4, 1, icmp(8, 0)), 0x0800, 4),
        ("tcp6", ipv6(a6, b6, 6, tcp(80, 50000, SYN | ACK, seq=1, ack=2)), 0x86DD, 6),
        ("udp6", ipv6(a6, b6, 17, udp(500, 4500, b"ike")), 0x86DD, 6),
        ("icmp6", ipv6(a6, b6, 58, icmp(128, 0)), 0x86DD, 6),
    ]


INNER = _inner_packets()


def _tag_stacks():
    """(name, tags) for 0..MAX_L2_LAYERS + 2 tags of each TPID, and mixes."""
    out = []
    for tpid in TPIDS:
        for n in range(MAX_L2_LAYERS + 3):
            out.append((f"{tpid:04x}x{n}", [(tpid, n + 1)] * n))
    rng = random.Random(8021)
    for n in (2, 3, 5, 7, 8, 9):
        out.append((f"mix{n}", [(rng.choice(TPIDS), rng.randrange(4096)) for _ in range(n)]))
    return out


TAG_STACKS = _tag_stacks()


def l2_frames():
    """(name, frame) over every L2 shape the offline walk knows, each with every inner
    packet: VLAN stacks, MPLS stacks (with and without bottom of stack, good and bad version
    nibbles), PPPoE (IPv4, IPv6, other PPP protocols), PBB, FabricPath, VN-Tag and LLC/SNAP
    (good and other LLC headers and OUIs, 802.3 lengths at the 1500 edge), and the
    combinations."""
    out = []
    for iname, pkt, et, ver in INNER:
        for sname, tags in TAG_STACKS:
            out.append((f"{sname}-{iname}", eth(pkt, et=et, tags=tags)))
        for n in range(1, MAX_MPLS_LABELS + 2):
            out.append((f"mpls{n}-{iname}", eth(mpls(n) + pkt, et=0x8847)))
        out.append((f"mplsmc3-{iname}", eth(mpls(3) + pkt, et=0x8848)))
        for n in (1, MAX_MPLS_LABELS, MAX_MPLS_LABELS + 1):
            out.append((f"mpls{n}-nobos-{iname}", eth(mpls(n, None) + pkt, et=0x8847)))
        out.append((f"mpls4-bos1-{iname}", eth(mpls(4, 1) + pkt, et=0x8847)))
        for ntags in (1, 2, MAX_L2_LAYERS - 1, MAX_L2_LAYERS, MAX_L2_LAYERS + 1):
            tags = [(TPIDS[i % 3], i) for i in range(ntags)]
            for n in (1, MAX_MPLS_LABELS):
                out.append((f"vlan{ntags}-mpls{n}-{iname}",
                            eth(mpls(n) + pkt, et=0x8847, tags=tags)))
            out.append((f"vlan{ntags}-pppoe-{iname}",
                        eth(pppoe(0x21 if ver == 4 else 0x57, pkt), et=0x8864, tags=tags)))
        out.append((f"pppoe-{iname}", eth(pppoe(0x21 if ver == 4 else 0x57, pkt), et=0x8864)))
        out.append((f"pppoe-swapped-{iname}",  # PPP says the other IP version
                    eth(pppoe(0x57 if ver == 4 else 0x21, pkt), et=0x8864)))
        out += _layer_frames(iname, pkt, et, ver)
    for nib in (0, 1, 5, 7, 15):  # MPLS payload that is not IPv4/IPv6 by its first nibble
        pkt = bytes([nib << 4 | 5]) + INNER[0][1][1:]
        out.append((f"mpls2-nibble{nib}", eth(mpls(2) + pkt, et=0x8847)))
    for proto in (0xC021, 0x8021, 0x0281, 0x0000):  # LCP, IPCP, MPLS, nothing: not IP
        out.append((f"pppoe-{proto:04x}", eth(pppoe(proto, INNER[0][1]), et=0x8864)))
    out.append(("pppoe-discovery", eth(pppoe(0x21, INNER[0][1]), et=0x8863)))
    out.append(("vlan-arp", eth(b"\0" * 28, et=0x0806, tags=[(0x8100, 1)])))
    tcp4_pkt = INNER[0][1]
    for name, layers in (
        ("stp", [("llcraw", b"\x42\x42\x03" + b"\0" * 35)]),  # 802.2, not SNAP
        ("snap-cisco", [("llc", b"\x03", 0x00000C)]),  # CDP's OUI: not an EtherType
        ("llc-aa-ab", [("llcraw", b"\xaa\xab\x03\0\0\0\x08\x00" + tcp4_pkt)]),
        ("llc-ab-aa", [("llcraw", b"\xab\xaa\x03\0\0\0\x08\x00" + tcp4_pkt)]),
        ("snap-oui-010000", [("llc", b"\x03", 0x010000)]),
        ("snap-oui-0100f8", [("llc", b"\x03", 0x0100F8)]),
        ("snap-oui-0000f9", [("llc", b"\x03", 0xF9)]),
        ("vlan-snap-arp", [(0x8100, 1), ("llc", b"\x03", 0)]),
        ("len0", [("llc", b"\x03", 0, 0)]),
        ("len1500", [("llc", b"\x03", 0, 1500)]),
    ):
        body, et = (tcp4_pkt, 0x0800) if "arp" not in name else (b"\0" * 28, 0x0806)
        out.append((name, stack(b"" if name == "stp" else body, et, layers)))
    for et in (0x0000, 1500, 1501, 1535, 0x0600):  # 802.3 lengths end at 1500
        out.append((f"et{et:04x}-snap", eth(b"\xaa\xaa\x03\0\0\0\x08\x00" + tcp4_pkt, et=et)))
        out.append((f"et{et:04x}-alone", eth(b"", et=et)))
    return out


def _layer_frames(iname, pkt, et, ver):
    """PBB, FabricPath, VN-Tag and LLC/SNAP layers over ``pkt``: each alone, between VLAN
    tags, before MPLS and PPPoE, FS_MAX_L2_LAYERS of them and one more, and random mixes of
    every layer kind up to one past the bound."""
    out = []
    ppp = 0x21 if ver == 4 else 0x57
    for sname, layer in LAYER_SAMPLES:
        out.append((f"{sname}-{iname}", stack(pkt, et, [layer])))
        out.append((f"vlan-{sname}-vlan-{iname}",
                    stack(pkt, et, [(0x8100, 5), layer, (0x88A8, 6)])))
        out.append((f"{sname}-mpls2-{iname}", stack(mpls(2) + pkt, 0x8847, [layer])))
        out.append((f"{sname}-pppoe-{iname}", stack(pppoe(ppp, pkt), 0x8864, [layer])))
        for n in (MAX_L2_LAYERS, MAX_L2_LAYERS + 1):
            out.append((f"{sname}x{n}-{iname}", stack(pkt, et, [layer] * n)))
        out.append((f"{sname}x{MAX_L2_LAYERS}-mpls{MAX_MPLS_LABELS}-{iname}",
                    stack(mpls(MAX_MPLS_LABELS) + pkt, 0x8847, [layer] * MAX_L2_LAYERS)))
    kinds = [layer for _, layer in LAYER_SAMPLES] + [(t, 9) for t in TPIDS]
    rng = random.Random(f"mix-{iname}")
    for n in (2, 3, 5, MAX_L2_LAYERS, MAX_L2_LAYERS + 1):
        layers = [rng.choice(kinds) for _ in range(n)]
        out.append((f"mix{n}-{iname}", stack(pkt, et, layers)))
        out.append((f"mix{n}-mpls3-{iname}", stack(mpls(3) + pkt, 0x8848, layers)))
        out.append((f"mix{n}-pppoe-{iname}", stack(pppoe(ppp, pkt), 0x8864, layers)))
    return out


L2_FRAMES = l2_frames()


def test_l2_frames_cover_every_outcome():
    """The frame list reaches each offline outcome, so the parity test below means something."""
    errs = {int(_offline_row(f)["error"]) for _, f in L2_FRAMES}
    assert errs == {plo.PERR_NONE, plo.PERR_TRUNCATED, plo.PERR_NOT_IP, plo.PERR_BAD_HEADER}


def test_kernel_l2_bounds_are_the_offline_bounds():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "bpf" / "fs_parse.h").read_text()
    for name, want in (("FS_MAX_L2_LAYERS", MAX_L2_LAYERS),
                       ("FS_MAX_MPLS_LABELS", MAX_MPLS_LABELS),
                       ("FS_MAX_IPV6_EXT", offline_parse.MAX_IPV6_EXT)):
        m = re.search(rf"^#define {name} (\d+)", text, re.M)
        assert m and int(m.group(1)) == want, name
    for name, want in (("FS_ETH_P_PBB", offline_parse.ETH_P_PBB),
                       ("FS_ETH_P_FABRICPATH", offline_parse.ETH_P_FABRICPATH),
                       ("FS_ETH_P_VNTAG", offline_parse.ETH_P_VNTAG),
                       ("FS_ETH_MAX_8023_LEN", offline_parse.ETH_MAX_8023_LEN),
                       ("FS_OUI_BRIDGE_TUNNEL", offline_parse.OUI_BRIDGE_TUNNEL),
                       ("FS_L2_MAX_LAYER_BYTES",
                        max(len(layer_bytes(layer, 0)[1]) for _, layer in LAYER_SAMPLES))):
        m = re.search(rf"^#define {name} (0x[0-9A-Fa-f]+|\d+)", text, re.M)
        assert m and int(m.group(1), 0) == want, name


def test_deepest_l3_start_is_within_the_kernel_bound(h):
    """FS_MAX_L2_LAYERS PBB layers (the longest) and a full MPLS stack: the deepest IP header
    the walk can reach, which fs_parse.h's offset bound must admit."""
    for _, pkt, et, _ in INNER:
        frame = stack(mpls(MAX_MPLS_LABELS) + pkt, 0x8847, [("pbb", 1)] * MAX_L2_LAYERS)
        assert frame.index(pkt) == 14 + 18 * MAX_L2_LAYERS + 4 * MAX_MPLS_LABELS
        assert check_parity(h, frame) == plo.PERR_NONE


def test_kernel_l2_walk_matches_offline_parser(h):
    matched = 0
    for _, frame in L2_FRAMES:
        matched += check_parity(h, frame) == plo.PERR_NONE
    assert matched > len(L2_FRAMES) // 2


# One frame per L2 shape (with TCP, UDP and ICMP inside) cut at every byte.
TRUNC_SHAPES = [
    ("vlan1", dict(tags=[(0x8100, 7)])),
    ("qinq", dict(tags=[(0x88A8, 7), (0x8100, 8)])),
    ("vlan8", dict(tags=[(TPIDS[i % 3], i) for i in range(MAX_L2_LAYERS)])),
    ("vlan9", dict(tags=[(0x8100, i) for i in range(MAX_L2_LAYERS + 1)])),
    ("mpls1", dict(labels=1)),
    ("mpls8", dict(labels=MAX_MPLS_LABELS)),
    ("mpls8-nobos", dict(labels=MAX_MPLS_LABELS, bos=None)),
    ("vlan2-mpls3", dict(tags=[(0x8100, 1), (0x9100, 2)], labels=3)),
    ("vlan8-mpls8", dict(tags=[(0x8100, i) for i in range(MAX_L2_LAYERS)],
                         labels=MAX_MPLS_LABELS)),
    ("pppoe", dict(session=True)),
    ("vlan1-pppoe", dict(tags=[(0x8100, 3)], session=True)),
    ("vlan8-pppoe", dict(tags=[(0x88A8, i) for i in range(MAX_L2_LAYERS)], session=True)),
    *((name, dict(tags=[layer])) for name, layer in LAYER_SAMPLES),
    ("vlan-pbb-vntag-snap-fp-mpls2", dict(tags=[(0x8100, 1), ("pbb", 2), ("vntag", 3),
                                                ("llc", b"\0\0", 0), ("fp", 4)], labels=2)),
    ("snap-f8-vlan-pppoe", dict(tags=[("llc", b"\x03", 0xF8), (0x9100, 5)], session=True)),
    ("pbb8-mpls8", dict(tags=[("pbb", i) for i in range(MAX_L2_LAYERS)],
                        labels=MAX_MPLS_LABELS)),
    ("fp9", dict(tags=[("fp", i) for i in range(MAX_L2_LAYERS + 1)])),
]


def shape_frame(pkt: bytes, et: int, ver: int, tags=(), labels=0, bos=-1,
                session=False) -> bytes:
    """``pkt`` behind ``tags`` (any layers, see ``layer_bytes``), then ``labels`` MPLS labels
    or a PPPoE session header."""
    if labels:
        return stack(mpls(labels, bos) + pkt, 0x8847, tags)
    if session:
        return stack(pppoe(0x21 if ver == 4 else 0x57, pkt), 0x8864, tags)
    return stack(pkt, et, tags)


@pytest.mark.parametrize("shape", [s for s, _ in TRUNC_SHAPES])
def test_kernel_l2_truncation_matches_offline_parser(h, shape):
    kw = dict(TRUNC_SHAPES)[shape]
    seen = set()
    for _, pkt, et, ver in INNER:
        full = shape_frame(pkt, et, ver, **kw)
        for cut in range(14, len(full) + 1):
            seen.add(check_parity(h, full[:cut]))
    assert plo.PERR_TRUNCATED in seen


@st.composite
def random_l2_frames(draw):
    """A random L2 stack (VLAN, PBB, FabricPath, VN-Tag and LLC/SNAP layers, beyond the bound
    included) ending in IP, MPLS, PPPoE or another EtherType, over one of the inner packets,
    with a few bytes overwritten and cut anywhere past the Ethernet header."""
    _, pkt, et, ver = draw(st.sampled_from(INNER))
    llc = st.tuples(st.just("llc"),
                    st.sampled_from([b"\x03", b"\x13", b"\x00\x00", b"\x01\x00", b"\x02\x00"]),
                    st.sampled_from([0, 0xF8, 0x00000C]), st.integers(0, 1500))
    layer = st.one_of(st.tuples(st.sampled_from(TPIDS), st.integers(0, 4095)),
                      st.tuples(st.just("pbb"), st.integers(0, 2**32 - 1)),
                      st.tuples(st.just("fp"), st.integers(0, 0xFFFF)),
                      st.tuples(st.just("vntag"), st.integers(0, 2**32 - 1)), llc)
    tags = draw(st.lists(layer, max_size=MAX_L2_LAYERS + 3))
    kind = draw(st.sampled_from(["ip", "mpls", "pppoe", "other"]))
    if kind == "ip":
        body, outer = pkt, draw(st.sampled_from([et, et, 0x0800, 0x86DD]))
    elif kind == "mpls":
        n = draw(st.integers(1, MAX_MPLS_LABELS + 2))
        body = mpls(n, draw(st.one_of(st.none(), st.integers(0, n - 1)))) + pkt
        outer = draw(st.sampled_from([0x8847, 0x8848]))
    elif kind == "pppoe":
        proto = draw(st.one_of(st.sampled_from([0x21, 0x57, 0xC021]), st.integers(0, 0xFFFF)))
        body, outer = pppoe(proto, pkt), 0x8864
    else:
        body, outer = pkt, draw(st.integers(0, 0xFFFF))
    frame = bytearray(stack(body, outer, tags))
    for pos, val in draw(st.lists(st.tuples(st.integers(12, len(frame) - 1),
                                            st.integers(0, 255)), max_size=3)):
        frame[pos] = val
    return bytes(frame[:draw(st.integers(14, len(frame)))])


@settings(max_examples=1000, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(frame=random_l2_frames())
def test_random_l2_stacks_match_offline_parser(h, frame):
    check_parity(h, frame)


# ---------------------------------------------------------------------------
# which packets become events


def _session(h):
    """Reference trace of semantics.md with extra pure ACKs and data; returns events."""
    c = dict(src="10.0.0.1", sport=1234, dst="10.0.0.2", dport=80)
    s = dict(src="10.0.0.2", sport=80, dst="10.0.0.1", dport=1234)
    plan = [
        (c, SYN, b""), (s, SYN | ACK, b""), (c, ACK, b""),  # handshake
        (c, ACK, b""), (s, ACK, b""),  # pure ACKs while Established: no event
        (c, PSH | ACK, b"req"), (s, PSH | ACK, b"resp"), (c, ACK, b""),
        (c, FIN | ACK, b""), (c, FIN | ACK, b""),  # retransmitted FIN: event, no state change
        (s, ACK, b""),  # ACK in FinWait: nothing
        (s, FIN | ACK, b""), (c, ACK, b""),  # -> ClosingTcp -> Closed
    ]
    for who, fl, pl in plan:
        h.run(tcp4(flags=fl, payload=pl, **who))
    return h.events(), len(plan)


def test_event_rule_on_a_tcp_session(h):
    ev, n = _session(h)
    R = L.EventReason
    got = [(int(e["tcp_flags"]), int(e["reason"]), int(e["state"]), int(e["hist_len"]))
           for e in ev]
    S = L.TcpState
    Z = R.ZEEK  # first packet / pure ACK / data of a direction, anything after both closed
    assert got == [
        (SYN, R.NEW | R.CTRL | R.STATE, S.SYN_SENT, 1),
        (SYN | ACK, R.CTRL | R.STATE | Z, S.SYN_RECEIVED, 2),  # the responder's first packet
        (ACK, R.STATE | Z, S.ESTABLISHED, 2),  # the initiator's first pure ACK
        (ACK, Z, S.ESTABLISHED, 2),  # the responder's first pure ACK (the initiator's 2nd: none)
        (PSH | ACK, R.DATA | Z, S.ESTABLISHED, 3),
        (PSH | ACK, R.DATA | Z, S.ESTABLISHED, 4),
        (FIN | ACK, R.CTRL | R.STATE | Z, S.FIN_WAIT, 5),
        (FIN | ACK, R.CTRL, S.FIN_WAIT, 6),
        (FIN | ACK, R.CTRL | R.STATE | Z, S.CLOSING_TCP, 7),
        (ACK, R.STATE | Z, S.CLOSED, 7),  # after both FINs every packet is sent
    ]
    last = ev[-1]
    assert int(last["pkts"].sum()) == n  # counters cover the packets that sent no event
    assert int(last["pkts"][0]) == 8 and int(last["pkts"][1]) == 5
    assert last["payload"].tolist() == [3, 4]
    assert last["ip_bytes"].tolist() == [8 * 40 + 3, 5 * 40 + 4]  # IPv4 + TCP headers + data
    assert last["flags_or"].tolist() == [SYN | ACK | PSH | FIN, SYN | ACK | PSH | FIN]
    assert h.counters()["events"] == len(ev)


def test_terminal_flow_restarts_with_new_generation(h):
    _session(h)
    h.run(tcp4(flags=ACK))  # late ACK after Closed: a new flow, as offline
    ev = h.events()
    assert len(ev) == 1
    assert int(ev[0]["reason"]) == L.EventReason.NEW and int(ev[0]["gen"]) == 1
    assert ev[0]["pkts"].tolist() == [1, 0]
    assert h.counters()["flows_restart"] == 1


def test_rst_on_new_flow(h):
    h.run(tcp4(flags=RST))
    ev = h.events()
    assert int(ev[0]["state"]) == L.TcpState.RESET
    assert int(ev[0]["reason"]) == L.EventReason.NEW | L.EventReason.CTRL | L.EventReason.STATE


def test_data_events_stop_when_history_is_full(h):
    h.run(tcp4(flags=SYN))
    for i in range(20):  # each data packet adds one 'D'
        h.run(tcp4(flags=PSH | ACK, payload=b"d", seq=i))
    ev = h.events()
    assert len(ev) == 1 + 15  # S + 15 D fill the 16 letters; later data is counted only
    assert int(ev[-1]["hist_len"]) == 16
    _, vals = h.flows()
    assert int(vals[0]["pkts"][0]) == 21 and int(vals[0]["hist_len"]) == 16
    h.run(tcp4(flags=FIN | ACK))  # control packets still go out after the history is full
    assert len(h.events()) == 1


def test_mid_stream_pickup_stays_quiet(h):
    h.run(tcp4(flags=ACK, payload=b"x"))
    for _ in range(5):
        h.run(tcp4(flags=ACK))
    ev = h.events()
    # the first packet, then the direction's first pure ACK (Zeek's 'A'); then nothing
    assert len(ev) == 2 and {int(e["state"]) for e in ev} == {L.TcpState.ACTIVE}
    assert int(ev[0]["reason"]) == L.EventReason.NEW | L.EventReason.DATA
    assert int(ev[1]["reason"]) == L.EventReason.ZEEK and int(ev[1]["pkts"][0]) == 2


def test_udp_flow_sends_only_its_first_packet(h):
    for _ in range(10):
        h.run(eth(ipv4("10.0.0.1", "10.0.0.2", 17, udp(5000, 53, b"x"))))
    assert len(h.events()) == 1
    assert h.flows()[1][0]["pkts"].tolist() == [10, 0]


def test_sweep_idle_returns_final_values(h):
    from flowscope.sensor import maps

    h.run(tcp4(flags=SYN))
    h.run(eth(ipv4("10.0.0.1", "10.0.0.2", 17, udp(5000, 53, b"x"))))
    _, vals = h.flows()
    now = int(vals["last_ns"].max()) + 1
    table = np.zeros(256, dtype=np.int64)
    table[6] = 10**12
    k, v = maps.sweep_idle(h.mod.flows_fd, 1 << 17, now, table)
    assert len(k) == 1 and int(k[0]["proto"]) == 17 and v[0]["pkts"].tolist() == [1, 0]
    k2, v2 = maps.drain_flows(h.mod.flows_fd, 1 << 17)
    assert len(k2) == 1 and int(k2[0]["proto"]) == 6
    assert len(h.flows()[0]) == 0


# ---------------------------------------------------------------------------
# failure counters and tunables (a second, small build)


@pytest.fixture(scope="module")
def small():
    require_bpf()
    from flowscope.sensor import loader
    from flowscope.sensor.ring import RingReader

    m = loader.load({"max_flows": 8, "ring_pages": 1, "packet_events": 1})
    r = RingReader(m.events_fd)
    yield Harness(m, r)
    r.close()
    m.close()


def test_map_full_is_counted(small):
    small.reset()
    for i in range(20):
        small.run(eth(ipv4("10.0.0.1", f"10.0.1.{i}", 17, udp(1, 2))))
    c = small.counters()
    assert c["map_full"] >= 12 and c["flows_new"] <= 8  # hash maps may refuse a bit early
    assert c["flows_new"] + c["map_full"] == 20


def test_packet_events_and_ring_full(small):
    small.reset()
    for _ in range(4):
        small.run(eth(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2))))
    ev = small.events()
    assert len(ev) == 4  # FS_PACKET_EVENTS=1: every packet
    assert [int(e["pkts"][0]) for e in ev] == [1, 2, 3, 4]
    assert all(int(e["reason"]) & L.EventReason.SAMPLE for e in ev)
    for _ in range(100):  # 4 KiB ring = 28 records of 144 bytes: the rest must be counted
        small.run(eth(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2))))
    c = small.counters()
    assert c["ring_full"] > 0 and c["events"] + c["ring_full"] == 104
    assert len(small.events()) == c["events"] - 4


def test_layout_mismatch_refuses_to_load(monkeypatch):
    require_bpf()
    from flowscope.sensor import layout as lay
    from flowscope.sensor import loader

    bad = np.dtype({"names": ["a_hi"], "formats": ["<u8"], "offsets": [0], "itemsize": 48})
    monkeypatch.setitem(lay.STRUCTS, "fs_flow_key", bad)
    with pytest.raises(loader.LayoutMismatch):
        loader.load()


# ---------------------------------------------------------------------------
# live: a veth pair into a network namespace the test creates

import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402


def _sh(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=20,
                          **kw)


@pytest.fixture
def veth():
    """(ifname in our namespace, peer address) of a veth whose peer lives in a fresh netns."""
    require_bpf("ip")
    with veth_netns(f"fsns{os.getpid() % 100000}", 251, os.getpid() % 200 + 20) as (a, v4, _, ns):
        yield a, v4, ns


SERVER = textwrap.dedent("""
    import socket, sys
    s = socket.socket(); s.settimeout(10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], 8080)); s.listen(1)
    print("ready", flush=True)
    c, _ = s.accept(); c.settimeout(10)
    c.recv(100); c.sendall(b"world")
    while c.recv(100):
        pass
    c.close(); s.close()
""")


def _flow_events(ev, proto):
    return ev[ev["key"]["proto"] == proto]


def test_veth_ping_and_tcp_session(veth):
    from flowscope.sensor import attach, loader, maps
    from flowscope.sensor.ring import RingReader

    ifname, peer, ns = veth
    m = loader.load()
    try:
        with attach.attach(m, ifname) as at, RingReader(m.events_fd) as ring:
            assert at.how == ["xdp link (generic)", "tcx egress link"]
            p = _sh("ping", "-c", "3", "-i", "0.2", "-w", "8", peer, check=False)
            assert p.returncode == 0, p.stdout + p.stderr
            srv = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER,
                                    peer], stdout=subprocess.PIPE, text=True)
            try:
                assert srv.stdout.readline().strip() == "ready"
                with socket.create_connection((peer, 8080), timeout=5) as c:
                    c.sendall(b"hello")
                    assert c.recv(100) == b"world"
                srv.wait(timeout=10)
            finally:
                if srv.poll() is None:
                    srv.kill()
                    srv.wait(timeout=5)
            ev = []
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # the last ACK may still be in flight
                ring.wait(0.1)
                ev.append(ring.drain_all())
                tcp_ev = _flow_events(np.concatenate(ev), 6)
                if len(tcp_ev) and int(tcp_ev[-1]["state"]) == L.TcpState.CLOSED:
                    break
            # the link's own IPv6 chatter and late TCP packets keep sending events: every
            # event the kernel counted must reach the ring, checked when a drain after the
            # counter read finds nothing new
            deadline = time.monotonic() + 5
            while True:
                counters = maps.counters_dict(m.counters_fd)
                got = ring.drain_all()
                ev.append(got)
                if (not len(got) and counters["events"] == sum(map(len, ev))
                        or time.monotonic() > deadline):
                    break
                ring.wait(0.05)
            ev = np.concatenate(ev)
        keys, vals = maps.lookup_flows(m.flows_fd, 1 << 17)
    finally:
        m.close()

    ic = _flow_events(ev, 1)
    # the first echo request leaves via TC, the first reply (the other direction's first
    # packet) comes in via XDP; the other two pings send nothing
    assert [int(e["hook"]) for e in ic] == [L.Hook.TC, L.Hook.XDP]
    assert int(ic[1]["reason"]) == L.EventReason.ZEEK
    ik = keys["proto"] == 1
    assert vals[ik][0]["pkts"].sum() == 6  # 3 requests (TC) + 3 replies (XDP)
    tcp_ev = _flow_events(ev, 6)
    states = [int(e["state"]) for e in tcp_ev]
    S = L.TcpState
    assert states[:3] == [S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED]
    assert states[-1] == S.CLOSED and S.CLOSING_TCP in states
    assert {int(e["hook"]) for e in tcp_ev} == {L.Hook.XDP, L.Hook.TC}
    last = tcp_ev[-1]
    tk = keys["proto"] == 6
    assert last["pkts"].tolist() == vals[tk][0]["pkts"].tolist()
    assert sorted(last["payload"].tolist()) == [5, 5]
    assert counters["ring_full"] == 0 and counters["map_full"] == 0
    assert counters["events"] == len(ev)


CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from flowscope.sensor import attach, loader, ring
    m = loader.load()
    a = attach.attach(m, sys.argv[1])
    print(ring.map_info(m.xdp_fd)["id"], ring.map_info(m.tc_fd)["id"], flush=True)
    time.sleep(60)
""")


def test_sigkill_leaves_nothing_attached(veth):
    import re

    require_bpf("bpftool")
    ifname, _, _ = veth
    repo = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    child = subprocess.Popen([sys.executable, "-c", CHILD, ifname, repo],
                             stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        ids = [int(x) for x in line.split()]
        assert len(ids) == 2, line
        assert "xdp" in _sh("ip", "link", "show", "dev", ifname).stdout
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    deadline = time.monotonic() + 10
    while True:  # programs are freed after an RCU grace period
        link = _sh("ip", "link", "show", "dev", ifname).stdout
        progs = _sh("bpftool", "prog", "show", check=False).stdout
        links = _sh("bpftool", "link", "show", check=False).stdout
        alive = [i for i in ids if re.search(rf"^{i}:", progs, re.M)
                 or re.search(rf"\bprog {i}\b", links)]
        if "xdp" not in link and not alive:
            break
        assert time.monotonic() < deadline, (link, alive)
        time.sleep(0.1)


# ---------------------------------------------------------------------------
# fragments and cut-short L4 headers: the kernel's flows equal the offline engine's


def _frag4(src, dst, proto, data, off8, mf, ident):
    f = bytearray(eth(ipv4(src, dst, proto, data, frag=off8, mf=mf)))
    f[14 + 4:14 + 6] = struct.pack("!H", ident)
    return bytes(f)


def _frag6(src, dst, nh, data, off8, mf, ident):
    fh = struct.pack("!BBHI", nh, 0, (off8 << 3) | int(mf), ident)
    return eth(ipv6(src, dst, 44, fh + data), et=0x86DD)


def _pieces(l4: bytes, size: int):
    return [(l4[o:o + size], o // 8, o + size < len(l4)) for o in range(0, len(l4), size)]


def _fragment_frames():
    frames = []
    u = _pieces(udp(4000, 53, b"u" * 100), 48)  # 3 fragments
    t6 = _pieces(tcp(12345, 8080, ACK, payload=b"t" * 120), 64)
    ic = _pieces(icmp(8, 0, b"i" * 90), 48)
    mk4 = lambda p, i, proto=17, ident=7, s="10.0.0.1", d="10.0.0.2": _frag4(  # noqa: E731
        s, d, proto, p[i][0], p[i][1], p[i][2], ident)
    mk6 = lambda p, i, ident=0xA1BC6572: _frag6(  # noqa: E731
        "2001:db8::1", "2001:db8::2", 6, p[i][0], p[i][1], p[i][2], ident)
    frames += [mk4(u, 0), mk4(u, 1), mk4(u, 2)]  # in order
    frames += [mk4(u, 2, ident=8), mk4(u, 0, ident=8), mk4(u, 1, ident=8)]  # late first
    frames += [mk4(u, 1, ident=9, s="10.0.0.2", d="10.0.0.1")]  # first never comes
    frames += [mk6(t6, 1), mk6(t6, 0), mk6(t6, 2)]  # IPv6 TCP, first in the middle
    frames += [mk4(ic, 2, proto=1, ident=3), mk4(ic, 0, proto=1, ident=3)]  # ICMP
    frames += [tcp4(sport=1, dport=2, flags=SYN)[:14 + 20 + 12]]  # TCP header cut short
    frames += [eth(ipv4("10.0.0.1", "10.0.0.2", 17, udp(4000, 53, b"x" * 8)))]  # whole UDP
    return frames


def _ended_by_key(tracker, recs_iter):
    out = {}
    for recs in recs_iter:
        for r in recs:
            if int(r["kind"]) == plo.EV_ENDED:
                k = tuple(int(w) for w in r["key"])
                out[k] = (int(r["init_rev"]), r["pkts"].tolist(), r["bytes"].tolist(),
                          r["payload"].tolist())
    return out


def test_fragment_flows_live_equal_offline(h):
    """XDP test_run over fragments (in order, late first, orphaned, IPv6, ICMP) and a cut-short
    TCP header; ring events and the final map sync through the live engine path give the same
    flows, counts and statistics as the offline parser + engine."""
    from flowscope import FlowTracker
    from flowscope.pcap import parse_bytes
    from flowscope.sensor.rows import rows_from_events, sync_rows

    frames = _fragment_frames()
    for f in frames:
        h.run(f)
    ev = h.events()
    keys, vals = h.flows()
    live = FlowTracker(events="ended")
    got = _ended_by_key(live, [r for r in (live.process(rows_from_events(ev, 0, {})),
                                           live.process(sync_rows(keys, vals, 0)),
                                           live.process_finish()) for r in r])
    off = FlowTracker(events="ended")
    arr = np.concatenate([parse_bytes(f, (i + 1) * 1000, 1) for i, f in enumerate(frames)])
    want = _ended_by_key(off, [r for r in (off.process(arr), off.process_finish()) for r in r])
    assert got == want
    assert len(want) == 4  # one UDP 5-tuple (datagrams 7, 8 and the whole one), IPv6 TCP,
    #                        ICMP, the cut TCP header (ports 0)
    c = h.counters()
    s = off.stats
    assert (c["frag_keyed"], c["truncated_l4"]) == (s.fragments_keyed, s.truncated_l4)
    assert c["frag_held"] - c["frag_resolved"] - c["frag_orphaned"] == s.fragments_orphaned == 1
    assert live.stats.packets_matched == s.packets_matched == len(frames) - 1


# ---------------------------------------------------------------------------
# TCP sequence tracking (tcpperf): the kernel's counts equal the offline engine's


def _lossy_session():
    """A TCP exchange with retransmissions, a hole filled out of order, zero windows and more
    than 16 history letters, ending without FIN (the flow is still open at the end)."""
    c = dict(src="10.0.0.1", sport=4321, dst="10.0.0.2", dport=80)
    s = dict(src="10.0.0.2", sport=80, dst="10.0.0.1", dport=4321)
    ci, si = 0xFFFFFF00, 5000  # the initiator's numbers wrap
    M = 0xFFFFFFFF

    def t4(**kw):
        kw["seq"] &= M
        kw["ack"] = kw.get("ack", 0) & M
        return tcp4(**kw)
    out = [t4(flags=SYN, seq=ci, **c), t4(flags=SYN | ACK, seq=si, ack=ci + 1, **s),
           t4(flags=ACK, seq=ci + 1, ack=si + 1, **c)]
    nxt = ci + 1
    for i in range(30):  # data with a retransmission of every third segment
        out.append(t4(flags=PSH | ACK, seq=nxt, ack=si + 1, payload=b"x" * 100, **c))
        if i % 3 == 0:
            out.append(t4(flags=PSH | ACK, seq=nxt, ack=si + 1, payload=b"x" * 100, **c))
        out.append(t4(flags=ACK, seq=si + 1, ack=nxt + 100, **s))
        nxt += 100
    # a hole: 200 bytes ahead, then the two missing segments out of order
    out.append(t4(flags=PSH | ACK, seq=nxt + 200, ack=si + 1, payload=b"y" * 100, **c))
    out.append(t4(flags=PSH | ACK, seq=nxt, ack=si + 1, payload=b"y" * 100, **c))
    out.append(t4(flags=PSH | ACK, seq=nxt + 100, ack=si + 1, payload=b"y" * 100, **c))
    nxt += 300
    for _ in range(12):  # the responder closes its window
        out.append(t4(flags=ACK, seq=si + 1, ack=nxt, win=0, **s))
    for _ in range(95):  # 100+ retransmissions: T at 1, 10 and 100
        out.append(t4(flags=PSH | ACK, seq=nxt - 100, ack=si + 1, payload=b"y" * 100, **c))
    out.append(t4(flags=PSH | ACK, seq=si + 1, ack=nxt, payload=b"r" * 50, **s))
    return out


def test_seq_events_only_at_zeek_thresholds(h):
    frames = _lossy_session()
    for f in frames:
        h.run(f)
    ev = h.events()
    seq = [e for e in ev if int(e["reason"]) & L.EventReason.SEQ]
    _, vals = h.flows()
    v = vals[0]
    fwd = 0  # 10.0.0.1 is address a: the initiator sends FWD
    assert v["rtx_pkts"].tolist()[fwd] == 10 + 95 and v["ooo_pkts"].tolist()[fwd] == 2
    assert v["rtx_bytes"].tolist()[fwd] == 105 * 100
    assert v["zero_win"].tolist() == [0, 12]
    # T (1, 10, 100 of rtx + ooo) and W (1, 10): five threshold events, nothing else extra
    assert len(seq) == 5
    assert sorted(int(e["rtx_pkts"][0] + e["ooo_pkts"][0]) for e in seq if e["dir"] == 0) == [
        1, 10, 100]
    assert [int(e["zero_win"][1]) for e in seq if e["dir"] == 1] == [1, 10]
    assert len(ev) < len(frames) // 4  # the bulk of the packets only updated the map


def test_seq_tracking_live_equals_offline(h):
    """The lossy exchange through XDP test_run, ring events and a final sync through the live
    engine path: the same loss counts and Zeek history and sizes as offline."""
    from flowscope import FlowTracker
    from flowscope.output.zeek import conn_record
    from flowscope.pcap import parse_bytes
    from flowscope.sensor.rows import rows_from_events, sync_rows

    frames = _lossy_session()
    for f in frames:
        h.run(f)
    ev = h.events()
    keys, vals = h.flows()

    def ended(t, batches):
        return [r for g in batches for b in g for r in b if int(r["kind"]) == plo.EV_ENDED]

    live = FlowTracker(events="ended", zeek=True)
    got = ended(live, [live.process(rows_from_events(ev, 0, {})),
                       live.process(sync_rows(keys, vals, 0)), live.process_finish()])
    off = FlowTracker(events="ended", zeek=True)
    arr = np.concatenate([parse_bytes(f, (i + 1) * 1000, 1) for i, f in enumerate(frames)])
    want = ended(off, [off.process(arr), off.process_finish()])
    assert len(got) == len(want) == 1
    g, w = got[0], want[0]
    for f in ("retrans_pkts", "retrans_bytes", "zero_win", "ooo_pkts", "pkts", "payload"):
        assert g[f].tolist() == w[f].tolist(), f
    assert w["retrans_pkts"].tolist() == [105, 0] and w["ooo_pkts"].tolist() == [2, 0]
    assert (int(g["rtt_resp"]) >= 0, int(g["rtt_init"]) >= 0) == (True, True)
    gz, wz = conn_record(g), conn_record(w)
    for f in ("history", "orig_bytes", "resp_bytes", "conn_state", "orig_ip_bytes",
              "resp_ip_bytes", "missed_bytes"):
        assert gz[f] == wz[f], f
    assert wz["history"] == "ShADTaTwwTd" and wz["orig_bytes"] == 3300 and wz["resp_bytes"] == 50


def test_seq_step_equals_twin_on_random_segments(h):
    """The kernel's fs_seq_step against the plain-Python twin (tests/naive_zeek.py SeqTrack):
    random segments (flags, sequence and ack numbers near a wrapping ISN, payloads, zero
    windows) through XDP test_run, the flow entry's tracking compared after every packet."""
    import random

    from naive_zeek import SeqTrack

    rng = random.Random(20261201)
    c = dict(src="10.0.0.1", sport=5555, dst="10.0.0.2", dport=80)  # a: FWD = side 0 here
    s = dict(src="10.0.0.2", sport=80, dst="10.0.0.1", dport=5555)
    flags = [ACK, PSH | ACK, PSH | ACK, SYN, SYN | ACK, FIN | ACK, FIN, ACK, PSH | ACK]
    seen = {"rtx": 0, "ooo": 0, "zw": 0, "restart": 0}
    for trial in range(6):
        h.reset()
        twin = SeqTrack()
        gen = 0
        isn = rng.choice([0, 2**31 - 5, 2**32 - 300, 1234])
        for i in range(60):
            side = rng.randrange(2)
            fl = rng.choice(flags)
            seq = (isn + rng.randrange(-200, 2000)) % 2**32
            ack = (isn + rng.randrange(-200, 2000)) % 2**32
            n = rng.choice([0, 0, 1, 10, 100])
            win = rng.choice([0, 100, 8192])
            h.run(tcp4(flags=fl, seq=seq, ack=ack, win=win, payload=b"z" * n,
                       **(c if side == 0 else s)))
            _, vals = h.flows()
            v = vals[0]
            if int(v["gen"]) != gen:  # the FIN handshake closed the flow: this packet restarted it
                gen, twin = int(v["gen"]), SeqTrack()
                seen["restart"] += 1
            twin.step(side, fl, seq, ack, n, win)
            seen["rtx"] = max(seen["rtx"], sum(twin.rtx))
            seen["ooo"] = max(seen["ooo"], sum(twin.ooo))
            seen["zw"] = max(seen["zw"], sum(twin.zw))
            where = f"trial {trial} packet {i}"
            assert v["seq_start"].tolist() == twin.start, where
            assert v["seq_high"].tolist() == twin.high, where
            assert v["seq_acked"].tolist() == twin.acked, where
            assert v["rtx_pkts"].tolist() == twin.rtx, where
            assert v["rtx_bytes"].tolist() == twin.rtx_bytes, where
            assert v["ooo_pkts"].tolist() == twin.ooo, where
            assert v["zero_win"].tolist() == twin.zw, where
        h.events()
    assert all(seen.values()), seen  # every rule came up
