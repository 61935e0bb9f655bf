"""``sashimi split``: write train/valid/test CSV files for Speech Commands (SC09) or FSDD."""
from __future__ import annotations

import argparse

from sashimi.cli import CLIError


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "y"):
        return True
    if value in ("false", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Write {prefix}-train.csv, {prefix}-valid.csv and {prefix}-test.csv (a 'path' column each).\n"
        "Speech Commands: the dataset's validation_list.txt / testing_list.txt decide; --sc09_only keeps\n"
        "the ten digit words (prefix sc09, else speechcommands). FSDD: takes 0-4 are the test set,\n"
        "the next --valid_takes takes the validation set, the rest training (prefix fsdd).")
    parser.add_argument("--root_path", "--data", required=True, metavar="DIR", help="dataset folder")
    parser.add_argument("--output_path", default="splits", metavar="DIR", help="where the CSVs go (default: splits)")
    parser.add_argument("--dataset", choices=("auto", "speechcommands", "fsdd"), default="auto",
                        help="dataset layout (default: detected)")
    # nargs='?' keeps the seed's spelling working: `--sc09_only True` as well as a bare `--sc09_only`.
    parser.add_argument("--sc09_only", nargs="?", const=True, default=False, type=_parse_bool, metavar="BOOL",
                        help="Speech Commands: keep only zero..nine (a bare flag or True/False)")
    parser.add_argument("--valid_takes", type=int, default=5, help="FSDD: takes 5..5+N-1 form the validation set")
    parser.add_argument("--prefix", help="CSV name prefix (default: sc09, speechcommands or fsdd)")
    parser.add_argument("--relative", action="store_true", help="store paths relative to the output folder")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite existing CSV files")


def run(args: argparse.Namespace) -> int:
    from sashimi.data import split

    try:
        layout = split.detect_layout(args.root_path) if args.dataset == "auto" else args.dataset
        if layout == "fsdd":
            splits, prefix = split.fsdd_split(args.root_path, args.valid_takes), "fsdd"
        else:
            splits = split.speech_commands_split(args.root_path, args.sc09_only)
            prefix = "sc09" if args.sc09_only else "speechcommands"
        written = split.write_split(splits, args.output_path, args.prefix or prefix, relative=args.relative,
                                    force=args.force)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        raise CLIError(str(e)) from e
    for name, path in written.items():
        print(f"{path}: {len(splits[name]):,d} files")
    return 0
