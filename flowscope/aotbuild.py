"""Build ``flowscope._aot``: every kernel compiled ahead of time into one extension module.

    python -m flowscope.aotbuild [--out-dir DIR] [--quiet]

Nothing here lists kernels or signatures: the build runs ``warmup()`` with numba's
JIT, then exports each signature the JIT compiled for each top-level kernel of
flowscope's kernel modules (``dispatcher.nopython_signatures``, compiled from
``dispatcher.py_func``) with numba's AOT compiler, ``numba.pycc``. A new kernel
or a changed argument list therefore needs no edit here, only a call in
``warmup()``; a call the module cannot serve falls back to the JIT at run time.
The module carries ``flowscope._kernels.aot_key()`` as an export named
``key_<hash>``; the loader uses it only when the hash matches. Needs a C
compiler (pycc compiles numba's helper C sources and links the module).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

MODULE = "_aot"


def _tokens(sig) -> list[str] | None:
    """``sig``'s argument types as ``aot`` tokens; None when one has no token."""
    from numba import types
    from numba.np import numpy_support

    from flowscope._kernels.aot import array_token, dtype_token

    out = []
    for t in sig.args:
        if isinstance(t, types.Literal):  # a callee specialised on a constant argument
            return None
        if isinstance(t, types.Array):
            out.append(array_token(numpy_support.as_dtype(t.dtype), t.ndim, t.layout,
                                   t.mutable))
        elif isinstance(t, (types.Integer, types.Float, types.Boolean)):
            out.append("S:" + dtype_token(numpy_support.as_dtype(t)))
        else:
            return None
    return out


def kernel_exports() -> list[tuple[str, object, object]]:
    """(export name, signature, Python function) for every signature the JIT compiled so far
    for a top-level kernel of a flowscope module."""
    from numba import types
    from numba.core.registry import CPUDispatcher

    from flowscope._kernels.aot import export_name

    out, seen = [], set()
    for modname in sorted(sys.modules):
        mod = sys.modules[modname]
        if not modname.startswith("flowscope.") or mod is None:
            continue
        for name, obj in sorted(vars(mod).items()):
            if not isinstance(obj, CPUDispatcher) or obj.py_func.__module__ != modname:
                continue
            qualname = f"{modname}.{obj.py_func.__qualname__}"
            for sig in obj.nopython_signatures:
                tokens = _tokens(sig)
                if tokens is None:
                    if any(isinstance(t, types.Literal) for t in sig.args):
                        continue
                    print(f"aotbuild: {qualname}{sig.args}: argument types not exported "
                          "(runs with the JIT)", file=sys.stderr)
                    continue
                ename = export_name(qualname, tokens)
                if ename not in seen:
                    seen.add(ename)
                    out.append((ename, sig, obj.py_func))
    return out


def _fresh_flags_per_export() -> None:
    """pycc compiles every export with one ``Flags`` object, which numba's pipeline mutates
    (it turns SSA off after a function), so the second export on is typed differently from
    the JIT and fails on code the JIT accepts. Give each export a copy of the first flags,
    with ``release_gil`` set as the kernels' ``nogil=True`` asks."""
    from numba.pycc import compiler

    orig = compiler.compile_extra
    if getattr(orig, "_flowscope", False):
        return
    pristine = []

    def compile_extra(typingctx, targetctx, func, args, return_type, flags, locals,
                      **kws):
        if not pristine:
            pristine.append(flags.copy())
        fresh = pristine[0].copy()
        fresh.release_gil = True
        return orig(typingctx, targetctx, func, args, return_type, fresh, locals, **kws)

    compile_extra._flowscope = True
    compiler.compile_extra = compile_extra


def build(out_dir: Path, quiet: bool = False) -> Path:
    """Compile the module into ``out_dir``; return its path."""
    import flowscope._kernels as K

    if K.MODE != "jit":
        raise RuntimeError("aotbuild must run with the JIT (FLOWSCOPE_JIT=1)")
    from numba.core.errors import NumbaPendingDeprecationWarning

    warnings.simplefilter("ignore", NumbaPendingDeprecationWarning)
    from numba.pycc import CC

    _fresh_flags_per_export()

    from flowscope.warmup import warmup

    t0 = time.perf_counter()
    warmup()
    exports = kernel_exports()
    cc = CC(MODULE)
    cc.output_dir = str(out_dir)
    cc.use_nrt = False  # the kernels never allocate (common.py: _nrt=False)
    cc.verbose = False
    key = K.aot_key()

    def _key():
        return 0

    cc.export("key_" + key[:32], "int64()")(_key)
    for ename, sig, py_func in exports:
        cc.export(ename, sig)(py_func)
    with tempfile.TemporaryDirectory() as tmp:
        old = os.getcwd()
        os.chdir(tmp)  # pycc leaves temporary objects in the working directory
        try:
            cc.compile()
        finally:
            os.chdir(old)
    path = out_dir / cc.output_file
    if not quiet:
        print(f"aotbuild: {len(exports)} kernel signatures -> {path} "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flowscope.aotbuild",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent,
                    help="where to write the module (default: the flowscope package)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    import flowscope._kernels as K

    if K.MODE != "jit":  # this process already runs an older module: build in a JIT process
        env = dict(os.environ, FLOWSCOPE_JIT="1")
        cmd = [sys.executable, "-m", "flowscope.aotbuild", *(sys.argv[1:] if argv is None
                                                             else argv)]
        os.execve(sys.executable, cmd, env)
    build(args.out_dir, args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
