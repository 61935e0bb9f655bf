"""SaShiMi: S4-based raw-audio generation ("It's Raw! Audio Generation with State-Space Models").

The public API, by layer (each imports only the layers above it in this list):

- leaves: :mod:`~sashimi.mulaw`, :mod:`~sashimi.sampling`, :mod:`~sashimi.config`, :mod:`~sashimi.errors`;
- kernels: :mod:`sashimi.ops` (the Cauchy kernel, FFT convolution), :mod:`~sashimi.native` (C++ builds);
- layers: :mod:`~sashimi.s4`, :mod:`~sashimi.backbone`;
- generation engines: :mod:`sashimi.fastgen` (they take a model's parts, never its class);
- models: :mod:`~sashimi.ar`, :mod:`~sashimi.diffusion`, :mod:`~sashimi.diffwave`;
- persistence: :mod:`sashimi.persistence` (files: the native, folder and published formats, the Hub);
- pretrained names: :mod:`sashimi.pretrained`;
- data: :mod:`sashimi.data`; applications: :mod:`sashimi.train`, :mod:`sashimi.eval`;
- the command line: :mod:`sashimi.cli`.

Names are imported when first used, so ``import sashimi`` is quick and changes nothing (the
command line alone sets OpenMP's wait policy, for its own process).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .version import __version__  # noqa: F401

# public name -> the module that defines it
_EXPORTS = {
    "SILENCE_TOKEN": "mulaw", "mulaw_decode": "mulaw", "mulaw_encode": "mulaw", "silence_token": "mulaw",
    "linear_encode": "mulaw", "linear_decode": "mulaw", "quantize": "mulaw", "dequantize": "mulaw",
    "SashimiError": "errors", "InputError": "errors", "AudioError": "errors", "ConfigError": "errors",
    "OutputError": "errors",
    "sample_logits": "sampling", "SamplingOptions": "sampling",
    "ARConfig": "config", "DiffWaveConfig": "config", "BackboneConfig": "config",
    "cauchy": "ops.cauchy",
    "S4": "s4", "Sashimi": "backbone",
    "SashimiAR": "ar", "NoiseSchedule": "diffusion", "SashimiDiffWave": "diffwave",
    "CheckpointError": "errors", "save_model": "persistence", "save_pretrained": "persistence",
    "load_model": "pretrained",
    # sample quality (sashimi.eval)
    "am_score": "eval", "frechet_distance": "eval", "inception_score": "eval", "load_classifier": "eval",
    "modified_inception_score": "eval",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # once
        return value
    raise AttributeError(f"module 'sashimi' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .ar import SashimiAR  # noqa: F401
    from .backbone import Sashimi  # noqa: F401
    from .config import ARConfig, BackboneConfig, DiffWaveConfig  # noqa: F401
    from .diffusion import NoiseSchedule  # noqa: F401
    from .diffwave import SashimiDiffWave  # noqa: F401
    from .eval import am_score, frechet_distance, inception_score, load_classifier, modified_inception_score  # noqa
    from .errors import AudioError, CheckpointError, ConfigError, InputError, OutputError, SashimiError  # noqa: F401
    from .mulaw import SILENCE_TOKEN, mulaw_decode, mulaw_encode, silence_token  # noqa: F401
    from .ops.cauchy import cauchy  # noqa: F401
    from .persistence import save_model, save_pretrained  # noqa: F401
    from .pretrained import load_model  # noqa: F401
    from .s4 import S4  # noqa: F401
    from .sampling import SamplingOptions, sample_logits  # noqa: F401
