"""Checkpoint files and the native format: safe reading, atomic writing, strict loading.

Everything is read with ``torch.load(..., map_location='cpu', weights_only=True)``: checkpoints
are plain dicts of tensors and primitives, and nothing that could run code is unpickled.

Native format: ``{"format": "sashimi", "version": 1, "kind": <model kind>, "config": {...},
"state_dict": {...}}``; :func:`load_model` rebuilds the model from it alone.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
import torch.nn as nn

from ..ar import SashimiAR
from ..config import ARConfig, DiffWaveConfig, config_from_dict
from ..diffwave import SashimiDiffWave
from ..s4 import convert_kernel_lengths
from ..errors import CheckpointError
from .download import HashMismatchError, cached_download, is_url

__all__ = ["save_model", "load_checkpoint_file", "native_checkpoint", "build_native", "atomic_save", "kind_of",
           "MODEL_KINDS", "build_uninitialized", "check_state_dict", "load_state_dict_strict", "describe",
           "CheckpointError", "FORMAT_NAME", "FORMAT_VERSION", "READABLE_VERSIONS"]

# Version 2: each tier's S4 ``C`` is length-corrected for that tier's own length. Version 1 files
# corrected every layer for the full ``l_max`` (like the seed's) and are converted when loaded.
FORMAT_NAME, FORMAT_VERSION = "sashimi", 2
READABLE_VERSIONS = (1, 2)


#: The model kinds of native checkpoints: kind -> (model class, config class). A static table: a
#: new kind of model is one line here.
MODEL_KINDS: dict[str, tuple[type[nn.Module], type]] = {
    "ar": (SashimiAR, ARConfig),
    "diffwave": (SashimiDiffWave, DiffWaveConfig),
}


def kind_of(model: nn.Module) -> str:
    """The native ``kind`` of ``model`` ('ar', 'diffwave').

    Raises:
        TypeError: not a model this library can save.
    """
    for kind, (cls, _) in MODEL_KINDS.items():
        if type(model) is cls:
            return kind
    raise TypeError(f"save_model: unsupported model type {type(model).__name__}")


# ---- reading files ------------------------------------------------------------------------
def load_checkpoint_file(source: str | os.PathLike, progress: bool = True, check_hash: bool = False,
                         sha256: str | None = None) -> dict:
    """Read a checkpoint dict from a path or URL (http(s)://, file://), safely.

    A URL is downloaded once into a cache entry of its own (see :mod:`sashimi.persistence.download`), checked
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
    atomic_save(native_checkpoint(model, kind_of(model), **extra), os.fspath(path))


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


def build_native(ckpt: dict, source: str) -> nn.Module:
    """The model a native checkpoint dict describes (weights loaded strictly, CPU, train mode)."""
    if ckpt.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(f"{source}: checkpoint format version {ckpt.get('version')} is not supported "
                              f"(this library reads versions {list(READABLE_VERSIONS)})")
    kind = ckpt.get("kind")
    if not isinstance(kind, str) or kind not in MODEL_KINDS:
        raise CheckpointError(f"{source}: unknown model kind {kind!r} under key 'kind' (known: {sorted(MODEL_KINDS)})")
    model_cls, config_cls = MODEL_KINDS[kind]
    state_dict = check_state_dict(ckpt.get("state_dict"), source, "state_dict")
    values = ckpt.get("config")
    if not isinstance(values, dict):
        raise CheckpointError(f"{source}: key 'config' must be a mapping of model settings, got "
                              f"{describe(values)}")
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
                              f"{describe(state_dict)}")
    bad = [k for k, v in state_dict.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"{source}: key '{key}' must map names to tensors; {len(bad)} entries do not, "
                              f"e.g. {bad[:3]}")
    return state_dict


def describe(value: Any) -> str:
    """'nothing' for a missing entry, else the type and a short repr."""
    if value is None:
        return "nothing (missing)"
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def load_state_dict_strict(model: nn.Module, state_dict: dict, source: str) -> None:
    """Load every tensor, or fail with one message naming each problem: the validation of every
    format (native and published ``.pt`` files, model folders), so that none accepts what another
    refuses.

    Refused: missing, unexpected or misshapen tensors; a floating-point tensor where the model
    holds another kind (or the reverse); NaN or infinite weights (a diverged run's: every output
    would be NaN). Accepted: another floating-point dtype (e.g. a ``model.half()`` saved as it
    was), cast to the model's, as ``load_state_dict`` does.

    Args:
        model: the model built from the file's config.
        state_dict: the file's tensors.
        source: the file, named in the message.

    Raises:
        CheckpointError: the tensors do not fit, or hold NaN / inf.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    common = [k for k in expected if k in state_dict]
    shapes = [f"'{k}' {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}" for k in common
              if tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    dtypes = [f"'{k}' {state_dict[k].dtype} vs {expected[k].dtype}" for k in common
              if _dtype_kind(state_dict[k]) != _dtype_kind(expected[k])]
    problems = [f"{len(x)} {what}, e.g. {', '.join(x[:3])}" for x, what in (
        (shapes, "tensor(s) of the wrong shape (file vs model)"),
        (dtypes, "tensor(s) of the wrong dtype (file vs model)"),
        ([f"'{k}'" for k in missing], "missing tensor(s)"),
        ([f"'{k}'" for k in unexpected], "unexpected tensor(s)")) if x]
    if problems:
        raise CheckpointError(f"{source}: the weights do not fit the model built from its config: "
                              + "; ".join(problems))
    bad = [k for k, v in state_dict.items() if (v.is_floating_point() or v.is_complex())
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{source}: {len(bad)} tensor(s) hold NaN or infinite values, e.g. {bad[:3]} "
                              "(a diverged training run?); a model cannot compute with them")
    model.load_state_dict(state_dict, strict=True)


def _dtype_kind(t: torch.Tensor) -> str:
    """'float', 'complex', 'bool' or 'int': dtypes of one kind convert without loss of meaning."""
    return "float" if t.is_floating_point() else "complex" if t.is_complex() else \
        "bool" if t.dtype == torch.bool else "int"
