"""The one parser of class labels, for the API (``labels=`` of the models) and the command line (``--label``).

A class-conditional model has ``C`` class names (index i is class i) and, for training with label
dropout, a "no label" class at index ``C``. Labels arrive as names, indices or both:

- a **string** is a class name first. Text that is not a name but reads as an integer (``"7"``) is
  taken as an index only where that is unambiguous: when no class name reads as an integer. With
  names ``['1', '2', '3']``, ``"1"`` is class '1' and ``"0"`` is an error (never index 0, which is
  class '1' too: two texts for one class, and a silent mix-up of names and indices).
- an **integer** (Python, numpy, or a 0-d integer tensor) is an index: its type says so.
- an integer **tensor** or numpy array of shape (B,) is B indices.

Every refusal is an :class:`~sashimi.errors.InputError` (a ``ValueError``) or a ``TypeError`` whose
message names the argument (``name``) and what was expected.

A leaf module: it imports nothing from the package but :mod:`sashimi.errors`.
"""
from __future__ import annotations

import numbers
import re
from typing import Sequence

import numpy as np
import torch

from .errors import InputError

__all__ = ["parse_labels", "parse_label_text", "check_guidance", "model_labels"]

_INTEGER = re.compile(r"[+-]?\d+")


def parse_labels(labels, class_names: Sequence[str], *, batch: int | None = None, allow_none_class: bool = True,
                 name: str = "labels") -> torch.Tensor:
    """Class indices from names and/or indices.

    Args:
        labels: a list or tuple of class names and/or integer indices (numpy integers and 0-d
            integer tensors included), or an integer tensor / numpy array of shape (B,) or ().
        class_names: the model's C class names (index i is class i).
        batch: the number of labels required (None: any number, at least one).
        allow_none_class: accept index C, the "no label" class.
        name: the argument's name, for messages (e.g. ``"labels"`` or ``"--label"``).

    Returns:
        int64 (B,) class indices in [0, C] ([0, C - 1] without ``allow_none_class``); on the
        input tensor's device for a tensor, else on the CPU.

    Raises:
        InputError: an unknown name, an index out of range, an ambiguous integer text, an empty
            list or the wrong count. TypeError: labels of a type that holds no class.
    """
    names = [str(n) for n in class_names]
    C = len(names)
    if isinstance(labels, np.ndarray):
        if labels.dtype.kind not in "iu":
            raise TypeError(f"{name} must hold integer class indices, got a numpy array of dtype {labels.dtype}")
        labels = torch.from_numpy(labels.astype(np.int64))
    if torch.is_tensor(labels):
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer class indices, got a tensor of dtype {labels.dtype}")
        if labels.dim() > 1:
            raise InputError(f"{name} must have shape ({'B' if batch is None else batch},), got {tuple(labels.shape)}")
        index = labels.reshape(-1).long()
    elif isinstance(labels, (list, tuple)):
        index = torch.tensor([_one(item, names, name) for item in labels], dtype=torch.long)
    else:
        hint = (f"; for one sample of that class write [{labels!r}]"
                if isinstance(labels, (str, numbers.Integral)) and not isinstance(labels, bool) else "")
        raise TypeError(f"{name} must be a LongTensor or a list of class names or indices (one per sequence), "
                        f"got {type(labels).__name__} {labels!r}{hint}")
    if index.numel() == 0 and batch != 0:
        raise InputError(f"{name} is empty; give one class per sequence (this model's classes: {', '.join(names)})")
    if batch is not None and index.numel() != batch:
        raise InputError(f"{name} holds {index.numel()} entries, but the batch holds {batch} sequences")
    high = C if allow_none_class else C - 1
    if index.numel() and (int(index.min()) < 0 or int(index.max()) > high):
        none = f" ({C}: no label)" if allow_none_class else ""
        raise InputError(f"{name} must be class indices in [0, {high}]{none}, got min {int(index.min())}, "
                         f"max {int(index.max())}")
    return index


def parse_label_text(text: str, class_names: Sequence[str], *, name: str = "--label") -> list[int]:
    """Class indices from command-line text: comma-separated names or (where unambiguous) indices.

    Args:
        text: e.g. ``"7"``, ``"yes,no"`` or ``"0,3,5"``.
        class_names: the model's class names.
        name: the option, for messages.

    Returns:
        one index in [0, C - 1] per comma-separated item (the "no label" class is not a choice).

    Raises:
        InputError: an empty item, an unknown name, an index out of range or an ambiguous integer.
    """
    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        raise InputError(f"{name} {text!r}: an empty class; give names or indices separated by commas")
    return parse_labels(items, class_names, allow_none_class=False, name=name).tolist()


def _one(item, names: list[str], name: str) -> int:
    """One class: a name (or an unambiguous integer text), or an integer index."""
    if isinstance(item, str):
        text = item.strip()
        if text in names:
            return names.index(text)
        numeric_names = [n for n in names if _INTEGER.fullmatch(n.strip())]
        if _INTEGER.fullmatch(text) and not numeric_names:
            return int(text)  # the range is checked with the others
        if _INTEGER.fullmatch(text):
            raise InputError(f"{name}: {item!r} is not a class name, and this model's class names are numbers "
                             f"({', '.join(names)}), so it is not taken as an index either; give a name")
        raise InputError(f"{name}: unknown class {item!r}; this model's classes are {', '.join(names)}"
                         + ("" if numeric_names else f" (or their indices 0-{len(names) - 1})"))
    if torch.is_tensor(item):
        if item.dim() == 0 and not (item.is_floating_point() or item.is_complex() or item.dtype == torch.bool):
            return int(item)
    elif isinstance(item, numbers.Integral) and not isinstance(item, (bool, np.bool_)):
        return int(item)  # int, numpy integers
    raise TypeError(f"{name} must hold class names or integer indices (str or int), got {type(item).__name__} {item!r}")


def check_guidance(guidance, labels) -> float:
    """Classifier-free guidance weight of a conditional generation call, as a float.

    Args:
        guidance: a finite number > 0 (Python, numpy or a 0-d tensor); 1.0 is plain conditional
            sampling.
        labels: the call's checked labels (None: none were given, so only 1.0 makes sense).

    Raises:
        InputError: not a finite number > 0, or a weight other than 1 without labels.
    """
    if torch.is_tensor(guidance) and guidance.dim() == 0 and not guidance.is_complex() and guidance.dtype != torch.bool:
        guidance = guidance.item()  # a 0-d tensor number, e.g. torch.tensor(2.)
    if not isinstance(guidance, numbers.Real) or isinstance(guidance, (bool, np.bool_)) or not 0 < guidance < float("inf"):
        raise InputError(f"guidance must be a finite number > 0 (a float, or a 0-d tensor), got {guidance!r}")
    if guidance != 1.0 and labels is None:
        raise InputError("guidance needs labels: it mixes the labelled and the unlabelled predictions")
    return float(guidance)


def model_labels(labels, class_names: Sequence[str] | None, *, batch: int | None = None,
                 allow_none_class: bool = True) -> torch.Tensor | None:
    """A model's ``labels=`` argument checked: None stays None ("no label"); labels for a model
    without classes (``class_names`` None or empty) are refused; anything else goes through
    :func:`parse_labels`. The one check behind ``check_labels`` of both models."""
    if labels is None:
        return None
    if not class_names:
        raise InputError("labels were given, but this model is unconditional (config.num_classes=0)")
    return parse_labels(labels, class_names, batch=batch, allow_none_class=allow_none_class)
