"""Generation: shapes, range, determinism, sampling settings, input validation."""
import pytest
import torch

from sashimi import ARConfig, SashimiAR, sample_logits


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return SashimiAR(ARConfig(d_model=8, n_layers=1, l_max=256)).eval()


def test_unconditional_generate_shape_range_determinism(tiny):
    a = tiny.unconditional_generate(3, progress=False, length=64, seed=1)
    b = tiny.unconditional_generate(3, progress=False, length=64, seed=1)
    c = tiny.unconditional_generate(3, progress=False, length=64, seed=2)
    assert a.shape == (3, 64) and a.dtype == torch.float32
    assert a.abs().max() <= 1.0 and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_generate_continues_prefix(tiny):
    prefix = torch.sin(torch.linspace(0, 20, 40)) * 0.5
    out = tiny.generate(prefix, 64, progress=False, seed=0, nucleus_p=0.9, top_k=50, temperature=0.8)
    from sashimi import mulaw_decode, mulaw_encode

    assert out.shape == (1, 64)
    torch.testing.assert_close(out[0, :40], mulaw_decode(mulaw_encode(prefix)))


def test_nucleus_sampling_is_batched_and_restricts_support():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]]))
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_logits(logits, nucleus_p=0.7, generator=g) for _ in range(500)])
    assert set(draws[:, 0].tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.7
    assert set(draws[:, 1].tolist()) == {3, 2}
    top1 = torch.stack([sample_logits(logits, top_k=1, generator=g) for _ in range(50)])
    assert (top1 == torch.tensor([0, 3])).all()
    full = torch.stack([sample_logits(logits, nucleus_p=1.0, generator=g) for _ in range(2000)])
    freq = (full[:, 0] == 3).float().mean()
    assert 0.03 < freq < 0.08  # p = 0.05: plain sampling from the full distribution


@pytest.mark.parametrize("kwargs, match", [
    ({"nucleus_p": 0.0}, "nucleus_p"), ({"nucleus_p": 1.5}, "nucleus_p"),
    ({"temperature": 0.0}, "temperature"), ({"top_k": -1}, "top_k"),  # top_k 0: all tokens
])
def test_bad_sampling_arguments(tiny, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny.unconditional_generate(1, progress=False, length=4, **kwargs)


def test_bad_tokens(tiny):
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        tiny(torch.tensor([[0, 256]]))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        tiny(torch.tensor([[-1, 3]]))
    with pytest.raises(TypeError, match="integer"):
        tiny(torch.rand(1, 4))
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        tiny(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="lengths"):
        tiny(torch.zeros(2, 4, dtype=torch.long), lengths=torch.tensor([5, 1]))


def test_bad_audio_for_nll(tiny):
    with pytest.raises(ValueError, match="NaN"):
        tiny.nll(torch.tensor([[0.1, float("nan")]]))
    with pytest.raises(ValueError, match="inf"):
        tiny.nll(torch.tensor([[0.1, float("inf")]]))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        tiny.nll(torch.tensor([[0.1, 1.5]]))
    with pytest.raises(TypeError, match="floating-point"):
        tiny.nll(torch.tensor([[1, 2]]))


def test_nll_lengths_exclude_padding(tiny):
    wav = torch.rand(1, 100) * 0.5 - 0.25
    padded = torch.cat([wav, torch.zeros(1, 60)], dim=1)
    torch.testing.assert_close(tiny.nll(padded, lengths=torch.tensor([100])), tiny.nll(wav))


def test_step_needs_setup():
    model = SashimiAR(ARConfig(d_model=8, n_layers=1, l_max=64))
    with pytest.raises(RuntimeError, match="setup"):
        model.default_state(1)
