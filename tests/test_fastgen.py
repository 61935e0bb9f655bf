"""Fast generation (sashimi.fastgen): same logits as the eager 'dense' step, same sampling
distribution as sample_logits, stable over long runs, clean fallbacks."""
import copy
import warnings

import pytest
import torch

from sashimi import ARConfig, SamplingOptions, SashimiAR
from sashimi.sampling import filtered_probs
from sashimi import fastgen
from sashimi.fastgen import cpu, pack
from sashimi.fastgen.sampler import sample_with_uniforms
from sashimi.fastgen.torch_engine import TorchEngine, step_depth
from sashimi.s4 import S4
from conftest import dense_logits

STEPS = 4000
TOL = 1e-5
HAS_CPP = cpu.load_library() is not None
KINDS = [pytest.param("cpp", marks=pytest.mark.skipif(not HAS_CPP, reason=f"no C++ build: {cpu.build_error}")),
         "torch"]





@pytest.fixture(scope="module")
def speech(ar_reference):
    return ar_reference["input_mu"][:, :STEPS].long()  # FSDD speech after a leading silence token


@pytest.fixture(scope="module")
def dense_ref(ar_small, speech):
    return dense_logits(ar_small, speech)


@pytest.mark.parametrize("kind", KINDS)
def test_teacher_forced_logits_equal_dense(ar_small, speech, dense_ref, kind):
    fast = fastgen.teacher_forced_logits(ar_small, speech, kind=kind)
    worst = float((fast - dense_ref).abs().max())
    assert worst <= TOL, f"{kind}: max |logit difference| over {STEPS} steps: {worst:.3g}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graphs_teacher_forced_equal_dense(ar_small, speech, dense_ref):
    model = copy.deepcopy(ar_small).cuda()
    fast = fastgen.teacher_forced_logits(model, speech.cuda(), kind="cuda-graphs").cpu()
    assert float((fast - dense_ref).abs().max()) <= TOL
    tokens = fastgen.generate_tokens(model, speech[:, :10].cuda(), 300, generator=torch.Generator("cuda").manual_seed(0))
    assert tokens.shape == (2, 300) and torch.equal(tokens[:, :10].cpu(), speech[:, :10])


@pytest.mark.parametrize("case", ["diagonal", "dplr_untied"])
@pytest.mark.parametrize("kind", KINDS)
def test_other_step_forms_equal_dense(ar_small, speech, case, kind):
    """A well-conditioned eigenbasis (small P) takes the diagonal form; untied state the general dplr."""
    if case == "diagonal":
        model = copy.deepcopy(ar_small)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, S4):
                    m.kernel.P.mul_(0.01)
    else:
        torch.manual_seed(0)
        model = SashimiAR(ARConfig(d_model=8, n_layers=1, tie_state=False)).eval()
    plan = pack.build_plan(model)
    assert set(pack.s4_modes(plan)) == {"diagonal" if case == "diagonal" else "dplr"}
    tokens = speech[:1, :600]
    fast = fastgen.teacher_forced_logits(model, tokens, kind=kind)
    # The eigenbasis is taken when its estimated relative error is <= 1e-5 (s4._DIAGONAL_MAX_ERROR):
    # its logits may differ by a little more than the dplr step's, in every engine alike.
    tol = 3 * TOL if case == "diagonal" else TOL
    assert float((fast - dense_logits(model, tokens)).abs().max()) <= tol


def test_true_C_matches_discrete_system(ar_small):
    layer = ar_small.sashimi.c_layers[0].layer
    entry = pack._s4_plan(layer, torch.float32, "dplr")
    sys = layer.kernel.discrete_system()
    N = layer.kernel.N
    torch.testing.assert_close(entry["C"], sys["C"][0, :, :N], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(entry["b"], sys["Bb"][:, :N], rtol=1e-9, atol=1e-12)
    # Ab = diag(d) - w v^T on the 2N conjugate-extended modes
    ext = lambda x: torch.cat([x, x.conj()], -1)  # noqa: E731
    Ab = torch.diag_embed(ext(entry["d"])) - ext(entry["w"])[:, :, None] * ext(entry["v"])[:, None, :]
    torch.testing.assert_close(Ab, sys["Ab"], rtol=1e-9, atol=1e-12)


def test_step_depth_matches_pooling():
    assert [step_depth(t, [4, 4]) for t in range(17)] == [0, 0, 0, 1] * 3 + [0, 0, 0, 2, 0]
    assert step_depth(5, []) == 0


# ---- sampling ---------------------------------------------------------------------------------
def reference_probs(logits, **kwargs):
    """The exact distribution sample_logits draws from (multinomial over filtered_probs)."""
    probs = filtered_probs(logits, **kwargs).double()
    return probs / probs.sum(-1, keepdim=True)


SETTINGS = [dict(), dict(temperature=0.7, top_k=5), dict(temperature=1.3, nucleus_p=0.8),
            dict(top_k=20, nucleus_p=0.9), dict(top_k=1), dict(nucleus_p=0.05)]
SAMPLERS = ["torch", pytest.param("cpp", marks=pytest.mark.skipif(not HAS_CPP, reason="no C++ build"))]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "plain")
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sampler_distribution_equals_sample_logits(settings, sampler):
    """A stratified grid of uniforms hits each token with frequency p within 1/M (inverse CDF)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 256, generator=g) * 3
    if "nucleus_p" not in settings:  # (which of exactly tied tokens a nucleus keeps is unspecified,
        logits[2, 10:14] = logits[2].max()  # as torch.sort's order of ties); top-k keeps all ties
    target = reference_probs(logits, **settings)
    M = 20000
    u = (torch.arange(M, dtype=torch.float64) + 0.5) / M
    rows = logits.repeat_interleave(M, 0)
    uu = u.repeat(3).float()
    kw = dict(temperature=settings.get("temperature", 1.0), top_k=settings.get("top_k"),
              nucleus_p=settings.get("nucleus_p", 1.0))
    draws = sample_with_uniforms(rows, uu, **kw) if sampler == "torch" else cpu.sample(cpu.load_library(), rows, uu, **kw)
    freq = torch.zeros(3, 256, dtype=torch.float64)
    freq.scatter_add_(1, draws.view(3, M), torch.ones(3, M, dtype=torch.float64))
    freq /= M
    assert float((freq - target).abs().max()) <= 2.0 / M + 1e-6
    assert bool((freq[target == 0] == 0).all()), "drew a token outside the support"


def test_sampler_random_draws_chi_square():
    """Random uniforms: empirical frequencies match sample_logits' probabilities (chi-square)."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 16, generator=g)
    target = reference_probs(logits, temperature=0.9, nucleus_p=0.95)[0]
    n = 40000
    draws = sample_with_uniforms(logits.expand(n, -1), torch.rand(n, generator=g), temperature=0.9, nucleus_p=0.95)
    counts = torch.bincount(draws, minlength=16).double()
    support = target > 0
    chi2 = float(((counts[support] - n * target[support]) ** 2 / (n * target[support])).sum())
    assert counts[~support].sum() == 0
    assert chi2 < 45.0  # ~ chi-square with <= 15 dof: p < 1e-4


# ---- generation -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_generate_tokens_reproducible_and_continues_prefix(ar_small, speech, kind):
    prefix = speech[:, 1:50]
    a = fastgen.generate_tokens(ar_small, prefix, 400, sampling=SamplingOptions(0.9, 50, 0.95),
                                generator=torch.Generator().manual_seed(3), kind=kind)
    b = fastgen.generate_tokens(ar_small, prefix, 400, sampling=SamplingOptions(0.9, 50, 0.95),
                                generator=torch.Generator().manual_seed(3), kind=kind)
    assert a.shape == (2, 400) and torch.equal(a, b) and torch.equal(a[:, :49], prefix)
    assert int(a.min()) >= 0 and int(a.max()) < 256


def test_engine_selection_and_errors(ar_small):
    assert fastgen.resolve_engine(ar_small, "auto") == "fast"
    assert fastgen.resolve_engine(ar_small, "auto", mode="dense") == "eager"
    assert fastgen.resolve_engine(ar_small, "eager") == "eager"
    with pytest.raises(ValueError, match="engine must be one of"):
        ar_small.unconditional_generate(1, progress=False, length=4, engine="turbo")
    with pytest.raises(ValueError, match="mode"):
        ar_small.unconditional_generate(1, progress=False, length=4, engine="fast", mode="dense")
    unet = SashimiAR(ARConfig(d_model=8, n_layers=1, unet=True, l_max=64)).eval()
    with pytest.raises(ValueError, match="U-Net"):
        unet.unconditional_generate(1, progress=False, length=8, engine="fast")
    assert unet.unconditional_generate(1, progress=False, length=8).shape == (1, 8)  # auto: eager


def test_public_api_engines_agree_in_distribution(ar_small):
    """Both engines through unconditional_generate: valid, seeded, the same first-sample law."""
    fast = ar_small.unconditional_generate(4, progress=False, length=64, seed=0, engine="fast")
    again = ar_small.unconditional_generate(4, progress=False, length=64, seed=0)
    eager = ar_small.unconditional_generate(4, progress=False, length=64, seed=0, engine="eager")
    assert torch.equal(fast, again) and fast.shape == eager.shape == (4, 64)
    assert fast.abs().max() <= 1 and torch.isfinite(fast).all()


def test_fallback_without_compiler(monkeypatch):
    monkeypatch.setattr(cpu, "load_library", lambda profile=False: None)
    monkeypatch.setattr(cpu, "build_error", "no C++ compiler found")
    monkeypatch.setattr(fastgen, "_said", set())
    torch.manual_seed(0)
    model = SashimiAR(ARConfig(d_model=8, n_layers=1, l_max=256)).eval()
    with pytest.warns(RuntimeWarning, match="unavailable"):
        engine = fastgen.get_engine(model, 2)
    assert isinstance(engine, TorchEngine)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once only
        out = model.unconditional_generate(2, progress=False, length=40, seed=0)
    assert out.shape == (2, 40)


def test_cache_follows_weight_updates(ar_small):
    model = copy.deepcopy(ar_small)
    e1 = fastgen.get_engine(model, 1)
    assert fastgen.get_engine(model, 1) is e1
    with torch.no_grad():
        model.head.bias.add_(1.0)
    assert fastgen.get_engine(model, 1) is not e1


@pytest.mark.skipif(not HAS_CPP, reason="no C++ build")
def test_sixty_seconds_stay_finite():
    """60 s of audio (960,000 steps) from a freshly initialised small model: finite throughout
    (the sampler fails on the first non-finite logit) and the state stays bounded."""
    torch.manual_seed(0)
    model = SashimiAR(ARConfig(d_model=16, n_layers=2)).eval()
    length = 60 * 16000
    tokens = fastgen.generate_tokens(model, torch.empty(1, 0, dtype=torch.long), length,
                                     generator=torch.Generator().manual_seed(0))
    engine = fastgen.get_engine(model, 1)
    assert tokens.shape == (1, length)
    state = engine.state_max_abs()
    assert state == state and state < 1e4, f"S4 state magnitude {state}"
    assert torch.isfinite(engine.last_logits()).all()


def test_cuda_graph_bookkeeping_simulated_on_cpu(ar_small, speech, dense_ref, monkeypatch):
    """The capture / replay logic of the CUDA-graph engine, with torch.cuda's graph API replaced
    by CPU stand-ins (a 'graph' re-runs what was traced). Real capture does not execute kernels;
    the stand-in does, which the engine's state snapshot and restore must absorb."""
    class FakeGraph:
        current = None

        def __init__(self):
            self.fn = None

        def replay(self):
            self.fn()

    class FakeGraphContext:
        def __init__(self, graph):
            self.graph = graph

        def __enter__(self):
            FakeGraph.current = self.graph

        def __exit__(self, *exc):
            FakeGraph.current = None

    engine = TorchEngine(pack.build_plan(ar_small), 2, "cpu")
    captured = []
    real_unit = engine._unit

    def unit(kind, depth):
        if FakeGraph.current is not None:  # "capturing": record the unit
            FakeGraph.current.fn = lambda: real_unit(kind, depth)
            captured.append((kind, depth))
        real_unit(kind, depth)

    import contextlib

    monkeypatch.setattr(engine, "_unit", unit)
    stream = type("FakeStream", (), {"wait_stream": lambda self, other: None})()
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", FakeGraphContext)
    engine.cuda_graphs = True
    engine.reset()
    logits = engine.feed(speech[:, :400], want_logits=True)
    assert float((logits - dense_ref[:, :400]).abs().max()) <= TOL
    assert sorted(set(captured)) == [("feed", 0), ("feed", 1), ("feed", 2)] and len(captured) == 3
    out = torch.zeros(2, 64, dtype=torch.long)
    engine.set_sampling(SamplingOptions(0.9, 10, 0.95))
    engine.sample_and_feed(out, 0, 64, torch.rand(2, 64), feed_last=False)
    assert len(captured) == 6 and engine.t == 400 + 63
    engine.set_sampling(SamplingOptions())  # new sampling settings: the sampling graphs are recaptured
    assert set(k for k, _ in engine._graphs) == {"feed"}
