"""The SaShiMi backbone: S4 and feed-forward residual blocks on several time resolutions.

Tiers are joined by pooling: a down pool folds ``p`` consecutive steps into channels and
widens them ``expand`` times; an up pool does the reverse, shifted by one pooled step so that
the model stays causal. All tensors are (batch, length, channels).

Recurrent state is explicit: ``default_state(batch)`` then ``step(x, state) -> (y, state)``.
In step mode a lower tier runs only every p-th step, when its down pool has collected p inputs.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import NORMS
from .s4 import S4, channel_dropout

__all__ = ["Sashimi", "DownPool", "UpPool", "FFBlock", "ResidualBlock", "PairedBlock", "WeightNormLinear", "ScalarNorm",
           "NORMS"]


class ScalarNorm(nn.Module):
    """Normalisation over channels with two scalar parameters (the SaShiMi authors' ``TransposedLN``
    with ``scalar=True``): y = s (x - mean(x) + m) / std(x), with mean and (biased) std over the
    channels of each step and no epsilon. Parameters ``m`` and ``s``, shape (1,) each.

    Args: x (..., H). Returns: (..., H).
    """

    def __init__(self, d_model: int | None = None):
        super().__init__()
        self.m = nn.Parameter(torch.zeros(1))
        self.s = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std, mean = torch.std_mean(x, dim=-1, unbiased=False, keepdim=True)
        return (self.s / std) * (x - mean + self.m)



class WeightNormLinear(nn.Module):
    """Linear layer with weight normalisation, w = g v / ||v|| (norm over inputs, per output).

    Parameter names (``weight_g`` (out, 1), ``weight_v`` (out, in), ``bias`` (out,)) follow
    ``torch.nn.utils.weight_norm`` so that old checkpoints load directly.
    """

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        layer = nn.Linear(d_in, d_out)
        self.weight_v = nn.Parameter(layer.weight.detach().clone())
        self.weight_g = nn.Parameter(layer.weight.detach().norm(dim=1, keepdim=True))
        self.bias = nn.Parameter(layer.bias.detach().clone())

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class DownPool(nn.Module):
    """(B, L, H) -> (B, L / p, expand H): group p steps into channels (index h p + s), project."""

    def __init__(self, d_input: int, expand: int, pool: int):
        super().__init__()
        self.pool, self.d_output = pool, d_input * expand
        self.linear = WeightNormLinear(d_input * pool, self.d_output)

    def forward(self, x: torch.Tensor, cond=None) -> torch.Tensor:
        b, length, h = x.shape
        x = x.reshape(b, length // self.pool, self.pool, h).transpose(-1, -2).reshape(b, length // self.pool, h * self.pool)
        return self.linear(x)

    def default_state(self, *batch_shape: int, device=None) -> tuple:
        return ()

    def step(self, x: torch.Tensor, state: tuple, cond=None):
        """Collect inputs; every p-th step emit (B, expand H), otherwise None."""
        state = state + (x,)
        if len(state) < self.pool:
            return None, state
        x = torch.stack(state, dim=-1).flatten(-2)  # (B, H p), index h p + s
        return self.linear(x), ()


class UpPool(nn.Module):
    """(B, L, H) -> (B, L p, H / expand): project, unfold over time.

    A causal up pool shifts its output one pooled step right, so that the p samples of pooled
    step l only see inputs before them; a non-causal (bidirectional) model does not shift.
    """

    def __init__(self, d_input: int, expand: int, pool: int, causal: bool = True):
        super().__init__()
        self.pool, self.d_output, self.causal = pool, d_input // expand, causal
        self.linear = WeightNormLinear(d_input, self.d_output * pool)

    def forward(self, x: torch.Tensor, cond=None) -> torch.Tensor:
        b, length, _ = x.shape
        x = self.linear(x)
        if self.causal:
            x = F.pad(x[:, :-1], (0, 0, 1, 0))  # output for pooled step l is released during step l + 1
        return x.reshape(b, length, self.d_output, self.pool).transpose(-1, -2).reshape(b, length * self.pool, self.d_output)

    def default_state(self, *batch_shape: int, device=None) -> tuple:
        zero = torch.zeros(*batch_shape, self.d_output, device=device if device is not None else self.linear.bias.device,
                           dtype=self.linear.bias.dtype)
        return (zero,) * self.pool

    def step(self, x, state: tuple, cond=None):
        """Release one pending output (B, H / expand); refill from ``x`` when the queue empties."""
        y, state = state[0], state[1:]
        if not state:
            if x is None:
                raise RuntimeError("UpPool.step: queue empty but the tier below produced no output")
            x = self.linear(x).unflatten(-1, (self.d_output, self.pool))
            state = tuple(x.unbind(-1))
        return y, state


class FFBlock(nn.Module):
    """Position-wise feed-forward: Linear(H, ff H), GELU, dropout, Linear(ff H, H)."""

    def __init__(self, d_model: int, expand: int = 2, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_model * expand)
        self.fc2 = nn.Linear(d_model * expand, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(channel_dropout(F.gelu(self.fc1(x)), self.dropout, self.training))

    def default_state(self, *batch_shape: int, device=None):
        return None

    def step(self, x: torch.Tensor, state):
        """x (B, H) -> (B, H). Step mode is inference: no dropout, whatever the module's mode
        (forward's mask is shaped for (B, L, H) sequences), like the S4 and residual steps."""
        return self.fc2(F.gelu(self.fc1(x))), state


class ResidualBlock(nn.Module):
    """x + dropout(layer(LayerNorm(x) [conditioned])).

    Args:
        d_model: channels.
        layer: an :class:`S4` or :class:`FFBlock`.
        dropout: channel dropout on the layer's output.
        d_cond: if given, a conditioning vector (B, d_cond) is projected by ``fc_t`` and applied
            after the norm: added (DiffWave's diffusion-step embedding; a label's shift), or with
            ``film`` as a scale and shift, ``z (1 + scale) + shift`` (FiLM).
        film: condition by scale and shift (``fc_t`` maps d_cond to 2 d_model: scale, then shift).
        norm: 'layer' (LayerNorm over channels) or 'scalar' (:class:`ScalarNorm`).
    """

    def __init__(self, d_model: int, layer: nn.Module, dropout: float = 0.0, d_cond: int | None = None,
                 film: bool = False, norm: str = "layer"):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.norm = nn.LayerNorm(d_model) if norm == "layer" else ScalarNorm(d_model)
        self.layer = layer
        self.film = bool(film and d_cond)
        self.fc_t = nn.Linear(d_cond, d_model * (2 if self.film else 1)) if d_cond else None
        self.dropout = dropout

    def cond_terms(self, cond: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(scale, shift) this block applies after its norm for conditioning vectors (B, d_cond):
        each (B, d_model); scale is None without FiLM (the norm's output is only shifted)."""
        t = self.fc_t(cond)
        if self.film:
            scale, shift = t.chunk(2, dim=-1)
            return scale, shift
        return None, t

    def _pre(self, x, cond):
        z = self.norm(x)
        if self.fc_t is not None:
            if cond is None:
                raise ValueError("this block needs a conditioning vector (cond)")
            scale, shift = self.cond_terms(cond)
            if z.dim() == 3:
                scale, shift = (None if scale is None else scale.unsqueeze(-2)), shift.unsqueeze(-2)
            z = z + shift if scale is None else z * (1 + scale) + shift
        return z

    def forward(self, x: torch.Tensor, cond=None) -> torch.Tensor:
        return x + channel_dropout(self.layer(self._pre(x, cond)), self.dropout, self.training)

    def default_state(self, *batch_shape: int, device=None):
        return self.layer.default_state(*batch_shape, device=device)

    def step(self, x: torch.Tensor, state, cond=None):
        z, state = self.layer.step(self._pre(x, cond), state)
        return x + z, state


class PairedBlock(nn.Module):
    """An S4 residual block and the FF residual block after it as one unit (``s4`` then ``ff``): the
    SaShiMi authors' ``DiffWaveBlock``, around which their U-Net puts one skip connection."""

    def __init__(self, s4: ResidualBlock, ff: ResidualBlock):
        super().__init__()
        self.s4, self.ff = s4, ff

    def forward(self, x: torch.Tensor, cond=None) -> torch.Tensor:
        return self.ff(self.s4(x, cond), cond)

    def default_state(self, *batch_shape: int, device=None):
        return (self.s4.default_state(*batch_shape, device=device), self.ff.default_state(*batch_shape, device=device))

    def step(self, x: torch.Tensor, state, cond=None):
        x, s4_state = self.s4.step(x, state[0], cond)
        x, ff_state = self.ff.step(x, state[1], cond)
        return x, (s4_state, ff_state)


class Sashimi(nn.Module):
    """The multi-tier SaShiMi network.

    Args:
        d_model: channels of the outer tier.
        n_layers: S4 blocks per tier (each followed by an FF block when ``ff > 0``).
        pool: pooling factor between consecutive tiers, outermost first.
        expand: channel multiplier per tier.
        ff: FF block expansion (0: no FF blocks).
        bidirectional: bidirectional S4 (non-causal; no step mode).
        glu: GLU output projection in S4 layers.
        unet: also run blocks before each down pool, with skip connections around every layer.
        dropout: channel dropout.
        d_state: S4 state size.
        l_max: longest sequence (the S4 kernels' length).
        tie_state: tie S4 state matrices across channels.
        lr: learning rate for S4 state parameters (recorded on the parameters).
        d_cond: conditioning vector size (DiffWave's step embedding, a label vector), or None.
        cond_ff: condition the FF blocks too (else only the S4 blocks, DiffWave's layout).
        film: condition by scale and shift after each norm instead of a shift alone.
        norm: the residual blocks' pre-norm, 'layer' or 'scalar' (see :class:`ResidualBlock`).
        hurwitz: False gives every S4 layer a free low-rank factor ``Q`` (see :class:`~sashimi.s4.SSMKernel`).
        paired: each S4 block and its FF block form one :class:`PairedBlock` (one skip unit in the U-Net).
        final_norm: the last norm, 'layer' (LayerNorm) or 'scalar' (:class:`ScalarNorm`).
    """

    def __init__(self, d_model: int = 64, n_layers: int = 8, pool=(4, 4), expand: int = 2, ff: int = 2,
                 bidirectional: bool = False, glu: bool = True, unet: bool = False, dropout: float = 0.0,
                 d_state: int = 64, l_max: int = 16000, tie_state: bool = True, lr: float | None = None,
                 d_cond: int | None = None, cond_ff: bool = False, film: bool = False, norm: str = "layer",
                 hurwitz: bool = True, paired: bool = False, final_norm: str = "layer"):
        super().__init__()
        if final_norm not in NORMS:
            raise ValueError(f"final_norm must be one of {NORMS}, got {final_norm!r}")
        self.d_model, self.unet, self.bidirectional = d_model, unet, bidirectional
        self.pool = tuple(pool)

        def s4_block(dim: int, length: int) -> ResidualBlock:
            layer = S4(dim, d_state=d_state, l_max=length, bidirectional=bidirectional, glu=glu,
                       dropout=dropout, tie_state=tie_state, lr=lr, hurwitz=hurwitz)
            return ResidualBlock(dim, layer, dropout, d_cond=d_cond, film=film, norm=norm)

        def blocks(dim: int, length: int) -> list[nn.Module]:
            out = []
            for _ in range(n_layers):
                out.append(s4_block(dim, length))
                if ff > 0:
                    out.append(ResidualBlock(dim, FFBlock(dim, ff, dropout), dropout,
                                             d_cond=d_cond if cond_ff else None, film=film, norm=norm))
                    if paired:
                        out[-2:] = [PairedBlock(out[-2], out[-1])]
            return out

        # Each tier's S4 kernels are defined for the length that tier sees.
        lengths = [l_max]
        for p in self.pool:
            lengths.append(math.ceil(lengths[-1] / p))
        H = d_model
        d_layers = []
        for tier, p in enumerate(self.pool):
            if unet:
                d_layers += blocks(H, lengths[tier])
            d_layers.append(DownPool(H, expand, p))
            H *= expand
        c_layers = blocks(H, lengths[-1])
        u_layers = []
        for tier, p in reversed(list(enumerate(self.pool))):
            H //= expand
            up = UpPool(H * expand, expand, p, causal=not bidirectional)
            u_layers.append(nn.ModuleList([up] + blocks(H, lengths[tier])))
        self.d_layers = nn.ModuleList(d_layers)
        self.c_layers = nn.ModuleList(c_layers)
        self.u_layers = nn.ModuleList(u_layers)
        self.norm = nn.LayerNorm(d_model) if final_norm == "layer" else ScalarNorm(d_model)

    @classmethod
    def from_config(cls, config, d_cond: int | None = None, cond_ff: bool = False, film: bool = False) -> "Sashimi":
        """The backbone a :class:`~sashimi.config.BackboneConfig` (or a model config built on it)
        describes; ``d_cond``, ``cond_ff``, ``film``: the per-block conditioning (see the class)."""
        return cls(d_model=config.d_model, n_layers=config.n_layers, pool=config.pool, expand=config.expand,
                   ff=config.ff, bidirectional=config.bidirectional, glu=config.glu, unet=config.unet,
                   dropout=config.dropout, d_state=config.d_state, l_max=config.l_max, tie_state=config.tie_state,
                   lr=config.lr, d_cond=d_cond, cond_ff=cond_ff, film=film, norm=config.norm,
                   hurwitz=config.hurwitz, paired=config.paired, final_norm=config.final_norm)

    @property
    def total_pool(self) -> int:
        return math.prod(self.pool)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Args: x (B, L, d_model); cond (B, d_cond) or None. Returns (B, L, d_model).

        Causal models accept any L (they are padded on the right internally); bidirectional
        ones need L divisible by the product of the pooling factors.
        """
        length = x.size(1)
        pad = -length % self.total_pool
        if pad:
            if self.bidirectional:
                raise ValueError(f"sequence length {length} must be a multiple of {self.total_pool} "
                                 "(the product of the pooling factors) for a bidirectional model")
            x = F.pad(x, (0, 0, 0, pad))  # right padding cannot change causal outputs
        outputs = [x]
        for layer in self.d_layers:
            x = self._call(layer, x, cond)
            outputs.append(x)
        for layer in self.c_layers:
            x = self._call(layer, x, cond)
        x = x + outputs.pop()
        for block in self.u_layers:
            if self.unet:
                for layer in block:
                    x = self._call(layer, x, cond) + outputs.pop()
            else:
                x = block[0](x) + outputs.pop()
                outputs.append(x)
                for layer in block[1:]:
                    x = self._call(layer, x, cond)
                x = x + outputs.pop()
        return self.norm(x)[:, :length]

    @staticmethod
    def _call(layer, x, cond):
        return layer(x) if isinstance(layer, (DownPool, UpPool)) else layer(x, cond)

    # ---- recurrent mode ----------------------------------------------------------------
    def _all_layers(self) -> list[nn.Module]:
        return list(self.d_layers) + list(self.c_layers) + [layer for block in self.u_layers for layer in block]

    def setup_rnn(self, mode: str = "dense") -> None:
        """Prepare every S4 layer for step mode: 'dense' (reference), 'diagonal' or 'dplr'."""
        if self.bidirectional:
            raise RuntimeError("a bidirectional SaShiMi has no recurrent (step) mode")
        for module in self.modules():
            if isinstance(module, S4):
                module.setup_step(mode)

    def default_state(self, *batch_shape: int, device=None) -> list:
        """Initial recurrent state for a batch: an opaque list, one entry per layer."""
        return [layer.default_state(*batch_shape, device=device) for layer in self._all_layers()]

    @torch.no_grad()
    def step(self, x: torch.Tensor, state: list, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, list]:
        """One time step. Inference only: no autograd graph is recorded (see :meth:`S4.step`).

        Args:
            x: (B, d_model) input at this step.
            state: from :meth:`default_state` or the previous step.
            cond: (B, d_cond) conditioning or None.

        Returns:
            y (B, d_model) and the next state.
        """
        layers = self._all_layers()
        if not isinstance(state, (list, tuple)):
            raise TypeError(f"state must be the list returned by default_state() or by the previous step(), "
                            f"got {type(state).__name__}")
        if len(state) != len(layers):
            raise ValueError(f"state has {len(state)} entries, expected {len(layers)} (use default_state())")
        new_state = list(state)
        index = {id(layer): i for i, layer in enumerate(layers)}

        def run(layer, x):
            i = index[id(layer)]
            y, new_state[i] = layer.step(x, state[i]) if isinstance(layer, (DownPool, UpPool)) \
                else layer.step(x, state[i], cond)
            return y

        outputs = [x]
        depth = 0  # number of down pools that emitted this step
        for layer in self.d_layers:
            x = run(layer, x)
            if x is None:
                break
            outputs.append(x)
            depth += isinstance(layer, DownPool)
        if x is not None:
            for layer in self.c_layers:
                x = run(layer, x)
            x = x + outputs.pop()
        n_tiers = len(self.pool)
        for block in self.u_layers[n_tiers - 1 - min(depth, n_tiers - 1):] if x is None else self.u_layers:
            if self.unet:
                for layer in block:
                    x = run(layer, x) + outputs.pop()
            else:
                x = run(block[0], x) + outputs.pop()
                outputs.append(x)
                for layer in block[1:]:
                    x = run(layer, x)
                x = x + outputs.pop()
        return self.norm(x), new_state
