"""Models trained by this project and shipped inside the package: they load offline.

Each file sits in this folder under a name that carries the first hex digits of its SHA-256; the
full digest is listed in :data:`BUNDLED_MODELS` and checked at every load (a changed or
truncated file is refused, never used). Files are native checkpoints read with
``torch.load(..., weights_only=True)``; their metadata names the data they were trained on and its
license. ``sashimi.load_model(name)`` and the hub entry points of the same names load them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

__all__ = ["BundledModel", "BUNDLED_MODELS", "bundled_model_path", "load_bundled_model", "FSDD_CREDIT"]

WEIGHTS_DIR = Path(__file__).resolve().parent

FSDD_CREDIT = ("Trained on the Free Spoken Digit Dataset (FSDD; Zohar Jackson et al., "
               "https://github.com/Jakobovski/free-spoken-digit-dataset), licensed CC BY-SA 4.0 "
               "(https://creativecommons.org/licenses/by-sa/4.0/).")


@dataclass(frozen=True)
class BundledModel:
    """A model file shipped in this folder.

    Attributes:
        name: the name ``load_model`` and torch.hub know it by.
        file: its file name here.
        sha256: the file's full SHA-256 (hex).
        summary: one line: what it is and how it was trained.
    """

    name: str
    file: str
    sha256: str
    summary: str


BUNDLED_MODELS: dict[str, BundledModel] = {m.name: m for m in (
    BundledModel(
        name="sashimi_ar_fsdd",
        file="sashimi_ar_fsdd-a0ac18b4.pt",
        sha256="a0ac18b48b7bce74671d194418d2875c960e3ab1d19beb72fc5397d47c6b3f16",
        summary="autoregressive SaShiMi (d_model 32, 4 layers per tier, 685k parameters) on 8 kHz FSDD digits: "
                "recipes/fsdd_ar.yaml, steps 4,400-4,800 averaged; test NLL 1.691 bits, IS 3.60 (see README.md here)",
    ),
)}


def bundled_model_path(name: str) -> Path:
    """The verified path of bundled model ``name``.

    Raises:
        ValueError: unknown name (the known ones are listed), or a file whose SHA-256 differs
            from the listed one (changed or damaged: never used).
        FileNotFoundError: the file is missing (a broken installation).
    """
    from ..download import verified_file

    if name not in BUNDLED_MODELS:
        raise ValueError(f"no bundled model {name!r}; bundled: {sorted(BUNDLED_MODELS)}")
    entry = BUNDLED_MODELS[name]
    return Path(verified_file(WEIGHTS_DIR / entry.file, entry.sha256, f"bundled model {name!r}"))


def load_bundled_model(name: str, map_location="cpu") -> nn.Module:
    """Bundled model ``name`` (hash-checked), in eval mode on ``map_location``."""
    from ..checkpoint import load_model

    return load_model(os.fspath(bundled_model_path(name)), map_location=map_location)
