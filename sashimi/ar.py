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

from . import fastgen
from .backbone import Sashimi
from .config import ARConfig
from .errors import InputError
from .labels import check_guidance, model_labels
from .mulaw import dequantize, quantize, silence_token
from .s4 import check_float_params, one_thread
from .sampling import SamplingOptions, check_sampling_defaults, make_generator, resolve_sampling, sample_logits

__all__ = ["SashimiAR"]


class SashimiAR(nn.Module):
    """Embedding(256, d_model) -> SaShiMi backbone -> Linear(d_model, 256).

    A class-conditional model (``config.num_classes > 0``) adds a learned label embedding to
    every input embedding (WaveNet-style global conditioning); label ``num_classes`` is the "no
    label" class it was also trained with (label dropout), used for unconditional generation.

    Attribute names follow the seed implementation so custom sampling loops keep working:
    ``mu_embedder``, ``sashimi`` (the backbone: ``setup_rnn``, ``default_state``, ``step`` on
    embedded inputs) and ``head``. Such a loop gets a conditional model's label through
    :meth:`conditioning` (labels None: the "no label" class, as :meth:`forward` means it), and
    then gives the same logits as :meth:`forward` and :meth:`nll`::

        inputs, cond = model.conditioning(labels, B)  # (B, d_model) and (B, d_model) or None
        model.setup_rnn(); state = model.default_state(B)
        for tok in tokens.unbind(1):  # silence first
            y, state = model.sashimi.step(model.mu_embedder(tok) + inputs, state, cond)
            logits = model.head(y)

    Args:
        config: an :class:`ARConfig` (default: the SC09 architecture).
    """

    def __init__(self, config: ARConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else ARConfig()
        config.sampling = check_sampling_defaults(config.sampling, "ARConfig.sampling")
        self.mu_embedder = nn.Embedding(config.mu_levels, config.d_model)
        per_block = bool(config.num_classes) and config.condition != "input"
        self.sashimi = Sashimi.from_config(config, d_cond=config.d_model if per_block else None, cond_ff=per_block,
                                           film=config.condition == "film")
        self.head = nn.Linear(config.d_model, config.mu_levels)
        if config.num_classes:
            # N(0, 1) like the token embedding, not zero: measured when fine-tuning the bundled FSDD
            # model, zero-initialised label vectors stayed ~50x smaller than the token vectors after
            # 600 steps (norm 0.15 vs 7.5) and the digits were heard as asked 12.5% of the time
            self.label_embedder = nn.Embedding(config.num_classes + 1, config.d_model)
        if per_block:
            # Zero projections: a model fine-tuned from an input-conditioned one starts as exactly
            # that model (the label vectors, not these, carry the signal at step 0)
            for block in self.sashimi.modules():
                if getattr(block, "fc_t", None) is not None:
                    nn.init.zeros_(block.fc_t.weight)
                    nn.init.zeros_(block.fc_t.bias)

    @property
    def classes(self) -> list[str] | None:
        """The names of the classes the model is conditioned on (index i is class i), or None."""
        return list(self.config.class_names) if self.config.num_classes else None

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def quantize(self, wavs: torch.Tensor) -> torch.Tensor:
        """The model's tokens of waveforms (its ``config.quantization``, 'mulaw' or 'linear', with
        ``config.mu_levels`` levels): float (...) in [-1, 1] -> int64 (...)."""
        return quantize(wavs, self.config.mu_levels, self.config.quantization)

    def dequantize(self, tokens: torch.Tensor) -> torch.Tensor:
        """Waveforms of the model's tokens (the inverse of :meth:`quantize` up to its step): int (...) -> float (...)."""
        return dequantize(tokens, self.config.mu_levels, self.config.quantization)

    # ---- convolution mode -----------------------------------------------------------------
    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, labels=None) -> torch.Tensor:
        """Next-token logits.

        Args:
            x: integer (B, L) mu-law tokens in [0, mu_levels).
            lengths: optional (B,) valid lengths. The model is causal, so padding after a
                sequence cannot change its logits; logits past a sequence's length are
                returned but meaningless. Checked, and kept for the seed's signature.
            labels: class-conditional models only: integer (B,) class indices (``num_classes``:
                no label) or a list of B class names / indices; None: no label.

        Returns:
            float (B, L, mu_levels): logits for the token following each position.
        """
        x = self._check_tokens(x, "x")
        check_float_params(self.head.weight.dtype, type(self).__name__)
        if x.size(0) == 0 or x.size(1) == 0:
            raise InputError(f"x must hold at least one sequence of at least one token, got shape {tuple(x.shape)}")
        if lengths is not None:
            _check_lengths(lengths, x.shape)
        labels = self.check_labels(labels, x.size(0))
        return self.head(self.sashimi(self._embed(x, labels), self._block_condition(labels, x.size(0))))

    @torch.no_grad()
    def nll(self, wavs: torch.Tensor, lengths: torch.Tensor | None = None, batch_size: int = 16,
            labels=None) -> torch.Tensor:
        """Mean negative log-likelihood per sample, in nats, in one convolution pass.

        Each waveform is quantised to mu-law; the model sees a leading zero sample followed by
        all but the last sample, and is scored on every sample (as the seed's ``nll()``).

        Args:
            wavs: float (N, L) or (L,) waveforms in [-1, 1].
            lengths: optional (N,) valid lengths; samples past them are not scored.
            batch_size: waveforms per forward pass.
            labels: class-conditional models: the (N,) classes to condition on (see :meth:`forward`).

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
        labels = self.check_labels(labels, wavs.size(0))
        targets = self.quantize(wavs.to(self.device))
        inputs = F.pad(targets[:, :-1], (1, 0), value=silence_token(self.config.mu_levels))
        result = []
        for start in range(0, len(wavs), batch_size):
            sl = slice(start, start + batch_size)
            logp = torch.log_softmax(self(inputs[sl], labels=None if labels is None else labels[sl]).float(), dim=-1)
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
    def step(self, tokens: torch.Tensor, state: list, labels=None) -> tuple[torch.Tensor, list]:
        """Feed one token per sequence. Inference only: no autograd graph is recorded (see
        :meth:`sashimi.s4.S4.step`), so a sampling loop runs in constant memory.

        Args:
            tokens: integer (B,) current tokens.
            state: from :meth:`default_state` or the previous step.
            labels: class-conditional models: the (B,) classes (see :meth:`forward`); pass the
                same labels at every step of a sequence.

        Returns:
            logits (B, mu_levels) for the next token, and the next state.
        """
        tokens = self._check_tokens(tokens, "tokens", ndim=1)
        labels = self.check_labels(labels, tokens.size(0))
        y, state = self.sashimi.step(self._embed(tokens, labels), state, self._block_condition(labels, tokens.size(0)))
        return self.head(y), state

    @torch.no_grad()
    def prime(self, prefix: torch.Tensor, mode: str = "diagonal", labels=None) -> tuple[torch.Tensor, list]:
        """Run step mode over silence followed by ``prefix``.

        Args:
            prefix: integer (B, P) tokens (P may be 0).
            mode: S4 step mode.
            labels: class-conditional models: the (B,) classes (see :meth:`forward`).

        Returns:
            logits (B, mu_levels) for the token after the prefix (equal to ``forward``'s last
            logits on ``[silence, prefix]``), and the state after it.
        """
        prefix = self._check_tokens(prefix, "prefix")
        labels = self.check_labels(labels, prefix.size(0))
        self.setup_rnn(mode)
        state = self.default_state(prefix.size(0))
        inputs = F.pad(prefix, (1, 0), value=silence_token(self.config.mu_levels))
        for t in range(inputs.size(1)):
            logits, state = self.step(inputs[:, t], state, labels)
        return logits, state

    @torch.no_grad()
    def unconditional_generate(self, N: int, nucleus_p: float | None = None, progress: bool = True, *,
                               length: int | None = None, temperature: float | None = None, top_k: int | None = None,
                               seed: int | None = None, mode: str | None = None, engine: str = "auto") -> torch.Tensor:
        """Sample ``N`` waveforms from silence (a class-conditional model: with no label).

        Args:
            N: number of waveforms.
            nucleus_p: nucleus (top-p) mass in (0, 1]; 1.0 samples the full distribution.
                None (and for ``temperature``, ``top_k``): the model's own default
                (``config.sampling``, see :meth:`sampling_options`), else 1.0.
            progress: show a progress bar.
            length: samples per waveform (None: one second at the model's ``config.sample_rate``,
                16000 for SC09, 8000 for the bundled FSDD model).
            temperature: softmax temperature (> 0; None: the model's default, else 1.0).
            top_k: sample among the k most likely tokens only (None: the model's default, else
                all; 0: all).
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
        request = _Request(self._silence(N), _check_length(self._one_second(length), 0, endless_ok=False), self.sampling_options(nucleus_p, temperature, top_k),
                           seed, None, mode, engine, progress)
        return self._decode(self._token_chunks(request))

    @torch.no_grad()
    def conditional_generate(self, labels, nucleus_p: float | None = None, progress: bool = True, *,
                             length: int | None = None, temperature: float | None = None, top_k: int | None = None,
                             seed: int | None = None, mode: str | None = None, engine: str = "auto",
                             guidance: float = 1.0) -> torch.Tensor:
        """Sample one waveform per requested class (class-conditional models only).

        Args:
            labels: integer (N,) class indices, or a list of N class names or indices
                (:attr:`classes` gives the names).
            guidance: classifier-free guidance weight: each token is drawn from
                ``log p(x|no label) + guidance * (log p(x|label) - log p(x|no label))``; 1.0 is the
                conditional distribution itself, larger values say the class more clearly (at
                twice the work per sample).
            other args: as :meth:`unconditional_generate`.

        Returns:
            float (N, length) waveforms in [-1, 1].
        """
        if not self.config.num_classes:
            raise InputError("conditional_generate needs a class-conditional model; this one is unconditional "
                             "(config.num_classes=0): use unconditional_generate")
        if labels is None:
            raise InputError("labels must be the classes to generate, got None (use unconditional_generate)")
        labels = self.check_labels(labels, None, allow_none_class=False)
        n = labels.numel()
        request = _Request(self._silence(n), _check_length(self._one_second(length), 0, endless_ok=False),
                           self.sampling_options(nucleus_p, temperature, top_k),
                           seed, labels, mode, engine, progress, guidance=check_guidance(guidance, labels))
        return self._decode(self._token_chunks(request))

    @torch.no_grad()
    def generate(self, prefix_wav: torch.Tensor, length: int, nucleus_p: float | None = None, progress: bool = True, *,
                 temperature: float | None = None, top_k: int | None = None, seed: int | None = None,
                 mode: str | None = None, engine: str = "auto", labels=None) -> torch.Tensor:
        """Continue given audio.

        Args:
            prefix_wav: float (B, P) or (P,) waveforms in [-1, 1] at the model's sample rate.
            length: total samples per output, prefix included (>= P).
            labels: class-conditional models: the (B,) classes (see :meth:`forward`); None: no label.
            other args: as :meth:`unconditional_generate`.

        Returns:
            float (B, length): the mu-law-quantised prefix followed by the continuation.
        """
        prefix_wav = _check_audio(prefix_wav, "prefix_wav")
        if prefix_wav.dim() == 1:
            prefix_wav = prefix_wav.unsqueeze(0)
        prefix = self.quantize(prefix_wav.to(self.device))
        length = _check_length(length, prefix.size(1), endless_ok=False)
        request = _Request(prefix, length, self.sampling_options(nucleus_p, temperature, top_k), seed,
                           self.check_labels(labels, prefix.size(0)), mode, engine, progress)
        return self._decode(self._token_chunks(request))

    def stream(self, N: int, length: int | None | str = "1s", chunk: int | None = None, *,
               prefix_wav: torch.Tensor | None = None,
               nucleus_p: float | None = None, temperature: float | None = None, top_k: int | None = None,
               seed: int | None = None,
               mode: str | None = None, engine: str = "auto", progress: bool = False,
               labels=None) -> Iterator[torch.Tensor]:
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
            labels: class-conditional models: the (N,) classes (see :meth:`forward`); None: no label.
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
            prefix = self._silence(N)
        else:
            prefix_wav = _check_audio(prefix_wav, "prefix_wav")
            prefix_wav = prefix_wav.unsqueeze(0).expand(N, -1) if prefix_wav.dim() == 1 else prefix_wav
            if prefix_wav.size(0) != N:
                raise InputError(f"prefix_wav holds {prefix_wav.size(0)} waveforms, N is {N}")
            prefix = self.quantize(prefix_wav.to(self.device))
        request = _Request(prefix, length, self.sampling_options(nucleus_p, temperature, top_k), seed,
                           self.check_labels(labels, N), mode, engine, progress, chunk)
        chunks = self._token_chunks(request)
        return (self.dequantize(c.to(self.device)) for c in chunks)

    def sampling_options(self, nucleus_p: float | None = None, temperature: float | None = None,
                         top_k: int | None = None) -> SamplingOptions:
        """The sampling settings a generation call uses: the ones given, the model's stored
        defaults (``config.sampling``, chosen on validation for the bundled model) for those left
        None, else nucleus 1.0, temperature 1.0 and all tokens; ``top_k=0``: all tokens."""
        return resolve_sampling(nucleus_p, temperature, top_k, self.config.sampling)

    # ---- generation internals: one request value travels down ------------------------------
    def _silence(self, n: int) -> torch.Tensor:
        return torch.empty(n, 0, dtype=torch.long, device=self.device)

    def _one_second(self, length: int | None) -> int:
        return int(self.config.sample_rate) if length is None else length

    def _decode(self, chunks) -> torch.Tensor:
        return self.dequantize(torch.cat([c.to(self.device) for c in chunks], 1))

    def _token_chunks(self, request: "_Request") -> Iterator[torch.Tensor]:
        """Validate, pick the engine and return an iterator over (B, chunk) token chunks
        (``length`` None: endless)."""
        prefix = request.prefix
        length = _check_length(request.length, prefix.size(1), endless_ok=True)
        generator = make_generator(request.seed, self.device)
        check_float_params(self.head.weight.dtype, type(self).__name__)
        if fastgen.resolve_engine(self, request.engine, request.mode) == "fast":
            guided = request.guidance != 1.0
            return fastgen.stream_tokens(
                self, prefix, length, request.chunk or length, sampling=request.sampling, generator=generator,
                progress=request.progress, condition=self.label_vectors(request.labels, prefix.size(0)),
                guidance=request.guidance, uncondition=self.label_vectors(None, prefix.size(0)) if guided else None)
        return self._eager_chunks(request, generator)

    @torch.no_grad()
    def _eager_chunks(self, request: "_Request", generator) -> Iterator[torch.Tensor]:
        """The reference loop over :meth:`step`, yielding (B, chunk) token chunks (the prefix first)."""
        prefix, length, labels, sampling = request.prefix, request.length, request.labels, request.sampling
        chunk = request.chunk or length
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
        guided = request.guidance != 1.0
        logits, state = self.prime(prefix, request.mode or "diagonal", labels)
        if guided:  # the same sequences without a label, for classifier-free guidance
            free_logits, free_state = self.prime(prefix, request.mode or "diagonal", None)
        out = torch.empty(n, int(min(chunk, total - start)), dtype=torch.long, device=self.device)
        fill = P - start
        out[:, :fill] = prefix[:, start:]
        steps = range(P, length) if length is not None else itertools.count(P)
        for t in _progress(steps, request.progress, n):
            # One torch thread per step: the step's tensors are tiny, and on a busy machine intra-op threads
            # waiting on each other made it ~20x slower (measured: the YouTubeMix architecture, 2 cores, load 6:
            # 7 vs 155 samples/s). Entered per step, not around the generator: the caller runs between chunks.
            with one_thread():
                mixed = fastgen.guided_logits(logits, free_logits, request.guidance) if guided else logits
                token = sample_logits(mixed, sampling.temperature, sampling.top_k, sampling.nucleus_p, generator)
                out[:, fill] = token
                fill += 1
                if t + 1 < total:
                    logits, state = self.step(token, state, labels)
                    if guided:
                        free_logits, free_state = self.step(token, free_state, None)
            if fill == out.size(1):
                yield out
                if t + 1 < total:
                    out = torch.empty(n, int(min(chunk, total - t - 1)), dtype=torch.long, device=self.device)
                fill = 0

    # ---- conditioning --------------------------------------------------------------------
    def check_labels(self, labels, batch: int | None, allow_none_class: bool = True) -> torch.Tensor | None:
        """Validate ``labels`` for a batch of ``batch`` sequences (:func:`sashimi.labels.parse_labels`).

        Args:
            labels: None, an integer tensor or numpy array (batch,), or a list of ``batch`` class
                names or indices (numpy integers and 0-d tensors too). A string is a class name
                first; integer text that is not a name is an index only when no class name is a
                number. A conditional model's index ``num_classes`` is the "no label" class.
            batch: the batch size the labels must match (None: any, at least one).
            allow_none_class: accept the "no label" index ``num_classes``.

        Returns:
            int64 (batch,) on the model's device; for an unconditional model, None. None stays
            None (the embedding treats it as "no label").

        Raises:
            ValueError: labels for an unconditional model, unknown names, indices out of range or
                the wrong count. TypeError: labels of the wrong type.
        """
        index = model_labels(labels, self.config.class_names if self.config.num_classes else None, batch=batch,
                             allow_none_class=allow_none_class)
        return None if index is None else index.to(self.device)

    def label_vectors(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """The (batch, d_model) label vectors, or None (unconditional): added to each input embedding,
        and projected by every residual block when ``config.condition`` is 'blocks' or 'film'; the
        ``condition`` the fast engines (:mod:`sashimi.fastgen`) take.

        Args:
            labels: checked labels (from :meth:`check_labels`) or None for "no label".
        """
        if not self.config.num_classes:
            return None
        if labels is None:
            labels = torch.full((batch,), self.config.num_classes, dtype=torch.long, device=self.device)
        return self.label_embedder(labels)

    def conditioning(self, labels=None, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What a loop over ``mu_embedder`` / ``sashimi.step`` / ``head`` adds for ``labels``
        (see the class docstring): the same conditioning as :meth:`forward` and :meth:`step`.

        Args:
            labels: as :meth:`forward` (None: the "no label" class of a conditional model).
            batch: the sequences in the loop.

        Returns:
            ``inputs`` (batch, d_model): to add to every ``mu_embedder`` output (zeros for an
            unconditional model); ``cond`` (batch, d_model) or None: the ``cond`` argument of
            ``sashimi.step`` / ``sashimi.forward`` (None unless ``config.condition`` is 'blocks'
            or 'film').
        """
        labels = self.check_labels(labels, batch)
        inputs = self.label_vectors(labels, batch)
        if inputs is None:
            inputs = torch.zeros(batch, self.config.d_model, device=self.device, dtype=self.mu_embedder.weight.dtype)
        return inputs, self._block_condition(labels, batch)

    def _block_condition(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """The (batch, d_model) label vectors the residual blocks project (config.condition
        'blocks' or 'film'), else None."""
        if not self.config.num_classes or self.config.condition == "input":
            return None
        return self.label_vectors(labels, batch)

    def _embed(self, tokens: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings (B, [L,] d_model) plus the label vectors of a conditional model."""
        x = self.mu_embedder(tokens)
        cond = self.label_vectors(labels, tokens.size(0))
        if cond is None:
            return x
        return x + (cond[:, None, :] if x.dim() == 3 else cond)

    # ---- helpers ------------------------------------------------------------------------
    def _check_tokens(self, x, name: str, ndim: int = 2) -> torch.Tensor:
        if not torch.is_tensor(x):
            raise TypeError(f"{name} must be a torch.Tensor of integer tokens, got {type(x).__name__}")
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer tokens, got dtype {x.dtype} "
                            "(use model.quantize, or sashimi.mulaw_encode, to quantise a waveform)")
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


@dataclasses.dataclass(frozen=True)
class _Request:
    """One generation request, as it travels from the public methods to an engine.

    Attributes:
        prefix: int64 (B, P) tokens to continue (P may be 0).
        length: total tokens per sequence, prefix included (None: endless).
        sampling: temperature, top-k and nucleus, checked.
        seed: the generator's seed (None: torch's global RNG).
        labels: checked (B,) class indices of a conditional model, or None (no label).
        mode: the eager loop's S4 step mode (giving it selects the eager loop under 'auto').
        engine: 'auto', 'fast' or 'eager'.
        progress: show a progress bar.
        chunk: tokens per yielded chunk (None: the whole length at once).
    """

    prefix: torch.Tensor
    length: int | None
    sampling: SamplingOptions
    seed: int | None
    labels: torch.Tensor | None
    mode: str | None
    engine: str
    progress: bool
    chunk: int | None = None
    guidance: float = 1.0


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
