"""``sashimi train-classifier``: train the digit classifier that ``sashimi eval`` scores with.

    sashimi train-classifier data/fsdd --out fsdd_digits.pt
    sashimi train-classifier data/speech_commands --out sc09_digits.pt --epochs 20

DATA is an FSDD checkout (or its recordings/ folder; test = takes 0-4, validation = takes 5-9,
training = takes 10-49) or a Speech Commands folder (SC09: the ten digit words, split by its
validation_list.txt / testing_list.txt). The model is a small CNN on the 1x32x32 log-mel image
(sashimi.eval.frontend), trained with random gain, placement in the second, noise and mu-law
quantisation; the epoch with the best validation accuracy is kept, and the test accuracy
(clean and perturbed) is printed and stored in the file. Use the file with
'sashimi eval --classifier FILE' or sashimi.eval.load_classifier(FILE). A JSON report (the
per-epoch history too) is written beside it (FILE.json).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from sashimi.cli import CLIError
from sashimi.cli.common import one_line_errors, parse_number, plain


def add_arguments(parser: argparse.ArgumentParser) -> None:
    one_line_errors(parser)
    parser.description, parser.formatter_class = plain(__doc__), argparse.RawDescriptionHelpFormatter
    parser.add_argument("data", metavar="DATA", help="FSDD or Speech Commands folder")
    parser.add_argument("--out", required=True, help="classifier file to write (.pt)")
    parser.add_argument("--epochs", default="30", help="passes over the training set (default: 30)")
    parser.add_argument("--batch-size", default="64", help="clips per step (default: 64)")
    parser.add_argument("--lr", default="3e-3", help="peak learning rate (default: 3e-3)")
    parser.add_argument("--channels", default="24,48,96", help="CNN stage widths (default: 24,48,96)")
    parser.add_argument("--seed", default="0", help="random seed (default: 0)")
    parser.add_argument("--threads", default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite --out")


def run(args: argparse.Namespace) -> int:
    epochs = parse_number(args.epochs, int, "epochs", low=1)
    batch = parse_number(args.batch_size, int, "batch-size", low=1)
    lr = parse_number(args.lr, float, "lr", low=0, low_open=True)
    seed = parse_number(args.seed, int, "seed", low=0)
    try:
        channels = tuple(int(c) for c in args.channels.split(","))
    except ValueError:
        channels = ()
    if not channels or min(channels) < 1:
        raise CLIError(f"--channels must be comma-separated positive integers, got {args.channels!r}")
    report_path = os.path.splitext(args.out)[0] + ".json"
    for path in (args.out, report_path):
        if os.path.exists(path) and not args.force:
            raise CLIError(f"{path} exists; use -f to overwrite")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise CLIError(f"--out: the folder of {args.out} does not exist")
    from sashimi.persistence.outputs import OutputFiles

    with OutputFiles([args.out, report_path], args.force) as outputs:  # claimed before the training
        return _train(args, outputs, report_path, epochs, batch, lr, seed, channels)


def _train(args, outputs, report_path: str, epochs: int, batch: int, lr: float, seed: int, channels) -> int:
    """Train, then publish the claimed classifier file and its report (:class:`sashimi.persistence.outputs.OutputFiles`)."""
    import torch

    from sashimi.eval.classifier import save_classifier
    from sashimi.eval.training import labelled_splits, train_classifier

    if args.threads is not None:
        torch.set_num_threads(parse_number(args.threads, int, "threads", low=1))
    try:
        labelled_splits(args.data)  # the folder's layout, checked before anything is read
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(f"DATA: {e}") from e
    classifier, report = train_classifier(args.data, epochs=epochs, batch_size=batch, lr=lr, channels=channels,
                                          seed=seed, log=lambda line: print(line, file=sys.stderr, flush=True),
                                          progress=True)
    digest = []
    outputs.publish(args.out, lambda part: digest.append(save_classifier(classifier, part, report["arch_config"])))
    sha = digest[0]
    report.update(file=os.path.basename(args.out), sha256=sha, size_bytes=os.path.getsize(args.out))
    outputs.publish(report_path, lambda part: _write_json(part, report))
    test = report["test_acc"]
    print(f"wrote {args.out} ({report['size_bytes'] / 1e6:.2f} MB, sha256 {sha[:12]}...): test accuracy clean "
          f"{test['clean']:.4f}, gain+shift {test['gain_shift']:.4f}; {report['train_seconds']:.0f} s of training")
    return 0


def _write_json(path: str, report: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
