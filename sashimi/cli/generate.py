"""``sashimi generate``: sample audio from a pretrained or saved model into 16-bit WAV files.

    sashimi generate --n 4 --out samples/             # the bundled FSDD model: offline, 1 s at 8 kHz
    sashimi generate --model sashimi_ar_sc09 --n 4 --seconds 1.0 --out samples/
    sashimi generate --model my_model.pt --n 16 --batch-size 16 --top-k 100 --seed 0 --out runs/a
    sashimi generate --model sashimi_ar_sc09 --prefix prompt.wav --seconds 2 --out continued/
    sashimi generate --model sashimi_diffwave_sc09 --steps fast --n 8 --out diffwave/
    sashimi generate --model my_cond_diffwave.pt --label 7 --guidance 2 --steps 50 --out sevens/
    sashimi generate --label 7 --best-of 4 --out sevens/    # reranked by the bundled digit classifier

``--model`` is a pretrained name from :mod:`sashimi.pretrained`, a checkpoint path, a model folder, a URL
or ``hf://owner/name[@revision]`` (a model folder on the Hugging Face Hub). Files are
named ``sample_000.wav``, ... in ``--out``; existing files are never overwritten without ``-f``.
Each file is claimed before the model is loaded (``<file>.part``, created exclusively), so two runs
never write the same file, and it gets its name only when generation succeeded.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

from sashimi.cli import CLIError
from sashimi.cli.common import (AR_ONLY, DIFFWAVE_ONLY, add_model_arguments, ar_options, check_sizes, load_cli_model,
                                model_kind, one_line_errors, parse_labels, parse_number, plain, resolve_device,
                                show_engine_messages, with_output_dir, write_wavs)


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
    ar.add_argument("--nucleus-p", default=None, help="nucleus (top-p) mass in (0, 1] (default: the model's own, else 1.0)")
    ar.add_argument("--temperature", default=None, help="softmax temperature > 0 (default: the model's own, else 1.0)")
    ar.add_argument("--top-k", default=None, help="sample among the k most likely values (0: all; default: the model's "
                    "own, else all)")
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
    cond = parser.add_argument_group("class-conditional models (autoregressive or diffusion)")
    cond.add_argument("--label", default=None, metavar="CLASS",
                      help="the class to say, by name or index (the bundled model: a digit 0-9); a comma-separated "
                           "list is cycled over the samples (default: no label)")
    cond.add_argument("--guidance", default=None,
                      help="with --label: classifier-free guidance weight > 0; above 1 the class is said more "
                           "clearly, at twice the work (default: 1.0, the conditional distribution)")
    cond.add_argument("--best-of", default=None, metavar="K",
                      help="with --label: reranking: draw K candidates per sample and keep the one the bundled FSDD "
                           "digit classifier hears as the requested class with the highest probability (K times "
                           "the work; the model's own accuracy is measured without it) (default: 1)")
    dw = parser.add_argument_group("diffusion models")
    dw.add_argument("--steps", default=None, help="'fast' (6 steps), an integer, or all T steps (default)")


# ---- parsing helpers ------------------------------------------------------------------------


# ---- the command ----------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    if args.stream is not None and args.best_of is not None:
        raise CLIError("--best-of does not combine with --stream (it picks among finished samples)")
    if args.stream is not None:  # one file written while generating (sashimi/cli/stream.py): no --out
        from sashimi.cli.stream import run_stream

        return run_stream(args)
    return _run_to_files(args)


@with_output_dir
def _run_to_files(args: argparse.Namespace) -> int:
    n = parse_number(args.n if args.n is not None else "4", int, "n", low=1)
    seconds = parse_number(args.seconds, float, "seconds", low=0, low_open=True)
    batch = parse_number(args.batch_size, int, "batch-size", low=1) if args.batch_size is not None else min(n, 16)
    best_of = parse_number(args.best_of, int, "best-of", low=1) if args.best_of is not None else 1
    if args.best_of is not None and args.label is None:
        raise CLIError("--best-of needs --label (it keeps the candidate heard most surely as the requested class)")
    batches = math.ceil(n / batch)
    # batch j, candidate r uses seed + j + r * batches (r = 0: the samples without --best-of), and
    # torch's seeds end at 2**64 - 1
    seed = parse_number(args.seed, int, "seed", low=0, high=2**64 - batches * best_of) \
        if args.seed is not None else None
    if not args.name or os.sep in args.name or (os.altsep and os.altsep in args.name):
        raise CLIError(f"--name must be a plain file name stem, got {args.name!r}")
    width = max(3, len(str(n - 1)))
    paths = [os.path.join(args.out, f"{args.name}_{i:0{width}d}.wav") for i in range(n)]
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not args.force:
        raise CLIError(f"{existing[0]} exists ({len(existing)} of {n} files); use -f to overwrite")
    from sashimi.persistence.outputs import OutputFiles

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
    cycle = parse_labels(model, args.label)
    guidance = parse_number(args.guidance, float, "guidance", low=0, low_open=True) \
        if args.guidance is not None else 1.0  # "" is refused, not taken as the default
    if args.guidance is not None and cycle is None:
        raise CLIError("--guidance needs --label (it mixes the labelled and the unlabelled distributions)")
    sample = _ar_sampler(model, args, length, device, guidance) if kind == "ar" else \
        _diffwave_sampler(model, args, length, guidance)
    rerank = _reranker(model, rate, device) if args.best_of is not None else None

    import torch

    show_engine_messages(args.quiet)
    setup = _prepare_engine(model, kind, args.engine, batch, guidance)  # timed apart from the sampling rate
    wavs, probs, start = [], [], time.perf_counter()
    for j, first in enumerate(range(0, n, batch)):
        count = min(batch, n - first)
        labels = None if cycle is None else [cycle[(first + i) % len(cycle)] for i in range(count)]
        # the library's own errors (SashimiError) reach the user as one line; anything else is a bug
        draws = [sample(count, None if seed is None else seed + j + r * batches, labels).float().cpu()
                 for r in range(best_of)]
        if rerank is None:
            wavs.append(draws[0])
            continue
        wav, prob = rerank(torch.stack(draws, 1), labels)
        wavs.append(wav)
        probs.append(prob)
    wavs = torch.cat(wavs)
    elapsed = time.perf_counter() - start
    write_wavs(outputs, paths, wavs, rate)
    if not args.quiet:
        print(f"wrote {n} file(s) of {length / rate:.3g} s at {rate} Hz to {args.out} "
              f"({n * length * best_of / elapsed:,.0f} samples/s after {setup:.1f} s of set-up)", file=sys.stderr)
        if probs:
            print(f"best of {best_of}: the classifier gives the requested class a mean probability of "
                  f"{float(torch.cat(probs).mean()):.3f} in the kept samples (reranked, not the model's own accuracy)",
                  file=sys.stderr)
    note = silent_note(wavs, model.sampling_options(*_sampling_args(args)) if kind == "ar" else None)
    if note:
        print(note, file=sys.stderr)  # even with -q: silent files are a result the user must know of
    return 0


#: A sample whose RMS over its whole length stays below this is silent (inaudible).
SILENT_RMS = 1e-3


def silent_note(wavs, sampling=None) -> str | None:
    """One line saying how many of the (N, L) ``wavs`` stayed silent for their whole length, and
    what would help (None when none did). ``sampling``: the AR model's SamplingOptions used."""
    silent = int((wavs.float().pow(2).mean(-1).sqrt() < SILENT_RMS).sum())
    if not silent:
        return None
    hint = "a longer --seconds, or another --seed"
    if sampling is not None and (sampling.nucleus_p < 1 or sampling.top_k is not None or sampling.temperature < 1):
        hint = ("sampling more of the distribution (--nucleus-p 1 --top-k 0 --temperature 1): truncated sampling "
                "cuts away the rare event of starting a word")
    return (f"note: {silent} of {len(wavs)} sample(s) stayed silent for their whole length (RMS < {SILENT_RMS:g}); "
            f"{hint} may help")


def _sampling_args(args) -> tuple:
    """(nucleus_p, temperature, top_k) as given on the command line (None: the model's default)."""
    def number(value, kind):
        return None if value is None else kind(value)

    return number(args.nucleus_p, float), number(args.temperature, float), number(args.top_k, int)


def _reranker(model, rate: int, device):
    """``(candidates (N, K, L), labels) -> (kept (N, L), prob (N,))`` with the bundled FSDD digit
    classifier; refused for a model whose classes it does not know."""
    from sashimi.eval import best_of, load_classifier, match_classes

    classifier = load_classifier("fsdd", device=device)
    try:
        index = match_classes(model.classes, classifier.classes)
    except ValueError as e:
        raise CLIError(f"--best-of reranks with the bundled FSDD digit classifier, but {e}") from None

    def rerank(candidates, labels):
        kept, prob, _ = best_of(candidates, labels, classifier, index, rate)
        return kept, prob

    return rerank


def _prepare_engine(model, kind: str, engine: str | None, batch: int, guidance: float = 1.0) -> float:
    """Set up generation before it is timed (building the fast engine, for the rows the request
    runs: 2 ``batch`` when guided; its plan, and the C++ step compiled on first use; the eager
    loop's recurrence), so that the samples/s printed measure sampling alone. Returns the seconds
    it took."""
    if kind != "ar":
        return 0.0
    from sashimi import fastgen

    start = time.perf_counter()
    if fastgen.resolve_engine(model, engine or "auto") == "fast":
        fastgen.get_engine(model, fastgen.engine_rows(batch, guidance))  # cached: the generation calls reuse it
    else:
        model.setup_rnn("diagonal")  # the eager loop's default; cached while the weights are unchanged
    return time.perf_counter() - start


def _ar_sampler(model, args, length: int, device, guidance: float):
    """``(count, seed, labels or None) -> (count, length)`` waveforms from an autoregressive model."""
    kw, prefix = ar_options(model, args, length, device)
    if args.guidance is not None and prefix is not None:
        raise CLIError("--guidance does not combine with --prefix")

    def sample(count: int, seed, labels):
        if prefix is not None:
            return model.generate(prefix.expand(count, -1), length, seed=seed, labels=labels, **kw)
        if labels is not None:
            return model.conditional_generate(labels, length=length, seed=seed, guidance=guidance, **kw)
        return model.unconditional_generate(count, length=length, seed=seed, **kw)

    return sample


def _diffwave_sampler(model, args, length: int, guidance: float):
    """``(count, seed, labels or None) -> (count, length)`` waveforms from a diffusion model."""
    steps = args.steps
    if steps is not None and steps != "fast":
        steps = parse_number(steps, int, "steps", low=1)

    def sample(count: int, seed, labels):
        kw = dict(progress=not args.quiet, steps=steps, seed=seed, length=length)
        if labels is None:
            return model.unconditional_generate(count, **kw)
        return model.conditional_generate(labels, guidance=guidance, **kw)

    return sample
