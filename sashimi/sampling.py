"""Batched sampling from logits: temperature, top-k and nucleus (top-p), all on device."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from .errors import InputError

__all__ = ["SamplingOptions", "sample_logits", "filtered_probs", "check_sampling_args", "make_generator",
           "MIN_TEMPERATURE", "SAMPLING_KEYS", "resolve_sampling", "check_sampling_defaults"]

#: The settings a model may store as its own defaults (``ARConfig.sampling``).
SAMPLING_KEYS = ("temperature", "top_k", "nucleus_p")

#: The lowest temperature accepted. Below it, logits / temperature overflows float32 for ordinary
#: logits (1e-45 turns every logit into inf), and the distribution is already the argmax: greedy
#: decoding is ``top_k=1``.
MIN_TEMPERATURE = 1e-4


def check_sampling_args(temperature: float = 1.0, top_k: int | None = None, nucleus_p: float = 1.0) -> None:
    """Raise InputError (a ValueError) if the sampling settings are out of range. Any real numbers
    (numpy's too) are accepted, but not booleans."""
    if not _is_real(nucleus_p) or not 0.0 < nucleus_p <= 1.0:
        raise InputError(f"nucleus_p must be in (0, 1], got {nucleus_p!r}")
    if not _is_real(temperature) or not MIN_TEMPERATURE <= temperature < math.inf:
        raise InputError(f"temperature must be a finite number >= {MIN_TEMPERATURE:g}, got {temperature!r} "
                         "(for greedy decoding use top_k=1)")
    if top_k is not None and (not isinstance(top_k, numbers.Integral) or isinstance(top_k, bool) or top_k < 1):
        raise InputError(f"top_k must be None or a positive integer (0 in generation calls: all tokens), "
                         f"got {top_k!r}")


def check_sampling_defaults(defaults, where: str = "sampling") -> dict | None:
    """Validate a model's stored sampling defaults: None or a dict with some of
    :data:`SAMPLING_KEYS` (top_k None or 0: all tokens). Returns a plain-typed copy."""
    if defaults is None:
        return None
    if not isinstance(defaults, dict):
        raise InputError(f"{where} must be None or a dict with keys among {SAMPLING_KEYS}, got {defaults!r}")
    unknown = sorted(set(defaults) - set(SAMPLING_KEYS))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}; valid keys: {list(SAMPLING_KEYS)}")
    top_k = defaults.get("top_k")
    check_sampling_args(defaults.get("temperature", 1.0), top_k or None, defaults.get("nucleus_p", 1.0))
    return {k: (None if k == "top_k" and not v else (int(v) if k == "top_k" else float(v)))
            for k, v in defaults.items()}


def resolve_sampling(nucleus_p=None, temperature=None, top_k=None, defaults: dict | None = None) -> SamplingOptions:
    """The settings a generation call uses: each argument given wins; one left None takes the
    model's stored default (``defaults``, e.g. ``ARConfig.sampling``), else the library's
    (nucleus 1.0, temperature 1.0, all tokens). ``top_k=0`` asks for all tokens explicitly (to
    override a model's stored top-k)."""
    defaults = defaults or {}
    if nucleus_p is None:
        nucleus_p = defaults.get("nucleus_p", 1.0)
    if temperature is None:
        temperature = defaults.get("temperature", 1.0)
    if top_k is None:
        top_k = defaults.get("top_k")
    elif isinstance(top_k, numbers.Integral) and not isinstance(top_k, bool) and top_k == 0:
        top_k = None
    return SamplingOptions(temperature, top_k, nucleus_p)


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


@dataclass(frozen=True)
class SamplingOptions:
    """How to draw a token from logits, as one checked value (see :func:`sample_logits`).

    Attributes:
        temperature: divides the logits (>= :data:`MIN_TEMPERATURE`).
        top_k: keep only the k most likely tokens (None: all).
        nucleus_p: keep the smallest set of most likely tokens whose probability reaches p (1.0: all).
    """

    temperature: float = 1.0
    top_k: int | None = None
    nucleus_p: float = 1.0

    def __post_init__(self):
        check_sampling_args(self.temperature, self.top_k, self.nucleus_p)
        # numpy numbers are accepted: plain Python ones from here on
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "nucleus_p", float(self.nucleus_p))
        object.__setattr__(self, "top_k", None if self.top_k is None else int(self.top_k))


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
    top_k = None if top_k is None else int(top_k)
    probs = filtered_probs(logits, float(temperature), top_k, float(nucleus_p))
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


def make_generator(seed, device) -> torch.Generator | None:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (None: no generator, torch's global RNG).

    Raises:
        TypeError: ``seed`` is not an integer.
        ValueError: ``seed`` is outside [0, 2**64 - 1], the range of torch's seeds.
    """
    if seed is None:
        return None
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**64:
        raise InputError(f"seed must be an integer in [0, 2**64 - 1], got {seed}")
    return torch.Generator(device=device).manual_seed(int(seed))
