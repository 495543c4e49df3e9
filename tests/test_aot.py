"""Ahead-of-time kernels (``flowscope._aot``) against numba's JIT, and the loader's fallbacks.

The module is built here, by ``python -m flowscope.aotbuild``, into a copy of the package
(numba's cache files copied along, so the build's warm-up loads rather than compiles): the
test does not depend on whether the checkout's own module is current. Building takes about
a minute on a busy two-core machine. Every capture of the corpus (tests/data and the shared
captures) goes through ``flowscope pcap`` in every output format in one process per path;
the outputs must be byte-identical, and the AOT process must not have imported numba or
llvmlite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import shared_pcaps_dir

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
FORMATS = (("jsonl", "all"), ("zeek", "ended"), ("zeek-json", "ended"), ("eve", "ended"),
           ("table", "ended"))

DRIVER = r"""
import contextlib, io, os, sys
from flowscope.cli import main
import flowscope._kernels as K

out = sys.argv[1]
for i, path in enumerate(sys.argv[2:]):
    for fmt, events in FORMATS:
        for extra in ([], ["--verify-checksums"]):
            name = f"{i:03d}.{fmt}{''.join(extra)}"
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                rc = main(["pcap", "--no-progress", "--format", fmt, "--events", events,
                           *extra, "-o", os.path.join(out, name), path])
            with open(os.path.join(out, name + ".rc"), "w") as f:
                f.write(f"{rc}\n{err.getvalue()}")
with open(os.path.join(out, "mode"), "w") as f:
    f.write(K.MODE + "\n" + " ".join(sorted(m for m in sys.modules
                                            if m.split(".")[0] in ("numba", "llvmlite"))))
""".replace("FORMATS", repr(FORMATS))


def _env(**kw) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NUMBA_", "FLOWSCOPE_JIT", "PYTHON"))}
    env.update(kw)
    return env


def _text(path: Path) -> bytes:
    """The file without Zeek's ``#open``/``#close`` lines (wall-clock times)."""
    return b"".join(ln for ln in path.read_bytes().splitlines(keepends=True)
                    if not ln.startswith((b"#open", b"#close")))


def _corpus() -> list[Path]:
    files = sorted(DATA.glob("*.pcap*")) + sorted((DATA / "linktypes").glob("*.pcap*"))
    files += sorted((DATA / "fuzz").glob("*.pcap*"))
    shared = shared_pcaps_dir()
    if shared.is_dir():
        files += sorted(shared.glob("*.pcap*"))
    return files


@pytest.fixture(scope="module")
def aot_tree(tmp_path_factory) -> Path:
    """A copy of the package with a freshly built ``flowscope._aot``."""
    root = tmp_path_factory.mktemp("aot")
    shutil.copytree(ROOT / "flowscope", root / "flowscope", symlinks=True,
                    ignore=shutil.ignore_patterns("_aot.*"))
    r = subprocess.run([sys.executable, "-m", "flowscope.aotbuild"], cwd=root,
                       env=_env(PYTHONPATH=str(root)), capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, r.stderr[-4000:]
    (so,) = (root / "flowscope").glob("_aot.*")
    assert "kernel signatures" in r.stderr
    return root


def _mode(tree: Path, **env) -> list[str]:
    # (an editable install of the checkout would otherwise find the checkout's module)
    code = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path\n"
            "    if 'editable' not in str(getattr(f, '__module__', '')).lower()]\n"
            "import flowscope._kernels as K; print(K.MODE); print(K.JIT_REASON)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True,
                       env=_env(PYTHONPATH=str(tree), **env), timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()


def test_aot_and_jit_give_identical_output_on_the_corpus(aot_tree, tmp_path):
    files = [str(p) for p in _corpus()]
    outs = {}
    for mode, env in (("aot", {}), ("jit", {"FLOWSCOPE_JIT": "1"})):
        out = tmp_path / mode
        out.mkdir()
        r = subprocess.run([sys.executable, "-c", DRIVER, str(out), *files], cwd=aot_tree,
                           env=_env(PYTHONPATH=str(aot_tree), **env), capture_output=True,
                           text=True, timeout=1800)
        assert r.returncode == 0, r.stderr[-4000:]
        outs[mode] = out
    assert (outs["aot"] / "mode").read_text() == "aot\n"  # and not one numba/llvmlite module
    assert (outs["jit"] / "mode").read_text().startswith("jit\n")
    names = sorted(p.name for p in outs["jit"].iterdir() if p.name != "mode")
    assert len(names) == len(files) * len(FORMATS) * 2 * 2
    assert names == sorted(p.name for p in outs["aot"].iterdir() if p.name != "mode")
    differ = [n for n in names if _text(outs["aot"] / n) != _text(outs["jit"] / n)]
    assert not differ, differ[:10]
    assert any((outs["aot"] / n).stat().st_size > 1000 for n in names)


def test_aot_process_imports_neither_numba_nor_llvmlite(aot_tree):
    pcap = DATA / "zeek__http__get.pcap"
    code = ("import sys\nfrom flowscope.cli import main\n"
            f"main(['pcap', '--json', '-o', '/dev/null', {str(pcap)!r}])\n"
            "print(sorted(m for m in sys.modules if m.startswith(('numba', 'llvmlite'))))")
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=aot_tree,
                       capture_output=True, text=True, env=_env(PYTHONPATH=str(aot_tree)),
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "[]"
    imported = [ln.rsplit("|", 1)[-1].strip() for ln in r.stderr.splitlines()
                if ln.startswith("import time:")]
    assert "flowscope._kernels.engine" in imported
    assert not [m for m in imported if m.split(".")[0] in ("numba", "llvmlite")]


LIVE_ROWS = r"""
import sys
import numpy as np
from flowscope import FlowTracker, layout
from flowscope.sensor import layout as SL
from flowscope.sensor.rows import event_rows, sync_rows

def batch(n):  # as the sensor drains them: the first with a DNS payload
    ev = np.zeros(n, SL.RECORD_DTYPE)
    ev["reason"] = SL.EventReason.NEW | SL.EventReason.DNS
    ev["pflags"] = layout.PF_PORTS
    ev["key"]["l3"] = 4
    ev["key"]["proto"] = 17
    ev["key"]["port_b"] = 53
    ev["key"]["port_a"] = 1024 + np.arange(n)
    ev["dns_len"][0] = 12
    ev["dns"][0, :12] = list(bytes.fromhex("12340100000100000000000000"))[:12]
    return ev


# one-record batches too: their field views are contiguous, longer batches' are strided
for n in (1, 2, 3):
    rows = event_rows(batch(n), 0, {1: 0})
    sync = (sync_rows(np.zeros(n, SL.FLOW_KEY_DTYPE), np.zeros(n, SL.FLOW_DTYPE), 0), None)
    for zeek in (False, True):
        t = FlowTracker(zeek=zeek)
        got = sum(len(r) for b in (rows, sync) for r in t.process(*b))
        got += sum(len(r) for r in t.process_finish())
        assert got > 0
print(sorted(m for m in sys.modules if m.startswith(("numba", "llvmlite"))))
"""


def test_live_row_builders_need_no_jit(aot_tree):
    """The live sensor's ring records (a DNS one included) and map-sync rows become engine
    rows and records with the AOT module alone, in batches of one record and more: warmup()
    exercises those signatures."""
    r = subprocess.run([sys.executable, "-c", LIVE_ROWS], cwd=aot_tree, capture_output=True,
                       text=True, env=_env(PYTHONPATH=str(aot_tree)), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "[]", r.stderr[-3000:]


def test_forced_jit(aot_tree):
    assert _mode(aot_tree) == ["aot"]
    assert _mode(aot_tree, FLOWSCOPE_JIT="1") == ["jit", "FLOWSCOPE_JIT is set"]
    assert _mode(aot_tree, FLOWSCOPE_JIT="0") == ["aot"]


def test_numba_settings_change_the_key(aot_tree):
    mode, reason = _mode(aot_tree, NUMBA_BOUNDSCHECK="1")
    assert mode == "jit" and "NUMBA_* settings" in reason


def test_stale_missing_or_broken_module_falls_back_to_the_jit(aot_tree, tmp_path):
    tree = tmp_path / "t"
    shutil.copytree(aot_tree, tree, symlinks=True)
    (so,) = (tree / "flowscope").glob("_aot.*")
    # a kernel module imported by the engine, not the engine's own file
    zeek = tree / "flowscope" / "_kernels" / "zeek.py"
    text = zeek.read_text()
    zeek.write_text(text + "\n# changed\n")
    mode, reason = _mode(tree)
    assert mode == "jit" and "other kernel sources" in reason
    layout = tree / "flowscope" / "layout.py"  # constants folded into the machine code
    zeek.write_text(text)
    assert _mode(tree) == ["aot"]
    ltext = layout.read_text()
    layout.write_text(ltext + "\n# changed\n")
    assert _mode(tree)[0] == "jit"
    layout.write_text(ltext)
    # the files deciding which signatures are exported (a new warm-up call, a record dtype)
    for f in (tree / "flowscope" / "warmup.py", tree / "flowscope" / "sensor" / "layout.py"):
        ftext = f.read_text()
        f.write_text(ftext + "\n# changed\n")
        assert _mode(tree)[0] == "jit", f
        f.write_text(ftext)
    assert _mode(tree) == ["aot"]
    so.write_bytes(b"not an ELF file")
    mode, reason = _mode(tree)
    assert mode == "jit" and "failed to import" in reason
    so.unlink()
    mode, reason = _mode(tree)
    assert mode == "jit" and "no compiled kernel module" in reason


def test_unexported_signature_runs_with_the_jit(aot_tree):
    """A call with argument types the module does not hold compiles that kernel (and the
    kernels it calls) with the JIT, and gives what a JIT process gives."""
    code = """
import sys
import numpy as np
import flowscope._kernels as K
from flowscope._kernels import engine
print(K.MODE, "numba" in sys.modules)
print(int(engine.key_hash(np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4),
                          np.uint64(2**63 + 5))))
print("numba" in sys.modules)
# a kernel using the prefetch intrinsic (a JitOnly object in an AOT process)
from flowscope.layout import ROW_DTYPE
rows = np.zeros(3, dtype=ROW_DTYPE)
rows["l3"] = 4
rows["proto"] = 17
rows["pflags"] = 1  # PF_PORTS
rows["src_lo"] = [7, 8, 9]
rows["dport"] = 53
ctl = np.zeros(engine.C_SIZE, dtype=np.int64)
table = np.zeros(1024, dtype=np.int32)
for j in range(3):
    engine._prefetch_entry(ctl, table, np.int64(1023), rows, np.int64(j), np.int64(0), False)
print(ctl[engine.C_PFQ:engine.C_PFQ + 4].tolist())
"""
    got = {}
    for mode, env in (("aot", {}), ("jit", {"FLOWSCOPE_JIT": "1"})):
        r = subprocess.run([sys.executable, "-c", code], cwd=aot_tree, capture_output=True,
                           text=True, env=_env(PYTHONPATH=str(aot_tree), **env), timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        got[mode] = r.stdout.split("\n")
    assert got["aot"][0] == "aot False" and got["aot"][2] == "True"
    assert got["jit"][0] == "jit True"
    assert got["aot"][1] == got["jit"][1]
    # three keyed rows: three table positions, the fourth entry untouched
    assert got["aot"][3] == got["jit"][3]
    pos = [int(v) for v in got["aot"][3].strip("[]").split(",")]
    assert all(0 <= v < 1024 for v in pos[:3]) and len(set(pos[:3])) == 3 and pos[3] == 0
