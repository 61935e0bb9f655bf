"""Precompute everything the fast engines need from a model's parts, once, in float64.

The parts: a token model with ``mu_embedder`` (nn.Embedding), ``sashimi`` (a causal
:class:`~sashimi.backbone.Sashimi`) and ``head`` (nn.Linear), as :class:`sashimi.SashimiAR` has;
nothing here knows the model class.

The result is a plain nested dict (a "plan") of float64 / complex128 CPU tensors; each engine
casts and lays it out as it likes. Per S4 layer, with u the layer input (after LayerNorm) and
x the state of the N stored modes (their conjugate partners are implicit, so outputs are 2 Re(.)):

    s  = 2 Re(v . x)                          rank-1 read   (dplr layers only; else v = w = 0)
    y  = 2 Re(e . x) - cw s + cu u            the S4 output, before GELU
    x' = d x - w s + b u                      the next state

'dplr' layers (the default for an ill-conditioned eigenbasis) work in the unitary basis of the
stored modes, where the bilinear transition is exactly diagonal plus rank 1:
Ab = (I - dt/2 A)^-1 (I + dt/2 A) = 2 M - I with M = G - c (G p)(q^T G) (Woodbury), so
d = 2 g - 1, w = 2 c g P, v = Q g, with g = 1 / (1 - dt/2 Lambda), c = (dt/2) / (1 + dt/2 q^T G p),
A = diag(Lambda) - p q^T and Q the stored half of q: conj(P) in the Hurwitz form, the free factor
of an S4 layer with ``hurwitz=False`` (:meth:`sashimi.s4.SSMKernel.q_factor`).
'diagonal' layers use the eigenbasis of A: d = the discrete eigenvalues of one of each conjugate
pair, b = 1 and the residues C_n Bb_n as output weights. Both give y exactly (up to rounding) as
the 'dense' reference step does; with e = C d, cw = 2 Re(C . w), cu = 2 Re(C . b) + D.

Each block's pre-norm is either a LayerNorm (``norm`` 'layer': (x - mean) rstd ln_w + ln_b, rstd =
1 / sqrt(var + eps)) or the authors' two-scalar TransposedLN (:class:`~sashimi.backbone.ScalarNorm`,
``norm`` 'scalar': s (x - mean + m) / std, no epsilon), which the plan writes as
((x - mean) ln_w + ln_b) / std with ln_w = s and ln_b = s m on every channel: the shift is divided by
the row's std, so it cannot be a LayerNorm's bias. The final norm likewise (``norm_kind``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..backbone import DownPool, FFBlock, PairedBlock, ResidualBlock, Sashimi, ScalarNorm, UpPool
from ..s4 import S4

__all__ = ["build_plan", "unsupported_reason", "block_terms", "conditioned", "NORM_KINDS"]

NORM_KINDS = ("layer", "scalar")  # the pre-norms the plan describes (see the module docstring)


def unsupported_reason(model: nn.Module) -> str | None:
    """Why the fast engines cannot run ``model`` (None if they can)."""
    parts = [getattr(model, name, None) for name in ("mu_embedder", "sashimi", "head")]
    if not (isinstance(parts[0], nn.Embedding) and isinstance(parts[1], Sashimi) and isinstance(parts[2], nn.Linear)):
        return f"not a token model with mu_embedder, a Sashimi backbone and a head ({type(model).__name__})"
    net = model.sashimi
    if net.unet or net.bidirectional:
        return "U-Net / bidirectional backbones are not supported"
    if model.head.weight.dtype not in (torch.float32, torch.float64):
        return f"dtype {model.head.weight.dtype} (float32 and float64 only)"
    if not isinstance(net.norm, (nn.LayerNorm, ScalarNorm)):
        return f"a final {type(net.norm).__name__} (only LayerNorm and ScalarNorm are packed)"
    if any(isinstance(layer, nn.Module) and not isinstance(layer, DownPool) for layer in net.d_layers):
        return "unexpected layers before the down pools"
    norms = {m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)}
    if len(norms) > 1 or not all(m.elementwise_affine for m in model.modules() if isinstance(m, nn.LayerNorm)):
        return "LayerNorms with different eps or without affine parameters"
    H0 = model.mu_embedder.embedding_dim
    for block in list(net.c_layers) + [layer for stage in net.u_layers for layer in stage[1:]]:
        if isinstance(block, PairedBlock):
            return "paired S4 + FF blocks (config.paired, the DiffWave+SaShiMi layout) are not packed"
        if not isinstance(block, ResidualBlock):
            return f"unexpected block {type(block).__name__}"
        if block.fc_t is not None and (not isinstance(block.fc_t, nn.Linear) or block.fc_t.in_features != H0):
            return f"a block's conditioning projection does not take the (B, {H0}) input condition"
        if not isinstance(block.layer, (S4, FFBlock)):
            return f"unexpected layer {type(block.layer).__name__}"
        if isinstance(block.layer, S4) and (block.layer.bidirectional or block.layer.kernel.channels != 1):
            return "bidirectional S4 layers have no step mode"
        if not isinstance(block.norm, (nn.LayerNorm, ScalarNorm)):
            return f"{type(block.norm).__name__} pre-norms (only LayerNorm and ScalarNorm are packed)"
        if isinstance(block.norm, ScalarNorm) and block.fc_t is not None:
            # the engines fold a condition's scale and shift into a LayerNorm's affine parameters;
            # after a ScalarNorm the shift would be divided by the row's std
            return "conditioned blocks with ScalarNorm pre-norms (only LayerNorm blocks take a condition)"
    default = _default_condition(model)
    if default is not None and tuple(default.shape) != (H0,):
        return f"label_vectors gives vectors of shape {tuple(default.shape)}, expected ({H0},)"
    return None


def _default_condition(model: nn.Module) -> torch.Tensor | None:
    """The condition a model means when none is given: its "no label" vector (H0,), read through
    the public ``label_vectors(None, batch)`` of a class-conditional model, else None."""
    vectors = getattr(model, "label_vectors", None)
    out = vectors(None, 1) if callable(vectors) else None
    return None if out is None else out.detach()[0]


def _d(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.float64)


def _complex(x: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(x.detach().to("cpu", torch.float64).contiguous())


@torch.no_grad()
def _s4_plan(layer: S4, dtype: torch.dtype, prefer: str) -> dict:
    """Coefficients of one S4 layer's O(N) step (see the module docstring).

    Besides the generic form (d, b, e, v, w, cw, cu) the entry holds the compact one the C++
    step uses: 'dplr': g (H, N), P and B (H', N), per channel dt, c, kappa = p^* G dt B, and the
    true C; 'diagonal': the eigenvalues d and residues r. Both with D. kappa and v use the right
    factor Q of the low-rank term (conj(P) in the Hurwitz form), as the eager 'dplr' step does.
    """
    k = layer.kernel
    H, N = k.H, k.N
    D = _d(layer.D)[0]  # (H,)
    diag = None
    if prefer == "diagonal" and k.diagonal_is_accurate(dtype):
        diag = _diagonal(k, H, N)
    out = layer.output_linear
    entry = {"type": "s4", "N": N, "glu": bool(layer.glu), "D": D, "out_w": _d(out.weight), "out_b": _d(out.bias)}
    if diag is not None:
        d, r = diag  # eigenvalues, residues (H, N)
        zero = torch.zeros_like(d)
        return dict(entry, mode="diagonal", d=d, r=r, b=torch.ones_like(d), e=r * d, v=zero, w=zero,
                    cw=torch.zeros(H, dtype=torch.float64), cu=2 * r.sum(-1).real + D)
    dt = torch.exp(_d(k.log_dt))  # (H,)
    P, B = _complex(k.P)[0], _complex(k.B)[0]  # (H', N)
    g, c = (t.cpu() for t in k.woodbury())  # (H, N), (H,)
    Q = k.q_factor(torch.float64).detach().cpu()  # (H', N): conj(P), or the free factor
    dtB = dt[:, None] * B
    kappa = 2 * (Q * g * dtB).sum(-1).real  # q^T G dt B (H,)
    d, w, v = 2 * g - 1, 2 * c[:, None] * g * P, Q * g
    b = g * dtB - (c * kappa)[:, None] * g * P  # M dt B
    C = k.true_C()[0].cpu()
    return dict(entry, mode="dplr", d=d, b=b, e=C * d, v=v, w=w, cw=2 * (C * w).sum(-1).real,
                cu=2 * (C * b).sum(-1).real + D, g=g, P=P, B=B, dt=dt, c=c, kappa=kappa, C=C)


def _diagonal(k, H: int, N: int):
    """(eigenvalues, residues) of one mode of each conjugate pair, or None if they do not pair up."""
    sysd = k.diagonal_system()
    lam, r = sysd["Lambda"], sysd["C"][0] * sysd["Bb"]  # (H, 2N)
    upper = lam.imag > 0
    if not bool((upper.sum(-1) == N).all()):
        return None
    idx = torch.argsort((~upper).to(torch.int8), dim=-1, stable=True)[:, :N]
    lam_k, r_k = lam.gather(-1, idx), r.gather(-1, idx)
    # The dropped half must be the conjugates: the total impulse response is real.
    for power in (0, 1, 7):
        full = (r * lam ** power).sum(-1)
        half = 2 * (r_k * lam_k ** power).sum(-1).real
        scale = (r * lam ** power).abs().sum(-1).clamp_min(1e-300)
        if not bool(((full - half).abs() <= 1e-9 * scale).all()):
            return None
    return lam_k, r_k


def _norm(norm: nn.Module, H: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(ln_w, ln_b, kind) of a LayerNorm or ScalarNorm over H channels (see the module docstring)."""
    if isinstance(norm, ScalarNorm):
        s, m = _d(norm.s)[0], _d(norm.m)[0]
        ones = torch.ones(H, dtype=torch.float64)
        return s * ones, (s * m) * ones, "scalar"
    return _d(norm.weight), _d(norm.bias), "layer"


@torch.no_grad()
def build_plan(model: nn.Module, dtype: torch.dtype = torch.float32, prefer: str = "diagonal") -> dict:
    """Everything a fast engine needs, as float64 / complex128 CPU tensors.

    Args:
        model: a token model (see the module docstring and :func:`unsupported_reason`).
        dtype: the precision the engine will run in (decides 'diagonal' vs 'dplr' per layer).
        prefer: 'diagonal' (per layer when well-conditioned, else 'dplr') or 'dplr' (all layers).

    Returns:
        dict with ``V``, ``eps``, ``emb`` (V, H0), ``norm`` (w, b) and ``norm_kind`` (one of
        :data:`NORM_KINDS`) of the final norm, ``head`` (w (V, H0), b),
        ``pools`` (outermost first: ``p``, ``down`` (w, b), ``up`` (w, b)), ``tiers``
        (outermost first, the center last: ``H`` and ``blocks``, each {'type': 's4' | 'ff', ...,
        ``ln_w``, ``ln_b`` and ``norm`` (its pre-norm's kind),
        and for a conditioned block ``fc_w`` (H or 2H, H0), ``fc_b``, ``film``}) and
        ``condition``: the (H0,) vector the engines use when given none (a class-conditional
        model's "no label" vector), or None (an unconditional model: nothing is added).
    """
    reason = unsupported_reason(model)
    if reason is not None:
        raise ValueError(f"fast generation does not support this model: {reason}")
    net = model.sashimi
    # the LayerNorms' common eps (ScalarNorm has none; a model without LayerNorms never reads it)
    eps = next((m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)), 1e-5)

    def blocks(seq, H: int) -> list[dict]:
        out = []
        for block in seq:
            ln_w, ln_b, kind = _norm(block.norm, H)
            if isinstance(block.layer, S4):
                entry = _s4_plan(block.layer, dtype, prefer)
            else:
                ff = block.layer
                entry = {"type": "ff", "w1": _d(ff.fc1.weight), "b1": _d(ff.fc1.bias),
                         "w2": _d(ff.fc2.weight), "b2": _d(ff.fc2.bias)}
            entry = dict(entry, ln_w=ln_w, ln_b=ln_b, norm=kind)
            if block.fc_t is not None:  # per-block conditioning: fc_t(condition) after the norm
                entry.update(fc_w=_d(block.fc_t.weight), fc_b=_d(block.fc_t.bias), film=bool(block.film))
            out.append(entry)
        return out

    pools, tiers = [], []
    n = len(net.d_layers)
    for k, down in enumerate(net.d_layers):
        up = net.u_layers[n - 1 - k][0]
        assert isinstance(up, UpPool) and up.pool == down.pool
        pools.append({"p": down.pool, "down": (_d(down.linear.weight), _d(down.linear.bias)),
                      "up": (_d(up.linear.weight), _d(up.linear.bias))})
        stage = net.u_layers[n - 1 - k]
        tiers.append({"H": up.d_output, "blocks": blocks(stage[1:], up.d_output)})
    h_center = net.d_layers[-1].d_output if n else net.d_model
    tiers.append({"H": h_center, "blocks": blocks(net.c_layers, h_center)})
    default = _default_condition(model)
    H0 = model.mu_embedder.embedding_dim
    *final, final_kind = _norm(net.norm, H0)
    return {"V": model.head.out_features, "eps": float(eps), "emb": _d(model.mu_embedder.weight),
            "norm": tuple(final), "norm_kind": final_kind, "head": (_d(model.head.weight), _d(model.head.bias)),
            "pools": pools, "tiers": tiers, "condition": None if default is None else _d(default)}


def block_terms(block: dict, condition: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(scale, shift), each (B, H) or scale None, that a conditioned block (one with ``fc_w``)
    applies after its norm, ``z (1 + scale) + shift``, for conditions (B, H0): the plan's form of
    :meth:`sashimi.backbone.ResidualBlock.cond_terms`, in the condition's dtype and device."""
    w, b = (t.to(condition.device, condition.dtype) for t in (block["fc_w"], block["fc_b"]))
    t = torch.nn.functional.linear(condition, w, b)
    if block["film"]:
        scale, shift = t.chunk(2, dim=-1)
        return scale, shift
    return None, t


def conditioned(plan: dict) -> bool:
    """Whether any block of the plan takes the condition (config.condition 'blocks' or 'film')."""
    return any("fc_w" in block for tier in plan["tiers"] for block in tier["blocks"])


def s4_modes(plan: dict) -> dict[str, int]:
    """How many S4 layers use each step form, e.g. {'dplr': 24}."""
    counts: dict[str, int] = {}
    for tier in plan["tiers"]:
        for block in tier["blocks"]:
            if block["type"] == "s4":
                counts[block["mode"]] = counts.get(block["mode"], 0) + 1
    return counts
