"""Export a trained model for inference (see ``sashimi export``): a small ``.pt`` file named by its
SHA-256, or a model folder (config.json + model.safetensors + README.md, no pickle)."""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

__all__ = ["average_models", "export_model"]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def average_models(models: list):
    """The first model, its floating-point weights replaced by the mean over ``models``.

    Averaging the checkpoints of one run's last stretch (Polyak averaging) smooths out the
    step-to-step noise of a high learning rate. Buffers that are not floating point are taken
    from the last model.

    Args:
        models: models of one architecture (equal configs and parameter names).

    Raises:
        ValueError: no models, or models whose configs or parameter names differ.
    """
    if not models:
        raise ValueError("average_models: expected at least one model")
    first = models[0]
    states = [m.state_dict() for m in models]
    for i, m in enumerate(models[1:], 1):
        if type(m) is not type(first) or dataclasses.asdict(m.config) != dataclasses.asdict(first.config):
            raise ValueError(f"average_models: model {i} has another architecture than model 0")
        if list(states[i]) != list(states[0]):
            raise ValueError(f"average_models: model {i} has other parameter names than model 0")
    mean = {k: sum(s[k] for s in states) / len(states) if v.is_floating_point() else states[-1][k]
            for k, v in states[0].items()}
    first.load_state_dict(mean)
    return first


def export_model(checkpoints, out_dir: str | os.PathLike, name: str, credit: str = "", *, format: str = "pt",
                 license: str = "", sampling: dict | None = None) -> tuple[Path, str]:
    """Write a model (config + float32 weights + provenance) as ``<out_dir>/<name>-<sha8>.pt``, or
    with ``format="folder"`` as the model folder ``<out_dir>/<name>`` (see :func:`sashimi.save_pretrained`).

    Args:
        checkpoints: a checkpoint path or model folder (any format :func:`sashimi.load_model` reads), or several
            of one run, whose weights are then averaged (:func:`average_models`). The last one's
            step, validation metric and training config are kept as provenance, with every
            source's file name and step; optimiser state is dropped. A single file that is itself
            an export keeps its provenance (source, averaged checkpoints, credit).
        out_dir: an existing folder.
        name: file name stem (the folder's name with ``format="folder"``).
        credit: data credit / license text stored under ``"credit"`` (default: the source's, if any).
        format: ``"pt"`` (a native checkpoint file) or ``"folder"``.
        license: a license identifier for the weights (e.g. ``"cc-by-sa-4.0"``), stored under
            ``"license"`` and shown on a folder's model card.

    Returns:
        ``(path, sha256 hex digest)`` of the written file; for a folder, the folder and the
        digest of its ``model.safetensors``.

    Raises:
        ValueError: a bad ``name`` or ``format``, a file that is not a readable checkpoint, or
            checkpoints of different architectures.
        FileExistsError: a different file already has the target name, or the folder exists
            (never overwritten).
    """
    import torch

    from ..persistence.checkpoint import atomic_save, kind_of, native_checkpoint
    from .factories import load_model
    from ..persistence.download import sha256_file

    if not NAME_PATTERN.match(name):
        raise ValueError(f"name {name!r}: expected letters, digits, '_', '.', '-'")
    if format not in ("pt", "folder"):
        raise ValueError(f"format must be 'pt' or 'folder', got {format!r}")
    paths = [os.fspath(c) for c in ([checkpoints] if isinstance(checkpoints, (str, os.PathLike)) else checkpoints)]
    if not paths:
        raise ValueError("checkpoints: expected at least one file")
    models, raws = [], []
    from ..persistence.folder import is_model_folder, read_config

    for path in paths:
        if is_model_folder(path):  # its provenance, as a checkpoint's entries, and its model (validated)
            raws.append(dict(read_config(path).get("provenance") or {}))
            models.append(load_model(path))
            continue
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated, not a torch file, or a pickle that needs code
            raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__})") from e
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: not a checkpoint (holds a {type(raw).__name__})")
        raws.append(raw)
        models.append(load_model(raw))  # any supported format; validates it and rebuilds the model
    model = average_models(models) if len(models) > 1 else models[0]
    if sampling is not None:
        if not hasattr(model.config, "sampling"):
            raise ValueError(f"sampling: only autoregressive models store sampling defaults, not {type(model).__name__}")
        from ..sampling import check_sampling_defaults

        model.config.sampling = check_sampling_defaults(dict(sampling), "sampling")
    # an export of an export (e.g. a .pt converted to a folder) keeps where the weights first came from
    keep = ("step", "valid_metric", "cfg_yaml") + (("source", "averaged", "credit", "license") if len(paths) == 1 else ())
    provenance = {k: raws[-1][k] for k in keep if k in raws[-1]}
    if len(paths) > 1:
        provenance["averaged"] = [{"source": os.path.basename(p), "step": r.get("step")} for p, r in zip(paths, raws)]
    provenance.setdefault("source", os.path.basename(paths[-1]))
    if provenance["source"] != os.path.basename(paths[-1]):
        provenance["converted_from"] = os.path.basename(paths[-1])
    provenance["credit"] = credit or provenance.get("credit", "")
    if license or provenance.get("license"):
        provenance["license"] = license or provenance["license"]
    if format == "folder":
        from ..persistence.folder import WEIGHTS_FILE, save_pretrained

        folder = Path(out_dir) / name
        if folder.exists():
            raise FileExistsError(f"{folder} exists; not overwritten")
        save_pretrained(model, folder, provenance=provenance)
        return folder, sha256_file(os.fspath(folder / WEIGHTS_FILE))
    obj = native_checkpoint(model, kind_of(model), **provenance)
    tmp = Path(out_dir) / f".{name}.export{os.getpid()}.pt"
    atomic_save(obj, os.fspath(tmp))
    try:
        digest = sha256_file(os.fspath(tmp))
        path = Path(out_dir) / f"{name}-{digest[:8]}.pt"
        if path.exists():
            if sha256_file(os.fspath(path)) != digest:
                raise FileExistsError(f"{path} exists with other contents; not overwritten")
            return path, digest
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path, digest
