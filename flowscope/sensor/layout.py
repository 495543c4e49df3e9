"""numpy dtypes and IntEnums mirroring ``bpf/fs_shared.h``, nothing else.

``bpf/fs_shared.h`` is the one definition; ``tests/test_bpf_layout.py`` parses
it and checks every name, offset, size and constant below against it, and the
loader refuses to attach when the sizes BCC compiled differ from these dtypes.
Every multi-byte field is in host order (little-endian on the supported
machines); addresses use the ``(hi, lo)`` encoding of ``flowscope.layout``.
"""

from __future__ import annotations

import re
from enum import IntEnum, IntFlag

import numpy as np

from .. import layout as L
from ..events import FlowState

FS_ABI_VERSION = 4
FS_HISTORY_MAX = L.HISTORY_MAX


def _c_name(name: str) -> str:
    """``SynSent`` -> ``SYN_SENT``: the C spelling of a reference name."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


# Enums the C header shares with the engine: built from flowscope.layout's codes, never retyped.
L3 = IntEnum("L3", {"IPV4": L.L3_IPV4, "IPV6": L.L3_IPV6})
L3.__doc__ = "``fs_flow_key.l3`` (``enum fs_l3``)."
TcpFlag = IntFlag("TcpFlag", dict(L.TCP_FLAG_NAMES))
TcpFlag.__doc__ = "TCP flag bits (``enum fs_tcp_flag``)."
TcpState = IntEnum("TcpState", {_c_name(st.name): st.value for st in FlowState
                                if st.value <= L.ST_RESET})
TcpState.__doc__ = "Kernel mirror of the TCP state machine (``enum fs_tcp_state``)."
PktFlag = IntFlag("PktFlag", {"PORTS": L.PF_PORTS, "TCP": L.PF_TCP, "FRAG": L.PF_FRAG,
                              "MORE_FRAGS": L.PF_MORE_FRAGS, "ICMP": L.PF_ICMP})
PktFlag.__doc__ = "``fs_event.pflags`` (``enum fs_pkt_flag``): the kernel's subset of PF_*."


class Dir(IntEnum):
    """Packet orientation relative to its key (``enum fs_dir``)."""

    FWD = 0  # src -> dst equals the key's a -> b
    REV = 1


class Hook(IntEnum):
    """Program that saw a packet (``enum fs_hook``)."""

    XDP = 0
    TC = 1


class EventReason(IntFlag):
    """Why a packet was sent to userspace (``enum fs_event_reason``)."""

    NEW = 0x01
    CTRL = 0x02
    DATA = 0x04
    STATE = 0x08
    SAMPLE = 0x10
    ZEEK = 0x20
    SEQ = 0x40
    # dns
    DNS = 0x80


class DirBit(IntFlag):
    """What a direction has already sent (``fs_flow.dir_bits``, ``enum fs_dir_bit``)."""

    SEEN = 0x01
    ACK = 0x02
    DATA = 0x04
    CLOSE = 0x08


SeqFlag = IntFlag("SeqFlag", {"INIT_FWD": L.SQF_INIT0, "INIT_REV": L.SQF_INIT1,
                              "FIN_FWD": L.SQF_FIN0, "FIN_REV": L.SQF_FIN1,
                              "HOLE_FWD": L.SQF_HOLE0, "HOLE_REV": L.SQF_HOLE1})
SeqFlag.__doc__ = "``fs_flow.seq_flags`` (``enum fs_seq_flag``): ``PKT_DTYPE.sq_flags`` bits."


TunType = IntEnum("TunType", {"IP": L.TUN_IP, "GRE": L.TUN_GRE, "VXLAN": L.TUN_VXLAN,
                              "GENEVE": L.TUN_GENEVE, "GTPV1": L.TUN_GTPV1,
                              "TEREDO": L.TUN_TEREDO, "AYIYA": L.TUN_AYIYA})
TunType.__doc__ = "``fs_event.tun_type`` (``enum fs_tun_type``): ``layout.TUN_*``."


class Counter(IntEnum):
    """Indices of the per-CPU ``fs_counters`` array (``enum fs_counter``)."""

    PACKETS = 0
    TRUNCATED = 1
    NOT_IP = 2
    BAD_HEADER = 3
    MAP_FULL = 4
    RING_FULL = 5
    EVENTS = 6
    FLOWS_NEW = 7
    FLOWS_RESTART = 8
    PULL_FAIL = 9
    INSERT_RACE = 10
    TRUNCATED_L4 = 11
    FRAG_KEYED = 12
    FRAG_HELD = 13
    FRAG_RESOLVED = 14
    FRAG_ORPHANED = 15
    # tunnels
    DECAP = 16
    TUN_LOST = 17
    # dns and drops
    DNS = 24
    DROPS = 25
    DROPS_OTHER = 26
    OTHERHOST = 27
    # flow filter and sampling
    FILTERED = 28
    SAMPLED_OUT = 29


FS_CNT_MAX = 30

FilterBit = IntFlag("FilterBit", {"INC_CIDRS": L.FLT_INC_CIDRS, "EXC_CIDRS": L.FLT_EXC_CIDRS,
                                  "INC_PORTS": L.FLT_INC_PORTS, "EXC_PORTS": L.FLT_EXC_PORTS,
                                  "INC_PROTOS": L.FLT_INC_PROTOS,
                                  "EXC_PROTOS": L.FLT_EXC_PROTOS})
FilterBit.__doc__ = "Lists of the flow filter in force (``enum fs_filter_bit``, ``FS_FILTER``)."


class FilterMark(IntFlag):
    """Values of the ``fs_flt_ports`` / ``fs_flt_protos`` arrays (``enum fs_filter_mark``)."""

    IN = 0x01
    EX = 0x02

#: ``struct fs_flow_key`` (40 bytes).
FLOW_KEY_DTYPE = np.dtype(
    {
        "names": ["a_hi", "a_lo", "b_hi", "b_lo", "port_a", "port_b", "l3", "proto", "vlan"],
        "formats": ["<u8", "<u8", "<u8", "<u8", "<u2", "<u2", "u1", "u1", "<u2"],
        "offsets": [0, 8, 16, 24, 32, 34, 36, 37, 38],
        "itemsize": 40,
    }
)

def _struct(*fields, size: int) -> np.dtype:
    """A dtype with explicit offsets: ``(name, format, offset)`` triples, ``size`` bytes."""
    return np.dtype({"names": [f[0] for f in fields], "formats": [f[1] for f in fields],
                     "offsets": [f[2] for f in fields], "itemsize": size})


U8X2 = ("<u8", (2,))
U4X2 = ("<u4", (2,))
#: tcpperf fields shared by fs_flow and fs_event: (name, format, offset from the block start)
_SEQ = (("seq_start", U4X2, 0), ("seq_high", U4X2, 8), ("seq_acked", U4X2, 16))
_SEQ_COUNTS = (("rtx_pkts", U4X2, 0), ("ooo_pkts", U4X2, 8), ("zero_win", U4X2, 16),
               ("rtx_bytes", U8X2, 24), ("seq_flags", "u1", 40), ("_pad_seq", ("u1", (7,)), 41))


def _at(fields, base):
    return tuple((n, f, base + o) for n, f, o in fields)


#: ``struct fs_flow`` (224 bytes), the flow map value.
FLOW_DTYPE = _struct(
    ("first_ns", "<u8", 0), ("last_ns", "<u8", 8), ("pkts", U8X2, 16), ("bytes", U8X2, 32),
    ("payload", U8X2, 48), ("ip_bytes", U8X2, 64), ("events", "<u8", 80), ("gen", "<u4", 88),
    ("tcp_flags", ("u1", (2,)), 92), ("first_dir", "u1", 94), ("state", "u1", 95),
    ("hist_len", "u1", 96), ("fin_side", "u1", 97), ("dir_bits", ("u1", (2,)), 98),
    ("ev_lost", "u1", 100), ("_pad", ("u1", (3,)), 101),
    # drops
    ("drops", ("<u4", (2,)), 104), ("drop_reason", "<u2", 112), ("drop_votes", "<u2", 114),
    ("_pad2", ("u1", (12,)), 116),
    # tcpperf
    *_at(_SEQ, 128), ("hole_lo", U4X2, 152), ("hole_hi", U4X2, 160), *_at(_SEQ_COUNTS, 168),
    # last-seen tick
    ("last_jif", "<u8", 216),
    # tunnels
    ("tun_parent", "<u8", 224),
    size=232)

#: ``struct fs_event`` (344 bytes), one ring buffer record.
EVENT_DTYPE = _struct(
    ("key", FLOW_KEY_DTYPE, 0), ("ts_ns", "<u8", 40), ("first_ns", "<u8", 48),
    ("pkts", U8X2, 56), ("bytes", U8X2, 72), ("payload", U8X2, 88), ("ip_bytes", U8X2, 104),
    ("seq", "<u4", 120), ("ack", "<u4", 124), ("frame_len", "<u4", 128),
    ("payload_len", "<u4", 132), ("gen", "<u4", 136), ("ifindex", "<u4", 140),
    ("ip_len", "<u4", 144), ("window", "<u2", 148), ("dir", "u1", 150),
    ("tcp_flags", "u1", 151), ("reason", "u1", 152), ("first_dir", "u1", 153),
    ("state", "u1", 154), ("hist_len", "u1", 155), ("hook", "u1", 156), ("pflags", "u1", 157),
    ("icmp_type", "u1", 158), ("icmp_code", "u1", 159), ("flags_or", ("u1", (2,)), 160),
    ("_pad", ("u1", (22,)), 162), *_at(_SEQ, 184), *_at(_SEQ_COUNTS, 208),
    # context
    ("smac", "<u8", 256), ("dmac", "<u8", 264), ("vlan", ("<u2", (2,)), 272),
    ("nvlan", "u1", 276), ("_pad3", ("u1", (3,)), 277),
    # drops
    ("drops", ("<u4", (2,)), 280), ("drop_reason", "<u2", 288), ("_pad2", ("u1", (6,)), 290),
    # tunnels
    ("tun_parent", FLOW_KEY_DTYPE, 296), ("tun_key", "<u4", 336), ("tun_type", "u1", 340),
    ("tun_depth", "u1", 341), ("tun_ether", "u1", 342), ("_pad_tun", "u1", 343),
    size=344)

#: ``struct fs_cidr_key`` (24 bytes), the key of the flow filter's CIDR tries.
CIDR_KEY_DTYPE = _struct(("prefixlen", "<u4", 0), ("l3", "u1", 4), ("addr", ("u1", (16,)), 5),
                         ("_pad", ("u1", (3,)), 21), size=24)

#: dns: bytes of the L4 payload a FS_EVR_DNS record carries.
FS_DNS_BYTES = 296
_EV = EVENT_DTYPE.itemsize
#: ``struct fs_dns_event`` (648 bytes): a ring record with FS_EVR_DNS.
DNS_EVENT_DTYPE = _struct(
    ("ev", EVENT_DTYPE, 0), ("dns_len", "<u2", _EV), ("_pad", ("u1", (6,)), _EV + 2),
    ("dns", ("u1", (FS_DNS_BYTES,)), _EV + 8), size=_EV + 8 + FS_DNS_BYTES)

#: C struct name -> dtype, for the header and loader checks.
#: What userspace drains ring records into: ``EVENT_DTYPE``'s fields, then the
#: ``fs_dns_event`` tail (``dns_len``, ``dns``) at the same offsets; a bare fs_event record
#: leaves the tail zero.
RECORD_DTYPE = _struct(*((n, f[0], f[1]) for n, f in EVENT_DTYPE.fields.items()),
                       ("dns_len", "<u2", _EV), ("_pad_dns", ("u1", (6,)), _EV + 2),
                       ("dns", ("u1", (FS_DNS_BYTES,)), _EV + 8), size=DNS_EVENT_DTYPE.itemsize)

#: drops: key of fs_drop_counts.
DROP_KEY_DTYPE = _struct(("ifindex", "<u4", 0), ("reason", "<u4", 4), size=8)

STRUCTS = {
    "fs_flow_key": FLOW_KEY_DTYPE,
    "fs_flow": FLOW_DTYPE,
    "fs_event": EVENT_DTYPE,
    "fs_cidr_key": CIDR_KEY_DTYPE,
    "fs_dns_event": DNS_EVENT_DTYPE,
    "fs_drop_key": DROP_KEY_DTYPE,
}

#: C enum name -> IntEnum, for the header check.
ENUMS = {
    "fs_l3": L3,
    "fs_dir": Dir,
    "fs_hook": Hook,
    "fs_tcp_flag": TcpFlag,
    "fs_tcp_state": TcpState,
    "fs_pkt_flag": PktFlag,
    "fs_event_reason": EventReason,
    "fs_dir_bit": DirBit,
    "fs_seq_flag": SeqFlag,
    "fs_counter": Counter,
    "fs_filter_bit": FilterBit,
    "fs_filter_mark": FilterMark,
    "fs_tun_type": TunType,
}

#: C enum name -> the prefix its members carry in fs_shared.h.
ENUM_PREFIX = {
    "fs_l3": "FS_L3_",
    "fs_dir": "FS_DIR_",
    "fs_hook": "FS_HOOK_",
    "fs_tcp_flag": "FS_TH_",
    "fs_tcp_state": "FS_ST_",
    "fs_pkt_flag": "FS_PF_",
    "fs_event_reason": "FS_EVR_",
    "fs_dir_bit": "FS_DB_",
    "fs_seq_flag": "FS_SQ_",
    "fs_counter": "FS_CNT_",
    "fs_filter_bit": "FS_FLT_",
    "fs_filter_mark": "FS_FLT_",
    "fs_tun_type": "FS_TUN_",
}

#: ``#define`` constants of fs_shared.h.
DEFINES = {"FS_ABI_VERSION": FS_ABI_VERSION, "FS_HISTORY_MAX": FS_HISTORY_MAX,
           "FS_HASH_M1": L.HASH_M1, "FS_HASH_M2": L.HASH_M2, "FS_SAMPLE_SEED": L.SAMPLE_SEED,
           "FS_META_VLAN_LO_SHIFT": L.META_VLAN_LO_SHIFT,
           "FS_META_VLAN_HI_SHIFT": L.META_VLAN_HI_SHIFT, "FS_DNS_BYTES": FS_DNS_BYTES}
