#!/usr/bin/env python3
"""Processed instructions (the kernel's verified_insns) of every sensor program (root needed).

Loads the default build and the build with every option compiled in (every filter list,
sampling, key_vlan, key_icmp), as tests/test_bpf_filter.py does, and prints what the verifier
walked for each program (limit 1 M; BCC reports an overflow as "Program too large").

Usage: sudo .venv/bin/python scripts/bench_verifier.py [tunable=value ...]
       (e.g. decapsulate=0)
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowscope.sensor import loader  # noqa: E402

BPF_OBJ_GET_INFO_BY_FD = 15
VERIFIED_INSNS_OFF = 216  # struct bpf_prog_info.verified_insns (kernels >= 5.16)
PROGRAMS = ("fs_xdp_outer", "fs_xdp_decap", "fs_xdp_inner", "fs_tc_outer", "fs_tc_decap",
            "fs_tc_inner")
ALL_OPTIONS = {"filter": 63, "sample_rate": 7, "key_vlan": 1, "key_icmp": 1, "max_flows": 1024,
               "ring_pages": 16}


class _InfoAttr(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_uint32), ("len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


def verified_insns(fd: int) -> int:
    buf = (ctypes.c_uint8 * 256)()
    if loader.bpf_syscall(BPF_OBJ_GET_INFO_BY_FD,
                          _InfoAttr(fd, 256, ctypes.addressof(buf))) != 0:
        raise OSError(ctypes.get_errno(), "BPF_OBJ_GET_INFO_BY_FD")
    return int.from_bytes(bytes(buf[VERIFIED_INSNS_OFF:VERIFIED_INSNS_OFF + 4]), "little")


def counts(tunables: dict) -> dict:
    m = loader.load(tunables)
    try:
        out = {"fs_xdp": verified_insns(m.xdp_fd), "fs_tc": verified_insns(m.tc_fd)}
        for name in PROGRAMS:
            fn = m.bpf.funcs.get(name.encode())
            if fn is not None:
                out[name] = verified_insns(fn.fd)
        return out
    finally:
        m.close()


def main() -> None:
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__.strip())
        return
    extra = {}
    for a in sys.argv[1:]:
        k, eq, v = a.partition("=")
        if not eq or not v.lstrip("-").isdigit():
            sys.exit(f"bench_verifier: expected tunable=integer, got {a!r}")
        extra[k] = int(v)
    for label, tun in (("default", extra), ("all options", {**ALL_OPTIONS, **extra})):
        c = counts(tun)
        print(f"{label:12} " + "  ".join(f"{k} {v / 1000:.0f}k" for k, v in c.items()))


if __name__ == "__main__":
    main()
