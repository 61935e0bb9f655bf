"""Model configurations as dataclasses (saved inside native checkpoints).

Field names follow the seed's ``model_cfg`` so existing YAML configs keep working.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ARConfig", "config_from_dict"]


@dataclass
class ARConfig:
    """Autoregressive SaShiMi on mu-law tokens. Defaults: the published SC09 model (4.8M params).

    Attributes:
        mu_levels: vocabulary size (mu-law levels).
        d_model: channels of the outer tier.
        n_layers: S4 blocks per tier.
        pool: pooling factors between tiers, outermost first.
        expand: channel multiplier per tier.
        ff: feed-forward expansion (0: no FF blocks).
        glu: GLU output projection in S4 layers.
        bidirectional: must be False for an autoregressive model.
        unet: U-Net variant (blocks before each down pool too).
        dropout: channel dropout.
        d_state: S4 state size (2N).
        l_max: sequence length the S4 kernels are defined for.
        tie_state: share S4 state matrices across channels.
        lr: learning rate for the S4 state parameters.
        sample_rate: audio sample rate the model was trained at (Hz).
    """

    mu_levels: int = 256
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
    lr: float = 1e-3
    sample_rate: int = 16000

    def __post_init__(self):
        self.pool = [int(p) for p in self.pool]
        if self.bidirectional:
            raise ValueError("ARConfig.bidirectional must be False: an autoregressive model is causal")
        _check_positive(self, "mu_levels", "d_model", "n_layers", "expand", "d_state", "l_max", "sample_rate")
        if any(p < 1 for p in self.pool):
            raise ValueError(f"ARConfig.pool must hold positive integers, got {self.pool}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ARConfig.dropout must be in [0, 1), got {self.dropout}")


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
    return cls(**{k: v for k, v in values.items() if k in names})
