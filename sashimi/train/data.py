"""Training data: file lists, cropped waveform datasets, mu-law collation and resumable sampling.

A data source is a CSV file with a ``path`` column (the format ``split_data.py`` writes; relative
paths are taken from the working directory, else from the CSV's folder) or a directory, scanned
recursively for audio files (so an FSDD checkout or its ``recordings/`` folder works as is).

Every random choice is a pure function of (seed, epoch, position), never of a global RNG, so a
run resumed from a checkpoint sees exactly the batches the uninterrupted run would have seen:
:class:`ResumableSampler` shuffles with ``seed + epoch`` (via ``DistributedSampler``) and can
skip the batches already consumed; :class:`CropDataset` draws each crop offset from
``(seed, epoch, index)``.
"""
from __future__ import annotations

import csv
import math
import os
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, DistributedSampler, Sampler

from ..audio import AUDIO_EXTENSIONS, AudioError, audio_info, read_audio
from ..mulaw import mulaw_encode

__all__ = ["list_audio_files", "read_csv_paths", "CropDataset", "ResumableSampler", "ShardSampler",
           "ARCollate", "WaveCollate"]


# ---- file lists -------------------------------------------------------------------------------
def read_csv_paths(csv_path: str | os.PathLike) -> list[str]:
    """The ``path`` column of a CSV file.

    Raises:
        FileNotFoundError: no such CSV.
        ValueError: no ``path`` column, or no rows (the message names the file).
    """
    csv_path = os.fspath(csv_path)
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"CSV file not found: {csv_path}")
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise ValueError(f"{csv_path}: expected a CSV with a 'path' column, got columns {reader.fieldnames}")
        paths = [row["path"] for row in reader if row.get("path")]
    if not paths:
        raise ValueError(f"{csv_path}: the CSV lists no files")
    base = os.path.dirname(os.path.abspath(csv_path))
    return [_resolve(p, base) for p in paths]


def _resolve(path: str, base: str) -> str:
    if os.path.isabs(path) or os.path.exists(path):
        return path
    alt = os.path.join(base, path)
    return alt if os.path.exists(alt) else path


def list_audio_files(source: str | os.PathLike, check: bool = True) -> list[str]:
    """The audio files of a data source, in a fixed (sorted or CSV) order.

    Args:
        source: a CSV file with a ``path`` column, or a directory (searched recursively for
            files ending in one of :data:`~sashimi.audio.AUDIO_EXTENSIONS`).
        check: verify that every listed file exists.

    Returns:
        file paths.

    Raises:
        FileNotFoundError: the source, or files it lists, do not exist (the first few are named).
        ValueError: the source holds no audio files.
    """
    source = os.fspath(source)
    if os.path.isdir(source):
        files = sorted(os.path.join(root, name) for root, _, names in os.walk(source)
                       for name in names if name.lower().endswith(AUDIO_EXTENSIONS))
        if not files:
            raise ValueError(f"{source}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this directory")
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


# ---- dataset ------------------------------------------------------------------------------------
class CropDataset(Dataset):
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
        seed: seed of the crop offsets.
        downmix: average multi-channel files (else they are refused).
        probe: read every file's header now, so that a bad file fails before training starts.

    Items:
        (wave float32 (crop,), valid int): the window and its number of real samples (>= 1).
    """

    def __init__(self, files: Sequence[str], sample_rate: int, crop: int, *, lead: int = 0,
                 random_crop: bool = True, seed: int = 0, downmix: bool = False, probe: bool = True):
        if not files:
            raise ValueError("CropDataset: no files")
        if crop < 1 or lead < 0:
            raise ValueError(f"CropDataset: crop must be >= 1 and lead >= 0, got crop={crop}, lead={lead}")
        self.files, self.sample_rate, self.crop, self.lead = list(files), int(sample_rate), int(crop), int(lead)
        self.random_crop, self.seed, self.downmix = random_crop, int(seed), downmix
        self.epoch = 0
        if probe:
            self.probe()

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
        """Choose the epoch whose crops ``__getitem__`` returns (call before making an iterator)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        wav, _ = read_audio(self.files[index], self.sample_rate, mono=self.downmix)
        wav = F.pad(wav, (self.lead, 0))
        start = 0
        if self.random_crop and wav.numel() > self.crop:
            rng = np.random.default_rng([self.seed, self.epoch, int(index)])
            start = int(rng.integers(0, wav.numel() - self.crop + 1))
        window = wav[start:start + self.crop]
        valid = window.numel()
        return F.pad(window, (0, self.crop - valid)), valid


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
        must not be scored).
    """

    def __init__(self, mu_levels: int = 256):
        self.mu_levels = mu_levels

    def __call__(self, items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        waves = torch.stack([w for w, _ in items])  # (B, L+1)
        tokens = mulaw_encode(waves, self.mu_levels)
        lengths = torch.tensor([max(v - 1, 0) for _, v in items], dtype=torch.long)
        return tokens[:, :-1], tokens[:, 1:], lengths


class WaveCollate:
    """(wave, valid) items -> (audio float32 (B, L), lengths int64 (B,)) for waveform models."""

    def __call__(self, items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([w for w, _ in items]), torch.tensor([v for _, v in items], dtype=torch.long)


def batches_per_epoch(n: int, batch_size: int, world: int) -> int:
    """Full batches one process sees per epoch (the loader drops the last partial batch)."""
    return math.ceil(n / world) // batch_size
