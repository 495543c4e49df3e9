"""Build parsed-packet rows (layout.PKT_DTYPE) for engine tests without frames."""

from __future__ import annotations

import ipaddress

import numpy as np

from flowscope import layout

FIELDS = layout.PKT_DTYPE.names


def pkt(ts, src="10.0.0.1", sport=1234, dst="10.0.0.2", dport=80, flags=None, proto=None,
        payload=0, length=60, smac=1, dmac=2):
    """One packet as a dict of PKT_DTYPE fields. ``flags=None`` means not TCP."""
    s = ipaddress.ip_address(src)
    d = ipaddress.ip_address(dst)
    if proto is None:
        proto = 6 if flags is not None else 17
    p = {f: 0 for f in FIELDS if not f.startswith("_pad")}
    p.update(ts=int(ts), caplen=length, wirelen=length, l3=s.version, proto=proto,
             src_hi=int(s) >> 64, src_lo=int(s) & (2**64 - 1),
             dst_hi=int(d) >> 64, dst_lo=int(d) & (2**64 - 1),
             smac=smac, dmac=dmac, payload_len=payload)
    p["pflags"] = layout.PF_MAC
    if proto in (6, 17, 132):
        p.update(sport=sport, dport=dport)
        p["pflags"] |= layout.PF_PORTS
    if flags is not None and proto == 6:
        p["tcp_flags"] = flags
        p["pflags"] |= layout.PF_TCP
    return p


def to_array(pkts) -> np.ndarray:
    arr = np.zeros(len(pkts), dtype=layout.PKT_DTYPE)
    for i, p in enumerate(pkts):
        for k, v in p.items():
            arr[i][k] = v
    return arr
