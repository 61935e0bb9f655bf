"""Pure-PyTorch Cauchy product on canonical shapes, memory-bounded in forward and backward.

Canonical shapes (see ``sashimi.ops.cauchy._canonical``): ``v`` (G, M, N), ``z`` (L,),
``w`` (G, N). The poles ``w`` depend on the group index g only, so the Cauchy block
k[g, j, l] = 1 / (z[l] - ww[g, j]) over the 2N poles ww = [w, conj w] is computed once and
shared by the M rows of ``v`` through a batched matrix product:

    r[g, :, l] = [v, conj v][g] @ k[g, :, l]           (G, M, 2N) @ (G, 2N, L)

Only a (g-chunk, 2N, l-chunk) block of ``k`` exists at a time, in the backward pass too,
which recomputes it instead of saving it: peak memory is the output plus one block.

Gradients (PyTorch's convention: backward gets and returns dLoss/d(conj x)); with
A = 1/(z - w), B = 1/(z - conj w) and the incoming gradient g[l]:

    grad_v = sum_l g conj(A)   + conj(sum_l g conj(B))
    grad_w = conj(v) * (sum_l g conj(A)^2 + conj(sum_l g conj(B)^2))
    grad_z = -g * conj(sum_n v A^2 + conj(v) B^2)
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

# Complex entries in one Cauchy block (G-chunk x 2N x L-chunk): 8 MiB in complex64. Large
# enough that per-op overhead is small, small enough to stay near the caches.
DEFAULT_BLOCK_ELEMENTS = 1 << 20
# Fewest nodes per block before the group dimension is chunked instead.
_MIN_NODES = 32
# Below this many multiply-adds a matrix product runs as one broadcast-and-sum, single-threaded:
# torch.bmm enters a parallel region however small the batch, which costs milliseconds on a
# busy machine (measured: 15 ms per tiny bmm with 2 threads on a loaded 2-core box).
_SMALL_PRODUCT = 1 << 15


def blocks(G: int, width: int, L: int, max_elements: int):
    """Yield (g0, g1, l0, l1) tiles of a (G, width, L) block with about ``max_elements`` entries each."""
    width = max(width, 1)
    lc = max(1, max_elements // (width * max(G, 1)))
    if lc >= min(L, _MIN_NODES):
        gc, lc = max(G, 1), min(lc, max(L, 1))
    else:  # many groups: chunk them too
        lc = min(L, _MIN_NODES)
        gc = max(1, max_elements // (width * max(lc, 1)))
    for g0 in range(0, G, gc):
        for l0 in range(0, L, lc):
            yield g0, min(g0 + gc, G), l0, min(l0 + lc, L)


def _cauchy_block(z: torch.Tensor, ww: torch.Tensor) -> torch.Tensor:
    """1 / (z - ww): z (lc,), ww (gc, 2N, 1) -> (gc, 2N, lc)."""
    return (z - ww).reciprocal_()


def _bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.bmm for (B, m, k) @ (B, k, n), without threads for tiny products."""
    if a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2] < _SMALL_PRODUCT:
        return (a.unsqueeze(-1) * b.unsqueeze(1)).sum(dim=-2)
    return torch.bmm(a, b)


def _poles(w: torch.Tensor) -> torch.Tensor:
    """(G, N) -> (G, 2N, 1): the poles and their conjugates."""
    return torch.cat([w, w.conj()], dim=-1).unsqueeze(-1)


def cauchy_forward(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor,
                   max_elements: int = DEFAULT_BLOCK_ELEMENTS) -> torch.Tensor:
    """Forward pass on canonical shapes (no autograd).

    Args:
        v: complex (G, M, N).
        z: complex (L,).
        w: complex (G, N).
        max_elements: bound on the entries of each temporary Cauchy block.

    Returns:
        complex (G, M, L).
    """
    G, M, N = v.shape
    L = z.shape[0]
    vv = torch.cat([v, v.conj()], dim=-1)  # (G, M, 2N)
    ww = _poles(w)  # (G, 2N, 1)
    out = v.new_empty(G, M, L)
    for g0, g1, l0, l1 in blocks(G, 2 * N, L, max_elements):
        out[g0:g1, :, l0:l1] = _bmm(vv[g0:g1], _cauchy_block(z[l0:l1], ww[g0:g1]))
    return out


def cauchy_backward(grad: torch.Tensor, v: torch.Tensor, z: torch.Tensor, w: torch.Tensor,
                    need_z: bool = False, max_elements: int = DEFAULT_BLOCK_ELEMENTS):
    """Backward pass on canonical shapes; see the module docstring for the formulas.

    Args:
        grad: complex (G, M, L), dLoss/d(conj r).
        v, z, w: the forward inputs, (G, M, N), (L,), (G, N).
        need_z: also compute the gradient for ``z``.
        max_elements: bound on the entries of each temporary Cauchy block.

    Returns:
        (grad_v (G, M, N), grad_z (L,) or None, grad_w (G, N)).
    """
    G, M, N = v.shape
    L = z.shape[0]
    ww = _poles(w)
    vv = torch.cat([v, v.conj()], dim=-1) if need_z else None
    # Accumulate conj(P) and conj(Q): bmm(conj(g), k^T) = conj(g @ k^H) avoids conjugating k.
    p_conj = v.new_zeros(G, M, 2 * N)  # conj(sum_l g conj(k))
    q_conj = v.new_zeros(G, M, 2 * N)  # conj(sum_l g conj(k)^2)
    grad_z = z.new_zeros(L) if need_z else None
    grad_c = grad.conj()
    for g0, g1, l0, l1 in blocks(G, 2 * N, L, max_elements):
        k = _cauchy_block(z[l0:l1], ww[g0:g1])  # (gc, 2N, lc)
        gc = grad_c[g0:g1, :, l0:l1]  # (gc, M, lc)
        p_conj[g0:g1] += _bmm(gc, k.transpose(1, 2))
        k.mul_(k)
        q_conj[g0:g1] += _bmm(gc, k.transpose(1, 2))
        if need_z:  # -g conj(vv @ k^2) summed over g and M
            grad_z[l0:l1] -= (gc * _bmm(vv[g0:g1], k)).conj().sum(dim=(0, 1))
    p1, p2 = p_conj[..., :N].conj(), p_conj[..., N:]  # P1 and conj(P2)
    q1, q2 = q_conj[..., :N].conj(), q_conj[..., N:]
    grad_v = p1 + p2
    grad_w = (v.conj() * (q1 + q2)).sum(dim=1)
    return grad_v, grad_z, grad_w


class CauchyTorch(torch.autograd.Function):
    """Autograd wrapper of :func:`cauchy_forward` / :func:`cauchy_backward` (canonical shapes).

    Saves only the inputs; the backward pass recomputes the Cauchy blocks chunk by chunk.
    """

    @staticmethod
    def forward(ctx, v, z, w, max_elements):
        ctx.save_for_backward(v, z, w)
        ctx.max_elements = max_elements
        return cauchy_forward(v, z, w, max_elements)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        v, z, w = ctx.saved_tensors
        need_v, need_z, need_w = ctx.needs_input_grad[:3]
        grad_v, grad_z, grad_w = cauchy_backward(grad, v, z, w, need_z, ctx.max_elements)
        return (grad_v if need_v else None), grad_z, (grad_w if need_w else None), None
