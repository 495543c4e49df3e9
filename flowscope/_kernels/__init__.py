"""numba kernels: frame parsing, capture-file walking and the flow engine (no I/O, no Python objects).

Importing this package first settles where numba caches flowscope's compiled
kernels, and drops that cache when it could be stale:

- Where: ``NUMBA_CACHE_DIR`` when set and writable; else the package's own
  ``__pycache__`` directories when writable (a user's venv, a checkout); else
  ``$CACHE_DIRECTORY/numba`` (systemd's ``CacheDirectory=``),
  ``$XDG_CACHE_HOME/flowscope/numba`` or ``~/.cache/flowscope/numba``, or
  ``/var/cache/flowscope/numba``, the first writable one (exported as
  ``NUMBA_CACHE_DIR``). When nothing is writable (no home, read-only system)
  the kernels are compiled in memory on every run instead of failing.
- When: numba keys a cached kernel on its own source file only. The engine
  inlines kernels from other files and folds ``flowscope/layout.py``'s
  constants into machine code, and numba ignores flags such as
  ``NUMBA_BOUNDSCHECK`` and ``NUMBA_OPT`` when loading. So a stamp beside the
  cache records a hash of every kernel source, the ``NUMBA_*`` settings, the
  numba, llvmlite, numpy and Python versions and the CPU name; when it differs,
  every cached flowscope kernel is deleted before any is loaded.

When a kernel really has to be compiled (numba's ``numba:compile`` event, which
a cache hit does not raise) in the ``flowscope`` command, one line on stderr says
so, once per process; a library caller gets no output (``ANNOUNCE`` overrides).

Ahead-of-time kernels: when the extension module ``flowscope._aot`` (built by
``python -m flowscope.aotbuild``; ``scripts/setup.sh`` and the wheel build do it)
imports and carries the hash ``aot_key()`` gives for the kernel sources and
settings of this process, the kernels run from it and numba is never imported
(``MODE == "aot"``). When the module is missing, fails to import or carries
another hash, or ``FLOWSCOPE_JIT=1`` is set, numba compiles the kernels as above
(``MODE == "jit"``); the reason goes to the ``flowscope.kernels`` logger at
debug level, and ``flowscope warmup`` prints it.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import sys
import tempfile
from pathlib import Path

# Paths as numba sees them (abspath of the module file, symlinks not resolved): its cache
# subdirectories are named after them.
_HERE = os.path.dirname(os.path.abspath(__file__))
_PKG = os.path.dirname(_HERE)

STAMP = "flowscope-kernels.key"
COMPILE_SECONDS = 40  # a cold compile of every kernel on a busy 2-vCPU machine (17 s CPU)

#: NUMBA_* variables that do not change generated code.
_IGNORED_ENV = {"NUMBA_CACHE_DIR", "NUMBA_DEBUG_CACHE", "NUMBA_NUM_THREADS",
                "NUMBA_DISABLE_PERFORMANCE_WARNINGS", "NUMBA_COLOR_SCHEME",
                "NUMBA_HIGHLIGHT_DUMPS", "NUMBA_SHOW_HELP", "NUMBA_FULL_TRACEBACKS"}
_KERNEL_RE = re.compile(rb"^\s*@(?:numba\.)?(?:njit|jit|cfunc|vectorize)\b", re.M)

#: "aot" (kernels from the extension module) or "jit" (numba). Set on import.
MODE: str = ""
#: The extension module when MODE == "aot".
AOT = None
#: Why the JIT runs (when it does): a short phrase for the debug log and the benchmarks.
JIT_REASON: str = ""

#: Where the kernels are cached: "pycache", a directory path, or "memory". Set on import.
CACHE_DIR: str = ""
#: Print the compile line: True, False, or None = only in the ``flowscope`` command.
ANNOUNCE: bool | None = None


#: Files that decide which kernel signatures the ahead-of-time module exports (warmup()'s
#: calls, and the record dtypes of the live sensor's ring and map rows): part of its key, so
#: that a module built before a change in them is not taken for current.
AOT_SIGNATURE_SOURCES = ("warmup.py", os.path.join("sensor", "layout.py"))


def kernel_sources() -> list[str]:
    """Files whose change can make a cached kernel stale: every module of this package,
    ``flowscope/layout.py`` and any other flowscope module defining a numba kernel."""
    out = sorted(os.path.join(_HERE, n) for n in os.listdir(_HERE) if n.endswith(".py"))
    out.append(os.path.join(_PKG, "layout.py"))
    for d, dirs, names in os.walk(_PKG):
        dirs[:] = sorted(x for x in dirs if x not in ("__pycache__", "_kernels", "bpf"))
        for n in sorted(names):
            p = os.path.join(d, n)
            if n.endswith(".py") and p not in out:
                try:
                    with open(p, "rb") as f:
                        if _KERNEL_RE.search(f.read()):
                            out.append(p)
                except OSError:
                    pass
    return out


def _hash_sources(h, sources: list[str] | None) -> None:
    """Add every kernel source (path and bytes) and the ``NUMBA_*`` settings to hash ``h``."""
    for p in kernel_sources() if sources is None else sources:
        h.update(os.path.relpath(p, _PKG).encode() + b"\0")
        with open(p, "rb") as f:
            h.update(f.read())
    for k in sorted(os.environ):
        if k.startswith("NUMBA_") and k not in _IGNORED_ENV:
            h.update(f"{k}={os.environ[k]}\0".encode())


def cache_key(sources: list[str] | None = None) -> str:
    """Hash of what a compiled kernel depends on beyond numba's own cache key."""
    import llvmlite
    import numba
    import numpy

    h = hashlib.sha256()
    _hash_sources(h, sources)
    try:
        from llvmlite import binding

        cpu = binding.get_host_cpu_name()
    except Exception:  # noqa: BLE001 - the name only refines the key
        cpu = "?"
    h.update(f"numba {numba.__version__} llvmlite {llvmlite.__version__} numpy "
             f"{numpy.__version__} python {sys.version} cpu {cpu}".encode())
    return h.hexdigest()


def aot_key(sources: list[str] | None = None) -> str:
    """Hash of what ahead-of-time machine code depends on: every kernel source (the kernels
    call and inline each other across modules and fold ``flowscope/layout.py``'s constants),
    the files deciding which signatures are exported (``AOT_SIGNATURE_SOURCES``),
    the ``NUMBA_*`` settings (``NUMBA_BOUNDSCHECK`` changes the code), numpy's and Python's
    versions. Needs neither numba nor llvmlite."""
    import numpy

    h = hashlib.sha256(b"flowscope-aot-1\0")
    _hash_sources(h, sources)
    if sources is None:  # which signatures the module exports: the ones warmup() calls
        _hash_sources(h, [os.path.join(_PKG, n) for n in AOT_SIGNATURE_SOURCES])
    h.update(f"numpy {numpy.__version__} python {sys.version}".encode())
    return h.hexdigest()


def _load_aot():
    """The extension module when it may be used, else None (the reason in JIT_REASON)."""
    global JIT_REASON
    if os.environ.get("FLOWSCOPE_JIT", "") not in ("", "0"):
        JIT_REASON = "FLOWSCOPE_JIT is set"
        return None
    try:
        mod = importlib.import_module("flowscope._aot")
    except ModuleNotFoundError:
        JIT_REASON = "no compiled kernel module (flowscope._aot)"
        return None
    except Exception as e:  # noqa: BLE001 - a broken module must not stop the JIT
        JIT_REASON = f"the compiled kernel module failed to import ({type(e).__name__}: {e})"
        return None
    if not hasattr(mod, "key_" + aot_key()[:32]):
        JIT_REASON = ("the compiled kernel module was built from other kernel sources or "
                      "NUMBA_* settings")
        return None
    return mod


def enable_jit():
    """Set numba's cache up (once) and return ``numba.njit``; the JIT path's entry point."""
    global CACHE_DIR
    if not CACHE_DIR:
        _guard_numba_cache()
    from numba import njit

    return njit


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def _kernel_dirs(sources: list[str]) -> list[str]:
    """Directories holding kernels (numba caches per source directory)."""
    return sorted({os.path.dirname(p) for p in sources} - {_PKG} | {_HERE})


def _cache_subdir(root: str, src_dir: str) -> str:
    """numba's cache directory for modules in ``src_dir`` (see its
    ``_CacheLocator.get_suitable_cache_subpath``); root "pycache" = in-tree."""
    if root == "pycache":
        return os.path.join(src_dir, "__pycache__")
    tag = hashlib.sha1(src_dir.encode()).hexdigest()
    return os.path.join(root, f"{os.path.basename(src_dir)}_{tag}")


def _choose(dirs: list[str]) -> str:
    """The cache location (see the module docstring); "memory" when none is writable."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env and _writable(env):
        return env
    if all(_writable(os.path.join(d, "__pycache__")) for d in dirs):
        if env:  # set but unusable: let numba use the package directories
            del os.environ["NUMBA_CACHE_DIR"]
        return "pycache"
    roots = []
    if os.environ.get("CACHE_DIRECTORY"):
        roots.append(os.environ["CACHE_DIRECTORY"].split(":")[0])
    xdg, home = os.environ.get("XDG_CACHE_HOME", ""), os.environ.get("HOME", "")
    if os.path.isabs(xdg):
        roots.append(os.path.join(xdg, "flowscope"))
    elif os.path.isabs(home) and home != "/":
        roots.append(os.path.join(home, ".cache", "flowscope"))
    roots.append("/var/cache/flowscope")
    for r in roots:
        path = os.path.join(r, "numba")
        if _writable(path):
            os.environ["NUMBA_CACHE_DIR"] = path
            return path
    os.environ.pop("NUMBA_CACHE_DIR", None)
    return "memory"


def _drop_stale(where: str, sources: list[str]) -> None:
    """Delete every cached flowscope kernel when the stamp differs from the current key."""
    stamp = os.path.join(_cache_subdir(where, _HERE), STAMP)
    want = cache_key(sources)
    try:
        with open(stamp) as f:
            if f.read() == want:
                return
    except OSError:
        pass
    try:
        for d in _kernel_dirs(sources):
            sub = _cache_subdir(where, d)
            for p in Path(sub).glob("*.nb[ic]"):
                p.unlink(missing_ok=True)
        os.makedirs(os.path.dirname(stamp), exist_ok=True)
        tmp = f"{stamp}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(want)
        os.replace(tmp, stamp)
    except OSError:
        pass  # another process is doing the same; numba recompiles what it cannot load


def _compile_in_memory() -> None:
    """No writable cache anywhere: flowscope's ``cache=True`` kernels skip numba's cache
    (which would otherwise fail with "no locator available")."""
    from numba.core.dispatcher import Dispatcher

    enable = Dispatcher.enable_caching
    if getattr(enable, "_flowscope", False):
        return

    def enable_caching(self):
        if getattr(self.py_func, "__module__", "").startswith("flowscope."):
            return  # keep the dispatcher's NullCache
        enable(self)

    enable_caching._flowscope = True
    Dispatcher.enable_caching = enable_caching


def _in_command() -> bool:
    """Whether this process is the ``flowscope`` command (console script or ``-m flowscope``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return (getattr(spec, "name", "") == "flowscope.__main__"
            or os.path.basename(sys.argv[0] if sys.argv else "") == "flowscope")


def _announce_compiles(where: str) -> None:
    """Print one line on stderr at the first compile of a flowscope kernel."""
    from numba.core import event

    if where == "memory":
        msg = (f"flowscope: compiling the packet engine (about {COMPILE_SECONDS} s; no writable "
               "cache directory, so every run compiles: set NUMBA_CACHE_DIR)...")
    else:
        msg = (f"flowscope: compiling the packet engine (first run after install or upgrade, "
               f"about {COMPILE_SECONDS} s)...")

    class _Announce(event.Listener):
        done = False

        def on_start(self, ev):
            if self.done:
                return
            disp = (ev.data or {}).get("dispatcher")
            if getattr(getattr(disp, "py_func", None), "__module__", "").startswith("flowscope."):
                type(self).done = True
                if ANNOUNCE or (ANNOUNCE is None and _in_command()):
                    print(msg, file=sys.stderr, flush=True)

        def on_end(self, ev):
            pass

    event.register("numba:compile", _Announce())


def _guard_numba_cache() -> None:
    global CACHE_DIR
    sources = kernel_sources()
    CACHE_DIR = _choose(_kernel_dirs(sources))
    import numba.core.config

    numba.core.config.reload_config()  # numba may have read NUMBA_CACHE_DIR already
    if CACHE_DIR == "memory":
        _compile_in_memory()
    else:
        _drop_stale(CACHE_DIR, sources)
    _announce_compiles(CACHE_DIR)


AOT = _load_aot()
if AOT is not None:
    MODE = "aot"
else:
    MODE = "jit"
    import logging

    logging.getLogger("flowscope.kernels").debug("flowscope: kernels compiled by numba's JIT: %s",
                                                 JIT_REASON)
    _guard_numba_cache()
