"""Pretrained models: the functions behind ``hubconf.py``."""
from __future__ import annotations

import os

import torch

from .ar import SashimiAR
from .checkpoint import load_model
from .config import ARConfig

__all__ = ["sashimi_ar_sc09", "AR_SC09_URL"]

#: The published autoregressive SC09 checkpoint (RF5/simple-sashimi v1.0, 1.1M steps, 4.8M params).
AR_SC09_URL = "https://github.com/RF5/simple-sashimi/releases/download/v1.0/ckpt_01100000.pt"


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def sashimi_ar_sc09(pretrained: bool = True, progress: bool = True, device=None,
                    checkpoint: str | os.PathLike | None = None) -> SashimiAR:
    """Autoregressive SaShiMi trained on SC09 (spoken digits, 16 kHz, 8-bit mu-law).

    Args:
        pretrained: load the published weights (else: the SC09 architecture, freshly initialised).
        progress: show a download progress bar.
        device: where to put the model (None: CUDA if available, else CPU).
        checkpoint: a local path or URL to load instead of the published file.

    Returns:
        a :class:`SashimiAR` in eval mode. ``model.unconditional_generate(4)`` gives (4, 16000)
        waveforms in [-1, 1]; ``model(tokens)`` gives (B, L, 256) logits.
    """
    device = _device(device)
    if not pretrained and checkpoint is None:
        return SashimiAR(ARConfig()).to(device).eval()
    model = load_model(checkpoint if checkpoint is not None else AR_SC09_URL, progress=progress)
    if not isinstance(model, SashimiAR):
        raise ValueError(f"sashimi_ar_sc09: {checkpoint} holds a {type(model).__name__}, not an autoregressive model")
    return model.to(device).eval()
