"""The fragment table: gives non-first IP fragments their datagram's ports.

A non-first fragment of a TCP, UDP or SCTP datagram has no L4 header. The
engine keys it with the ports of its datagram's first fragment, found here by
(source, destination, L3, protocol, IP id) -- IPv4's 16-bit identification or
the IPv6 fragment header's 32-bit one. Direct-mapped table of a power-of-two
number of entries (``FRAG_SLOTS`` by default); a datagram whose slot is held
by another datagram's live entry takes the slot over.

``frk`` uint64[n, 5]        entry key: src_hi, src_lo, dst_hi, dst_lo,
                            l3 << 40 | proto << 32 | id
``frv`` int64[n, FV_SIZE]   entry values (columns FV_*)

An entry is valid for ``fragment_timeout`` from its datagram's first-seen
fragment (``FV_TS``). Two kinds:

* PORTS: filled by a first fragment (offset 0, MF set), which carries the
  ports (0, 0 when its L4 header was cut short, as its own key has them).
  Later fragments of the datagram are keyed with them.
* PENDING: filled by non-first fragments that came before their first
  fragment. They are held (counted here: packets, frame bytes, payload, IP
  bytes) and not yet matched; the first fragment turns the entry into PORTS
  and the engine adds the held counts to the datagram's flow, on the first
  fragment's side. Held fragments whose entry times out or is taken over by
  another datagram are *orphaned*: counted as unmatched packets and in the
  ``fragments_orphaned`` statistic (``frag_flush`` orphans what is still held
  at the end of the input).
"""

import numpy as np

from ..layout import PF_PORTS
from .common import inline_kernel, kernel

FV_STATE = 0  # FS_EMPTY / FS_PORTS / FS_PENDING
FV_TS = 1  # first-seen fragment of the datagram, ns
FV_PORTS = 2  # sport << 16 | dport (PORTS)
FV_PKTS = 3  # PENDING: fragments held
FV_BYTES = 4  # ... their frame bytes
FV_PAY = 5  # ... their L4 bytes (fragment data)
FV_IPB = 6  # ... their IP total-length bytes
FV_SIZE = 8

FS_EMPTY = 0
FS_PORTS = 1
FS_PENDING = 2

# what frag_lookup tells the engine
FR_KEYED = 0  # non-first fragment: key it with the returned ports
FR_HELD = 1  # non-first fragment held as pending: the engine skips it
FR_FIRST = 2  # first fragment: entry filled; any held counts are returned

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


@inline_kernel
def _frag_hash(k0, k1, k2, k3, k4):
    h = (_GOLD ^ k0) * _M1
    h = ((h ^ (h >> np.uint64(31))) ^ k1) * _M1
    h = ((h ^ (h >> np.uint64(31))) ^ k2) * _M1
    h = ((h ^ (h >> np.uint64(31))) ^ k3) * _M1
    h = ((h ^ (h >> np.uint64(31))) ^ k4) * _M1
    return h ^ (h >> np.uint64(29))


@kernel
def frag_lookup(frk, frv, p, tmo, first):
    """Consult the table for fragment row ``p`` (a ROW_DTYPE record).

    ``first``: ``p`` is a first fragment (offset 0, MF) else a non-first one.
    Returns ``(result, sport, dport, orphaned, pkts, bytes, pay, ipb)``: FR_*,
    the ports to key a non-first fragment with (FR_KEYED), the held fragments
    this call orphaned, and for a first fragment the held counts to add to its
    flow (packets, frame bytes, L4 bytes, IP bytes).
    """
    k0 = np.uint64(p.src_hi)
    k1 = np.uint64(p.src_lo)
    k2 = np.uint64(p.dst_hi)
    k3 = np.uint64(p.dst_lo)
    k4 = (np.uint64(p.l3) << np.uint64(40)) | (np.uint64(p.proto) << np.uint64(32)) \
        | np.uint64(p.frag_id)
    s = np.int64(_frag_hash(k0, k1, k2, k3, k4) & np.uint64(frk.shape[0] - 1))
    ts = np.int64(p.ts)
    z = np.int64(0)
    orph = z
    hp = z
    hb = z
    hpay = z
    hipb = z
    st = frv[s, FV_STATE]
    same = (st != FS_EMPTY and frk[s, 4] == k4 and frk[s, 0] == k0 and frk[s, 1] == k1
            and frk[s, 2] == k2 and frk[s, 3] == k3 and ts - frv[s, FV_TS] < tmo)
    if same and not first:
        if st == FS_PORTS:
            pw = frv[s, FV_PORTS]
            return FR_KEYED, (pw >> 16) & 0xFFFF, pw & 0xFFFF, z, z, z, z, z
        frv[s, FV_PKTS] += 1
        frv[s, FV_BYTES] += np.int64(p.caplen)
        frv[s, FV_PAY] += np.int64(p.payload_len)
        frv[s, FV_IPB] += np.int64(p.ip_len)
        return FR_HELD, z, z, z, z, z, z, z
    sp = np.int64(0)
    dp = np.int64(0)
    if st == FS_PENDING:
        if not same:  # another datagram's held fragments, or expired ones
            orph = frv[s, FV_PKTS]
        elif first:  # late first fragment: hand the held counts over to its flow
            hp = frv[s, FV_PKTS]
            hb = frv[s, FV_BYTES]
            hpay = frv[s, FV_PAY]
            hipb = frv[s, FV_IPB]
    if first and (p.pflags & PF_PORTS) != 0:
        sp = np.int64(p.sport)
        dp = np.int64(p.dport)
    if not same:
        frv[s, FV_TS] = ts
        frk[s, 0] = k0
        frk[s, 1] = k1
        frk[s, 2] = k2
        frk[s, 3] = k3
        frk[s, 4] = k4
    frv[s, FV_PKTS] = 0
    frv[s, FV_BYTES] = 0
    frv[s, FV_PAY] = 0
    frv[s, FV_IPB] = 0
    if first:
        frv[s, FV_STATE] = FS_PORTS
        frv[s, FV_PORTS] = (sp << 16) | dp
        return FR_FIRST, sp, dp, orph, hp, hb, hpay, hipb
    frv[s, FV_STATE] = FS_PENDING
    frv[s, FV_PKTS] = 1
    frv[s, FV_BYTES] = np.int64(p.caplen)
    frv[s, FV_PAY] = np.int64(p.payload_len)
    frv[s, FV_IPB] = np.int64(p.ip_len)
    return FR_HELD, z, z, orph, z, z, z, z


@kernel
def frag_flush(frv):
    """Orphan every held fragment (end of input); returns how many there were."""
    n = 0
    for s in range(frv.shape[0]):
        if frv[s, FV_STATE] == FS_PENDING:
            n += frv[s, FV_PKTS]
            frv[s, FV_STATE] = FS_EMPTY
            frv[s, FV_PKTS] = 0
    return n
