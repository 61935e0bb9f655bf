"""The conjugate-symmetric Cauchy product at the heart of the S4 convolution kernel.

    r[..., l] = sum_n  v[..., n] / (z[l] - w[..., n])  +  conj(v[..., n]) / (z[l] - conj(w[..., n]))

``cauchy`` dispatches to the fastest available backend; ``cauchy_ref`` is the plain
reference with the same signature, kept for tests.
"""
from __future__ import annotations

import torch

__all__ = ["cauchy", "cauchy_ref", "cauchy_torch"]

# Nodes per chunk in the pure-PyTorch path: bounds the (..., N, chunk) temporary.
_CHUNK = 1024


def cauchy_ref(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Reference Cauchy product, materialising the full (..., N, L) tensor.

    Args:
        v: complex (..., N) numerators (one of each conjugate pair).
        z: complex (L,) nodes.
        w: complex (..., N) poles, broadcastable with ``v``.

    Returns:
        complex (..., L).
    """
    v, w = v.unsqueeze(-1), w.unsqueeze(-1)
    return (v / (z - w) + v.conj() / (z - w.conj())).sum(dim=-2)


def cauchy_torch(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Same as :func:`cauchy_ref`, evaluated over chunks of nodes to bound memory."""
    v, w = torch.broadcast_tensors(v, w)
    if z.shape[-1] <= _CHUNK:
        return cauchy_ref(v, z, w)
    return torch.cat([cauchy_ref(v, zc, w) for zc in z.split(_CHUNK, dim=-1)], dim=-1)


def cauchy(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Conjugate-symmetric Cauchy product; see the module docstring.

    Args:
        v: complex (..., N).
        z: complex (L,).
        w: complex (..., N), broadcastable with ``v``.

    Returns:
        complex (..., L), same dtype as the inputs.
    """
    return cauchy_torch(v, z, w)
