"""Training: configs, data, tasks, the loop, checkpoints, logging and dataset splits.

Modules, one concern each:

- :mod:`~sashimi.train.config`: :class:`TrainConfig`, ``key=value`` overrides, YAML, ``--help`` text;
- :mod:`~sashimi.train.data`: file lists, cropped datasets, resumable samplers, collation;
- :mod:`~sashimi.train.tasks`: what the loop needs to know about a kind of model (AR, DiffWave);
- :mod:`~sashimi.train.loop`: the training loop (one process or DDP);
- :mod:`~sashimi.train.checkpoint`: atomic training checkpoints, RNG states;
- :mod:`~sashimi.train.runtime`: devices, the process group, clean stopping;
- :mod:`~sashimi.train.log`: progress, stdout and TensorBoard;
- :mod:`~sashimi.train.split`: train / valid / test CSV splits of known datasets.

Run it with ``python train.py key=value ...`` or ``python -m sashimi train key=value ...``.
"""
from .config import ConfigError, TrainConfig, build_config
from .loop import launch, make_optimizer, train

__all__ = ["ConfigError", "TrainConfig", "build_config", "launch", "make_optimizer", "train"]
