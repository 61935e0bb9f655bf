"""The SaShiMi authors' own DiffWave+SaShiMi checkpoints (albertfgu/diffwave-sashimi ``.pkl`` files),
converted to :class:`~sashimi.diffwave.SashimiDiffWave`.

A file is ``{'model_state_dict', 'optimizer_state_dict'}`` of their ``models.sashimi.Sashimi``, keys at
the top level (``init_conv.0.conv.*``, ``fc_t1``, ``d_layers.<i>...``). What differs from the
RF5/DiffWave-unconditional layout loaded by :mod:`.published`:

- each U-Net block is a ``DiffWaveBlock``: an S4 layer after ``norm1`` (+ the block's ``fc_t`` projection
  of the step embedding) and an FF layer after ``norm2``, with one skip connection around the pair
  (here: ``BackboneConfig(paired=True)``);
- every norm, the last one included, is a two-scalar ``TransposedLN`` (``norm="scalar"``,
  ``final_norm="scalar"``);
- the FF layers and pools are weight-normed 1x1 convolutions (folded into plain weights for the FF
  layers), the S4 layers their V3 form (``inv_w_real``, ``w_imag``, an int64 length buffer ``L``);
- ``u_layers`` is one flat list (up pool, then the tier's blocks, per tier).

The files carry no config: sizes are read off the weights; T = 200 and betas 1e-4..0.02 (the
published runs' ``T200_betaT0.02``) come from :class:`~sashimi.config.DiffWaveConfig`.
"""
from __future__ import annotations

import dataclasses
import re

import torch

from ..config import DiffWaveConfig, config_from_dict
from ..diffwave import SashimiDiffWave
from ..s4 import SSMKernel
from .checkpoint import CheckpointError, build_uninitialized, check_state_dict, load_state_dict_strict

__all__ = ["is_authors_diffwave", "load_authors_diffwave", "convert_authors_diffwave_state_dict"]

_TOP = {"init_conv.0.conv.": "init_conv.", "fc_t1.": "step_embed.fc1.", "fc_t2.": "step_embed.fc2.",
        "final_conv.0.conv.": "final_conv.", "final_conv.2.conv.": "final_proj.", "norm.": "sashimi.norm."}
_BLOCK = [("fc_t.", "s4.fc_t."), ("norm1.", "s4.norm."), ("norm2.", "ff.norm."), ("layer.kernel.kernel.", "s4.layer.kernel."),
          ("layer.output_linear.0.", "s4.layer.output_linear."), ("layer.output_linear.", "s4.layer.output_linear."),
          ("layer.D", "s4.layer.D"), ("linear.conv.", "linear.")]
_FF = re.compile(r"^ff\.ff\.(0|2)\.conv\.(weight_g|weight_v|bias)$")


def is_authors_diffwave(ckpt: dict) -> bool:
    """``model_state_dict`` of the authors' DiffWave+SaShiMi module (top-level ``init_conv`` and ``norm1``)."""
    sd = ckpt.get("model_state_dict") if isinstance(ckpt, dict) else None
    return isinstance(sd, dict) and "init_conv.0.conv.weight_g" in sd and any(
        isinstance(k, str) and ".norm1." in k for k in sd)


def _squeeze(value: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution's (out, in, 1) weight (or weight norm's (out, 1, 1) gain) as a linear one."""
    return value[..., 0] if value.dim() == 3 and value.size(-1) == 1 else value


def convert_authors_diffwave_state_dict(state_dict: dict, n_layers: int, source: str = "<dict>"
                                        ) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Map the authors' DiffWave+SaShiMi state dict to :class:`SashimiDiffWave` keys.

    Args:
        state_dict: the file's ``model_state_dict``.
        n_layers: blocks per tier (to split their flat ``u_layers`` into tiers).
        source: the file, for error messages.

    Returns:
        (native state dict, {S4 kernel module name: the length its ``C`` is corrected for}).
    """
    out: dict[str, torch.Tensor] = {}
    lengths: dict[str, int] = {}
    ff_parts: dict[str, dict] = {}
    for key, value in state_dict.items():
        value = value.detach().to("cpu").clone()
        top = next((old for old in _TOP if key.startswith(old)), None)
        if top is not None:
            out[_TOP[top] + key[len(top):]] = _squeeze(value)
            continue
        m = re.match(r"^(d_layers|c_layers|u_layers)\.(\d+)\.(.+)$", key)
        if m is None:
            raise CheckpointError(f"{source}: unexpected key {key!r} for the authors' DiffWave+SaShiMi layout")
        group, index, rest = m.group(1), int(m.group(2)), m.group(3)
        prefix = f"sashimi.{group}.{index}." if group != "u_layers" else \
            f"sashimi.u_layers.{index // (n_layers + 1)}.{index % (n_layers + 1)}."
        f = _FF.match(rest)
        if f is not None:  # weight-normed 1x1 convolutions, folded: w = g v / ||v||
            ff_parts.setdefault(prefix + ("ff.layer.fc1." if f.group(1) == "0" else "ff.layer.fc2."), {})[f.group(2)] = value
            continue
        for old, new in _BLOCK:
            if rest.startswith(old):
                rest = new + rest[len(old):]
                break
        else:
            raise CheckpointError(f"{source}: unexpected key {key!r} (a conditional model's mel upsampler? only the "
                                  "unconditional DiffWave+SaShiMi files are supported)")
        module, _, leaf = (prefix + rest).rpartition(".")
        if module.endswith(".layer.kernel"):
            if leaf == "L":
                lengths[module] = int(value)
                continue
            leaf = "log_w_real" if leaf == "inv_w_real" else leaf
        if leaf == "bias" and value.dim() == 2 and value.size(-1) == 1:
            value = value.squeeze(-1)
        out[f"{module}.{leaf}"] = _squeeze(value)
    for prefix, parts in ff_parts.items():
        if set(parts) != {"weight_g", "weight_v", "bias"}:
            raise CheckpointError(f"{source}: incomplete weight-normed FF layer {prefix!r}: {sorted(parts)}")
        v = parts["weight_v"]
        w = parts["weight_g"] * v / v.flatten(1).norm(dim=1).reshape(-1, *([1] * (v.dim() - 1)))
        out[prefix + "weight"], out[prefix + "bias"] = _squeeze(w), parts["bias"]
    return out, lengths


def _infer_config(sd: dict, source: str) -> DiffWaveConfig:
    g = sd.get("init_conv.0.conv.weight_g")
    H = g.shape[0]
    center = sorted({int(m.group(1)) for k in sd if (m := re.match(r"c_layers\.(\d+)\.norm1\.m$", k))})
    pools = sorted({int(m.group(1)) for k in sd if (m := re.match(r"d_layers\.(\d+)\.linear\.conv\.weight_v$", k))})
    values = dataclasses.asdict(DiffWaveConfig())
    pool, expands, h = [], set(), H
    for i in pools:
        out_dim, in_dim = sd[f"d_layers.{i}.linear.conv.weight_v"].shape[:2]
        pool.append(in_dim // h)
        expands.add(out_dim // h)
        h = out_dim
    first = "c_layers.0."
    C, B = sd.get(first + "layer.kernel.kernel.C"), sd.get(first + "layer.kernel.kernel.B")
    w_real, ff = sd.get(first + "layer.kernel.kernel.inv_w_real"), sd.get(first + "ff.ff.0.conv.weight_v")
    out_w = sd.get(first + "layer.output_linear.0.weight", sd.get(first + "layer.output_linear.weight"))
    if not center or C is None or B is None or w_real is None or ff is None or out_w is None or len(expands) > 1:
        raise CheckpointError(f"{source}: not the authors' unconditional DiffWave+SaShiMi U-Net (expected "
                              "c_layers.<i>.{norm1,norm2,fc_t,layer.kernel.kernel.{C,B,P,inv_w_real,w_imag,L},ff.ff}, "
                              "down pools with one expand factor)")
    lengths = [int(v) for k, v in sd.items() if k.endswith(".layer.kernel.kernel.L")]
    values.update(d_model=H, n_layers=len(center), pool=pool, expand=expands.pop() if expands else 2,
                  ff=ff.shape[0] // h, glu=out_w.shape[0] == 2 * h, d_state=2 * B.shape[-2],
                  tie_state=w_real.shape[0] == 1, l_max=max(lengths) if lengths else 16000,
                  bidirectional=C.shape[0] == 2, unet=True, norm="scalar", final_norm="scalar", paired=True,
                  d_step_embed=sd["fc_t1.weight"].shape[1], d_step_hidden=sd["fc_t1.weight"].shape[0])
    try:
        return config_from_dict(DiffWaveConfig, values, where=f"{source}: architecture read off the weights")
    except (TypeError, ValueError) as e:
        raise CheckpointError(str(e)) from e


def load_authors_diffwave(ckpt: dict, source: str = "<dict>") -> SashimiDiffWave:
    """Build a :class:`SashimiDiffWave` from one of the authors' DiffWave+SaShiMi ``.pkl`` files.

    Args:
        ckpt: the loaded file (``model_state_dict``; ``optimizer_state_dict`` is ignored).
        source: the file, for error messages.

    Returns:
        the model (CPU, train mode), every tensor loaded strictly.

    Raises:
        CheckpointError: not such a file, or weights that do not fit.
    """
    if not is_authors_diffwave(ckpt):
        raise CheckpointError(f"{source}: not an authors' DiffWave+SaShiMi file (expected 'model_state_dict' with "
                              "top-level 'init_conv.0.conv.weight_g' and DiffWaveBlock 'norm1' keys)")
    sd = check_state_dict(ckpt["model_state_dict"], source, "model_state_dict")
    if any("mel_conv" in k or "upsample_conv2d" in k for k in sd):
        raise CheckpointError(f"{source}: a mel-conditioned (vocoder) DiffWave+SaShiMi file; only the unconditional "
                              "ones are supported")
    config = _infer_config(sd, source)
    native, lengths = convert_authors_diffwave_state_dict(sd, config.n_layers, source)
    model = build_uninitialized(SashimiDiffWave, config)
    load_state_dict_strict(model, native, f"{source} (authors' DiffWave+SaShiMi layout)")
    for name, kernel in ((n, m) for n, m in model.named_modules() if isinstance(m, SSMKernel)):
        if name not in lengths:
            raise CheckpointError(f"{source}: no kernel length 'L' for {name}")
        if lengths[name] != kernel.l_max:  # re-expressed exactly for this tier's length
            kernel.convert_length(lengths[name])
    return model
