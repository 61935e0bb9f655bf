"""Train a SaShiMi model: ``python train.py key=value ...`` (same as ``python -m sashimi train``).

Also the entry point for several processes: ``torchrun --nproc_per_node=N train.py key=value ...``.
Run ``python train.py --help`` for every config key, its type and default.
"""
import sys

from sashimi.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
