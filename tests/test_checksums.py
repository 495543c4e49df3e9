"""Checksum verification (``verify_checksums``): the csum kernel against its twin, the
bad-checksum counter and Zeek's scaled ``C``/``c`` history letters; off by default."""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowscope import FlowTracker, TrackerConfig, layout
from flowscope._kernels import engine as K
from flowscope._kernels import tcpseq as T
from flowscope._kernels import zeek as Z
from flowscope.config import ConfigError
from flowscope.output.zeek import conn_record
from flowscope.pcap import CaptureReader, parse_bytes
from naive_csum import naive_csum, ones_sum
from naive_parse import FIELDS
from naive_zeek import ZeekConn
from test_zeek_twin import seq_row

MAC = bytes(12)


def _fix_ip(ip: bytes) -> bytes:
    ihl = (ip[0] & 15) * 4
    h = ip[:10] + b"\0\0" + ip[12:ihl]
    return h[:10] + struct.pack("!H", ~ones_sum(h) & 0xFFFF) + ip[12:]


def ip4(proto, l4, src=b"\x0a\0\0\x01", dst=b"\x0a\0\0\x02", frag=0):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, frag, 64, proto, 0, src, dst)
    return _fix_ip(h + l4)


def l4_sum(proto, l4, src=b"\x0a\0\0\x01", dst=b"\x0a\0\0\x02", v6=False):
    if proto == 1:
        pseudo = b""
    elif v6:
        pseudo = src + dst + struct.pack("!IxxxB", len(l4), proto)
    else:
        pseudo = src + dst + struct.pack("!BBH", 0, proto, len(l4))
    return ~ones_sum(pseudo + l4) & 0xFFFF


def tcp_seg(flags=0x18, payload=b"data", sport=1234, dport=80, good=True, **kw):
    t = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, flags, 512, 0, 0) + payload
    c = l4_sum(6, t, **kw) ^ (0 if good else 0x5A5A)
    return t[:16] + struct.pack("!H", c) + t[18:]


def udp_dgram(payload=b"abcd", good=True, zero=False, rev=False, **kw):
    sp, dp = (53, 5353) if rev else (5353, 53)
    u = struct.pack("!HHHH", sp, dp, 8 + len(payload), 0) + payload
    if zero:
        return u
    c = l4_sum(17, u, **kw) ^ (0 if good else 0x0101)
    return u[:6] + struct.pack("!H", c or 0xFFFF) + u[8:]


def eth4(ipkt):
    return MAC + b"\x08\x00" + ipkt


def eth6(nh, l4, src=bytes(15) + b"\1", dst=bytes(15) + b"\2"):
    return MAC + b"\x86\xdd" + struct.pack("!IHBB16s16s", 6 << 28, len(l4), nh, 64, src, dst) + l4


def row_of(frame):
    r = parse_bytes(frame, 0, 1, verify_checksums=True)[0]
    return {f: int(r[f]) for f in FIELDS if r[f].shape == ()}


def check(frame):
    r = row_of(frame)
    assert r["csum"] == naive_csum(frame, r)
    return r["csum"]


def test_good_and_bad_checksums():
    assert check(eth4(ip4(6, tcp_seg()))) == 0
    assert check(eth4(ip4(6, tcp_seg(good=False)))) == layout.CSUM_L4_BAD
    assert check(eth4(ip4(17, udp_dgram()))) == 0
    assert check(eth4(ip4(17, udp_dgram(good=False)))) == layout.CSUM_L4_BAD
    assert check(eth4(ip4(17, udp_dgram(zero=True)))) == 0  # IPv4 UDP: 0 = no checksum
    bad_ip = bytearray(eth4(ip4(6, tcp_seg())))
    bad_ip[14 + 10] ^= 0xFF
    assert check(bytes(bad_ip)) == layout.CSUM_IP_BAD
    icmp = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"ping"
    icmp = icmp[:2] + struct.pack("!H", l4_sum(1, icmp)) + icmp[4:]
    assert check(eth4(ip4(1, icmp))) == 0
    assert check(eth4(ip4(1, icmp[:2] + b"\0\1" + icmp[4:]))) == layout.CSUM_L4_BAD
    s6, d6 = bytes(15) + b"\1", bytes(15) + b"\2"
    t6 = tcp_seg(src=s6, dst=d6, v6=True)
    assert check(eth6(6, t6)) == 0
    assert check(eth6(6, tcp_seg(src=s6, dst=d6, v6=True, good=False))) == layout.CSUM_L4_BAD
    # IPv6 UDP with checksum 0 is bad (the checksum is mandatory)
    assert check(eth6(17, udp_dgram(zero=True))) == layout.CSUM_L4_BAD


def test_segments_not_wholly_captured_and_fragments_are_not_checked():
    f = eth4(ip4(6, tcp_seg(good=False, payload=b"x" * 40)))
    assert check(f[:-10]) == 0  # snaplen cut: the segment is not all there
    assert check(eth4(ip4(17, udp_dgram(good=False), frag=0x2000))) == 0  # first fragment


def test_off_by_default():
    f = eth4(ip4(6, tcp_seg(good=False)))
    assert int(parse_bytes(f, 0, 1)[0]["csum"]) == 0


frames = st.builds(
    lambda kind, good, payload, cut: (eth4(ip4(6, tcp_seg(good=good, payload=payload)))
                                      if kind == 0 else
                                      eth4(ip4(17, udp_dgram(payload, good=good)))
                                      if kind == 1 else
                                      eth6(6, tcp_seg(good=good, payload=payload, v6=True,
                                                      src=bytes(15) + b"\1",
                                                      dst=bytes(15) + b"\2")))[:cut or None],
    kind=st.integers(0, 2), good=st.booleans(), payload=st.binary(max_size=41),
    cut=st.integers(0, 120))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames, st.integers(0, 130), st.integers(0, 255))
def test_kernel_equals_twin_on_mutated_frames(frame, pos, val):
    f = bytearray(frame)
    if pos < len(f):
        f[pos] = val
    check(bytes(f))


# ---- the tracker: counter and Zeek letters ------------------------------------------


def _rows(n_bad_orig, n_bad_resp):
    """A UDP flow: one good packet each way, then bad-checksum packets each way."""
    good_o = eth4(ip4(17, udp_dgram()))
    a, b = b"\x0a\0\0\x01", b"\x0a\0\0\x02"
    good_r = eth4(ip4(17, udp_dgram(rev=True, src=b, dst=a), src=b, dst=a))
    bad_o = eth4(ip4(17, udp_dgram(good=False)))
    bad_r = eth4(ip4(17, udp_dgram(good=False, rev=True, src=b, dst=a), src=b, dst=a))
    frames = [good_o, good_r] + [bad_o] * n_bad_orig + [bad_r] * n_bad_resp
    return np.concatenate([parse_bytes(f, (i + 1) * 1000, 1, verify_checksums=True)
                           for i, f in enumerate(frames)])


def _zeek_conn(rows, verify):
    t = FlowTracker(events="ended", zeek=True, config=TrackerConfig(verify_checksums=verify))
    recs = [r for batch in (t.process(rows), t.process_finish()) for rs in batch
            for r in rs.copy()]
    (c,) = [conn_record(r) for r in recs if int(r["kind"]) == layout.EV_ENDED]
    return t, c


def test_scaled_c_letters_per_direction():
    t, c = _zeek_conn(_rows(12, 1), True)
    # udp 10.0.0.2:53 is a likely server port: 10.0.0.1:5353 -> 53 is the originator
    assert c["history"] == "DdCCc"
    assert t.stats.bad_checksums == 13
    assert c["orig_pkts"] + c["resp_pkts"] == 15  # flowscope counts them (see zeek-compat.md)


def test_hundredth_bad_packet_adds_a_third_letter():
    t, c = _zeek_conn(_rows(100, 0), True)
    assert c["history"] == "DdCCC"


def test_without_verification_no_letters():
    t, c = _zeek_conn(_rows(12, 1), False)
    assert c["history"] == "Dd" and t.stats.bad_checksums == 0


def test_bad_ip_header_gives_no_letter_but_counts():
    f = bytearray(eth4(ip4(17, udp_dgram())))
    f[14 + 10] ^= 0x55
    rows = parse_bytes(bytes(f), 1000, 1, verify_checksums=True)
    t, c = _zeek_conn(rows, True)
    assert t.stats.bad_checksums == 1 and "C" not in (c["history"] or "")


def test_live_refuses_verify_checksums():
    import pytest

    from flowscope.config import Config
    from flowscope.sensor.settings import live_settings

    # live has no --verify-checksums flag: the message names the config key
    with pytest.raises(ConfigError, match="verify_checksums"):
        live_settings(Config(tracker=TrackerConfig(verify_checksums=True)))


def test_reader_flag_on_a_capture_with_bad_ip_checksums():
    bits = np.concatenate([b["csum"] for b in CaptureReader(
        "/work/shared/pcaps/sanders__ip_frag_source.pcapng", verify_checksums=True)])
    if len(bits):
        assert int((bits & layout.CSUM_IP_BAD != 0).sum()) == 3


# ---- the Zeek kernel's bad-checksum step against its twin ----------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 1), st.sampled_from([0, 0, 1, 2, 3]),
                          st.sampled_from([6, 17])), min_size=1, max_size=40))
def test_zeek_bad_checksum_equals_twin(seq):
    proto = seq[0][2]
    arr = np.zeros(len(seq), dtype=layout.PKT_DTYPE)
    for i, (side, bits, _p) in enumerate(seq):
        r = arr[i]
        r["ts"] = i + 1
        r["l3"], r["proto"] = 4, proto
        r["src_lo"], r["dst_lo"] = (1, 2) if side == 0 else (2, 1)
        r["sport"], r["dport"] = (40000, 53) if side == 0 else (53, 40000)
        r["pflags"] = layout.PF_PORTS | (layout.PF_TCP if proto == 6 else 0)
        r["tcp_flags"] = 0x10
        r["ip_len"], r["payload_len"] = 40, 0
        r["csum"] = bits
    fz = np.zeros((1, Z.ZEEK_WORDS), dtype=np.int64)
    fzh = np.zeros((1, Z.ZEEK_HISTORY_MAX), dtype=np.uint8)
    fint = np.zeros((1, K.F_SIZE), dtype=np.int64)
    T.seq_reset(fint, 0)
    twin = ZeekConn()
    for i, (side, bits, _p) in enumerate(seq):
        d = {f: int(arr[i][f]) for f in FIELDS if arr[i][f].shape == ()}
        if bits:
            Z.zeek_bad_checksum(fz, fzh, 0, side, arr, i)
            twin.bad_checksum(d, side)
        else:
            seq_row(fint, arr, i, side)
            Z.zeek_packet(fz, fzh, 0, side, arr, i, fint)
            twin.packet(d, side)
        w, h = twin.pack()
        assert [int(x) for x in fz[0]] == w
        assert bytes(fzh[0, :int(fz[0, Z.Z_HLEN])]) == h


def test_cli_flag_gives_c_letters(capsys, tmp_path):
    from flowscope.cli import main

    pcap = "/work/shared/pcaps/ndpi__http_ipv6.pcap"
    import os

    if not os.path.exists(pcap):
        import pytest

        pytest.skip("shared captures not here")
    hist = []
    for flags in ([], ["--verify-checksums"]):
        assert main(["pcap", "--format", "zeek-json", "--no-progress", *flags, pcap]) == 0
        import json

        hist.append("".join(json.loads(line).get("history", "")
                            for line in capsys.readouterr().out.splitlines() if line.strip()))
    assert "C" not in hist[0].upper() and "c" in hist[1].lower()
