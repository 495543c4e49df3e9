"""JSON Lines formatting of event records, in numba: bytes out, no Python object per event.

``format_jsonl(recs, buf)`` writes one JSON object per record of
``layout.EVENT_DTYPE`` into the uint8 buffer ``buf`` and returns
``(records_done, bytes_written)``; it stops before a record that might not
fit (``MAX_LINE`` bytes), so the caller flushes and calls again. The schema
is the one in docs/output.md; the plain-Python twin in tests/naive_jsonl.py
produces the same bytes.
"""

import numpy as np

from ..layout import (
    DNS_QTYPE_NAMES, DNS_RCODE_NAMES, EV_ENDED, EV_PACKET, EV_STARTED, EV_STATE_CHANGE,
    EV_UPDATE, EVD_QUERY, EVD_RESPONSE, EVD_RTT, EXTRACT_IP_PAIR, EXTRACT_MAC_PAIR, IPPROTO_TCP,
    KIND_SLUGS, PROTO_SLUGS, REASON_SLUGS, SIDE_SLUGS, STATE_SLUGS, TUN_PARENTS_MAX, TUN_SLUGS,
    TUN_WORD_DEPTH_SHIFT, TUN_WORD_NPAR_SHIFT, TUN_WORD_TYPE_SHIFT,
)
from .common import inline_kernel, kernel, unpack_meta

#: Upper bound of one formatted line (an Ended record of an IPv6 TCP flow is ~900 bytes with
#: its context, TCP and tunnel fields, plus up to ~420 of DNS and ~80 of drop fields).
MAX_LINE = 2048


def _table(words):
    """Strings as a (n, width) uint8 table plus their lengths (numba global constants)."""
    width = max(len(w) for w in words)
    tab = np.zeros((len(words), width), dtype=np.uint8)
    lens = np.zeros(len(words), dtype=np.int64)
    for i, w in enumerate(words):
        b = w.encode("ascii")
        tab[i, : len(b)] = np.frombuffer(b, dtype=np.uint8)
        lens[i] = len(b)
    return tab, lens


# event kinds 1..5 (index 0 unused)
KINDS, KIND_LENS = _table([KIND_SLUGS.get(k, "") for k in range(max(KIND_SLUGS) + 1)])
STATES, STATE_LENS = _table(STATE_SLUGS)
REASONS, REASON_LENS = _table(REASON_SLUGS)
SIDES, SIDE_LENS = _table(SIDE_SLUGS)
PROTOS, PROTO_LENS = _table([PROTO_SLUGS.get(n, "other") for n in range(256)])
# literal fragments, in the order they are used
LITS, LIT_LENS = _table([
    '{"event":"',  # 0
    '","ts":',  # 1
    ',"flow_id":',  # 2
    '"proto":"',  # 3
    '","ip_proto":',  # 4
    ',"src_ip":"',  # 5
    '","src_port":',  # 6
    ',"dst_ip":"',  # 7
    '","dst_port":',  # 8
    '"src_mac":"',  # 9
    '","dst_mac":"',  # 10
    '"',  # 11
    ',"side":"',  # 12
    '","len":',  # 13
    ',"from":"',  # 14
    '","to":"',  # 15
    ',"reason":"',  # 16
    '","state":"',  # 17
    '","history":"',  # 18
    '","start":',  # 19
    ',"end":',  # 20
    ',"duration":',  # 21
    ',"init_pkts":',  # 22
    ',"init_bytes":',  # 23
    ',"resp_pkts":',  # 24
    ',"resp_bytes":',  # 25
    ',"init_payload_bytes":',  # 26
    ',"resp_payload_bytes":',  # 27
    ',"init_tcp_flags":',  # 28
    ',"resp_tcp_flags":',  # 29
    '}\n',  # 30
    '"src_ip":"',  # 31
    '","dst_ip":"',  # 32
    '"}\n',  # 33
    ',"sample_rate":',  # 34
    ',"state":"',  # 35
    ',"iface":"',  # 36
    '","vlan":[',  # 37
    ']',  # 38
    ',"init_mac":"',  # 39
    '","resp_mac":"',  # 40
    '"',  # 41
    ',"tcp_rtt":',  # 42 (tcpperf: TCP flows only)
    ',"tcp_rtt_resp":',  # 43
    ',"tcp_rtt_init":',  # 44
    ',"init_retrans_pkts":',  # 45
    ',"resp_retrans_pkts":',  # 46
    ',"init_retrans_bytes":',  # 47
    ',"resp_retrans_bytes":',  # 48
    ',"init_zero_win":',  # 49
    ',"resp_zero_win":',  # 50
    ',"init_ooo_pkts":',  # 51
    ',"resp_ooo_pkts":',  # 52
    'null',  # 53
    ',"tunnel":{"type":"',  # 54
    '","depth":',  # 55
    ',"key":',  # 56
    ',"parents":[',  # 57
    ',',  # 58
    '],"parents_seen":',  # 59
    '}',  # 60
    ',"dns_query":"',  # 61
    '","dns_qtype":',  # 62
    ',"dns_qtype_name":"',  # 63
    ',"dns_rcode":',  # 64
    ',"dns_rcode_name":"',  # 65
    ',"dns_answers":',  # 66
    ',"dns_rtt":',  # 67
    ',"init_drops":',  # 68
    ',"resp_drops":',  # 69
    ',"drop_reason":"',  # 70
])
#: Interface name table of ``format_jsonl``: ``MAX_IFNAME`` bytes per interface.
MAX_IFNAME = 64
TUNS, TUN_LENS = _table([TUN_SLUGS.get(t, "other") for t in range(256)])
QTYPES, QTYPE_LENS = _table([DNS_QTYPE_NAMES.get(n, "") for n in range(max(DNS_QTYPE_NAMES) + 1)])
RCODES, RCODE_LENS = _table(list(DNS_RCODE_NAMES))
HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8).copy()
#: "00" "01" ... "99": the digits of each number below 100
DIGIT_PAIRS = np.frombuffer(b"".join(b"%02d" % d for d in range(100)), dtype=np.uint8).copy()
#: 10 ** k for k = 0..19 (the powers a uint64 can hold)
POW10 = np.array([10 ** k for k in range(20)], dtype=np.uint64)

@inline_kernel
def _row(buf, pos, tab, lens, i):
    n = lens[i]
    for k in range(n):
        buf[pos + k] = tab[i, k]
    return pos + n


@inline_kernel
def _lit(buf, pos, i):
    return _row(buf, pos, LITS, LIT_LENS, i)


@inline_kernel
def _pair(buf, pos, d):
    """The two digits of ``d`` (0..99) at ``buf[pos]``, ``buf[pos + 1]``."""
    buf[pos] = DIGIT_PAIRS[2 * d]
    buf[pos + 1] = DIGIT_PAIRS[2 * d + 1]


@inline_kernel
def _uint(buf, pos, v):
    """Decimal digits of ``v`` (any uint64; int64 arguments must be >= 0), two at a time."""
    v = np.uint64(v)
    n = 1
    while n < 20 and v >= POW10[n]:
        n += 1
    k = pos + n
    while v >= np.uint64(100):
        q = v // np.uint64(100)
        k -= 2
        _pair(buf, k, np.int64(v - q * np.uint64(100)))
        v = q
    if v >= np.uint64(10):
        _pair(buf, k - 2, np.int64(v))
    else:
        buf[k - 1] = 48 + np.int64(v)
    return pos + n


@kernel
def _secs(buf, pos, neg, mag):
    """``mag`` ns (uint64) as exact seconds with nine decimals, '-' first when ``neg``."""
    if neg:
        buf[pos] = 45  # '-'
        pos += 1
    pos = _uint(buf, pos, mag // np.uint64(1_000_000_000))
    buf[pos] = 46  # '.'
    frac = np.int64(mag % np.uint64(1_000_000_000))
    k = pos + 10
    for _ in range(4):
        q = frac // 100
        k -= 2
        _pair(buf, k, frac - q * 100)
        frac = q
    buf[pos + 1] = 48 + frac
    return pos + 10


@kernel
def _ns(buf, pos, ns):
    """Exact seconds with nine decimals from int64 ns, INT64_MIN included."""
    return _ns_diff(buf, pos, ns, np.int64(0))


@kernel
def _ns_diff(buf, pos, a, b):
    """Exact seconds of ``a - b`` (int64 ns each): the difference is taken in 65 bits
    (a uint64 magnitude and a sign), so it never wraps."""
    a = np.int64(a)
    b = np.int64(b)
    if a >= b:
        return _secs(buf, pos, False, np.uint64(a) - np.uint64(b))
    return _secs(buf, pos, True, np.uint64(b) - np.uint64(a))


@kernel
def _ipv4(buf, pos, a):
    for k in range(4):
        pos = _uint(buf, pos, (a >> (24 - 8 * k)) & 0xFF)
        if k < 3:
            buf[pos] = 46
            pos += 1
    return pos


@kernel
def _hex16(buf, pos, v):
    started = False
    for sh in range(12, -4, -4):
        d = (v >> sh) & 0xF
        if d != 0 or started or sh == 0:
            buf[pos] = HEX[d]
            pos += 1
            started = True
    return pos


@kernel
def _group(hi, lo, k):
    """16-bit group ``k`` (0..7) of an IPv6 address held as two words."""
    w = hi if k < 4 else lo
    return np.int64((w >> np.uint64(48 - 16 * (k % 4))) & np.uint64(0xFFFF))


@kernel
def _ipv6(buf, pos, hi, lo):
    """RFC 5952 text: lower-case hex, the longest run (>= 2) of zero groups as '::'."""
    best_s = -1
    best_n = 1
    k = 0
    while k < 8:
        if _group(hi, lo, k) == 0:
            j = k
            while j < 8 and _group(hi, lo, j) == 0:
                j += 1
            if j - k > best_n:
                best_s = k
                best_n = j - k
            k = j
        else:
            k += 1
    k = 0
    sep = False
    while k < 8:
        if k == best_s:
            buf[pos] = 58
            buf[pos + 1] = 58
            pos += 2
            k += best_n
            sep = False
            continue
        if sep:
            buf[pos] = 58
            pos += 1
        pos = _hex16(buf, pos, _group(hi, lo, k))
        sep = True
        k += 1
    return pos


@kernel
def _ip(buf, pos, l3, hi, lo):
    if l3 == 4:
        return _ipv4(buf, pos, np.int64(lo & np.uint64(0xFFFFFFFF)))
    return _ipv6(buf, pos, hi, lo)


@kernel
def _mac(buf, pos, v):
    for k in range(6):
        b = np.int64((v >> np.uint64(40 - 8 * k)) & np.uint64(0xFF))
        buf[pos] = HEX[b >> 4]
        buf[pos + 1] = HEX[b & 0xF]
        pos += 2
        if k < 5:
            buf[pos] = 58
            pos += 1
    return pos


@kernel
def _flow(buf, pos, r):
    """The endpoint fields, initiator first."""
    kind, l3, proto, pa, pb = unpack_meta(r.key[4])
    ia, ib = 0, 2
    if r.init_rev:
        ia, ib = 2, 0
    if kind == EXTRACT_MAC_PAIR:
        pos = _lit(buf, pos, 9)
        pos = _mac(buf, pos, r.key[ia + 1])
        pos = _lit(buf, pos, 10)
        pos = _mac(buf, pos, r.key[ib + 1])
        return _lit(buf, pos, 11)
    if kind == EXTRACT_IP_PAIR:
        pos = _lit(buf, pos, 31)
        pos = _ip(buf, pos, l3, r.key[ia], r.key[ia + 1])
        pos = _lit(buf, pos, 32)
        pos = _ip(buf, pos, l3, r.key[ib], r.key[ib + 1])
        return _lit(buf, pos, 11)
    if r.init_rev:
        pa, pb = pb, pa
    pos = _lit(buf, pos, 3)
    pos = _row(buf, pos, PROTOS, PROTO_LENS, proto)
    pos = _lit(buf, pos, 4)
    pos = _uint(buf, pos, proto)
    pos = _lit(buf, pos, 5)
    pos = _ip(buf, pos, l3, r.key[ia], r.key[ia + 1])
    pos = _lit(buf, pos, 6)
    pos = _uint(buf, pos, pa)
    pos = _lit(buf, pos, 7)
    pos = _ip(buf, pos, l3, r.key[ib], r.key[ib + 1])
    pos = _lit(buf, pos, 8)
    return _uint(buf, pos, pb)


@kernel
def _tunnel(buf, pos, r):
    """The ``tunnel`` object of an inner flow's Ended record (docs/output.md)."""
    w = np.int64(r.tun)
    pos = _lit(buf, pos, 54)
    pos = _row(buf, pos, TUNS, TUN_LENS, (w >> TUN_WORD_TYPE_SHIFT) & 0xFF)
    pos = _lit(buf, pos, 55)
    pos = _uint(buf, pos, (w >> TUN_WORD_DEPTH_SHIFT) & 0xF)
    pos = _lit(buf, pos, 56)
    pos = _uint(buf, pos, w & 0xFFFFFFFF)
    pos = _lit(buf, pos, 57)
    first = True
    for k in range(TUN_PARENTS_MAX):
        if r.tun_parent[k] >= 0:
            if not first:
                pos = _lit(buf, pos, 58)
            pos = _uint(buf, pos, r.tun_parent[k])
            first = False
    pos = _lit(buf, pos, 59)
    pos = _uint(buf, pos, (w >> TUN_WORD_NPAR_SHIFT) & 0xF)
    return _lit(buf, pos, 60)


@kernel
def _rtt(buf, pos, ns):
    """A handshake time (ns, -1 = not measured) as seconds or null."""
    if ns < 0:
        return _lit(buf, pos, 53)
    return _ns(buf, pos, ns)


@kernel
def _tcpperf(buf, pos, r):
    """The TCP performance fields of an Ended record (docs/output.md)."""
    pos = _lit(buf, pos, 42)
    both = r.rtt_resp >= 0 and r.rtt_init >= 0
    pos = _rtt(buf, pos, r.rtt_resp + r.rtt_init if both else np.int64(-1))
    pos = _lit(buf, pos, 43)
    pos = _rtt(buf, pos, r.rtt_resp)
    pos = _lit(buf, pos, 44)
    pos = _rtt(buf, pos, r.rtt_init)
    pos = _lit(buf, pos, 45)
    pos = _uint(buf, pos, r.retrans_pkts[0])
    pos = _lit(buf, pos, 46)
    pos = _uint(buf, pos, r.retrans_pkts[1])
    pos = _lit(buf, pos, 47)
    pos = _uint(buf, pos, r.retrans_bytes[0])
    pos = _lit(buf, pos, 48)
    pos = _uint(buf, pos, r.retrans_bytes[1])
    pos = _lit(buf, pos, 49)
    pos = _uint(buf, pos, r.zero_win[0])
    pos = _lit(buf, pos, 50)
    pos = _uint(buf, pos, r.zero_win[1])
    pos = _lit(buf, pos, 51)
    pos = _uint(buf, pos, r.ooo_pkts[0])
    pos = _lit(buf, pos, 52)
    return _uint(buf, pos, r.ooo_pkts[1])


@kernel
def _dns(buf, pos, r):
    """The DNS fields of an Ended record (those its ``dns`` bits say it has)."""
    d = np.int64(r.dns)
    if d & EVD_QUERY:
        pos = _lit(buf, pos, 61)
        for k in range(r.dns_qlen):
            buf[pos + k] = r.dns_qname[k]
        pos += np.int64(r.dns_qlen)
        pos = _lit(buf, pos, 62)
        qt = np.int64(r.dns_qtype)
        pos = _uint(buf, pos, qt)
        if qt < QTYPES.shape[0] and QTYPE_LENS[qt] > 0:
            pos = _lit(buf, pos, 63)
            pos = _row(buf, pos, QTYPES, QTYPE_LENS, qt)
            pos = _lit(buf, pos, 11)
    if d & EVD_RESPONSE:
        rc = np.int64(r.dns_rcode)
        pos = _lit(buf, pos, 64)
        pos = _uint(buf, pos, rc)
        if rc < RCODES.shape[0]:
            pos = _lit(buf, pos, 65)
            pos = _row(buf, pos, RCODES, RCODE_LENS, rc)
            pos = _lit(buf, pos, 11)
        pos = _lit(buf, pos, 66)
        pos = _uint(buf, pos, np.int64(r.dns_answers))
    if d & EVD_RTT:
        pos = _lit(buf, pos, 67)
        pos = _ns(buf, pos, r.dns_rtt)
    return pos


@kernel
def _drops(buf, pos, r, reasons, reason_lens):
    """The kernel drop fields of a live Ended record; the reason by its name in the table
    (``reasons`` uint8[k, w], ``reason_lens`` int64[k]), else by number."""
    pos = _lit(buf, pos, 68)
    pos = _uint(buf, pos, r.drops[0])
    pos = _lit(buf, pos, 69)
    pos = _uint(buf, pos, r.drops[1])
    pos = _lit(buf, pos, 70)
    code = np.int64(r.drop_reason)
    if code < reasons.shape[0] and reason_lens[code] > 0:
        pos = _row(buf, pos, reasons, reason_lens, code)
    else:
        pos = _uint(buf, pos, code)
    return _lit(buf, pos, 11)


def reason_table(names: dict):
    """``(uint8[k, w], int64[k])`` of drop reason names by value, for ``format_jsonl``."""
    if not names:
        return np.zeros((1, 1), dtype=np.uint8), np.zeros(1, dtype=np.int64)
    return _table([names.get(v, "") for v in range(max(names) + 1)])


@kernel
def format_jsonl(recs, buf, names, name_lens, reasons, reason_lens):
    """Format ``recs`` (EVENT_DTYPE[n]) into ``buf`` (uint8[m]); returns (done, nbytes).

    ``names`` (uint8[k, MAX_IFNAME]) and ``name_lens`` (int64[k]) name the interfaces by
    ``iface`` value; an ``iface`` without a name is written as its number. ``reasons``,
    ``reason_lens``: the kernel's drop reason names (``reason_table``).
    """
    pos = 0
    cap = buf.shape[0]
    for i in range(recs.shape[0]):
        if pos + MAX_LINE > cap:
            return i, pos
        r = recs[i]
        kind = np.int64(r.kind)
        pos = _lit(buf, pos, 0)
        pos = _row(buf, pos, KINDS, KIND_LENS, kind)
        pos = _lit(buf, pos, 1)
        pos = _ns(buf, pos, r.ts)
        pos = _lit(buf, pos, 2)
        pos = _uint(buf, pos, r.flow_id)
        buf[pos] = 44  # ','
        pos = _flow(buf, pos + 1, r)
        if kind == EV_ENDED or kind == EV_UPDATE:
            if kind == EV_ENDED:
                pos = _lit(buf, pos, 16)
                pos = _row(buf, pos, REASONS, REASON_LENS, np.int64(r.reason))
                pos = _lit(buf, pos, 17)
            else:  # an Update: no reason, the flow goes on
                pos = _lit(buf, pos, 35)
            pos = _row(buf, pos, STATES, STATE_LENS, np.int64(r.to_state))
            pos = _lit(buf, pos, 18)
            for k in range(r.hist_len):
                buf[pos + k] = r.history[k]
            pos += np.int64(r.hist_len)
            pos = _lit(buf, pos, 19)
            pos = _ns(buf, pos, r.started)
            pos = _lit(buf, pos, 20)
            pos = _ns(buf, pos, r.last_seen)
            pos = _lit(buf, pos, 21)
            pos = _ns_diff(buf, pos, r.last_seen, r.started)
            pos = _lit(buf, pos, 22)
            pos = _uint(buf, pos, r.pkts[0])
            pos = _lit(buf, pos, 23)
            pos = _uint(buf, pos, r.bytes[0])
            pos = _lit(buf, pos, 24)
            pos = _uint(buf, pos, r.pkts[1])
            pos = _lit(buf, pos, 25)
            pos = _uint(buf, pos, r.bytes[1])
            pos = _lit(buf, pos, 26)
            pos = _uint(buf, pos, r.payload[0])
            pos = _lit(buf, pos, 27)
            pos = _uint(buf, pos, r.payload[1])
            pos = _lit(buf, pos, 28)
            pos = _uint(buf, pos, np.int64(r.flags_or[0]))
            pos = _lit(buf, pos, 29)
            pos = _uint(buf, pos, np.int64(r.flags_or[1]))
            # context: interface, VLAN ids, MACs of the flow's first packet
            pos = _lit(buf, pos, 36)
            ifc = np.int64(r.iface)
            if ifc < name_lens.shape[0] and name_lens[ifc] > 0:
                pos = _row(buf, pos, names, name_lens, ifc)
            else:
                pos = _uint(buf, pos, ifc)
            nv = min(np.int64(r.nvlan), 2)
            if nv > 0:
                pos = _lit(buf, pos, 37)
                pos = _uint(buf, pos, np.int64(r.vlan[0]))
                if nv > 1:
                    buf[pos] = 44  # ','
                    pos = _uint(buf, pos + 1, np.int64(r.vlan[1]))
                pos = _lit(buf, pos, 38)
            else:
                pos = _lit(buf, pos, 41)
            if r.has_mac:
                pos = _lit(buf, pos, 39)
                pos = _mac(buf, pos, r.init_mac)
                pos = _lit(buf, pos, 40)
                pos = _mac(buf, pos, r.resp_mac)
                pos = _lit(buf, pos, 41)
            if r.sample_rate > 1:
                pos = _lit(buf, pos, 34)
                pos = _uint(buf, pos, r.sample_rate)
            kind_, _l3, proto, _pa, _pb = unpack_meta(r.key[4])
            if proto == IPPROTO_TCP and kind_ != EXTRACT_MAC_PAIR and kind_ != EXTRACT_IP_PAIR:
                pos = _tcpperf(buf, pos, r)
            if r.tun != 0:
                pos = _tunnel(buf, pos, r)
            if r.dns != 0:
                pos = _dns(buf, pos, r)
            if r.drops[0] != 0 or r.drops[1] != 0:
                pos = _drops(buf, pos, r, reasons, reason_lens)
            pos = _lit(buf, pos, 30)
        elif kind == EV_PACKET:
            pos = _lit(buf, pos, 12)
            pos = _row(buf, pos, SIDES, SIDE_LENS, np.int64(r.side))
            pos = _lit(buf, pos, 13)
            pos = _uint(buf, pos, np.int64(r.length))
            pos = _lit(buf, pos, 30)
        elif kind == EV_STARTED:
            pos = _lit(buf, pos, 12)
            pos = _row(buf, pos, SIDES, SIDE_LENS, np.int64(r.side))
            pos = _lit(buf, pos, 33)
        elif kind == EV_STATE_CHANGE:
            pos = _lit(buf, pos, 14)
            pos = _row(buf, pos, STATES, STATE_LENS, np.int64(r.from_state))
            pos = _lit(buf, pos, 15)
            pos = _row(buf, pos, STATES, STATE_LENS, np.int64(r.to_state))
            pos = _lit(buf, pos, 33)
        else:
            pos = _lit(buf, pos, 30)
    return recs.shape[0], pos
