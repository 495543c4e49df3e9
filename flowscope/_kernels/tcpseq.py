"""Per-direction TCP sequence tracking: retransmissions, out-of-order segments, zero windows.

One rule, three implementations kept equal by tests: this kernel (offline engine), the live
kernel's ``fs_seq_step`` (``bpf/fs_flow.h``) and the plain-Python twin in
``tests/naive_zeek.py``. The Zeek-style state (``zeek.py``) takes its sequence numbers and its
``T``/``W`` counts from here, so offline and live records agree on them by construction.

Per flow side (columns of ``fint``, ``side`` 0 = initiator), Zeek's endpoint numbers
(``TCP_Endpoint``: ``start_seq``, ``last_seq``, ``ack_seq``) plus one sequence hole:

1) The first TCP packet of a side sets ``start`` = seq (SYN) or seq - 1 (no SYN) and
   ``high`` = seq_end (SYN) or seq; ``acked`` = ``start``. A later SYN whose seq differs from
   ``start`` starts the numbering again (a new connection on the same ports). A packet with
   ACK sets a silent peer's numbers (the peer has sent nothing yet) to ack - 1, else advances
   the peer's ``acked`` when the ack is not before its ``start`` and moves forward
   (no RST; an ack of 0 jumping more than 1 MiB is ignored).
2) seq_end = seq + payload (not counted with RST) + SYN + FIN. delta = seq_end - ``high``
   (signed 32-bit). SYN or RST with |delta| > 1 MiB: ignored. A FIN when ``high`` is still
   ``start`` + 1: ``high`` = seq_end. delta > 0: ``high`` = seq_end. In both cases a data
   segment or FIN (no SYN/RST) starting beyond ``high`` leaves the hole [``high``, seq) (one
   per side, the latest). delta <= 0 with payload: a segment inside the hole is **out of
   order** (the hole shrinks from the edge it touches), any other is a **retransmission**
   (its payload counts to the retransmitted bytes). Zeek's ``T`` count is retransmissions +
   out-of-order segments (Zeek's ``DidRxmit``: payload ending at or below the highest
   sequence seen).
3) **Zero window**: window 0, no RST, the peer has not sent a FIN (Zeek's ``ZeroWindow``,
   whose other condition, this side reset, never holds: a RST ends the flow).

``seq_step`` returns bit 1 when the T count grew and bit 2 when the zero-window count grew.
"""

import numpy as np

from .common import inline_kernel

# ---- fint columns (engine layout: 16..36 belong to this module) ---------------------------
# the first eight share one cache line: what every TCP packet reads or writes
F_SQ_START0 = 16  # Zeek start_seq, side 0 (uint32 as int64)
F_SQ_START1 = 17
F_SQ_HIGH0 = 18  # Zeek last_seq: highest sequence end seen
F_SQ_HIGH1 = 19
F_SQ_ACKED0 = 20  # Zeek ack_seq: highest ack the peer sent for this side
F_SQ_ACKED1 = 21
F_SQ_FLAGS = 22  # SQ_* bits
F_SQ_HOLE0 = 23  # hole lo | hi << 32 (valid with SQ_HOLE0)
F_SQ_HOLE1 = 24
F_RTX0 = 25  # retransmitted segments
F_RTX1 = 26
F_RTXB0 = 27  # retransmitted payload bytes
F_RTXB1 = 28
F_OOO0 = 29  # out-of-order segments
F_OOO1 = 30
F_ZW0 = 31  # zero-window advertisements
F_ZW1 = 32
F_RTT_SYN = 33  # time of the latest initiator SYN before the SYN/ACK (with SQ_RTT_SYN)
F_RTT_SYNACK = 34  # time of the SYN/ACK that answered it (with SQ_RTT_SYNACK)
F_RTT_RESP = 35  # SYN -> SYN/ACK, ns (-1 none)
F_RTT_INIT = 36  # SYN/ACK -> the ACK completing the handshake, ns (-1 none)

# F_SQ_FLAGS bits (the kernel's fs_flow.seq_flags, per orientation there)
SQ_INIT0 = 1  # side 0 sent a TCP packet (its numbers are set)
SQ_INIT1 = 2
SQ_FIN0 = 4  # side 0 sent a FIN
SQ_FIN1 = 8
SQ_HOLE0 = 64  # F_SQ_HOLE0 holds a hole
SQ_HOLE1 = 128
SQ_RTT_SYN = 16  # F_RTT_SYN is set (engine only: handshake times come from evented packets)
SQ_RTT_SYNACK = 32

TOO_LARGE_SEQ_DELTA = 1048576
_U32 = 0xFFFFFFFF


@inline_kernel
def sd(a, b):
    """(a - b) as a signed 32-bit number (Zeek's seq_delta)."""
    d = (a - b) & _U32
    return d - (1 << 32) if d >= (1 << 31) else d


@inline_kernel
def is_scaled(n):
    """Zeek's ScaledHistoryEntry thresholds: 1, 10, 100, ..."""
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1


@inline_kernel
def seq_reset(fint, s):
    """Clear the sequence state of slot ``s`` (a new flow)."""
    for c in range(F_SQ_START0, F_RTT_INIT + 1):
        fint[s, c] = 0
    fint[s, F_RTT_RESP] = -1
    fint[s, F_RTT_INIT] = -1


@inline_kernel
def seq_step(fint, s, side, flags, seq, ack, ln, window):
    """One TCP packet of ``side``: the rules of the module docstring. Returns bits 1 (T count
    grew) | 2 (zero-window count grew)."""
    peer = 1 - side
    syn = (flags & 0x02) != 0
    fin = (flags & 0x01) != 0
    rst = (flags & 0x04) != 0
    ackf = (flags & 0x10) != 0
    seq = np.int64(seq) & _U32
    ack = np.int64(ack) & _U32
    ln = np.int64(ln)
    seg = (0 if rst else ln) + (1 if syn else 0) + (1 if fin else 0)
    end = (seq + seg) & _U32
    fl = fint[s, F_SQ_FLAGS]
    ret = 0
    if (fl & (SQ_INIT0 << side)) == 0:
        st = seq if syn else (seq - 1) & _U32
        fint[s, F_SQ_START0 + side] = st
        fint[s, F_SQ_ACKED0 + side] = st
        fint[s, F_SQ_HIGH0 + side] = end if syn else seq
        fl = (fl | (SQ_INIT0 << side)) & ~(SQ_HOLE0 << side)
    elif syn and seq != fint[s, F_SQ_START0 + side]:
        fint[s, F_SQ_START0 + side] = seq
        fint[s, F_SQ_ACKED0 + side] = seq
        fint[s, F_SQ_HIGH0 + side] = end
        fl &= ~(SQ_HOLE0 << side)
    # zero window
    if window == 0 and not rst and (fl & (SQ_FIN0 << peer)) == 0:
        fint[s, F_ZW0 + side] += 1
        ret |= 2
    if fin:
        fl |= SQ_FIN0 << side
    # acks
    if ackf:
        if (fl & (SQ_INIT0 << peer)) == 0:
            a1 = (ack - 1) & _U32
            fint[s, F_SQ_START0 + peer] = a1
            fint[s, F_SQ_ACKED0 + peer] = a1
            fint[s, F_SQ_HIGH0 + peer] = a1
        elif not rst and sd(ack, fint[s, F_SQ_START0 + peer]) >= 0:
            d = sd(ack, fint[s, F_SQ_ACKED0 + peer])
            if d > 0 and not (ack == 0 and d > TOO_LARGE_SEQ_DELTA):
                fint[s, F_SQ_ACKED0 + peer] = ack
    # highest sequence, retransmissions, holes
    high = fint[s, F_SQ_HIGH0 + side]
    delta = sd(end, high)
    if (syn or rst) and (delta > TOO_LARGE_SEQ_DELTA or delta < -TOO_LARGE_SEQ_DELTA):
        pass
    elif fin and high == ((fint[s, F_SQ_START0 + side] + 1) & _U32):
        if not syn and not rst and sd(seq, high) > 0:
            fint[s, F_SQ_HOLE0 + side] = high | (seq << 32)
            fl |= SQ_HOLE0 << side
        fint[s, F_SQ_HIGH0 + side] = end
    elif delta > 0:
        if (ln > 0 or fin) and not syn and not rst and sd(seq, high) > 0:
            fint[s, F_SQ_HOLE0 + side] = high | (seq << 32)
            fl |= SQ_HOLE0 << side
        fint[s, F_SQ_HIGH0 + side] = end
    elif ln > 0:
        hole = fint[s, F_SQ_HOLE0 + side]
        lo = hole & _U32
        hi = (hole >> 32) & _U32
        if ((fl & (SQ_HOLE0 << side)) != 0 and sd(seq, lo) >= 0 and sd(end, hi) <= 0
                and sd(end, seq) > 0):
            fint[s, F_OOO0 + side] += 1
            if seq == lo:
                lo = end
            elif end == hi:
                hi = seq
            fint[s, F_SQ_HOLE0 + side] = lo | (hi << 32)
            if sd(hi, lo) <= 0:
                fl &= ~(SQ_HOLE0 << side)
        else:
            fint[s, F_RTX0 + side] += 1
            fint[s, F_RTXB0 + side] += ln
        ret |= 1
    fint[s, F_SQ_FLAGS] = fl
    return ret


@inline_kernel
def rtt_step(fint, s, side, flags, old_state, new_state, ts):
    """Handshake times from one TCP packet and the state move it made (engine states:
    0 Active, 1 SynSent, 2 SynReceived, 3 Established). SYN of the initiator (no ACK) in
    Active/SynSent: its time is kept (the latest one); the SYN/ACK entering SynReceived:
    ``rtt_resp`` = its time - that SYN's; the initiator ACK entering Established from
    SynReceived: ``rtt_init`` = its time - the SYN/ACK's."""
    fl = fint[s, F_SQ_FLAGS]
    if side == 0 and (flags & 0x12) == 0x02 and old_state <= 1:
        fint[s, F_RTT_SYN] = ts
        fint[s, F_SQ_FLAGS] = fl | SQ_RTT_SYN
    elif new_state == 2 and old_state == 1 and (fl & SQ_RTT_SYN) != 0:
        fint[s, F_RTT_RESP] = ts - fint[s, F_RTT_SYN]
        fint[s, F_RTT_SYNACK] = ts
        fint[s, F_SQ_FLAGS] = fl | SQ_RTT_SYNACK
    elif new_state == 3 and old_state == 2 and (fl & SQ_RTT_SYNACK) != 0:
        fint[s, F_RTT_INIT] = ts - fint[s, F_RTT_SYNACK]
