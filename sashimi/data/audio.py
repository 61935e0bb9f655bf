"""Audio files: read (float32 mono), resample, write 16-bit WAV.

Reading uses ``soundfile`` when it is installed (WAV, FLAC, OGG, ...) and falls back to
``scipy.io.wavfile`` (WAV only). Nothing is ever silently misread: a multi-channel file is
refused unless ``mono=True`` asks for a down-mix, and a file at another sample rate is either
resampled (``scipy.signal.resample_poly``) or refused, as the caller chooses.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch

from ..errors import AudioError, OutputError

__all__ = ["AudioError", "read_audio", "resample", "write_wav", "audio_info", "AUDIO_EXTENSIONS"]

#: File extensions treated as audio when a directory is scanned.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif")


def _soundfile():
    try:
        import soundfile

        return soundfile
    except (ImportError, OSError):  # OSError: the libsndfile shared library is missing
        return None


def audio_info(path: str | os.PathLike) -> tuple[int, int, int]:
    """Read a file's header only.

    Args:
        path: an audio file.

    Returns:
        (sample_rate, channels, frames).

    Raises:
        FileNotFoundError: no such file.
        AudioError: not a readable audio file.
    """
    path = _check_exists(path)
    sf = _soundfile()
    if sf is not None:
        try:
            info = sf.info(path)
        except Exception as e:
            raise AudioError(f"{path}: not a readable audio file ({_first_line(e)})") from e
        return int(info.samplerate), int(info.channels), int(info.frames)
    rate, data = _read_scipy(path, mmap=True)
    return rate, (1 if data.ndim == 1 else data.shape[1]), data.shape[0]


def read_audio(path: str | os.PathLike, sample_rate: int | None = None, *, mono: bool = False,
               resample_ok: bool = True, refuse_clipping: bool = False) -> tuple[torch.Tensor, int]:
    """Read an audio file as a float32 mono waveform in [-1, 1].

    Args:
        path: the file.
        sample_rate: the rate wanted (None: keep the file's rate).
        mono: average the channels of a multi-channel file (else such a file is refused).
        resample_ok: resample a file at another rate (else it is refused).
        refuse_clipping: refuse a file whose samples leave [-1, 1] (possible in floating-point
            files) instead of clipping them, as the models' methods refuse such audio. Only the
            file's own samples count: the small overshoot resampling can add is clipped.

    Returns:
        waveform: float32 (L,), values clipped to [-1, 1].
        rate: its sample rate (``sample_rate`` when given).

    Raises:
        FileNotFoundError: no such file.
        AudioError: unreadable, not audio, empty, multi-channel without ``mono``, or at another
            rate without ``resample_ok``, or out of range with ``refuse_clipping``. The message
            names the file.
    """
    path = _check_exists(path)
    sf = _soundfile()
    if sf is not None:
        try:
            data, rate = sf.read(path, dtype="float32", always_2d=True)  # (L, C)
        except Exception as e:
            raise AudioError(f"{path}: not a readable audio file ({_first_line(e)})") from e
    else:
        rate, raw = _read_scipy(path)
        data = _int_to_float(raw, path)
        if data.ndim == 1:
            data = data[:, None]
    channels = data.shape[1]
    if channels != 1:
        if not mono:
            raise AudioError(f"{path}: has {channels} channels; only mono audio is accepted "
                             "(ask for a down-mix: mono=True, or downmix=true when training)")
        data = data.mean(axis=1, keepdims=True)
    wav = np.ascontiguousarray(data[:, 0], dtype=np.float32)
    if wav.size == 0:
        raise AudioError(f"{path}: contains no samples")
    if not np.isfinite(wav).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    peak = float(np.abs(wav).max())
    if refuse_clipping and peak > 1.0:
        raise AudioError(f"{path}: samples reach {peak:.4g}, outside [-1, 1] (a floating-point file); normalise it "
                         "first rather than have it clipped")
    if sample_rate is not None and int(rate) != int(sample_rate):
        if not resample_ok:
            raise AudioError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz")
        wav = resample(wav, int(rate), int(sample_rate))
        rate = int(sample_rate)
    return torch.from_numpy(np.clip(wav, -1.0, 1.0)), int(rate)


def resample(wav: np.ndarray | torch.Tensor, orig_rate: int, new_rate: int) -> np.ndarray | torch.Tensor:
    """Polyphase resampling (``scipy.signal.resample_poly``) along the last axis.

    Args:
        wav: (..., L) float array or tensor.
        orig_rate, new_rate: positive sample rates in Hz.

    Returns:
        (..., ceil(L * new_rate / orig_rate)) float32, the same kind (numpy / torch) as ``wav``.
    """
    for name, r in (("orig_rate", orig_rate), ("new_rate", new_rate)):
        if not isinstance(r, (int, np.integer)) or isinstance(r, bool) or r < 1:
            raise ValueError(f"resample: {name} must be a positive integer, got {r!r}")
    is_torch = torch.is_tensor(wav)
    x = wav.detach().cpu().numpy() if is_torch else np.asarray(wav)
    if orig_rate != new_rate:
        from scipy.signal import resample_poly

        g = math.gcd(int(orig_rate), int(new_rate))
        x = resample_poly(x, int(new_rate) // g, int(orig_rate) // g, axis=-1)
    x = np.ascontiguousarray(x, dtype=np.float32)
    return torch.from_numpy(x) if is_torch else x


def write_wav(path: str | os.PathLike, wav: torch.Tensor | np.ndarray, sample_rate: int) -> None:
    """Write a mono 16-bit PCM WAV file (values clipped to [-1, 1]).

    Args:
        path: destination (parent directories must exist).
        wav: float (L,) or (1, L) waveform in [-1, 1].
        sample_rate: positive rate in Hz.
    """
    x = wav.detach().cpu().float().numpy() if torch.is_tensor(wav) else np.asarray(wav, dtype=np.float32)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"write_wav: expected a non-empty mono waveform (L,), got shape {tuple(x.shape)}")
    if not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool) or sample_rate < 1:
        raise ValueError(f"write_wav: sample_rate must be a positive integer, got {sample_rate!r}")
    pcm = np.round(np.clip(np.nan_to_num(x), -1.0, 1.0) * 32767.0).astype(np.int16)
    path = os.fspath(path)
    sf = _soundfile()
    if sf is not None:
        try:
            sf.write(path, pcm, int(sample_rate), subtype="PCM_16", format="WAV")
        except RuntimeError as e:  # soundfile's LibsndfileError: a full disk, a file size limit, an I/O error
            why = str(e).strip() or type(e).__name__
            raise OutputError(f"{path}: cannot write the WAV file (libsndfile: {why}; is the disk full, or a file "
                              "size limit reached?)") from e
    else:
        from scipy.io import wavfile

        wavfile.write(path, int(sample_rate), pcm)


# ---- helpers ------------------------------------------------------------------------------
def _check_exists(path) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"audio file not found: {path}")
    return path


def _read_scipy(path: str, mmap: bool = False):
    import warnings

    from scipy.io import wavfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", wavfile.WavFileWarning)
            return wavfile.read(path, mmap=mmap)
    except Exception as e:
        raise AudioError(f"{path}: not a readable WAV file ({_first_line(e)}); "
                         "install soundfile to read other formats") from e


def _int_to_float(data: np.ndarray, path: str) -> np.ndarray:
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(data.dtype, np.integer):
        return data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
    if np.issubdtype(data.dtype, np.floating):
        return data.astype(np.float32)
    raise AudioError(f"{path}: unsupported sample type {data.dtype}")


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
