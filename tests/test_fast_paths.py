"""The training fast paths against their plain references: the fused S4 convolution and the C++
Cauchy kernel, alone and inside a whole model (same loss, same gradient for every parameter)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import sashimi.s4
from sashimi import ARConfig, DiffWaveConfig, SashimiAR, SashimiDiffWave
from sashimi.ops import cauchy_backend
from sashimi.ops.fftconv import ssm_conv_gelu, ssm_conv_gelu_ref


def _inputs(B=2, L=12, H=3, taps=None, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(B, L, H, dtype=dtype, generator=gen, requires_grad=True)
    k = torch.randn(H, taps or L, dtype=dtype, generator=gen, requires_grad=True)
    D = torch.randn(H, dtype=dtype, generator=gen, requires_grad=True)
    return u, k, D


@pytest.mark.parametrize("L,taps", [(12, 12), (7, 14), (9, 4), (1, 1)])  # causal, bidirectional, short, tiny
def test_conv_matches_reference(L, taps):
    u, k, D = _inputs(L=L, taps=taps)
    out, ref = ssm_conv_gelu(u, k, D), ssm_conv_gelu_ref(u, k, D)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (u, k, D), g), torch.autograd.grad(ref, (u, k, D), g)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_conv_gradcheck_and_partial_gradients():
    u, k, D = _inputs(L=6, taps=12)
    assert torch.autograd.gradcheck(ssm_conv_gelu, (u, k, D))
    k.requires_grad_(False)  # only some inputs need gradients
    gu, gD = torch.autograd.grad(ssm_conv_gelu(u, k, D).sum(), (u, D))
    ru, rD = torch.autograd.grad(ssm_conv_gelu_ref(u, k, D).sum(), (u, D))
    torch.testing.assert_close(gu, ru) and torch.testing.assert_close(gD, rD)


def test_conv_float32_and_bad_shapes():
    u, k, D = _inputs(B=3, L=500, H=8, dtype=torch.float32)
    torch.testing.assert_close(ssm_conv_gelu(u, k, D), ssm_conv_gelu_ref(u, k, D), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"u must be \(B, L, H\)"):
        ssm_conv_gelu(u[0], k, D)
    with pytest.raises(ValueError, match="k must be"):
        ssm_conv_gelu(u, k[:, :0], D)
    with pytest.raises(ValueError, match="D must be"):
        ssm_conv_gelu(u, k, D[:2])


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    if isinstance(model, SashimiAR):
        x, y = batch
        loss = F.cross_entropy(model(x).transpose(1, 2).float(), y)
    else:
        from sashimi.diffusion import training_loss

        loss = training_loss(model, batch, model.schedule, generator=torch.Generator().manual_seed(3))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
@pytest.mark.parametrize("kind", ["ar", "diffwave"])
def test_model_loss_and_every_gradient_match_the_reference_paths(monkeypatch, kind, dtype, tol):
    """A small model (odd tier length 15 included): the fast paths give the loss and the gradient of
    every parameter that the reference paths (PyTorch Cauchy backend, reference convolution) give."""
    torch.manual_seed(0)
    if kind == "ar":
        model = SashimiAR(ARConfig(d_model=8, n_layers=2, pool=[2, 2], l_max=60, d_state=16)).to(dtype)
        tokens = torch.randint(0, 256, (2, 61), generator=torch.Generator().manual_seed(1))
        batch = (tokens[:, :-1], tokens[:, 1:])
    else:
        model = SashimiDiffWave(DiffWaveConfig(d_model=8, n_layers=1, pool=[2, 2], l_max=60, d_state=16)).to(dtype)
        batch = torch.rand(2, 60, generator=torch.Generator().manual_seed(1), dtype=dtype) - 0.5
    assert cauchy_backend("cpu") == "cpu"
    fast = _loss_and_grads(model, batch)
    monkeypatch.setenv("SASHIMI_CAUCHY_BACKEND", "torch")
    monkeypatch.setattr(sashimi.s4, "ssm_conv_gelu", ssm_conv_gelu_ref)
    ref = _loss_and_grads(model, batch)
    assert abs(fast[0] - ref[0]) <= tol * abs(ref[0])
    assert fast[1].keys() == ref[1].keys() and len(ref[1]) == len(list(model.parameters()))
    for name, g in ref[1].items():
        scale = g.abs().max().clamp_min(1e-30)
        assert (fast[1][name] - g).abs().max() <= tol * max(scale, 1.0), name
