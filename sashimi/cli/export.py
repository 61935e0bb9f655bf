"""``sashimi export``: a training checkpoint as a small inference file, named by its hash.

    sashimi export runs/fsdd_ar/ckpt_00004000.pt --out-dir . --name my_model --credit "my data, CC0"
    sashimi export runs/fsdd_ar/ckpt_0000{3000,3250,3500}.pt --out-dir . --name my_model   # averaged

Keeps the model's config and float32 weights and drops the optimiser and data-loader state (a
training checkpoint of the FSDD model is 4x larger). Several checkpoints of one run are averaged
(their floating-point weights: Polyak averaging, which smooths out the step-to-step noise of a
high learning rate). Records where the weights came from: the training step, the validation
metric, the training config (as YAML), each averaged file, and ``--credit``. The file is written
as ``<name>-<first 8 hex digits of its SHA-256>.pt`` (torch.hub's convention) and its full digest
printed, for a table of known digests. An existing file is never overwritten.
"""
from __future__ import annotations

import argparse
import os

from sashimi.cli import CLIError
from sashimi.cli.generate import one_line_errors, plain


def add_arguments(parser: argparse.ArgumentParser) -> None:
    one_line_errors(parser)
    parser.description, parser.formatter_class = plain(__doc__), argparse.RawDescriptionHelpFormatter
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                        help="a training checkpoint (any format load_model reads); several are averaged")
    parser.add_argument("--out-dir", required=True, help="folder to write the exported file into")
    parser.add_argument("--name", required=True, help="file name stem (letters, digits, '_', '-')")
    parser.add_argument("--credit", default="",
                        help="data credit and license, stored in the file ('fsdd': the Free Spoken Digit Dataset's)")


def run(args) -> int:
    from sashimi.pretrained import FSDD_CREDIT
    from sashimi.pretrained.export import export_model

    for path in args.checkpoints:
        if not os.path.isfile(path):
            raise CLIError(f"{path}: no such file")
    if not os.path.isdir(args.out_dir):
        raise CLIError(f"--out-dir {args.out_dir}: no such directory")
    try:
        path, digest = export_model(args.checkpoints, args.out_dir, args.name,
                                    credit=FSDD_CREDIT if args.credit == "fsdd" else args.credit)
    except (ValueError, FileExistsError) as e:
        raise CLIError(str(e)) from None
    print(f"wrote {path} ({os.path.getsize(path):,} bytes)")
    print(f"sha256 {digest}")
    return 0
