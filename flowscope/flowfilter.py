"""The flow filter's lists as tables: the engine's array and the kernel maps' contents.

A flow passes the filter when every list in force lets it through:

- ``include`` CIDRs / ports / protocols: one of the flow's two addresses (ports)
  is in the list, or its IP protocol is;
- ``exclude`` CIDRs / ports / protocols: neither address (port) is in the list,
  nor is its protocol.

Flows that are not IP (``--extractor mac-pair`` on ARP, ...) meet no include
list and match no exclude list. Protocols without ports have ports 0. The rules
look at both ends alike, so both directions of a conversation get the same
answer, and they are decided once, when a packet would create the flow: in
the engine (``flowscope._kernels.flowfilter``) and, live, in the kernel before
it makes a map entry (``bpf/fs_flow.h``, maps in ``bpf/fs_maps.h``).
"""

from __future__ import annotations

import ipaddress

import numpy as np

from . import layout
from ._kernels import flowfilter as KF
from .config import TrackerConfig

#: ``(config field, mode bit)`` of each list.
LISTS = (("include_cidrs", layout.FLT_INC_CIDRS), ("exclude_cidrs", layout.FLT_EXC_CIDRS),
         ("include_ports", layout.FLT_INC_PORTS), ("exclude_ports", layout.FLT_EXC_PORTS),
         ("include_protocols", layout.FLT_INC_PROTOS),
         ("exclude_protocols", layout.FLT_EXC_PROTOS))


def filter_mode(cfg: TrackerConfig) -> int:
    """The ``layout.FLT_*`` bits of the lists in force (0: no filter)."""
    return sum(bit for name, bit in LISTS if getattr(cfg, name))


def networks(cfg: TrackerConfig) -> list[tuple[int, int, int, bytes]]:
    """``(list, l3, prefix length, 16 address bytes)`` per CIDR; list 0 include, 1 exclude.

    IPv4 networks take the first 4 bytes (the rest zero)."""
    out = []
    for which, name in enumerate(("include_cidrs", "exclude_cidrs")):
        for text in getattr(cfg, name):
            net = ipaddress.ip_network(text)
            l3 = layout.L3_IPV4 if net.version == 4 else layout.L3_IPV6
            out.append((which, l3, net.prefixlen, net.network_address.packed.ljust(16, b"\0")))
    return out


def engine_table(cfg: TrackerConfig) -> tuple[int, np.ndarray]:
    """``(mode, flt)``: the filter's mode bits and the engine's ``flt`` array
    (``flowscope._kernels.flowfilter``)."""
    nets = networks(cfg)
    flt = np.zeros(KF.FL_SIZE + 5 * len(nets), dtype=np.uint64)
    for base, values in ((KF.FL_INC_PORTS, cfg.include_ports),
                         (KF.FL_EXC_PORTS, cfg.exclude_ports),
                         (KF.FL_INC_PROTOS, cfg.include_protocols),
                         (KF.FL_EXC_PROTOS, cfg.exclude_protocols)):
        for v in values:
            flt[base + (v >> 6)] |= np.uint64(1 << (v & 63))
    flt[KF.FL_CIDR_N] = len(nets)
    for j, (which, l3, plen, addr) in enumerate(nets):
        r = KF.FL_CIDRS + 5 * j
        if l3 == layout.L3_IPV4:
            hi, lo = 0, int.from_bytes(addr[:4], "big")
        else:
            hi, lo = int.from_bytes(addr[:8], "big"), int.from_bytes(addr[8:], "big")
        flt[r:r + 5] = (which, l3, plen, hi, lo)
    return filter_mode(cfg), flt


def kernel_values(cfg: TrackerConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(ports, protos)``: uint8[65536] and uint8[256] of ``FS_FLT_IN`` / ``FS_FLT_EX`` bits
    for the kernel's ``fs_flt_ports`` and ``fs_flt_protos`` arrays."""
    port_bits = np.zeros(65536, dtype=np.uint8)
    proto_bits = np.zeros(256, dtype=np.uint8)
    for arr, inc, exc in ((port_bits, cfg.include_ports, cfg.exclude_ports),
                          (proto_bits, cfg.include_protocols, cfg.exclude_protocols)):
        arr[list(inc)] |= 1
        arr[list(exc)] |= 2
    return port_bits, proto_bits


def sample_hash(key: np.ndarray) -> np.ndarray:
    """The sampling hash of engine key words (uint64[n, 5]), uint64[n] (for tests and tools)."""
    from ._kernels.flowfilter import sample_hash as h

    key = np.asarray(key, dtype=np.uint64).reshape(-1, 5)
    return np.array([h(*(np.uint64(w) for w in row)) for row in key], dtype=np.uint64)
