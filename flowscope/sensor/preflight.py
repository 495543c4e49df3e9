"""Up-front checks of the live sensor: one clear line per problem, before anything is loaded.

:func:`preflight` checks, in order: the capabilities (root is not enough on its own:
a root process stripped of CAP_NET_ADMIN and CAP_SYS_ADMIN cannot load or attach), that every interface exists,
that the kernel has BPF, that BCC is importable (and how to make a virtualenv see
the distro's copy), and that BCC will find kernel headers (the include tree of
:mod:`flowscope.sensor.kinclude`). Every problem found is reported, not just the first.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import sys
import sysconfig
from pathlib import Path

from .kinclude import KincludeError

CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 12, 13, 21, 38, 39
DISTRO_BCC = Path("/usr/lib/python3/dist-packages/bcc")


class PreflightError(RuntimeError):
    """The live sensor cannot start here.

    ``problems`` holds one line per reason, each starting with ``live:``; ``str()`` is
    those lines joined by newlines.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = [f"live: {p}" for p in problems]
        super().__init__("\n".join(self.problems))


def effective_caps() -> int:
    """The effective capability mask of this process (``CapEff`` of /proc/self/status)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def missing_caps(caps: int | None = None, promisc: bool = False) -> list[str]:
    """Names of the capabilities loading and attaching the programs needs and ``caps`` lacks,
    with CAP_NET_RAW when ``promisc`` (the packet socket that holds promiscuous mode).

    CAP_SYS_ADMIN stands in for the first three (kernels before 5.8 have no CAP_BPF or
    CAP_PERFMON), not for CAP_NET_RAW.
    """
    caps = effective_caps() if caps is None else caps

    def has(cap: int) -> bool:
        return bool(caps & (1 << cap))

    out = []
    if not (has(CAP_BPF) or has(CAP_SYS_ADMIN)):
        out.append("CAP_BPF")
    if not (has(CAP_NET_ADMIN) or has(CAP_SYS_ADMIN)):
        out.append("CAP_NET_ADMIN")
    if not (has(CAP_PERFMON) or has(CAP_SYS_ADMIN)):
        out.append("CAP_PERFMON")
    if promisc and not has(CAP_NET_RAW):
        out.append("CAP_NET_RAW")
    return out


def _bpf_syscall_present() -> bool:
    """False only when bpf(2) does not exist (ENOSYS); asks for an invalid map type, which
    the kernel rejects before creating anything."""
    from .loader import _NR_BPF  # noqa: PLC0415

    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(72)  # BPF_MAP_CREATE, map_type 0 (unspec)
    r = libc.syscall(ctypes.c_long(_NR_BPF), ctypes.c_int(0), attr, ctypes.c_uint(len(attr)))
    return not (r < 0 and ctypes.get_errno() == errno.ENOSYS)


def bcc_hint() -> str:
    """How to make BCC importable from this interpreter (one line)."""
    site = sysconfig.get_paths()["purelib"]
    if sys.prefix != sys.base_prefix:  # a virtualenv
        how = (f"ln -s {DISTRO_BCC} {site}/bcc (or create the venv with "
               "--system-site-packages)")
        if DISTRO_BCC.is_dir():
            return f"BCC (python3-bpfcc) is installed but this virtualenv does not see it: {how}"
        return f"BCC is not installed: apt install python3-bpfcc, then {how}"
    return "BCC is not installed: apt install python3-bpfcc"


def _check_bcc() -> str | None:
    """Is BCC there? Checked without importing it: the sensor process never loads BCC (a
    child process compiles the programs), and importing it maps LLVM and clang."""
    import ctypes.util  # noqa: PLC0415
    import importlib.util  # noqa: PLC0415

    try:
        spec = importlib.util.find_spec("bcc")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return bcc_hint()
    if "bcc" in sys.modules:  # already imported (and so loadable)
        return None
    if not ctypes.util.find_library("bcc"):  # the Python package is there, libbcc.so is not
        return "BCC cannot load libbcc (libbcc.so.0 not found): apt install libbpfcc"
    return None


def preflight(ifnames, promisc: bool = False) -> None:
    """Check that ``flowscope live`` can run on ``ifnames``; raise PreflightError if not.

    On success the kernel include tree is ready and ``BCC_KERNEL_SOURCE`` points at
    it (when the running kernel has no header package).

    Raises
    ------
    PreflightError
        With one line per problem in ``problems``.
    """
    from . import loader  # noqa: PLC0415

    problems = []
    lacking = missing_caps(promisc=promisc)
    if lacking:
        raw = ("; and CAP_NET_RAW for promiscuous mode (or sensor.promisc: false)"
               if promisc else "")
        problems.append(f"missing capabilit{'y' if len(lacking) == 1 else 'ies'} "
                        f"{', '.join(lacking)}: the live sensor needs CAP_BPF, CAP_NET_ADMIN "
                        f"and CAP_PERFMON (or CAP_SYS_ADMIN){raw}; run it as "
                        "root or grant them (systemd: AmbientCapabilities=)")
    for name in ifnames:
        try:
            socket.if_nametoindex(name)
        except OSError:
            problems.append(f"no interface named {name!r}")
    if not _bpf_syscall_present():
        problems.append("this kernel has no BPF support (no bpf(2) system call)")
    why = _check_bcc()
    if why:
        problems.append(why)
    try:
        ksrc = loader.kernel_source_dir()
    except (KincludeError, OSError) as exc:
        problems.append(f"kernel headers for BPF cannot be prepared: {exc}")
    else:
        if ksrc:
            os.environ["BCC_KERNEL_SOURCE"] = ksrc
    if problems:
        raise PreflightError(problems)
