"""The published-format AR checkpoint reproduces the reference implementation's outputs."""
import math

import pytest
import torch


@pytest.fixture(scope="module")
def reference_logits(ar_small, ar_reference):
    with torch.no_grad():
        return ar_small(ar_reference["input_mu"])


def test_logits_at_positions(reference_logits, ar_reference):
    got = reference_logits[:, ar_reference["positions"]]
    assert (got - ar_reference["logits_at_positions"]).abs().max() <= 1e-3


def test_target_log_probabilities(reference_logits, ar_reference):
    logp = torch.log_softmax(reference_logits, -1)
    got = logp.gather(-1, ar_reference["target_mu"].long().unsqueeze(-1)).squeeze(-1)
    assert (got - ar_reference["target_logprob"]).abs().mean() <= 1e-4


def test_nll_matches_reference(ar_small, ar_reference):
    from sashimi import mulaw_decode

    # nll() takes audio: the reference's targets are the mu-law tokens of that audio.
    wavs = mulaw_decode(ar_reference["target_mu"].long())
    nats = ar_small.nll(wavs)
    bits = nats / math.log(2)
    assert nats.shape == (2,)
    torch.testing.assert_close(bits, ar_reference["nll_bits_per_sample"], rtol=0, atol=1e-4)


def test_forward_accepts_uint8_and_any_length(ar_small, ar_reference):
    x = ar_reference["input_mu"][:, :1001]  # not a multiple of the pooling (16): padded inside
    with torch.no_grad():
        a = ar_small(x)
        b = ar_small(x[:, :1000].long())
    assert a.shape == (2, 1001, 256)
    torch.testing.assert_close(a[:, :1000], b, rtol=0, atol=1e-5)  # causal: the extra sample changes nothing before it


def test_stale_node_buffers_are_not_loaded(fixtures_dir, ar_small, ar_reference):
    """Corrupting the checkpoint's omega/z caches must not change anything (they are recomputed)."""
    from sashimi import load_model

    ckpt = torch.load(fixtures_dir / "rf5_ar_small.ckpt.pt", weights_only=True)
    for k in ckpt["model_state_dict"]:
        if k.endswith((".omega", ".z")):
            ckpt["model_state_dict"][k] = torch.randn_like(ckpt["model_state_dict"][k])
    model = load_model(ckpt)
    x = ar_reference["input_mu"][:, :256]
    with torch.no_grad():
        torch.testing.assert_close(model(x), ar_small(x), rtol=0, atol=0)
