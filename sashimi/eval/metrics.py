"""Classifier-based sample-quality metrics: IS, modified IS, AM score, Fréchet distance.

All of them take a classifier's outputs on a set of clips: class probabilities ``probs`` (N, C),
rows summing to 1, and penultimate-layer ``features`` (N, D). They are written from their
definitions (Salimans et al. 2016; Gurumurthy et al. 2017; Zhou et al. 2018; Heusel et al. 2017,
as used for SC09 by Kong et al. 2021 and the SaShiMi paper). Everything is computed in float64
numpy; torch tensors and numpy arrays are both accepted.

Like for like with the SaShiMi paper's table: its authors' evaluation code computes the
Inception score differently from the definition (see :func:`inception_score`,
``variant="sashimi-repo"``); their modified Inception score draws its pairs exactly as
:func:`modified_inception_score` does with ``seed=0``; their AM score and FID are the definitions
(their FID uses a generic matrix square root, ours an equivalent symmetric one).
"""
from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np

__all__ = ["inception_score", "modified_inception_score", "am_score", "frechet_distance",
           "GaussianStats", "gaussian_stats", "check_probs"]

#: How far a row of ``probs`` may be from summing to 1 (float32 softmax outputs are ~1e-7 off).
ROW_SUM_TOLERANCE = 1e-3


# ---- input checks -------------------------------------------------------------------------
def _as_float64(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().cpu().double().numpy()
    elif not isinstance(x, (np.ndarray, list, tuple)):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}")
    if np.iscomplexobj(x):
        raise TypeError(f"{name} must be real, got dtype {x.dtype}")
    return x.astype(np.float64)


def check_probs(probs, name: str = "probs", min_rows: int = 1) -> np.ndarray:
    """Validate class probabilities and return them as float64, rows renormalised exactly.

    Args:
        probs: (N, C) array or tensor, non-negative, rows summing to 1 (within 1e-3).
        name: the argument's name, used in error messages.
        min_rows: the least N accepted.

    Returns:
        float64 (N, C).

    Raises:
        TypeError: not a numeric array or tensor.
        ValueError: wrong shape, fewer than ``min_rows`` rows, fewer than 2 classes, NaN/inf,
            negative values, or rows that do not sum to 1 (e.g. logits passed instead of softmax).
    """
    p = _as_float64(probs, name)
    if p.ndim != 2:
        raise ValueError(f"{name} must have shape (N, C), got {p.shape}")
    if p.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} row(s), got {p.shape[0]}")
    if p.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 classes (columns), got {p.shape[1]}")
    if not np.isfinite(p).all():
        raise ValueError(f"{name} contains NaN or inf")
    if p.min() < 0:
        raise ValueError(f"{name} must be non-negative (probabilities, not logits), got a minimum of {p.min():.4g}")
    sums = p.sum(axis=1)
    if np.abs(sums - 1.0).max() > ROW_SUM_TOLERANCE:
        raise ValueError(f"rows of {name} must sum to 1 (softmax outputs, not logits), got row sums in "
                         f"[{sums.min():.4g}, {sums.max():.4g}]")
    return p / sums[:, None]


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x * log(y) with 0 * log(anything) = 0 (the convention of entropy and KL)."""
    out = np.zeros(np.broadcast(x, y).shape)
    nz = np.broadcast_to(x, out.shape) != 0
    with np.errstate(divide="ignore"):
        out[nz] = np.broadcast_to(x, out.shape)[nz] * np.log(np.broadcast_to(y, out.shape)[nz])
    return out


def _kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p_i || q_i) along the last axis, in nats; inf where q = 0 < p."""
    return (_xlogy(p, p) - _xlogy(p, q)).sum(axis=-1)


def _entropy_rows(p: np.ndarray) -> np.ndarray:
    return -_xlogy(p, p).sum(axis=-1)


# ---- Inception score ------------------------------------------------------------------------
def inception_score(probs, variant: str = "standard", seed: int = 0) -> float:
    """Inception score: exp(mean_i KL(p(y|x_i) || p(y))), p(y) the mean row.

    Between 1 (every clip gets the same distribution) and C (confident, balanced over the C
    classes). Higher is better.

    Args:
        probs: (N, C) class probabilities of N clips, rows summing to 1.
        variant: ``"standard"``, the definition above; or ``"sashimi-repo"``, what the SaShiMi
            authors' evaluation code computes (for comparing with the paper's table like for
            like). That code shuffles the rows (numpy's legacy RNG seeded with ``seed``), keeps
            the first N // 2, and evaluates ``scipy.stats.entropy(first_half, mean_row_of_the_
            second_half)`` with scipy's default axis 0: for each class c it is the KL divergence
            between how that class's mass spreads over the kept clips and a uniform spread, so
            the second half cancels out. The score is exp of the mean of these C numbers. It
            also gives 1 for identical rows and about C for confident balanced rows (exactly C
            when the kept half is balanced), but it rewards spread over clips, not confidence.
            A class no kept clip gives any mass to makes the authors' code return NaN; here it
            is left out of the mean, with a warning.
        seed: seed of the shuffle (``"sashimi-repo"`` only; the authors' code uses 0).

    Returns:
        the score (float).

    Raises:
        ValueError: bad ``probs`` (see :func:`check_probs`), or an unknown ``variant``.
    """
    if variant == "standard":
        p = check_probs(probs)
        return float(math.exp(_kl_rows(p, p.mean(axis=0, keepdims=True)).mean()))
    if variant == "sashimi-repo":
        p = check_probs(probs, min_rows=2)
        kept = p[np.random.RandomState(seed).permutation(len(p))[: len(p) // 2]]  # (N // 2, C)
        mass = kept.sum(axis=0)  # (C,)
        empty = mass == 0
        if empty.any():
            warnings.warn(f"inception_score(variant='sashimi-repo'): {int(empty.sum())} class(es) get no mass in "
                          "the kept half; they are left out (the authors' code would return NaN)", stacklevel=2)
        spread = kept[:, ~empty] / mass[~empty]  # each column: that class's mass over the kept clips
        kl_per_class = math.log(len(kept)) - _entropy_rows(spread.T)  # KL(spread || uniform)
        return float(math.exp(kl_per_class.mean()))
    raise ValueError(f"variant must be 'standard' or 'sashimi-repo', got {variant!r}")


def modified_inception_score(probs, n_pairs: int | None = 10000, seed: int = 0) -> float:
    """Modified Inception score (mIS): exp(E_{i,j} KL(p(y|x_i) || p(y|x_j))) over pairs of clips.

    It rewards clips that are confident *and* differ from one another. Higher is better. Pairs
    are drawn uniformly with replacement (a pair may be one clip twice), with numpy's legacy RNG
    seeded with ``seed``: with ``seed=0`` and ``n_pairs=10000`` these are exactly the pairs of the
    SaShiMi authors' evaluation code. ``n_pairs=None`` takes the exact mean over all N^2 ordered
    pairs instead (in closed form, O(N C)).

    Args:
        probs: (N, C) class probabilities, rows summing to 1.
        n_pairs: number of random pairs (positive), or None for all pairs.
        seed: seed of the pair sampling.

    Returns:
        the score (float); inf if some pair has KL = inf (a zero probability where the other
        clip has mass), as in the definition.
    """
    p = check_probs(probs)
    if n_pairs is None:
        # mean_ij [sum_c p_ic log p_ic - p_ic log p_jc] = -mean_i H(p_i) - sum_c pbar_c mean_j log p_jc
        with np.errstate(divide="ignore"):
            mean_log = np.log(p).mean(axis=0)  # (C,), -inf where some clip has p = 0
        pbar = p.mean(axis=0)
        cross = np.where(pbar > 0, pbar * np.where(pbar > 0, mean_log, 0.0), 0.0).sum()  # 0 * -inf := 0
        mean_kl = -_entropy_rows(p).mean() - cross
    else:
        if not isinstance(n_pairs, (int, np.integer)) or isinstance(n_pairs, bool) or n_pairs < 1:
            raise ValueError(f"n_pairs must be a positive integer or None, got {n_pairs!r}")
        pairs = np.random.RandomState(seed).randint(0, len(p), size=(int(n_pairs), 2))
        mean_kl = _kl_rows(p[pairs[:, 0]], p[pairs[:, 1]]).mean()
    return float(math.exp(mean_kl)) if mean_kl < 700 else math.inf


# ---- AM score -------------------------------------------------------------------------------
def am_score(probs, reference_probs) -> float:
    """AM score: KL(mean reference row || mean row) + mean entropy of the rows. Lower is better.

    The first term is 0 when the clips' classes are spread like the reference's; the second is 0
    when every clip is classified confidently.

    Args:
        probs: (N, C) class probabilities of the clips scored.
        reference_probs: (M, C) class probabilities of real data, or their mean row (C,).

    Returns:
        the score in nats (float); inf if the clips give a class no mass that the reference has.
    """
    p = check_probs(probs)
    ref = _as_float64(reference_probs, "reference_probs")
    ref_mean = check_probs(ref[None] if ref.ndim == 1 else ref, "reference_probs").mean(axis=0)
    if ref_mean.shape[0] != p.shape[1]:
        raise ValueError(f"reference_probs has {ref_mean.shape[0]} classes, probs has {p.shape[1]}")
    return float(_kl_rows(ref_mean, p.mean(axis=0)) + _entropy_rows(p).mean())


# ---- Fréchet distance -----------------------------------------------------------------------
class GaussianStats(NamedTuple):
    """A Gaussian fitted to features: mean ``mu`` (D,), covariance ``sigma`` (D, D), from ``n`` rows."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int


def gaussian_stats(features, name: str = "features") -> GaussianStats:
    """Fit a Gaussian to features: their mean and unbiased (N - 1) covariance.

    Args:
        features: (N, D) with N >= 2.
        name: the argument's name, used in error messages.

    Returns:
        :class:`GaussianStats` (float64).
    """
    f = _as_float64(features, name)
    if f.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 rows to estimate a covariance, got {f.shape[0]}")
    if not np.isfinite(f).all():
        raise ValueError(f"{name} contains NaN or inf")
    return GaussianStats(f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False)), int(f.shape[0]))


def _stats(x, name: str) -> GaussianStats:
    if isinstance(x, tuple) and len(x) in (2, 3) and not isinstance(x, GaussianStats):
        x = GaussianStats(x[0], x[1], int(x[2]) if len(x) == 3 else 0)
    if isinstance(x, GaussianStats):
        mu, sigma = _as_float64(x.mu, f"{name}.mu"), _as_float64(x.sigma, f"{name}.sigma")
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(f"{name}: expected mu (D,) and sigma (D, D), got {mu.shape} and {sigma.shape}")
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise ValueError(f"{name} contains NaN or inf")
        return GaussianStats(mu, sigma, x.n)
    return gaussian_stats(x, name)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(features, reference_features) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID with our classifier).

    ``||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``. The trace of the matrix square root is
    computed as that of the symmetric PSD matrix S1^(1/2) S2 S1^(1/2) (same eigenvalues as S1 S2),
    which is exact, real and stable even when the covariances are singular. Lower is better; 0
    for identical sets.

    Args:
        features: (N, D) features of the clips scored, N >= 2, or their :class:`GaussianStats`.
        reference_features: (M, D) features of real data, M >= 2, or their precomputed
            :class:`GaussianStats` (or a ``(mu, sigma)`` tuple).

    Returns:
        the distance (float, >= 0).
    """
    a, b = _stats(features, "features"), _stats(reference_features, "reference_features")
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"features have dimension {a.mu.shape[0]}, reference_features {b.mu.shape[0]}")
    root_a = _sqrt_psd(a.sigma)
    middle = root_a @ b.sigma @ root_a
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    value = float(((a.mu - b.mu) ** 2).sum() + np.trace(a.sigma) + np.trace(b.sigma) - 2 * tr_sqrt)
    return max(value, 0.0)  # rounding can leave -1e-12 for identical sets
