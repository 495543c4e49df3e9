"""The flow filter and the flow sampler: which new flows the engine keeps.

Both decide once per flow, when a packet finds no flow for its key, on facts
that are the same for both directions of a conversation, so a flow is kept or
dropped as a whole; the live kernel takes the same decisions before it makes a
map entry (``bpf/fs_flow.h``), so live and offline keep the same flows.

``flt`` uint64[FL_SIZE + 5 * n]: the filter's lists (built by
``flowscope.flowfilter.engine_table``):

``flt[FL_INC_PORTS:+1024]``  bitmap of the include ports (bit ``p & 63`` of word ``p >> 6``)
``flt[FL_EXC_PORTS:+1024]``  bitmap of the exclude ports
``flt[FL_INC_PROTOS:+4]``    bitmap of the include IP protocols
``flt[FL_EXC_PROTOS:+4]``    bitmap of the exclude IP protocols
``flt[FL_CIDR_N]``           number of CIDR rows
``flt[FL_CIDRS + 5 * j:]``   CIDR row j: list (0 include, 1 exclude), l3 (4/6), prefix
                             length, network hi, network lo (addresses as in layout.py)

Which lists are in force is the ``mode`` (layout.FLT_* bits); a list not in force
is not read.
"""

import numpy as np

from ..layout import (
    FLT_EXC_CIDRS, FLT_EXC_PORTS, FLT_EXC_PROTOS, FLT_INC_CIDRS, FLT_INC_PORTS, FLT_INC_PROTOS,
    HASH_M1, HASH_M2, SAMPLE_SEED,
)
from .common import inline_kernel

FL_INC_PORTS = 0
FL_EXC_PORTS = 1024
FL_INC_PROTOS = 2048
FL_EXC_PROTOS = 2052
FL_CIDR_N = 2056
FL_CIDRS = 2057
FL_SIZE = FL_CIDRS

_M1 = np.uint64(HASH_M1)
_M2 = np.uint64(HASH_M2)
_SEED = np.uint64(SAMPLE_SEED)
_ONE = np.uint64(1)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)


@inline_kernel
def _smix(h, w):
    h = (h ^ w) * _M1
    return h ^ (h >> np.uint64(31))


@inline_kernel
def sample_hash(k0, k1, k2, k3, k4):
    """64-bit sampling hash of a 5-word key (uint64 each); ``fs_sample_hash`` in C."""
    h = _smix(_SEED, k0)
    h = _smix(h, k1)
    h = _smix(h, k2)
    h = _smix(h, k3)
    h = _smix(h, k4)
    h = (h ^ (h >> np.uint64(27))) * _M2
    return h ^ (h >> np.uint64(33))


@inline_kernel
def _bit(flt, base, v):
    return (flt[base + (v >> 6)] >> np.uint64(v & 63)) & _ONE


@inline_kernel
def _in_cidrs(flt, which, l3, hi, lo):
    """True when the address (l3, hi, lo) is in a CIDR of list ``which``."""
    n = np.int64(flt[FL_CIDR_N])
    for j in range(n):
        r = FL_CIDRS + 5 * j
        if np.int64(flt[r]) != which or np.int64(flt[r + 1]) != l3:
            continue
        plen = np.int64(flt[r + 2])
        if l3 == 4:
            m = (np.uint64(0xFFFFFFFF) << np.uint64(32 - plen)) & np.uint64(0xFFFFFFFF)
            if (lo & m) == flt[r + 4]:
                return True
        elif plen <= 64:
            m = (_ALL << np.uint64(64 - plen)) if plen > 0 else np.uint64(0)
            if (hi & m) == flt[r + 3]:
                return True
        else:
            m = _ALL << np.uint64(128 - plen)
            if hi == flt[r + 3] and (lo & m) == flt[r + 4]:
                return True
    return False


@inline_kernel
def flow_passes(flt, mode, l3, proto, ah, al, bh, bl, pa, pb):
    """True when a flow with these facts passes the filter ``mode`` (layout.FLT_* bits).

    ``l3`` 4/6 (anything else: no address, port or protocol, so no include list
    is met and no exclude list matches); ``pa``/``pb`` the key's ports (0 for
    protocols without ports).
    """
    ip = l3 == 4 or l3 == 6
    if mode & FLT_INC_PROTOS:
        if not ip or _bit(flt, FL_INC_PROTOS, proto) == 0:
            return False
    if mode & FLT_EXC_PROTOS:
        if ip and _bit(flt, FL_EXC_PROTOS, proto) != 0:
            return False
    if mode & FLT_INC_PORTS:
        if not ip or (_bit(flt, FL_INC_PORTS, pa) == 0 and _bit(flt, FL_INC_PORTS, pb) == 0):
            return False
    if mode & FLT_EXC_PORTS:
        if ip and (_bit(flt, FL_EXC_PORTS, pa) != 0 or _bit(flt, FL_EXC_PORTS, pb) != 0):
            return False
    if mode & FLT_INC_CIDRS:
        if not ip or not (_in_cidrs(flt, 0, l3, ah, al) or _in_cidrs(flt, 0, l3, bh, bl)):
            return False
    if mode & FLT_EXC_CIDRS:
        if ip and (_in_cidrs(flt, 1, l3, ah, al) or _in_cidrs(flt, 1, l3, bh, bl)):
            return False
    return True
