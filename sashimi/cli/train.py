"""``sashimi train key=value ...``: train a model (also ``python train.py ...``, ``torchrun train.py ...``)."""
from __future__ import annotations

import argparse
import signal

from sashimi.cli import CLIError
from sashimi.errors import SashimiError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sashimi.train.config import help_text

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Train a SaShiMi model. Defaults are the SC09 recipe; override any key with key=value, e.g.\n"
        "  train.py train_csv=splits/sc09-train.csv valid_csv=splits/sc09-valid.csv checkpoint_path=runs/run1/\n"
        "Several GPUs / nodes: torchrun --nproc_per_node=4 train.py ...  "
        "Resume: resume_checkpoint=runs/run1/ckpt_00010000.pt (or 'last').")
    parser.epilog = help_text()
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (keys below)")
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of config keys (command-line keys win)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")


def run(args: argparse.Namespace) -> int:
    from sashimi.train import launch
    from sashimi.train.config import build_config, config_to_yaml

    try:
        cfg = build_config(args.overrides, args.config)
        if args.print_config:
            print(config_to_yaml(cfg), end="")
            return 0
        summary = launch(cfg)
    # the library's own errors (ConfigError, AudioError, CheckpointError, InputError: e.g. an empty CSV),
    # also when a DataLoader worker re-raises them; anything else is a bug, shown as one (sashimi/__main__.py)
    except (FileNotFoundError, FileExistsError, SashimiError) as e:
        raise CLIError(_message(e)) from e
    if summary is not None and summary["stopped"] == "signal":  # a stopped run says so: 128 + the signal
        return 128 + int(summary.get("signal") or signal.SIGINT)
    return 0


def _message(e: Exception) -> str:
    """The error's own message; for an error re-raised from a DataLoader worker (whose message is
    the worker's whole traceback), its last line without the exception type."""
    text = str(e).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = (last.split(": ", 1)[1] if ": " in last else last) + " (in a DataLoader worker)"
    return text
