"""Issue 19, items 9 and 11 (training): a resumed run trains with the settings it is given; the
S4 learning rate must be positive; a run stopped by a signal says so in its exit status."""
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import write_sawtooth_wavs
from sashimi import ARConfig, DiffWaveConfig
from sashimi.train import train
from sashimi.train.config import ConfigError, build_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["model_cfg.d_model=8", "model_cfg.n_layers=1", "model_cfg.l_max=256", "seq_len=256", "sample_rate=8000",
        "num_workers=0", "progress=false", "tensorboard=false", "batch_size=2", "validation_interval=0"]


@pytest.fixture
def wavs(tmp_path):
    (tmp_path / "wavs").mkdir()
    return write_sawtooth_wavs(tmp_path / "wavs", [300 + 50 * i for i in range(4)])


def _lrs(path):
    groups = torch.load(path, weights_only=True)["optimizer"]["param_groups"]
    return [(g["lr"], g["initial_lr"], g["weight_decay"]) for g in groups]


def test_item9_resume_trains_at_the_start_lr_it_is_given(wavs, tmp_path, capsys):
    run = tmp_path / "run"
    common = [f"train_csv={wavs}", f"checkpoint_path={run}", *TINY, "checkpoint_interval=2"]
    train(build_config([*common, "max_steps=2", "start_lr=1e-3", "lr_schedule=step", "lr_milestones=[1]",
                        "lr_gamma=0.5"]))
    assert _lrs(run / "ckpt_00000002.pt")[0] == (5e-4, 1e-3, 0.0)  # step schedule: x0.5 after step 1
    capsys.readouterr()
    out = train(build_config([*common, "max_steps=4", "start_lr=4e-3", "weight_decay=0.01", "lr_schedule=step",
                              "lr_milestones=[1]", "lr_gamma=0.5", "resume_checkpoint=last"]))
    assert out["step"] == 4
    lr, initial, decay = _lrs(run / "ckpt_00000004.pt")[0]
    assert (lr, initial, decay) == (2e-3, 4e-3, 0.01)  # the new rate, with the schedule's factor kept
    text = capsys.readouterr().out
    assert "resumed with start_lr 0.004 instead of the checkpoint's 0.001" in text
    assert "weight_decay 0.01 instead of the checkpoint's 0" in text
    recorded = torch.load(run / "ckpt_00000004.pt", weights_only=True)["train_config"]
    assert recorded["start_lr"] == 4e-3 and recorded["weight_decay"] == 0.01  # records what it trained with


def test_item9_resume_with_unchanged_settings_changes_nothing(wavs, tmp_path, capsys):
    run = tmp_path / "run"
    common = [f"train_csv={wavs}", f"checkpoint_path={run}", *TINY, "checkpoint_interval=1"]
    train(build_config([*common, "max_steps=1"]))
    capsys.readouterr()
    train(build_config([*common, "max_steps=2", "resume_checkpoint=last"]))
    assert "resumed with" not in capsys.readouterr().out
    assert _lrs(run / "ckpt_00000002.pt") == _lrs(run / "ckpt_00000001.pt")


@pytest.mark.parametrize("lr", ["-0.001", "0", "nan", "inf"])
def test_item9_the_s4_learning_rate_must_be_positive(lr):
    with pytest.raises(ConfigError, match=r"lr must be a finite number > 0"):
        build_config([f"model_cfg.lr={lr}"])
    with pytest.raises(ValueError, match=r"ARConfig\.lr must be a finite number > 0"):
        ARConfig(lr=float(lr))
    with pytest.raises(ValueError, match=r"DiffWaveConfig\.lr must be a finite number > 0"):
        DiffWaveConfig(lr=float(lr))
    assert DiffWaveConfig(lr=None).lr is None and math.isclose(ARConfig().lr, 1e-3)


def test_item11_training_stopped_by_ctrl_c_exits_130(wavs, tmp_path):
    """A stopped run says so in its exit status (it saves a checkpoint first, as before)."""
    args = [f"train_csv={wavs}", f"checkpoint_path={tmp_path / 'run'}", *TINY, "max_steps=100000",
            "stdout_interval=1"]
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("step 1 "):
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "stopped (signal)" in out and "resume with resume_checkpoint=" in out
    assert any(name.startswith("ckpt_") for name in os.listdir(tmp_path / "run"))
