"""Batched sampling from logits with given uniform numbers (inverse CDF), on any device.

The distribution is exactly that of :func:`sashimi.sampling.sample_logits` (temperature, then
top-k keeping ties with the k-th value, then the nucleus rule "drop a token when the tokens
before it already reach p"); only the random stream differs: the uniforms are drawn ahead from a
seeded ``torch.Generator``, which makes the whole step free of host synchronisation (CUDA graphs).
(One corner is unspecified in the reference itself: when exactly equal probabilities straddle the
nucleus boundary, which of them are kept follows ``torch.sort``'s order of ties.)
"""
from __future__ import annotations

import torch

from ..sampling import filtered_probs

__all__ = ["sample_with_uniforms", "draw_uniforms"]


def sample_with_uniforms(logits: torch.Tensor, u: torch.Tensor, temperature: float = 1.0,
                         top_k: int | None = None, nucleus_p: float = 1.0) -> torch.Tensor:
    """Draw one token per row.

    Args:
        logits: (B, V) unnormalised log-probabilities.
        u: (B,) uniform numbers in [0, 1), one per row.
        temperature, top_k, nucleus_p: as :func:`sashimi.sampling.sample_logits`.

    Returns:
        int64 (B,) token indices.
    """
    probs = filtered_probs(logits, temperature, top_k, nucleus_p)
    cdf = torch.cumsum(probs, dim=-1)  # (B, V)
    total = cdf[..., -1:]
    # A target strictly below the total lands on a token of positive probability: trailing zeros
    # leave the cumulative sum unchanged, so the first entry > target has a jump.
    target = torch.minimum(u.to(cdf.dtype).unsqueeze(-1) * total, torch.nextafter(total, torch.zeros_like(total)))
    idx = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return idx.clamp_max(logits.size(-1) - 1)


def draw_uniforms(batch: int, steps: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """(batch, steps) float32 uniforms in [0, 1) on ``device`` (drawn on the generator's device)."""
    gen_device = generator.device if generator is not None else torch.device(device)
    return torch.rand(batch, steps, generator=generator, device=gen_device).to(device)
