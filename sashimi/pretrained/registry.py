"""Every file behind a pretrained name, with its hash: one registry.

- Bundled models (:data:`BUNDLED_MODELS`): trained by this project, shipped inside the package, so
  they load offline. Each file's name carries the first hex digits of its SHA-256; the full digest
  is listed here and checked at every load (a changed or truncated file is refused, never used).
  Files are native checkpoints read with ``torch.load(..., weights_only=True)``; their metadata
  names the data they were trained on and its license.
- Bundled classifiers (:data:`BUNDLED_CLASSIFIERS`): the sample-quality classifiers of
  :mod:`sashimi.eval`, the same way.
- Published checkpoints (:data:`AR_SC09_URL`, :data:`DIFFWAVE_SC09_URLS`): downloaded once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["BundledModel", "BUNDLED_MODELS", "BUNDLED_CLASSIFIERS", "bundled_model_path", "bundled_classifier_path",
           "FSDD_CREDIT", "AR_SC09_URL", "DIFFWAVE_SC09_URLS", "WEIGHTS_DIR", "CLASSIFIER_WEIGHTS_DIR"]

WEIGHTS_DIR = Path(__file__).resolve().parent
CLASSIFIER_WEIGHTS_DIR = WEIGHTS_DIR.parent / "eval" / "weights"

#: The published autoregressive SC09 checkpoint (RF5/simple-sashimi v1.0, 1.1M steps, 4.8M params).
AR_SC09_URL = "https://github.com/RF5/simple-sashimi/releases/download/v1.0/ckpt_01100000.pt"
#: The published DiffWave+SaShiMi SC09 checkpoints (RF5/DiffWave-unconditional v0.2, 23.5M params),
#: by training steps.
DIFFWAVE_SC09_URLS = {
    "800k": "https://github.com/RF5/DiffWave-unconditional/releases/download/v0.2/sashimi_sc09_800k_steps.pt",
    "500k": "https://github.com/RF5/DiffWave-unconditional/releases/download/v0.2/sashimi_sc09_500k_steps.pt",
}

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


#: bundled classifiers: name -> (file in sashimi/eval/weights/, its SHA-256)
BUNDLED_CLASSIFIERS: dict[str, tuple[str, str]] = {
    # DigitCNN (24, 48, 96), 163k parameters, trained on FSDD (CC BY-SA 4.0) takes 10-49, selected on takes 5-9;
    # test (takes 0-4) accuracy 100% clean and with random gain and shift (see sashimi/eval/weights/README.md)
    "fsdd": ("fsdd_digits-ca56bedc.pt", "ca56bedc55100938af0152b2d8b06540c03def869141fa769722f05506582425"),
}


def bundled_classifier_path(name: str) -> Path:
    """The verified path of bundled classifier ``name`` (see :func:`bundled_model_path` for the errors)."""
    from ..persistence.download import verified_file

    if name not in BUNDLED_CLASSIFIERS:
        raise ValueError(f"no bundled classifier {name!r}; bundled: {sorted(BUNDLED_CLASSIFIERS)}")
    file_name, digest = BUNDLED_CLASSIFIERS[name]
    return Path(verified_file(CLASSIFIER_WEIGHTS_DIR / file_name, digest, f"bundled classifier {name!r}"))


def bundled_model_path(name: str) -> Path:
    """The verified path of bundled model ``name``.

    Raises:
        ValueError: unknown name (the known ones are listed), or a file whose SHA-256 differs
            from the listed one (changed or damaged: never used).
        FileNotFoundError: the file is missing (a broken installation).
    """
    from ..persistence.download import verified_file

    if name not in BUNDLED_MODELS:
        raise ValueError(f"no bundled model {name!r}; bundled: {sorted(BUNDLED_MODELS)}")
    entry = BUNDLED_MODELS[name]
    return Path(verified_file(WEIGHTS_DIR / entry.file, entry.sha256, f"bundled model {name!r}"))
