"""Loading and saving models: the native format and the published (seed) checkpoint formats.

Everything is read with ``torch.load(..., map_location='cpu', weights_only=True)``: checkpoints
are plain dicts of tensors and primitives, and nothing that could run code is unpickled.

Native format: ``{"format": "sashimi", "version": 1, "kind": <model kind>, "config": {...},
"state_dict": {...}}``; :func:`load_model` rebuilds the model from it alone.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable

import torch
import torch.nn as nn

from .ar import SashimiAR
from .config import ARConfig, config_from_dict
from .download import HashMismatchError, cached_download, is_url
from .errors import CheckpointError
from .s4 import convert_kernel_lengths

__all__ = ["load_model", "save_model", "load_checkpoint_file", "convert_rf5_state_dict", "load_published_state_dict",
           "register_model_kind", "build_uninitialized", "check_state_dict", "CheckpointError"]

# Version 2: each tier's S4 ``C`` is length-corrected for that tier's own length. Version 1 files
# corrected every layer for the full ``l_max`` (like the seed's) and are converted when loaded.
FORMAT_NAME, FORMAT_VERSION = "sashimi", 2
_READABLE_VERSIONS = (1, 2)


# kind -> (model class, config class); other modules register theirs (see register_model_kind).
_MODEL_KINDS: dict[str, tuple[type[nn.Module], type]] = {"ar": (SashimiAR, ARConfig)}
# Detectors for foreign formats: (name, predicate(ckpt), loader(ckpt, source) -> model).
_FOREIGN_FORMATS: list[tuple[str, Callable[[dict], bool], Callable[[dict, str], nn.Module]]] = []


def register_model_kind(kind: str, model_cls: type[nn.Module], config_cls: type) -> None:
    """Make ``kind`` loadable from native checkpoints."""
    _MODEL_KINDS[kind] = (model_cls, config_cls)


def register_foreign_format(name: str, detect: Callable[[dict], bool], load: Callable[[dict, str], nn.Module]) -> None:
    """Teach :func:`load_model` another checkpoint layout."""
    _FOREIGN_FORMATS.append((name, detect, load))


def _kind_of(model: nn.Module) -> str:
    for kind, (cls, _) in _MODEL_KINDS.items():
        if type(model) is cls:
            return kind
    raise TypeError(f"save_model: unsupported model type {type(model).__name__}")


# ---- reading files ------------------------------------------------------------------------
def load_checkpoint_file(source: str | os.PathLike, progress: bool = True, check_hash: bool = False,
                         sha256: str | None = None) -> dict:
    """Read a checkpoint dict from a path or URL (http(s)://, file://), safely.

    A URL is downloaded once into a cache entry of its own (see :mod:`sashimi.download`), checked
    against ``sha256`` or, with ``check_hash``, against the SHA-256 prefix in its file name
    (``name-<hash>.pt``, as in ``torch.hub.load_state_dict_from_url``).

    Raises:
        FileNotFoundError: the path does not exist.
        DownloadError: the URL could not be downloaded (the message says why, and what to do offline).
        CheckpointError: the file is truncated, not a checkpoint, holds non-tensor objects, or is
            not the file the digest describes.
    """
    source = os.fspath(source)
    if is_url(source):
        try:
            path = cached_download(source, sha256=sha256, check_hash=check_hash, progress=progress)
        except HashMismatchError as e:
            raise CheckpointError(str(e)) from e
    else:
        path = source
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint not found: {source}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for bad files; name the file in one message
        raise CheckpointError(f"{source} is not a readable checkpoint (truncated, corrupt, or not a PyTorch "
                              f"weights file): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{source}: expected a checkpoint dict, got {type(ckpt).__name__}")
    return ckpt


# ---- native format ------------------------------------------------------------------------
def save_model(model: nn.Module, path: str | os.PathLike, **extra: Any) -> None:
    """Save a model with its config so that :func:`load_model` can rebuild it.

    Written to a temporary file and renamed, so an interrupted save never leaves a partial file.

    Args:
        model: a SaShiMi model (e.g. :class:`SashimiAR`).
        path: destination file.
        **extra: extra picklable-safe entries (tensors, numbers, strings, dicts) to store.
    """
    atomic_save(native_checkpoint(model, _kind_of(model), **extra), os.fspath(path))


def native_checkpoint(model: nn.Module, kind: str, **extra) -> dict:
    """The native checkpoint dict of ``model`` (weights on CPU) under model ``kind``, plus ``extra``."""
    return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "kind": kind,
            "config": dataclasses.asdict(model.config),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra}


def atomic_save(obj: dict, path: str) -> None:
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then renamed over it:
    a write killed midway never leaves a partial file under ``path``."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def build_uninitialized(model_cls: type[nn.Module], config) -> nn.Module:
    """A model with allocated but uninitialised weights, to load a full state dict into.

    Skips the S4 initialisation (seconds to minutes for wide untied models on CPU), whose
    values a strict load overwrites anyway. Per-parameter optimiser hints (``_optim``) are kept.
    """
    with torch.device("meta"):
        model = model_cls(config)
    hints = {name: p._optim for name, p in model.named_parameters() if hasattr(p, "_optim")}
    model.to_empty(device="cpu")
    for name, p in model.named_parameters():
        if name in hints:
            p._optim = hints[name]
    return model


def _build_native(ckpt: dict, source: str) -> nn.Module:
    kind = ckpt.get("kind")
    if not isinstance(kind, str) or kind not in _MODEL_KINDS:
        raise CheckpointError(f"{source}: unknown model kind {kind!r} under key 'kind' (known: {sorted(_MODEL_KINDS)})")
    model_cls, config_cls = _MODEL_KINDS[kind]
    state_dict = check_state_dict(ckpt.get("state_dict"), source, "state_dict")
    values = ckpt.get("config")
    if not isinstance(values, dict):
        raise CheckpointError(f"{source}: key 'config' must be a mapping of model settings, got "
                              f"{_describe(values)}")
    try:
        config = config_from_dict(config_cls, dict(values), where=f"{source}: config")
    except (TypeError, ValueError) as e:
        raise CheckpointError(str(e)) from e
    model = build_uninitialized(model_cls, config)
    load_state_dict_strict(model, state_dict, source)
    if ckpt["version"] == 1:
        convert_kernel_lengths(model, config.l_max)
    return model


def check_state_dict(state_dict: Any, source: str, key: str) -> dict:
    """``state_dict`` (the checkpoint's entry ``key``) if it maps names to tensors, else a
    :class:`CheckpointError` naming the file and the key."""
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{source}: key '{key}' must be a dict of tensors (the weights), got "
                              f"{_describe(state_dict)}")
    bad = [k for k, v in state_dict.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"{source}: key '{key}' must map names to tensors; {len(bad)} entries do not, "
                              f"e.g. {bad[:3]}")
    return state_dict


def _describe(value: Any) -> str:
    """'nothing' for a missing entry, else the type and a short repr."""
    if value is None:
        return "nothing (missing)"
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def load_state_dict_strict(model: nn.Module, state_dict: dict, source: str) -> None:
    """Load every tensor, failing with one clear message on missing, unexpected or misshapen keys,
    or on NaN / infinite weights (a diverged run's: every output would be NaN)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
             for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) of the wrong shape, e.g. " + "; ".join(wrong[:3]))
    if missing:
        problems.append(f"{len(missing)} missing, e.g. {missing[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}")
    if problems:
        raise CheckpointError(f"{source}: the weights do not fit the model built from its config: "
                              + "; ".join(problems))
    bad = [k for k, v in state_dict.items() if (v.is_floating_point() or v.is_complex())
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{source}: {len(bad)} tensor(s) hold NaN or infinite values, e.g. {bad[:3]} "
                              "(a diverged training run?); a model cannot compute with them")
    model.load_state_dict(state_dict, strict=True)


# ---- the seed's formats ---------------------------------------------------------------------
# Seed key fragment -> native key fragment. Its S4 kernel sat one module deeper, its linear
# layers were Sequentials, and its 'transposed' linear biases have shape (out, 1).
_RF5_RENAMES = [
    (re.compile(r"\.kernel\.kernel\."), ".kernel."),
    (re.compile(r"\.output_linear\.0\."), ".output_linear."),
    (re.compile(r"\.layer\.ff\.0\.0\."), ".layer.fc1."),
    (re.compile(r"\.layer\.ff\.2\."), ".layer.fc2."),
]
# FFT-node caches recomputed accurately here: loading them would reproduce the seed's error.
_RF5_DROPPED = re.compile(r"\.kernel\.kernel\.(omega|z)$")


def convert_rf5_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a seed (RF5/simple-sashimi, RF5/DiffWave-unconditional) state dict to native keys.

    The FFT-node buffers ``omega``/``z`` are dropped on purpose (recomputed in float64);
    every other tensor is kept.
    """
    out = {}
    for key, value in state_dict.items():
        if _RF5_DROPPED.search(key):
            continue
        new = key
        for pattern, repl in _RF5_RENAMES:
            new = pattern.sub(repl, new)
        if new.endswith(".bias") and value.dim() == 2 and value.size(-1) == 1:
            value = value.squeeze(-1)
        out[new] = value
    return out


def load_published_state_dict(model: nn.Module, state_dict: dict, source: str, published_l_max: int,
                              convert=convert_rf5_state_dict) -> None:
    """Load a seed state dict strictly (keys mapped by ``convert``), then re-express each S4 layer's
    length-corrected ``C`` (the seed corrected all layers for ``published_l_max``) for the length
    its tier sees."""
    load_state_dict_strict(model, convert(state_dict), source)
    convert_kernel_lengths(model, published_l_max)


def _infer_state_config(state_dict: dict) -> dict:
    """d_state and tie_state are not in the seed's config: read them off the weights."""
    for key, value in state_dict.items():
        if key.endswith(".log_w_real") and torch.is_tensor(value) and value.dim() == 2:
            return {"d_state": 2 * value.shape[-1], "tie_state": value.shape[0] == 1}
    return {}


def _is_rf5_ar(ckpt: dict) -> bool:
    return "model_state_dict" in ckpt and isinstance(ckpt.get("cfg_yaml"), str)


def _load_rf5_ar(ckpt: dict, source: str) -> SashimiAR:
    import yaml

    try:
        cfg = yaml.safe_load(ckpt["cfg_yaml"]) or {}
    except yaml.YAMLError as e:
        raise CheckpointError(f"{source}: cfg_yaml is not valid YAML: {e}") from e
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{source}: key 'cfg_yaml' must hold a YAML mapping (the training config), got "
                              f"{_describe(cfg)}")
    if not cfg.get("model_cfg"):
        raise CheckpointError(f"{source}: cfg_yaml has no model_cfg section")
    if not isinstance(cfg["model_cfg"], dict):
        raise CheckpointError(f"{source}: cfg_yaml key 'model_cfg' must be a mapping of model settings, got "
                              f"{_describe(cfg['model_cfg'])}")
    model_cfg = dict(cfg["model_cfg"])
    if model_cfg.get("diffwave"):
        raise CheckpointError(f"{source}: model_cfg describes a DiffWave model, not an autoregressive one")
    state_dict = check_state_dict(ckpt["model_state_dict"], source, "model_state_dict")
    model_cfg.update(_infer_state_config(state_dict))
    if "sample_rate" in cfg:
        model_cfg["sample_rate"] = cfg["sample_rate"]
    try:
        config = config_from_dict(ARConfig, model_cfg, where=f"{source}: model_cfg")
    except (TypeError, ValueError) as e:
        raise CheckpointError(str(e)) from e
    model = build_uninitialized(SashimiAR, config)
    load_published_state_dict(model, state_dict, source, published_l_max=config.l_max)
    return model


register_foreign_format("rf5-ar", _is_rf5_ar, _load_rf5_ar)


# ---- entry point ------------------------------------------------------------------------------
def load_model(source: str | os.PathLike | dict, map_location: str | torch.device | None = "cpu",
               progress: bool = True, check_hash: bool = False, sha256: str | None = None) -> nn.Module:
    """Build a model from a checkpoint in any supported format.

    Args:
        source: a path, a URL (http(s):// or file://), an already loaded checkpoint dict, or a
            pretrained name: ``'sashimi_ar_fsdd'`` (bundled, offline), ``'sashimi_ar_sc09'``,
            ``'sashimi_diffwave_sc09'`` (the published weights, downloaded once). Native
            checkpoints and the published seed formats (simple-sashimi ``ckpt_*.pt``,
            DiffWave-unconditional) are recognised automatically.
        map_location: device for the model.
        progress: show a download progress bar for URLs.
        check_hash: verify the SHA-256 prefix in a URL's file name after downloading it.
        sha256: the expected SHA-256 of a URL's file (hex digest or a prefix of >= 8 digits),
            verified after downloading it.

    Returns:
        the model, in eval mode.
    """
    if isinstance(source, str) and not os.path.exists(source):
        from .hub import PRETRAINED_NAMES, load_pretrained

        if source in PRETRAINED_NAMES:  # a name, unless a file of that name is in the way
            return load_pretrained(source, progress=progress, device=map_location or "cpu")
    name = "<dict>" if isinstance(source, dict) else os.fspath(source)
    ckpt = source if isinstance(source, dict) else load_checkpoint_file(source, progress, check_hash, sha256)
    if ckpt.get("format") == FORMAT_NAME:
        if ckpt.get("version") not in _READABLE_VERSIONS:
            raise CheckpointError(f"{name}: checkpoint format version {ckpt.get('version')} is not supported "
                                  f"(this library reads versions {list(_READABLE_VERSIONS)})")
        model = _build_native(ckpt, name)
    else:
        for _, detect, load in _FOREIGN_FORMATS:
            if detect(ckpt):
                model = load(ckpt, name)
                break
        else:
            raise CheckpointError(f"{name}: unrecognised checkpoint layout (top-level keys: {sorted(map(str, ckpt))[:8]}); "
                                  "expected a sashimi checkpoint or a published simple-sashimi / DiffWave file")
    return model.to(map_location).eval()
