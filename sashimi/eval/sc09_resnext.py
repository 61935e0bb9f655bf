"""The SaShiMi paper's SC09 classifier file, ``sc09_classifier/resnext.pth``, loaded as published.

    from sashimi.eval import load_classifier
    clf = load_classifier("sc09_resnext")                 # downloaded once from the authors' release
    clf = load_classifier("path/to/resnext.pth")          # or a local copy
    probs, features = clf.predict(wavs, 16000)            # (N, 10), (N, 1024)

The file is what the authors' ``train_speech_commands.py`` wrote with ``torch.save(model)``: a
pickled whole module, ``torch.nn.DataParallel`` around their ``models.resnext.CifarResNeXt``
(ResNeXt-29, cardinality 8, base width 64, widen factor 4: 34,425,546 parameters), storages tagged
``cuda:0``. It is read by :func:`sashimi.persistence.pickled_modules.read_pickled_modules`, which
admits exactly the classes such a file names (:data:`ADMITTED_CLASSES`) and runs none of its code;
the weights then go, strictly, into this library's :class:`~sashimi.eval.models.ResNeXt`, whose
sizes are read off the file (any cardinality, depth, width). Each BatchNorm's ``eps`` is taken
from the file.

Front end (:func:`sashimi.eval.frontend.log_mel`): the authors' ``librosa.feature.melspectrogram``
at 16 kHz with librosa's defaults and ``power_to_db(ref=np.max)``. Its STFT padding depends on the
librosa version: ``reflect`` up to librosa 0.8.1, ``constant`` from 0.9.0 on. The default here is
``reflect`` (:data:`PAPER_PAD_MODE`); see ``docs/paper-evaluation.md`` for why.
"""
from __future__ import annotations

import os

from ..errors import CheckpointError
from ..persistence.pickled_modules import PickledObject, module_state_dict, read_pickled_modules
from .models import ResNeXt

__all__ = ["ADMITTED_CLASSES", "PAPER_PAD_MODE", "PAD_MODES", "SC09_CLASSES", "load_authors_resnext"]

SC09_CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

#: STFT padding of the front end the paper's numbers were computed with (librosa 0.8: reflection)
PAPER_PAD_MODE = "reflect"
#: the paddings the front end implements: librosa <= 0.8.1 ('reflect') and >= 0.9.0 ('constant')
PAD_MODES = ("reflect", "constant")

_DATA_PARALLEL = ("torch.nn.parallel.data_parallel", "DataParallel")
_RESNEXT = ("models.resnext", "CifarResNeXt")
#: every class the published file names (by module path): nothing else is admitted
ADMITTED_CLASSES = (
    _DATA_PARALLEL, _RESNEXT, ("models.resnext", "ResNeXtBottleneck"),
    ("torch.nn.modules.conv", "Conv2d"), ("torch.nn.modules.batchnorm", "BatchNorm2d"),
    ("torch.nn.modules.container", "Sequential"), ("torch.nn.modules.linear", "Linear"),
)
# the authors' hyperparameter attributes -> this library's ResNeXt arguments
_HPARAMS = {"nlabels": "n_classes", "cardinality": "cardinality", "depth": "depth", "base_width": "base_width",
            "widen_factor": "widen_factor"}


def load_authors_resnext(path: str | os.PathLike, where: str | None = None):
    """Read the authors' pickled ``DataParallel(CifarResNeXt)`` file into a :class:`ResNeXt`.

    Args:
        path: the ``.pth`` file (the published ``resnext.pth`` or one of the same kind).
        where: how to name it in errors (default: the path).

    Returns:
        (model, config): the :class:`ResNeXt` in eval mode, on the CPU, and its constructor arguments.

    Raises:
        UnsafePickleError: the pickle names a class outside :data:`ADMITTED_CLASSES` (nothing run).
        CheckpointError: another structure, hyperparameters that contradict the weights, or
            weights that do not fit.
    """
    where = where or os.fspath(path)
    root = read_pickled_modules(path, ADMITTED_CLASSES)
    if isinstance(root, PickledObject) and root.cls == ".".join(_DATA_PARALLEL):
        inner = (root.state.get("_modules") or {}).get("module")
    else:
        inner = root  # a bare CifarResNeXt (saved without the DataParallel wrapper)
    if not (isinstance(inner, PickledObject) and inner.cls == ".".join(_RESNEXT)):
        raise CheckpointError(f"{where}: expected a pickled DataParallel(models.resnext.CifarResNeXt) or "
                              f"CifarResNeXt, got {getattr(root, 'cls', type(root).__name__)}")
    state = module_state_dict(inner, where)
    try:
        config = ResNeXt.config_from_state_dict(state)
    except (KeyError, AttributeError, ValueError, IndexError, ZeroDivisionError) as e:
        raise CheckpointError(f"{where}: a CifarResNeXt of an unexpected shape ({type(e).__name__}: {e})") from e
    recorded = {ours: inner.state[theirs] for theirs, ours in _HPARAMS.items() if theirs in inner.state}
    wrong = {k: (v, config[k]) for k, v in recorded.items() if v != config[k]}
    if wrong:
        raise CheckpointError(f"{where}: the file's hyperparameters contradict its weights: "
                              + ", ".join(f"{k} = {a} but the weights say {b}" for k, (a, b) in wrong.items()))
    try:
        model = ResNeXt(**config)
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from e
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    shapes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f"{where}: the weights do not fit ResNeXt {config}: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}, wrong shape {shapes[:3]}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    _copy_batchnorm_eps(model, inner, where)
    return model.eval(), config


def _copy_batchnorm_eps(model, record: PickledObject, where: str) -> None:
    """Each BatchNorm's ``eps`` (and nothing else of its settings matters in eval mode) from the file."""
    import torch.nn as nn

    for name, module in model.named_modules():
        if not isinstance(module, nn.BatchNorm2d):
            continue
        node = record
        for part in name.split("."):
            node = (node.state.get("_modules") or {}).get(part)
        eps = node.state.get("eps", module.eps) if isinstance(node, PickledObject) else module.eps
        if not isinstance(eps, float) or not eps > 0:
            raise CheckpointError(f"{where}: {name}.eps is {eps!r}, expected a positive float")
        module.eps = eps
