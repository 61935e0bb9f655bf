"""``sashimi nll``: negative log-likelihood of audio files under an autoregressive model.

    sashimi nll speech.wav more/ --model sashimi_ar_sc09

Prints one line per file, ``<bits per sample>\\t<path>``, then the mean over the files.
Directories are searched (not recursively) for audio files. Files at another sample rate are
resampled to the model's; multi-channel files are averaged to mono. Files up to the model's
``l_max`` are scored in one convolution pass; longer ones with the recurrent fast engine, so the
whole file is context (no windowing).
"""
from __future__ import annotations

import argparse
import math
import os

from sashimi.cli import CLIError
from sashimi.eval.likelihood import nats_per_sample
from sashimi.cli.common import add_model_arguments, load_cli_model, model_kind, one_line_errors, plain, resolve_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    one_line_errors(parser)
    parser.description, parser.formatter_class = plain(__doc__), argparse.RawDescriptionHelpFormatter
    parser.add_argument("inputs", nargs="+", metavar="PATH", help="audio files or directories")
    add_model_arguments(parser)


def _files(inputs: list[str]) -> list[str]:
    from sashimi.data.audio import AUDIO_EXTENSIONS

    files = []
    for path in inputs:
        if os.path.isdir(path):
            found = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(AUDIO_EXTENSIONS))
            if not found:
                raise CLIError(f"{path}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this directory")
            files += found
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise CLIError(f"{path}: no such file or directory")
    return files


def run(args: argparse.Namespace) -> int:
    files = _files(args.inputs)
    model = load_cli_model(args.model, resolve_device(args.device))
    if model_kind(model) != "ar":
        raise CLIError(f"nll needs an autoregressive model; {args.model} is a {type(model).__name__}")
    from sashimi.data.audio import AudioError, read_audio

    rate = int(model.config.sample_rate)
    results = []
    for path in files:
        try:
            wav, _ = read_audio(path, rate, mono=True, refuse_clipping=True)  # as model.nll refuses it
        except (AudioError, FileNotFoundError) as e:
            raise CLIError(str(e)) from e
        bits = nats_per_sample(model, wav) / math.log(2)
        results.append(bits)
        print(f"{bits:.4f}\t{path}", flush=True)
    if len(results) > 1:
        print(f"{sum(results) / len(results):.4f}\tmean over {len(results)} files")
    return 0
