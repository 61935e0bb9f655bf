"""Cauchy product through pykeops (optional dependency), on canonical shapes.

KeOps compiles each reduction into a C++ or CUDA routine cached on disk (~10 s per formula
and dtype the first time). Complex numbers travel as real pairs (``torch.view_as_real``);
batch dimensions broadcast, so ``w`` is passed as (G, 1, N) and ``z`` as (1, 1, L).

The backward pass is written out (a second reduction, over the nodes) rather than left to
KeOps' symbolic differentiation: that one squares |z - w|^2, which overflows float32 at the
S4 nodes near Nyquist (|z| ~ 1e16) and turned training losses into NaN. Here every term is
built from the reciprocals A = 1/(z - w), B = 1/(z - conj w), which stay small; the
formulas are those of the PyTorch path (see ``_cauchy_torch``). The gradient for ``z``,
rarely needed, comes from the PyTorch path.
"""
from __future__ import annotations

import functools

import torch
from torch.autograd.function import once_differentiable

from ._cauchy_torch import cauchy_backward

INSTALL_HINT = "pip install pykeops (it needs a C++ compiler; and the CUDA toolkit for GPU tensors)"

_A = "ComplexDivide(one, z - w)"  # 1 / (z - w)
_B = "ComplexDivide(one, z - Conj(w))"  # 1 / (z - conj w)
_FORWARD = "ComplexDivide(v, z - w) + ComplexDivide(Conj(v), z - Conj(w))"
# Per pole: [grad_v, grad_w contribution of this row], each a complex number.
_GRAD_V = f"ComplexMult(g, Conj({_A})) + Conj(ComplexMult(g, Conj({_B})))"
_GRAD_W = (f"ComplexMult(Conj(v), ComplexMult(g, Conj(ComplexMult({_A}, {_A})))"
           f" + Conj(ComplexMult(g, Conj(ComplexMult({_B}, {_B})))))")


def import_pykeops():
    """Import pykeops lazily, with an actionable message when it is missing."""
    try:
        import pykeops.torch  # noqa: F401
    except ImportError as e:
        raise ImportError(f"the 'keops' Cauchy backend needs pykeops: {INSTALL_HINT} ({e})") from e
    return pykeops


@functools.lru_cache(maxsize=1)
def _reductions():
    import_pykeops()
    from pykeops.torch import Genred

    # i runs over the nodes z, j over the poles w (and the numerators v).
    forward = Genred(_FORWARD, ["z = Vi(2)", "v = Vj(2)", "w = Vj(2)"], reduction_op="Sum", axis=1)
    backward = Genred(f"Concat({_GRAD_V}, {_GRAD_W})",
                      ["z = Vi(2)", "g = Vi(2)", "v = Vj(2)", "w = Vj(2)", "one = Pm(2)"],
                      reduction_op="Sum", axis=0)
    return forward, backward


def _real(x: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(x.detach().resolve_conj().contiguous())


def _complex(x: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(x.contiguous())


class CauchyKeOps(torch.autograd.Function):
    """Forward and backward KeOps reductions on v (G, M, N), z (L,), w (G, N)."""

    @staticmethod
    def forward(ctx, v, z, w):
        ctx.save_for_backward(v, z, w)
        G, M, N = v.shape
        L = z.shape[0]
        if G * M * L * N == 0:
            return v.new_zeros(G, M, L)
        forward, _ = _reductions()
        return _complex(forward(_real(z).reshape(1, 1, L, 2), _real(v), _real(w).reshape(G, 1, N, 2)))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        v, z, w = ctx.saved_tensors
        need_v, need_z, need_w = ctx.needs_input_grad
        G, M, N = v.shape
        L = z.shape[0]
        if G * M * L * N == 0:
            grad_v, grad_w = torch.zeros_like(v), w.new_zeros(G, N)
        else:
            _, backward = _reductions()
            zr = _real(z)
            one = torch.tensor([1.0, 0.0], dtype=zr.dtype, device=z.device).reshape(1, 1, 2)
            out = backward(zr.reshape(1, 1, L, 2), _real(grad), _real(v), _real(w).reshape(G, 1, N, 2), one)
            grad_v, grad_w = _complex(out[..., :2]), _complex(out[..., 2:]).sum(dim=1)  # (G, M, N), (G, N)
        grad_z = cauchy_backward(grad, v, z, w, need_z=True)[1] if need_z else None
        return (grad_v if need_v else None), grad_z, (grad_w if need_w else None)


def cauchy_keops_canonical(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Cauchy product with pykeops, differentiable.

    Args:
        v: complex (G, M, N).
        z: complex (L,).
        w: complex (G, N).

    Returns:
        complex (G, M, L).
    """
    return CauchyKeOps.apply(v, z, w)
