"""Worker of ``sashimi bench generate``: time the fast generation engine, print one result line.

Run as a script in a fresh process, ``python generate_steps.py CONFIG_JSON``, with the library
under test first on ``PYTHONPATH``: the same harness times this checkout and a baseline (see
:mod:`sashimi.cli.baseline`), so it uses only API that every version with a fast engine has
(``fastgen.get_engine``, the engine's ``reset`` / ``feed`` / ``sample_and_feed``); newer options
(``threads``, ``weights``, ``layouts()``) are used where the version has them.

CONFIG_JSON keys: ``model_cfg`` (ARConfig fields) or ``model`` (a checkpoint path or a
pretrained name), ``seed``, ``batch``, ``steps``, ``device``, ``threads`` (or null: torch's
default), ``weights`` ('float32', 'float16', ...), ``eager_steps`` (0: skip the reference loop).
"""
import inspect
import os
import sys
import time

from worker_protocol import worker_main


def build_model(cfg, torch):
    import sashimi
    from sashimi import ARConfig, SashimiAR

    if cfg.get("model"):
        spec = cfg["model"]
        hub = getattr(sashimi, "hub", None)
        if hub is not None and callable(getattr(hub, spec, None)) and not os.path.exists(spec):
            return getattr(hub, spec)(device=cfg["device"]).eval()
        return sashimi.load_model(spec).to(cfg["device"]).eval()
    torch.manual_seed(cfg.get("seed", 0))
    return SashimiAR(ARConfig(**cfg["model_cfg"])).to(cfg["device"]).eval()


def _sync(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _silence(model) -> int:
    """The model's silence token. Older versions of the library, run here as baselines, have only
    the 256-level constant."""
    try:
        from sashimi.mulaw import silence_token
    except ImportError:
        from sashimi import SILENCE_TOKEN

        return SILENCE_TOKEN
    return silence_token(model.config.mu_levels)


def _time_fast(cfg, model, torch) -> dict:
    from sashimi import fastgen
    from sashimi.fastgen.sampler import draw_uniforms

    batch, steps, device = cfg["batch"], cfg["steps"], model.head.weight.device
    options = inspect.signature(fastgen.get_engine).parameters
    kw = {}
    if "threads" in options and cfg.get("threads"):
        kw["threads"] = cfg["threads"]
    if "weights" in options:
        kw["weights"] = cfg.get("weights") or "float32"
    elif (cfg.get("weights") or "float32") != "float32":
        raise RuntimeError(f"this version has no {cfg['weights']} weight storage")
    t0 = time.perf_counter()
    engine = fastgen.get_engine(model, batch, **kw)
    setup = time.perf_counter() - t0
    gen = torch.Generator(device=device).manual_seed(cfg.get("seed", 0))
    engine.reset()
    engine.feed(torch.full((batch, 1), _silence(model), dtype=torch.long, device=device))
    warm = 512
    out = torch.empty(batch, warm + steps, dtype=torch.long, device=engine.device)
    try:  # this worker also times older checkouts (bench --baseline), which took three numbers
        from sashimi.sampling import SamplingOptions
    except ImportError:
        engine.set_sampling(1.0, None, 1.0)
    else:
        engine.set_sampling(SamplingOptions())
    engine.sample_and_feed(out, 0, warm, draw_uniforms(batch, warm, gen, engine.device), True)
    uniforms = draw_uniforms(batch, steps, gen, engine.device)
    _sync(torch, device)
    t0, c0 = time.perf_counter(), time.process_time()
    for a in range(warm, warm + steps, 256):  # as generation does: one call per 256 steps
        b = min(a + 256, warm + steps)
        engine.sample_and_feed(out, a, b, uniforms[:, a - warm:b - warm], True)
    _sync(torch, device)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    result = {"engine": engine.name, "wall_s": wall, "cpu_s": cpu, "setup_s": setup,
              "samples_per_s": batch * steps / wall, "samples_per_cpu_s": batch * steps / cpu,
              "threads": getattr(engine, "threads", 1), "weights": kw.get("weights", "float32")}
    if hasattr(engine, "layouts"):
        result["layouts"] = engine.layouts()
    return result


def _time_eager(cfg, model, torch) -> float:
    """Samples per second of the reference loop: the dense S4 step plus sample_logits."""
    from sashimi import sample_logits

    batch, steps, device = cfg["batch"], cfg["eager_steps"], model.head.weight.device
    model.setup_rnn("dense")
    gen = torch.Generator(device=device).manual_seed(cfg.get("seed", 0))
    state = model.default_state(batch)
    token = torch.full((batch,), _silence(model), dtype=torch.long, device=device)
    with torch.no_grad():
        logits, state = model.step(token, state)
        for _ in range(15):  # warm-up: a pooling period
            logits, state = model.step(sample_logits(logits, generator=gen), state)
        _sync(torch, device)
        t0 = time.perf_counter()
        for _ in range(steps):
            logits, state = model.step(sample_logits(logits, generator=gen), state)
        _sync(torch, device)
    return batch * steps / (time.perf_counter() - t0)


def _worker(cfg: dict) -> dict:
    import torch

    import sashimi

    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    with torch.no_grad():
        model = build_model(dict(cfg, device=device), torch)
        result = dict(cfg, status="ok", sample_rate=int(model.config.sample_rate),
                      parameters=sum(p.numel() for p in model.parameters()),
                      library=os.path.dirname(os.path.dirname(os.path.abspath(sashimi.__file__))))
        result.update(_time_fast(cfg, model, torch))
        if cfg.get("eager_steps"):
            torch.set_num_threads(1)  # small ops: extra intra-op threads mostly spin
            result["eager_samples_per_s"] = _time_eager(cfg, model, torch)
    return result


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:], _worker, "generate_steps.py"))
