"""Least privilege: ``flowscope live`` as ``nobody`` with only the systemd unit's capabilities,
and the one-line errors of :func:`flowscope.sensor.preflight.preflight`.

The root tests (skipped without root and BPF, failed under FLOWSCOPE_REQUIRE_BPF=1) run the
sensor under ``setpriv`` in a netns joined by a veth pair, with the environment the unit gives
it: no home directory, ``CACHE_DIRECTORY`` and ``NUMBA_CACHE_DIR`` in a directory owned by the
service user. The first of them compiles the numba kernels into that cache (about a minute).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bpf_helpers import require_bpf, sh, veth_netns
from flowscope.sensor import preflight as pf

REPO = Path(__file__).resolve().parents[1]
TRAFFIC = REPO / "scripts" / "live_traffic.py"
#: the unit's AmbientCapabilities=, as setpriv spells them
UNIT_CAPS = ",".join(
    "+" + c.removeprefix("CAP_").lower()
    for line in (REPO / "scripts" / "flowscope.service").read_text().splitlines()
    if line.startswith("AmbientCapabilities=") for c in line.split("=", 1)[1].split())
NOBODY_UID = 65534


# --- preflight without root ------------------------------------------------------------

def test_missing_caps_names_each_one():
    bit = lambda *caps: sum(1 << c for c in caps)  # noqa: E731
    assert pf.missing_caps(0) == ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"]
    assert pf.missing_caps(bit(pf.CAP_BPF, pf.CAP_PERFMON)) == ["CAP_NET_ADMIN"]
    assert pf.missing_caps(bit(pf.CAP_BPF, pf.CAP_NET_ADMIN)) == ["CAP_PERFMON"]
    assert pf.missing_caps(bit(pf.CAP_BPF, pf.CAP_NET_ADMIN, pf.CAP_PERFMON)) == []
    assert pf.missing_caps(bit(pf.CAP_SYS_ADMIN)) == []
    # promiscuous mode: a packet socket, which only CAP_NET_RAW opens
    full = bit(pf.CAP_BPF, pf.CAP_NET_ADMIN, pf.CAP_PERFMON)
    assert pf.missing_caps(full, promisc=True) == ["CAP_NET_RAW"]
    assert pf.missing_caps(bit(pf.CAP_SYS_ADMIN), promisc=True) == ["CAP_NET_RAW"]
    assert pf.missing_caps(full | bit(pf.CAP_NET_RAW), promisc=True) == []


def test_the_unit_grants_what_the_sensor_needs():
    caps = sum(1 << getattr(pf, "CAP_" + c[1:].upper()) for c in UNIT_CAPS.split(","))
    assert pf.missing_caps(caps, promisc=True) == []


def _problems(monkeypatch, ifnames, caps_ok=True) -> list[str]:
    if caps_ok:
        monkeypatch.setattr(pf, "effective_caps", lambda: (1 << 40) - 1)
    try:
        pf.preflight(ifnames)
    except pf.PreflightError as exc:
        assert str(exc) == "\n".join(exc.problems)
        return exc.problems
    return []


def test_no_such_interface(monkeypatch):
    got = _problems(monkeypatch, ["lo", "fs-no-such0"])
    assert [p for p in got if "interface" in p] == ["live: no interface named 'fs-no-such0'"]


def test_bcc_missing_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "bcc", None)  # import bcc -> ImportError
    got = _problems(monkeypatch, ["lo"])
    assert len([p for p in got if "BCC" in p]) == 1
    line = next(p for p in got if "BCC" in p)
    assert "python3-bpfcc" in line
    if sys.prefix != sys.base_prefix:
        assert "ln -s /usr/lib/python3/dist-packages/bcc" in line
        assert "--system-site-packages" in line


def test_headers_that_cannot_be_prepared(monkeypatch, tmp_path):
    from flowscope.sensor import kinclude

    if Path(f"/lib/modules/{os.uname().release}/build/include").is_dir():
        pytest.skip("the running kernel's headers are installed: nothing to prepare")
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    monkeypatch.setattr(kinclude, "USR_INCLUDE", tmp_path)  # no uapi headers there
    got = [p for p in _problems(monkeypatch, ["lo"]) if "kernel headers" in p]
    assert len(got) == 1
    assert got[0].startswith("live: kernel headers for BPF cannot be prepared: uapi headers missing")
    assert got[0].endswith("install linux-libc-dev")


def test_kinclude_tree_is_world_readable(tmp_path):
    from flowscope.sensor import kinclude

    out = kinclude.build(tmp_path / "k")
    assert (out / "include/uapi/linux/bpf.h").read_text() == ""
    assert (out / "include/linux/types.h").is_file()
    for p in [out, *out.rglob("*")]:
        if not p.is_symlink():
            want = 0o005 if p.is_dir() else 0o004
            assert p.stat().st_mode & want == want, p
    stamp = (out / kinclude.STAMP).stat().st_mtime_ns
    assert kinclude.build(tmp_path / "k") == out  # current: kept as is
    assert (out / kinclude.STAMP).stat().st_mtime_ns == stamp


# --- as nobody with the unit's capabilities (root) --------------------------------------

def _setpriv(caps: str) -> list[str]:
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
            f"--inh-caps=-all,{caps}" if caps else "--inh-caps=-all",
            f"--ambient-caps={caps}" if caps else "--bounding-set=-all"]


def _service_env(cache: Path) -> dict:
    """What the unit gives the process: no home, its cache directory, NUMBA_CACHE_DIR."""
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/nonexistent",
            "CACHE_DIRECTORY": str(cache), "NUMBA_CACHE_DIR": str(cache / "numba"),
            "PYTHONUNBUFFERED": "1", "LANG": "C.UTF-8"}


@pytest.fixture(scope="module")
def service_cache():
    """A cache directory owned by nobody, as systemd's CacheDirectory= makes it."""
    if os.geteuid() != 0:
        if os.environ.get("FLOWSCOPE_REQUIRE_BPF") == "1":
            pytest.fail("FLOWSCOPE_REQUIRE_BPF=1 but not root")
        pytest.skip("needs root (to switch to nobody)")
    d = Path(tempfile.mkdtemp(prefix="fs-priv-", dir="/tmp"))
    d.chmod(0o755)
    os.chown(d, NOBODY_UID, NOBODY_UID)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def topo():
    """A netns joined by a veth pair: (our ifname, peer v4, peer v6, netns name)."""
    require_bpf("ip", "setpriv", "ping")
    with veth_netns(f"fspr{os.getpid() % 10000}", 207, os.getpid() % 200 + 20) as t:
        yield t


def drive(ifname, v4, v6, ns):
    """The bounded traffic mix of scripts/live_traffic.py between us and the netns."""
    srv = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(TRAFFIC), "serve",
                            v4, v6], stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        sh(sys.executable, str(TRAFFIC), "drive", v4, v6, ifname, timeout=30)
        srv.wait(timeout=20)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait(5)


def run_live(cmd: list[str], env: dict, ifname: str, out: Path, err: Path, traffic,
             start_limit=300.0, stop_limit=180.0) -> int:
    """Start ``cmd live -i ifname``, wait for its startup line, run ``traffic()``, SIGINT it;
    return the exit status. The limits cover a first run that compiles the kernels."""
    with open(err, "w") as ef:
        proc = subprocess.Popen([*cmd, "live", "-i", ifname, "--format", "jsonl", "-o", str(out),
                                 "--duration", str(int(start_limit + 60))],
                                stdout=subprocess.DEVNULL, stderr=ef, env=env, cwd="/")
    try:
        end = time.monotonic() + start_limit
        while "Tracking flows on" not in err.read_text(errors="replace"):
            if proc.poll() is not None:
                raise AssertionError(f"exited {proc.returncode}: {err.read_text()}")
            if time.monotonic() > end:
                raise AssertionError(f"no startup line after {start_limit} s: {err.read_text()}")
            time.sleep(0.2)
        traffic()
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        return proc.wait(stop_limit)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def ended_tcp_fin(out: Path, peer: str) -> list[dict]:
    recs = [json.loads(ln) for ln in out.read_text().splitlines()]
    return [r for r in recs if r["event"] == "ended" and r["proto"] == "tcp"
            and peer in (r["src_ip"], r["dst_ip"]) and r["reason"] == "fin"]


def test_live_as_nobody_with_the_unit_capabilities(service_cache, topo):
    ifname, v4, v6, ns = topo
    out, err = service_cache / "live.jsonl", service_cache / "live.err"
    cmd = [*_setpriv(UNIT_CAPS), sys.executable, "-m", "flowscope"]
    status = run_live(cmd, _service_env(service_cache), ifname, out, err,
                      lambda: drive(ifname, v4, v6, ns))
    text = err.read_text()
    assert status == 0, text
    assert "Traceback" not in text, text
    assert "kernel drops not tracked" not in text, text  # the typed tracer loads too
    assert ended_tcp_fin(out, v4), out.read_text()
    assert out.stat().st_uid == NOBODY_UID
    # the include tree and the numba cache went to the service's cache directory; with the
    # ahead-of-time module serving every kernel, numba never ran and cached nothing
    assert (service_cache / "kinclude" / "include" / "uapi" / "linux").is_dir()
    from flowscope import _kernels as K

    nbi = list((service_cache / "numba").rglob("*.nbi"))
    assert (not nbi) if K.MODE == "aot" else nbi, (K.MODE, nbi)


def test_live_as_nobody_without_net_admin_is_one_line(service_cache):
    require_bpf("setpriv")
    cmd = [*_setpriv("+bpf,+perfmon"), sys.executable, "-m", "flowscope", "live", "-i", "lo",
           "--duration", "1"]
    r = subprocess.run(cmd, env=_service_env(service_cache), capture_output=True, text=True,
                       timeout=300, cwd="/")
    lines = [ln for ln in r.stderr.splitlines() if "compiling the packet engine" not in ln]
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and "CAP_NET_ADMIN" in lines[0], r.stderr


def test_live_as_nobody_without_net_raw_names_promisc(service_cache):
    """Promiscuous mode (on by default) holds a packet socket, which needs CAP_NET_RAW."""
    require_bpf("setpriv")
    cmd = [*_setpriv("+bpf,+net_admin,+perfmon"), sys.executable, "-m", "flowscope", "live",
           "-i", "lo", "--duration", "1"]
    r = subprocess.run(cmd, env=_service_env(service_cache), capture_output=True, text=True,
                       timeout=300, cwd="/")
    lines = [ln for ln in r.stderr.splitlines() if "compiling the packet engine" not in ln]
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and "missing capability CAP_NET_RAW" in lines[0], r.stderr
    assert "sensor.promisc: false" in lines[0]


PREFLIGHT = ("import sys\n"
             "from flowscope.sensor.preflight import preflight, PreflightError\n"
             "try:\n    preflight(['lo'])\n"
             "except PreflightError as e:\n    print('\\n'.join(e.problems)); sys.exit(2)\n")


@pytest.mark.parametrize("who", ["nobody", "root"])
def test_preflight_without_net_admin(service_cache, who):
    """Root stripped of CAP_NET_ADMIN (and CAP_SYS_ADMIN, which would cover it) gets a line
    naming the capability instead of BCC's "Need super-user privileges" traceback."""
    require_bpf("setpriv")
    if who == "nobody":
        prefix = _setpriv("+bpf,+perfmon")
    else:
        prefix = ["setpriv", "--bounding-set=-net_admin,-sys_admin",
                  "--inh-caps=-net_admin,-sys_admin"]
    r = subprocess.run([*prefix, sys.executable, "-c", PREFLIGHT],
                       env=_service_env(service_cache), capture_output=True, text=True,
                       timeout=120, cwd="/")
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("live: missing capability CAP_NET_ADMIN"), lines
    assert "Traceback" not in r.stderr
