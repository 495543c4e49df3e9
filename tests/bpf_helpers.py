"""Gatekeeping for tests that need root and BPF.

Such tests skip when the process cannot load BPF programs, unless the environment sets
FLOWSCOPE_REQUIRE_BPF=1 (CI on a BPF-capable machine): then a missing capability fails.
"""

from __future__ import annotations

import os
import shutil

import pytest


def bpf_problem() -> str | None:
    """Why BPF tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root"
    try:
        import bcc  # noqa: F401, PLC0415
    except ImportError as e:
        return f"BCC not importable ({e})"
    if not os.path.exists("/sys/fs/bpf") and not os.path.exists("/proc/sys/kernel/bpf_stats_enabled"):
        return "kernel without BPF"
    return None


def require_bpf(*tools: str) -> None:
    """Skip (or fail under FLOWSCOPE_REQUIRE_BPF=1) unless BPF and ``tools`` are available."""
    why = bpf_problem()
    if why is None:
        missing = [t for t in tools if shutil.which(t) is None]
        if missing:
            why = f"missing tools: {', '.join(missing)}"
    if why is None:
        return
    if os.environ.get("FLOWSCOPE_REQUIRE_BPF") == "1":
        pytest.fail(f"FLOWSCOPE_REQUIRE_BPF=1 but BPF tests cannot run: {why}")
    pytest.skip(why)
