"""Fast autoregressive generation: the engines behind ``SashimiAR.unconditional_generate``.

Same output distribution as the eager loop, much less time per sample:

- the S4 recurrences are O(N) per channel with the conjugate partners implicit (real output
  2 Re(.)): the eigenbasis ('diagonal') where it is well-conditioned in float32, else the
  equivalent diagonal-plus-rank-1 step in the unitary basis ('dplr'), never a silently inaccurate
  one. All coefficients are computed once in float64, then cast (:mod:`.pack`);
- sampling (temperature, top-k, nucleus) is batched and uses uniforms pre-drawn from the seeded
  generator (:mod:`.sampler`): the distribution of :func:`sashimi.sampling.sample_logits`, not
  its random stream;
- engines: ``cpp`` (CPU: a fused float32 C++ step built at first use, :mod:`.cpu`),
  ``cuda-graphs`` (CUDA: one graph per step pattern, :mod:`.torch_engine`) and ``torch`` (the same
  step in plain PyTorch: the fallback when no C++ compiler works, and for float64 models).

The engine protocol: ``reset()``, ``set_sampling(temperature, top_k, nucleus_p)``,
``feed(tokens (B, T), want_logits) -> logits (B, T, V) | None`` (teacher forcing),
``sample_and_feed(out, t0, t1, uniforms, feed_last)`` and ``last_logits()``.
"""
from __future__ import annotations

import logging
import os
import warnings
import weakref

import torch

from ..mulaw import SILENCE_TOKEN
from ..s4 import one_thread
from .pack import build_plan, s4_modes, unsupported_reason
from .sampler import draw_uniforms, sample_with_uniforms

__all__ = ["ENGINES", "get_engine", "generate_tokens", "teacher_forced_logits", "resolve_engine",
           "unsupported_reason", "sample_with_uniforms", "set_num_threads", "get_num_threads"]

ENGINES = ("auto", "fast", "eager")
logger = logging.getLogger("sashimi")
_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> {"key", "plan", "engines"}
_said: set[str] = set()
_threads: int | None = None  # set_num_threads; None: follow torch.get_num_threads()


def set_num_threads(threads: int | None) -> None:
    """Most threads the C++ CPU step may use (None: follow ``torch.get_num_threads()``, the default).

    The engine measures which layout of them is fastest as it runs (all threads on each step's
    layers, the batch split between them, or one thread when the others are busy), so this is
    an upper bound, not a promise. Every layout produces the same samples.
    """
    global _threads
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    _threads = threads


def get_num_threads() -> int:
    """The thread limit of the C++ CPU step (see :func:`set_num_threads`)."""
    return _threads if _threads is not None else max(1, torch.get_num_threads())


def _say_once(message: str, warn: bool = False) -> None:
    if message not in _said:
        _said.add(message)
        if warn:
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        else:
            logger.info(message)


def resolve_engine(model, engine: str = "auto", mode: str | None = None) -> str:
    """'fast' or 'eager' for a generation request (raises ValueError for a bad combination).

    ``mode`` (an S4 step mode) selects the eager recurrence: with ``engine='auto'`` it implies
    the eager loop, with ``engine='fast'`` it is an error.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "eager":
        return "eager"
    if mode is not None:
        if engine == "fast":
            raise ValueError("mode selects the eager recurrence; it does not apply to engine='fast'")
        return "eager"
    reason = unsupported_reason(model)
    if reason is not None:
        if engine == "fast":
            raise ValueError(f"engine='fast' does not support this model: {reason}")
        _say_once(f"sashimi: fast generation unavailable ({reason}); using the eager loop")
        return "eager"
    return "fast"


def _fingerprint(model) -> tuple:
    params = tuple((p.data_ptr(), p._version, p.dtype, str(p.device)) for p in model.parameters())
    return params + (model.training,)


def _entry(model) -> dict:
    key = _fingerprint(model)
    entry = _cache.get(model)
    if entry is None or entry["key"] != key:
        dtype = model.head.weight.dtype
        with one_thread():
            plan = build_plan(model, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        entry = {"key": key, "plan": plan, "engines": {}, "packed": None}
        _cache[model] = entry
    return entry


def get_engine(model, batch: int, kind: str | None = None, threads: int | None = None):
    """A ready engine for ``batch`` sequences of ``model`` (cached while the weights are unchanged).

    Args:
        model: a SashimiAR (see :func:`unsupported_reason`).
        batch: number of sequences.
        kind: None (the best for the model's device and dtype), 'cpp', 'cuda-graphs' or 'torch'.
        threads: most threads of the 'cpp' engine (default: :func:`get_num_threads`).
    """
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
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
    engines = entry["engines"]
    n_threads = (threads or get_num_threads()) if kind == "cpp" else 1
    engine = engines.get((kind, batch, n_threads))
    if engine is None:
        if kind == "cpp":
            from . import cpu

            lib = cpu.load_library()
            if lib is None:
                raise RuntimeError(f"the fast C++ CPU step is unavailable: {cpu.build_error}")
            if entry["packed"] is None:
                entry["packed"] = cpu._pack(entry["plan"])
            engine = cpu.CppEngine(entry["plan"], batch, lib, packed=entry["packed"], threads=n_threads)
        elif kind in ("cuda-graphs", "torch"):
            from .torch_engine import TorchEngine

            engine = TorchEngine(entry["plan"], batch, device, dtype=dtype, cuda_graphs=kind == "cuda-graphs")
        else:
            raise ValueError(f"unknown engine kind {kind!r}")
        while len(engines) >= 4:  # keep a few batch sizes
            engines.pop(next(iter(engines)))
        engines[(kind, batch, n_threads)] = engine
        where = f", up to {n_threads} threads" if kind == "cpp" and n_threads > 1 else ""
        _say_once(f"sashimi: fast generation engine '{engine.name}'{where} "
                  f"(S4 steps: {', '.join(f'{n} {m}' for m, n in s4_modes(entry['plan']).items())})")
    return engine


@torch.no_grad()
def teacher_forced_logits(model, tokens: torch.Tensor, kind: str | None = None,
                          threads: int | None = None) -> torch.Tensor:
    """Logits (B, T, V) of the fast step fed ``tokens`` (B, T) from a fresh state (the first
    input is usually SILENCE_TOKEN): the counterpart of looping ``model.step``."""
    engine = get_engine(model, tokens.size(0), kind, threads)
    engine.reset()
    return engine.feed(tokens, want_logits=True)


@torch.no_grad()
def generate_tokens(model, prefix: torch.Tensor, length: int, *, nucleus_p: float = 1.0, temperature: float = 1.0,
                    top_k: int | None = None, generator: torch.Generator | None = None, progress: bool = False,
                    kind: str | None = None, chunk: int = 256, threads: int | None = None) -> torch.Tensor:
    """Tokens (B, length) continuing ``prefix`` (B, P), sampled with the fast engine.

    Equivalent to the eager loop of :meth:`SashimiAR.generate`: the model is fed silence, then the
    prefix, then each sampled token; only the random stream differs.
    """
    batch, P = prefix.shape
    if P >= length:
        return prefix[:, :length].clone()
    engine = get_engine(model, batch, kind, threads)
    engine.reset()
    engine.set_sampling(temperature, top_k, nucleus_p)
    device = model.head.weight.device
    out_device = engine.device
    out = torch.empty(batch, length, dtype=torch.long, device=out_device)
    out[:, :P] = prefix.to(out_device)
    inputs = torch.cat([torch.full((batch, 1), SILENCE_TOKEN, dtype=torch.long, device=prefix.device), prefix], 1)
    engine.feed(inputs)  # silence + prefix: the logits for position P
    bar = _progress(length - P, progress, batch)
    try:
        for t0 in range(P, length, chunk):
            t1 = min(t0 + chunk, length)
            uniforms = draw_uniforms(batch, t1 - t0, generator, out_device)
            engine.sample_and_feed(out, t0, t1, uniforms, feed_last=t1 < length)
            if bar is not None:
                bar.update(t1 - t0)
    finally:
        if bar is not None:
            bar.close()
    return out.to(device)


def _progress(total: int, enabled: bool, batch: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="sample", unit_scale=batch, desc="generating", dynamic_ncols=True)
