"""sashimi.data.audio: WAV read/write, resampling, and clear refusals of audio it cannot use as is."""
import numpy as np
import pytest
import soundfile as sf
import torch

from sashimi.data import audio
from sashimi.data.audio import AudioError, read_audio, resample, write_wav


def _tone(n=800, rate=8000, freq=440.0, amp=0.5):
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)


def test_write_read_roundtrip_16bit(tmp_path):
    path = tmp_path / "a.wav"
    x = _tone()
    write_wav(path, torch.from_numpy(x), 8000)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (8000, 1, "PCM_16", 800)
    y, rate = read_audio(path)
    assert rate == 8000 and y.dtype == torch.float32 and y.shape == (800,)
    assert float((y - torch.from_numpy(x)).abs().max()) < 1.5 / 32767


def test_write_clips_and_validates(tmp_path):
    write_wav(tmp_path / "loud.wav", np.array([2.0, -2.0, 0.0]), 16000)
    y, _ = read_audio(tmp_path / "loud.wav")
    assert float(y.abs().max()) <= 1.0
    with pytest.raises(ValueError, match="mono"):
        write_wav(tmp_path / "st.wav", np.zeros((2, 10)), 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        write_wav(tmp_path / "r.wav", np.zeros(10), 0)


def test_wrong_rate_is_resampled_or_refused(tmp_path):
    path = tmp_path / "eight_k.wav"
    write_wav(path, _tone(800), 8000)
    y, rate = read_audio(path, 16000)
    assert rate == 16000 and y.shape == (1600,)
    # the tone survives: its spectrum peaks at 440 Hz after resampling
    spec = np.abs(np.fft.rfft(y.numpy()))
    assert abs(np.argmax(spec) * 16000 / 1600 - 440) <= 10
    with pytest.raises(AudioError, match=r"eight_k\.wav.*8000 Hz, expected 16000"):
        read_audio(path, 16000, resample_ok=False)


def test_stereo_refused_unless_downmixed(tmp_path):
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([_tone(), -_tone()], 1) * 0 + np.stack([_tone(), _tone()], 1), 8000)
    with pytest.raises(AudioError, match=r"stereo\.wav.*2 channels"):
        read_audio(path)
    y, _ = read_audio(path, mono=True)
    assert y.shape == (800,)


def test_missing_empty_and_non_audio_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.wav"):
        read_audio(tmp_path / "nothere.wav")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    with pytest.raises(AudioError, match="notes.wav"):
        read_audio(text)
    with pytest.raises(AudioError, match="notes.wav"):
        audio.audio_info(text)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, dtype=np.float32), 8000, subtype="PCM_16")
    with pytest.raises(AudioError, match="empty.wav.*no samples"):
        read_audio(empty)


def test_scipy_fallback(tmp_path, monkeypatch):
    path = tmp_path / "a.wav"
    write_wav(path, _tone(), 8000)
    sf.write(str(tmp_path / "st.wav"), np.stack([_tone(), _tone()], 1), 8000, subtype="PCM_16")
    expected, _ = read_audio(path)
    monkeypatch.setattr(audio, "_soundfile", lambda: None)
    y, rate = read_audio(path)
    assert rate == 8000 and torch.equal(y, expected)
    assert audio.audio_info(path) == (8000, 1, 800)
    with pytest.raises(AudioError, match="2 channels"):
        read_audio(tmp_path / "st.wav")
    write_wav(tmp_path / "b.wav", _tone(), 8000)  # scipy writer
    assert sf.info(str(tmp_path / "b.wav")).subtype == "PCM_16"
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00")
    with pytest.raises(AudioError, match="bad.wav"):
        read_audio(tmp_path / "bad.wav")


def test_resample_numpy_and_torch():
    x = _tone(1000)
    assert resample(x, 8000, 16000).shape == (2000,)
    t = resample(torch.from_numpy(x), 16000, 8000)
    assert torch.is_tensor(t) and t.shape == (500,)
    assert resample(x, 8000, 8000).shape == (1000,)
    with pytest.raises(ValueError, match="orig_rate"):
        resample(x, 0, 8000)
