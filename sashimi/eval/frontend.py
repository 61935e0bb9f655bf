"""The log-mel front end of the SC09 digit classifiers: 1 s of audio -> a 1x32x32 image in dB.

It computes what the SaShiMi authors' classifier was trained on (their ``sc09_classifier``,
from tugstugi/pytorch-speech-commands), which is ``librosa.feature.melspectrogram`` with its
defaults at 16 kHz followed by ``librosa.power_to_db(S, ref=np.max)``:

- audio at 16 kHz (other rates are resampled), cut or zero-padded at the end to 16000 samples;
- STFT: n_fft 2048, hop 512, periodic Hann window of 2048, centred frames with reflection
  padding (librosa <= 0.8.1, which the paper's numbers used; librosa 0.9 pads with zeros:
  ``pad_mode="constant"``), so 1 + 16000 // 512 = 32 frames;
- power spectrum |X|^2, 32 mel bands from 0 to 8 kHz on the Slaney mel scale with Slaney
  (area) normalisation (librosa's default ``htk=False, norm='slaney'``);
- 10 log10(max(S, 1e-10)) minus the same of the clip's maximum, floored 80 dB below it.

So the image is in [-80, 0] dB, 0 at the clip's loudest bin: the gain of a clip does not
matter. Everything is torch (float64 inside, float32 out); no librosa is needed.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

__all__ = ["SAMPLE_RATE", "N_FFT", "HOP", "N_MELS", "TOP_DB", "AMIN", "log_mel", "mel_spectrogram",
           "mel_filterbank", "power_to_db", "fix_length", "hz_to_mel", "mel_to_hz", "check_wavs"]

SAMPLE_RATE = 16000  # Hz: the rate the image is computed at
N_FFT = 2048
HOP = 512
N_MELS = 32
TOP_DB = 80.0  # dB: dynamic range kept below the clip's maximum
AMIN = 1e-10  # power floor before the log


# ---- the Slaney mel scale (Auditory Toolbox): linear below 1 kHz, logarithmic above --------
_F_SP = 200.0 / 3  # Hz per mel in the linear part
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15 mel
_LOG_STEP = math.log(6.4) / 27.0  # log-Hz per mel in the logarithmic part


def hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Frequencies in Hz -> Slaney mels (librosa's ``htk=False``)."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / _F_SP
    with np.errstate(divide="ignore", invalid="ignore"):
        log = _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(f >= _MIN_LOG_HZ, log, lin)


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    """Slaney mels -> Hz (inverse of :func:`hz_to_mel`)."""
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOG_STEP * (m - _MIN_LOG_MEL)), _F_SP * m)


@functools.lru_cache(maxsize=8)
def _filterbank_np(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    fft_hz = np.linspace(0.0, sample_rate / 2, 1 + n_fft // 2)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))  # band i spans edges i..i+2
    width = np.diff(edges)
    rising = (fft_hz[None, :] - edges[:-2, None]) / width[:-1, None]
    falling = (edges[2:, None] - fft_hz[None, :]) / width[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))  # triangles, peak 1 at the band centre
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # Slaney: every band has the same area
    weights.setflags(write=False)
    return weights


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = 0.0, fmax: float | None = None) -> torch.Tensor:
    """Triangular mel filters on the Slaney scale with Slaney area normalisation.

    Args:
        sample_rate: Hz.
        n_fft: FFT size (the filters act on its 1 + n_fft // 2 bins).
        n_mels: number of bands.
        fmin, fmax: band edges in Hz (fmax None: sample_rate / 2).

    Returns:
        float64 (n_mels, 1 + n_fft // 2).
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    return torch.from_numpy(_filterbank_np(int(sample_rate), int(n_fft), int(n_mels), float(fmin), float(fmax)).copy())


def check_wavs(wavs, sample_rate, name: str = "wavs") -> torch.Tensor:
    """Validate a batch of waveforms and return it as a float tensor on its device.

    Args:
        wavs: (N, L) float tensor or numpy array, N >= 1, L >= 1, finite.
        sample_rate: positive integer (Hz).

    Returns:
        the waveforms as a floating-point torch tensor (N, L).

    Raises:
        TypeError: not a float array or tensor, or a non-integer ``sample_rate``.
        ValueError: wrong shape, empty, NaN or inf, or ``sample_rate`` < 1.
    """
    if isinstance(wavs, np.ndarray):
        wavs = torch.from_numpy(wavs)
    if not torch.is_tensor(wavs):
        raise TypeError(f"{name} must be a float torch tensor or numpy array (N, L), got {type(wavs).__name__}")
    if not wavs.is_floating_point():
        raise TypeError(f"{name} must hold floating-point audio, got dtype {wavs.dtype}")
    if wavs.dim() != 2 or wavs.size(0) == 0 or wavs.size(1) == 0:
        raise ValueError(f"{name} must have shape (N, L) with N, L >= 1, got {tuple(wavs.shape)}")
    if not torch.isfinite(wavs).all():
        raise ValueError(f"{name} contains NaN or inf")
    if not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool):
        raise TypeError(f"sample_rate must be an integer (Hz), got {sample_rate!r}")
    if sample_rate < 1:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    return wavs


def fix_length(wavs: torch.Tensor, length: int) -> torch.Tensor:
    """Cut (N, L) waveforms at the end, or zero-pad them at the end, to (N, length)."""
    if wavs.size(-1) >= length:
        return wavs[..., :length]
    return torch.nn.functional.pad(wavs, (0, length - wavs.size(-1)))


def power_to_db(power: torch.Tensor, top_db: float | None = TOP_DB, amin: float = AMIN) -> torch.Tensor:
    """Power -> dB relative to each item's maximum, floored ``top_db`` below it.

    Args:
        power: (N, ...) non-negative.
        top_db: dynamic range kept (None: no floor).
        amin: power floor before the log.

    Returns:
        (N, ...) in [-top_db, 0]; 0 at each item's maximum (all 0 for a silent item).
    """
    db = 10.0 * torch.log10(power.clamp_min(amin))
    peak = db.flatten(1).amax(dim=1).view(-1, *([1] * (db.dim() - 1)))
    db = db - peak  # the same as referencing max(amin, max power): log10 is monotone
    return db if top_db is None else db.clamp_min(-float(top_db))


def mel_spectrogram(wavs: torch.Tensor, pad_mode: str = "reflect") -> torch.Tensor:
    """Mel power spectrogram of 16 kHz audio (librosa.feature.melspectrogram defaults).

    Args:
        wavs: (N, L) float at 16 kHz (L > 1024 for reflection padding).
        pad_mode: 'reflect' (librosa <= 0.8.1, the paper's) or 'constant' (librosa >= 0.9; both
            checked against librosa 0.8.1 and 0.9.2 outputs in tests/test_eval_sc09_resnext.py).

    Returns:
        float64 (N, 32, 1 + L // 512).
    """
    x = wavs.double()
    window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float64, device=x.device)
    spec = torch.stft(x, N_FFT, HOP, window=window, center=True, pad_mode=pad_mode, return_complex=True)
    power = torch.view_as_real(spec).square().sum(-1)  # |X|^2: (N, 1025, frames)
    return mel_filterbank().to(x.device) @ power


def log_mel(wavs, sample_rate: int, *, seconds: float = 1.0, pad_mode: str = "reflect") -> torch.Tensor:
    """The classifier's input image: resample to 16 kHz, fix to 1 s, log-mel in dB.

    Args:
        wavs: (N, L) float waveforms (tensor or numpy), any finite values.
        sample_rate: their rate in Hz (resampled to 16 kHz with :func:`sashimi.data.audio.resample`
            when different, e.g. 8 kHz FSDD audio or samples).
        seconds: duration the audio is cut or padded to (the classifiers use 1 s).
        pad_mode: STFT frame padding, see :func:`mel_spectrogram`.

    Returns:
        float32 (N, 1, 32, 32) for 1 s: mel bands x frames, in [-80, 0] dB, on ``wavs``' device.
    """
    wavs = check_wavs(wavs, sample_rate)
    if sample_rate != SAMPLE_RATE:
        from ..data.audio import resample

        wavs = resample(wavs.detach().cpu().float(), int(sample_rate), SAMPLE_RATE).to(wavs.device)
    wavs = fix_length(wavs, round(seconds * SAMPLE_RATE))
    return power_to_db(mel_spectrogram(wavs, pad_mode)).float().unsqueeze(1)
