"""Link layers beyond Ethernet: the generated captures of tests/data/linktypes/ and header rules.

Each capture (written by scripts/make_linktype_captures.py) carries the same
six packets behind one link layer. For every capture: tshark finds IP in
every frame, flowscope matches every frame with the right 5-tuple, and the
plain-Python twin agrees with the kernel on every frame and on every
truncation of it.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowscope import layout as L
from flowscope._kernels.parse import parse_batch
from flowscope.pcap import SUPPORTED_LINKTYPES, CaptureReader

from naive_parse import FIELDS, naive_parse
from test_parse import check, ipv4, ipv6, tcp, udp

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "linktypes"

_spec = importlib.util.spec_from_file_location("make_linktype_captures",
                                               ROOT / "scripts" / "make_linktype_captures.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

STEMS = sorted(gen.CAPTURES)


def _addr(a: str) -> tuple[int, int]:
    v = int(ipaddress.ip_address(a))
    return v >> 64, v & ((1 << 64) - 1)


# --- the generated captures -------------------------------------------------

@pytest.mark.parametrize("stem", STEMS)
def test_committed_capture_is_what_the_script_writes(stem):
    assert (DATA / f"{stem}.pcap").read_bytes() == gen.pcap_bytes(stem)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize("stem", STEMS)
def test_tshark_finds_ip_in_every_frame(stem):
    res = subprocess.run(
        ["tshark", "-n", "-r", str(DATA / f"{stem}.pcap"), "-T", "fields", "-E", "separator=,",
         "-e", "ip.src", "-e", "ipv6.src", "-e", "ip.dst", "-e", "ipv6.dst"],
        capture_output=True, text=True, check=True)
    got = [tuple(x for x in line.split(",") if x) for line in res.stdout.splitlines()]
    assert got == [(t[2], t[4]) for t in gen.TRAFFIC]


@pytest.mark.parametrize("stem", STEMS)
def test_flowscope_matches_every_frame(stem):
    reader = CaptureReader(DATA / f"{stem}.pcap")
    rows = reader.read_all()
    assert reader.linktypes == {gen.CAPTURES[stem][0]}
    assert len(rows) == len(gen.TRAFFIC)
    for row, (ver, proto, src, sport, dst, dport, flags) in zip(rows, gen.TRAFFIC):
        assert row["error"] == L.PERR_NONE and row["l3"] == ver and row["proto"] == proto
        assert (int(row["src_hi"]), int(row["src_lo"])) == _addr(src)
        assert (int(row["dst_hi"]), int(row["dst_lo"])) == _addr(dst)
        assert (row["sport"], row["dport"]) == (sport, dport)
        if proto == 6:
            assert row["tcp_flags"] == flags and row["payload_len"] == 0
        if proto == 1:
            assert row["pflags"] & L.PF_ICMP and row["icmp_type"] == 8


@pytest.mark.parametrize("stem", STEMS)
def test_twin_agrees_on_every_frame_and_every_truncation(stem):
    """The kernel sees the whole frame in its buffer but only ``cut`` bytes of caplen:
    agreeing with the twin, which gets only those bytes, shows it never reads past caplen."""
    linktype = gen.CAPTURES[stem][0]
    out = np.zeros(1, L.PKT_DTYPE)
    one = np.ones(1, np.int64)
    for frame in gen.frames(stem):
        buf = np.frombuffer(frame, np.uint8).copy()
        for cut in range(len(frame) + 1):
            parse_batch(buf, one * 0, one * cut, one * cut, one * linktype, one * 123, out)
            assert {f: int(out[0][f]) for f in FIELDS} == naive_parse(frame[:cut], 123, linktype)


@settings(max_examples=500, deadline=None)
@given(stem=st.sampled_from(STEMS), k=st.integers(0, len(gen.TRAFFIC) - 1),
       edits=st.lists(st.tuples(st.integers(0, 90), st.integers(0, 255)), max_size=3),
       cut=st.integers(0, 140))
def test_mutated_link_frames_match_twin(stem, k, edits, cut):
    f = bytearray(gen.frames(stem)[k])
    for pos, val in edits:
        if pos < len(f):
            f[pos] = val
    check(bytes(f[:cut]), gen.CAPTURES[stem][0])


def test_new_link_types_open():
    assert {9, 10, 50, 51, 104, 105, 127, 204, 239} <= SUPPORTED_LINKTYPES


# --- header rules ------------------------------------------------------------

TCP4 = ipv4(tcp())
MAC1, MAC2, MAC3, MAC4 = (bytes([2, 0, 0, 0, 0, k]) for k in (1, 2, 3, 4))
SNAP4 = b"\xaa\xaa\x03\0\0\0\x08\x00"


def wlan_hdr(fc0, flags, addr4=b"", qos=b""):
    return bytes([fc0, flags]) + b"\0\0" + MAC1 + MAC2 + MAC3 + b"\0\0" + addr4 + qos


@pytest.mark.parametrize("flags,src,dst", [
    (0x00, MAC2, MAC1), (0x01, MAC2, MAC3), (0x02, MAC3, MAC1), (0x03, MAC4, MAC3),
])
def test_wlan_addresses_by_ds_bits(flags, src, dst):
    r = check(wlan_hdr(0x08, flags, MAC4 if flags == 3 else b"") + SNAP4 + TCP4, 105)
    assert r["l3"] == L.L3_IPV4 and r["pflags"] & L.PF_MAC
    assert r["smac"] == int.from_bytes(src, "big") and r["dmac"] == int.from_bytes(dst, "big")


def test_wlan_qos_ht_control_only_with_order_bit():
    r = check(wlan_hdr(0x88, 0x81, qos=b"\0\0\0\0\0\0") + SNAP4 + TCP4, 105)
    assert r["l3"] == L.L3_IPV4 and r["sport"] == 1234
    r = check(wlan_hdr(0x88, 0x01, qos=b"\0\0") + SNAP4 + TCP4, 105)
    assert r["l3"] == L.L3_IPV4 and r["sport"] == 1234


def test_wlan_frames_without_ip():
    protected = check(wlan_hdr(0x08, 0x41) + SNAP4 + TCP4, 105)
    assert protected["error"] == L.PERR_NOT_IP and protected["l3"] == L.L3_ETHER
    null_data = check(wlan_hdr(0x48, 0x01) + b"\0" * 40, 105)
    assert null_data["error"] == L.PERR_NOT_IP and null_data["l3"] == L.L3_NONE
    beacon = check(wlan_hdr(0x80, 0x00) + b"\0" * 40, 105)
    assert beacon["error"] == L.PERR_NOT_IP and not beacon["pflags"] & L.PF_MAC
    not_snap = check(wlan_hdr(0x08, 0x01) + b"\x42\x42\x03" + b"\0" * 40, 105)
    assert not_snap["error"] == L.PERR_NOT_IP and not_snap["l3"] == L.L3_ETHER


def test_radiotap_length_past_the_frame_is_truncated():
    r = check(struct.pack("<BBHI", 0, 0, 200, 0) + wlan_hdr(0x08, 1) + SNAP4 + TCP4, 127)
    assert r["error"] == L.PERR_TRUNCATED


def test_ppp_protocols():
    assert check(b"\x00\x21" + TCP4, 9)["l3"] == L.L3_IPV4
    assert check(b"\x21" + TCP4, 9)["l3"] == L.L3_IPV4
    assert check(b"\xff\x03\x57" + ipv6(udp(), 17), 9)["l3"] == L.L3_IPV6
    lcp = check(b"\xff\x03\xc0\x21" + b"\x01\x01\x00\x04", 9)
    assert lcp["error"] == L.PERR_NOT_IP and lcp["l3"] == L.L3_NONE
    assert check(b"\xff\x03", 9)["error"] == L.PERR_TRUNCATED
    assert check(b"\x0f\x00\x08\x00" + TCP4, 50)["l3"] == L.L3_IPV4  # Cisco HDLC framing
    assert check(b"\x8f\x00\x80\x35" + b"\0" * 20, 104)["error"] == L.PERR_NOT_IP  # SLARP


def test_pbb_and_fabricpath_inner_macs():
    inner = MAC3 + MAC4 + b"\x08\x00" + TCP4
    pbb = check(MAC1 + MAC2 + b"\x88\xe7\0\0\0\1" + inner, 1)
    cfp = check(MAC1 + MAC2 + b"\x89\x03\0\0" + inner, 1)
    for r in (pbb, cfp):
        assert r["l3"] == L.L3_IPV4 and r["sport"] == 1234
        assert r["dmac"] == int.from_bytes(MAC3, "big") and r["smac"] == int.from_bytes(MAC4, "big")


def test_nested_encapsulations_share_the_layer_bound():
    vntag = b"\x89\x26\0\0\0\0"
    r = check(MAC1 + MAC2 + vntag * 8 + b"\x08\x00" + TCP4, 1)
    assert r["l3"] == L.L3_IPV4
    r = check(MAC1 + MAC2 + vntag * 9 + b"\x08\x00" + TCP4, 1)
    assert r["l3"] == L.L3_ETHER and r["error"] == L.PERR_NOT_IP


def test_8023_llc_other_than_snap_ip_is_not_ip():
    stp = check(MAC1 + MAC2 + b"\x00\x26\x42\x42\x03" + b"\0" * 35, 1)
    assert stp["l3"] == L.L3_ETHER and stp["error"] == L.PERR_NOT_IP
    cdp = check(MAC1 + MAC2 + b"\x01\x00\xaa\xaa\x03\x00\x00\x0c\x20\x00" + b"\0" * 30, 1)
    assert cdp["error"] == L.PERR_NOT_IP
    r = check(MAC1 + MAC2 + b"\x00\x40\xaa\xaa\x03\0\0\0\x08\x00" + TCP4, 1)
    assert r["l3"] == L.L3_IPV4


def _nflog(tlvs, fam=2, version=0):
    return struct.pack("!BBH", fam, version, 0) + tlvs


def test_nflog_tlv_rules():
    pay = struct.pack("<HH", 4 + len(TCP4), 9) + TCP4
    prefix = struct.pack("<HH", 7, 10) + b"ab\0\0"  # length 7, padded to 8
    assert check(_nflog(prefix + pay), 239)["l3"] == L.L3_IPV4
    assert check(_nflog(pay, version=1), 239)["error"] == L.PERR_NOT_IP
    assert check(_nflog(pay, fam=7), 239)["error"] == L.PERR_NOT_IP
    assert check(_nflog(struct.pack("<HH", 2, 10) + pay), 239)["error"] == L.PERR_BAD_HEADER
    assert check(_nflog(struct.pack("<HH", 64, 10) + b"\0" * 8), 239)["error"] == L.PERR_TRUNCATED
    assert check(_nflog(prefix), 239)["error"] == L.PERR_NOT_IP
    big = _nflog(struct.pack(">HH", 7, 10) + b"ab\0\0" + struct.pack(">HH", 24, 9) + TCP4)
    assert check(big, 239)["l3"] == L.L3_IPV4


def test_unknown_link_type_is_counted_not_fatal():
    r = naive_parse(TCP4, 0, 147)
    assert r["error"] == L.PERR_LINKTYPE and check(TCP4, 147)["error"] == L.PERR_LINKTYPE
    assert check(TCP4, 0xFFFF)["error"] == L.PERR_LINKTYPE
