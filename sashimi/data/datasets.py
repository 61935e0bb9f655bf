"""Training data: file lists, waveform datasets (crops, utterance windows), mu-law collation, resumable sampling.

A data source is a CSV file with a ``path`` column (the format ``split_data.py`` writes; relative
paths are taken from the working directory, else from the CSV's folder) or a directory, scanned
recursively for audio files (so an FSDD checkout or its ``recordings/`` folder works as is).

Every random choice is a pure function of (seed, epoch, position), never of a global RNG, so a
run resumed from a checkpoint sees exactly the batches the uninterrupted run would have seen:
:class:`ResumableSampler` shuffles with ``seed + epoch`` (via ``DistributedSampler``) and can
skip the batches already consumed; :class:`CropDataset` draws each crop offset, and
:class:`UtteranceDataset` each word's place in its window, from ``(seed, epoch, index)``.
"""
from __future__ import annotations

import csv
import math
import os
import re
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, DistributedSampler, Sampler

from ..errors import InputError
from .audio import AUDIO_EXTENSIONS, AudioError, audio_info, read_audio
from ..mulaw import quantize

__all__ = ["list_audio_files", "read_csv_paths", "file_labels", "class_names_of", "LABEL_SOURCES", "AudioFiles", "CropDataset", "UtteranceDataset", "decoded_bytes",
           "ResumableSampler", "ShardSampler", "ARCollate", "WaveCollate"]


# ---- file lists -------------------------------------------------------------------------------
def read_csv_paths(csv_path: str | os.PathLike) -> list[str]:
    """The ``path`` column of a CSV file (rows without a path are skipped).

    Raises:
        FileNotFoundError: no such CSV.
        InputError: no ``path`` column, or no rows (the message names the file); a ValueError.
    """
    csv_path = os.fspath(csv_path)
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"CSV file not found: {csv_path}")
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                raise InputError(f"{csv_path}: expected a CSV with a 'path' column, got columns {reader.fieldnames}")
            paths = [row["path"] for row in reader if row.get("path")]
    except (UnicodeDecodeError, csv.Error) as e:  # a binary file (a checkpoint, an archive) given as a CSV
        raise InputError(f"{csv_path}: not a CSV file (expected UTF-8 text with a 'path' column, or a directory "
                         f"of audio files; {type(e).__name__})") from None
    if not paths:
        raise InputError(f"{csv_path}: the CSV lists no files")
    base = os.path.dirname(os.path.abspath(csv_path))
    return [_resolve(p, base) for p in paths]


def _read_csv_column(csv_path: str, column: str) -> list[str]:
    """The ``column`` values of the rows that :func:`read_csv_paths` returns, in its order."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise ValueError(f"{csv_path}: no '{column}' column for the labels (columns: {reader.fieldnames}); "
                             "set label_column= to the column that holds them")
        values = [(row.get(column) or "").strip() for row in reader if row.get("path")]
    empty = [i for i, v in enumerate(values) if not v]
    if empty:
        raise ValueError(f"{csv_path}: {len(empty)} rows have an empty '{column}' label, e.g. data row {empty[0] + 1}")
    return values


# Free Spoken Digit Dataset file names: <digit>_<speaker>_<take>.wav
_FSDD_NAME = re.compile(r"^(\d)_[^_]+_\d+\.[A-Za-z0-9]+$")
LABEL_SOURCES = ("none", "fsdd", "folder", "csv")


def file_labels(source: str | os.PathLike, files: Sequence[str], how: str, column: str = "label") -> list[str] | None:
    """The class label of each file of a data source, as text.

    Args:
        source: the data source the files were listed from (a CSV file or a directory).
        files: its files, as :func:`list_audio_files` returned them.
        how: 'none' (no labels: returns None), 'fsdd' (the digit that starts an FSDD file name:
            ``7_theo_12.wav`` is '7'), 'folder' (the parent folder's name, the Speech Commands
            layout ``seven/xxx.wav``) or 'csv' (a column of the CSV source).
        column: the CSV column for ``how='csv'``.

    Raises:
        ValueError: an unknown ``how``, a file name that does not follow the layout, a missing
            column or an empty label (the message names the file).
    """
    if how not in LABEL_SOURCES:
        raise ValueError(f"labels must be one of {list(LABEL_SOURCES)}, got {how!r}")
    if how == "none":
        return None
    if how == "fsdd":
        labels = []
        for path in files:
            m = _FSDD_NAME.match(os.path.basename(path))
            if m is None:
                raise ValueError(f"{path}: not an FSDD file name (<digit>_<speaker>_<take>.wav), so labels=fsdd "
                                 "cannot tell its digit")
            labels.append(m.group(1))
        return labels
    if how == "folder":
        return [os.path.basename(os.path.dirname(os.path.abspath(p))) for p in files]
    source = os.fspath(source)
    if os.path.isdir(source):
        raise ValueError(f"labels=csv needs a CSV data source, got the directory {source}")
    return _read_csv_column(source, column)


def class_names_of(labels: Sequence[str]) -> list[str]:
    """The sorted distinct labels: numerically when all are integers (so '10' follows '9')."""
    distinct = set(labels)
    if all(re.fullmatch(r"-?\d+", v) for v in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def _resolve(path: str, base: str) -> str:
    if os.path.isabs(path) or os.path.exists(path):
        return path
    alt = os.path.join(base, path)
    return alt if os.path.exists(alt) else path


def list_audio_files(source: str | os.PathLike, check: bool = True) -> list[str]:
    """The audio files of a data source, in a fixed (sorted or CSV) order.

    Args:
        source: a CSV file with a ``path`` column, or a directory (searched recursively for
            files ending in one of :data:`~sashimi.data.audio.AUDIO_EXTENSIONS`).
        check: verify that every listed file exists.

    Returns:
        file paths.

    Raises:
        FileNotFoundError: the source, or files it lists, do not exist (the first few are named).
        InputError: the source holds no audio files, or is not a CSV file (a ValueError).
    """
    source = os.fspath(source)
    if os.path.isdir(source):
        files = sorted(os.path.join(root, name) for root, _, names in os.walk(source)
                       for name in names if name.lower().endswith(AUDIO_EXTENSIONS))
        if not files:
            raise InputError(f"{source}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this directory")
        return files
    if not os.path.exists(source):
        raise FileNotFoundError(f"data source not found: {source} (expected a CSV file or a directory)")
    files = read_csv_paths(source)
    if check:
        missing = [p for p in files if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"{source}: {len(missing)} of {len(files)} listed files do not exist, "
                                    f"e.g. {missing[:3]}")
    return files


# ---- datasets -----------------------------------------------------------------------------------
class AudioFiles(Dataset):
    """Base of the waveform datasets: a list of files read at one sample rate, optionally held in memory.

    Args:
        files: audio file paths.
        sample_rate: rate every file is resampled to.
        seed: seed of the random choices of subclasses (with the epoch and index).
        downmix: average multi-channel files (else they are refused).
        probe: read every file's header now, so that a bad file fails before training starts.
        cache: decode (and resample) every file once, now, and serve them from memory: no decoding
            in the training loop, so no worker processes are needed. A bad file fails here too.
        labels: a class index per file (class-conditional training): items then end with it.
        label_dropout: the probability that an item's label is replaced by ``no_label`` (drawn
            from ``(seed, epoch, index)``), so that one model also learns to generate without one.
        no_label: the "no label" index (the number of classes).
    """

    def __init__(self, files: Sequence[str], sample_rate: int, *, seed: int = 0, downmix: bool = False,
                 probe: bool = True, cache: bool = False, labels: Sequence[int] | None = None,
                 label_dropout: float = 0.0, no_label: int | None = None):
        if not files:
            raise InputError(f"{type(self).__name__}: no files")
        if labels is not None and len(labels) != len(files):
            raise InputError(f"{type(self).__name__}: {len(labels)} labels for {len(files)} files")
        if not 0.0 <= label_dropout <= 1.0 or (label_dropout and no_label is None):
            raise InputError(f"{type(self).__name__}: label_dropout must be in [0, 1] and needs no_label, "
                             f"got {label_dropout}, {no_label}")
        self.labels = None if labels is None else [int(v) for v in labels]
        self.label_dropout, self.no_label = float(label_dropout), no_label
        self.files, self.sample_rate = list(files), int(sample_rate)
        self.seed, self.downmix = int(seed), downmix
        self.epoch = 0
        self._cache: list[torch.Tensor] | None = None
        if probe:
            self.probe()
        if cache:
            self._cache = [read_audio(path, self.sample_rate, mono=self.downmix)[0] for path in self.files]

    @property
    def cached(self) -> bool:
        """Whether the decoded waveforms are held in memory."""
        return self._cache is not None

    def probe(self) -> None:
        """Check every file's header: readable audio, mono (unless down-mixing), not empty."""
        for path in self.files:
            _, channels, frames = audio_info(path)
            if channels != 1 and not self.downmix:
                raise AudioError(f"{path}: has {channels} channels; only mono audio is accepted "
                                 "(set downmix=true to average the channels)")
            if frames == 0:
                raise AudioError(f"{path}: contains no samples")

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose random choices ``__getitem__`` makes (call before making an iterator)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.files)

    def waveform(self, index: int) -> torch.Tensor:
        """File ``index`` as float32 (L,) at :attr:`sample_rate` (from memory when cached)."""
        if self._cache is not None:
            return self._cache[index]
        return read_audio(self.files[index], self.sample_rate, mono=self.downmix)[0]

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def _item(self, index: int, wave: torch.Tensor, valid: int) -> tuple:
        """(wave, valid), or (wave, valid, label) with labels; the label dropped with its own draw
        (a separate stream, so that the crops and placements do not depend on label_dropout)."""
        if self.labels is None:
            return wave, valid
        label = self.labels[index]
        if self.label_dropout and np.random.default_rng([self.seed, self.epoch, int(index), 1]).random() < self.label_dropout:
            label = self.no_label
        return wave, valid, label


def decoded_bytes(files: Sequence[str], sample_rate: int) -> int:
    """Bytes the files take decoded to float32 mono at ``sample_rate`` (from their headers)."""
    total = 0
    for path in files:
        rate, _, frames = audio_info(path)
        total += math.ceil(frames * sample_rate / rate) * 4
    return total


class CropDataset(AudioFiles):
    """Waveforms cropped (or zero-padded) to a fixed length.

    Each waveform is prefixed with ``lead`` zero samples, then a window of ``crop`` samples is
    taken: at a random offset (drawn from ``(seed, epoch, index)``) when ``random_crop``, else
    at the start. Files shorter than the window are zero-padded and their valid length recorded.

    With ``lead=1`` and ``crop=L+1`` a window at offset 0 is ``[0, a_0, ..., a_{L-1}]``: the
    autoregressive input starts from silence, as generation and :meth:`SashimiAR.nll` do.

    Args:
        files: audio file paths.
        sample_rate: rate every file is resampled to.
        crop: window length in samples.
        lead: zero samples put before each waveform.
        random_crop: random windows (training) or the first one (validation, evaluation).
        seed, downmix, probe, cache: see :class:`AudioFiles`.

    Items:
        (wave float32 (crop,), valid int): the window and its number of real samples (>= 1).
    """

    def __init__(self, files: Sequence[str], sample_rate: int, crop: int, *, lead: int = 0,
                 random_crop: bool = True, seed: int = 0, downmix: bool = False, probe: bool = True,
                 cache: bool = False, **labelling):
        if crop < 1 or lead < 0:
            raise InputError(f"CropDataset: crop must be >= 1 and lead >= 0, got crop={crop}, lead={lead}")
        self.crop, self.lead, self.random_crop = int(crop), int(lead), random_crop
        super().__init__(files, sample_rate, seed=seed, downmix=downmix, probe=probe, cache=cache, **labelling)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        wav = F.pad(self.waveform(index), (self.lead, 0))
        start = 0
        if self.random_crop and wav.numel() > self.crop:
            start = int(self._rng(index).integers(0, wav.numel() - self.crop + 1))
        window = wav[start:start + self.crop]
        valid = window.numel()
        return self._item(index, F.pad(window, (0, self.crop - valid)), valid)


class UtteranceDataset(AudioFiles):
    """Each file whole, at a random position inside a window of silence that counts as data.

    For short utterances trimmed tight (FSDD digits): the model learns silence, a word, silence,
    so that it also generates that. Every sample of the window is real (``valid`` = the window
    length), the silence included. The word's first and last ``fade`` samples are faded in and out
    (raised cosine) so that cutting it out of its recording leaves no click at its edges. A file
    longer than the window is cropped at a random offset instead.

    Args:
        files: audio file paths.
        sample_rate: rate every file is resampled to.
        window: window length in samples (after the ``lead``).
        lead: zero samples put before the window (AR: 1, so the input starts from silence).
        fade: samples of fade at each edge of the word.
        random_place: place the word at a random offset drawn from ``(seed, epoch, index)``
            (training); else in the middle of the allowed offsets (validation, evaluation).
        max_start: the latest offset of the word in the window, in samples (None: anywhere it
            fits). A short lead makes the onset easy to learn: a model fed silence must
            otherwise count time to know that a word is due, which the likelihood barely rewards.
        onset: cut each recording's quiet lead-in first: the word starts ``onset_margin``
            samples before its first sample whose magnitude reaches ``onset`` times the file's
            peak, with no fade-in (None: keep the recording as it is). Trimmed recordings still begin with up to
            ~150 ms of near-silence (FSDD: a median of 11 ms, a tenth over 138 ms before the
            first sample above 0.02), so the beginning of speech stays a rare event at every
            step, which truncated sampling (nucleus, top-k, low temperature) cuts away.
        onset_margin: samples kept before the onset (with ``onset``).
        peak: scale each recording to this peak magnitude (None: as recorded). FSDD's speakers
            differ tenfold in level (two peak near 0.03-0.07, four near 0.25-0.5); a model that
            imitates the quiet ones under truncated sampling makes words too quiet to hear.
        seed, downmix, probe, cache: see :class:`AudioFiles`.

    Items:
        (wave float32 (lead + window,), valid int = lead + window).
    """

    def __init__(self, files: Sequence[str], sample_rate: int, window: int, *, lead: int = 0, fade: int = 0,
                 random_place: bool = True, max_start: int | None = None, onset: float | None = None,
                 onset_margin: int = 0, peak: float | None = None, seed: int = 0, downmix: bool = False,
                 probe: bool = True, cache: bool = False, **labelling):
        if window < 1 or lead < 0 or fade < 0 or (max_start is not None and max_start < 0) or onset_margin < 0:
            raise InputError(f"UtteranceDataset: window must be >= 1, lead, fade, max_start and onset_margin >= 0, "
                             f"got window={window}, lead={lead}, fade={fade}, max_start={max_start}, "
                             f"onset_margin={onset_margin}")
        if onset is not None and not 0 < onset <= 1:
            raise InputError(f"UtteranceDataset: onset must be None or in (0, 1] (a fraction of the peak), got {onset}")
        if peak is not None and not 0 < peak <= 1:
            raise InputError(f"UtteranceDataset: peak must be None or in (0, 1], got {peak}")
        self.onset, self.onset_margin, self.peak = onset, int(onset_margin), peak
        self.window, self.lead, self.fade, self.random_place = int(window), int(lead), int(fade), random_place
        self.max_start = None if max_start is None else int(max_start)
        super().__init__(files, sample_rate, seed=seed, downmix=downmix, probe=probe, cache=cache, **labelling)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        wav = self.waveform(index)
        if self.onset is not None:
            wav = trim_lead_in(wav, self.onset, self.onset_margin)
        if self.peak is not None and wav.numel() and float(wav.abs().max()) > 0:
            wav = wav * (self.peak / float(wav.abs().max()))
        rng = self._rng(index)
        if wav.numel() > self.window:
            start = int(rng.integers(0, wav.numel() - self.window + 1)) if self.random_place else \
                (wav.numel() - self.window) // 2
            word, offset = wav[start:start + self.window], 0
        else:
            word = wav
            room = self.window - wav.numel()
            if self.max_start is not None:
                room = min(room, self.max_start)
            offset = int(rng.integers(0, room + 1)) if self.random_place else room // 2
        # a word cut at its onset starts loud: a fade-in would make its first samples quiet again,
        # and a model that begins quietly fades to silence under truncated sampling
        word = _fade_edges(word, self.fade, start=self.onset is None)
        out = torch.zeros(self.lead + self.window)
        out[self.lead + offset: self.lead + offset + word.numel()] = word
        return self._item(index, out, out.numel())


def trim_lead_in(wav: torch.Tensor, onset: float, margin: int = 0) -> torch.Tensor:
    """``wav`` (L,) from ``margin`` samples before its first sample whose magnitude reaches
    ``onset`` times its peak (a silent file is returned as it is)."""
    level = wav.abs()
    peak = float(level.max()) if wav.numel() else 0.0
    if peak <= 0:
        return wav
    first = int(torch.nonzero(level >= onset * peak)[0])
    return wav[max(0, first - margin):]


def _fade_edges(wav: torch.Tensor, fade: int, start: bool = True) -> torch.Tensor:
    """Raised-cosine fade over the first (with ``start``) and last ``fade`` samples (at most half the
    length each)."""
    n = min(fade, wav.numel() // 2)
    if n < 1:
        return wav
    ramp = 0.5 - 0.5 * torch.cos(torch.arange(1, n + 1, dtype=wav.dtype) * (math.pi / (n + 1)))
    out = wav.clone()
    if start:
        out[:n] *= ramp
    out[-n:] *= ramp.flip(0)
    return out


# ---- sampling ---------------------------------------------------------------------------------
class ResumableSampler(Sampler[int]):
    """``DistributedSampler`` (seeded with ``seed + epoch``) that can skip its first indices.

    Works without ``torch.distributed`` being initialised (``num_replicas``/``rank`` explicit).

    Args:
        n: dataset size.
        num_replicas, rank: the process's shard (1, 0 when not distributed).
        seed: shuffling seed.
        shuffle: shuffle (training) or keep the order.
    """

    def __init__(self, n: int, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True):
        self.inner = DistributedSampler(range(n), num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                                        seed=seed, drop_last=False)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Shuffle for ``epoch`` and drop the first ``skip`` indices (already consumed)."""
        self.inner.set_epoch(epoch)
        self.skip = int(skip)

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.inner)[self.skip:])

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` in order, no padding (for exact sharded evaluation)."""

    def __init__(self, n: int, num_replicas: int = 1, rank: int = 0):
        self.indices = list(range(rank, n, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# ---- collation ------------------------------------------------------------------------------------
class ARCollate:
    """(wave, valid) items from a ``CropDataset(crop=L+1, lead=1)`` -> autoregressive batches.

    Returns:
        x: int64 (B, L) input tokens; y: int64 (B, L) targets (x shifted by one);
        lengths: int64 (B,) number of real targets per row (targets past it are padding and
        must not be scored); with labelled items, also labels: int64 (B,).

    Args:
        mu_levels: token levels; quantization: 'mulaw' or 'linear' (the model's ``ARConfig`` fields).
    """

    def __init__(self, mu_levels: int = 256, quantization: str = "mulaw"):
        self.mu_levels, self.quantization = mu_levels, quantization

    def __call__(self, items: list[tuple]) -> tuple[torch.Tensor, ...]:
        waves = torch.stack([item[0] for item in items])  # (B, L+1)
        tokens = quantize(waves, self.mu_levels, self.quantization)
        lengths = torch.tensor([max(item[1] - 1, 0) for item in items], dtype=torch.long)
        return (tokens[:, :-1], tokens[:, 1:], lengths) + _labels(items)


class WaveCollate:
    """(wave, valid) items -> (audio float32 (B, L), lengths int64 (B,)) for waveform models."""

    def __call__(self, items: list[tuple]) -> tuple[torch.Tensor, ...]:
        return (torch.stack([item[0] for item in items]),
                torch.tensor([item[1] for item in items], dtype=torch.long)) + _labels(items)


def _labels(items: list[tuple]) -> tuple:
    """(labels int64 (B,),) when the items carry labels, else ()."""
    if len(items[0]) < 3:
        return ()
    return (torch.tensor([item[2] for item in items], dtype=torch.long),)


def batches_per_epoch(n: int, batch_size: int, world: int) -> int:
    """Full batches one process sees per epoch (the loader drops the last partial batch)."""
    return math.ceil(n / world) // batch_size
