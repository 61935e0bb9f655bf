"""Profile one training step of an autoregressive SaShiMi model: by phase, by layer and by operator.

    python benchmarks/profile_train.py                       # the SC09 model, 1 x 16000
    python benchmarks/profile_train.py --preset fsdd         # FSDD model, 8 x 6000 (l_max 6000)
    python benchmarks/profile_train.py --preset fsdd --data /path/to/fsdd --json out.json

Three views of the same step (forward, backward, AdamW), each after a warm-up step:

1. Phases, wall and CPU seconds: data (a batch from the training data pipeline, when ``--data``
   gives an FSDD or other audio folder; the in-memory cache and utterance windows as the recipe
   uses them), forward, backward, optimizer.
2. Layers: forward and forward + backward time of every kind of layer per tier (S4 kernel
   generation, S4 convolution + skip + GELU, S4 output projection, FF block, LayerNorm, pooling,
   head + loss), each timed alone at its tier's shape (hooks cannot split a residual network's
   backward pass: autograd interleaves the branches), times the number of such layers.
3. Operators: ``torch.profiler``'s table of the step, by self CPU time.

Use ``--threads 1`` for numbers that move less with the machine's load (CPU time of one thread).
Times are for this machine and this moment: compare versions side by side with
``sashimi bench train --baseline REV``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

# This checkout's package, unless PYTHONPATH names another (to profile an older version, e.g. a
# `git worktree` of main: PYTHONPATH=../main-worktree python benchmarks/profile_train.py). The
# script uses only API that every version has.
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sashimi import ARConfig, SashimiAR  # noqa: E402
from sashimi.backbone import FFBlock, ResidualBlock  # noqa: E402
from sashimi.ops import cauchy_backend  # noqa: E402
from sashimi.s4 import S4  # noqa: E402


def _clock():
    return time.perf_counter(), time.process_time()


def _since(t0):
    wall, cpu = _clock()
    return wall - t0[0], cpu - t0[1]


# the presets of `sashimi bench train` (sashimi/cli/bench.py), here for versions that lack them
PRESETS = {
    "sc09": {"model_cfg": {}, "batch_sizes": "1,8", "seq_len": 16000},
    "fsdd": {"model_cfg": {"d_model": 64, "n_layers": 4, "pool": [4, 4], "l_max": 6000, "sample_rate": 8000},
             "batch_sizes": "8", "seq_len": 6000},
}


def _timed(fn, inputs, repeat: int = 2) -> tuple[float, float]:
    """(forward s, forward + backward s) of ``fn(*inputs)``, best of ``repeat`` after a warm-up."""
    out = fn(*inputs)
    grad = torch.randn_like(out)
    torch.autograd.backward(out, grad)
    fwd, both = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*inputs)  # with autograd on, as in training (the S4 kernel is cached only without it)
        fwd.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        torch.autograd.backward(fn(*inputs), grad)
        both.append(time.perf_counter() - t0)
    return min(fwd), min(both)


def layer_costs(model: SashimiAR, batch: int, seq_len: int) -> list[tuple[str, int, float, float]]:
    """Each kind of layer timed alone at its tier's shape: (label, count in the model, forward s,
    forward + backward s per instance)."""
    s, cfg = model.sashimi, model.config
    rows = []
    H, L = cfg.d_model, seq_len
    n_tiers = len(s.pool)
    for tier in range(n_tiers + 1):
        blocks = [b for b in _tier_blocks(s, tier)]
        s4s = [b.layer for b in blocks if isinstance(b, ResidualBlock) and isinstance(b.layer, S4)]
        ffs = [b.layer for b in blocks if isinstance(b, ResidualBlock) and isinstance(b.layer, FFBlock)]
        u = torch.randn(batch, L, H, requires_grad=True)
        if s4s:
            layer = s4s[0]
            kernel = _timed(lambda: layer.kernel(L), ())
            project = _timed(layer._project, (u,))
            whole = _timed(layer, (u,))
            rows.append((f"tier {tier} (H={H}, L={L}): S4 kernel generation", len(s4s), *kernel))
            rows.append((f"tier {tier}: S4 convolution + skip + GELU (the rest of the S4 layer)", len(s4s),
                         *(max(0.0, w - k - p) for w, k, p in zip(whole, kernel, project))))
            rows.append((f"tier {tier}: S4 output linear + GLU", len(s4s), *project))
        if ffs:
            rows.append((f"tier {tier}: FF block", len(ffs), *_timed(ffs[0], (u,))))
        rows.append((f"tier {tier}: LayerNorm", len(s4s) + len(ffs), *_timed(blocks[0].norm, (u,))))
        if tier < n_tiers:
            rows.append((f"tier {tier}: DownPool", 1, *_timed(s.d_layers[tier], (u,))))
            H, L = H * cfg.expand, L // s.pool[tier]
            up = s.u_layers[n_tiers - 1 - tier][0]
            rows.append((f"tier {tier + 1}->{tier}: UpPool", 1,
                         *_timed(up, (torch.randn(batch, L, H, requires_grad=True),))))
    x = torch.randn(batch, seq_len, cfg.d_model, requires_grad=True)
    y = torch.randint(0, cfg.mu_levels, (batch, seq_len))
    rows.append(("head + cross-entropy", 1, *_timed(lambda x: F.cross_entropy(model.head(x).transpose(1, 2), y), (x,))))
    return rows


def _tier_blocks(s, tier: int) -> list:
    """The residual blocks that run at resolution ``tier`` (0: the outermost)."""
    n = len(s.pool)
    if tier == n:
        return list(s.c_layers)
    return [b for b in s.u_layers[n - 1 - tier][1:]]


def _data_batch(args, cfg, batch: int, seq_len: int):
    """A training batch: from the data pipeline when --data is given, else random tokens."""
    if not args.data:
        gen = torch.Generator().manual_seed(1)
        tokens = torch.randint(0, cfg.mu_levels, (batch, seq_len + 1), generator=gen)
        return (tokens[:, :-1], tokens[:, 1:]), None
    from sashimi.data.datasets import ARCollate, UtteranceDataset, list_audio_files

    files = list_audio_files(args.data)
    t0 = _clock()
    data = UtteranceDataset(files, cfg.sample_rate, seq_len, lead=1, fade=40, cache=True)
    load = _since(t0)
    t0 = _clock()
    collate = ARCollate(cfg.mu_levels)
    x, y, _ = collate([data[i] for i in range(batch)])
    return (x, y), {"cache_fill": load, "batch": _since(t0), "files": len(files)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sc09", choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the preset's first)")
    parser.add_argument("--seq-len", type=int, default=None, help="samples per sequence (default: the preset's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--data", default=None, help="audio folder or CSV for the data phase (default: random tokens)")
    parser.add_argument("--rows", type=int, default=25, help="operator table rows (default: 25)")
    parser.add_argument("--json", default=None, help="also write the phase and layer numbers here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    cfg = ARConfig(**preset["model_cfg"])
    batch = args.batch or int(str(preset["batch_sizes"]).split(",")[0])
    seq_len = args.seq_len or preset["seq_len"]
    torch.manual_seed(0)
    model = SashimiAR(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    (x, y), data_times = _data_batch(args, cfg, batch, seq_len)
    import sashimi

    print(f"sashimi from {os.path.dirname(sashimi.__file__)}")
    print(f"preset {args.preset}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, batch {batch} x "
          f"{seq_len}, {torch.get_num_threads()} threads, Cauchy backend {cauchy_backend('cpu')}, "
          f"load average {os.getloadavg()[0]:.2f}")

    def step(phases=None):
        t0 = _clock()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x).transpose(1, 2), y)
        t1 = _clock()
        loss.backward()
        t2 = _clock()
        opt.step()
        if phases is not None:
            phases["forward"] = (t1[0] - t0[0], t1[1] - t0[1])
            phases["backward"] = (t2[0] - t1[0], t2[1] - t1[1])
            phases["optimizer"] = _since(t2)

    step()  # warm-up: builds the C++ kernels, allocator pools
    phases = {}
    step(phases)
    if data_times:
        phases["data (one batch from the cache)"] = data_times["batch"]
    total = sum(w for w, _ in phases.values())
    print("\n1. phases (wall s, cpu s)")
    for name, (wall, cpu) in phases.items():
        print(f"   {name:<34} {wall:8.3f} {cpu:8.3f}   {100 * wall / total:5.1f}%")
    if data_times:
        print(f"   (filling the in-memory cache once: {data_times['cache_fill'][0]:.1f} s for {data_times['files']} files)")

    rows = layer_costs(model, batch, seq_len)
    print("\n2. layers: each kind timed alone at its tier's shape (s per instance; x count = its share of a step)")
    print(f"   {'layer':<52} {'count':>5} {'forward':>8} {'fwd+bwd':>8} {'x count':>8}")
    accounted = 0.0
    for label, count, fwd, both in sorted(rows, key=lambda r: -r[1] * r[3]):
        accounted += count * both
        print(f"   {label:<52} {count:>5} {fwd:8.4f} {both:8.4f} {count * both:8.3f}")
    fb = phases["forward"][0] + phases["backward"][0]
    print(f"   sum {accounted:.3f} s of the step's {fb:.3f} s forward + backward; the rest: residual adds, "
          "reshapes, autograd bookkeeping")

    from torch.profiler import profile

    with profile() as prof:
        step()
    print("\n3. operators (one step, self CPU time)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"preset": args.preset, "batch": batch, "seq_len": seq_len, "threads": torch.get_num_threads(),
                       "phases": phases, "layers": [{"layer": label, "count": count, "forward_s": fwd, "fwd_bwd_s": both}
                                                    for label, count, fwd, both in rows]}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
