"""Helpers the commands share: argument parsing and errors, devices, loading a model, output
folders, size checks, and the autoregressive sampling options of ``generate``, ``--stream`` and ``eval``.

A module of its own, below every command module: commands import it, never each other.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import re
import sys

from sashimi.cli import CLIError, first_line

#: The largest data chunk a RIFF (WAV) header can state, in bytes.
MAX_DATA = 0xFFFFFFFF - 36

AR_ONLY = ("nucleus_p", "temperature", "top_k", "prefix", "engine", "threads", "weights")


DIFFWAVE_ONLY = ("steps",)


def plain(doc: str) -> str:
    """A module docstring as --help text: without reST markup."""
    return re.sub(r":\w+:`([^`]*)`", r"\1", doc).replace("``", "")


def one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make argparse report bad arguments as one line (exit status 2), like CLIError."""
    def error(message: str):
        print(f"{parser.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)

    parser.error = error


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="sashimi_ar_fsdd",
                        help="pretrained name (sashimi_ar_fsdd: bundled, offline; sashimi_ar_sc09, sashimi_ar_youtubemix, "
                             "sashimi_diffwave_sc09: published, downloaded once; name:variant, e.g. "
                             "sashimi_ar_sc09:paper), checkpoint path, model folder, URL, hf://owner/name[@rev] or "
                             "hf://owner/name/path/file.pt (default: sashimi_ar_fsdd)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")


def parse_number(text, kind, name: str, low=None, high=None, low_open=False):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise CLIError(f"--{name} must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise CLIError(f"--{name} must be finite, got {text!r}")
    if low is not None and (value <= low if low_open else value < low) or high is not None and value > high:
        bounds = f"{'(' if low_open else '['}{low}, {f'{high}]' if high is not None else 'inf)'}"  # inf is refused
        raise CLIError(f"--{name} must be in {bounds}, got {text!r}")
    return value


def resolve_device(name: str | None):
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CLIError(f"--device: unknown device {name!r}") from None
    if device.type not in ("cpu", "cuda"):  # meta, mps, xpu, ...: the library runs on CPUs and CUDA GPUs
        raise CLIError(f"--device must be cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CLIError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def load_cli_model(spec: str, device):
    """A model from a hub name, a checkpoint path, a model folder, a URL or ``hf://owner/name``, in eval
    mode on ``device``."""
    from sashimi.errors import SashimiError
    from sashimi.persistence.hf import HubDependencyError
    from sashimi.pretrained import PRETRAINED_NAMES, load_model
    from sashimi.pretrained.factories import split_pretrained_name

    if "://" not in spec and not os.path.exists(spec) and split_pretrained_name(spec) is None:
        raise CLIError(f"--model: no such file, and not a pretrained model name ({', '.join(PRETRAINED_NAMES)}): "
                       f"{spec}")
    try:  # load_model resolves pretrained names, model folders and hf:// too (a file of that name wins)
        return load_model(spec, map_location=device).eval()
    except (SashimiError, HubDependencyError, OSError) as e:  # a bad file, a failed download; else a bug
        raise CLIError(f"--model {spec}: {first_line(e)}") from e


def check_sizes(seconds: str, length: int, rate: int, channels: int = 1, n: int | None = None,
                batch: int | None = None) -> None:
    """Refuse, before any work, a length that no WAV file can hold, or (when ``n`` samples of
    ``batch`` at a time are held in memory, as with --out) that this machine's memory cannot.

    Args:
        seconds: the --seconds text, for the message.
        length: samples per waveform; rate: Hz.
        channels: channels of one file (--stream writes the samples as channels).
        n, batch: samples kept in memory until written, and generated at once.
    """
    if length * channels * 2 > MAX_DATA:
        most = MAX_DATA // (2 * channels) / rate
        where = f" with {channels} channels" if channels > 1 else ""
        raise CLIError(f"--seconds {seconds}: {length:,} samples per file do not fit in a WAV file (4 GiB of 16-bit "
                       f"samples: at most {most:,.0f} s at {rate} Hz{where})")
    if n is None:
        return
    # float32 results of all n; per batch: int64 tokens, float32 decoded audio and its copy
    need = length * (4 * n + 16 * (batch or n))
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: no check
        return
    if need > memory:
        raise CLIError(f"--seconds {seconds}: {n} sample(s) of {length:,} need about {need / 2**30:,.1f} GiB of "
                       f"memory, more than this machine's {memory / 2**30:,.1f} GiB; make fewer or shorter ones "
                       "(--stream writes while it generates)")


def model_kind(model) -> str:
    from sashimi.ar import SashimiAR
    from sashimi.diffwave import SashimiDiffWave

    if isinstance(model, SashimiAR):
        return "ar"
    if isinstance(model, SashimiDiffWave):
        return "diffwave"
    raise CLIError(f"--model holds a {type(model).__name__}, which cannot generate audio")


def prepare_output_dir(out: str, flag: str = "--out") -> list[str]:
    """Create the output directory (and missing parents), or refuse it, before any expensive work.

    Args:
        out: the directory.
        flag: the option that named it, for messages.

    Returns:
        the directories created, deepest first (:func:`remove_if_empty` undoes them on failure).

    Raises:
        CLIError: ``out`` or one of its parents is a file, or the directory cannot be created or
            written to (tried with a temporary file, which is removed).
    """
    import tempfile

    if not out:
        raise CLIError(f"{flag} must be a directory path, got ''")
    missing, parent = [], os.path.abspath(out)
    while not os.path.exists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        where = "exists" if not missing else f"is under {parent}, which exists"
        raise CLIError(f"{flag} {out} {where} and is not a directory")
    try:
        os.makedirs(out, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".sashimi-write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        remove_if_empty(missing)
        raise CLIError(f"{flag} {out}: cannot write there ({e.strerror or e})") from e
    return missing


def remove_if_empty(dirs: list[str]) -> None:
    """Remove the directories this command created (deepest first) if they are still empty."""
    for d in dirs:
        try:
            os.rmdir(d)
        except OSError:
            pass


def with_output_dir(command):
    """Decorate a command's ``run(args)``: prepare ``args.out`` first (before any model is loaded:
    a bad path fails in seconds, not after sampling), and remove the directories it created if
    the command fails while they are still empty (nothing is left behind). The command registers
    what to undo on the way out (its claims on output files) in ``args.cleanup``, an ExitStack."""
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        created = prepare_output_dir(args.out)
        with contextlib.ExitStack() as args.cleanup:
            try:
                return command(args)
            except BaseException:
                args.cleanup.close()  # release the claims first: the directories are then empty
                remove_if_empty(created)
                raise

    return run


def write_wavs(outputs, paths: list[str], wavs, rate: int) -> None:
    """Write each waveform into its claimed ``.part`` file, then give it its name: the one writer of
    ``generate`` and ``eval --save-samples``. A half-written file never carries a final name; without
    -f a file that appeared meanwhile is never replaced. Such a clash does not stop the others:
    every result is published (the clashing one under a free name beside it), then the clashes
    are reported.

    Args:
        outputs: the run's :class:`sashimi.persistence.outputs.OutputFiles`, holding every path.
        paths: the N files, in order; wavs: float (N, L) waveforms; rate: Hz.

    Raises:
        OutputError: a claimed path was written by something else meanwhile (the message names it
            and where this run's result is).
    """
    from sashimi.data.audio import write_wav
    from sashimi.errors import OutputError

    if len(paths) != len(wavs):  # a caller's bug: say so before writing anything
        raise RuntimeError(f"write_wavs: {len(paths)} paths for {len(wavs)} waveforms")
    clashes = []
    for path, wav in zip(paths, wavs):
        try:
            outputs.publish(path, functools.partial(write_wav, wav=wav, sample_rate=rate))
        except OutputError as e:
            if "appeared while this run was working" not in str(e):
                raise
            clashes.append(first_line(e))
    if clashes:
        more = f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""
        raise OutputError(f"{clashes[0]}{more}; the other {len(paths) - len(clashes)} file(s) were written")


def parse_labels(model, text: str | None) -> list[int] | None:
    """Class indices from ``--label`` (comma-separated names, or indices where unambiguous: see
    :func:`sashimi.labels.parse_label_text`, the parser the API uses too), or None without it."""
    if text is None:
        return None
    if model.classes is None:
        raise CLIError("--label needs a class-conditional model; this model is unconditional (it has no classes)")
    from sashimi.labels import parse_label_text

    return parse_label_text(text, model.classes, name="--label")


def ar_options(model, args, length: int, device):
    """(keyword arguments for the AR model's generation methods, prefix (1, P) or None); applies
    --threads and --weights to the fast engine."""
    from sashimi import fastgen

    fastgen.set_num_threads(parse_number(args.threads, int, "threads", low=1) if args.threads is not None else None)
    fastgen.set_weight_storage(args.weights or "float32")
    # None: the model's own default (config.sampling), else the library's
    nucleus_p = parse_number(args.nucleus_p, float, "nucleus-p", low=0, high=1, low_open=True) \
        if args.nucleus_p is not None else None
    from sashimi.sampling import MIN_TEMPERATURE

    temperature = parse_number(args.temperature, float, "temperature", low=MIN_TEMPERATURE) \
        if args.temperature is not None else None
    top_k = parse_number(args.top_k, int, "top-k", low=0) if args.top_k is not None else None
    prefix = None
    if args.prefix is not None:
        from sashimi.data.audio import AudioError, audio_info, read_audio

        try:
            channels = audio_info(args.prefix)[1]
            prefix, _ = read_audio(args.prefix, model.config.sample_rate, mono=True, refuse_clipping=True)
        except (AudioError, FileNotFoundError) as e:
            raise CLIError(f"--prefix: {e}") from e
        if channels > 1:  # say so: out-of-phase channels average to silence
            print(f"note: --prefix {args.prefix} has {channels} channels; their average (mono) is used",
                  file=sys.stderr)
        if prefix.numel() > length:
            raise CLIError(f"--prefix is {prefix.numel() / model.config.sample_rate:.3g} s, longer than "
                           f"--seconds {args.seconds}")
        prefix = prefix.to(device)
    kw = dict(nucleus_p=nucleus_p, temperature=temperature, top_k=top_k, progress=not args.quiet,
              engine=args.engine or "auto")
    return kw, prefix


def show_engine_messages(quiet: bool) -> None:
    """Let the library's one-time notes (which engine runs) reach stderr."""
    import logging

    logger = logging.getLogger("sashimi")
    if not quiet and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
