"""The numba cache guard of flowscope._kernels, in fresh interpreters with their own caches.

Each run compiles (or loads) one small kernel, ``capture._ts_ns``, so a run takes a few
seconds. Checked: the one-line compile message (printed when compiling, not when cached),
a changed flag or kernel source dropping the cache, and the fallbacks when directories
cannot be written (the unwritable cases switch to ``nobody`` and need root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MESSAGE = "flowscope: compiling the packet engine"
PROBE = ("import numpy as np, flowscope._kernels as k\n"
         "k.ANNOUNCE = True  # as in the flowscope command\n"
         "from flowscope._kernels.capture import _ts_ns\n"
         "assert _ts_ns(np.int64(0), np.int64(5), np.int64(6), np.int64(0)) == 5000\n"
         "print(k.CACHE_DIR)\n")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NUMBA_") and k not in ("CACHE_DIRECTORY", "XDG_CACHE_HOME")}
    env["FLOWSCOPE_JIT"] = "1"  # numba's cache, not the ahead-of-time module (test_aot.py)
    env.update(extra)
    return env


def _run(env, pythonpath=REPO, prefix=()):
    env = dict(env, PYTHONPATH=str(pythonpath))
    r = subprocess.run([*prefix, sys.executable, "-c", PROBE], env=env, capture_output=True,
                       text=True, timeout=180, cwd="/")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    return r.stdout.strip(), [ln for ln in r.stderr.splitlines() if ln.strip()]


def _cached(root: Path) -> set[str]:
    return {p.name for p in root.rglob("*.nb[ic]")}


@pytest.fixture
def shared_tmp():
    """A temporary directory other users can read (pytest's own is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="fs-kcache-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _copy_package(dst: Path) -> Path:
    """A copy of the flowscope package (to edit sources or make it read-only)."""
    shutil.copytree(REPO / "flowscope", dst / "flowscope", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def test_message_once_when_compiling_and_not_when_cached(tmp_path):
    env = _env(NUMBA_CACHE_DIR=str(tmp_path))
    where, err = _run(env)
    assert where == str(tmp_path)
    assert [ln for ln in err if MESSAGE in ln] == err and len(err) == 1, err
    assert "first run after install or upgrade" in err[0]
    assert any(n.startswith("capture._ts_ns") for n in _cached(tmp_path))
    _, err = _run(env)
    assert err == []


def test_flag_change_drops_the_cache(tmp_path):
    env = _env(NUMBA_CACHE_DIR=str(tmp_path))
    _run(env)
    stamp = next(tmp_path.rglob("flowscope-kernels.key")).read_text()
    index = next(tmp_path.rglob("capture._ts_ns*.nbi"))
    before = index.stat().st_mtime_ns
    _, err = _run(dict(env, NUMBA_BOUNDSCHECK="1"))
    assert len(err) == 1 and MESSAGE in err[0]
    assert next(tmp_path.rglob("flowscope-kernels.key")).read_text() != stamp
    assert index.stat().st_mtime_ns != before  # rewritten after the drop
    _, err = _run(dict(env, NUMBA_BOUNDSCHECK="1"))
    assert err == []
    _, err = _run(dict(env, NUMBA_OPT="1"))
    assert len(err) == 1 and MESSAGE in err[0]


def test_any_kernel_source_change_drops_the_cache(tmp_path):
    pkg = _copy_package(tmp_path / "src")
    env = _env(NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    _run(env, pkg)
    _, err = _run(env, pkg)
    assert err == []
    # _ts_ns lives in capture.py; numba alone would keep its cache after these edits.
    for name in ("layout.py", "_kernels/zeek.py"):
        with open(pkg / "flowscope" / name, "a") as f:
            f.write("\n# edited\n")
        _, err = _run(env, pkg)
        assert len(err) == 1 and MESSAGE in err[0], name
        _, err = _run(env, pkg)
        assert err == [], name


def test_library_callers_get_no_message(tmp_path):
    env = dict(_env(NUMBA_CACHE_DIR=str(tmp_path)), PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", PROBE.replace("k.ANNOUNCE = True", "pass")],
                       env=env, capture_output=True, text=True, timeout=180, cwd="/")
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_unwritable_cache_dir_falls_back_to_the_package(tmp_path):
    pkg = _copy_package(tmp_path / "src")
    where, err = _run(_env(NUMBA_CACHE_DIR="/proc/flowscope-no-such-dir"), pkg)
    assert where == "pycache"
    assert _cached(pkg / "flowscope" / "_kernels" / "__pycache__")


def _as_nobody():
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("switching to an unprivileged user needs root and setpriv")
    return ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all")


def test_read_only_package_uses_the_xdg_cache(shared_tmp):
    prefix = _as_nobody()
    pkg = _copy_package(shared_tmp / "src")
    xdg = shared_tmp / "xdg"
    xdg.mkdir()
    os.chown(xdg, 65534, 65534)
    env = _env(HOME="/nonexistent", XDG_CACHE_HOME=str(xdg))
    where, err = _run(env, pkg, prefix)
    assert where == str(xdg / "flowscope" / "numba")
    assert len(err) == 1 and MESSAGE in err[0]
    assert _cached(xdg)
    _, err = _run(env, pkg, prefix)
    assert err == []


def test_nothing_writable_compiles_in_memory(shared_tmp):
    prefix = _as_nobody()
    if os.access("/var/cache/flowscope", os.W_OK) and os.stat("/var/cache/flowscope").st_uid == 65534:
        pytest.skip("/var/cache/flowscope is writable by nobody here")
    pkg = _copy_package(shared_tmp / "src")
    env = _env(HOME="/nonexistent")
    env.pop("XDG_CACHE_HOME", None)
    for _ in range(2):  # nothing is kept: both runs compile, neither fails
        where, err = _run(env, pkg, prefix)
        assert where == "memory"
        assert len(err) == 1 and "no writable cache directory" in err[0], err
    assert not _cached(pkg)
