"""Accuracy of a digit classifier on the FSDD test set (takes 0-4, 300 files), clean and perturbed.

    python benchmarks/fsdd_classifier.py /path/to/fsdd                    # the bundled 'fsdd' classifier
    python benchmarks/fsdd_classifier.py /path/to/fsdd --classifier my_classifier.pt

Conditions: clean (each clip from the window's start, 8 kHz); random gain in [-20, +6] dB and a
random position in the second (the target condition); that plus white noise (-70 to -40 dBFS
RMS) and an 8-bit mu-law round trip; and the gain/shift condition resampled to 16 kHz.
Perturbations are drawn with a fixed seed.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sashimi.data.audio import resample  # noqa: E402
from sashimi.eval import load_classifier  # noqa: E402
from sashimi.eval.augment import perturb, place  # noqa: E402
from sashimi.eval.training import GAIN_SHIFT, labelled_splits, load_clips  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fsdd", help="FSDD checkout or its recordings/ folder")
    parser.add_argument("--classifier", default="fsdd")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    clf = load_classifier(args.classifier)
    splits, _, layout = labelled_splits(args.fsdd)
    if layout != "fsdd":
        parser.error(f"{args.fsdd} is not an FSDD folder")
    clips, labels, rate = load_clips(splits["test"])

    def acc(wavs, r):
        probs, _ = clf.predict(wavs, r)
        return round(float((probs.argmax(1) == labels).double().mean()), 4)

    g = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    gain_shift = perturb(place(clips, rate, g), g, **GAIN_SHIFT)
    noisy = perturb(place(clips, rate, g), g, p_noise=1.0, p_mulaw=1.0)
    result = {"classifier": args.classifier, "n": len(clips),
              "clean": acc(place(clips, rate, shift=False), rate),
              "gain_shift": acc(gain_shift, rate),
              "gain_shift_noise_mulaw": acc(noisy, rate),
              "gain_shift_16khz": acc(resample(gain_shift, rate, 16000), 16000)}
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
