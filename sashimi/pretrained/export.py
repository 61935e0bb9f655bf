"""Export a trained model as a small inference file named by its SHA-256 (see ``sashimi export``)."""
from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["export_model"]

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def export_model(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, name: str,
                 credit: str = "") -> tuple[Path, str]:
    """Write ``checkpoint``'s model (config + float32 weights + provenance) as ``<name>-<sha8>.pt``.

    Args:
        checkpoint: a native checkpoint; a training checkpoint's step, validation metric and
            training config are kept as provenance, its optimiser state is dropped.
        out_dir: an existing folder.
        name: file name stem.
        credit: data credit / license text stored in the file under ``"credit"``.

    Returns:
        ``(path, sha256 hex digest)`` of the written file.

    Raises:
        ValueError: a bad ``name``, or a checkpoint that is not a native model checkpoint.
        FileExistsError: a different file already has the target name (never overwritten).
    """
    import torch

    from ..checkpoint import atomic_save, load_model, native_checkpoint
    from ..download import sha256_file

    if not _NAME.match(name):
        raise ValueError(f"name {name!r}: expected letters, digits, '_', '.', '-'")
    raw = torch.load(os.fspath(checkpoint), map_location="cpu", weights_only=True)
    if not isinstance(raw, dict) or raw.get("format") != "sashimi":
        raise ValueError(f"{checkpoint}: not a native sashimi checkpoint (export takes what training writes)")
    model = load_model(os.fspath(checkpoint))  # validates it and rebuilds the model
    provenance = {k: raw[k] for k in ("step", "valid_metric", "cfg_yaml") if k in raw}
    obj = native_checkpoint(model, raw["kind"], credit=credit, source=os.path.basename(os.fspath(checkpoint)),
                            **provenance)
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
