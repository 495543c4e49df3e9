"""Plain-Python twin of ``flowscope._kernels.zeek`` (Zeek's connection facts per flow).

Written from Zeek's own code rather than from the kernel: ``IPBasedAnalyzer::NewConn`` and the
analyzers' ``WantConnection`` (who is the originator), ``TCPSessionAdapter::Process`` with its
``init_endpoint``, ``update_history``, ``update_window``, ``update_ack_seq``, ``update_last_seq``
and ``Update*State`` helpers, ``TCP_Endpoint`` (states, ``CheckHistory``, ``DidRxmit``,
``ZeroWindow``), ``Connection::FlipRoles`` and the UDP / ICMP analyzers. As in Zeek, a
connection holds two ``Endpoint`` objects and a history string; ``pack`` then writes the same
``ZEEK_WORDS`` int64 row and history letters the kernel keeps, so the two compare word for word.

The kernel's documented simplifications are followed: sequence numbers are 32-bit (no wrap
count, so relative sequence numbers are modulo 2**32), checksums are not verified, there is no
stream reassembly (no ``G``, no deferred close while data is pending), at most
``ZEEK_HISTORY_MAX`` letters are kept, and a TCP row without a TCP header counts as "other".

``TCP_Endpoint::CheckHistory`` flips a connection whose whole history is ``H`` (it began with
an unflipped SYN+ACK) as soon as an ``A`` or ``D`` letter is due, and rewrites the history to
``^h``; the twin does it where Zeek does.
"""

from __future__ import annotations

from flowscope._kernels import zeek as Z

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
U32 = 0xFFFFFFFF
TOO_LARGE_SEQ_DELTA = 1048576

# Zeek's endpoint states (TCP_ENDPOINT_*), numbered as Zeek's script constants
INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)

# the history-seen masks of TCP_Endpoint (HIST_*_PKT); one set per direction
HIST_BITS = {"syn": Z.HIST_SYN, "fin": Z.HIST_FIN, "rst": Z.HIST_RST, "fin_rst": Z.HIST_FIN_RST,
             "data": Z.HIST_DATA, "ack": Z.HIST_ACK, "multi": Z.HIST_MULTI}


def seq_delta(a: int, b: int) -> int:
    """Zeek's seq_delta: a - b as a signed 32-bit number."""
    d = (a - b) & U32
    return d - (1 << 32) if d >= 1 << 31 else d


class Endpoint:
    """One side of a TCP connection, as Zeek's TCP_Endpoint (only what the kernel keeps)."""

    def __init__(self):
        self.state = self.prev_state = INACTIVE
        self.start_seq = self.last_seq = self.ack_seq = 0
        self.hist_last_syn = self.hist_last_fin = self.hist_last_rst = 0
        self.fin_cnt = 0
        self.did_close = False
        self.rxmt_cnt, self.rxmt_thresh = 0, 1
        self.win0_cnt, self.win0_thresh = 0, 1
        self.chk_cnt, self.chk_thresh = 0, 1
        self.ip_bytes = 0
        self.payload = 0  # UDP / ICMP / other payload as Zeek's analyzers size it

    def set_state(self, new: int) -> None:
        if new != self.state:
            self.prev_state, self.state = self.state, new

    def init_seqs(self, start: int, ack: int, last: int) -> None:
        self.start_seq, self.ack_seq, self.last_seq = start & U32, ack & U32, last & U32

    def rel(self, seq: int) -> int:
        """Relative sequence number (modulo 2**32: no wrap count)."""
        return (seq - self.start_seq) & U32


class SeqTrack:
    """Twin of ``flowscope._kernels.tcpseq.seq_step``: per-side sequence numbers, one hole,
    retransmissions, out-of-order segments and zero windows of one TCP flow."""

    def __init__(self):
        self.init = [False, False]
        self.fin = [False, False]
        self.start, self.high, self.acked = [0, 0], [0, 0], [0, 0]
        self.hole = [None, None]  # (lo, hi)
        self.rtx, self.rtx_bytes, self.ooo, self.zw = [0, 0], [0, 0], [0, 0], [0, 0]
        self.syn_ts = self.synack_ts = None
        self.rtt_resp = self.rtt_init = -1

    def step(self, side: int, flags: int, seq: int, ack: int, length: int, window: int) -> int:
        """One TCP packet; returns 1 (T count grew) | 2 (zero-window count grew)."""
        peer = 1 - side
        syn, fin, rst, ackf = (bool(flags & f) for f in (SYN, FIN, RST, ACK))
        end = (seq + (0 if rst else length) + syn + fin) & U32
        ret = 0
        if not self.init[side]:
            self.start[side] = self.acked[side] = seq if syn else (seq - 1) & U32
            self.high[side] = end if syn else seq
            self.hole[side] = None
            self.init[side] = True
        elif syn and seq != self.start[side]:
            self.start[side] = self.acked[side] = seq
            self.high[side] = end
            self.hole[side] = None
        if window == 0 and not rst and not self.fin[peer]:
            self.zw[side] += 1
            ret |= 2
        if fin:
            self.fin[side] = True
        if ackf:
            if not self.init[peer]:
                self.start[peer] = self.acked[peer] = self.high[peer] = (ack - 1) & U32
            elif not rst and seq_delta(ack, self.start[peer]) >= 0:
                d = seq_delta(ack, self.acked[peer])
                if d > 0 and not (ack == 0 and d > TOO_LARGE_SEQ_DELTA):
                    self.acked[peer] = ack
        high = self.high[side]
        delta = seq_delta(end, high)
        if (syn or rst) and abs(delta) > TOO_LARGE_SEQ_DELTA:
            pass
        elif fin and high == (self.start[side] + 1) & U32:
            if not syn and not rst and seq_delta(seq, high) > 0:
                self.hole[side] = (high, seq)
            self.high[side] = end
        elif delta > 0:
            if (length > 0 or fin) and not syn and not rst and seq_delta(seq, high) > 0:
                self.hole[side] = (high, seq)
            self.high[side] = end
        elif length > 0:
            h = self.hole[side]
            if (h is not None and seq_delta(seq, h[0]) >= 0 and seq_delta(end, h[1]) <= 0
                    and seq_delta(end, seq) > 0):
                self.ooo[side] += 1
                lo, hi = h
                if seq == lo:
                    lo = end
                elif end == hi:
                    hi = seq
                self.hole[side] = (lo, hi) if seq_delta(hi, lo) > 0 else None
            else:
                self.rtx[side] += 1
                self.rtx_bytes[side] += length
            ret |= 1
        return ret

    def rtt(self, side: int, flags: int, old_state: int, new_state: int, ts: int) -> None:
        """Twin of ``tcpseq.rtt_step`` (engine states 0 Active .. 3 Established)."""
        if side == 0 and flags & (SYN | ACK) == SYN and old_state <= 1:
            self.syn_ts = ts
        elif new_state == 2 and old_state == 1 and self.syn_ts is not None:
            self.rtt_resp, self.synack_ts = ts - self.syn_ts, ts
        elif new_state == 3 and old_state == 2 and self.synack_ts is not None:
            self.rtt_init = ts - self.synack_ts


class ZeekConn:
    """Zeek's view of one flow; ``packet(p, side)`` with flowscope sides (0 = initiator)."""

    def __init__(self):
        self.ep = [Endpoint(), Endpoint()]
        self.orig = 0  # flowscope side that is Zeek's originator
        self.started = False
        self.history = ""
        self.hist_seen: set = set()  # (is_orig, kind)
        self.last_time = 0
        self.seq = SeqTrack()  # the shared sequence tracking Zeek's numbers come from

    # ---- history (Connection / TCP_Endpoint) -------------------------------------

    def add_history(self, is_orig: bool, code: str) -> None:
        self.history += code if is_orig else code.lower()

    def check_history(self, side: int, kind: str, code: str) -> bool:
        """Add ``code`` the first time ``kind`` is seen in this direction; True if seen before."""
        if code in "AD" and self.history == "H":
            # a connection that began with a SYN+ACK, now showing real traffic: flip it
            self.flip_roles()
            self.history = "^h"
        is_orig = side == self.orig
        if (is_orig, kind) in self.hist_seen:
            return True
        self.hist_seen.add((is_orig, kind))
        self.add_history(is_orig, code)
        return False

    def scaled_entry(self, side: int, code: str, which: str) -> None:
        """Zeek's ScaledHistoryEntry: a letter at the 1st, 10th, 100th ... occurrence."""
        ep = self.ep[side]
        cnt, thresh = getattr(ep, which + "_cnt") + 1, getattr(ep, which + "_thresh")
        if cnt == thresh:
            self.add_history(side == self.orig, code)
            thresh *= 10
        setattr(ep, which + "_cnt", cnt)
        setattr(ep, which + "_thresh", thresh)

    def flip_roles(self) -> None:
        self.orig = 1 - self.orig
        self.history += "^"

    # ---- packets ------------------------------------------------------------------

    def packet(self, p: dict, side: int) -> None:
        """Account one PKT_DTYPE row (as a dict) sent by flowscope side ``side``."""
        self.ep[side].ip_bytes += p["ip_len"]  # Zeek's conn-size analyzer
        if not self.started:
            self.new_conn(p, side)
        proto = p["proto"]
        if proto == 6 and p["pflags"] & Z.PF_TCP:
            self.tcp(p, side)
            return
        self.last_time = p["ts"]
        ep = self.ep[side]
        # ICMP rows carry the message after the 8-byte ICMP header as their payload already
        ep.payload += p["payload_len"]
        if proto == 17:
            self.check_history(side, "data", "D")

    def bad_checksum(self, p: dict, side: int) -> None:
        """A row with ``csum`` bits: Zeek drops a bad IP header; a bad TCP/UDP checksum
        gives C/c (scaled) on a connection that exists (or is created) and nothing else."""
        if p["csum"] & Z.CSUM_IP_BAD:
            return
        if not self.started:
            self.new_conn(p, side)
        if p["csum"] & Z.CSUM_L4_BAD and p["proto"] in (6, 17):
            self.scaled_entry(side, "C", "chk")

    def new_conn(self, p: dict, side: int) -> None:
        """IPBasedAnalyzer::NewConn: the sender is the originator unless ports say otherwise."""
        self.started = True
        self.orig = side
        self.last_time = p["ts"]
        flip = False
        if p["proto"] == 6 and p["pflags"] & Z.PF_TCP:
            fl = p["tcp_flags"]
            partial = not fl & SYN or fl & ACK
            if partial and Z.LIKELY_TCP[p["sport"]]:
                if Z.LIKELY_TCP[p["dport"]]:
                    flip = not fl & SYN and p["sport"] < p["dport"]
                else:
                    flip = True
        elif p["proto"] == 17 and p["pflags"] & Z.PF_PORTS:
            flip = bool(Z.LIKELY_UDP[p["sport"]]) and not Z.LIKELY_UDP[p["dport"]]
        broadcast = p["l3"] == 4 and p["dst_lo"] == U32
        if flip and not broadcast:
            self.flip_roles()

    def tcp(self, p: dict, side: int) -> None:
        """TCPSessionAdapter::Process for the facts the kernel keeps."""
        ep, peer = self.ep[side], self.ep[1 - side]
        is_orig = side == self.orig  # stale after a flip inside this packet, as in Zeek
        fl = p["tcp_flags"]
        syn, fin, rst, ack = bool(fl & SYN), bool(fl & FIN), bool(fl & RST), bool(fl & ACK)
        seq, length = p["seq"], p["payload_len"]

        # sequence numbers, T and W counts: the shared tracking (init_endpoint, the acks,
        # update_last_seq and update_window's zero windows, by tcpseq's rules)
        sq = self.seq
        ret = sq.step(side, fl, seq, p["ack"], length, p["window"])
        for e, t in ((self.ep[0], 0), (self.ep[1], 1)):
            e.init_seqs(sq.start[t], sq.acked[t], sq.high[t])
        rel = ep.rel(seq)
        self.update_history(side, ep, syn, fin, rst, ack, rel, length)
        if ret & 2:
            self.scaled_entry(side, "W", "win0")
        if not (self.ep[0].did_close and self.ep[1].did_close):
            self.last_time = p["ts"]
        if fin:
            ep.fin_cnt += 1
        if ret & 1:
            self.scaled_entry(side, "T", "rxmt")
        do_close = self.update_state_machine(side, ep, peer, is_orig, syn, fin, rst, ack, seq,
                                             length)
        if do_close:
            ep.did_close = True

    def update_history(self, side, ep, syn, fin, rst, ack, rel, length) -> None:
        bits = syn + fin + rst
        if bits > 1:
            if fin and rst:
                self.check_history(side, "fin_rst", "I")
            else:
                self.check_history(side, "multi", "Q")
        elif syn:
            code = "H" if ack else "S"
            if self.check_history(side, "syn", code) and rel != ep.hist_last_syn:
                self.add_history(side == self.orig, code)
            ep.hist_last_syn = rel
        elif fin:
            fseq = (rel + length) & U32  # a FIN's sequence number is after its data
            if self.check_history(side, "fin", "F") and fseq != ep.hist_last_fin:
                self.add_history(side == self.orig, "F")
            ep.hist_last_fin = fseq
        elif rst:
            if self.check_history(side, "rst", "R") and rel != ep.hist_last_rst:
                self.add_history(side == self.orig, "R")
            ep.hist_last_rst = rel
        elif length:
            self.check_history(side, "data", "D")
        elif ack:
            self.check_history(side, "ack", "A")

    def update_state_machine(self, side, ep, peer, is_orig, syn, fin, rst, ack, seq,
                             length) -> bool:
        """Zeek's Update*State; returns do_close (this endpoint closed or reset)."""
        do_close = False
        if ep.state == INACTIVE:
            if syn:
                if is_orig:
                    ep.set_state(SYN_ACK_SENT if ack else SYN_SENT)
                else:
                    if not ack and peer.state == SYN_ACK_SENT and seq == ep.start_seq:
                        # SYN/SYN-ACK reversal: flip and establish
                        self.flip_roles()
                        peer.set_state(ESTABLISHED)
                    if peer.state == SYN_SENT:
                        peer.set_state(ESTABLISHED)
                    ep.set_state(ESTABLISHED)
            if fin:
                ep.set_state(CLOSED)
                do_close = True
            if rst:
                ep.set_state(RESET)
                do_close = True
            if ep.state == INACTIVE:
                if not is_orig and length == 0 and self.ep[self.orig].state == SYN_SENT:
                    pass  # an ACK of the SYN before the SYN reply: not partial
                elif ack and peer.state == ESTABLISHED:
                    ep.set_state(ESTABLISHED)  # the originator's SYN was missed
                else:
                    ep.set_state(PARTIAL)
        elif ep.state in (SYN_SENT, SYN_ACK_SENT):
            if fin:
                ep.set_state(CLOSED)
                do_close = True
            if rst:
                ep.set_state(RESET)
                do_close = True
        elif ep.state in (ESTABLISHED, PARTIAL):
            if syn and ep.state == PARTIAL and peer.state == INACTIVE and not ack:
                ep.set_state(SYN_SENT)
            if fin and not rst:
                ep.set_state(CLOSED)
                if peer.state == RESET and peer.prev_state == CLOSED:
                    peer.set_state(CLOSED)  # the peer's FIN then RST was a normal close
                do_close = True
            if rst:
                ep.set_state(RESET)
                do_close = True
        elif ep.state == CLOSED:
            if rst and peer.state != CLOSED:
                ep.set_state(RESET)
                do_close = not ep.did_close
        return do_close

    # ---- the kernel's words ---------------------------------------------------------

    def pack(self) -> tuple[list[int], bytes]:
        """The ``fz`` row (ZEEK_WORDS signed 64-bit ints) and the history letters."""
        w = [0] * Z.ZEEK_WORDS
        hist = self.history.encode()[: Z.ZEEK_HISTORY_MAX]
        w[Z.Z_HLEN] = len(hist)
        ctl = self.orig | (Z.CTL_STARTED if self.started else 0)
        for is_orig, kind in self.hist_seen:
            ctl |= HIST_BITS[kind] << (Z.CTL_HS_SHIFT_ORIG if is_orig else Z.CTL_HS_SHIFT_RESP)
        w[Z.Z_CTL] = ctl
        w[Z.Z_LAST] = self.last_time
        w[Z.Z_CSUM] = min(self.ep[0].chk_cnt, 2**31 - 1) | min(self.ep[1].chk_cnt, 2**31 - 1) << 32
        for side, ep in enumerate(self.ep):
            w[Z.Z_IP_BYTES0 + side] = ep.ip_bytes
            w[Z.Z_PAY0 + side] = ep.payload
            w[Z.Z_EP0 + side] = (
                ep.state | ep.prev_state << Z.EP_PREV_SHIFT
                | (Z.EP_FIN if ep.fin_cnt else 0) | (Z.EP_DID_CLOSE if ep.did_close else 0)
                | min(ep.rxmt_cnt, Z.EP_CNT_MASK) << Z.EP_RXMIT_SHIFT
                | min(ep.win0_cnt, Z.EP_CNT_MASK) << Z.EP_WIN0_SHIFT)
            w[Z.Z_SEQ0 + side] = _i64(ep.start_seq | ep.last_seq << 32)
            w[Z.Z_ACK0 + side] = _i64(ep.ack_seq | ep.hist_last_rst << 32)
            w[Z.Z_HSEQ0 + side] = _i64(ep.hist_last_syn | ep.hist_last_fin << 32)
        return w, hist


def _i64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def naive_zeek(rows) -> tuple[list[int], bytes]:
    """Run ``(row, side)`` pairs (rows as PKT_DTYPE dicts) through one ZeekConn; its packed row."""
    c = ZeekConn()
    for p, side in rows:
        c.packet(p, side)
    return c.pack()
