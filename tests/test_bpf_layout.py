"""bpf/fs_shared.h against its Python mirror flowscope/sensor/layout.py (no root needed).

A small C parser reads the header's structs (natural C alignment, as clang lays them out for
BPF and x86-64), enums and #defines; every name, offset, size and constant must match the
dtypes and IntEnums, and every struct must spell out its padding (no implicit holes). A
golden-bytes test decodes a hand-annotated ring record.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest

from flowscope.sensor import layout

HEADER = Path(__file__).resolve().parents[1] / "bpf" / "fs_shared.h"

_C_TYPES = {"__u8": 1, "__u16": 2, "__u32": 4, "__u64": 8, "__s8": 1, "__s16": 2, "__s32": 4,
            "__s64": 8}
_C_NP = {"__u8": "u1", "__u16": "<u2", "__u32": "<u4", "__u64": "<u8"}


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def parse_header(text: str):
    """Return (structs, enums, defines) of a C header restricted to fs_shared.h's subset.

    structs: name -> {"size", "align", "fields": [(name, offset, size, ctype, count)]}.
    """
    src = _strip_comments(text)
    defines = {}
    for m in re.finditer(r"^\s*#define\s+(\w+)\s+(\S+)\s*$", src, flags=re.M):
        try:
            defines[m.group(1)] = int(m.group(2), 0)
        except ValueError:
            pass
    enums = {}
    for m in re.finditer(r"enum\s+(\w+)\s*\{(.*?)\}\s*;", src, flags=re.S):
        members = {}
        nxt = 0
        for item in m.group(2).split(","):
            item = item.strip()
            if not item:
                continue
            if "=" in item:
                name, val = (s.strip() for s in item.split("=", 1))
                nxt = int(val, 0)
            else:
                name = item
            members[name] = nxt
            nxt += 1
        enums[m.group(1)] = members
    structs = {}
    for m in re.finditer(r"struct\s+(\w+)\s*\{(.*?)\}\s*;", src, flags=re.S):
        off = 0
        align = 1
        fields = []
        for decl in m.group(2).split(";"):
            decl = " ".join(decl.split())
            if not decl:
                continue
            fm = re.fullmatch(r"(struct\s+\w+|\w+)\s+(\w+)(?:\[(\d+)\])?", decl)
            assert fm, f"cannot parse field {decl!r} of struct {m.group(1)}"
            ctype, name, count = fm.group(1), fm.group(2), int(fm.group(3) or 1)
            if ctype.startswith("struct "):
                sub = structs[ctype.split()[1]]
                esize, ealign = sub["size"], sub["align"]
            else:
                esize = ealign = _C_TYPES[ctype]
            if off % ealign:
                raise AssertionError(f"{m.group(1)}.{name}: implicit padding before field")
            fields.append((name, off, esize * count, ctype, count))
            off += esize * count
            align = max(align, ealign)
        if off % align:
            raise AssertionError(f"struct {m.group(1)}: implicit tail padding")
        structs[m.group(1)] = {"size": off, "align": align, "fields": fields}
    return structs, enums, defines


@pytest.fixture(scope="module")
def header():
    return parse_header(HEADER.read_text())


@pytest.mark.parametrize("cname", sorted(layout.STRUCTS))
def test_struct_matches_dtype(header, cname):
    structs, _, _ = header
    st = structs[cname]
    dt = layout.STRUCTS[cname]
    assert st["size"] == dt.itemsize
    assert [f[0] for f in st["fields"]] == list(dt.names)
    for name, off, size, ctype, count in st["fields"]:
        sub, doff = dt.fields[name][:2]
        assert doff == off, f"{cname}.{name} offset"
        assert sub.itemsize == size, f"{cname}.{name} size"
        if ctype in _C_NP:
            base = sub.subdtype[0] if sub.subdtype else sub
            assert base == np.dtype(_C_NP[ctype]), f"{cname}.{name} type"
            assert (sub.shape[0] if sub.shape else 1) == count, f"{cname}.{name} count"


def test_structs_are_8_byte_multiples(header):
    # Ring records are 8-byte aligned and map values are copied in 8-byte words.
    for cname in layout.STRUCTS:
        assert header[0][cname]["size"] % 8 == 0


@pytest.mark.parametrize("ename", sorted(layout.ENUMS))
def test_enum_matches(header, ename):
    _, enums, _ = header
    prefix = layout.ENUM_PREFIX[ename]
    c = {k[len(prefix):]: v for k, v in enums[ename].items() if k != "FS_CNT_MAX"}
    py = {m.name: int(m.value) for m in layout.ENUMS[ename]}
    assert c == py


def test_every_header_enum_has_a_mirror(header):
    _, enums, _ = header
    assert set(enums) == set(layout.ENUMS)


def test_shared_codes_come_from_the_engine_layout(header):
    """Codes the header shares with the engine have the engine's values on both sides."""
    from flowscope import layout as E
    from flowscope.events import FlowState

    _, enums, defines = header
    assert {k: v for k, v in enums["fs_tcp_flag"].items()} == {
        f"FS_TH_{n}": bit for n, bit in E.TCP_FLAG_NAMES}
    assert enums["fs_l3"] == {"FS_L3_IPV4": E.L3_IPV4, "FS_L3_IPV6": E.L3_IPV6}
    assert enums["fs_pkt_flag"] == {"FS_PF_PORTS": E.PF_PORTS, "FS_PF_TCP": E.PF_TCP,
                                    "FS_PF_FRAG": E.PF_FRAG, "FS_PF_MORE_FRAGS": E.PF_MORE_FRAGS,
                                    "FS_PF_ICMP": E.PF_ICMP}
    states = {v: k for k, v in enums["fs_tcp_state"].items()}
    assert len(states) == E.ST_RESET + 1
    for code, cname in states.items():
        assert cname.replace("_", "") == "FS" + "ST" + FlowState(code).name.upper()
    assert defines["FS_HISTORY_MAX"] == E.HISTORY_MAX
    assert enums["fs_filter_bit"] == {f"FS_FLT_{n}": getattr(E, f"FLT_{n}") for n in (
        "INC_CIDRS", "EXC_CIDRS", "INC_PORTS", "EXC_PORTS", "INC_PROTOS", "EXC_PROTOS")}
    assert (defines["FS_HASH_M1"], defines["FS_HASH_M2"], defines["FS_SAMPLE_SEED"]) == (
        E.HASH_M1, E.HASH_M2, E.SAMPLE_SEED)


def test_counter_max_and_defines(header):
    _, enums, defines = header
    # indices are reserved per feature, so the enum may have gaps below its maximum
    assert enums["fs_counter"]["FS_CNT_MAX"] == layout.FS_CNT_MAX == max(layout.Counter) + 1
    for name, value in layout.DEFINES.items():
        assert defines[name] == value


def test_parser_rejects_implicit_padding():
    with pytest.raises(AssertionError, match="implicit padding"):
        parse_header("struct x { __u8 a; __u32 b; };")
    with pytest.raises(AssertionError, match="tail padding"):
        parse_header("struct x { __u64 a; __u8 b; };")


def _golden_event() -> bytes:
    """One fs_event, byte by byte as the kernel writes it on a little-endian host."""
    b = b""
    # key: 10.0.0.1:1234 (a) <-> 10.0.0.2:80 (b), IPv4, TCP
    b += bytes.fromhex("0000000000000000")  # 0   a_hi = 0
    b += bytes.fromhex("0100000a00000000")  # 8   a_lo = 0x0a000001 (10.0.0.1), LE
    b += bytes.fromhex("0000000000000000")  # 16  b_hi
    b += bytes.fromhex("0200000a00000000")  # 24  b_lo = 10.0.0.2
    b += bytes.fromhex("d204")  # 32  port_a = 1234
    b += bytes.fromhex("5000")  # 34  port_b = 80
    b += bytes.fromhex("04")  # 36  l3 = IPv4
    b += bytes.fromhex("06")  # 37  proto = TCP
    b += bytes.fromhex("0000")  # 38  vlan = 0 (key_vlan off)
    b += bytes.fromhex("0807060504030201")  # 40  ts_ns = 0x0102030405060708
    b += bytes.fromhex("0007060504030201")  # 48  first_ns = 0x0102030405060700
    b += bytes.fromhex("0300000000000000")  # 56  pkts[0] = 3
    b += bytes.fromhex("0200000000000000")  # 64  pkts[1] = 2
    b += bytes.fromhex("b400000000000000")  # 72  bytes[0] = 180
    b += bytes.fromhex("7800000000000000")  # 80  bytes[1] = 120
    b += bytes.fromhex("0a00000000000000")  # 88  payload[0] = 10
    b += bytes.fromhex("0000000000000000")  # 96  payload[1] = 0
    b += bytes.fromhex("8a00000000000000")  # 104 ip_bytes[0] = 138
    b += bytes.fromhex("5000000000000000")  # 112 ip_bytes[1] = 80
    b += bytes.fromhex("78563412")  # 120 seq = 0x12345678
    b += bytes.fromhex("01000000")  # 124 ack = 1
    b += bytes.fromhex("3c000000")  # 128 frame_len = 60
    b += bytes.fromhex("0a000000")  # 132 payload_len = 10
    b += bytes.fromhex("07000000")  # 136 gen = 7
    b += bytes.fromhex("02000000")  # 140 ifindex = 2
    b += bytes.fromhex("32000000")  # 144 ip_len = 50
    b += bytes.fromhex("ffff")  # 148 window = 65535
    b += bytes.fromhex("01")  # 150 dir = REV
    b += bytes.fromhex("18")  # 151 tcp_flags = PSH|ACK
    b += bytes.fromhex("25")  # 152 reason = NEW|DATA|ZEEK
    b += bytes.fromhex("00")  # 153 first_dir = FWD
    b += bytes.fromhex("03")  # 154 state = Established
    b += bytes.fromhex("04")  # 155 hist_len = 4
    b += bytes.fromhex("01")  # 156 hook = TC
    b += bytes.fromhex("03")  # 157 pflags = PORTS|TCP
    b += bytes.fromhex("00")  # 158 icmp_type
    b += bytes.fromhex("00")  # 159 icmp_code
    b += bytes.fromhex("1b")  # 160 flags_or[0] = FIN|SYN|PSH|ACK
    b += bytes.fromhex("12")  # 161 flags_or[1] = SYN|ACK
    b += bytes(22)  # 162 padding
    # tcpperf
    b += bytes.fromhex("7756341200000000")  # 184 seq_start = [0x12345677, 0]
    b += bytes.fromhex("8256341201000000")  # 192 seq_high = [0x12345682, 1]
    b += bytes.fromhex("0000000002000000")  # 200 seq_acked = [0, 2]
    b += bytes.fromhex("0500000000000000")  # 208 rtx_pkts = [5, 0]
    b += bytes.fromhex("0100000000000000")  # 216 ooo_pkts = [1, 0]
    b += bytes.fromhex("000000000a000000")  # 224 zero_win = [0, 10]
    b += bytes.fromhex("dc05000000000000")  # 232 rtx_bytes[0] = 1500
    b += bytes.fromhex("0000000000000000")  # 240 rtx_bytes[1] = 0
    b += bytes.fromhex("07")  # 248 seq_flags = INIT_FWD|INIT_REV|FIN_FWD
    b += bytes(7)  # 249 padding
    # context
    b += bytes.fromhex("0100000000020000")  # 256 smac = 02:00:00:00:00:01
    b += bytes.fromhex("0200000000020000")  # 264 dmac = 02:00:00:00:00:02
    b += bytes.fromhex("0a00")  # 272 vlan[0] = 10 (outer)
    b += bytes.fromhex("1400")  # 274 vlan[1] = 20
    b += bytes.fromhex("02")  # 276 nvlan = 2
    b += bytes(3)  # 277 padding
    # drops
    b += bytes.fromhex("0500000000000000")  # 280 drops = [5, 0]
    b += bytes.fromhex("0200")  # 288 drop_reason = 2
    b += bytes(6)  # 290 padding
    # tunnels: the parent key (40 bytes, as fs_flow_key), the encapsulation
    b += bytes.fromhex("0000000000000000")  # 296 tun_parent.a_hi
    b += bytes.fromhex("0100000a00000000")  # 304 tun_parent.a_lo = 10.0.0.1
    b += bytes.fromhex("0000000000000000")  # 312 tun_parent.b_hi
    b += bytes.fromhex("0900000a00000000")  # 320 tun_parent.b_lo = 10.0.0.9
    b += bytes.fromhex("409cb512")  # 328 tun_parent.port_a = 40000, port_b = 4789
    b += bytes.fromhex("04110000")  # 332 tun_parent.l3 = 4, proto = 17 (UDP), vlan = 0
    b += bytes.fromhex("2a000000")  # 336 tun_key = 42 (VNI)
    b += bytes.fromhex("03")  # 340 tun_type = VXLAN
    b += bytes.fromhex("01")  # 341 tun_depth = 1
    b += bytes.fromhex("01")  # 342 tun_ether = 1
    b += bytes(1)  # 343 padding
    return b


def test_golden_event_decode():
    raw = _golden_event()
    assert len(raw) == layout.EVENT_DTYPE.itemsize
    e = np.frombuffer(raw, dtype=layout.EVENT_DTYPE)[0]
    k = e["key"]
    assert (int(k["a_hi"]), int(k["a_lo"]), int(k["b_hi"]), int(k["b_lo"])) == (
        0, 0x0A000001, 0, 0x0A000002)
    assert (int(k["port_a"]), int(k["port_b"]), int(k["l3"]), int(k["proto"])) == (
        1234, 80, layout.L3.IPV4, 6)
    assert int(e["ts_ns"]) == 0x0102030405060708
    assert int(e["first_ns"]) == 0x0102030405060700
    assert e["pkts"].tolist() == [3, 2]
    assert e["bytes"].tolist() == [180, 120]
    assert e["payload"].tolist() == [10, 0]
    assert e["ip_bytes"].tolist() == [138, 80]
    assert (int(e["seq"]), int(e["ack"]), int(e["frame_len"]), int(e["payload_len"])) == (
        0x12345678, 1, 60, 10)
    assert (int(e["gen"]), int(e["ifindex"]), int(e["ip_len"]), int(e["window"])) == (
        7, 2, 50, 65535)
    assert int(e["dir"]) == layout.Dir.REV
    assert layout.TcpFlag(int(e["tcp_flags"])) == layout.TcpFlag.PSH | layout.TcpFlag.ACK
    assert layout.EventReason(int(e["reason"])) == (
        layout.EventReason.NEW | layout.EventReason.DATA | layout.EventReason.ZEEK)
    assert int(e["state"]) == layout.TcpState.ESTABLISHED
    assert int(e["hist_len"]) == 4
    assert int(e["hook"]) == layout.Hook.TC
    assert layout.PktFlag(int(e["pflags"])) == layout.PktFlag.PORTS | layout.PktFlag.TCP
    assert e["flags_or"].tolist() == [0x1B, 0x12]
    assert e["_pad"].tolist() == [0] * 22
    assert (int(e["smac"]), int(e["dmac"])) == (0x020000000001, 0x020000000002)
    assert e["vlan"].tolist() == [10, 20] and int(e["nvlan"]) == 2
    assert e["seq_start"].tolist() == [0x12345677, 0]
    assert e["seq_high"].tolist() == [0x12345682, 1]
    assert e["seq_acked"].tolist() == [0, 2]
    assert (e["rtx_pkts"].tolist(), e["ooo_pkts"].tolist(), e["zero_win"].tolist()) == (
        [5, 0], [1, 0], [0, 10])
    assert e["rtx_bytes"].tolist() == [1500, 0]
    assert layout.SeqFlag(int(e["seq_flags"])) == (
        layout.SeqFlag.INIT_FWD | layout.SeqFlag.INIT_REV | layout.SeqFlag.FIN_FWD)
    assert e["_pad_seq"].tolist() == [0] * 7
    assert e["drops"].tolist() == [5, 0] and int(e["drop_reason"]) == 2
    p = e["tun_parent"]
    assert (int(p["a_lo"]), int(p["b_lo"]), int(p["port_a"]), int(p["port_b"])) == (
        0x0A000001, 0x0A000009, 40000, 4789)
    assert (int(p["l3"]), int(p["proto"]), int(p["vlan"])) == (layout.L3.IPV4, 17, 0)
    assert (int(e["tun_key"]), int(e["tun_depth"]), int(e["tun_ether"])) == (42, 1, 1)
    assert layout.TunType(int(e["tun_type"])) == layout.TunType.VXLAN


def test_key_words_match_engine_meta():
    # The key's words are the userspace engine's key: a_hi, a_lo, b_hi, b_lo and
    # meta = l3 << 48 | proto << 32 | port_a << 16 | port_b, for the same address encoding.
    k = np.zeros(1, dtype=layout.FLOW_KEY_DTYPE)[0]
    k["a_lo"], k["b_lo"], k["port_a"], k["port_b"], k["l3"], k["proto"] = (
        0x0A000001, 0x0A000002, 1234, 80, 4, 6)
    from flowscope import layout as E

    meta = (int(k["l3"]) << E.META_L3_SHIFT) | (int(k["proto"]) << E.META_PROTO_SHIFT) | (
        int(k["port_a"]) << E.META_PORT_A_SHIFT) | int(k["port_b"])
    assert E.unpack_meta(meta) == (E.EXTRACT_FIVE_TUPLE, 4, 6, 1234, 80)
    assert struct.unpack_from("<QQQQHHBB", bytes(np.array(k).tobytes()))[:8] == (
        0, 0x0A000001, 0, 0x0A000002, 1234, 80, 4, 6)
