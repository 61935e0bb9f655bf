"""Training checkpoints: atomic writes, the last K kept, RNG states, safe loading.

A training checkpoint is a native model checkpoint (``format``, ``version``, ``kind``, ``config``,
``state_dict`` at the top level, so :func:`sashimi.load_model` reads it) plus the training state:
``train_config``, ``cfg_yaml``, ``step``, ``epoch``, ``batch_in_epoch``, ``optimizer``,
``scheduler``, ``scaler``, ``rng`` and ``run_checkpoints`` (the file names of the run's checkpoints:
the only ones its keep-last-K pruning may delete). Everything is tensors, numbers, strings, lists and dicts,
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
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from ..persistence.checkpoint import FORMAT_VERSION, CheckpointError, atomic_save, load_checkpoint_file, native_checkpoint

__all__ = ["checkpoint_name", "list_checkpoints", "latest_checkpoint", "load_latest_checkpoint",
           "save_training_checkpoint", "claim_run_directory", "load_training_checkpoint", "get_rng_state", "set_rng_state"]

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


def load_latest_checkpoint(directory: str, skipped: list | None = None) -> tuple[str, dict] | None:
    """The newest checkpoint in ``directory`` that loads, as ``(path, contents)``, or None.

    Args:
        directory: a run directory.
        skipped: if given, ``(path, reason)`` of every newer checkpoint that did not load is
            appended to it (so that the caller can say so).
    """
    for _, path in reversed(list_checkpoints(directory)):
        try:
            return path, load_checkpoint_file(path)
        except (CheckpointError, OSError) as e:
            if skipped is not None:
                skipped.append((path, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__))
    return None


def latest_checkpoint(directory: str) -> str | None:
    """The path of the newest checkpoint in ``directory`` that loads, or None."""
    found = load_latest_checkpoint(directory)
    return found[0] if found else None


def save_training_checkpoint(directory: str, step: int, model: nn.Module, kind: str, state: dict,
                             keep: int = 0, written: list[str] | None = None) -> str:
    """Write ``directory/ckpt_{step}.pt`` atomically, then delete the run's checkpoints but the
    newest ``keep``.

    Only checkpoints listed in ``written`` are ever deleted: pruning by step number over the whole
    directory would delete another run's files, or this run's new ones when another run's have
    higher step numbers. The checkpoint records the names of the run's checkpoints
    (``run_checkpoints``), so that a resumed run knows which files are its own.

    Args:
        directory: the run directory (created if missing).
        step: optimizer steps done.
        model: the bare model (not DDP-wrapped), with a dataclass ``config``.
        kind: model kind for :func:`sashimi.load_model` (e.g. 'ar').
        state: training state entries (tensors, numbers, strings, lists, dicts).
        keep: number of the run's checkpoints to keep (0: all).
        written: paths of the checkpoints this run wrote or continues, oldest first (see
            :func:`claim_run_directory`); updated in place: the new path is appended and the
            pruned ones removed. None: only the new checkpoint counts as the run's.

    Returns:
        the path written.
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, checkpoint_name(step))
    written = [] if written is None else written
    if path in written:
        written.remove(path)
    written.append(path)
    record = [os.path.basename(p) for p in written]
    atomic_save(native_checkpoint(model, kind, **state, run_checkpoints=record), path)
    for stale in glob.glob(os.path.join(glob.escape(directory), "ckpt_*.pt.tmp*")):
        if not stale.endswith(f".tmp{os.getpid()}"):
            try:
                os.remove(stale)
            except OSError:
                pass
    while keep > 0 and len(written) > keep:
        try:
            os.remove(written.pop(0))
        except OSError:
            pass
    return path


def claim_run_directory(directory: str, resume: str | None, resume_step: int, lineage: Sequence[str] | None = None,
                        force: bool = False, unreadable: Sequence[str] = (), rank: int = 0
                        ) -> tuple[list[str], list[str]]:
    """Check that a run may write its checkpoints into ``directory`` before it starts.

    Checkpoints at or after the step the run starts from (every checkpoint, for a new run) belong
    to another run, or to a later branch of this one: the run would overwrite them as it reaches
    their steps, and ``resume_checkpoint=last`` would resume them instead of this run. With
    ``force`` they are moved to ``directory/earlier_run_N/`` (never deleted). Newer checkpoints
    that ``resume_checkpoint=last`` skipped because they do not load are renamed
    ``<name>.unreadable``. Only rank 0 moves files.

    Args:
        directory: the run directory (``checkpoint_path``).
        resume: the checkpoint the run resumes from, or None for a new run.
        resume_step: its step (ignored for a new run).
        lineage: the resumed checkpoint's ``run_checkpoints`` (None: it has no record, so only
            the resumed file itself counts as the run's).
        force: move the conflicting checkpoints aside instead of refusing.
        unreadable: checkpoints in ``directory`` that did not load (see :func:`load_latest_checkpoint`).
        rank: this process's rank.

    Returns:
        ``(own, notes)``: the run's checkpoints already in ``directory``, oldest first (the files
        it may prune: those of ``lineage`` up to the resume point, when it resumes from a file in
        ``directory``), and lines to print.

    Raises:
        ConfigError: conflicting checkpoints and not ``force``; the message says what to do.
    """
    from .config import ConfigError

    notes = []
    for path in unreadable:
        if rank == 0 and os.path.exists(path):
            os.replace(path, path + ".unreadable")
        notes.append(f"{os.path.basename(path)} was renamed {os.path.basename(path)}.unreadable")
    start = resume_step if resume is not None else 0
    same_dir = resume is not None and os.path.isdir(directory) and _same_file(os.path.dirname(os.path.abspath(resume)),
                                                                               directory)
    found = [(s, p) for s, p in list_checkpoints(directory) if p not in unreadable]
    conflicts = [p for s, p in found if s >= start and not (resume is not None and _same_file(p, resume))]
    if not (isinstance(lineage, (list, tuple)) and all(isinstance(n, str) for n in lineage)):
        lineage = None  # written before the record existed (or damaged): only the resumed file is known
    names = set(lineage) if lineage is not None else {os.path.basename(resume or "")}
    own = [p for s, p in found if same_dir and s <= start and p not in conflicts and os.path.basename(p) in names]
    if not conflicts:
        return own, notes
    listed = ", ".join(os.path.basename(p) for p in conflicts[:3]) + (", ..." if len(conflicts) > 3 else "")
    what = (f"{len(conflicts)} checkpoint(s) of another run ({listed})" if resume is None else
            f"{len(conflicts)} checkpoint(s) at or after step {start:,d}, where this run resumes ({listed})")
    if not force:
        hint = ("To continue that run, set resume_checkpoint=last" if resume is None else
                "To continue from the newest one, set resume_checkpoint=last")
        raise ConfigError(f"checkpoint_path {directory} holds {what}; this run would overwrite them or mix with "
                          f"them. {hint}; to start anyway, use another checkpoint_path, or set force=true to "
                          f"move them to {os.path.join(directory, 'earlier_run_N')}/ (nothing is deleted)")
    n = 1
    while os.path.exists(os.path.join(directory, f"earlier_run_{n}")):
        n += 1
    aside = os.path.join(directory, f"earlier_run_{n}")
    if rank == 0:
        os.makedirs(aside)
        for p in conflicts:
            os.replace(p, os.path.join(aside, os.path.basename(p)))
    return own, notes + [f"force=true: moved {what} to {aside}"]


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


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
    types = {"kind": str, "config": dict, "state_dict": dict, "step": int, "epoch": int, "batch_in_epoch": int,
             "optimizer": dict, "scheduler": dict, "scaler": dict, "rng": list}
    for key, tp in types.items():
        optional = key in ("scheduler", "scaler")
        if (key in ckpt or not optional) and not isinstance(ckpt.get(key), tp):
            raise CheckpointError(f"{path}: key '{key}' of this training checkpoint must be a {tp.__name__}, "
                                  f"got {type(ckpt.get(key)).__name__}")
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
