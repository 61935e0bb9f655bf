"""DiffWave with a SaShiMi backbone: a noise predictor for waveform diffusion, and its samplers.

    x (B, L) -> 1x1 conv (weight-normed), ReLU          -> (B, L, H)
    t (B,)   -> sinusoidal (128) -> Linear 512, swish -> Linear 512, swish -> cond (B, 512)
    U-Net SaShiMi (bidirectional S4; every S4 block adds Linear(512 -> H)(cond) after its norm),
    final LayerNorm -> 1x1 conv (weight-normed), ReLU -> 1x1 conv to one channel (zero init)
                                                        -> predicted noise (B, L)

A class-conditional model (``config.num_classes > 0``) adds a learned label vector (B, 512) to
``cond``: every block's Linear(512 -> H) then carries its own projection of the label beside the
step's (the per-block conditioning of DiffWave's class-conditional SC09 model). Label
``num_classes`` is the "no label" class, learned by label dropout, which makes classifier-free
guidance possible.

1x1 convolutions are written as linear layers on channel-last tensors. The published files
(RF5/DiffWave-unconditional) load through :func:`sashimi.load_model` (converted in
:mod:`sashimi.persistence.published`).
"""
from __future__ import annotations

import dataclasses
import math
from functools import cached_property

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import Sashimi, WeightNormLinear
from .config import DiffWaveConfig
from .diffusion import NoiseSchedule, ddpm_sample, sampling_plan, training_loss
from .errors import InputError
from .labels import check_guidance, model_labels
from .s4 import check_float_params
from .sampling import make_generator

__all__ = ["SashimiDiffWave", "step_embedding"]


def step_embedding(steps: torch.Tensor, dim: int = 128) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) diffusion steps, as DiffWave.

    e = [sin(t f_0), ..., sin(t f_{h-1}), cos(t f_0), ..., cos(t f_{h-1})],
    f_j = exp(-ln(10000) j / (h - 1)), h = dim / 2.

    Args:
        steps: (B,) integer or fractional steps.
        dim: embedding size (even).

    Returns:
        float32 (B, dim).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / (half - 1))
    args = steps.to(torch.float32).unsqueeze(-1) * freqs.to(device=steps.device, dtype=torch.float32)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class StepEmbedding(nn.Module):
    """steps (B,) -> sinusoid (d_embed) -> Linear, swish -> Linear, swish -> (B, d_hidden)."""

    def __init__(self, d_embed: int = 128, d_hidden: int = 512):
        super().__init__()
        self.d_embed = d_embed
        self.fc1 = nn.Linear(d_embed, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_hidden)

    def forward(self, steps: torch.Tensor) -> torch.Tensor:
        e = step_embedding(steps, self.d_embed).to(self.fc1.weight.dtype)
        return F.silu(self.fc2(F.silu(self.fc1(e))))


class SashimiDiffWave(nn.Module):
    """DiffWave noise predictor with a U-Net SaShiMi backbone, plus its samplers.

    Args:
        config: a :class:`DiffWaveConfig` (default: the published SC09 architecture, 23.5M params).
    """

    def __init__(self, config: DiffWaveConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else DiffWaveConfig()
        H = config.d_model
        self.init_conv = WeightNormLinear(1, H)
        self.step_embed = StepEmbedding(config.d_step_embed, config.d_step_hidden)
        self.sashimi = Sashimi.from_config(config, d_cond=config.d_step_hidden)
        self.final_conv = WeightNormLinear(H, H)
        self.final_proj = nn.Linear(H, 1)
        nn.init.zeros_(self.final_proj.weight)
        nn.init.zeros_(self.final_proj.bias)
        if config.num_classes:
            # Added after the step MLP, so that each block's existing fc_t is a per-block linear
            # projection of the label (fc_t(step + label) = fc_t(step) + W label): the AR model's
            # 'blocks' mechanism with no new layers. N(0, 1) as the AR model's label embedding
            # (zero-initialised label vectors were measured to stay far too small there).
            # Built last: an unconditional model draws its initial weights exactly as before.
            self.label_embedder = nn.Embedding(config.num_classes + 1, config.d_step_hidden)

    @property
    def classes(self) -> list[str] | None:
        """The names of the classes the model is conditioned on (index i is class i), or None."""
        return list(self.config.class_names) if self.config.num_classes else None

    @property
    def device(self) -> torch.device:
        return self.final_proj.weight.device

    @cached_property
    def schedule(self) -> NoiseSchedule:
        """The training noise schedule (T linear betas from the config)."""
        c = self.config
        return NoiseSchedule.linear(c.T, c.beta_start, c.beta_end)

    # ---- the noise predictor --------------------------------------------------------------
    def forward(self, x: torch.Tensor, diffusion_steps: torch.Tensor, labels=None) -> torch.Tensor:
        """Predict the noise in x.

        Args:
            x: float (B, L) noised waveforms (also (B, 1, L), the seed's layout); L a multiple of
                the product of the pooling factors (16 for SC09) and at most ``l_max``.
            diffusion_steps: (B,) or (B, 1) steps in [0, T-1]: integers, or fractional values
                (the fast sampler's interpolated steps).
            labels: class-conditional models only: integer (B,) class indices (``num_classes``:
                no label) or a list of B class names / indices; None: no label.

        Returns:
            float (B, L) predicted noise (or (B, 1, L) for a (B, 1, L) input).
        """
        check_float_params(self.final_proj.weight.dtype, type(self).__name__)
        squeeze = torch.is_tensor(x) and x.dim() == 3 and x.size(1) == 1
        x = self._check_audio(x[:, 0] if squeeze else x, "x")
        steps = self._check_steps(diffusion_steps, x.size(0))
        cond = self.step_embed(steps)  # (B, d_step_hidden)
        labels = self.check_labels(labels, x.size(0))
        if self.config.num_classes:
            cond = cond + self.label_vectors(labels, x.size(0)).to(cond.dtype)
        h = F.relu(self.init_conv(x.unsqueeze(-1)))  # (B, L, H)
        h = self.sashimi(h, cond)  # (B, L, H), final LayerNorm included
        eps = self.final_proj(F.relu(self.final_conv(h))).squeeze(-1)  # (B, L)
        return eps.unsqueeze(1) if squeeze else eps

    def training_loss(self, x0: torch.Tensor, generator: torch.Generator | None = None, labels=None) -> torch.Tensor:
        """Noise-prediction MSE at a uniformly drawn step per waveform.

        Args:
            x0: float (B, L) clean waveforms in [-1, 1].
            generator: RNG for steps and noise (on the model's device); None: global RNG.
            labels: class-conditional models: the (B,) classes (see :meth:`forward`); None: no
                label. Label dropout is the caller's (the training data replaces labels by
                ``num_classes``).

        Returns:
            scalar loss.
        """
        x0 = self._check_audio(x0, "x0")
        labels = self.check_labels(labels, x0.size(0))
        return training_loss(self.noise_fn(labels), x0, self.schedule, generator)

    def noise_fn(self, labels: torch.Tensor | None = None, guidance: float = 1.0):
        """The noise predictor ``eps(x, t)`` the samplers call, for fixed labels.

        With ``guidance`` g != 1 (classifier-free guidance) it is
        ``eps(x, t | no label) + g * (eps(x, t | label) - eps(x, t | no label))``, both halves
        computed in one batch of 2B; g = 1 is the conditional predictor itself (one pass).

        Args:
            labels: checked (B,) labels (from :meth:`check_labels`) or None (no label).
            guidance: the guidance weight (> 0; other than 1 only with labels).

        Returns:
            a callable ``(x (B, L), t (B,)) -> (B, L)``.
        """
        guidance = check_guidance(guidance, labels)
        if labels is None and not self.config.num_classes:
            return self
        if guidance == 1.0:
            return lambda x, t: self(x, t, labels)
        free = torch.full_like(labels, self.config.num_classes)
        both = torch.cat([labels, free])

        def guided(x, t):
            cond, uncond = self(torch.cat([x, x]), torch.cat([t, t]), both).chunk(2)
            return uncond + guidance * (cond - uncond)

        return guided

    # ---- sampling -------------------------------------------------------------------------
    @torch.no_grad()
    def unconditional_generate(self, N: int, progress: bool = True, *, steps: None | str | int = None,
                               seed: int | None = None, length: int | None = None) -> torch.Tensor:
        """Sample ``N`` waveforms.

        Args:
            N: number of waveforms.
            progress: show a progress bar.
            steps: None: the full DDPM sampler (T = 200 model calls); 'fast': the 6-step schedule
                (lmnt-com/diffwave's, on fractional training steps); an int n in [1, T]: n training
                steps evenly spaced over the schedule (fewer calls, lower quality).
            seed: seed for reproducible samples (None: torch's global RNG).
            length: samples per waveform (default ``l_max``: 16000 = 1 s at 16 kHz for SC09).

        Returns:
            float (N, length) waveforms, clamped to [-1, 1].
        """
        if not isinstance(N, int) or isinstance(N, bool) or N < 1:
            raise InputError(f"N must be a positive integer, got {N!r}")
        return self._sample(N, length, steps, seed, progress, None, 1.0)

    @torch.no_grad()
    def conditional_generate(self, labels, *, steps: None | str | int = None, length: int | None = None,
                             guidance: float = 1.0, seed: int | None = None, progress: bool = True) -> torch.Tensor:
        """Sample one waveform per requested class (class-conditional models only).

        Args:
            labels: integer (N,) class indices, or a list of N class names or indices
                (:attr:`classes` gives the names).
            guidance: classifier-free guidance weight g > 0: the sampler follows
                ``eps(no label) + g * (eps(label) - eps(no label))``; 1.0 is the conditional model
                itself, larger values say the class more clearly (at twice the work per step).
            steps, length, seed, progress: as :meth:`unconditional_generate`; with the same seed
                the starting noise is the same.

        Returns:
            float (N, length) waveforms, clamped to [-1, 1].
        """
        if not self.config.num_classes:
            raise InputError("conditional_generate needs a class-conditional model; this one is unconditional "
                             "(config.num_classes=0): use unconditional_generate")
        if labels is None:
            raise InputError("labels must be the classes to generate, got None (use unconditional_generate)")
        labels = self.check_labels(labels, None, allow_none_class=False)  # any count >= 1
        return self._sample(labels.numel(), length, steps, seed, progress, labels, check_guidance(guidance, labels))

    def _sample(self, n: int, length, steps, seed, progress: bool, labels, guidance: float) -> torch.Tensor:
        length = self.config.l_max if length is None else length
        self._check_length(length, "length")
        plan = sampling_plan(self.schedule, steps)  # validate before drawing noise
        generator = self._generator(seed)
        z = torch.randn(n, length, generator=generator, device=self.device, dtype=self.final_proj.weight.dtype)
        # S4 kernels are computed once and reused by every step (SSMKernel caches them without autograd).
        eps = self.noise_fn(labels, guidance)
        return ddpm_sample(eps, z, *plan, generator=generator, progress=progress).clamp(-1.0, 1.0)

    @torch.no_grad()
    def generate_from_latent(self, z: torch.Tensor, progress: bool = True, *, steps: None | str | int = None,
                             seed: int | None = None, labels=None, guidance: float = 1.0) -> torch.Tensor:
        """Denoise a given starting noise: deterministic given ``z`` and ``seed``.

        Args:
            z: float (N, L) standard-normal starting noise (L as in :meth:`forward`).
            progress, steps: as :meth:`unconditional_generate`.
            seed: seed for the noise added at each step (None: torch's global RNG).
            labels, guidance: class-conditional models: the (N,) classes (None: no label) and the
                guidance weight, as :meth:`conditional_generate`.

        Returns:
            float (N, L) waveforms, clamped to [-1, 1].
        """
        z = self._check_audio(z, "z").to(self.device, self.final_proj.weight.dtype)
        labels = self.check_labels(labels, z.size(0))
        guidance = check_guidance(guidance, labels)
        plan = sampling_plan(self.schedule, steps)
        eps = self.noise_fn(labels, guidance)
        return ddpm_sample(eps, z, *plan, generator=self._generator(seed), progress=progress).clamp(-1.0, 1.0)

    # ---- conditioning --------------------------------------------------------------------
    def check_labels(self, labels, batch: int | None, allow_none_class: bool = True) -> torch.Tensor | None:
        """Validate ``labels`` for a batch of ``batch`` waveforms (:func:`sashimi.labels.parse_labels`,
        the parser :meth:`sashimi.SashimiAR.check_labels` uses too).

        Args:
            labels: None, an integer tensor or numpy array (batch,), or a list of ``batch`` class
                names or indices. A conditional model's index ``num_classes`` is "no label".
            batch: the batch size the labels must match (None: any, at least one).
            allow_none_class: accept the "no label" index ``num_classes``.

        Returns:
            int64 (batch,) on the model's device, or None (no label).

        Raises:
            ValueError: labels for an unconditional model, unknown names, indices out of range or
                the wrong count. TypeError: labels of the wrong type.
        """
        index = model_labels(labels, self.config.class_names if self.config.num_classes else None, batch=batch,
                             allow_none_class=allow_none_class)
        return None if index is None else index.to(self.device)

    def label_vectors(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """The (batch, d_step_hidden) label vectors added to the step embedding, or None
        (unconditional model).

        Args:
            labels: checked labels (from :meth:`check_labels`) or None for "no label".
        """
        if not self.config.num_classes:
            return None
        if labels is None:
            labels = torch.full((batch,), self.config.num_classes, dtype=torch.long, device=self.device)
        return self.label_embedder(labels)

    # ---- helpers ------------------------------------------------------------------------
    def _generator(self, seed):
        return make_generator(seed, self.device)

    def _check_length(self, length, name: str) -> None:
        pool = self.sashimi.total_pool
        if not isinstance(length, int) or isinstance(length, bool) or length < 1 or length % pool \
                or length > self.config.l_max:
            raise InputError(f"{name} must be a positive multiple of {pool} (the product of the pooling factors) "
                             f"and at most l_max={self.config.l_max}, got {length!r}")

    def _check_audio(self, x, name: str) -> torch.Tensor:
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor, got "
                            f"{x.dtype if torch.is_tensor(x) else type(x).__name__}")
        if x.dim() != 2 or x.size(0) == 0:
            raise InputError(f"{name} must have shape (B, L) with B > 0, got {tuple(x.shape)}")
        self._check_length(x.size(1), f"{name}.shape[1]")
        if not bool(torch.isfinite(x).all()):
            raise InputError(f"{name} contains NaN or inf")
        return x

    def _check_steps(self, steps, batch: int) -> torch.Tensor:
        if not torch.is_tensor(steps) or steps.is_complex() or steps.dtype == torch.bool:
            raise TypeError(f"diffusion_steps must be a real torch.Tensor, got "
                            f"{steps.dtype if torch.is_tensor(steps) else type(steps).__name__}")
        if steps.dim() == 2 and steps.size(1) == 1:
            steps = steps[:, 0]
        if steps.shape != (batch,):
            raise InputError(f"diffusion_steps must have shape ({batch},) (one step per waveform), "
                             f"got {tuple(steps.shape)}")
        T = self.config.T
        if not bool(((steps >= 0) & (steps <= T - 1)).all()):  # also rejects NaN
            raise InputError(f"diffusion_steps must be in [0, T-1] = [0, {T - 1}], got min {float(steps.min())}, "
                             f"max {float(steps.max())}")
        return steps.to(self.device)

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return f"{n:,} parameters, config={dataclasses.asdict(self.config)}"


# ---- the published format (RF5/DiffWave-unconditional) -------------------------------------
