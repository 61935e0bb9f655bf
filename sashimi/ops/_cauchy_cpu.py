"""The fused C++ Cauchy product for CPU tensors (sashimi/csrc/cauchy_cpu.cpp), built on first use.

Canonical shapes as in :mod:`sashimi.ops._cauchy_torch`: ``v`` (G, M, N), ``z`` (L,), ``w`` (G, N),
complex64 or complex128. Forward and backward are single passes that never materialise a
Cauchy block: about 10x less time than the PyTorch backend on the S4 layers' shapes. The
gradient with respect to ``z`` is not provided (the nodes are constants in S4); the dispatcher
uses the PyTorch backend when ``z`` requires a gradient.
"""
from __future__ import annotations

import ctypes
import threading

import torch
from torch.autograd.function import once_differentiable

from ..native import CSRC, build_library

__all__ = ["load_library", "build_error", "why_unavailable", "cauchy_cpu_canonical", "CauchyCPU"]

ABI_VERSION = 1
_lock = threading.Lock()
_lib: list = []  # [library or None], filled once
build_error: str | None = None


def load_library() -> ctypes.CDLL | None:
    """The compiled library (built on first use), or None if it cannot be built (see :data:`build_error`)."""
    global build_error
    with _lock:
        if not _lib:
            lib = None
            try:
                lib = build_library("cauchy", CSRC / "cauchy_cpu.cpp")
                _declare(lib)
                if lib.cc_abi_version() != ABI_VERSION:
                    raise RuntimeError("stale Cauchy library (ABI version mismatch)")
            except Exception as e:  # no compiler, compile error, unwritable cache, ...
                lib, build_error = None, (str(e).strip().splitlines() or [type(e).__name__])[0]
            _lib.append(lib)
        return _lib[0]


def why_unavailable() -> str | None:
    """Why :func:`load_library` returned None (read it after calling that: ``from ... import
    build_error`` copies the value of the moment, None before the first build)."""
    return build_error


def _declare(lib: ctypes.CDLL) -> None:
    P, I64, INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.cc_abi_version.restype = I64
    lib.cc_error.restype = ctypes.c_char_p
    for kind in ("f32", "f64"):
        fwd, bwd = getattr(lib, f"cc_forward_{kind}"), getattr(lib, f"cc_backward_{kind}")
        fwd.argtypes, fwd.restype = [P, P, P, P, I64, I64, I64, I64, INT], INT
        bwd.argtypes, bwd.restype = [P, P, P, P, P, P, I64, I64, I64, I64, INT], INT


def _call(fn, *args) -> None:
    code = fn(*args)
    if code:
        lib = load_library()
        message = lib.cc_error().decode(errors="replace") if lib is not None else "unknown error"
        raise MemoryError(f"Cauchy kernel (C++): {message}") if code == 2 else RuntimeError(f"Cauchy kernel (C++): {message}")


def _kind(t: torch.Tensor) -> str:
    if t.dtype == torch.complex64:
        return "f32"
    if t.dtype == torch.complex128:
        return "f64"
    raise TypeError(f"cauchy (cpu backend): expected complex64 or complex128, got {t.dtype}")


def _forward(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    lib = load_library()
    if lib is None:
        raise RuntimeError(f"the C++ Cauchy kernel is unavailable: {build_error}")
    G, M, N = v.shape
    L = z.shape[0]
    v, z, w = v.contiguous(), z.contiguous(), w.contiguous()
    out = torch.empty(G, M, L, dtype=v.dtype)
    _call(getattr(lib, f"cc_forward_{_kind(v)}"), v.data_ptr(), z.data_ptr(), w.data_ptr(), out.data_ptr(),
          G, M, N, L, torch.get_num_threads())
    return out


class CauchyCPU(torch.autograd.Function):
    """Autograd wrapper of the C++ forward and backward passes (canonical shapes, CPU)."""

    @staticmethod
    def forward(ctx, v, z, w):
        ctx.save_for_backward(v, z, w)
        return _forward(v, z, w)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        v, z, w = (t.contiguous() for t in ctx.saved_tensors)
        G, M, N = v.shape
        L = z.shape[0]
        grad = grad.contiguous()
        grad_v, grad_w = torch.empty_like(v), torch.empty_like(w)
        _call(getattr(load_library(), f"cc_backward_{_kind(v)}"), grad.data_ptr(), v.data_ptr(), z.data_ptr(),
              w.data_ptr(), grad_v.data_ptr(), grad_w.data_ptr(), G, M, N, L, torch.get_num_threads())
        need_v, _, need_w = ctx.needs_input_grad[:3]
        return (grad_v if need_v else None), None, (grad_w if need_w else None)


def cauchy_cpu_canonical(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(G, M, N), (L,), (G, N) complex CPU tensors -> (G, M, L), differentiable in ``v`` and ``w``."""
    return CauchyCPU.apply(v, z, w)
