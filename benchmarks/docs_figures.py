"""The documentation's pictures, made from real runs: one command regenerates them all.

    python benchmarks/docs_figures.py                 # everything (about 3 minutes on 2 busy CPU cores)
    python benchmarks/docs_figures.py --skip-training # reuse docs/images/training_log.txt

Writes into ``docs/images/`` (needs matplotlib: ``pip install -e ".[docs]"``):

- ``architecture.png``: the pooled SaShiMi backbone, drawn from the bundled model's own config;
- ``spectrogram_sashimi_ar_fsdd.png``: what the bundled model makes, one sample per digit it is
  asked for and two without a label (seeded, so the picture is reproducible);
- ``spectrogram_<model>.png`` for ``--model NAME_OR_PATH`` (repeatable): the same for any model
  ``sashimi.load_model`` accepts, e.g. ``sashimi_ar_sc09`` or ``sashimi_diffwave_sc09`` once downloaded;
- ``training_curve.png`` and the log it is drawn from, ``training_log.txt``: a short real training
  run (``python train.py``, a tiny model on the 30 FSDD clips in ``tests/fixtures/fsdd``: 20 to train
  on, 10 to validate on) whose stdout lines are parsed back.

PNGs are written with a reduced palette, so each stays at tens of kilobytes.
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from fsdd_spectrograms import spectrogram  # noqa: E402  (the one STFT the project's pictures use)

OUT = os.path.join(ROOT, "docs", "images")
# The short run behind training_curve.png: small enough for a few minutes of one CPU core.
TRAIN_ARGS = ["model=ar", "model_cfg.d_model=16", "model_cfg.n_layers=2", "model_cfg.pool=[4,4]",
              "model_cfg.l_max=8000", "sample_rate=8000", "seq_len=8000", "utterance_window=true",
              "utterance_max_start_ms=150", "batch_size=4", "start_lr=4e-3", "seed=1775", "max_steps=300",
              "stdout_interval=10", "validation_interval=25", "checkpoint_interval=1000", "keep_checkpoints=1",
              "progress=false", "tensorboard=false"]


def save_small(fig, path: str, colors: int = 96) -> None:
    """Save a figure as a palette PNG (tens of kB instead of hundreds)."""
    from PIL import Image

    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=80)
    with Image.open(tmp) as im:
        im.convert("RGB").quantize(colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    os.remove(tmp)
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) / 1000:.0f} kB)")


def architecture(plt) -> None:
    """Boxes and arrows for the causal (AR) backbone of the bundled model, from its config."""
    from sashimi import load_model

    cfg = load_model("sashimi_ar_fsdd").config
    rates, widths = [cfg.sample_rate], [cfg.d_model]
    for p in cfg.pool:
        rates.append(rates[-1] // p)
        widths.append(widths[-1] * cfg.expand)
    tiers = len(rates)
    fig, ax = plt.subplots(figsize=(8, 3.4))
    ax.set_xlim(0, 10)
    ax.set_ylim(0.5, tiers + 1.2)
    ax.axis("off")

    def box(x, y, text, color):
        ax.text(x, y, text, ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round,pad=0.35", facecolor=color, edgecolor="#555555"))

    def arrow(x0, y0, x1, y1, style="-|>", color="#333333"):
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=dict(arrowstyle=style, color=color, lw=1.2))

    top = tiers  # y of the outer tier
    box(1.2, top + 0.8, "mu-law tokens (B, L)\nEmbedding(256, %d)" % cfg.d_model, "#e8eef7")
    box(8.8, top + 0.8, "Linear(%d, 256)\nnext-token logits (B, L, 256)" % cfg.d_model, "#e8eef7")
    blocks = f"{cfg.n_layers} x (S4 block, FF block)"
    for t in range(tiers):
        y = top - t
        label = f"tier {t}: {rates[t]:,d} Hz, {widths[t]} channels"
        if t < tiers - 1:
            box(1.2, y, f"{label}\ndown pool x{cfg.pool[t]}", "#f7efe3")
            arrow(1.2, y - 0.3, 1.2, y - 0.7)
            box(8.8, y, f"{blocks}\n{label}", "#e6f2e6")
            arrow(8.8, y - 0.7, 8.8, y - 0.3)  # up pool (shifted one step: causal)
            ax.text(9.05, y - 0.5, f"up pool x{cfg.pool[t]}\n(shifted: causal)", fontsize=7, va="center")
            arrow(2.4, y, 7.4, y, style="-|>", color="#999999")
            ax.text(4.9, y + 0.12, "skip (added)", fontsize=7, ha="center", color="#777777")
        else:
            box(5.0, y, f"centre: {blocks}\n{label}", "#e6f2e6")
            arrow(1.2, y + 0.3, 3.3, y)
            arrow(6.7, y, 8.8, y + 0.3)
    arrow(1.2, top + 0.5, 1.2, top + 0.3)
    arrow(8.8, top + 0.3, 8.8, top + 0.5)
    ax.set_title(f"SaShiMi, autoregressive (the bundled sashimi_ar_fsdd: d_model {cfg.d_model}, pool {cfg.pool}, "
                 f"d_state {cfg.d_state})", fontsize=9)
    save_small(fig, os.path.join(OUT, "architecture.png"), colors=32)
    plt.close(fig)


def spectrograms(plt, name: str, seed: int) -> None:
    """One picture of a model's samples: one per class when it has classes, plus unconditional ones."""
    import torch

    from sashimi import load_model

    model = load_model(name, map_location="cpu").eval()
    rate = model.config.sample_rate
    classes = list(getattr(model, "classes", None) or [])
    panels = []
    if classes:
        wavs = model.conditional_generate(list(range(len(classes))), seed=seed, progress=False)
        panels += [(f"asked for '{c}'", w) for c, w in zip(classes, wavs)]
    n_free = 2 if classes else 4
    kwargs = {"seed": seed, "progress": False}
    if "diffwave" in type(model).__name__.lower():
        kwargs["steps"] = "fast"
    with torch.no_grad():
        free = model.unconditional_generate(n_free, **kwargs)
    panels += [(f"no label #{i}" if classes else f"sample #{i}", w) for i, w in enumerate(free)]
    cols = 4
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 1.55 * rows), squeeze=False, sharex=True, sharey=True)
    for ax, panel in zip(axes.flat, panels + [None] * (rows * cols - len(panels))):
        if panel is None:
            ax.axis("off")
            continue
        title, wav = panel
        spec = spectrogram(wav.numpy(), rate)
        ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=spec.max() - 80, vmax=spec.max(),
                  extent=(0, len(wav) / rate, 0, rate / 2000))
        ax.set_title(title, fontsize=7, pad=2)
        ax.tick_params(labelsize=6)
    for ax in axes[:, 0]:
        ax.set_ylabel("kHz", fontsize=6)
    for ax in axes[-1, :]:
        ax.set_xlabel("s", fontsize=6)
    fig.suptitle(f"{name}: generated, seed {seed} (log power, 80 dB range)", fontsize=8)
    fig.tight_layout(pad=0.4)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(name.rstrip("/")))
    save_small(fig, os.path.join(OUT, f"spectrogram_{safe}.png"), colors=32)
    plt.close(fig)


def run_training(data: str, log_path: str) -> None:
    """The short real run: writes its stdout to ``log_path``."""
    wavs = sorted(f for f in os.listdir(data) if f.endswith(".wav"))
    by_digit: dict[str, list[str]] = {}
    for f in wavs:
        by_digit.setdefault(f.split("_")[0], []).append(f)
    valid = {files[-1] for files in by_digit.values()}  # one clip of each digit
    with tempfile.TemporaryDirectory(prefix="sashimi-docs-run-") as tmp:
        for split, names in (("train", [f for f in wavs if f not in valid]), ("valid", sorted(valid))):
            with open(os.path.join(tmp, f"{split}.csv"), "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["path"])
                w.writerows([os.path.join(os.path.abspath(data), f)] for f in names)
        cmd = [sys.executable, os.path.join(ROOT, "train.py"), f"train_csv={tmp}/train.csv",
               f"valid_csv={tmp}/valid.csv", f"checkpoint_path={tmp}/run/", *TRAIN_ARGS]
        print("running:", " ".join(["python train.py", *cmd[2:]]).replace(tmp, "$TMP"), flush=True)
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.stderr.write(out.stdout + out.stderr)
            raise SystemExit(f"training failed (exit status {out.returncode})")
    header = ("# python train.py " + " ".join(TRAIN_ARGS)
              + f"\n# data: {os.path.relpath(os.path.abspath(data), ROOT)}: {len(wavs) - len(valid)} clips to train on, "
              f"{len(valid)} to validate on\n")
    with open(log_path, "w") as fh:
        fh.write(header + out.stdout.replace(tmp, "$TMP"))
    print(f"wrote {os.path.relpath(log_path, ROOT)}")


def parse_log(text: str) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, mean training loss in nats) and (step, validation bits per sample) from train.py's stdout."""
    train = [(int(s.replace(",", "")), float(m)) for s, m in
             re.findall(r"^step ([\d,]+) \| loss [\d.]+ \(mean ([\d.]+)\)", text, re.M)]
    valid = [(int(s.replace(",", "")), float(v)) for s, v in
             re.findall(r"^validation at step ([\d,]+): nll_bits ([\d.]+)", text, re.M)]
    return train, valid


def training_curve(plt, log_path: str) -> None:
    with open(log_path) as fh:
        train, valid = parse_log(fh.read())
    if not train:
        raise SystemExit(f"{log_path}: no 'step N | loss' lines")
    fig, ax = plt.subplots(figsize=(7, 3.4))
    steps, loss = zip(*train)
    ax.plot(steps, np.array(loss) / np.log(2), label="training loss (mean over 10 steps)", color="#1f77b4")
    if valid:
        vs, vb = zip(*valid)
        ax.plot(vs, vb, "o-", label="validation NLL", color="#d62728", ms=3)
    ax.set_xlabel("step (batch 4 x 8,000 samples)")
    ax.set_ylabel("bits per sample")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("A short real run: d_model 16, 2 layers per tier, 20 FSDD clips (training_log.txt)", fontsize=9)
    fig.tight_layout()
    save_small(fig, os.path.join(OUT, "training_curve.png"), colors=32)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], metavar="NAME_OR_PATH",
                        help="also draw this model's samples (repeatable; the bundled model is always drawn)")
    parser.add_argument("--seed", type=int, default=2026, help="sampling seed (default: 2026)")
    parser.add_argument("--data", default=os.path.join(ROOT, "tests", "fixtures", "fsdd"),
                        help="FSDD-named WAVs for the training run (default: tests/fixtures/fsdd)")
    parser.add_argument("--skip-training", action="store_true", help="draw the curve from the existing log")
    args = parser.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        parser.error('this script needs matplotlib: pip install -e ".[docs]"')
    os.makedirs(OUT, exist_ok=True)
    architecture(plt)
    for name in ["sashimi_ar_fsdd", *args.model]:
        spectrograms(plt, name, args.seed)
    log_path = os.path.join(OUT, "training_log.txt")
    if not args.skip_training:
        run_training(args.data, log_path)
    training_curve(plt, log_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
