"""Gatekeeping for tests that need root and BPF.

Such tests skip when the process cannot load BPF programs, unless the environment sets
FLOWSCOPE_REQUIRE_BPF=1 (CI on a BPF-capable machine): then a missing capability fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess

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


def sh(*args, check=True, timeout=20) -> subprocess.CompletedProcess:
    """Run a command, capturing its output as text."""
    return subprocess.run(list(args), check=check, capture_output=True, text=True,
                          timeout=timeout)


def free_subnet(octet: int, n: int) -> int:
    """``n``, or the next value in 20..219 after it, whose 10.{octet}.{n}.0/24 no interface of
    this netns has an address in (one left behind by a killed run would take the route)."""
    out = sh("ip", "-4", "-o", "addr", "show").stdout
    used = {int(w.split(".")[2]) for w in out.split() if w.startswith(f"10.{octet}.")}
    for _ in range(200):
        if n not in used:
            return n
        n = (n - 20 + 1) % 200 + 20
    raise RuntimeError(f"no free 10.{octet}.x.0/24 subnet for a test veth pair")


@contextlib.contextmanager
def veth_netns(name: str, octet: int, n: int, offloads_off: bool = False):
    """A netns ``name`` joined to this one by the veth pair ``{name}a`` (here) /
    ``{name}b`` (there), addressed 10.{octet}.{n}.1-2/24 and fd00:{octet}:{n:x}::1-2/64.

    Yields ``(our ifname, peer v4, peer v6, netns name)``; removes both on the way out.
    ``offloads_off`` turns GSO/TSO/GRO off on both ends (one packet per segment).
    """
    ns, a, b = name, f"{name}a", f"{name}b"
    sh("ip", "netns", "del", ns, check=False)
    sh("ip", "link", "del", a, check=False)
    n = free_subnet(octet, n)
    v4, v6 = f"10.{octet}.{n}", f"fd00:{octet}:{n:x}::"
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns)
        sh("ip", "addr", "add", f"{v4}.1/24", "dev", a)
        sh("ip", "addr", "add", f"{v6}1/64", "dev", a, "nodad")
        sh("ip", "link", "set", a, "up")
        sh("ip", "-n", ns, "addr", "add", f"{v4}.2/24", "dev", b)
        sh("ip", "-n", ns, "addr", "add", f"{v6}2/64", "dev", b, "nodad")
        sh("ip", "-n", ns, "link", "set", b, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        if offloads_off:
            sh("ethtool", "-K", a, "gso", "off", "tso", "off", "gro", "off", check=False)
            sh("ip", "netns", "exec", ns, "ethtool", "-K", b, "gso", "off", "tso", "off",
               "gro", "off", check=False)
        yield a, f"{v4}.2", f"{v6}2", ns
    finally:
        sh("ip", "link", "del", a, check=False)
        sh("ip", "netns", "del", ns, check=False)


def stop(proc, sig=signal.SIGINT, limit=30):
    """Send ``sig`` to ``proc`` (if still running) and return its exit status; kill it and
    re-raise when it has not exited within ``limit`` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise


def wait_for(path, text: str, proc, limit: float = 60.0) -> None:
    """Wait until ``text`` shows in the file ``path`` (or fail: ``proc`` exited, or time)."""
    import time

    end = time.monotonic() + limit
    while time.monotonic() < end:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {path.read_text(errors='replace')}")
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} in {path} after {limit} s")


def frame_to(ifname: str, dst_mac: bytes, v4: str, port: int) -> bytes:
    """An Ethernet + IPv4 + UDP frame from our end of a pair (``veth_netns``, ``_veth``: ours
    is .1) to ``v4``:``port``, for a packet socket bound to ``ifname``; ``dst_mac`` another
    host's makes the peer's stack free it as OTHERHOST."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "live_traffic", Path(__file__).resolve().parents[1] / "scripts" / "live_traffic.py")
    lt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lt)
    src = v4.rsplit(".", 1)[0] + ".1"
    ip = lt._ipv4(src, v4, 17, lt._udp(40404, port, b"not for you"))
    return dst_mac + lt._mac(ifname) + b"\x08\x00" + ip
