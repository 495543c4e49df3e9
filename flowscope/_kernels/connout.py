"""Zeek conn.log (TSV and JSON) and Suricata EVE formatting of Ended records, in numba.

``format_zeek(recs, buf, json, work, reasons, reason_lens)`` and ``format_eve(recs, buf,
fids, seed, work, names, name_lens, reasons, reason_lens)`` write one line per Ended
record of ``layout.EVENT_DTYPE`` into the uint8 buffer ``buf`` and return ``(records_done,
bytes_written, lines, skipped)``; they stop before a record that might not fit
(``MAX_LINE`` bytes), so the caller flushes and calls again. The bytes are those of the
plain-Python formatters in tests/naive_connout.py (the writers of flowscope.output before
they used these kernels): the same fields, the same float text (``%.6f``, ``%.9f`` and
Python's shortest round-trip ``repr`` of ``ns / 1e9``), the uid (BLAKE2b-96 in base62),
Community ID v1 (SHA-1, base64) and Suricata's timestamps.

``work`` is a uint64[WORK_WORDS] scratch array (hash states, message bytes), so the
kernels allocate nothing.
"""

import numpy as np

from ..layout import (
    CTL_ORIG1, CTL_STARTED, END_EVICTED, END_FIN, END_IDLE,
    END_RST, END_SHUTDOWN, EP_FIN, EP_PREV_SHIFT, EP_STATE_MASK, EV_ENDED, EVD_QUERY,
    EVD_RESPONSE, EVD_RTT, EXTRACT_FIVE_TUPLE, EXTRACT_FIVE_TUPLE_DIRECTIONAL, EXTRACT_MAC_PAIR,
    ICMP_VALID, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, L3_IPV4,
    L3_IPV6, ST_ABORTED, ST_ACTIVE, ST_CLOSED, ST_CLOSING_TCP, ST_ESTABLISHED, ST_FIN_WAIT,
    ST_RESET, ST_SYN_RECEIVED, ST_SYN_SENT, TCP_CLOSED, TCP_ESTABLISHED, TCP_INACTIVE,
    TCP_PARTIAL, TCP_RESET, TCP_SYN_ACK_SENT, TCP_SYN_SENT, TH_ACK, TH_CWR, TH_ECE, TH_FIN,
    TH_PSH, TH_RST, TH_SYN, TH_URG, TUN_PARENTS_MAX, Z_ACK0, Z_CTL, Z_EP0, Z_IP_BYTES0, Z_LAST,
    Z_PAY0, Z_SEQ0,
    icmp_pair_table,
)
from .common import inline_kernel, kernel, unpack_meta
from .textout import HEX, QTYPE_LENS, QTYPES, RCODE_LENS, RCODES, _mac, _row, _table, _uint
from .textout import _ipv4, _ipv6, _tunnel

#: Upper bound of one formatted line (an IPv6 TCP flow with every extension field is ~1.3 kB).
MAX_LINE = 4096
#: Words of the ``work`` scratch array.
WORK_WORDS = 256

_M32 = np.uint64(0xFFFFFFFF)
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_U0 = np.uint64(0)
_U1 = np.uint64(1)

# ---- literal fragments ------------------------------------------------------------------
_LIT_LIST = []


def _lit_id(s):
    _LIT_LIST.append(s)
    return len(_LIT_LIST) - 1


# Zeek conn.log field names, in the order of flowscope.output.zeek.FIELDS
ZEEK_FIELDS = (
    "ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service",
    "duration", "orig_bytes", "resp_bytes", "conn_state", "local_orig", "local_resp",
    "missed_bytes", "history", "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes",
    "tunnel_parents", "community_id", "vlan", "inner_vlan", "orig_l2_addr", "resp_l2_addr",
    "tcp_rtt", "tcp_rtt_resp", "tcp_rtt_init", "orig_retrans_pkts", "resp_retrans_pkts",
    "orig_retrans_bytes", "resp_retrans_bytes", "orig_zero_win", "resp_zero_win",
    "orig_ooo_pkts", "resp_ooo_pkts", "dns_query", "dns_qtype", "dns_qtype_name", "dns_rcode",
    "dns_rcode_name", "dns_answers", "dns_rtt", "orig_drops", "resp_drops", "drop_reason")
ZKEYS, ZKEY_LENS = _table([f'"{f}":' for f in ZEEK_FIELDS])
(F_TS, F_UID, F_OH, F_OP, F_RH, F_RP, F_PROTO, F_SERVICE, F_DUR, F_OB, F_RB, F_STATE,
 F_LO, F_LR, F_MISSED, F_HIST, F_OPK, F_OIB, F_RPK, F_RIB, F_TUNP, F_CID, F_VLAN, F_IVLAN,
 F_OL2, F_RL2, F_RTT, F_RTT_RESP, F_RTT_INIT, F_ORP, F_RRP, F_ORB, F_RRB, F_OZW, F_RZW,
 F_OOO, F_ROO, F_DQ, F_DQT, F_DQTN, F_DRC, F_DRCN, F_DANS, F_DRTT, F_ODR, F_RDR,
 F_DREASON) = range(len(ZEEK_FIELDS))

# conn_state values (Zeek's Conn::conn_state)
CONN_STATES, CONN_STATE_LENS = _table(
    ["S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH"])
(CS_S0, CS_S1, CS_SF, CS_REJ, CS_S2, CS_S3, CS_RSTO, CS_RSTR, CS_RSTOS0, CS_RSTRH, CS_SH,
 CS_SHR, CS_OTH) = range(13)
#: Zeek's ``proto`` (transport_proto) names; others are ``unknown_transport``.
ZEEK_PROTO_NAMES = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMP: "icmp",
                    IPPROTO_ICMPV6: "icmp"}
ZPROTOS, ZPROTO_LENS = _table([ZEEK_PROTO_NAMES.get(n, "unknown_transport")
                               for n in range(256)])

# EVE
#: Suricata's protocol names (its ``known_proto`` table); others print as the number.
EVE_PROTO_NAMES = {IPPROTO_ICMP: "ICMP", IPPROTO_TCP: "TCP", IPPROTO_UDP: "UDP",
                   IPPROTO_ICMPV6: "IPv6-ICMP", IPPROTO_SCTP: "SCTP"}
EVE_PROTOS, EVE_PROTO_LENS = _table([EVE_PROTO_NAMES.get(n, str(n)) for n in range(256)])
#: Suricata ``flow.reason`` per flowscope end reason (layout.END_*).
EVE_REASON_NAMES = {END_FIN: "timeout", END_RST: "timeout", END_IDLE: "timeout",
                     END_EVICTED: "forced", END_SHUTDOWN: "shutdown"}
EVE_REASONS, EVE_REASON_LENS = _table(
    [EVE_REASON_NAMES.get(n, "unknown") for n in range(256)])
#: Suricata ``tcp.state`` per final flowscope state ("": left out); a FinWait flow whose
#: initiator alone sent a FIN is ``close_wait`` (Suricata names states from the server's side).
EVE_TCP_STATE_NAMES = {ST_ACTIVE: "", ST_SYN_SENT: "syn_sent", ST_SYN_RECEIVED: "syn_recv",
                        ST_ESTABLISHED: "established", ST_FIN_WAIT: "fin_wait1",
                        ST_CLOSING_TCP: "last_ack", ST_CLOSED: "closed", ST_RESET: "closed",
                        ST_ABORTED: "closed"}
EVE_TCP_STATES, EVE_TCP_STATE_LENS = _table(
    [EVE_TCP_STATE_NAMES.get(n, "") for n in range(256)] + ["close_wait"])
#: Suricata's EveTcpFlags order: only flags that were seen appear, as ``true``.
EVE_FLAG_NAMES = ((TH_SYN, "syn"), (TH_FIN, "fin"), (TH_RST, "rst"), (TH_PSH, "psh"),
               (TH_ACK, "ack"), (TH_URG, "urg"), (TH_ECE, "ecn"), (TH_CWR, "cwr"))
EVE_FLAGS, EVE_FLAG_LENS = _table(
    ["," + ",".join(f'"{n}":true' for bit, n in EVE_FLAG_NAMES if f & bit) for f in range(256)])
FLOW_STATES, FLOW_STATE_LENS = _table(["new", "established", "closed"])

L_TAB = _lit_id("\t")
L_DASH = _lit_id("-")
L_EMPTY = _lit_id("(empty)")  # Zeek TSV's empty string
L_COMMA = _lit_id(",")
L_QUOTE = _lit_id('"')
L_OBJ_END = _lit_id("}\n")
L_NL = _lit_id("\n")
L_LBRACE = _lit_id("{")
L_LIST_OPEN = _lit_id("[")
L_LIST_CLOSE = _lit_id("]")
L_QCQ = _lit_id('","')
L_ZERO = _lit_id("0")
L_CID = _lit_id("1:")
L_E_TS = _lit_id('{"timestamp":"')
L_E_FID = _lit_id('","flow_id":')
L_E_IFACE = _lit_id(',"in_iface":')
L_E_TYPE = _lit_id(',"event_type":"flow",')
L_E_VLAN = _lit_id('"vlan":[')
L_E_VLAN_END = _lit_id('],')
L_E_SRC = _lit_id('"src_ip":"')
L_E_SPORT = _lit_id('","src_port":')
L_E_DST = _lit_id(',"dest_ip":"')
L_E_DPORT = _lit_id('","dest_port":')
L_E_DST_END = _lit_id('"')
L_E_PROTO = _lit_id(',"proto":"')
L_E_ITYPE = _lit_id(',"icmp_type":')
L_E_ICODE = _lit_id(',"icmp_code":')
L_E_FLOW = _lit_id(',"flow":{"pkts_toserver":')
L_E_PTC = _lit_id(',"pkts_toclient":')
L_E_BTS = _lit_id(',"bytes_toserver":')
L_E_BTC = _lit_id(',"bytes_toclient":')
L_E_START = _lit_id(',"start":"')
L_E_END = _lit_id('","end":"')
L_E_AGE = _lit_id('","age":')
L_E_STATE = _lit_id(',"state":"')
L_E_REASON = _lit_id('","reason":"')
L_E_ALERTED = _lit_id('","alerted":false}')
L_E_TCP = _lit_id(',"tcp":{"tcp_flags":"')
L_E_FTS = _lit_id('","tcp_flags_ts":"')
L_E_FTC = _lit_id('","tcp_flags_tc":"')
L_E_TSTATE = _lit_id(',"state":"')
L_E_RTT = _lit_id(',"tcp_rtt":')
L_E_RTT_RESP = _lit_id(',"tcp_rtt_resp":')
L_E_RTT_INIT = _lit_id(',"tcp_rtt_init":')
L_E_RP_TS = _lit_id(',"retrans_pkts_toserver":')
L_E_RP_TC = _lit_id(',"retrans_pkts_toclient":')
L_E_RB_TS = _lit_id(',"retrans_bytes_toserver":')
L_E_RB_TC = _lit_id(',"retrans_bytes_toclient":')
L_E_ZW_TS = _lit_id(',"zero_win_toserver":')
L_E_ZW_TC = _lit_id(',"zero_win_toclient":')
L_E_OO_TS = _lit_id(',"ooo_pkts_toserver":')
L_E_OO_TC = _lit_id(',"ooo_pkts_toclient":')
L_RBRACE = _lit_id("}")
L_E_ETHER = _lit_id(',"ether":{"src_macs":["')
L_E_DMACS = _lit_id('"],"dest_macs":["')
L_E_ETHER_END = _lit_id('"]}')
L_E_CID = _lit_id(',"community_id":"')
L_E_TUN = _lit_id(',"tunnel":{"type":"')
L_E_TUN_DEPTH = _lit_id('","depth":')
L_E_TUN_KEY = _lit_id(',"key":')
L_E_TUN_PAR = _lit_id(',"parents":[')
L_E_TUN_SEEN = _lit_id('],"parents_seen":')
L_E_EXT = _lit_id(',"flowscope":{')
L_E_DNS = _lit_id('"dns":{')
L_E_RRNAME = _lit_id('"rrname":"')
L_E_RRTYPE = _lit_id('","rrtype":"')
L_E_QTYPE = _lit_id('","qtype":')
L_E_RCODE = _lit_id('"rcode":"')
L_E_ANSWERS = _lit_id('","answers":')
L_E_DRTT = _lit_id('"rtt":')
L_E_DROPS = _lit_id('"drops":{"toserver":')
L_E_DTC = _lit_id(',"toclient":')
L_E_DREASON = _lit_id(',"reason":"')
L_E_DROPS_END = _lit_id('"}')
L_E_REC_END = _lit_id("}\n")
LITS, LIT_LENS = _table(_LIT_LIST)

B62 = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                    dtype=np.uint8).copy()
B64 = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                    dtype=np.uint8).copy()
# ICMP / ICMPv6 message type -> its counterpart (-1: none), as flowscope.community_id
ICMP_PAIR = icmp_pair_table().astype(np.int64)
POW10 = np.array([10 ** k for k in range(20)], dtype=np.uint64)

# BLAKE2b
B2_IV = np.array([0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B,
                  0xA54FF53A5F1D36F1, 0x510E527FADE682D1, 0x9B05688C2B3E6C1F,
                  0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179], dtype=np.uint64)
B2_SIGMA = np.array([
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
    [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
    [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
    [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
    [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
], dtype=np.int64)
B2_G = np.array([[0, 4, 8, 12], [1, 5, 9, 13], [2, 6, 10, 14], [3, 7, 11, 15],
                 [0, 5, 10, 15], [1, 6, 11, 12], [2, 7, 8, 13], [3, 4, 9, 14]], dtype=np.int64)
SHA1_H = np.array([0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0],
                  dtype=np.uint64)

# work layout (uint64 words)
W_V = 0  # BLAKE2b v[16]
W_M = 16  # BLAKE2b m[16] / SHA-1 w[80]
W_H = 96  # hash state (8)
W_MSG = 112  # message bytes, one per word (up to 64)
W_UID = 176  # parent uids, 18 bytes each, one per word (TUN_PARENTS_MAX * 18 <= 72)
W_ADDR = 248  # not used as bytes: (a_hi, a_lo, b_hi, b_lo) of the community id


@inline_kernel
def _lit(buf, pos, i):
    return _row(buf, pos, LITS, LIT_LENS, i)


@inline_kernel
def _ch(buf, pos, c):
    buf[pos] = c
    return pos + 1


# ---- exact decimal text of doubles --------------------------------------------------------

@inline_kernel
def _mul128(a, b):
    """(hi, lo) of the 128-bit product of two uint64."""
    a0 = a & _M32
    a1 = a >> np.uint64(32)
    b0 = b & _M32
    b1 = b >> np.uint64(32)
    p00 = a0 * b0
    p01 = a0 * b1
    p10 = a1 * b0
    p11 = a1 * b1
    mid = (p00 >> np.uint64(32)) + (p01 & _M32) + (p10 & _M32)
    lo = (p00 & _M32) | (mid << np.uint64(32))
    hi = p11 + (p01 >> np.uint64(32)) + (p10 >> np.uint64(32)) + (mid >> np.uint64(32))
    return hi, lo


@inline_kernel
def _gt128(ah, al, bh, bl):
    return ah > bh or (ah == bh and al > bl)


@kernel
def _decompose(d):
    """``(M, e)`` with ``d = M * 2**e`` and 2**52 <= M < 2**53 (d > 0, normal)."""
    e = 0
    m = d
    while m >= 9007199254740992.0:  # 2**53
        m *= 0.5
        e += 1
    while m < 68719476736.0:  # 2**36
        m *= 65536.0
        e -= 16
    while m < 4503599627370496.0:  # 2**52
        m *= 2.0
        e -= 1
    return np.uint64(m), e


@kernel
def _round_scaled(mant, e, k):
    """Round ``mant * 2**e * 10**k`` (k 0..19) half-even to an integer.

    Returns ``(n, dist_hi, dist_lo, up)``: the integer, |n - exact| * 2**-e as a 128-bit
    number, and whether it was rounded up. Assumes the result fits in uint64."""
    ph, pl = _mul128(mant, POW10[k])
    if e >= 0:
        s = np.uint64(e)
        return pl << s, _U0, _U0, False
    s = -e
    if s >= 128:
        return _U0, ph, pl, False
    su = np.uint64(s)
    if s < 64:
        qh = ph >> su
        ql = (pl >> su) | ((ph << (np.uint64(64) - su)) if s > 0 else _U0)
        rh = _U0
        rl = pl & ((_U1 << su) - _U1)
        hh = _U0
        hl = _U1 << (su - _U1)
        th = _U0
        tl = _U1 << su
    else:
        qh = _U0
        ql = ph >> (su - np.uint64(64)) if s < 128 else _U0
        rl = pl
        rh = ph & ((_U1 << (su - np.uint64(64))) - _U1) if s > 64 else _U0
        if s == 64:
            hh = _U0
            hl = np.uint64(1) << np.uint64(63)
            th = _U1
            tl = _U0
        else:
            hh = _U1 << (su - np.uint64(65))
            hl = _U0
            th = _U1 << (su - np.uint64(64))
            tl = _U0
    up = _gt128(rh, rl, hh, hl) or (rh == hh and rl == hl and (ql & _U1) == _U1)
    if up:
        dl = tl - rl
        dh = th - rh - (_U1 if tl < rl else _U0)
        return ql + _U1, dh, dl, True
    return ql, rh, rl, False


@kernel
def _fixed(buf, pos, d, prec):
    """``f"{d:.{prec}f}"`` (prec 6 or 9) for |d| < 2**63 / 10**prec."""
    if d < 0 or (d == 0 and np.signbit(d)):
        buf[pos] = 45
        pos += 1
        d = -d
    if d == 0:
        n = _U0
    else:
        mant, e = _decompose(d)
        n, _dh, _dl, _up = _round_scaled(mant, e, prec)
    p = POW10[prec]
    pos = _uint(buf, pos, n // p)
    buf[pos] = 46
    frac = n % p
    for k in range(prec):
        buf[pos + prec - k] = 48 + np.int64(frac % np.uint64(10))
        frac //= np.uint64(10)
    return pos + prec + 1


@kernel
def _within(dh, dl, k, quarter):
    """``dist * 2 <= 10**k`` (``* 4`` when ``quarter``): the candidate is inside half the
    gap to the neighbouring double."""
    sh = np.uint64(2) if quarter else np.uint64(1)
    if dh >> (np.uint64(64) - sh) != _U0:
        return 2  # beyond
    xh = (dh << sh) | (dl >> (np.uint64(64) - sh))
    xl = dl << sh
    p = POW10[k]
    if xh != _U0 or xl > p:
        return 2
    return 1 if xl == p else 0  # 1: on the boundary


@kernel
def _repr(buf, pos, d):
    """Python's ``repr(d)``: the shortest digits that round-trip (the nearest such), laid out
    as ``float_repr_style`` 'short' does. Exact for 0, for ``ns / 1e9`` of any int64 ``ns``
    (at most 19 decimals are ever needed) and for any double with 1e-3 <= |d| < 1e16."""
    if d < 0 or (d == 0 and np.signbit(d)):
        buf[pos] = 45
        pos += 1
        d = -d
    if d == 0:
        buf[pos] = 48
        buf[pos + 1] = 46
        buf[pos + 2] = 48
        return pos + 3
    mant, e = _decompose(d)
    even = (mant & _U1) == _U0
    low_quarter = mant == np.uint64(1 << 52)
    n = _U0
    k = 0
    while k < 20:
        n, dh, dl, up = _round_scaled(mant, e, k)
        w = _within(dh, dl, k, low_quarter and not up)
        if w == 0 or (w == 1 and even):
            break
        if low_quarter and not up:
            # the neighbour above: the gap above d is twice the gap below
            n2, dh2, dl2, _u = _round_scaled(mant, e, k)
            # distance to n + 1 = 2**s - dist: recomputed from the exact product
            s = -e
            if s < 64:
                th = _U0
                tl = _U1 << np.uint64(s)
            else:
                th = _U1 << np.uint64(s - 64)
                tl = _U0
            ul = tl - dl2
            uh = th - dh2 - (_U1 if tl < dl2 else _U0)
            w = _within(uh, ul, k, False)
            if w == 0 or (w == 1 and even):
                n = n2 + _U1
                break
        k += 1
    # digits of n with trailing zeros dropped; value = digits * 10**(x)
    x = -k
    while n != _U0 and n % np.uint64(10) == _U0:
        n //= np.uint64(10)
        x += 1
    nd = 0
    t = n
    while t != _U0:
        t //= np.uint64(10)
        nd += 1
    start = pos
    pos = _uint(buf, pos, n)  # the digits, moved into place below
    decpt = nd + x
    if decpt <= -4 or decpt > 16:
        # d.ddde-XX
        for j in range(nd - 1, 0, -1):
            buf[start + j + 1] = buf[start + j]
        if nd > 1:
            buf[start + 1] = 46
            pos = start + nd + 1
        else:
            pos = start + 1
        buf[pos] = 101  # 'e'
        ex = decpt - 1
        buf[pos + 1] = 45 if ex < 0 else 43
        ex = abs(ex)
        pos += 2
        if ex < 10:
            buf[pos] = 48
            pos += 1
        return _uint(buf, pos, ex)
    if decpt <= 0:
        z = -decpt
        for j in range(nd - 1, -1, -1):
            buf[start + 2 + z + j] = buf[start + j]
        buf[start] = 48
        buf[start + 1] = 46
        for j in range(z):
            buf[start + 2 + j] = 48
        return start + 2 + z + nd
    if decpt >= nd:
        pos = start + nd
        for j in range(decpt - nd):
            buf[pos] = 48
            pos += 1
        buf[pos] = 46
        buf[pos + 1] = 48
        return pos + 2
    for j in range(nd - 1, decpt - 1, -1):
        buf[start + j + 1] = buf[start + j]
    buf[start + decpt] = 46
    return start + nd + 1


@inline_kernel
def _secs_f(ns):
    """``ns / 1e9`` as Python computes it for an int: the int rounded to a double first."""
    return np.float64(ns) / 1e9


# ---- hashes ---------------------------------------------------------------------------------

@inline_kernel
def _rotr64(x, n):
    return (x >> np.uint64(n)) | (x << np.uint64(64 - n))


@kernel
def _blake2b_96(work, msglen):
    """BLAKE2b with a 12-byte digest of the ``msglen`` (< 128) bytes at ``work[W_MSG:]``;
    leaves the digest in work[W_H], work[W_H + 1] (little-endian words)."""
    for i in range(8):
        work[W_H + i] = B2_IV[i]
    work[W_H] ^= np.uint64(0x01010000 | 12)
    for i in range(16):
        work[W_M + i] = _U0
    for i in range(msglen):
        j = i >> 3
        work[W_M + j] |= work[W_MSG + i] << np.uint64(8 * (i & 7))
    for i in range(8):
        work[W_V + i] = work[W_H + i]
        work[W_V + 8 + i] = B2_IV[i]
    work[W_V + 12] ^= np.uint64(msglen)
    work[W_V + 14] ^= _M64
    for r in range(12):
        row = r % 10
        for g in range(8):
            a = B2_G[g, 0]
            b = B2_G[g, 1]
            c = B2_G[g, 2]
            dd = B2_G[g, 3]
            x = work[W_M + B2_SIGMA[row, 2 * g]]
            y = work[W_M + B2_SIGMA[row, 2 * g + 1]]
            va = work[W_V + a] + work[W_V + b] + x
            vd = _rotr64(work[W_V + dd] ^ va, 32)
            vc = work[W_V + c] + vd
            vb = _rotr64(work[W_V + b] ^ vc, 24)
            va = va + vb + y
            vd = _rotr64(vd ^ va, 16)
            vc = vc + vd
            vb = _rotr64(vb ^ vc, 63)
            work[W_V + a] = va
            work[W_V + b] = vb
            work[W_V + c] = vc
            work[W_V + dd] = vd
    for i in range(2):
        work[W_H + i] ^= work[W_V + i] ^ work[W_V + 8 + i]


@inline_kernel
def _rotl32(x, n):
    return ((x << np.uint64(n)) | (x >> np.uint64(32 - n))) & _M32


@kernel
def _sha1(work, msglen):
    """SHA-1 of the ``msglen`` (< 56) bytes at ``work[W_MSG:]``; digest words in
    work[W_H:W_H + 5]."""
    for i in range(msglen, 64):
        work[W_MSG + i] = _U0
    work[W_MSG + msglen] = np.uint64(0x80)
    bits = np.uint64(msglen * 8)
    work[W_MSG + 62] = (bits >> np.uint64(8)) & np.uint64(0xFF)
    work[W_MSG + 63] = bits & np.uint64(0xFF)
    for i in range(16):
        work[W_M + i] = ((work[W_MSG + 4 * i] << np.uint64(24))
                         | (work[W_MSG + 4 * i + 1] << np.uint64(16))
                         | (work[W_MSG + 4 * i + 2] << np.uint64(8)) | work[W_MSG + 4 * i + 3])
    for i in range(16, 80):
        work[W_M + i] = _rotl32(work[W_M + i - 3] ^ work[W_M + i - 8] ^ work[W_M + i - 14]
                                ^ work[W_M + i - 16], 1)
    a = SHA1_H[0]
    b = SHA1_H[1]
    c = SHA1_H[2]
    d = SHA1_H[3]
    e = SHA1_H[4]
    for i in range(80):
        if i < 20:
            f = (b & c) | ((~b & _M32) & d)
            kk = np.uint64(0x5A827999)
        elif i < 40:
            f = b ^ c ^ d
            kk = np.uint64(0x6ED9EBA1)
        elif i < 60:
            f = (b & c) | (b & d) | (c & d)
            kk = np.uint64(0x8F1BBCDC)
        else:
            f = b ^ c ^ d
            kk = np.uint64(0xCA62C1D6)
        t = (_rotl32(a, 5) + f + e + kk + work[W_M + i]) & _M32
        e = d
        d = c
        c = _rotl32(b, 30)
        b = a
        a = t
    work[W_H] = (SHA1_H[0] + a) & _M32
    work[W_H + 1] = (SHA1_H[1] + b) & _M32
    work[W_H + 2] = (SHA1_H[2] + c) & _M32
    work[W_H + 3] = (SHA1_H[3] + d) & _M32
    work[W_H + 4] = (SHA1_H[4] + e) & _M32


@kernel
def _put_int(work, n, v):
    """Decimal text of int64 ``v`` at work[W_MSG + n:]; returns the new length."""
    if v < 0:
        work[W_MSG + n] = np.uint64(45)
        n += 1
        u = np.uint64(0) - np.uint64(v)
    else:
        u = np.uint64(v)
    return _put_uint(work, n, u)


@kernel
def _put_uint(work, n, u):
    u = np.uint64(u)
    nd = 1
    t = u // np.uint64(10)
    while t != _U0:
        t //= np.uint64(10)
        nd += 1
    for j in range(nd):
        work[W_MSG + n + nd - 1 - j] = np.uint64(48) + u % np.uint64(10)
        u //= np.uint64(10)
    return n + nd


@kernel
def _uid(work, flow_id, started, out, at):
    """Zeek-looking uid of (flow_id, started) (``flowscope.output.zeek.make_uid``): 18
    bytes ``C`` + base62 into ``out[at:]`` (out: any uint array)."""
    n = _put_uint(work, 0, flow_id)
    work[W_MSG + n] = np.uint64(58)  # ':'
    n = _put_int(work, n + 1, np.int64(started))
    _blake2b_96(work, n)
    h0 = work[W_H]
    h1 = work[W_H + 1]
    # the 12 digest bytes as a big-endian integer, in three 32-bit limbs (most significant
    # first): digest bytes 0..7 are h0 little-endian, 8..11 the low half of h1
    limbs0 = _bswap32(h0 & _M32)
    limbs1 = _bswap32(h0 >> np.uint64(32))
    limbs2 = _bswap32(h1 & _M32)
    out[at] = 67  # 'C'
    for j in range(17):
        r = limbs0 % np.uint64(62)
        limbs0 //= np.uint64(62)
        cur = (r << np.uint64(32)) | limbs1
        limbs1 = cur // np.uint64(62)
        r = cur % np.uint64(62)
        cur = (r << np.uint64(32)) | limbs2
        limbs2 = cur // np.uint64(62)
        r = cur % np.uint64(62)
        out[at + 1 + j] = B62[np.int64(r)]


@inline_kernel
def _bswap32(x):
    return (((x & np.uint64(0xFF)) << np.uint64(24)) | ((x & np.uint64(0xFF00)) << np.uint64(8))
            | ((x >> np.uint64(8)) & np.uint64(0xFF00)) | ((x >> np.uint64(24))
                                                           & np.uint64(0xFF)))


@kernel
def _put_addr(work, n, l3, hi, lo):
    """Network-order bytes of an address at work[W_MSG + n:]; returns the new length."""
    if l3 == L3_IPV4:
        for j in range(4):
            work[W_MSG + n + j] = (lo >> np.uint64(24 - 8 * j)) & np.uint64(0xFF)
        return n + 4
    for j in range(8):
        work[W_MSG + n + j] = (hi >> np.uint64(56 - 8 * j)) & np.uint64(0xFF)
        work[W_MSG + n + 8 + j] = (lo >> np.uint64(56 - 8 * j)) & np.uint64(0xFF)
    return n + 16


@kernel
def _addr_gt(l3, ah, al, bh, bl):
    """Address a > b as network-order bytes."""
    if l3 == L3_IPV4:
        return (al & _M32) > (bl & _M32)
    return ah > bh or (ah == bh and al > bl)


@kernel
def _community_id(buf, pos, work, l3, proto, sh, sl, dh, dl, sport, dport, seed):
    """``1:`` + base64(SHA-1) of the flow (flowscope.community_id.community_id_v1); for
    ICMP, ``sport``/``dport`` are the type and code."""
    has_ports = (proto == IPPROTO_TCP or proto == IPPROTO_UDP or proto == IPPROTO_SCTP
                 or proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6)
    one_way = False
    if proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
        other = ICMP_PAIR[1 if proto == IPPROTO_ICMPV6 else 0, sport & 0xFF]
        if other < 0:
            one_way = True
            dport = dport
        else:
            dport = other
    if not one_way:
        same = (sh == dh and sl == dl) if l3 != L3_IPV4 else (sl & _M32) == (dl & _M32)
        if _addr_gt(l3, sh, sl, dh, dl) or (same and has_ports and sport > dport):
            sh, sl, dh, dl = dh, dl, sh, sl
            sport, dport = dport, sport
    work[W_MSG] = np.uint64((seed >> 8) & 0xFF)
    work[W_MSG + 1] = np.uint64(seed & 0xFF)
    n = _put_addr(work, 2, l3, sh, sl)
    n = _put_addr(work, n, l3, dh, dl)
    work[W_MSG + n] = np.uint64(proto)
    work[W_MSG + n + 1] = _U0
    n += 2
    if has_ports:
        work[W_MSG + n] = np.uint64((sport >> 8) & 0xFF)
        work[W_MSG + n + 1] = np.uint64(sport & 0xFF)
        work[W_MSG + n + 2] = np.uint64((dport >> 8) & 0xFF)
        work[W_MSG + n + 3] = np.uint64(dport & 0xFF)
        n += 4
    _sha1(work, n)
    pos = _lit(buf, pos, L_CID)
    # 20 digest bytes -> 27 base64 characters and one '='
    acc = _U0
    nbits = 0
    for i in range(20):
        byte = (work[W_H + i // 4] >> np.uint64(24 - 8 * (i % 4))) & np.uint64(0xFF)
        acc = (acc << np.uint64(8)) | byte
        nbits += 8
        while nbits >= 6:
            nbits -= 6
            buf[pos] = B64[np.int64((acc >> np.uint64(nbits)) & np.uint64(63))]
            pos += 1
    buf[pos] = B64[np.int64((acc << np.uint64(6 - nbits)) & np.uint64(63))]
    buf[pos + 1] = 61  # '='
    return pos + 2


# ---- Zeek ------------------------------------------------------------------------------------

@kernel
def _endpoint_size(zw, side):
    """Zeek's TCP_Endpoint::Size (flowscope.output.zeek.tcp_endpoint_size)."""
    ep = zw[Z_EP0 + side]
    pep = zw[Z_EP0 + 1 - side]
    seqw = zw[Z_SEQ0 + side]
    ackw = zw[Z_ACK0 + side]
    m = np.int64(0xFFFFFFFF)
    start = seqw & m
    last = (seqw >> 32) & m
    ack = ackw & m
    state = ep & EP_STATE_MASK
    prev = (ep >> EP_PREV_SHIFT) & 0xF
    if (prev == TCP_SYN_SENT and state == TCP_RESET and (pep & EP_STATE_MASK) == TCP_INACTIVE
            and ack != start and ack != ((start + 1) & m)):
        return np.int64(0)
    size = max((last - start) & m, (ack - start) & m)
    if size > 0:
        size -= 1
    if (ep & EP_FIN) != 0 and size > 0:
        size -= 1
    return size


@kernel
def _rstos0(h, n):
    """``/^\\^?S[^HAFGIQ]*R.*/`` on the history letters."""
    i = 0
    if n > 0 and h[0] == 94:
        i = 1
    if i >= n or h[i] != 83:
        return False
    for j in range(i + 1, n):
        c = h[j]
        if c == 82:
            return True
        if c == 72 or c == 65 or c == 70 or c == 71 or c == 73 or c == 81:
            return False
    return False


@kernel
def _conn_state(proto, os_, rs, osz, rsz, h, hn, opk, rpk):
    if proto == IPPROTO_TCP:
        o_in = os_ == TCP_INACTIVE or os_ == TCP_PARTIAL
        r_in = rs == TCP_INACTIVE or rs == TCP_PARTIAL
        if rs == TCP_RESET:
            if os_ == TCP_SYN_SENT or os_ == TCP_SYN_ACK_SENT or (
                    os_ == TCP_RESET and osz == 0 and rsz == 0):
                return CS_REJ
            return CS_RSTRH if o_in else CS_RSTR
        if os_ == TCP_RESET:
            if r_in:
                return CS_RSTOS0 if _rstos0(h, hn) else CS_OTH
            return CS_RSTO
        if rs == TCP_CLOSED and os_ == TCP_CLOSED:
            return CS_SF
        if os_ == TCP_CLOSED:
            return CS_SH if r_in else CS_S2
        if rs == TCP_CLOSED:
            return CS_SHR if o_in else CS_S3
        if os_ == TCP_SYN_SENT and rs == TCP_INACTIVE:
            return CS_S0
        if os_ == TCP_ESTABLISHED and rs == TCP_ESTABLISHED:
            return CS_S1
        return CS_OTH
    if proto == IPPROTO_UDP:
        if opk != 0:
            return CS_SF if rpk != 0 else CS_S0
        return CS_SHR if rpk != 0 else CS_OTH
    return CS_OTH


@kernel
def _zkey(buf, pos, json, f):
    """Separator and (JSON) key of field ``f``."""
    if json:
        buf[pos] = 123 if f == F_TS else 44  # '{' / ','
        return _row(buf, pos + 1, ZKEYS, ZKEY_LENS, f)
    if f != F_TS:
        buf[pos] = 9
        return pos + 1
    return pos


@kernel
def _zunset(buf, pos, json, f):
    if json:
        return pos
    buf[pos] = 9
    buf[pos + 1] = 45
    return pos + 2


@kernel
def _zcount(buf, pos, json, f, v):
    pos = _zkey(buf, pos, json, f)
    return _uint(buf, pos, v)


@kernel
def _zfloat(buf, pos, json, f, d):
    pos = _zkey(buf, pos, json, f)
    if json:
        return _repr(buf, pos, d)
    return _fixed(buf, pos, d, 6)


@kernel
def _zrtt(buf, pos, json, f, ns):
    if ns < 0:
        return _zunset(buf, pos, json, f)
    return _zfloat(buf, pos, json, f, _secs_f(ns))


@kernel
def _zq(buf, pos, json):
    if json:
        buf[pos] = 34
        return pos + 1
    return pos


@kernel
def _zeek_addr(buf, pos, l3, hi, lo):
    if l3 == L3_IPV4:
        return _ipv4(buf, pos, np.int64(lo & _M32))
    return _ipv6(buf, pos, hi, lo)


@kernel
def _zeek_line(buf, pos, r, json, work, reasons, reason_lens):
    """One conn.log line of Ended record ``r``; -1 when the record has no IP five-tuple."""
    kind, l3, proto, pa, pb = unpack_meta(r.key[4])
    if kind != EXTRACT_FIVE_TUPLE and kind != EXTRACT_FIVE_TUPLE_DIRECTIONAL:
        return -1
    if l3 != L3_IPV4 and l3 != L3_IPV6:
        return -1
    # flowscope initiator / responder: key halves (0 = a, 2 = b) and ports
    ia = 0
    ib = 2
    ipa = pa
    ipb = pb
    if r.init_rev:
        ia = 2
        ib = 0
        ipa = pb
        ipb = pa
    zw = r.zeek
    ctl = zw[Z_CTL]
    o = np.int64(ctl & CTL_ORIG1)
    rr = 1 - o
    if o == 0:
        oi, ri, op, rp = ia, ib, ipa, ipb
    else:
        oi, ri, op, rp = ib, ia, ipb, ipa
    oh = r.key[oi]
    ol = r.key[oi + 1]
    rh = r.key[ri]
    rl = r.key[ri + 1]
    started = np.int64(r.started)
    is_icmp = proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6
    if is_icmp:
        icmp = np.int64(r.icmp)
        itype = 0
        icode = 0
        if icmp & ICMP_VALID:
            itype = (icmp >> 8) & 0xFF
            icode = icmp & 0xFF
        other = ICMP_PAIR[1 if proto == IPPROTO_ICMPV6 else 0, itype]
        op = itype
        rp = icode if other < 0 else other
        cid_sp = itype
        cid_dp = icode
    else:
        cid_sp = op
        cid_dp = rp
    if proto == IPPROTO_TCP:
        osz = _endpoint_size(zw, o)
        rsz = _endpoint_size(zw, rr)
        os_ = zw[Z_EP0 + o] & EP_STATE_MASK
        rs = zw[Z_EP0 + rr] & EP_STATE_MASK
    else:
        osz = zw[Z_PAY0 + o]
        rsz = zw[Z_PAY0 + rr]
        os_ = 0
        rs = 0
    if ctl & CTL_STARTED:
        last = zw[Z_LAST]
    else:
        last = np.int64(r.last_seen)
    dur = last - started
    hn = np.int64(r.zhist_len)
    opk = r.pkts[o]
    rpk = r.pkts[rr]
    st = _conn_state(proto, os_, rs, osz, rsz, r.zhist, hn, opk, rpk)

    pos = _zfloat(buf, pos, json, F_TS, _secs_f(started))
    pos = _zkey(buf, pos, json, F_UID)
    pos = _zq(buf, pos, json)
    _uid(work, r.flow_id, started, buf, pos)
    pos = _zq(buf, pos + 18, json)
    pos = _zkey(buf, pos, json, F_OH)
    pos = _zq(buf, pos, json)
    pos = _zeek_addr(buf, pos, l3, oh, ol)
    pos = _zq(buf, pos, json)
    pos = _zcount(buf, pos, json, F_OP, op)
    pos = _zkey(buf, pos, json, F_RH)
    pos = _zq(buf, pos, json)
    pos = _zeek_addr(buf, pos, l3, rh, rl)
    pos = _zq(buf, pos, json)
    pos = _zcount(buf, pos, json, F_RP, rp)
    pos = _zkey(buf, pos, json, F_PROTO)
    pos = _zq(buf, pos, json)
    pos = _row(buf, pos, ZPROTOS, ZPROTO_LENS, proto)
    pos = _zq(buf, pos, json)
    pos = _zunset(buf, pos, json, F_SERVICE)
    if dur > 0:
        pos = _zfloat(buf, pos, json, F_DUR, _secs_f(dur))
        pos = _zcount(buf, pos, json, F_OB, osz)
        pos = _zcount(buf, pos, json, F_RB, rsz)
    else:
        pos = _zunset(buf, pos, json, F_DUR)
        pos = _zunset(buf, pos, json, F_OB)
        pos = _zunset(buf, pos, json, F_RB)
    pos = _zkey(buf, pos, json, F_STATE)
    pos = _zq(buf, pos, json)
    pos = _row(buf, pos, CONN_STATES, CONN_STATE_LENS, st)
    pos = _zq(buf, pos, json)
    pos = _zunset(buf, pos, json, F_LO)
    pos = _zunset(buf, pos, json, F_LR)
    pos = _zcount(buf, pos, json, F_MISSED, 0)
    if hn > 0:
        pos = _zkey(buf, pos, json, F_HIST)
        pos = _zq(buf, pos, json)
        for k in range(hn):
            buf[pos + k] = r.zhist[k]
        pos = _zq(buf, pos + hn, json)
    else:
        pos = _zunset(buf, pos, json, F_HIST)
    pos = _zcount(buf, pos, json, F_OPK, opk)
    pos = _zcount(buf, pos, json, F_OIB, zw[Z_IP_BYTES0 + o])
    pos = _zcount(buf, pos, json, F_RPK, rpk)
    pos = _zcount(buf, pos, json, F_RIB, zw[Z_IP_BYTES0 + rr])
    # tunnel_parents: the outer flows' uids, sorted
    npar = 0
    if r.tun != 0:
        for j in range(TUN_PARENTS_MAX):
            if r.tun_parent[j] >= 0:
                _uid(work, r.tun_parent[j], r.tun_parent_started[j], work, W_UID + 18 * npar)
                npar += 1
    if npar > 0:
        # selection order by byte comparison (at most TUN_PARENTS_MAX uids)
        pos = _zkey(buf, pos, json, F_TUNP)
        if json:
            pos = _ch(buf, pos, 91)
        used = 0
        for t in range(npar):
            best = -1
            for j in range(npar):
                if (used >> j) & 1:
                    continue
                if best < 0 or _uid_lt(work, j, best):
                    best = j
            used |= 1 << best
            if t > 0:
                pos = _ch(buf, pos, 44)
            pos = _zq(buf, pos, json)
            for c in range(18):
                buf[pos + c] = work[W_UID + 18 * best + c]
            pos = _zq(buf, pos + 18, json)
        if json:
            pos = _ch(buf, pos, 93)
    else:
        pos = _zunset(buf, pos, json, F_TUNP)
    pos = _zkey(buf, pos, json, F_CID)
    pos = _zq(buf, pos, json)
    pos = _community_id(buf, pos, work, l3, proto, oh, ol, rh, rl, cid_sp, cid_dp, 0)
    pos = _zq(buf, pos, json)
    nv = np.int64(r.nvlan)
    if nv > 0:
        pos = _zcount(buf, pos, json, F_VLAN, r.vlan[0])
    else:
        pos = _zunset(buf, pos, json, F_VLAN)
    if nv > 1:
        pos = _zcount(buf, pos, json, F_IVLAN, r.vlan[1])
    else:
        pos = _zunset(buf, pos, json, F_IVLAN)
    if r.has_mac:
        m0 = r.init_mac if o == 0 else r.resp_mac
        m1 = r.resp_mac if o == 0 else r.init_mac
        pos = _zkey(buf, pos, json, F_OL2)
        pos = _zq(buf, pos, json)
        pos = _mac(buf, pos, m0)
        pos = _zq(buf, pos, json)
        pos = _zkey(buf, pos, json, F_RL2)
        pos = _zq(buf, pos, json)
        pos = _mac(buf, pos, m1)
        pos = _zq(buf, pos, json)
    else:
        pos = _zunset(buf, pos, json, F_OL2)
        pos = _zunset(buf, pos, json, F_RL2)
    if proto == IPPROTO_TCP:
        both = r.rtt_resp >= 0 and r.rtt_init >= 0
        pos = _zrtt(buf, pos, json, F_RTT, r.rtt_resp + r.rtt_init if both else np.int64(-1))
        pos = _zrtt(buf, pos, json, F_RTT_RESP, r.rtt_resp)
        pos = _zrtt(buf, pos, json, F_RTT_INIT, r.rtt_init)
        pos = _zcount(buf, pos, json, F_ORP, r.retrans_pkts[o])
        pos = _zcount(buf, pos, json, F_RRP, r.retrans_pkts[rr])
        pos = _zcount(buf, pos, json, F_ORB, r.retrans_bytes[o])
        pos = _zcount(buf, pos, json, F_RRB, r.retrans_bytes[rr])
        pos = _zcount(buf, pos, json, F_OZW, r.zero_win[o])
        pos = _zcount(buf, pos, json, F_RZW, r.zero_win[rr])
        pos = _zcount(buf, pos, json, F_OOO, r.ooo_pkts[o])
        pos = _zcount(buf, pos, json, F_ROO, r.ooo_pkts[rr])
    else:
        for f in range(F_RTT, F_ROO + 1):
            pos = _zunset(buf, pos, json, f)
    d = np.int64(r.dns)
    if d & EVD_QUERY:
        pos = _zkey(buf, pos, json, F_DQ)
        pos = _zq(buf, pos, json)
        for k in range(r.dns_qlen):
            buf[pos + k] = r.dns_qname[k]
        pos += np.int64(r.dns_qlen)
        if r.dns_qlen == 0 and not json:
            pos = _row(buf, pos, LITS, LIT_LENS, L_EMPTY)
        pos = _zq(buf, pos, json)
        qt = np.int64(r.dns_qtype)
        pos = _zcount(buf, pos, json, F_DQT, qt)
        if qt < QTYPES.shape[0] and QTYPE_LENS[qt] > 0:
            pos = _zkey(buf, pos, json, F_DQTN)
            pos = _zq(buf, pos, json)
            pos = _row(buf, pos, QTYPES, QTYPE_LENS, qt)
            pos = _zq(buf, pos, json)
        else:
            pos = _zunset(buf, pos, json, F_DQTN)
    else:
        for f in range(F_DQ, F_DQTN + 1):
            pos = _zunset(buf, pos, json, f)
    if d & EVD_RESPONSE:
        rc = np.int64(r.dns_rcode)
        pos = _zcount(buf, pos, json, F_DRC, rc)
        if rc < RCODES.shape[0]:
            pos = _zkey(buf, pos, json, F_DRCN)
            pos = _zq(buf, pos, json)
            pos = _row(buf, pos, RCODES, RCODE_LENS, rc)
            pos = _zq(buf, pos, json)
        else:
            pos = _zunset(buf, pos, json, F_DRCN)
        pos = _zcount(buf, pos, json, F_DANS, np.int64(r.dns_answers))
    else:
        for f in range(F_DRC, F_DANS + 1):
            pos = _zunset(buf, pos, json, f)
    if d & EVD_RTT:
        pos = _zfloat(buf, pos, json, F_DRTT, _secs_f(r.dns_rtt))
    else:
        pos = _zunset(buf, pos, json, F_DRTT)
    if r.drops[0] != 0 or r.drops[1] != 0:
        pos = _zcount(buf, pos, json, F_ODR, r.drops[o])
        pos = _zcount(buf, pos, json, F_RDR, r.drops[rr])
        pos = _zkey(buf, pos, json, F_DREASON)
        pos = _zq(buf, pos, json)
        pos = _reason(buf, pos, np.int64(r.drop_reason), reasons, reason_lens)
        pos = _zq(buf, pos, json)
    else:
        for f in range(F_ODR, F_DREASON + 1):
            pos = _zunset(buf, pos, json, f)
    if json:
        return _lit(buf, pos, L_OBJ_END)
    return _lit(buf, pos, L_NL)


@kernel
def _uid_lt(work, a, b):
    for c in range(18):
        x = work[W_UID + 18 * a + c]
        y = work[W_UID + 18 * b + c]
        if x != y:
            return x < y
    return False


@kernel
def _reason(buf, pos, code, reasons, reason_lens):
    if code < reasons.shape[0] and reason_lens[code] > 0:
        return _row(buf, pos, reasons, reason_lens, code)
    return _uint(buf, pos, code)


@kernel
def format_zeek(recs, buf, json, work, reasons, reason_lens):
    """Format the Ended records of ``recs`` (EVENT_DTYPE[n]) as conn.log lines into ``buf``
    (uint8[m]): Zeek's TSV (``json`` False) or its JSON form. Returns
    ``(done, nbytes, lines, skipped)``; records without an IP five-tuple are skipped.
    ``work``: uint64[WORK_WORDS]; ``reasons``, ``reason_lens``: drop reason names
    (``textout.reason_table``)."""
    pos = 0
    lines = 0
    skipped = 0
    cap = buf.shape[0]
    for i in range(recs.shape[0]):
        if pos + MAX_LINE > cap:
            return i, pos, lines, skipped
        r = recs[i]
        if r.kind != EV_ENDED:
            continue
        end = _zeek_line(buf, pos, r, json, work, reasons, reason_lens)
        if end < 0:
            skipped += 1
        else:
            pos = end
            lines += 1
    return recs.shape[0], pos, lines, skipped


# ---- EVE ---------------------------------------------------------------------------------

@kernel
def _eve_time(buf, pos, ns):
    """``YYYY-mm-ddTHH:MM:SS.uuuuuu+0000`` (UTC) of int64 ns."""
    ns = np.int64(ns)
    s = ns // 1_000_000_000
    rem = ns - s * 1_000_000_000
    days = s // 86400
    sod = s - days * 86400
    # civil_from_days (H. Hinnant)
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    dd = doy - (153 * mp + 2) // 5 + 1
    mm = mp + 3 if mp < 10 else mp - 9
    if mm <= 2:
        y += 1
    pos = _digits(buf, pos, y, 4)
    buf[pos] = 45
    pos = _digits(buf, pos + 1, mm, 2)
    buf[pos] = 45
    pos = _digits(buf, pos + 1, dd, 2)
    buf[pos] = 84  # 'T'
    pos = _digits(buf, pos + 1, sod // 3600, 2)
    buf[pos] = 58
    pos = _digits(buf, pos + 1, (sod // 60) % 60, 2)
    buf[pos] = 58
    pos = _digits(buf, pos + 1, sod % 60, 2)
    buf[pos] = 46
    pos = _digits(buf, pos + 1, rem // 1000, 6)
    buf[pos] = 43  # '+'
    for k in range(4):
        buf[pos + 1 + k] = 48
    return pos + 5


@kernel
def _digits(buf, pos, v, width):
    """``v`` (>= 0) zero-padded to at least ``width`` digits."""
    n = 1
    t = v // 10
    while t > 0:
        t //= 10
        n += 1
    if n < width:
        n = width
    for k in range(n):
        buf[pos + n - 1 - k] = 48 + v % 10
        v //= 10
    return pos + n


@kernel
def _hex2(buf, pos, v):
    buf[pos] = HEX[(v >> 4) & 0xF]
    buf[pos + 1] = HEX[v & 0xF]
    return pos + 2


@kernel
def _eve_addr(buf, pos, l3, hi, lo):
    if l3 == L3_IPV4:
        return _ipv4(buf, pos, np.int64(lo & _M32))
    if l3 == L3_IPV6:
        return _ipv6(buf, pos, hi, lo)
    return _mac(buf, pos, lo)


@kernel
def _eve_rtt(buf, pos, lit, ns):
    if ns < 0:
        return pos
    pos = _lit(buf, pos, lit)
    return _fixed(buf, pos, _secs_f(ns), 9)


@kernel
def _eve_line(buf, pos, r, fid, seed, work, names, name_lens, reasons, reason_lens):
    """One EVE ``flow`` record of Ended record ``r``; -1 for MAC-pair keys (skipped)."""
    kind, l3, proto, pa, pb = unpack_meta(r.key[4])
    if kind == EXTRACT_MAC_PAIR:
        return -1
    five = kind == EXTRACT_FIVE_TUPLE or kind == EXTRACT_FIVE_TUPLE_DIRECTIONAL
    if not five:
        proto = 0
    ia = 0
    ib = 2
    sp = pa
    dp = pb
    if r.init_rev:
        ia = 2
        ib = 0
        sp = pb
        dp = pa
    pos = _lit(buf, pos, L_E_TS)
    pos = _eve_time(buf, pos, r.ts)
    pos = _lit(buf, pos, L_E_FID)
    pos = _uint(buf, pos, fid)
    ifc = np.int64(r.iface)
    if ifc < name_lens.shape[0] and name_lens[ifc] > 0:
        pos = _lit(buf, pos, L_E_IFACE)
        pos = _row(buf, pos, names, name_lens, ifc)
        pos = _ch(buf, pos, 44)
    else:
        pos = _ch(buf, pos, 44)
    # ',"event_type":"flow",' without its leading comma
    pos = _row(buf, pos - 1, LITS, LIT_LENS, L_E_TYPE)
    nv = min(np.int64(r.nvlan), 2)
    if nv > 0:
        pos = _lit(buf, pos, L_E_VLAN)
        pos = _uint(buf, pos, np.int64(r.vlan[0]))
        if nv > 1:
            pos = _ch(buf, pos, 44)
            pos = _uint(buf, pos, np.int64(r.vlan[1]))
        pos = _lit(buf, pos, L_E_VLAN_END)
    ports = five and (proto == IPPROTO_TCP or proto == IPPROTO_UDP or proto == IPPROTO_SCTP)
    pos = _lit(buf, pos, L_E_SRC)
    pos = _eve_addr(buf, pos, l3, r.key[ia], r.key[ia + 1])
    if ports:
        pos = _lit(buf, pos, L_E_SPORT)
        pos = _uint(buf, pos, sp)
    else:
        pos = _ch(buf, pos, 34)
    pos = _lit(buf, pos, L_E_DST)
    pos = _eve_addr(buf, pos, l3, r.key[ib], r.key[ib + 1])
    if ports:
        pos = _lit(buf, pos, L_E_DPORT)
        pos = _uint(buf, pos, dp)
    else:
        pos = _ch(buf, pos, 34)
    icmp = np.int64(r.icmp)
    if five:
        pos = _lit(buf, pos, L_E_PROTO)
        pos = _row(buf, pos, EVE_PROTOS, EVE_PROTO_LENS, proto)
        pos = _ch(buf, pos, 34)
        if (proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6) and (icmp & ICMP_VALID) != 0:
            pos = _lit(buf, pos, L_E_ITYPE)
            pos = _uint(buf, pos, (icmp >> 8) & 0xFF)
            pos = _lit(buf, pos, L_E_ICODE)
            pos = _uint(buf, pos, icmp & 0xFF)
    ptc = r.pkts[1]
    pos = _lit(buf, pos, L_E_FLOW)
    pos = _uint(buf, pos, r.pkts[0])
    pos = _lit(buf, pos, L_E_PTC)
    pos = _uint(buf, pos, ptc)
    pos = _lit(buf, pos, L_E_BTS)
    pos = _uint(buf, pos, r.bytes[0])
    pos = _lit(buf, pos, L_E_BTC)
    pos = _uint(buf, pos, r.bytes[1])
    pos = _lit(buf, pos, L_E_START)
    started = np.int64(r.started)
    last = np.int64(r.last_seen)
    pos = _eve_time(buf, pos, started)
    pos = _lit(buf, pos, L_E_END)
    pos = _eve_time(buf, pos, last)
    pos = _lit(buf, pos, L_E_AGE)
    age = last // 1_000_000_000 - started // 1_000_000_000
    if age < 0:
        pos = _ch(buf, pos, 45)
        age = -age
    pos = _uint(buf, pos, age)
    pos = _lit(buf, pos, L_E_STATE)
    to_state = np.int64(r.to_state)
    if proto == IPPROTO_TCP:
        if to_state == ST_CLOSED or to_state == ST_RESET or to_state == ST_ABORTED:
            fs = 2
        elif (to_state == ST_ESTABLISHED or to_state == ST_FIN_WAIT
              or to_state == ST_CLOSING_TCP):
            fs = 1
        elif to_state == ST_ACTIVE and ptc > 0:
            fs = 1
        else:
            fs = 0
    else:
        fs = 1 if ptc > 0 else 0
    pos = _row(buf, pos, FLOW_STATES, FLOW_STATE_LENS, fs)
    pos = _lit(buf, pos, L_E_REASON)
    pos = _row(buf, pos, EVE_REASONS, EVE_REASON_LENS, np.int64(r.reason))
    pos = _lit(buf, pos, L_E_ALERTED)
    if five and proto == IPPROTO_TCP:
        fts = np.int64(r.flags_or[0])
        ftc = np.int64(r.flags_or[1])
        both = fts | ftc
        pos = _lit(buf, pos, L_E_TCP)
        pos = _hex2(buf, pos, both)
        pos = _lit(buf, pos, L_E_FTS)
        pos = _hex2(buf, pos, fts)
        pos = _lit(buf, pos, L_E_FTC)
        pos = _hex2(buf, pos, ftc)
        pos = _ch(buf, pos, 34)
        if both:
            pos = _row(buf, pos, EVE_FLAGS, EVE_FLAG_LENS, both)
        ts_i = to_state if to_state < 256 else 0
        if to_state == ST_FIN_WAIT and (fts & TH_FIN) != 0 and (ftc & TH_FIN) == 0:
            ts_i = 256  # close_wait: Suricata names states from the server's side
        if EVE_TCP_STATE_LENS[ts_i] > 0:
            pos = _lit(buf, pos, L_E_TSTATE)
            pos = _row(buf, pos, EVE_TCP_STATES, EVE_TCP_STATE_LENS, ts_i)
            pos = _ch(buf, pos, 34)
        both_rtt = r.rtt_resp >= 0 and r.rtt_init >= 0
        pos = _eve_rtt(buf, pos, L_E_RTT, r.rtt_resp + r.rtt_init if both_rtt
                       else np.int64(-1))
        pos = _eve_rtt(buf, pos, L_E_RTT_RESP, r.rtt_resp)
        pos = _eve_rtt(buf, pos, L_E_RTT_INIT, r.rtt_init)
        pos = _lit(buf, pos, L_E_RP_TS)
        pos = _uint(buf, pos, r.retrans_pkts[0])
        pos = _lit(buf, pos, L_E_RP_TC)
        pos = _uint(buf, pos, r.retrans_pkts[1])
        pos = _lit(buf, pos, L_E_RB_TS)
        pos = _uint(buf, pos, r.retrans_bytes[0])
        pos = _lit(buf, pos, L_E_RB_TC)
        pos = _uint(buf, pos, r.retrans_bytes[1])
        pos = _lit(buf, pos, L_E_ZW_TS)
        pos = _uint(buf, pos, r.zero_win[0])
        pos = _lit(buf, pos, L_E_ZW_TC)
        pos = _uint(buf, pos, r.zero_win[1])
        pos = _lit(buf, pos, L_E_OO_TS)
        pos = _uint(buf, pos, r.ooo_pkts[0])
        pos = _lit(buf, pos, L_E_OO_TC)
        pos = _uint(buf, pos, r.ooo_pkts[1])
        pos = _lit(buf, pos, L_RBRACE)
    if r.has_mac:
        pos = _lit(buf, pos, L_E_ETHER)
        pos = _mac(buf, pos, r.init_mac)
        pos = _lit(buf, pos, L_E_DMACS)
        pos = _mac(buf, pos, r.resp_mac)
        pos = _lit(buf, pos, L_E_ETHER_END)
    if five and (l3 == L3_IPV4 or l3 == L3_IPV6):
        sh = r.key[ia]
        sl = r.key[ia + 1]
        dh = r.key[ib]
        dl = r.key[ib + 1]
        csp = sp
        cdp = dp
        if proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
            if icmp & ICMP_VALID:
                csp = (icmp >> 8) & 0xFF
                cdp = icmp & 0xFF
            else:
                csp = 0
                cdp = 0
        pos = _lit(buf, pos, L_E_CID)
        pos = _community_id(buf, pos, work, l3, proto, sh, sl, dh, dl, csp, cdp, seed)
        pos = _ch(buf, pos, 34)
    if r.tun != 0:
        pos = _tunnel(buf, pos, r)  # as in JSON Lines
    d = np.int64(r.dns)
    has_drops = r.drops[0] != 0 or r.drops[1] != 0
    if d != 0 or has_drops:
        pos = _lit(buf, pos, L_E_EXT)
        if d != 0:
            pos = _eve_dns(buf, pos, r, d)
        if has_drops:
            if d != 0:
                pos = _ch(buf, pos, 44)
            pos = _lit(buf, pos, L_E_DROPS)
            pos = _uint(buf, pos, r.drops[0])
            pos = _lit(buf, pos, L_E_DTC)
            pos = _uint(buf, pos, r.drops[1])
            pos = _lit(buf, pos, L_E_DREASON)
            pos = _reason(buf, pos, np.int64(r.drop_reason), reasons, reason_lens)
            pos = _lit(buf, pos, L_E_DROPS_END)
        pos = _lit(buf, pos, L_RBRACE)
    return _lit(buf, pos, L_E_REC_END)


@kernel
def _eve_dns(buf, pos, r, d):
    """The ``dns`` object of the ``flowscope`` extension (output.eve.eve_dns)."""
    pos = _lit(buf, pos, L_E_DNS)
    first = True
    if d & EVD_QUERY:
        pos = _lit(buf, pos, L_E_RRNAME)
        for k in range(r.dns_qlen):
            buf[pos + k] = r.dns_qname[k]
        pos += np.int64(r.dns_qlen)
        pos = _lit(buf, pos, L_E_RRTYPE)
        qt = np.int64(r.dns_qtype)
        if qt < QTYPES.shape[0] and QTYPE_LENS[qt] > 0:
            pos = _row(buf, pos, QTYPES, QTYPE_LENS, qt)
        else:
            pos = _uint(buf, pos, qt)
        pos = _lit(buf, pos, L_E_QTYPE)
        pos = _uint(buf, pos, qt)
        first = False
    if d & EVD_RESPONSE:
        if not first:
            pos = _ch(buf, pos, 44)
        rc = np.int64(r.dns_rcode)
        pos = _lit(buf, pos, L_E_RCODE)
        if rc < RCODES.shape[0]:
            pos = _row(buf, pos, RCODES, RCODE_LENS, rc)
        else:
            pos = _uint(buf, pos, rc)
        pos = _lit(buf, pos, L_E_ANSWERS)
        pos = _uint(buf, pos, np.int64(r.dns_answers))
        first = False
    if d & EVD_RTT:
        if not first:
            pos = _ch(buf, pos, 44)
        pos = _lit(buf, pos, L_E_DRTT)
        pos = _fixed(buf, pos, _secs_f(r.dns_rtt), 9)
    return _lit(buf, pos, L_RBRACE)


@kernel
def format_eve(recs, buf, fids, seed, work, names, name_lens, reasons, reason_lens):
    """Format the Ended records of ``recs`` (EVENT_DTYPE[n]) as EVE ``flow`` records into
    ``buf`` (uint8[m]). ``fids``: uint64[n], the EVE flow id of each record
    (``output.eve.eve_flow_ids``); ``seed``: the Community ID seed; ``names`` (uint8[k, w]),
    ``name_lens`` (int64[k]): JSON strings (quoted) of the named interfaces. Returns
    ``(done, nbytes, lines, skipped)``; MAC-pair records are skipped."""
    pos = 0
    lines = 0
    skipped = 0
    cap = buf.shape[0]
    for i in range(recs.shape[0]):
        if pos + MAX_LINE > cap:
            return i, pos, lines, skipped
        r = recs[i]
        if r.kind != EV_ENDED:
            continue
        end = _eve_line(buf, pos, r, fids[i], seed, work, names, name_lens, reasons,
                        reason_lens)
        if end < 0:
            skipped += 1
        else:
            pos = end
            lines += 1
    return recs.shape[0], pos, lines, skipped
