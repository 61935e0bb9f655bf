"""The SaShiMi paper's SC09 evaluation protocol, as its authors' ``test_speech_commands.py`` runs it.

That script (state-spaces/s4, ``sashimi/sc09_classifier/``, Feb 2022) scores three sets with the
classifier ``resnext.pth``: the SC09 train set against itself, the test set against the train set,
and a folder of samples against the train set. The train set is the reference: FID compares the
classifier's 1024-dimensional penultimate activations (the input of ``module.classifier``) with
the train set's, AM compares mean class probabilities with the train set's. Its scores are the
ones of :mod:`sashimi.eval.metrics`: IS as ``inception_score(variant="sashimi-repo")`` (a
shuffle seeded with 0, half the clips), mIS as ``modified_inception_score(n_pairs=10000,
seed=0)``, AM and FID as defined. What this module adds is what depends on the order of things:

- :func:`paper_file_list`: which files a folder contributes and in which order (the order decides
  which clips IS keeps, which pairs mIS draws and which samples ``--threshold`` drops);
- :func:`threshold_protocol`: the ``--threshold`` option for autoregressive samples, whose files
  are named in increasing order of their log-likelihood.

With ``--threshold`` the authors' script splits the samples in two halves at random (numpy's global
RNG, in the state the test set's mIS left it: seeded with 0, then 10,000 draws of a pair among the
test set's clips), evaluates IS on slices ``[lower * n, upper * n)`` of the first half for lower in
0, 0.1, ..., 0.4 and upper in 0.6, 0.65, ..., 0.95, and is meant to keep the best window. Its
selection loop never updates the best value, so it always keeps the *last* window of the grid,
(0.4, 0.95): the 40th to 95th percentile of likelihood, the paper's "drop the least likely 40% and
the most likely 5%". The metrics are then computed on that window of the held-out half.
:func:`threshold_protocol` does exactly that (``selection="authors"``) and also offers the window
with the truly best development IS (``selection="best"``).
"""
from __future__ import annotations

import os
import re

import numpy as np

from .metrics import check_probs, inception_score

__all__ = ["natural_key", "paper_file_list", "threshold_protocol", "authors_rng_after_test_mis",
           "LOWER_THRESHOLDS", "UPPER_THRESHOLDS", "SC09_TEST_SIZE", "MIS_PAIRS"]

#: the threshold grid of the authors' script, as numpy's arange makes it
LOWER_THRESHOLDS = np.arange(0.0, 0.5, 0.1)
UPPER_THRESHOLDS = np.arange(0.6, 1.0, 0.05)
#: pairs the authors' mIS draws
MIS_PAIRS = 10000
#: clips in the authors' SC09 test split: the ten digits of speech_commands v0.01 ``testing_list.txt``
#: (what their download_speech_commands_dataset.sh + split_dataset.py make); used for the RNG state
SC09_TEST_SIZE = 2552


def natural_key(text: str):
    """Sort key of natural order (``natsort.natsorted`` for plain file names): '2.wav' < '10.wav'."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)]


def paper_file_list(folder: str | os.PathLike, classes) -> list[str]:
    """The ``.wav`` files a folder contributes, in the order of the authors' ``SpeechCommandsDataset``.

    A folder with a subfolder for every class (an SC09 ``train`` or ``test`` split) gives each
    class's files in class order, each class in natural order, and nothing else (the other words
    of Speech Commands, ``_background_noise_``). Any other folder (samples) gives its own ``.wav``
    files in natural order (not recursive).

    Args:
        folder: the directory.
        classes: class names in output order (e.g. ``"zero"``, ..., ``"nine"``).

    Returns:
        file paths.

    Raises:
        FileNotFoundError: no such directory.
        ValueError: it holds no ``.wav`` file.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such directory")

    def wavs(d):
        return [os.path.join(d, f) for f in sorted(os.listdir(d), key=natural_key)
                if f.endswith(".wav") and os.path.isfile(os.path.join(d, f))]

    if all(os.path.isdir(os.path.join(folder, c)) for c in classes):
        files = [f for c in classes for f in wavs(os.path.join(folder, c))]
    else:
        files = wavs(folder)
    if not files:
        raise ValueError(f"{folder}: no .wav files (the authors' protocol reads .wav files only)")
    return files


def authors_rng_after_test_mis(n_test: int, seed: int = 0) -> np.random.RandomState:
    """numpy's global RNG as the authors' script leaves it after the test set's mIS.

    ``np.random.seed(0)``, then 10,000 times ``np.random.choice(np.arange(n_test), size=2)``, which
    draws exactly what one ``randint(0, n_test, size=(10000, 2))`` draws.
    """
    if not isinstance(n_test, (int, np.integer)) or n_test < 1:
        raise ValueError(f"n_test must be a positive integer (clips in the test set), got {n_test!r}")
    rng = np.random.RandomState(seed)
    rng.randint(0, int(n_test), size=(MIS_PAIRS, 2))
    return rng


def threshold_protocol(probs, n_test: int = SC09_TEST_SIZE, selection: str = "authors") -> dict:
    """The authors' ``--threshold`` selection of samples ordered by increasing log-likelihood.

    Args:
        probs: (N, C) class probabilities of the samples, in file (likelihood) order, N >= 20
            (so that every window of the grid holds at least two samples).
        n_test: clips in the test set the authors' script scored before (it sets the RNG state of
            the random split; :data:`SC09_TEST_SIZE` for their SC09 split).
        selection: ``"authors"``: the window their code keeps (always the last of the grid, see
            the module docstring); ``"best"``: the window with the highest development IS.

    Returns:
        {'keep': int64 indices into the N samples (the held-out half's window, in order),
        'thresholds': (lower, upper), 'dev_is': IS of that window on the development half,
        'n_dev': size of each half, 'dev_scores': {(lower, upper): IS}}.
    """
    p = check_probs(probs, min_rows=20)
    if selection not in ("authors", "best"):
        raise ValueError(f"selection must be 'authors' or 'best', got {selection!r}")
    n = len(p)
    n_val = n_test_half = n // 2
    rng = authors_rng_after_test_mis(n_test)
    val = np.sort(rng.choice(n, size=n_val, replace=False))
    held_out = np.setdiff1d(np.arange(n), val)  # sorted; the authors' 2022-02 script wrote range(10240) here
    scores = {}
    for lower in LOWER_THRESHOLDS:
        for upper in UPPER_THRESHOLDS:
            window = p[val[int(lower * n_val):int(upper * n_val)]]
            scores[(float(lower), float(upper))] = inception_score(window, variant="sashimi-repo", seed=0)
    if selection == "authors":
        chosen = list(scores)[-1]  # their loop keeps the last window whose IS exceeds 0, i.e. the last one
    else:
        chosen = max(scores, key=scores.get)
    lower, upper = chosen
    keep = held_out[int(lower * n_test_half):int(upper * n_test_half)]
    return {"keep": keep, "thresholds": chosen, "dev_is": scores[chosen], "n_dev": n_val, "dev_scores": scores}
