"""DiffWave+SaShiMi: the published format and reference output, the bidirectional S4 path,
the noise schedule and samplers (checked against an analytic oracle), bad inputs, and the hub entry."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sashimi import CheckpointError, DiffWaveConfig, NoiseSchedule, S4, SashimiDiffWave, load_model, save_model
from sashimi.persistence.checkpoint import build_uninitialized, load_state_dict_strict
from sashimi.diffusion import FAST_BETAS, ddpm_sample, q_sample, sampling_plan, training_loss
from sashimi.diffwave import step_embedding
from sashimi.persistence.published import convert_rf5_diffwave_state_dict, infer_config_fields, is_rf5_diffwave

REPO = str(Path(__file__).resolve().parents[1])
TINY = dict(d_model=8, n_layers=1, l_max=64, d_state=8)



@pytest.fixture(scope="module")
def small(fixtures_dir):
    """The small published-format DiffWave checkpoint, loaded (d_model 16, n_layers 1)."""
    return load_model(fixtures_dir / "rf5_diffwave_small.ckpt.pt")


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    return torch.load(fixtures_dir / "rf5_diffwave_small.reference.pt", weights_only=True)


@pytest.fixture(scope="module")
def manifest(fixtures_dir):
    return json.loads((fixtures_dir / "rf5_diffwave_sc09.manifest.json").read_text())


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(1)
    model = SashimiDiffWave(DiffWaveConfig(**TINY)).eval()
    with torch.no_grad():  # the zero-initialised output layer would make every prediction 0
        model.final_proj.weight.normal_(0, 0.3)
    return model


# ---- the published format -------------------------------------------------------------------
def test_reference_noise_prediction(small, reference):
    assert small.config.d_model == 16 and small.config.n_layers == 1 and not small.training
    with torch.no_grad():
        eps = small(reference["x_t"], reference["diffusion_steps"])  # the seed's (B, 1, L), (B, 1) layout
        eps_2d = small(reference["x_t"][:, 0], reference["diffusion_steps"][:, 0])  # (B, L), (B,)
    assert eps.shape == reference["eps"].shape
    assert (eps - reference["eps"]).abs().max() <= 1e-3
    torch.testing.assert_close(eps_2d, eps[:, 0], rtol=0, atol=0)


def _published_like(manifest) -> dict:
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(*shape, generator=g) * 0.05 for k, shape in manifest["state_dict_shapes"].items()}
    return {"model_state_dict": sd, "optimizer_state_dict": None}


def test_sc09_parameter_count(manifest):
    with torch.device("meta"):
        model = SashimiDiffWave(DiffWaveConfig())
    assert sum(p.numel() for p in model.parameters()) == manifest["params"] == 23_478_785


def test_every_manifest_key_is_accepted(manifest):
    ckpt = _published_like(manifest)
    sd = ckpt["model_state_dict"]
    assert is_rf5_diffwave(ckpt)
    assert infer_config_fields(sd) == dict(d_model=128, n_layers=6, d_state=64, tie_state=False, l_max=16000)
    native = convert_rf5_diffwave_state_dict(sd)
    dropped = [k for k in sd if k.endswith((".omega", ".z"))]
    assert len(native) == len(sd) - len(dropped) and len(dropped) == 2 * 5 * 6  # 6 S4 layers in each of 5 stages
    assert not any(k.endswith((".omega", ".z")) for k in native)
    model = build_uninitialized(SashimiDiffWave, DiffWaveConfig())
    load_state_dict_strict(model, native, "manifest")  # strict: no key missing, unexpected or misshapen
    loaded = model.state_dict()
    torch.testing.assert_close(loaded["init_conv.weight_v"], sd["sashimi.init_conv.0.conv.weight_v"][..., 0])
    torch.testing.assert_close(loaded["final_proj.weight"], sd["sashimi.final_conv.2.conv.weight"][..., 0])
    torch.testing.assert_close(loaded["step_embed.fc2.bias"], sd["sashimi.fc_t2.bias"])
    torch.testing.assert_close(loaded["sashimi.u_layers.1.3.fc_t.weight"], sd["sashimi.u_layers.1.3.fc_t.weight"])
    torch.testing.assert_close(loaded["sashimi.c_layers.0.layer.kernel.C"],
                               sd["sashimi.c_layers.0.layer.kernel.kernel.C"])


def test_misfitting_published_file_is_refused(fixtures_dir):
    ckpt = torch.load(fixtures_dir / "rf5_diffwave_small.ckpt.pt", weights_only=True)
    from sashimi.persistence.published import load_rf5_diffwave

    with pytest.raises(CheckpointError, match="do not fit"):
        load_rf5_diffwave(ckpt, "small", config={"n_layers": 2})
    del ckpt["model_state_dict"]["sashimi.fc_t1.bias"]
    with pytest.raises(CheckpointError, match="missing"):
        load_model(ckpt)
    with pytest.raises(CheckpointError, match="not a published DiffWave"):
        load_rf5_diffwave({"model_state_dict": {"x": torch.zeros(1)}}, "other")


def test_native_round_trip(tmp_path, tiny):
    path = tmp_path / "tiny.pt"
    save_model(tiny, path)
    assert torch.load(path, weights_only=True)["kind"] == "diffwave"
    model = load_model(path)
    assert isinstance(model, SashimiDiffWave) and model.config == tiny.config
    for key, value in tiny.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)


# ---- network pieces --------------------------------------------------------------------------
def test_bidirectional_s4_is_a_two_sided_convolution():
    torch.manual_seed(0)
    layer = S4(3, d_state=8, l_max=32, bidirectional=True).double()
    L = 20
    u = torch.randn(2, L, 3, dtype=torch.float64)
    with torch.no_grad():
        k = layer.kernel(L)  # (2, H, L): k[0] causal, k[1] anti-causal
        y = torch.zeros(2, L, 3, dtype=torch.float64)
        for t in range(L):
            for s in range(L):
                if s <= t:  # y_t += k0[t - s] u_s  (lags 0..L-1)
                    y[:, t] += k[0, :, t - s] * u[:, s]
                else:  # y_t += k1[s - t - 1] u_s  (future samples, lags 1..L)
                    y[:, t] += k[1, :, s - t - 1] * u[:, s]
        y = y + layer.D[0] * u
        expected = layer._project(F.gelu(y))
        torch.testing.assert_close(layer(u), expected, rtol=1e-9, atol=1e-10)


def test_step_embedding_formula_and_fractional_steps():
    steps = torch.tensor([0, 3, 150, 199])
    half = 64
    f = torch.exp(torch.arange(half) * -(math.log(10000) / (half - 1)))
    expected = torch.cat([torch.sin(steps[:, None] * f), torch.cos(steps[:, None] * f)], 1)
    torch.testing.assert_close(step_embedding(steps, 128), expected, rtol=0, atol=2e-5)
    mid = step_embedding(torch.tensor([10.5]), 128)
    assert torch.isfinite(mid).all() and not torch.allclose(mid, step_embedding(torch.tensor([10]), 128))


def test_noise_prediction_does_not_depend_on_batch_neighbours(tiny):
    x = torch.randn(3, 64)
    t = torch.tensor([0, 7.5, 199])
    with torch.no_grad():
        full = tiny(x, t)
        one = tiny(x[1:2], t[1:2])
    torch.testing.assert_close(full[1:2], one)
    assert full.shape == (3, 64)


# ---- schedule and samplers -------------------------------------------------------------------
def test_linear_schedule_matches_the_seed_recursion():
    s = NoiseSchedule.linear(200, 1e-4, 0.02)
    beta = np.linspace(1e-4, 0.02, 200)
    alpha_bar, beta_tilde = np.cumprod(1 - beta), beta.copy()
    for t in range(1, 200):
        beta_tilde[t] *= (1 - alpha_bar[t - 1]) / (1 - alpha_bar[t])
    np.testing.assert_allclose(s.alpha_bar.numpy(), alpha_bar, rtol=1e-12)
    np.testing.assert_allclose(s.beta_tilde.numpy()[1:], beta_tilde[1:], rtol=1e-12)
    assert s.beta_tilde[0] == 0  # no noise is added at the last denoising step


def test_fast_plan_matches_lmnt_fractional_steps():
    s = NoiseSchedule.linear()
    t, alpha_bar = sampling_plan(s, "fast")
    talpha_cum = np.cumprod(1 - np.linspace(1e-4, 0.02, 200))
    alpha_cum = np.cumprod(1 - np.array(FAST_BETAS))
    expected = []
    for a in alpha_cum:  # lmnt-com/diffwave's inference-step mapping
        for j in range(199):
            if talpha_cum[j + 1] <= a <= talpha_cum[j]:
                twiddle = (talpha_cum[j] ** 0.5 - a ** 0.5) / (talpha_cum[j] ** 0.5 - talpha_cum[j + 1] ** 0.5)
                expected.append(j + twiddle)
                break
    np.testing.assert_allclose(t.numpy(), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(alpha_bar.numpy(), alpha_cum, rtol=1e-12)
    torch.testing.assert_close(s.alpha_bar_at(t), alpha_bar, rtol=1e-12, atol=0)  # consistent inverse


def test_strided_plans():
    s = NoiseSchedule.linear()
    t_full, ab_full = sampling_plan(s, None)
    t, ab = sampling_plan(s, 200)
    torch.testing.assert_close(t, t_full)
    torch.testing.assert_close(ab, ab_full)
    t, _ = sampling_plan(s, 10)
    assert t.numel() == 10 and t[0] == 0 and t[-1] == 199 and bool((t.diff() > 0).all())
    assert sampling_plan(s, 1)[0].tolist() == [199]
    for bad in (0, 201, "slow", 2.5, True):
        with pytest.raises(ValueError, match="steps must be"):
            sampling_plan(s, bad)
    with pytest.raises(ValueError, match="outside the training schedule"):
        sampling_plan(NoiseSchedule.linear(10, 1e-4, 0.02), "fast")  # too short to reach alpha_bar 0.38


def _oracle(schedule: NoiseSchedule, mu: float, std: float):
    """The exact E[eps | x_t] for data x0 ~ N(mu, std^2) i.i.d. per sample, at (fractional) steps t."""
    def eps_fn(x, t):
        ab = schedule.alpha_bar_at(t).to(x)[:, None]
        return (1 - ab).sqrt() * (x - ab.sqrt() * mu) / (ab * std ** 2 + 1 - ab)
    return eps_fn


def _exact_moments(alpha_bar, mu, std, m, v):
    """Mean and variance of the sampler's output with the oracle: each step is affine + Gaussian."""
    a = alpha_bar.tolist()
    for i in range(len(a) - 1, -1, -1):
        a_prev = a[i - 1] if i else 1.0
        beta = 1 - a[i] / a_prev
        g = (1 - a[i]) ** 0.5 / (a[i] * std ** 2 + 1 - a[i])  # eps = g (x - sqrt(a) mu)
        c = beta / (1 - a[i]) ** 0.5
        scale, shift = (1 - c * g) / (1 - beta) ** 0.5, c * g * a[i] ** 0.5 * mu / (1 - beta) ** 0.5
        m, v = scale * m + shift, scale ** 2 * v + (beta * (1 - a_prev) / (1 - a[i]) if i else 0.0)
    return m, v


def _run(steps, mu, std, start):
    s = NoiseSchedule.linear()
    t, ab = sampling_plan(s, steps)
    g = torch.Generator().manual_seed(0)
    n_rows, n_cols = 4, 32768
    if start == "normal":  # what unconditional_generate does
        m0, v0 = 0.0, 1.0
    else:  # the true marginal at the noisiest level visited
        m0, v0 = float(ab[-1]) ** 0.5 * mu, float(ab[-1]) * std ** 2 + 1 - float(ab[-1])
    x = m0 + v0 ** 0.5 * torch.randn(n_rows, n_cols, generator=g, dtype=torch.float64)
    out = ddpm_sample(_oracle(s, mu, std), x, t, ab, generator=g)
    n = out.numel()
    return out.mean().item(), out.var().item(), n, _exact_moments(ab, mu, std, m0, v0)


@pytest.mark.parametrize("steps", [None, "fast", 20])
def test_sampler_with_oracle_has_the_exact_output_moments(steps):
    mean, var, n, (m, v) = _run(steps, mu=0.3, std=0.5, start="normal")
    assert abs(mean - m) < 5 * (v / n) ** 0.5
    assert abs(var - v) < 5 * v * (2 / n) ** 0.5


@pytest.mark.parametrize("steps", [None, "fast"])
def test_sampler_with_oracle_recovers_the_data_distribution(steps):
    """Started from the true marginal, the oracle sampler returns the data mean exactly. Its
    variance falls short by sum_t c_t^2 Var[x0 | x_t] (sigma^2 = beta-tilde is exact only for a
    point mass): by ~2% on the 200-step schedule here, and by ~40% on the 6-step one."""
    mu, std = 0.3, 1.0
    mean, var, n, (m, v) = _run(steps, mu, std, start="marginal")
    assert abs(m - mu) < 1e-9
    assert abs(mean - mu) < 5 * (var / n) ** 0.5
    assert abs(var - v) < 5 * v * (2 / n) ** 0.5
    if steps is None:
        assert abs(var - std ** 2) < 0.03 * std ** 2
    else:
        assert 0.5 * std ** 2 < var < 0.7 * std ** 2


def test_generation_shapes_range_and_determinism(tiny):
    for steps in (None, "fast", 5):
        wav = tiny.unconditional_generate(2, progress=False, steps=steps, seed=3)
        assert wav.shape == (2, 64) and wav.dtype == torch.float32
        assert torch.isfinite(wav).all() and wav.abs().max() <= 1
    a = tiny.unconditional_generate(2, progress=False, steps="fast", seed=3, length=32)
    b = tiny.unconditional_generate(2, progress=False, steps="fast", seed=3, length=32)
    assert a.shape == (2, 32) and torch.equal(a, b)
    z = torch.randn(3, 48)
    c = tiny.generate_from_latent(z, progress=False, steps=7, seed=5)
    d = tiny.generate_from_latent(z, progress=False, steps=7, seed=5)
    e = tiny.generate_from_latent(z, progress=False, steps=7, seed=6)
    assert c.shape == (3, 48) and torch.equal(c, d) and not torch.equal(c, e)


def test_sampling_reuses_each_kernel(tiny, monkeypatch):
    import copy

    from sashimi.s4 import SSMKernel

    tiny = copy.deepcopy(tiny)  # the weights get modified below
    calls = []
    original = SSMKernel._compute
    monkeypatch.setattr(SSMKernel, "_compute", lambda self, length: calls.append(length) or original(self, length))
    tiny.unconditional_generate(1, progress=False, steps=5, seed=0)
    n_kernels = sum(isinstance(m, SSMKernel) for m in tiny.modules())
    assert len(calls) == n_kernels  # once per layer, not once per step
    with torch.no_grad():
        tiny.sashimi.c_layers[0].layer.kernel.log_dt.add_(0.1)  # weights changed: recomputed
    tiny.unconditional_generate(1, progress=False, steps=5, seed=0)
    assert len(calls) == n_kernels + 1


def test_training_loss_trains(tiny):
    s = tiny.schedule
    x0 = 0.5 * torch.randn(2, 64).clamp(-1, 1)
    g = torch.Generator().manual_seed(0)
    loss = training_loss(tiny, x0, s, g)
    g = torch.Generator().manual_seed(0)
    t = torch.randint(s.T, (2,), generator=g)
    noise = torch.randn(2, 64, generator=g)
    expected = F.mse_loss(tiny(q_sample(x0, t, noise, s), t), noise)
    torch.testing.assert_close(loss, expected)
    tiny.zero_grad()
    tiny.training_loss(x0.clamp(-1, 1)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in tiny.parameters())
    tiny.zero_grad()


# ---- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("x, steps, err, match", [
    (torch.randn(64), torch.tensor([0]), ValueError, r"shape \(B, L\)"),
    (torch.randn(2, 2, 64), torch.tensor([0, 0]), ValueError, r"shape \(B, L\)"),
    (torch.randn(2, 40), torch.tensor([0, 0]), ValueError, "multiple of 16"),
    (torch.randn(2, 80), torch.tensor([0, 0]), ValueError, "at most l_max=64"),
    (torch.zeros(2, 64, dtype=torch.long), torch.tensor([0, 0]), TypeError, "floating-point"),
    (torch.full((2, 64), float("nan")), torch.tensor([0, 0]), ValueError, "NaN"),
    (torch.randn(2, 64), torch.tensor([0, 200]), ValueError, r"\[0, 199\]"),
    (torch.randn(2, 64), torch.tensor([-1, 0]), ValueError, r"\[0, 199\]"),
    (torch.randn(2, 64), torch.tensor([float("nan"), 0]), ValueError, r"\[0, 199\]"),
    (torch.randn(2, 64), torch.tensor([0, 1, 2]), ValueError, r"shape \(2,\)"),
    (torch.randn(2, 64), 3, TypeError, "diffusion_steps"),
])
def test_bad_forward_input(tiny, x, steps, err, match):
    with pytest.raises(err, match=match):
        tiny(x, steps)


def test_bad_generation_arguments(tiny):
    with pytest.raises(ValueError, match="N must be"):
        tiny.unconditional_generate(0, progress=False)
    with pytest.raises(ValueError, match="steps must be"):
        tiny.unconditional_generate(1, progress=False, steps="slow")
    with pytest.raises(ValueError, match="length"):
        tiny.unconditional_generate(1, progress=False, length=30)
    with pytest.raises(ValueError, match="NaN"):
        tiny.generate_from_latent(torch.full((1, 64), float("inf")), progress=False)
    with pytest.raises(TypeError, match="seed"):
        tiny.unconditional_generate(1, progress=False, seed="a")


def test_bad_config():
    with pytest.raises(ValueError, match="beta_start"):
        DiffWaveConfig(beta_start=0.1, beta_end=0.01)
    with pytest.raises(ValueError, match="d_step_embed"):
        DiffWaveConfig(d_step_embed=7)


# ---- hub ----------------------------------------------------------------------------------------
def test_hub_pretrained_false_with_overrides():
    model = torch.hub.load(REPO, "sashimi_diffwave_sc09", source="local", pretrained=False, device="cpu", **TINY)
    assert isinstance(model, SashimiDiffWave) and not model.training
    assert model.config == DiffWaveConfig(**TINY)
    with pytest.raises(ValueError, match="valid keys"):
        torch.hub.load(REPO, "sashimi_diffwave_sc09", source="local", pretrained=False, d_modle=8)
    with pytest.raises(ValueError, match="variant"):
        torch.hub.load(REPO, "sashimi_diffwave_sc09", source="local", variant="900k")


def test_hub_local_published_checkpoint(fixtures_dir, small):
    path = str(fixtures_dir / "rf5_diffwave_small.ckpt.pt")
    model = torch.hub.load(REPO, "sashimi_diffwave_sc09", source="local", device="cpu", checkpoint=path)
    assert model.config == small.config and not model.training
    for key, value in small.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    model = torch.hub.load(REPO, "sashimi_diffwave_sc09", source="local", device="cpu", checkpoint=path, T=100)
    assert model.config.T == 100 and model.schedule.T == 100


def test_hub_local_native_checkpoint(tmp_path, tiny):
    path = tmp_path / "tiny.pt"
    save_model(tiny, path)
    model = torch.hub.load(REPO, "sashimi_diffwave_sc09", source="local", device="cpu", checkpoint=str(path))
    assert model.config == tiny.config
    with pytest.raises(ValueError, match="own config"):
        torch.hub.load(REPO, "sashimi_diffwave_sc09", source="local", checkpoint=str(path), d_model=16)
