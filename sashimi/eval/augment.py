"""Augmentations that make a digit classifier robust to what generators produce.

Generated clips differ from dataset recordings in level (gain), in where the word sits inside
the second, and in low-level noise (hiss, 8-bit mu-law quantisation). :func:`place` and
:func:`perturb` draw these from a ``torch.Generator``, so a seed fixes them.
"""
from __future__ import annotations

import torch

from ..mulaw import mulaw_decode, mulaw_encode

__all__ = ["place", "perturb"]


def place(clips: list[torch.Tensor], length: int, generator: torch.Generator | None = None,
          shift: bool = True) -> torch.Tensor:
    """Put each clip into a window of ``length`` samples.

    Args:
        clips: 1-D float waveforms of any lengths.
        length: window length (samples).
        generator: random source (None: torch's global RNG).
        shift: place a shorter clip at a uniformly random offset (the word anywhere in the
            window) and crop a longer one at a random offset; else both at offset 0.

    Returns:
        float32 (len(clips), length), zero where no clip sample falls.
    """
    out = torch.zeros(len(clips), length)
    for i, clip in enumerate(clips):
        n = clip.numel()
        room = abs(length - n)
        offset = int(torch.randint(room + 1, (1,), generator=generator)) if shift and room else 0
        if n <= length:
            out[i, offset:offset + n] = clip
        else:
            out[i] = clip[offset:offset + length]
    return out


def perturb(wavs: torch.Tensor, generator: torch.Generator | None = None, *,
            gain_db: tuple[float, float] = (-20.0, 6.0), noise_db: tuple[float, float] | None = (-70.0, -40.0),
            p_noise: float = 0.5, p_mulaw: float = 0.5) -> torch.Tensor:
    """Random gain, then (each with its probability) white noise and a mu-law round trip.

    Args:
        wavs: (N, L) float waveforms in [-1, 1].
        generator: random source.
        gain_db: gain range in dB, drawn uniformly per clip; the result is clipped to [-1, 1].
        noise_db: range of the noise RMS in dB re full scale (None: no noise).
        p_noise: probability of adding noise to a clip.
        p_mulaw: probability of quantising a clip to 8-bit mu-law and back (the generators'
            output format).

    Returns:
        (N, L) float32 in [-1, 1].
    """
    n = wavs.size(0)

    def uniform(low, high):
        return low + (high - low) * torch.rand(n, 1, generator=generator)

    x = (wavs.float() * 10.0 ** (uniform(*gain_db) / 20.0)).clamp(-1.0, 1.0)
    if noise_db is not None and p_noise > 0:
        use = (torch.rand(n, 1, generator=generator) < p_noise).float()
        rms = 10.0 ** (uniform(*noise_db) / 20.0)
        x = (x + use * rms * torch.randn(x.shape, generator=generator)).clamp(-1.0, 1.0)
    if p_mulaw > 0:
        use = torch.rand(n, generator=generator) < p_mulaw
        if use.any():
            x[use] = mulaw_decode(mulaw_encode(x[use])).float()
    return x
