"""Denoising diffusion (DDPM) for waveforms: the noise schedule, samplers and training loss.

The forward process noises clean audio x0 to step t in [0, T):
    x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps,   eps ~ N(0, I),
with alpha_bar_t = prod_{s <= t} (1 - beta_s) and, for DiffWave, T = 200 linear betas 1e-4..0.02.
A noise predictor ``eps_fn(x_t, t) -> eps`` is trained on it (:func:`training_loss`) and
turned into a sampler by ancestral DDPM steps with sigma_t^2 = beta-tilde_t (:func:`ddpm_sample`).

The noise predictor is always an argument, so the samplers work with any callable: the
model, or an analytic oracle in tests. Schedule arithmetic is done in float64.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .errors import InputError

__all__ = ["NoiseSchedule", "FAST_BETAS", "sampling_plan", "ddpm_sample", "q_sample", "training_loss"]

#: lmnt-com/diffwave's 6-step inference schedule (betas), mapped onto fractional training steps.
FAST_BETAS = (1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5)

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete noise schedule: ``betas`` (T,) float64, training steps indexed 0..T-1."""

    betas: torch.Tensor

    def __post_init__(self):
        b = self.betas
        if not torch.is_tensor(b) or b.dim() != 1 or b.numel() < 1:
            raise ValueError("NoiseSchedule.betas must be a non-empty 1-D tensor")
        if not bool(((b > 0) & (b < 1)).all()):
            raise ValueError("NoiseSchedule.betas must lie in (0, 1)")
        object.__setattr__(self, "betas", b.detach().to("cpu", torch.float64))

    @classmethod
    def linear(cls, T: int = 200, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        """T betas evenly spaced from ``beta_start`` to ``beta_end`` (DiffWave: 200, 1e-4, 0.02)."""
        return cls(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))

    @property
    def T(self) -> int:
        return self.betas.numel()

    @property
    def alphas(self) -> torch.Tensor:
        """(T,) 1 - beta_t."""
        return 1 - self.betas

    @property
    def alpha_bar(self) -> torch.Tensor:
        """(T,) prod_{s <= t} alpha_s: the signal power left at step t."""
        return torch.cumprod(self.alphas, 0)

    @property
    def beta_tilde(self) -> torch.Tensor:
        """(T,) posterior variance beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t); 0 at t = 0."""
        ab_prev = F.pad(self.alpha_bar[:-1], (1, 0), value=1.0)
        return self.betas * (1 - ab_prev) / (1 - self.alpha_bar)

    def alpha_bar_at(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_bar at fractional steps: sqrt(alpha_bar) interpolated linearly between integer steps.

        Args:
            t: steps in [0, T-1], any shape, integer or fractional.

        Returns:
            float64 tensor of t's shape (on t's device). The inverse of :meth:`step_at`.
        """
        t = torch.as_tensor(t).to(torch.float64)
        root = self.alpha_bar.sqrt().to(t.device)
        lo = t.floor().clamp(0, self.T - 1)
        hi = (lo + 1).clamp(max=self.T - 1)
        frac = t - lo
        r = root[lo.long()] * (1 - frac) + root[hi.long()] * frac
        return r * r

    def step_at(self, alpha_bar: torch.Tensor) -> torch.Tensor:
        """The fractional training step whose (interpolated) alpha_bar is ``alpha_bar``.

        As lmnt-com/diffwave's fast sampler: find t with alpha_bar_{t+1} <= a <= alpha_bar_t and
        interpolate linearly in sqrt(alpha_bar).

        Args:
            alpha_bar: (S,) values within [alpha_bar_{T-1}, alpha_bar_0].

        Returns:
            float64 (S,) steps in [0, T-1].

        Raises:
            ValueError: a value lies outside the range the training schedule covers.
        """
        a = torch.as_tensor(alpha_bar, dtype=torch.float64).reshape(-1)
        ab = self.alpha_bar
        lo_end, hi_end = float(ab[-1]), float(ab[0])
        tol = 1e-12
        if bool(((a < lo_end - tol) | (a > hi_end + tol)).any()):
            raise ValueError(f"alpha_bar values {a.tolist()} are outside the training schedule's range "
                             f"[{lo_end:.6g}, {hi_end:.6g}]: they cannot be mapped to training steps")
        root, target = ab.sqrt(), a.clamp(lo_end, hi_end).sqrt()
        # root is decreasing: the number of entries >= target, minus one, is the step t below it.
        t = (root.unsqueeze(0) >= target.unsqueeze(1)).sum(1).sub(1).clamp(0, self.T - 1)
        t_next = (t + 1).clamp(max=self.T - 1)
        gap = root[t] - root[t_next]
        frac = torch.where(gap > 0, (root[t] - target) / gap.clamp_min(1e-300), torch.zeros_like(gap))
        return t.to(torch.float64) + frac


def sampling_plan(schedule: NoiseSchedule, steps: None | str | int = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise levels a sampler visits, from the least noisy up.

    Args:
        schedule: the training schedule.
        steps: None: every training step (T model calls); 'fast': the 6-level schedule
            :data:`FAST_BETAS`, each level fed to the model as a fractional training step;
            an int n in [1, T]: n training steps evenly spaced from 0 to T-1, rounded
            (n = 1: step T-1 only; n = T: the full schedule).

    Returns:
        t (S,) float64 model steps (fractional for 'fast') and alpha_bar (S,) float64 at them.
        The sampler's betas follow from alpha_bar: beta_i = 1 - alpha_bar_i / alpha_bar_{i-1}.
    """
    T = schedule.T
    if steps is None:
        t = torch.arange(T, dtype=torch.float64)
        return t, schedule.alpha_bar.clone()
    if isinstance(steps, str):
        if steps != "fast":
            raise InputError(f"steps must be None, 'fast' or an integer in [1, {T}], got {steps!r}")
        alpha_bar = torch.cumprod(1 - torch.tensor(FAST_BETAS, dtype=torch.float64), 0)
        return schedule.step_at(alpha_bar), alpha_bar
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= T:
        raise InputError(f"steps must be None, 'fast' or an integer in [1, {T}], got {steps!r}")
    if steps == 1:
        idx = torch.tensor([T - 1])
    else:
        idx = torch.linspace(0, T - 1, steps, dtype=torch.float64).round().long().unique()
    return idx.to(torch.float64), schedule.alpha_bar[idx]


@torch.no_grad()
def ddpm_sample(eps_fn: EpsFn, x: torch.Tensor, t: torch.Tensor, alpha_bar: torch.Tensor, *,
                generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """DDPM ancestral sampling, from the noisiest level in the plan down to clean audio.

    With a_i = alpha_bar_i, a_{-1} = 1 and beta_i = 1 - a_i / a_{i-1}, each level i does
        x <- (x - beta_i / sqrt(1 - a_i) * eps_fn(x, t_i)) / sqrt(1 - beta_i) + sigma_i z,
    with sigma_i^2 = beta_i (1 - a_{i-1}) / (1 - a_i) (beta-tilde) and no noise at i = 0.
    On the full plan these are exactly the training betas.

    Args:
        eps_fn: noise predictor, ``eps_fn(x (B, ...), t (B,) float32) -> (B, ...)``.
        x: (B, ...) starting noise at the noisiest level (standard normal for a real sampler).
        t: (S,) model steps, from :func:`sampling_plan`.
        alpha_bar: (S,) decreasing noise-free power at those steps.
        generator: RNG for the noise added at each level (on x's device); None: global RNG.
        progress: show a progress bar.

    Returns:
        (B, ...) samples (not clamped).
    """
    if t.shape != alpha_bar.shape or t.dim() != 1 or t.numel() < 1:
        raise ValueError(f"t and alpha_bar must be matching 1-D plans, got {tuple(t.shape)} and {tuple(alpha_bar.shape)}")
    a = alpha_bar.to(torch.float64).tolist()
    levels = range(len(a) - 1, -1, -1)
    if progress:
        from tqdm.auto import tqdm

        levels = tqdm(levels, total=len(a), desc="denoising", unit="step", dynamic_ncols=True)
    for i in levels:
        a_prev = a[i - 1] if i > 0 else 1.0
        beta = 1 - a[i] / a_prev
        steps = torch.full((x.size(0),), float(t[i]), device=x.device, dtype=torch.float32)
        eps = eps_fn(x, steps)
        x = (x - beta / (1 - a[i]) ** 0.5 * eps) / (1 - beta) ** 0.5
        if i > 0:
            sigma = (beta * (1 - a_prev) / (1 - a[i])) ** 0.5
            x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """Noise clean audio to step t: sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise.

    Args:
        x0: (B, ...) clean audio.
        t: (B,) integer or fractional steps in [0, T-1].
        noise: like x0.
        schedule: the training schedule.

    Returns:
        (B, ...) x_t, in x0's dtype.
    """
    ab = schedule.alpha_bar_at(t.detach()).to(x0.device, x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def training_loss(eps_fn: EpsFn, x0: torch.Tensor, schedule: NoiseSchedule,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise-prediction MSE at a uniformly drawn training step per example.

    Args:
        eps_fn: noise predictor ``eps_fn(x_t (B, ...), t (B,) long) -> (B, ...)``.
        x0: (B, ...) clean audio.
        schedule: the training schedule.
        generator: RNG for steps and noise (on x0's device); None: global RNG.

    Returns:
        scalar mean squared error between the predicted and the true noise.
    """
    t = torch.randint(schedule.T, (x0.size(0),), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return F.mse_loss(eps_fn(q_sample(x0, t, noise, schedule), t), noise)
