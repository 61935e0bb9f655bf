"""The SaShiMi authors' own autoregressive checkpoint formats (state-spaces/s4), converted to
:class:`~sashimi.ar.SashimiAR`.

Every file is a bare state dict of the authors' ``SequenceLightningModule`` (``model.*`` the
backbone, ``encoder(.0).*`` the token embedding, ``decoder(.0).*`` the output linear) with no
config: the architecture is read off the keys and shapes. Three layouts, told apart by their S4 keys:

- ``feb2022`` (the Feb-2022 release, ``sashimi_sc09.pt`` / ``sashimi_youtubemix.pt``):
  ``...layer.kernel.kernel.{w, Q}`` (``hurwitz=false``: A = diag(w) - p q^T with a free ``Q``),
  complex ``w`` (1, N, 2) whose real part must be negative, the FFT-node buffers ``omega``/``z``
  ((L/2 + 1, 2): the only record of the length ``C`` is corrected for), biases (d, 1);
- ``v3`` (``*_v3.pt``): ``...kernel.kernel.{inv_w_real, w_imag}``, q = conj(p), the length in an
  int64 buffer ``kernel.kernel.L``, biases (d,), renamed ``encoder.0`` / ``decoder.0``;
- ``v4`` (``*_v4.pt``, the authors' ``convert_v3_to_v4.py`` output): ``...layer.layer.kernel.{A_real,
  A_imag, inv_dt, l_kernel}`` and ``...layer.layer.D``; ``inv_dt`` (H, 1) holds log(dt) (the converter
  copies ``log_dt``; read with the authors' default ``dt_transform=softplus`` it would be misread)
  and ``A_imag`` is the *negated* imaginary part.

All three use the authors' two-scalar ``TransposedLN`` pre-norms (``norm.norm.{m, s}``) and a
per-channel LayerNorm at the end; each tier's ``C`` is corrected for that tier's own length (SC09
16000 / 4000 / 1000), which is what this library's backbone uses too, so nothing is converted
unless a file's length differs from its tier's (then that layer alone is re-expressed, exactly).
"""
from __future__ import annotations

import re

import torch

from ..ar import SashimiAR
from ..config import ARConfig, config_from_dict
from ..s4 import SSMKernel
from .checkpoint import CheckpointError, build_uninitialized, load_state_dict_strict

__all__ = ["AUTHORS_FORMATS", "authors_format", "is_authors_ar", "load_authors_ar", "convert_authors_state_dict"]

AUTHORS_FORMATS = ("feb2022", "v3", "v4")

# What each layout's S4 layers hold (for the error message of a file that is none of them).
_EXPECTED = ("the SaShiMi authors' Feb-2022 release ('model.*.layer.kernel.kernel.w' and '.Q', or "
             "'.log_w_real'), their V3 files ('...kernel.kernel.inv_w_real' and '.L') or V4 conversions "
             "('...layer.layer.kernel.A_real', '.inv_dt' and '.l_kernel')")

# Applied in order to every key after the top-level renames.
_RENAMES = [
    (re.compile(r"\.layer\.layer\.kernel\."), ".layer.kernel."),  # V4
    (re.compile(r"\.layer\.layer\.D$"), ".layer.D"),  # V4
    (re.compile(r"\.layer\.kernel\.kernel\."), ".layer.kernel."),  # Feb-2022, V3
    (re.compile(r"\.output_linear\.0\."), ".output_linear."),  # with GLU: Sequential(Linear, GLU)
    (re.compile(r"\.layer\.ff\.0\.0\."), ".layer.fc1."),
    (re.compile(r"\.layer\.ff\.2\."), ".layer.fc2."),
    (re.compile(r"\.norm\.norm\."), ".norm."),  # TransposedLN(scalar) m, s (or a LayerNorm's weight, bias)
]
_TOP = [("encoder.0.", "mu_embedder."), ("encoder.", "mu_embedder."), ("decoder.0.output_transform.", "head."),
        ("decoder.output_transform.", "head."), ("model.", "sashimi.")]


def is_authors_ar(ckpt: dict) -> bool:
    """A bare state dict of the authors' Lightning module (``model.*`` and ``encoder*`` keys)."""
    if not isinstance(ckpt, dict) or "model_state_dict" in ckpt or "format" in ckpt:
        return False
    keys = [k for k in ckpt if isinstance(k, str)]
    return any(k.startswith("model.") for k in keys) and any(k.startswith("encoder.") for k in keys)


def authors_format(state_dict: dict) -> str | None:
    """'feb2022', 'v3', 'v4' (see the module docstring), or None for another layout."""
    keys = [k for k in state_dict if isinstance(k, str)]
    if any(k.endswith(".layer.layer.kernel.A_real") for k in keys):
        return "v4"
    if any(k.endswith(".kernel.kernel.inv_w_real") for k in keys):
        return "v3"
    if any(k.endswith((".kernel.kernel.w", ".kernel.kernel.log_w_real")) for k in keys):
        return "feb2022"
    return None


def convert_authors_state_dict(state_dict: dict, fmt: str, source: str = "<dict>"
                               ) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Map an authors' state dict to :class:`SashimiAR` keys and parameterisation.

    Args:
        state_dict: the file's bare state dict.
        fmt: its layout, one of :data:`AUTHORS_FORMATS`.
        source: the file, for error messages.

    Returns:
        (native state dict, {S4 kernel module name: length its ``C`` is corrected for}).
    """
    out: dict[str, torch.Tensor] = {}
    lengths: dict[str, int] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not torch.is_tensor(value):
            raise CheckpointError(f"{source}: entry {key!r} is not a named tensor; expected a state dict of {_EXPECTED}")
        value = value.detach().to("cpu").clone()
        new = key
        for old, repl in _TOP:
            if new.startswith(old):
                new = repl + new[len(old):]
                break
        for pattern, repl in _RENAMES:
            new = pattern.sub(repl, new)
        module, _, leaf = new.rpartition(".")
        if ".layer.kernel" in new and module.endswith(".layer.kernel"):
            if leaf in ("omega", "z"):  # Feb-2022: (L/2 + 1, 2) FFT nodes, recomputed exactly here
                if leaf == "omega":
                    lengths[module] = 2 * (value.shape[0] - 1)
                continue
            if leaf in ("L", "l_kernel"):  # V3, V4: the length as a scalar buffer
                lengths[module] = int(value)
                continue
            if leaf == "w":  # Feb-2022: Lambda itself, (1, N, 2)
                w = torch.view_as_complex(value.float().contiguous())
                if not bool((w.real < 0).all()):
                    raise CheckpointError(f"{source}: {key} has eigenvalues with a non-negative real part "
                                          f"(max {float(w.real.max()):.3g}); this library's S4 needs Re(w) < 0")
                out[module + ".log_w_real"] = torch.log(-w.real)
                out[module + ".w_imag"] = w.imag.clone()
                continue
            if leaf in ("inv_w_real", "A_real"):
                leaf = "log_w_real"
            elif leaf == "A_imag":  # V4 stores the imaginary part negated
                value, leaf = -value, "w_imag"
            elif leaf == "inv_dt":  # V4 conversion: (H, 1) holding log(dt)
                value, leaf = value.reshape(-1), "log_dt"
            new = f"{module}.{leaf}"
        if new.endswith(".bias") and value.dim() == 2 and value.size(-1) == 1:  # (d, 1) transposed-linear biases
            value = value.squeeze(-1)
        out[new] = value.contiguous()
    return out, lengths


def _infer_config(sd: dict, lengths: dict, source: str) -> ARConfig:
    """The architecture (an :class:`ARConfig`) read off a converted state dict."""
    emb = sd.get("mu_embedder.weight")
    if emb is None or emb.dim() != 2:
        raise CheckpointError(f"{source}: no token embedding ('encoder.weight' or 'encoder.0.weight'); expected {_EXPECTED}")
    mu_levels, d_model = emb.shape
    H, pool, expands = d_model, [], set()
    k = 0
    while f"sashimi.d_layers.{k}.linear.weight_v" in sd:
        out_dim, in_dim = sd[f"sashimi.d_layers.{k}.linear.weight_v"].shape
        if in_dim % H or out_dim % H:
            raise CheckpointError(f"{source}: down pool {k} maps {in_dim} -> {out_dim} channels, not a multiple of "
                                  f"its tier's {H}")
        pool.append(in_dim // H)
        expands.add(out_dim // H)
        H = out_dim
        k += 1
    if len(expands) > 1:
        raise CheckpointError(f"{source}: tiers widen by different factors {sorted(expands)}; this library's "
                              "backbone has one 'expand'")
    s4 = sorted({int(m.group(1)) for key in sd if (m := re.match(r"sashimi\.c_layers\.(\d+)\.layer\.kernel\.C$", key))})
    ffs = sorted({int(m.group(1)) for key in sd if (m := re.match(r"sashimi\.c_layers\.(\d+)\.layer\.fc1\.weight$", key))})
    if not s4:
        raise CheckpointError(f"{source}: no S4 layers in the center tier ('model.c_layers.<i>.layer...'); "
                              f"expected {_EXPECTED}")
    first = f"sashimi.c_layers.{s4[0]}."
    out_w = sd.get(first + "layer.output_linear.weight")
    if out_w is None or out_w.shape[1] != H or out_w.shape[0] not in (H, 2 * H):
        raise CheckpointError(f"{source}: {first}layer.output_linear must map {H} channels to {H} (no post-activation) "
                              f"or {2 * H} (GLU); found {None if out_w is None else tuple(out_w.shape)}")
    glu = out_w.shape[0] == 2 * H
    B, w_real = sd[first + "layer.kernel.B"], sd[first + "layer.kernel.log_w_real"]
    values = {
        "d_model": d_model, "mu_levels": mu_levels, "pool": pool, "expand": expands.pop() if expands else 2,
        "n_layers": len(s4), "ff": sd[f"sashimi.c_layers.{ffs[0]}.layer.fc1.weight"].shape[0] // H if ffs else 0,
        "glu": glu, "d_state": 2 * B.shape[-2], "tie_state": w_real.shape[0] == 1,
        "norm": "scalar" if first + "norm.m" in sd else "layer",
        "hurwitz": first + "layer.kernel.Q" not in sd,
        "l_max": max(lengths.values()) if lengths else 16000, "sample_rate": 16000, "dropout": 0.0,
    }
    try:
        return config_from_dict(ARConfig, values, where=f"{source}: architecture read off the weights")
    except (TypeError, ValueError) as e:
        raise CheckpointError(str(e)) from e


def load_authors_ar(ckpt: dict, source: str = "<dict>") -> SashimiAR:
    """Build a :class:`SashimiAR` from one of the authors' AR checkpoints (any size).

    Args:
        ckpt: the file's bare state dict (``torch.load(path, map_location='cpu', weights_only=True)``).
        source: the file, for error messages.

    Returns:
        the model (CPU, train mode), every tensor loaded strictly.

    Raises:
        CheckpointError: a layout that is none of :data:`AUTHORS_FORMATS`, or weights that do not fit.
    """
    fmt = authors_format(ckpt)
    if fmt is None:
        sample = sorted(k for k in ckpt if isinstance(k, str) and ".layer." in k)[:4]
        raise CheckpointError(f"{source}: a bare state dict of the authors' model (model.*, encoder.*) whose S4 "
                              f"layers are not a known layout; expected {_EXPECTED}; found e.g. {sample}")
    sd, lengths = convert_authors_state_dict(ckpt, fmt, source)
    config = _infer_config(sd, lengths, source)
    if not config.glu and any(isinstance(k, str) and k.endswith(".output_linear.0.weight") for k in ckpt):
        # Sequential(Linear(H, H), activation): a post-activation other than GLU
        raise CheckpointError(f"{source}: S4 layers with an output activation other than GLU (an H -> H "
                              "'output_linear.0') are not supported; expected GLU (2H -> H) or none (postact=null)")
    model = build_uninitialized(SashimiAR, config)
    load_state_dict_strict(model, sd, f"{source} ({fmt} layout)")
    kernels = {name: m for name, m in model.named_modules() if isinstance(m, SSMKernel)}
    missing = sorted(set(kernels) - set(lengths))
    if missing:
        raise CheckpointError(f"{source}: no kernel length for {missing[:3]} ('omega' in Feb-2022 files, 'L' in V3, "
                              "'l_kernel' in V4)")
    for name, kernel in kernels.items():
        if lengths[name] != kernel.l_max:  # a tier length other than l_max / pooling: re-express exactly
            kernel.convert_length(lengths[name])
    return model
