"""Training tasks: what the generic training loop needs to know about a kind of model.

A :class:`Task` bundles a model builder, the data layout (crop and collate), the training loss,
a validation metric and an optional sampler for listening to progress. The loop in
:mod:`sashimi.train.loop` knows nothing else about the model, so a new kind of model plugs in with
:func:`register_task`.

- ``ar``: :class:`~sashimi.SashimiAR` on mu-law tokens; cross-entropy over the real (unpadded)
  samples; validation metric: NLL in bits per sample.
- ``diffwave``: :class:`~sashimi.diffwave.SashimiDiffWave`; noise-prediction MSE at a uniformly
  drawn diffusion step; validation metric: the same MSE with fixed steps and noise.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.datasets import ARCollate, WaveCollate

__all__ = ["Task", "TASKS", "get_task", "register_task"]


@dataclass
class Task:
    """A kind of model the trainer can train.

    Attributes:
        name: the ``model=`` key value; also the checkpoint ``kind``.
        config_cls: the ``model_cfg`` dataclass.
        build_model: config -> nn.Module (with a ``config`` attribute).
        crop_extra, lead: the dataset window is ``seq_len + crop_extra`` samples of the waveform
            prefixed with ``lead`` zeros (AR: 1 and 1, so that inputs start from silence).
        make_collate: model config -> collate function, items ``(wave (crop,), valid)`` -> a
            batch (tuple of tensors).
        loss: ``(model, batch) -> scalar loss``; ``model`` may be DDP-wrapped: call it, do not
            call its methods.
        metric: ``(model, batch, batch_index) -> (sum, count)`` of the validation metric
            (deterministic: it must not touch the global RNG).
        metric_name, metric_scale: name of the reported value and the factor from sum/count to it.
        sample: ``(model, n, length, seed) -> (n, length) audio`` or None.
        train_defaults: training-config defaults that differ from the AR recipe.
    """

    name: str
    config_cls: type
    build_model: Callable[[Any], nn.Module]
    make_collate: Callable[[Any], Callable]
    loss: Callable
    metric: Callable
    metric_name: str
    metric_scale: float = 1.0
    crop_extra: int = 0
    lead: int = 0
    sample: Callable | None = None
    train_defaults: dict = field(default_factory=dict)


# ---- autoregressive ---------------------------------------------------------------------------
def _ar_nll(model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y, lengths, *labels = batch  # labels: (B,) for a class-conditional model
    logits = model(x, labels=labels[0]) if labels else model(x)  # (B, L, mu)
    nll = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none")  # (B, L)
    mask = torch.arange(y.size(1), device=y.device) < lengths[:, None]
    return (nll * mask).sum(), mask.sum()


def ar_loss(model: nn.Module, batch) -> torch.Tensor:
    """Mean cross-entropy (nats) over the real targets; padding excluded."""
    total, count = _ar_nll(model, batch)
    return total / count.clamp_min(1)


def ar_metric(model: nn.Module, batch, batch_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    return _ar_nll(model, batch)


def ar_sample(model: nn.Module, n: int, length: int, seed: int) -> torch.Tensor:
    return model.unconditional_generate(n, length=length, progress=False, seed=seed)


def _build_ar(config):
    from ..ar import SashimiAR

    return SashimiAR(config)


def _ar_task() -> Task:
    from ..config import ARConfig

    return Task(name="ar", config_cls=ARConfig, build_model=_build_ar,
                make_collate=lambda config: ARCollate(config.mu_levels, config.quantization), loss=ar_loss, metric=ar_metric, metric_name="nll_bits", metric_scale=1 / math.log(2), crop_extra=1, lead=1,
                sample=ar_sample)


# ---- diffusion --------------------------------------------------------------------------------
def _schedule(model: nn.Module):
    inner = getattr(model, "module", model)  # unwrap DDP
    return inner.schedule


def _noise_fn(model: nn.Module, labels: list):
    """The noise predictor the loss calls: the (possibly DDP-wrapped) model itself, with the
    batch's labels for a class-conditional model (label dropout already applied by the data)."""
    if not labels:
        return model
    return lambda x, t: model(x, t, labels[0])


def diffwave_loss(model: nn.Module, batch) -> torch.Tensor:
    """Noise-prediction MSE (padding is part of the signal, as in the seed's DiffWave training)."""
    from ..diffusion import training_loss

    audio, _, *labels = batch  # labels: (B,) for a class-conditional model
    return training_loss(_noise_fn(model, labels), audio, _schedule(model))


def diffwave_metric(model: nn.Module, batch, batch_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    from ..diffusion import training_loss

    audio, _, *labels = batch
    gen = torch.Generator(device=audio.device).manual_seed(1_000_003 * (batch_index + 1))
    loss = training_loss(_noise_fn(model, labels), audio, _schedule(model), generator=gen)
    return loss * audio.size(0), torch.tensor(audio.size(0), device=audio.device)


def diffwave_sample(model: nn.Module, n: int, length: int, seed: int) -> torch.Tensor:
    pool = model.sashimi.total_pool
    length = max(pool, min(model.config.l_max, length // pool * pool))
    return model.unconditional_generate(n, progress=False, steps="fast", seed=seed, length=length)


def _diffwave_task() -> Task:
    module = importlib.import_module("sashimi.diffwave")
    from ..config import DiffWaveConfig

    return Task(name="diffwave", config_cls=DiffWaveConfig, build_model=module.SashimiDiffWave,
                make_collate=lambda config: WaveCollate(), loss=diffwave_loss, metric=diffwave_metric, metric_name="mse",
                sample=diffwave_sample,
                train_defaults={"start_lr": 2e-4, "max_steps": 800_000, "lr_schedule": "step",
                                "lr_milestones": [500_000], "lr_gamma": 0.2, "seed": 123})


# name -> factory (tasks are built on first use so that optional modules load lazily)
TASKS: dict[str, Callable[[], Task]] = {"ar": _ar_task, "diffwave": _diffwave_task}
_BUILT: dict[str, Task] = {}


def register_task(name: str, factory: Callable[[], Task]) -> None:
    """Make ``model=name`` trainable."""
    TASKS[name] = factory
    _BUILT.pop(name, None)


def get_task(name: str) -> Task:
    """The task for ``model=name``.

    Raises:
        ValueError: unknown name.
    """
    if name not in TASKS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(TASKS)}")
    if name not in _BUILT:
        _BUILT[name] = TASKS[name]()
    return _BUILT[name]
