"""Conditioning in the fast engines: per-block ('blocks', 'film') models in every engine (issue 27
item 1), an explicit condition at every entry point (issue 26 items 1-3, 14 and the one loop of
the guided and plain streams), and tokens unchanged for 'input' and unconditional models."""
import copy
import json

import pytest
import torch

import sashimi
from conftest import FIXTURES, run_cli
from sashimi import ARConfig, SashimiAR, fastgen
from sashimi.fastgen import cpu

KINDS = ["cpp", "torch"]


def _need(kind):
    if kind == "cpp" and cpu.load_library() is None:
        pytest.skip(f"no C++ build: {cpu.build_error}")


def _model(condition="blocks", num_classes=3, seed=0, ff=2):
    torch.manual_seed(seed)
    cfg = ARConfig(d_model=16, n_layers=2, l_max=512, sample_rate=8000, num_classes=num_classes, condition=condition,
                   ff=ff)
    model = SashimiAR(cfg).eval()
    with torch.no_grad():
        if num_classes:  # trained label vectors and projections are not zero: make the tests see them
            torch.nn.init.normal_(model.label_embedder.weight)
        for block in model.sashimi.modules():
            if getattr(block, "fc_t", None) is not None:
                torch.nn.init.normal_(block.fc_t.weight, std=0.2)
                torch.nn.init.normal_(block.fc_t.bias, std=0.2)
    return model


def _tokens(batch=4, length=48):
    torch.manual_seed(1)
    tok = torch.randint(0, 256, (batch, length))
    tok[:, 0] = sashimi.SILENCE_TOKEN
    return tok


LABELS = torch.tensor([0, 1, 2, 3])  # 3: the "no label" class


# ---- issue 27 item 1: per-block conditioning in every engine ---------------------------------------
@pytest.mark.parametrize("condition", ["blocks", "film"])
@pytest.mark.parametrize("kind", KINDS)
def test_block_conditioned_models_match_the_eager_forward_in_every_engine(condition, kind):
    _need(kind)
    model, tok = _model(condition), _tokens()
    assert fastgen.unsupported_reason(model) is None and fastgen.resolve_engine(model) == "fast"
    ref = model(tok, labels=LABELS)
    got = fastgen.teacher_forced_logits(model, tok, kind=kind, condition=model.label_vectors(LABELS, 4))
    assert (got - ref).abs().max() < 1e-4
    # the labels matter here through the blocks too: the same input vectors without the block terms differ
    assert (model(tok, labels=torch.tensor([0, 0, 0, 0])) - model(tok, labels=torch.tensor([1, 1, 1, 1]))).abs().max() > 1e-2
    plain = fastgen.teacher_forced_logits(model, tok, kind=kind)  # no condition: the "no label" class
    assert (plain - model(tok)).abs().max() < 1e-4


@pytest.mark.parametrize("condition", ["blocks", "film"])
def test_block_conditioning_reaches_the_center_tier_and_ff_blocks(condition):
    model = _model(condition)
    plan = fastgen.plan_for(model)
    conditioned = [[("fc_w" in b, b["type"]) for b in tier["blocks"]] for tier in plan["tiers"]]
    assert all(flag for tier in conditioned for flag, _ in tier) and len(conditioned) == 3
    assert {kind for tier in conditioned for _, kind in tier} == {"s4", "ff"}
    assert all(b["film"] == (condition == "film") for tier in plan["tiers"] for b in tier["blocks"])


@pytest.mark.parametrize("condition", ["blocks", "film"])
def test_block_conditioned_generation_is_the_same_in_the_cpp_and_torch_engines(condition):
    _need("cpp")
    model = _model(condition)
    prefix = _tokens(2, 20)
    runs = {}
    for kind in KINDS:
        for guidance in (1.0, 2.0):
            gen = torch.Generator().manual_seed(4)
            runs[kind, guidance] = fastgen.generate_tokens(
                model, prefix, 200, generator=gen, kind=kind, condition=model.label_vectors(torch.tensor([2, 0]), 2),
                guidance=guidance)
    assert torch.equal(runs["cpp", 1.0], runs["torch", 1.0]) and torch.equal(runs["cpp", 2.0], runs["torch", 2.0])
    assert not torch.equal(runs["cpp", 1.0], runs["cpp", 2.0])
    # the public API, fast and eager, on such a model
    a = model.conditional_generate([2, 0], length=120, seed=1, progress=False)
    b = torch.cat(list(model.stream(2, 120, 50, seed=1, labels=[2, 0])), 1)
    assert torch.equal(sashimi.mulaw_encode(a), sashimi.mulaw_encode(b))  # tokens: decoding is not bit-stable by chunk
    assert model.conditional_generate([2], length=30, seed=1, progress=False,
                                                            engine="eager").shape == (1, 30)


@pytest.mark.parametrize("condition", ["blocks", "film"])
def test_block_conditioning_is_the_same_in_every_thread_layout_and_odd_widths(condition):
    """Rows split between thread groups (each row its own norm parameters) and channels between
    threads; widths that are not multiples of the 16-channel unit; pools of 2 and 3."""
    _need("cpp")
    torch.manual_seed(0)
    model = SashimiAR(ARConfig(d_model=24, n_layers=1, pool=[2, 3], l_max=240, sample_rate=8000, num_classes=2,
                               condition=condition)).eval()
    with torch.no_grad():
        for block in model.sashimi.modules():
            if getattr(block, "fc_t", None) is not None:
                torch.nn.init.normal_(block.fc_t.weight, std=0.2)
                torch.nn.init.normal_(block.fc_t.bias, std=0.2)
        torch.nn.init.normal_(model.label_embedder.weight)
    tok = torch.randint(0, 256, (3, 120), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2])
    ref = model(tok, labels=labels)
    cond = model.label_vectors(labels, 3)
    results = []
    for rows, threads in [(1, 1), (1, 2), (2, 1), (2, 2)]:
        engine = fastgen.get_engine(model, 3, "cpp", threads=max(2, rows * threads))
        engine.set_layout(rows, threads)
        engine.reset(cond)
        results.append(engine.feed(tok, want_logits=True))
    assert (results[0] - ref).abs().max() < 1e-4
    assert (model(tok, labels=labels.flip(0)) - ref).abs().max() > 1e-2
    assert all(torch.equal(r, results[0]) for r in results[1:])


@pytest.mark.parametrize("kind", KINDS)
def test_block_conditioned_guided_logits_match_the_eager_step(kind):
    """The guided stream's two halves are the labelled and the unlabelled model: one token step by
    step through both, compared with the eager step with and without labels."""
    _need(kind)
    model, tok = _model("film"), _tokens(2, 24)
    labels = torch.tensor([1, 2])
    engine = fastgen.get_engine(model, 4, kind)
    engine.reset(torch.cat([model.label_vectors(labels, 2), model.label_vectors(None, 2)]))
    got = engine.feed(torch.cat([tok, tok]), want_logits=True)
    ref = torch.cat([model(tok, labels=labels), model(tok)])
    assert (got - ref).abs().max() < 1e-4


def test_input_and_unconditional_models_give_the_tokens_of_main():
    """Tokens recorded with main at 0ed7a50 (tests/fixtures/engine_tokens_0ed7a50.py): the bundled
    model of then (version 3, condition 'input'; its folder is kept in tests/fixtures) and an
    unconditional model, through both engines, guided too."""
    _need("cpp")
    want = json.loads((FIXTURES / "engine_tokens_0ed7a50.json").read_text())
    m = sashimi.load_model(FIXTURES / "sashimi_ar_fsdd_v3").eval()
    wav = 0.5 * torch.sin(torch.arange(64) * 0.3) * torch.linspace(0, 1, 64)
    p = sashimi.mulaw_encode(wav).repeat(2, 1)
    for kind in KINDS:
        g = torch.Generator().manual_seed(5)
        got = fastgen.generate_tokens(m, p, 160, generator=g, kind=kind, condition=m.label_vectors(torch.tensor([7, 2]), 2))
        assert got[:, 64:].tolist() == want[f"{kind}_label"], kind
    g = torch.Generator().manual_seed(5)
    assert fastgen.generate_tokens(m, p, 160, generator=g, kind="cpp",
                                   condition=m.label_vectors(None, 2))[:, 64:].tolist() == want["cpp_nolabel"]
    tokens = {
        "cond_gen": m.conditional_generate([7, 2], length=160, seed=3, progress=False, temperature=1.3),
        "guided": m.conditional_generate([7, 2], length=160, seed=3, progress=False, guidance=2.0, temperature=1.3),
        "uncond": m.unconditional_generate(2, length=160, seed=3, progress=False, temperature=1.3)}
    for name, w in tokens.items():
        assert sashimi.mulaw_encode(w).tolist() == want[name], name
    torch.manual_seed(0)
    u = SashimiAR(ARConfig(d_model=16, n_layers=2, l_max=512, sample_rate=8000)).eval()
    for kind in KINDS:
        g = torch.Generator().manual_seed(5)
        assert fastgen.generate_tokens(u, p, 160, generator=g, kind=kind)[:, 64:].tolist() == want[f"unconditional_{kind}"]
    w = u.unconditional_generate(2, length=160, seed=3, progress=False)
    assert sashimi.mulaw_encode(w).tolist() == want["unconditional_generate"]


# ---- issue 26 item 1: the condition is explicit ---------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_item1_a_reset_never_keeps_an_earlier_label(kind):
    _need(kind)
    for condition in ("input", "blocks"):
        model, tok = _model(condition), _tokens()
        engine = fastgen.get_engine(model, 4, kind)
        engine.reset()
        plain = engine.feed(tok, want_logits=True)
        engine.set_condition(model.label_vectors(torch.tensor([0, 1, 2, 0]), 4))
        engine.reset()  # a new request: the "no label" vector again
        assert torch.equal(engine.feed(tok, want_logits=True), plain)
        engine.reset(model.label_vectors(LABELS, 4))  # or the condition it is given
        assert (engine.feed(tok, want_logits=True) - model(tok, labels=LABELS)).abs().max() < 1e-4


def test_item1_nats_per_sample_equals_nll_with_and_without_labels_whatever_ran_before():
    from sashimi.eval.likelihood import nats_per_sample

    for condition in ("input", "blocks"):
        model = _model(condition)
        wav = torch.sin(torch.arange(400) / 5.0) * 0.4
        short = copy.deepcopy(model)
        short.config.l_max = 100  # forces the recurrent engine for this 400-sample clip
        want = {None: float(model.nll(wav)[0]), 1: float(model.nll(wav, labels=[1])[0])}
        assert abs(want[None] - want[1]) > 1e-3
        for before in (None, [2], [0]):
            if before is not None:  # whatever ran before in the process
                short.conditional_generate(before, length=30, seed=0, progress=False)
                fastgen.teacher_forced_logits(short, _tokens(1, 10), condition=short.label_vectors(torch.tensor(before), 1))
            assert abs(nats_per_sample(short, wav) - want[None]) < 1e-5, (condition, before)
            for labels in (None, 1):
                assert abs(nats_per_sample(short, wav, labels=labels) - want[labels]) < 1e-5, (condition, before, labels)
                assert abs(nats_per_sample(model, wav, labels=labels) - want[labels]) < 1e-6


# ---- issue 26 item 2: "no label" by default, and the documented seed-style loop ---------------------
@pytest.mark.parametrize("kind", KINDS)
def test_item2_fastgen_functions_default_to_the_no_label_vector(kind):
    _need(kind)
    model, tok = _model("input"), _tokens()
    assert (fastgen.teacher_forced_logits(model, tok, kind=kind) - model(tok)).abs().max() < 1e-4
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    prefix = tok[:, :5]
    default = fastgen.generate_tokens(model, prefix, 60, generator=g1, kind=kind)
    explicit = fastgen.generate_tokens(model, prefix, 60, generator=g2, kind=kind, condition=model.label_vectors(None, 4))
    assert torch.equal(default, explicit)


@pytest.mark.parametrize("condition", ["input", "blocks", "film", None])
def test_item2_the_documented_seed_style_loop_matches_forward(condition):
    model = _model(condition or "input", num_classes=0 if condition is None else 3)
    tok = _tokens()
    for labels in ([None] if condition is None else [None, LABELS]):
        inputs, cond = model.conditioning(labels, 4)  # as the class docstring shows
        model.setup_rnn()
        state, out = model.default_state(4), []
        for t in tok.unbind(1):
            y, state = model.sashimi.step(model.mu_embedder(t) + inputs, state, cond)
            out.append(model.head(y))
        assert (torch.stack(out, 1) - model(tok, labels=labels)).abs().max() < 1e-4
    assert "model.conditioning(labels, B)" in SashimiAR.__doc__


# ---- issue 26 item 3: CppEngine.set_condition checks shapes ---------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_item3_set_condition_checks_the_shape_at_the_boundary(kind):
    _need(kind)
    model = _model("input")
    engine = fastgen.get_engine(model, 4, kind)
    for bad in (torch.zeros(1, 16), torch.zeros(4, 7), torch.zeros(4, 16, 1), torch.zeros(16)):
        with pytest.raises(ValueError, match=r"condition must have shape \(4, 16\)"):
            engine.set_condition(bad)
    with pytest.raises(TypeError, match="floating-point"):
        engine.set_condition(torch.zeros(4, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN or inf"):
        engine.set_condition(torch.full((4, 16), float("nan")))
    engine.set_condition(torch.zeros(4, 16))


# ---- issue 26 item 14 and "code that drifted apart" -----------------------------------------------
def test_item14_a_guided_run_builds_its_engine_for_2B_rows(tmp_path, capsys, monkeypatch):
    path = tmp_path / "cond.pt"
    sashimi.save_model(_model("input"), path)
    real, rows = fastgen.get_engine, []

    def recording(model, batch, *args, **kwargs):
        rows.append(batch)
        return real(model, batch, *args, **kwargs)

    monkeypatch.setattr(fastgen, "get_engine", recording)
    code, _, err = run_cli(capsys, "generate", "--model", str(path), "--n", "2", "--batch-size", "2", "--seconds", "0.01",
                           "--label", "2", "--guidance", "2", "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert rows and set(rows) == {4}, rows  # set up for the 2B rows it runs, not B


def test_drift_guided_and_plain_streams_are_one_loop():
    """stream_guided_tokens is stream_tokens with guidance: the same tokens, whatever the chunks."""
    _need("cpp")
    model = _model("blocks")
    prefix, cond = _tokens(2, 7), model.label_vectors(torch.tensor([1, 2]), 2)
    runs = []
    for chunk, guided_api in ((1000, True), (33, False), (256, False)):
        gen = torch.Generator().manual_seed(9)
        if guided_api:
            it = fastgen.stream_guided_tokens(model, prefix, 300, chunk, condition=cond, guidance=1.5, generator=gen)
        else:
            it = fastgen.stream_tokens(model, prefix, 300, chunk, condition=cond, guidance=1.5, generator=gen)
        runs.append(torch.cat(list(it), 1))
    assert runs[0].shape == (2, 300) and torch.equal(runs[0][:, :7], prefix)
    assert all(torch.equal(r, runs[0]) for r in runs[1:])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("condition", ["blocks", "film"])
def test_cuda_graphs_block_conditioning_matches_forward(condition):
    """The captured graphs read the condition's fixed buffers: a new condition after capture counts."""
    model, tok = _model(condition).cuda(), _tokens().cuda()
    labels = LABELS.cuda()
    for lab in (labels, None, labels.flip(0)):
        got = fastgen.teacher_forced_logits(model, tok, kind="cuda-graphs",
                                            condition=None if lab is None else model.label_vectors(lab, 4))
        assert (got - model(tok, labels=lab)).abs().max() < 1e-3
    gen = [fastgen.generate_tokens(model, tok[:2, :5], 100, kind="cuda-graphs", guidance=g,
                                   condition=model.label_vectors(labels[:2], 2),
                                   generator=torch.Generator("cuda").manual_seed(0)) for g in (1.0, 2.0)]
    assert all(t.shape == (2, 100) for t in gen)
