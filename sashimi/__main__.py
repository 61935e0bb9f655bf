"""Command line: ``python -m sashimi <command> ...`` (also installed as ``sashimi``).

Each command lives in its own module under :mod:`sashimi.cli`, exposing
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only when used.

Exit status: 0 success; 2 a usage error (bad arguments, or an error the library raises on purpose:
:class:`sashimi.SashimiError`, printed as one line); 1 an operating-system error (printed as one
line) or a bug (printed with its traceback and a request to report it); 130 interrupted (SIGINT);
143 terminated (SIGTERM: cleaned up as after SIGINT).
"""
from __future__ import annotations

import argparse
import importlib
import contextlib
import os
import signal
import sys
import threading
import traceback

from sashimi.cli import ISSUE_TRACKER, CLIError, Terminated, first_line
from sashimi.errors import SashimiError

# command -> (module, one-line help)
COMMANDS = {
    "generate": ("sashimi.cli.generate", "generate audio with a pretrained or saved model"),
    "nll": ("sashimi.cli.nll", "negative log-likelihood (bits per sample) of WAV files"),
    "train": ("sashimi.cli.train", "train a model (key=value config overrides)"),
    "split": ("sashimi.cli.split", "write train/valid/test CSV splits for a dataset"),
    "bench": ("sashimi.cli.bench", "benchmarks: 'bench generate', 'bench train'"),
    "eval": ("sashimi.cli.eval", "score audio with a digit classifier: FID, IS, mIS, AM"),
    "train-classifier": ("sashimi.cli.train_classifier", "train the digit classifier 'sashimi eval' uses"),
    "export": ("sashimi.cli.export", "a training checkpoint as a small inference file named by its hash"),
    "push": ("sashimi.cli.push", "upload a model folder to the Hugging Face Hub (--dry-run: show what would be)"),
    "doctor": ("sashimi.cli.doctor", "what this machine will use (devices, kernels, compiler, caches) and why"),
}


def _quiet_openmp() -> None:
    """OpenMP threads that wait at a barrier sleep instead of spinning, unless the variable is set.

    Measured on 2 cores: a training step takes the same time on an idle machine (2.84-2.91 s vs
    2.83-2.89 s) and a third of it on a busy one (5.6 s vs 17.7 s), where spinning threads steal
    the cores the others need. It only acts before PyTorch loads OpenMP, so the command line sets
    it for its own process, first thing; importing the library changes nothing.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@contextlib.contextmanager
def _sigterm_cleans_up():
    """While a command runs, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt), so that it
    cleans up as after Ctrl-C instead of dying with its ``.part`` files and folders left behind.
    Only where SIGTERM has its default action (an ignored or handled one is left as it is) and in
    the main thread (the only one that receives signals)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def terminate(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of ``sashimi <name>``: the one the command line uses, and the docs' reference is made from.

    Args:
        name: a key of :data:`COMMANDS`.

    Returns:
        the command's parser (its module imported on the way).
    """
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"sashimi {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    _quiet_openmp()
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="sashimi", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        parser.print_usage(sys.stderr)
        print(f"sashimi: error: unknown command {argv[0]!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    name = argv[0]
    if any("\0" in a for a in argv):  # no shell passes one; a caller of main() could, and paths cannot hold it
        print(f"sashimi {name}: error: an argument contains a NUL character", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    args = command_parser(name).parse_args(argv[1:])
    try:
        with _sigterm_cleans_up():
            return int(module.run(args) or 0)
    except (CLIError, SashimiError) as e:  # the user's to fix: one line
        print(f"sashimi {name}: error: {first_line(e)}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"sashimi {name}: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"sashimi {name}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the system's (a full disk, a file removed meanwhile): not a bug either
        print(f"sashimi {name}: error: {first_line(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # anything else is a bug in sashimi: show it as one
        traceback.print_exc()
        print(f"sashimi {name}: internal error ({type(e).__name__}): this is a bug in sashimi, not a mistake in "
              f"your command. Please report it, with the command line and the traceback above, at {ISSUE_TRACKER}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
