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
import platform

import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import carray, njit, types
from numba.extending import intrinsic

#: ``CBLAS_ORDER`` / ``CBLAS_TRANSPOSE`` values of the C interface
ROW_MAJOR, COL_MAJOR, NO_TRANS, TRANS = 101, 102, 111, 112
#: MXCSR bits: flush-to-zero (results) and denormals-are-zero (inputs), as torch sets them
FTZ_DAZ = 0x8040

#: Symbol names the compiled code calls; bound to the library below at import.
SGEMM, SGEMV, SDOT = "sweeper_cblas_sgemm", "sweeper_cblas_sgemv", "sweeper_cblas_sdot"


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
    """Register numpy's ``cblas_sgemm``, ``cblas_sgemv`` and ``cblas_sdot`` as :data:`SGEMM`,
    :data:`SGEMV`, :data:`SDOT`; returns the integer type of their sizes (64-bit for
    OpenBLAS's ``64_`` builds)."""
    lib = ctypes.CDLL(numpy_blas_path())
    candidates = (
        ("scipy_cblas_", "64_", types.int64),
        ("cblas_", "64_", types.int64),
        ("scipy_cblas_", "", types.int32),
        ("cblas_", "", types.int32),
    )
    for prefix, suffix, int_type in candidates:
        names = [f"{prefix}{name}{suffix}" for name in ("sgemm", "sgemv", "sdot")]
        if all(hasattr(lib, name) for name in names):
            for symbol, name in zip((SGEMM, SGEMV, SDOT), names, strict=True):
                llvm.add_symbol(symbol, ctypes.cast(getattr(lib, name), ctypes.c_void_p).value)
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
#: cblas_sgemv(order, trans, M, N, alpha, A, lda, X, incx, beta, Y, incy)
sgemv = types.ExternalFunction(
    SGEMV,
    types.void(
        _i32, _i32, BLAS_INT, BLAS_INT, _f32, _ptr, BLAS_INT, _ptr, BLAS_INT, _f32, _ptr, BLAS_INT
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


#: The SSE control register exists on x86-64 only; elsewhere reading it gives 0 and setting it
#: does nothing (Adam then keeps subnormals, as torch's kernel does on those CPUs' defaults).
HAS_MXCSR = platform.machine().lower() in ("x86_64", "amd64")


def _mxcsr_codegen(builder, value=None):
    """Emit ``stmxcsr`` (and with ``value``, ``ldmxcsr`` of it); returns the previous value."""
    if not HAS_MXCSR:
        return ir.Constant(ir.IntType(32), 0)
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


@intrinsic
def _float_pointer(typingctx, address):
    """An integer address as a ``float32*`` (for :func:`numba.carray`)."""
    sig = types.CPointer(types.float32)(types.intp)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], ir.FloatType().as_pointer())

    return sig, codegen


@njit(cache=True, error_model="numpy")
def _blasable(rows_stride, cols_stride, cols):
    """numpy's ``is_blasable2d`` in elements: unit stride along the columns, and rows at
    least ``cols`` apart."""
    return cols_stride == 1 and rows_stride >= cols


@njit(cache=True, error_model="numpy")
def _gemv(a, a_rs, a_cs, x, x_s, y, y_s, m, n):
    """numpy's ``gemv``: y (m) = A (m x n) @ x (n)."""
    if _blasable(a_rs, a_cs, n):
        order, lda = COL_MAJOR, a_rs
    else:
        order, lda = ROW_MAJOR, a_cs
    sgemv(order, TRANS, n, m, np.float32(1.0), a, lda, x, x_s, np.float32(0.0), y, y_s)


@njit(cache=True, error_model="numpy")
def matmul(a, a_rs, a_cs, b, b_rs, b_cs, c, c_rs, c_cs, m, n, p):
    """C (m x p) = A (m x n) @ B (n x p), float32, as ``np.matmul`` computes one product:
    the same BLAS routine (gemm, gemv or dot), with the same transposes, or numpy's own
    loop where it uses no BLAS. ``a``, ``b``, ``c`` are addresses; strides in elements
    (rows, columns). Whatever the batch size, the last bits are numpy's."""
    if m == 1 or n == 1 or p == 1:
        if m == 1 and p == 1:
            out = carray(_float_pointer(c), 1)
            out[0] = sdot(n, a, a_cs, b, b_rs)
            return
        a_ok = _blasable(a_rs, a_cs, n) or _blasable(a_cs, a_rs, m)
        b_ok = _blasable(b_rs, b_cs, p) or _blasable(b_cs, b_rs, n)
        if not (n == 1 and (p == 1 or m == 1)):
            if m == 1 and b_ok and _blasable(a_cs, 1, 1):  # vector @ matrix
                _gemv(b, b_cs, b_rs, a, a_cs, c, c_cs, p, n)
                return
            if p == 1 and a_ok and _blasable(b_rs, 1, 1):  # matrix @ vector
                _gemv(a, a_rs, a_cs, b, b_rs, c, c_rs, m, n)
                return
    elif (
        (_blasable(a_rs, a_cs, n) or _blasable(a_cs, a_rs, m))
        and (_blasable(b_rs, b_cs, p) or _blasable(b_cs, b_rs, n))
        and _blasable(c_rs, c_cs, p)
    ):
        if _blasable(a_rs, a_cs, n):
            trans_a, lda = NO_TRANS, a_rs
        else:
            trans_a, lda = TRANS, a_cs
        if _blasable(b_rs, b_cs, p):
            trans_b, ldb = NO_TRANS, b_rs
        else:
            trans_b, ldb = TRANS, b_cs
        sgemm(
            ROW_MAJOR,
            trans_a,
            trans_b,
            m,
            p,
            n,
            np.float32(1.0),
            a,
            lda,
            b,
            ldb,
            np.float32(0.0),
            c,
            c_rs,
        )
        return
    # numpy's loop without BLAS (e.g. a column times a row): each sum from 0, in order
    a_v = carray(_float_pointer(a), (m - 1) * a_rs + (n - 1) * a_cs + 1)
    b_v = carray(_float_pointer(b), (n - 1) * b_rs + (p - 1) * b_cs + 1)
    c_v = carray(_float_pointer(c), (m - 1) * c_rs + (p - 1) * c_cs + 1)
    for i in range(m):
        for j in range(p):
            total = np.float32(0.0)
            for k in range(n):
                total += a_v[i * a_rs + k * a_cs] * b_v[k * b_rs + j * b_cs]
            c_v[i * c_rs + j * c_cs] = total
