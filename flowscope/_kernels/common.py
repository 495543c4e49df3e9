"""The one njit spelling of flowscope's kernels, and small helpers they share.

Every kernel runs without numba's reference counting (``_nrt=False``): the
kernels only index arrays they are given and never allocate, and with NRT on,
every helper that contains a loop increfs and decrefs each array argument with
atomic calls on entry and exit (measured: ~50 ns of a ~60 ns packet).
``kernel`` is for functions called from Python or other kernels;
``inline_kernel`` for small helpers that are inlined into their callers.
When the package runs its ahead-of-time module (``flowscope._kernels.MODE ==
"aot"``) both wrap the function in an ``aot.AotKernel`` instead, and numba is
not imported.
"""

import numpy as np

from ..layout import (
    META_KIND_MASK, META_KIND_SHIFT, META_L3_SHIFT, META_PORT_A_SHIFT, META_PROTO_SHIFT,
    META_VLAN_HI_SHIFT, META_VLAN_LO_SHIFT,
)
from . import AOT, enable_jit

KERNEL_OPTIONS = dict(cache=True, nogil=True, _nrt=False)
INLINE_OPTIONS = dict(KERNEL_OPTIONS, inline="always")


def _prefetch_intrinsic():
    """``prefetch(a, i, j, write)``: hint the CPU to load the cache line of ``a[i, j]`` (a
    2-D array), or of byte ``j`` of ``a[i]`` (a 1-D one, such as a record array), ahead of
    use: LLVM's ``llvm.prefetch`` into every cache level, ``write`` a literal 0 or 1. It
    never faults and changes nothing: a stale or wrong index only wastes the hint.
    Compiled code only."""
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    @intrinsic
    def prefetch(typingctx, a, i, j, write):
        if not (isinstance(a, types.Array) and a.ndim in (1, 2)
                and isinstance(write, types.IntegerLiteral)):
            return None
        rw = write.literal_value

        def codegen(context, builder, sig, args):
            ary = context.make_array(sig.args[0])(context, builder, args[0])
            idx = [context.cast(builder, args[k], sig.args[k], types.intp) for k in (1, 2)]
            one_d = sig.args[0].ndim == 1
            ptr = cgutils.get_item_pointer(context, builder, sig.args[0], ary,
                                           idx[:1] if one_d else idx,
                                           wraparound=False, boundscheck=False)
            i8p = ir.IntType(8).as_pointer()
            ptr = builder.bitcast(ptr, i8p)
            if one_d:
                ptr = builder.gep(ptr, [idx[1]])
            i32 = ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                "llvm.prefetch.p0i8")
            builder.call(fn, [ptr, i32(rw), i32(3), i32(1)])
            return context.get_dummy_value()

        return types.void(a, i, j, write), codegen

    return prefetch


if AOT is not None:
    from .aot import JitOnly, decorator

    kernel = decorator(AOT, KERNEL_OPTIONS)
    inline_kernel = decorator(AOT, INLINE_OPTIONS)
    prefetch = JitOnly(_prefetch_intrinsic)
else:
    njit = enable_jit()
    kernel = njit(**KERNEL_OPTIONS)
    inline_kernel = njit(**INLINE_OPTIONS)
    prefetch = _prefetch_intrinsic()

# the key's metadata word (layout "flow keys"): shifts as uint64, so numba keeps words unsigned
KIND_SHIFT = np.uint64(META_KIND_SHIFT)
L3_SHIFT = np.uint64(META_L3_SHIFT)
PROTO_SHIFT = np.uint64(META_PROTO_SHIFT)
PORT_A_SHIFT = np.uint64(META_PORT_A_SHIFT)
VLAN_LO_SHIFT = np.uint64(META_VLAN_LO_SHIFT)
VLAN_HI_SHIFT = np.uint64(META_VLAN_HI_SHIFT)
_B8 = np.uint64(0xFF)
_B16 = np.uint64(0xFFFF)
_KIND = np.uint64(META_KIND_MASK)


@inline_kernel
def meta_vlan(vlan):
    """The metadata-word bits of a VLAN id (``flowscope.layout.meta_vlan``), uint64."""
    v = np.uint64(vlan)
    return ((v & _B8) << VLAN_LO_SHIFT) | (((v >> np.uint64(8)) & np.uint64(0xF))
                                           << VLAN_HI_SHIFT)


@inline_kernel
def unpack_meta(meta):
    """``(kind, l3, proto, port_a, port_b)`` as int64 from a uint64 metadata word.

    The kernel twin of ``flowscope.layout.unpack_meta``.
    """
    return (np.int64((meta >> KIND_SHIFT) & _KIND), np.int64((meta >> L3_SHIFT) & _B8),
            np.int64((meta >> PROTO_SHIFT) & _B8), np.int64((meta >> PORT_A_SHIFT) & _B16),
            np.int64(meta & _B16))
