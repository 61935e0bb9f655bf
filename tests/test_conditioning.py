"""Class-conditional SaShiMi: labels through every API, every engine, persistence, training and the CLI."""
import json
import os

import pytest
import torch

import sashimi
from conftest import FIXTURES, run_cli
from sashimi import ARConfig, SashimiAR, fastgen

CLASSES = ["zero", "one", "two"]


def _model(num_classes=3, seed=0):
    torch.manual_seed(seed)
    cfg = ARConfig(d_model=16, n_layers=2, l_max=512, sample_rate=8000, num_classes=num_classes,
                   class_names=CLASSES[:num_classes] if num_classes else None)
    model = SashimiAR(cfg).eval()
    if num_classes:  # trained label vectors are not zero: make the test see them
        torch.nn.init.normal_(model.label_embedder.weight)
    return model


def _tokens(batch=4, length=48):
    torch.manual_seed(1)
    tok = torch.randint(0, 256, (batch, length))
    tok[:, 0] = sashimi.SILENCE_TOKEN
    return tok


# ---- the model ----------------------------------------------------------------------------------
def test_unconditional_models_are_unchanged(ar_small):
    model = _model(num_classes=0)
    assert model.classes is None and not hasattr(model, "label_embedder")
    assert not any(k.startswith("label_embedder") for k in ar_small.state_dict())
    with pytest.raises(ValueError, match="unconditional"):
        model(_tokens(), labels=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="unconditional"):
        model.conditional_generate([0], length=8, progress=False)


def test_labels_change_the_logits_and_none_is_the_no_label_class():
    model, tok = _model(), _tokens()
    a = model(tok, labels=torch.tensor([0, 0, 0, 0]))
    b = model(tok, labels=torch.tensor([1, 1, 1, 1]))
    assert (a - b).abs().max() > 1e-3
    none = model(tok)
    explicit = model(tok, labels=torch.full((4,), 3))  # index num_classes: no label
    torch.testing.assert_close(none, explicit, rtol=0, atol=0)
    by_name = model(tok, labels=["zero", "one", 2, "zero"])
    torch.testing.assert_close(by_name, model(tok, labels=torch.tensor([0, 1, 2, 0])), rtol=0, atol=0)
    assert model.classes == CLASSES


@pytest.mark.parametrize("labels, error, match", [
    (["four"] * 4, ValueError, "unknown class 'four'"),
    (torch.tensor([0, 1, 2, 4]), ValueError, r"in \[0, 3\]"),
    (torch.tensor([0, 1]), ValueError, "2 entries, but the batch holds 4"),
    (torch.zeros(4), TypeError, "integer class indices"),
    ("zero", TypeError, "LongTensor or a list"),
    ([0.5] * 4, TypeError, "class names or integer indices"),
])
def test_bad_labels_are_refused_clearly(labels, error, match):
    with pytest.raises(error, match=match):
        _model()(_tokens(), labels=labels)


def test_conditional_generate_refuses_the_no_label_class():
    with pytest.raises(ValueError, match=r"in \[0, 2\]"):
        _model().conditional_generate([3], length=8, progress=False)


@pytest.mark.parametrize("kind", ["eager", "cpp", "torch"])
def test_every_engine_matches_the_eager_reference_with_labels(kind):
    model, tok = _model(), _tokens()
    labels = torch.tensor([0, 1, 2, 3])
    ref = model(tok, labels=labels)  # convolution mode
    if kind == "eager":
        model.setup_rnn("dense")
        state, out = model.default_state(4), []
        for t in range(tok.size(1)):
            logits, state = model.step(tok[:, t], state, labels)
            out.append(logits)
        got = torch.stack(out, 1)
    else:
        from sashimi.fastgen import cpu

        if kind == "cpp" and cpu.load_library() is None:
            pytest.skip(f"no C++ build: {cpu.build_error}")
        got = fastgen.teacher_forced_logits(model, tok, kind=kind, condition=model.label_vectors(labels, 4))
    assert (got - ref).abs().max() < 1e-5  # today's tolerance for the unconditional engines


def test_an_engine_forgets_the_labels_of_the_previous_request():
    model, tok = _model(), _tokens()
    for kind in ("torch", "cpp"):
        plain = fastgen.teacher_forced_logits(model, tok, kind=kind)
        fastgen.teacher_forced_logits(model, tok, kind=kind, condition=model.label_vectors(torch.tensor([0, 1, 2, 0]), 4))
        assert torch.equal(fastgen.teacher_forced_logits(model, tok, kind=kind), plain)
    no_label = fastgen.teacher_forced_logits(model, tok, kind="torch", condition=model.label_vectors(None, 4))
    assert (no_label - model(tok)).abs().max() < 1e-5  # labels=None is the "no label" class


def test_generation_with_labels_is_reproducible_and_shaped():
    model = _model()
    a = model.conditional_generate(["two", "zero"], length=200, seed=3, progress=False)
    b = model.conditional_generate(torch.tensor([2, 0]), length=200, seed=3, progress=False)
    assert a.shape == (2, 200) and torch.equal(a, b) and torch.isfinite(a).all()
    eager = model.conditional_generate([2, 0], length=200, seed=3, progress=False, engine="eager")
    assert eager.shape == (2, 200)
    chunks = list(model.stream(2, 200, 64, seed=3, labels=[2, 0]))
    assert torch.equal(torch.cat(chunks, 1), a)  # stream == conditional_generate, whatever the chunk
    u = model.unconditional_generate(2, length=200, seed=3, progress=False)
    assert u.shape == (2, 200)


def test_nll_takes_labels():
    model = _model()
    wav = torch.sin(torch.arange(400) / 7.0).mul(0.5).repeat(2, 1)
    a, b = model.nll(wav, labels=[0, 0]), model.nll(wav, labels=[1, 1])
    assert a.shape == (2,) and (a - b).abs().max() > 1e-4


# ---- persistence ----------------------------------------------------------------------------------
def test_save_load_and_export_keep_the_classes(tmp_path):
    from sashimi.pretrained.export import export_model

    model, tok = _model(), _tokens()
    labels = torch.tensor([2, 1, 0, 3])
    sashimi.save_model(model, tmp_path / "m.pt")
    back = sashimi.load_model(tmp_path / "m.pt")
    assert back.classes == CLASSES
    torch.testing.assert_close(back(tok, labels=labels), model(tok, labels=labels), rtol=0, atol=0)
    (tmp_path / "exp").mkdir()
    path, _ = export_model([str(tmp_path / "m.pt")], str(tmp_path / "exp"), "cond")
    exported = sashimi.load_model(path)
    assert exported.classes == CLASSES
    torch.testing.assert_close(exported(tok, labels=labels), model(tok, labels=labels), rtol=0, atol=0)


# ---- training -------------------------------------------------------------------------------------
TINY = ["model_cfg.d_model=8", "model_cfg.n_layers=1", "model_cfg.l_max=4096", "model_cfg.pool=[4]", "seq_len=4096",
        "sample_rate=8000", "num_workers=0", "progress=false", "tensorboard=false", "stdout_interval=1000",
        "batch_size=2", "utterance_window=true", "validation_interval=2", "checkpoint_interval=2"]


def _fsdd_csv(tmp_path, names=None, column=None):
    files = sorted(p for p in os.listdir(FIXTURES / "fsdd") if p.endswith(".wav"))
    if names is not None:
        files = [f for f in files if f[0] in names]
    path = tmp_path / "files.csv"
    rows = ["path" + (f",{column}" if column else "")]
    rows += [str(FIXTURES / "fsdd" / f) + (f",{f[0]}x" if column else "") for f in files]
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def test_train_py_trains_a_conditional_model_from_fsdd_names(tmp_path, capsys):
    from sashimi.train import build_config, train

    csv = _fsdd_csv(tmp_path)
    cfg = build_config([f"train_csv={csv}", f"valid_csv={csv}", f"checkpoint_path={tmp_path / 'run'}", "labels=fsdd",
                        "max_steps=2", *TINY])
    train(cfg)
    model = sashimi.load_model(tmp_path / "run" / "ckpt_00000002.pt")
    assert model.classes == [str(d) for d in range(10)]
    assert model.label_embedder.weight.abs().sum() > 0  # it learned something
    out = capsys.readouterr().out
    assert "labels (fsdd): 10 classes" in out
    # resuming on data with a class the model does not know is refused before training
    other = tmp_path / "other.csv"
    other.write_text(f"path,label\n{FIXTURES / 'fsdd' / '0_george_0.wav'},eleven\n"
                     f"{FIXTURES / 'fsdd' / '1_jackson_1.wav'},1\n")
    from sashimi.train.config import ConfigError

    cfg = build_config([f"train_csv={other}", f"checkpoint_path={tmp_path / 'run'}", "labels=csv", "max_steps=4",
                        "resume_checkpoint=last", *TINY, "validation_interval=0"])
    with pytest.raises(ConfigError, match=r"\['eleven'\] are not classes of the model"):
        train(cfg)
    # and a conditional model cannot be trained without labels
    cfg = build_config([f"train_csv={csv}", f"checkpoint_path={tmp_path / 'run'}", "max_steps=4",
                        "resume_checkpoint=last", *TINY, "validation_interval=0"])
    with pytest.raises(ConfigError, match="class-conditional"):
        train(cfg)


def test_label_sources_and_their_errors(tmp_path):
    from sashimi.data.datasets import class_names_of, file_labels

    csv = _fsdd_csv(tmp_path, names="01", column="label")
    files = sashimi.data.datasets.list_audio_files(csv)
    assert set(file_labels(csv, files, "csv")) == {"0x", "1x"}
    assert set(file_labels(csv, files, "fsdd")) == {"0", "1"}
    with pytest.raises(ValueError, match="no 'digit' column"):
        file_labels(csv, files, "csv", column="digit")
    with pytest.raises(ValueError, match="not an FSDD file name"):
        file_labels(csv, ["/x/seven/abc.wav"], "fsdd")
    assert file_labels(csv, ["/x/seven/abc.wav", "/y/two/d.wav"], "folder") == ["seven", "two"]
    assert class_names_of(["10", "9", "1"]) == ["1", "9", "10"]


def test_fine_tuning_from_an_unconditional_checkpoint(tmp_path, capsys):
    from sashimi.train import build_config, train

    base = SashimiAR(ARConfig(d_model=8, n_layers=1, l_max=4096, pool=[4], sample_rate=8000))
    sashimi.save_model(base, tmp_path / "base.pt")
    csv = _fsdd_csv(tmp_path)
    cfg = build_config([f"train_csv={csv}", f"checkpoint_path={tmp_path / 'run'}", "labels=fsdd", "max_steps=1",
                        f"init_checkpoint={tmp_path / 'base.pt'}", *TINY, "validation_interval=0",
                        "checkpoint_interval=1"])
    train(cfg)
    assert "kept their initialisation: ['label_embedder']" in capsys.readouterr().out


# ---- command line ---------------------------------------------------------------------------------
@pytest.fixture
def cond_ckpt(tmp_path):
    path = tmp_path / "cond.pt"
    sashimi.save_model(_model(), path)
    return str(path)


def test_generate_label_cli(cond_ckpt, tmp_path, capsys):
    out = tmp_path / "twos"
    code, _, err = run_cli(capsys, "generate", "--model", cond_ckpt, "--label", "two", "--n", "2", "--seconds", "0.02",
                           "--out", str(out), "-q", "--seed", "1")
    assert code == 0, err
    assert sorted(os.listdir(out)) == ["sample_000.wav", "sample_001.wav"]
    code, _, err = run_cli(capsys, "generate", "--model", cond_ckpt, "--label", "seven", "--n", "1",
                           "--out", str(tmp_path / "x"), "-q")
    assert code == 2 and "unknown class 'seven'" in err and "zero, one, two" in err


def test_label_on_an_unconditional_model_is_a_clear_error(ckpt, tmp_path, capsys):
    code, _, err = run_cli(capsys, "generate", "--model", ckpt, "--label", "7", "--n", "1",
                           "--out", str(tmp_path / "x"), "-q")
    assert code == 2 and "--label needs a class-conditional model" in err


def test_eval_conditional_reports_accuracy_and_confusion(tmp_path, capsys):
    # a model whose classes are digits, scored by the bundled digit classifier
    torch.manual_seed(0)
    model = SashimiAR(ARConfig(d_model=8, n_layers=1, l_max=512, pool=[4], sample_rate=8000, num_classes=2,
                               class_names=["3", "7"])).eval()
    path = tmp_path / "digits.pt"
    sashimi.save_model(model, path)
    code, out, err = run_cli(capsys, "eval", "--model", str(path), "--conditional", "--n", "2", "--seconds", "0.05",
                             "--reference", str(FIXTURES / "fsdd"), "--json", "-q")
    assert code == 0, err
    r = json.loads(out)
    cond = r["conditional"]
    assert cond["per_class_n"] == 2 and r["samples"]["n"] == 4
    assert len(cond["confusion"]) == 2 and all(sum(row) == 2 for row in cond["confusion"])
    hits = cond["confusion"][0][3] + cond["confusion"][1][7]  # '3' -> 'three', '7' -> 'seven'
    assert cond["accuracy"] == pytest.approx(hits / 4)
    code, _, err = run_cli(capsys, "eval", "--model", str(FIXTURES / "rf5_ar_small.ckpt.pt"), "--conditional",
                           "--reference", str(FIXTURES / "fsdd"), "-q")
    assert code == 2 and "has no classes" in err


def test_label_accuracy_and_class_matching():
    from sashimi.eval import label_accuracy, match_classes

    idx = match_classes(["0", "7", "Nine"], ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                             "nine"))
    assert idx == [0, 7, 9]
    probs = torch.zeros(4, 10)
    probs[0, 0] = probs[1, 7] = probs[2, 1] = probs[3, 9] = 1
    r = label_accuracy(probs, torch.tensor([0, 1, 1, 2]), idx)
    assert r["accuracy"] == 0.75 and r["per_class"] == [1.0, 0.5, 1.0]
    assert r["confusion"][1][1] == 1 and r["confusion"][1][7] == 1
    with pytest.raises(ValueError, match="no class for the model's class 'ten'"):
        match_classes(["ten"], ("zero",))


# ---- classifier-free guidance ---------------------------------------------------------------------
def test_guided_logits_mix_log_probabilities():
    c, u = torch.randn(3, 256), torch.randn(3, 256)
    torch.testing.assert_close(fastgen.guided_logits(c, u, 1.0), torch.log_softmax(c, -1))
    torch.testing.assert_close(fastgen.guided_logits(c, u, 0.0 + 1e-9), torch.log_softmax(u, -1), atol=1e-6, rtol=0)
    g = fastgen.guided_logits(c, u, 3.0)
    torch.testing.assert_close(g, torch.log_softmax(u, -1) + 3 * (torch.log_softmax(c, -1) - torch.log_softmax(u, -1)))


def test_guidance_one_is_plain_conditional_and_bad_guidance_is_refused():
    model = _model()
    a = model.conditional_generate([0, 2], length=120, seed=5, progress=False)
    b = model.conditional_generate([0, 2], length=120, seed=5, progress=False, guidance=1.0)
    assert torch.equal(a, b)
    for bad in (0.0, -1.0, float("inf"), "2"):
        with pytest.raises(ValueError, match="guidance must be a finite number > 0"):
            model.conditional_generate([0], length=8, progress=False, guidance=bad)


def test_fast_and_eager_guided_generation_agree():
    """Greedy decoding (top_k=1) follows the mixed logits' argmax: both engines pick the same tokens."""
    model = _model()
    fast = model.conditional_generate([1, 2], length=40, top_k=1, seed=0, progress=False, guidance=2.5)
    eager = model.conditional_generate([1, 2], length=40, top_k=1, seed=0, progress=False, guidance=2.5,
                                       engine="eager", mode="dense")
    plain = model.conditional_generate([1, 2], length=40, top_k=1, seed=0, progress=False)
    assert torch.equal(fast, eager)
    assert not torch.equal(fast, plain)  # guidance changed what was said
