"""The two ways a stream advances: sampling inside the engine (plain), or here from mixed logits
(classifier-free guidance); both driven by the one loop of :func:`sashimi.fastgen.stream_tokens`."""
from __future__ import annotations

import time

import torch

from ..sampling import SamplingOptions
from .sampler import sample_with_uniforms

__all__ = ["PlainRun", "GuidedRun", "guided_logits", "Progress", "progress_bar"]


def guided_logits(conditional: torch.Tensor, unconditional: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance: ``unconditional + guidance * (conditional - unconditional)``, on the
    log-softmax of each, so that the result is a proper mix of log-probabilities. guidance 1: the
    conditional distribution; > 1: pushed further from the unconditional one."""
    c, u = torch.log_softmax(conditional.float(), -1), torch.log_softmax(unconditional.float(), -1)
    return u + guidance * (c - u)


class PlainRun:
    """Sampling inside the engine: B rows, each drawn from its own logits."""

    def __init__(self, engine):
        self.engine = engine

    def prime(self, fed: torch.Tensor) -> None:
        self.engine.feed(fed)

    def advance(self, out, t0: int, t1: int, uniforms, feed_last: bool) -> None:
        self.engine.sample_and_feed(out, t0, t1, uniforms, feed_last)


class GuidedRun:
    """Classifier-free guidance: 2B rows (the sequences with, then without, their labels), one draw
    per sequence from the mixed logits (:func:`guided_logits`), fed to both halves; sampled here,
    step by step, from the same uniforms the engine would use."""

    def __init__(self, engine, batch: int, guidance: float, sampling: SamplingOptions):
        self.engine, self.batch, self.guidance, self.sampling = engine, batch, guidance, sampling
        self.logits = None

    def prime(self, fed: torch.Tensor) -> None:
        self.engine.feed(torch.cat([fed, fed]))
        self.logits = self.engine.last_logits().to(self.engine.device)  # (2B, V)

    def advance(self, out, t0: int, t1: int, uniforms, feed_last: bool) -> None:
        s, B = self.sampling, self.batch
        for j, t in enumerate(range(t0, t1)):
            mixed = guided_logits(self.logits[:B], self.logits[B:], self.guidance)
            token = sample_with_uniforms(mixed, uniforms[:, j], s.temperature, s.top_k, s.nucleus_p)
            out[:, t] = token
            if t < t1 - 1 or feed_last:
                self.logits = self.engine.feed(torch.cat([token, token]).unsqueeze(1), want_logits=True)[:, 0]


class Progress:
    """tqdm over samples, showing the real-time factor (seconds of audio per second of wall time)."""

    def __init__(self, total, batch: int, sample_rate: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="sample", unit_scale=batch, desc="generating", dynamic_ncols=True)
        self.rate, self.start, self.done = sample_rate, time.perf_counter(), 0

    def update(self, n: int) -> None:
        self.done += n
        elapsed = time.perf_counter() - self.start
        if elapsed > 0:
            self.bar.set_postfix_str(f"{self.done / self.rate / elapsed:.2f}x real time", refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def progress_bar(total, enabled: bool, batch: int, sample_rate: int):
    return Progress(total, batch, sample_rate) if enabled else None
