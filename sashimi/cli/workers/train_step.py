"""Worker of ``sashimi bench train``: time training steps of one configuration, print one result line.

Run as a script in a fresh process, ``python train_step.py CONFIG_JSON``, with the library under
test first on ``PYTHONPATH``: the same harness times this checkout and a baseline (see
:mod:`sashimi.cli.baseline`), so it uses only API that every version has (``SashimiAR``,
``ARConfig``, ``sashimi.ops.cauchy_backend``). It lives in a folder of its own because a
script's folder goes first on ``sys.path``.

CONFIG_JSON keys: ``model_cfg`` (ARConfig fields), ``batch``, ``seq_len``, ``steps``, ``warmup``,
``device``, ``threads`` (or null), ``backend`` (Cauchy backend; 'auto' leaves the choice to the library),
``precision`` ('fp32' or 'bf16': forward and loss under bf16 autocast, as training's ``precision=bf16``;
absent: fp32).
"""
import os
import resource
import sys
import time

from worker_protocol import worker_main


def _worker(cfg: dict) -> dict:
    if cfg.get("backend") and cfg["backend"] != "auto":
        os.environ["SASHIMI_CAUCHY_BACKEND"] = cfg["backend"]
    import torch
    import torch.nn.functional as F

    import sashimi
    from sashimi import ARConfig, SashimiAR
    from sashimi.ops import cauchy_backend

    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    torch.manual_seed(0)
    backend_used = cauchy_backend(device)  # raises if the requested backend cannot run here
    model = SashimiAR(ARConfig(**cfg["model_cfg"])).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, model.config.mu_levels, (cfg["batch"], cfg["seq_len"] + 1), generator=gen).to(device)
    x, y = tokens[:, :-1], tokens[:, 1:]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # torch's autocast only (no library API), so that a baseline of any version runs it alike
    bf16 = cfg.get("precision", "fp32") == "bf16"
    times, losses = [], []
    for _ in range(cfg["warmup"] + cfg["steps"]):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)  # (B, L, 256)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
        print(f"    step {len(times)}: {times[-1]:.2f} s, loss {losses[-1]:.6f}", file=sys.stderr, flush=True)
    timed = times[cfg["warmup"]:]
    return dict(cfg, status="ok", backend_used=backend_used, step_s=sum(timed) / len(timed), step_min_s=min(timed),
                step_times=timed, first_step_s=times[0], losses=losses, threads_used=torch.get_num_threads(),
                library=os.path.dirname(os.path.dirname(os.path.abspath(sashimi.__file__))),
                peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # KiB on Linux
                peak_cuda_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None)


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:], _worker, "train_step.py"))
