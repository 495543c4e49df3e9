"""The built wheel, installed into a fresh virtualenv: ``flowscope pcap`` and (root) ``flowscope live``.

One wheel and one venv per module (building and installing take ~30 s, and the first run in
the venv compiles the numba kernels). Dependencies come from pip's configured index or
cache; BCC is linked in from the distro as scripts/setup.sh does. The runs happen outside
the repository with their own XDG cache, so nothing from the checkout is used.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bpf_helpers import require_bpf
from flowscope._kernels import COMPILE_SECONDS
from test_privileges import drive, ended_tcp_fin, run_live, topo  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[1]
PCAP = REPO / "tests" / "data" / "zeek__http__get.pcap"
DISTRO_BCC = Path("/usr/lib/python3/dist-packages/bcc")


def _run(cmd, timeout=600, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                       **kw)
    assert r.returncode == 0, f"{cmd}: {r.stdout}{r.stderr}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, REPO])
    (whl,) = out.glob("flowscope-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    """(venv python, environment for its runs, work directory) with the wheel installed."""
    root = tmp_path_factory.mktemp("venv")
    py = root / "venv" / "bin" / "python"
    _run([sys.executable, "-m", "venv", root / "venv"])
    site = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
                ).stdout.strip()
    if DISTRO_BCC.is_dir():
        os.symlink(DISTRO_BCC, Path(site) / "bcc")
    _run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel], timeout=900)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NUMBA_", "PYTHON", "VIRTUAL_ENV", "BCC_"))
           and k != "CACHE_DIRECTORY"}
    env["XDG_CACHE_HOME"] = str(root / "xdg")
    work = root / "work"
    work.mkdir()
    return py, env, work, Path(site)


AOT_CHECK = """
import sys
from flowscope.cli import main
import flowscope._kernels as K
main(["pcap", "--json", "-o", "/dev/null", sys.argv[1]])
print(K.MODE, *sorted(m for m in sys.modules if m.split(".")[0] in ("numba", "llvmlite")))
"""


def aot_built(site: Path) -> bool:
    """Whether the installed wheel holds the ahead-of-time kernel module."""
    return bool(list((site / "flowscope").glob("_aot.*")))


def test_wheel_holds_the_aot_module_where_a_compiler_exists(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    aot = [n for n in names if n.startswith("flowscope/_aot.")]
    if shutil.which("cc") is None:
        pytest.skip("no C compiler: the wheel is built without the AOT module")
    assert len(aot) == 1 and aot[0].endswith(".so"), aot
    assert not wheel.name.endswith("-none-any.whl"), wheel.name  # a platform wheel


def test_wheel_holds_the_bpf_sources_and_the_header_recipe(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in (REPO / "bpf").iterdir():
        assert f"flowscope/bpf/{f.name}" in names
    assert "flowscope/sensor/kinclude.py" in names
    assert "flowscope/sensor/preflight.py" in names


def test_pcap_from_the_installed_wheel(venv):
    py, env, work, site = venv
    where = _run([py, "-c", "import flowscope.sensor.loader as l, flowscope as f; "
                  "print(f.__file__); print(l.BPF_DIR)"], env=env, cwd=work).stdout.split()
    assert all(w.startswith(str(site)) for w in where), where
    flowscope = py.parent / "flowscope"
    r = _run([flowscope, "pcap", "--json", PCAP], env=env, cwd=work)
    if aot_built(site):
        # the kernels come compiled: nothing is compiled, numba is not even imported
        assert r.stderr == "", r.stderr
        mods = _run([py, "-c", AOT_CHECK, PCAP], env=env, cwd=work).stdout.split()
        assert mods == ["aot"], mods
    else:
        # a fresh install compiles: one line says so, and nothing else is on stderr
        assert r.stderr.splitlines() == [
            "flowscope: compiling the packet engine (first run after install or upgrade, "
            f"about {COMPILE_SECONDS} s)..."], r.stderr
    got = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert any(g["event"] == "ended" and g["proto"] == "tcp" for g in got)
    want = _run([sys.executable, "-m", "flowscope", "pcap", "--json", PCAP], cwd=REPO).stdout
    assert r.stdout == want
    again = _run([flowscope, "pcap", "--json", PCAP], env=env, cwd=work)
    assert "compiling" not in again.stderr  # the first run cached the kernels (or AOT)
    # the JIT is still there as the fallback, and gives the same records
    jit = _run([flowscope, "pcap", "--json", PCAP], env=dict(env, FLOWSCOPE_JIT="1"), cwd=work)
    assert jit.stdout == want


def test_bcc_hint_names_this_venv(venv):
    py, env, work, site = venv
    code = ("import sys; sys.modules['bcc'] = None\n"
            "from flowscope.sensor.preflight import preflight, PreflightError\n"
            "try:\n    preflight([])\n"
            "except PreflightError as e:\n    print('\\n'.join(e.problems))\n")
    out = _run([py, "-c", code], env=env, cwd=work).stdout
    (line,) = [ln for ln in out.splitlines() if "BCC" in ln]
    assert "python3-bpfcc" in line and f"{site}/bcc" in line


def test_live_from_the_installed_wheel(venv, topo, tmp_path):
    require_bpf("setpriv")
    if not (venv[3] / "bcc").exists():
        pytest.skip("no distro BCC to link into the venv")
    py, env, work, site = venv
    ifname, v4, v6, ns = topo
    out, err = tmp_path / "live.jsonl", tmp_path / "live.err"
    status = run_live([py.parent / "flowscope"], env, ifname, out, err,
                      lambda: drive(ifname, v4, v6, ns))
    text = err.read_text()
    assert status == 0 and "Traceback" not in text, text
    assert ended_tcp_fin(out, v4), out.read_text()
    # the include tree went to the user's cache, not into site-packages
    assert (Path(env["XDG_CACHE_HOME"]) / "flowscope" / "kinclude" / "include").is_dir()
    assert not list(site.rglob("kinclude/include"))
    shutil.rmtree(Path(env["XDG_CACHE_HOME"]), ignore_errors=True)
