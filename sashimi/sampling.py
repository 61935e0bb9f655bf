"""Batched sampling from logits: temperature, top-k and nucleus (top-p), all on device."""
from __future__ import annotations

import torch

__all__ = ["sample_logits", "filtered_probs", "check_sampling_args"]


def check_sampling_args(temperature: float = 1.0, top_k: int | None = None, nucleus_p: float = 1.0) -> None:
    """Raise ValueError if the sampling settings are out of range."""
    if not isinstance(nucleus_p, (int, float)) or not 0.0 < nucleus_p <= 1.0:
        raise ValueError(f"nucleus_p must be in (0, 1], got {nucleus_p!r}")
    if not isinstance(temperature, (int, float)) or not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be None or a positive integer, got {top_k!r}")


def sample_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  nucleus_p: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row.

    Args:
        logits: (B, V) unnormalised log-probabilities.
        temperature: divides the logits (> 0).
        top_k: keep only the k most likely tokens (None: all).
        nucleus_p: keep the smallest set of most likely tokens whose probability reaches p
            (1.0: the full distribution).
        generator: random generator for reproducible draws.

    Returns:
        int64 (B,) sampled token indices.
    """
    check_sampling_args(temperature, top_k, nucleus_p)
    probs = filtered_probs(logits, temperature, top_k, nucleus_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def filtered_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                   nucleus_p: float = 1.0) -> torch.Tensor:
    """The distribution :func:`sample_logits` draws from (arguments already checked).

    Args:
        logits: (B, V).

    Returns:
        float32 (B, V) probabilities, zero outside the top-k / nucleus set (not renormalised).
    """
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if nucleus_p < 1.0:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        # Drop a token when the tokens before it already reach p (the first is always kept).
        drop = (torch.cumsum(sorted_p, dim=-1) - sorted_p) >= nucleus_p
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p.masked_fill(drop, 0.0))
    return probs
