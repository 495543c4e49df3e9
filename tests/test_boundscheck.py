"""The capture corpus through ``flowscope pcap`` with numba bounds checks compiled in.

``NUMBA_BOUNDSCHECK=1`` makes every array access of the kernels raise IndexError
instead of reading or writing out of bounds; a private ``NUMBA_CACHE_DIR`` makes
sure the checked build is really compiled rather than loaded from the normal
cache. Compiling every kernel that way takes a while (about 2 minutes on two busy
cores), so the whole corpus runs in one process: a driver calls the CLI's
``main`` for each file and each ``--format`` and reports every exception.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"

DRIVER = r"""
import contextlib, io, os, sys, traceback
from flowscope.cli import main

failures = 0
for arg in sys.argv[1:]:
    path, want = arg.rsplit(":", 1)
    for fmt in ("jsonl", "zeek", "zeek-json", "eve", "table"):
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                rc = main(["pcap", "--no-progress", "--format", fmt, "-o", os.devnull, path])
        except BaseException:
            failures += 1
            print(f"FAIL {fmt} {path}: exception\n{traceback.format_exc()}", flush=True)
            continue
        if rc != int(want) or "Traceback" in err.getvalue():
            failures += 1
            print(f"FAIL {fmt} {path}: exit {rc}, expected {want}\n{err.getvalue()}", flush=True)
print(f"{len(sys.argv) - 1} files, {failures} failures")
sys.exit(1 if failures else 0)
"""


def _model():
    spec = importlib.util.spec_from_file_location("flowscope_fuzz", ROOT / "scripts" / "fuzz.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.model


def test_corpus_under_numba_boundscheck(tmp_path):
    model = _model()
    files = (sorted(DATA.glob("*.pcap*")) + sorted((DATA / "fuzz").glob("*.pcap*"))
             + sorted((DATA / "tunnels").glob("*.pcap")))
    args = [f"{p}:{model(p.read_bytes())[0]}" for p in files]
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    p = subprocess.run([sys.executable, "-c", DRIVER, *args], capture_output=True, text=True,
                       env=env, timeout=1200, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-3000:]
    assert f"{len(files)} files, 0 failures" in p.stdout
