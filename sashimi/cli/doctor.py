"""``sashimi doctor``: one screen that says what this machine will use and why.

Versions, the PyTorch build, GPUs, the default device and training precision, the Cauchy kernel
backend that ``auto`` picks (and why each other one is not used), the C++ compiler and the fast
CPU generation engine, thread settings, cache folders and downloads, and the bundled files with
their SHA-256 checks. The first run compiles the two small C++ libraries (a few seconds each);
later runs load them from the cache. Exit status 1 when a bundled file is missing or damaged.
"""
from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description, parser.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    parser.add_argument("--no-build", action="store_true",
                        help="do not build or load the C++ libraries (report what is found only)")


def run(args: argparse.Namespace) -> int:
    from sashimi.doctor import format_report, gather

    report = gather(build=not args.no_build, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 1 if report["problems"] else 0
