"""Train / validation / test splits written as CSV files with a ``path`` column.

Two layouts are known:

- Google Speech Commands: ``ROOT/<word>/<file>.wav`` with ``validation_list.txt`` and
  ``testing_list.txt`` naming the validation and test files; everything else is training data
  (``_background_noise_`` excluded). ``sc09_only`` keeps the ten digit words (SC09).
- Free Spoken Digit Dataset: ``{digit}_{speaker}_{take}.wav`` (in ROOT or ROOT/recordings).
  Takes 0-4 are the test set (the dataset's convention); the next ``valid_takes`` takes of
  each speaker and digit are carved out of the training takes for validation.
"""
from __future__ import annotations

import csv
import functools
import os
import re

from .audio import AUDIO_EXTENSIONS

__all__ = ["SC09_WORDS", "speech_commands_split", "fsdd_split", "detect_layout", "write_split"]

SC09_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FSDD_PATTERN = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
FSDD_TEST_TAKES = 5


def detect_layout(root: str) -> str:
    """'speechcommands' or 'fsdd', from the files under ``root``.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        ValueError: neither layout is recognised.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset directory not found: {root}")
    if os.path.isfile(os.path.join(root, "testing_list.txt")):
        return "speechcommands"
    if _fsdd_dir(root) is not None:
        return "fsdd"
    raise ValueError(f"{root}: neither a Speech Commands folder (no testing_list.txt) nor an FSDD folder "
                     "(no {digit}_{speaker}_{take}.wav files in it or in its recordings/ folder)")


def speech_commands_split(root: str, sc09_only: bool = False) -> dict[str, list[str]]:
    """Split a Speech Commands folder by its validation_list.txt / testing_list.txt.

    Args:
        root: the dataset folder.
        sc09_only: keep only the ten digit words (SC09).

    Returns:
        {'train': [...], 'valid': [...], 'test': [...]}: file paths under ``root``, sorted.
    """
    lists = {}
    for split, name in (("valid", "validation_list.txt"), ("test", "testing_list.txt")):
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{root}: missing {name} (not a Speech Commands folder?)")
        with open(path, encoding="utf-8") as f:
            lists[split] = {line.strip().replace("\\", "/") for line in f if line.strip()}
    words = set(SC09_WORDS) if sc09_only else None
    out: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for word in sorted(os.listdir(root)):
        folder = os.path.join(root, word)
        if not os.path.isdir(folder) or word.startswith("_") or (words is not None and word not in words):
            continue
        for name in sorted(os.listdir(folder)):
            if not name.lower().endswith(AUDIO_EXTENSIONS):
                continue
            rel = f"{word}/{name}"
            split = "valid" if rel in lists["valid"] else "test" if rel in lists["test"] else "train"
            out[split].append(os.path.join(root, word, name))
    if not out["train"]:
        raise ValueError(f"{root}: no training files found" + (" for the SC09 digit words" if sc09_only else ""))
    return out


def _fsdd_dir(root: str) -> str | None:
    for d in (root, os.path.join(root, "recordings")):
        if os.path.isdir(d) and any(FSDD_PATTERN.match(n) for n in os.listdir(d)):
            return d
    return None


def fsdd_split(root: str, valid_takes: int = 5) -> dict[str, list[str]]:
    """Split the Free Spoken Digit Dataset by take number.

    Args:
        root: the FSDD checkout or its ``recordings`` folder.
        valid_takes: takes 5 .. 5 + valid_takes - 1 of every speaker and digit go to
            validation (0: no validation split).

    Returns:
        {'train': takes >= 5 + valid_takes, 'valid': ..., 'test': takes 0-4}, sorted paths.
    """
    if not isinstance(valid_takes, int) or valid_takes < 0:
        raise ValueError(f"valid_takes must be a non-negative integer, got {valid_takes!r}")
    folder = _fsdd_dir(root)
    if folder is None:
        raise ValueError(f"{root}: no FSDD files ({{digit}}_{{speaker}}_{{take}}.wav) here or in recordings/")
    out: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for name in sorted(os.listdir(folder)):
        m = FSDD_PATTERN.match(name)
        if not m:
            continue
        take = int(m.group(3))
        split = "test" if take < FSDD_TEST_TAKES else "valid" if take < FSDD_TEST_TAKES + valid_takes else "train"
        out[split].append(os.path.join(folder, name))
    if not out["train"]:
        raise ValueError(f"{root}: no FSDD training takes left (valid_takes={valid_takes} is too many)")
    return out


def write_split(splits: dict[str, list[str]], out_dir: str, prefix: str, *, relative: bool = False,
                force: bool = False) -> dict[str, str]:
    """Write ``{out_dir}/{prefix}-{split}.csv`` for each non-empty split.

    Args:
        splits: split name -> file paths.
        out_dir: created if missing.
        prefix: file name prefix, e.g. 'sc09' or 'fsdd'.
        relative: store paths relative to ``out_dir`` (portable) instead of absolute ones.
        force: overwrite existing CSV files.

    Returns:
        split name -> CSV path, for each CSV written.

    Raises:
        FileExistsError: a CSV exists and ``force`` is False (nothing is written).
        OutputError: another run is writing one of the CSVs, or ``out_dir`` cannot be written.
    """
    from ..persistence.outputs import OutputFiles

    targets = {s: os.path.join(out_dir, f"{prefix}-{s}.csv") for s, files in splits.items() if files}
    existing = [p for p in targets.values() if os.path.exists(p)]
    if existing and not force:
        raise FileExistsError(f"{existing[0]} exists (use -f/--force to overwrite)")
    os.makedirs(out_dir, exist_ok=True)

    def write(split: str, path: str) -> None:
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path"])
            for p in splits[split]:
                writer.writerow([os.path.relpath(p, out_dir) if relative else os.path.abspath(p)])

    # claimed together first, each published whole: never a half-written CSV, nor two runs' mixed
    with OutputFiles(list(targets.values()), force) as outputs:
        for split, path in targets.items():
            outputs.publish(path, functools.partial(write, split))
    return targets
