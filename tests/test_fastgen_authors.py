"""The fast engines (C++ CPU step and PyTorch step) on the SaShiMi authors' architectures: the
two-scalar TransposedLN (ScalarNorm, ``norm='scalar'``), S4 layers with a free low-rank factor Q
(``hurwitz=False``), no GLU / no post-activation, per-tier kernel lengths. Each engine's
teacher-forced logits equal ``model.forward`` (convolution mode) and the dense eager step, and
seeded generation draws the same tokens in both engines."""
import copy
from pathlib import Path

import pytest
import torch

import sashimi
from sashimi import ARConfig, SashimiAR, fastgen
from sashimi.backbone import ScalarNorm
from sashimi.fastgen import cpu, pack
from sashimi.fastgen.torch_engine import TorchEngine
from sashimi.s4 import S4

from conftest import dense_logits

HAS_CPP = cpu.load_library() is not None
KINDS = [pytest.param("cpp", marks=pytest.mark.skipif(not HAS_CPP, reason=f"no C++ build: {cpu.build_error}")),
         "torch"]
DIR = Path(__file__).parent / "fixtures" / "authors"
AR_FIXTURES = ["feb2022_sc09_small", "v3_sc09_small", "v4_sc09_small",
               "feb2022_youtubemix_small", "v3_youtubemix_small", "v4_youtubemix_small"]
STEPS = 300
# float32 engines against float32 convolution mode (FFT kernel, FFT convolution) and the dense
# step: measured <= 5.3e-6 on every case here (|logits| up to ~3.7); Q replaced by conj(P) or the
# ScalarNorm's shift dropped changes them by far more (test_the_free_q_and_scalar_norm_matter)
TOL = 2e-5


def _perturbed(cfg: dict, seed: int = 0) -> SashimiAR:
    """A random model with every parameter perturbed: Q is no longer conj(P), the ScalarNorms'
    m and s leave 0 and 1 (so a dropped Q or a mis-packed norm changes the logits)."""
    torch.manual_seed(seed)
    model = SashimiAR(ARConfig(**cfg)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _tokens(batch: int, steps: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, steps), generator=torch.Generator().manual_seed(seed))


SMALL = dict(d_model=16, n_layers=2, pool=[2, 2], ff=2, d_state=16, l_max=256, norm="scalar", hurwitz=False)
CONFIGS = {
    "youtubemix-like": dict(SMALL, glu=False),                        # postact=null, TransposedLN, free Q
    "sc09-like": dict(SMALL, glu=True),                               # GLU, TransposedLN, free Q
    "scalar-final-norm": dict(SMALL, glu=False, final_norm="scalar"),
    "untied-odd-widths": dict(SMALL, d_model=24, pool=[2, 3], l_max=144, tie_state=False, glu=False),
    "layer-norm-free-q": dict(SMALL, norm="layer"),
    "scalar-norm-hurwitz": dict(SMALL, hurwitz=True),
}


@pytest.fixture(scope="module")
def fixture_models():
    return {name: sashimi.load_model(str(DIR / f"{name}.pt")).eval() for name in AR_FIXTURES}


@pytest.mark.parametrize("name", AR_FIXTURES)
@pytest.mark.parametrize("kind", KINDS)
def test_authors_fixtures_run_in_the_fast_engines(fixture_models, name, kind):
    """The files written by the authors' own code, loaded by sashimi.load_model, are packed (no
    fallback) and each engine's teacher-forced logits equal the model's convolution mode."""
    model = fixture_models[name]
    assert pack.unsupported_reason(model) is None
    assert fastgen.resolve_engine(model, "auto") == "fast"
    tokens = torch.load(DIR / f"{name}.reference.pt", weights_only=True)["input_tokens"][:, :STEPS].long()
    fast = fastgen.teacher_forced_logits(model, tokens, kind=kind)
    with torch.no_grad():
        conv = model(tokens)
    worst = float((fast - conv).abs().max())
    assert worst <= TOL, f"{name} ({kind}): max |fast - forward| = {worst:.3g}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graphs_on_an_authors_fixture(fixture_models):
    model = copy.deepcopy(fixture_models["feb2022_youtubemix_small"]).cuda()
    tokens = torch.load(DIR / "feb2022_youtubemix_small.reference.pt", weights_only=True)["input_tokens"][:, :STEPS]
    tokens = tokens.long().cuda()
    fast = fastgen.teacher_forced_logits(model, tokens, kind="cuda-graphs")
    with torch.no_grad():
        conv = model(tokens)
    assert float((fast - conv).abs().max()) <= TOL


@pytest.mark.parametrize("case", sorted(CONFIGS))
@pytest.mark.parametrize("kind", KINDS)
def test_random_authors_configs_equal_forward_and_dense_step(case, kind):
    model = _perturbed(CONFIGS[case])
    plan = fastgen.plan_for(model)
    scalar = CONFIGS[case]["norm"] == "scalar"
    assert {b["norm"] for t in plan["tiers"] for b in t["blocks"]} == {"scalar" if scalar else "layer"}
    assert plan["norm_kind"] == CONFIGS[case].get("final_norm", "layer")
    tokens = _tokens(2, STEPS)
    fast = fastgen.teacher_forced_logits(model, tokens, kind=kind)
    with torch.no_grad():
        conv = model(tokens)
    assert float((fast - conv).abs().max()) <= TOL
    assert float((fast - dense_logits(model, tokens)).abs().max()) <= TOL


@pytest.mark.parametrize("kind", KINDS)
def test_free_q_in_the_diagonal_form(kind):
    """A well-conditioned eigenbasis of a non-Hurwitz A (small P and Q) takes the diagonal form,
    which reads Q through the eigenvectors of A = diag - p q^T."""
    model = _perturbed(dict(SMALL, glu=False))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, S4):
                m.kernel.P.mul_(0.01)
                m.kernel.Q.mul_(0.01)
    assert set(pack.s4_modes(pack.build_plan(model))) == {"diagonal"}
    tokens = _tokens(1, STEPS)
    fast = fastgen.teacher_forced_logits(model, tokens, kind=kind)
    assert float((fast - dense_logits(model, tokens)).abs().max()) <= TOL


def test_the_free_q_and_scalar_norm_matter():
    """The test models are sensitive to what is packed: the engines with Q replaced by conj(P), or
    with the ScalarNorms' shift m dropped, are far from the model (so the tolerance above means
    something)."""
    model = _perturbed(dict(SMALL, glu=False))
    tokens = _tokens(1, 200)
    with torch.no_grad():
        conv = model(tokens)
    hurwitz = copy.deepcopy(model)
    with torch.no_grad():
        for m in hurwitz.modules():
            if isinstance(m, S4):
                m.kernel.Q.copy_(m.kernel.P * torch.tensor([1.0, -1.0]))  # (re, im) pairs: Q = conj(P)
    no_shift = copy.deepcopy(model)
    with torch.no_grad():
        for m in no_shift.modules():
            if isinstance(m, ScalarNorm):
                m.m.zero_()
    for other in (hurwitz, no_shift):
        engine = TorchEngine(pack.build_plan(other), 1, "cpu")
        engine.reset()
        worst = float((engine.feed(tokens, want_logits=True) - conv).abs().max())
        assert worst > 1000 * TOL, worst


@pytest.mark.skipif(not HAS_CPP, reason=f"no C++ build: {cpu.build_error}")
@pytest.mark.parametrize("name", ["feb2022_youtubemix_small", "feb2022_sc09_small"])
def test_generation_is_the_same_in_the_cpp_and_torch_engines(fixture_models, name):
    model = fixture_models[name]
    prefix = _tokens(2, 20, seed=1)
    runs = {kind: fastgen.generate_tokens(model, prefix, 400, generator=torch.Generator().manual_seed(4), kind=kind)
            for kind in ("cpp", "torch")}
    assert runs["cpp"].shape == (2, 400) and torch.equal(runs["cpp"], runs["torch"])
    assert torch.equal(runs["cpp"][:, :20], prefix)


@pytest.mark.skipif(not HAS_CPP, reason=f"no C++ build: {cpu.build_error}")
def test_public_generation_uses_the_fast_engine_on_a_youtubemix_layout():
    model = _perturbed(dict(SMALL, glu=False))
    assert fastgen.resolve_engine(model, "auto") == "fast"
    a = model.unconditional_generate(2, length=300, seed=0, progress=False)
    b = torch.cat(list(model.stream(2, 300, 128, seed=0)), 1)
    assert a.shape == (2, 300) and torch.isfinite(a).all() and torch.equal(a, b)


def test_paired_blocks_are_refused_with_a_reason():
    """The DiffWave+SaShiMi files' S4 + FF pairs are not autoregressive models; an AR model built
    with ``paired=True`` falls back to the eager step, saying why."""
    model = SashimiAR(ARConfig(d_model=8, n_layers=1, pool=[2], ff=1, d_state=8, l_max=64, norm="scalar",
                               paired=True)).eval()
    assert "paired" in pack.unsupported_reason(model)
    assert fastgen.resolve_engine(model, "auto") == "eager"


def test_conditioned_scalar_norm_blocks_are_refused_with_a_reason():
    """The engines fold a block's condition into a LayerNorm's affine parameters; after a ScalarNorm
    the shift would be divided by the row's std, so such models fall back, saying why."""
    model = SashimiAR(ARConfig(d_model=8, n_layers=1, pool=[2], ff=1, d_state=8, l_max=64, norm="scalar",
                               num_classes=3, condition="blocks")).eval()
    reason = pack.unsupported_reason(model)
    assert reason is not None and "ScalarNorm" in reason and "conditioned" in reason
    assert fastgen.resolve_engine(model, "auto") == "eager"
