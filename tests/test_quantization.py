"""8-bit linear quantization (the SaShiMi authors' Beethoven setting) as a model option: tokens,
nll, generation and training batches all follow ARConfig.quantization."""
import math

import pytest
import torch
import torch.nn.functional as F

import sashimi
from sashimi import ARConfig, SashimiAR
from sashimi.config import QUANTIZATIONS as CONFIG_QUANTIZATIONS
from sashimi.data.datasets import ARCollate
from sashimi.errors import InputError
from sashimi.mulaw import QUANTIZATIONS, dequantize, linear_decode, linear_encode, quantize, silence_token


def test_linear_tokens():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.25, 0.999, 1.0])
    assert linear_encode(x).tolist() == [0, 64, 128, 160, 255, 255]
    assert linear_encode(torch.zeros(1)).item() == silence_token(256)
    q = torch.arange(256)
    assert torch.equal(linear_encode(linear_decode(q)), q)
    wav = torch.rand(1000) * 2 - 1
    assert (linear_decode(linear_encode(wav)) - wav).abs().max() <= 2 / 256
    assert torch.equal(quantize(wav, 256, "linear"), linear_encode(wav))
    assert torch.equal(dequantize(q, 256, "mulaw"), sashimi.mulaw_decode(q))
    with pytest.raises(InputError, match="quantization must be one of"):
        quantize(wav, 256, "alaw")
    assert QUANTIZATIONS == CONFIG_QUANTIZATIONS
    with pytest.raises(ValueError, match="ARConfig.quantization"):
        ARConfig(quantization="alaw")


def _tiny(quantization):
    torch.manual_seed(0)
    return SashimiAR(ARConfig(d_model=8, n_layers=1, pool=[2], ff=1, d_state=8, l_max=128,
                              quantization=quantization)).eval()


def test_nll_scores_the_models_own_tokens():
    model = _tiny("linear")
    wav = 0.5 * torch.sin(torch.arange(200) / 7.0).unsqueeze(0)
    tokens = linear_encode(wav)
    inputs = F.pad(tokens[:, :-1], (1, 0), value=128)
    with torch.no_grad():
        expected = F.cross_entropy(model(inputs).transpose(1, 2), tokens, reduction="none").mean()
    assert math.isclose(float(model.nll(wav)[0]), float(expected), rel_tol=1e-5)
    mu = _tiny("mulaw")
    mu.load_state_dict(model.state_dict())
    assert abs(float(mu.nll(wav)[0]) - float(expected)) > 1e-3  # the option changes what is scored


@pytest.mark.parametrize("engine", ["eager", "fast"])
def test_generation_decodes_linearly(engine):
    wav = _tiny("linear").unconditional_generate(2, progress=False, length=50, seed=1, engine=engine)
    steps = (wav + 1) * 128
    assert torch.equal(steps, steps.round())  # on the linear grid, not the mu-law one


def test_training_batches_and_saved_models_keep_it(tmp_path):
    waves = torch.linspace(-0.9, 0.9, 17).repeat(2, 1)
    x, y, _ = ARCollate(256, "linear")([(w, 17) for w in waves])
    assert torch.equal(y, linear_encode(waves)[:, 1:])
    from sashimi.train.tasks import get_task
    collate = get_task("ar").make_collate(ARConfig(quantization="linear"))
    assert torch.equal(collate([(w, 17) for w in waves])[1], y)
    sashimi.save_model(_tiny("linear"), tmp_path / "m.pt")
    assert sashimi.load_model(str(tmp_path / "m.pt")).config.quantization == "linear"
