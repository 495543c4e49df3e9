"""Zeek-style connection facts, kept per flow beside the reference state.

Enabled per tracker (``ctl[C_ZEEK]``); the engine calls ``zeek_packet`` for
every matched packet of a flow and copies the flow's ``fz`` row and ``fzh``
history into its Ended record (``EVENT_DTYPE.zeek`` / ``zhist``).

``fz``  int64[cap, ZEEK_WORDS]       words Z_* below
``fzh`` uint8[cap, ZEEK_HISTORY_MAX] Zeek history letters, in order
"""

import numpy as np
from numba import njit

ZEEK_WORDS = 8
ZEEK_HISTORY_MAX = 32

Z_IP_BYTES0 = 0  # IP-level bytes (IPv4 total length / IPv6 40 + payload), initiator
Z_IP_BYTES1 = 1  # ... responder
Z_HLEN = 2  # letters in fzh


@njit(cache=True, nogil=True)
def zeek_reset(fz, fzh, s):
    """Clear the Zeek state of slot ``s`` for a new flow."""
    for w in range(ZEEK_WORDS):
        fz[s, w] = 0


@njit(cache=True, nogil=True)
def zeek_packet(fz, fzh, s, side, pkts, i):
    """Account packet ``pkts[i]`` (side 0 initiator / 1 responder) to slot ``s``."""
    p = pkts[i]
    fz[s, Z_IP_BYTES0 + side] += np.int64(p.ip_len)
