"""Ahead-of-time kernels: call the compiled extension module without importing numba.

``flowscope.aotbuild`` compiles every kernel signature the JIT produced during
``warmup()`` into one extension module, ``flowscope._aot``. Each compiled
signature is exported under a name derived from the kernel's qualified name and
the types of its arguments (``export_name``); a second export, ``key_<hash>``,
carries the hash of what the machine code depends on (``flowscope._kernels.aot_key``).

In a process using that module, ``kernel`` and ``inline_kernel`` (``common.py``)
wrap each kernel function in an ``AotKernel``: a call looks the exported
function up by the types of its arguments, as numba's dispatcher would type
them; a contiguous array also matches a signature compiled for any layout (a
field view of a one-record batch is contiguous, of a longer one strided). A
call with types the module does not hold (a kernel or signature that
``warmup()`` does not exercise) compiles the kernel with numba's JIT, once, and
says so at debug level. This module imports nothing of numba.
"""

from __future__ import annotations

import hashlib
import itertools
import types

import numpy as np

#: Prefix of every exported kernel name in the extension module.
PREFIX = "k_"

_DTYPES: dict[np.dtype, str] = {}


def dtype_token(dt: np.dtype) -> str:
    """A short, exact name for a numpy dtype (structured dtypes by a hash of their layout)."""
    tok = _DTYPES.get(dt)
    if tok is None:
        if dt.fields is not None:
            tok = "R" + hashlib.sha1(repr(dt).encode()).hexdigest()[:12]
        else:
            tok = dt.str
        _DTYPES[dt] = tok
    return tok


def array_token(dt: np.dtype, ndim: int, layout: str, mutable: bool) -> str:
    return f"A{ndim}{layout}{'' if mutable else 'r'}:{dtype_token(dt)}"


_INT64 = "S:" + np.dtype(np.int64).str
_UINT64 = "S:" + np.dtype(np.uint64).str
_FLOAT64 = "S:" + np.dtype(np.float64).str
_BOOL = "S:" + np.dtype(np.bool_).str


def value_token(v) -> str | None:
    """The type numba's dispatcher gives ``v``, as a token; None for types not exported."""
    if isinstance(v, np.ndarray):
        f = v.flags
        layout = "C" if f.c_contiguous else "F" if f.f_contiguous else "A"
        return array_token(v.dtype, v.ndim, layout, f.writeable)
    if isinstance(v, bool):
        return _BOOL
    if isinstance(v, int):
        return _INT64 if -(1 << 63) <= v < (1 << 63) else _UINT64
    if isinstance(v, float):
        return _FLOAT64
    if isinstance(v, np.generic) and v.dtype.fields is None and v.dtype.kind in "biuf":
        return "S:" + v.dtype.str
    return None


def _widened(tokens: tuple):
    """``tokens``, then every variant with some contiguous (C or F) array layouts widened to
    any layout (A), fewest first: code compiled for layout A takes any array, and a field
    view of a one-record batch is contiguous where a longer batch's is strided."""
    yield tokens
    at = [i for i, t in enumerate(tokens) if t[0] == "A" and t[2] in "CF"]
    for k in range(1, len(at) + 1):
        for pick in itertools.combinations(at, k):
            yield tuple(t[:2] + "A" + t[3:] if i in pick else t for i, t in enumerate(tokens))


def export_name(qualname: str, tokens) -> str:
    """The extension module's name for ``qualname`` compiled for argument ``tokens``."""
    text = qualname + "(" + ",".join(tokens) + ")"
    return PREFIX + hashlib.sha1(text.encode()).hexdigest()[:24]


class JitOnly:
    """A numba object only compiled code calls (an intrinsic), made by ``build`` on first
    JIT use: a kernel the extension module lacks is compiled with it (``AotKernel.jit``)."""

    __slots__ = ("_build", "_obj")

    def __init__(self, build):
        self._build = build
        self._obj = None

    def jit(self):
        if self._obj is None:
            self._obj = self._build()
        return self._obj


class AotKernel:
    """A kernel function served by the extension module, with the JIT as the fallback."""

    __slots__ = ("py_func", "options", "qualname", "_module", "_by_types", "_jit",
                 "__name__", "__wrapped__")

    def __init__(self, py_func, module, options: dict):
        self.py_func = py_func
        self.options = options
        self.qualname = f"{py_func.__module__}.{py_func.__qualname__}"
        self._module = module
        self._by_types: dict[tuple, object] = {}
        self._jit = None
        self.__name__ = py_func.__name__
        self.__wrapped__ = py_func

    def __call__(self, *args):
        tokens = tuple(value_token(a) for a in args)
        fn = self._by_types.get(tokens)
        if fn is None:
            fn = self._resolve(tokens)
        return fn(*args)

    def _resolve(self, tokens: tuple):
        fn = None
        if None not in tokens:
            for relaxed in _widened(tokens):
                fn = getattr(self._module, export_name(self.qualname, relaxed), None)
                if fn is not None:
                    break
        if fn is None:
            import logging

            logging.getLogger("flowscope.kernels").debug(
                "flowscope: %s%s is not in the compiled kernel module; using the JIT",
                self.qualname, tokens)
            fn = self.jit()
        self._by_types[tokens] = fn
        return fn

    def jit(self):
        """This kernel as a numba dispatcher, its global kernels replaced by theirs (imports
        numba; compiles, or loads from numba's cache, on first call)."""
        if self._jit is None:
            from . import enable_jit

            njit = enable_jit()
            f = self.py_func
            g = dict(f.__globals__)
            for name in f.__code__.co_names:
                v = g.get(name)
                if isinstance(v, (AotKernel, JitOnly)):
                    g[name] = v.jit()
            clone = types.FunctionType(f.__code__, g, f.__name__, f.__defaults__,
                                       f.__closure__)
            clone.__qualname__ = f.__qualname__
            clone.__module__ = f.__module__
            clone.__doc__ = f.__doc__
            self._jit = njit(**self.options)(clone)
        return self._jit


def decorator(module, options: dict):
    """A replacement for ``numba.njit(**options)`` serving kernels from ``module``."""

    def wrap(py_func):
        return AotKernel(py_func, module, options)

    return wrap
