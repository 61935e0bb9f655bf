"""Cauchy product through the compiled CUDA extension ``sashimi._cauchy_cuda`` (csrc/cauchy/).

The extension exists only where it was built (``setup.py``: CUDA PyTorch and nvcc present,
or ``SASHIMI_CUDA_EXT=1``). It implements the canonical-shape forward and backward for
complex64 and complex128; the gradient for ``z``, rarely needed, comes from the PyTorch path.
"""
from __future__ import annotations

import importlib

import torch
from torch.autograd.function import once_differentiable

from ._cauchy_torch import cauchy_backward

BUILD_HINT = ("build it on a machine with CUDA PyTorch and nvcc: "
              "SASHIMI_CUDA_EXT=1 pip install --no-build-isolation -e .")


def load_extension():
    """Import ``sashimi._cauchy_cuda``, raising ImportError with the build instructions."""
    try:
        return importlib.import_module("sashimi._cauchy_cuda")
    except ImportError as e:
        raise ImportError(f"the CUDA Cauchy extension sashimi._cauchy_cuda is not available ({e}); {BUILD_HINT}") from e


class CauchyCUDA(torch.autograd.Function):
    """Autograd wrapper of the extension on canonical shapes: v (G, M, N), z (L,), w (G, N)."""

    @staticmethod
    def forward(ctx, v, z, w):
        v, z, w = (t.resolve_conj().contiguous() for t in (v, z, w))
        ctx.save_for_backward(v, z, w)
        return load_extension().forward(v, z, w)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        v, z, w = ctx.saved_tensors
        need_v, need_z, need_w = ctx.needs_input_grad
        grad_v, grad_w_rows = load_extension().backward(grad.resolve_conj().contiguous(), v, z, w)
        grad_z = cauchy_backward(grad, v, z, w, need_z=True)[1] if need_z else None
        # grad_w_rows (G, M, N): each row's contribution, summed here (deterministic).
        return (grad_v if need_v else None), grad_z, (grad_w_rows.sum(dim=1) if need_w else None)


def cauchy_cuda_canonical(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Cauchy product with the CUDA extension, differentiable.

    Args:
        v: complex (G, M, N), on a CUDA device.
        z: complex (L,), same device and dtype.
        w: complex (G, N), same device and dtype.

    Returns:
        complex (G, M, L).
    """
    return CauchyCUDA.apply(v, z, w)
