"""The public API: the README's sampling loop records no graph; clear errors for bad arguments."""
import os
import re

import pytest
import torch

from sashimi import ARConfig, SashimiAR, mulaw_decode

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


@pytest.fixture(scope="module")
def tiny():
    return SashimiAR(ARConfig(d_model=8, n_layers=1, l_max=256)).eval()


def _tensors(obj):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)


# ---- 6. the README's custom sampling loop, as written -------------------------------------------------
def test_readme_sampling_loop_records_no_autograd_graph(tiny):
    """Copied literally, the loop grew by ~1.4 MB a step (an autograd graph through the state);
    its step outputs must not require grad although the parameters do. Only its length is cut."""
    blocks = re.findall(r"```python\n(.*?)```", open(README, encoding="utf-8").read(), re.S)
    loop = next(b for b in blocks if "model.step(token, state)" in b)
    assert "range(16000)" in loop
    assert all(p.requires_grad for p in tiny.parameters()) and torch.is_grad_enabled()
    scope = {"torch": torch, "model": tiny, "mulaw_decode": mulaw_decode}
    exec(loop.replace("range(16000)", "range(30)"), scope)
    assert scope["wav"].shape == (4, 30)
    assert scope["logits"].grad_fn is None and not scope["logits"].requires_grad
    assert not any(t.requires_grad for t in _tensors(scope["state"]))
