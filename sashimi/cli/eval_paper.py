"""The parts of ``sashimi eval`` that follow the SaShiMi authors' ``test_speech_commands.py``:
``--stft-padding``, ``--test-set``, ``--threshold`` and the authors' file order (see
:mod:`sashimi.eval.paper`)."""
from __future__ import annotations

import argparse
import os

from sashimi.cli import CLIError
from sashimi.cli.common import parse_number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The paper-protocol options, in their own group."""
    g = parser.add_argument_group("the paper's SC09 protocol (--classifier sc09_resnext)")
    g.add_argument("--stft-padding", default=None, choices=("reflect", "constant"),
                   help="front-end STFT padding: 'reflect' (librosa 0.8, what the paper's numbers used; default) or "
                        "'constant' (librosa 0.9)")
    g.add_argument("--test-set", default=None, metavar="DIR",
                   help="also score this real set against --reference (the authors' 'Test Set Scores' row)")
    g.add_argument("--threshold", action="store_true",
                   help="the authors' --threshold: SAMPLES named in increasing order of log-likelihood; a random "
                        "half tunes the likelihood window, the other half is scored in it")
    g.add_argument("--threshold-test-size", default=None, metavar="N",
                   help="with --threshold: clips in the test set the authors' script scored first (it sets the RNG "
                        "state of the split; default: the --test-set's size, else 2552, their SC09 test split)")


def check_arguments(args, opts: dict) -> None:
    """Cheap checks, before anything is read."""
    if args.threshold:
        if args.samples is None:
            raise CLIError("--threshold needs SAMPLES: a folder of samples named in increasing order of likelihood")
        if args.ar_filter is not None:
            raise CLIError("--threshold and --ar-filter are two likelihood filters; give one")
    if args.threshold_test_size is not None:
        if not args.threshold:
            raise CLIError("--threshold-test-size applies with --threshold")
        opts["threshold_test_size"] = parse_number(args.threshold_test_size, int, "threshold-test-size", low=1)
    if args.test_set is not None and not os.path.exists(args.test_set):
        raise CLIError(f"--test-set: no such folder or file: {args.test_set}")


def is_paper_protocol(classifier) -> bool:
    """Whether the classifier is the authors' (their file order and IS then apply)."""
    from sashimi.eval.classifier import PAPER_PROTOCOL

    return classifier.meta.get("protocol") == PAPER_PROTOCOL


def relist(source: str, files: list[str], flag: str, classifier, ordered: bool) -> list[str]:
    """A folder's files as the authors' script lists them (when ``ordered``), else ``files``."""
    if not ordered or not os.path.isdir(source):
        return files
    from sashimi.eval.paper import paper_file_list

    try:
        out = paper_file_list(source, classifier.classes)
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(f"{flag}: {e}") from e
    if len(out) < 2:
        raise CLIError(f"{flag}: {source} holds {len(out)} .wav file; FID needs at least 2")
    return out


def threshold(probs, feats, opts: dict, n_test_set: int | None, source: str):
    """Apply the authors' --threshold: (probs, feats) of the kept samples, the row's source, a summary."""
    from sashimi.eval.paper import SC09_TEST_SIZE, threshold_protocol

    n_test = opts.get("threshold_test_size") or n_test_set or SC09_TEST_SIZE
    if probs.shape[0] < 20:
        raise CLIError(f"--threshold needs at least 20 samples, got {probs.shape[0]}")
    r = threshold_protocol(probs, n_test=n_test)
    keep = r["keep"]
    lower, upper = r["thresholds"]
    summary = {"thresholds": [round(lower, 4), round(upper, 4)], "dev_is": r["dev_is"], "n_dev": r["n_dev"],
               "kept": int(len(keep)), "n_total": int(probs.shape[0]), "test_size_for_rng": int(n_test)}
    source += (f"; --threshold: window {lower:.2f}-{upper:.2f} of the held-out half, {len(keep)} of "
               f"{probs.shape[0]} kept (dev IS {r['dev_is']:.3f})")
    return probs[keep], feats[keep], source, summary
