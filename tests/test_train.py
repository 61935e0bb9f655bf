"""Training: config parsing, exact resume, atomic checkpoints, signals, learning, bad input."""
import math
import os
import signal

import numpy as np
import pytest
import torch
import yaml

import sashimi
from conftest import write_sawtooth_wavs
from sashimi.__main__ import main
from sashimi.data.audio import write_wav
from sashimi.data.datasets import CropDataset
from sashimi.train import make_optimizer, train
from sashimi.train.checkpoint import latest_checkpoint, list_checkpoints, save_training_checkpoint
from sashimi.train.config import ConfigError, build_config, help_text

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TINY = ["model_cfg.d_model=8", "model_cfg.n_layers=1", "model_cfg.l_max=256", "seq_len=256", "sample_rate=8000",
        "num_workers=0", "progress=false", "tensorboard=false", "stdout_interval=1000", "batch_size=2"]


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    """Six short noisy-sawtooth files of different lengths (some shorter than a crop)."""
    return write_sawtooth_wavs(tmp_path_factory.mktemp("wavs"), [150 + 120 * i for i in range(6)])


def _cfg(wavs, run, *extra):
    return build_config([f"train_csv={wavs}", f"valid_csv={wavs}", f"checkpoint_path={run}", *TINY, *extra])


# ---- configuration --------------------------------------------------------------------------------
def test_defaults_are_the_seed_sc09_recipe():
    cfg = build_config([])
    assert (cfg.batch_size, cfg.start_lr, cfg.model_cfg.lr, cfg.seq_len, cfg.max_steps) == (8, 4e-3, 1e-3, 16000, 1_100_000)
    assert (cfg.lr_schedule, cfg.plateau_factor, cfg.plateau_patience) == ("plateau", 0.2, 20)
    assert (cfg.checkpoint_interval, cfg.validation_interval, cfg.grad_clip, cfg.seed) == (2500, 1000, 0.0, 1775)
    d = build_config(["model=diffwave"])
    assert (d.start_lr, d.max_steps, d.lr_schedule, d.lr_milestones, d.lr_gamma, d.batch_size) == \
        (2e-4, 800_000, "step", [500_000], 0.2, 8)
    assert type(d.model_cfg).__name__ == "DiffWaveConfig"


def test_overrides_are_typed_and_nested():
    cfg = build_config(["batch_size=4", "start_lr=1e-3", "fp16=false", "model_cfg.pool=[2,2]", "model_cfg.d_model=32",
                        "resume_checkpoint=", "distributed.n_gpus_per_node=1", "max_steps=1_000", "seq_len=4000",
                        "model_cfg.l_max=4000", "lr_milestones=[10,20]"])
    assert (cfg.batch_size, cfg.start_lr, cfg.fp16, cfg.max_steps) == (4, 1e-3, False, 1000)
    assert cfg.model_cfg.pool == [2, 2] and cfg.model_cfg.d_model == 32 and cfg.resume_checkpoint == ""
    assert cfg.lr_milestones == [10, 20]


@pytest.mark.parametrize("args, match", [
    (["batchsize=8"], r"unknown config key 'batchsize' \(did you mean 'batch_size'\?\)"),
    (["model_cfg.dmodel=8"], r"unknown config key 'model_cfg.dmodel'"),
    (["batch_size=eight"], r"'batch_size' expects int, got 'eight'"),
    (["start_lr=fast"], r"'start_lr' expects float"),
    (["fp16=maybe"], r"'fp16' expects bool"),
    (["model_cfg.pool=4x4"], r"'model_cfg.pool\[0\]' expects int"),
    (["batch_size"], r"expected key=value"),
    (["model=gan"], r"'model' must be one of"),
    (["precision=fp8"], r"'precision' must be one of"),
    (["seq_len=20000"], r"'seq_len' \(20000\) must be <= model_cfg.l_max"),
    (["seq_len=1000", "model_cfg.l_max=1000"], r"multiple of the total pooling 16"),
    (["model_cfg.d_model=0"], r"d_model must be a positive integer"),
    (["distributed=3"], r"'distributed' is a section"),
    (["utterance_max_start_ms=-5"], r"'utterance_max_start_ms' must be a finite number >= 0 or none"),
])
def test_bad_config_names_the_key(args, match):
    with pytest.raises(ConfigError, match=match):
        build_config(args)


def test_seed_cfg_yaml_is_accepted(tmp_path):
    seed_yaml = torch.load(os.path.join(FIXTURES, "rf5_ar_small.ckpt.pt"), weights_only=True)["cfg_yaml"]
    path = tmp_path / "seed.yaml"
    path.write_text(seed_yaml)
    cfg = build_config(["batch_size=2"], str(path))
    assert cfg.model_cfg.d_model == 16 and cfg.batch_size == 2 and cfg.train_csv == "splits/sc09-train.csv"
    assert cfg.distributed.dist_backend == "nccl" and cfg.plateau_patience == 20 and cfg.stdout_interval == 100
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch_size: [1, 2]\n")
    with pytest.raises(ConfigError, match="'batch_size' expects int"):
        build_config([], str(bad))


def test_help_lists_every_key_with_type_and_default(capsys):
    text = help_text()
    for key in ("train_csv", "valid_csv", "checkpoint_path", "resume_checkpoint", "batch_size", "seq_len", "max_steps",
                "start_lr", "checkpoint_interval", "validation_interval", "summary_interval", "seed", "fp16",
                "grad_clip", "num_workers", "max_minutes", "model_cfg.d_model", "distributed.dist_backend",
                "plateau_patience", "stdout_interval", "sample_rate", "device"):
        assert f"  {key} " in text, key
    assert "1100000" in text and "int" in text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "model_cfg.l_max" in capsys.readouterr().out


def test_optimizer_groups_s4_state_params():
    cfg = build_config(TINY)
    model = sashimi.SashimiAR(cfg.model_cfg)
    opt = make_optimizer(model, cfg)
    special = {id(p) for p in model.parameters() if hasattr(p, "_optim")}
    assert special and len(opt.param_groups) == 2
    base, s4 = opt.param_groups
    assert (base["lr"], s4["lr"], s4["weight_decay"]) == (4e-3, 1e-3, 0.0)
    assert {id(p) for p in s4["params"]} == special


# ---- resume, checkpoints, stopping ------------------------------------------------------------------
def _params(path):
    return torch.load(path, weights_only=True)


def test_resume_is_exact(wavs, tmp_path):
    # dropout makes the RNG state matter; 6 files / batch 2 = 3 batches per epoch, so the
    # interruption falls mid-epoch; validation every 2 steps drives the plateau scheduler.
    extra = ["batch_size=2", "validation_interval=2", "checkpoint_interval=100", "model_cfg.dropout=0.1",
             "plateau_patience=0", "plateau_factor=0.5"]
    full = train(_cfg(wavs, tmp_path / "full", "max_steps=7", *extra))
    first = train(_cfg(wavs, tmp_path / "split", "max_steps=4", *extra))
    assert first["step"] == 4 and first["stopped"] == "max_steps"
    resumed = train(_cfg(wavs, tmp_path / "split", "max_steps=7", f"resume_checkpoint={first['checkpoint']}", *extra))
    assert resumed["step"] == full["step"] == 7
    a, b = _params(full["checkpoint"]), _params(resumed["checkpoint"])
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    assert a["scheduler"] == b["scheduler"] and a["valid_metric"] == b["valid_metric"]
    assert (a["epoch"], a["batch_in_epoch"]) == (b["epoch"], b["batch_in_epoch"]) == (2, 1)
    # 'last' finds the newest checkpoint; the architecture comes from the checkpoint
    again = train(_cfg(wavs, tmp_path / "split", "max_steps=7", "resume_checkpoint=last", "model_cfg.d_model=16", *extra))
    assert again["step"] == 7 and again["model"].config.d_model == 8


def test_checkpoint_is_a_loadable_model_and_keeps_last_k(wavs, tmp_path):
    out = train(_cfg(wavs, tmp_path / "run", "max_steps=4", "checkpoint_interval=1", "keep_checkpoints=2",
                     "validation_interval=0"))
    assert [s for s, _ in list_checkpoints(str(tmp_path / "run"))] == [3, 4]
    ckpt = torch.load(out["checkpoint"], weights_only=True)
    assert (ckpt["format"], ckpt["kind"], ckpt["step"]) == ("sashimi", "ar", 4)
    assert yaml.safe_load(ckpt["cfg_yaml"])["model_cfg"]["d_model"] == 8
    model = sashimi.load_model(out["checkpoint"])
    assert isinstance(model, sashimi.SashimiAR) and model.config.d_model == 8


def test_killed_checkpoint_write_leaves_previous_intact(wavs, tmp_path, monkeypatch):
    out = train(_cfg(wavs, tmp_path / "run", "max_steps=2", "validation_interval=0"))
    good = out["checkpoint"]
    before = open(good, "rb").read()
    model = sashimi.load_model(good)

    def dying_save(obj, f, *a, **k):  # writes half a file, then the process "dies"
        f.write(b"PK\x03\x04" + b"\x00" * 1000)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_training_checkpoint(str(tmp_path / "run"), 3, model, "ar", {"step": 3, "optimizer": {}, "rng": []})
    monkeypatch.undo()
    assert open(good, "rb").read() == before
    assert [s for s, _ in list_checkpoints(str(tmp_path / "run"))] == [2]
    # a write killed by SIGKILL leaves a stray temp file: never picked up, cleaned by the next save
    (tmp_path / "run" / "ckpt_00000009.pt.tmp999").write_bytes(b"PK\x03\x04junk")
    (tmp_path / "run" / "ckpt_00000008.pt").write_bytes(b"truncated")
    assert latest_checkpoint(str(tmp_path / "run")) == good
    save_training_checkpoint(str(tmp_path / "run"), 10, model, "ar", {"step": 10, "optimizer": {}, "rng": []})
    assert not (tmp_path / "run" / "ckpt_00000009.pt.tmp999").exists()


def test_sigint_saves_and_stops_cleanly(wavs, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = CropDataset.__getitem__

    def getitem(self, index):
        calls["n"] += 1
        if calls["n"] == 5 and self.random_crop:  # while the third batch is being loaded
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, index)

    monkeypatch.setattr(CropDataset, "__getitem__", getitem)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs as a background job (nohup, CI)
    out = train(_cfg(wavs, tmp_path / "run", "batch_size=2", "max_steps=50", "validation_interval=0"))
    assert out["stopped"] == "signal" and out["step"] == 3
    ckpt = torch.load(out["checkpoint"], weights_only=True)
    assert ckpt["step"] == 3 and signal.getsignal(signal.SIGINT) is before  # the handler it found, restored


def test_time_budget_stops_and_saves(wavs, tmp_path):
    out = train(_cfg(wavs, tmp_path / "run", "max_minutes=1e-6", "validation_interval=0"))
    assert out["stopped"] == "max_minutes" and out["step"] == 1 and os.path.isfile(out["checkpoint"])


def test_collate_follows_model_mu_levels(wavs, tmp_path):
    """Tokens are quantised with the model's mu_levels, not a fixed 256."""
    out = train(_cfg(wavs, tmp_path / "run", "model_cfg.mu_levels=64", "max_steps=2", "validation_interval=2"))
    assert out["step"] == 2 and math.isfinite(out["valid"])


# ---- learning ---------------------------------------------------------------------------------------
def test_tiny_model_learns_structure(tmp_path):
    """A period-16 sawtooth has a unigram entropy of ln 16 = 2.77 nats; context makes it predictable."""
    d = tmp_path / "saw"
    os.makedirs(d)
    rng = np.random.default_rng(1)
    for i in range(8):
        t = np.arange(600) + rng.integers(16)
        write_wav(d / f"{i}.wav", 0.6 * ((t % 16) / 8.0 - 1), 8000)
    out = train(build_config([f"train_csv={d}", f"valid_csv={d}", f"checkpoint_path={tmp_path / 'run'}", *TINY,
                              "batch_size=4", "start_lr=1e-2", "max_steps=40", "validation_interval=40"]))
    unigram_bits = 4.0
    assert out["valid"] < 0.5 * unigram_bits, out


# ---- bad input through the command line ----------------------------------------------------------------
def test_cli_errors_name_the_problem(wavs, tmp_path, capsys):
    base = [f"checkpoint_path={tmp_path / 'run'}", *TINY, "max_steps=1"]
    empty = tmp_path / "empty.csv"
    empty.write_text("path\n")
    bad = tmp_path / "bad"
    os.makedirs(bad)
    (bad / "x.wav").write_text("not a wav")
    cases = [(["train_csv=" + str(tmp_path / "nope.csv")], "nope.csv"),
             ([f"train_csv={empty}"], "empty.csv: the CSV lists no files"),
             ([f"train_csv={bad}"], "x.wav: not a readable audio file"),
             ([f"train_csv={wavs}", "batch_size=7"], "fewer than batch_size"),
             ([f"train_csv={wavs}", "bacth_size=2"], "unknown config key 'bacth_size'"),
             ([f"train_csv={wavs}", "resume_checkpoint=" + str(tmp_path / "gone.pt")], "gone.pt"),
             (["model_cfg.d_model=8"], "'train_csv' is required")]
    for args, message in cases:
        assert main(["train", *base, *args]) == 2, args
        assert message in capsys.readouterr().err, args


def test_print_config(capsys):
    assert main(["train", "--print-config", "batch_size=3"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["batch_size"] == 3


# ---- the diffusion task -------------------------------------------------------------------------------
def test_diffwave_task_trains_and_checkpoints(wavs, tmp_path):
    cfg = build_config([f"train_csv={wavs}", f"valid_csv={wavs}", f"checkpoint_path={tmp_path / 'run'}", "model=diffwave",
                        "model_cfg.d_model=8", "model_cfg.n_layers=1", "model_cfg.l_max=64", "model_cfg.d_state=16", "model_cfg.d_step_embed=8",
                        "model_cfg.d_step_hidden=16", "model_cfg.T=10", "seq_len=64", "sample_rate=8000", "num_workers=0",
                        "progress=false", "tensorboard=false", "batch_size=2", "max_steps=2", "validation_interval=2",
                        "lr_milestones=[1]"])
    out = train(cfg)
    assert out["step"] == 2 and np.isfinite(out["valid"])
    ckpt = torch.load(out["checkpoint"], weights_only=True)
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(2e-4 * 0.2)
    assert type(sashimi.load_model(out["checkpoint"])).__name__ == "SashimiDiffWave"


def test_eval_protocol_matches_model_nll(wavs):
    """CropDataset(lead=1, crop=L+1) + ARCollate + the AR metric == SashimiAR.nll with lengths."""
    from sashimi.data.audio import read_audio
    from sashimi.data.datasets import ARCollate, list_audio_files
    from sashimi.train.tasks import ar_metric

    files = list_audio_files(wavs)
    model = sashimi.SashimiAR(build_config(TINY).model_cfg).eval()
    batch = ARCollate()([CropDataset(files, 8000, 257, lead=1, random_crop=False)[i] for i in range(len(files))])
    with torch.no_grad():
        total, count = ar_metric(model, batch, 0)
    waves = [read_audio(f)[0][:256] for f in files]
    lengths = torch.tensor([len(w) for w in waves])
    padded = torch.stack([torch.nn.functional.pad(w, (0, 256 - len(w))) for w in waves])
    per_file = model.nll(padded, lengths)
    assert int(count) == int(lengths.sum())
    assert float(total) == pytest.approx(float((per_file * lengths).sum()), rel=1e-5)


def test_tensorboard_is_optional(wavs, tmp_path, capsys):
    out = train(_cfg(wavs, tmp_path / "run", "max_steps=2", "validation_interval=2", "tensorboard=true",
                     "summary_interval=1", "audio_samples=1", "audio_sample_len=32"))
    assert out["step"] == 2
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert "tensorboard is not installed" in capsys.readouterr().out
    else:
        logs = os.listdir(tmp_path / "run" / "logs")
        assert any(name.startswith("events.out.tfevents") for name in logs)


def test_the_documented_training_names_import():
    from sashimi.train import launch, make_optimizer, train  # noqa: F401  (the documented names)
