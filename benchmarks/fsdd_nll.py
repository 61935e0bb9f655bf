"""Negative log-likelihood of an FSDD model on utterance windows, in bits per sample.

    python benchmarks/fsdd_nll.py MODEL FILES [--window 8000] [--max-start-ms 150] [--onset 0.1] [--peak 0.5]
        [--json out.json]

MODEL is a pretrained name or a checkpoint; FILES a folder or CSV of recordings (e.g. the test
split, takes 0-4). Each recording is placed in a one-second window of silence, in the middle (or,
with --max-start-ms M, M/2 ms in at most: the middle of where a model trained with
utterance_max_start_ms=M saw words start), and scored on every sample of the window after a
leading zero sample (the silence counts, as in training). The mean over the
windows is printed; ``--json`` also lists each file's.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sashimi import load_model  # noqa: E402
from sashimi.eval import utterance_nll_bits  # noqa: E402
from sashimi.data.datasets import list_audio_files  # noqa: E402


def windowed_nll(model, files: list[str], window: int, max_start: int | None = None, **placement) -> dict:
    """Bits per sample over utterance windows: ``{"bits_per_sample", "files", "window", ...}``; a
    class-conditional model is given each file's digit (its FSDD name, ``7_theo_12.wav``)."""
    labels = None
    if getattr(model, "classes", None) is not None:
        from sashimi.data.datasets import file_labels

        labels = file_labels(files[0], files, "fsdd")
    bits = utterance_nll_bits(model, files, window, max_start=max_start, labels=labels, **placement)
    return {"bits_per_sample": float(bits.mean()), "files": len(files), "window": window,
            "per_file_bits": [round(float(b), 5) for b in bits]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="pretrained name or checkpoint")
    parser.add_argument("files", help="folder or CSV of recordings")
    parser.add_argument("--window", type=int, default=None, help="window length in samples (default: 1 s)")
    parser.add_argument("--max-start-ms", type=float, default=None,
                        help="start each word at half of this many ms at most (a model trained with "
                             "utterance_max_start_ms; default: centred)")
    parser.add_argument("--onset", type=float, default=None,
                        help="a model trained with utterance_onset: cut each recording's lead-in the same way")
    parser.add_argument("--onset-margin-ms", type=float, default=0.0, help="with --onset (default: 0)")
    parser.add_argument("--peak", type=float, default=None,
                        help="a model trained with utterance_peak: scale each recording to this peak")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    model = load_model(args.model)
    window = args.window or model.config.sample_rate
    max_start = None if args.max_start_ms is None else round(args.max_start_ms * model.config.sample_rate / 1000)
    result = windowed_nll(model, list_audio_files(args.files), window, max_start, onset=args.onset,
                          onset_margin=round(args.onset_margin_ms * model.config.sample_rate / 1000), peak=args.peak)
    where = "centred" if max_start is None else f"early (word at most {max_start // 2} samples in)"
    print(f"{args.model}: {result['bits_per_sample']:.4f} bits per sample over {result['files']} {where} "
          f"{window}-sample windows")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(result, model=args.model, files_source=args.files), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
