"""Model configurations as dataclasses (saved inside native checkpoints).

Field names follow the seed's ``model_cfg`` so existing YAML configs keep working.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BackboneConfig", "ARConfig", "DiffWaveConfig", "config_from_dict", "CONDITIONS"]

#: Where a conditional model's label vector enters the network (see :class:`ARConfig`).
CONDITIONS = ("input", "blocks", "film")
#: The residual blocks' pre-norms (see :class:`BackboneConfig`).
NORMS = ("layer", "scalar")
#: How an autoregressive model's waveforms become tokens (the same tuple as ``sashimi.mulaw.QUANTIZATIONS``,
#: repeated because config.py imports nothing from the package).
QUANTIZATIONS = ("mulaw", "linear")


@dataclass
class BackboneConfig:
    """The SaShiMi backbone's settings, shared by every model built on it (defaults: the published
    SC09 autoregressive model). :meth:`sashimi.Sashimi.from_config` builds the backbone from it.

    Attributes:
        d_model: channels of the outer tier.
        n_layers: S4 blocks per tier (each followed by an FF block when ``ff > 0``).
        pool: pooling factors between tiers, outermost first.
        expand: channel multiplier per tier.
        ff: feed-forward expansion (0: no FF blocks).
        glu: GLU output projection in S4 layers.
        bidirectional: bidirectional S4 (non-causal; no step mode).
        unet: U-Net variant (blocks before each down pool too, skips around every layer).
        dropout: channel dropout.
        d_state: S4 state size (2N).
        l_max: sequence length the S4 kernels are defined for.
        tie_state: share S4 state matrices across channels.
        lr: learning rate for the S4 state parameters (None: the optimiser's default).
        sample_rate: audio sample rate the model was trained at (Hz).
        norm: the residual blocks' pre-norm: 'layer' (per-channel LayerNorm) or 'scalar' (two
            scalars, the SaShiMi authors' ``TransposedLN``).
        hurwitz: S4 state matrices A = diag - p p^* (True) or with a free factor, A = diag - p q^T
            (False: the authors' Feb-2022 release).
        paired: each S4 block and the FF block after it form one unit (the U-Net's skip connections go
            around the pair, as in the authors' DiffWave+SaShiMi ``DiffWaveBlock``), not two.
        final_norm: the backbone's last norm, 'layer' or 'scalar' (see ``norm``).
    """

    d_model: int = 64
    n_layers: int = 8
    pool: list = field(default_factory=lambda: [4, 4])
    expand: int = 2
    ff: int = 2
    glu: bool = True
    bidirectional: bool = False
    unet: bool = False
    dropout: float = 0.0
    d_state: int = 64
    l_max: int = 16000
    tie_state: bool = True
    lr: float | None = 1e-3
    sample_rate: int = 16000
    norm: str = "layer"
    hurwitz: bool = True
    paired: bool = False
    final_norm: str = "layer"

    def __post_init__(self):
        self.pool = _int_list(self, "pool")
        if self.norm not in NORMS:
            raise ValueError(f"{type(self).__name__}.norm must be one of {NORMS}, got {self.norm!r}")
        if self.final_norm not in NORMS:
            raise ValueError(f"{type(self).__name__}.final_norm must be one of {NORMS}, got {self.final_norm!r}")
        for name in ("hurwitz", "paired"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{type(self).__name__}.{name} must be true or false, got {getattr(self, name)!r}")
        if self.paired and not self.ff:
            raise ValueError(f"{type(self).__name__}.paired needs FF blocks (ff > 0) to pair with the S4 blocks")
        _check_positive(self, "d_model", "n_layers", "expand", "d_state", "l_max", "sample_rate")
        if any(p < 1 for p in self.pool):
            raise ValueError(f"{type(self).__name__}.pool must hold positive integers, got {self.pool}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{type(self).__name__}.dropout must be in [0, 1), got {self.dropout}")
        if self.lr is not None:
            _check_lr(self)


@dataclass
class ARConfig(BackboneConfig):
    """Autoregressive SaShiMi on mu-law tokens. Defaults: the published SC09 model (4.8M params).

    Attributes (besides :class:`BackboneConfig`'s, whose defaults it keeps):
        mu_levels: vocabulary size (mu-law levels).
        num_classes: classes the model is conditioned on (0: unconditional). A conditional model
            also has a "no label" class, index ``num_classes``, for unconditional generation.
        class_names: the classes' names (``num_classes`` strings; None: their indices as text).
        quantization: how waveforms become tokens: 'mulaw' (8-bit mu-law, the default) or 'linear'
            (``mu_levels`` uniform levels: the SaShiMi authors' Beethoven setting).
        condition: where a conditional model's label vector enters: 'input' (added to every
            input embedding only), 'blocks' (also projected into every residual block of every
            tier and added after its norm) or 'film' (also a scale and shift after every
            block's norm). Ignored by unconditional models.
        sampling: the model's own default sampling settings (some of ``temperature``,
            ``top_k``, ``nucleus_p``), chosen on validation for this model; generation calls and
            ``sashimi generate`` use them for every setting not given. None: nucleus 1.0,
            temperature 1.0, all tokens. Checked when the model is built.
    """

    mu_levels: int = 256
    num_classes: int = 0
    class_names: list | None = None
    condition: str = "input"
    sampling: dict | None = None
    quantization: str = "mulaw"

    def __post_init__(self):
        super().__post_init__()
        _check_classes(self)
        # its values are checked by the model (sashimi.sampling.check_sampling_defaults): one check
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"ARConfig.quantization must be one of {QUANTIZATIONS}, got {self.quantization!r}")
        if self.condition not in CONDITIONS:
            raise ValueError(f"ARConfig.condition must be one of {CONDITIONS}, got {self.condition!r}")
        if self.bidirectional:
            raise ValueError("ARConfig.bidirectional must be False: an autoregressive model is causal")
        _check_positive(self, "mu_levels")
        if self.mu_levels < 2:  # mu = mu_levels - 1 must be positive
            raise ValueError(f"ARConfig.mu_levels must be at least 2, got {self.mu_levels}")


@dataclass
class DiffWaveConfig(BackboneConfig):
    """DiffWave with a SaShiMi backbone. Defaults: the published SC09 model (23.5M params).

    The published DiffWave+SaShiMi files carry no config: they were all trained with these values.

    Attributes (besides :class:`BackboneConfig`'s; the defaults that differ are redeclared):
        d_step_embed: size of the sinusoidal diffusion-step embedding.
        d_step_hidden: width of the step-embedding MLP (and of the per-block conditioning).
        T: number of diffusion steps.
        beta_start, beta_end: the linear noise schedule's first and last beta.
        num_classes: classes the model is conditioned on (0: unconditional, as the published
            files). A conditional model also has a "no label" class, index ``num_classes``, for
            unconditional generation and classifier-free guidance.
        class_names: the classes' names (``num_classes`` strings; None: their indices as text).
    """

    d_model: int = 128
    n_layers: int = 6
    unet: bool = True
    bidirectional: bool = True
    tie_state: bool = False
    lr: float | None = None
    d_step_embed: int = 128
    d_step_hidden: int = 512
    T: int = 200
    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_classes: int = 0
    class_names: list | None = None

    def __post_init__(self):
        super().__post_init__()
        _check_classes(self)
        _check_positive(self, "d_step_hidden", "T")
        if not isinstance(self.d_step_embed, int) or self.d_step_embed < 4 or self.d_step_embed % 2:
            raise ValueError(f"DiffWaveConfig.d_step_embed must be an even integer >= 4, got {self.d_step_embed!r}")
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError("DiffWaveConfig needs 0 < beta_start <= beta_end < 1, got "
                             f"beta_start={self.beta_start}, beta_end={self.beta_end}")
        if self.lr is not None:
            _check_lr(self)


def _int_list(cfg, name: str) -> list[int]:
    value = getattr(cfg, name)
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        return [int(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"{type(cfg).__name__}.{name} must be a list of integers, got {value!r}") from None


def _check_classes(cfg) -> None:
    """Validate ``num_classes`` / ``class_names`` (names fill in the count, or default to indices)."""
    n = cfg.num_classes
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"{type(cfg).__name__}.num_classes must be an integer >= 0, got {n!r}")
    names = cfg.class_names
    if names is None:
        if n:
            cfg.class_names = [str(i) for i in range(n)]
        return
    if isinstance(names, (str, bytes)) or not all(isinstance(c, str) and c for c in names):
        raise ValueError(f"{type(cfg).__name__}.class_names must be a list of non-empty strings, got {names!r}")
    names = list(names)
    if len(set(names)) != len(names):
        raise ValueError(f"{type(cfg).__name__}.class_names must be unique, got {names}")
    if n and n != len(names):
        raise ValueError(f"{type(cfg).__name__}: num_classes={n} but {len(names)} class_names were given")
    cfg.num_classes, cfg.class_names = len(names), names or None


def _check_lr(cfg) -> None:
    """The S4 state parameters' learning rate: a negative one would make them ascend the loss."""
    lr = cfg.lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"{type(cfg).__name__}.lr must be a finite number > 0, got {lr!r}")


def _check_positive(cfg, *names):
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{type(cfg).__name__}.{name} must be a positive integer, got {value!r}")


# Seed config keys with no effect here (training-only switches), accepted and ignored.
_IGNORED_SEED_KEYS = {"trainable", "diffwave"}


def config_from_dict(cls, values: dict[str, Any], *, where: str = "config"):
    """Build a config dataclass from a dict, rejecting unknown keys with a clear message."""
    if not isinstance(values, dict):
        raise TypeError(f"{where} must be a mapping, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names - _IGNORED_SEED_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    try:
        return cls(**{k: v for k, v in values.items() if k in names})
    except (TypeError, ValueError) as e:  # say where the bad value came from
        raise type(e)(f"{where}: {e}") from e
