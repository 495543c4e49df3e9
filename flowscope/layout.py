"""Facts shared by every part of flowscope: record layouts, codes, bits and names.

Packets travel through flowscope as numpy structured arrays of ``PKT_DTYPE``
(one row per parsed frame) and the engine reports what happened as rows of
``EVENT_DTYPE``. This module is the one home of those dtypes and of every
integer code, bit and name that more than one module uses: protocol numbers,
TCP flag bits, flow states, end reasons, event kinds, the packed key's
metadata word (with the helpers that pack and unpack it), the words of the
Zeek-style state carried in Ended records, and the stable names (slugs) every
output format prints. Everything else imports them from here; numba folds the
module-level ints into machine code. The kernel <-> userspace records of the
live sensor are defined once in ``bpf/fs_shared.h``; ``flowscope.sensor.layout``
mirrors them, reusing the codes below where the C header shares them (a test
checks both sides).

Addresses are stored as two unsigned 64-bit words holding the address bytes
in network order read as a big-endian integer (``hi`` = bytes 0..7, ``lo`` =
bytes 8..15); an IPv4 address has ``hi = 0`` and ``lo`` = the 32-bit address.
Comparing ``(hi, lo)`` therefore compares address bytes. MAC addresses are the
48-bit big-endian value of their six bytes.
"""

from __future__ import annotations

import numpy as np

NS_PER_S = 1_000_000_000

# --- protocols ------------------------------------------------------------

#: IP protocol numbers flowscope treats specially.
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132
#: Protocols whose keys carry ports.
PORT_PROTOS = (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP)
#: Protocols whose first packet's type/code is kept (ports 0 in the key unless key_icmp).
ICMP_PROTOS = (IPPROTO_ICMP, IPPROTO_ICMPV6)
#: ICMP request/reply pairs (Zeek's ``ICMP4_counterpart``, Community ID): a message of a
#: paired type stands for the ports (type, paired type); any other for (type, code).
ICMP_PAIRS = {
    8: 0, 0: 8,  # echo request / reply
    13: 14, 14: 13,  # timestamp request / reply
    15: 16, 16: 15,  # information request / reply
    10: 9, 9: 10,  # router solicitation / advertisement
    17: 18, 18: 17,  # address mask request / reply
}
#: ICMPv6 pairs (Zeek's ``ICMP6_counterpart``). Mobile Prefix Solicitation/Advertisement
#: (146/147) have no pair there nor in the Community ID reference, so they are one-way.
ICMP6_PAIRS = {
    128: 129, 129: 128,  # echo request / reply
    130: 131, 131: 130,  # multicast listener query / report
    133: 134, 134: 133,  # router solicitation / advertisement
    135: 136, 136: 135,  # neighbor solicitation / advertisement
    139: 140, 140: 139,  # node information query / response
    144: 145, 145: 144,  # home agent address discovery request / reply
}


def icmp_pair_table() -> np.ndarray:
    """``int16[2, 256]``: row 0 ICMP, row 1 ICMPv6; the paired type of a type, -1 if none."""
    t = np.full((2, 256), -1, dtype=np.int16)
    for row, pairs in enumerate((ICMP_PAIRS, ICMP6_PAIRS)):
        for a, b in pairs.items():
            t[row, a] = b
    return t


#: Protocol slugs (``L4Proto.slug``, JSON ``proto``); every other number is "other".
PROTO_SLUGS = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMP: "icmp",
               IPPROTO_ICMPV6: "icmp6", IPPROTO_SCTP: "sctp"}
#: Reference names of the protocols (``L4Proto.name``).
PROTO_NAMES = {IPPROTO_TCP: "Tcp", IPPROTO_UDP: "Udp", IPPROTO_ICMP: "Icmp",
               IPPROTO_ICMPV6: "IcmpV6", IPPROTO_SCTP: "Sctp"}


def proto_slug(proto: int) -> str:
    """The slug of an IP protocol number (``"other"`` when it has none)."""
    return PROTO_SLUGS.get(int(proto), "other")


#: Timeout class of a protocol: the idle timeout it takes from the config.
TIMEOUT_CLASSES = (("tcp", (IPPROTO_TCP,)), ("udp", (IPPROTO_UDP,)),
                   ("icmp", ICMP_PROTOS), ("other", ()))

# --- TCP flag bits (as on the wire, byte 13 of the TCP header) -------------

TH_FIN = 0x01
TH_SYN = 0x02
TH_RST = 0x04
TH_PSH = 0x08
TH_ACK = 0x10
TH_URG = 0x20
TH_ECE = 0x40
TH_CWR = 0x80
TCP_FLAG_NAMES = (("FIN", TH_FIN), ("SYN", TH_SYN), ("RST", TH_RST), ("PSH", TH_PSH),
                  ("ACK", TH_ACK), ("URG", TH_URG), ("ECE", TH_ECE), ("CWR", TH_CWR))

# --- parsed packets -------------------------------------------------------

#: ``PKT_DTYPE.l3`` values.
L3_NONE = 0  # nothing usable: the frame is unmatched
L3_IPV4 = 4
L3_IPV6 = 6
L3_ETHER = 1  # an Ethernet frame that carried no IP (MacPair can still use it)

#: ``PKT_DTYPE.pflags`` bits.
PF_PORTS = 0x01  # sport/dport are valid (TCP/UDP header present)
PF_TCP = 0x02  # tcp_flags/seq/ack/window/payload_* are valid
PF_FRAG = 0x04  # a non-first IP fragment (no L4 header: ports from the fragment table)
PF_MAC = 0x08  # smac/dmac are valid
PF_MORE_FRAGS = 0x10  # a first fragment with more fragments to follow
PF_ICMP = 0x20  # icmp_type/icmp_code are valid (ICMP/ICMPv6 header captured)
#: Live sensor rows (never set by the capture parsers). The kernel aggregates most packets
#: of a flow in its map, so a row carries the flow's absolute counters ``cnt_*`` (indexed by
#: key orientation: 0 = a -> b, 1 = b -> a) instead of being one more packet to add.
PF_ABS = 0x40  # a packet whose cnt_* are the flow's totals with it: set, do not add
PF_SYNC = 0x80  # not a packet: set the counters and last_seen (= ts) only; no history,
#                 state or Packet event. Creates the flow (started = first_ts) if missing;
#                 with kstate Closed/Reset it also ends the flow (the kernel's terminal
#                 event was lost).

#: ``PKT_DTYPE.error`` values: why a frame is unmatched (0 = parsed).
PERR_NONE = 0
PERR_TRUNCATED = 1  # captured bytes end inside a header
PERR_NOT_IP = 2  # no IPv4/IPv6 payload (ARP, LLDP, ...)
PERR_BAD_HEADER = 3  # a header field is impossible (IHL < 5, version mismatch, ...)
PERR_LINKTYPE = 4  # link type not supported
#: Not unmatched: a TCP or UDP header cut short (the captured bytes end inside it, or the IP
#: length leaves no room for it). The packet is keyed at the IP level (ports 0, no TcpInfo),
#: as protocols without ports are, and counted in the ``truncated_l4`` statistic.
PERR_L4_SHORT = 5
#: Not a packet (live sensor rows only): the row names, by its addresses, ports and protocol,
#: the flow around the decapsulated packet of the next row (its parent; ``tun_depth`` one less).
PERR_TUN_PARENT = 6

# --- DNS (port 53, over UDP and TCP) --------------------------------------
#: Packets to or from this port carry a DNS message the parsers decode (UDP payload; TCP
#: segments that start with a message's two-byte length). mDNS (5353) is left out.
DNS_PORT = 53
#: Bytes kept of a query name in its dotted text form (the longest legal name is 253).
DNS_NAME_MAX = 256
#: Pointer jumps followed in one name (each must point backwards: loops cannot occur).
DNS_MAX_JUMPS = 32
#: ``PKT_DTYPE.dns_flags`` bits.
DNS_VALID = 0x01  # a DNS header was parsed (id, QR, rcode, answer count are valid)
DNS_QR = 0x02  # the message is a response
DNS_QUESTION = 0x04  # the first question parsed (dns_qname, dns_qtype are valid)
DNS_TCP = 0x08  # the message came over TCP (after its length prefix)
#: Common QTYPE numbers -> names (``dns_qtype_name``); other types print by number only.
DNS_QTYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX",
                   16: "TXT", 28: "AAAA", 33: "SRV", 35: "NAPTR", 39: "DNAME", 41: "OPT",
                   43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS",
                   99: "SPF", 252: "AXFR", 255: "ANY", 257: "CAA"}
#: RCODE numbers -> names (``dns_rcode_name``), as RFC 1035 / 2136 spell them.
DNS_RCODE_NAMES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
                   "YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE")

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
        ("frag_mf", np.uint8),  # 1: the IP "more fragments" flag is set
        ("frag_off", np.uint16),  # IP fragment offset in bytes (0: first or not a fragment)
        ("l3_off", np.uint16),  # offset of the IP header in the frame (valid with l3 4/6)
        ("frag_id", np.uint32),  # IPv4 identification (16 bits) / IPv6 fragment header id
        ("l4_off", np.uint16),  # offset of the L4 header in the frame (valid with l3 4/6)
        ("csum", np.uint8),  # CSUM_* bits, set only when checksums are verified
        ("_pad", np.uint8),
        # live sensor rows only (PF_ABS / PF_SYNC); zero from the capture parsers
        ("first_ts", np.int64),  # PF_SYNC: the flow's first packet, ns since the epoch
        ("cnt_pkts0", np.uint64),  # flow packets a -> b, this row included
        ("cnt_pkts1", np.uint64),  # flow packets b -> a
        ("cnt_bytes0", np.uint64),  # flow frame bytes a -> b
        ("cnt_bytes1", np.uint64),
        ("cnt_pay0", np.uint64),  # flow L4 payload bytes a -> b
        ("cnt_pay1", np.uint64),
        ("cnt_ipb0", np.uint64),  # flow IP total-length bytes a -> b
        ("cnt_ipb1", np.uint64),
        ("cnt_flags0", np.uint8),  # OR of the flow's TCP flags a -> b
        ("cnt_flags1", np.uint8),
        ("kstate", np.uint8),  # the kernel's TCP state mirror (ST_*) after this row
        ("_pad2", np.uint8, (5,)),
        # context
        ("vlan_inner", np.uint16),  # second VLAN id (QinQ), valid when nvlan >= 2
        ("nvlan", np.uint8),  # VLAN tags seen (vlan, vlan_inner hold the first two)
        ("_pad3", np.uint8, (5,)),
        # tcpperf: the kernel's per-orientation sequence tracking (flowscope._kernels.tcpseq)
        ("sq_start0", np.uint32),  # Zeek start_seq a -> b
        ("sq_start1", np.uint32),
        ("sq_high0", np.uint32),  # highest sequence end a -> b
        ("sq_high1", np.uint32),
        ("sq_acked0", np.uint32),  # highest ack b -> a sent for a -> b
        ("sq_acked1", np.uint32),
        ("rtx0", np.uint32),  # retransmitted segments a -> b
        ("rtx1", np.uint32),
        ("ooo0", np.uint32),  # out-of-order segments a -> b
        ("ooo1", np.uint32),
        ("zw0", np.uint32),  # zero-window advertisements a -> b
        ("zw1", np.uint32),
        ("rtxb0", np.uint64),  # retransmitted payload bytes a -> b
        ("rtxb1", np.uint64),
        ("sq_flags", np.uint8),  # SQF_* bits
        ("_pad4", np.uint8, (7,)),
        # tunnels: set on the rows of decapsulated packets (depth >= 1), zero otherwise
        ("tun_type", np.uint8),  # TUN_* of the encapsulation this row came out of
        ("tun_depth", np.uint8),  # 0: the frame's outermost packet; n: n encapsulations in
        ("_pad5", np.uint16),
        ("tun_key", np.uint32),  # VXLAN / Geneve VNI, GRE key, GTP TEID (0 when none)
        # dns: the DNS message of a port-53 packet (valid with DNS_VALID in dns_flags). The
        # scalars share the row's last cache line with the fields above; dns_qname comes last
        # and is written only for DNS packets, so other packets never touch its bytes
        ("dns_flags", np.uint8),  # DNS_* bits below; 0 = not a DNS message
        ("dns_rcode", np.uint8),  # header RCODE (4 bits)
        ("dns_id", np.uint16),  # transaction id
        ("dns_qtype", np.uint16),  # first question's QTYPE (with DNS_QUESTION)
        ("dns_answers", np.uint16),  # ANCOUNT
        # drops: live rows only (kernel drops of the flow's packets, key orientation)
        ("drops0", np.uint32),  # drops a -> b
        ("drops1", np.uint32),  # drops b -> a
        ("drop_reason", np.uint16),  # most frequent kernel drop reason (enum skb_drop_reason)
        ("dns_qlen", np.uint8),  # bytes of dns_qname (with DNS_QUESTION)
        ("_pad6", np.uint8, (5,)),
        # only the first dns_qlen bytes are defined (the rest is left as it was)
        ("dns_qname", np.uint8, (DNS_NAME_MAX,)),  # first question's name, dotted text
    ],
    align=True,
)
#: The rows the parsers, the live row builders and the engine pass among themselves:
#: ``PKT_DTYPE`` without ``dns_qname``, 256 bytes narrower. The query names travel beside
#: the rows in a name array, uint8[rows, DNS_NAME_MAX]: row i's name is the first
#: ``dns_qlen`` bytes of ``names[i]``, written only for DNS rows (the others never touch
#: their bytes). ``join_rows`` / ``split_rows`` convert between the two forms.
ROW_DTYPE = np.dtype([(n, PKT_DTYPE.fields[n][0]) for n in PKT_DTYPE.names if n != "dns_qname"],
                     align=True)


def name_array(n: int) -> np.ndarray:
    """An (uninitialised) name array for ``n`` rows of ``ROW_DTYPE``."""
    return np.empty((n, DNS_NAME_MAX), dtype=np.uint8)


def join_rows(rows: np.ndarray, names: np.ndarray) -> np.ndarray:
    """``ROW_DTYPE`` rows and their names -> a new ``PKT_DTYPE`` array (the bytes of
    ``dns_qname`` after ``dns_qlen`` are undefined)."""
    out = np.empty(len(rows), dtype=PKT_DTYPE)
    for n in ROW_DTYPE.names:
        out[n] = rows[n]
    dns = np.flatnonzero(rows["dns_qlen"])
    if len(dns):
        out["dns_qname"][dns] = names[dns]
    return out


def split_rows(pkts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``PKT_DTYPE`` rows -> new ``ROW_DTYPE`` rows and their name array."""
    rows = np.empty(len(pkts), dtype=ROW_DTYPE)
    for n in ROW_DTYPE.names:
        rows[n] = pkts[n]
    names = name_array(len(pkts))
    dns = np.flatnonzero(pkts["dns_qlen"])
    if len(dns):
        names[dns] = pkts["dns_qname"][dns]
    return rows, names

#: ``PKT_DTYPE.sq_flags`` bits (the kernel's ``fs_flow.seq_flags``, by orientation).
SQF_INIT0 = 0x01  # a -> b sent a TCP packet (its sequence numbers are set)
SQF_INIT1 = 0x02
SQF_FIN0 = 0x04  # a -> b sent a FIN
SQF_FIN1 = 0x08
SQF_HOLE0 = 0x10  # (kernel only) a -> b has a sequence hole
SQF_HOLE1 = 0x20

# --- flow keys ------------------------------------------------------------
# A key is KEY_WORDS uint64 words: a_hi, a_lo, b_hi, b_lo, meta with
# meta = vlan_hi << 60 | kind << 56 | l3 << 48 | vlan_lo << 40 | proto << 32 | port_a << 16
#        | port_b
# where vlan (12 bits, split in vlan_lo = its low 8 bits and vlan_hi = its high 4) is 0
# unless key_vlan puts the outer VLAN id of the packet in the key.
KEY_WORDS = 5
META_KIND_SHIFT = 56
META_KIND_MASK = 0x0F
META_L3_SHIFT = 48
META_PROTO_SHIFT = 32
META_PORT_A_SHIFT = 16
META_VLAN_LO_SHIFT = 40
META_VLAN_HI_SHIFT = 60


def meta_vlan(vlan: int) -> int:
    """The bits a VLAN id (12 bits) sets in a key's metadata word (``key_vlan``)."""
    return ((vlan & 0xFF) << META_VLAN_LO_SHIFT) | (((vlan >> 8) & 0xF) << META_VLAN_HI_SHIFT)


def key_vlan_of(meta: int) -> int:
    """The VLAN id a key's metadata word holds (0 unless ``key_vlan``)."""
    m = int(meta)
    return ((m >> META_VLAN_LO_SHIFT) & 0xFF) | (((m >> META_VLAN_HI_SHIFT) & 0xF) << 8)

#: Extractor kinds (``meta >> 56``).
EXTRACT_FIVE_TUPLE = 0
EXTRACT_FIVE_TUPLE_DIRECTIONAL = 1
EXTRACT_IP_PAIR = 2
EXTRACT_MAC_PAIR = 3
#: Kinds whose keys hold addresses, protocol and ports.
FIVE_TUPLE_KINDS = (EXTRACT_FIVE_TUPLE, EXTRACT_FIVE_TUPLE_DIRECTIONAL)


def unpack_meta(meta):
    """``(kind, l3, proto, port_a, port_b)`` of a key's metadata word.

    Works on a Python int (returns ints) and on a uint64 numpy array
    (returns arrays); the numba kernels use ``flowscope._kernels.common``'s
    twin of this function.
    """
    if isinstance(meta, np.ndarray):
        m = meta.astype(np.uint64, copy=False)
        return (((m >> np.uint64(META_KIND_SHIFT)) & np.uint64(META_KIND_MASK)).astype(np.int64),
                ((m >> np.uint64(META_L3_SHIFT)) & np.uint64(0xFF)).astype(np.int64),
                ((m >> np.uint64(META_PROTO_SHIFT)) & np.uint64(0xFF)).astype(np.int64),
                ((m >> np.uint64(META_PORT_A_SHIFT)) & np.uint64(0xFFFF)).astype(np.int64),
                (m & np.uint64(0xFFFF)).astype(np.int64))
    m = int(meta)
    return ((m >> META_KIND_SHIFT) & META_KIND_MASK, (m >> META_L3_SHIFT) & 0xFF,
            (m >> META_PROTO_SHIFT) & 0xFF,
            (m >> META_PORT_A_SHIFT) & 0xFFFF, m & 0xFFFF)


# --- events ---------------------------------------------------------------

EV_STARTED = 1
EV_PACKET = 2
EV_ESTABLISHED = 3
EV_STATE_CHANGE = 4
EV_ENDED = 5
#: Event kind -> slug (JSON ``event``).
#: An interim record of a flow open longer than the active timeout (``active_timeout``):
#: the Ended fields (counters so far) without an end. Produced only with an active timeout,
#: whatever the event mask; the masks below leave it out so that nothing else changes.
EV_UPDATE = 6
KIND_SLUGS = {EV_STARTED: "started", EV_PACKET: "packet", EV_ESTABLISHED: "established",
              EV_STATE_CHANGE: "state_change", EV_ENDED: "ended", EV_UPDATE: "update"}

#: Bits of the event mask passed to the engine (1 << kind).
EVMASK_ALL = (1 << EV_STARTED) | (1 << EV_PACKET) | (1 << EV_ESTABLISHED) | (
    1 << EV_STATE_CHANGE
) | (1 << EV_ENDED)
EVMASK_LIFECYCLE = EVMASK_ALL & ~(1 << EV_PACKET)
EVMASK_ENDED = 1 << EV_ENDED
#: ``--events`` / ``events=`` names -> masks.
EVENT_MASKS = {"all": EVMASK_ALL, "lifecycle": EVMASK_LIFECYCLE, "ended": EVMASK_ENDED}

#: Flow sides (0 initiator, 1 responder) -> slug.
SIDE_SLUGS = ("initiator", "responder")

# TCP states (``flowscope.events.FlowState``; the kernel mirror uses the first eight).
ST_ACTIVE = 0
ST_SYN_SENT = 1
ST_SYN_RECEIVED = 2
ST_ESTABLISHED = 3
ST_FIN_WAIT = 4
ST_CLOSING_TCP = 5
ST_CLOSED = 6
ST_RESET = 7
ST_ABORTED = 8
#: State code -> slug (``FlowState.slug``, JSON ``state`` / ``from`` / ``to``).
STATE_SLUGS = ("active", "syn_sent", "syn_received", "established", "fin_wait", "closing",
               "closed", "reset", "aborted")

# End reasons (``flowscope.events.EndReason``).
END_FIN = 0
END_RST = 1
END_IDLE = 2
END_EVICTED = 3
END_SHUTDOWN = 4
#: End reason code -> slug (``EndReason.slug``, JSON ``reason``).
REASON_SLUGS = ("fin", "rst", "idle_timeout", "evicted", "shutdown")

HISTORY_MAX = 16

#: ``PKT_DTYPE.csum`` bits (``verify_checksums``; ``flowscope._kernels.csum``).
CSUM_IP_BAD = 0x01  # the IPv4 header checksum is wrong
CSUM_L4_BAD = 0x02  # the TCP / UDP / ICMP / ICMPv6 checksum is wrong (whole segment captured)

# --- tunnels ---------------------------------------------------------------
#: Encapsulations flowscope decapsulates (docs/tunnels.md). Rows of decapsulated packets
#: carry the type in ``PKT_DTYPE.tun_type``; Ended records of inner flows in ``tun``.
TUN_NONE = 0
TUN_IP = 1  # IP in IP: 4in4, 6in4, 4in6, 6in6 (IP protocols 4 and 41)
TUN_GRE = 2  # GRE v0 (IP, transparent Ethernet bridging, ERSPAN I/II/III), v1 (PPTP)
TUN_VXLAN = 3
TUN_GENEVE = 4
TUN_GTPV1 = 5  # GTP-U G-PDUs
TUN_TEREDO = 6
TUN_AYIYA = 7
#: Tunnel type -> slug (JSON ``tunnel.type``; Zeek's Tunnel::Type names, lower case).
TUN_SLUGS = {TUN_IP: "ip", TUN_GRE: "gre", TUN_VXLAN: "vxlan", TUN_GENEVE: "geneve",
             TUN_GTPV1: "gtpv1", TUN_TEREDO: "teredo", TUN_AYIYA: "ayiya"}
#: Most nested encapsulations decapsulated in one frame (Zeek's Tunnel::max_depth).
TUN_MAX_DEPTH = 4
#: Rows one frame may give: its outer packet and one per encapsulation.
TUN_MAX_ROWS = TUN_MAX_DEPTH + 1
#: Outer flows (tunnel parents) an inner flow remembers; more are counted, not kept.
TUN_PARENTS_MAX = 2
#: Zeek stops reporting a connection's encapsulation changes after this many and adds
#: the history letter X (Tunnel::max_changes_per_connection).
TUN_MAX_CHANGES = 5
#: Default UDP ports (Zeek's defaults). Teredo and AYIYA are also recognised by their
#: content on other UDP ports, as Zeek's protocol detection does.
VXLAN_PORT = 4789
GENEVE_PORT = 6081
GTPV1_PORTS = (2152, 2123)
TEREDO_PORT = 3544
AYIYA_PORT = 5072
GRE_UDP_PORT = 4754  # GRE in UDP
#: ``EVENT_DTYPE.tun``: key (VNI, GRE key, TEID) in bits 0..31, encapsulation changes
#: (saturating at 255) in 32..39, type in 40..47, depth in 48..51, parents seen (saturating
#: at 15) in 52..55, index of the current parent in 56..57 (3: none / not kept).
TUN_WORD_CHANGES_SHIFT = 32
TUN_WORD_TYPE_SHIFT = 40
TUN_WORD_DEPTH_SHIFT = 48
TUN_WORD_NPAR_SHIFT = 52
TUN_WORD_CUR_SHIFT = 56


def unpack_tun(word):
    """``(type, depth, key, parents_seen, changes)`` of an ``EVENT_DTYPE.tun`` word."""
    w = int(word)
    return ((w >> TUN_WORD_TYPE_SHIFT) & 0xFF, (w >> TUN_WORD_DEPTH_SHIFT) & 0xF,
            w & 0xFFFFFFFF, (w >> TUN_WORD_NPAR_SHIFT) & 0xF,
            (w >> TUN_WORD_CHANGES_SHIFT) & 0xFF)


# --- IP fragments -----------------------------------------------------------
#: Non-first fragments of TCP, UDP and SCTP datagrams carry no ports: the engine (and the live
#: kernel) keeps a table from (addresses, protocol, IP id) to the ports of the datagram's first
#: fragment, filled by first fragments. Entries live ``fragment_timeout`` (default below) from
#: the datagram's first-seen fragment; non-first fragments seen before their first fragment are
#: held in the entry (counted as pending) and added to the datagram's flow when it arrives.
FRAG_TIMEOUT_S = 30.0
#: Default entries of the offline fragment table (direct-mapped: a datagram whose slot is taken
#: by a live entry of another datagram replaces it) and of the kernel's LRU map.
FRAG_SLOTS = 4096

#: ``EVENT_DTYPE.icmp``: bit 16 set when the first packet was ICMP with a type/code,
#: type in bits 8..15, code in bits 0..7.
ICMP_VALID = 1 << 16

# --- Zeek-style state carried in Ended records (EVENT_DTYPE.zeek / zhist) ---
# Kept by flowscope._kernels.zeek, read by flowscope.output.zeek. Words indexed
# 0/1 are per flowscope side (0 = initiator).
ZEEK_WORDS = 16
ZEEK_HISTORY_MAX = 32

#: ``EVENT_DTYPE.dns`` bits: what an Ended record knows of the flow's DNS.
EVD_QUERY = 0x01  # dns_qname / dns_qtype (from the first query, or a response's question)
EVD_RESPONSE = 0x02  # dns_rcode / dns_answers (the response to the first query)
EVD_RTT = 0x04  # dns_rtt
Z_IP_BYTES0 = 0  # IP-level bytes (IPv4 total length / IPv6 40 + payload), side 0
Z_IP_BYTES1 = 1  # ... side 1
Z_HLEN = 2  # letters in zhist
Z_CTL = 3  # bit 0: Zeek originator side; bit 1: first packet seen; HS_* history-seen bits
Z_EP0 = 4  # endpoint word of side 0: EP_* fields below
Z_EP1 = 5
Z_SEQ0 = 6  # start_seq | last_seq << 32 (uint32 each), side 0
Z_SEQ1 = 7
Z_ACK0 = 8  # ack_seq | hist_last_RST << 32, side 0
Z_ACK1 = 9
Z_HSEQ0 = 10  # hist_last_SYN | hist_last_FIN << 32, side 0
Z_HSEQ1 = 11
Z_PAY0 = 12  # UDP / ICMP / other payload bytes as Zeek sizes them, side 0
Z_PAY1 = 13
Z_LAST = 14  # Zeek's last_time (ns): packets after both TCP endpoints closed do not move it
Z_CSUM = 15  # bad-checksum packets (verify_checksums): side 0 in bits 0..31, side 1 in 32..62

# Z_CTL bits
CTL_ORIG1 = 1  # Zeek's originator is flowscope side 1
CTL_STARTED = 2
CTL_HS_SHIFT_ORIG = 8  # history-seen bits of the Zeek originator (HIST_* in the kernel)
CTL_HS_SHIFT_RESP = 24  # ... of the responder
CTL_HIST_X = 1 << 40  # tunnels: X (Zeek's analyzer-limit letter) is in the history

# endpoint word fields
EP_STATE_MASK = 0xF  # bits 0..3: state
EP_PREV_SHIFT = 4  # bits 4..7: previous state
EP_FIN = 1 << 8  # a FIN was seen from this endpoint
EP_DID_CLOSE = 1 << 9  # this endpoint's own packet closed or reset it (Zeek's did_close)
EP_RXMIT_SHIFT = 16  # bits 16..35: retransmission count
EP_WIN0_SHIFT = 36  # bits 36..55: zero-window count
EP_CNT_MASK = (1 << 20) - 1

# Zeek's endpoint states (TCP_ENDPOINT_*; script constants TCP_INACTIVE ...)
TCP_INACTIVE = 0
TCP_SYN_SENT = 1
TCP_SYN_ACK_SENT = 2
TCP_PARTIAL = 3
TCP_ESTABLISHED = 4
TCP_CLOSED = 5
TCP_RESET = 6

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
        ("zeek", np.int64, (ZEEK_WORDS,)),  # Ended: Zeek-style endpoint state (Z_*)
        ("zhist", np.uint8, (ZEEK_HISTORY_MAX,)),  # Ended: Zeek-style history letters
        # context
        ("sample_rate", np.uint32),  # Ended/Update: 1 flow in this many was kept (1: all)
        ("exported_pkts", np.uint64, (2,)),  # Ended/Update: pkts reported by earlier Updates
        ("exported_bytes", np.uint64, (2,)),  # Ended/Update: bytes reported by earlier Updates
        ("init_mac", np.uint64),  # Ended/Update: the initiator's MAC (with has_mac)
        ("resp_mac", np.uint64),  # Ended/Update: the responder's MAC (with has_mac)
        ("iface", np.uint16),  # Ended/Update: interface of the flow's first packet (PKT iface)
        ("vlan", np.uint16, (2,)),  # Ended/Update: VLAN ids, outer first (nvlan of them)
        ("nvlan", np.uint8),  # Ended/Update: VLAN tags of the first packet (at most 2 kept)
        ("has_mac", np.uint8),  # Ended/Update: 1 when the first packet was Ethernet
        # tcpperf (Ended, TCP): handshake times (ns, -1 = not measured) and loss signals,
        # [initiator, responder] (flowscope._kernels.tcpseq)
        ("rtt_resp", np.int64),  # SYN -> SYN/ACK
        ("rtt_init", np.int64),  # SYN/ACK -> the ACK completing the handshake
        ("retrans_pkts", np.uint64, (2,)),
        ("retrans_bytes", np.uint64, (2,)),
        ("zero_win", np.uint64, (2,)),
        ("ooo_pkts", np.uint64, (2,)),
        # tunnels (Ended): the encapsulation of an inner flow (TUN_WORD_* packed word) and
        # the flow ids / start times of its first TUN_PARENTS_MAX outer flows
        ("tun", np.int64),
        ("tun_parent", np.int64, (2,)),  # flow id, -1 none
        ("tun_parent_started", np.int64, (2,)),  # the outer flow's started (its Zeek uid)
        # dns (Ended; valid with EVD_* bits in dns)
        ("dns", np.uint8),  # EVD_* bits: which DNS fields the flow has
        ("dns_rcode", np.uint8),
        ("dns_qtype", np.uint16),
        ("dns_answers", np.uint16),
        ("dns_qlen", np.uint8),
        ("dns_rtt", np.int64),  # ns, query to its response (EVD_RTT)
        ("dns_qname", np.uint8, (DNS_NAME_MAX,)),
        # drops (Ended, live only: 0 offline)
        ("drops", np.uint64, (2,)),  # kernel drops [initiator, responder]
        ("drop_reason", np.uint16),  # most frequent enum skb_drop_reason value (0 none)
    ],
    align=True,
)

# --- flow filter and sampling (context) -------------------------------------
#: Bits of the flow filter's mode (the engine's ``C_FILTER`` slot; the kernel's ``FS_FILTER``
#: compile flag, ``enum fs_filter_bit``): which lists are in force.
FLT_INC_CIDRS = 0x01  # keep a flow only when one of its addresses is in an include CIDR
FLT_EXC_CIDRS = 0x02  # drop a flow when one of its addresses is in an exclude CIDR
FLT_INC_PORTS = 0x04  # keep a flow only when one of its ports is an include port
FLT_EXC_PORTS = 0x08  # drop a flow when one of its ports is an exclude port
FLT_INC_PROTOS = 0x10  # keep a flow only when its IP protocol is an include protocol
FLT_EXC_PROTOS = 0x20  # drop a flow when its IP protocol is an exclude protocol
#: Flow sampling: a flow is kept when ``sample_hash(key) % rate == 0``. ``sample_hash`` is
#: splitmix64-style mixing of the five key words (``a_hi, a_lo, b_hi, b_lo, meta``) from a
#: seed of its own (so the sampled flows do not cluster in the engine's hash index), written
#: once in numba (flowscope._kernels.flowfilter) and once in C (bpf/fs_flow.h) from these
#: constants, mirrored in bpf/fs_shared.h.
HASH_M1 = 0xBF58476D1CE4E5B9
HASH_M2 = 0x94D049BB133111EB
SAMPLE_SEED = 0x5851F42D4C957F2D
