"""``sashimi bench generate``: autoregressive generation speed, reference vs fast, side by side.

For each batch size: samples per second of the reference loop (the eager 'dense' S4 step plus
``sample_logits``, one Python call per sample) and of the fast engine (:mod:`sashimi.fastgen`)
on the same weights and device, and their ratio. The default model is the SC09 architecture
(4.8M parameters) with its published initialisation; ``--model`` takes a pretrained name or a
checkpoint. The machine load (1-minute load average) is printed with the numbers: on a shared
machine they move with it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

from sashimi.cli import CLIError
from sashimi.cli.generate import load_cli_model, one_line_errors, parse_number, plain, resolve_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    one_line_errors(parser)
    parser.description, parser.formatter_class = plain(__doc__), argparse.RawDescriptionHelpFormatter
    parser.add_argument("--model", default=None,
                        help="pretrained name, checkpoint path or URL (default: the SC09 architecture, random weights)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    parser.add_argument("--batch-sizes", default="1,16", help="comma-separated batch sizes (default: 1,16)")
    parser.add_argument("--steps", default="8192", help="timed steps of the fast engine (default: 8192)")
    parser.add_argument("--eager-steps", default="128", help="timed steps of the reference loop (default: 128)")
    parser.add_argument("--engine", default=None, choices=("cpp", "torch", "cuda-graphs"),
                        help="fast engine kind (default: the best for the device)")
    parser.add_argument("--threads", default=None,
                        help="torch intra-op threads (default on CPU: 1, as the fast engine uses; else torch's)")
    parser.add_argument("--profile", action="store_true", help="also break the C++ step's time down by kind of work")
    parser.add_argument("--seed", default="0", help="seed for the random weights and the samples (default: 0)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results to PATH as JSON")


def _batch_sizes(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CLIError(f"--batch-sizes must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise CLIError(f"--batch-sizes must be positive integers, got {text!r}")
    return values


def _round_up(n: int, period: int) -> int:
    return -(-n // period) * period


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_eager(model, batch: int, steps: int, generator) -> float:
    """Wall seconds for ``steps`` reference steps, sample_logits + dense step (after
    ``model.setup_rnn('dense')``)."""
    import torch

    from sashimi import SILENCE_TOKEN, sample_logits

    state = model.default_state(batch)
    token = torch.full((batch,), SILENCE_TOKEN, dtype=torch.long, device=model.device)
    with torch.no_grad():
        logits, state = model.step(token, state)
        for _ in range(15):  # warm-up: one full pooling period
            logits, state = model.step(sample_logits(logits, generator=generator), state)
        _sync(model.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            logits, state = model.step(sample_logits(logits, generator=generator), state)
        _sync(model.device)
    return time.perf_counter() - t0


def time_fast(model, batch: int, steps: int, generator, kind=None, engine=None) -> tuple[float, float, float, object]:
    """(wall s, cpu s, setup s, engine) for ``steps`` steps of the fast engine (sample + step)."""
    import torch

    from sashimi import SILENCE_TOKEN, fastgen
    from sashimi.fastgen.sampler import draw_uniforms

    t0 = time.perf_counter()
    engine = engine or fastgen.get_engine(model, batch, kind)
    setup = time.perf_counter() - t0
    engine.reset()
    engine.feed(torch.full((batch, 1), SILENCE_TOKEN, dtype=torch.long, device=model.device))
    out_device = engine.device
    out = torch.empty(batch, steps + 256, dtype=torch.long, device=out_device)
    engine.sample_and_feed(out, 0, 256, draw_uniforms(batch, 256, generator, out_device), True)  # warm-up
    uniforms = draw_uniforms(batch, steps, generator, out_device)
    _sync(model.device)
    t0, c0 = time.perf_counter(), time.process_time()
    engine.sample_and_feed(out, 256, 256 + steps, uniforms, True)
    _sync(model.device)
    return time.perf_counter() - t0, time.process_time() - c0, setup, engine


def run(args: argparse.Namespace) -> int:
    import torch

    from sashimi import ARConfig, SashimiAR

    sizes = _batch_sizes(args.batch_sizes)
    steps = parse_number(args.steps, int, "steps", low=16)
    eager_steps = parse_number(args.eager_steps, int, "eager-steps", low=16)
    seed = parse_number(args.seed, int, "seed", low=0)
    device = resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(parse_number(args.threads, int, "threads", low=1))
    elif device.type == "cpu":
        torch.set_num_threads(1)  # the same CPU resources for both; extra threads mostly spin on small ops
    if args.model is None:
        torch.manual_seed(seed)
        model, name = SashimiAR(ARConfig()).to(device).eval(), "SC09 architecture, random weights"
    else:
        model, name = load_cli_model(args.model, device), args.model
    if not isinstance(model, SashimiAR):
        raise CLIError(f"bench generate needs an autoregressive model; {args.model} is a {type(model).__name__}")
    period = model.sashimi.total_pool
    steps, eager_steps = _round_up(steps, period), _round_up(eager_steps, period)
    from sashimi import fastgen

    reason = fastgen.unsupported_reason(model)
    if reason is not None:
        raise CLIError(f"the fast engine does not support this model: {reason}")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {name} ({n_params / 1e6:.2f}M parameters); device: {_device_name(device)}; "
          f"torch threads: {torch.get_num_threads()}; load average: {_load()}")
    gen = lambda: torch.Generator(device=device).manual_seed(seed)  # noqa: E731
    t0 = time.perf_counter()
    model.setup_rnn("dense")
    eager_setup = time.perf_counter() - t0
    rows = []
    print(f"{'batch':>5}  {'reference (dense eager)':>24}  {'fast':>24}  {'speedup':>8}")
    for batch in sizes:
        fast_wall, fast_cpu, fast_setup, engine = time_fast(model, batch, steps, gen(), args.engine)
        eager_wall = time_eager(model, batch, eager_steps, gen())
        eager_rate, fast_rate = batch * eager_steps / eager_wall, batch * steps / fast_wall
        rows.append({"batch": batch, "eager_samples_per_s": eager_rate, "fast_samples_per_s": fast_rate,
                     "speedup": fast_rate / eager_rate, "fast_samples_per_cpu_s": batch * steps / fast_cpu,
                     "engine": engine.name, "eager_steps": eager_steps, "fast_steps": steps,
                     "fast_setup_s": fast_setup, "eager_setup_s": eager_setup, "load_average": _load()})
        print(f"{batch:>5}  {eager_rate:>16,.0f} samples/s  {fast_rate:>16,.0f} samples/s  {fast_rate / eager_rate:>7.1f}x"
              f"   [{engine.name}; load {_load()}]", flush=True)
    print(f"setup: dense setup_rnn {eager_setup:.2f} s; fast engine (plan + pack, first batch size) "
          f"{rows[0]['fast_setup_s']:.2f} s")
    if args.profile:
        _profile(model, sizes, steps, gen)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": name, "device": _device_name(device), "threads": torch.get_num_threads(),
                       "results": rows}, f, indent=2)
    return 0


def _profile(model, sizes, steps, gen) -> None:
    from sashimi import fastgen
    from sashimi.fastgen import cpu

    if model.device.type != "cpu":
        print("profile: only for the C++ CPU engine")
        return
    lib = cpu.load_library(profile=True)
    if lib is None:
        print(f"profile: the C++ step is unavailable ({cpu.build_error})")
        return
    entry = fastgen._entry(model)
    for batch in sizes:
        engine = cpu.CppEngine(entry["plan"], batch, lib, packed=entry["packed"])
        engine.profile()
        wall = time_fast(model, batch, steps, gen(), engine=engine)[0]
        prof = engine.profile()
        total = wall / steps * 1e6  # the counters also saw the 256 warm-up steps: per-step averages
        parts = ", ".join(f"{k} {v / (steps + 256) * 1e6:.1f}" for k, v in prof.items())
        rest = total - sum(prof.values()) / (steps + 256) * 1e6
        print(f"profile, batch {batch}: {total:.1f} us per step = {parts}, other {rest:.1f} (us per step)")


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


def _load() -> str:
    try:
        return "%.2f" % os.getloadavg()[0]
    except (OSError, AttributeError):
        return "n/a"

