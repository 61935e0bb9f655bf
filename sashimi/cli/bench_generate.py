"""``sashimi bench generate``: autoregressive generation speed of the fast engine, side by side.

Each timed run is a fresh Python process (``workers/generate_steps.py``) that builds the model,
times ``--steps`` sampling steps of the fast engine per batch size (after a warm-up) and reports
samples per second, the CPU time and, on CPU, the thread layout the engine settled on.
``--baseline PATH_OR_REV`` times another version of the library too (a checkout directory or a
git revision, e.g. ``main``), alternating fresh processes with this one (A, B, A, B, ...), and
prints the ratio of their medians: on a shared machine, only such side-by-side ratios mean much,
so the 1-minute load average is printed with every run. The first run of this checkout also
times the reference loop (the eager 'dense' S4 step plus ``sample_logits``) unless
``--eager-steps 0``. The default model is the SC09 architecture (4.8M parameters) with its
initialisation; ``--preset fsdd`` is the small 8 kHz FSDD model; ``--model`` takes a pretrained
name or a checkpoint.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys

from sashimi.cli import CLIError
from sashimi.cli.common import one_line_errors, parse_number, plain, resolve_device

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workers", "generate_steps.py")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    one_line_errors(parser)
    parser.description, parser.formatter_class = plain(__doc__), argparse.RawDescriptionHelpFormatter
    parser.add_argument("--preset", default="sc09", choices=("sc09", "fsdd"),
                        help="model architecture with random weights: sc09 (the published model) or fsdd (d_model 64, "
                             "4 layers per tier, pool 4,4, 8 kHz) (default: sc09)")
    parser.add_argument("--model-cfg", action="append", default=[], metavar="KEY=VALUE",
                        help="override an ARConfig field of the preset, e.g. --model-cfg n_layers=2 (repeatable)")
    parser.add_argument("--model", default=None, help="pretrained name or checkpoint path instead of a preset")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    parser.add_argument("--batch-sizes", default="1,16", help="comma-separated batch sizes (default: 1,16)")
    parser.add_argument("--steps", default="4096", help="timed sampling steps per run (default: 4096)")
    parser.add_argument("--eager-steps", default="64",
                        help="timed steps of the reference loop, in this checkout's first run (0: skip; default: 64)")
    parser.add_argument("--threads", default=None,
                        help="thread limit of the fast CPU engine (torch.set_num_threads in each run; default: torch's)")
    parser.add_argument("--weights", default="float32", choices=("float32", "float16", "bfloat16"),
                        help="weight storage of this checkout's fast CPU engine (default: float32)")
    parser.add_argument("--baseline", default=None, metavar="PATH_OR_REV",
                        help="also time another version (a checkout directory or a git revision such as main), "
                             "alternating fresh processes with this one, and print the ratio")
    parser.add_argument("--rounds", default=None, help="runs per version and batch size (default: 3 with --baseline, else 1)")
    parser.add_argument("--profile", action="store_true", help="also break this checkout's C++ step time down by kind of work")
    parser.add_argument("--seed", default="0", help="seed for the random weights and the samples (default: 0)")
    parser.add_argument("--timeout", default="1800", help="seconds allowed per run (default: 1800)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results to PATH as JSON")


def run(args: argparse.Namespace) -> int:
    from sashimi.cli import baseline as bl
    from sashimi.cli.bench_common import PRESETS, batch_sizes, model_cfg

    sizes = batch_sizes(args.batch_sizes)
    steps = parse_number(args.steps, int, "steps", low=16)
    eager_steps = parse_number(args.eager_steps, int, "eager-steps", low=0)
    seed = parse_number(args.seed, int, "seed", low=0)
    threads = parse_number(args.threads, int, "threads", low=1) if args.threads is not None else None
    timeout = parse_number(args.timeout, float, "timeout", low=1)
    device = resolve_device(args.device)
    base = {"seed": seed, "steps": steps, "device": str(device), "threads": threads}
    if args.model is not None:
        if args.model_cfg:
            raise CLIError("--model-cfg applies to the presets, not to --model")
        base["model"] = os.path.abspath(args.model) if os.path.exists(args.model) else args.model
        name = args.model
    else:
        base["model_cfg"] = model_cfg(PRESETS[args.preset], args.model_cfg)
        name = f"preset {args.preset} {base['model_cfg'] or ''}, random weights".replace("  ", " ")
    with contextlib.ExitStack() as stack:
        sides = [bl.this_side()]
        if args.baseline is not None:
            sides.append(stack.enter_context(bl.baseline_side(args.baseline)))
        rounds = parse_number(args.rounds, int, "rounds", low=1) if args.rounds is not None else 3 if len(sides) > 1 else 1
        print(f"sashimi bench generate: {name}; device {_device_name(device)}; {steps} steps per run, one fresh "
              f"process per run" + (f"; {rounds} alternating rounds of {' / '.join(s.label for s in sides)}"
                                    if len(sides) > 1 else ""), file=sys.stderr)
        rows = []
        for batch in sizes:
            first = [True]

            def one(side, batch=batch):
                job = dict(base, batch=batch, weights=args.weights if side is sides[0] else "float32",
                           eager_steps=eager_steps if side is sides[0] and first[0] else 0)
                first[0] = first[0] and side is not sides[0]
                print(f"  {side.label}: batch {batch} ...", file=sys.stderr, flush=True)
                return bl.run_worker(side, [_WORKER, json.dumps(job)], timeout)

            per_side = bl.alternate(sides, one, rounds)
            rows.append({"batch": batch, "sides": [{"label": s.label, "runs": r} for s, r in zip(sides, per_side)]})
    _print_table(rows)
    if args.profile:
        _profile(base, sizes, args.weights)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": name, "device": _device_name(device), "rows": rows}, f, indent=2)
    return 0 if all(r.get("status") == "ok" for row in rows for side in row["sides"] for r in side["runs"]) else 1


def _layout(run: dict) -> str:
    """The thread layout a run mostly used, e.g. '1x2 (96%)' (rows x threads per row)."""
    layouts = run.get("layouts")
    if not layouts:
        return "1 thread"
    total = sum(l["steps"] for l in layouts) or 1
    top = max(layouts, key=lambda l: l["steps"])
    return f"{top['rows']}x{top['threads']} ({100 * top['steps'] / total:.0f}%)"


def _print_table(rows: list[dict]) -> None:
    head = ["version", "batch", "samples/s (median)", "range", "x real time", "samples/cpu-s", "layout", "loads",
            "status"]
    table = []
    for row in rows:
        medians = []
        for side in row["sides"]:
            ok = [r for r in side["runs"] if r.get("status") == "ok"]
            rates = [r["samples_per_s"] for r in ok]
            medians.append(rates)
            status = "ok" if len(ok) == len(side["runs"]) else next(r["status"] for r in side["runs"] if r.get("status") != "ok")
            rt = statistics.median(rates) / row["batch"] / ok[0]["sample_rate"] if ok else None
            table.append([side["label"], str(row["batch"]), f"{statistics.median(rates):,.0f}" if rates else "-",
                          f"{min(rates):,.0f}-{max(rates):,.0f}" if rates else "-", f"{rt:.2f}" if rt else "-",
                          f"{statistics.median(r['samples_per_cpu_s'] for r in ok):,.0f}" if ok else "-",
                          ", ".join(_layout(r) for r in ok) or "-",
                          ",".join(str(r.get("load_average")) for r in side["runs"]), status])
            for r in ok:
                if r.get("eager_samples_per_s"):
                    row["eager_samples_per_s"] = r["eager_samples_per_s"]
        if len(medians) == 2 and all(medians):
            row["speedup"] = statistics.median(medians[0]) / statistics.median(medians[1])
            table.append(["  -> current is", f"{row['speedup']:.2f}x faster", "", "", "", "", "", "", ""])
        if row.get("eager_samples_per_s") and medians[0]:
            fast = statistics.median(medians[0])
            table.append(["  reference loop", f"{row['eager_samples_per_s']:,.0f} samples/s",
                          f"(current is {fast / row['eager_samples_per_s']:.0f}x faster)", "", "", "", "", "", ""])
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(head)]
    for r in [head, ["-" * w for w in widths], *table]:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


def _profile(base: dict, sizes: list[int], weights: str) -> None:
    """This checkout's C++ step, in this process: time per kind of work on the calling thread."""
    import time

    import torch

    from sashimi import fastgen

    # the worker script imports its sibling worker_protocol as a top-level module (it runs as a
    # script in the timed runs): give this process the same path before importing it
    if os.path.dirname(_WORKER) not in sys.path:
        sys.path.insert(0, os.path.dirname(_WORKER))
    from sashimi.cli.workers.generate_steps import build_model
    from sashimi.fastgen import cpu
    from sashimi.fastgen.sampler import draw_uniforms
    from sashimi.mulaw import silence_token

    if base["device"] != "cpu":
        print("profile: only for the C++ CPU engine")
        return
    lib = cpu.load_library(profile=True)
    if lib is None:
        print(f"profile: the C++ step is unavailable ({cpu.build_error})")
        return
    if base.get("threads"):
        torch.set_num_threads(base["threads"])
    model = build_model(dict(base, device=torch.device("cpu")), torch)
    plan = fastgen.plan_for(model)
    packed = cpu.pack_plan(plan, weights)
    steps = base["steps"]
    for batch in sizes:
        engine = cpu.CppEngine(plan, batch, lib, packed=packed, threads=fastgen.get_num_threads())
        engine.reset()
        engine.feed(torch.full((batch, 1), silence_token(model.config.mu_levels), dtype=torch.long))
        out = torch.empty(batch, steps, dtype=torch.long)
        gen = torch.Generator().manual_seed(base["seed"])
        engine.sample_and_feed(out, 0, steps, draw_uniforms(batch, steps, gen, "cpu"), True)  # warm-up, layout choice
        engine.profile()
        t0 = time.perf_counter()
        engine.sample_and_feed(out, 0, steps, draw_uniforms(batch, steps, gen, "cpu"), True)
        wall = (time.perf_counter() - t0) / steps * 1e6
        prof = engine.profile()
        parts = ", ".join(f"{k} {v / steps * 1e6:.1f}" for k, v in prof.items())
        rest = wall - sum(prof.values()) / steps * 1e6
        print(f"profile, batch {batch} ({_layout({'layouts': engine.layouts()})}): {wall:.1f} us per step = {parts}, "
              f"other {rest:.1f} (us per step, on the calling thread)")


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU ({cpu}, {os.cpu_count()} cores)"
