"""Fast autoregressive generation: the engines behind ``SashimiAR.unconditional_generate``.

The engines take a model's parts (its token embedding ``mu_embedder``, its causal ``sashimi``
backbone and its ``head``; ``config.sample_rate`` for progress bars), never its class: models
sit above this package and call it.

Same output distribution as the eager loop, much less time per sample:

- the S4 recurrences are O(N) per channel with the conjugate partners implicit (real output
  2 Re(.)): the eigenbasis ('diagonal') where it is well-conditioned in float32, else the
  equivalent diagonal-plus-rank-1 step in the unitary basis ('dplr'), never a silently inaccurate
  one. All coefficients are computed once in float64, then cast (:mod:`.pack`);
- sampling (temperature, top-k, nucleus) is batched and uses uniforms pre-drawn from the seeded
  generator (:mod:`.sampler`): the distribution of :func:`sashimi.sampling.sample_logits`, not
  its random stream;
- engines: ``cpp`` (CPU: a fused float32 C++ step built at first use, on up to
  :func:`get_num_threads` threads, :mod:`.cpu`), ``cuda-graphs`` (CUDA: one graph per step
  pattern, :mod:`.torch_engine`) and ``torch`` (the same step in plain PyTorch: the fallback when
  no C++ compiler works, and for float64 models);
- opt-in reduced-precision weights for the C++ engine (:func:`set_weight_storage`): the linear
  layers' weights stored as float16, computed in float32.

The engine protocol: ``reset(condition (B, H0) | None)`` (a fresh state and its condition),
``set_sampling(options: SamplingOptions)``, ``set_condition(vectors (B, H0) | None)`` (per-row
condition vectors: class conditioning, at the input and in every conditioned block; None: the
model's "no label" vector, see :mod:`.condition`),
``feed(tokens (B, T), want_logits) -> logits (B, T, V) | None`` (teacher forcing),
``sample_and_feed(out, t0, t1, uniforms, feed_last)`` and ``last_logits()``.
"""
from __future__ import annotations

import logging
import math
import os
import warnings
import weakref
from typing import Iterator

import torch

from ..errors import InputError
from ..mulaw import silence_token
from ..s4 import one_thread
from ..sampling import SamplingOptions
from .pack import build_plan, s4_modes, unsupported_reason
from .runs import GuidedRun, PlainRun, guided_logits, progress_bar
from .sampler import draw_uniforms, sample_with_uniforms

__all__ = ["ENGINES", "WEIGHT_STORAGE", "get_engine", "generate_tokens", "stream_tokens", "teacher_forced_logits",
           "guided_logits", "stream_guided_tokens", "engine_rows",
           "resolve_engine", "unsupported_reason", "sample_with_uniforms", "set_num_threads", "get_num_threads",
           "set_weight_storage", "get_weight_storage", "plan_for", "cached_engine_keys"]

ENGINES = ("auto", "fast", "eager")
logger = logging.getLogger("sashimi")
_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> {"key", "plan", "engines"}
_said: set[str] = set()
_threads: int | None = None  # set_num_threads; None: follow torch.get_num_threads()
WEIGHT_STORAGE = ("float32", "float16", "bfloat16")
_weights = "float32"  # set_weight_storage


def set_num_threads(threads: int | None) -> None:
    """Most threads the C++ CPU step may use (None: follow ``torch.get_num_threads()``, the default).

    The engine measures which layout of them is fastest as it runs (all threads on each step's
    layers, the batch split between them, or one thread when the others are busy), so this is
    an upper bound, not a promise. Every layout produces the same samples.
    """
    global _threads
    _threads = _check_threads(threads)


def get_num_threads() -> int:
    """The thread limit of the C++ CPU step (see :func:`set_num_threads`)."""
    return _threads if _threads is not None else max(1, torch.get_num_threads())


def set_weight_storage(storage: str) -> None:
    """How the C++ CPU step stores the linear layers' weights: 'float32' (the default, exact),
    'float16' or 'bfloat16' (half the memory traffic; products and sums stay float32).

    Reduced precision is opt-in: at batch 1 generation is bound by reading the weights, and
    float16 makes it up to ~1.7x faster, at the cost of logits that differ from the float32
    ones by ~1e-3 (bfloat16: ~1e-2); see the README for the measured effect on likelihoods.
    """
    global _weights
    _weights = _check_weights(storage)


def get_weight_storage() -> str:
    """The weight storage of the C++ CPU step (see :func:`set_weight_storage`)."""
    return _weights


def _check_threads(threads):
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise InputError(f"threads must be a positive integer or None, got {threads!r}")
    return threads


def _check_weights(storage):
    if storage not in WEIGHT_STORAGE:
        raise InputError(f"weight storage must be one of {WEIGHT_STORAGE}, got {storage!r}")
    return storage


def _say_once(message: str, warn: bool = False) -> None:
    if message not in _said:
        _said.add(message)
        if warn:
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        else:
            logger.info(message)


def resolve_engine(model, engine: str = "auto", mode: str | None = None) -> str:
    """'fast' or 'eager' for a generation request (raises InputError, a ValueError, for a bad combination).

    ``mode`` (an S4 step mode) selects the eager recurrence: with ``engine='auto'`` it implies
    the eager loop, with ``engine='fast'`` it is an error.
    """
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "eager":
        return "eager"
    if mode is not None:
        if engine == "fast":
            raise InputError("mode selects the eager recurrence; it does not apply to engine='fast'")
        return "eager"
    reason = unsupported_reason(model)
    if reason is not None:
        if engine == "fast":
            raise InputError(f"engine='fast' does not support this model: {reason}")
        _say_once(f"sashimi: fast generation unavailable ({reason}); using the eager loop")
        return "eager"
    return "fast"


def _fingerprint(model) -> tuple:
    params = tuple((p.data_ptr(), p._version, p.dtype, str(p.device)) for p in model.parameters())
    return params + (model.training,)


def plan_for(model) -> dict:
    """The float64 plan of ``model`` (see :func:`sashimi.fastgen.pack.build_plan`), cached while its
    weights are unchanged."""
    return _entry(model)["plan"]


def cached_engine_keys(model) -> list[tuple]:
    """(kind, batch, threads, weight storage) of the engines kept for ``model``."""
    return list(_entry(model)["engines"])


def _entry(model) -> dict:
    key = _fingerprint(model)
    entry = _cache.get(model)
    if entry is None or entry["key"] != key:
        dtype = model.head.weight.dtype
        with one_thread():
            plan = build_plan(model, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        entry = {"key": key, "plan": plan, "engines": {}, "packed": {}}  # packed: weight storage -> (spec, weights)
        _cache[model] = entry
    return entry


def get_engine(model, batch: int, kind: str | None = None, threads: int | None = None, weights: str | None = None):
    """A ready engine for ``batch`` sequences of ``model`` (cached while the weights are unchanged).

    Args:
        model: a SashimiAR (see :func:`unsupported_reason`).
        batch: number of sequences.
        kind: None (the best for the model's device and dtype), 'cpp', 'cuda-graphs' or 'torch'.
        threads: most threads of the 'cpp' engine (default: :func:`get_num_threads`).
        weights: weight storage of the 'cpp' engine (default: :func:`get_weight_storage`).
    """
    threads, weights = _check_threads(threads), _check_weights(weights or _weights)
    entry = _entry(model)
    device = model.head.weight.device
    dtype = model.head.weight.dtype
    if kind is None:
        if device.type == "cuda":
            kind = "torch" if os.environ.get("SASHIMI_CUDA_GRAPHS", "1") == "0" else "cuda-graphs"
        elif device.type == "cpu" and dtype == torch.float32:
            kind = "cpp"
        else:
            kind = "torch"
        if kind == "cpp":
            from . import cpu

            if cpu.load_library() is None:
                _say_once(f"sashimi: the fast C++ CPU step is unavailable ({cpu.build_error}); "
                          "using the slower PyTorch fast path", warn=True)
                kind = "torch"
    if kind != "cpp":
        if weights != "float32":
            _say_once(f"sashimi: {weights} weight storage applies to the C++ CPU engine only; "
                      f"engine '{kind}' keeps the model's weights", warn=True)
        threads, weights = 1, "float32"
    else:
        threads = threads or get_num_threads()
    engines = entry["engines"]
    engine = engines.get((kind, batch, threads, weights))
    if engine is None:
        if kind == "cpp":
            from . import cpu

            lib = cpu.load_library()
            if lib is None:
                raise RuntimeError(f"the fast C++ CPU step is unavailable: {cpu.build_error}")
            if weights not in entry["packed"]:
                entry["packed"][weights] = cpu.pack_plan(entry["plan"], weights)
            engine = cpu.CppEngine(entry["plan"], batch, lib, packed=entry["packed"][weights], threads=threads)
        elif kind in ("cuda-graphs", "torch"):
            from .torch_engine import TorchEngine

            engine = TorchEngine(entry["plan"], batch, device, dtype=dtype, cuda_graphs=kind == "cuda-graphs")
        else:
            raise ValueError(f"unknown engine kind {kind!r}")
        while len(engines) >= 4:  # keep a few batch sizes
            engines.pop(next(iter(engines)))
        engines[(kind, batch, threads, weights)] = engine
        extra = [f"up to {threads} threads"] if threads > 1 else []
        extra += [f"{weights} weights"] if weights != "float32" else []
        extra += [f"S4 steps: {', '.join(f'{n} {m}' for m, n in s4_modes(entry['plan']).items())}"]
        _say_once(f"sashimi: fast generation engine '{engine.name}' ({'; '.join(extra)})")
    return engine


@torch.no_grad()
def teacher_forced_logits(model, tokens: torch.Tensor, kind: str | None = None, threads: int | None = None,
                          weights: str | None = None, condition: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (B, T, V) of the fast step fed ``tokens`` (B, T) from a fresh state (the first
    input is usually ``silence_token(V)``): the counterpart of looping ``model.step``.

    Args:
        condition: (B, H0) condition vectors (a class-conditional model's ``label_vectors``:
            added to every input embedding and projected by every conditioned block); None: the
            model's "no label" vector (nothing for an unconditional model), as ``model(tokens)``.
    """
    engine = get_engine(model, tokens.size(0), kind, threads, weights)
    engine.reset(condition)
    return engine.feed(tokens, want_logits=True)


BLOCK = 256  # steps per draw of uniforms: fixes the random stream, whatever the chunk sizes


def engine_rows(batch: int, guidance: float = 1.0) -> int:
    """Rows of the engine a request for ``batch`` sequences runs on: 2 ``batch`` with classifier-free
    guidance (each sequence with and without its label), else ``batch``; for building it ahead."""
    return 2 * batch if guidance != 1.0 else batch


def _prefix_chunks(prefix: torch.Tensor, total, chunk: int, dev) -> Iterator[torch.Tensor]:
    """The first ``total`` (<= P) tokens of ``prefix`` (B, P), in chunks: nothing to generate."""
    for start in range(0, int(total), chunk):
        yield prefix[:, start:min(start + chunk, int(total))].to(dev, copy=True)


def _prefix_then_buffer(prefix: torch.Tensor, total, chunk: int, dev):
    """Yield the whole chunks of ``prefix`` (B, P); return the buffer of the next chunk (B, <= chunk)
    holding the prefix's remainder, and how many of its positions that fills."""
    batch, P = prefix.shape
    start = 0
    while start + chunk <= P:
        yield prefix[:, start:start + chunk].to(dev, copy=True)
        start += chunk
    out = torch.empty(batch, int(min(chunk, total - start)), dtype=torch.long, device=dev)
    out[:, :P - start] = prefix[:, start:P].to(dev)
    return out, P - start


@torch.no_grad()
def stream_tokens(model, prefix: torch.Tensor, length: int | None, chunk: int, *,
                  sampling: SamplingOptions | None = None, generator: torch.Generator | None = None,
                  progress: bool = False, kind: str | None = None, threads: int | None = None,
                  weights: str | None = None, condition: torch.Tensor | None = None, guidance: float = 1.0,
                  uncondition: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """Tokens continuing ``prefix``, as they are sampled with the fast engine.

    Equivalent to the eager loop of :meth:`SashimiAR.generate`: the model is fed silence, then the
    prefix, then each sampled token; only the random stream differs (it does not depend on
    ``chunk``: uniforms are drawn in blocks of 256 steps).

    Args:
        model: a token model the fast engines support (see :func:`unsupported_reason`).
        prefix: int64 (B, P) tokens to continue (P may be 0).
        length: total tokens per sequence, prefix included; None: endless.
        chunk: tokens per yielded chunk.
        sampling: temperature, top-k and nucleus (None: plain sampling from the full distribution).
        generator: the random generator (None: torch's global RNG).
        kind, threads, weights: see :func:`get_engine`.
        progress: show a progress bar with the real-time factor on stderr.
        condition: (B, H0) condition vectors (a class-conditional model's ``label_vectors``);
            None: the model's "no label" vector (nothing for an unconditional model).
        guidance: classifier-free guidance weight (:func:`guided_logits`); 1: none. Otherwise the
            engine runs 2B rows (:func:`engine_rows`): with ``condition`` and with ``uncondition``.
        uncondition: (B, H0) vectors of the unguided half (None: the model's "no label" vector).

    Yields:
        int64 (B, chunk) tokens on the engine's device, positions [k chunk, (k + 1) chunk) for
        k = 0, 1, ... (the prefix first); the last chunk is shorter if ``length`` is not a
        multiple of ``chunk``.
    """
    sampling = sampling or SamplingOptions()
    batch, P = prefix.shape
    total = math.inf if length is None else length
    guided = guidance != 1.0
    engine = get_engine(model, engine_rows(batch, guidance), kind, threads, weights)
    if guided:
        condition, uncondition = (_default_rows(model, v, batch) for v in (condition, uncondition))
        engine.reset(torch.cat([condition, uncondition]))
        run = GuidedRun(engine, batch, guidance, sampling)
    else:
        engine.reset(condition)
        engine.set_sampling(sampling)
        run = PlainRun(engine)
    dev = engine.device
    if total <= P:  # nothing to generate
        yield from _prefix_chunks(prefix, total, chunk, dev)
        return
    silence = torch.full((batch, 1), silence_token(model.head.out_features), dtype=torch.long, device=prefix.device)
    run.prime(torch.cat([silence, prefix], 1).to(dev))  # silence + prefix: the logits for position P
    out, fill = yield from _prefix_then_buffer(prefix, total, chunk, dev)
    bar = progress_bar(None if length is None else length - P, progress, batch, model.config.sample_rate)
    t, uniforms, used = P, None, 0
    try:
        while t < total:
            if uniforms is None or used == uniforms.size(1):
                uniforms, used = draw_uniforms(batch, int(min(BLOCK, total - t)), generator, dev), 0
            n = int(min(uniforms.size(1) - used, out.size(1) - fill))
            run.advance(out, fill, fill + n, uniforms[:, used:used + n], feed_last=t + n < total)
            fill, used, t = fill + n, used + n, t + n
            if bar is not None:
                bar.update(n)
            if fill == out.size(1):
                yield out
                if t < total:
                    out = torch.empty(batch, int(min(chunk, total - t)), dtype=torch.long, device=dev)
                fill = 0
    finally:
        if bar is not None:
            bar.close()


def _default_rows(model, vectors: torch.Tensor | None, batch: int) -> torch.Tensor:
    """``vectors``, or the plan's default condition for ``batch`` rows (zeros without one)."""
    if vectors is not None:
        return vectors
    plan = plan_for(model)
    H0 = plan["emb"].size(1)
    default = plan["condition"] if plan["condition"] is not None else torch.zeros(H0, dtype=torch.float64)
    return default.to(model.head.weight.dtype).reshape(1, H0).expand(batch, H0)


def stream_guided_tokens(model, prefix: torch.Tensor, length: int | None, chunk: int, *, condition: torch.Tensor,
                         uncondition: torch.Tensor | None = None, guidance: float,
                         sampling: SamplingOptions | None = None, generator: torch.Generator | None = None,
                         progress: bool = False, kind: str | None = None, threads: int | None = None,
                         weights: str | None = None) -> Iterator[torch.Tensor]:
    """:func:`stream_tokens` with classifier-free guidance (the same loop; kept for its name).

    The engine runs 2B rows, the B sequences once with ``condition`` and once with
    ``uncondition`` (B, H0) vectors (None: the model's "no label" vector); both halves are fed
    the same token, drawn from the mixed logits, with the uniforms :func:`stream_tokens` draws.
    """
    return stream_tokens(model, prefix, length, chunk, sampling=sampling, generator=generator, progress=progress,
                         kind=kind, threads=threads, weights=weights, condition=condition, guidance=guidance,
                         uncondition=uncondition)


@torch.no_grad()
def generate_tokens(model, prefix: torch.Tensor, length: int, *, sampling: SamplingOptions | None = None,
                    generator: torch.Generator | None = None, progress: bool = False,
                    kind: str | None = None, threads: int | None = None, weights: str | None = None,
                    condition: torch.Tensor | None = None, guidance: float = 1.0,
                    uncondition: torch.Tensor | None = None) -> torch.Tensor:
    """Tokens (B, length) continuing ``prefix`` (B, P), sampled with the fast engine.

    Equivalent to the eager loop of :meth:`SashimiAR.generate`: the model is fed silence, then the
    prefix, then each sampled token; only the random stream differs. The same tokens as
    :func:`stream_tokens` with the same generator (same arguments; ``condition`` None: the
    model's "no label" vector).
    """
    batch, P = prefix.shape
    if P >= length:
        return prefix[:, :length].clone()
    chunks = list(stream_tokens(model, prefix, length, length, sampling=sampling, generator=generator,
                                progress=progress, kind=kind, threads=threads, weights=weights, condition=condition,
                                guidance=guidance, uncondition=uncondition))
    return chunks[0].to(model.head.weight.device)
