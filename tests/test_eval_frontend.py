"""sashimi.eval.frontend: the classifiers' 1x32x32 log-mel image, against its formula and librosa."""
import math

import numpy as np
import pytest
import torch

from sashimi.eval.frontend import hz_to_mel, log_mel, mel_filterbank, mel_to_hz, power_to_db


def tone(freq, rate=16000, n=16000, amp=0.5, noise=0.0, seed=0):
    t = np.arange(n) / rate
    x = amp * np.sin(2 * np.pi * freq * t) + noise * np.random.default_rng(seed).normal(size=n)
    return torch.from_numpy(x[None]).float()


def reference_log_mel(x: np.ndarray, rate=16000):
    """The documented recipe in plain numpy: reflect-padded frames, Hann window, |rfft|^2, mel, dB."""
    n_fft, hop = 2048, 512
    padded = np.pad(x, n_fft // 2, mode="reflect")
    frames = np.stack([padded[i * hop:i * hop + n_fft] for i in range(1 + len(x) // hop)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (frames, 1025)
    mel = mel_filterbank(rate).numpy() @ power.T  # (32, frames)
    db = 10 * np.log10(np.maximum(mel, 1e-10))
    return np.maximum(db - db.max(), -80.0)


def test_mel_scale_and_filterbank_formula():
    assert hz_to_mel(1000.0) == pytest.approx(15.0)
    assert hz_to_mel(6400.0) == pytest.approx(15.0 + 27.0)  # log part: 27 mels per factor 6.4
    assert hz_to_mel(500.0) == pytest.approx(7.5)  # linear part: 200/3 Hz per mel
    f = np.array([0.0, 300.0, 999.0, 1000.0, 4321.0, 8000.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f)), f, rtol=1e-12, atol=1e-9)
    fb = mel_filterbank()
    assert fb.shape == (32, 1025) and fb.dtype == torch.float64 and float(fb.min()) >= 0
    # Slaney normalisation: each triangle, integrated over Hz, has area 1
    edges = mel_to_hz(np.linspace(0, hz_to_mel(8000.0), 34))
    bin_hz = 8000.0 / 1024
    areas = fb.sum(1).numpy() * bin_hz
    wide = (edges[2:] - edges[:-2]) > 20 * bin_hz  # narrow low bands are too coarsely sampled by the bins
    np.testing.assert_allclose(areas[wide], 1.0, rtol=0.05)


def test_shape_range_and_formula():
    x = tone(700.0, noise=0.01)
    img = log_mel(x, 16000)
    assert img.shape == (1, 1, 32, 32) and img.dtype == torch.float32
    assert float(img.max()) == 0.0 and float(img.min()) >= -80.0
    np.testing.assert_allclose(img[0, 0].numpy(), reference_log_mel(x[0].double().numpy()), atol=1e-3)
    batch = torch.cat([x, tone(2000.0, noise=0.01), torch.zeros(1, 16000)])
    imgs = log_mel(batch, 16000)
    assert imgs.shape == (3, 1, 32, 32)
    torch.testing.assert_close(imgs[0], img[0])  # each item is scaled to its own maximum
    assert float(imgs[2].abs().max()) == 0.0  # silence: all 0 dB, no NaN


def test_db_relative_to_max_ignores_gain():
    x = tone(440.0, noise=0.02)
    torch.testing.assert_close(log_mel(x * 0.05, 16000), log_mel(x, 16000), atol=1e-3, rtol=0)
    p = torch.tensor([[1.0, 1e-3, 1e-12]], dtype=torch.float64)
    torch.testing.assert_close(power_to_db(p), torch.tensor([[0.0, -30.0, -80.0]], dtype=torch.float64))
    floor = torch.tensor(-100.0, dtype=torch.float64)  # amin = 1e-10
    torch.testing.assert_close(power_to_db(p, top_db=None)[0, 2], floor)


def test_pad_and_cut_to_one_second():
    long = tone(500.0, n=20000, noise=0.01)
    torch.testing.assert_close(log_mel(long, 16000), log_mel(long[:, :16000], 16000))
    short = tone(500.0, n=9000, noise=0.01)
    padded = torch.nn.functional.pad(short, (0, 7000))
    torch.testing.assert_close(log_mel(short, 16000), log_mel(padded, 16000))
    assert log_mel(tone(500.0, n=32000), 16000, seconds=2.0).shape == (1, 1, 32, 63)


def test_8khz_input_is_resampled():
    x8 = tone(1000.0, rate=8000, n=8000, noise=0.01)
    x16 = tone(1000.0, rate=16000, n=16000, noise=0.0)
    a, b = log_mel(x8, 8000)[0, 0], log_mel(x16, 16000)[0, 0]
    assert a.shape == (32, 32)
    band = int(np.argmin(np.abs(mel_to_hz(np.linspace(0, hz_to_mel(8000.0), 34))[1:-1] - 1000.0)))
    assert int(a.mean(1).argmax()) == int(b.mean(1).argmax()) == band  # the tone's band is the loudest
    # nothing above 4 kHz survives from 8 kHz audio: those bands sit at the -80 dB floor (away from
    # the first and last frames, where the tone's abrupt start and end are broadband clicks)
    top = mel_to_hz(np.linspace(0, hz_to_mel(8000.0), 34))[:32] > 4200
    assert float(a[torch.from_numpy(top), 2:-2].max()) == -80.0
    assert float(b[torch.from_numpy(top), 2:-2].max()) == -80.0
    torch.testing.assert_close(log_mel(x8.numpy(), 8000), log_mel(x8, 8000))  # numpy input too


def test_matches_librosa_when_installed():
    librosa = pytest.importorskip("librosa")
    x = (tone(300.0, noise=0.05)[0] * torch.linspace(0, 1, 16000)).numpy().astype(np.float64)
    for mode in ("reflect", "constant"):
        S = librosa.feature.melspectrogram(y=x, sr=16000, n_mels=32, pad_mode=mode)
        expected = librosa.power_to_db(S, ref=np.max)
        got = log_mel(torch.from_numpy(x[None]), 16000, pad_mode=mode)[0, 0].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-3)
    np.testing.assert_allclose(mel_filterbank().numpy(), librosa.filters.mel(sr=16000, n_fft=2048, n_mels=32,
                                                                             dtype=np.float64), atol=1e-12)


def test_bad_input_is_refused_naming_the_argument():
    x = tone(440.0)
    with pytest.raises(ValueError, match=r"wavs must have shape \(N, L\)"):
        log_mel(x[0], 16000)
    with pytest.raises(ValueError, match=r"wavs must have shape \(N, L\)"):
        log_mel(x[:, :0], 16000)
    y = x.clone()
    y[0, 5] = math.nan
    with pytest.raises(ValueError, match="wavs contains NaN"):
        log_mel(y, 16000)
    with pytest.raises(TypeError, match="wavs must hold floating-point"):
        log_mel((x * 1000).long(), 16000)
    with pytest.raises(TypeError, match="wavs must be"):
        log_mel([0.0, 1.0], 16000)
    with pytest.raises(ValueError, match="sample_rate must be positive"):
        log_mel(x, 0)
    with pytest.raises(TypeError, match="sample_rate must be an integer"):
        log_mel(x, 16000.0)
