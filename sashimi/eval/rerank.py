"""Best-of-K reranking: of K candidates drawn for one requested class, keep the one a classifier
hears as that class with the highest probability.

This is a filter on the model's output, not the model: numbers that describe the model itself
(accuracy-as-asked, IS, FID) are measured without it.

    idx = match_classes(model.classes, clf.classes)
    best, prob, pick = best_of(candidates, requested, clf, idx, rate)   # candidates (N, K, L)
"""
from __future__ import annotations

from typing import Sequence

import torch

from .classifier import Classifier

__all__ = ["best_of"]


def best_of(candidates: torch.Tensor, requested: torch.Tensor | Sequence[int], classifier: Classifier,
            classifier_index: Sequence[int], sample_rate: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep, for each request, the candidate the classifier hears as the requested class most surely.

    Args:
        candidates: float (N, K, L) waveforms: K candidates for each of N requests.
        requested: (N,) the model's class index of each request.
        classifier: scores the candidates (:meth:`Classifier.predict`).
        classifier_index: the classifier's index of each of the model's classes
            (:func:`sashimi.eval.match_classes`).
        sample_rate: the candidates' rate in Hz.

    Returns:
        best: (N, L) the kept candidates (from ``candidates``, unchanged);
        prob: float64 (N,) the classifier's probability of the requested class for each;
        pick: int64 (N,) which candidate (0..K-1) was kept.

    Raises:
        ValueError: shapes that do not fit, or a requested class outside ``classifier_index``.
    """
    if not torch.is_tensor(candidates) or candidates.dim() != 3 or 0 in candidates.shape:
        raise ValueError("candidates must be a non-empty (N, K, L) tensor of waveforms, got "
                         f"{tuple(candidates.shape) if torch.is_tensor(candidates) else type(candidates).__name__}")
    n, k, length = candidates.shape
    requested = torch.as_tensor(requested, dtype=torch.long).reshape(-1).cpu()
    if requested.numel() != n:
        raise ValueError(f"requested holds {requested.numel()} classes for {n} sets of candidates")
    if int(requested.min()) < 0 or int(requested.max()) >= len(classifier_index):
        raise ValueError(f"requested classes must be in [0, {len(classifier_index) - 1}], got "
                         f"{requested.tolist()}")
    probs, _ = classifier.predict(candidates.reshape(n * k, length).float(), sample_rate)  # (N*K, C)
    wanted = torch.as_tensor(classifier_index, dtype=torch.long)[requested]  # (N,)
    p = probs.reshape(n, k, -1).gather(2, wanted.view(n, 1, 1).expand(n, k, 1)).squeeze(2)  # (N, K)
    prob, pick = p.max(1)  # the first candidate wins a tie
    return candidates[torch.arange(n), pick.to(candidates.device)], prob, pick
