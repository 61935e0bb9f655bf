"""``sashimi bench``: benchmarks, one sub-command each (``train``, ``generate``).

``sashimi bench train`` times training steps (forward, backward, AdamW step) of an
autoregressive model on random tokens (preset ``sc09``: the published SC09 model; ``fsdd``: the
8 kHz FSDD model), for each batch size and Cauchy backend, and reports the peak memory. Each
run is a fresh Python process, so that the peak RSS (CPU) or peak allocated CUDA memory belongs
to that configuration alone. ``--baseline PATH_OR_REV`` times another version of the library
too (a checkout directory or a git revision), alternating fresh processes with this one, and
prints the speed ratio and the difference of their first-step losses (same seed, same data:
it shows whether both compute the same function).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys

from sashimi.cli import CLIError
from sashimi.cli.bench_common import PRESETS

_BACKEND_NAMES = ("auto", "cuda", "keops", "torch")


# ---- command line ------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    train = sub.add_parser("train", help="time and peak memory of training steps (SC09 or FSDD model)",
                           description=__doc__.split("\n\n")[1],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--preset", default="sc09", choices=sorted(PRESETS),
                       help="model and default sizes: sc09 (the published model; batch 1,8 x 16000) or fsdd "
                            "(d_model 64, 4 layers per tier, pool 4,4, l_max 6000; batch 8 x 6000)")
    train.add_argument("--batch-sizes", default=None, help="comma-separated batch sizes (default: the preset's)")
    train.add_argument("--seq-len", type=int, default=None, help="samples per sequence (default: the preset's)")
    train.add_argument("--model-cfg", action="append", default=[], metavar="KEY=VALUE",
                       help="override an ARConfig field of the preset, e.g. --model-cfg l_max=16000 (repeatable)")
    train.add_argument("--steps", type=int, default=3, help="timed steps per run (default: 3)")
    train.add_argument("--warmup", type=int, default=1, help="untimed steps before them (default: 1)")
    train.add_argument("--backends", default=None,
                       help="comma-separated Cauchy backends among " + ", ".join(_BACKEND_NAMES)
                            + " (default: 'auto', the library's own choice)")
    train.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    train.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                       help="fp32, or bf16 autocast as training's precision=bf16 (also on CPU) (default: fp32)")
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    train.add_argument("--baseline", default=None, metavar="PATH_OR_REV",
                       help="also time another version (a checkout directory or a git revision), alternating "
                            "fresh processes with this one, and print the ratio")
    train.add_argument("--rounds", type=int, default=3, help="alternations with --baseline (default: 3)")
    train.add_argument("--timeout", type=float, default=3600, help="seconds allowed per run")
    train.add_argument("--json", default=None, metavar="PATH", help="also write the results to PATH as JSON")
    train.set_defaults(bench_run=run_train)
    from sashimi.cli import bench_generate

    gen = sub.add_parser("generate", help="samples/s: the reference dense eager step vs the fast engine",
                         description=bench_generate.__doc__.splitlines()[0] if bench_generate.__doc__ else None)
    bench_generate.add_arguments(gen)
    gen.set_defaults(bench_run=bench_generate.run)


def run(args: argparse.Namespace) -> int:
    run_fn = getattr(args, "bench_run", None)
    if run_fn is None:
        raise CLIError("choose a benchmark: 'sashimi bench train' or 'sashimi bench generate' (add --help)")
    return run_fn(args)


# ---- bench train -------------------------------------------------------------------------
def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CLIError(f"--device: unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device: CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise CLIError(f"--device must be cpu or cuda, got {name!r}")
    return str(device)


def run_train(args: argparse.Namespace) -> int:
    from sashimi.cli import baseline as bl
    from sashimi.cli.bench_common import batch_sizes as parse_batch_sizes, model_cfg
    from sashimi.config import ARConfig

    preset = PRESETS[args.preset]
    model_cfg = model_cfg(preset, args.model_cfg)
    batch_sizes = parse_batch_sizes(args.batch_sizes or preset["batch_sizes"])
    seq_len = args.seq_len or preset["seq_len"]
    l_max = ARConfig(**model_cfg).l_max
    if not 1 <= seq_len <= l_max:
        raise CLIError(f"--seq-len must be in [1, {l_max}] (the model's l_max), got {seq_len}")
    if args.steps < 1 or args.warmup < 0 or args.rounds < 1:
        raise CLIError("--steps and --rounds must be >= 1 and --warmup >= 0")
    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads must be positive, got {args.threads}")
    device = _device(args.device)
    backends = ["auto"] if args.backends is None else [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in backends if b not in _BACKEND_NAMES]
    if bad or not backends:
        raise CLIError(f"--backends: unknown backend(s) {bad}; choose from {', '.join(_BACKEND_NAMES)}")
    jobs = [{"model_cfg": model_cfg, "backend": backend, "batch": batch, "seq_len": seq_len, "steps": args.steps,
             "warmup": args.warmup, "device": device, "threads": args.threads, "precision": args.precision}
            for backend in backends for batch in batch_sizes]
    with contextlib.ExitStack() as stack:
        sides = [bl.this_side()]
        if args.baseline is not None:
            sides.append(stack.enter_context(bl.baseline_side(args.baseline)))
        rounds = args.rounds if len(sides) > 1 else 1
        print(f"sashimi bench train: preset {args.preset} {model_cfg}, seq_len={seq_len}, device={device}, precision={args.precision}, "
              f"{args.warmup} warm-up + {args.steps} timed steps per run, one fresh process per run"
              + (f"; {rounds} alternating rounds of {' / '.join(s.label for s in sides)}" if len(sides) > 1 else ""),
              file=sys.stderr)
        rows = []
        for job in jobs:
            def one(side, job=job):
                print(f"  {side.label}: backend={job['backend']} batch={job['batch']} ...", file=sys.stderr, flush=True)
                return bl.run_worker(side, [_WORKER, json.dumps(job)], args.timeout)

            per_side = bl.alternate(sides, one, rounds)
            rows.append({"job": job, "sides": [{"label": s.label, "runs": runs} for s, runs in zip(sides, per_side)]})
    _print_table(rows, device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"preset": args.preset, "device": device, "rows": rows}, f, indent=2)
    return 0 if all(r.get("status") == "ok" for row in rows for side in row["sides"] for r in side["runs"]) else 1


_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workers", "train_step.py")


def _print_table(rows: list[dict], device: str) -> None:
    from sashimi.cli.baseline import ratio

    mem_head = "peak CUDA GiB" if device.startswith("cuda") else "peak RSS GiB"
    head = ["version", "backend", "batch", "seq_len", "step s (median)", "step s (min)", mem_head, "loads", "status"]
    table = []
    for row in rows:
        medians = []
        for side in row["sides"]:
            ok = [r for r in side["runs"] if r.get("status") == "ok"]
            times = [t for r in ok for t in r["step_times"]]
            mem = max((r.get("peak_cuda_gib") if device.startswith("cuda") else r.get("peak_rss_gib")) or 0 for r in ok) if ok else 0
            status = "ok" if len(ok) == len(side["runs"]) else next(r["status"] for r in side["runs"] if r.get("status") != "ok")
            medians.append(times)
            job = row["job"]
            table.append([side["label"], ok[0]["backend_used"] if ok else job["backend"], str(job["batch"]),
                          str(job["seq_len"]), f"{statistics.median(times):.3f}" if times else "-",
                          f"{min(times):.3f}" if times else "-", f"{mem:.2f}" if ok else "-",
                          ",".join(str(r.get("load_average")) for r in side["runs"]), status])
        if len(medians) == 2 and all(medians):
            row["speedup"] = ratio(medians[1], medians[0])
            first = [side["runs"][0].get("losses", [None])[0] for side in row["sides"]]
            row["first_loss_diff"] = abs(first[0] - first[1]) if None not in first else None
            table.append(["  -> current is", f"{row['speedup']:.2f}x faster", "", "", "", "", "", "",
                          f"first-step loss diff {row['first_loss_diff']:.1e}" if row["first_loss_diff"] is not None else ""])
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(head)]
    for r in [head, ["-" * w for w in widths], *table]:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
