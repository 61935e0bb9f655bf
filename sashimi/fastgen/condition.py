"""The engines' condition: per-row vectors (B, H0) that enter every step of a class-conditional model.

One vector per row is added to the row's input embedding; blocks with a conditioning projection
(``config.condition`` 'blocks' or 'film') also apply ``z (1 + scale) + shift`` after their norm,
with (scale, shift) projected from the same vector (:func:`sashimi.fastgen.pack.block_terms`).
The condition is explicit: an engine's ``reset(condition)`` and ``set_condition(condition)`` take
it, and None means the plan's default (the model's "no label" vector; nothing for an
unconditional model), never the condition of an earlier request.
"""
from __future__ import annotations

import torch

from ..errors import InputError
from .pack import conditioned

__all__ = ["resolve_condition"]


def resolve_condition(plan: dict, vectors: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    """The float64 CPU (B, H0) condition an engine should apply, checked, or None (nothing to apply).

    Args:
        plan: from :func:`sashimi.fastgen.pack.build_plan`.
        vectors: (B, H0) floating-point condition vectors, or None for the plan's default (the
            model's "no label" vector; zeros for a model whose blocks are conditioned but that has
            no such vector; None for an unconditional model).
        batch: the engine's rows B.

    Raises:
        TypeError: not a floating-point tensor. InputError (a ValueError): the wrong shape or
            values that are not finite.
    """
    H0 = plan["emb"].size(1)
    if vectors is None:
        default = plan.get("condition")
        if default is not None:
            return default.reshape(1, H0).expand(batch, H0)
        if conditioned(plan):
            return torch.zeros(batch, H0, dtype=torch.float64)
        return None
    if not torch.is_tensor(vectors) or not vectors.is_floating_point():
        raise TypeError(f"condition must be a floating-point tensor of shape ({batch}, {H0}), got "
                        f"{vectors.dtype if torch.is_tensor(vectors) else type(vectors).__name__}")
    if tuple(vectors.shape) != (batch, H0):
        raise InputError(f"condition must have shape ({batch}, {H0}) (one vector per row of the engine), "
                         f"got {tuple(vectors.shape)}")
    vectors = vectors.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(vectors).all()):
        raise InputError("condition contains NaN or inf")
    return vectors
