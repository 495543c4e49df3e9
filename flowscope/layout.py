"""Record layouts shared by the parsers, the numba engine and the writers.

Packets travel through flowscope as numpy structured arrays of ``PKT_DTYPE``
(one row per parsed frame) and the engine reports what happened as rows of
``EVENT_DTYPE``. Nothing else lives here: numpy dtypes and the integer codes
used inside them. The kernel <-> userspace records of the live sensor are
defined once in ``bpf/fs_shared.h``; their mirror lives in
``flowscope.sensor.layout``.

Addresses are stored as two unsigned 64-bit words holding the address bytes
in network order read as a big-endian integer (``hi`` = bytes 0..7, ``lo`` =
bytes 8..15); an IPv4 address has ``hi = 0`` and ``lo`` = the 32-bit address.
Comparing ``(hi, lo)`` therefore compares address bytes. MAC addresses are the
48-bit big-endian value of their six bytes.
"""

from __future__ import annotations

import numpy as np

# --- parsed packets -------------------------------------------------------

#: ``PKT_DTYPE.l3`` values.
L3_NONE = 0  # nothing usable: the frame is unmatched
L3_IPV4 = 4
L3_IPV6 = 6
L3_ETHER = 1  # an Ethernet frame that carried no IP (MacPair can still use it)

#: ``PKT_DTYPE.pflags`` bits.
PF_PORTS = 0x01  # sport/dport are valid (TCP/UDP header present)
PF_TCP = 0x02  # tcp_flags/seq/ack/window/payload_* are valid
PF_FRAG = 0x04  # a non-first IP fragment (keyed with ports 0)
PF_MAC = 0x08  # smac/dmac are valid
PF_MORE_FRAGS = 0x10  # a first fragment with more fragments to follow
PF_ICMP = 0x20  # icmp_type/icmp_code are valid (ICMP/ICMPv6 header captured)
#: Live sensor rows (never set by the capture parsers). The kernel aggregates most packets
#: of a flow in its map, so a row carries the flow's absolute counters ``cnt_*`` (indexed by
#: key orientation: 0 = a -> b, 1 = b -> a) instead of being one more packet to add.
PF_ABS = 0x40  # a packet whose cnt_* are the flow's totals with it: set, do not add
PF_SYNC = 0x80  # not a packet: set the counters and last_seen (= ts) only; no history,
#                 state or Packet event. Creates the flow (started = first_ts) if missing.

#: ``PKT_DTYPE.error`` values: why a frame is unmatched (0 = parsed).
PERR_NONE = 0
PERR_TRUNCATED = 1  # captured bytes end inside a header
PERR_NOT_IP = 2  # no IPv4/IPv6 payload (ARP, LLDP, ...)
PERR_BAD_HEADER = 3  # a header field is impossible (IHL < 5, version mismatch, ...)
PERR_LINKTYPE = 4  # link type not supported

PKT_DTYPE = np.dtype(
    [
        ("ts", np.int64),  # ns since the Unix epoch
        ("caplen", np.uint32),  # captured frame length (L2 header included)
        ("wirelen", np.uint32),  # frame length on the wire
        ("src_hi", np.uint64),
        ("src_lo", np.uint64),
        ("dst_hi", np.uint64),
        ("dst_lo", np.uint64),
        ("smac", np.uint64),
        ("dmac", np.uint64),
        ("seq", np.uint32),  # TCP, host order
        ("ack", np.uint32),  # TCP, host order
        ("payload_len", np.uint32),  # L4 payload bytes by the IP lengths (TCP/UDP: after their header)
        ("ip_len", np.uint32),  # IP total length (IPv6: 40 + payload length)
        ("sport", np.uint16),  # valid with PF_PORTS (TCP, UDP, SCTP); 0 otherwise
        ("dport", np.uint16),  # valid with PF_PORTS; ICMP keys use ports 0
        ("window", np.uint16),
        ("payload_off", np.uint16),  # offset of the L4 payload in the frame
        ("vlan", np.uint16),  # outermost VLAN id, 0 if untagged
        ("iface", np.uint16),  # pcapng interface index, live ifindex slot
        ("l3", np.uint8),
        ("proto", np.uint8),  # IP protocol number (IPv6: after extension headers)
        ("tcp_flags", np.uint8),
        ("pflags", np.uint8),
        ("error", np.uint8),
        ("icmp_type", np.uint8),  # valid with PF_ICMP
        ("icmp_code", np.uint8),  # valid with PF_ICMP
        ("_pad", np.uint8, (5,)),
        # live sensor rows only (PF_ABS / PF_SYNC); zero from the capture parsers
        ("first_ts", np.int64),  # PF_SYNC: the flow's first packet, ns since the epoch
        ("cnt_pkts0", np.uint64),  # flow packets a -> b, this row included
        ("cnt_pkts1", np.uint64),  # flow packets b -> a
        ("cnt_bytes0", np.uint64),  # flow frame bytes a -> b
        ("cnt_bytes1", np.uint64),
        ("cnt_pay0", np.uint64),  # flow L4 payload bytes a -> b
        ("cnt_pay1", np.uint64),
    ],
    align=True,
)

# --- flow keys ------------------------------------------------------------
# A key is KEY_WORDS uint64 words: a_hi, a_lo, b_hi, b_lo, meta with
# meta = kind << 56 | l3 << 48 | proto << 32 | port_a << 16 | port_b.
KEY_WORDS = 5

#: Extractor kinds (``meta >> 56``).
EXTRACT_FIVE_TUPLE = 0
EXTRACT_FIVE_TUPLE_DIRECTIONAL = 1
EXTRACT_IP_PAIR = 2
EXTRACT_MAC_PAIR = 3

# --- events ---------------------------------------------------------------

EV_STARTED = 1
EV_PACKET = 2
EV_ESTABLISHED = 3
EV_STATE_CHANGE = 4
EV_ENDED = 5

#: Bits of the event mask passed to the engine (1 << kind).
EVMASK_ALL = (1 << EV_STARTED) | (1 << EV_PACKET) | (1 << EV_ESTABLISHED) | (
    1 << EV_STATE_CHANGE
) | (1 << EV_ENDED)
EVMASK_LIFECYCLE = EVMASK_ALL & ~(1 << EV_PACKET)
EVMASK_ENDED = 1 << EV_ENDED

# FlowState codes (same order as flowscope.events.FlowState).
ST_ACTIVE = 0
ST_SYN_SENT = 1
ST_SYN_RECEIVED = 2
ST_ESTABLISHED = 3
ST_FIN_WAIT = 4
ST_CLOSING_TCP = 5
ST_CLOSED = 6
ST_RESET = 7
ST_ABORTED = 8

# EndReason codes (same order as flowscope.events.EndReason).
END_FIN = 0
END_RST = 1
END_IDLE = 2
END_EVICTED = 3
END_SHUTDOWN = 4

HISTORY_MAX = 16

#: Zeek-style per-flow state carried in Ended records (meaning: flowscope._kernels.zeek).
ZEEK_WORDS = 16
ZEEK_HISTORY_MAX = 32

#: ``EVENT_DTYPE.icmp``: bit 16 set when the first packet was ICMP with a type/code,
#: type in bits 8..15, code in bits 0..7.
ICMP_VALID = 1 << 16

EVENT_DTYPE = np.dtype(
    [
        ("ts", np.int64),  # ns since the epoch
        ("key", np.uint64, (KEY_WORDS,)),
        ("pkts", np.uint64, (2,)),  # Ended: [initiator, responder]
        ("bytes", np.uint64, (2,)),  # Ended: frame bytes [initiator, responder]
        ("payload", np.uint64, (2,)),  # Ended: L4 payload bytes
        ("started", np.int64),  # Ended: first packet ts
        ("last_seen", np.int64),  # Ended: last packet ts
        ("flow_id", np.uint64),  # creation serial number, unique per tracker
        ("length", np.uint32),  # Packet: frame length
        ("kind", np.uint8),
        ("side", np.uint8),  # 0 initiator, 1 responder
        ("init_rev", np.uint8),  # 1 when the initiator sends b -> a
        ("from_state", np.uint8),
        ("to_state", np.uint8),  # Ended: the final state
        ("reason", np.uint8),
        ("hist_len", np.uint8),
        ("flags_or", np.uint8, (2,)),  # Ended: TCP flags seen [initiator, responder]
        ("history", np.uint8, (HISTORY_MAX,)),
        ("icmp", np.uint32),  # Ended: ICMP type/code of the first packet (ICMP_VALID)
        ("zhist_len", np.uint8),  # Ended: length of zhist
        ("zeek", np.int64, (ZEEK_WORDS,)),  # Ended: Zeek-style endpoint state (zeek.Z_*)
        ("zhist", np.uint8, (ZEEK_HISTORY_MAX,)),  # Ended: Zeek-style history letters
    ],
    align=True,
)
