"""``sashimi generate``: sample audio from a pretrained or saved model into 16-bit WAV files.

    sashimi generate --n 4 --out samples/             # the bundled FSDD model: offline, 1 s at 8 kHz
    sashimi generate --model sashimi_ar_sc09 --n 4 --seconds 1.0 --out samples/
    sashimi generate --model my_model.pt --n 16 --batch-size 16 --top-k 100 --seed 0 --out runs/a
    sashimi generate --model sashimi_ar_sc09 --prefix prompt.wav --seconds 2 --out continued/
    sashimi generate --model sashimi_diffwave_sc09 --steps fast --n 8 --out diffwave/

``--model`` is a pretrained name from :mod:`sashimi.hub`, a checkpoint path or a URL. Files are
named ``sample_000.wav``, ... in ``--out``; existing files are never overwritten without ``-f``.
Each file is claimed before the model is loaded (``<file>.part``, created exclusively), so two runs
never write the same file, and it gets its name only when generation succeeded.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import re
import sys
import time

from sashimi.cli import CLIError, first_line

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
                        help="pretrained name (sashimi_ar_fsdd: bundled, offline; sashimi_ar_sc09, sashimi_diffwave_sc09: "
                             "published, downloaded once), checkpoint path or URL (default: sashimi_ar_fsdd)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    one_line_errors(parser)
    parser.description, parser.formatter_class = plain(__doc__), argparse.RawDescriptionHelpFormatter
    add_model_arguments(parser)
    parser.add_argument("--n", default=None, help="number of samples (default: 4; 1 with --stream)")
    parser.add_argument("--seconds", default="1.0", help="length of each sample in seconds (default: 1.0)")
    parser.add_argument("--out", default="samples", help="output directory (default: samples)")
    parser.add_argument("--name", default="sample", help="file name stem: <name>_000.wav, ... (default: sample)")
    parser.add_argument("--seed", default=None, help="random seed; batch j uses seed + j (default: random)")
    parser.add_argument("--batch-size", default=None, help="samples generated at once (default: min(n, 16))")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite existing files")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ar = parser.add_argument_group("autoregressive models")
    ar.add_argument("--nucleus-p", default=None, help="nucleus (top-p) mass in (0, 1] (default: 1.0)")
    ar.add_argument("--temperature", default=None, help="softmax temperature > 0 (default: 1.0)")
    ar.add_argument("--top-k", default=None, help="sample among the k most likely values (default: all)")
    ar.add_argument("--prefix", default=None, metavar="WAV", help="audio to continue (resampled to the model's rate)")
    ar.add_argument("--engine", default=None, choices=("auto", "fast", "eager"),
                    help="generation engine (default: auto = fast when possible)")
    ar.add_argument("--threads", default=None,
                    help="most threads of the fast CPU engine (default: torch's; it picks the fastest layout)")
    ar.add_argument("--weights", default=None, choices=("float32", "float16", "bfloat16"),
                    help="weight storage of the fast CPU engine: float16 is ~1.7x faster at batch 1, "
                         "logits within ~1e-3 (default: float32)")
    ar.add_argument("--stream", default=None, metavar="PATH",
                    help="write one WAV file (the samples as its channels) while generating; - for stdout "
                         "(e.g. | aplay)")
    dw = parser.add_argument_group("diffusion models")
    dw.add_argument("--steps", default=None, help="'fast' (6 steps), an integer, or all T steps (default)")


# ---- parsing helpers ------------------------------------------------------------------------
def parse_number(text, kind, name: str, low=None, high=None, low_open=False):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise CLIError(f"--{name} must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise CLIError(f"--{name} must be finite, got {text!r}")
    if low is not None and (value <= low if low_open else value < low) or high is not None and value > high:
        bounds = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}]"
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
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device: CUDA is not available on this machine")
    return device


def load_cli_model(spec: str, device):
    """A model from a hub name, a checkpoint path or a URL, in eval mode on ``device``."""
    import sashimi.hub as hub
    from sashimi.checkpoint import load_model
    from sashimi.errors import SashimiError

    if "://" not in spec and not os.path.exists(spec) and spec not in hub.PRETRAINED_NAMES:
        raise CLIError(f"--model: no such file, and not a pretrained model name ({', '.join(hub.PRETRAINED_NAMES)}): "
                       f"{spec}")
    if os.path.exists(spec) and not os.path.isfile(spec):
        raise CLIError(f"--model: {spec} is not a file")
    try:  # load_model resolves pretrained names too (a file of that name wins)
        return load_model(spec, map_location=device).eval()
    except (SashimiError, OSError) as e:  # a bad file, a failed download; anything else is a bug
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
    from sashimi.cli.stream import MAX_DATA

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


# ---- the command ----------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    if args.stream is not None:  # one file written while generating (sashimi/cli/stream.py): no --out
        from sashimi.cli.stream import run_stream

        return run_stream(args)
    return _run_to_files(args)


@with_output_dir
def _run_to_files(args: argparse.Namespace) -> int:
    n = parse_number(args.n if args.n is not None else "4", int, "n", low=1)
    seconds = parse_number(args.seconds, float, "seconds", low=0, low_open=True)
    batch = parse_number(args.batch_size, int, "batch-size", low=1) if args.batch_size is not None else min(n, 16)
    # batch j uses seed + j, and torch's seeds end at 2**64 - 1
    seed = parse_number(args.seed, int, "seed", low=0, high=2**64 - math.ceil(n / batch)) \
        if args.seed is not None else None
    if not args.name or os.sep in args.name or (os.altsep and os.altsep in args.name):
        raise CLIError(f"--name must be a plain file name stem, got {args.name!r}")
    width = max(3, len(str(n - 1)))
    paths = [os.path.join(args.out, f"{args.name}_{i:0{width}d}.wav") for i in range(n)]
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not args.force:
        raise CLIError(f"{existing[0]} exists ({len(existing)} of {n} files); use -f to overwrite")
    from sashimi.outputs import OutputFiles

    outputs = args.cleanup.enter_context(OutputFiles(paths, args.force))  # exclusive, before the work

    device = resolve_device(args.device)
    model = load_cli_model(args.model, device)
    kind = model_kind(model)
    given = [name for name in (AR_ONLY if kind == "diffwave" else DIFFWAVE_ONLY) if getattr(args, name) is not None]
    if given:
        flag = "--" + given[0].replace("_", "-")
        need = "autoregressive" if kind == "diffwave" else "diffusion"
        raise CLIError(f"{flag} applies to {need} models only; {args.model} is "
                       f"{'a diffusion' if kind == 'diffwave' else 'an autoregressive'} model")
    rate = int(model.config.sample_rate)
    length = max(1, round(seconds * rate))
    check_sizes(args.seconds, length, rate, n=n, batch=batch)
    sample = _ar_sampler(model, args, length, device) if kind == "ar" else _diffwave_sampler(model, args, length)

    import torch

    _show_engine_messages(args.quiet)
    setup = _prepare_engine(model, kind, args.engine, batch)  # timed apart from the sampling rate
    wavs, start = [], time.perf_counter()
    for j, first in enumerate(range(0, n, batch)):
        count = min(batch, n - first)
        # the library's own errors (SashimiError) reach the user as one line; anything else is a bug
        wav = sample(count, None if seed is None else seed + j)
        wavs.append(wav.float().cpu())
    wavs = torch.cat(wavs)
    elapsed = time.perf_counter() - start
    _write_all(outputs, paths, wavs, rate)
    if not args.quiet:
        print(f"wrote {n} file(s) of {length / rate:.3g} s at {rate} Hz to {args.out} "
              f"({n * length / elapsed:,.0f} samples/s after {setup:.1f} s of set-up)", file=sys.stderr)
    return 0


def _prepare_engine(model, kind: str, engine: str | None, batch: int) -> float:
    """Set up generation before it is timed (building the fast engine: its plan, and the C++ step
    compiled on first use; the eager loop's recurrence), so that the samples/s printed measure
    sampling alone. Returns the seconds it took."""
    if kind != "ar":
        return 0.0
    from sashimi import fastgen

    start = time.perf_counter()
    if fastgen.resolve_engine(model, engine or "auto") == "fast":
        fastgen.get_engine(model, batch)  # cached: the generation calls reuse it
    else:
        model.setup_rnn("diagonal")  # the eager loop's default; cached while the weights are unchanged
    return time.perf_counter() - start


def _ar_sampler(model, args, length: int, device):
    kw, prefix = ar_options(model, args, length, device)

    def sample(count: int, seed):
        if prefix is None:
            return model.unconditional_generate(count, length=length, seed=seed, **kw)
        return model.generate(prefix.expand(count, -1), length, seed=seed, **kw)

    return sample


def ar_options(model, args, length: int, device):
    """(keyword arguments for the AR model's generation methods, prefix (1, P) or None); applies
    --threads and --weights to the fast engine."""
    from sashimi import fastgen

    fastgen.set_num_threads(parse_number(args.threads, int, "threads", low=1) if args.threads is not None else None)
    fastgen.set_weight_storage(args.weights or "float32")
    nucleus_p = parse_number(args.nucleus_p, float, "nucleus-p", low=0, high=1, low_open=True) \
        if args.nucleus_p is not None else 1.0
    from sashimi.sampling import MIN_TEMPERATURE

    temperature = parse_number(args.temperature, float, "temperature", low=MIN_TEMPERATURE) \
        if args.temperature is not None else 1.0
    top_k = parse_number(args.top_k, int, "top-k", low=1) if args.top_k is not None else None
    prefix = None
    if args.prefix is not None:
        from sashimi.audio import AudioError, audio_info, read_audio

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


def _diffwave_sampler(model, args, length: int):
    steps = args.steps
    if steps is not None and steps != "fast":
        steps = parse_number(steps, int, "steps", low=1)

    def sample(count: int, seed):
        return model.unconditional_generate(count, progress=not args.quiet, steps=steps, seed=seed, length=length)

    return sample


def _show_engine_messages(quiet: bool) -> None:
    """Let the library's one-time notes (which engine runs) reach stderr."""
    import logging

    logger = logging.getLogger("sashimi")
    if not quiet and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _write_all(outputs, paths: list[str], wavs, rate: int) -> None:
    """Write each waveform into its claimed ``.part`` file, then give it its name (never a
    half-written file under the final name; without -f never over a file that appeared meanwhile)."""
    from sashimi.audio import write_wav

    for path, wav in zip(paths, wavs):
        outputs.publish(path, functools.partial(write_wav, wav=wav, sample_rate=rate))

