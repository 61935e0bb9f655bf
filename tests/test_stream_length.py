"""Issue 19, item 4: ``stream(N)`` produced 16,000 samples whatever the model's sample rate (2 s at
the bundled model's 8 kHz), in chunks of 1,600 (0.1 s at 16 kHz); it now defaults to one second at
the model's rate, like ``unconditional_generate``, in chunks of 0.1 s at that rate."""
import pytest
import torch

from sashimi import ARConfig, SashimiAR, mulaw_encode


@pytest.mark.parametrize("engine", ["eager", "fast"])
def test_item4_stream_defaults_to_one_second_at_the_model_s_rate(engine):
    torch.manual_seed(0)
    model = SashimiAR(ARConfig(d_model=8, n_layers=1, pool=[2, 2], d_state=16, l_max=64, sample_rate=300)).eval()
    chunks = list(model.stream(1, seed=0, engine=engine))
    assert [c.size(1) for c in chunks] == [30] * 10  # and chunks of 0.1 s at that rate (not 1,600 samples)
    whole = model.unconditional_generate(1, progress=False, seed=0, engine=engine)
    assert torch.equal(mulaw_encode(torch.cat(chunks, 1)), mulaw_encode(whole))
    endless = model.stream(1, None, 100, seed=0, engine=engine)  # None still means no end
    assert sum(next(endless).size(1) for _ in range(5)) == 500
