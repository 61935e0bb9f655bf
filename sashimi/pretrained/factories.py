"""The pretrained models' factory functions (re-exported by ``hubconf.py``) and the name lookup
behind :func:`sashimi.load_model`."""
from __future__ import annotations

import dataclasses
import os

import torch
import torch.nn as nn

from ..ar import SashimiAR
from ..config import ARConfig, DiffWaveConfig, config_from_dict
from ..diffwave import SashimiDiffWave
from ..persistence.checkpoint import FORMAT_NAME, load_checkpoint_file
from ..persistence.loader import load_model_file
from ..persistence.published import load_rf5_diffwave
from . import registry

__all__ = ["sashimi_ar_fsdd", "sashimi_ar_sc09", "sashimi_diffwave_sc09", "AR_SC09_URL", "DIFFWAVE_SC09_URLS",
           "PRETRAINED_NAMES", "load_pretrained", "load_bundled_model", "load_model"]

# module attributes, so that tests (and users) can point a name at another file
AR_SC09_URL = registry.AR_SC09_URL
DIFFWAVE_SC09_URLS = registry.DIFFWAVE_SC09_URLS


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def sashimi_ar_fsdd(pretrained: bool = True, progress: bool = True, device=None) -> SashimiAR:
    """Autoregressive SaShiMi trained by this project on FSDD (spoken digits, 8 kHz, 8-bit mu-law).

    The weights ship inside the package as a model folder (no download; SHA-256 checked at
    load). Trained on the Free Spoken Digit Dataset (CC BY-SA 4.0); see
    ``sashimi/pretrained/README.md`` for the recipe, the data split and the measured quality.

    Args:
        pretrained: load the bundled weights (else: the same architecture, freshly initialised).
        progress: unused (nothing to download); kept for the hub signature.
        device: where to put the model (None: CUDA if available, else CPU).

    Returns:
        a :class:`SashimiAR` in eval mode. ``model.unconditional_generate(4)`` gives (4, 8000)
        waveforms in [-1, 1]: one second at 8 kHz, silence, a digit, silence.
    """
    device = _device(device)
    model = load_bundled_model("sashimi_ar_fsdd")
    if not pretrained:
        model = SashimiAR(model.config)
    return model.to(device).eval()


def sashimi_ar_sc09(pretrained: bool = True, progress: bool = True, device=None,
                    checkpoint: str | os.PathLike | None = None) -> SashimiAR:
    """Autoregressive SaShiMi trained on SC09 (spoken digits, 16 kHz, 8-bit mu-law).

    Args:
        pretrained: load the published weights (else: the SC09 architecture, freshly initialised).
        progress: show a download progress bar.
        device: where to put the model (None: CUDA if available, else CPU).
        checkpoint: a local path or URL to load instead of the published file, a model folder
            (:func:`sashimi.save_pretrained`) or ``"hf://owner/name[@revision]"`` (Hugging Face Hub).

    Returns:
        a :class:`SashimiAR` in eval mode. ``model.unconditional_generate(4)`` gives (4, 16000)
        waveforms in [-1, 1]; ``model(tokens)`` gives (B, L, 256) logits.
    """
    device = _device(device)
    if not pretrained and checkpoint is None:
        return SashimiAR(ARConfig()).to(device).eval()
    model = load_model_file(checkpoint if checkpoint is not None else AR_SC09_URL, progress=progress)
    if not isinstance(model, SashimiAR):
        raise ValueError(f"sashimi_ar_sc09: {checkpoint} holds a {type(model).__name__}, not an autoregressive model")
    return model.to(device).eval()


def sashimi_diffwave_sc09(pretrained: bool = True, progress: bool = True, device=None,
                          checkpoint: str | os.PathLike | None = None, variant: str = "800k",
                          **overrides) -> SashimiDiffWave:
    """DiffWave with a SaShiMi backbone, trained on SC09 (spoken digits, 1 s at 16 kHz).

    Args:
        pretrained: load the published weights (else: the SC09 architecture, freshly initialised).
        progress: show a download progress bar.
        device: where to put the model (None: CUDA if available, else CPU).
        checkpoint: a local path or URL to load instead of the published file: a published-format
            DiffWave file, a native one written by :func:`sashimi.save_model`, a model folder
            (:func:`sashimi.save_pretrained`) or ``"hf://owner/name[@revision]"``.
        variant: which published weights: '800k' or '500k' training steps.
        **overrides: fields of the SC09 :class:`DiffWaveConfig` to replace (e.g. ``T=200``). The
            published files carry no config; sizes are read off their weights, so overrides are
            rarely needed. Not allowed with a native checkpoint, which holds its own config.

    Returns:
        a :class:`SashimiDiffWave` in eval mode. ``model.unconditional_generate(4, steps='fast')``
        gives (4, 16000) waveforms in [-1, 1] with 6 model calls; ``steps=None`` runs all 200.
    """
    if variant not in DIFFWAVE_SC09_URLS:
        raise ValueError(f"sashimi_diffwave_sc09: variant must be one of {sorted(DIFFWAVE_SC09_URLS)}, got {variant!r}")
    valid = sorted(f.name for f in dataclasses.fields(DiffWaveConfig))
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"sashimi_diffwave_sc09: unknown config override(s) {unknown}; valid keys: {valid}")
    device = _device(device)
    if not pretrained and checkpoint is None:
        values = {**dataclasses.asdict(DiffWaveConfig()), **overrides}
        config = config_from_dict(DiffWaveConfig, values, where="sashimi_diffwave_sc09")
        return SashimiDiffWave(config).to(device).eval()
    source = os.fspath(checkpoint) if checkpoint is not None else DIFFWAVE_SC09_URLS[variant]
    if not overrides:
        model = load_model_file(source, progress=progress)
    else:
        if source.startswith("hf://") or os.path.isdir(source):
            raise ValueError(f"sashimi_diffwave_sc09: {source} is a model folder with its own config; "
                             f"config overrides {sorted(overrides)} are only for the published files")
        ckpt = load_checkpoint_file(source, progress=progress)
        if ckpt.get("format") == FORMAT_NAME:
            raise ValueError(f"sashimi_diffwave_sc09: {source} is a native checkpoint with its own config; "
                             f"config overrides {sorted(overrides)} are only for the published files")
        model = load_rf5_diffwave(ckpt, source, config=overrides)
    if not isinstance(model, SashimiDiffWave):
        raise ValueError(f"sashimi_diffwave_sc09: {source} holds a {type(model).__name__}, not a DiffWave model")
    return model.to(device).eval()


#: names that ``sashimi.load_model`` and the command line accept besides paths and URLs: the
#: functions above of the same names (looked up when called, so that they can be replaced)
PRETRAINED_NAMES = ("sashimi_ar_fsdd", "sashimi_ar_sc09", "sashimi_diffwave_sc09")


def load_pretrained(name: str, **kwargs):
    """The pretrained model ``name`` (one of :data:`PRETRAINED_NAMES`); ``kwargs`` go to its function."""
    if name not in PRETRAINED_NAMES:
        raise ValueError(f"unknown pretrained model {name!r}; known: {', '.join(PRETRAINED_NAMES)}")
    return globals()[name](**kwargs)


def load_bundled_model(name: str, map_location="cpu") -> nn.Module:
    """Bundled model ``name`` (hash-checked), in eval mode on ``map_location``."""
    return load_model_file(os.fspath(registry.bundled_model_path(name)), map_location=map_location)


def load_model(source: str | os.PathLike | dict, map_location: str | torch.device | None = "cpu",
               progress: bool = True, check_hash: bool = False, sha256: str | None = None) -> nn.Module:
    """Build a model from a pretrained name or a checkpoint in any supported format.

    Args:
        source: a pretrained name: ``'sashimi_ar_fsdd'`` (bundled, offline), ``'sashimi_ar_sc09'``,
            ``'sashimi_diffwave_sc09'`` (the published weights, downloaded once); or a path, a URL
            (http(s):// or file://) or an already loaded checkpoint dict (see
            :func:`sashimi.persistence.load_model_file`: native checkpoints and the published seed
            formats are recognised automatically). A file of the same name as a pretrained
            model wins over the name.
        map_location: device for the model.
        progress: show a download progress bar for URLs.
        check_hash: verify the SHA-256 prefix in a URL's file name after downloading it.
        sha256: the expected SHA-256 of a URL's file (hex digest or a prefix of >= 8 digits).

    Returns:
        the model, in eval mode.
    """
    if isinstance(source, str) and source in PRETRAINED_NAMES and not os.path.exists(source):
        return load_pretrained(source, progress=progress, device=map_location or "cpu")
    return load_model_file(source, map_location=map_location, progress=progress, check_hash=check_hash,
                           sha256=sha256)
