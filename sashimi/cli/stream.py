"""``sashimi generate --stream PATH``: one WAV file written while it is generated (``-``: stdout).

    sashimi generate --model my_model.pt --seconds 30 --stream - | aplay
    sashimi generate --model my_model.pt --seconds 5 --n 2 --stream two_voices.wav

The samples are the channels of the file (``--n``, default 1 when streaming), all generated at
once. The header comes first, with the exact size (known up front: ``--n`` channels of
``--seconds``), then 16-bit samples as each chunk is made, so a player can start at once; the
progress bar on stderr shows the real-time factor. The samples equal those of ``--out`` with the
same ``--seed`` and ``--n 1``.
"""
from __future__ import annotations

import os
import struct
import sys
import time

import numpy as np

from sashimi.cli import CLIError

__all__ = ["WavStreamWriter", "wav_header", "run_stream"]

from sashimi.cli.common import MAX_DATA  # the largest data chunk a RIFF header can state


def wav_header(sample_rate: int, channels: int, frames: int | None) -> bytes:
    """The 44-byte header of a 16-bit PCM WAV; ``frames`` None: the maximal size, which players
    read as "until the end of the stream"."""
    data = MAX_DATA if frames is None else frames * channels * 2
    if data > MAX_DATA:
        raise ValueError(f"{frames} frames of {channels} channels do not fit in a WAV file (4 GiB)")
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * channels * 2, channels * 2, 16)
            + b"data" + struct.pack("<I", data))


class WavStreamWriter:
    """A 16-bit PCM WAV written progressively to a binary file object (a pipe works: it never
    seeks). The header is written at once; each :meth:`write` appends samples and flushes.

    Args:
        out: binary file object (``sys.stdout.buffer``, an open file).
        sample_rate: Hz.
        channels: channels per frame.
        frames: total frames if known (exact header), else None (maximal header).
    """

    def __init__(self, out, sample_rate: int, channels: int, frames: int | None = None):
        if channels < 1 or sample_rate < 1:
            raise ValueError(f"channels and sample_rate must be positive, got {channels}, {sample_rate}")
        self.out, self.channels, self.frames, self.written = out, channels, frames, 0
        out.write(wav_header(sample_rate, channels, frames))
        out.flush()

    def write(self, audio) -> None:
        """Append float (channels, n) audio in [-1, 1] (clipped; NaN written as 0)."""
        x = audio.detach().cpu().float().numpy() if hasattr(audio, "detach") else np.asarray(audio, np.float32)
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise ValueError(f"expected ({self.channels}, n) audio, got shape {tuple(x.shape)}")
        if self.frames is not None and self.written + x.shape[1] > self.frames:
            raise ValueError(f"more than the {self.frames} frames the header announced")
        pcm = np.round(np.clip(np.nan_to_num(x), -1.0, 1.0) * 32767.0).astype("<i2")  # as sashimi.data.audio.write_wav
        self.out.write(np.ascontiguousarray(pcm.T).tobytes())  # frames of interleaved channels
        self.out.flush()
        self.written += x.shape[1]


def run_stream(args) -> int:
    """`sashimi generate` with ``--stream``: validate (before loading the model), then generate
    and write chunk by chunk."""
    from sashimi.cli.common import parse_number

    n = parse_number(args.n if args.n is not None else "1", int, "n", low=1, high=65535)  # channels of one WAV
    seconds = parse_number(args.seconds, float, "seconds", low=0, low_open=True)
    seed = parse_number(args.seed, int, "seed", low=0, high=2**64 - 1) if args.seed is not None else None
    target = args.stream
    if args.batch_size is not None and parse_number(args.batch_size, int, "batch-size", low=1) < n:
        raise CLIError("--stream generates all --n samples at once (as the channels of one file); "
                       "drop --batch-size or make it >= --n")
    if target == "-":
        if sys.stdout.isatty():
            raise CLIError("--stream -: refusing to write WAV data to a terminal; pipe it (e.g. | aplay) "
                           "or give a file name")
        return _stream(args, n, seconds, seed, target, None)
    _check_target(target, args.force)
    from sashimi.persistence.outputs import OutputFiles

    with OutputFiles([target], args.force) as outputs:  # claimed before the model is loaded (exclusive)
        return _stream(args, n, seconds, seed, target, outputs)


def _stream(args, n: int, seconds: float, seed, target: str, outputs) -> int:
    from sashimi.cli.common import (ar_options, check_sizes, load_cli_model, model_kind, parse_labels, resolve_device,
                                    show_engine_messages)

    device = resolve_device(args.device)
    model = load_cli_model(args.model, device)
    if model_kind(model) != "ar":
        raise CLIError("--stream needs an autoregressive model: a diffusion model makes the whole "
                       "waveform at once")
    if args.steps is not None:
        raise CLIError("--steps applies to diffusion models only")
    rate = int(model.config.sample_rate)
    length = max(1, round(seconds * rate))
    check_sizes(args.seconds, length, rate, channels=n)  # before any work, as --out does
    kw, prefix = ar_options(model, args, length, device)
    cycle = parse_labels(model, args.label)
    if getattr(args, "guidance", None) is not None:
        raise CLIError("--guidance does not apply to --stream (guided generation samples step by step in Python)")
    if cycle is not None:
        kw["labels"] = [cycle[i % len(cycle)] for i in range(n)]
    chunk = max(1, rate // 10)  # 0.1 s: a player starts within a fraction of a second
    show_engine_messages(args.quiet)
    stream = model.stream(n, length, chunk, prefix_wav=None if prefix is None else prefix.expand(n, -1),
                          seed=seed, **kw)
    out = sys.stdout.buffer if target == "-" else open(outputs.part(target), "wb")  # noqa: SIM115
    start, first = time.perf_counter(), None
    try:
        writer = WavStreamWriter(out, rate, n, length)
        for audio in stream:
            first = first or time.perf_counter()  # the first chunk includes the engine's set-up
            writer.write(audio)
    except BrokenPipeError:  # the reader went away (a player closed): stop quietly
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (no flush error at exit)
        except OSError:
            pass
        print("output closed by the reader; stopped", file=sys.stderr)
        return 1
    finally:
        if target != "-":
            out.close()
    if target != "-":
        outputs.publish(target)  # never a half-written file under the final name; without -f never over another
    if not args.quiet:
        end = time.perf_counter()
        print(f"streamed {n} x {length / rate:.3g} s at {rate} Hz to {'stdout' if target == '-' else target} in "
              f"{end - start:.2f} s (first audio after {first - start:.2f} s, then "
              f"{length / rate / max(end - first, 1e-9):.2f}x real time)", file=sys.stderr)
    return 0


def _check_target(path: str, force: bool) -> None:
    """Refuse a path that cannot be written, before any model is loaded."""
    if os.path.isdir(path):
        raise CLIError(f"--stream {path} is a directory; give a file name (or - for stdout)")
    if os.path.exists(path) and not force:
        raise CLIError(f"{path} exists; use -f to overwrite")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise CLIError(f"--stream {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise CLIError(f"--stream {path}: the directory {parent} is not writable")
