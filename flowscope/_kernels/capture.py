"""Capture-file walkers: pcap records / pcapng blocks in a byte buffer -> parsed rows.

The reader in ``flowscope.pcap`` owns the file and a buffer holding a window
of it; these kernels walk the complete records in ``buf[pos:fill]`` and parse
each frame straight into the output batch. They stop when the batch is full,
when the next record is not wholly in the buffer, or at a corrupt header, and
report which through the ``st`` state array so the caller can refill the
buffer (carrying the partial record over), hand the batch on, or raise.

``st`` (int64[ST_SIZE]) slots, in/out unless noted:

* ``ST_POS``: offset in ``buf`` of the next record.
* ``ST_FILL`` (in): end of the valid bytes in ``buf``.
* ``ST_N``: rows of ``out`` already filled.
* ``ST_STATUS`` (out): ``S_NEED_MORE``, ``S_FULL`` or ``S_CORRUPT`` (then
  ``ST_POS`` is the offset of the bad record).
* ``ST_NEED`` (out, with ``S_NEED_MORE``): bytes the record at ``ST_POS``
  needs, when its header was readable (else the header size).
* ``ST_FRAMES``: packet records read since the start of the file.
* ``ST_BE``: 1 when the file (pcap) or the current section (pcapng) is
  big-endian.
* ``ST_NSRES`` (pcap, in): 1 for nanosecond timestamps.
* ``ST_LINK`` (pcap, in): the file's link type.
* ``ST_NIF``, ``ST_LAST_TS`` (pcapng): interfaces defined in the current
  section; timestamp of the last timed packet (used for Simple Packet Blocks).
* ``ST_VERIFY`` (in): 1 to verify checksums of each parsed frame (``csum``).
* ``ST_DECAP`` .. (in): the tunnel decapsulation settings (``parse.TC_*``). A frame
  may fill several rows (``parse.parse_frame_rows``): a frame whose rows do not fit
  starts the next batch (in a batch of its own that is too small, its innermost
  packets are left out).
* ``ST_SKIP``, ``ST_TRAIL`` (pcapng): bytes of an oversized block still to
  stream past, and the block length its trailing length field must repeat
  (0 when no block is being skipped).
* ``ST_BIG_PKTS``, ``ST_BIG_IDBS`` (pcapng, out): oversized packet blocks and
  Interface Description Blocks skipped since the start of the file.

Oversized pcapng blocks: a block longer than ``MAX_BLOCK`` is never held in
the buffer. Its first 12 bytes are read (a Section Header Block still sets
the byte order and starts a new section), then the walker streams past its
body and checks its trailing length. A packet block skipped that way loses
its packet (counted in ``ST_BIG_PKTS``, not in ``ST_FRAMES``); a skipped
Interface Description Block still takes its interface number, with link type
-1, so the packets of that interface are unmatched (``PERR_LINKTYPE``).

Timestamps: every conversion to int64 ns saturates at INT64_MIN/INT64_MAX
instead of wrapping. A pcap record cannot overflow (at most
(2**32 - 1) * 10**9 + (2**32 - 1) * 1000 ns); a pcapng timestamp is an
unsigned 64-bit count of ``if_tsresol`` units, scaled and then shifted by
``if_tsoffset`` (signed seconds), each step saturating.
"""

from __future__ import annotations

import numpy as np

from .common import inline_kernel, kernel
from .csum import verify_frame
from .parse import TC_SIZE, parse_frame_rows

ST_POS = 0
ST_FILL = 1
ST_N = 2
ST_STATUS = 3
ST_NEED = 4
ST_FRAMES = 5
ST_BE = 6
ST_NSRES = 7
ST_LINK = 8
ST_NIF = 9
ST_LAST_TS = 10
ST_SKIP = 11
ST_TRAIL = 12
ST_BIG_PKTS = 13
ST_BIG_IDBS = 14
ST_VERIFY = 15
ST_DECAP = 16  # ST_DECAP .. ST_DECAP + TC_SIZE - 1 (in): parse.TC_* decapsulation settings
ST_SIZE = ST_DECAP + TC_SIZE

S_NEED_MORE = 0
S_FULL = 1
S_CORRUPT = 2

#: Largest captured length accepted in a pcap record header (above any real
#: snaplen: 262144 is the largest libpcap uses); bigger means a corrupt file.
MAX_CAPLEN = 0x40000 + 0x10000
#: Largest pcapng block read into the buffer: room for a packet block with a
#: MAX_CAPLEN frame and ample options. Longer blocks are streamed past.
MAX_BLOCK = 4 << 20
INT64_MAX = np.int64(0x7FFFFFFFFFFFFFFF)
INT64_MIN = np.int64(-0x7FFFFFFFFFFFFFFF - 1)
#: pcapng interfaces remembered per section; packets of later ones are
#: unmatched (PERR_LINKTYPE).
MAX_IFACES = 4096
#: Columns of the pcapng interface table ``ifs`` (int64[MAX_IFACES, IF_COLS]).
IF_LINK = 0
IF_SNAP = 1
IF_TSRES = 2  # if_tsresol byte: 10^-v s, or 2^-(v & 0x7f) s when bit 7 is set
IF_TSOFF = 3  # if_tsoffset in ns
IF_NAME_LEN = 4  # bytes of if_name kept (0: none)
IF_NAME = 5  # if_name, IF_NAME_MAX bytes packed little-endian into IF_NAME_WORDS words
IF_NAME_WORDS = 4
IF_NAME_MAX = 8 * IF_NAME_WORDS
IF_COLS = IF_NAME + IF_NAME_WORDS

BT_SHB = 0x0A0D0D0A
BT_IDB = 1
BT_PB = 2
BT_SPB = 3
BT_EPB = 6
BOM = 0x1A2B3C4D


@inline_kernel
def _rd16(buf, p, be):
    if be:
        return (np.int64(buf[p]) << 8) | np.int64(buf[p + 1])
    return (np.int64(buf[p + 1]) << 8) | np.int64(buf[p])


@inline_kernel
def _rd32(buf, p, be):
    if be:
        return ((np.int64(buf[p]) << 24) | (np.int64(buf[p + 1]) << 16)
                | (np.int64(buf[p + 2]) << 8) | np.int64(buf[p + 3]))
    return ((np.int64(buf[p + 3]) << 24) | (np.int64(buf[p + 2]) << 16)
            | (np.int64(buf[p + 1]) << 8) | np.int64(buf[p]))


@kernel
def walk_pcap(buf, st, out, names):
    """Walk classic pcap records of ``buf[st[ST_POS]:st[ST_FILL]]`` into ``out``.

    ``buf``: uint8[:]; ``st``: int64[ST_SIZE] (see module docstring);
    ``out``: ROW_DTYPE[batch]; ``names``: uint8[batch, DNS_NAME_MAX] (their DNS names).
    """
    pos = st[ST_POS]
    fill = st[ST_FILL]
    n = st[ST_N]
    frames = st[ST_FRAMES]
    be = st[ST_BE] != 0
    mult = np.int64(1) if st[ST_NSRES] != 0 else np.int64(1000)
    link = st[ST_LINK]
    cap = out.shape[0]
    status = S_NEED_MORE
    need = np.int64(16)
    tcfg = st[ST_DECAP:ST_DECAP + TC_SIZE]
    while True:
        if n >= cap:
            status = S_FULL
            break
        if fill - pos < 16:
            need = 16
            status = S_NEED_MORE
            break
        incl = _rd32(buf, pos + 8, be)
        if incl > MAX_CAPLEN:
            status = S_CORRUPT
            break
        if fill - pos - 16 < incl:
            need = 16 + incl
            status = S_NEED_MORE
            break
        ts = _rd32(buf, pos, be) * 1_000_000_000 + _rd32(buf, pos + 4, be) * mult
        rows = parse_frame_rows(buf, pos + 16, incl, _rd32(buf, pos + 12, be), link, ts, out,
                                names, n, tcfg, cap - n)
        if rows < 0:
            if n > 0:  # the frame's inner packets do not fit: it starts the next batch
                status = S_FULL
                break
            rows = -rows
        if st[ST_VERIFY] != 0:
            for k in range(rows):
                verify_frame(buf, pos + 16, incl, out, n + k)
        n += rows
        frames += 1
        pos += 16 + incl
    st[ST_POS] = pos
    st[ST_N] = n
    st[ST_FRAMES] = frames
    st[ST_STATUS] = status
    st[ST_NEED] = need


@inline_kernel
def _sat_add(a, b):
    """``a + b`` (int64) clamped to [INT64_MIN, INT64_MAX]."""
    if b > 0 and a > INT64_MAX - b:
        return INT64_MAX
    if b < 0 and a < INT64_MIN - b:
        return INT64_MIN
    return a + b


@inline_kernel
def _sat_mul(a, m):
    """``a * m`` (int64, ``m`` > 0) clamped to [INT64_MIN, INT64_MAX]."""
    lim = INT64_MAX // m
    if a > lim:
        return INT64_MAX
    if a < -lim:
        return INT64_MIN
    return a * m


@kernel
def _ts_ns(hi, lo, res, off_ns):
    """pcapng timestamp (unsigned 64 bits ``hi:lo``, units of ``res`` = if_tsresol)
    plus ``off_ns`` -> int64 ns, saturating."""
    raw = (np.uint64(hi) << np.uint64(32)) | np.uint64(lo)
    umax = np.uint64(INT64_MAX)
    if res & 0x80:
        k = res & 0x7F
        if k >= 64:
            whole = np.uint64(0)
            frac = raw
        else:
            whole = raw >> np.uint64(k)
            frac = raw - (whole << np.uint64(k))
        if whole > umax // np.uint64(1_000_000_000):
            v = INT64_MAX
        else:
            v = np.int64(whole) * 1_000_000_000
        if k == 0:
            f = np.uint64(0)
        elif k <= 34:  # frac < 2**34: frac * 10**9 < 2**64
            f = (frac * np.uint64(1_000_000_000)) >> np.uint64(k)
        else:
            t = frac >> np.uint64(k - 34) if k - 34 < 64 else np.uint64(0)
            f = (t * np.uint64(1_000_000_000)) >> np.uint64(34)
        v = _sat_add(v, np.int64(f))
    elif res <= 9:
        m = np.uint64(1)
        for _ in range(9 - res):
            m *= np.uint64(10)
        if raw > umax // m:
            v = INT64_MAX
        else:
            v = np.int64(raw * m)
    elif res - 9 > 19:
        v = np.int64(0)
    else:
        d = np.uint64(1)
        for _ in range(res - 9):
            d *= np.uint64(10)
        v = np.int64(raw // d)
    return _sat_add(v, off_ns)


@kernel
def _idb(buf, pos, blen, be, ifs, st, seen):
    """Record the Interface Description Block at ``pos`` in ``ifs``."""
    link = _rd16(buf, pos + 8, be)
    snap = _rd32(buf, pos + 12, be)
    res = np.int64(6)
    off_ns = np.int64(0)
    name_at = np.int64(-1)
    name_len = np.int64(0)
    q = pos + 16
    end = pos + blen - 4
    while q + 4 <= end:
        code = _rd16(buf, q, be)
        olen = _rd16(buf, q + 2, be)
        v = q + 4
        if code == 0 or v + olen > end:
            break
        if code == 9 and olen >= 1:
            res = np.int64(buf[v])
        elif code == 2 and olen >= 1:  # if_name (UTF-8, maybe NUL-terminated)
            name_at = v
            name_len = min(np.int64(olen), IF_NAME_MAX)
        elif code == 14 and olen >= 8:
            hi = _rd32(buf, v, be)
            lo = _rd32(buf, v + 4, be)
            if not be:
                hi, lo = lo, hi
            secs = np.int64((np.uint64(hi) << np.uint64(32)) | np.uint64(lo))  # signed
            off_ns = _sat_mul(secs, np.int64(1_000_000_000))
        q = v + ((olen + 3) & ~3)
    k = st[ST_NIF]
    if k < MAX_IFACES:
        ifs[k, IF_LINK] = link
        ifs[k, IF_SNAP] = snap
        ifs[k, IF_TSRES] = res
        ifs[k, IF_TSOFF] = off_ns
        for w in range(IF_NAME_WORDS):
            ifs[k, IF_NAME + w] = 0
        n = np.int64(0)
        while n < name_len and buf[name_at + n] != 0:
            w = IF_NAME + n // 8
            ifs[k, w] |= np.int64(buf[name_at + n]) << np.int64(8 * (n % 8))
            n += 1
        ifs[k, IF_NAME_LEN] = n
    st[ST_NIF] = k + 1
    seen[link] = 1


@kernel
def walk_pcapng(buf, st, out, names, ifs, seen):
    """Walk pcapng blocks of ``buf[st[ST_POS]:st[ST_FILL]]`` into ``out``.

    ``buf``: uint8[:]; ``st``: int64[ST_SIZE]; ``out``: ROW_DTYPE[batch]; ``names``: their
    DNS names, uint8[batch, DNS_NAME_MAX];
    ``ifs``: int64[MAX_IFACES, IF_COLS] interface table of the current
    section; ``seen``: uint8[65536], set to 1 for each link type defined.
    Packets of an undefined interface (or one past ``MAX_IFACES``) are
    parsed with link type -1, i.e. unmatched with ``PERR_LINKTYPE``.
    """
    pos = st[ST_POS]
    fill = st[ST_FILL]
    n = st[ST_N]
    frames = st[ST_FRAMES]
    be = st[ST_BE] != 0
    last_ts = st[ST_LAST_TS]
    skip = st[ST_SKIP]
    trail = st[ST_TRAIL]
    cap = out.shape[0]
    status = S_NEED_MORE
    need = np.int64(12)
    tcfg = st[ST_DECAP:ST_DECAP + TC_SIZE]
    while True:
        if skip > 0:  # streaming past an oversized block
            d = min(skip, fill - pos)
            pos += d
            skip -= d
            if skip > 0:
                need = 4
                status = S_NEED_MORE
                break
        if trail != 0:
            if fill - pos < 4:
                need = 4
                status = S_NEED_MORE
                break
            if _rd32(buf, pos, be) != trail:
                status = S_CORRUPT
                break
            pos += 4
            trail = 0
        if n >= cap:
            status = S_FULL
            break
        if fill - pos < 12:
            need = 12
            status = S_NEED_MORE
            break
        btype = _rd32(buf, pos, be)
        if btype == BT_SHB:
            if _rd32(buf, pos + 8, True) == BOM:
                be = True
            elif _rd32(buf, pos + 8, False) == BOM:
                be = False
            else:
                status = S_CORRUPT
                break
        blen = _rd32(buf, pos + 4, be)
        if blen < 12 or (blen & 3) != 0:
            status = S_CORRUPT
            break
        if blen > MAX_BLOCK:
            if btype == BT_SHB:
                st[ST_NIF] = 0
            elif btype == BT_IDB:
                k = st[ST_NIF]
                if k < MAX_IFACES:
                    ifs[k, IF_LINK] = -1
                    ifs[k, IF_SNAP] = 0
                    ifs[k, IF_TSRES] = 6
                    ifs[k, IF_TSOFF] = 0
                    ifs[k, IF_NAME_LEN] = 0
                st[ST_NIF] = k + 1
                st[ST_BIG_IDBS] += 1
            elif btype == BT_EPB or btype == BT_PB or btype == BT_SPB:
                st[ST_BIG_PKTS] += 1
            skip = blen - 4
            trail = blen
            continue
        if fill - pos < blen:
            need = blen
            status = S_NEED_MORE
            break
        if _rd32(buf, pos + blen - 4, be) != blen:
            status = S_CORRUPT
            break
        if btype == BT_SHB:
            if blen < 28:
                status = S_CORRUPT
                break
            st[ST_NIF] = 0
        elif btype == BT_IDB:
            if blen < 20:
                status = S_CORRUPT
                break
            _idb(buf, pos, blen, be, ifs, st, seen)
        elif btype == BT_EPB or btype == BT_PB or btype == BT_SPB:
            hi = np.int64(0)
            lo = np.int64(0)
            ts = last_ts
            if btype == BT_SPB:
                if blen < 16:
                    status = S_CORRUPT
                    break
                iface = np.int64(0)
                wirelen = _rd32(buf, pos + 8, be)
                incl = min(wirelen, blen - 16)
                data = pos + 12
            else:
                if blen < 32:
                    status = S_CORRUPT
                    break
                if btype == BT_EPB:
                    iface = _rd32(buf, pos + 8, be)
                else:
                    iface = _rd16(buf, pos + 8, be)
                hi = _rd32(buf, pos + 12, be)
                lo = _rd32(buf, pos + 16, be)
                incl = _rd32(buf, pos + 20, be)
                wirelen = _rd32(buf, pos + 24, be)
                data = pos + 28
                if incl > blen - 32:
                    status = S_CORRUPT
                    break
            nif = min(st[ST_NIF], MAX_IFACES)
            link = np.int64(-1)
            if iface < nif:
                link = ifs[iface, IF_LINK]
                if btype == BT_SPB:
                    snap = ifs[iface, IF_SNAP]
                    if snap > 0 and incl > snap:
                        incl = snap
                else:
                    ts = _ts_ns(hi, lo, ifs[iface, IF_TSRES], ifs[iface, IF_TSOFF])
            elif btype != BT_SPB:
                ts = _ts_ns(hi, lo, 6, np.int64(0))
            last_ts = ts
            rows = parse_frame_rows(buf, data, incl, wirelen, link, ts, out, names, n, tcfg,
                                    cap - n)
            if rows < 0:
                if n > 0:  # the frame's inner packets do not fit: it starts the next batch
                    status = S_FULL
                    break
                rows = -rows
            for k in range(rows):
                if st[ST_VERIFY] != 0:
                    verify_frame(buf, data, incl, out, n + k)
                out[n + k].iface = iface
            n += rows
            frames += 1
        pos += blen
    st[ST_POS] = pos
    st[ST_N] = n
    st[ST_FRAMES] = frames
    st[ST_STATUS] = status
    st[ST_NEED] = need
    st[ST_BE] = 1 if be else 0
    st[ST_LAST_TS] = last_ts
    st[ST_SKIP] = skip
    st[ST_TRAIL] = trail
