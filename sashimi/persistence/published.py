"""The published (seed) checkpoint formats, converted to this library's models.

- RF5/simple-sashimi ``ckpt_*.pt`` (autoregressive): ``model_state_dict`` plus ``cfg_yaml``;
- RF5/DiffWave-unconditional (DiffWave+SaShiMi): ``model_state_dict``, no config (sizes are read
  off the weights, everything else is the SC09 config).

Both keep the seed's S4 parameterisation; keys are renamed and each S4 layer's length-corrected
``C`` is re-expressed for the length its tier sees (see ``DESIGN.md``).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable

import torch
import torch.nn as nn

from ..ar import SashimiAR
from ..config import ARConfig, DiffWaveConfig, config_from_dict
from ..diffwave import SashimiDiffWave
from ..s4 import convert_kernel_lengths
from .authors import is_authors_ar, load_authors_ar
from .authors_diffwave import is_authors_diffwave, load_authors_diffwave
from .checkpoint import CheckpointError, build_uninitialized, check_state_dict, describe, load_state_dict_strict

__all__ = ["convert_rf5_state_dict", "load_published_state_dict", "infer_state_config", "is_rf5_ar", "load_rf5_ar",
           "convert_rf5_diffwave_state_dict", "infer_config_fields", "is_rf5_diffwave", "load_rf5_diffwave",
           "PUBLISHED_FORMATS"]


# Seed key fragment -> native key fragment. Its S4 kernel sat one module deeper, its linear
# layers were Sequentials, and its 'transposed' linear biases have shape (out, 1).
_RF5_RENAMES = [
    (re.compile(r"\.kernel\.kernel\."), ".kernel."),
    (re.compile(r"\.output_linear\.0\."), ".output_linear."),
    (re.compile(r"\.layer\.ff\.0\.0\."), ".layer.fc1."),
    (re.compile(r"\.layer\.ff\.2\."), ".layer.fc2."),
]
# FFT-node caches recomputed accurately here: loading them would reproduce the seed's error.
_RF5_DROPPED = re.compile(r"\.kernel\.kernel\.(omega|z)$")


def convert_rf5_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a seed (RF5/simple-sashimi, RF5/DiffWave-unconditional) state dict to native keys.

    The FFT-node buffers ``omega``/``z`` are dropped on purpose (recomputed in float64);
    every other tensor is kept.
    """
    out = {}
    for key, value in state_dict.items():
        if _RF5_DROPPED.search(key):
            continue
        new = key
        for pattern, repl in _RF5_RENAMES:
            new = pattern.sub(repl, new)
        if new.endswith(".bias") and value.dim() == 2 and value.size(-1) == 1:
            value = value.squeeze(-1)
        out[new] = value
    return out


def load_published_state_dict(model: nn.Module, state_dict: dict, source: str, published_l_max: int,
                              convert=convert_rf5_state_dict) -> None:
    """Load a seed state dict strictly (keys mapped by ``convert``), then re-express each S4 layer's
    length-corrected ``C`` (the seed corrected all layers for ``published_l_max``) for the length
    its tier sees."""
    load_state_dict_strict(model, convert(state_dict), source)
    convert_kernel_lengths(model, published_l_max)


def infer_state_config(state_dict: dict) -> dict:
    """d_state and tie_state are not in the seed's config: read them off the weights."""
    for key, value in state_dict.items():
        if key.endswith(".log_w_real") and torch.is_tensor(value) and value.dim() == 2:
            return {"d_state": 2 * value.shape[-1], "tie_state": value.shape[0] == 1}
    return {}


def is_rf5_ar(ckpt: dict) -> bool:
    return "model_state_dict" in ckpt and isinstance(ckpt.get("cfg_yaml"), str)


def load_rf5_ar(ckpt: dict, source: str) -> SashimiAR:
    import yaml

    try:
        cfg = yaml.safe_load(ckpt["cfg_yaml"]) or {}
    except yaml.YAMLError as e:
        raise CheckpointError(f"{source}: cfg_yaml is not valid YAML: {e}") from e
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{source}: key 'cfg_yaml' must hold a YAML mapping (the training config), got "
                              f"{describe(cfg)}")
    if not cfg.get("model_cfg"):
        raise CheckpointError(f"{source}: cfg_yaml has no model_cfg section")
    if not isinstance(cfg["model_cfg"], dict):
        raise CheckpointError(f"{source}: cfg_yaml key 'model_cfg' must be a mapping of model settings, got "
                              f"{describe(cfg['model_cfg'])}")
    model_cfg = dict(cfg["model_cfg"])
    if model_cfg.get("diffwave"):
        raise CheckpointError(f"{source}: model_cfg describes a DiffWave model, not an autoregressive one")
    state_dict = check_state_dict(ckpt["model_state_dict"], source, "model_state_dict")
    model_cfg.update(infer_state_config(state_dict))
    if "sample_rate" in cfg:
        model_cfg["sample_rate"] = cfg["sample_rate"]
    try:
        config = config_from_dict(ARConfig, model_cfg, where=f"{source}: model_cfg")
    except (TypeError, ValueError) as e:
        raise CheckpointError(str(e)) from e
    model = build_uninitialized(SashimiAR, config)
    load_published_state_dict(model, state_dict, source, published_l_max=config.l_max)
    return model





# ---- DiffWave+SaShiMi (RF5/DiffWave-unconditional) -----------------------------------------
# Seed prefix -> native prefix; 1x1 conv weights (out, in, 1) become linear weights (out, in).
_RF5_DIFFWAVE_RENAMES = [
    ("sashimi.init_conv.0.conv.", "init_conv."),
    ("sashimi.fc_t1.", "step_embed.fc1."),
    ("sashimi.fc_t2.", "step_embed.fc2."),
    ("sashimi.final_conv.0.conv.", "final_conv."),
    ("sashimi.final_conv.2.conv.", "final_proj."),
]


def convert_rf5_diffwave_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a published DiffWave+SaShiMi ``model_state_dict`` to :class:`SashimiDiffWave` keys.

    Backbone keys (``sashimi.d_layers...``, ``sashimi.norm``) keep their prefix and go through
    :func:`convert_rf5_state_dict` (which drops the FFT-node caches
    ``omega``/``z`` on purpose: they are recomputed accurately). Every other tensor is kept.
    """
    out, backbone = {}, {}
    for key, value in state_dict.items():
        for old, new in _RF5_DIFFWAVE_RENAMES:
            if key.startswith(old):
                if value.dim() == 3 and value.size(-1) == 1:  # conv (out, in, 1) / weight_g (out, 1, 1)
                    value = value.squeeze(-1)
                out[new + key[len(old):]] = value
                break
        else:
            backbone[key] = value
    out.update(convert_rf5_state_dict(backbone))
    return out


def infer_config_fields(state_dict: dict) -> dict:
    """Sizes readable off the weights (the files carry no config): d_model, n_layers, d_state,
    tie_state, l_max. Everything else comes from the SC09 config."""
    fields = {}
    g = state_dict.get("sashimi.init_conv.0.conv.weight_g")
    if torch.is_tensor(g):
        fields["d_model"] = g.shape[0]
    center = {m.group(1) for k in state_dict if (m := re.match(r"sashimi\.c_layers\.(\d+)\.fc_t\.weight$", k))}
    if center:
        fields["n_layers"] = len(center)
    fields.update(infer_state_config(state_dict))
    for key, value in state_dict.items():
        if key.endswith(".kernel.kernel.omega") and torch.is_tensor(value) and value.dim() >= 1:
            fields["l_max"] = 2 * (value.shape[0] - 1)
            break
    return fields


def is_rf5_diffwave(ckpt: dict) -> bool:
    sd = ckpt.get("model_state_dict")
    return isinstance(sd, dict) and "cfg_yaml" not in ckpt and any(
        isinstance(k, str) and k.startswith("sashimi.init_conv") for k in sd)


def load_rf5_diffwave(ckpt: dict, source: str = "<dict>", config: DiffWaveConfig | dict | None = None) -> SashimiDiffWave:
    """Build a :class:`SashimiDiffWave` from a published DiffWave-unconditional checkpoint dict.

    Args:
        ckpt: the loaded file (``model_state_dict``, ``optimizer_state_dict``).
        source: name for error messages.
        config: the architecture. None: the SC09 config with the sizes read off the weights
            (d_model, n_layers, d_state, tie_state, l_max); a dict: overrides of that.

    Returns:
        the model (train mode, CPU), every tensor loaded strictly.

    Raises:
        CheckpointError: not such a file, a bad config, or weights that do not fit it.
    """
    if not isinstance(ckpt, dict) or not is_rf5_diffwave(ckpt):
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{source}: not a published DiffWave+SaShiMi checkpoint (expected 'model_state_dict' "
                              f"with 'sashimi.init_conv...' keys and no 'cfg_yaml'; found {keys})")
    state_dict = check_state_dict(ckpt["model_state_dict"], source, "model_state_dict")
    if not isinstance(config, DiffWaveConfig):
        values = dataclasses.asdict(DiffWaveConfig())
        values.update(infer_config_fields(state_dict))
        values.update(config or {})
        try:
            config = config_from_dict(DiffWaveConfig, values, where=f"{source}: config")
        except (TypeError, ValueError) as e:
            raise CheckpointError(str(e)) from e
    model = build_uninitialized(SashimiDiffWave, config)
    load_published_state_dict(model, state_dict, source, published_l_max=config.l_max,
                              convert=convert_rf5_diffwave_state_dict)
    return model



#: The published layouts :func:`sashimi.load_model` recognises: (name, detect(ckpt), load(ckpt, source)).
PUBLISHED_FORMATS: tuple[tuple[str, Callable[[dict], bool], Callable[[dict, str], nn.Module]], ...] = (
    ("rf5-ar", is_rf5_ar, load_rf5_ar),
    ("rf5-diffwave", is_rf5_diffwave, load_rf5_diffwave),
    ("authors-ar", is_authors_ar, load_authors_ar),  # Feb-2022, V3, V4: see .authors
    ("authors-diffwave", is_authors_diffwave, load_authors_diffwave),  # albertfgu/diffwave-sashimi .pkl
)
