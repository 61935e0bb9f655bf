"""Issue 19, item 2: step mode follows the weights, dtype and device.

Item 2: the step coefficients were computed once by setup_rnn() and used however the weights changed
afterwards (teacher-forced step then differed from forward by 0.04-2.6 in the logits). They are now
a cache keyed on the parameters' storage and version, their device, the dtype and the mode: a new
state (default_state) recomputes them, and a state made before a change is refused.
"""
import copy

import pytest
import torch

from sashimi import S4, Sashimi
from sashimi.fastgen import teacher_forced_logits

STALE = "changed after this state was made"


def _step_all(module, xs, state):
    """Feed xs (B, T, ...) one step at a time; the outputs stacked along dim 1."""
    out = []
    with torch.no_grad():
        for t in range(xs.size(1)):
            y, state = module.step(xs[:, t], state)
            out.append(y)
    return torch.stack(out, 1)


def _perturb(module, scale=0.05):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def _adamw_step(model, tokens):
    """One optimizer step on the next-token loss, as training does."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    logits = model(tokens[:, :-1])
    torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens[:, 1:]).backward()
    opt.step()


# ---- the single S4 layer -------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["dense", "diagonal", "dplr"])
def test_item2_s4_layer_follows_a_weight_change(mode):
    layer = S4(8, d_state=16, l_max=128).double().eval()
    u = torch.randn(2, 100, 8, dtype=torch.float64)
    layer.setup_step(mode)
    _perturb(layer)
    with torch.no_grad():
        y = layer(u)
    assert (_step_all(layer, u, layer.default_state(2)) - y).abs().max() < 1e-9


def test_item2_s4_layer_refuses_a_state_made_before_a_change():
    layer = S4(8, d_state=16, l_max=128).eval()
    layer.setup_step("dplr")
    state = layer.default_state(2)
    _, state = layer.step(torch.randn(2, 8), state)
    _perturb(layer)
    with pytest.raises(RuntimeError, match=STALE):
        layer.step(torch.randn(2, 8), state)


def test_item2_s4_layer_follows_a_dtype_change():
    layer = S4(8, d_state=16, l_max=128).eval()
    layer.setup_step("dense")
    old = layer.default_state(1)
    layer.double()
    with pytest.raises(RuntimeError, match=STALE):  # not "expected scalar type Float but found Double"
        layer.step(torch.randn(1, 8, dtype=torch.float64), old)
    state = layer.default_state(1)
    assert state.dtype == torch.float64
    u = torch.randn(1, 60, 8, dtype=torch.float64)
    with torch.no_grad():
        y = layer(u)
    assert (_step_all(layer, u, state) - y).abs().max() < 1e-9  # float64 accuracy: recomputed in float64


def test_item2_s4_layer_refuses_a_state_after_a_device_move():
    layer = S4(8, d_state=16, l_max=128).eval()
    layer.setup_step("dplr")
    state = layer.default_state(1)
    layer.to("meta")
    with pytest.raises(RuntimeError, match=STALE):
        layer.step(torch.randn(1, 8, device="meta"), state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_item2_s4_layer_follows_a_move_to_cuda():
    layer = S4(8, d_state=16, l_max=128).double().eval()
    layer.setup_step("dplr")
    layer.cuda()
    u = torch.randn(1, 60, 8, dtype=torch.float64, device="cuda")
    with torch.no_grad():
        y = layer(u)
    assert (_step_all(layer, u, layer.default_state(1)) - y).abs().max() < 1e-9


def test_item2_setup_is_free_while_nothing_changed():
    layer = S4(8, d_state=16, l_max=128).eval()
    layer.setup_step("dense")
    coefficients = layer._step
    layer.setup_step("dense")
    layer.default_state(1)
    assert layer._step is coefficients
    layer.setup_step("dplr")  # another mode is another cache entry
    assert layer._step is not coefficients and layer.step_mode == "dplr"


# ---- the backbone and the AR model ---------------------------------------------------------------
def test_item2_backbone_follows_an_optimizer_step():
    torch.manual_seed(1)
    net = Sashimi(d_model=8, n_layers=1, pool=(2, 2), d_state=16, l_max=64).double().eval()
    x = torch.randn(2, 64, 8, dtype=torch.float64)
    net.setup_rnn("dense")
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    net(x).square().mean().backward()
    opt.step()
    with torch.no_grad():
        y = net(x)
    assert (_step_all(net, x, net.default_state(2)) - y).abs().max() < 1e-9


def test_item2_ar_model_follows_an_optimizer_step_and_load_state_dict(ar_small, ar_reference):
    model = copy.deepcopy(ar_small)
    tokens = ar_reference["input_mu"][:1, :257].long()
    model.setup_rnn()
    _adamw_step(model, tokens)
    with torch.no_grad():
        conv = model(tokens)
    assert (_step_all(model, tokens, model.default_state(1)) - conv).abs().max() < 1e-3
    other = copy.deepcopy(ar_small)
    other.setup_rnn()
    other.load_state_dict(model.state_dict())
    assert (_step_all(other, tokens, other.default_state(1)) - conv).abs().max() < 1e-3
    # prime() sets up step mode itself
    logits, _ = other.prime(tokens[:, 1:])
    assert (logits - conv[:, -1]).abs().max() < 1e-3


def test_item2_ar_model_follows_a_dtype_change(ar_small, ar_reference):
    model = copy.deepcopy(ar_small)
    tokens = ar_reference["input_mu"][:1, :200].long()
    model.setup_rnn("dense")
    model.double()
    with torch.no_grad():
        conv = model(tokens)
    got = _step_all(model, tokens, model.default_state(1))
    assert got.dtype == torch.float64 and (got - conv).abs().max() < 1e-8


@pytest.mark.parametrize("kind", ["cpp", "torch"])
def test_item2_fast_engines_follow_an_optimizer_step_and_a_dtype_change(ar_small, ar_reference, kind):
    model = copy.deepcopy(ar_small)
    tokens = ar_reference["input_mu"][:1, :257].long()
    teacher_forced_logits(model, tokens, kind=kind)  # builds and caches the engine
    _adamw_step(model, tokens)
    with torch.no_grad():
        conv = model(tokens)
    assert (teacher_forced_logits(model, tokens, kind=kind) - conv).abs().max() < 1e-3
    if kind == "torch":  # the C++ engine is float32 only
        model.double()
        with torch.no_grad():
            conv = model(tokens)
        got = teacher_forced_logits(model, tokens, kind=kind)
        assert got.dtype == torch.float64 and (got - conv).abs().max() < 1e-8
