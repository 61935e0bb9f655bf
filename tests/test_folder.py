"""The model folder (sashimi.save_pretrained): config.json + model.safetensors + README.md, no pickle."""
import dataclasses
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import sashimi
from sashimi import CheckpointError, DiffWaveConfig, SashimiDiffWave, load_model, save_pretrained
from sashimi.persistence.download import sha256_file
from sashimi.eval import Classifier, DigitCNN, load_classifier

from conftest import run_cli


def refuse_torch_load(monkeypatch):
    """From here on, any torch.load (i.e. any unpickling) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model folder must load without torch.load (no pickle)")

    monkeypatch.setattr(torch, "load", refuse)


@pytest.fixture(scope="module")
def ar_folder(ar_small, tmp_path_factory):
    return save_pretrained(ar_small, tmp_path_factory.mktemp("folder") / "ar_small",
                           provenance={"source": "rf5_ar_small.ckpt.pt", "valid_metric": [1.5, float("inf")]})


def tiny_classifier() -> Classifier:
    torch.manual_seed(0)
    model = DigitCNN(n_classes=3, channels=(4, 8, 8))
    with torch.no_grad():  # BatchNorm statistics that matter, so that buffers must round-trip too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return Classifier(model, ["yes", "no", "maybe"], 8000, meta={"dataset": "mine"},
                      arch_config=dict(n_classes=3, channels=[4, 8, 8]))


# ---- round trips ------------------------------------------------------------------------------------
def test_ar_round_trip_gives_the_same_logits_without_unpickling(ar_small, ar_folder, monkeypatch):
    assert sorted(os.listdir(ar_folder)) == ["README.md", "config.json", "model.safetensors"]
    blob = json.loads((ar_folder / "config.json").read_text())
    assert blob["format"] == "sashimi" and blob["format_version"] == 1 and blob["kind"] == "ar"
    assert blob["config"] == dataclasses.asdict(ar_small.config) and blob["class_names"] is None
    assert blob["sha256"] == {"model.safetensors": sha256_file(ar_folder / "model.safetensors")}
    prov = blob["provenance"]
    assert prov["source"] == "rf5_ar_small.ckpt.pt" and prov["valid_metric"] == [1.5, "inf"]
    assert prov["saved_by"] == f"sashimi {sashimi.__version__} (torch {torch.__version__})" and prov["created"]
    card = (ar_folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: sashimi\n") and 'pip install "sashimi-audio[hub]"' in card
    assert blob["sha256"]["model.safetensors"] in card

    refuse_torch_load(monkeypatch)
    for source in (str(ar_folder), ar_folder):  # a str or a Path
        model = load_model(source)
        assert isinstance(model, sashimi.SashimiAR) and not model.training
        assert dataclasses.asdict(model.config) == dataclasses.asdict(ar_small.config)
        tokens = torch.randint(0, 256, (2, 300))
        with torch.no_grad():
            assert torch.equal(model(tokens), ar_small(tokens))


def test_diffwave_round_trip_denoises_identically(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = SashimiDiffWave(DiffWaveConfig(d_model=8, n_layers=1, l_max=256, d_step_hidden=16, d_step_embed=8)).eval()
    with torch.no_grad():  # the last layer starts at zero: give it weights, so that the output depends on all of them
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    folder = save_pretrained(model, tmp_path / "dw")
    refuse_torch_load(monkeypatch)
    back = load_model(folder)
    assert isinstance(back, SashimiDiffWave) and json.loads((folder / "config.json").read_text())["kind"] == "diffwave"
    z = torch.randn(2, 256)
    with torch.no_grad():
        out = model(z, torch.tensor([3, 150]))
        assert out.abs().max() > 0 and torch.equal(back(z, torch.tensor([3, 150])), out)
    a = model.generate_from_latent(z, progress=False, steps=3, seed=0)
    assert torch.equal(back.generate_from_latent(z, progress=False, steps=3, seed=0), a)


def test_classifier_round_trip(tmp_path, monkeypatch):
    clf = tiny_classifier()
    folder = save_pretrained(clf, tmp_path / "clf", provenance={"credit": "my recordings, CC0", "license": "cc0-1.0"})
    blob = json.loads((folder / "config.json").read_text())
    assert blob["kind"] == "classifier" and blob["class_names"] == ["yes", "no", "maybe"]
    arch_config = {"n_classes": 3, "channels": [4, 8, 8]}
    assert blob["config"] == {"arch": "digit_cnn", "arch_config": arch_config, "data_rate": 8000}
    assert "license: cc0-1.0" in (folder / "README.md").read_text()
    refuse_torch_load(monkeypatch)
    back = load_classifier(folder)
    assert back.classes == clf.classes and back.data_rate == 8000 and back.name == "clf"
    assert back.meta["dataset"] == "mine" and back.meta["credit"] == "my recordings, CC0"
    wavs = 0.1 * torch.randn(3, 8000)
    for a, b in zip(clf.predict(wavs, 8000), back.predict(wavs, 8000)):
        assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match=r"config\.json: key 'kind' is 'classifier'.*load_classifier"):
        load_model(folder)


def test_bundled_model_and_classifier_are_folders_that_load_without_unpickling(monkeypatch):
    refuse_torch_load(monkeypatch)
    assert load_model("sashimi_ar_fsdd").config.sample_rate == 8000
    assert load_classifier("fsdd").classes[0] == "zero"


def test_an_existing_folder_is_replaced_only_when_asked(ar_small, tmp_path):
    folder = save_pretrained(ar_small, tmp_path / "m")
    with pytest.raises(FileExistsError, match="not overwritten"):
        save_pretrained(ar_small, folder)
    other = SashimiDiffWave(DiffWaveConfig(d_model=8, n_layers=1, l_max=256, d_step_hidden=16, d_step_embed=8))
    save_pretrained(other, folder, overwrite=True)
    assert isinstance(load_model(folder), SashimiDiffWave)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # nothing temporary left behind
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a model folder"):
        save_pretrained(ar_small, tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


# ---- malformed folders: one CheckpointError naming the file and the key or tensor --------------------
def _edit_config(change):
    def edit(folder):
        path = folder / "config.json"
        blob = json.loads(path.read_text())
        change(blob)
        path.write_text(json.dumps(blob))
    return edit


def _edit_tensors(change):
    """Change the weights and record their new SHA-256, so that the check after the hash is reached."""
    def edit(folder):
        path = folder / "model.safetensors"
        tensors = dict(load_file(path))
        change(tensors)
        save_file(tensors, path)
        _edit_config(lambda b: b["sha256"].update({"model.safetensors": sha256_file(path)}))(folder)
    return edit


def _flip_last_byte(folder):
    """Damage the weights without telling config.json."""
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))


def _truncate_weights(folder):
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    _edit_config(lambda b: b["sha256"].update({"model.safetensors": sha256_file(path)}))(folder)


MALFORMED = {
    "no config.json": (lambda f: (f / "config.json").unlink(), r"ar: no config\.json, so not a sashimi model folder"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), r"model\.safetensors is missing"),
    "not JSON": (lambda f: (f / "config.json").write_text("{'kind': 'ar'"), r"config\.json: not valid JSON"),
    "another library's config.json": (
        lambda f: (f / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]})),
        r"config\.json: not a sashimi model config: key 'format' is nothing"),
    "unknown kind": (_edit_config(lambda b: b.update(kind="gan")), r"config\.json: key 'kind' is str 'gan', not a known"),
    "newer format": (_edit_config(lambda b: b.update(format_version=2)), r"config\.json: key 'format_version' is int 2"),
    "unknown key": (_edit_config(lambda b: b.update(extra=1)), r"config\.json: unknown key\(s\) \['extra'\]"),
    "config not a mapping": (_edit_config(lambda b: b.update(config=[16, 2])),
                             r"config\.json: key 'config' must be a mapping"),
    "bad config value": (_edit_config(lambda b: b["config"].update(d_model="wide")),
                         r"config\.json: key 'config'.*d_model"),
    "unknown config field": (_edit_config(lambda b: b["config"].update(depth=3)),
                             r"config\.json: key 'config': unknown key\(s\) \['depth'\]"),
    "class names of another model": (_edit_config(lambda b: b.update(class_names=["a", "b"])),
                                     r"config\.json: key 'class_names' is list \['a', 'b'\], but the model"),
    "class names not strings": (_edit_config(lambda b: b.update(class_names=[1])),
                                r"config\.json: key 'class_names' must be a list of strings"),
    "no digest": (_edit_config(lambda b: b.update(sha256={})),
                  r"config\.json: key 'sha256' must map 'model\.safetensors'"),
    "changed weights": (_flip_last_byte,
                        r"model\.safetensors: SHA-256 [0-9a-f]{64} differs from the one in config\.json key 'sha256'"),
    "truncated weights": (_truncate_weights, r"model\.safetensors: not a readable safetensors file"),
    "wrong dtype": (_edit_tensors(lambda t: t.update({"head.weight": t["head.weight"].long()})),
                    r"model\.safetensors: .*1 tensor\(s\) of the wrong dtype.*'head\.weight' torch\.int64 vs "
                    r"torch\.float32"),
    "wrong shape": (_edit_tensors(lambda t: t.update({"head.bias": torch.zeros(7)})),
                    r"model\.safetensors: .*wrong shape.*'head\.bias' \(7,\) vs \(256,\)"),
    "missing tensor": (_edit_tensors(lambda t: t.pop("head.bias")),
                       r"model\.safetensors: .*1 missing tensor\(s\), e\.g\. 'head\.bias'"),
    "unexpected tensor": (_edit_tensors(lambda t: t.update(extra=torch.zeros(1))),
                          r"model\.safetensors: .*1 unexpected tensor\(s\), e\.g\. 'extra'"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_folder_gives_one_clear_checkpoint_error(case, ar_folder, tmp_path):
    folder = tmp_path / "ar"
    shutil.copytree(ar_folder, folder)
    damage, match = MALFORMED[case]
    damage(folder)
    with pytest.raises(CheckpointError, match=match) as info:
        load_model(folder)
    assert str(folder) in str(info.value) and len(str(info.value).splitlines()) == 1


def test_malformed_classifier_config(tmp_path):
    folder = save_pretrained(tiny_classifier(), tmp_path / "clf")
    cases = [(lambda b: b["config"].update(arch="vgg"), r"key 'config', entry 'arch': 'vgg' is not a known"),
             (lambda b: b.update(class_names=["yes", "no"]), r"key 'class_names' lists 2 classes.*3 outputs"),
             (lambda b: b.update(class_names=None), r"key 'class_names' must list the classes"),
             (lambda b: b["config"].update(arch_config={"channels": "wide"}), r"entry 'arch_config' does not build")]
    for change, match in cases:
        bad = tmp_path / "bad"
        shutil.copytree(folder, bad)
        _edit_config(change)(bad)
        with pytest.raises(CheckpointError, match=rf"bad/config\.json: .*{match}"):
            load_classifier(bad)
        shutil.rmtree(bad)


# ---- the command line -------------------------------------------------------------------------------
def test_generate_takes_a_folder(ar_folder, tmp_path, capsys):
    code, _, err = run_cli(capsys, "generate", "--model", str(ar_folder), "--n", "1", "--seconds", "0.01", "--quiet",
                           "--out", str(tmp_path / "wavs"))
    assert code == 0, err
    assert os.listdir(tmp_path / "wavs") == ["sample_000.wav"]
    code, _, err = run_cli(capsys, "generate", "--model", str(tmp_path), "--out", str(tmp_path / "more"))
    assert code == 2 and "no config.json" in err and len(err.strip().splitlines()) == 1


def test_export_format_folder_keeps_provenance_and_never_overwrites(ar_small, tmp_path, capsys):
    sashimi.save_model(ar_small, tmp_path / "ckpt_00000009.pt", step=9, optimizer={"state": {}})
    out = tmp_path / "out"
    out.mkdir()
    args = ("export", str(tmp_path / "ckpt_00000009.pt"), "--format", "folder", "--out-dir", str(out), "--name", "mine",
            "--credit", "fsdd")
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    folder = out / "mine"
    for name in ("config.json", "model.safetensors", "README.md"):
        assert f"sha256 {sha256_file(folder / name)}  {name}" in stdout
    prov = json.loads((folder / "config.json").read_text())["provenance"]
    assert prov["step"] == 9 and prov["source"] == "ckpt_00000009.pt" and prov["license"] == "cc-by-sa-4.0"
    assert "Free Spoken Digit Dataset" in prov["credit"] and "optimizer" not in prov
    tokens = torch.randint(0, 256, (1, 200))
    with torch.no_grad():
        assert torch.equal(load_model(folder)(tokens), ar_small(tokens))
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "exists; not overwritten" in err
