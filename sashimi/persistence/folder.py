"""The folder format: a model as ``config.json`` + ``model.safetensors`` + a ``README.md`` card.

    sashimi.save_pretrained(model, "my_model")        # writes my_model/{config.json, model.safetensors, README.md}
    model = sashimi.load_model("my_model")            # the same model, the same logits

Nothing in the folder is a pickle, and loading never calls ``torch.load``: ``config.json`` is read
as JSON and the weights with ``safetensors``, so a folder from anywhere (the Hub included) cannot
run code. ``config.json``::

    {"format": "sashimi", "format_version": 1,
     "kind": "ar" | "diffwave" | "classifier" | <any registered kind>,
     "config": {...},                      # dataclasses.asdict of the model's config (kind-specific)
     "class_names": [...] | null,          # a copy of the model's class names, if it has any
     "sha256": {"model.safetensors": "<hex>"},
     "provenance": {"saved_by": ..., "created": ..., "source": ..., "credit": ..., ...}}

The config is written generically (every field of the model's config dataclass), so new config
fields round-trip without changes here. Loading checks every key, the weights' SHA-256, and each
tensor's name, shape and dtype, and names the file and the key (or tensor) in one
:class:`~sashimi.persistence.checkpoint.CheckpointError`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from ..config import config_from_dict
from .checkpoint import MODEL_KINDS, CheckpointError, build_uninitialized, describe, load_state_dict_strict
from .download import sha256_file

__all__ = ["FolderKind", "OTHER_KINDS", "save_pretrained", "load_folder", "read_config", "is_model_folder",
           "CONFIG_FILE", "WEIGHTS_FILE", "CARD_FILE", "FOLDER_FILES"]

FORMAT_NAME, FORMAT_VERSION = "sashimi", 1
CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "README.md"
#: the files of a model folder, in upload order (the card last)
FOLDER_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)
_KEYS = {"format", "format_version", "kind", "config", "class_names", "sha256", "provenance"}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FolderKind:
    """How one kind of object (not a registered model kind) goes into a folder and back.

    Attributes:
        name: the ``kind`` written to config.json.
        cls: objects of exactly this type are saved under this kind.
        parts: ``obj -> (config dict, module holding the weights, class names or None, provenance)``.
        build: ``(config dict, class names or None, provenance, where) -> (obj, its module)``, the
            module's weights allocated but not yet loaded; raises CheckpointError naming ``where``.
    """

    name: str
    cls: type
    parts: Callable[[Any], tuple[dict, nn.Module, list | None, dict]]
    build: Callable[[dict, list | None, dict, str], tuple[Any, nn.Module]]


#: Kinds whose objects live above this layer, and who loads them: a folder of such a kind is
#: recognised as ours, and :func:`load_folder` is given its :class:`FolderKind` by that loader
#: (``extra_kinds``); :func:`save_pretrained` finds it as the object's class attribute ``folder_kind``.
OTHER_KINDS = {"classifier": "sashimi.eval.load_classifier"}


def _model_kind(name: str) -> FolderKind:
    """A model kind of :mod:`sashimi.persistence.checkpoint` (its config dataclass serialised field by field)."""
    model_cls, config_cls = MODEL_KINDS[name]

    def parts(model):
        return dataclasses.asdict(model.config), model, _config_class_names(model.config), {}

    def build(values, class_names, provenance, where):
        try:
            config = config_from_dict(config_cls, dict(values), where=where)
        except (TypeError, ValueError) as e:
            raise CheckpointError(str(e)) from e
        model = build_uninitialized(model_cls, config)
        return model, model

    return FolderKind(name, model_cls, parts, build)


def _config_class_names(config) -> list[str] | None:
    names = getattr(config, "class_names", None)
    return [str(n) for n in names] if names else None


def _kinds(extra: dict[str, FolderKind] | None = None) -> dict[str, FolderKind]:
    return {**{name: _model_kind(name) for name in MODEL_KINDS}, **(extra or {})}


def _kind_of(obj) -> FolderKind:
    own = getattr(type(obj), "folder_kind", None)
    if isinstance(own, FolderKind) and type(obj) is own.cls:
        return own
    for kind in _kinds().values():
        if type(obj) is kind.cls:
            return kind
    raise TypeError(f"save_pretrained: cannot save a {type(obj).__name__} "
                    f"(known kinds: {sorted(set(MODEL_KINDS) | set(OTHER_KINDS))})")


# ---- writing ----------------------------------------------------------------------------------
def save_pretrained(model, folder: str | os.PathLike, *, provenance: dict | None = None,
                    overwrite: bool = False) -> Path:
    """Write ``model`` as a folder: ``config.json``, ``model.safetensors`` and a ``README.md`` card.

    The folder is written beside its destination and renamed into place, so an interrupted save
    leaves no partial folder under the final name.

    Args:
        model: a SaShiMi model (:class:`~sashimi.SashimiAR`, :class:`~sashimi.SashimiDiffWave`) or a
            :class:`~sashimi.eval.Classifier`.
        folder: the folder to create.
        provenance: JSON-able facts stored under ``"provenance"`` and shown on the card, e.g.
            ``source`` (the checkpoint the weights came from), ``step``, ``credit`` (data credit and
            license text), ``license`` (an identifier for the card, e.g. ``"cc-by-sa-4.0"``). The
            library and torch versions (``saved_by``) and the date (``created``) are added.
        overwrite: replace an existing model folder (a folder holding anything else is never replaced).

    Returns:
        the folder's path.

    Raises:
        TypeError: ``model`` is of no known kind.
        FileExistsError: ``folder`` exists and ``overwrite`` is False, or it is not a model folder.
    """
    from safetensors.torch import save_file

    from .card import model_card

    kind = _kind_of(model)
    config, module, class_names, own = kind.parts(model)
    folder = Path(folder)
    if folder.exists():
        if not overwrite:
            raise FileExistsError(f"{folder} exists; not overwritten")
        if not folder.is_dir() or not set(os.listdir(folder)) <= set(FOLDER_FILES):
            raise FileExistsError(f"{folder} exists and is not a model folder; not replaced")
    from ..version import __version__

    # safetensors refuses tensors that share memory (e.g. views of one buffer): each gets its own copy
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}
    tmp = folder.parent / f".{folder.name}.tmp{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        save_file(tensors, os.fspath(tmp / WEIGHTS_FILE))
        meta = {"saved_by": f"sashimi {__version__} (torch {torch.__version__})",
                "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        blob = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "kind": kind.name, "config": config,
                "class_names": class_names, "sha256": {WEIGHTS_FILE: sha256_file(os.fspath(tmp / WEIGHTS_FILE))},
                "provenance": _json_safe({**own, **(provenance or {}), **meta})}
        (tmp / CONFIG_FILE).write_text(json.dumps(blob, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        n_params = sum(p.numel() for p in module.parameters())
        (tmp / CARD_FILE).write_text(model_card(blob, n_params=n_params, name=folder.name), encoding="utf-8")
        if folder.exists():  # overwrite: the old folder goes only once the new one is complete
            old = folder.parent / f".{folder.name}.old{os.getpid()}"
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old)
        else:
            os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


def _json_safe(x):
    """Provenance as plain JSON: tensors and numpy values as numbers or lists, non-finite floats and
    anything else as strings."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if torch.is_tensor(x):
        return _json_safe(x.tolist())
    if hasattr(x, "item") and callable(x.item) and getattr(x, "shape", None) == ():
        x = x.item()  # numpy scalars
    if x is None or type(x) in (bool, int, str):
        return x
    if type(x) is float:
        return x if math.isfinite(x) else str(x)
    return str(x)


# ---- reading ----------------------------------------------------------------------------------
def is_model_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder with a ``config.json`` (ours or not: :func:`read_config` tells)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_FILE))


def read_config(folder: str | os.PathLike) -> dict:
    """The validated ``config.json`` of a model folder (every top-level key checked).

    Raises:
        CheckpointError: no config.json, not JSON, not ours, an unknown kind or format version, or a
            key of the wrong type; the message names the file and the key.
    """
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder")
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {CONFIG_FILE}, so not a sashimi model folder "
                              f"(save_pretrained writes {', '.join(FOLDER_FILES)})")
    try:
        blob = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT_NAME:
        got = blob.get("format") if isinstance(blob, dict) else blob
        raise CheckpointError(f"{path}: not a sashimi model config: key 'format' is {describe(got)}, expected "
                              f"{FORMAT_NAME!r} (a config.json written by another library?)")
    if blob.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: key 'format_version' is {describe(blob.get('format_version'))}; this "
                              f"library reads version {FORMAT_VERSION} (a newer sashimi wrote it?)")
    unknown = sorted(set(blob) - _KEYS)
    if unknown:
        raise CheckpointError(f"{path}: unknown key(s) {unknown}; expected {sorted(_KEYS)}")
    kinds = set(MODEL_KINDS) | set(OTHER_KINDS)
    if not isinstance(blob.get("kind"), str) or blob["kind"] not in kinds:
        raise CheckpointError(f"{path}: key 'kind' is {describe(blob.get('kind'))}, not a known model kind "
                              f"({', '.join(sorted(kinds))})")
    if not isinstance(blob.get("config"), dict):
        raise CheckpointError(f"{path}: key 'config' must be a mapping of model settings, got "
                              f"{describe(blob.get('config'))}")
    names = blob.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"{path}: key 'class_names' must be a list of strings or null, got {describe(names)}")
    digests = blob.get("sha256")
    if not isinstance(digests, dict) or not isinstance(digests.get(WEIGHTS_FILE), str) \
            or not _HEX64.match(digests[WEIGHTS_FILE]):
        raise CheckpointError(f"{path}: key 'sha256' must map {WEIGHTS_FILE!r} to its SHA-256 (64 hex digits), "
                              f"got {describe(digests)}")
    if not isinstance(blob.get("provenance", {}), dict):
        raise CheckpointError(f"{path}: key 'provenance' must be a mapping, got {describe(blob['provenance'])}")
    return blob


def load_folder(folder: str | os.PathLike, map_location="cpu", kinds: tuple[str, ...] | None = None,
                extra_kinds: dict[str, FolderKind] | None = None):
    """Load a model folder written by :func:`save_pretrained` (no pickle: ``torch.load`` is never called).

    Args:
        folder: the folder.
        map_location: device for the model.
        kinds: the kinds the caller accepts (None: any); another kind is refused with a message.
        extra_kinds: how to build kinds beyond the model kinds (e.g. the classifier's, passed by
            :func:`sashimi.eval.load_classifier`).

    Returns:
        the model (or classifier), in eval mode on ``map_location``.

    Raises:
        CheckpointError: a missing or malformed file, weights whose SHA-256 differs from the one
            in config.json, or tensors that do not fit the model (each named).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    blob = read_config(folder)
    config_path, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    known = _kinds(extra_kinds)
    if (kinds is not None and blob["kind"] not in kinds) or blob["kind"] not in known:
        hint = f" (load it with {OTHER_KINDS[blob['kind']]})" if blob["kind"] in OTHER_KINDS else ""
        raise CheckpointError(f"{config_path}: key 'kind' is {blob['kind']!r}, expected one of "
                              f"{list(kinds or known)}{hint}")
    kind = known[blob["kind"]]
    obj, module = kind.build(blob["config"], blob["class_names"], blob.get("provenance", {}),
                             f"{config_path}: key 'config'")
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing (a model folder holds {', '.join(FOLDER_FILES[:2])})")
    digest = sha256_file(os.fspath(weights))
    if digest != blob["sha256"][WEIGHTS_FILE]:
        raise CheckpointError(f"{weights}: SHA-256 {digest} differs from the one in {CONFIG_FILE} key 'sha256' "
                              f"({blob['sha256'][WEIGHTS_FILE]}): the file was changed or damaged")
    try:
        tensors = load_file(os.fspath(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({e})") from e
    load_state_dict_strict(module, tensors, os.fspath(weights))  # the one validation of every format
    own = kind.parts(obj)[2]
    if own != blob["class_names"]:
        raise CheckpointError(f"{config_path}: key 'class_names' is {describe(blob['class_names'])}, but the model "
                              f"built from key 'config' has {describe(own)}")
    module.to(map_location).eval()
    return obj
