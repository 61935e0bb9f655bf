"""Training reliability: errors end the run promptly, runs never mix checkpoints, honest progress."""
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import sashimi
from conftest import write_sawtooth_wavs
from sashimi.data.audio import AudioError, read_audio
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
    return write_sawtooth_wavs(tmp_path_factory.mktemp("wavs"), [300 + 50 * i for i in range(6)])


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
            "max_steps=50", "checkpoint_interval=1", "validation_interval=2", "cache_audio=false"]
    proc = _run_cli(args)
    assert proc.returncode == 2 and "nan.wav: contains NaN" in proc.stderr, proc.stderr
    assert _steps(tmp_path / "run") == [1]
    assert sashimi.load_model(os.path.join(tmp_path, "run", "ckpt_00000001.pt")).config.d_model == 8
    # With the audio cached in memory (the default for small data sets) the file fails before step 1.
    proc = _run_cli([f"checkpoint_path={tmp_path / 'cached'}" if a.startswith("checkpoint_path=") else a
                     for a in args[:-1]])
    assert proc.returncode == 2 and "nan.wav: contains NaN" in proc.stderr, proc.stderr
    assert _steps(tmp_path / "cached") == []


def test_persistent_workers_do_not_block_exit():
    """Workers ignore SIGTERM (so that a job-wide SIGTERM stops the run cleanly); any the loop
    leaves running, e.g. persistent ones, are stopped at exit instead of blocking it forever."""
    code = """
from torch.utils.data import DataLoader
from sashimi.train.loop import _guarded
from sashimi.train.runtime import quiet_worker
loader = DataLoader(list(range(8)), batch_size=2, num_workers=2, persistent_workers=True, worker_init_fn=quiet_worker)
for epoch in range(2):
    assert [int(b[0]) for b in _guarded(loader)] == [0, 2, 4, 6]
"""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("the process did not exit: its DataLoader workers blocked the exit")
    assert proc.returncode == 0, proc.stderr

# ---- 2. a run never mixes with another run's checkpoints ---------------------------------------------
def test_fresh_run_in_a_used_directory_is_refused(wavs, tmp_path):
    run = tmp_path / "run"
    train(_cfg(wavs, run, "max_steps=6", "checkpoint_interval=2", "keep_checkpoints=3"))
    before = {p: open(p, "rb").read() for _, p in list_checkpoints(str(run))}
    with pytest.raises(ConfigError, match=r"another run \(ckpt_00000002.pt, .*resume_checkpoint=last.*force=true"):
        train(_cfg(wavs, run, "max_steps=4", "checkpoint_interval=2", "keep_checkpoints=3"))
    assert {p: open(p, "rb").read() for _, p in list_checkpoints(str(run))} == before


def test_forced_fresh_run_keeps_both_runs_checkpoints(wavs, tmp_path, capsys):
    """The issue's case: the new run's steps 2 and 4 were pruned at once by the old run's step 6."""
    run = tmp_path / "run"
    train(_cfg(wavs, run, "max_steps=6", "checkpoint_interval=2", "keep_checkpoints=3"))
    old = {os.path.basename(p): open(p, "rb").read() for _, p in list_checkpoints(str(run))}
    out = train(_cfg(wavs, run, "max_steps=4", "checkpoint_interval=2", "keep_checkpoints=3", "force=true"))
    assert "moved 3 checkpoint(s) of another run" in capsys.readouterr().out
    assert _steps(run) == [2, 4] and os.path.isfile(out["checkpoint"])
    aside = run / "earlier_run_1"
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == old
    again = train(_cfg(wavs, run, "max_steps=4", "resume_checkpoint=last"))  # 'last' is the new run
    assert again["step"] == 4 and _steps(run) == [2, 4]


def test_resume_before_later_checkpoints_is_refused(wavs, tmp_path):
    run = tmp_path / "run"
    train(_cfg(wavs, run, "max_steps=6", "checkpoint_interval=2"))
    with pytest.raises(ConfigError, match=r"2 checkpoint\(s\) at or after step 2.*ckpt_00000004.pt, ckpt_00000006.pt"):
        train(_cfg(wavs, run, "max_steps=8", f"resume_checkpoint={run / 'ckpt_00000002.pt'}"))
    assert _steps(run) == [2, 4, 6]


def test_pruning_deletes_only_the_runs_own_checkpoints(wavs, tmp_path):
    first = train(_cfg(wavs, tmp_path / "a", "max_steps=4"))
    other = tmp_path / "b"
    train(_cfg(wavs, other, "max_steps=2"))  # another run's step-2 checkpoint in the target directory
    out = train(_cfg(wavs, other, "max_steps=7", "checkpoint_interval=1", "keep_checkpoints=2",
                     f"resume_checkpoint={first['checkpoint']}"))
    assert _steps(other) == [2, 6, 7] and out["checkpoint"].endswith("ckpt_00000007.pt")
    # resuming in its own directory, the run prunes its older checkpoints as before
    train(_cfg(wavs, other, "max_steps=9", "checkpoint_interval=1", "keep_checkpoints=2", "resume_checkpoint=last"))
    assert _steps(other) == [2, 8, 9]


# ---- 8. resume_checkpoint=last says when it skips an unreadable checkpoint ------------------------------
def test_resume_last_says_it_skipped_an_unreadable_checkpoint(wavs, tmp_path, capsys):
    run = tmp_path / "run"
    train(_cfg(wavs, run, "max_steps=2"))
    bad = run / "ckpt_00000005.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    capsys.readouterr()
    out = train(_cfg(wavs, run, "max_steps=3", "resume_checkpoint=last"))
    text = capsys.readouterr().out
    assert f"skipped {bad}, which does not load" in text and "resumed from" in text and "ckpt_00000002.pt" in text
    assert out["step"] == 3 and _steps(run) == [2, 3]
    assert (run / "ckpt_00000005.pt.unreadable").read_bytes() == b"PK\x03\x04 truncated"  # kept, never deleted


# ---- 8. an honest progress bar; short runs validate ----------------------------------------------------
def test_progress_bar_shows_a_running_loss():
    """It showed the step-1 loss until the first summary line (step 100)."""
    from sashimi.train.log import TrainLogger

    cfg = build_config([*TINY, "progress=true", "stdout_interval=100"])
    log = TrainLogger(cfg, 0, torch.device("cpu"))
    log.POSTFIX_SECONDS = 0.0
    log.start(sashimi.SashimiAR(cfg.model_cfg), "", "fp32", 6, 0, 1)
    try:
        log.train_step(1, torch.tensor(5.0), torch.tensor(1.0), 1e-3)
        for step in range(2, 21):
            log.train_step(step, torch.tensor(1.0 + step / 100), torch.tensor(1.0), 1e-3)
        assert log.bar.postfix == f"loss={sum(1.0 + s / 100 for s in range(2, 21)) / 19:.3f}"
    finally:
        log.close()


def test_short_run_validates_at_its_end(wavs, tmp_path, capsys):
    out = train(_cfg(wavs, tmp_path / "run", f"valid_csv={wavs}", "max_steps=3", "validation_interval=1000"))
    assert out["valid"] is not None and np.isfinite(out["valid"])
    assert "validation at step 3" in capsys.readouterr().out
    ckpt = torch.load(out["checkpoint"], weights_only=True)
    assert ckpt["valid_metric"][1] == out["valid"]
    assert ckpt["scheduler"]["last_epoch"] == 0  # only regular validations drive the plateau schedule
