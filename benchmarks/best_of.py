"""Accuracy-as-asked of a class-conditional model with and without best-of-K reranking.

    python benchmarks/best_of.py [--model sashimi_ar_fsdd] [--per-class 10] [--k 4] [--steps fast]

Draws K candidates for each of ``per-class`` requests of every class (candidate r with seeds
1000 r + batch), classifies them all with the bundled FSDD digit classifier, and prints for
k = 1, 2, 4, ... K how often the candidate ``sashimi.eval.best_of`` keeps among the first k is
heard as the requested class. k = 1 is the model's own accuracy; the others are flattering, since
the classifier that scores is the one that chose.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import sashimi  # noqa: E402
from sashimi.eval import best_of, load_classifier, match_classes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sashimi_ar_fsdd")
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--steps", default=None, help="diffusion models: 'fast' or an integer (default: all)")
    args = parser.parse_args()
    model = sashimi.load_model(args.model)
    if model.classes is None:
        sys.exit(f"{args.model} is not class-conditional")
    clf = load_classifier("fsdd")
    index = match_classes(model.classes, clf.classes)
    C, rate = len(model.classes), int(model.config.sample_rate)
    labels = torch.arange(C).repeat(args.per_class)  # (N,)
    extra = {} if args.steps is None else {"steps": args.steps if args.steps == "fast" else int(args.steps)}
    start = time.time()
    candidates = torch.stack([torch.cat([
        model.conditional_generate(labels[b:b + args.batch].tolist(), seed=1000 * r + b, progress=False, **extra)
        for b in range(0, len(labels), args.batch)]) for r in range(args.k)], 1).float().cpu()  # (N, K, L)
    probs, _ = clf.predict(candidates.reshape(-1, candidates.size(-1)), rate)
    heard_class = probs.argmax(1).view(len(labels), args.k)  # (N, K)
    wanted = torch.tensor(index)[labels]
    k = 1
    while k <= args.k:
        _, prob, pick = best_of(candidates[:, :k], labels, clf, index, rate)
        hit = (heard_class[torch.arange(len(labels)), pick] == wanted).float()
        per_class = hit.view(args.per_class, C).mean(0)
        print(f"best of {k}: heard as asked {hit.mean():.1%}, worst class {per_class.min():.0%}, "
              f"mean p(requested) {prob.mean():.3f}")
        k *= 2
    print(f"{len(labels)} requests x {args.k} candidates in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
