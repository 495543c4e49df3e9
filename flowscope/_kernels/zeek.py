"""Zeek-style connection facts, kept per flow beside the reference state.

Enabled per tracker (``ctl[C_ZEEK]``); the engine calls ``zeek_reset`` when a
slot gets a new flow, ``zeek_packet`` for every matched packet of a flow and
copies the flow's ``fz`` row and ``fzh`` history into its Ended record
(``EVENT_DTYPE.zeek`` / ``zhist``).

``fz``  int64[cap, ZEEK_WORDS]       words Z_* below
``fzh`` uint8[cap, ZEEK_HISTORY_MAX] Zeek history letters, in order

What is modelled (Zeek's TCP analyzer, ``TCPSessionAdapter::Process`` and the
``Update*State`` functions, plus ``IPBasedAnalyzer::NewConn``):

1) The originator. Zeek's originator is the sender of the first packet, except
   that a connection starting without a SYN, or with a SYN+ACK, is flipped
   when its source port is a likely server port (``LIKELY_TCP``) and its
   destination port is not (both likely: flip non-SYN packets towards the
   lower port); UDP flips the same way on ports alone. Flipping is skipped
   towards 255.255.255.255. A SYN answering an originator that sent a
   SYN+ACK flips the roles again (Zeek's SYN/SYN-ACK reversal). A flip writes
   ``^`` into the history. ``Z_CTL`` bit 0 gives the flowscope side that is
   Zeek's originator at the end.
2) Per-endpoint TCP states (TCP_INACTIVE .. TCP_RESET, Zeek's numbering) with
   the previous state, the start/last/ack sequence numbers Zeek uses for
   relative sequence numbers and endpoint sizes, and the FIN count.
3) History letters with Zeek's rules: S/H/F/R again only when their relative
   sequence number moved, I, Q, D, A once per direction, T (retransmission:
   payload not beyond the highest sequence seen) and W (zero window) at the
   1st, 10th, 100th, ... occurrence per endpoint, ``^`` on a flip; UDP ``D``/
   ``d`` once per direction; ``C``/``c`` (bad TCP/UDP checksum) at the 1st,
   10th, 100th, ... bad packet per direction when checksums are verified
   (``zeek_bad_checksum``; off by default, as Zeek run with ``-C``). Not
   produced: ``G``/``g``
   (content gap: needs Zeek's stream reassembly) and ``X``/``x`` (tunnel
   decapsulation events).
4) Per-side IP bytes (IP total length, as Zeek's conn-size analyzer counts)
   and, for UDP/ICMP/other, payload bytes (UDP: after the UDP header; ICMP:
   the message after its 8-byte header, as Zeek's ICMP analyzer counts).
   TCP payload bytes follow from the sequence words (``tcp_endpoint_size``
   in the Zeek writer), as Zeek's ``TCP_Endpoint::Size``.

Sequence numbers are 32-bit; a connection moving more than 4 GiB in one
direction (sequence wrap) is not tracked across the wrap (Zeek keeps a wrap
count). Words indexed 0/1 are per *flowscope* side (0 = initiator); the Zeek
orientation is applied by the writer from ``Z_CTL`` bit 0.
"""

import numpy as np

from ..layout import (  # the words' layout is shared with the Zeek writer
    CSUM_IP_BAD, CSUM_L4_BAD, CTL_HIST_X, CTL_HS_SHIFT_ORIG, CTL_HS_SHIFT_RESP, CTL_ORIG1,
    CTL_STARTED, EP_CNT_MASK, EP_DID_CLOSE, EP_FIN, EP_PREV_SHIFT, EP_RXMIT_SHIFT, EP_STATE_MASK, EP_WIN0_SHIFT, IPPROTO_TCP,
    IPPROTO_UDP, PF_PORTS, PF_SYNC, PF_TCP, TCP_CLOSED, TCP_ESTABLISHED, TCP_INACTIVE,
    TCP_PARTIAL, TCP_RESET, TCP_SYN_ACK_SENT, TCP_SYN_SENT, TH_ACK, TH_FIN, TH_RST, TH_SYN,
    Z_ACK0, Z_CSUM, Z_CTL, Z_EP0, Z_EP1, Z_HLEN, Z_HSEQ0, Z_IP_BYTES0, Z_LAST, Z_PAY0, Z_SEQ0,
    ZEEK_HISTORY_MAX, ZEEK_WORDS,
)
from .common import inline_kernel, kernel
from .tcpseq import F_OOO0, F_RTX0, F_SQ_ACKED0, F_SQ_HIGH0, F_SQ_START0, F_ZW0

# history-seen bits (as Zeek's HIST_* masks, one set per direction, shifted into Z_CTL)
HIST_SYN = 0x1
HIST_FIN = 0x2
HIST_RST = 0x4
HIST_FIN_RST = 0x8
HIST_DATA = 0x10
HIST_ACK = 0x20
HIST_MULTI = 0x40

_U32 = 0xFFFFFFFF

# Likely server ports of Zeek's default scripts (``likely_server_ports``, filled by
# the protocol analyzers' ``register_for_ports``), TCP and UDP.
LIKELY_TCP = np.zeros(65536, dtype=np.bool_)
LIKELY_UDP = np.zeros(65536, dtype=np.bool_)
for _p in (21, 22, 23, 25, 53, 80, 81, 88, 110, 135, 139, 143, 389, 443, 445, 502, 563, 585,
           587, 614, 631, 636, 989, 990, 992, 993, 995, 1080, 1433, 1883, 2811, 3128, 3268,
           3306, 3389, 5222, 5223, 5269, 5432, 5900, 5901, 5902, 5903, 5904, 5905, 5906,
           5907, 6666, 6667, 6668, 6669, 8000, 8080, 8888, 20000):
    LIKELY_TCP[_p] = True
for _p in (53, 67, 88, 123, 137, 161, 162, 443, 514, 1812, 2152, 2123, 3544, 4789, 5060,
           5072, 5353, 5355, 6081, 20000):
    LIKELY_UDP[_p] = True


@kernel
def zeek_reset(fz, fzh, s):
    """Clear the Zeek state of slot ``s`` for a new flow."""
    for w in range(ZEEK_WORDS):
        fz[s, w] = 0


@inline_kernel
def _add(fz, fzh, s, code):
    n = fz[s, Z_HLEN]
    if n < ZEEK_HISTORY_MAX:
        fzh[s, n] = code
        fz[s, Z_HLEN] = n + 1


@inline_kernel
def _letter(code, is_orig):
    return code if is_orig else code + 32


@kernel
def _check(fz, fzh, s, is_orig, mask, code):
    """Zeek's Connection::CheckHistory: add ``code`` the first time; True if seen before.

    As TCP_Endpoint::CheckHistory does, a connection whose whole history is ``H`` (it
    began with a SYN+ACK it was not flipped for) is flipped when an ``A`` or ``D`` is due,
    its history becoming ``^h``; ``is_orig`` is the packet's role before that flip.
    """
    if (code == 65 or code == 68) and fz[s, Z_HLEN] == 1 and fzh[s, 0] == 72:
        fz[s, Z_CTL] ^= CTL_ORIG1
        fzh[s, 0] = 94  # '^'
        fzh[s, 1] = 104  # 'h'
        fz[s, Z_HLEN] = 2
        is_orig = not is_orig
    shift = CTL_HS_SHIFT_ORIG if is_orig else CTL_HS_SHIFT_RESP
    bit = np.int64(mask) << shift
    ctl = fz[s, Z_CTL]
    if ctl & bit:
        return True
    fz[s, Z_CTL] = ctl | bit
    _add(fz, fzh, s, _letter(code, is_orig))
    return False


@inline_kernel
def _is_scaled(n):
    return n == 1 or n == 10 or n == 100 or n == 1000 or n == 10000 or n == 100000


@inline_kernel
def _set_state(fz, s, side, new):
    ep = fz[s, Z_EP0 + side]
    old = ep & EP_STATE_MASK
    if new != old:
        ep = (ep & ~np.int64(0xFF)) | (old << EP_PREV_SHIFT) | new
        fz[s, Z_EP0 + side] = ep


@inline_kernel
def _seq_words(fz, fint, s):
    """Zeek's start_seq / last_seq / ack_seq words (what the writer sizes endpoints by) from
    the shared sequence tracking."""
    for side in range(2):
        fz[s, Z_SEQ0 + side] = fint[s, F_SQ_START0 + side] | (fint[s, F_SQ_HIGH0 + side] << 32)
        fz[s, Z_ACK0 + side] = ((fz[s, Z_ACK0 + side] & ~np.int64(_U32))
                                | fint[s, F_SQ_ACKED0 + side])


@kernel
def _scaled_letters(fz, fzh, s, side, shift, count, code, is_orig):
    """Zeek's ScaledHistoryEntry: the letter at the 1st, 10th, 100th, ... occurrence. The
    endpoint word keeps the count letters were made for; each threshold passed since adds one
    (one at a time offline; live, a lost event's letter comes with the next one)."""
    ep = fz[s, Z_EP0 + side]
    old = (ep >> shift) & EP_CNT_MASK
    new = min(count, EP_CNT_MASK)
    if new <= old:
        return
    fz[s, Z_EP0 + side] = (ep & ~(EP_CNT_MASK << shift)) | (np.int64(new) << shift)
    t = 1
    while t <= new:
        if t > old:
            _add(fz, fzh, s, _letter(code, is_orig))
        t *= 10


@kernel
def _tcp_packet(fz, fzh, s, side, p, fint):
    peer = 1 - side
    ctl = fz[s, Z_CTL]
    is_orig = side == (ctl & CTL_ORIG1)
    flags = np.int64(p.tcp_flags)
    syn = (flags & TH_SYN) != 0
    fin = (flags & TH_FIN) != 0
    rst = (flags & TH_RST) != 0
    ackf = (flags & TH_ACK) != 0
    seq = np.int64(p.seq)
    ln = np.int64(p.payload_len)

    ep = fz[s, Z_EP0 + side]
    state = ep & EP_STATE_MASK
    pstate = fz[s, Z_EP0 + peer] & EP_STATE_MASK

    # init_endpoint: the sequence numbers come from the shared tracking (tcpseq.seq_step,
    # run on this packet before, or the kernel's values on a live row)
    start = fint[s, F_SQ_START0 + side] & _U32
    rel = (seq - start) & _U32

    # update_history
    nbits = (1 if syn else 0) + (1 if fin else 0) + (1 if rst else 0)
    if nbits > 1:
        if fin and rst:
            _check(fz, fzh, s, is_orig, HIST_FIN_RST, 73)  # 'I'
        else:
            _check(fz, fzh, s, is_orig, HIST_MULTI, 81)  # 'Q'
    elif nbits == 1:
        hs = fz[s, Z_HSEQ0 + side]
        if syn:
            code = 72 if ackf else 83  # 'H' / 'S'
            if _check(fz, fzh, s, is_orig, HIST_SYN, code) and rel != (hs & _U32):
                _add(fz, fzh, s, _letter(code, is_orig))
            fz[s, Z_HSEQ0 + side] = (hs & ~np.int64(_U32)) | rel
        elif fin:
            fseq = (rel + ln) & _U32
            if _check(fz, fzh, s, is_orig, HIST_FIN, 70) and fseq != ((hs >> 32) & _U32):  # 'F'
                _add(fz, fzh, s, _letter(70, is_orig))
            fz[s, Z_HSEQ0 + side] = (hs & _U32) | (fseq << 32)
        else:
            ha = fz[s, Z_ACK0 + side]
            if _check(fz, fzh, s, is_orig, HIST_RST, 82) and rel != ((ha >> 32) & _U32):  # 'R'
                _add(fz, fzh, s, _letter(82, is_orig))
            fz[s, Z_ACK0 + side] = (ha & _U32) | (rel << 32)
    else:
        if ln:
            _check(fz, fzh, s, is_orig, HIST_DATA, 68)  # 'D'
        elif ackf:
            _check(fz, fzh, s, is_orig, HIST_ACK, 65)  # 'A'
        is_orig = side == (fz[s, Z_CTL] & CTL_ORIG1)  # the check may have flipped the roles

    # update_window (W) and update_last_seq (T): counts from the shared tracking
    _scaled_letters(fz, fzh, s, side, EP_WIN0_SHIFT, fint[s, F_ZW0 + side], 87, is_orig)
    _scaled_letters(fz, fzh, s, side, EP_RXMIT_SHIFT,
                    fint[s, F_RTX0 + side] + fint[s, F_OOO0 + side], 84, is_orig)

    if fin:
        fz[s, Z_EP0 + side] |= EP_FIN

    _seq_words(fz, fint, s)

    if (fz[s, Z_EP0] & fz[s, Z_EP1] & EP_DID_CLOSE) == 0:
        fz[s, Z_LAST] = p.ts

    # UpdateStateMachine
    if state == TCP_INACTIVE:
        if syn:
            if is_orig:
                _set_state(fz, s, side, TCP_SYN_ACK_SENT if ackf else TCP_SYN_SENT)
            else:
                if not ackf and pstate == TCP_SYN_ACK_SENT and seq == start:
                    # SYN/SYN-ACK reversal: flip the roles and establish
                    fz[s, Z_CTL] ^= CTL_ORIG1
                    _add(fz, fzh, s, 94)  # '^'
                    _set_state(fz, s, peer, TCP_ESTABLISHED)
                    pstate = TCP_ESTABLISHED
                if pstate == TCP_SYN_SENT:
                    _set_state(fz, s, peer, TCP_ESTABLISHED)
                    pstate = TCP_ESTABLISHED
                _set_state(fz, s, side, TCP_ESTABLISHED)
        if fin:
            _set_state(fz, s, side, TCP_CLOSED)
        if rst:
            _set_state(fz, s, side, TCP_RESET)
        if (fz[s, Z_EP0 + side] & EP_STATE_MASK) == TCP_INACTIVE:
            ostate = fz[s, Z_EP0 + (ctl & CTL_ORIG1)] & EP_STATE_MASK
            if (not is_orig) and ln == 0 and ostate == TCP_SYN_SENT:
                pass
            elif ackf and pstate == TCP_ESTABLISHED:
                _set_state(fz, s, side, TCP_ESTABLISHED)
            else:
                _set_state(fz, s, side, TCP_PARTIAL)
    elif state == TCP_SYN_SENT or state == TCP_SYN_ACK_SENT:
        if fin:
            _set_state(fz, s, side, TCP_CLOSED)
        if rst:
            _set_state(fz, s, side, TCP_RESET)
    elif state == TCP_ESTABLISHED or state == TCP_PARTIAL:
        if syn and state == TCP_PARTIAL and pstate == TCP_INACTIVE and not ackf:
            _set_state(fz, s, side, TCP_SYN_SENT)
        if fin and not rst:
            _set_state(fz, s, side, TCP_CLOSED)
            pw = fz[s, Z_EP0 + peer]
            if (pw & EP_STATE_MASK) == TCP_RESET and ((pw >> EP_PREV_SHIFT) & 0xF) == TCP_CLOSED:
                _set_state(fz, s, peer, TCP_CLOSED)
        if rst:
            _set_state(fz, s, side, TCP_RESET)
    elif state == TCP_CLOSED:
        if rst and pstate != TCP_CLOSED:
            _set_state(fz, s, side, TCP_RESET)
    now = fz[s, Z_EP0 + side] & EP_STATE_MASK
    if now != state and (now == TCP_CLOSED or now == TCP_RESET):
        fz[s, Z_EP0 + side] |= EP_DID_CLOSE


@kernel
def zeek_limit_reached(fz, fzh, s):
    """Zeek's ``CheckHistory(HIST_ANALYZER_LIMIT_REACHED, 'X')`` (once per connection)."""
    if (fz[s, Z_CTL] & CTL_HIST_X) == 0:
        fz[s, Z_CTL] |= CTL_HIST_X
        _add(fz, fzh, s, 88)  # 'X'


@kernel
def _choose_originator(fz, fzh, s, side, p):
    """First packet of a flow: Zeek's originator (NewConn / WantConnection)."""
    orig = side
    flip = False
    if p.proto == IPPROTO_TCP and (p.pflags & PF_TCP) != 0:
        fl = p.tcp_flags
        if (fl & TH_SYN) == 0 or (fl & TH_ACK) != 0:
            if LIKELY_TCP[p.sport]:
                if LIKELY_TCP[p.dport]:
                    flip = (fl & TH_SYN) == 0 and p.sport < p.dport
                else:
                    flip = True
    elif p.proto == IPPROTO_UDP and (p.pflags & PF_PORTS) != 0:
        flip = LIKELY_UDP[p.sport] and not LIKELY_UDP[p.dport]
    if flip and not (p.l3 == 4 and p.dst_lo == 0xFFFFFFFF):
        orig = 1 - side
        _add(fz, fzh, s, 94)  # '^'
    fz[s, Z_CTL] |= CTL_STARTED | orig


@kernel
def zeek_packet(fz, fzh, s, side, pkts, i, fint):
    """Account packet ``pkts[i]`` (side 0 initiator / 1 responder) to slot ``s``.

    fz: int64[cap, ZEEK_WORDS]; fzh: uint8[cap, ZEEK_HISTORY_MAX]; pkts: ROW_DTYPE[n];
    fint: the engine's int64[cap, F_SIZE], whose sequence columns (``tcpseq``) already
    include this packet.
    """
    p = pkts[i]
    fz[s, Z_IP_BYTES0 + side] += np.int64(p.ip_len)
    if (fz[s, Z_CTL] & CTL_STARTED) == 0:
        _choose_originator(fz, fzh, s, side, p)
        fz[s, Z_LAST] = p.ts
    proto = p.proto
    if proto == IPPROTO_TCP and (p.pflags & PF_TCP) != 0:
        _tcp_packet(fz, fzh, s, side, p, fint)
        return
    fz[s, Z_LAST] = p.ts
    fz[s, Z_PAY0 + side] += np.int64(p.payload_len)  # ICMP: already net of its header
    if proto == IPPROTO_UDP:
        is_orig = side == (fz[s, Z_CTL] & CTL_ORIG1)
        _check(fz, fzh, s, is_orig, HIST_DATA, 68)  # 'D'


@kernel
def zeek_bad_checksum(fz, fzh, s, side, pkts, i):
    """A packet with a bad checksum (``csum`` bits, verify_checksums) instead of ``zeek_packet``.

    As Zeek: a bad IPv4 header checksum drops the packet before any connection (nothing
    here); a bad TCP or UDP checksum reaches the connection (created by it if new: the
    originator is chosen as for any first packet) and adds ``C``/``c`` at the 1st, 10th,
    100th ... bad packet of its direction (Connection::ScaledHistoryEntry), and nothing else:
    no state, sequence, size or time change (the analyzer stops at the checksum). Other
    protocols' bad checksums only count. The count per flowscope side is in ``Z_CSUM``.
    """
    p = pkts[i]
    if (p.csum & CSUM_IP_BAD) != 0:
        return
    if (fz[s, Z_CTL] & CTL_STARTED) == 0:
        _choose_originator(fz, fzh, s, side, p)
        fz[s, Z_LAST] = p.ts
    if (p.csum & CSUM_L4_BAD) == 0 or (p.proto != IPPROTO_TCP and p.proto != IPPROTO_UDP):
        return
    shift = np.int64(32) * side
    w = fz[s, Z_CSUM]
    n = (w >> shift) & 0x7FFFFFFF
    if n < 0x7FFFFFFF:
        n += 1
        fz[s, Z_CSUM] = (w & ~(np.int64(0x7FFFFFFF) << shift)) | (n << shift)
        if _is_scaled(n):
            is_orig = side == (fz[s, Z_CTL] & CTL_ORIG1)
            _add(fz, fzh, s, _letter(67, is_orig))  # 'C'


@kernel
def zeek_kernel_counters(fz, s, fwd, pkts, i, fint):
    """Live sensor rows (PF_ABS / PF_SYNC): the kernel's per-orientation totals replace
    the per-packet sums (IP bytes, non-TCP payload); ``fwd`` is the side sending a -> b.

    A PF_SYNC row stands for packets the kernel counted without an event; they moved
    Zeek's clock as any packet does while the connection's two TCP endpoints have not
    both closed (the kernel sends every packet after that as an event).
    """
    p = pkts[i]
    rev = 1 - fwd
    fz[s, Z_IP_BYTES0 + fwd] = np.int64(p.cnt_ipb0)
    fz[s, Z_IP_BYTES0 + rev] = np.int64(p.cnt_ipb1)
    if p.proto != IPPROTO_TCP:
        fz[s, Z_PAY0 + fwd] = np.int64(p.cnt_pay0)
        fz[s, Z_PAY0 + rev] = np.int64(p.cnt_pay1)
    if p.proto == IPPROTO_TCP:
        _seq_words(fz, fint, s)  # the kernel's sequence numbers (sizes of unclosed flows)
    if (p.pflags & PF_SYNC) != 0 and p.ts > fz[s, Z_LAST]:
        if p.proto != IPPROTO_TCP or (fz[s, Z_EP0] & fz[s, Z_EP1] & EP_DID_CLOSE) == 0:
            fz[s, Z_LAST] = p.ts
