"""Training: configs, tasks, the loop, checkpoints and logging (the data it reads: :mod:`sashimi.data`).

Modules, one concern each:

- :mod:`~sashimi.train.config`: :class:`TrainConfig`, ``key=value`` overrides, YAML, ``--help`` text;
- :mod:`~sashimi.train.tasks`: what the loop needs to know about a kind of model (AR, DiffWave);
- :mod:`~sashimi.train.loop`: the training loop (one process or DDP);
- :mod:`~sashimi.train.checkpoint`: atomic training checkpoints, RNG states;
- :mod:`~sashimi.train.runtime`: devices, the process group, clean stopping;
- :mod:`~sashimi.train.log`: progress, stdout and TensorBoard.

Run it with ``python train.py key=value ...`` or ``python -m sashimi train key=value ...``.
"""
from .config import ConfigError, TrainConfig, build_config
from .loop import launch, make_optimizer, train

__all__ = ["ConfigError", "TrainConfig", "build_config", "launch", "make_optimizer", "train"]
