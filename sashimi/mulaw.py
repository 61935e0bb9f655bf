"""Mu-law companding, 256 levels (mu = 255) by default, in plain torch.

Bit-exact with torchaudio's ``MuLawEncoding`` / ``MuLawDecoding`` (which this library
does not depend on):

    encode: q = floor((sign(x) * log1p(mu |x|) / log1p(mu) + 1) / 2 * mu + 0.5)
    decode: y = 2 q / mu - 1;  x = sign(y) * ((1 + mu) ** |y| - 1) / mu

and linear quantization (the SaShiMi authors' Beethoven setting), :func:`linear_encode` /
:func:`linear_decode`; :func:`quantize` / :func:`dequantize` pick either by name.
"""
from __future__ import annotations

import math

import torch

from .errors import InputError

MU_LEVELS = 256
#: The token of silence with 256 levels: ``mulaw_encode(0.0)``. Other vocabularies: :func:`silence_token`.
SILENCE_TOKEN = 128
#: The quantizations a token model can use (``ARConfig.quantization``).
QUANTIZATIONS = ("mulaw", "linear")


def silence_token(levels: int = MU_LEVELS) -> int:
    """The token of silence, ``mulaw_encode(0.0, levels)``: what generation starts from and what a
    model sees before the first sample. It is ``levels // 2`` (0.0 sits in the middle of the
    quantiser: ``(0 + 1) / 2 * (levels - 1) + 0.5`` rounded down).

    Args:
        levels: number of quantisation levels (the model's ``config.mu_levels``), at least 2.

    Returns:
        the token, an int in [0, levels - 1].
    """
    if not isinstance(levels, int) or isinstance(levels, bool) or levels < 2:
        raise InputError(f"levels must be an integer >= 2, got {levels!r}")
    return levels // 2


def mulaw_encode(x: torch.Tensor, levels: int = MU_LEVELS) -> torch.Tensor:
    """Quantise a waveform to mu-law tokens.

    Args:
        x: float tensor of any shape, values in [-1, 1].
        levels: number of quantisation levels (mu = levels - 1).

    Returns:
        int64 tensor of the same shape, values in [0, levels - 1].
    """
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError(f"mulaw_encode: x must be a floating-point tensor, got {_describe(x)}")
    mu = levels - 1.0
    y = torch.sign(x) * torch.log1p(mu * torch.abs(x)) / math.log1p(mu)
    return ((y + 1) / 2 * mu + 0.5).to(torch.int64)


def mulaw_decode(q: torch.Tensor, levels: int = MU_LEVELS, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Map mu-law tokens back to a waveform.

    Args:
        q: integer tensor of any shape, values in [0, levels - 1].
        levels: number of quantisation levels (mu = levels - 1).
        dtype: floating dtype of the result.

    Returns:
        tensor of ``dtype``, same shape as ``q``, values in [-1, 1].
    """
    if not torch.is_tensor(q) or q.is_floating_point() or q.is_complex():
        raise TypeError(f"mulaw_decode: q must be an integer tensor, got {_describe(q)}")
    # A lookup table computed in float64: each token maps to one correctly rounded value, so
    # decoding a sequence in chunks (streaming) gives exactly the samples of decoding it whole
    # (an elementwise float32 pow rounds differently in vectorised and scalar code paths).
    mu = levels - 1.0
    y = 2 * torch.arange(levels, dtype=torch.float64) / mu - 1
    table = (torch.sign(y) * (torch.pow(1 + mu, torch.abs(y)) - 1) / mu).to(device=q.device, dtype=dtype)
    if q.numel() and (int(q.min()) < 0 or int(q.max()) >= levels):
        raise InputError(f"mulaw_decode: q must hold tokens in [0, {levels - 1}], got min {int(q.min())}, "
                         f"max {int(q.max())}")
    return table[q.long()]


def linear_encode(x: torch.Tensor, levels: int = MU_LEVELS) -> torch.Tensor:
    """Quantise a waveform linearly: q = floor((x + 1) / 2 * levels), clipped to [0, levels - 1].

    Silence (0.0) is token ``levels // 2``, as with mu-law (:func:`silence_token`).

    Args:
        x: float tensor of any shape, values in [-1, 1].
        levels: number of quantisation levels.

    Returns:
        int64 tensor of the same shape, values in [0, levels - 1].
    """
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError(f"linear_encode: x must be a floating-point tensor, got {_describe(x)}")
    return torch.floor((x + 1) / 2 * levels).clamp(0, levels - 1).to(torch.int64)


def linear_decode(q: torch.Tensor, levels: int = MU_LEVELS, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Map linear tokens back to a waveform: x = 2 q / levels - 1 (the authors' decoding; token
    ``levels // 2`` is exactly 0.0).

    Args:
        q: integer tensor of any shape, values in [0, levels - 1].
        levels: number of quantisation levels.
        dtype: floating dtype of the result.

    Returns:
        tensor of ``dtype``, same shape as ``q``, values in [-1, 1).
    """
    if not torch.is_tensor(q) or q.is_floating_point() or q.is_complex():
        raise TypeError(f"linear_decode: q must be an integer tensor, got {_describe(q)}")
    return 2 * q.to(dtype) / levels - 1


def quantize(x: torch.Tensor, levels: int = MU_LEVELS, quantization: str = "mulaw") -> torch.Tensor:
    """Tokens of a waveform by ``quantization`` ('mulaw' or 'linear'); see the encoders above."""
    return _encoders(quantization)[0](x, levels)


def dequantize(q: torch.Tensor, levels: int = MU_LEVELS, quantization: str = "mulaw",
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A waveform from tokens by ``quantization`` ('mulaw' or 'linear'); see the decoders above."""
    return _encoders(quantization)[1](q, levels, dtype)


def _encoders(quantization: str):
    if quantization == "mulaw":
        return mulaw_encode, mulaw_decode
    if quantization == "linear":
        return linear_encode, linear_decode
    raise InputError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")


def _describe(x) -> str:
    return f"tensor of dtype {x.dtype}" if torch.is_tensor(x) else type(x).__name__
