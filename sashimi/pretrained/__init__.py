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


BUNDLED_MODELS: dict[str, BundledModel] = {}


def bundled_model_path(name: str) -> Path:
    """The verified path of bundled model ``name``.

    Raises:
        ValueError: unknown name (the known ones are listed).
        CheckpointError: the file is missing or its SHA-256 differs from the listed one.
    """
    from ..checkpoint import CheckpointError
    from ..download import sha256_file

    if name not in BUNDLED_MODELS:
        raise ValueError(f"no bundled model {name!r}; bundled: {sorted(BUNDLED_MODELS)}")
    entry = BUNDLED_MODELS[name]
    path = WEIGHTS_DIR / entry.file
    if not path.is_file():
        raise CheckpointError(f"bundled model {name}: {path} is missing (a broken installation? reinstall sashimi)")
    digest = _verified.get(path)
    if digest is None:
        digest = sha256_file(os.fspath(path))
        if digest != entry.sha256:
            raise CheckpointError(f"bundled model {name}: {path} has SHA-256 {digest}, expected {entry.sha256} "
                                  "(the file was changed or damaged; reinstall sashimi)")
        _verified[path] = digest
    return path


_verified: dict[Path, str] = {}  # files already hashed in this process


def load_bundled_model(name: str, map_location="cpu") -> nn.Module:
    """Bundled model ``name`` (hash-checked), in eval mode on ``map_location``."""
    from ..checkpoint import load_model

    return load_model(os.fspath(bundled_model_path(name)), map_location=map_location)
