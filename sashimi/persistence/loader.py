"""One entry point for model files: native checkpoints, model folders (also on the Hugging Face
Hub) and the published formats.

:func:`sashimi.load_model` also takes pretrained names; it sends them to :mod:`sashimi.pretrained`
and everything else here.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn

from .checkpoint import FORMAT_NAME, MODEL_KINDS, CheckpointError, build_native, load_checkpoint_file
from .folder import load_folder
from .hf import hf_file_url, hf_folder
from .published import PUBLISHED_FORMATS

__all__ = ["load_model_file"]


def load_model_file(source: str | os.PathLike | dict, map_location: str | torch.device | None = "cpu",
                    progress: bool = True, check_hash: bool = False, sha256: str | None = None) -> nn.Module:
    """Build a model from a checkpoint in any supported format.

    Args:
        source: a path, a URL (http(s):// or file://), an already loaded checkpoint dict, a model
            folder written by :func:`~sashimi.persistence.folder.save_pretrained`, or one on the
            Hugging Face Hub, ``'hf://owner/name'`` or ``'hf://owner/name@revision'`` (needs
            ``huggingface_hub``; see :mod:`sashimi.persistence.hf`), or one file in a Hub repository,
            ``'hf://owner/name[@revision]/path/to/file.pt'``. Native checkpoints, the SaShiMi authors'
            own AR files (:mod:`sashimi.persistence.authors`) and the
            published seed formats (simple-sashimi ``ckpt_*.pt``, DiffWave-unconditional) are
            recognised automatically.
        map_location: device for the model.
        progress: show a download progress bar for URLs.
        check_hash: verify the SHA-256 prefix in a URL's file name after downloading it.
        sha256: the expected SHA-256 of a URL's file (hex digest or a prefix of >= 8 digits),
            verified after downloading it.

    Returns:
        the model, in eval mode.

    Raises:
        FileNotFoundError, DownloadError, CheckpointError: see :func:`load_checkpoint_file`; a
            layout that is none of the known ones is a CheckpointError.
    """
    if isinstance(source, str) and source.startswith("hf://"):
        # one file of a repository: its https address, downloaded once into this library's cache;
        # else a model folder: the local snapshot folder (downloaded once into the Hugging Face cache)
        source = hf_file_url(source) or hf_folder(source)
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        return load_folder(source, map_location=map_location or "cpu", kinds=tuple(MODEL_KINDS))
    name = "<dict>" if isinstance(source, dict) else os.fspath(source)
    ckpt = source if isinstance(source, dict) else load_checkpoint_file(source, progress, check_hash, sha256)
    if ckpt.get("format") == FORMAT_NAME:
        model = build_native(ckpt, name)
    else:
        for _, detect, load in PUBLISHED_FORMATS:
            if detect(ckpt):
                model = load(ckpt, name)
                break
        else:
            raise CheckpointError(f"{name}: unrecognised checkpoint layout (top-level keys: {sorted(map(str, ckpt))[:8]}); "
                                  "expected a sashimi checkpoint, a published simple-sashimi / DiffWave file or a "
                                  "SaShiMi authors' AR state dict (model.*, encoder.*, decoder.*)")
    return model.to(map_location).eval()
