"""The flow engine: flow table, access order, TCP state machine, history and sweeps.

Everything here is numba ``@njit`` code over numpy arrays; no I/O, no Python
objects. The state of one tracker is a handful of arrays (see ``new_state`` in
``flowscope.tracker``):

``ctl``   int64[C_SIZE]          scalars: counters, queue positions, configuration
``table`` int32[2**k]            open-addressing hash index (slot + 1, 0 = empty)
``fkey``  uint64[cap, 5]         the key of each flow slot (layout.KEY_WORDS)
``fint``  int64[cap, F_SIZE]     per-flow integers (columns F_*, by how often a packet
                                 touches them: a TCP packet three cache lines, others two)
``fhist`` uint8[cap (+ cap * NAME_ROWS), 16]
                                 rows [0, cap): each slot's history letters; with
                                 ctl[C_DNS] the DNS name pool follows: name k (a
                                 flow's first query name, handed out when it is
                                 seen, see ``_name_row``) fills rows cap + k *
                                 NAME_ROWS .. + NAME_ROWS - 1, so only as many
                                 names' pages are touched as flows hold a name
                                 at once
``fz``, ``fzh``                   Zeek-style state (see zeek.py), used when ctl[C_ZEEK]
``fdl``   int64[cap + blocks, 2] rows [0, cap): (idle deadline = last_seen + timeout,
                                 touch serial) of each slot, (NO_FLOW, -1) when the
                                 slot is free. Kept apart from fint so that sweeps
                                 and the access queue scan 16 bytes per flow, not a
                                 whole row. Row cap + b, column 0: a lower bound of
                                 the deadlines of slots [b * DL_BLOCK, (b + 1) *
                                 DL_BLOCK) (``dl_rows``), so that a sweep skips the
                                 blocks with nothing due
``lq``    int64[2**k, 2]         access queue: (slot, touch serial) per touch;
                                 2**k >= 2 * cap + 16
``sbuf``  int64[cap, 2]          (slot, serial) of the sweep in progress, in end order
``pkts``  ROW_DTYPE[n]           parsed packets in
``names``  uint8[n, DNS_NAME_MAX] their DNS query names (read for DNS rows only)
``ev``    EVENT_DTYPE[m]         events out

Access order: every touch gives the flow the next serial number (``fdl[s, 1]``)
and appends (slot, serial) to the ring ``lq``. The least recently touched
flow is the first queue entry whose serial is still its flow's serial; stale
entries are skipped, and dropped by a compaction when the ring fills, so a
touch costs one sequential store instead of relinking a list. A sweep scans
the contiguous deadlines, and ends the expired flows in serial order, which is
the access order. A call processes packets until the input or the event buffer
runs out; a sweep that fills the event buffer is resumed by the next call.
"""

import numpy as np

from ..layout import (  # module-level ints: numba folds them into the machine code
    DNS_NAME_MAX, DNS_PORT, DNS_QR, DNS_QUESTION, EVD_QUERY, EVD_RESPONSE, EVD_RTT,
    END_EVICTED, END_FIN, END_IDLE, END_RST, END_SHUTDOWN, EV_ENDED, EV_ESTABLISHED, EV_PACKET,
    EV_STARTED, EV_STATE_CHANGE, EV_UPDATE, EXTRACT_FIVE_TUPLE_DIRECTIONAL, EXTRACT_IP_PAIR,
    EXTRACT_MAC_PAIR, HISTORY_MAX, ICMP_VALID, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP,
    IPPROTO_TCP, IPPROTO_UDP, KEY_WORDS, ROW_DTYPE,
    PERR_L4_SHORT, PERR_NOT_IP, PERR_TUN_PARENT, PF_ABS, PF_FRAG, PF_ICMP, PF_MAC,
    PF_MORE_FRAGS, PF_PORTS,
    PF_SYNC,
    PF_TCP, SQF_FIN0, SQF_FIN1, SQF_INIT0, SQF_INIT1, ST_ACTIVE, ST_CLOSED, ST_CLOSING_TCP,
    ST_ESTABLISHED, ST_FIN_WAIT, ST_RESET, TUN_MAX_CHANGES, TUN_MAX_DEPTH, TUN_PARENTS_MAX,
    TUN_WORD_CHANGES_SHIFT, TUN_WORD_CUR_SHIFT, TUN_WORD_DEPTH_SHIFT, TUN_WORD_NPAR_SHIFT,
    TUN_WORD_TYPE_SHIFT,
    ST_SYN_RECEIVED, ST_SYN_SENT, TH_ACK, TH_FIN, TH_RST, TH_SYN, Z_HLEN, Z_IP_BYTES0, Z_PAY0,
    ZEEK_HISTORY_MAX, ZEEK_WORDS, icmp_pair_table,
)
from .common import (
    KIND_SHIFT, L3_SHIFT, PORT_A_SHIFT, PROTO_SHIFT, inline_kernel, kernel, meta_vlan, prefetch,
)
from .flowfilter import flow_passes, sample_hash
from .frag import FR_HELD, FR_KEYED, frag_lookup
from .tcpseq import (
    F_OOO0, F_RTT_INIT, F_RTT_RESP, F_RTX0, F_RTXB0, F_SQ_ACKED0, F_SQ_FLAGS, F_SQ_HIGH0,
    F_SQ_START0, F_ZW0, SQ_FIN0, SQ_INIT0, SQ_RTT_SYN, SQ_RTT_SYNACK, rtt_step, seq_reset,
    seq_step,
)
from .zeek import (
    zeek_bad_checksum, zeek_kernel_counters, zeek_limit_reached, zeek_packet, zeek_reset,
)

# ---- ctl slots -------------------------------------------------------------
C_LQ_HEAD = 0  # access queue: first live-or-stale entry (monotonic position)
C_LQ_TAIL = 1  # access queue: next free position (monotonic)
C_COUNT = 2  # open flows
C_FREE_TOP = 3  # entries on the stack of freed slots (fint[:, F_FREE])
C_SERIAL = 4  # flows created so far (flow ids)
C_CREATED = 5
C_ENDED = 6
C_EVICTED = 7
C_UNMATCHED = 8
C_MATCHED_PKTS = 9
C_MATCHED_BYTES = 10
C_MAX_FLOWS = 11
C_EXTRACT = 12  # layout.EXTRACT_*
C_INFER = 13  # infer_tcp_initiator
C_MASK = 14  # event mask, bit (1 << kind)
C_SWEEP_POS = 19  # next index into sbuf of the sweep in progress, -1 none
C_SWEEP_NOW = 20
C_SWEEP_REASON = 21
C_SWEEP_INTERVAL = 22  # automatic sweep period in packet time, ns (0 = off)
C_NEXT_SWEEP = 23  # packet time of the next automatic sweep
C_PAUSE_NEW = 24  # return after each packet that created a flow
C_NEW_SLOT = 25  # slot created by the last packet (-1 none)
C_TABLE_MASK = 26
C_ENDED_FIN = 27
C_ENDED_RST = 28
C_ENDED_IDLE = 29
C_ENDED_SHUTDOWN = 30
C_LAST_TS = 31  # latest packet timestamp seen
C_ZEEK = 32  # keep Zeek-style state (fz, fzh) per flow
C_TOUCH = 33  # touch serial counter
C_SWEEP_N = 34  # number of slots in sbuf
C_HIGH = 35  # slots ever used; new slots come from the free stack, else from here
C_ENDED_PKTS = 36  # packets of the flows ended so far (the sum over their Ended records)
C_TMO = 37  # ctl[C_TMO + proto]: idle timeout (ns) of each IP protocol (TrackerConfig.timeout_table)
C_FRAG_TMO = C_TMO + 256  # fragment table entry lifetime, ns (fragment_timeout)
C_FRAG_KEYED = C_FRAG_TMO + 1  # non-first fragments keyed with their datagram's ports
C_FRAG_HELD = C_FRAG_TMO + 2  # non-first fragments held now, waiting for their first fragment
C_FRAG_RESOLVED = C_FRAG_TMO + 3  # held fragments added to their datagram's flow
C_FRAG_ORPHANS = C_FRAG_TMO + 4  # held fragments given up (unmatched)
C_TRUNC_L4 = C_FRAG_TMO + 5  # packets whose TCP/UDP header was cut short (keyed with ports 0)
C_VERIFY = C_FRAG_TMO + 6  # verify_checksums: act on the rows' csum bits
C_BAD_CSUM = C_FRAG_TMO + 7  # matched packets with a bad IP / L4 checksum (C_VERIFY)
# tunnels: the flow (id, started) of the last row at each depth, for the rows of the
# same frame one encapsulation further in (-1: that row made no flow)
C_TUN_PID = C_FRAG_TMO + 8  # .. + TUN_MAX_DEPTH - 1: flow id at depth 0 ..
C_TUN_PST = C_FRAG_TMO + 12  # .. + TUN_MAX_DEPTH - 1: its start (set when a row follows)
# flow filter and sampling (flowfilter.py)
C_FILTER = C_FRAG_TMO + 40  # filter mode: layout.FLT_* bits of the lists in force (0 = none)
C_SAMPLE_RATE = C_FRAG_TMO + 41  # keep 1 flow in this many (0 or 1 = every flow)
C_FILTERED = C_FRAG_TMO + 42  # packets of flows the filter dropped (never tracked)
C_SAMPLED_OUT = C_FRAG_TMO + 43  # packets of flows the sampler left out (never tracked)
# active timeout (interim Update records of long flows)
C_ACTIVE_TMO = C_FRAG_TMO + 44  # active timeout, ns (0 = off)
C_UPD_POS = C_FRAG_TMO + 45  # scan for due Updates in progress: next slot + 1 (0 = none)
C_UPD_NOW = C_FRAG_TMO + 46  # time of that scan
C_UPDATES = C_FRAG_TMO + 47  # Update records produced
C_KEY_VLAN = C_FRAG_TMO + 48  # key_vlan: the outer VLAN id is part of the key
C_DECAP = C_FRAG_TMO + 49  # rows of decapsulated (inner) packets (tun_depth > 0)
C_NOT_IP = C_FRAG_TMO + 50  # outermost rows with no IP packet (error PERR_NOT_IP)
# dns (and kernel drops): C_FRAG_TMO + 32 .. + 39
C_DNS = C_FRAG_TMO + 32  # track DNS per flow (fhist holds the name pool)
C_DNS_MSGS = C_FRAG_TMO + 33  # DNS messages seen on matched packets (header parsed)
C_DNS_MATCHED = C_FRAG_TMO + 34  # responses matched to their flow's first query (dns_rtt)
C_NAME_TOP = C_FRAG_TMO + 51  # entries on the stack of freed name slots (fint[:, F_NAME_FREE])
C_NAME_HIGH = C_FRAG_TMO + 52  # name slots ever used; new ones come from the stack, else here
# key_icmp: ICMP/ICMPv6 keyed by type and paired type or code, as Zeek keys them
C_KEY_ICMP = C_FRAG_TMO + 64
# prefetch pipeline (track_batch): the table position of packet j's key at C_PFQ + (j % PFQ)
C_PFQ = C_FRAG_TMO + 72
PFQ = 16
C_SIZE = C_PFQ + PFQ

# ---- fint columns ----------------------------------------------------------
# Ordered by how often a packet touches them (rows are 64-byte aligned, see tracker):
# line 0: every packet
F_STATE = 0
F_INIT_REV = 1  # 1 when the initiator sends b -> a
F_PKTS0 = 2  # initiator packets
F_PKTS1 = 3
F_BYTES0 = 4
F_BYTES1 = 5
F_LAST = 6
# tunnels (inner flows): F_TUN is layout's TUN_WORD_* packed word (0: never encapsulated),
# read on every packet; F_TUN_PAR the low 32 bits of the first two parents' flow ids
# (parent 1 in bits 32..63); F_TUN_ST0 / F_TUN_ST1 their start times
F_TUN = 7
# line 1: every packet (payload, deadline, id) and TCP packets
F_PAY0 = 8
F_PAY1 = 9
F_HLEN = 10
F_FLAGS0 = 11
F_FLAGS1 = 12
F_FIN_SIDE = 13  # side whose FIN moved Established -> FinWait, -1 none
F_TIMEOUT = 14  # idle timeout, ns
F_ID = 15
# 16..36: TCP sequence tracking and handshake times (tcpseq.F_*; line 2 is what every TCP
# packet touches)
# cold: written when the flow starts, read when it ends, or used by features that are off
# unless asked for
F_STARTED = 37
F_PROTO = 38  # L4 protocol number of the first packet
F_ICMP = 39  # ICMP_VALID | type << 8 | code of the first packet, 0 if not ICMP
F_FREE = 40  # free-slot stack storage (indexed by stack position, not by slot)
F_TUN_PAR = 41
F_TUN_ST0 = 42
F_TUN_ST1 = 43
# active timeout
F_NEXT_UPD = 44  # time the next Update is due (started + k * active timeout); NO_FLOW: never
F_UPD_PKTS0 = 45  # initiator packets reported by the Updates so far
F_UPD_PKTS1 = 46
F_UPD_BYTES0 = 47  # initiator frame bytes reported by the Updates so far
F_UPD_BYTES1 = 48
# context: where the flow's first packet was seen
F_L2 = 49  # iface | outer VLAN << 16 | inner VLAN << 28 | tags << 40 | has_mac << 48
F_MAC_INIT = 50  # the initiator's MAC (48 bits)
F_MAC_RESP = 51  # the responder's MAC
# dns and kernel drops
F_DNS = 52  # DF_* bits | transaction id << 8 | querier side << 24 | dns_qlen << 32
F_DNS_QTS = 53  # time of the first query, ns
F_DNS_RTT = 54  # first query to its response, ns
F_DNS_INFO = 55  # qtype | rcode << 16 | answers << 24
F_DROPS0 = 56  # kernel drops of the initiator's packets (live)
F_DROPS1 = 57
F_DROP_REASON = 58  # most frequent drop reason (live)
F_NAME = 59  # the flow's DNS name slot + 1 (0: none)
F_NAME_FREE = 60  # free name-slot stack storage (indexed by stack position, not by slot)
# 61..63 free; 64 columns keep every row on whole cache lines
F_SIZE = 64

# F_DNS bits
DF_QUERY = 0x1  # a query was seen (id, side, ts, name/qtype of the first one)
DF_RESPONSE = 0x2  # rcode / answers are set (response to the first query, or a lone one)
DF_RTT = 0x4  # F_DNS_RTT is set
DF_NAME = 0x8  # the name and qtype are set
#: fhist rows per DNS name in the name pool (ctl[C_DNS])
NAME_ROWS = DNS_NAME_MAX // HISTORY_MAX

NO_FLOW = np.iinfo(np.int64).max  # deadline of a free slot (its serial is -1: FREE_SERIAL)
#: Slots per block of ``fdl``'s deadline lower bounds (see the module docstring).
DL_BLOCK_SHIFT = 6
DL_BLOCK = 1 << DL_BLOCK_SHIFT
FREE_SERIAL = -1

MAX_EVENTS_PER_PACKET = 5

# status returned by track_batch
S_DONE = 0  # every packet consumed
S_EV_FULL = 1  # the event buffer is full: drain it and call again
S_PAUSED = 2  # paused after a packet that created a flow (C_PAUSE_NEW)

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


@inline_kernel
def _mix(h, w):
    h = (h ^ w) * _M1
    h ^= h >> np.uint64(31)
    return h


@inline_kernel
def key_hash(k0, k1, k2, k3, k4):
    """64-bit hash of a 5-word key (uint64 each)."""
    h = _GOLD
    h = _mix(h, k0)
    h = _mix(h, k1)
    h = _mix(h, k2)
    h = _mix(h, k3)
    h = _mix(h, k4)
    h = (h ^ (h >> np.uint64(27))) * _M2
    return h ^ (h >> np.uint64(33))


@inline_kernel
def extract_key(pkts, i, kind):
    """Key words and orientation of packet ``i``.

    Returns ``(ok, k0, k1, k2, k3, k4, rev)``: ``ok`` is False for an
    unmatched packet; ``rev`` is 1 when the packet travels b -> a.
    """
    return extract_key_ports(pkts, i, kind, -1, -1, False)


# key_icmp: row 0 ICMP, row 1 ICMPv6: the paired type of each type, -1 if none
ICMP_PAIR = icmp_pair_table()


@inline_kernel
def icmp_key_ports(p):
    """key_icmp: give an ICMP/ICMPv6 row (PF_ICMP, no ports yet) the ports Zeek keys it by:
    (type, paired type) for request/reply types, else (type, code); sets PF_PORTS."""
    t = np.int64(p.icmp_type)
    other = np.int64(ICMP_PAIR[1 if p.proto == IPPROTO_ICMPV6 else 0, t])
    p.sport = t
    p.dport = other if other >= 0 else np.int64(p.icmp_code)
    p.pflags = p.pflags | PF_PORTS


@inline_kernel
def extract_key_ports(pkts, i, kind, fsp, fdp, kvlan):
    """``extract_key`` with ports ``fsp``/``fdp`` when ``fsp >= 0`` (a non-first
    fragment keyed with its datagram's ports from the fragment table); with ``kvlan``
    the packet's outer VLAN id goes into the metadata word (``key_vlan``)."""
    p = pkts[i]
    z = np.uint64(0)
    l3 = np.int64(p.l3)
    vbits = meta_vlan(p.vlan) if kvlan and p.nvlan > 0 else z
    if kind == EXTRACT_MAC_PAIR:
        if (p.pflags & PF_MAC) == 0:
            return False, z, z, z, z, z, 0
        s = np.uint64(p.smac)
        d = np.uint64(p.dmac)
        meta = (np.uint64(EXTRACT_MAC_PAIR) << KIND_SHIFT) | vbits
        if s <= d:
            return True, z, s, z, d, meta, 0
        return True, z, d, z, s, meta, 1
    if l3 != 4 and l3 != 6:
        return False, z, z, z, z, z, 0
    sh = np.uint64(p.src_hi)
    sl = np.uint64(p.src_lo)
    dh = np.uint64(p.dst_hi)
    dl = np.uint64(p.dst_lo)
    if kind == EXTRACT_IP_PAIR:
        meta = (np.uint64(EXTRACT_IP_PAIR) << KIND_SHIFT) | (np.uint64(l3) << L3_SHIFT) | vbits
        if sh < dh or (sh == dh and sl <= dl):
            return True, sh, sl, dh, dl, meta, 0
        return True, dh, dl, sh, sl, meta, 1
    sp = np.uint64(p.sport)
    dp = np.uint64(p.dport)
    if (p.pflags & PF_PORTS) == 0:
        sp = z
        dp = z
    if fsp >= 0:
        sp = np.uint64(fsp)
        dp = np.uint64(fdp)
    base = (np.uint64(l3) << L3_SHIFT) | (np.uint64(p.proto) << PROTO_SHIFT) | vbits
    if kind == EXTRACT_FIVE_TUPLE_DIRECTIONAL:
        meta = (np.uint64(EXTRACT_FIVE_TUPLE_DIRECTIONAL) << KIND_SHIFT) | base
        return True, sh, sl, dh, dl, meta | (sp << PORT_A_SHIFT) | dp, 0
    if sh < dh or (sh == dh and (sl < dl or (sl == dl and sp <= dp))):
        return True, sh, sl, dh, dl, base | (sp << PORT_A_SHIFT) | dp, 0
    return True, dh, dl, sh, sl, base | (dp << PORT_A_SHIFT) | sp, 1


@inline_kernel
def tcp_transition(state, side, flags, fin_side):
    """One TCP state-machine step (semantics.md rules 0-6).

    ``side`` 0 = initiator, 1 = responder. Returns ``(state, fin_side)``.
    """
    if flags & TH_RST:
        return ST_RESET, fin_side
    if state == ST_ACTIVE:
        if side == 0 and (flags & TH_SYN):
            return ST_SYN_SENT, fin_side
    elif state == ST_SYN_SENT:
        if side == 1 and (flags & TH_SYN) and (flags & TH_ACK):
            return ST_SYN_RECEIVED, fin_side
    elif state == ST_SYN_RECEIVED:
        if side == 0 and (flags & TH_ACK):
            return ST_ESTABLISHED, fin_side
    elif state == ST_ESTABLISHED:
        if flags & TH_FIN:
            return ST_FIN_WAIT, side
    elif state == ST_FIN_WAIT:
        if (flags & TH_FIN) and side != fin_side:
            return ST_CLOSING_TCP, fin_side
    elif state == ST_CLOSING_TCP:
        if flags & TH_ACK:
            return ST_CLOSED, fin_side
    return state, fin_side


@inline_kernel
def history_append(fhist, slot, hlen, side, flags, payload_len):
    """Append this packet's letters (S, F, R, D; lower case for the responder).

    Returns the new history length (at most HISTORY_MAX).
    """
    lower = 32 if side == 1 else 0
    if (flags & TH_SYN) and hlen < HISTORY_MAX:
        fhist[slot, hlen] = 83 + lower  # 'S'
        hlen += 1
    if (flags & TH_FIN) and hlen < HISTORY_MAX:
        fhist[slot, hlen] = 70 + lower  # 'F'
        hlen += 1
    if (flags & TH_RST) and hlen < HISTORY_MAX:
        fhist[slot, hlen] = 82 + lower  # 'R'
        hlen += 1
    if payload_len > 0 and hlen < HISTORY_MAX:
        fhist[slot, hlen] = 68 + lower  # 'D'
        hlen += 1
    return hlen


# ---- table maintenance -----------------------------------------------------


@inline_kernel
def _find(table, fkey, mask, k0, k1, k2, k3, k4):
    """Return (position, slot) of the key, or (insert position, -1)."""
    pos = np.int64(key_hash(k0, k1, k2, k3, k4) & np.uint64(mask))
    while True:
        s = np.int64(table[pos]) - 1
        if s < 0:
            return pos, -1
        if (
            fkey[s, 4] == k4
            and fkey[s, 1] == k1
            and fkey[s, 3] == k3
            and fkey[s, 0] == k0
            and fkey[s, 2] == k2
        ):
            return pos, s
        pos = (pos + 1) & mask


#: Prefetch distances in packets (track_batch): the table entry of packet i + PF_FAR's key,
#: then the flow rows that entry names at i + PF_NEAR. A batch's flows are scattered over
#: the tables, so without the hints each packet waits on two dependent cache misses (table
#: entry, then key row) before the rest of its row is even requested.
PF_FAR = 8
PF_NEAR = 4
#: ... and the row itself at i + PF_ROW (the reader thread wrote it, on the other core): the
#: bytes every packet reads, ``ts`` .. ``l4_off`` and ``tun_type`` .. the row's end
#: (tunnel, DNS), as points no more than a cache line apart.
PF_ROW = 16
_ROW_MID = ROW_DTYPE.fields["first_ts"][1] - 1
_ROW_TAIL = ROW_DTYPE.fields["tun_type"][1]
_ROW_END = ROW_DTYPE.itemsize - 1


@inline_kernel
def _prefetch_entry(ctl, table, mask, pkts, j, kind, kvlan):
    """Stage 1 for packet ``j``: hash its key, start loading its table entry and note the
    position (-1: no key). Hints only: the packet's own turn looks everything up again."""
    ok, k0, k1, k2, k3, k4, _ = extract_key_ports(pkts, j, kind, -1, -1, kvlan)
    pos = np.int64(key_hash(k0, k1, k2, k3, k4) & np.uint64(mask)) if ok else np.int64(-1)
    if pos >= 0:
        prefetch(table, pos, 0, 0)
    ctl[C_PFQ + (j & (PFQ - 1))] = pos


@inline_kernel
def _prefetch_rows(ctl, table, fkey, fint, fhist, fdl, j):
    """Stage 2 for packet ``j``: start loading the rows of the flow its table entry names
    (key, the three hot fint lines, history, deadline)."""
    pos = ctl[C_PFQ + (j & (PFQ - 1))]
    if pos >= 0:
        s = np.int64(table[pos]) - 1
        if s >= 0:
            prefetch(fkey, s, 0, 0)
            prefetch(fkey, s, KEY_WORDS - 1, 0)
            prefetch(fint, s, 0, 1)
            prefetch(fint, s, 8, 1)
            prefetch(fint, s, 16, 1)
            prefetch(fhist, s, 0, 1)
            prefetch(fdl, s, 0, 1)


#: Flows ahead in a sweep whose rows are requested before their turn: an Ended record reads
#: the whole fint row and the key, which nothing else has touched since the flow's last packet.
PF_SWEEP = 2


@inline_kernel
def _prefetch_flow(fkey, fint, fhist, s):
    """Start loading every line of slot ``s``'s fint row, its key and its history."""
    prefetch(fkey, s, 0, 0)
    prefetch(fkey, s, KEY_WORDS - 1, 0)
    for c in range(0, F_SIZE, 8):
        prefetch(fint, s, c, 1)
    prefetch(fhist, s, 0, 0)


@inline_kernel
def _home(fkey, t, mask):
    """Table position slot ``t``'s key hashes to (where its probe starts)."""
    return np.int64(
        key_hash(fkey[t, 0], fkey[t, 1], fkey[t, 2], fkey[t, 3], fkey[t, 4]) & np.uint64(mask))


@inline_kernel
def _take_slot(ctl, fint, top, col, high):
    """A slot from the stack of freed ones (``ctl[top]`` entries, kept in ``fint[:, col]``),
    else the next never-used one (``ctl[high]``)."""
    if ctl[top] > 0:
        ctl[top] -= 1
        return fint[ctl[top], col]
    k = ctl[high]
    ctl[high] = k + 1
    return k


@inline_kernel
def _give_slot(ctl, fint, top, col, k):
    """Slot ``k`` back onto the stack ``_take_slot`` takes from."""
    fint[ctl[top], col] = k
    ctl[top] += 1


@kernel
def _table_delete(table, fkey, mask, slot):
    """Remove ``slot`` from the index (linear probing, backward-shift delete)."""
    pos, s = _find(table, fkey, mask, fkey[slot, 0], fkey[slot, 1], fkey[slot, 2],
                   fkey[slot, 3], fkey[slot, 4])
    if s != slot:
        return
    hole = pos
    j = (hole + 1) & mask
    while True:
        t = np.int64(table[j]) - 1
        if t < 0:
            break
        home = _home(fkey, t, mask)
        # move t into the hole when its home is not cyclically in (hole, j]
        if ((j - home) & mask) >= ((j - hole) & mask):
            table[hole] = table[j]
            hole = j
        j = (j + 1) & mask
    table[hole] = 0


@kernel
def _lq_compact(ctl, fdl, lq):
    """Drop stale access-queue entries, keeping the live ones in order."""
    qm = lq.shape[0] - 1
    w = ctl[C_LQ_HEAD]
    for r in range(ctl[C_LQ_HEAD], ctl[C_LQ_TAIL]):
        rs = lq[r & qm, 0]
        if fdl[rs, 1] == lq[r & qm, 1]:
            if w != r:
                lq[w & qm, 0] = rs
                lq[w & qm, 1] = lq[r & qm, 1]
            w += 1
    ctl[C_LQ_TAIL] = w


@inline_kernel
def _touch(ctl, fdl, lq, s):
    """Make ``s`` the most recently touched flow."""
    ser = ctl[C_TOUCH]
    ctl[C_TOUCH] = ser + 1
    fdl[s, 1] = ser
    q = lq.shape[0]
    if ctl[C_LQ_TAIL] - ctl[C_LQ_HEAD] >= q:
        _lq_compact(ctl, fdl, lq)
    t = ctl[C_LQ_TAIL] & (q - 1)
    lq[t, 0] = s
    lq[t, 1] = ser
    ctl[C_LQ_TAIL] += 1


@kernel
def _least_recent(ctl, fdl, lq):
    """The least recently touched open flow (pops stale queue entries)."""
    qm = lq.shape[0] - 1
    while True:
        h = ctl[C_LQ_HEAD] & qm
        s = lq[h, 0]
        if fdl[s, 1] == lq[h, 1]:
            return s
        ctl[C_LQ_HEAD] += 1


@kernel
def _emit_head(ev, e, kind, ts, fkey, fint, s):
    r = ev[e]
    r.kind = kind
    r.ts = ts
    for w in range(5):
        r.key[w] = fkey[s, w]
    r.flow_id = fint[s, F_ID]
    r.init_rev = fint[s, F_INIT_REV]
    return r


HIST_SHIFT = HISTORY_MAX.bit_length() - 1  # HISTORY_MAX is a power of two


@inline_kernel
def _name_row(ctl, k):
    """First fhist row of name slot ``k`` (a flow holds at most one: its first query
    name; a slot goes back to the stack when its flow ends)."""
    return ctl[C_MAX_FLOWS] + k * NAME_ROWS


@inline_kernel
def _dns_record(ctl, fint, fhist, s, r):
    """The DNS fields of the Ended record ``r`` of flow ``s``."""
    d = fint[s, F_DNS]
    bits = 0
    r.dns_qlen = 0
    if ctl[C_DNS] != 0:
        if d & DF_NAME:
            bits |= EVD_QUERY
            ql = (d >> 32) & 0xFF
            r.dns_qlen = ql
            row = _name_row(ctl, fint[s, F_NAME] - 1)
            for j in range(ql):
                r.dns_qname[j] = fhist[row + (j >> HIST_SHIFT), j & (HISTORY_MAX - 1)]
        if d & DF_RESPONSE:
            bits |= EVD_RESPONSE
        if d & DF_RTT:
            bits |= EVD_RTT
    info = fint[s, F_DNS_INFO]
    r.dns = bits
    r.dns_qtype = info & 0xFFFF
    r.dns_rcode = (info >> 16) & 0xFF
    r.dns_answers = (info >> 24) & 0xFFFF
    r.dns_rtt = fint[s, F_DNS_RTT]


@inline_kernel
def _dns_step(ctl, fint, fhist, s, side, p, ts, nm):
    """One DNS message (``p.dns_flags`` has DNS_VALID, query name in ``nm``) on flow ``s``
    from ``side``.

    The flow keeps its first query (transaction id, side, time, name, qtype);
    the first response from the other side with the same id sets rcode, answer
    count and ``dns_rtt``. A response seen before any query (the capture began
    after it) gives the name, qtype, rcode and answers, without an RTT.
    """
    ctl[C_DNS_MSGS] += 1
    d = fint[s, F_DNS]
    f = np.int64(p.dns_flags)
    if d & DF_RESPONSE:
        return
    resp = (f & DNS_QR) != 0
    if resp and (d & DF_QUERY) != 0:
        if np.int64(p.dns_id) != ((d >> 8) & 0xFFFF) or side == ((d >> 24) & 1):
            return
        fint[s, F_DNS_RTT] = ts - fint[s, F_DNS_QTS]
        info = fint[s, F_DNS_INFO] & 0xFFFF
        fint[s, F_DNS_INFO] = info | (np.int64(p.dns_rcode) << 16) | (
            np.int64(p.dns_answers) << 24)
        fint[s, F_DNS] = d | DF_RESPONSE | DF_RTT
        ctl[C_DNS_MATCHED] += 1
        return
    if not resp and (d & DF_QUERY) != 0:
        return
    d = np.int64(p.dns_id) << 8 | np.int64(side) << 24
    info = np.int64(0)
    if f & DNS_QUESTION:
        ql = np.int64(p.dns_qlen)
        k = fint[s, F_NAME] - 1
        if k < 0:
            k = _take_slot(ctl, fint, C_NAME_TOP, F_NAME_FREE, C_NAME_HIGH)
            fint[s, F_NAME] = k + 1
        row = _name_row(ctl, k)
        for j in range(ql):
            fhist[row + (j >> HIST_SHIFT), j & (HISTORY_MAX - 1)] = nm[j]
        d |= DF_NAME | (ql << 32)
        info = np.int64(p.dns_qtype)
    if resp:
        d |= DF_RESPONSE
        info |= (np.int64(p.dns_rcode) << 16) | (np.int64(p.dns_answers) << 24)
    else:
        d |= DF_QUERY
        fint[s, F_DNS_QTS] = ts
    fint[s, F_DNS] = d
    fint[s, F_DNS_INFO] = info


@kernel
def _emit_counts(ctl, fint, fhist, r, s):
    """The counters, times, flags, state and history of flow ``s`` into record ``r``
    (Ended and Update records)."""
    r.to_state = fint[s, F_STATE]
    r.from_state = fint[s, F_STATE]
    r.pkts[0] = fint[s, F_PKTS0]
    r.pkts[1] = fint[s, F_PKTS1]
    r.bytes[0] = fint[s, F_BYTES0]
    r.bytes[1] = fint[s, F_BYTES1]
    r.payload[0] = fint[s, F_PAY0]
    r.payload[1] = fint[s, F_PAY1]
    r.started = fint[s, F_STARTED]
    r.last_seen = fint[s, F_LAST]
    r.flags_or[0] = fint[s, F_FLAGS0]
    r.flags_or[1] = fint[s, F_FLAGS1]
    h = fint[s, F_HLEN]
    r.hist_len = h
    for j in range(HISTORY_MAX):
        r.history[j] = fhist[s, j] if j < h else 0
    r.side = 0
    r.length = 0
    r.icmp = fint[s, F_ICMP]
    r.sample_rate = max(ctl[C_SAMPLE_RATE], 1)
    l2 = fint[s, F_L2]
    r.iface = l2 & 0xFFFF
    r.vlan[0] = (l2 >> 16) & 0xFFF
    r.vlan[1] = (l2 >> 28) & 0xFFF
    r.nvlan = (l2 >> 40) & 0xFF
    r.has_mac = (l2 >> 48) & 1
    r.init_mac = fint[s, F_MAC_INIT]
    r.resp_mac = fint[s, F_MAC_RESP]
    r.rtt_resp = fint[s, F_RTT_RESP]
    r.rtt_init = fint[s, F_RTT_INIT]
    for d in range(2):
        r.retrans_pkts[d] = fint[s, F_RTX0 + d]
        r.retrans_bytes[d] = fint[s, F_RTXB0 + d]
        r.zero_win[d] = fint[s, F_ZW0 + d]
        r.ooo_pkts[d] = fint[s, F_OOO0 + d]
    if ctl[C_ACTIVE_TMO] > 0:
        r.exported_pkts[0] = fint[s, F_UPD_PKTS0]
        r.exported_pkts[1] = fint[s, F_UPD_PKTS1]
        r.exported_bytes[0] = fint[s, F_UPD_BYTES0]
        r.exported_bytes[1] = fint[s, F_UPD_BYTES1]
    else:
        r.exported_pkts[0] = 0
        r.exported_pkts[1] = 0
        r.exported_bytes[0] = 0
        r.exported_bytes[1] = 0


@kernel
def _end_flow(ctl, table, fkey, fint, fhist, fz, fzh, fdl, ev, e, s, reason, ts):
    """Remove slot ``s`` and, if asked for, write its Ended event at ``ev[e]``.

    Returns the next free event index.
    """
    if ctl[C_MASK] & (1 << EV_ENDED):
        r = _emit_head(ev, e, EV_ENDED, ts, fkey, fint, s)
        r.reason = reason
        _emit_counts(ctl, fint, fhist, r, s)
        if ctl[C_ZEEK]:
            for w in range(ZEEK_WORDS):
                r.zeek[w] = fz[s, w]
            zl = min(fz[s, Z_HLEN], ZEEK_HISTORY_MAX)
            r.zhist_len = zl
            for j in range(ZEEK_HISTORY_MAX):
                r.zhist[j] = fzh[s, j] if j < zl else 0
        else:
            r.zhist_len = 0
        w = fint[s, F_TUN]
        r.tun = w
        npar = (w >> TUN_WORD_NPAR_SHIFT) & 0xF
        last = ctl[C_SERIAL] - 1
        for k in range(TUN_PARENTS_MAX):
            if k < npar:
                low = (fint[s, F_TUN_PAR] >> (32 * k)) & 0xFFFFFFFF
                # the newest flow id with these low 32 bits
                r.tun_parent[k] = last - ((last - low) & 0xFFFFFFFF)
                r.tun_parent_started[k] = fint[s, F_TUN_ST0 + k]
            else:
                r.tun_parent[k] = -1
                r.tun_parent_started[k] = 0
        _dns_record(ctl, fint, fhist, s, r)
        r.drops[0] = fint[s, F_DROPS0]
        r.drops[1] = fint[s, F_DROPS1]
        r.drop_reason = fint[s, F_DROP_REASON]
        e += 1
    _table_delete(table, fkey, ctl[C_TABLE_MASK], s)
    if fint[s, F_NAME] > 0:
        _give_slot(ctl, fint, C_NAME_TOP, F_NAME_FREE, fint[s, F_NAME] - 1)
        fint[s, F_NAME] = 0
    fdl[s, 0] = NO_FLOW
    fdl[s, 1] = FREE_SERIAL
    _give_slot(ctl, fint, C_FREE_TOP, F_FREE, s)
    ctl[C_COUNT] -= 1
    ctl[C_ENDED] += 1
    ctl[C_ENDED_PKTS] += fint[s, F_PKTS0] + fint[s, F_PKTS1]
    if reason == END_FIN:
        ctl[C_ENDED_FIN] += 1
    elif reason == END_RST:
        ctl[C_ENDED_RST] += 1
    elif reason == END_IDLE:
        ctl[C_ENDED_IDLE] += 1
    elif reason == END_EVICTED:
        ctl[C_EVICTED] += 1
    else:
        ctl[C_ENDED_SHUTDOWN] += 1
    return e


@kernel
def _sift_down(sbuf, root, end):
    """Heap sift on rows of ``sbuf`` (slot, serial), ordered by serial."""
    while True:
        child = 2 * root + 1
        if child >= end:
            return
        if child + 1 < end and sbuf[child + 1, 1] > sbuf[child, 1]:
            child += 1
        if sbuf[root, 1] >= sbuf[child, 1]:
            return
        for c in range(2):
            t = sbuf[root, c]
            sbuf[root, c] = sbuf[child, c]
            sbuf[child, c] = t
        root = child


@kernel
def _sort_by_serial(sbuf, n):
    """In-place heapsort of ``sbuf[:n]`` by serial (no allocation)."""
    for start in range(n // 2 - 1, -1, -1):
        _sift_down(sbuf, start, n)
    for end in range(n - 1, 0, -1):
        for c in range(2):
            t = sbuf[0, c]
            sbuf[0, c] = sbuf[end, c]
            sbuf[end, c] = t
        _sift_down(sbuf, 0, end)


def dl_rows(cap: int) -> int:
    """Rows of ``fdl`` for ``cap`` slots: one per slot, then one per block of DL_BLOCK."""
    return cap + (cap + DL_BLOCK - 1) // DL_BLOCK


@inline_kernel
def _set_deadline(ctl, fdl, s, deadline):
    """Slot ``s``'s idle deadline, and its block's lower bound with it."""
    fdl[s, 0] = deadline
    b = ctl[C_MAX_FLOWS] + (s >> DL_BLOCK_SHIFT)
    if deadline < fdl[b, 0]:
        fdl[b, 0] = deadline


@kernel
def _sweep_collect(ctl, fint, fdl, sbuf, now, reason):
    """Start a sweep: the expired (or, for END_SHUTDOWN, all) flows in access order.

    Free slots are told by their serial (FREE_SERIAL), never by their deadline,
    so no packet time (INT64_MAX included) can make a sweep end a free slot.
    A block whose lower bound is later than ``now`` holds nothing due and is
    skipped; a block scanned gets the earliest deadline of its flows that stay
    (the others end in this sweep).
    """
    n = 0
    shutdown = reason == END_SHUTDOWN
    high = ctl[C_HIGH]
    cap = ctl[C_MAX_FLOWS]
    for b in range((high + DL_BLOCK - 1) >> DL_BLOCK_SHIFT):
        if not shutdown and fdl[cap + b, 0] > now:
            continue
        low = NO_FLOW
        for s in range(b << DL_BLOCK_SHIFT, min((b + 1) << DL_BLOCK_SHIFT, high)):
            if fdl[s, 1] == FREE_SERIAL:
                continue
            d = fdl[s, 0]
            if shutdown or d <= now:
                sbuf[n, 0] = s
                sbuf[n, 1] = fdl[s, 1]
                n += 1
            elif d < low:
                low = d
        fdl[cap + b, 0] = low
    _sort_by_serial(sbuf, n)
    ctl[C_SWEEP_POS] = 0
    ctl[C_SWEEP_N] = n
    ctl[C_SWEEP_NOW] = now
    ctl[C_SWEEP_REASON] = reason


@kernel
def _sweep_step(ctl, table, fkey, fint, fhist, fz, fzh, fdl, sbuf, ev, e, cap_ev):
    """Continue the sweep in progress; returns (e, finished)."""
    now = ctl[C_SWEEP_NOW]
    reason = ctl[C_SWEEP_REASON]
    k = ctl[C_SWEEP_POS]
    n = ctl[C_SWEEP_N]
    mask = ctl[C_TABLE_MASK]
    while k < n:
        if e >= cap_ev:
            ctl[C_SWEEP_POS] = k
            return e, False
        if k + PF_SWEEP < n:
            _prefetch_flow(fkey, fint, fhist, sbuf[k + PF_SWEEP, 0])
        if k + 1 < n:  # its key requested a turn ago: the table entry it will delete
            prefetch(table, _home(fkey, sbuf[k + 1, 0], mask), 0, 1)
        e = _end_flow(ctl, table, fkey, fint, fhist, fz, fzh, fdl, ev, e, sbuf[k, 0], reason,
                      now)
        k += 1
    ctl[C_SWEEP_POS] = -1
    return e, True


@kernel
def _update_scan(ctl, fkey, fint, fhist, fdl, ev, e, cap_ev):
    """Continue the scan for due Updates (active timeout) in progress; returns
    ``(e, finished)``. Every open flow whose next Update is due at the scan's time
    gets an Update record (its counters so far, ``ts`` = the scan's time); its
    next one is due at the first ``started + k * active_timeout`` after that time.
    """
    now = ctl[C_UPD_NOW]
    tmo = ctl[C_ACTIVE_TMO]
    s = ctl[C_UPD_POS] - 1
    high = ctl[C_HIGH]
    while s < high:
        if fdl[s, 1] != FREE_SERIAL and fint[s, F_NEXT_UPD] <= now:
            if e >= cap_ev:
                ctl[C_UPD_POS] = s + 1
                return e, False
            r = _emit_head(ev, e, EV_UPDATE, now, fkey, fint, s)
            r.reason = 0
            _emit_counts(ctl, fint, fhist, r, s)
            r.zhist_len = 0
            e += 1
            ctl[C_UPDATES] += 1
            fint[s, F_UPD_PKTS0] = fint[s, F_PKTS0]
            fint[s, F_UPD_PKTS1] = fint[s, F_PKTS1]
            fint[s, F_UPD_BYTES0] = fint[s, F_BYTES0]
            fint[s, F_UPD_BYTES1] = fint[s, F_BYTES1]
            start = fint[s, F_STARTED]
            fint[s, F_NEXT_UPD] = sat_add(start, ((now - start) // tmo + 1) * tmo)
        s += 1
    ctl[C_UPD_POS] = 0
    return e, True


@inline_kernel
def _updates_on(ctl):
    return ctl[C_ACTIVE_TMO] > 0 and (ctl[C_MASK] & (1 << EV_UPDATE)) != 0


@kernel
def sweep(ctl, table, fkey, fint, fhist, fz, fzh, fdl, lq, sbuf, ev, e, now, reason):
    """End every flow idle at ``now`` (``reason`` END_IDLE) or every flow.

    (``reason`` END_SHUTDOWN). Starts a sweep unless one is in progress, then
    runs it until done or the event buffer is full. Returns ``(e, finished)``.
    An idle sweep with an active timeout then gives the flows whose interim
    record is due their Update (``_update_scan``).
    """
    if ctl[C_UPD_POS] == 0:
        if ctl[C_SWEEP_POS] == -1:
            _sweep_collect(ctl, fint, fdl, sbuf, now, reason)
        e, done = _sweep_step(ctl, table, fkey, fint, fhist, fz, fzh, fdl, sbuf, ev, e,
                              ev.shape[0])
        if not done or reason != END_IDLE or not _updates_on(ctl):
            return e, done
        ctl[C_UPD_POS] = 1
        ctl[C_UPD_NOW] = now
    return _update_scan(ctl, fkey, fint, fhist, fdl, ev, e, ev.shape[0])


@kernel
def end_keys(ctl, table, fkey, fint, fhist, fz, fzh, fdl, ev, e, keys, start, now, reason):
    """End the open flows whose key words are ``keys[start:]`` (uint64[n, 5]) with
    ``reason`` at ``now``; keys without an open flow are skipped. Not to be called while a
    sweep is in progress (its slots could end twice). Returns ``(e, next)``: ``next`` is
    below ``n`` when the event buffer filled up (call again from there).
    """
    mask = ctl[C_TABLE_MASK]
    i = start
    while i < keys.shape[0]:
        if e >= ev.shape[0]:
            return e, i
        _pos, s = _find(table, fkey, mask, keys[i, 0], keys[i, 1], keys[i, 2], keys[i, 3],
                        keys[i, 4])
        if s >= 0:
            e = _end_flow(ctl, table, fkey, fint, fhist, fz, fzh, fdl, ev, e, s, reason, now)
        i += 1
    return e, i


# ---- the steps of one packet -------------------------------------------------


@inline_kernel
def sat_add(a, b):
    """``a + b`` for b >= 0, saturating at INT64_MAX (deadlines of far-future packets)."""
    r = a + b
    return r if r >= a else NO_FLOW


@kernel
def _auto_sweep(ctl, table, fkey, fint, fhist, fz, fzh, fdl, sbuf, ev, e, cap_ev, ts):
    """The automatic sweep by packet time (``sweep_interval``), when due at ``ts``.

    Returns ``(e, ok)``; ``ok`` is False when the event buffer filled up (the
    caller returns S_EV_FULL and the sweep resumes on the next call).
    """
    first = ctl[C_NEXT_SWEEP] == 0
    ctl[C_NEXT_SWEEP] = sat_add(ts, ctl[C_SWEEP_INTERVAL])
    if first:
        return e, True
    _sweep_collect(ctl, fint, fdl, sbuf, ts, END_IDLE)
    e, done = _sweep_step(ctl, table, fkey, fint, fhist, fz, fzh, fdl, sbuf, ev, e, cap_ev)
    if done and _updates_on(ctl):
        ctl[C_UPD_POS] = 1
        ctl[C_UPD_NOW] = ts
        e, done = _update_scan(ctl, fkey, fint, fhist, fdl, ev, e, cap_ev)
    return e, done and e + MAX_EVENTS_PER_PACKET <= cap_ev


@inline_kernel
def _new_flow(ctl, table, fkey, fint, fhist, fz, fzh, fdl, lq, ev, e, pkts, i, pos,
              k0, k1, k2, k3, k4, rev, has_tcp):
    """Create the flow of packet ``i`` (evicting the least recently touched flow when
    the table is full) and emit its Started event. Returns ``(e, slot, side)``."""
    p = pkts[i]
    if ctl[C_COUNT] >= ctl[C_MAX_FLOWS]:
        victim = _least_recent(ctl, fdl, lq)
        e = _end_flow(ctl, table, fkey, fint, fhist, fz, fzh, fdl, ev, e, victim,
                      END_EVICTED, p.ts)
        pos, _gone = _find(table, fkey, ctl[C_TABLE_MASK], k0, k1, k2, k3, k4)
    # never-used rows are touched only when taken: memory grows with the flows
    s = _take_slot(ctl, fint, C_FREE_TOP, F_FREE, C_HIGH)
    table[pos] = s + 1
    fkey[s, 0] = k0
    fkey[s, 1] = k1
    fkey[s, 2] = k2
    fkey[s, 3] = k3
    fkey[s, 4] = k4
    flags = np.int64(p.tcp_flags)
    init_rev = rev
    if ctl[C_INFER] != 0 and has_tcp and (flags & TH_SYN) != 0 and (flags & TH_ACK) != 0:
        init_rev = 1 - rev
    proto = np.int64(p.proto) if p.l3 == 4 or p.l3 == 6 else 0
    fint[s, F_STATE] = ST_ACTIVE
    fint[s, F_INIT_REV] = init_rev
    fint[s, F_PKTS0] = 0
    fint[s, F_PKTS1] = 0
    fint[s, F_BYTES0] = 0
    fint[s, F_BYTES1] = 0
    fint[s, F_PAY0] = 0
    fint[s, F_PAY1] = 0
    # live rows carry the kernel's first-packet time (the flow's first event may be lost)
    fint[s, F_STARTED] = p.first_ts if (p.pflags & (PF_ABS | PF_SYNC)) != 0 else p.ts
    fint[s, F_ID] = ctl[C_SERIAL]
    fint[s, F_HLEN] = 0
    fint[s, F_FLAGS0] = 0
    fint[s, F_FLAGS1] = 0
    fint[s, F_PROTO] = proto
    fint[s, F_TIMEOUT] = ctl[C_TMO + proto]
    fint[s, F_FIN_SIDE] = -1
    fint[s, F_ICMP] = 0
    fint[s, F_TUN] = 0
    fint[s, F_DNS] = 0
    fint[s, F_NAME] = 0
    fint[s, F_DNS_INFO] = 0
    fint[s, F_DNS_RTT] = 0
    fint[s, F_DROPS0] = 0
    fint[s, F_DROPS1] = 0
    fint[s, F_DROP_REASON] = 0
    if p.pflags & PF_ICMP:
        fint[s, F_ICMP] = ICMP_VALID | (np.int64(p.icmp_type) << 8) | p.icmp_code
    seq_reset(fint, s)
    if ctl[C_ZEEK] != 0:
        zeek_reset(fz, fzh, s)
    side = 0 if rev == init_rev else 1
    l2 = (np.int64(p.iface) | (np.int64(p.vlan) << 16) | (np.int64(p.vlan_inner) << 28)
          | (min(np.int64(p.nvlan), 255) << 40))
    if p.pflags & PF_MAC:
        l2 |= np.int64(1) << 48
        fint[s, F_MAC_INIT] = np.int64(p.dmac) if side else np.int64(p.smac)
        fint[s, F_MAC_RESP] = np.int64(p.smac) if side else np.int64(p.dmac)
    else:
        fint[s, F_MAC_INIT] = 0
        fint[s, F_MAC_RESP] = 0
    fint[s, F_L2] = l2
    if ctl[C_ACTIVE_TMO] > 0:
        fint[s, F_NEXT_UPD] = sat_add(fint[s, F_STARTED], ctl[C_ACTIVE_TMO])
        fint[s, F_UPD_PKTS0] = 0
        fint[s, F_UPD_PKTS1] = 0
        fint[s, F_UPD_BYTES0] = 0
        fint[s, F_UPD_BYTES1] = 0
    _touch(ctl, fdl, lq, s)
    ctl[C_SERIAL] += 1
    ctl[C_CREATED] += 1
    ctl[C_COUNT] += 1
    if ctl[C_MASK] & (1 << EV_STARTED):
        r = _emit_head(ev, e, EV_STARTED, fint[s, F_STARTED], fkey, fint, s)
        r.side = side
        e += 1
    return e, s, side


@inline_kernel
def _add_packet(ctl, fint, s, side, length, payload_len):
    """Count one packet (``length`` frame bytes) to ``side`` of flow ``s``."""
    ctl[C_MATCHED_PKTS] += 1
    ctl[C_MATCHED_BYTES] += length
    fint[s, F_PKTS0 + side] += 1
    fint[s, F_BYTES0 + side] += length
    fint[s, F_PAY0 + side] += payload_len


@inline_kernel
def _set_kernel_counters(ctl, fint, s, p):
    """Live sensor rows only (PF_ABS / PF_SYNC): the kernel aggregates most packets
    of a flow, so the row carries the flow's absolute counters per key orientation
    (``cnt_*0`` a -> b, ``cnt_*1`` b -> a): they replace the flow's per-side
    counters, and the matched totals grow by the difference."""
    old_p = fint[s, F_PKTS0] + fint[s, F_PKTS1]
    old_b = fint[s, F_BYTES0] + fint[s, F_BYTES1]
    fwd = fint[s, F_INIT_REV]  # the side that sends a -> b (the initiator when init_rev = 0)
    rev = 1 - fwd
    fint[s, F_PKTS0 + fwd] = np.int64(p.cnt_pkts0)
    fint[s, F_PKTS0 + rev] = np.int64(p.cnt_pkts1)
    fint[s, F_BYTES0 + fwd] = np.int64(p.cnt_bytes0)
    fint[s, F_BYTES0 + rev] = np.int64(p.cnt_bytes1)
    fint[s, F_PAY0 + fwd] = np.int64(p.cnt_pay0)
    fint[s, F_PAY0 + rev] = np.int64(p.cnt_pay1)
    fint[s, F_FLAGS0 + fwd] = np.int64(p.cnt_flags0)  # the kernel ORs every packet's flags
    fint[s, F_FLAGS0 + rev] = np.int64(p.cnt_flags1)
    fint[s, F_DROPS0 + fwd] = np.int64(p.drops0)  # kernel drops (skb:kfree_skb) so far
    fint[s, F_DROPS0 + rev] = np.int64(p.drops1)
    fint[s, F_DROP_REASON] = np.int64(p.drop_reason)
    ctl[C_MATCHED_PKTS] += fint[s, F_PKTS0] + fint[s, F_PKTS1] - old_p
    ctl[C_MATCHED_BYTES] += fint[s, F_BYTES0] + fint[s, F_BYTES1] - old_b
    if p.proto == IPPROTO_TCP:
        _set_kernel_seq(fint, s, fwd, p)


@inline_kernel
def _set_kernel_seq(fint, s, fwd, p):
    """Live TCP rows: the kernel's sequence tracking (tcpseq's rules, run on every packet in
    the flow entry) replaces the engine's, per key orientation like the other counters."""
    rev = 1 - fwd
    fint[s, F_SQ_START0 + fwd] = np.int64(p.sq_start0)
    fint[s, F_SQ_START0 + rev] = np.int64(p.sq_start1)
    fint[s, F_SQ_HIGH0 + fwd] = np.int64(p.sq_high0)
    fint[s, F_SQ_HIGH0 + rev] = np.int64(p.sq_high1)
    fint[s, F_SQ_ACKED0 + fwd] = np.int64(p.sq_acked0)
    fint[s, F_SQ_ACKED0 + rev] = np.int64(p.sq_acked1)
    fint[s, F_RTX0 + fwd] = np.int64(p.rtx0)
    fint[s, F_RTX0 + rev] = np.int64(p.rtx1)
    fint[s, F_RTXB0 + fwd] = np.int64(p.rtxb0)
    fint[s, F_RTXB0 + rev] = np.int64(p.rtxb1)
    fint[s, F_OOO0 + fwd] = np.int64(p.ooo0)
    fint[s, F_OOO0 + rev] = np.int64(p.ooo1)
    fint[s, F_ZW0 + fwd] = np.int64(p.zw0)
    fint[s, F_ZW0 + rev] = np.int64(p.zw1)
    kf = np.int64(p.sq_flags)
    fl = fint[s, F_SQ_FLAGS] & (SQ_RTT_SYN | SQ_RTT_SYNACK)  # the engine's own
    if kf & SQF_INIT0:
        fl |= SQ_INIT0 << fwd
    if kf & SQF_INIT1:
        fl |= SQ_INIT0 << rev
    if kf & SQF_FIN0:
        fl |= SQ_FIN0 << fwd
    if kf & SQF_FIN1:
        fl |= SQ_FIN0 << rev
    fint[s, F_SQ_FLAGS] = fl


@inline_kernel
def _tcp_step(ctl, fkey, fint, fhist, ev, e, s, side, flags, payload_len, ts):
    """History letters, one state transition and its Established / StateChange event.

    Returns ``(e, state)`` with the flow's state after the packet.
    """
    fint[s, F_FLAGS0 + side] |= flags
    fint[s, F_HLEN] = history_append(fhist, s, fint[s, F_HLEN], side, flags, payload_len)
    state = fint[s, F_STATE]
    new_state, fin_side = tcp_transition(state, side, flags, fint[s, F_FIN_SIDE])
    fint[s, F_FIN_SIDE] = fin_side
    rtt_step(fint, s, side, flags, state, new_state, ts)
    if new_state == state:
        return e, state
    fint[s, F_STATE] = new_state
    evmask = ctl[C_MASK]
    if new_state == ST_ESTABLISHED:
        if evmask & (1 << EV_ESTABLISHED):
            _emit_head(ev, e, EV_ESTABLISHED, ts, fkey, fint, s)
            e += 1
    elif evmask & (1 << EV_STATE_CHANGE):
        r = _emit_head(ev, e, EV_STATE_CHANGE, ts, fkey, fint, s)
        r.from_state = state
        r.to_state = new_state
        e += 1
    return e, new_state


@inline_kernel
def _kernel_terminal_state(fint, s, state, kstate):
    """Live rows: the kernel's TCP mirror is authoritative about a flow's end.

    It runs the same state machine on every packet; when it says Closed or Reset
    but the engine missed the events that got there (ring full), the flow ends
    now, in the kernel's state. Returns the state to end the flow by.
    """
    if (kstate == ST_CLOSED or kstate == ST_RESET) and state != ST_CLOSED and state != ST_RESET:
        fint[s, F_STATE] = kstate
        return kstate
    return state


@kernel
def _add_held(ctl, fint, fz, s, side, proto, zeek, hp, hb, hpay, hipb):
    """Add the fragments held for a datagram (seen before its first fragment) to the
    flow ``s`` of that first fragment, on its side."""
    ctl[C_MATCHED_PKTS] += hp
    ctl[C_MATCHED_BYTES] += hb
    ctl[C_FRAG_HELD] -= hp
    ctl[C_FRAG_RESOLVED] += hp
    ctl[C_FRAG_KEYED] += hp
    fint[s, F_PKTS0 + side] += hp
    fint[s, F_BYTES0 + side] += hb
    fint[s, F_PAY0 + side] += hpay
    if zeek:
        fz[s, Z_IP_BYTES0 + side] += hipb
        if proto != IPPROTO_TCP:
            fz[s, Z_PAY0 + side] += hpay


@kernel
def _tun_parent_row(ctl, table, fkey, fint, mask, pkts, i, kind, kvlan):
    """A PERR_TUN_PARENT row (live): the flow it names (id and start, -1 when the engine has
    none) is the parent of the next row, as the row of depth ``tun_depth`` sets it offline."""
    depth = np.int64(pkts[i].tun_depth)
    if depth >= TUN_MAX_DEPTH:
        return
    pid = np.int64(-1)
    pst = np.int64(0)
    ok, k0, k1, k2, k3, k4, _rev = extract_key_ports(pkts, i, kind, -1, -1, kvlan)
    if ok:
        _pos, s = _find(table, fkey, mask, k0, k1, k2, k3, k4)
        if s >= 0:
            pid = fint[s, F_ID]
            pst = fint[s, F_STARTED]
    ctl[C_TUN_PID + depth] = pid
    ctl[C_TUN_PST + depth] = pst


@kernel
def _tun_link(ctl, fint, fz, fzh, s, depth, ttype, key, zeek):
    """Record the encapsulation of a packet of flow ``s`` (``depth`` 0: none).

    As Zeek's Connection::CheckEncapsulation: the flow's first packet sets it; every
    later packet whose encapsulation (its parent flow) differs is a change, which adds
    that parent to the flow's tunnel parents, until TUN_MAX_CHANGES changes: a change
    after that adds the history letter X instead (Zeek's tunnel_changed limit).
    """
    w = fint[s, F_TUN]
    pid = np.int64(-1)
    pst = np.int64(0)
    low = np.int64(0)
    if depth > 0:
        pid = ctl[C_TUN_PID + depth - 1]
        pst = ctl[C_TUN_PST + depth - 1]
    first = fint[s, F_PKTS0] + fint[s, F_PKTS1] <= 1
    changes = np.int64(0)
    npar = np.int64(0)
    cur = np.int64(3)
    if w == 0:
        w = ((key & 0xFFFFFFFF) | (np.int64(ttype) << TUN_WORD_TYPE_SHIFT)
             | (np.int64(depth) << TUN_WORD_DEPTH_SHIFT))
    else:
        changes = (w >> TUN_WORD_CHANGES_SHIFT) & 0xFF
        npar = (w >> TUN_WORD_NPAR_SHIFT) & 0xF
        cur = (w >> TUN_WORD_CUR_SHIFT) & 3
    idx = np.int64(3)  # 3: no encapsulation
    if pid >= 0:
        low = pid & 0xFFFFFFFF
        par = fint[s, F_TUN_PAR]
        if npar >= 1 and (par & 0xFFFFFFFF) == low and fint[s, F_TUN_ST0] == pst:
            idx = 0
        elif npar >= 2 and ((par >> 32) & 0xFFFFFFFF) == low and fint[s, F_TUN_ST1] == pst:
            idx = 1
        else:
            idx = 2  # a parent not (yet) kept
    changed = not first and (idx != cur or idx == 2)
    add = idx == 2 and (first or changed)
    if changed:
        if changes >= TUN_MAX_CHANGES:
            add = False
            if zeek:
                zeek_limit_reached(fz, fzh, s)
        else:
            changes += 1
    if add:
        if npar < TUN_PARENTS_MAX:
            if npar == 0:
                fint[s, F_TUN_PAR] = low
            else:
                fint[s, F_TUN_PAR] = (fint[s, F_TUN_PAR] & 0xFFFFFFFF) | (low << 32)
            fint[s, F_TUN_ST0 + npar] = pst
            idx = npar
        if npar < 15:
            npar += 1
    w &= ~((np.int64(0xFF) << TUN_WORD_CHANGES_SHIFT) | (np.int64(0xF) << TUN_WORD_NPAR_SHIFT)
           | (np.int64(3) << TUN_WORD_CUR_SHIFT))
    fint[s, F_TUN] = (w | (changes << TUN_WORD_CHANGES_SHIFT) | (npar << TUN_WORD_NPAR_SHIFT)
                      | (idx << TUN_WORD_CUR_SHIFT))


@kernel
def track_batch(pkts, names, start, ctl, table, fkey, fint, fhist, fz, fzh, fdl, lq, sbuf, frk,
                frv, flt, ev, e):
    """Run packets ``pkts[start:]`` through the tracker.

    pkts: ROW_DTYPE[n]; names: uint8[n, DNS_NAME_MAX], their DNS query names (the first
    ``dns_qlen`` bytes of row i's line); ev: EVENT_DTYPE[m] with events already at ``ev[:e]``;
    frk, frv: the fragment table (``flowscope._kernels.frag``); flt: the flow filter's
    lists (``flowscope._kernels.flowfilter``).
    Returns ``(next_packet, e, status)``; status is S_DONE, S_EV_FULL (drain
    ``ev[:e]`` and call again from ``next_packet``) or S_PAUSED.

    Per packet (semantics.md "Tracker, per packet"): the automatic sweep when
    due, extract the key, find or create the flow (``_new_flow``), count the
    packet (``_add_packet``; live rows: ``_set_kernel_counters``), Zeek-style
    state, TCP history and transition (``_tcp_step``), the Packet event, and
    the end of a Closed/Reset flow. Five-tuple keys: a fragment of a TCP, UDP
    or SCTP datagram first consults the fragment table (``frag_lookup``): a
    non-first one takes its datagram's ports or is held until its first
    fragment comes, which brings the held counts into its flow
    (``_add_held``). A packet that finds no flow first meets the flow filter
    (``C_FILTER``) and the sampler (``C_SAMPLE_RATE``): a flow either drops is
    not created, its packets counted in C_FILTERED / C_SAMPLED_OUT (live rows
    skip both: the kernel decided). A live PF_SYNC row is no packet: it sets
    the counters and last_seen (= its ts) of its flow, creating the flow
    (started at ``first_ts``, initiated in the row's orientation) when it is
    missing, and does nothing else (no touch, history, state or event but
    Started).
    """
    n = pkts.shape[0]
    cap_ev = ev.shape[0]
    mask = ctl[C_TABLE_MASK]
    evmask = ctl[C_MASK]
    kind = ctl[C_EXTRACT]
    zeek = ctl[C_ZEEK] != 0
    pause_new = ctl[C_PAUSE_NEW] != 0
    five = kind != EXTRACT_IP_PAIR and kind != EXTRACT_MAC_PAIR
    verify = ctl[C_VERIFY] != 0
    dns = ctl[C_DNS] != 0
    ftmo = ctl[C_FRAG_TMO]
    interval = ctl[C_SWEEP_INTERVAL]
    kvlan = ctl[C_KEY_VLAN] != 0
    kicmp = ctl[C_KEY_ICMP] != 0
    fmode = ctl[C_FILTER]
    srate = ctl[C_SAMPLE_RATE]
    choose = fmode != 0 or srate > 1
    ctl[C_NEW_SLOT] = -1
    i = start
    for j in range(start, min(start + PF_FAR, n)):
        _prefetch_entry(ctl, table, mask, pkts, j, kind, kvlan)
    # a sweep (and its scan for due Updates) left unfinished by a full event buffer comes first
    if ctl[C_SWEEP_POS] >= 0:
        e, done = _sweep_step(ctl, table, fkey, fint, fhist, fz, fzh, fdl, sbuf, ev, e, cap_ev)
        if not done:
            return i, e, S_EV_FULL
        if _updates_on(ctl) and ctl[C_UPD_POS] == 0:
            ctl[C_UPD_POS] = 1
            ctl[C_UPD_NOW] = ctl[C_SWEEP_NOW]
    if ctl[C_UPD_POS] > 0:
        e, done = _update_scan(ctl, fkey, fint, fhist, fdl, ev, e, cap_ev)
        if not done:
            return i, e, S_EV_FULL
    while i < n:
        if e + MAX_EVENTS_PER_PACKET > cap_ev:
            return i, e, S_EV_FULL
        if i + PF_ROW < n:
            prefetch(pkts, i + PF_ROW, 0, 0)
            prefetch(pkts, i + PF_ROW, 64, 0)
            prefetch(pkts, i + PF_ROW, _ROW_MID, 0)
            prefetch(pkts, i + PF_ROW, _ROW_TAIL, 0)
            prefetch(pkts, i + PF_ROW, _ROW_END, 0)
        if i + PF_FAR < n:
            _prefetch_entry(ctl, table, mask, pkts, i + PF_FAR, kind, kvlan)
        if i + PF_NEAR < n:
            _prefetch_rows(ctl, table, fkey, fint, fhist, fdl, i + PF_NEAR)
        p = pkts[i]
        ts = p.ts
        if p.error == PERR_TUN_PARENT:
            # live: the parent of the next row's decapsulated packet, named by its key
            _tun_parent_row(ctl, table, fkey, fint, mask, pkts, i, kind, kvlan)
            i += 1
            continue
        if interval > 0 and ts >= ctl[C_NEXT_SWEEP]:
            e, ok = _auto_sweep(ctl, table, fkey, fint, fhist, fz, fzh, fdl, sbuf, ev, e,
                                cap_ev, ts)
            if not ok:
                return i, e, S_EV_FULL
        pf = np.int64(p.pflags)
        if kicmp and (pf & (PF_ICMP | PF_PORTS)) == PF_ICMP and (
                p.proto == IPPROTO_ICMP or p.proto == IPPROTO_ICMPV6):
            icmp_key_ports(p)
            pf = np.int64(p.pflags)
        depth = np.int64(p.tun_depth)
        if depth != 0:
            ctl[C_DECAP] += 1
        elif p.error == PERR_NOT_IP:
            ctl[C_NOT_IP] += 1
        if depth < TUN_MAX_DEPTH:
            ctl[C_TUN_PID + depth] = -1
        fsp = np.int64(-1)
        fdp = np.int64(-1)
        hp = np.int64(0)
        hb = np.int64(0)
        hpay = np.int64(0)
        hipb = np.int64(0)
        if (five and (pf & (PF_FRAG | PF_MORE_FRAGS)) != 0 and (pf & (PF_ABS | PF_SYNC)) == 0
                and (p.l3 == 4 or p.l3 == 6)
                and (p.proto == IPPROTO_TCP or p.proto == IPPROTO_UDP
                     or p.proto == IPPROTO_SCTP
                     or (kicmp and (p.proto == IPPROTO_ICMP or p.proto == IPPROTO_ICMPV6)))):
            res, sp, dp, orph, hp, hb, hpay, hipb = frag_lookup(
                frk, frv, p, ftmo, (pf & PF_FRAG) == 0)
            if orph > 0:
                ctl[C_FRAG_HELD] -= orph
                ctl[C_FRAG_ORPHANS] += orph
                ctl[C_UNMATCHED] += orph
            if res == FR_HELD:
                ctl[C_FRAG_HELD] += 1
                i += 1
                continue
            if res == FR_KEYED:
                ctl[C_FRAG_KEYED] += 1
                fsp = sp
                fdp = dp
        ok, k0, k1, k2, k3, k4, rev = extract_key_ports(pkts, i, kind, fsp, fdp, kvlan)
        i += 1
        if not ok:
            ctl[C_UNMATCHED] += 1
            continue
        if ts > ctl[C_LAST_TS]:
            ctl[C_LAST_TS] = ts
        if p.error == PERR_L4_SHORT:
            ctl[C_TRUNC_L4] += 1
        pos, s = _find(table, fkey, mask, k0, k1, k2, k3, k4)
        created = s < 0
        if created and choose and (pf & (PF_ABS | PF_SYNC)) == 0:
            drop = 0
            if fmode != 0:
                pa = fsp if fsp >= 0 else (np.int64(p.sport) if (pf & PF_PORTS) else 0)
                pb = fdp if fsp >= 0 else (np.int64(p.dport) if (pf & PF_PORTS) else 0)
                if not flow_passes(flt, fmode, np.int64(p.l3), np.int64(p.proto),
                                   np.uint64(p.src_hi), np.uint64(p.src_lo),
                                   np.uint64(p.dst_hi), np.uint64(p.dst_lo), pa, pb):
                    drop = C_FILTERED
            if drop == 0 and srate > 1:
                if sample_hash(k0, k1, k2, k3, k4) % np.uint64(srate) != 0:
                    drop = C_SAMPLED_OUT
            if drop != 0:
                # fragments held for this first fragment go with it (as in the kernel)
                ctl[drop] += 1 + hp
                ctl[C_FRAG_HELD] -= hp
                ctl[C_FRAG_RESOLVED] += hp
                ctl[C_FRAG_KEYED] += hp
                continue
        bad_csum = verify and p.csum != 0
        if bad_csum:
            ctl[C_BAD_CSUM] += 1
        sync = (pf & PF_SYNC) != 0
        has_tcp = ((pf & PF_TCP) != 0 and not sync and kind != EXTRACT_IP_PAIR
                   and kind != EXTRACT_MAC_PAIR)
        if created:
            e, s, side = _new_flow(ctl, table, fkey, fint, fhist, fz, fzh, fdl, lq, ev, e, pkts,
                                   i - 1, pos, k0, k1, k2, k3, k4, rev, has_tcp)
        else:
            if not sync:
                _touch(ctl, fdl, lq, s)
            side = 0 if rev == fint[s, F_INIT_REV] else 1
        live = (pf & (PF_ABS | PF_SYNC)) != 0
        if live:
            _set_kernel_counters(ctl, fint, s, p)
        else:
            _add_packet(ctl, fint, s, side, np.int64(p.caplen), np.int64(p.payload_len))
            if hp > 0:
                _add_held(ctl, fint, fz, s, side, np.int64(p.proto), zeek, hp, hb, hpay, hipb)
        fint[s, F_LAST] = ts
        _set_deadline(ctl, fdl, s, sat_add(ts, fint[s, F_TIMEOUT]))
        if depth < TUN_MAX_DEPTH:
            ctl[C_TUN_PID + depth] = fint[s, F_ID]
            # the start time only for a frame with an inner row next (the parent may end
            # before that row is linked: an idle sweep, an eviction)
            if i < n and pkts[i].tun_depth > depth:
                ctl[C_TUN_PST + depth] = fint[s, F_STARTED]
        # live rows are the kernel's events: it sends one on every change of encapsulation
        if (depth > 0 or fint[s, F_TUN] != 0) and not sync:
            _tun_link(ctl, fint, fz, fzh, s, depth, np.int64(p.tun_type), np.int64(p.tun_key),
                      zeek)
        state = fint[s, F_STATE]
        if not sync:
            if (not live and not bad_csum and (pf & PF_TCP) != 0
                    and p.proto == IPPROTO_TCP):
                seq_step(fint, s, side, np.int64(p.tcp_flags), np.int64(p.seq),
                         np.int64(p.ack), np.int64(p.payload_len), np.int64(p.window))
            if zeek:
                if bad_csum:
                    zeek_bad_checksum(fz, fzh, s, side, pkts, i - 1)
                else:
                    zeek_packet(fz, fzh, s, side, pkts, i - 1, fint)
            if dns and (p.sport == DNS_PORT or p.dport == DNS_PORT) and p.dns_flags != 0:
                _dns_step(ctl, fint, fhist, s, side, p, ts, names[i - 1])
            if has_tcp:
                e, state = _tcp_step(ctl, fkey, fint, fhist, ev, e, s, side,
                                     np.int64(p.tcp_flags), np.int64(p.payload_len), ts)
            if evmask & (1 << EV_PACKET):
                r = _emit_head(ev, e, EV_PACKET, ts, fkey, fint, s)
                r.side = side
                r.length = p.caplen
                e += 1
        if live:
            if zeek:
                zeek_kernel_counters(fz, s, fint[s, F_INIT_REV], pkts, i - 1, fint)
            state = _kernel_terminal_state(fint, s, state, np.int64(p.kstate))
        if state == ST_CLOSED:
            e = _end_flow(ctl, table, fkey, fint, fhist, fz, fzh, fdl, ev, e, s, END_FIN, ts)
        elif state == ST_RESET:
            e = _end_flow(ctl, table, fkey, fint, fhist, fz, fzh, fdl, ev, e, s, END_RST, ts)
        if created and pause_new:
            ctl[C_NEW_SLOT] = s if state != ST_CLOSED and state != ST_RESET else -1
            return i, e, S_PAUSED
    return i, e, S_DONE
