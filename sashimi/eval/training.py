"""Train a digit classifier (:class:`~sashimi.eval.models.DigitCNN`) on FSDD or SC09.

    from sashimi.eval.training import train_classifier
    classifier, report = train_classifier("data/fsdd", epochs=30)

The command line is ``sashimi train-classifier``. Splits follow :mod:`sashimi.data.split`:

- FSDD: takes 0-4 are the test set, takes 5-9 the validation set (model selection), takes 10-49
  the training set. The test set is scored once, after training, and never used for choices.
- SC09 (a Speech Commands folder): its ``validation_list.txt`` / ``testing_list.txt``, the ten
  digit words.

Every training clip is placed at a random offset in the 1 s window (or cropped at one), given a
random gain in [-20, +6] dB, and with probability 1/2 each, low-level white noise (-70 to -40
dBFS RMS) and an 8-bit mu-law round trip. Validation and test accuracy are measured clean (as
recorded, from the window's start) and perturbed (a random gain in [-20, +6] dB and a random
offset, drawn with a fixed seed); the epoch with the best mean of the two validation accuracies
is kept.
"""
from __future__ import annotations

import copy
import math
import os
import time
from typing import Callable

import torch
import torch.nn.functional as F

from ..data.audio import read_audio
from ..data.split import FSDD_PATTERN, SC09_WORDS, detect_layout, fsdd_split, speech_commands_split
from .augment import perturb, place
from .classifier import Classifier
from .models import DigitCNN

__all__ = ["labelled_splits", "load_clips", "accuracy", "train_classifier", "FSDD_CREDIT"]

FSDD_CREDIT = ("Free Spoken Digit Dataset (Z. Jackson et al., github.com/Jakobovski/free-spoken-digit-dataset), "
               "CC BY-SA 4.0")
#: the perturbation of the "perturbed" accuracy: gain and offset only
GAIN_SHIFT = dict(gain_db=(-20.0, 6.0), noise_db=None, p_mulaw=0.0)


def labelled_splits(root: str | os.PathLike) -> tuple[dict[str, list[tuple[str, int]]], tuple[str, ...], str]:
    """The labelled train / valid / test files of an FSDD or Speech Commands (SC09) folder.

    Args:
        root: an FSDD checkout (or its ``recordings/``) or a Speech Commands folder.

    Returns:
        splits: {'train', 'valid', 'test'} -> [(path, class index)];
        classes: the class names ('zero' .. 'nine');
        layout: 'fsdd' or 'sc09'.
    """
    root = os.fspath(root)
    layout = detect_layout(root)
    if layout == "fsdd":
        files = fsdd_split(root, valid_takes=5)
        label = lambda p: int(FSDD_PATTERN.match(os.path.basename(p)).group(1))  # noqa: E731
    else:
        files = speech_commands_split(root, sc09_only=True)
        label = lambda p: SC09_WORDS.index(os.path.basename(os.path.dirname(p)))  # noqa: E731
        layout = "sc09"
    splits = {s: [(p, label(p)) for p in paths] for s, paths in files.items()}
    for s in ("train", "valid", "test"):
        if not splits[s]:
            raise ValueError(f"{root}: the {s} split is empty")
    return splits, tuple(SC09_WORDS), layout


def load_clips(items: list[tuple[str, int]], rate: int | None = None,
               progress: bool = False) -> tuple[list[torch.Tensor], torch.Tensor, int]:
    """Read labelled files as mono float32 waveforms, all at one rate.

    Args:
        items: [(path, label)].
        rate: sample rate wanted (None: the first file's; others are resampled to it).
        progress: show a progress bar.

    Returns:
        (waveforms, labels int64 (N,), rate).
    """
    it = items
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(items, desc="reading", unit="file", dynamic_ncols=True)
    clips = []
    for path, _ in it:
        wav, got = read_audio(path, rate, mono=True)
        rate = rate or got
        clips.append(wav)
    return clips, torch.tensor([y for _, y in items], dtype=torch.long), int(rate)


def _images(classifier: Classifier, clips: list[torch.Tensor], rate: int, seed: int | None,
            batch: int = 256, **perturbation) -> torch.Tensor:
    """Front-end images of clips: as recorded (seed None) or with a seeded gain / offset / noise."""
    g = None if seed is None else torch.Generator().manual_seed(seed)
    out = []
    for s in range(0, len(clips), batch):
        wavs = place(clips[s:s + batch], rate, g, shift=seed is not None)
        if seed is not None:
            wavs = perturb(wavs, g, **perturbation)
        out.append(classifier.images(wavs, rate))
    return torch.cat(out)


@torch.no_grad()
def accuracy(classifier: Classifier, clips: list[torch.Tensor], labels: torch.Tensor, rate: int,
             seed: int | None = None, **perturbation) -> float:
    """Fraction of clips classified correctly.

    Args:
        classifier: the classifier.
        clips: 1-D waveforms at ``rate``.
        labels: (N,) class indices.
        rate: sample rate of the clips.
        seed: None: clean (each clip from the window's start); else a seeded random offset and
            :func:`~sashimi.eval.augment.perturb` with ``perturbation`` (e.g. :data:`GAIN_SHIFT`).
    """
    images = _images(classifier, clips, rate, seed, **perturbation)
    classifier.model.eval()
    pred = torch.cat([classifier.model(images[s:s + 512]).argmax(-1) for s in range(0, len(images), 512)])
    return float((pred.cpu() == labels).float().mean())


def train_classifier(root: str | os.PathLike, *, epochs: int = 30, batch_size: int = 64, lr: float = 3e-3,
                     weight_decay: float = 1e-2, channels: tuple[int, ...] = (32, 64, 128), dropout: float = 0.3,
                     seed: int = 0, log: Callable[[str], None] = print,
                     progress: bool = False) -> tuple[Classifier, dict]:
    """Train a :class:`DigitCNN` on FSDD or SC09 with the augmentations above.

    Args:
        root: the dataset folder (see :func:`labelled_splits`).
        epochs: passes over the training set (one-cycle learning-rate schedule).
        batch_size: clips per step.
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        channels: the CNN's stage widths (the last is the feature dimension).
        dropout: before the final layer.
        seed: seeds initialisation, batches and augmentation.
        log: receives one line per epoch.
        progress: progress bar while reading files.

    Returns:
        (classifier, report): the classifier from the best validation epoch (eval mode, its
        ``meta`` filled in) and a report dict (accuracies, times, sizes).
    """
    start = time.perf_counter()
    splits, classes, layout = labelled_splits(root)
    train_clips, train_y, rate = load_clips(splits["train"], progress=progress)
    valid_clips, valid_y, _ = load_clips(splits["valid"], rate, progress=progress)
    log(f"{layout}: {len(train_clips)} training clips, {len(valid_clips)} validation clips at {rate} Hz "
        f"({time.perf_counter() - start:.0f} s to read)")

    torch.manual_seed(seed)
    arch_config = dict(n_classes=len(classes), channels=[int(c) for c in channels], dropout=float(dropout))
    model = DigitCNN(**arch_config)
    classifier = Classifier(model, classes, rate, name=f"{layout}-digit-cnn", arch_config=arch_config)
    g = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(train_clips) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    valid_images = {"clean": _images(classifier, valid_clips, rate, None),
                    "perturbed": _images(classifier, valid_clips, rate, seed + 1, **GAIN_SHIFT)}

    best, best_state, history = -1.0, None, []
    train_start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train_clips), generator=g)
        total, correct, seen = 0.0, 0, 0
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            wavs = perturb(place([train_clips[i] for i in idx], rate, g), g)
            logits = model(classifier.images(wavs, rate))
            loss = F.cross_entropy(logits, train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(-1) == train_y[idx]).sum())
            seen += len(idx)
        model.eval()
        with torch.no_grad():
            acc = {k: float((model(v).argmax(-1) == valid_y).float().mean()) for k, v in valid_images.items()}
        score = (acc["clean"] + acc["perturbed"]) / 2
        history.append(dict(epoch=epoch + 1, loss=total / seen, train_acc=correct / seen, **acc))
        if score > best:
            best, best_state = score, copy.deepcopy(model.state_dict())
        log(f"epoch {epoch + 1:3d}/{epochs}  loss {total / seen:.4f}  train acc {correct / seen:.4f}  "
            f"valid acc clean {acc['clean']:.4f} perturbed {acc['perturbed']:.4f}  "
            f"({time.perf_counter() - train_start:.0f} s)")
    train_seconds = time.perf_counter() - train_start
    model.load_state_dict(best_state)
    model.eval()

    test_clips, test_y, _ = load_clips(splits["test"], rate, progress=progress)
    test = {"clean": accuracy(classifier, test_clips, test_y, rate),
            "gain_shift": accuracy(classifier, test_clips, test_y, rate, seed=1234, **GAIN_SHIFT),
            "gain_shift_noise_mulaw": accuracy(classifier, test_clips, test_y, rate, seed=1234,
                                               p_noise=1.0, p_mulaw=1.0)}
    best_epoch = max(history, key=lambda h: (h["clean"] + h["perturbed"]) / 2)["epoch"]
    report = dict(dataset=layout, n_train=len(train_clips), n_valid=len(valid_clips), n_test=len(test_clips),
                  sample_rate=rate, arch_config=arch_config, epochs=epochs, best_epoch=best_epoch,
                  batch_size=batch_size, lr=lr, seed=seed, params=sum(p.numel() for p in model.parameters()),
                  train_seconds=round(train_seconds, 1), total_seconds=round(time.perf_counter() - start, 1),
                  threads=torch.get_num_threads(), torch=str(torch.__version__),
                  valid_acc={k: history[best_epoch - 1][k] for k in ("clean", "perturbed")},
                  test_acc=test, history=history)
    classifier.meta = dict(
        dataset=layout, credit=FSDD_CREDIT if layout == "fsdd" else "Speech Commands (Warden 2018), CC BY 4.0",
        license_of_data="CC BY-SA 4.0" if layout == "fsdd" else "CC BY 4.0",
        trained_by="sashimi train-classifier (sashimi/eval/training.py)",
        split="test: takes 0-4, valid: takes 5-9, train: takes 10-49" if layout == "fsdd"
        else "Speech Commands validation_list.txt / testing_list.txt, digits only",
        **{k: report[k] for k in ("epochs", "best_epoch", "seed", "params", "train_seconds", "threads", "torch",
                                  "valid_acc", "test_acc")})
    log(f"best epoch {best_epoch}: test accuracy clean {test['clean']:.4f}, gain+shift {test['gain_shift']:.4f}, "
        f"gain+shift+noise+mu-law {test['gain_shift_noise_mulaw']:.4f}; trained in {train_seconds:.0f} s")
    return classifier, report
