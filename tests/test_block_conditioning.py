"""Conditioning at every block (ARConfig.condition 'blocks' | 'film'): the eager reference, persistence,
fine-tuning from an input-conditioned model, and 'input' models unchanged."""
import pytest
import torch

import sashimi
from sashimi import ARConfig, SashimiAR

CLASSES = ["zero", "one", "two"]


def _model(condition, seed=0, projections=True):
    torch.manual_seed(seed)
    cfg = ARConfig(d_model=16, n_layers=2, l_max=512, sample_rate=8000, num_classes=3, class_names=CLASSES,
                   condition=condition)
    model = SashimiAR(cfg).eval()
    if projections:  # trained projections are not zero: make the test see them
        for module in model.sashimi.modules():
            if getattr(module, "fc_t", None) is not None:
                torch.nn.init.normal_(module.fc_t.weight, std=0.3)
                torch.nn.init.normal_(module.fc_t.bias, std=0.1)
    return model


def _tokens(batch=3, length=64):
    torch.manual_seed(1)
    return torch.randint(0, 256, (batch, length))


@pytest.mark.parametrize("condition", ["blocks", "film"])
def test_every_block_of_every_tier_is_conditioned(condition):
    model = _model(condition)
    blocks = [m for m in model.sashimi.modules() if isinstance(m, sashimi.backbone.ResidualBlock)]
    assert blocks and all(b.fc_t is not None for b in blocks)
    widths = {b.norm.normalized_shape[0] for b in blocks}
    assert widths == {16, 32, 64}  # three tiers
    for b in blocks:
        out = b.fc_t.out_features
        assert out == (2 if condition == "film" else 1) * b.norm.normalized_shape[0]


@pytest.mark.parametrize("condition", ["blocks", "film"])
def test_step_mode_matches_the_convolution_with_block_conditioning(condition):
    model, tok = _model(condition), _tokens()
    labels = torch.tensor([0, 2, 3])  # 3: no label
    ref = model(tok, labels=labels)
    model.setup_rnn("dense")
    state, out = model.default_state(3), []
    for t in range(tok.size(1)):
        logits, state = model.step(tok[:, t], state, labels)
        out.append(logits)
    torch.testing.assert_close(torch.stack(out, 1), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("condition", ["blocks", "film"])
def test_the_block_projections_carry_the_label(condition):
    model, tok = _model(condition), _tokens()
    labels = torch.tensor([0, 1, 2])
    without = _model(condition, projections=False)  # the same weights, zero projections
    without.load_state_dict({k: v for k, v in model.state_dict().items() if ".fc_t." not in k}, strict=False)
    assert (model(tok, labels=labels) - without(tok, labels=labels)).abs().max() > 1e-3
    # with the projections alone (input vectors equal), two labels still give different logits
    with torch.no_grad():
        model.label_embedder.weight[1] = model.label_embedder.weight[0]
        model.label_embedder.weight[2] = model.label_embedder.weight[0]
        for m in model.sashimi.modules():
            if getattr(m, "fc_t", None) is not None:
                m.fc_t.bias.zero_()
    a, b = model(tok, labels=torch.zeros(3, dtype=torch.long)), model(tok, labels=torch.ones(3, dtype=torch.long))
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # same vectors, same everything
    with torch.no_grad():
        model.label_embedder.weight[1] += 0.5
    b = model(tok, labels=torch.ones(3, dtype=torch.long))
    assert (a - b).abs().max() > 1e-3


def test_fresh_block_projections_start_at_zero_so_fine_tuning_starts_from_the_input_model():
    torch.manual_seed(0)
    base = SashimiAR(ARConfig(d_model=16, n_layers=2, l_max=512, num_classes=3, class_names=CLASSES)).eval()
    torch.nn.init.normal_(base.label_embedder.weight)
    model = SashimiAR(ARConfig(d_model=16, n_layers=2, l_max=512, num_classes=3, class_names=CLASSES,
                               condition="blocks")).eval()
    result = model.load_state_dict(base.state_dict(), strict=False)
    assert not result.unexpected_keys and all(".fc_t." in k for k in result.missing_keys)
    tok = _tokens()
    torch.testing.assert_close(model(tok, labels=torch.tensor([0, 1, 2])), base(tok, labels=torch.tensor([0, 1, 2])),
                               rtol=0, atol=0)


@pytest.mark.parametrize("condition", ["blocks", "film"])
def test_block_conditioned_models_round_trip_through_every_format(condition, tmp_path):
    model, tok = _model(condition), _tokens()
    ref = model(tok, labels=torch.tensor([0, 1, 2]))
    sashimi.save_model(model, tmp_path / "m.pt")
    sashimi.save_pretrained(model, tmp_path / "folder")
    for path in (tmp_path / "m.pt", tmp_path / "folder"):
        loaded = sashimi.load_model(path)
        assert loaded.config.condition == condition
        torch.testing.assert_close(loaded(tok, labels=torch.tensor([0, 1, 2])), ref, rtol=0, atol=0)


def test_condition_is_checked():
    with pytest.raises(ValueError, match="condition must be one of"):
        ARConfig(num_classes=3, condition="everywhere")


def test_unconditional_models_ignore_condition():
    model = SashimiAR(ARConfig(d_model=16, n_layers=2, l_max=512, condition="film")).eval()
    assert all(getattr(m, "fc_t", None) is None for m in model.modules())


# ---- a model's own sampling defaults (ARConfig.sampling) ------------------------------------------
def test_a_models_sampling_defaults_apply_unless_told_otherwise(tmp_path):
    cfg = ARConfig(d_model=16, n_layers=2, l_max=512, sampling={"temperature": 0.5, "top_k": 7})
    model = SashimiAR(cfg).eval()
    assert model.sampling_options() == sashimi.SamplingOptions(0.5, 7, 1.0)
    assert model.sampling_options(temperature=1.0, top_k=0) == sashimi.SamplingOptions(1.0, None, 1.0)
    assert model.sampling_options(nucleus_p=0.9) == sashimi.SamplingOptions(0.5, 7, 0.9)
    plain = SashimiAR(ARConfig(d_model=16, n_layers=2, l_max=512)).eval()
    assert plain.sampling_options() == sashimi.SamplingOptions(1.0, None, 1.0)
    # generation uses them: the same tokens as asking for them explicitly
    a = model.unconditional_generate(2, length=40, seed=3, progress=False)
    b = model.unconditional_generate(2, length=40, seed=3, progress=False, temperature=0.5, top_k=7)
    c = model.unconditional_generate(2, length=40, seed=3, progress=False, temperature=1.0, top_k=0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    # and travel with the model through every format
    sashimi.save_model(model, tmp_path / "m.pt")
    sashimi.save_pretrained(model, tmp_path / "folder")
    for path in (tmp_path / "m.pt", tmp_path / "folder"):
        assert sashimi.load_model(path).config.sampling == {"temperature": 0.5, "top_k": 7}


@pytest.mark.parametrize("sampling, match", [({"temperature": 0}, "temperature"), ({"nucleus": 0.9}, "unknown key"),
                                             ({"top_k": -1}, "top_k"), ([0.9], "dict")])
def test_bad_sampling_defaults_are_refused(sampling, match):
    with pytest.raises(ValueError, match=match):
        SashimiAR(ARConfig(d_model=16, n_layers=2, l_max=512, sampling=sampling))


def test_export_stores_sampling_defaults(tmp_path, capsys):
    from conftest import run_cli

    model = SashimiAR(ARConfig(d_model=16, n_layers=2, l_max=512)).eval()
    sashimi.save_model(model, tmp_path / "m.pt")
    code, out, err = run_cli(capsys, "export", str(tmp_path / "m.pt"), "--out-dir", str(tmp_path), "--name", "m",
                             "--format", "folder", "--sampling", "temperature=0.9,top_k=100")
    assert code == 0, err
    assert sashimi.load_model(tmp_path / "m").config.sampling == {"temperature": 0.9, "top_k": 100}
    code, out, err = run_cli(capsys, "export", str(tmp_path / "m.pt"), "--out-dir", str(tmp_path), "--name", "n",
                             "--format", "folder", "--sampling", "temperature=0")
    assert code != 0 and "temperature" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(capsys, "export", str(tmp_path / "m.pt"), "--out-dir", str(tmp_path), "--name", "n",
                             "--sampling", "temp=0.9")
    assert code != 0 and "--sampling" in err
