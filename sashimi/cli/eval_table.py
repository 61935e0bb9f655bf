"""How ``sashimi eval`` prints its result: a table, or JSON without infinities."""
from __future__ import annotations

import math


def finite_or_null(x):
    """JSON has no infinity (e.g. an infinite mIS): such numbers become null."""
    if isinstance(x, dict):
        return {k: finite_or_null(v) for k, v in x.items()}
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.3f}" if abs(x) < 1000 else f"{x:.4g}"


def table(r: dict) -> str:
    """The result of ``sashimi eval`` as a text table."""
    lines = [f"classifier {r['classifier']}; IS: {r['is_variant']}; mIS: "
             f"{'all pairs' if r['mis_pairs'] is None else str(r['mis_pairs']) + ' pairs'}; STFT padding "
             f"{r['stft_padding']}; {r['seconds']} s"]
    names = [n for n in ("samples", "reference", "test") if n in r]
    head = f"{'set':<10} {'n':>6} {'FID':>9} {'IS':>8} {'mIS':>9} {'AM':>7}   source"
    lines += ["", head, "-" * len(head)]
    for name in names:
        row = r[name]
        lines.append(f"{name:<10} {row['n']:>6} {_fmt(row['fid']):>9} {_fmt(row['is']):>8} {_fmt(row['mis']):>9} "
                     f"{_fmt(row['am']):>7}   {row['source']}" + ("  (itself: the ceiling)" if name == "reference"
                                                                     else ""))
    width = max(5, *(len(c) for c in r["classes"]))
    lines += ["", f"{'argmax':<10} " + " ".join(f"{c:>{width}}" for c in r["classes"])]
    for name in names:
        lines.append(f"{name:<10} " + " ".join(f"{k:>{width}}" for k in r[name]["histogram"]))
    cond = r.get("conditional")
    if cond is not None:
        lines += ["", f"classified as the requested class: {cond['accuracy']:.1%} "
                      f"({cond['per_class_n']} samples per class)", "",
                  f"{'requested':<10} " + " ".join(f"{c:>{width}}" for c in r["classes"]) + "   accuracy"]
        for name, row, acc in zip(cond["model_classes"], cond["confusion"], cond["per_class"]):
            lines.append(f"{name:<10} " + " ".join(f"{k:>{width}}" for k in row) + f"   {acc:.0%}")
    return "\n".join(lines)
