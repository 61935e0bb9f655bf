"""The training loop: one process, or many under ``torchrun`` (DDP), for any :mod:`sashimi.train.tasks` task.

Read top to bottom: :func:`launch` picks single-process, torchrun or self-spawned DDP;
:func:`train` sets up the device, model, optimizer, data and resume state, then runs
:func:`_loop`. Rank 0 alone prints, logs and writes checkpoints; validation is sharded over the
ranks and reduced, so that every rank takes the same learning-rate decisions.

Exact resumption: model, optimizer, scheduler, grad scaler, step, position in the epoch and every
RNG (torch, CUDA, numpy, python; per rank) are checkpointed, and the data order and crops are
functions of (seed, epoch, index) (see :mod:`sashimi.data.datasets`), so N steps + resume + M steps gives
the same parameters as N + M steps in one go.

Mixed precision: ``precision=auto`` autocasts to bf16 on GPUs with native bf16 (compute
capability 8.0 or later); ``precision=bf16`` also autocasts on a CPU. The S4 kernel
itself must stay in float32 (an autocast-disabled region in :mod:`sashimi.s4`); losses are
computed in float32.
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader

from ..config import config_from_dict
from ..data.datasets import (CropDataset, ResumableSampler, ShardSampler, UtteranceDataset, batches_per_epoch, class_names_of,
                   decoded_bytes, file_labels, list_audio_files)
from ..errors import OutputError
from ..persistence.outputs import RunLock
from .tasks import Task, get_task
from .checkpoint import (check_training_checkpoint, claim_run_directory, get_rng_state, load_latest_checkpoint,
                         load_training_checkpoint, save_training_checkpoint, set_rng_state)
from .config import ConfigError, TrainConfig, config_to_dict, config_to_yaml, validate_config
from .log import TrainLogger
from .runtime import Runtime, StopFlag, quiet_worker, setup_runtime, stop_loader_workers, track_loader_workers

__all__ = ["launch", "train", "make_optimizer", "train_step", "autocast", "resolve_precision"]


# ---- processes ------------------------------------------------------------------------------------
def launch(cfg: TrainConfig) -> dict | None:
    """Train with ``cfg``: directly, as one torchrun worker, or by spawning
    ``distributed.n_gpus_per_node`` local processes (the seed's way; torchrun is preferred).

    Returns:
        :func:`train`'s summary (None on a spawning parent).
    """
    n = cfg.distributed.n_gpus_per_node * cfg.distributed.n_nodes
    if "WORLD_SIZE" in os.environ or n == 1:
        return train(cfg)
    if cfg.distributed.n_nodes > 1:
        raise ConfigError("multi-node training: start this script with torchrun on every node "
                          "(torchrun --nnodes=N --nproc_per_node=G --rdzv_endpoint=HOST:PORT train.py ...)")
    import torch.multiprocessing as mp

    url = cfg.distributed.dist_url
    host, _, port = url.removeprefix("tcp://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"config key 'distributed.dist_url' must look like tcp://HOST:PORT, got {url!r}")
    mp.spawn(_spawned, args=(cfg, n, host, port), nprocs=n, join=True)
    return None


def _spawned(rank: int, cfg: TrainConfig, world: int, host: str, port: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR=host,
                      MASTER_PORT=port)
    train(cfg)


# ---- optimisation --------------------------------------------------------------------------------
def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; parameters carrying an ``_optim`` dict (the S4 state) get their own group with
    those settings (lr = model_cfg.lr, no weight decay)."""
    base, special = [], {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        hp = getattr(p, "_optim", None)
        if hp is None:
            base.append(p)
        else:
            special.setdefault(tuple(sorted((k, v) for k, v in hp.items() if v is not None)), []).append(p)
    groups = [{"params": base, "weight_decay": cfg.weight_decay}]
    groups += [{"params": ps, **dict(hp)} for hp, ps in special.items()]
    opt = torch.optim.AdamW(groups, lr=cfg.start_lr, weight_decay=cfg.weight_decay)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    return opt


def _keep_configured_rates(optimizer: torch.optim.Optimizer, configured: list[dict]) -> list[str]:
    """After loading a resumed optimizer's state, this run's settings win over the checkpoint's:
    each group's base learning rate (``start_lr``; ``model_cfg.lr`` for the S4 group) and weight
    decay. The schedule's progress is kept: the current rate is rescaled by new base / old base.
    (Loading alone would train at the old rate while the checkpoints record the new one.)

    Args:
        optimizer: with the resumed state loaded.
        configured: its param groups as :func:`make_optimizer` built them from this run's config.

    Returns:
        a line per changed setting.
    """
    notes = []
    for i, (group, want) in enumerate(zip(optimizer.param_groups, configured)):
        name = "start_lr" if i == 0 else f"the learning rate of parameter group {i} (model_cfg.lr)"
        old, new = group.get("initial_lr", group["lr"]), want["initial_lr"]
        if old != new:
            factor = group["lr"] / old if old else 1.0
            group["initial_lr"], group["lr"] = new, new * factor
            notes.append(f"{name} {new:g} instead of the checkpoint's {old:g}: the rate is now {group['lr']:g} "
                         f"(the schedule's factor so far, {factor:g}, is kept)")
        if group.get("weight_decay") != want["weight_decay"]:
            notes.append(f"weight_decay {want['weight_decay']:g} instead of the checkpoint's "
                         f"{group.get('weight_decay'):g}" + ("" if i == 0 else f" (parameter group {i})"))
            group["weight_decay"] = want["weight_decay"]
    return notes


def _keep_configured_schedule(scheduler, settings: dict) -> list[str]:
    """The plateau schedule's settings of this run (``plateau_factor``, ``plateau_patience``,
    ``plateau_min_lr``) over the resumed checkpoint's; its progress (best value, bad epochs) is kept."""
    notes = []
    for key, value in settings.items():
        if getattr(scheduler, key) != value:
            notes.append(f"plateau {key} {value} instead of the checkpoint's {getattr(scheduler, key)}")
            setattr(scheduler, key, value)
    return notes


def _step_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig, step: int) -> None:
    factor = cfg.lr_gamma ** sum(step >= m for m in cfg.lr_milestones)
    for g in opt.param_groups:
        g["lr"] = g["initial_lr"] * factor


def resolve_precision(precision: str, device: torch.device, fp16: bool = False) -> str:
    """What a run's ``precision`` setting means on ``device``.

    Args:
        precision: 'auto', 'bf16', 'fp16' or 'fp32' (the config key).
        device: the training device.
        fp16: the seed's switch (``fp16=true`` with ``precision=auto`` means fp16).

    Returns:
        'bf16', 'fp16' or 'fp32'. ``auto`` is bf16 on a GPU with bf16 arithmetic (compute
        capability 8.0 or later, or ROCm), else fp32; on a CPU bf16 is opt-in (``precision=bf16``).

    Raises:
        ConfigError: fp16 on a CPU (its gradient scaler and kernels are CUDA's).
    """
    p = "fp16" if fp16 and precision == "auto" else precision
    if p == "auto":
        if device.type != "cuda":
            return "fp32"
        # Not torch.cuda.is_bf16_supported(): it also says yes where bf16 is only emulated
        # (compute capability 7.x: V100, T4), which is slower than fp32 there, and it asks about
        # the current device rather than this run's.
        native = torch.version.hip is not None or torch.cuda.get_device_capability(device)[0] >= 8
        return "bf16" if native else "fp32"
    if p == "fp16" and device.type != "cuda":
        raise ConfigError("precision=fp16 (or fp16=true) needs a GPU; use fp32 or bf16 on CPU")
    return p


# ---- data ------------------------------------------------------------------------------------------
def _class_labels(cfg: TrainConfig, train_files: list[str], valid_files: list[str] | None):
    """(model_cfg with the class names, train label indices, valid label indices) for labels=...

    The class names come from the training data, or from model_cfg when it has them (a resumed or
    fine-tuned conditional model): then every label must be one of them.
    """
    m = cfg.model_cfg
    conditional = bool(getattr(m, "num_classes", 0))
    if cfg.labels == "none":
        if conditional:
            raise ConfigError(f"the model is class-conditional ({m.num_classes} classes): set labels= to fsdd, folder or "
                              "csv to train it on labelled data")
        return m, None, None
    train_labels = file_labels(cfg.train_csv, train_files, cfg.labels, cfg.label_column)
    valid_labels = file_labels(cfg.valid_csv, valid_files, cfg.labels, cfg.label_column) if valid_files else None
    names = list(m.class_names) if conditional else class_names_of(train_labels)
    for where, labels in ((cfg.train_csv, train_labels), (cfg.valid_csv, valid_labels or [])):
        unknown = sorted(set(labels) - set(names))
        if unknown:
            raise ConfigError(f"{where}: labels {unknown[:5]} are not classes of the model {names}"
                              + (" (its classes come from the checkpoint)" if conditional else ""))
    index = {name: i for i, name in enumerate(names)}
    m = dataclasses.replace(m, num_classes=len(names), class_names=names)
    return (m, [index[v] for v in train_labels],
            None if valid_labels is None else [index[v] for v in valid_labels])


def _datasets(cfg: TrainConfig, task: Task, rt: Runtime, log: TrainLogger):
    """(train set, valid set or None, model_cfg): the model config gains the class names with labels=."""
    rate = cfg.model_cfg.sample_rate
    train_files = list_audio_files(cfg.train_csv)
    valid_files = None
    if cfg.valid_csv and cfg.validation_interval:
        valid_files = list_audio_files(cfg.valid_csv)[: cfg.valid_max_files or None]
    model_cfg, train_labels, valid_labels = _class_labels(cfg, train_files, valid_files)
    if train_labels is not None:
        counts = np.bincount(train_labels, minlength=model_cfg.num_classes)
        log.write(f"labels ({cfg.labels}): {model_cfg.num_classes} classes {model_cfg.class_names}, "
                  f"{counts.min()}-{counts.max()} training files each, {cfg.label_dropout:.0%} shown without a label")
    cache = cfg.cache_audio
    if cache is None or cache:  # the size, from the headers, decides or is reported
        size = decoded_bytes(train_files + (valid_files or []), rate)
        if cache is None:
            cache = size <= cfg.cache_max_gib * 2**30
        log.write(f"data: {len(train_files):,d} training and {len(valid_files or []):,d} validation files, "
                  f"{size / 2**20:,.0f} MiB decoded at {rate} Hz: "
                  + ("held in memory" if cache else f"read from disk (more than cache_max_gib={cfg.cache_max_gib:g})"))

    def dataset(files, training: bool):
        labels = train_labels if training else valid_labels
        common = dict(lead=task.lead, downmix=cfg.downmix, cache=cache, labels=labels)
        if labels is not None and training and cfg.label_dropout:
            common.update(label_dropout=cfg.label_dropout, no_label=model_cfg.num_classes)
        if cfg.utterance_window:
            return UtteranceDataset(files, rate, cfg.seq_len + task.crop_extra - task.lead,
                                    fade=round(cfg.fade_ms * rate / 1000), random_place=training,
                                    max_start=None if cfg.utterance_max_start_ms is None else
                                    round(cfg.utterance_max_start_ms * rate / 1000), onset=cfg.utterance_onset,
                                    onset_margin=round(cfg.utterance_onset_margin_ms * rate / 1000),
                                    peak=cfg.utterance_peak, seed=cfg.seed,
                                    **common)
        return CropDataset(files, rate, cfg.seq_len + task.crop_extra, random_crop=training, seed=cfg.seed, **common)

    train_set = dataset(train_files, True)
    if batches_per_epoch(len(train_set), cfg.batch_size, rt.world) < 1:
        raise ConfigError(f"{cfg.train_csv}: {len(train_set)} training files are fewer than batch_size "
                          f"({cfg.batch_size}) x processes ({rt.world})")
    valid_set = dataset(valid_files, False) if valid_files else None
    return train_set, valid_set, model_cfg


def _init_from(model: nn.Module, cfg: TrainConfig, log: TrainLogger) -> None:
    """Load ``init_checkpoint``'s weights into a fresh model (fine-tuning)."""
    from ..pretrained import load_model

    source = load_model(cfg.init_checkpoint)
    mine, theirs = dataclasses.asdict(model.config), dataclasses.asdict(getattr(source, "config", None) or {})
    differ = sorted(k for k in mine if k not in ("num_classes", "class_names", "condition", "dropout", "lr")
                    and theirs.get(k) != mine[k])
    if type(source) is not type(model) or differ:
        raise ConfigError(f"init_checkpoint={cfg.init_checkpoint}: its architecture differs from model_cfg in "
                          f"{differ or 'its kind'}; set model_cfg to match it")
    result = model.load_state_dict(_label_rows_by_name(model, source, cfg.init_checkpoint), strict=False)
    if result.unexpected_keys:
        raise ConfigError(f"init_checkpoint={cfg.init_checkpoint}: parameters {result.unexpected_keys[:4]} have no "
                          "place in this model")
    kept = sorted({k.split(".")[0] for k in result.missing_keys})
    log.write(f"initialised from {cfg.init_checkpoint}" + (f" (kept their initialisation: {kept})" if kept else ""))


def _label_rows_by_name(model: nn.Module, source: nn.Module, where: str) -> dict:
    """``source``'s state dict with its label embedding's rows placed by class name for ``model``:
    row i of the new table is the vector of the source's class of the same name, and the last row
    (the "no label" class) is the source's last row. A class the source does not know cannot be
    mapped: refused, rather than let it inherit another class's vector (or fail with a size error).

    Raises:
        ConfigError: a class of ``model`` that ``source`` does not have.
    """
    state = dict(source.state_dict())
    key = "label_embedder.weight"
    theirs = state.get(key)
    if theirs is None or not hasattr(model, "label_embedder"):
        return state  # an unconditional source keeps the new label vectors; the reverse is refused after
    mine, known = list(model.config.class_names or []), list(source.config.class_names or [])
    unknown = [name for name in mine if name not in known]
    if unknown:
        raise ConfigError(f"init_checkpoint={where}: its classes are {known}; this model's class(es) {unknown} "
                          "are not among them, so their label vectors cannot be taken from it (train with the "
                          "same class names, or from an unconditional checkpoint)")
    rows = [known.index(name) for name in mine] + [len(known)]  # the "no label" row last
    state[key] = theirs[rows].clone()
    return state


def _loader(dataset, sampler, cfg: TrainConfig, task: Task, rt: Runtime, drop_last: bool) -> DataLoader:
    # Cached audio needs no decoding: worker processes would only take cores from the step.
    wanted = cfg.num_workers if cfg.num_workers is not None else (0 if dataset.cached else 8)
    workers = min(wanted, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=task.make_collate(cfg.model_cfg), drop_last=drop_last, pin_memory=rt.device.type == "cuda",
                      worker_init_fn=quiet_worker if workers else None,
                      # a private generator: creating iterators must not consume the global RNG
                      generator=torch.Generator().manual_seed(cfg.seed))


# ---- the run ---------------------------------------------------------------------------------------
def train(cfg: TrainConfig) -> dict:
    """Train ``cfg.model`` as configured (in this process; one rank under torchrun).

    Returns:
        summary dict: ``step``, ``epoch``, ``loss`` (mean over the last logged steps; rank 0),
        ``valid`` (last validation metric or None), ``checkpoint`` (last path written; rank 0),
        ``stopped`` ('max_steps', 'max_minutes' or 'signal'), ``signal`` (the number of the signal this
        process received, or None), ``model`` (this rank's trained model).
    """
    if not cfg.train_csv:
        raise ConfigError("config key 'train_csv' is required (a CSV with a 'path' column, or a directory)")
    if not cfg.checkpoint_path:
        raise ConfigError("config key 'checkpoint_path' is required (the run directory)")
    rt = setup_runtime(cfg)
    lock = None
    try:
        lock = _lock_run_directory(cfg, rt)
        return _train(cfg, rt)
    finally:
        if lock is not None:
            lock.release()
        if rt.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _lock_run_directory(cfg: TrainConfig, rt: Runtime) -> RunLock | None:
    """Rank 0 holds ``checkpoint_path`` for the whole run (:class:`sashimi.persistence.outputs.RunLock`), so that
    two runs never write checkpoints there at once, and an unwritable place fails now, not at the
    first save. Every rank raises if rank 0 could not take it."""
    lock, error = None, None
    if rt.rank == 0:
        try:
            lock = RunLock(cfg.checkpoint_path, f"checkpoint_path {cfg.checkpoint_path}")
        except OutputError as e:
            error = e
    if rt.distributed:
        ok = torch.tensor([0.0 if error is not None else 1.0], device=rt.device)
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        if float(ok) == 0.0 and error is None:
            error = OutputError(f"checkpoint_path {cfg.checkpoint_path}: rank 0 could not take it (see its message)")
    if error is not None:
        if lock is not None:
            lock.release()
        raise error
    return lock


def _resume(cfg: TrainConfig, log: TrainLogger) -> tuple[str | None, dict | None, list[str]]:
    """The checkpoint to resume from, read once: ``(path, contents, skipped)`` or ``(None, None, skipped)``;
    ``skipped``: newer checkpoints that ``resume_checkpoint=last`` passed over because they do not load."""
    if cfg.resume_checkpoint == "last":
        skipped = []
        found = load_latest_checkpoint(cfg.checkpoint_path, skipped)
        for path, reason in skipped:
            log.write(f"warning: resume_checkpoint=last: skipped {path}, which does not load ({reason})")
        skipped = [path for path, _ in skipped]
        return (found[0], check_training_checkpoint(found[1], found[0]), skipped) if found else (None, None, skipped)
    if not cfg.resume_checkpoint:
        return None, None, []
    if not os.path.isfile(cfg.resume_checkpoint):
        raise FileNotFoundError(f"resume_checkpoint not found: {cfg.resume_checkpoint}")
    return cfg.resume_checkpoint, load_training_checkpoint(cfg.resume_checkpoint), []


def _train(cfg: TrainConfig, rt: Runtime) -> dict:
    task = get_task(cfg.model)
    log = TrainLogger(cfg, rt.rank, rt.device)
    resume, ckpt, unreadable = _resume(cfg, log)
    own, notes = claim_run_directory(cfg.checkpoint_path, resume, int(ckpt["step"]) if ckpt else 0,
                                     ckpt.get("run_checkpoints") if ckpt else None, cfg.force, unreadable, rt.rank)
    for note in notes:
        log.write(f"note: {note}")
    if ckpt is not None:
        if ckpt["kind"] != task.name:
            raise ConfigError(f"{resume} holds a '{ckpt['kind']}' model, but model={task.name}")
        saved = config_from_dict(task.config_cls, dict(ckpt["config"]), where=f"{resume}: config")
        if saved != cfg.model_cfg:
            log.write(f"note: model_cfg taken from {resume}, not from the command line")
            cfg = dataclasses.replace(cfg, model_cfg=saved)
            validate_config(cfg)
    train_set, valid_set, model_cfg = _datasets(cfg, task, rt, log)  # fail on bad data before building anything
    if model_cfg != cfg.model_cfg:  # the class names found in the data
        cfg = dataclasses.replace(cfg, model_cfg=model_cfg)

    _seed_rank(cfg.seed, 0)  # the same initialisation on every rank
    model = task.build_model(cfg.model_cfg).to(rt.device)
    optimizer = make_optimizer(model, cfg)
    scheduler = None
    if cfg.lr_schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=cfg.plateau_mode, factor=cfg.plateau_factor, patience=cfg.plateau_patience,
            min_lr=cfg.plateau_min_lr)
    precision = resolve_precision(cfg.precision, rt.device, cfg.fp16)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=precision == "fp16")
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0}
    if ckpt is not None:
        model.load_state_dict(ckpt["state_dict"])
        configured = [dict(g) for g in optimizer.param_groups]
        optimizer.load_state_dict(ckpt["optimizer"])
        notes = _keep_configured_rates(optimizer, configured)
        if scheduler is not None and ckpt.get("scheduler"):
            settings = {k: getattr(scheduler, k) for k in ("factor", "patience", "min_lrs")}
            scheduler.load_state_dict(ckpt["scheduler"])
            notes += _keep_configured_schedule(scheduler, settings)
        for note in notes:
            log.write(f"note: resumed with {note}")
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        state = {k: int(ckpt[k]) for k in state}
        rngs = ckpt["rng"]
        if len(rngs) == rt.world:
            set_rng_state(rngs[rt.rank])
        else:
            log.write(f"note: {resume} was written by {len(rngs)} processes, not {rt.world}: RNG streams reseeded")
            _seed_rank(cfg.seed + 7919 * state["step"], rt.rank)
        log.write(f"resumed from {resume} at step {state['step']:,d}")
    else:
        if cfg.init_checkpoint:
            _init_from(model, cfg, log)
        _seed_rank(cfg.seed, rt.rank)  # after the init, which is identical on every rank

    net = model
    if rt.distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    if scheduler is not None and valid_set is None:
        log.write("note: no validation (valid_csv empty or validation_interval=0): the plateau schedule keeps the lr")
    log.start(model, config_to_yaml(cfg), precision, len(train_set), len(valid_set or []), rt.world)
    ctx = dict(cfg=cfg, task=task, rt=rt, model=model, net=net, optimizer=optimizer, scheduler=scheduler,
               scaler=scaler, precision=precision, log=log, state=state, train_set=train_set, valid_set=valid_set,
               own_checkpoints=own)
    try:
        return _loop(**ctx)
    finally:
        log.close()


def _seed_rank(seed: int, rank: int) -> None:
    torch.manual_seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)
    random.seed(seed + rank)


def autocast(precision: str, device: torch.device):
    """The autocast context of a run's ``precision`` ('fp32', 'bf16' or 'fp16') on ``device``
    (its type is autocast's device type, so bf16 also runs on a CPU)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def train_step(net: nn.Module, loss_fn, batch: tuple, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               precision: str, params: list[torch.Tensor], grad_clip: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step, as the training loop takes it: forward and loss under
    :func:`autocast`, backward through the grad scaler (a no-op unless fp16), clipping, update.

    Args:
        net: the model (possibly DDP-wrapped).
        loss_fn: ``(net, batch) -> scalar loss`` (a :class:`~sashimi.train.tasks.Task`'s ``loss``).
        batch: the task's batch, already on the model's device.
        optimizer, scaler: the run's optimizer and ``torch.amp.GradScaler``.
        precision: 'fp32', 'bf16' or 'fp16'.
        params: the parameters whose gradient norm is clipped and reported.
        grad_clip: clip the gradient norm to this value (0: no clipping).

    Returns:
        ``(loss, grad_norm)``: scalar tensors (the norm before clipping). The unscaled gradients
        stay in each parameter's ``.grad`` until the next step.
    """
    device = next(iter(params)).device
    optimizer.zero_grad(set_to_none=True)
    with autocast(precision, device):
        loss = loss_fn(net, batch)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    gnorm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)
    scaler.step(optimizer)
    scaler.update()
    return loss, gnorm


def _to(batch, device):
    return tuple(t.to(device, non_blocking=True) for t in batch)


def _loop(cfg, task, rt, model, net, optimizer, scheduler, scaler, precision, log, state, train_set, valid_set,
          own_checkpoints):
    sampler = ResumableSampler(len(train_set), rt.world, rt.rank, seed=cfg.seed)
    loader = _loader(train_set, sampler, cfg, task, rt, drop_last=True)
    valid_loader = None
    if valid_set is not None:
        valid_loader = _loader(valid_set, ShardSampler(len(valid_set), rt.world, rt.rank), cfg, task, rt, False)
    params = [p for p in model.parameters() if p.requires_grad]
    t_start, last_saved, last_valid, stopped = time.monotonic(), None, None, None
    ckpt_path = None

    def save():
        nonlocal last_saved, ckpt_path
        rngs = [None] * rt.world
        if rt.distributed:
            dist.all_gather_object(rngs, get_rng_state())
        else:
            rngs = [get_rng_state()]
        if rt.rank == 0:
            extra = {"train_config": config_to_dict(cfg), "cfg_yaml": config_to_yaml(cfg), **state,
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else {},
                     "scaler": scaler.state_dict() if scaler.is_enabled() else {}, "rng": rngs,
                     "valid_metric": None if last_valid is None else list(last_valid)}
            ckpt_path = save_training_checkpoint(cfg.checkpoint_path, state["step"], model, task.name, extra,
                                                 keep=cfg.keep_checkpoints, written=own_checkpoints)
            log.write(f"saved checkpoint {ckpt_path}")
        last_saved = state["step"]

    model.train()
    with StopFlag() as stop:
        while state["step"] < cfg.max_steps and stopped is None:
            sampler.set_epoch(state["epoch"], skip=state["batch_in_epoch"] * cfg.batch_size)
            train_set.set_epoch(state["epoch"])
            # under DDP only the synchronised check below may stop a rank (else the ranks would diverge)
            for batch in _guarded(loader, None if rt.distributed else stop):
                if cfg.lr_schedule == "step":
                    _step_schedule(optimizer, cfg, state["step"])
                loss, gnorm = train_step(net, task.loss, _to(batch, rt.device), optimizer, scaler, precision,
                                         params, cfg.grad_clip)
                state["step"] += 1
                state["batch_in_epoch"] += 1
                step = state["step"]
                stopped = _should_stop(cfg, stop, t_start, step, rt)
                log.train_step(step, loss.detach(), gnorm.detach(), optimizer.param_groups[0]["lr"], final=bool(stopped))

                on_interval = valid_loader is not None and step % cfg.validation_interval == 0
                # A run also ends with a validation (short runs never reach the interval), but not
                # when a signal stops it (save first); only the regular ones drive the schedule, so
                # that a run stopped by max_minutes and resumed matches an uninterrupted one.
                if valid_loader is not None and (on_interval or stopped in ("max_steps", "max_minutes")):
                    last_valid = _validate(model, valid_loader, task, rt, precision)
                    if scheduler is not None and on_interval:
                        scheduler.step(last_valid[0])
                    log.validation(step, last_valid, task, optimizer.param_groups[0]["lr"])
                    if rt.rank == 0 and task.sample is not None and cfg.audio_samples and log.writer is not None:
                        log.audio(step, _sample(model, task, cfg, step), cfg.model_cfg.sample_rate)

                if step % cfg.checkpoint_interval == 0 or stopped:
                    save()
                if stopped:
                    break
            else:
                if stop.signum is not None and not rt.distributed:  # interrupted while waiting for data
                    stopped = "signal"
                else:
                    state["epoch"] += 1
                    state["batch_in_epoch"] = 0
        if stopped == "signal" and last_saved != state["step"]:
            save()
    if stopped is None:
        stopped = "max_steps"
    log.write(f"stopped ({stopped}) at step {state['step']:,d}"
              + (f"; resume with resume_checkpoint={ckpt_path}" if ckpt_path and stopped != "max_steps" else ""))
    return {"step": state["step"], "epoch": state["epoch"], "loss": log.last_loss,
            "valid": None if last_valid is None else last_valid[1], "checkpoint": ckpt_path, "stopped": stopped,
            "signal": stop.signum, "model": model}


def _guarded(loader, stop: StopFlag | None = None):
    """Iterate the loader; once a signal arrived, end the epoch early (a worker error then too).

    Unless the epoch ran to its end (when the loader stops non-persistent workers itself), the
    worker processes are stopped here and now: after ``break``, or an error in the loader or in
    the loop body (which closes this generator as it unwinds)."""
    it = iter(loader)
    track_loader_workers(it)
    exhausted = False
    try:
        while stop is None or stop.signum is None:
            try:
                batch = next(it)
            except StopIteration:
                exhausted = True
                return
            except Exception:
                if stop is None or stop.signum is None:
                    raise
                return
            yield batch
    finally:
        if not exhausted:
            stop_loader_workers(it)


def _should_stop(cfg: TrainConfig, stop: StopFlag, t_start: float, step: int, rt: Runtime) -> str | None:
    flags = torch.tensor([float(stop.signum is not None),
                          float(cfg.max_minutes > 0 and time.monotonic() - t_start >= 60 * cfg.max_minutes)])
    if rt.distributed:  # every rank must stop at the same step
        flags = flags.to(rt.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    if flags[0] > 0:
        return "signal"
    if flags[1] > 0:
        return "max_minutes"
    return "max_steps" if step >= cfg.max_steps else None


@torch.no_grad()
def _validate(model: nn.Module, loader: DataLoader, task: Task, rt: Runtime, precision: str) -> tuple[float, float]:
    """Validation metric over all ranks' shards: (mean in natural units, reported value)."""
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=rt.device)
    for i, batch in enumerate(_guarded(loader)):
        with autocast(precision, rt.device):
            total, count = task.metric(model, _to(batch, rt.device), i)
        sums += torch.stack([total.double(), count.double()])
    model.train()
    if rt.distributed:
        dist.all_reduce(sums)
    mean = float(sums[0] / sums[1].clamp_min(1))
    return mean, mean * task.metric_scale


def _sample(model: nn.Module, task: Task, cfg: TrainConfig, step: int) -> torch.Tensor:
    model.eval()
    try:
        return task.sample(model, cfg.audio_samples, cfg.audio_sample_len, cfg.seed + step).float().cpu()
    finally:
        model.train()
