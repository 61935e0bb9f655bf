"""Mixed precision (``precision=bf16``): bf16 autocast on a CPU, through the training loop's own step.

On a GPU ``precision=auto`` picks bf16, so this is the path every GPU user trains on; these tests
run it on a CPU (autocast takes its device type from the device) with tiny models.
"""
import pytest
import torch

import sashimi
from conftest import write_sawtooth_wavs
from sashimi.train import train
from sashimi.train.config import ConfigError, build_config
from sashimi.data.datasets import CropDataset, list_audio_files
from sashimi.train.loop import make_optimizer, resolve_precision, train_step
from sashimi.train.tasks import get_task

SMALL = {
    "ar": ["model_cfg.d_model=16", "model_cfg.n_layers=2", "model_cfg.l_max=256", "seq_len=256", "sample_rate=8000"],
    "diffwave": ["model_cfg.d_model=16", "model_cfg.n_layers=2", "model_cfg.l_max=256", "model_cfg.d_state=16",
                 "model_cfg.d_step_embed=16", "model_cfg.d_step_hidden=32", "model_cfg.T=50", "seq_len=256",
                 "sample_rate=8000"],
}
STEPS, BATCH = 4, 4

# Tolerances, bf16 against float32 over the same STEPS optimizer steps (each run follows its own
# weights). bf16 keeps 8 significant bits: one rounding is up to 2^-9 ~ 2e-3 relative, and a
# gradient goes through ~20 rounded matmuls forward and back, so errors of ~1e-2 are what bf16 is.
# Measured over 5 initialisations (max): AR loss 4.5e-5, gradient 1.5e-2, per tensor 2.6e-2,
# weights 4.3e-5; DiffWave 4.5e-6, 4.9e-3, 1.2e-2, 4.9e-6. Each bound is ~3x (or more) the worst
# of those, far below what a float32 region computed in bf16 would give (errors of order 1).
LOSS_RTOL = 1e-3     # the loss averages B x L roundings of random sign, and is computed in float32
GRAD_RTOL = 5e-2     # |g_bf16 - g_fp32| / |g_fp32| over all parameters at once
TENSOR_RTOL = 1e-1   # per parameter tensor, relative to |g_p| + TENSOR_FLOOR |g|: some gradients are
TENSOR_FLOOR = 1e-2  # zero in exact arithmetic (weight-norm direction of a 1-input conv): pure noise
WEIGHT_RTOL = 1e-3   # |w_bf16 - w_fp32| / |w_fp32| after the steps (lr 4e-3 / 2e-4 moves them ~1e-3)


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    return write_sawtooth_wavs(tmp_path_factory.mktemp("wavs"), [300 + 120 * i for i in range(8)])


def _run(model_name: str, precision: str, files: str, *, seed: int = 0):
    """STEPS steps of the training loop's step function on the task's own data pipeline.

    Returns: per step (loss, [gradient per parameter]), the final parameters, their names, and
    the dtypes that the model's output layer produced."""
    cfg = build_config([f"model={model_name}", *SMALL[model_name]])
    task = get_task(model_name)
    torch.manual_seed(seed)
    model = task.build_model(cfg.model_cfg).train()
    optimizer = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cpu", enabled=False)  # what the loop uses for bf16
    data = CropDataset(list_audio_files(files), cfg.model_cfg.sample_rate, cfg.seq_len + task.crop_extra,
                       lead=task.lead, seed=seed)
    collate = task.make_collate(cfg.model_cfg)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    out_layer = model.head if model_name == "ar" else model.final_proj
    dtypes = set()
    hook = out_layer.register_forward_hook(lambda mod, args, out: dtypes.add(out.dtype))
    steps = []
    for s in range(STEPS):
        batch = collate([data[(s * BATCH + i) % len(data)] for i in range(BATCH)])
        torch.manual_seed(100 + s)  # the diffusion loss draws steps and noise: the same for both runs
        loss, _ = train_step(model, task.loss, batch, optimizer, scaler, precision, params)
        steps.append((loss.item(), [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]))
    hook.remove()
    return steps, [p.detach().clone() for p in params], [n for n, _ in named], dtypes


def _flat(tensors):
    return torch.cat([t.flatten() for t in tensors])


@pytest.mark.parametrize("model_name", ["ar", "diffwave"])
def test_bf16_steps_stay_finite_and_close_to_float32(model_name, wavs):
    ref, ref_w, names, ref_dtypes = _run(model_name, "fp32", wavs)
    bf, bf_w, _, bf_dtypes = _run(model_name, "bf16", wavs)
    # autocast really ran in bf16 (else this would compare float32 with itself)
    assert ref_dtypes == {torch.float32} and bf_dtypes == {torch.bfloat16}
    for step, ((loss32, g32), (loss16, g16)) in enumerate(zip(ref, bf)):
        assert torch.isfinite(torch.tensor(loss16)) and all(torch.isfinite(g).all() for g in g16), step
        assert abs(loss16 - loss32) <= LOSS_RTOL * abs(loss32), (step, loss16, loss32)
        total = _flat(g32).norm()
        assert (_flat(g16) - _flat(g32)).norm() <= GRAD_RTOL * total, step
        for name, a, b in zip(names, g32, g16):
            assert (b - a).norm() <= TENSOR_RTOL * (a.norm() + TENSOR_FLOOR * total), (step, name)
    assert (_flat(bf_w) - _flat(ref_w)).norm() <= WEIGHT_RTOL * _flat(ref_w).norm()
    assert _flat(bf_w).dtype == torch.float32  # autocast computes in bf16, the weights stay float32


# ---- the real entry: resume, checkpoint, generation ---------------------------------------------
TINY = ["model_cfg.d_model=16", "model_cfg.n_layers=1", "model_cfg.l_max=256", "seq_len=256", "sample_rate=8000",
        "num_workers=0", "progress=false", "tensorboard=false", "stdout_interval=1", "batch_size=2",
        "precision=bf16", "validation_interval=2", "checkpoint_interval=100", "model_cfg.dropout=0.1",
        "plateau_patience=0", "plateau_factor=0.5"]


def _cfg(wavs, run, *extra):
    return build_config([f"train_csv={wavs}", f"valid_csv={wavs}", f"checkpoint_path={run}", *TINY, *extra])


@pytest.fixture(scope="module")
def bf16_run(wavs, tmp_path_factory):
    """Seven bf16 steps in one go (8 files / batch 2: the split at step 3 falls mid-epoch)."""
    return train(_cfg(wavs, tmp_path_factory.mktemp("full"), "max_steps=7"))


def test_bf16_resume_is_exact(wavs, tmp_path, bf16_run, capsys):
    first = train(_cfg(wavs, tmp_path, "max_steps=3"))
    assert "on cpu (bf16)" in capsys.readouterr().out  # the run says it autocasts
    resumed = train(_cfg(wavs, tmp_path, "max_steps=7", f"resume_checkpoint={first['checkpoint']}"))
    assert resumed["step"] == bf16_run["step"] == 7
    a = torch.load(bf16_run["checkpoint"], weights_only=True)
    b = torch.load(resumed["checkpoint"], weights_only=True)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert resumed["loss"] == bf16_run["loss"]  # stdout_interval=1: the loss of step 7
    assert a["valid_metric"] == b["valid_metric"] and a["scheduler"] == b["scheduler"]
    assert a["train_config"]["precision"] == "bf16"


def test_generation_from_bf16_checkpoint(bf16_run):
    model = sashimi.load_model(bf16_run["checkpoint"])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    wav = model.unconditional_generate(2, length=200, seed=0, progress=False)
    assert wav.shape == (2, 200) and wav.dtype == torch.float32
    assert torch.isfinite(wav).all() and wav.abs().max() <= 1.0


# ---- what precision=auto means --------------------------------------------------------------------
def test_auto_precision_is_fp32_on_cpu_and_bf16_only_where_native(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"  # opt-in on a CPU
    with pytest.raises(ConfigError, match="fp16"):
        resolve_precision("auto", cpu, fp16=True)
    # GPUs, without one: the choice reads the device's compute capability only
    monkeypatch.setattr(torch.version, "hip", None)
    for capability, expected in (((7, 0), "fp32"), ((7, 5), "fp32"), ((8, 0), "bf16"), ((9, 0), "bf16")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert resolve_precision("auto", torch.device("cuda", 1)) == expected, capability
    assert resolve_precision("auto", torch.device("cuda", 0), fp16=True) == "fp16"
