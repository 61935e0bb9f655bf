"""Training configuration: dataclasses, ``key=value`` overrides, YAML files and ``--help`` text.

Defaults are the seed's SC09 recipe. Key names follow the seed (``train_csv``, ``batch_size``,
``model_cfg.d_model``, ``distributed.n_gpus_per_node``, ...), so its command lines and its
``cfg_yaml`` files keep working. Precedence: defaults < the model task's defaults (e.g.
``model=diffwave``) < YAML file < command line.

Values on the command line are parsed by the type of their key: ``batch_size=8``,
``start_lr=4e-3``, ``fp16=true``, ``model_cfg.pool=[4,4]``, ``resume_checkpoint=`` (empty).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import ConfigError

__all__ = ["TrainConfig", "DistributedConfig", "build_config", "config_to_dict", "config_to_yaml",
           "parse_overrides", "help_text", "ConfigError"]


def _f(default, help: str, factory=None):
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class DistributedConfig:
    """Multi-process settings. Prefer launching with ``torchrun`` (which sets RANK/WORLD_SIZE)."""

    dist_backend: str = _f("auto", "process-group backend: auto (nccl on GPU, gloo on CPU), nccl or gloo")
    dist_url: str = _f("tcp://localhost:54321", "rendezvous address when this script spawns its own processes")
    n_nodes: int = _f(1, "nodes (more than one: launch with torchrun on each node)")
    n_gpus_per_node: int = _f(1, "processes to spawn on this node when not launched by torchrun")


@dataclass
class TrainConfig:
    """Everything a training run needs besides the model architecture (``model_cfg``)."""

    model: str = _f("ar", "model task: ar (autoregressive, mu-law) or diffwave (diffusion)")
    model_cfg: Any = _f(None, "model architecture (fields below)", factory=lambda: _model_config_cls("ar")())
    distributed: DistributedConfig = _f(None, "multi-process settings", factory=DistributedConfig)
    # data
    train_csv: str = _f("", "training data: CSV with a 'path' column, or a directory of audio files")
    valid_csv: str = _f("", "validation data (same forms); empty: no validation")
    sample_rate: typing.Optional[int] = _f(None, "audio rate; overrides model_cfg.sample_rate (files are resampled to it)")
    seq_len: int = _f(16000, "training crop length in samples (<= model_cfg.l_max)")
    downmix: bool = _f(False, "average multi-channel files to mono (else they are refused)")
    utterance_window: bool = _f(False, "place each whole file at a random position in a seq_len window of silence that "
                                        "counts in the loss (short utterances: FSDD, SC09); longer files are cropped")
    fade_ms: float = _f(5.0, "with utterance_window: fade each word in and out over this many milliseconds")
    utterance_max_start_ms: typing.Optional[float] = _f(None, "with utterance_window: the word starts at most this many "
                                                              "milliseconds into the window (none: anywhere it fits)")
    utterance_onset: typing.Optional[float] = _f(None, "with utterance_window: cut each recording's quiet lead-in so the "
                                                      "word starts at once: at its first sample reaching this "
                                                      "fraction of the file's peak (e.g. 0.05), less "
                                                      "utterance_onset_margin_ms (none: keep the recordings as they are)")
    utterance_onset_margin_ms: float = _f(0.0, "with utterance_onset: milliseconds kept before the onset")
    utterance_peak: typing.Optional[float] = _f(None, "with utterance_window: scale each recording to this peak "
                                                     "magnitude, e.g. 0.5 (none: as recorded)")
    cache_audio: typing.Optional[bool] = _f(None, "hold the decoded audio in memory: true, false or none (default: "
                                                  "when it takes at most cache_max_gib)")
    cache_max_gib: float = _f(2.0, "size limit of cache_audio=none, in GiB of float32 samples")
    num_workers: typing.Optional[int] = _f(None, "DataLoader worker processes (capped at the CPU count); none: 0 when "
                                                 "the audio is cached (nothing to decode), else 8")
    valid_max_files: int = _f(0, "validate on the first N validation files only (0: all)")
    labels: str = _f("none", "class labels for a class-conditional model: none, fsdd (the digit of an FSDD file name, "
                             "7_theo_12.wav), folder (the parent folder's name: Speech Commands) or csv (label_column)")
    label_column: str = _f("label", "with labels=csv: the CSV column that holds each file's class")
    label_dropout: float = _f(0.15, "with labels: the fraction of training items shown with the 'no label' class, so "
                                    "that the model also generates without a label")
    # optimisation
    batch_size: int = _f(8, "batch size per process")
    start_lr: float = _f(4e-3, "AdamW learning rate (S4 state parameters use model_cfg.lr, no weight decay)")
    weight_decay: float = _f(0.0, "AdamW weight decay of the other parameters")
    grad_clip: float = _f(0.0, "clip the gradient norm to this value (0: off)")
    lr_schedule: str = _f("plateau", "plateau (on the validation loss), step (x lr_gamma at lr_milestones) or constant")
    plateau_mode: str = _f("min", "ReduceLROnPlateau mode")
    plateau_factor: float = _f(0.2, "ReduceLROnPlateau factor")
    plateau_patience: int = _f(20, "ReduceLROnPlateau patience, in validations")
    plateau_min_lr: float = _f(0.0, "ReduceLROnPlateau minimum learning rate")
    lr_milestones: typing.List[int] = _f(None, "steps at which the step schedule multiplies the lr by lr_gamma", factory=list)
    lr_gamma: float = _f(0.2, "step schedule factor")
    max_steps: int = _f(1_100_000, "optimizer steps to train for")
    max_minutes: float = _f(0.0, "wall-clock budget in minutes; then checkpoint and stop (0: none)")
    # hardware
    device: str = _f("auto", "auto (CUDA if available), cuda, cuda:N or cpu")
    precision: str = _f("auto", "auto (bf16 autocast on a GPU with native bf16, compute capability 8.0+; "
                                   "else fp32), bf16 (also on CPU: slower there without avx512_bf16/amx), "
                                   "fp16 (GPU) or fp32")
    fp16: bool = _f(False, "seed switch: fp16 autocast with a gradient scaler (same as precision=fp16)")
    seed: int = _f(1775, "random seed (model init, data order, crops)")
    # checkpoints and logging
    checkpoint_path: str = _f("", "run directory: checkpoints ckpt_XXXXXXXX.pt and TensorBoard logs")
    checkpoint_interval: int = _f(2500, "save a checkpoint every N steps")
    keep_checkpoints: int = _f(5, "keep the last K checkpoints (0: keep all)")
    resume_checkpoint: str = _f("", "checkpoint to resume from; 'last': the newest in checkpoint_path (if any)")
    init_checkpoint: str = _f("", "start a new run (step 0, fresh optimizer) from these weights (any file load_model "
                                  "reads): fine-tuning; parameters it lacks, such as a new label embedding, keep "
                                  "their initialisation")
    force: bool = _f(False, "start although checkpoint_path holds checkpoints of another run (or, when resuming, "
                            "later ones): they are moved to checkpoint_path/earlier_run_N/, never deleted")
    validation_interval: int = _f(1000, "validate every N steps (0: never)")
    summary_interval: int = _f(25, "TensorBoard scalars every N steps")
    stdout_interval: int = _f(100, "print a summary line every N steps")
    progress: bool = _f(True, "show a tqdm progress bar")
    tensorboard: bool = _f(True, "write TensorBoard logs (when the tensorboard package is installed)")
    audio_samples: int = _f(2, "audio samples generated and logged to TensorBoard at each validation (0: none)")
    audio_sample_len: int = _f(4000, "length of those samples, in samples")


_CHOICES = {"model": None, "lr_schedule": ("plateau", "step", "constant"), "plateau_mode": ("min", "max"),
            "precision": ("auto", "bf16", "fp16", "fp32"), "labels": ("none", "fsdd", "folder", "csv"), "distributed.dist_backend": ("auto", "nccl", "gloo")}
# Seed model_cfg keys that this library accepts but ignores (see sashimi.config).
_MODEL_CFG_EXTRA = {"trainable": dict, "diffwave": bool}


def _model_config_cls(model: str):
    from .tasks import get_task

    return get_task(model).config_cls


# ---- parsing ------------------------------------------------------------------------------------
class _Raw(str):
    """A value typed on the command line: converted by the type of its key."""


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """``['a=1', 'b.c=x']`` -> nested ``{'a': '1', 'b': {'c': 'x'}}`` (values still strings)."""
    out: dict[str, Any] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        key = key.strip().lstrip("-") if key.startswith("--") else key.strip()
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {arg!r} (see --help for the keys)")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is not a section")
        node[parts[-1]] = _Raw(value)
    return out


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert/check ``value`` against the annotation ``tp``; raise ConfigError naming ``key``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        if value is None or (isinstance(value, _Raw) and value.strip().lower() in ("none", "null", "~", "")):
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if tp is Any:
        return value
    if isinstance(value, _Raw):
        text = value.strip()
        try:
            if tp is bool:
                low = text.lower()
                if low in ("true", "yes", "on", "1"):
                    return True
                if low in ("false", "no", "off", "0"):
                    return False
                raise ValueError
            if tp is int:
                try:
                    return int(text.replace("_", ""))
                except ValueError:
                    f = float(text)
                    if not f.is_integer():
                        raise
                    return int(f)
            if tp is float:
                return float(text.replace("_", ""))
            if tp is str:
                return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text
            parsed = yaml.safe_load(text) if text else None
        except (ValueError, yaml.YAMLError):
            raise ConfigError(f"config key '{key}' expects {_type_name(tp)}, got {str(value)!r}") from None
        if origin in (list, tuple) or tp in (list, tuple):
            parsed = [] if parsed is None else parsed if isinstance(parsed, list) else [parsed]
        return _coerce(parsed, tp, key)
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str),
          list: lambda v: isinstance(v, (list, tuple)),
          dict: lambda v: isinstance(v, dict)}.get(origin or tp)
    if ok is None or not ok(value):
        raise ConfigError(f"config key '{key}' expects {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is float:
        return float(value)
    if origin is list and args:
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    return list(value) if (origin or tp) is list else value


def _type_name(tp) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{_type_name(inner[0])} or none"
    return getattr(tp, "__name__", str(tp))


def _build(cls, values: dict, prefix: str, defaults: dict | None = None, extra: dict | None = None) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    extra = extra or {}
    unknown = [k for k in values if k not in names and k not in extra]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(k, names, n=1)
        hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown config key '{prefix}{k}'{hint}; see --help for the keys")
    kwargs = dict(defaults or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k, v in values.items():
        tp = extra.get(k) or _refine_list(fields[k], hints[k])
        if dataclasses.is_dataclass(tp) and not isinstance(v, dict):
            raise ConfigError(f"config key '{prefix}{k}' is a section; set its fields as {prefix}{k}.<field>=...")
        kwargs[k] = v if dataclasses.is_dataclass(tp) else _coerce(v, tp, prefix + k)
    for k in extra:
        kwargs.pop(k, None)
    return kwargs


def _refine_list(f: dataclasses.Field, tp):
    """A bare ``list`` field whose default holds ints (e.g. ``pool``) takes ints only."""
    if tp is list and f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
        if default and all(isinstance(x, int) and not isinstance(x, bool) for x in default):
            return typing.List[int]
    return tp


def build_config(overrides: list[str] | dict | None = None, yaml_path: str | None = None) -> "TrainConfig":
    """Build a :class:`TrainConfig` from defaults, an optional YAML file and overrides.

    Args:
        overrides: ``key=value`` strings (nested keys with dots), or a nested dict of typed values.
        yaml_path: a YAML file with (some of) the keys, nested as in ``config_to_yaml``.

    Returns:
        the validated config.

    Raises:
        ConfigError: unknown key, wrong type or invalid value (the message names the key).
        FileNotFoundError: ``yaml_path`` does not exist.
    """
    values: dict = {}
    if yaml_path:
        if not os.path.isfile(yaml_path):
            raise FileNotFoundError(f"config file not found: {yaml_path}")
        with open(yaml_path, encoding="utf-8") as f:
            try:
                loaded = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"{yaml_path}: not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{yaml_path}: expected a mapping of config keys, got {type(loaded).__name__}")
        values = loaded
    if overrides:
        values = _merge(values, overrides if isinstance(overrides, dict) else parse_overrides(list(overrides)))
    model_values = values.pop("model_cfg", None) or {}
    dist_values = values.pop("distributed", None) or {}
    for name, section in (("model_cfg", model_values), ("distributed", dist_values)):
        if not isinstance(section, dict):
            raise ConfigError(f"config key '{name}' is a section; set its fields as {name}.<field>=...")
    model = values.get("model")
    if model is None:
        flag = model_values.get("diffwave", False)
        model = "diffwave" if _coerce(flag, bool, "model_cfg.diffwave") else "ar"
    from .tasks import TASKS, get_task

    if str(model) not in TASKS:
        raise ConfigError(f"config key 'model' must be one of {sorted(TASKS)}, got {str(model)!r}")
    task = get_task(str(model))
    values["model"] = str(model)
    kwargs = _build(TrainConfig, values, "", defaults=dict(task.train_defaults))
    dist = DistributedConfig(**_build(DistributedConfig, dist_values, "distributed."))
    model_kwargs = _build(task.config_cls, model_values, "model_cfg.", extra=_MODEL_CFG_EXTRA)
    trainable = _coerce(model_values.get("trainable") or {}, dict, "model_cfg.trainable")
    frozen = [k for k, v in trainable.items() if not _coerce(v, bool, f"model_cfg.trainable.{k}")]
    if frozen:
        warnings.warn(f"model_cfg.trainable: freezing {frozen} is not supported; all S4 parameters are trained",
                      stacklevel=2)
    if kwargs.get("sample_rate") is not None:
        model_kwargs["sample_rate"] = kwargs["sample_rate"]
    try:
        model_cfg = task.config_cls(**model_kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model_cfg: {e}") from e
    cfg = TrainConfig(**{**kwargs, "model_cfg": model_cfg, "distributed": dist})
    validate_config(cfg)
    return cfg


def validate_config(cfg: TrainConfig) -> None:
    """Check ranges and combinations; raise ConfigError naming the key."""
    for key, choices in _CHOICES.items():
        if choices is None:
            continue
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if value not in choices:
            raise ConfigError(f"config key '{key}' must be one of {list(choices)}, got {value!r}")
    for key in ("batch_size", "seq_len", "max_steps", "checkpoint_interval", "summary_interval", "stdout_interval"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"config key '{key}' must be >= 1, got {getattr(cfg, key)}")
    if cfg.num_workers is not None and cfg.num_workers < 0:
        raise ConfigError(f"config key 'num_workers' must be >= 0 or none, got {cfg.num_workers}")
    for key in ("valid_max_files", "validation_interval", "keep_checkpoints", "audio_samples",
                "plateau_patience"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"config key '{key}' must be >= 0, got {getattr(cfg, key)}")
    for key in ("start_lr", "weight_decay", "grad_clip", "max_minutes", "plateau_min_lr", "fade_ms", "cache_max_gib"):
        v = getattr(cfg, key)
        if not (math.isfinite(v) and v >= 0) or (key == "start_lr" and v == 0):
            raise ConfigError(f"config key '{key}' must be a finite number {'> 0' if key == 'start_lr' else '>= 0'}, got {v}")
    if not 0.0 <= cfg.label_dropout < 1.0:
        raise ConfigError(f"config key 'label_dropout' must be in [0, 1), got {cfg.label_dropout}")
    if cfg.labels != "none" and not hasattr(cfg.model_cfg, "num_classes"):
        raise ConfigError(f"labels={cfg.labels}: model={cfg.model} does not support class conditioning (use model=ar or model=diffwave)")
    if cfg.resume_checkpoint and cfg.init_checkpoint:
        raise ConfigError("set resume_checkpoint (continue a run) or init_checkpoint (start one from weights), not both")
    v = cfg.utterance_onset
    if v is not None and not (math.isfinite(v) and 0 < v <= 1):
        raise ConfigError(f"config key 'utterance_onset' must be in (0, 1] (a fraction of the peak) or none, got {v}")
    if not (math.isfinite(cfg.utterance_onset_margin_ms) and cfg.utterance_onset_margin_ms >= 0):
        raise ConfigError(f"config key 'utterance_onset_margin_ms' must be a finite number >= 0, "
                          f"got {cfg.utterance_onset_margin_ms}")
    v = cfg.utterance_peak
    if v is not None and not (math.isfinite(v) and 0 < v <= 1):
        raise ConfigError(f"config key 'utterance_peak' must be in (0, 1] or none, got {v}")
    v = cfg.utterance_max_start_ms
    if v is not None and not (math.isfinite(v) and v >= 0):
        raise ConfigError(f"config key 'utterance_max_start_ms' must be a finite number >= 0 or none, got {v}")
    if not 0 < cfg.plateau_factor < 1 or not 0 < cfg.lr_gamma <= 1:
        raise ConfigError("config keys 'plateau_factor' and 'lr_gamma' must be in (0, 1)")
    if cfg.audio_sample_len < 1:
        raise ConfigError(f"config key 'audio_sample_len' must be >= 1, got {cfg.audio_sample_len}")
    m = cfg.model_cfg
    if cfg.seq_len > m.l_max:
        raise ConfigError(f"config key 'seq_len' ({cfg.seq_len}) must be <= model_cfg.l_max ({m.l_max}): "
                          "the S4 kernels are defined up to l_max")
    total_pool = math.prod(m.pool)
    if cfg.seq_len % total_pool:
        raise ConfigError(f"config key 'seq_len' ({cfg.seq_len}) must be a multiple of the total pooling "
                          f"{total_pool} (model_cfg.pool={m.pool})")
    d = cfg.distributed
    if d.n_nodes < 1 or d.n_gpus_per_node < 1:
        raise ConfigError("config keys 'distributed.n_nodes' and 'distributed.n_gpus_per_node' must be >= 1")


# ---- output ---------------------------------------------------------------------------------------
def config_to_dict(cfg: TrainConfig) -> dict:
    """Nested plain dict (YAML / checkpoint friendly)."""
    return dataclasses.asdict(cfg)


def config_to_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def _rows(cls, prefix: str) -> list[tuple[str, str, str, str]]:
    hints = typing.get_type_hints(cls)
    rows = []
    doc = _attribute_docs(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) or f.name == "model_cfg":
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_ = f.metadata.get("help") or doc.get(f.name, "")
        rows.append((prefix + f.name, _type_name(tp), repr(default) if isinstance(default, str) else str(default), help_))
    return rows


def _attribute_docs(cls) -> dict[str, str]:
    """'name: text' lines of an 'Attributes:' docstring section."""
    out = {}
    for line in (cls.__doc__ or "").splitlines():
        name, sep, text = line.strip().partition(": ")
        if sep:
            for n in name.split(","):
                out[n.strip()] = text.strip()
    return out


def help_text() -> str:
    """Every config key with its type, default and meaning (for ``--help``)."""
    from .tasks import TASKS, get_task

    lines = ["config keys (key=value; nested keys with dots, e.g. model_cfg.d_model=32;",
             "lists as [4,4]; booleans true/false; an empty value for an empty string):", ""]

    def table(rows):
        for key, tp, default, text in rows:
            lines.append(f"  {key:<30} {tp:<13} {default:<24} {text}")

    table(_rows(TrainConfig, ""))
    table(_rows(DistributedConfig, "distributed."))
    for name in sorted(TASKS):
        try:
            task = get_task(name)
        except ImportError as e:
            lines += ["", f"model={name}: unavailable ({e})"]
            continue
        changed = ", ".join(f"{k}={v}" for k, v in task.train_defaults.items())
        lines += ["", f"model={name}: model_cfg.* keys" + (f" (this model's training defaults: {changed})" if changed else "")]
        table(_rows(task.config_cls, "model_cfg."))
    lines += ["", "Seed keys accepted and ignored: model_cfg.trainable, model_cfg.diffwave (implies model=diffwave)."]
    return "\n".join(lines)
