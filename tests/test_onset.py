"""Words that start at once (utterance_onset): the quiet lead-in of each recording is cut, so a model
trained on them needs no rare event to begin speaking, and truncated sampling does not stay silent."""
import os

import pytest
import torch

from conftest import FIXTURES
from sashimi.data.datasets import UtteranceDataset, trim_lead_in


def test_trim_lead_in_keeps_the_margin_before_the_onset():
    wav = torch.cat([torch.full((100,), 0.001), torch.full((50,), 0.5), torch.zeros(20)])
    out = trim_lead_in(wav, 0.1, margin=10)
    assert out.numel() == 80 and torch.equal(out[:10], torch.full((10,), 0.001)) and out[10] == 0.5
    assert torch.equal(trim_lead_in(wav, 0.1), wav[100:])
    assert torch.equal(trim_lead_in(torch.zeros(30), 0.1, 5), torch.zeros(30))  # silence: as it is


def test_utterance_windows_with_onset_start_speaking_at_once(tmp_path):
    files = sorted(str(FIXTURES / "fsdd" / f) for f in os.listdir(FIXTURES / "fsdd") if f.endswith(".wav"))[:6]
    plain = UtteranceDataset(files, 8000, 8000, lead=1, max_start=0, random_place=False, probe=False)
    trimmed = UtteranceDataset(files, 8000, 8000, lead=1, max_start=0, onset=0.1, onset_margin=16,
                               random_place=False, probe=False)
    for i in range(len(files)):
        wav = trimmed[i][0]
        peak = float(wav.abs().max())
        first = int(torch.nonzero(wav.abs() >= 0.1 * peak)[0])
        assert first <= 1 + 16  # the lead, then at most the margin, then the onset
        first_plain = int(torch.nonzero(plain[i][0].abs() >= 0.1 * peak)[0])
        assert first_plain >= first
    assert any(int(torch.nonzero(trimmed[i][0].abs() >= 0.1 * trimmed[i][0].abs().max())[0]) == 17
               for i in range(len(files)))  # a file with a longer lead-in keeps exactly the margin


@pytest.mark.parametrize("key", ["utterance_onset", "utterance_peak"])
@pytest.mark.parametrize("value", [0, 1.5, float("nan")])
def test_bad_onset_and_peak_settings_are_refused(key, value):
    from sashimi.train import build_config
    from sashimi.train.config import ConfigError

    with pytest.raises(ConfigError, match=key):
        build_config(["train_csv=x.csv", f"{key}={value}"])


def test_utterance_windows_can_be_peak_normalised():
    files = sorted(str(FIXTURES / "fsdd" / f) for f in os.listdir(FIXTURES / "fsdd") if f.endswith(".wav"))[:4]
    data = UtteranceDataset(files, 8000, 8000, lead=1, peak=0.5, random_place=False, probe=False)
    for i in range(len(files)):
        assert abs(float(data[i][0].abs().max()) - 0.5) < 1e-6


def _bursts(folder, n=8, seed=0):
    """Synthetic "words": a quiet lead-in of 25-150 ms (as FSDD's trimmed recordings have), then
    a loud tone of 100 ms. Returns a CSV listing them."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    rows = ["path"]
    for i in range(n):
        lead = rng.normal(0, 2e-4, int(rng.integers(200, 1200)))
        t = np.arange(800) / 8000
        tone = 0.5 * np.sin(2 * np.pi * (200 + 40 * i) * t) * np.hanning(800) ** 0.25
        path = folder / f"{i}_burst_{i}.wav"
        sf.write(str(path), np.concatenate([lead, tone]).astype(np.float32), 8000)
        rows.append(str(path))
    csv = folder / "files.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def _silent_under_nucleus(tmp_path, name, *layout):
    import sashimi
    from sashimi.train import build_config, train

    csv = _bursts(tmp_path)
    torch.manual_seed(0)
    cfg = build_config([f"train_csv={csv}", f"checkpoint_path={tmp_path / name}", "model=ar",
                        "model_cfg.d_model=16", "model_cfg.n_layers=1", "model_cfg.pool=[4]", "model_cfg.l_max=2048",
                        "model_cfg.sample_rate=8000", "sample_rate=8000", "seq_len=2048", "batch_size=4",
                        "utterance_window=true", *layout, "max_steps=80", "start_lr=0.004", "num_workers=0",
                        "progress=false", "tensorboard=false", "stdout_interval=1000", "validation_interval=0",
                        "checkpoint_interval=80", "seed=1"])
    train(cfg)
    model = sashimi.load_model(tmp_path / name / "ckpt_00000080.pt")
    wavs = model.unconditional_generate(16, length=1200, nucleus_p=0.9, seed=0, progress=False)
    return int((wavs.pow(2).mean(-1).sqrt() < 1e-3).sum())


def test_a_model_trained_with_onset_starts_speaking_under_nucleus_sampling(tmp_path):
    """Trained on words that start at once, a small model begins one under nucleus 0.9 in (nearly)
    every sample; trained on the same words with their quiet lead-ins, it stays silent."""
    assert _silent_under_nucleus(tmp_path, "onset", "utterance_max_start_ms=0", "utterance_onset=0.1") <= 1
    assert _silent_under_nucleus(tmp_path, "lead_in", "utterance_max_start_ms=0") >= 8


def test_generate_says_when_samples_stay_silent(tmp_path, capsys):
    import sashimi
    from conftest import run_cli
    from sashimi import ARConfig, SashimiAR

    model = SashimiAR(ARConfig(d_model=8, n_layers=1, pool=[4], l_max=256, sample_rate=8000)).eval()
    with torch.no_grad():  # a model that always says silence
        model.head.weight.zero_()
        model.head.bias.fill_(-30.0)
        model.head.bias[sashimi.SILENCE_TOKEN] = 30.0
    sashimi.save_model(model, tmp_path / "quiet.pt")
    code, out, err = run_cli(capsys, "generate", "--model", str(tmp_path / "quiet.pt"), "--n", "3", "--seconds", "0.01",
                             "--nucleus-p", "0.9", "--out", str(tmp_path / "a"), "-q")
    assert code == 0 and "3 of 3 sample(s) stayed silent" in err and "--nucleus-p 1" in err
    assert len(os.listdir(tmp_path / "a")) == 3  # written all the same
    code, out, err = run_cli(capsys, "generate", "--model", str(tmp_path / "quiet.pt"), "--n", "2", "--seconds", "0.01",
                             "--out", str(tmp_path / "b"), "-q")
    assert code == 0 and "2 of 2 sample(s) stayed silent" in err and "--seed" in err


def test_no_note_for_audible_samples():
    from sashimi.cli.generate import silent_note

    assert silent_note(0.1 * torch.ones(4, 100)) is None
    assert "1 of 2" in silent_note(torch.stack([torch.zeros(100), 0.1 * torch.ones(100)]))
