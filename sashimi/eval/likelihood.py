"""Test likelihood of an autoregressive model on short utterances, as the bundled model is scored."""
from __future__ import annotations

import math

import torch

__all__ = ["utterance_nll_bits", "nats_per_sample"]


@torch.no_grad()
def utterance_nll_bits(model, files: list[str], window: int | None = None, batch_size: int = 16,
                       max_start: int | None = None, labels=None, *, onset: float | None = None,
                       onset_margin: int = 0, peak: float | None = None) -> torch.Tensor:
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
        labels: a class-conditional model's (N,) classes of the files (names or indices; None: no label).
        onset, onset_margin, peak: for a model trained with ``utterance_onset`` /
            ``utterance_peak``: each recording's lead-in cut and its level set as it saw them
            (see :class:`~sashimi.data.datasets.UtteranceDataset`).

    Returns:
        float (N,) bits per sample, one per file.
    """
    from ..data.datasets import UtteranceDataset

    if not files:
        raise ValueError("files: expected at least one audio file")
    window = int(window or model.config.sample_rate)
    data = UtteranceDataset(files, model.config.sample_rate, window, random_place=False, max_start=max_start,
                            onset=onset, onset_margin=onset_margin, peak=peak)
    wavs = torch.stack([data[i][0] for i in range(len(data))])  # (N, window)
    return model.nll(wavs, batch_size=batch_size, labels=labels) / math.log(2.0)


@torch.no_grad()
def nats_per_sample(model, wav, labels=None) -> float:
    """Mean NLL (nats per sample) of one waveform (L,), as :meth:`SashimiAR.nll` but of any length:
    longer than the model's ``l_max``, it is scored by the recurrent fast engine, 16,000 steps at a time.

    Args:
        model: a :class:`SashimiAR`.
        wav: float (L,) waveform in [-1, 1].
        labels: a class-conditional model's class of the waveform (a name or index, or a list of
            one); None: the "no label" class, as :meth:`SashimiAR.nll` means it. The engine is
            given this condition explicitly: nothing that ran before in the process changes it.

    Returns:
        nats per sample.
    """
    import torch.nn.functional as F

    from ..mulaw import silence_token

    if labels is not None and not isinstance(labels, (list, tuple)) and not torch.is_tensor(labels):
        labels = [labels]
    if wav.numel() <= model.config.l_max:
        return float(model.nll(wav.unsqueeze(0).to(model.device), labels=labels)[0])
    from .. import fastgen

    inputs_vectors, _ = model.conditioning(labels, 1)  # checks the labels; the engine adds the block terms
    condition = inputs_vectors if model.config.num_classes else None
    targets = model.quantize(wav.unsqueeze(0))  # the model's own quantization (mu-law or linear)
    inputs = F.pad(targets[:, :-1], (1, 0), value=silence_token(model.config.mu_levels))
    engine = fastgen.get_engine(model, 1, weights="float32")  # a measurement: never the opt-in float16 weights
    engine.reset(condition)
    total, chunk = 0.0, 16000
    with torch.no_grad():
        for start in range(0, inputs.size(1), chunk):
            logits = engine.feed(inputs[:, start:start + chunk].to(model.device), want_logits=True).float()
            tgt = targets[:, start:start + chunk].to(logits.device)
            total += float(-torch.log_softmax(logits, -1).gather(-1, tgt.unsqueeze(-1)).sum())
    return total / targets.size(1)
