"""Issue 19, item 7: step mode is deterministic and shape-correct whatever the train/eval mode.

A module in train mode with dropout stepped its FF blocks through forward(), whose dropout mask is
shaped for (B, L, H) sequences: (B, B, V) logits, and generation failed.
"""
import pytest
import torch

from sashimi import ARConfig, SashimiAR, fastgen
from test_step_cache import _step_all


def test_item7_step_ignores_dropout_in_train_mode():
    torch.manual_seed(0)
    model = SashimiAR(ARConfig(d_model=8, n_layers=1, pool=[2, 2], d_state=16, l_max=64, dropout=0.5)).train()
    tokens = torch.randint(0, 256, (3, 40))
    model.setup_rnn("dense")
    stepped = _step_all(model, tokens, model.default_state(3))
    assert stepped.shape == (3, 40, 256)  # not (3, 3, 256)
    model.eval()
    with torch.no_grad():
        conv = model(tokens)
    assert (stepped - conv).abs().max() < 1e-4  # step mode = eval-mode forward, whatever the module's mode
    assert torch.equal(stepped, _step_all(model.train(), tokens, model.default_state(3)))  # deterministic


@pytest.mark.parametrize("engine", ["eager", "fast", "auto"])
def test_item7_a_model_in_train_mode_with_dropout_generates(engine):
    torch.manual_seed(0)
    model = SashimiAR(ARConfig(d_model=8, n_layers=1, pool=[2, 2], d_state=16, l_max=64, dropout=0.5)).train()
    wav = model.unconditional_generate(2, length=50, progress=False, seed=0, engine=engine)
    assert wav.shape == (2, 50) and model.training
    model.eval()
    assert torch.equal(wav, model.unconditional_generate(2, length=50, progress=False, seed=0, engine=engine))
    assert fastgen.unsupported_reason(model.train()) is None
