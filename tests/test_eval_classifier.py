"""sashimi.eval classifiers: the bundled FSDD classifier on real clips, files, the paper's ResNeXt, training."""
import math
import shutil

import pytest
import torch

from sashimi.data.audio import read_audio, resample
from sashimi.eval import Classifier, DigitCNN, ResNeXt, inception_score, load_classifier, save_classifier
from sashimi.pretrained import registry
from sashimi.eval.augment import perturb, place

FSDD = "fsdd"


@pytest.fixture(scope="module")
def fsdd_clips(fixtures_dir):
    """The 30 FSDD test clips in tests/fixtures/fsdd: (list of 8 kHz waveforms, labels)."""
    paths = sorted((fixtures_dir / "fsdd").glob("*.wav"))
    assert len(paths) == 30
    clips = [read_audio(p)[0] for p in paths]
    return clips, torch.tensor([int(p.name[0]) for p in paths])


@pytest.fixture(scope="module")
def fsdd_classifier():
    return load_classifier(FSDD)


def accuracy(clf, wavs, rate, labels):
    probs, _ = clf.predict(wavs, rate)
    return float((probs.argmax(1) == labels).double().mean())


# ---- the bundled classifier ----------------------------------------------------------------------
def test_bundled_fsdd_classifier_on_real_clips(fsdd_classifier, fsdd_clips):
    clips, labels = fsdd_clips
    clf = fsdd_classifier
    assert clf.classes[0] == "zero" and len(clf.classes) == 10 and clf.data_rate == 8000
    assert "Free Spoken Digit Dataset" in clf.meta["credit"] and clf.meta["license_of_data"] == "CC BY-SA 4.0"
    clean = place(clips, 8000, shift=False)  # each clip from the window's start, as recorded
    probs, feats = clf.predict(clean, 8000)
    assert probs.shape == (30, 10) and feats.shape == (30, clf.feature_dim) and probs.dtype == torch.float64
    torch.testing.assert_close(probs.sum(1), torch.ones(30, dtype=torch.float64))
    assert float((probs.argmax(1) == labels).double().mean()) >= 29 / 30
    assert inception_score(probs) > 7.0  # confident and balanced (3 clips per digit)
    # what generators produce: any gain, the word anywhere in the second, noise, mu-law; 8 or 16 kHz
    g = torch.Generator().manual_seed(0)
    shifted = place(clips, 8000, g)
    assert accuracy(clf, perturb(shifted, g, noise_db=None, p_mulaw=0.0), 8000, labels) >= 28 / 30
    assert accuracy(clf, perturb(shifted, g, p_noise=1.0, p_mulaw=1.0), 8000, labels) >= 28 / 30
    assert accuracy(clf, resample(shifted, 8000, 16000), 16000, labels) >= 28 / 30


def test_bundled_weights_are_hash_checked(monkeypatch):
    folder, digests = registry.BUNDLED_CLASSIFIERS[FSDD]
    assert sorted(digests) == ["config.json", "model.safetensors"]
    for name in digests:
        monkeypatch.setitem(registry.BUNDLED_CLASSIFIERS, FSDD, (folder, {**digests, name: "0" * 64}))
        with pytest.raises(ValueError, match=f"{name} has SHA-256"):
            load_classifier(FSDD)
    with pytest.raises(FileNotFoundError, match="not a bundled name"):
        load_classifier("no-such-classifier")


def test_predict_refuses_bad_input(fsdd_classifier):
    x = torch.zeros(2, 8000)
    x[1, 10] = math.nan
    with pytest.raises(ValueError, match="wavs contains NaN"):
        fsdd_classifier.predict(x, 8000)
    with pytest.raises(ValueError, match=r"wavs must have shape \(N, L\)"):
        fsdd_classifier.predict(torch.zeros(8000), 8000)
    with pytest.raises(TypeError, match="sample_rate"):
        fsdd_classifier.predict(torch.zeros(2, 8000), 8000.5)


# ---- files ----------------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path, fsdd_clips):
    torch.manual_seed(0)
    clf = Classifier(DigitCNN(channels=(4, 8, 8)), [str(i) for i in range(10)], 8000, meta={"note": "x"})
    sha = save_classifier(clf, tmp_path / "c.pt", dict(channels=[4, 8, 8]))
    assert len(sha) == 64 and not (tmp_path / "c.pt.part").exists()
    back = load_classifier(tmp_path / "c.pt")
    assert back.meta == {"note": "x"} and back.data_rate == 8000 and back.classes == clf.classes
    wavs = place(fsdd_clips[0][:4], 8000)
    for a, b in zip(clf.predict(wavs, 8000), back.predict(wavs, 8000)):
        torch.testing.assert_close(a, b)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="neither a sashimi classifier file nor a ResNeXt state dict"):
        load_classifier(tmp_path / "other.pt")


# ---- the paper's SC09 ResNeXt ------------------------------------------------------------------------
def test_resnext_sc09_architecture_and_key_names():
    model = ResNeXt()  # ResNeXt-29, cardinality 8, base width 64, widen 4, 1 input channel, 10 classes
    state = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == 34_425_546
    expected = {
        "conv_1_3x3.weight": (64, 1, 3, 3),
        "bn_1.running_var": (64,),
        "stage_1.stage_1_bottleneck_0.conv_reduce.weight": (512, 64, 1, 1),
        "stage_1.stage_1_bottleneck_0.conv_conv.weight": (512, 64, 3, 3),  # 8 groups of 64
        "stage_1.stage_1_bottleneck_0.conv_expand.weight": (256, 512, 1, 1),
        "stage_1.stage_1_bottleneck_0.shortcut.shortcut_conv.weight": (256, 64, 1, 1),
        "stage_1.stage_1_bottleneck_0.shortcut.shortcut_bn.weight": (256,),
        "stage_2.stage_2_bottleneck_0.conv_conv.weight": (1024, 128, 3, 3),
        "stage_3.stage_3_bottleneck_2.bn_expand.running_mean": (1024,),
        "stage_3.stage_3_bottleneck_2.bn.num_batches_tracked": (),
        "classifier.weight": (10, 1024),
        "classifier.bias": (10,),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any("stage_1_bottleneck_1.shortcut" in k for k in state)  # identity shortcuts inside a stage
    assert len(state) == 188 and ResNeXt.config_from_state_dict(state) == dict(
        n_classes=10, cardinality=8, depth=29, base_width=64, widen_factor=4, in_channels=1)


def test_resnext_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    small = dict(n_classes=10, cardinality=2, depth=11, base_width=4, widen_factor=1)
    model = ResNeXt(**small).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that buffers matter
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 1, 32, 32) * 20 - 40
    logits, feats = model.forward_features(x)
    assert logits.shape == (2, 10) and feats.shape == (2, 256)
    # the authors' checkpoint is a DataParallel model: its state dict keys start with 'module.'
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "resnext.pt")
    clf = load_classifier(tmp_path / "resnext.pt")
    assert isinstance(clf.model, ResNeXt) and clf.classes[9] == "nine" and clf.data_rate == 16000
    with torch.no_grad():
        torch.testing.assert_close(clf.model.forward_features(x), (logits, feats))
    probs, features = clf.predict(torch.randn(3, 16000) * 0.1, 16000)
    assert probs.shape == (3, 10) and features.shape == (3, 256)
    state = model.state_dict()
    state.pop("classifier.bias")
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match="1 missing"):
        load_classifier(tmp_path / "broken.pt")


# ---- training -------------------------------------------------------------------------------------
def test_training_runs_end_to_end(tmp_path, fixtures_dir):
    """Two epochs of a tiny CNN on an FSDD-shaped folder made of the fixture clips (takes renamed)."""
    root = tmp_path / "fsdd"
    root.mkdir()
    for path in sorted((fixtures_dir / "fsdd").glob("*.wav")):
        digit, speaker, _ = path.stem.split("_")
        for take in (0, 5, 10, 11):  # test, valid, train, train
            shutil.copy(path, root / f"{digit}_{speaker}_{take}.wav")
    from sashimi.eval.training import train_classifier

    lines = []
    clf, report = train_classifier(root, epochs=2, batch_size=32, channels=(4, 4, 8), log=lines.append)
    assert report["n_train"] == 60 and report["n_valid"] == 30 and report["n_test"] == 30
    assert len(report["history"]) == 2 and len(lines) == 4 and report["best_epoch"] in (1, 2)
    assert set(report["test_acc"]) == {"clean", "gain_shift", "gain_shift_noise_mulaw"}
    assert clf.meta["dataset"] == "fsdd" and "CC BY-SA 4.0" in clf.meta["credit"]
    save_classifier(clf, tmp_path / "c.pt", report["arch_config"])
    assert load_classifier(tmp_path / "c.pt").predict(torch.zeros(2, 8000), 8000)[0].shape == (2, 10)
    from sashimi import save_pretrained  # a trained classifier knows its arch_config: it saves as a folder too

    assert load_classifier(save_pretrained(clf, tmp_path / "c")).predict(torch.zeros(2, 8000), 8000)[0].shape == (2, 10)
