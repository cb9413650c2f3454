"""numpy's own BLAS, and the CPU's float environment, for compiled (numba) code.

Why numpy's BLAS and not numba's ``np.dot`` (which calls scipy's): the compiled update must
give the numbers the numpy engine gave, bit for bit, and a matrix product's last bits depend
on the BLAS build (kernels, blocking). numpy's wheels ship OpenBLAS; threadpoolctl names the
library numpy loaded, and its ``cblas_sgemm`` / ``cblas_sdot`` are registered with LLVM under
fixed names, so compiled code refers to them by name and stays cacheable on disk
(``cache=True``): a ctypes pointer baked into the code would make every process recompile.

:func:`set_mxcsr` reads and sets the SSE control register from compiled code: Adam runs with
subnormals flushed to zero, as ``torch.set_flush_denormal(True)`` did around torch's kernel
(the moments of units whose gradient stays 0 decay into subnormals, which are slow in hardware).
"""

from __future__ import annotations

import ctypes

from llvmlite import binding as llvm
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

#: ``CBLAS_ORDER`` / ``CBLAS_TRANSPOSE`` values of the C interface
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
#: MXCSR bits: flush-to-zero (results) and denormals-are-zero (inputs), as torch sets them
FTZ_DAZ = 0x8040

#: Symbol names the compiled code calls; bound to the library below at import.
SGEMM, SDOT = "sweeper_cblas_sgemm", "sweeper_cblas_sdot"


def numpy_blas_path() -> str:
    """The BLAS library numpy itself loaded (threadpoolctl reads it from the process)."""
    import numpy  # noqa: F401  (loads numpy's BLAS before threadpoolctl looks)
    from threadpoolctl import threadpool_info

    for info in threadpool_info():
        if info["user_api"] == "blas" and "numpy" in info["filepath"]:
            return info["filepath"]
    for info in threadpool_info():
        if info["user_api"] == "blas":
            return info["filepath"]
    raise ImportError("sweeper's compiled update needs numpy built with a CBLAS (e.g. OpenBLAS)")


def _bind() -> type:
    """Register numpy's ``cblas_sgemm`` and ``cblas_sdot`` as :data:`SGEMM` / :data:`SDOT`;
    returns the integer type of their sizes (64-bit for OpenBLAS's ``64_`` builds)."""
    lib = ctypes.CDLL(numpy_blas_path())
    candidates = (
        ("scipy_cblas_sgemm64_", "scipy_cblas_sdot64_", types.int64),
        ("cblas_sgemm64_", "cblas_sdot64_", types.int64),
        ("scipy_cblas_sgemm", "scipy_cblas_sdot", types.int32),
        ("cblas_sgemm", "cblas_sdot", types.int32),
    )
    for gemm, dot, int_type in candidates:
        if hasattr(lib, gemm) and hasattr(lib, dot):
            llvm.add_symbol(SGEMM, ctypes.cast(getattr(lib, gemm), ctypes.c_void_p).value)
            llvm.add_symbol(SDOT, ctypes.cast(getattr(lib, dot), ctypes.c_void_p).value)
            return int_type
    raise ImportError(f"no cblas_sgemm in numpy's BLAS ({numpy_blas_path()})")


BLAS_INT = _bind()
_i32, _f32, _ptr = types.int32, types.float32, types.intp
#: cblas_sgemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc); the
#: pointers are passed as integers (``array.ctypes.data``), as the ABI does
sgemm = types.ExternalFunction(
    SGEMM,
    types.void(
        _i32,
        _i32,
        _i32,
        BLAS_INT,
        BLAS_INT,
        BLAS_INT,
        _f32,
        _ptr,
        BLAS_INT,
        _ptr,
        BLAS_INT,
        _f32,
        _ptr,
        BLAS_INT,
    ),
)
#: cblas_sdot(n, x, incx, y, incy) -> float
sdot = types.ExternalFunction(SDOT, types.float32(BLAS_INT, _ptr, BLAS_INT, _ptr, BLAS_INT))


@intrinsic
def fma32(typingctx, a, b, c):
    """a * b + c rounded once (float32), as torch's vectorized Adam computes its lerp."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        f = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f], ir.FunctionType(f, [f, f, f]))
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def sqrt32(typingctx, x):
    """The float32 square root as one instruction (``llvm.sqrt.f32``: vectorizable, no errno
    branch), as torch's ``Vectorized<float>::sqrt``."""
    sig = types.float32(types.float32)

    def codegen(context, builder, signature, args):
        f = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.sqrt", [f], ir.FunctionType(f, [f]))
        return builder.call(fn, args)

    return sig, codegen


def _mxcsr_codegen(builder, value=None):
    """Emit ``stmxcsr`` (and with ``value``, ``ldmxcsr`` of it); returns the previous value."""
    i32, i8p = ir.IntType(32), ir.IntType(8).as_pointer()
    fnty = ir.FunctionType(ir.VoidType(), [i8p])
    slot = builder.alloca(i32)
    ptr = builder.bitcast(slot, i8p)
    builder.call(builder.module.declare_intrinsic("llvm.x86.sse.stmxcsr", fnty=fnty), [ptr])
    old = builder.load(slot)
    if value is not None:
        builder.store(value, slot)
        builder.call(builder.module.declare_intrinsic("llvm.x86.sse.ldmxcsr", fnty=fnty), [ptr])
    return old


@intrinsic
def get_mxcsr(typingctx):
    """The SSE control register (uint32)."""

    def codegen(context, builder, signature, args):
        return _mxcsr_codegen(builder)

    return types.uint32(), codegen


@intrinsic
def set_mxcsr(typingctx, value):
    """Set the SSE control register to ``value`` (uint32: keep the other bits, e.g.
    ``get_mxcsr() | FTZ_DAZ``); returns the previous value."""

    def codegen(context, builder, signature, args):
        return _mxcsr_codegen(builder, args[0])

    return types.uint32(types.uint32), codegen
