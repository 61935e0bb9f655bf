"""Recurrent (step) mode equals convolution mode, teacher-forced on real audio."""
import copy

import pytest
import torch

STEPS = 2048
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_step_equals_convolution(ar_small, ar_reference, dtype):
    model = copy.deepcopy(ar_small).to(dtype)
    tokens = ar_reference["input_mu"][:1, :STEPS].long()  # FSDD speech, leading silence token
    with torch.no_grad():
        conv = model(tokens)[0]  # (STEPS, 256)
        for mode in ("dense", "diagonal"):
            model.setup_rnn(mode)
            state = model.default_state(1)
            worst = 0.0
            for t in range(STEPS):
                logits, state = model.step(tokens[:, t], state)
                worst = max(worst, float((logits[0] - conv[t]).abs().max()))
            assert worst <= TOLERANCE[dtype], f"{mode}: max |logit difference| {worst:.3g}"


@pytest.mark.parametrize("mode", ["dense", "diagonal", "dplr"])
def test_s4_layer_step_modes_random_init(mode):
    """Freshly initialised (exact HiPPO) layers are the hardest case for diagonalisation."""
    from sashimi import S4

    layer = S4(8, d_state=64, l_max=512).double().eval()
    u = torch.randn(2, 400, 8, dtype=torch.float64)
    with torch.no_grad():
        y = layer(u)
        layer.setup_step(mode)
        state = layer.default_state(2)
        out = []
        for t in range(u.size(1)):
            o, state = layer.step(u[:, t], state)
            out.append(o)
    assert (torch.stack(out, 1) - y).abs().max() < 1e-9


def test_prefix_continuation_reproduces_state(ar_small, ar_reference):
    """The first logits after priming equal forward()'s logits at that position."""
    from sashimi import SILENCE_TOKEN

    prefix = ar_reference["input_mu"][:, 1:301].long()
    logits, _ = ar_small.prime(prefix)
    x = torch.nn.functional.pad(prefix, (1, 0), value=SILENCE_TOKEN)
    with torch.no_grad():
        conv = ar_small(x)[:, -1]
    assert (logits - conv).abs().max() <= 1e-4
