"""FSDD benchmark: train a small autoregressive SaShiMi on a wall-clock budget, report test NLL.

Protocol (fixed, so numbers are comparable across versions of this library):

- Data: the Free Spoken Digit Dataset (8 kHz WAVs, resampled to 16 kHz). Takes 0-4 are the test
  set; takes 5-9 the validation set; takes 10-49 the training set (``sashimi split``).
- Model: ``SashimiAR`` with d_model 32, n_layers 2, l_max 4000; every other setting SC09's
  (pool [4, 4], expand 2, ff 2, GLU, d_state 64, S4 state lr 1e-3).
- Training: random crops of 4,000 samples, batch 8, AdamW lr 4e-3, plateau schedule, seed 1775,
  for ``--minutes`` of wall-clock time (20 by default; the budget covers the training loop, not
  set-up or evaluation). Validation every 1,000 steps on 64 validation files.
- Evaluation: NLL in bits per sample of the first 4,000 samples (16 kHz) of each test file, the
  model seeing a leading zero sample, padding of shorter files excluded; summed over samples and
  divided by their count. Reported for the first 64 test files in sorted order (the headline
  number) and for all 300 test files.

Usage::

    python benchmarks/fsdd_train.py /path/to/fsdd                  # train 20 min, then evaluate
    python benchmarks/fsdd_train.py /path/to/fsdd --minutes 1      # a smoke run
    python benchmarks/fsdd_train.py /path/to/fsdd --eval runs/fsdd-bench/ckpt_00001234.pt

Results are printed and written to ``OUT/results.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sashimi import load_model  # noqa: E402
from sashimi.data.datasets import ARCollate, CropDataset  # noqa: E402
from sashimi.data.split import fsdd_split, write_split  # noqa: E402
from sashimi.train.tasks import ar_metric  # noqa: E402
from sashimi.train import train  # noqa: E402
from sashimi.train.config import build_config  # noqa: E402

SAMPLE_RATE, LENGTH, HEADLINE_FILES = 16000, 4000, 64


def train_overrides(splits_dir: str, out: str, minutes: float) -> list[str]:
    return [f"train_csv={splits_dir}/fsdd-train.csv", f"valid_csv={splits_dir}/fsdd-valid.csv", f"checkpoint_path={out}",
            "model=ar", "model_cfg.d_model=32", "model_cfg.n_layers=2", f"model_cfg.l_max={LENGTH}",
            f"seq_len={LENGTH}", f"sample_rate={SAMPLE_RATE}", "batch_size=8", "start_lr=4e-3", "seed=1775",
            f"max_minutes={minutes}", "max_steps=1100000", "validation_interval=1000", "valid_max_files=64",
            "checkpoint_interval=2500", "stdout_interval=25"]


@torch.no_grad()
def nll_bits(model, files: list[str], batch_size: int = 8) -> dict:
    """Bits per sample over the first LENGTH samples of ``files`` (leading zero, padding excluded)."""
    model.eval()
    device = next(model.parameters()).device
    data = CropDataset(files, SAMPLE_RATE, LENGTH + 1, lead=1, random_crop=False)
    collate = ARCollate(model.config.mu_levels)
    total, count = 0.0, 0
    for start in range(0, len(files), batch_size):
        batch = collate([data[i] for i in range(start, min(start + batch_size, len(files)))])
        s, c = ar_metric(model, tuple(t.to(device) for t in batch), 0)
        total, count = total + float(s), count + int(c)
    return {"files": len(files), "samples": count, "nll_bits": total / count / math.log(2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fsdd", help="FSDD folder (the checkout or its recordings/ folder)")
    p.add_argument("--out", default="runs/fsdd-bench", help="run directory (default: runs/fsdd-bench)")
    p.add_argument("--minutes", type=float, default=20.0, help="training wall-clock budget (default: 20)")
    p.add_argument("--eval", metavar="CKPT", help="skip training; evaluate this checkpoint")
    p.add_argument("--headline-only", action="store_true", help="evaluate the first 64 test files only")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="extra training config overrides (e.g. device=cpu)")
    args = p.parse_intermixed_args(argv)

    splits = fsdd_split(args.fsdd, valid_takes=5)
    splits_dir = os.path.join(args.out, "splits")
    write_split(splits, splits_dir, "fsdd", force=True)
    summary = {}
    ckpt = args.eval
    if ckpt is None:
        t0 = time.time()
        summary = train(build_config(train_overrides(splits_dir, args.out, args.minutes) + args.overrides))
        summary = {"steps": summary["step"], "stopped": summary["stopped"], "train_loss": summary["loss"],
                   "valid_nll_bits": summary["valid"], "train_seconds": round(time.time() - t0, 1),
                   "checkpoint": summary["checkpoint"]}
        ckpt = summary["checkpoint"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(ckpt, map_location=device)
    test = sorted(splits["test"], key=os.path.basename)
    results = {"checkpoint": ckpt, **summary, "device": device,
               "test_first64": nll_bits(model, test[:HEADLINE_FILES])}
    if not args.headline_only:
        results["test_all"] = nll_bits(model, test)
    print(json.dumps(results, indent=2))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
