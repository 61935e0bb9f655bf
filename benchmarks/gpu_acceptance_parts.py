"""The measurements of ``benchmarks/gpu_acceptance.py``: one function per part, each taking a
:class:`Part` (device, size, where to record) and recording checks and numbers as it goes, so
that a part stopped at its time limit keeps what it had measured.

Only the public API of ``sashimi`` is used (``ARConfig``, ``SashimiAR``, ``mulaw_decode``,
``sashimi.ops``, ``sashimi.fastgen``, ``sashimi.train``, ``sashimi.data.audio``, ``sashimi.cuda_toolkit``),
because the package's internals are being reorganised.
"""
from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import sashimi
from sashimi import ARConfig, SashimiAR, fastgen, mulaw_decode
from sashimi.ops import cauchy, cauchy_backend, cauchy_ref

ROOT = Path(__file__).resolve().parent.parent
# Teacher-forced logits of the fast engine against the eager 'dense' step (tests/test_fastgen.py
# asserts 1e-5 on its small model; the SC09 model is deeper), and against convolution mode.
ENGINE_TOL = 1e-4
CONV_TOL = 1e-3
# Relative error of a Cauchy backend against cauchy_ref in complex128 (as the backends' own probe).
CAUCHY_TOL = {torch.complex64: 1e-4, torch.complex128: 1e-10}


class Part:
    """What a part function works with.

    Args:
        name: the part's name.
        device: torch device the models run on ('cuda' on the GPU machine, 'cpu' in --dry-run).
        tiny: True in --dry-run: tiny models and sizes, just to exercise the code.
        path: JSON file the result is written to after every check and measurement.
    """

    def __init__(self, name: str, device: str, tiny: bool, path: str | None = None):
        self.name, self.device, self.tiny, self.path = name, torch.device(device), tiny, path
        self.result = {"checks": [], "data": {}}

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        self.result["checks"].append({"name": name, "passed": bool(passed), "detail": detail})
        self.save()
        return bool(passed)

    def record(self, key: str, value) -> None:
        self.result["data"][key] = value
        self.save()

    def save(self) -> None:
        if self.path:
            tmp = f"{self.path}.tmp"
            with open(tmp, "w") as f:
                json.dump(self.result, f, indent=1, default=str)
            os.replace(tmp, self.path)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def sc09_model(part: Part, seed: int = 0) -> SashimiAR:
    """The SC09 architecture (ARConfig's defaults: 4.8M parameters) with random weights; a tiny
    model of the same shape family in --dry-run."""
    torch.manual_seed(seed)
    cfg = ARConfig(d_model=8, n_layers=1, l_max=256) if part.tiny else ARConfig()
    return SashimiAR(cfg).to(part.device)


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.to(want) - want).abs().max() / want.abs().max().clamp_min(1e-300))


# ---- env -------------------------------------------------------------------------------------
def part_env(part: Part) -> None:
    """Versions, the GPU(s), and the CUDA toolkit a build would use."""
    from sashimi.cuda_toolkit import CudaToolkitNotFound, find_cuda_toolkit

    part.record("python", platform.python_version())
    part.record("torch", torch.__version__)
    part.record("torch_cuda", torch.version.cuda)
    part.record("sashimi", str(Path(sashimi.__file__).parent))
    devices = [{"name": torch.cuda.get_device_name(i),
                "capability": "%d.%d" % torch.cuda.get_device_capability(i),
                "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
               for i in range(torch.cuda.device_count())]
    part.record("gpus", devices)
    part.record("bf16_supported", torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        part.record("nvidia_smi", out.stdout.strip() or out.stderr.strip())
    try:
        tk = find_cuda_toolkit(cuda_version=torch.version.cuda)
        part.record("cuda_toolkit", {"home": tk.home, "version": tk.version, "source": tk.source})
    except CudaToolkitNotFound as e:
        part.record("cuda_toolkit", f"not found: {e}")
    if part.device.type == "cuda":
        part.check("a CUDA GPU is visible", bool(devices), f"{len(devices)} GPU(s)")
    else:
        part.check("torch and sashimi import", True, f"torch {torch.__version__}")


# ---- Cauchy backends -------------------------------------------------------------------------
def cauchy_sizes(tiny: bool) -> dict:
    """Problem sizes as S4 layers of the SC09 model see them: v (2, 2, H, N), w (H, N), L nodes."""
    if tiny:
        return {"tiny": ((2, 2, 3, 4), (3, 4), 37)}
    return {"sc09_outer (H 64, N 32, L 8001)": ((2, 2, 64, 32), (64, 32), 8001),
            "sc09_center (H 256, N 32, L 501)": ((2, 2, 256, 32), (256, 32), 501)}


def _cauchy_problem(v_shape, w_shape, L, device, seed=0):
    """complex128 v, w (stable poles), the nodes z (bilinear images of the roots of unity of a
    2 (L - 1) point FFT, as S4 computes them) and a cotangent g for the backward pass."""
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    v = torch.randn(v_shape, dtype=torch.complex128, generator=gen)
    w = torch.complex(-torch.rand(w_shape, dtype=f64, generator=gen) - 0.05,
                      3 * torch.randn(w_shape, dtype=f64, generator=gen))
    omega = torch.exp(-2j * math.pi * torch.arange(L, dtype=f64) / (2 * (L - 1)))  # (L,) half the roots
    z = 2 * (1 - omega) / (1 + omega)  # |z| ~ 1e16 at Nyquist, where 1 + omega is round-off
    g = torch.randn(*torch.broadcast_shapes(v_shape, w_shape)[:-1], L, dtype=torch.complex128, generator=gen)
    return [t.to(device) for t in (v, z, w, g)]


def _forward_backward(fn, v, z, w, g):
    v, w = v.detach().requires_grad_(), w.detach().requires_grad_()
    r = fn(v, z, w)
    gv, gw = torch.autograd.grad((r * g.to(r.dtype).conj()).real.sum(), (v, w))
    return r.detach(), gv, gw


def part_cauchy(part: Part) -> None:
    """Every backend against cauchy_ref (complex128), forward and backward, complex64 and
    complex128, at the sizes of :func:`cauchy_sizes`, with the time of forward + backward."""
    gpu = part.device.type == "cuda"
    part.record("auto_backend", {"cpu": cauchy_backend("cpu"), **({"cuda": cauchy_backend(part.device)} if gpu else {})})
    # In --dry-run only the always-available PyTorch backend runs ('cpu' would compile its kernel).
    backends = [("torch", part.device), ("cuda", part.device), ("keops", part.device), ("cpu", torch.device("cpu"))]
    if part.tiny:
        backends = [("torch", part.device)]
    for size, (v_shape, w_shape, L) in cauchy_sizes(part.tiny).items():
        v, z, w, g = _cauchy_problem(v_shape, w_shape, L, part.device)
        want = _forward_backward(cauchy_ref, v, z, w, g)
        for name, dev in backends:
            try:
                cauchy_backend(dev, backend=name)
            except RuntimeError as e:  # not usable here: recorded, not a failure of this part
                part.record(f"{size} / {name}", f"unavailable: {e}")
                continue
            for dtype in (torch.complex64, torch.complex128):
                args = [t.to(device=dev, dtype=dtype) for t in (v, z, w, g)]
                fn = lambda v, z, w: cauchy(v, z, w, backend=name)  # noqa: E731
                got = _forward_backward(fn, *args)
                errs = [_rel_err(a.to(part.device), b) for a, b in zip(got, want)]
                times = []
                for _ in range(1 if part.tiny else 5):
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    t0 = time.perf_counter()
                    _forward_backward(fn, *args)
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    times.append(time.perf_counter() - t0)
                key = f"{size} / {name} / {str(dtype).removeprefix('torch.')}"
                part.record(key, {"rel_err_forward": errs[0], "rel_err_grad_v": errs[1], "rel_err_grad_w": errs[2],
                                  "fwd_bwd_ms_median": round(1e3 * sorted(times)[len(times) // 2], 3)})
                part.check(key, max(errs) < CAUCHY_TOL[dtype],
                           f"relative errors {', '.join(f'{e:.1e}' for e in errs)} (limit {CAUCHY_TOL[dtype]:.0e})")


# ---- the generation engine -------------------------------------------------------------------
def _eager_logits(model: SashimiAR, tokens: torch.Tensor) -> torch.Tensor:
    """The reference: the eager 'dense' step fed ``tokens`` (B, T) -> logits (B, T, 256)."""
    model.setup_rnn("dense")
    state = model.default_state(tokens.size(0))
    out = []
    with torch.no_grad():
        for t in range(tokens.size(1)):
            logits, state = model.step(tokens[:, t], state)
            out.append(logits)
    return torch.stack(out, 1)


def _engine_kind(part: Part) -> str:
    # The GPU engine on a GPU; in --dry-run the same step in plain PyTorch (the 'cpp' engine
    # would compile its C++ step first).
    return "cuda-graphs" if part.device.type == "cuda" else "torch"


def part_engine(part: Part) -> None:
    """CUDA-graph engine vs the eager loop: teacher-forced logits, then sampled audio."""
    model = sc09_model(part).eval()
    T = 16 if part.tiny else 512
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 256, (2, T), generator=gen).to(part.device)
    tokens[:, 0] = sashimi.SILENCE_TOKEN
    kind = _engine_kind(part)
    t0 = time.perf_counter()
    fast = fastgen.teacher_forced_logits(model, tokens, kind=kind)
    part.sync()
    part.record("teacher_forced_s", {"fast": round(time.perf_counter() - t0, 3)})
    t0 = time.perf_counter()
    eager = _eager_logits(model, tokens)
    part.sync()
    part.result["data"]["teacher_forced_s"]["eager_dense"] = round(time.perf_counter() - t0, 3)
    with torch.no_grad():
        conv = model(tokens)  # convolution mode: the training forward
    d_eager = float((fast - eager).abs().max())
    d_conv = float((conv - eager).abs().max())
    part.record("max_abs_logit", float(eager.abs().max()))
    part.check(f"{kind} engine = eager dense step, {T} steps teacher-forced", d_eager <= ENGINE_TOL,
               f"max |logit difference| {d_eager:.2e} (limit {ENGINE_TOL:.0e})")
    part.check(f"convolution mode = eager dense step, {T} steps", d_conv <= CONV_TOL,
               f"max |logit difference| {d_conv:.2e} (limit {CONV_TOL:.0e})")
    length = 16 if part.tiny else 4000
    for name, make in (("fast", lambda: _sample(model, 4, length, kind if part.tiny else None)),
                       ("eager", lambda: model.unconditional_generate(2, length=min(length, 300), engine="eager",
                                                                       seed=0, progress=False))):
        t0 = time.perf_counter()
        wav = make()
        part.sync()
        ok = wav.dim() == 2 and wav.size(1) == (length if name == "fast" else min(length, 300))
        finite = bool(torch.isfinite(wav).all()) and float(wav.abs().max()) <= 1.0
        part.check(f"{name} sampling: shape and finite values", ok and finite,
                   f"shape {tuple(wav.shape)}, finite in [-1, 1]: {finite}, {time.perf_counter() - t0:.1f} s")
    if not part.tiny:
        part.record("engine_used", fastgen.get_engine(model, 4).name)


def _sample(model: SashimiAR, batch: int, length: int, kind: str | None) -> torch.Tensor:
    """float (batch, length) audio from the fast engine: the public ``unconditional_generate``
    (kind None: the engine it picks for the model's device), or ``kind``'s engine directly."""
    if kind is None:
        return model.unconditional_generate(batch, length=length, engine="fast", seed=0, progress=False)
    prefix = torch.empty(batch, 0, dtype=torch.long, device=model.device)
    gen = torch.Generator(model.device).manual_seed(0)
    return mulaw_decode(fastgen.generate_tokens(model, prefix, length, generator=gen, kind=kind))


def part_gen_speed(part: Part) -> None:
    """Samples/s and real-time factor of the fast engine, SC09 architecture, batch 1, 16, 256."""
    model = sc09_model(part).eval()
    rate = model.config.sample_rate
    kind = _engine_kind(part) if part.tiny else None  # None: the engine generation picks for the device
    for batch in ((1, 2) if part.tiny else (1, 16, 256)):
        warm = 8 if part.tiny else 512
        t0 = time.perf_counter()
        _sample(model, batch, warm, kind)  # builds the engine, captures its graphs
        part.sync()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        _sample(model, batch, warm, kind)
        part.sync()
        per_step = (time.perf_counter() - t0) / warm
        # About 3 s of timed generation, between 2,048 samples and one second of audio.
        length = 16 if part.tiny else int(min(rate, max(2048, 3.0 / per_step)))
        t0 = time.perf_counter()
        wav = _sample(model, batch, length, kind)
        part.sync()
        secs = time.perf_counter() - t0
        sps = batch * length / secs
        part.record(f"batch {batch}", {
            "samples_per_s": round(sps), "realtime_factor": round(sps / rate, 3),
            "per_sequence_realtime_factor": round(length / rate / secs, 3), "length": length,
            "seconds": round(secs, 3), "first_call_s": round(first, 2), "us_per_step": round(1e6 * secs / length, 1),
            "engine": fastgen.get_engine(model, batch).name if kind is None else kind})
        part.check(f"batch {batch}: finite audio", bool(torch.isfinite(wav).all()), f"{sps:,.0f} samples/s")


# ---- training --------------------------------------------------------------------------------
def part_train(part: Part) -> None:
    """Training steps of the SC09 model (AdamW with the recipe's parameter groups), batch 8 and
    32 of one-second crops, fp32 and bf16 autocast: step time and peak memory."""
    from sashimi.train import TrainConfig, make_optimizer

    batches, seq, steps = ((2,), 64, 0) if part.tiny else ((8, 32), 16000, 3)
    for batch in batches:
        first_loss = {}
        for precision in ("fp32", "bf16"):
            model = sc09_model(part, seed=1775).train()
            opt = make_optimizer(model, TrainConfig())
            gen = torch.Generator().manual_seed(1)
            tokens = torch.randint(0, 256, (batch, seq + 1), generator=gen).to(part.device)
            x, y = tokens[:, :-1], tokens[:, 1:]
            if part.device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(part.device)
            times, losses = [], []
            for _ in range(1 + steps):  # the first step warms up (cuFFT plans, autotuning)
                part.sync()
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                with torch.autocast(part.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    logits = model(x)  # (B, L, 256)
                loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
                loss.backward()
                opt.step()
                part.sync()
                times.append(time.perf_counter() - t0)
                losses.append(loss.item())
            timed = times[1:] or times
            peak = torch.cuda.max_memory_allocated(part.device) / 2**30 if part.device.type == "cuda" else None
            first_loss[precision] = losses[0]
            part.record(f"batch {batch} {precision}", {
                "step_s_mean": round(sum(timed) / len(timed), 4), "step_s_min": round(min(timed), 4),
                "first_step_s": round(times[0], 3), "max_memory_allocated_gib": peak and round(peak, 3),
                "samples_per_s": round(batch * seq / (sum(timed) / len(timed))), "losses": [round(v, 5) for v in losses],
                "cauchy_backend": cauchy_backend(part.device)})
            part.check(f"batch {batch} {precision}: finite losses", all(map(math.isfinite, losses)),
                       f"{sum(timed) / len(timed):.3f} s/step" + (f", peak {peak:.2f} GiB" if peak else ""))
            del model, opt, logits, loss
        diff = abs(first_loss["bf16"] - first_loss["fp32"])
        part.check(f"batch {batch}: bf16 first loss close to fp32", diff < 0.05,
                   f"|{first_loss['bf16']:.4f} - {first_loss['fp32']:.4f}| = {diff:.1e} (limit 5e-2)")


# ---- DDP -------------------------------------------------------------------------------------
def ddp_command(data: str, run: str, nproc: int, tiny: bool) -> list[str]:
    """torchrun over ``train.py`` for 2 steps of the SC09 model on the WAVs in ``data``."""
    args = [f"train_csv={data}", f"valid_csv={data}", f"checkpoint_path={run}", "max_steps=2", "batch_size=8",
            "seq_len=16000", "num_workers=0", "progress=false", "tensorboard=false", "validation_interval=1000"]
    if tiny:
        args += ["model_cfg.d_model=8", "model_cfg.n_layers=1", "model_cfg.l_max=256", "seq_len=256", "batch_size=2",
                 "device=cpu"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            str(ROOT / "train.py"), *args]


def part_ddp(part: Part, timeout: float = 240) -> None:
    """Two processes, one GPU each, 2 training steps through train.py (skipped with fewer GPUs;
    in --dry-run the command and its config are checked, not run)."""
    from sashimi.data.audio import write_wav
    from sashimi.train import build_config

    n = torch.cuda.device_count()
    if part.device.type == "cuda" and n < 2:
        part.result["skipped"] = f"{n} GPU visible: a DDP run needs 2"
        part.save()
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "wavs"
        data.mkdir()
        gen = torch.Generator().manual_seed(0)
        for i in range(16):  # 16 one-second clips of quiet noise at 16 kHz
            write_wav(data / f"{i}.wav", 0.1 * torch.randn(16000, generator=gen), 16000)
        cmd = ddp_command(str(data), str(Path(tmp) / "run"), 2, part.tiny)
        part.record("command", " ".join(cmd))
        build_config(cmd[cmd.index(str(ROOT / "train.py")) + 1:])  # raises on a bad key
        part.check("train.py accepts the DDP run's config", True)
        if part.tiny:
            return
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="4")
        t0 = time.perf_counter()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        part.record("seconds", round(time.perf_counter() - t0, 1))
        part.record("output_tail", (out.stdout + out.stderr)[-3000:])
        ckpts = sorted(p.name for p in (Path(tmp) / "run").glob("ckpt_*.pt"))
        part.check("2 DDP steps on 2 GPUs (NCCL)", out.returncode == 0 and "ckpt_00000002.pt" in ckpts,
                   f"exit {out.returncode}, checkpoints {ckpts}")


PARTS = {"env": part_env, "cauchy": part_cauchy, "engine": part_engine, "gen_speed": part_gen_speed,
         "train": part_train, "ddp": part_ddp}
