"""The public API: the documented sampling loop (docs/generating.md) records no graph; clear errors for bad arguments."""
import math
import os
import re

import pytest
import torch

from sashimi import ARConfig, DiffWaveConfig, SashimiAR, SashimiDiffWave, mulaw_decode, sample_logits

# the custom sampling loop moved from the README to the generating guide
GUIDE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "generating.md")


@pytest.fixture(scope="module")
def tiny():
    return SashimiAR(ARConfig(d_model=8, n_layers=1, l_max=256)).eval()


def _tensors(obj):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)


# ---- 6. the guide's custom sampling loop, as written -------------------------------------------------
def test_readme_sampling_loop_records_no_autograd_graph(tiny):
    """Copied literally, the loop grew by ~1.4 MB a step (an autograd graph through the state);
    its step outputs must not require grad although the parameters do. Only its length is cut."""
    blocks = re.findall(r"```python\n(.*?)```", open(GUIDE, encoding="utf-8").read(), re.S)
    loop = next(b for b in blocks if "model.step(token, state)" in b)
    assert "range(16000)" in loop
    assert all(p.requires_grad for p in tiny.parameters()) and torch.is_grad_enabled()
    scope = {"torch": torch, "model": tiny, "mulaw_decode": mulaw_decode}
    exec(loop.replace("range(16000)", "range(30)"), scope)
    assert scope["wav"].shape == (4, 30)
    assert scope["logits"].grad_fn is None and not scope["logits"].requires_grad
    assert not any(t.requires_grad for t in _tensors(scope["state"]))


# ---- 8. clear errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [math.inf, 1e-45, math.nan, 0.0])
def test_temperature_out_of_range(tiny, temperature):
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0.0001"):
        tiny.unconditional_generate(1, length=8, progress=False, temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        sample_logits(torch.zeros(1, 4), temperature)


def test_lowest_temperature_samples_the_argmax(tiny):
    logits = torch.tensor([[0.0, 3.0, 2.999, -1.0]])
    assert int(sample_logits(logits, 1e-4)) == 1
    wav = tiny.unconditional_generate(1, length=8, progress=False, temperature=1e-4, engine="eager")
    assert torch.isfinite(wav).all()


def test_seed_out_of_range(tiny):
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64 - 1\], got 18446744073709551616"):
        tiny.unconditional_generate(1, length=8, progress=False, seed=2**64)
    with pytest.raises(ValueError, match="seed must be an integer"):
        tiny.unconditional_generate(1, length=8, progress=False, seed=-1)
    with pytest.raises(TypeError, match="seed must be an int"):
        tiny.unconditional_generate(1, length=8, progress=False, seed=1.5)
    assert tiny.unconditional_generate(1, length=8, progress=False, seed=2**64 - 1).shape == (1, 8)
    dw = SashimiDiffWave(DiffWaveConfig(d_model=8, n_layers=1, l_max=64, d_step_hidden=16, d_step_embed=8))
    with pytest.raises(ValueError, match="seed must be an integer"):
        dw.unconditional_generate(1, progress=False, steps=1, seed=2**64)


def test_empty_batches_and_bad_batch_size(tiny):
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        tiny.nll(torch.zeros(2, 16), batch_size=0)
    with pytest.raises(ValueError, match=r"wavs must have shape .* N, L > 0, got \(0, 16\)"):
        tiny.nll(torch.zeros(0, 16))
    with pytest.raises(ValueError, match=r"x must hold at least one sequence of at least one token, got shape \(0, 16\)"):
        tiny(torch.zeros(0, 16, dtype=torch.long))
    with pytest.raises(ValueError, match=r"got shape \(2, 0\)"):
        tiny(torch.zeros(2, 0, dtype=torch.long))


def test_step_without_a_state(tiny):
    tiny.setup_rnn()
    with pytest.raises(TypeError, match=r"state must be the list returned by default_state\(\).*got NoneType"):
        tiny.step(torch.zeros(2, dtype=torch.long), None)
    with pytest.raises(TypeError, match="tokens must be a torch.Tensor"):
        tiny.step(None, tiny.default_state(2))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_model_is_refused_clearly(dtype):
    model = SashimiAR(ARConfig(d_model=8, n_layers=1, l_max=256)).eval().to(dtype)
    match = f"SashimiAR has {dtype} parameters, but S4 layers compute in float32 or float64.*autocast"
    with pytest.raises(TypeError, match=match):
        model(torch.zeros(1, 16, dtype=torch.long))
    with pytest.raises(TypeError, match=match):
        model.unconditional_generate(1, length=8, progress=False)
    with pytest.raises(TypeError, match=match):
        model.setup_rnn()
    dw = SashimiDiffWave(DiffWaveConfig(d_model=8, n_layers=1, l_max=64, d_step_hidden=16, d_step_embed=8)).to(dtype)
    with pytest.raises(TypeError, match=f"SashimiDiffWave has {dtype} parameters"):
        dw(torch.zeros(1, 64, dtype=dtype), torch.zeros(1))
