"""Accuracy-as-asked of a class-conditional FSDD model, per checkpoint: the curve behind the model card.

    python benchmarks/fsdd_cond_curve.py runs/fsdd_ar_v4/ckpt_*.pt --reference splits/fsdd-valid.csv \
        --per-class 20 --json curve.json [--plot curve.png] [--nucleus-p 0.95] [--temperature 0.9] [--unconditional]

For each model (a checkpoint, model folder or pretrained name) it draws ``--per-class`` samples
of every class (seed ``--seed``) and, with the bundled FSDD classifier, reports how often the
requested digit is heard (overall and for the worst class), the FID and IS of those samples against
``--reference`` (the validation split: choices are made there, never on the test split), and
the fraction of silent samples (RMS < 1e-3: a model that never starts speaking). Results are
appended to ``--json`` as they come, so a long sweep can be stopped and read at any point;
models already in the file are skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from sashimi import load_model  # noqa: E402
from sashimi.cli.generate import SILENT_RMS  # noqa: E402  (the threshold `sashimi generate` warns at)
from sashimi.data.audio import read_audio  # noqa: E402
from sashimi.data.datasets import list_audio_files  # noqa: E402
from sashimi.eval import (frechet_distance, inception_score, label_accuracy, load_classifier,  # noqa: E402
                          match_classes)



def step_of(name: str) -> int | None:
    """The training step in a checkpoint's file name (``ckpt_00001200.pt`` -> 1200), else None."""
    m = re.search(r"ckpt_(\d+)", os.path.basename(name))
    return int(m.group(1)) if m else None


def reference_features(classifier, files: list[str], rate: int) -> torch.Tensor:
    """The classifier's features (N, D) of real recordings, each in one second at ``rate``."""
    wavs = torch.zeros(len(files), rate)
    for i, path in enumerate(files):
        wav = read_audio(path, rate)[0][:rate]
        wavs[i, :wav.numel()] = wav
    return classifier.predict(wavs, rate)[1]


def score_model(source: str, classifier, ref_feats, per_class: int, seed: int, sampling: dict,
                unconditional: bool = False) -> dict:
    """Samples of every class from ``source``, scored: accuracy-as-asked, FID, IS, silent fraction;
    with ``unconditional`` also as many samples without a label (FID, IS, silent fraction and the
    rarest digit's share)."""
    model = load_model(source).eval()
    if not model.classes:
        raise SystemExit(f"{source}: not a class-conditional model")
    rate = int(model.config.sample_rate)
    requested = torch.arange(len(model.classes)).repeat_interleave(per_class)
    wavs = model.conditional_generate(requested, progress=False, seed=seed, **sampling)
    probs, feats = classifier.predict(wavs, rate)
    report = label_accuracy(probs, requested, match_classes(model.classes, classifier.classes),
                            len(classifier.classes))
    result = {"model": source, "step": step_of(source), "n": len(requested), "accuracy": report["accuracy"],
              "worst_class": min(report["per_class"]), "per_class": report["per_class"],
              "fid": frechet_distance(feats, ref_feats), "is": inception_score(probs),
              "silent": silent_fraction(wavs), "sampling": sampling, "seed": seed}
    if unconditional:
        wavs = model.unconditional_generate(len(requested), progress=False, seed=seed + 1, **sampling)
        probs, feats = classifier.predict(wavs, rate)
        counts = torch.bincount(probs.argmax(1), minlength=len(classifier.classes))
        result["unconditional"] = {"n": len(wavs), "fid": frechet_distance(feats, ref_feats),
                                   "is": inception_score(probs), "silent": silent_fraction(wavs),
                                   "rarest_digit": float(counts.min()) / len(wavs), "histogram": counts.tolist()}
    return result


def silent_fraction(wavs: torch.Tensor) -> float:
    """The fraction of (N, L) waveforms whose RMS stays below :data:`SILENT_RMS`."""
    return float((wavs.pow(2).mean(-1).sqrt() < SILENT_RMS).float().mean())


def plot(results: list[dict], path: str, offsets: dict[str, int] | None = None) -> None:
    """Accuracy-as-asked (and the worst class) against the training step; ``offsets`` maps a
    checkpoint folder to the steps before it (a run in stages: each stage's steps count from 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offsets = offsets or {}
    rows = []
    for r in results:
        if r["step"] is None or r.get("sampling"):
            continue
        folder = os.path.basename(os.path.dirname(os.path.normpath(r["model"])))
        if offsets and folder not in offsets:
            continue
        rows.append(dict(r, step=r["step"] + offsets.get(folder, 0)))
    rows.sort(key=lambda r: r["step"])
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.plot([r["step"] for r in rows], [100 * r["accuracy"] for r in rows], "o-", label="all digits")
    ax.plot([r["step"] for r in rows], [100 * r["worst_class"] for r in rows], "s--", label="worst digit")
    ax.set_xlabel("training step")
    ax.set_ylabel("heard as asked (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(f"validation, {rows[0]['n'] if rows else 0} samples per checkpoint")
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="checkpoints, model folders or pretrained names (none: "
                                                   "only --plot the results in --json)")
    parser.add_argument("--reference", required=True, help="folder or CSV of real recordings (validation)")
    parser.add_argument("--per-class", type=int, default=20, help="samples per class (default: 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nucleus-p", type=float, default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--unconditional", action="store_true",
                        help="also score as many samples without a label (seed + 1)")
    parser.add_argument("--json", required=True, help="results file (appended to; models in it are skipped)")
    parser.add_argument("--plot", default=None, help="also draw the curve into this PNG")
    parser.add_argument("--stages", default=None, metavar="DIR=STEPS[,...]",
                        help="with --plot: a run in stages, e.g. a=0,b=1000 (checkpoint folder b's steps "
                             "count from 1000); only these folders are drawn")
    args = parser.parse_args(argv)
    sampling = {k: v for k, v in (("nucleus_p", args.nucleus_p), ("temperature", args.temperature),
                                  ("top_k", args.top_k)) if v is not None}
    results = json.load(open(args.json)) if os.path.exists(args.json) else []
    done = {(r["model"], json.dumps(r["sampling"], sort_keys=True), r["seed"]) for r in results}
    classifier = load_classifier("fsdd")
    ref_feats = None
    for source in args.models:
        if (source, json.dumps(sampling, sort_keys=True), args.seed) in done:
            continue
        if ref_feats is None:
            rate = int(load_model(source).config.sample_rate)
            ref_feats = reference_features(classifier, list_audio_files(args.reference), rate)
        result = score_model(source, classifier, ref_feats, args.per_class, args.seed, sampling, args.unconditional)
        results.append(result)
        with open(args.json + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(args.json + ".tmp", args.json)
        print(f"{source}: {100 * result['accuracy']:.1f}% as asked (worst digit {100 * result['worst_class']:.0f}%), "
              f"FID {result['fid']:.2f}, IS {result['is']:.2f}, silent {100 * result['silent']:.1f}%"
              + ("" if "unconditional" not in result else
                 "; no label: FID {fid:.2f}, IS {is:.2f}, silent {s:.1f}%, rarest digit {r:.1f}%".format(
                     s=100 * result["unconditional"]["silent"], r=100 * result["unconditional"]["rarest_digit"],
                     **result["unconditional"])), flush=True)
    if args.plot:
        offsets = None
        if args.stages:
            offsets = {k: int(v) for k, v in (item.split("=") for item in args.stages.split(","))}
        plot(results, args.plot, offsets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
