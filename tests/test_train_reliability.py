"""Training reliability: errors end the run promptly, runs never mix checkpoints, honest progress."""
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import sashimi
from sashimi.audio import AudioError, read_audio, write_wav
from sashimi.train import train
from sashimi.train.checkpoint import list_checkpoints
from sashimi.train.config import ConfigError, build_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["model_cfg.d_model=8", "model_cfg.n_layers=1", "model_cfg.l_max=256", "seq_len=256", "sample_rate=8000",
        "num_workers=0", "progress=false", "tensorboard=false", "stdout_interval=1000", "batch_size=2",
        "validation_interval=0"]


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    """Six short noisy-sawtooth files."""
    d = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(0)
    for i in range(6):
        n = 300 + 50 * i
        t = np.arange(n) + rng.integers(16)
        write_wav(d / f"{i}.wav", 0.6 * ((t % 16) / 8.0 - 1) + 0.05 * rng.standard_normal(n), 8000)
    return str(d)


def _cfg(wavs, run, *extra):
    return build_config([f"train_csv={wavs}", f"checkpoint_path={run}", *TINY, *extra])


def _steps(run):
    return [s for s, _ in list_checkpoints(str(run))]


# ---- 1. any error ends the run, promptly, whatever num_workers ---------------------------------------
def test_non_finite_audio_is_refused_when_read(tmp_path):
    path = tmp_path / "nan.wav"
    sf.write(path, np.array([0.1, np.nan] * 100, "f4"), 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: contains NaN or infinite samples"):
        read_audio(path)
    sf.write(path, np.array([0.1, np.inf] * 100, "f4"), 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: contains NaN"):
        read_audio(path, 16000)


def _run_cli(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """``python train.py *args`` in a subprocess; a hang fails the test instead of blocking it."""
    try:
        return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the training process did not exit within {timeout} s (hung); stderr: {e.stderr}")


def test_data_error_in_a_worker_ends_the_process(wavs, tmp_path):
    """A NaN file read by a DataLoader worker: one line naming the file, exit status 2, no hang."""
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.array([0.1, np.nan] * 200, "f4"), 8000, subtype="FLOAT")
    csv = tmp_path / "data.csv"
    csv.write_text(f"path\n{os.path.join(wavs, '0.wav')}\n{nan}\n")  # both in the first batch
    args = [f"train_csv={csv}", f"checkpoint_path={tmp_path / 'run'}", *TINY, "num_workers=2", "max_steps=50"]
    proc = _run_cli(args)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "nan.wav: contains NaN or infinite samples" in last and "Traceback" not in proc.stderr, proc.stderr


def test_validation_worker_error_ends_the_process_and_keeps_checkpoints(wavs, tmp_path):
    """A NaN validation file (its header is fine, so it passes the start-up probe) fails at the
    step-2 validation, with the training workers also running: the step-1 checkpoint is intact."""
    valid = tmp_path / "valid"
    os.makedirs(valid)
    sf.write(valid / "nan.wav", np.array([0.1, np.nan] * 200, "f4"), 8000, subtype="FLOAT")
    args = [f"train_csv={wavs}", f"valid_csv={valid}", f"checkpoint_path={tmp_path / 'run'}", *TINY, "num_workers=2",
            "max_steps=50", "checkpoint_interval=1", "validation_interval=2"]
    proc = _run_cli(args)
    assert proc.returncode == 2 and "nan.wav: contains NaN" in proc.stderr, proc.stderr
    assert _steps(tmp_path / "run") == [1]
    assert sashimi.load_model(os.path.join(tmp_path, "run", "ckpt_00000001.pt")).config.d_model == 8
