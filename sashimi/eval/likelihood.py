"""Test likelihood of an autoregressive model on short utterances, as the bundled model is scored."""
from __future__ import annotations

import math

import torch

__all__ = ["utterance_nll_bits"]


@torch.no_grad()
def utterance_nll_bits(model, files: list[str], window: int | None = None, batch_size: int = 16,
                       max_start: int | None = None) -> torch.Tensor:
    """Bits per sample of each recording, placed in the middle of a window of silence.

    The way an utterance-window model saw its data (there at a random place, see
    :class:`sashimi.data.datasets.UtteranceDataset`): the silence around the word is scored too,
    on every sample of the window after a leading zero sample (:meth:`SashimiAR.nll`).

    Args:
        model: a :class:`SashimiAR`.
        files: audio files (resampled to the model's rate; longer than the window: centre crop).
        window: window length in samples (default: one second at ``model.config.sample_rate``).
        batch_size: windows per forward pass.
        max_start: for a model trained with ``utterance_max_start_ms``: the word starts at half
            of min(room, ``max_start``) samples, the middle of where it saw words start.

    Returns:
        float (N,) bits per sample, one per file.
    """
    from ..data.datasets import UtteranceDataset

    if not files:
        raise ValueError("files: expected at least one audio file")
    window = int(window or model.config.sample_rate)
    data = UtteranceDataset(files, model.config.sample_rate, window, random_place=False, max_start=max_start)
    wavs = torch.stack([data[i][0] for i in range(len(data))])  # (N, window)
    return model.nll(wavs, batch_size=batch_size) / math.log(2.0)
