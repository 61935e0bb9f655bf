"""Models trained by this project and shipped inside the package: they load offline.

Each model is a model folder here (config.json + model.safetensors + README.md, no pickle; see
:mod:`sashimi.persistence.folder`), written by ``sashimi export --format folder``. The SHA-256 of
each of its files is listed in :data:`BUNDLED_MODELS` and checked at load (a changed or truncated
file is refused, never used). Their provenance names the data they were trained on and its
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
        folder: its model folder's name here.
        files: the SHA-256 (hex) of each file of the folder that loading reads.
        summary: one line: what it is and how it was trained.
    """

    name: str
    folder: str
    files: dict
    summary: str


BUNDLED_MODELS: dict[str, BundledModel] = {m.name: m for m in (
    BundledModel(
        name="sashimi_ar_fsdd",
        # sashimi export sashimi_ar_fsdd-a0ac18b4.pt --format folder --credit fsdd (the .pt file this replaces,
        # sha256 a0ac18b48b7bce74671d194418d2875c960e3ab1d19beb72fc5397d47c6b3f16: the same tensors, bit for bit)
        folder="sashimi_ar_fsdd",
        files={"config.json": "bae604a13d41f15edc03e4a233de2a15d58bf0cdc8aee3b7b183583b544490dd",
               "model.safetensors": "8e9399cc0e649950c71fb3e91009355ba4f4ea363ed7e4436b464cdc6228777c"},
        summary="autoregressive SaShiMi (d_model 32, 4 layers per tier, 685k parameters) on 8 kHz FSDD digits: "
                "recipes/fsdd_ar.yaml, steps 4,400-4,800 averaged; test NLL 1.691 bits, IS 3.60 (see README.md here)",
    ),
)}


def bundled_model_path(name: str) -> Path:
    """The verified model folder of bundled model ``name`` (each listed file's SHA-256 checked).

    Raises:
        ValueError: unknown name (the known ones are listed), or a file whose SHA-256 differs
            from the listed one (changed or damaged: never used).
        FileNotFoundError: a file is missing (a broken installation).
    """
    from ..download import verified_file

    if name not in BUNDLED_MODELS:
        raise ValueError(f"no bundled model {name!r}; bundled: {sorted(BUNDLED_MODELS)}")
    entry = BUNDLED_MODELS[name]
    for file_name, digest in entry.files.items():
        verified_file(WEIGHTS_DIR / entry.folder / file_name, digest, f"bundled model {name!r}")
    return WEIGHTS_DIR / entry.folder


def load_bundled_model(name: str, map_location="cpu") -> nn.Module:
    """Bundled model ``name`` (hash-checked), in eval mode on ``map_location``."""
    from ..checkpoint import load_model

    return load_model(os.fspath(bundled_model_path(name)), map_location=map_location)
