"""Autoregressive SaShiMi on 8-bit mu-law tokens: logits, likelihood and generation."""
from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import Sashimi
from .config import ARConfig
from .errors import InputError
from .mulaw import mulaw_decode, mulaw_encode, silence_token
from .s4 import check_float_params
from .sampling import check_sampling_args, make_generator, sample_logits

__all__ = ["SashimiAR"]


class SashimiAR(nn.Module):
    """Embedding(256, d_model) -> SaShiMi backbone -> Linear(d_model, 256).

    Attribute names follow the seed implementation so custom sampling loops keep working:
    ``mu_embedder``, ``sashimi`` (the backbone: ``setup_rnn``, ``default_state``, ``step`` on
    embedded inputs) and ``head``.

    Args:
        config: an :class:`ARConfig` (default: the SC09 architecture).
    """

    def __init__(self, config: ARConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else ARConfig()
        self.mu_embedder = nn.Embedding(config.mu_levels, config.d_model)
        self.sashimi = Sashimi(
            d_model=config.d_model, n_layers=config.n_layers, pool=config.pool, expand=config.expand,
            ff=config.ff, bidirectional=False, glu=config.glu, unet=config.unet, dropout=config.dropout,
            d_state=config.d_state, l_max=config.l_max, tie_state=config.tie_state, lr=config.lr)
        self.head = nn.Linear(config.d_model, config.mu_levels)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    # ---- convolution mode -----------------------------------------------------------------
    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits.

        Args:
            x: integer (B, L) mu-law tokens in [0, mu_levels).
            lengths: optional (B,) valid lengths. The model is causal, so padding after a
                sequence cannot change its logits; logits past a sequence's length are
                returned but meaningless. Checked, and kept for the seed's signature.

        Returns:
            float (B, L, mu_levels): logits for the token following each position.
        """
        x = self._check_tokens(x, "x")
        check_float_params(self.head.weight.dtype, type(self).__name__)
        if x.size(0) == 0 or x.size(1) == 0:
            raise InputError(f"x must hold at least one sequence of at least one token, got shape {tuple(x.shape)}")
        if lengths is not None:
            _check_lengths(lengths, x.shape)
        return self.head(self.sashimi(self.mu_embedder(x)))

    @torch.no_grad()
    def nll(self, wavs: torch.Tensor, lengths: torch.Tensor | None = None, batch_size: int = 16) -> torch.Tensor:
        """Mean negative log-likelihood per sample, in nats, in one convolution pass.

        Each waveform is quantised to mu-law; the model sees a leading zero sample followed by
        all but the last sample, and is scored on every sample (as the seed's ``nll()``).

        Args:
            wavs: float (N, L) or (L,) waveforms in [-1, 1].
            lengths: optional (N,) valid lengths; samples past them are not scored.
            batch_size: waveforms per forward pass.

        Returns:
            float (N,) nats per sample (divide by ln 2 for bits).
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        wavs = _check_audio(wavs, "wavs")
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        if lengths is not None:
            lengths = _check_lengths(lengths, wavs.shape).to(self.device)
        targets = mulaw_encode(wavs.to(self.device), self.config.mu_levels)
        inputs = F.pad(targets[:, :-1], (1, 0), value=silence_token(self.config.mu_levels))
        result = []
        for start in range(0, len(wavs), batch_size):
            sl = slice(start, start + batch_size)
            logp = torch.log_softmax(self(inputs[sl]).float(), dim=-1)
            nll = -logp.gather(-1, targets[sl].unsqueeze(-1)).squeeze(-1)  # (b, L)
            if lengths is None:
                result.append(nll.mean(-1))
            else:
                mask = torch.arange(nll.size(-1), device=nll.device) < lengths[sl, None]
                result.append((nll * mask).sum(-1) / lengths[sl].clamp_min(1))
        return torch.cat(result)

    # ---- recurrent mode -------------------------------------------------------------------
    def setup_rnn(self, mode: str = "diagonal") -> None:
        """Prepare step mode. Args: mode: 'dense' (reference), 'diagonal' or 'dplr'."""
        check_float_params(self.head.weight.dtype, type(self).__name__)
        self.sashimi.setup_rnn(mode)

    def default_state(self, batch_size: int, device=None) -> list:
        """Initial recurrent state for ``batch_size`` sequences."""
        return self.sashimi.default_state(batch_size, device=device if device is not None else self.device)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, state: list) -> tuple[torch.Tensor, list]:
        """Feed one token per sequence. Inference only: no autograd graph is recorded (see
        :meth:`sashimi.s4.S4.step`), so a sampling loop runs in constant memory.

        Args:
            tokens: integer (B,) current tokens.
            state: from :meth:`default_state` or the previous step.

        Returns:
            logits (B, mu_levels) for the next token, and the next state.
        """
        tokens = self._check_tokens(tokens, "tokens", ndim=1)
        y, state = self.sashimi.step(self.mu_embedder(tokens), state)
        return self.head(y), state

    @torch.no_grad()
    def prime(self, prefix: torch.Tensor, mode: str = "diagonal") -> tuple[torch.Tensor, list]:
        """Run step mode over silence followed by ``prefix``.

        Args:
            prefix: integer (B, P) tokens (P may be 0).
            mode: S4 step mode.

        Returns:
            logits (B, mu_levels) for the token after the prefix (equal to ``forward``'s last
            logits on ``[silence, prefix]``), and the state after it.
        """
        prefix = self._check_tokens(prefix, "prefix")
        self.setup_rnn(mode)
        state = self.default_state(prefix.size(0))
        inputs = F.pad(prefix, (1, 0), value=silence_token(self.config.mu_levels))
        for t in range(inputs.size(1)):
            logits, state = self.step(inputs[:, t], state)
        return logits, state

    @torch.no_grad()
    def unconditional_generate(self, N: int, nucleus_p: float = 1.0, progress: bool = True, *,
                               length: int | None = None, temperature: float = 1.0, top_k: int | None = None,
                               seed: int | None = None, mode: str | None = None, engine: str = "auto") -> torch.Tensor:
        """Sample ``N`` waveforms from silence.

        Args:
            N: number of waveforms.
            nucleus_p: nucleus (top-p) mass in (0, 1]; 1.0 samples the full distribution.
            progress: show a progress bar.
            length: samples per waveform (None: one second at the model's ``config.sample_rate``,
                16000 for SC09, 8000 for the bundled FSDD model).
            temperature: softmax temperature (> 0).
            top_k: sample among the k most likely tokens only (None: all).
            seed: seed for reproducible samples (None: torch's global RNG). A seed reproduces the
                samples of one engine; the engines share the distribution, not the random stream.
            mode: S4 step mode of the eager loop ('dense': the reference, 'diagonal', 'dplr');
                giving it selects the eager loop when ``engine='auto'``.
            engine: 'auto' (the fast engine when the model supports it, else eager), 'fast'
                (:mod:`sashimi.fastgen`: a fused C++ step on CPU, CUDA graphs on GPU) or 'eager'
                (the reference Python loop over :meth:`step`).

        Returns:
            float (N, length) waveforms in [-1, 1].
        """
        N = _positive_int(N, "N")
        if length is None:
            length = int(self.config.sample_rate)
        prefix = torch.empty(N, 0, dtype=torch.long, device=self.device)
        return self._continue(prefix, length, nucleus_p, progress, temperature, top_k, seed, mode, engine)

    @torch.no_grad()
    def generate(self, prefix_wav: torch.Tensor, length: int, nucleus_p: float = 1.0, progress: bool = True, *,
                 temperature: float = 1.0, top_k: int | None = None, seed: int | None = None,
                 mode: str | None = None, engine: str = "auto") -> torch.Tensor:
        """Continue given audio.

        Args:
            prefix_wav: float (B, P) or (P,) waveforms in [-1, 1] at the model's sample rate.
            length: total samples per output, prefix included (>= P).
            other args: as :meth:`unconditional_generate`.

        Returns:
            float (B, length): the mu-law-quantised prefix followed by the continuation.
        """
        prefix_wav = _check_audio(prefix_wav, "prefix_wav")
        if prefix_wav.dim() == 1:
            prefix_wav = prefix_wav.unsqueeze(0)
        prefix = mulaw_encode(prefix_wav.to(self.device), self.config.mu_levels)
        return self._continue(prefix, length, nucleus_p, progress, temperature, top_k, seed, mode, engine)

    def stream(self, N: int, length: int | None | str = "1s", chunk: int | None = None, *,
               prefix_wav: torch.Tensor | None = None,
               nucleus_p: float = 1.0, temperature: float = 1.0, top_k: int | None = None, seed: int | None = None,
               mode: str | None = None, engine: str = "auto", progress: bool = False) -> Iterator[torch.Tensor]:
        """Sample ``N`` waveforms, yielding the audio chunk by chunk as it is made.

        With the same seed the chunks put together equal the output of
        :meth:`unconditional_generate` (or of :meth:`generate` given ``prefix_wav``), whatever
        ``chunk`` is. Iteration can stop at any point.

        Args:
            N: number of waveforms.
            length: samples per waveform, prefix included; None: no end (stop iterating); the
                default "1s": one second at the model's ``config.sample_rate``, as
                :meth:`unconditional_generate`.
            chunk: samples per yielded chunk (the last one is shorter when ``length`` is not a
                multiple of it); None: 0.1 s at the model's ``config.sample_rate`` (1600 for SC09).
            prefix_wav: float (N, P) or (P,) audio in [-1, 1] to continue; streamed first.
            progress: show a progress bar with the real-time factor (on stderr).
            other args: as :meth:`unconditional_generate`.

        Yields:
            float (N, chunk) waveforms in [-1, 1].

        Example::

            for audio in model.stream(1, length=None, top_k=100, seed=0):  # endless
                play(audio[0])
        """
        if chunk is None:
            chunk = max(1, int(self.config.sample_rate) // 10)
        N, chunk = _positive_int(N, "N"), _positive_int(chunk, "chunk")
        if isinstance(length, str) and length == "1s":
            length = int(self.config.sample_rate)
        if prefix_wav is None:
            prefix = torch.empty(N, 0, dtype=torch.long, device=self.device)
        else:
            prefix_wav = _check_audio(prefix_wav, "prefix_wav")
            prefix_wav = prefix_wav.unsqueeze(0).expand(N, -1) if prefix_wav.dim() == 1 else prefix_wav
            if prefix_wav.size(0) != N:
                raise InputError(f"prefix_wav holds {prefix_wav.size(0)} waveforms, N is {N}")
            prefix = mulaw_encode(prefix_wav.to(self.device), self.config.mu_levels)
        chunks = self._token_chunks(prefix, length, chunk, nucleus_p, progress, temperature, top_k, seed, mode, engine)
        return (mulaw_decode(c.to(self.device), self.config.mu_levels) for c in chunks)

    def _continue(self, prefix, length, nucleus_p, progress, temperature, top_k, seed, mode, engine="auto"):
        length = _check_length(length, prefix.size(1), endless_ok=False)
        chunks = self._token_chunks(prefix, length, length, nucleus_p, progress, temperature, top_k, seed, mode, engine)
        return mulaw_decode(torch.cat([c.to(self.device) for c in chunks], 1), self.config.mu_levels)

    def _token_chunks(self, prefix, length, chunk, nucleus_p, progress, temperature, top_k, seed, mode, engine):
        """Validate, pick the engine and return an iterator over (B, chunk) token chunks
        (``length`` None: endless)."""
        check_sampling_args(temperature, top_k, nucleus_p)
        # numpy numbers are fine (checked above): plain Python ones from here on
        temperature, nucleus_p, top_k = float(temperature), float(nucleus_p), None if top_k is None else int(top_k)
        length = _check_length(length, prefix.size(1), endless_ok=True)
        generator = make_generator(seed, self.device)
        check_float_params(self.head.weight.dtype, type(self).__name__)
        from . import fastgen

        use = fastgen.resolve_engine(self, engine, mode)
        if use == "fast":
            return fastgen.stream_tokens(self, prefix, length, chunk, nucleus_p=nucleus_p, temperature=temperature,
                                         top_k=top_k, generator=generator, progress=progress)
        return self._eager_chunks(prefix, length, chunk, nucleus_p, progress, temperature, top_k, generator, mode)

    @torch.no_grad()
    def _eager_chunks(self, prefix, length, chunk, nucleus_p, progress, temperature, top_k, generator, mode):
        """The reference loop over :meth:`step`, yielding (B, chunk) token chunks (the prefix first)."""
        n, P = prefix.shape
        total = math.inf if length is None else length
        if total <= P:  # nothing to generate
            for start in range(0, int(total), chunk):
                yield prefix[:, start:min(start + chunk, int(total))].clone()
            return
        start = 0
        while start + chunk <= P:
            yield prefix[:, start:start + chunk].clone()
            start += chunk
        logits, state = self.prime(prefix, mode or "diagonal")
        out = torch.empty(n, int(min(chunk, total - start)), dtype=torch.long, device=self.device)
        fill = P - start
        out[:, :fill] = prefix[:, start:]
        steps = range(P, length) if length is not None else itertools.count(P)
        for t in _progress(steps, progress, n):
            token = sample_logits(logits, temperature, top_k, nucleus_p, generator)
            out[:, fill] = token
            fill += 1
            if t + 1 < total:
                logits, state = self.step(token, state)
            if fill == out.size(1):
                yield out
                if t + 1 < total:
                    out = torch.empty(n, int(min(chunk, total - t - 1)), dtype=torch.long, device=self.device)
                fill = 0

    # ---- helpers ------------------------------------------------------------------------
    def _check_tokens(self, x, name: str, ndim: int = 2) -> torch.Tensor:
        if not torch.is_tensor(x):
            raise TypeError(f"{name} must be a torch.Tensor of integer tokens, got {type(x).__name__}")
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer mu-law tokens, got dtype {x.dtype} "
                            "(use sashimi.mulaw_encode to quantise a waveform)")
        if x.dim() != ndim:
            shape = "(B, L)" if ndim == 2 else "(B,)"
            raise InputError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.config.mu_levels):
            raise InputError(f"{name} values must be in [0, {self.config.mu_levels - 1}], "
                             f"got min {int(x.min())}, max {int(x.max())}")
        return x.to(device=self.device, dtype=torch.long)

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return f"{n:,} parameters, config={dataclasses.asdict(self.config)}"


def _positive_int(value, name: str) -> int:
    """``value`` as an int if it is a positive integer (numpy integers too), else an InputError."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_length(length, prefix_length: int, endless_ok: bool) -> int | None:
    """``length`` (samples per waveform, prefix included) as an int, or None for no end."""
    if length is None and endless_ok:
        return None
    if not isinstance(length, numbers.Integral) or isinstance(length, bool) or length < max(1, prefix_length):
        need = f"an integer >= the prefix length {prefix_length}" if prefix_length else "a positive integer"
        raise InputError(f"length must be {'None or ' if endless_ok else ''}{need} (samples per waveform, prefix "
                         f"included), got {length!r}")
    return int(length)


def _check_audio(x, name: str) -> torch.Tensor:
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor of audio, got "
                        f"{x.dtype if torch.is_tensor(x) else type(x).__name__}")
    if x.dim() not in (1, 2) or x.size(-1) == 0 or x.size(0) == 0:
        raise InputError(f"{name} must have shape (N, L) or (L,) with N, L > 0, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise InputError(f"{name} contains NaN or inf")
    peak = float(x.abs().max())
    if peak > 1.0:
        raise InputError(f"{name} must be in [-1, 1], got a peak of {peak:.4g} (normalise the audio first)")
    return x


def _check_lengths(lengths, shape) -> torch.Tensor:
    if not torch.is_tensor(lengths) or lengths.is_floating_point() or lengths.shape != (shape[0],):
        raise InputError(f"lengths must be an integer tensor of shape ({shape[0]},), got "
                         f"{tuple(lengths.shape) if torch.is_tensor(lengths) else type(lengths).__name__}")
    if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > shape[-1]):
        raise InputError(f"lengths must be in [1, {shape[-1]}], got min {int(lengths.min())}, max {int(lengths.max())}")
    return lengths.long()


def _progress(it, enabled: bool, batch: int):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, unit="sample", unit_scale=batch, desc="generating", dynamic_ncols=True)
