"""Write train/valid/test CSV splits: ``python split_data.py --root_path DIR [--sc09_only]``.

Same as ``python -m sashimi split``; ``--help`` lists the options.
"""
import sys

from sashimi.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["split", *sys.argv[1:]]))
