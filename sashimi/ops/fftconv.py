"""The S4 layer's long convolution, skip term and GELU: ``gelu(k * u + D u)`` over (B, L, H).

Two implementations with one signature:

- :func:`ssm_conv_gelu_ref`, the plain reference: FFTs along time on (B, H, L) transposes, and
  autograd through every step.
- :func:`ssm_conv_gelu`, the training path: FFTs along dim 1 of the (B, L, H) activations (no
  transposes), and a hand-written backward that saves ``u``, its spectrum, the kernel's spectrum
  and the pre-activation (less than autograd keeps for the reference), and runs two large FFTs:
  the spectrum of the incoming gradient and its correlation with the kernel.

The convolution is linear (zero-padded to ``n = 2 L`` samples, so nothing wraps around):

    y[b, t, h] = sum_{j <= t} k[h, j] u[b, t - j, h]    (causal kernel: k[h, :L])

A kernel longer than L (up to 2 L taps) holds an anti-causal part at its end, taps 2 L - m for
lag -m, as the bidirectional layer builds it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ssm_conv_gelu", "ssm_conv_gelu_ref"]

def _check(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor) -> None:
    if u.dim() != 3:
        raise ValueError(f"ssm_conv_gelu: u must be (B, L, H), got shape {tuple(u.shape)}")
    B, L, H = u.shape
    if k.dim() != 2 or k.size(0) != H or not 1 <= k.size(1) <= 2 * L:
        raise ValueError(f"ssm_conv_gelu: k must be (H={H}, taps <= 2 L = {2 * L}), got shape {tuple(k.shape)}")
    if D.shape != (H,):
        raise ValueError(f"ssm_conv_gelu: D must be (H={H},), got shape {tuple(D.shape)}")


def ssm_conv_gelu_ref(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """Reference: ``gelu(causal_conv(k, u) + D u)``.

    Args:
        u: float (B, L, H) input.
        k: float (H, taps) kernel, taps <= 2 L (taps past L: the anti-causal part, see the module doc).
        D: float (H,) skip weights.

    Returns:
        float (B, L, H).
    """
    _check(u, k, D)
    L = u.size(1)
    u_t = u.transpose(-1, -2)  # (B, H, L)
    k_f = torch.fft.rfft(k, n=2 * L)
    u_f = torch.fft.rfft(u_t, n=2 * L)
    y = torch.fft.irfft(u_f * k_f, n=2 * L)[..., :L] + u_t * D[:, None]
    return F.gelu(y.transpose(-1, -2))


class _SSMConvGelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, k, D):
        L, taps = u.size(1), k.size(1)
        n = 2 * L
        k_f = torch.fft.rfft(k, n=n).t()  # (F, H), F = L + 1
        u_f = torch.fft.rfft(u, n=n, dim=1)  # (B, F, H)
        y = torch.fft.irfft(u_f * k_f, n=n, dim=1)[:, :L]
        pre = torch.addcmul(y, u, D)
        # u_f is kept for the kernel's gradient (as autograd keeps it in the reference): one FFT less
        ctx.save_for_backward(u, u_f, k_f, D, pre)
        ctx.taps = taps
        return F.gelu(pre)

    @staticmethod
    def backward(ctx, grad):
        u, u_f, k_f, D, pre = ctx.saved_tensors
        L = u.size(1)
        n = 2 * L
        # dLoss/d pre, (B, L, H): PyTorch's own kernel, as autograd runs for F.gelu (one pass;
        # composing erf and exp takes several, and exp's underflow for large |pre| is slow)
        g = torch.ops.aten.gelu_backward(grad, pre)
        g_f = torch.fft.rfft(g, n=n, dim=1)  # (B, F, H)
        grad_u = grad_k = grad_D = None
        if ctx.needs_input_grad[0]:
            # the adjoint of a causal convolution is a correlation: conj of the kernel's spectrum
            grad_u = torch.fft.irfft(g_f * k_f.conj(), n=n, dim=1)[:, :L].addcmul_(g, D)
        if ctx.needs_input_grad[1]:
            cross = (g_f * u_f.conj()).sum(0)  # (F, H)
            grad_k = torch.fft.irfft(cross, n=n, dim=0)[: ctx.taps].t()
        if ctx.needs_input_grad[2]:
            grad_D = (g * u).sum((0, 1))
        return grad_u, grad_k, grad_D


def ssm_conv_gelu(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """Same as :func:`ssm_conv_gelu_ref`, with the hand-written backward (see the module doc).

    Args:
        u: float (B, L, H) input.
        k: float (H, taps) kernel, taps <= 2 L.
        D: float (H,) skip weights.

    Returns:
        float (B, L, H).
    """
    _check(u, k, D)
    return _SSMConvGelu.apply(u, k, D)
