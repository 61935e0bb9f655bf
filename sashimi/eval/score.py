"""Scoring a set of clips against a reference set: one row of FID, IS, mIS, AM and a histogram.

    from sashimi.eval import load_classifier
    from sashimi.eval.score import Reference, score_set

    clf = load_classifier("fsdd")
    ref = Reference.from_outputs(*clf.predict(real_wavs, 8000))
    row = score_set(*clf.predict(generated_wavs, 8000), ref)   # {'n', 'fid', 'is', 'mis', 'am', 'histogram'}
    ceiling = score_set(ref.probs, None, ref)                   # the reference scored against itself

The paper's protocol for autoregressive samples, which drops the least and the most likely
ones, is :func:`likelihood_filter`.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np

from .metrics import GaussianStats, am_score, check_probs, frechet_distance, gaussian_stats, inception_score, \
    modified_inception_score

__all__ = ["Reference", "score_set", "likelihood_filter", "histogram"]


@dataclass
class Reference:
    """What scoring needs of the reference (real) set: its class probabilities and a Gaussian
    fitted to its features. Small enough to cache (:meth:`save`, :meth:`load`).

    Attributes:
        probs: float64 (M, C).
        stats: :class:`GaussianStats` of its (M, D) features.
        classifier: an identifier of the classifier that produced them (checked when loading).
    """

    probs: np.ndarray
    stats: GaussianStats
    classifier: str = ""

    @classmethod
    def from_outputs(cls, probs, features, classifier: str = "") -> "Reference":
        """From a classifier's ``predict`` outputs on the reference clips ((M, C), (M, D), M >= 2)."""
        return cls(check_probs(probs, "reference probs", min_rows=2), gaussian_stats(features, "reference features"),
                   classifier)

    def save(self, path) -> None:
        """Write a ``.npz`` file (numbers only; read back without pickle).

        Args:
            path: a file name (numpy appends ``.npz`` when it is missing) or a binary file object.
        """
        np.savez(path, probs=self.probs, mu=self.stats.mu, sigma=self.stats.sigma, n=self.stats.n,
                 classifier=np.array(self.classifier))

    @classmethod
    def load(cls, path: str | os.PathLike, classifier: str | None = None) -> "Reference":
        """Read a file written by :meth:`save`.

        Args:
            path: the ``.npz`` file.
            classifier: if given, the identifier the file must have been made with.

        Raises:
            ValueError: not such a file, or made with another classifier.
        """
        try:
            with np.load(path, allow_pickle=False) as z:
                ref = cls(z["probs"], GaussianStats(z["mu"], z["sigma"], int(z["n"])), str(z["classifier"]))
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # truncated: BadZipFile
            raise ValueError(f"{path}: not a reference-statistics file written by sashimi eval "
                             f"({type(e).__name__}: {e})") from e
        if classifier is not None and ref.classifier != classifier:
            raise ValueError(f"{path} was computed with classifier {ref.classifier!r}, not {classifier!r}")
        return ref


def histogram(probs, n_classes: int | None = None) -> list[int]:
    """How many clips each class wins (argmax of each row)."""
    p = check_probs(probs)
    return np.bincount(p.argmax(axis=1), minlength=n_classes or p.shape[1]).tolist()


def score_set(probs, features, reference: Reference, *, is_variant: str = "standard",
              mis_pairs: int | None = 10000, seed: int = 0) -> dict:
    """FID, IS, mIS and AM of one set of clips against a reference.

    Args:
        probs: (N, C) class probabilities of the clips.
        features: (N, D) their features, or None to score the reference against itself
            (``probs`` must then be ``reference.probs``; FID is 0 by definition).
        reference: the reference set's :class:`Reference`.
        is_variant, seed: see :func:`~sashimi.eval.metrics.inception_score`.
        mis_pairs: see :func:`~sashimi.eval.metrics.modified_inception_score`.

    Returns:
        {'n', 'fid', 'is', 'mis', 'am', 'histogram'}.
    """
    p = check_probs(probs)
    fid = 0.0 if features is None else frechet_distance(features, reference.stats)
    return {"n": int(p.shape[0]), "fid": fid, "is": inception_score(p, variant=is_variant, seed=seed),
            "mis": modified_inception_score(p, n_pairs=mis_pairs, seed=seed), "am": am_score(p, reference.probs),
            "histogram": histogram(p)}


def likelihood_filter(log_likelihood, low: float = 40.0, high: float = 95.0) -> np.ndarray:
    """The SaShiMi paper's protocol for autoregressive samples: keep those whose own
    log-likelihood lies between its ``low``-th and ``high``-th percentiles over the set (the
    least likely ones are often noise, the most likely often near-silence).

    Args:
        log_likelihood: (N,) log-likelihood of each sample under the model that generated it
            (or minus its NLL: any quantity increasing with likelihood).
        low, high: percentiles, 0 <= low < high <= 100.

    Returns:
        bool (N,): which samples to keep.
    """
    ll = np.asarray(log_likelihood, dtype=np.float64)
    if ll.ndim != 1 or ll.size == 0:
        raise ValueError(f"log_likelihood must have shape (N,) with N >= 1, got {ll.shape}")
    if not np.isfinite(ll).all():
        raise ValueError("log_likelihood contains NaN or inf")
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got low={low}, high={high}")
    lo, hi = np.percentile(ll, [low, high])
    return (ll >= lo) & (ll <= hi)
