"""Digit classifiers for scoring audio: loading, saving and ``predict``.

    from sashimi.eval import load_classifier
    clf = load_classifier("fsdd")                      # bundled, trained on FSDD, offline
    probs, features = clf.predict(wavs, 8000)          # (N, 10), (N, 128)

A classifier is saved as a model folder (``sashimi.save_pretrained(clf, folder)``: config.json +
model.safetensors, no pickle; kind ``"classifier"``), or as a file, a dict read with
``torch.load(..., weights_only=True)``::

    {"format": "sashimi-classifier", "version": 1, "arch": "digit_cnn" | "resnext",
     "arch_config": {...}, "classes": [...], "data_rate": 8000, "state_dict": {...}, "meta": {...}}

The SaShiMi paper's SC09 classifier loads as published: ``load_classifier("sc09_resnext")``
downloads the authors' ``resnext.pth`` once (a pickled whole module, read without running any of
its code: :mod:`sashimi.eval.sc09_resnext`); a local copy, or a bare state dict of that ResNeXt
(the authors' parameter names, with or without DataParallel's ``module.`` prefix), loads too.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..persistence.checkpoint import CheckpointError
from ..persistence.download import sha256_file
from ..persistence.folder import FolderKind, is_model_folder
from ..pretrained.registry import BUNDLED_CLASSIFIERS, DOWNLOADED_CLASSIFIERS, bundled_classifier_folder
from .frontend import check_wavs, fix_length, log_mel
from .models import ARCHITECTURES, ResNeXt
from .sc09_resnext import PAD_MODES, PAPER_PAD_MODE, SC09_CLASSES, load_authors_resnext

__all__ = ["Classifier", "load_classifier", "save_classifier", "bundled_classifiers", "bundled_classifier_folder",
           "SC09_CLASSES", "FORMAT_NAME", "PAPER_PROTOCOL", "downloaded_classifier_path"]

FORMAT_NAME = "sashimi-classifier"
FORMAT_VERSION = 1
#: what ``Classifier.meta["protocol"]`` says of the SaShiMi authors' classifier (see sashimi.eval.paper)
PAPER_PROTOCOL = "sashimi-paper"


def bundled_classifiers() -> list[str]:
    """Names accepted by :func:`load_classifier` besides file paths (bundled, or downloaded once)."""
    return sorted([*BUNDLED_CLASSIFIERS, *DOWNLOADED_CLASSIFIERS])


class Classifier:
    """A trained classifier with its front end: waveforms in, class probabilities and features out.

    Args:
        model: a module with ``forward_features(images) -> (logits, features)``
            (see :mod:`sashimi.eval.models`).
        classes: class names, in output order.
        data_rate: sample rate (Hz) of the data it was trained on, or None. Audio at a higher
            rate is first resampled to it, so that e.g. a classifier trained on 8 kHz FSDD
            sees 16 kHz audio band-limited the way it saw its training data.
        name: a short name for reports.
        meta: free-form metadata (dataset, license, accuracy, ...): its provenance in a model folder.
        arch_config: the keyword arguments that rebuild ``model`` (its class in ``ARCHITECTURES``);
            needed to save it as a model folder.
        pad_mode: STFT padding of the front end, ``'reflect'`` (librosa <= 0.8.1) or
            ``'constant'`` (librosa >= 0.9), see :func:`sashimi.eval.frontend.mel_spectrogram`.
    """

    def __init__(self, model: nn.Module, classes, data_rate: int | None = None, name: str = "",
                 meta: dict | None = None, arch_config: dict | None = None, pad_mode: str = PAPER_PAD_MODE):
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        self.pad_mode = pad_mode
        self.model = model.eval()
        self.classes = tuple(classes)
        self.data_rate = int(data_rate) if data_rate else None
        self.name = name
        self.meta = dict(meta or {})
        self.arch_config = dict(arch_config) if arch_config is not None else None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def feature_dim(self) -> int:
        return int(self.model.feature_dim)

    def to(self, device) -> "Classifier":
        self.model.to(device)
        return self

    def images(self, wavs, sample_rate: int) -> torch.Tensor:
        """The model's input: (N, L) waveforms -> (N, 1, 32, 32) dB images (float32, on its device)."""
        wavs = check_wavs(wavs, sample_rate)
        if self.data_rate is not None and sample_rate > self.data_rate:
            from ..data.audio import resample

            wavs = resample(wavs.detach().cpu().float(), int(sample_rate), self.data_rate)
            sample_rate = self.data_rate
        wavs = fix_length(wavs, int(sample_rate))  # 1 s at the input rate: less to resample
        return log_mel(wavs, int(sample_rate), pad_mode=self.pad_mode).to(self.device)

    @torch.no_grad()
    def predict(self, wavs, sample_rate: int, *, batch_size: int = 256,
                progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Classify waveforms.

        Each clip is scored on its first second (zero-padded if shorter), resampled to 16 kHz.

        Args:
            wavs: (N, L) float waveforms (tensor or numpy), typically in [-1, 1]; any gain.
            sample_rate: their rate in Hz (8 kHz and 16 kHz are both fine).
            batch_size: clips per forward pass.
            progress: show a progress bar.

        Returns:
            probs: float64 (N, C), rows summing to 1 (softmax in float64, so that no
                probability underflows to 0 and the KL-based metrics stay finite).
            features: float64 (N, D), the pooled penultimate layer (for FID).

        Raises:
            TypeError, ValueError: bad ``wavs`` (wrong shape or dtype, NaN or inf) or ``sample_rate``.
        """
        wavs = check_wavs(wavs, sample_rate)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model.eval()
        starts = range(0, wavs.size(0), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="classifying", unit="batch", dynamic_ncols=True)
        probs, feats = [], []
        for s in starts:
            logits, features = self.model.forward_features(self.images(wavs[s:s + batch_size], sample_rate))
            probs.append(torch.softmax(logits.double(), dim=-1).cpu())
            feats.append(features.double().cpu())
        return torch.cat(probs), torch.cat(feats)

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        return (f"Classifier(name={self.name!r}, arch={type(self.model).__name__}, classes={len(self.classes)}, "
                f"data_rate={self.data_rate}, features={self.feature_dim}, params={n:,}, pad_mode={self.pad_mode!r})")


# ---- files ----------------------------------------------------------------------------------
def save_classifier(classifier: Classifier, path: str | os.PathLike, arch_config: dict) -> str:
    """Write a classifier file (atomically). Returns its SHA-256.

    Args:
        classifier: the classifier (its model's class must be in ``ARCHITECTURES``).
        path: destination; overwritten if it exists (callers decide whether that is allowed).
        arch_config: the keyword arguments that rebuild the model.
    """
    arch = _arch_name(classifier.model)
    blob = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "arch": arch, "arch_config": dict(arch_config),
            "classes": list(classifier.classes), "data_rate": classifier.data_rate,
            "state_dict": {k: v.detach().cpu().clone() for k, v in classifier.model.state_dict().items()},
            "meta": _plain(classifier.meta)}
    path = os.fspath(path)
    tmp = path + ".part"
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return sha256_file(path)


def _arch_name(model: nn.Module) -> str:
    arch = next((k for k, cls in ARCHITECTURES.items() if type(model) is cls), None)
    if arch is None:
        raise ValueError(f"cannot save a {type(model).__name__}: not one of {sorted(ARCHITECTURES)}")
    return arch


def _plain(x):
    """Metadata as plain Python values, which ``torch.load(weights_only=True)`` reads back."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if x is None or type(x) in (bool, int, float, str):
        return x
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)
    return str(x)  # e.g. torch.__version__, a str subclass the safe unpickler refuses


def load_classifier(name_or_path: str | os.PathLike = "fsdd", *, device=None, pad_mode: str | None = None,
                    progress: bool = True) -> Classifier:
    """Load a classifier: a bundled or published one by name, or a file.

    Args:
        name_or_path: ``"fsdd"`` (bundled: digits trained on FSDD by this project; each file
            checked against its SHA-256); ``"sc09_resnext"`` (the SaShiMi paper's SC09 classifier,
            the authors' ``sc09_classifier/resnext.pth``, downloaded once into the cache of
            :mod:`sashimi.persistence.download`); a model folder written by
            ``sashimi.save_pretrained`` (or ``"hf://owner/name[@revision]"``, one on the Hugging Face
            Hub); a classifier file written by :func:`save_classifier` (e.g. by ``sashimi
            train-classifier``); the authors' pickled ``resnext.pth`` (read without running its
            code) or a state-dict file of that ResNeXt with the authors' parameter names.
        device: where to put it (default: CPU).
        pad_mode: STFT padding of the front end, ``'reflect'`` (librosa <= 0.8.1, the default: what
            the paper's numbers used) or ``'constant'`` (librosa >= 0.9).
        progress: show a progress bar while downloading.

    Returns:
        a :class:`Classifier` in eval mode.

    Raises:
        ValueError: an unknown name, a file that is neither format, a hash mismatch, or
            weights that do not fit the architecture (a malformed model folder: CheckpointError;
            a pickle naming code outside the authors' classes: UnsafePickleError).
        FileNotFoundError: no such file.
        OSError: a classifier that could not be downloaded (DownloadError; offline, the message
            names the URL and the cache folder).
    """
    from ..persistence.folder import load_folder

    if pad_mode is not None and pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    pad = pad_mode or PAPER_PAD_MODE
    key = os.fspath(name_or_path)
    if key in BUNDLED_CLASSIFIERS or key.startswith("hf://") or is_model_folder(key):  # model folders: no pickle
        if key.startswith("hf://"):
            from ..persistence.hf import hf_folder

            folder = hf_folder(key)
        else:
            folder = bundled_classifier_folder(key) if key in BUNDLED_CLASSIFIERS else Path(key)
        classifier = load_folder(folder, map_location=device or "cpu", kinds=("classifier",),
                                 extra_kinds={"classifier": CLASSIFIER_FOLDER_KIND})
        classifier.name = key if key in BUNDLED_CLASSIFIERS or key.startswith("hf://") else Path(key).name
        classifier.pad_mode = pad
        return classifier
    if key in DOWNLOADED_CLASSIFIERS and not os.path.exists(key):
        path, name = Path(downloaded_classifier_path(key, progress=progress)), key
    else:
        path, name = Path(key), Path(key).name
    if not path.exists():
        bundled = ", ".join(repr(n) for n in sorted(BUNDLED_CLASSIFIERS)) or "none"
        published = ", ".join(repr(n) for n in sorted(DOWNLOADED_CLASSIFIERS)) or "none"
        raise FileNotFoundError(f"classifier {key!r}: not a bundled name ({bundled}), not a published one "
                                f"({published}), and no such file")
    if not path.is_file():
        raise ValueError(f"classifier {key!r} is neither a file nor a model folder (no config.json)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # objects beyond tensors and containers: a pickled whole module?
        model, config = load_authors_resnext(path, str(path))
        n = config["n_classes"]
        classes = SC09_CLASSES if n == 10 else tuple(str(i) for i in range(n))
        meta = {"arch": f"ResNeXt {config}", "dataset": "sc09", "protocol": PAPER_PROTOCOL,
                "source": "the SaShiMi authors' pickled DataParallel(CifarResNeXt) file"}
        classifier = Classifier(model, classes, 16000, name, meta, arch_config=config, pad_mode=pad)
    except Exception as e:  # truncated, damaged or not a torch file: torch raises several types
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else 'damaged'})") from e
    else:
        classifier = _from_blob(blob, name, str(path))
        classifier.pad_mode = pad
    return classifier.to(device) if device is not None else classifier


def downloaded_classifier_path(name: str, progress: bool = True) -> str:
    """The local copy of published classifier ``name`` (see ``DOWNLOADED_CLASSIFIERS``), downloading it once.

    Raises:
        DownloadError: it is not cached and cannot be downloaded: one line naming the URL and the
            cache folder to put the file in.
        HashMismatchError: the file differs from the published one (where its SHA-256 is known).
    """
    from ..persistence.download import DownloadError, cache_path, cached_download

    url, sha256 = DOWNLOADED_CLASSIFIERS[name]
    try:
        return cached_download(url, sha256=sha256, progress=progress)
    except DownloadError as e:
        cause = e.__cause__
        reason = (str(getattr(cause, "reason", None) or cause or "").strip().splitlines() or [type(cause).__name__])[0]
        target = cache_path(url)
        raise DownloadError(f"classifier {name!r}: could not download {url} ({reason}); offline, copy "
                            f"{os.path.basename(target)} into the cache folder {os.path.dirname(target)} "
                            f"or pass its path instead of {name!r}") from e


def _from_blob(blob, name: str, where: str) -> Classifier:
    if not isinstance(blob, dict):
        raise ValueError(f"{where}: not a classifier file (holds a {type(blob).__name__})")
    if blob.get("format") == FORMAT_NAME:
        if blob.get("version") != FORMAT_VERSION:
            raise ValueError(f"{where}: classifier format version {blob.get('version')}, this sashimi reads "
                             f"{FORMAT_VERSION}")
        arch = blob.get("arch")
        if arch not in ARCHITECTURES:
            raise ValueError(f"{where}: unknown architecture {arch!r} (known: {sorted(ARCHITECTURES)})")
        model = ARCHITECTURES[arch](**blob.get("arch_config", {}))
        _load_strict(model, blob["state_dict"], where)
        return Classifier(model, blob["classes"], blob.get("data_rate"), name, blob.get("meta"),
                          arch_config=blob.get("arch_config", {}))
    state = _strip_prefix(blob, "module.")
    if "conv_1_3x3.weight" in state and "stage_1.stage_1_bottleneck_0.conv_conv.weight" in state \
            and "classifier.weight" in state:
        try:
            config = ResNeXt.config_from_state_dict(state)
        except (KeyError, AttributeError, ValueError, IndexError, ZeroDivisionError) as e:
            raise ValueError(f"{where}: a ResNeXt state dict of an unexpected shape ({e})") from e
        model = ResNeXt(**config)
        _load_strict(model, state, where)
        n = config["n_classes"]
        classes = SC09_CLASSES if n == 10 else tuple(str(i) for i in range(n))
        return Classifier(model, classes, 16000, name, {"arch": f"ResNeXt {config}", "dataset": "sc09",
                                                        "protocol": PAPER_PROTOCOL}, arch_config=config)
    raise ValueError(f"{where}: neither a sashimi classifier file nor a ResNeXt state dict "
                     f"(keys: {list(blob)[:4]}...)")


def _strip_prefix(state: dict, prefix: str) -> dict:
    if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _load_strict(model: nn.Module, state, where: str) -> None:
    """The one validation of every weights file (:func:`sashimi.persistence.checkpoint.load_state_dict_strict`:
    missing, unexpected, misshapen tensors, NaN / inf), after checking ``state`` maps names to tensors."""
    from ..persistence.checkpoint import check_state_dict, load_state_dict_strict

    load_state_dict_strict(model, check_state_dict(state, where, "state_dict"), where)


# ---- the model-folder kind "classifier" (see sashimi.persistence.folder) ---------------------------
_FOLDER_CONFIG_KEYS = {"arch", "arch_config", "data_rate"}


def _folder_parts(classifier: Classifier):
    if classifier.arch_config is None:
        raise TypeError(f"cannot save classifier {classifier.name!r} as a folder: its arch_config (the arguments "
                        "that rebuild its model) is unknown; pass arch_config= to Classifier")
    config = {"arch": _arch_name(classifier.model), "arch_config": _plain(classifier.arch_config),
              "data_rate": classifier.data_rate}
    return config, classifier.model, list(classifier.classes), _plain(classifier.meta)


def _folder_build(config: dict, class_names, provenance: dict, where: str):
    unknown = sorted(set(config) - _FOLDER_CONFIG_KEYS)
    if unknown:
        raise CheckpointError(f"{where}: unknown key(s) {unknown}; expected {sorted(_FOLDER_CONFIG_KEYS)}")
    if config.get("arch") not in ARCHITECTURES:
        raise CheckpointError(f"{where}, entry 'arch': {config.get('arch')!r} is not a known architecture "
                              f"({', '.join(sorted(ARCHITECTURES))})")
    arch_config, rate = config.get("arch_config"), config.get("data_rate")
    if not isinstance(arch_config, dict):
        raise CheckpointError(f"{where}, entry 'arch_config' must be a mapping, got {type(arch_config).__name__}")
    if rate is not None and (not isinstance(rate, int) or isinstance(rate, bool) or rate < 1):
        raise CheckpointError(f"{where}, entry 'data_rate' must be a positive integer or null, got {rate!r}")
    if not class_names:
        raise CheckpointError(f"{where.split(': key')[0]}: key 'class_names' must list the classes of a classifier")
    try:
        model = ARCHITECTURES[config["arch"]](**arch_config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}, entry 'arch_config' does not build a {config['arch']}: {e}") from e
    outputs = getattr(getattr(model, "classifier", None), "out_features", len(class_names))
    if outputs != len(class_names):
        raise CheckpointError(f"{where.split(': key')[0]}: key 'class_names' lists {len(class_names)} classes, "
                              f"the model built from key 'config' has {outputs} outputs")
    return Classifier(model, class_names, rate, "", meta=provenance, arch_config=arch_config), model


#: How a :class:`Classifier` goes into a model folder and back (``save_pretrained`` finds it as the
#: class's ``folder_kind``; :func:`load_classifier` passes it to ``load_folder``): no registration.
CLASSIFIER_FOLDER_KIND = FolderKind("classifier", Classifier, _folder_parts, _folder_build)
Classifier.folder_kind = CLASSIFIER_FOLDER_KIND
