"""Issue 19, item 3: vocabularies other than 256 levels.

Item 3: the silence token was the constant 128 (256 levels) in nll, prime, eager and fast generation
and the CLI's NLL, while training fed mulaw_encode(0, mu_levels): a 64-level model failed on a token
128 nobody passed (training too, at its first validation with TensorBoard: it samples audio there);
with 512 levels the results were silently wrong (128 is not silence there).
"""
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from conftest import dense_logits, run_cli, write_sawtooth_wavs
from sashimi import ARConfig, SILENCE_TOKEN, SashimiAR, load_model, mulaw_encode, silence_token
from sashimi.train.checkpoint import list_checkpoints


@pytest.mark.parametrize("levels", [2, 3, 64, 255, 256, 512, 1000])
def test_item3_silence_token_is_the_mu_law_of_zero(levels):
    assert silence_token(levels) == int(mulaw_encode(torch.zeros(1), levels)[0])
    assert silence_token() == SILENCE_TOKEN == 128


@pytest.mark.parametrize("levels", [1, 0, 2.0, True])
def test_item3_silence_token_refuses_a_bad_vocabulary(levels):
    with pytest.raises(ValueError, match="levels must be an integer >= 2"):
        silence_token(levels)
    with pytest.raises(ValueError, match="mu_levels"):
        ARConfig(mu_levels=levels)


class _FakeSummaryWriter:
    """Stands in for TensorBoard's SummaryWriter, so that training logs (and samples) audio."""
    audio: list = []

    def __init__(self, log_dir):
        pass

    def add_audio(self, tag, wav, step, sample_rate):
        _FakeSummaryWriter.audio.append((tag, tuple(wav.shape), sample_rate))

    def add_text(self, *a, **k):
        pass

    def add_scalar(self, *a, **k):
        pass

    def flush(self):
        pass

    def close(self):
        pass


@pytest.fixture(scope="module")
def model64(tmp_path_factory):
    """A 64-level model trained by the command line (as train.py runs it) for 2 steps, with a
    validation that samples audio for TensorBoard; the path of its checkpoint."""
    root = tmp_path_factory.mktemp("vocab64")
    (root / "wavs").mkdir()
    wavs = write_sawtooth_wavs(root / "wavs", [300 + 50 * i for i in range(4)])
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = _FakeSummaryWriter
    saved = sys.modules.get("torch.utils.tensorboard")
    sys.modules["torch.utils.tensorboard"] = fake
    _FakeSummaryWriter.audio = []
    try:
        from sashimi.__main__ import main

        code = main(["train", f"train_csv={wavs}", f"valid_csv={wavs}", f"checkpoint_path={root / 'run'}",
                     "model_cfg.mu_levels=64", "model_cfg.d_model=8", "model_cfg.n_layers=1", "model_cfg.l_max=256",
                     "seq_len=256", "sample_rate=8000", "num_workers=0", "progress=false", "batch_size=2",
                     "max_steps=2", "validation_interval=1", "checkpoint_interval=2", "audio_samples=1",
                     "audio_sample_len=64"])
    finally:
        if saved is None:
            sys.modules.pop("torch.utils.tensorboard", None)
        else:
            sys.modules["torch.utils.tensorboard"] = saved
    assert code == 0
    assert _FakeSummaryWriter.audio and _FakeSummaryWriter.audio[0][1] == (1, 64)  # it sampled at validation
    (_, path), = list_checkpoints(str(root / "run"))
    return path, wavs


def test_item3_a_64_level_model_trains_scores_and_generates(model64):
    path, _ = model64
    model = load_model(path)
    assert model.config.mu_levels == 64 and silence_token(64) == 32
    wav = torch.linspace(-0.5, 0.5, 300)
    nats = model.nll(wav)
    targets = mulaw_encode(wav[None], 64)
    with torch.no_grad():  # nll's inputs start from silence: token 32 of 64
        logits = model(F.pad(targets[:, :-1], (1, 0), value=32))
    expected = F.cross_entropy(logits.transpose(1, 2), targets).item()
    assert nats.item() == pytest.approx(expected, rel=1e-5)
    logits, _ = model.prime(targets[:, :50])  # prime starts from silence too
    assert (logits - model(F.pad(targets[:, :50], (1, 0), value=32))[:, -1]).abs().max() < 1e-4
    for engine in ("eager", "fast"):
        out = model.unconditional_generate(2, length=100, progress=False, seed=0, engine=engine)
        assert out.shape == (2, 100) and out.abs().max() <= 1
        chunks = list(model.stream(2, 100, 30, seed=0, engine=engine))
        assert torch.equal(mulaw_encode(torch.cat(chunks, 1), 64), mulaw_encode(out, 64))
        cont = model.generate(out[:, :40], 100, progress=False, seed=1, engine=engine)
        assert cont.shape == (2, 100)


def test_item3_the_cli_on_a_64_level_model(model64, tmp_path, capsys):
    path, wavs = model64
    from sashimi.data.audio import read_audio, write_wav

    write_wav(tmp_path / "long.wav", 0.3 * torch.sin(torch.arange(600) / 5.0), 8000)  # > l_max: the fast engine
    code, out, err = run_cli(capsys, "nll", f"{wavs}/0.wav", str(tmp_path / "long.wav"), "--model", path)
    assert code == 0, err
    bits = [float(line.split()[0]) for line in out.strip().splitlines()[:2]]
    # the long file (the fast engine's path) against the reference step loop fed silence (32) first
    model = load_model(path)
    targets = mulaw_encode(read_audio(tmp_path / "long.wav")[0][None], 64)
    logits = dense_logits(model, F.pad(targets[:, :-1], (1, 0), value=32))
    expected = F.cross_entropy(logits[0], targets[0]).item() / math.log(2)
    assert bits[1] == pytest.approx(expected, abs=1e-3) and math.isfinite(bits[0]), out
    code, _, err = run_cli(capsys, "generate", "--model", path, "--n", "2", "--seconds", "0.01", "--out",
                           str(tmp_path / "o"), "-q")
    assert code == 0 and len(list((tmp_path / "o").iterdir())) == 2, err
    code, _, err = run_cli(capsys, "generate", "--model", path, "--seconds", "0.01", "--stream",
                           str(tmp_path / "s.wav"), "-q")
    assert code == 0, err


def test_item3_a_512_level_model_starts_from_its_own_silence():
    """With 512 levels nothing failed, but 128 is not silence there: the results were wrong."""
    torch.manual_seed(0)
    model = SashimiAR(ARConfig(mu_levels=512, d_model=8, n_layers=1, pool=[2, 2], d_state=16, l_max=64)).eval()
    tokens = torch.randint(0, 512, (1, 30))
    with torch.no_grad():
        expected = model(F.pad(tokens, (1, 0), value=256))[:, -1]
    assert (model.prime(tokens)[0] - expected).abs().max() < 1e-4
    wav = torch.zeros(1, 20)  # silence: every input token is 256
    with torch.no_grad():
        logits = model(torch.full((1, 20), 256))
    assert model.nll(wav).item() == pytest.approx(F.cross_entropy(logits[0], torch.full((20,), 256)).item(), rel=1e-5)
    from sashimi.fastgen import teacher_forced_logits

    fed = torch.cat([torch.full((1, 1), 256), tokens], 1)
    with torch.no_grad():
        assert (teacher_forced_logits(model, fed) - model(fed)).abs().max() < 1e-4
