"""sashimi.eval.metrics: each metric on inputs with known answers, the authors' IS variant, bad input."""
import math

import numpy as np
import pytest
import torch

from sashimi.eval import am_score, frechet_distance, gaussian_stats, inception_score, modified_inception_score
from sashimi.eval.metrics import GaussianStats

C = 10


def one_hot(labels, c=C):
    return np.eye(c)[np.asarray(labels)]


def balanced_one_hot(per_class=20, c=C):
    return one_hot(np.repeat(np.arange(c), per_class), c)


def softish(n=200, c=C, seed=0):
    """Rows of a random softmax: strictly positive, varied."""
    z = np.random.default_rng(seed).normal(size=(n, c)) * 2
    return np.exp(z) / np.exp(z).sum(1, keepdims=True)


def kl(p, q):
    return float(np.sum(p * np.log(p / q)))


# ---- Inception score -------------------------------------------------------------------------
def test_is_known_answers():
    assert inception_score(balanced_one_hot()) == pytest.approx(C, rel=1e-12)
    assert inception_score(np.tile(softish(1), (50, 1))) == pytest.approx(1.0, abs=1e-12)
    # confident rows on 2 of 10 classes, balanced: IS = 2
    assert inception_score(one_hot([3, 7] * 25)) == pytest.approx(2.0, rel=1e-12)
    # the definition, directly
    p = softish()
    expected = math.exp(np.mean([kl(row, p.mean(0)) for row in p]))
    assert inception_score(torch.from_numpy(p).float()) == pytest.approx(expected, rel=1e-5)


def test_is_sashimi_repo_variant_matches_its_description():
    from scipy.stats import entropy

    p = softish(101)
    kept = p[np.random.RandomState(0).permutation(101)[:50]]
    rest_mean = p[np.random.RandomState(0).permutation(101)[50:]].mean(0)
    # scipy's entropy with its default axis 0: one KL per class, over the kept clips
    expected = math.exp(entropy(kept, np.repeat(rest_mean[None], 50, axis=0)).mean())
    assert inception_score(p, variant="sashimi-repo") == pytest.approx(expected, rel=1e-10)
    assert inception_score(p, variant="sashimi-repo") != pytest.approx(inception_score(p), rel=1e-3)
    assert inception_score(np.tile(softish(1), (40, 1)), variant="sashimi-repo") == pytest.approx(1.0, abs=1e-12)
    # confident rows whose kept half (the first 20 of the seeded shuffle) is balanced: exactly C
    perm = np.random.RandomState(5).permutation(40)
    labels = np.zeros(40, dtype=int)
    labels[perm[:20]] = np.arange(20) % C
    assert inception_score(one_hot(labels), variant="sashimi-repo", seed=5) == pytest.approx(C, rel=1e-12)
    with pytest.warns(UserWarning, match="no mass"):
        inception_score(one_hot([0, 1] * 10), variant="sashimi-repo")
    with pytest.raises(ValueError, match="variant"):
        inception_score(p, variant="paper")


# ---- modified Inception score -------------------------------------------------------------
def test_mis_known_answers():
    a, b = softish(2, seed=3)
    p = np.stack([a, b] * 50)  # two distributions, equally often
    exact = math.exp((kl(a, b) + kl(b, a)) / 4)  # pairs (a,a), (a,b), (b,a), (b,b)
    assert modified_inception_score(p, n_pairs=None) == pytest.approx(exact, rel=1e-12)
    assert modified_inception_score(p, n_pairs=200000) == pytest.approx(exact, rel=0.02)
    assert modified_inception_score(np.tile(a, (30, 1))) == pytest.approx(1.0, abs=1e-12)
    assert modified_inception_score(np.tile(a, (30, 1)), n_pairs=None) == pytest.approx(1.0, abs=1e-12)
    # confident rows of different classes: infinite KL between some pairs
    assert modified_inception_score(balanced_one_hot(), n_pairs=None) == math.inf


def test_mis_draws_the_authors_pairs():
    """seed 0: the pairs of np.random.seed(0); np.random.choice(n, 2) repeated, KL by scipy."""
    from scipy.stats import entropy

    p = softish(37)
    np.random.seed(0)
    kls = []
    for _ in range(500):
        i, j = np.random.choice(np.arange(37), size=2, replace=True)
        kls.append(entropy(p[i], p[j]))
    assert modified_inception_score(p, n_pairs=500) == pytest.approx(math.exp(np.mean(kls)), rel=1e-10)
    with pytest.raises(ValueError, match="n_pairs"):
        modified_inception_score(p, n_pairs=0)


# ---- AM score -------------------------------------------------------------------------------
def test_am_known_answers():
    ref = balanced_one_hot()
    assert am_score(balanced_one_hot(per_class=3), ref) == pytest.approx(0.0, abs=1e-12)
    assert am_score(np.full((8, C), 1 / C), ref) == pytest.approx(math.log(C), rel=1e-12)  # entropy term only
    p = softish()
    expected = kl(ref.mean(0), p.mean(0)) + np.mean([-np.sum(r * np.log(r)) for r in p])
    assert am_score(p, ref) == pytest.approx(expected, rel=1e-12)
    assert am_score(p, ref.mean(0)) == pytest.approx(expected, rel=1e-12)  # the reference's mean row
    assert am_score(one_hot([0] * 5), ref) == math.inf  # classes the reference has get no mass


# ---- Fréchet distance -----------------------------------------------------------------------
def test_fid_known_answers():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(300, 6))
    assert frechet_distance(f, f) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(f, f + 2.0) == pytest.approx(6 * 4.0, rel=1e-9)  # mean shift only
    # closed form for two Gaussians with the sample statistics
    g = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6)) + 1.0
    m1, m2, s1, s2 = f.mean(0), g.mean(0), np.cov(f, rowvar=False), np.cov(g, rowvar=False)
    from scipy.linalg import sqrtm

    expected = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real)
    assert frechet_distance(f, g) == pytest.approx(expected, rel=1e-8)
    # diagonal Gaussians: sum (mu1-mu2)^2 + (sigma1 - sigma2)^2
    stats_a = GaussianStats(np.zeros(3), np.diag([1.0, 4.0, 9.0]), 0)
    stats_b = (np.ones(3), np.diag([4.0, 4.0, 1.0]))
    assert frechet_distance(stats_a, stats_b) == pytest.approx(3 + 1 + 0 + 4, rel=1e-12)


def test_fid_accepts_precomputed_reference_stats():
    rng = np.random.default_rng(1)
    f, g = rng.normal(size=(50, 4)), rng.normal(size=(80, 4)) + 0.5
    stats = gaussian_stats(g)
    assert stats.n == 80 and stats.sigma.shape == (4, 4)
    assert frechet_distance(f, stats) == pytest.approx(frechet_distance(f, g), rel=1e-12)
    assert frechet_distance(torch.from_numpy(f).float(), (stats.mu, stats.sigma)) == \
        pytest.approx(frechet_distance(f, g), rel=1e-5)
    # singular covariances (N < D) stay finite and exact for identical sets
    h = rng.normal(size=(5, 20))
    assert frechet_distance(h, h) == pytest.approx(0.0, abs=1e-9)


# ---- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [inception_score, modified_inception_score, lambda p: am_score(p, p)])
def test_bad_probs_are_refused_naming_the_argument(fn):
    p = softish(10)
    with pytest.raises(ValueError, match=r"probs must have shape \(N, C\)"):
        fn(p[0])
    with pytest.raises(ValueError, match="rows of probs must sum to 1"):
        fn(p * 2)
    with pytest.raises(ValueError, match="non-negative"):
        fn(np.log(p))
    q = p.copy()
    q[0, 0] = np.nan
    with pytest.raises(ValueError, match="probs contains NaN"):
        fn(q)
    with pytest.raises(TypeError, match="probs must be"):
        fn("not an array")


def test_bad_reference_and_features():
    p = softish(10)
    with pytest.raises(ValueError, match="reference_probs"):
        am_score(p, p[:, :5] / p[:, :5].sum(1, keepdims=True))
    with pytest.raises(ValueError, match="rows of reference_probs must sum to 1"):
        am_score(p, p * 3)
    f = np.random.default_rng(0).normal(size=(10, 4))
    with pytest.raises(ValueError, match="features needs at least 2 rows"):
        frechet_distance(f[:1], f)
    with pytest.raises(ValueError, match="reference_features needs at least 2 rows"):
        frechet_distance(f, f[:1])
    with pytest.raises(ValueError, match=r"features must have shape \(N, D\)"):
        frechet_distance(f[0], f)
    with pytest.raises(ValueError, match="dimension"):
        frechet_distance(f, f[:, :3])
    g = f.copy()
    g[2, 1] = np.inf
    with pytest.raises(ValueError, match="reference_features contains NaN"):
        frechet_distance(f, g)
    with pytest.raises(ValueError, match="probs needs at least 2 row"):
        inception_score(p[:1], variant="sashimi-repo")


# ---- sashimi.eval.score ------------------------------------------------------------------------
def test_likelihood_filter_keeps_the_40th_to_95th_percentile():
    from sashimi.eval.score import likelihood_filter

    ll = np.random.default_rng(0).permutation(100).astype(float)  # values 0..99 in random order
    keep = likelihood_filter(ll)
    assert sorted(ll[keep]) == list(range(40, 95))  # percentiles 39.6 and 94.05
    assert likelihood_filter(ll, 0, 100).all()
    with pytest.raises(ValueError, match="percentiles"):
        likelihood_filter(ll, 95, 40)
    with pytest.raises(ValueError, match="log_likelihood contains NaN"):
        likelihood_filter([0.0, np.nan])


def test_reference_cache_round_trip_and_score_rows(tmp_path):
    from sashimi.eval.score import Reference, score_set

    rng = np.random.default_rng(0)
    ref = Reference.from_outputs(balanced_one_hot(), rng.normal(size=(200, 5)), classifier="clf:abc")
    ref.save(tmp_path / "r.npz")
    back = Reference.load(tmp_path / "r.npz", "clf:abc")
    np.testing.assert_array_equal(back.probs, ref.probs)
    np.testing.assert_array_equal(back.stats.sigma, ref.stats.sigma)
    with pytest.raises(ValueError, match="computed with classifier 'clf:abc', not 'other'"):
        Reference.load(tmp_path / "r.npz", "other")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a reference-statistics file"):
        Reference.load(tmp_path / "bad.npz")
    ceiling = score_set(ref.probs, None, ref)
    assert ceiling["fid"] == 0.0 and ceiling["is"] == pytest.approx(C) and ceiling["am"] == pytest.approx(0.0)
    assert ceiling["histogram"] == [20] * C and ceiling["n"] == 200
    row = score_set(np.full((4, C), 1 / C), rng.normal(size=(4, 5)) + 3, back)
    assert row["is"] == pytest.approx(1.0) and row["am"] == pytest.approx(math.log(C)) and row["fid"] > 40
