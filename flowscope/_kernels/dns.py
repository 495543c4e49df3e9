"""DNS message parsing in numba: the header and the first question of one message.

``parse_dns(buf, p, end, r, tcp, nm)`` reads the DNS message at ``buf[p:end]`` (a
UDP payload, or a TCP segment's bytes after the two-byte length prefix) into
the ``dns_*`` fields of the ``ROW_DTYPE`` row ``r`` and the query name into ``nm``
(the row's line of the name array). Every read is bounds-checked
against ``end``; a name is followed through at most ``DNS_MAX_JUMPS`` compression
pointers, each of which must point before the label that holds it, so a loop is
impossible and the work per message is bounded by ``DNS_NAME_MAX`` output bytes
plus the jumps. Garbage yields ``dns_flags = 0`` (fewer than 12 bytes) or a header
without ``DNS_QUESTION`` (a question that does not parse), never an error.

The name is kept in dotted text form: labels joined with ``.``, the root name
as ``.``; bytes outside printable ASCII and the characters ``"``, ``\\`` and
``.`` inside a label are replaced by ``?``, so every output format can print
the name without escaping. The plain-Python twin is ``tests/naive_dns.py``.
"""

import numpy as np

from ..layout import DNS_MAX_JUMPS, DNS_NAME_MAX, DNS_QR, DNS_QUESTION, DNS_TCP, DNS_VALID
from .common import inline_kernel, kernel

_QM = 63  # '?'
_DOT = 46  # '.'


@inline_kernel
def _u16(buf, p):
    return (np.int64(buf[p]) << 8) | np.int64(buf[p + 1])


@inline_kernel
def _name(buf, msg, p, end, r, nm):
    """Decode the name at ``buf[p:]`` (message starts at ``msg``) into ``nm`` (the row's
    bytes of the name array; ``r.dns_qlen`` = its length).

    Returns ``(ok, next)``: ``next`` is the offset after the name where it
    started (after its first pointer when it has one).
    """
    out = 0
    nxt = -1
    jumps = 0
    limit = p  # a pointer must point before the start of the labels that hold it
    while True:
        if p >= end:
            return False, 0
        ln = np.int64(buf[p])
        if ln == 0:
            if nxt < 0:
                nxt = p + 1
            break
        if (ln & 0xC0) == 0xC0:
            if p + 1 >= end or jumps >= DNS_MAX_JUMPS:
                return False, 0
            target = msg + (((ln & 0x3F) << 8) | np.int64(buf[p + 1]))
            if target >= limit:
                return False, 0
            if nxt < 0:
                nxt = p + 2
            jumps += 1
            p = target
            limit = target
            continue
        if (ln & 0xC0) != 0:
            return False, 0  # 0x40 / 0x80: extended label types, not supported
        if p + 1 + ln > end:
            return False, 0
        if out > 0:
            if out >= DNS_NAME_MAX:
                return False, 0
            nm[out] = _DOT
            out += 1
        if out + ln > DNS_NAME_MAX:
            return False, 0
        for k in range(ln):
            c = buf[p + 1 + k]
            if c < 33 or c > 126 or c == 34 or c == 92 or c == _DOT:
                c = _QM
            nm[out + k] = c
        out += ln
        p += 1 + ln
    if out == 0:
        nm[0] = _DOT
        out = 1
    if out > 255:
        return False, 0
    r.dns_qlen = out
    return True, nxt


@kernel
def parse_dns(buf, p, end, r, tcp, nm):
    """Parse the DNS message at ``buf[p:end]`` into row ``r`` (its query name into ``nm``);
    returns True for a header.

    Not inlined: the frame parser calls it only for port-53 packets, and its loops would
    otherwise weigh on the code of every packet's path.

    ``buf``: uint8[:]; ``r``: a ``ROW_DTYPE`` record; ``tcp``: the message came
    over TCP (sets ``DNS_TCP``); ``nm``: uint8[DNS_NAME_MAX], the row's name bytes.
    """
    r.dns_flags = 0
    r.dns_qlen = 0
    if p < 0 or end > buf.shape[0] or end - p < 12:
        return False
    flags = _u16(buf, p + 2)
    r.dns_id = _u16(buf, p)
    r.dns_rcode = flags & 0xF
    r.dns_answers = _u16(buf, p + 6)
    r.dns_qtype = 0
    f = DNS_VALID
    if flags & 0x8000:
        f |= DNS_QR
    if tcp:
        f |= DNS_TCP
    if _u16(buf, p + 4) > 0:
        ok, q = _name(buf, p, p + 12, end, r, nm)
        if ok and q + 4 <= end:
            r.dns_qtype = _u16(buf, q)
            f |= DNS_QUESTION
        else:
            r.dns_qlen = 0
    r.dns_flags = f
    return True


@kernel
def parse_dns_payloads(pay, lens, tcp, rows, names, idx):
    """The live sensor's twin of the frame parser's DNS step, on the payload bytes a
    FS_EVR_DNS ring record carries.

    ``pay``: uint8[n, FS_DNS_BYTES] (the first payload bytes), ``lens``: int64[n] (bytes
    valid), ``tcp``: bool[n], ``rows``: ROW_DTYPE[n] and ``names``: uint8[n, DNS_NAME_MAX]
    (their query names), ``idx``: int64[k] (the rows to parse).
    UDP: the payload is the message; TCP: a two-byte length, then the message (at least 14
    bytes, as offline).
    """
    for j in range(idx.shape[0]):
        i = idx[j]
        n = min(lens[i], pay.shape[1])
        buf = pay[i]
        r = rows[i]
        if tcp[i]:
            if n >= 14:
                parse_dns(buf, 2, min(n, 2 + _u16(buf, 0)), r, True, names[i])
        else:
            parse_dns(buf, 0, n, r, False, names[i])
