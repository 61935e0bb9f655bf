"""``sashimi bench``: benchmarks, one sub-command each (``train``; ``generate`` to come).

``sashimi bench train`` times one training step (forward, backward, AdamW step) of the SC09
autoregressive model on random tokens, for each batch size and Cauchy backend, and reports
the peak memory. Each (backend, batch size) runs in a fresh Python process, so that the peak
RSS (CPU) or peak allocated CUDA memory belongs to that configuration alone.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

from sashimi.cli import CLIError

_RESULT_TAG = "SASHIMI_BENCH_RESULT "
_ENV_VAR = "SASHIMI_CAUCHY_BACKEND"  # read by sashimi.ops.cauchy in the worker
_BACKEND_NAMES = ("auto", "cuda", "keops", "torch")


# ---- command line ------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    train = sub.add_parser("train", help="time and peak memory of one SC09 training step",
                           description=__doc__.split("\n\n")[1])
    train.add_argument("--batch-sizes", default="1,8", help="comma-separated batch sizes (default: 1,8)")
    train.add_argument("--seq-len", type=int, default=16000, help="samples per sequence (default: 16000)")
    train.add_argument("--steps", type=int, default=3, help="timed steps per configuration (default: 3)")
    train.add_argument("--warmup", type=int, default=1, help="untimed steps before them (default: 1)")
    train.add_argument("--backends", default=None,
                       help="comma-separated Cauchy backends among auto, cuda, keops, torch "
                            "(default: every one that may run on the device)")
    train.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    train.add_argument("--timeout", type=float, default=3600, help="seconds allowed per configuration")
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


def _default_backends(device: str) -> list[str]:
    names = ["torch"]
    if importlib.util.find_spec("pykeops") is not None:
        names.insert(0, "keops")
    if device.startswith("cuda"):
        names.insert(0, "cuda")
    return names


def run_train(args: argparse.Namespace) -> int:
    from sashimi.cli.bench_generate import _batch_sizes
    from sashimi.config import ARConfig

    batch_sizes = _batch_sizes(args.batch_sizes)
    l_max = ARConfig().l_max
    if not 1 <= args.seq_len <= l_max:
        raise CLIError(f"--seq-len must be in [1, {l_max}] (the model's l_max), got {args.seq_len}")
    if args.steps < 1 or args.warmup < 0:
        raise CLIError("--steps must be >= 1 and --warmup >= 0")
    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads must be positive, got {args.threads}")
    device = _device(args.device)
    backends = (_default_backends(device) if args.backends is None
                else [b.strip() for b in args.backends.split(",") if b.strip()])
    bad = [b for b in backends if b not in _BACKEND_NAMES]
    if bad or not backends:
        raise CLIError(f"--backends: unknown backend(s) {bad}; choose from {', '.join(_BACKEND_NAMES)}")

    print(f"sashimi bench train: SC09 model, seq_len={args.seq_len}, device={device}, "
          f"{args.warmup} warm-up + {args.steps} timed steps, one process per row", file=sys.stderr)
    results = []
    for backend in backends:
        for batch in batch_sizes:
            cfg = {"backend": backend, "batch": batch, "seq_len": args.seq_len, "steps": args.steps,
                   "warmup": args.warmup, "device": device, "threads": args.threads}
            print(f"  running backend={backend} batch={batch} ...", file=sys.stderr, flush=True)
            results.append(_run_worker(cfg, args.timeout))
    _print_table(results, device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if all(r["status"] == "ok" for r in results) else 1


def _run_worker(cfg: dict, timeout: float) -> dict:
    env = dict(os.environ, **{_ENV_VAR: cfg["backend"]})
    pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "sashimi.cli.bench", "--worker", json.dumps(cfg)]
    try:  # the worker's progress (stderr) goes straight to ours
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(cfg, status=f"timed out after {timeout:g} s")
    for line in proc.stdout.splitlines():
        if line.startswith(_RESULT_TAG):
            return json.loads(line[len(_RESULT_TAG):])
    return dict(cfg, status=f"failed (exit {proc.returncode}; killed for memory?), see its output above")


def _print_table(results: list[dict], device: str) -> None:
    mem_head = "peak CUDA GiB" if device.startswith("cuda") else "peak RSS GiB"
    head = ["backend", "batch", "seq_len", "step s (mean)", "step s (min)", "first step s", mem_head, "status"]
    rows = []
    for r in results:
        ok = r["status"] == "ok"
        mem = r.get("peak_cuda_gib") if device.startswith("cuda") else r.get("peak_rss_gib")
        rows.append([r.get("backend_used", r["backend"]), str(r["batch"]), str(r["seq_len"]),
                     f"{r['step_s']:.2f}" if ok else "-", f"{r['step_min_s']:.2f}" if ok else "-",
                     f"{r['first_step_s']:.2f}" if ok else "-", f"{mem:.2f}" if ok else "-", r["status"]])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    for row in [head, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


# ---- worker (a fresh process per configuration) -----------------------------------------
def _peak_rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _worker(cfg: dict) -> dict:
    import torch
    import torch.nn.functional as F

    from sashimi import SashimiAR
    from sashimi.ops import cauchy_backend

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    torch.manual_seed(0)
    backend_used = cauchy_backend(device)  # raises if the requested backend cannot run here
    model = SashimiAR().to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, model.config.mu_levels, (cfg["batch"], cfg["seq_len"] + 1), device=device)
    x, y = tokens[:, :-1], tokens[:, 1:]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(cfg["warmup"] + cfg["steps"]):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model(x)  # (B, L, 256)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
        print(f"    step {len(times)}: {times[-1]:.2f} s, loss {loss.item():.3f}", file=sys.stderr, flush=True)
    timed = times[cfg["warmup"]:]
    return dict(cfg, status="ok", backend_used=backend_used, step_s=sum(timed) / len(timed), step_min_s=min(timed),
                first_step_s=times[0], loss=loss.item(), threads_used=torch.get_num_threads(),
                peak_rss_gib=_peak_rss_gib(),
                peak_cuda_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None)


def _worker_main(argv: list[str]) -> int:
    cfg = json.loads(argv[1])
    try:
        result = _worker(cfg)
    except Exception as e:  # reported as this configuration's status, the others still run
        result = dict(cfg, status=f"error: {type(e).__name__}: {e}")
    print(_RESULT_TAG + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    sys.exit(_worker_main(sys.argv[1:]))
