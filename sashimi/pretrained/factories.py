"""The pretrained models' factory functions (re-exported by ``hubconf.py``) and the name lookup
behind :func:`sashimi.load_model`."""
from __future__ import annotations

import dataclasses
import inspect
import os

import torch
import torch.nn as nn

from ..ar import SashimiAR
from ..config import ARConfig, DiffWaveConfig, config_from_dict
from ..diffwave import SashimiDiffWave
from ..errors import InputError
from ..persistence.checkpoint import FORMAT_NAME, load_checkpoint_file
from ..persistence.loader import load_model_file
from ..persistence.published import load_rf5_diffwave
from . import registry

__all__ = ["sashimi_ar_fsdd", "sashimi_ar_sc09", "sashimi_ar_youtubemix", "sashimi_diffwave_sc09", "AR_SC09_URL",
           "DIFFWAVE_SC09_URLS", "AUTHORS_AR_URLS", "PRETRAINED_NAMES", "load_pretrained", "load_bundled_model",
           "load_model", "youtubemix_config", "paper_sc09_config", "split_pretrained_name"]

# module attributes, so that tests (and users) can point a name at another file
AR_SC09_URL = registry.AR_SC09_URL
DIFFWAVE_SC09_URLS = registry.DIFFWAVE_SC09_URLS
AUTHORS_AR_URLS = registry.AUTHORS_AR_URLS
AUTHORS_DIFFWAVE_URLS = registry.AUTHORS_DIFFWAVE_URLS
SC09_VARIANTS = ("rf5", "paper")
YOUTUBEMIX_VARIANTS = ("feb2022", "v4")


def youtubemix_config() -> ARConfig:
    """The authors' YouTubeMix architecture (Feb-2022 release): SC09's sizes, kernels for 8.2 s
    (131072 samples) at 16 kHz, no GLU (``postact=null``), TransposedLN norms, free ``Q``."""
    return ARConfig(l_max=131072, glu=False, norm="scalar", hurwitz=False)


def paper_sc09_config() -> ARConfig:
    """The authors' SC09 architecture (Feb-2022 release): GLU, TransposedLN norms, free ``Q``."""
    return ARConfig(norm="scalar", hurwitz=False)


def _authors_file(what: str, key: tuple, progress: bool):
    url = AUTHORS_AR_URLS[key]
    model = load_model_file(url, progress=progress, sha256=registry.AUTHORS_AR_SHA256.get(key))
    if not isinstance(model, SashimiAR):
        raise ValueError(f"{what}: {url} holds a {type(model).__name__}, not an autoregressive model")
    return model


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
                    checkpoint: str | os.PathLike | None = None, variant: str = "rf5") -> SashimiAR:
    """Autoregressive SaShiMi trained on SC09 (spoken digits, 16 kHz, 8-bit mu-law).

    Args:
        pretrained: load the published weights (else: the variant's architecture, freshly initialised).
        progress: show a download progress bar.
        device: where to put the model (None: CUDA if available, else CPU).
        checkpoint: a local path or URL to load instead of the published file, a model folder
            (:func:`sashimi.save_pretrained`) or ``"hf://owner/name[@revision]"`` (Hugging Face Hub).
        variant: ``'rf5'`` (the default: RF5/simple-sashimi's port, 1.1M steps) or ``'paper'`` (the
            authors' own ``checkpoints/sashimi_sc09.pt`` of krandiash/sashimi-release, the model behind
            the paper's SC09 table; TransposedLN norms and a free ``Q``, both run by the fast engines).

    Returns:
        a :class:`SashimiAR` in eval mode. ``model.unconditional_generate(4)`` gives (4, 16000)
        waveforms in [-1, 1]; ``model(tokens)`` gives (B, L, 256) logits.
    """
    if variant not in SC09_VARIANTS:
        raise InputError(f"sashimi_ar_sc09: variant must be one of {SC09_VARIANTS}, got {variant!r}")
    device = _device(device)
    if not pretrained and checkpoint is None:
        return SashimiAR(ARConfig() if variant == "rf5" else paper_sc09_config()).to(device).eval()
    if checkpoint is None and variant == "paper":
        return _authors_file("sashimi_ar_sc09", ("sc09", "feb2022"), progress).to(device).eval()
    model = load_model_file(checkpoint if checkpoint is not None else AR_SC09_URL, progress=progress)
    if not isinstance(model, SashimiAR):
        raise ValueError(f"sashimi_ar_sc09: {checkpoint} holds a {type(model).__name__}, not an autoregressive model")
    return model.to(device).eval()


def sashimi_ar_youtubemix(pretrained: bool = True, progress: bool = True, device=None,
                          checkpoint: str | os.PathLike | None = None, variant: str = "feb2022") -> SashimiAR:
    """The SaShiMi authors' autoregressive model of YouTubeMix piano music (16 kHz, 8-bit mu-law).

    The paper's model (Goel et al. 2022, Table 1/2 YouTubeMix rows): ``checkpoints/sashimi_youtubemix.pt``
    of ``krandiash/sashimi-release`` on the Hugging Face Hub, downloaded once (see
    :mod:`sashimi.persistence.authors` for the format). Its kernels are defined for 131072 samples
    (8.2 s); generation is recurrent, so it continues past that.

    Args:
        pretrained: load the published weights (else: the architecture, freshly initialised).
        progress: show a download progress bar.
        device: where to put the model (None: CUDA if available, else CPU).
        checkpoint: a local path or URL (or ``hf://owner/name/path/file.pt``) to load instead.
        variant: ``'feb2022'`` (the paper's file, the default) or ``'v4'`` (the authors' conversion of
            their re-trained V3 model, ``sashimi_youtubemix_v4.pt``; GLU instead of no post-activation).

    Returns:
        a :class:`SashimiAR` in eval mode: ``model.unconditional_generate(1, length=16000 * 16)`` gives
        16 seconds of piano.
    """
    if variant not in YOUTUBEMIX_VARIANTS:
        raise InputError(f"sashimi_ar_youtubemix: variant must be one of {YOUTUBEMIX_VARIANTS}, got {variant!r}")
    device = _device(device)
    if not pretrained and checkpoint is None:
        config = youtubemix_config()
        if variant == "v4":
            config = ARConfig(l_max=131072, glu=True, norm="scalar", hurwitz=True)
        return SashimiAR(config).to(device).eval()
    if checkpoint is None:
        return _authors_file("sashimi_ar_youtubemix", ("youtubemix", variant), progress).to(device).eval()
    model = load_model_file(checkpoint, progress=progress)
    if not isinstance(model, SashimiAR):
        raise ValueError(f"sashimi_ar_youtubemix: {checkpoint} holds a {type(model).__name__}, not an autoregressive model")
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
        variant: which published weights: '800k' or '500k' (RF5/DiffWave-unconditional, training steps),
            or the authors' own files (albertfgu/diffwave-sashimi, SHA-256 checked): 'paper-800k',
            'paper-500k' (d_model 128) or 'paper-small' (d_model 64, 500k steps).
        **overrides: fields of the SC09 :class:`DiffWaveConfig` to replace (e.g. ``T=200``). The
            published files carry no config; sizes are read off their weights, so overrides are
            rarely needed. Not allowed with a native checkpoint, which holds its own config.

    Returns:
        a :class:`SashimiDiffWave` in eval mode. ``model.unconditional_generate(4, steps='fast')``
        gives (4, 16000) waveforms in [-1, 1] with 6 model calls; ``steps=None`` runs all 200.
    """
    variants = sorted(DIFFWAVE_SC09_URLS) + sorted(AUTHORS_DIFFWAVE_URLS)
    if variant not in variants:
        raise InputError(f"sashimi_diffwave_sc09: variant must be one of {variants}, got {variant!r}")
    if variant in AUTHORS_DIFFWAVE_URLS and checkpoint is None and overrides and pretrained:
        raise ValueError(f"sashimi_diffwave_sc09: variant {variant!r} is the authors' file as published: config "
                         f"overrides {sorted(overrides)} apply to pretrained=False only")
    valid = sorted(f.name for f in dataclasses.fields(DiffWaveConfig))
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"sashimi_diffwave_sc09: unknown config override(s) {unknown}; valid keys: {valid}")
    device = _device(device)
    if not pretrained and checkpoint is None:
        values = dataclasses.asdict(DiffWaveConfig())
        if variant in AUTHORS_DIFFWAVE_URLS:  # the authors' blocks: S4+FF pairs, TransposedLN norms
            values.update(norm="scalar", final_norm="scalar", paired=True, d_model=64 if variant == "paper-small" else 128)
        values.update(overrides)
        config = config_from_dict(DiffWaveConfig, values, where="sashimi_diffwave_sc09")
        return SashimiDiffWave(config).to(device).eval()
    source = os.fspath(checkpoint) if checkpoint is not None else \
        DIFFWAVE_SC09_URLS.get(variant) or AUTHORS_DIFFWAVE_URLS[variant]
    if not overrides:
        digest = registry.AUTHORS_DIFFWAVE_SHA256.get(variant) if checkpoint is None else None
        model = load_model_file(source, progress=progress, sha256=digest)
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
PRETRAINED_NAMES = ("sashimi_ar_fsdd", "sashimi_ar_sc09", "sashimi_ar_youtubemix", "sashimi_diffwave_sc09")


def split_pretrained_name(spec) -> tuple[str, str | None] | None:
    """``'sashimi_ar_sc09:paper'`` -> ``('sashimi_ar_sc09', 'paper')``, ``'sashimi_ar_fsdd'`` ->
    ``('sashimi_ar_fsdd', None)``; None for anything that is not a pretrained name (with a variant)."""
    if not isinstance(spec, str) or "://" in spec:
        return None
    name, _, variant = spec.partition(":")
    if name not in PRETRAINED_NAMES or (_ and not variant):
        return None
    return name, variant or None


def load_pretrained(name: str, **kwargs):
    """The pretrained model ``name`` (one of :data:`PRETRAINED_NAMES`, optionally ``name:variant``, e.g.
    ``'sashimi_ar_sc09:paper'``); ``kwargs`` go to its function."""
    parts = split_pretrained_name(name)
    if parts is not None and parts[1] is not None:
        name, kwargs = parts[0], {**kwargs, "variant": parts[1]}
        if "variant" not in inspect.signature(globals()[name]).parameters:
            raise InputError(f"pretrained model {name} has no variants (got {name}:{parts[1]})")
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
            ``'sashimi_ar_youtubemix'``, ``'sashimi_diffwave_sc09'`` (the published weights, downloaded
            once), optionally with a variant, ``'sashimi_ar_sc09:paper'``; or a path, a URL
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
    if split_pretrained_name(source) is not None and not os.path.exists(source):
        return load_pretrained(source, progress=progress, device=map_location or "cpu")
    return load_model_file(source, map_location=map_location, progress=progress, check_hash=check_hash,
                           sha256=sha256)
