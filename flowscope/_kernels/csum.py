"""Checksum verification of parsed frames (``verify_checksums``), inside numba.

``verify_frame`` looks at a frame the parser has filled a row for and sets the
row's ``csum`` bits (``layout.CSUM_*``):

* ``CSUM_IP_BAD``: the IPv4 header checksum is wrong (IPv6 has none).
* ``CSUM_L4_BAD``: the TCP, UDP, ICMP or ICMPv6 checksum is wrong. Checked only
  for packets that are not fragments and whose whole segment (as the IP length
  says) is captured, as Zeek checks them (``caplen >= len``); a UDP checksum of
  0 over IPv4 means "none" and is never bad. TCP, UDP and ICMPv6 sums cover the
  pseudo-header (addresses, protocol, L4 length); ICMP's does not.

Rows with a header cut short (``PERR_L4_SHORT``) or unmatched are left at 0.
"""

import numpy as np

from ..layout import CSUM_IP_BAD, CSUM_L4_BAD, PERR_NONE, PF_FRAG, PF_MORE_FRAGS
from .common import inline_kernel, kernel


@inline_kernel
def _sum16(buf, p, n):
    """One's-complement sum (not folded) of ``n`` bytes at ``p``, an odd last byte padded."""
    s = np.int64(0)
    k = 0
    while k + 1 < n:
        s += (np.int64(buf[p + k]) << 8) | np.int64(buf[p + k + 1])
        k += 2
    if k < n:
        s += np.int64(buf[p + k]) << 8
    return s


@inline_kernel
def _fold(s):
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@kernel
def verify_frame(buf, off, caplen, out, i):
    """Set ``out[i].csum`` for the frame at ``buf[off:off + caplen]`` (already parsed)."""
    r = out[i]
    r.csum = 0
    if r.error != PERR_NONE or (r.l3 != 4 and r.l3 != 6):
        return
    end = off + caplen
    if end > buf.shape[0]:
        end = buf.shape[0]
    ip = off + np.int64(r.l3_off)
    l4 = off + np.int64(r.l4_off)
    bad = 0
    if r.l3 == 4:
        ihl = np.int64(buf[ip] & 0xF) * 4
        if ip + ihl <= end and _fold(_sum16(buf, ip, ihl)) != 0xFFFF:
            bad |= CSUM_IP_BAD
    proto = np.int64(r.proto)
    if (r.pflags & (PF_FRAG | PF_MORE_FRAGS)) == 0 and (
            proto == 6 or proto == 17 or proto == 1 or proto == 58):
        seg = ip + np.int64(r.ip_len) - l4  # L4 length by the IP length
        if seg > 0 and l4 + seg <= end:
            s = _sum16(buf, l4, seg)
            if proto != 1:  # pseudo-header
                if r.l3 == 4:
                    s += _sum16(buf, ip + 12, 8)
                else:
                    s += _sum16(buf, ip + 8, 32)
                s += proto + seg
            skip = proto == 17 and r.l3 == 4 and buf[l4 + 6] == 0 and buf[l4 + 7] == 0
            if not skip and _fold(s) != 0xFFFF:
                bad |= CSUM_L4_BAD
    r.csum = bad


@kernel
def verify_batch(buf, offs, caplens, out):
    """``verify_frame`` for ``len(offs)`` parsed frames (int64 offsets and lengths)."""
    for k in range(offs.shape[0]):
        verify_frame(buf, offs[k], caplens[k], out, k)
