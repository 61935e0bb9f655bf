"""Class-conditional DiffWave: labels in the noise predictor, classifier-free guidance, every save
format, training with label dropout, and ``sashimi generate --label``."""
import json
import os

import pytest
import torch

import sashimi
from conftest import FIXTURES, run_cli
from sashimi import DiffWaveConfig, SashimiDiffWave
from sashimi.diffusion import ddpm_sample, sampling_plan

CLASSES = ["zero", "one", "two"]
TINY = dict(d_model=8, n_layers=1, l_max=64, d_state=8, d_step_embed=8, d_step_hidden=16, T=20)


def _model(num_classes=3, seed=0):
    torch.manual_seed(seed)
    cfg = DiffWaveConfig(**TINY, num_classes=num_classes, class_names=CLASSES[:num_classes] if num_classes else None)
    model = SashimiDiffWave(cfg).eval()
    with torch.no_grad():  # the zero-initialised output layer would make every prediction 0
        model.final_proj.weight.normal_(0, 0.3)
    return model


def _noisy(batch=3, length=32):
    torch.manual_seed(1)
    return torch.randn(batch, length), torch.tensor([3, 11, 17][:batch])


# ---- the model ----------------------------------------------------------------------------------
def test_unconditional_models_are_unchanged():
    """No new parameter and the same random initialisation: a model built with num_classes=0 is
    the model built before conditioning existed (the published files load into it)."""
    torch.manual_seed(0)
    plain = SashimiDiffWave(DiffWaveConfig(**TINY))
    assert not hasattr(plain, "label_embedder") and plain.classes is None
    assert not any("label" in k for k in plain.state_dict())
    torch.manual_seed(0)
    cond = SashimiDiffWave(DiffWaveConfig(**TINY, num_classes=3))
    shared = {k: v for k, v in cond.state_dict().items() if not k.startswith("label_embedder")}
    assert shared.keys() == plain.state_dict().keys()
    assert all(torch.equal(shared[k], v) for k, v in plain.state_dict().items())
    model = _model(0)
    assert model.noise_fn() is model  # the sampler calls the model itself, as before


def test_labels_change_the_prediction_and_none_is_the_no_label_class():
    model, (x, t) = _model(), _noisy()
    with torch.no_grad():
        a = model(x, t, torch.tensor([0, 0, 0]))
        b = model(x, t, ["one", "one", "one"])
        free, free_index = model(x, t), model(x, t, torch.tensor([3, 3, 3]))
        mixed = model(x, t, [0, "one", 3])
    assert (a - b).abs().max() > 1e-3
    torch.testing.assert_close(free, free_index, rtol=0, atol=0)
    torch.testing.assert_close(mixed, torch.stack([a[0], b[1], free[2]]), rtol=1e-5, atol=1e-6)
    assert model.classes == CLASSES


@pytest.mark.parametrize("labels, error, match", [
    (["seven"] * 3, ValueError, "unknown class 'seven'"),
    (torch.tensor([0, 1, 4]), ValueError, r"in \[0, 3\] \(3: no label\)"),
    (torch.tensor([0, 1]), ValueError, "holds 2 entries, but the batch holds 3"),
    (torch.tensor([0.0, 1.0, 2.0]), TypeError, "integer class indices"),
    ([0, 1.5, 2], TypeError, "class names or integer indices"),
    ("one", TypeError, "LongTensor or a list"),
])
def test_bad_labels_are_refused_clearly(labels, error, match):
    model, (x, t) = _model(), _noisy()
    with pytest.raises(error, match=match):
        model(x, t, labels)


def test_labels_on_an_unconditional_model_are_refused():
    model, (x, t) = _model(0), _noisy()
    with pytest.raises(ValueError, match="this model is unconditional"):
        model(x, t, [0, 0, 0])
    with pytest.raises(ValueError, match="needs a class-conditional model"):
        model.conditional_generate([0], steps=2, length=32, progress=False)
    with pytest.raises(ValueError, match="this model is unconditional"):
        model.generate_from_latent(x, steps=2, labels=[0, 0, 0], progress=False)
    with pytest.raises(ValueError, match="guidance needs labels"):
        model.generate_from_latent(x, steps=2, guidance=2.0, progress=False)
    with pytest.raises(ValueError, match="guidance needs labels"):
        _model().noise_fn(None, guidance=2.0)


def test_conditional_generate_refuses_bad_requests():
    model = _model()
    with pytest.raises(ValueError, match=r"in \[0, 2\]"):  # the no-label class is not a class to ask for
        model.conditional_generate([3], steps=2, length=32, progress=False)
    with pytest.raises(ValueError, match="got None"):
        model.conditional_generate(None, steps=2, length=32, progress=False)
    with pytest.raises(ValueError, match="guidance must be a finite number > 0"):
        model.conditional_generate([0], steps=2, length=32, guidance=0.0, progress=False)
    with pytest.raises(ValueError, match="length must be a positive multiple of 16"):
        model.conditional_generate([0], steps=2, length=30, progress=False)


# ---- sampling -----------------------------------------------------------------------------------
def _plain_conditional(model, labels, seed, steps, length):
    """The reference: DDPM with the conditional noise predictor, drawn as the model draws."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(len(labels), length, generator=gen)
    labels = torch.tensor(labels)
    return ddpm_sample(lambda x, t: model(x, t, labels), z, *sampling_plan(model.schedule, steps),
                       generator=gen).clamp(-1, 1)


def test_guidance_one_is_plain_conditional_sampling():
    model = _model()
    out = model.conditional_generate([0, 2, 1], steps=6, length=48, seed=5, progress=False)
    assert out.shape == (3, 48)
    torch.testing.assert_close(out, _plain_conditional(model, [0, 2, 1], 5, 6, 48), rtol=0, atol=0)
    again = model.conditional_generate(["zero", "two", "one"], steps=6, length=48, seed=5, guidance=1, progress=False)
    torch.testing.assert_close(again, out, rtol=0, atol=0)
    other = model.conditional_generate([1, 1, 1], steps=6, length=48, seed=5, progress=False)
    assert (other - out).abs().max() > 1e-3


def test_guided_sampling_mixes_the_conditional_and_unconditional_predictions():
    model, g = _model(), 2.5
    labels = torch.tensor([0, 2])
    free = torch.full_like(labels, 3)

    def reference(x, t):  # two separate passes, mixed as classifier-free guidance says
        uncond = model(x, t, free)
        return uncond + g * (model(x, t, labels) - uncond)

    gen = torch.Generator().manual_seed(9)
    z = torch.randn(2, 32, generator=gen)
    want = ddpm_sample(reference, z, *sampling_plan(model.schedule, 5), generator=gen).clamp(-1, 1)
    got = model.conditional_generate(labels, steps=5, length=32, seed=9, guidance=g, progress=False)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    plain = model.conditional_generate(labels, steps=5, length=32, seed=9, progress=False)
    assert (got - plain).abs().max() > 1e-3
    torch.testing.assert_close(model.generate_from_latent(z, steps=5, seed=9, labels=labels, guidance=g,
                                                          progress=False),
                               ddpm_sample(reference, z, *sampling_plan(model.schedule, 5),
                                           generator=torch.Generator().manual_seed(9)).clamp(-1, 1),
                               rtol=1e-4, atol=1e-5)


def test_unconditional_generate_of_a_conditional_model_uses_the_no_label_class():
    model = _model()
    out = model.unconditional_generate(2, steps=4, length=32, seed=3, progress=False)
    torch.testing.assert_close(out, _plain_conditional(model, [3, 3], 3, 4, 32), rtol=0, atol=0)


# ---- persistence ----------------------------------------------------------------------------------
def test_every_save_format_keeps_the_classes_and_outputs(tmp_path):
    from sashimi.pretrained.export import export_model

    model, (x, t) = _model(), _noisy()
    labels = torch.tensor([2, 3, 0])
    with torch.no_grad():
        want = model(x, t, labels)
    sashimi.save_model(model, tmp_path / "m.pt")
    sashimi.save_pretrained(model, tmp_path / "folder")
    (tmp_path / "exp").mkdir()
    exported, _ = export_model([str(tmp_path / "m.pt")], str(tmp_path / "exp"), "cond")
    exported_folder, _ = export_model([str(tmp_path / "m.pt")], str(tmp_path / "exp"), "condf", format="folder")
    for path in (tmp_path / "m.pt", tmp_path / "folder", exported, exported_folder):
        back = sashimi.load_model(path)
        assert isinstance(back, SashimiDiffWave) and back.classes == CLASSES, path
        with torch.no_grad():
            torch.testing.assert_close(back(x, t, labels), want, rtol=0, atol=0)
    card = (tmp_path / "folder" / "README.md").read_text()
    assert "conditional_generate(['two'] * 4)" in card


# ---- training -------------------------------------------------------------------------------------
TRAIN = ["model=diffwave", "model_cfg.d_model=8", "model_cfg.n_layers=1", "model_cfg.l_max=256", "model_cfg.d_state=8",
         "model_cfg.d_step_embed=8", "model_cfg.d_step_hidden=16", "model_cfg.T=10", "seq_len=256", "sample_rate=8000",
         "num_workers=0", "progress=false", "tensorboard=false", "batch_size=4", "validation_interval=0",
         "stdout_interval=1000", "labels=fsdd"]


def _fsdd_csv(tmp_path):
    files = sorted(p for p in os.listdir(FIXTURES / "fsdd") if p.endswith(".wav"))
    path = tmp_path / "files.csv"
    path.write_text("path\n" + "".join(f"{FIXTURES / 'fsdd' / f}\n" for f in files))
    return str(path)


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_training_with_labels_and_label_dropout(tmp_path, monkeypatch, dropout):
    from sashimi.train import build_config, train

    seen = []
    forward = SashimiDiffWave.forward

    def spy(self, x, steps, labels=None):
        if self.training:
            seen.extend(self.check_labels(labels, x.size(0)).tolist())
        return forward(self, x, steps, labels)

    monkeypatch.setattr(SashimiDiffWave, "forward", spy)
    cfg = build_config([f"train_csv={_fsdd_csv(tmp_path)}", f"checkpoint_path={tmp_path / 'run'}", "max_steps=4",
                        f"label_dropout={dropout}", *TRAIN])
    out = train(cfg)
    model = sashimi.load_model(out["checkpoint"])
    assert isinstance(model, SashimiDiffWave) and model.classes == [str(d) for d in range(10)]
    assert len(seen) == 16 and all(0 <= v <= 10 for v in seen)
    dropped = seen.count(10)  # the "no label" class
    if dropout:
        assert 0 < dropped < 16
    else:
        assert dropped == 0


def test_fine_tuning_an_unconditional_diffwave_into_a_conditional_one(tmp_path, capsys):
    from sashimi.train import build_config, train

    cfg = build_config([*TRAIN, "labels=none", f"train_csv={_fsdd_csv(tmp_path)}"])
    base = SashimiDiffWave(cfg.model_cfg)
    sashimi.save_model(base, tmp_path / "base.pt")
    cfg = build_config([f"train_csv={_fsdd_csv(tmp_path)}", f"checkpoint_path={tmp_path / 'run'}", "max_steps=1",
                        f"init_checkpoint={tmp_path / 'base.pt'}", *TRAIN])
    out = train(cfg)
    assert "kept their initialisation: ['label_embedder']" in capsys.readouterr().out
    assert sashimi.load_model(out["checkpoint"]).classes == [str(d) for d in range(10)]


def test_the_diffwave_task_passes_the_labels():
    from sashimi.data.datasets import WaveCollate
    from sashimi.train.tasks import get_task

    model, (x, _) = _model(), _noisy(2, 64)
    x = x.clamp(-1, 1)
    batch = WaveCollate()([(x[0], 64, 1), (x[1], 64, 3)])
    task = get_task("diffwave")
    torch.manual_seed(4)
    got = task.loss(model, batch)
    want = model.training_loss(x, torch.Generator().manual_seed(4), labels=[1, 3])
    torch.testing.assert_close(got, want)
    torch.manual_seed(4)
    assert (task.loss(model, WaveCollate()([(x[0], 64, 0), (x[1], 64, 0)])) - got).abs() > 1e-6
    total, count = task.metric(model, batch, 0)
    assert int(count) == 2 and torch.isfinite(total)


# ---- command line ---------------------------------------------------------------------------------
@pytest.fixture
def cond_ckpt(tmp_path):
    path = tmp_path / "cond.pt"
    sashimi.save_model(_model(), path)
    return str(path)


def test_generate_label_cli(cond_ckpt, tmp_path, capsys):
    import soundfile as sf

    out = tmp_path / "twos"
    args = ["generate", "--model", cond_ckpt, "--n", "2", "--seconds", "0.002", "--steps", "3", "-q", "--seed", "1"]
    code, _, err = run_cli(capsys, *args, "--label", "two,0", "--out", str(out))
    assert code == 0, err
    assert sorted(os.listdir(out)) == ["sample_000.wav", "sample_001.wav"]
    wav, rate = sf.read(out / "sample_000.wav")
    assert rate == 16000 and wav.shape == (32,)
    model = sashimi.load_model(cond_ckpt)
    want = model.conditional_generate([2, 0], steps=3, length=32, seed=1, progress=False)
    assert abs(wav - want[0].numpy()).max() < 1e-4  # 16-bit WAV
    code, _, err = run_cli(capsys, *args, "--label", "1", "--guidance", "3", "--out", str(tmp_path / "g"))
    assert code == 0, err
    code, _, err = run_cli(capsys, *args, "--label", "seven", "--out", str(tmp_path / "x"))
    assert code == 2 and "unknown class 'seven'" in err and "zero, one, two" in err
    code, _, err = run_cli(capsys, *args, "--guidance", "2", "--out", str(tmp_path / "y"))
    assert code == 2 and "--guidance needs --label" in err


def test_label_on_an_unconditional_diffwave_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "plain.pt"
    sashimi.save_model(_model(0), path)
    code, _, err = run_cli(capsys, "generate", "--model", str(path), "--label", "1", "--n", "1", "--seconds", "0.002",
                           "--steps", "2", "--out", str(tmp_path / "x"), "-q")
    assert code == 2 and "--label needs a class-conditional model" in err


def test_eval_conditional_scores_a_conditional_diffwave(tmp_path, capsys):
    torch.manual_seed(0)
    model = SashimiDiffWave(DiffWaveConfig(**{**TINY, "l_max": 512}, sample_rate=8000, class_names=["3", "7"]))
    path = tmp_path / "digits.pt"
    sashimi.save_model(model, path)
    code, out, err = run_cli(capsys, "eval", "--model", str(path), "--conditional", "--n", "2", "--seconds", "0.032",
                             "--steps", "2", "--guidance", "2", "--reference", str(FIXTURES / "fsdd"), "--json", "-q")
    assert code == 0, err
    cond = json.loads(out)["conditional"]
    assert cond["per_class_n"] == 2 and all(sum(row) == 2 for row in cond["confusion"])


# ---- best-of-K reranking ------------------------------------------------------------------------------
class _LoudestIsClassOne:
    """A stand-in classifier: the louder a clip, the surer it is of class 1 (of 2)."""

    classes = ("zero", "one")

    def predict(self, wavs, sample_rate):
        p1 = wavs.abs().mean(1).double().clamp(0, 1)
        return torch.stack([1 - p1, p1], 1), None


def test_best_of_keeps_the_candidate_heard_most_surely_as_asked():
    from sashimi.eval import best_of

    torch.manual_seed(0)
    candidates = torch.rand(2, 3, 40) * torch.tensor([0.2, 0.9, 0.5]).view(1, 3, 1)  # candidate 1 loudest
    loudness = candidates.abs().mean(2).double()  # (2, 3): the stand-in's probability of its class 1
    # model classes map to classifier classes 0 -> 1, 1 -> 0: request 0 (model class 1) wants the
    # quietest candidate, request 1 (model class 0) the loudest
    kept, prob, pick = best_of(candidates, [1, 0], _LoudestIsClassOne(), [1, 0], 8000)
    assert pick.tolist() == [0, 1]
    torch.testing.assert_close(kept, torch.stack([candidates[0, 0], candidates[1, 1]]), rtol=0, atol=0)
    torch.testing.assert_close(prob, torch.stack([1 - loudness[0, 0], loudness[1, 1]]))
    _, _, pick = best_of(candidates, [1, 0], _LoudestIsClassOne(), [0, 1], 8000)  # the identity mapping
    assert pick.tolist() == [1, 0]
    with pytest.raises(ValueError, match="requested holds 1 classes for 2"):
        best_of(candidates, [1], _LoudestIsClassOne(), [0, 1], 8000)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        best_of(candidates, [1, 2], _LoudestIsClassOne(), [0, 1], 8000)


def test_generate_best_of_cli_keeps_the_classifiers_choice(tmp_path, capsys):
    import soundfile as sf

    from sashimi.eval import load_classifier

    model = SashimiDiffWave(DiffWaveConfig(**{**TINY, "l_max": 512}, sample_rate=8000, class_names=["3", "7"])).eval()
    torch.manual_seed(2)
    with torch.no_grad():
        model.final_proj.weight.normal_(0, 0.3)
    path = tmp_path / "digits.pt"
    sashimi.save_model(model, path)
    code, _, err = run_cli(capsys, "generate", "--model", str(path), "--label", "7,3", "--best-of", "3", "--n", "2",
                           "--seconds", "0.064", "--steps", "2", "--seed", "5", "--out", str(tmp_path / "best"))
    assert code == 0, err
    assert "best of 3: the classifier gives the requested class a mean probability" in err
    # one batch: candidate r is the plain sample with seed 5 + r
    draws = torch.stack([model.conditional_generate([1, 0], steps=2, length=512, seed=5 + r, progress=False)
                         for r in range(3)], 1)  # (2, 3, 512)
    clf = load_classifier("fsdd")
    probs, _ = clf.predict(draws.reshape(6, 512), 8000)
    seven, three = [c.lower() for c in clf.classes].index("seven"), [c.lower() for c in clf.classes].index("three")
    pick = [int(probs.view(2, 3, -1)[0, :, seven].argmax()), int(probs.view(2, 3, -1)[1, :, three].argmax())]
    for i in range(2):
        wav, _ = sf.read(tmp_path / "best" / f"sample_00{i}.wav")
        assert abs(wav - draws[i, pick[i]].numpy()).max() < 1e-4


def test_best_of_errors(tmp_path, capsys, cond_ckpt):
    base = ["generate", "--model", cond_ckpt, "--n", "1", "--seconds", "0.002", "--steps", "2", "-q"]
    code, _, err = run_cli(capsys, *base, "--best-of", "2", "--out", str(tmp_path / "a"))
    assert code == 2 and "--best-of needs --label" in err
    code, _, err = run_cli(capsys, *base, "--best-of", "0", "--label", "1", "--out", str(tmp_path / "b"))
    assert code == 2 and "--best-of" in err
    code, _, err = run_cli(capsys, *base, "--best-of", "2", "--label", "1", "--stream", str(tmp_path / "c.wav"))
    assert code == 2 and "--best-of does not combine with --stream" in err
    torch.manual_seed(0)
    other = tmp_path / "animals.pt"
    sashimi.save_model(SashimiDiffWave(DiffWaveConfig(**TINY, class_names=["cat", "dog"])), other)
    code, _, err = run_cli(capsys, "generate", "--model", str(other), "--n", "1", "--seconds", "0.002", "--steps", "2",
                           "-q", "--label", "cat", "--best-of", "2", "--out", str(tmp_path / "d"))
    assert code == 2 and "bundled FSDD digit classifier" in err and "'cat'" in err
