"""Does a class-conditional model say what it was asked? Accuracy and confusion of a classifier's
verdicts against the requested classes.

    idx = match_classes(model.classes, clf.classes)   # model class i -> classifier class idx[i]
    report = label_accuracy(probs, requested, idx, len(clf.classes))
"""
from __future__ import annotations

from typing import Sequence

import torch

from .classifier import SC09_CLASSES

__all__ = ["match_classes", "label_accuracy"]


def match_classes(model_classes: Sequence[str], classifier_classes: Sequence[str]) -> list[int]:
    """The classifier's index of each of a model's classes.

    A name matches itself (case-insensitive), and a digit matches its English word ('7' and
    'seven'), so a model trained on FSDD file names ('0'..'9') is scored by a classifier with
    SC09's classes ('zero'..'nine').

    Raises:
        ValueError: a model class the classifier does not know (named in the message).
    """
    lookup = {c.lower(): i for i, c in enumerate(classifier_classes)}
    out = []
    for name in model_classes:
        key = name.lower()
        if key not in lookup and key.isdigit() and int(key) < len(SC09_CLASSES):
            key = SC09_CLASSES[int(key)]
        if key not in lookup:
            raise ValueError(f"the classifier has no class for the model's class {name!r} "
                             f"(classifier classes: {list(classifier_classes)})")
        out.append(lookup[key])
    return out


def label_accuracy(probs: torch.Tensor, requested: torch.Tensor, classifier_index: Sequence[int],
                   n_classifier: int | None = None) -> dict:
    """How often the classifier hears the requested class.

    Args:
        probs: float (N, K) classifier probabilities of the samples.
        requested: int64 (N,) the model class each sample was generated for.
        classifier_index: from :func:`match_classes` (model class -> classifier class).
        n_classifier: K (default: ``probs.size(1)``).

    Returns:
        dict: ``accuracy`` (fraction of argmax == requested), ``per_class`` (accuracy per model
        class, in model order) and ``confusion`` (model classes x K counts: rows requested,
        columns the classifier's argmax).
    """
    if probs.dim() != 2 or requested.shape != (probs.size(0),) or probs.size(0) == 0:
        raise ValueError(f"probs must be (N, K) and requested (N,) with N > 0, got {tuple(probs.shape)} and "
                         f"{tuple(requested.shape)}")
    K = n_classifier or probs.size(1)
    index = torch.as_tensor(list(classifier_index), dtype=torch.long)
    if requested.min() < 0 or requested.max() >= len(index):
        raise ValueError(f"requested classes must be in [0, {len(index) - 1}]")
    predicted = probs.argmax(1).cpu()
    target = index[requested.cpu()]
    confusion = torch.zeros(len(index), K, dtype=torch.long)
    confusion.index_put_((requested.cpu(), predicted), torch.ones_like(predicted), accumulate=True)
    hits = predicted == target
    per_class = []
    for c in range(len(index)):
        mask = requested.cpu() == c
        per_class.append(float(hits[mask].float().mean()) if mask.any() else float("nan"))
    return {"accuracy": float(hits.float().mean()), "per_class": per_class, "confusion": confusion.tolist()}
