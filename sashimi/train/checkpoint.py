"""Training checkpoints: atomic writes, the last K kept, RNG states, safe loading.

A training checkpoint is a native model checkpoint (``format``, ``version``, ``kind``, ``config``,
``state_dict`` at the top level, so :func:`sashimi.load_model` reads it) plus the training state:
``train_config``, ``cfg_yaml``, ``step``, ``epoch``, ``batch_in_epoch``, ``optimizer``,
``scheduler``, ``scaler`` and ``rng``. Everything is tensors, numbers, strings, lists and dicts,
so ``torch.load(..., weights_only=True)`` reads it.

Files are named ``ckpt_{step:08d}.pt`` (as the seed's) and written to a temporary file in the same
directory, flushed to disk and renamed over the target: a write killed midway leaves the previous
checkpoints untouched (and at worst a stray ``*.tmp*`` file, ignored and cleaned up later).
"""
from __future__ import annotations

import glob
import os
import random
import re

import numpy as np
import torch
import torch.nn as nn

from ..checkpoint import FORMAT_VERSION, CheckpointError, atomic_save, load_checkpoint_file, native_checkpoint

__all__ = ["checkpoint_name", "list_checkpoints", "latest_checkpoint", "load_latest_checkpoint",
           "save_training_checkpoint", "load_training_checkpoint", "get_rng_state", "set_rng_state"]

_NAME = re.compile(r"^ckpt_(\d+)\.pt$")


def checkpoint_name(step: int) -> str:
    return f"ckpt_{step:08d}.pt"


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
    """(step, path) of the checkpoints in ``directory``, oldest first."""
    if not os.path.isdir(directory):
        return []
    found = []
    for name in os.listdir(directory):
        m = _NAME.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(directory, name)))
    return sorted(found)


def load_latest_checkpoint(directory: str) -> tuple[str, dict] | None:
    """The newest checkpoint in ``directory`` that loads, as ``(path, contents)``, or None."""
    for _, path in reversed(list_checkpoints(directory)):
        try:
            return path, load_checkpoint_file(path)
        except (CheckpointError, OSError):
            continue
    return None


def latest_checkpoint(directory: str) -> str | None:
    """The path of the newest checkpoint in ``directory`` that loads, or None."""
    found = load_latest_checkpoint(directory)
    return found[0] if found else None


def save_training_checkpoint(directory: str, step: int, model: nn.Module, kind: str, state: dict,
                             keep: int = 0) -> str:
    """Write ``directory/ckpt_{step}.pt`` atomically, then delete all but the newest ``keep``.

    Args:
        directory: the run directory (created if missing).
        step: optimizer steps done.
        model: the bare model (not DDP-wrapped), with a dataclass ``config``.
        kind: model kind for :func:`sashimi.load_model` (e.g. 'ar').
        state: training state entries (tensors, numbers, strings, lists, dicts).
        keep: number of checkpoints to keep (0: all).

    Returns:
        the path written.
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, checkpoint_name(step))
    atomic_save(native_checkpoint(model, kind, **state), path)
    for stale in glob.glob(os.path.join(glob.escape(directory), "ckpt_*.pt.tmp*")):
        if not stale.endswith(f".tmp{os.getpid()}"):
            try:
                os.remove(stale)
            except OSError:
                pass
    if keep > 0:
        for _, old in list_checkpoints(directory)[:-keep]:
            try:
                os.remove(old)
            except OSError:
                pass
    return path


def load_training_checkpoint(path: str) -> dict:
    """Read a training checkpoint safely (``weights_only``), checking it holds training state.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a checkpoint, a model-only checkpoint, or an older format version.
    """
    return check_training_checkpoint(load_checkpoint_file(path), path)


def check_training_checkpoint(ckpt: dict, path: str) -> dict:
    """``ckpt`` (read from ``path``) if it holds training state; else a :class:`CheckpointError`."""
    missing = [k for k in ("format", "kind", "config", "state_dict", "step", "optimizer", "rng") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a sashimi training checkpoint (missing {missing}); "
                              "to start a new run from these weights, load them with sashimi.load_model")
    if ckpt.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: training checkpoint format version {ckpt.get('version')} cannot be "
                              f"resumed (this library writes version {FORMAT_VERSION}); to start a new run "
                              "from these weights, load them with sashimi.load_model")
    return ckpt


# ---- RNG states (as tensors and plain lists, for weights_only loading) -------------------------
def get_rng_state() -> dict:
    """torch (CPU and CUDA), numpy and python RNG states."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
             "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
