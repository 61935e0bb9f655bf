"""The paper's SC09 protocol (sashimi.eval.paper and the metrics it uses) against the formulas of the
authors' test_speech_commands.py, transliterated here with numpy's global RNG and scipy as they use
them, and against small cases computed by hand."""
import math

import numpy as np
import pytest
from scipy import linalg
from scipy.stats import entropy

from sashimi.eval import am_score, frechet_distance, inception_score, modified_inception_score
from sashimi.eval.paper import (LOWER_THRESHOLDS, UPPER_THRESHOLDS, authors_rng_after_test_mis, natural_key,
                                paper_file_list, threshold_protocol)


# ---- the authors' functions, as written in their script (global RNG, scipy) -------------------------
def authors_fid(feat_data, feat_gen):
    mu_data, mu_gen = feat_data.mean(0), feat_gen.mean(0)
    s_data, s_gen = np.cov(feat_data, rowvar=False), np.cov(feat_gen, rowvar=False)
    covmean = linalg.sqrtm(s_data.dot(s_gen))
    return np.sum(np.square(mu_gen - mu_data)) + np.trace(s_gen + s_data - 2 * covmean)


def authors_is(probs):
    np.random.seed(0)
    probs = probs[np.random.permutation(len(probs))]
    p1, p2 = probs[:len(probs) // 2], probs[len(probs) // 2:]
    kl = entropy(p1, np.repeat(p2.mean(0)[None, :], len(p1), axis=0)).mean()
    return np.exp(kl)


def authors_mis(probs, n=10000):
    np.random.seed(0)
    kls = []
    for _ in range(n):
        i = np.random.choice(np.arange(len(probs)), size=2, replace=True)
        kls.append(entropy(probs[i[0]], probs[i[1]]))
    return np.exp(np.mean(kls))


def authors_am(probs_data, probs_gen):
    return entropy(probs_data.mean(0), probs_gen.mean(0)) + np.mean(entropy(probs_gen, axis=1))


def authors_threshold(samples_probs, n_test):
    """Their --threshold branch, with the global RNG in the state their test-set mIS leaves it."""
    np.random.seed(0)
    for _ in range(10000):  # modified_inception_score(test_probs)
        np.random.choice(np.arange(n_test), size=2, replace=True)
    n_val = n_tst = len(samples_probs) // 2
    val_indices = sorted(np.random.choice(len(samples_probs), size=n_val, replace=False))
    test_indices = sorted(np.array(list(set(range(len(samples_probs))) - set(val_indices))))
    val, test = samples_probs[val_indices], samples_probs[test_indices]
    scores = {}
    for lo in np.arange(0., 0.5, 0.1):
        for up in np.arange(0.6, 1.0, 0.05):
            scores[(lo, up)] = authors_is(val[int(lo * n_val):int(up * n_val)])
    best_value, best = 0., None
    for threshold, value in scores.items():
        if value > best_value:
            best = threshold  # (their loop never updates best_value)
    return best, scores[best], np.asarray(test_indices)[int(best[0] * n_tst):int(best[1] * n_tst)]


@pytest.fixture(scope="module")
def sets():
    rng = np.random.default_rng(3)

    def probs(n, sharp):
        logits = rng.normal(size=(n, 10)) * sharp
        p = np.exp(logits - logits.max(1, keepdims=True))
        return p / p.sum(1, keepdims=True)

    feats = lambda n, shift: rng.normal(size=(n, 16)) + shift  # noqa: E731
    return {"train": (probs(300, 4.0), feats(300, 0.0)), "gen": (probs(257, 2.0), feats(257, 0.3))}


def test_metrics_equal_the_authors_formulas(sets):
    (p_train, f_train), (p_gen, f_gen) = sets["train"], sets["gen"]
    state = np.random.get_state()
    try:
        assert frechet_distance(f_gen, f_train) == pytest.approx(float(np.real(authors_fid(f_train, f_gen))), rel=1e-8)
        assert inception_score(p_gen, variant="sashimi-repo") == pytest.approx(authors_is(p_gen), rel=1e-10)
        assert modified_inception_score(p_gen) == pytest.approx(authors_mis(p_gen), rel=1e-10)
        assert am_score(p_gen, p_train) == pytest.approx(authors_am(p_train, p_gen), rel=1e-10)
        # the train set against itself: the authors' "Train Set Scores" row
        assert frechet_distance(f_train, f_train) == pytest.approx(0.0, abs=1e-8)
        assert am_score(p_train, p_train) == pytest.approx(authors_am(p_train, p_train), rel=1e-10)
    finally:
        np.random.set_state(state)


def test_hand_computed_cases():
    one_hot = np.eye(4)
    assert inception_score(one_hot) == pytest.approx(4.0)  # KL(e_i || uniform) = log 4 for every clip
    assert inception_score(np.full((6, 4), 0.25)) == pytest.approx(1.0)
    # mIS over all 16 ordered pairs of one-hot rows: KL is 0 on the diagonal and inf elsewhere
    assert modified_inception_score(one_hot, n_pairs=None) == math.inf
    two = np.array([[0.5, 0.5], [0.9, 0.1]])
    kl = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    kl_back = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert modified_inception_score(two, n_pairs=None) == pytest.approx(math.exp((kl + kl_back) / 4))
    # AM: KL(mean ref || mean) + mean entropy; the reference is balanced, the clips lean to class 0
    mean = np.array([0.7, 0.3])
    h = (-(0.5 * math.log(0.5)) * 2 + -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))) / 2
    assert am_score(two, np.eye(2)) == pytest.approx(0.5 * math.log(0.5 / mean[0]) + 0.5 * math.log(0.5 / mean[1]) + h)
    # FID in 1-D: means 0 and 2, unbiased variances 2 and 8 -> (0 - 2)^2 + 2 + 8 - 2 sqrt(2 * 8) = 6
    a, b = np.array([[-1.0], [1.0]]), np.array([[0.0], [4.0]])
    assert frechet_distance(a, b) == pytest.approx(6.0)


def test_rng_state_after_the_test_sets_mis_is_the_authors():
    state = np.random.get_state()
    try:
        np.random.seed(0)
        for _ in range(10000):
            np.random.choice(np.arange(97), size=2, replace=True)
        expected = np.random.randint(0, 1 << 30, size=5)
    finally:
        np.random.set_state(state)
    assert np.array_equal(authors_rng_after_test_mis(97).randint(0, 1 << 30, size=5), expected)


@pytest.mark.parametrize("n,n_test", [(40, 2552), (101, 17)])
def test_threshold_protocol_is_the_authors(sets, n, n_test):
    probs = sets["gen"][0][:n]
    state = np.random.get_state()
    try:
        best, dev_is, keep = authors_threshold(probs, n_test)
    finally:
        np.random.set_state(state)
    r = threshold_protocol(probs, n_test=n_test)
    assert r["thresholds"] == pytest.approx(best) and r["dev_is"] == pytest.approx(dev_is, rel=1e-10)
    assert np.array_equal(r["keep"], keep)
    # their selection always ends on the grid's last window: 40% to 95% of the held-out half
    assert r["thresholds"] == pytest.approx((0.4, 0.95)) and len(r["keep"]) == int(0.95 * (n // 2)) - int(0.4 * (n // 2))
    best_window = threshold_protocol(probs, n_test=n_test, selection="best")
    assert best_window["dev_is"] == max(best_window["dev_scores"].values()) >= r["dev_is"]


def test_threshold_grid_and_limits():
    assert len(LOWER_THRESHOLDS) == 5 and len(UPPER_THRESHOLDS) == 8 and UPPER_THRESHOLDS[-1] < 1.0
    with pytest.raises(ValueError, match="at least 20"):
        threshold_protocol(np.full((19, 10), 0.1))
    with pytest.raises(ValueError, match="selection"):
        threshold_protocol(np.full((30, 10), 0.1), selection="max")


def test_file_order_is_the_authors(tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    for name in ["10.wav", "2.wav", "1.wav", "notes.txt", "0.wav"]:
        (samples / name).write_bytes(b"")
    (samples / "sub").mkdir()
    (samples / "sub" / "3.wav").write_bytes(b"")
    assert [p.split("/")[-1] for p in paper_file_list(samples, ["zero", "one"])] == ["0.wav", "1.wav", "2.wav",
                                                                                      "10.wav"]
    split = tmp_path / "train"
    for c in ["one", "zero", "_background_noise_", "bed"]:
        (split / c).mkdir(parents=True)
        for name in ["b_nohash_10.wav", "b_nohash_9.wav"]:
            (split / c / name).write_bytes(b"")
    files = [p.split("/")[-2] + "/" + p.split("/")[-1] for p in paper_file_list(split, ["zero", "one"])]
    assert files == ["zero/b_nohash_9.wav", "zero/b_nohash_10.wav", "one/b_nohash_9.wav", "one/b_nohash_10.wav"]
    assert sorted(["a10", "a9", "b1"], key=natural_key) == ["a9", "a10", "b1"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .wav"):
        paper_file_list(tmp_path / "empty", ["zero", "one"])


# ---- sashimi eval with the authors' classifier ---------------------------------------------------------
@pytest.fixture(scope="module")
def sc09_folders(tmp_path_factory, fixtures_dir):
    """A 'train' and 'test' split (class subfolders) and 24 'samples' named 0.wav ... 23.wav: the
    fixture clips with gains, shifts and noise (16 kHz), so that the classifier's outputs vary."""
    import torch

    from sashimi.data.audio import read_audio, write_wav

    root = tmp_path_factory.mktemp("sc09")
    clips = [read_audio(fixtures_dir / "authors_sc09" / f"clip{i}.wav")[0][:16000] for i in range(4)]
    gen = torch.Generator().manual_seed(0)

    def variant(k):
        w = torch.roll(clips[k % 4], int(torch.randint(0, 4000, (1,), generator=gen)))
        return (w * (0.2 + torch.rand(1, generator=gen)) + 0.01 * torch.randn(w.shape, generator=gen)).clamp(-1, 1)

    for split, per_class in (("train", 2), ("test", 1)):
        for c in ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]:
            (root / split / c).mkdir(parents=True)
            for j in range(per_class):
                write_wav(root / split / c / f"x_nohash_{j}.wav", variant(j + len(c)), 16000)
    (root / "samples").mkdir()
    for i in range(24):
        write_wav(root / "samples" / f"{i}.wav", variant(i), 16000)
    return root


def test_cli_scores_like_the_authors_script(capsys, sc09_folders, fixtures_dir):
    import json

    import torch

    from conftest import run_cli
    from sashimi.data.audio import read_audio
    from sashimi.eval import load_classifier

    clf_path = str(fixtures_dir / "authors_sc09" / "sc09_classifier_small.pth")
    root = sc09_folders
    code, out, err = run_cli(capsys, "eval", str(root / "samples"), "--reference", str(root / "train"),
                             "--test-set", str(root / "test"), "--classifier", clf_path, "--threshold", "--json", "-q")
    assert code == 0, err
    r = json.loads(out)
    assert r["protocol"] == "sashimi-paper" and r["is_variant"] == "sashimi-repo" and r["stft_padding"] == "reflect"
    assert r["threshold"]["thresholds"] == pytest.approx([0.4, 0.95]) and r["threshold"]["test_size_for_rng"] == 10
    assert r["samples"]["n"] == int(0.95 * 12) - int(0.4 * 12) and r["test"]["n"] == 10 and r["reference"]["n"] == 20

    # the same numbers from the authors' formulas on the classifier's outputs, in the authors' file order
    clf = load_classifier(clf_path)

    def outputs(files):
        wavs = torch.zeros(len(files), 16000)
        for i, f in enumerate(files):
            w = read_audio(f)[0][:16000]
            wavs[i, :w.numel()] = w
        p, f = clf.predict(wavs, 16000)
        return p.numpy(), f.numpy()

    classes = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    p_train, f_train = outputs([root / "train" / c / f"x_nohash_{j}.wav" for c in classes for j in range(2)])
    p_test, f_test = outputs([root / "test" / c / "x_nohash_0.wav" for c in classes])
    p_gen, f_gen = outputs([root / "samples" / f"{i}.wav" for i in range(24)])
    state = np.random.get_state()
    try:
        _, _, keep = authors_threshold(p_gen, n_test=10)
        # (mIS: the library's, shown equal to the authors' loop in test_metrics_equal_the_authors_formulas)
        mis = modified_inception_score
        expected = {"train": (0.0, authors_is(p_train), mis(p_train), authors_am(p_train, p_train)),
                    "test": (authors_fid(f_train, f_test), authors_is(p_test), mis(p_test), authors_am(p_train, p_test)),
                    "samples": (authors_fid(f_train, f_gen[keep]), authors_is(p_gen[keep]), mis(p_gen[keep]),
                                authors_am(p_train, p_gen[keep]))}
    finally:
        np.random.set_state(state)
    for row, (fid, is_, mis, am) in expected.items():
        got = r["reference" if row == "train" else row]
        assert got["fid"] == pytest.approx(float(np.real(fid)), rel=1e-6, abs=1e-6), row
        assert got["is"] == pytest.approx(is_, rel=1e-6) and got["am"] == pytest.approx(am, rel=1e-6, abs=1e-9), row
        assert got["mis"] == pytest.approx(mis, rel=1e-6), row

    # the table names the padding and the three rows; the other padding is a different cache key
    code, out, err = run_cli(capsys, "eval", str(root / "samples"), "--reference", str(root / "train"),
                             "--classifier", clf_path, "--stft-padding", "constant", "--device", "cpu", "-q")
    assert code == 0, err
    assert "STFT padding constant" in out and "+constant" in out


def test_cli_refuses_threshold_misuse(capsys, sc09_folders, fixtures_dir, tmp_path, monkeypatch):
    from conftest import run_cli
    from sashimi.pretrained import registry

    root = sc09_folders
    code, _, err = run_cli(capsys, "eval", str(root / "samples"), "--reference", str(root / "train"),
                           "--threshold-test-size", "10")
    assert code == 2 and "--threshold-test-size applies with --threshold" in err
    # offline: one line naming the URL and the cache folder
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = (tmp_path / "nowhere" / "resnext.pth").as_uri()
    monkeypatch.setitem(registry.DOWNLOADED_CLASSIFIERS, "sc09_resnext", (url, None))
    code, _, err = run_cli(capsys, "eval", str(root / "samples"), "--reference", str(root / "train"),
                           "--classifier", "sc09_resnext", "-q")
    assert code == 2 and url in err and str(tmp_path / "torch") in err and len(err.strip().splitlines()) == 1


def test_a_reference_cache_remembers_its_padding(capsys, sc09_folders, fixtures_dir, tmp_path):
    from conftest import run_cli

    clf_path = str(fixtures_dir / "authors_sc09" / "sc09_classifier_small.pth")
    root, cache = sc09_folders, str(tmp_path / "train.npz")
    code, _, err = run_cli(capsys, "eval", str(root / "test"), "--reference", str(root / "train"),
                           "--classifier", clf_path, "--save-reference", cache, "-q")
    assert code == 0, err
    code, _, err = run_cli(capsys, "eval", str(root / "samples"), "--reference", cache, "--classifier", clf_path,
                           "--stft-padding", "constant", "-q")
    assert code == 2 and "computed with classifier" in err
    code, _, err = run_cli(capsys, "eval", str(root / "samples"), "--reference", cache, "--classifier", clf_path,
                           "--threshold", "-q")
    assert code == 0, err
