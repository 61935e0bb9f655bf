"""The SaShiMi authors' SC09 classifier file (a pickled DataParallel(CifarResNeXt)), loaded without
running pickled code, against reference values their code computed (tests/fixtures/authors_sc09:
the small fixture of ../shared/fixtures/authors, made by the authors' code at commit cac47eb)."""
import os
import sys
import types

import pytest
import torch
import torch.nn as nn

from sashimi.data.audio import read_audio
from sashimi.eval import load_classifier, log_mel
from sashimi.eval.classifier import PAPER_PROTOCOL
from sashimi.eval.models import ResNeXt, ResNeXtBottleneck
from sashimi.eval.sc09_resnext import PAPER_PAD_MODE, load_authors_resnext
from sashimi.errors import CheckpointError
from sashimi.persistence.download import DownloadError, HashMismatchError, cache_path
from sashimi.persistence.pickled_modules import UnsafePickleError, read_pickled_modules
from sashimi.pretrained import registry

PADDINGS = [("reflect", ""), ("constant", "_librosa092")]  # librosa 0.8.1 and 0.9.2: the reference keys' suffixes


@pytest.fixture(scope="module")
def authors(fixtures_dir):
    folder = fixtures_dir / "authors_sc09"
    ref = torch.load(folder / "sc09_classifier_small.reference.pt", weights_only=True)
    wavs = torch.zeros(4, 16000)  # the authors' FixAudioLength: cut or zero-pad at the end
    for i in range(4):
        w, rate = read_audio(folder / f"clip{i}.wav")
        assert rate == 16000
        wavs[i, :min(16000, w.numel())] = w[:16000]
    return {"path": str(folder / "sc09_classifier_small.pth"), "ref": ref, "wavs": wavs, "folder": folder}


# ---- the front end ------------------------------------------------------------------------------
@pytest.mark.parametrize("pad,suffix", PADDINGS)
def test_front_end_matches_librosa(authors, pad, suffix):
    mel = log_mel(authors["wavs"], 16000, pad_mode=pad)[:, 0]
    assert mel.shape == (4, 32, 32)
    assert (mel - authors["ref"]["mel_db" + suffix]).abs().max() < 1e-4  # dB; measured 4.8e-6
    assert mel.max() == 0 and mel.min() >= -80


def test_the_two_paddings_differ_where_librosa_versions_do(authors):
    reflect, constant = (log_mel(authors["wavs"], 16000, pad_mode=p)[:, 0] for p, _ in PADDINGS)
    gap = (reflect - constant).abs()
    assert gap[..., 0].max() > 1.0 and gap[..., -1].max() > 1.0  # the first and last frames move most
    ref_gap = (authors["ref"]["mel_db"] - authors["ref"]["mel_db_librosa092"]).abs()
    assert torch.allclose(gap, ref_gap, atol=1e-4)


# ---- the classifier -------------------------------------------------------------------------------
@pytest.mark.parametrize("pad,suffix", PADDINGS)
def test_logits_and_features_match_the_authors_code(authors, pad, suffix):
    clf = load_classifier(authors["path"], pad_mode=pad)
    assert clf.pad_mode == pad and clf.meta["protocol"] == PAPER_PROTOCOL
    assert clf.classes[0] == "zero" and clf.classes[9] == "nine" and clf.data_rate == 16000
    assert sum(p.numel() for p in clf.model.parameters()) == 68554
    with torch.no_grad():
        logits, feats = clf.model.forward_features(clf.images(authors["wavs"], 16000))
    ref = authors["ref"]
    assert (logits - ref["logits" + suffix]).abs().max() < 1e-3  # measured 1.4e-6 (reflect), 1.9e-6 (constant)
    assert (feats - ref["classifier_input_activations" + suffix]).abs().max() < 1e-3
    probs, features = clf.predict(authors["wavs"], 16000)
    assert (probs - ref["probs" + suffix].double()).abs().max() < 1e-5
    assert features.shape == (4, 256) and clf.feature_dim == 256


def test_default_padding_is_the_papers(authors):
    assert PAPER_PAD_MODE == "reflect" and load_classifier(authors["path"]).pad_mode == "reflect"
    with pytest.raises(ValueError, match="pad_mode"):
        load_classifier(authors["path"], pad_mode="zeros")


def test_the_wrong_padding_gives_other_logits(authors):
    clf = load_classifier(authors["path"], pad_mode="constant")
    with torch.no_grad():
        logits = clf.model(clf.images(authors["wavs"], 16000))
    assert (logits - authors["ref"]["logits"]).abs().max() > 1e-2  # so the tests above can tell them apart


def test_batchnorm_eps_comes_from_the_file(authors):
    model, config = load_authors_resnext(authors["path"])
    assert config == dict(n_classes=10, cardinality=2, depth=11, base_width=4, widen_factor=1, in_channels=1)
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert not model.training


# ---- safety ---------------------------------------------------------------------------------------
class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_calls_os_system_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": _RunsCode(marker)}, path)
    with pytest.raises(UnsafePickleError, match=r"system.*not one of the classes this loader admits"):
        load_classifier(str(path))
    with pytest.raises(UnsafePickleError):
        read_pickled_modules(path, [])
    assert not marker.exists()


def test_other_code_and_other_modules_are_refused(tmp_path):
    path = tmp_path / "eval.pth"
    torch.save({"x": _Builtin()}, path)
    with pytest.raises(UnsafePickleError, match=r"__builtin__.eval|builtins.eval"):
        load_classifier(str(path))
    linear = tmp_path / "linear.pth"
    torch.save(nn.Linear(3, 2), linear)  # an admitted class, but not the authors' structure
    with pytest.raises(CheckpointError, match="expected a pickled DataParallel"):
        load_classifier(str(linear))


class _Builtin:
    def __reduce__(self):
        return eval, ("1 + 1",)


def test_a_damaged_archive_is_a_clear_error(tmp_path, authors):
    path = tmp_path / "cut.pth"
    path.write_bytes(open(authors["path"], "rb").read()[:50000])
    with pytest.raises(ValueError):
        load_classifier(str(path))


# ---- other sizes, written the way the authors' training script writes them -------------------------
@pytest.fixture
def authors_module(monkeypatch):
    """A stand-in for the authors' ``models.resnext`` so that torch.save pickles its class names."""
    mod = types.ModuleType("models.resnext")

    class CifarResNeXt(ResNeXt):
        pass

    class Bottleneck(ResNeXtBottleneck):
        pass

    for cls, name in ((CifarResNeXt, "CifarResNeXt"), (Bottleneck, "ResNeXtBottleneck")):
        cls.__module__, cls.__name__, cls.__qualname__ = "models.resnext", name, name
        setattr(mod, name, cls)
    monkeypatch.setitem(sys.modules, "models", types.ModuleType("models"))
    monkeypatch.setitem(sys.modules, "models.resnext", mod)
    return mod


def _authors_file(mod, path, **config):
    torch.manual_seed(0)
    model = mod.CifarResNeXt(**config)
    for m in model.modules():
        if type(m) is ResNeXtBottleneck:
            m.__class__ = mod.ResNeXtBottleneck
        if isinstance(m, nn.BatchNorm2d):  # trained-looking statistics, so that eval mode matters
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.eps = 1e-3
    model.cardinality, model.depth, model.nlabels = config["cardinality"], config["depth"], config["n_classes"]
    model.base_width, model.widen_factor = config["base_width"], config["widen_factor"]
    torch.save(nn.DataParallel(model), path)
    return model.eval()


def test_other_sizes_load_by_the_same_code(tmp_path, authors_module):
    config = dict(n_classes=12, cardinality=4, depth=20, base_width=8, widen_factor=2, in_channels=1)
    original = _authors_file(authors_module, tmp_path / "big.pth", **config)
    clf = load_classifier(str(tmp_path / "big.pth"))
    assert clf.arch_config == config and len(clf.classes) == 12 and clf.feature_dim == 512
    x = torch.randn(3, 1, 32, 32) * 20 - 40
    with torch.no_grad():
        assert torch.allclose(clf.model(x), original(x), atol=1e-5)


def test_hyperparameters_that_contradict_the_weights_are_refused(tmp_path, authors_module):
    config = dict(n_classes=10, cardinality=2, depth=11, base_width=4, widen_factor=1, in_channels=1)
    model = authors_module.CifarResNeXt(**config)
    for m in model.modules():
        if type(m) is ResNeXtBottleneck:
            m.__class__ = authors_module.ResNeXtBottleneck
    model.cardinality, model.depth = 4, 11  # the weights say cardinality 2
    torch.save(nn.DataParallel(model), tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="cardinality = 4 but the weights say 2"):
        load_classifier(str(tmp_path / "odd.pth"))


# ---- the published file by name: downloaded once, offline errors --------------------------------------
def test_sc09_resnext_is_downloaded_once_and_cached(tmp_path, monkeypatch, authors):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    source = tmp_path / "release" / "resnext.pth"
    source.parent.mkdir()
    source.write_bytes(open(authors["path"], "rb").read())
    url = source.as_uri()
    monkeypatch.setitem(registry.DOWNLOADED_CLASSIFIERS, "sc09_resnext", (url, None))
    clf = load_classifier("sc09_resnext", progress=False)
    assert clf.name == "sc09_resnext" and os.path.isfile(cache_path(url))
    source.unlink()  # the second load reads the cache
    assert load_classifier("sc09_resnext", progress=False).feature_dim == 256
    monkeypatch.setitem(registry.DOWNLOADED_CLASSIFIERS, "sc09_resnext", (url, "0" * 64))
    with pytest.raises(HashMismatchError):
        load_classifier("sc09_resnext", progress=False)


def test_sc09_resnext_offline_is_one_line_naming_url_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = (tmp_path / "nowhere" / "resnext.pth").as_uri()
    monkeypatch.setitem(registry.DOWNLOADED_CLASSIFIERS, "sc09_resnext", (url, None))
    with pytest.raises(DownloadError) as e:
        load_classifier("sc09_resnext", progress=False)
    message = str(e.value)
    assert "\n" not in message and url in message and os.path.dirname(cache_path(url)) in message


def test_the_published_address():
    url, _ = registry.DOWNLOADED_CLASSIFIERS["sc09_resnext"]
    assert url == ("https://huggingface.co/krandiash/sashimi-release/resolve/86a6adc0daa2692a37cc829e2bfa8fb8a4122bd9/"
                   "sc09_classifier/resnext.pth")  # the release's Feb-2022 commit


def test_the_published_architecture_has_the_published_keys_and_shapes(fixtures_dir):
    """sc09_classifier_full.manifest.json: the 188 keys and shapes of the published resnext.pth."""
    import json

    manifest = json.loads((fixtures_dir / "authors_sc09" / "sc09_classifier_full.manifest.json").read_text())
    h = manifest["hparams"]
    model = ResNeXt(n_classes=h["nlabels"], cardinality=h["cardinality"], depth=h["depth"], base_width=h["base_width"],
                    widen_factor=h["widen_factor"], in_channels=h["in_channels"])
    ours = {f"module.{k}": list(v.shape) for k, v in model.state_dict().items()}
    assert ours == manifest["state_dict_shapes"] and len(ours) == 188
    assert sum(p.numel() for p in model.parameters()) == manifest["n_params"] == 34425546
    assert ResNeXt.config_from_state_dict(model.state_dict()) == dict(
        n_classes=10, cardinality=8, depth=29, base_width=64, widen_factor=4, in_channels=1)


def test_its_state_dict_loads_as_the_same_classifier(authors, tmp_path):
    model, _ = load_authors_resnext(authors["path"])
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "resnext_state.pt")
    clf = load_classifier(str(tmp_path / "resnext_state.pt"))
    assert clf.meta["protocol"] == PAPER_PROTOCOL and clf.pad_mode == "reflect"
    probs, _ = clf.predict(authors["wavs"], 16000)
    assert (probs - authors["ref"]["probs"].double()).abs().max() < 1e-5
