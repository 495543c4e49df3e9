"""Up-front checks of ``flowscope live``: privileges, interfaces, BPF and BCC, one line each."""

from __future__ import annotations

import os
import socket
from typing import Sequence

CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF = 12, 21, 39


class PreflightError(RuntimeError):
    """The sensor cannot start here; ``str()`` is one line saying why."""


def _effective_caps() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def preflight(ifnames: Sequence[str]) -> None:
    """Raise PreflightError (one line) when the sensor cannot run on ``ifnames``."""
    caps = _effective_caps()
    if os.geteuid() != 0 and not (
            caps & (1 << CAP_NET_ADMIN) and caps & ((1 << CAP_BPF) | (1 << CAP_SYS_ADMIN))):
        raise PreflightError("live: needs root (or CAP_BPF and CAP_NET_ADMIN)")
    for name in ifnames:
        try:
            socket.if_nametoindex(name)
        except OSError:
            raise PreflightError(f"live: no interface named {name!r}") from None
    if not (os.path.exists("/proc/sys/net/core/bpf_jit_enable")
            or os.path.exists("/sys/fs/bpf")):
        raise PreflightError("live: this kernel has no BPF support")
    try:
        from .loader import import_bcc

        import_bcc()
    except ImportError:
        raise PreflightError("live: BCC is not installed (Debian: apt install python3-bpfcc)") \
            from None
    except (OSError, RuntimeError) as exc:  # kernel include dir could not be prepared
        raise PreflightError(f"live: cannot prepare BPF compilation: {exc}") from None
