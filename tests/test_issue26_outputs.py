"""Issue 26, items 6, 9 (full disk), 12 and 13: output files under eval --conditional, SIGTERM,
SIGKILL, a full disk and files that appear mid-run."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import sashimi
from conftest import FIXTURES, run_cli
from sashimi import ARConfig, SashimiAR
from sashimi.persistence.outputs import OutputFiles

pytest.importorskip("soundfile")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(tmp_path, names=None):
    torch.manual_seed(0)
    model = SashimiAR(ARConfig(d_model=8, n_layers=1, l_max=512, pool=[4], sample_rate=8000,
                               num_classes=len(names or []), class_names=names)).eval()
    path = tmp_path / "tiny.pt"
    sashimi.save_model(model, path)
    return str(path)


def test_item6_eval_conditional_save_samples_writes_every_class(tmp_path, capsys):
    model = _tiny(tmp_path, ["3", "7"])
    out = tmp_path / "s"
    code, _, err = run_cli(capsys, "eval", "--model", model, "--conditional", "--n", "2", "--seconds", "0.05",
                           "--reference", str(FIXTURES / "fsdd"), "--save-samples", str(out), "-q")
    assert code == 0, err
    assert sorted(os.listdir(out)) == [f"sample_00{i}.wav" for i in range(4)]  # 2 per class x 2 classes


def _start(argv, tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "sashimi", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)


def _wait_for_claims(proc, folder, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if folder.is_dir() and any(name.endswith(".part") for name in os.listdir(folder)):
            time.sleep(0.5)  # claimed: now in the model loading / generation
            return
        time.sleep(0.1)
    pytest.fail(f"no claim appeared: {proc.communicate()}")


def _long_generate(model, out):
    return ["generate", "--model", model, "--n", "2", "--seconds", "600", "--engine", "eager", "--out", str(out), "-q"]


def test_item12_sigterm_cleans_up_like_sigint(tmp_path):
    model, out = _tiny(tmp_path), tmp_path / "new" / "out"
    proc = _start(_long_generate(model, out), tmp_path)
    try:
        _wait_for_claims(proc, out)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143 and "terminated" in err, err
    assert not (tmp_path / "new").exists()  # no .part files, and the folders it created are gone


def test_item12_a_part_left_by_a_killed_run_does_not_block_the_next(tmp_path, capsys):
    model, out = _tiny(tmp_path), tmp_path / "out"
    proc = _start(_long_generate(model, out), tmp_path)
    try:
        _wait_for_claims(proc, out)
        proc.send_signal(signal.SIGKILL)  # no clean-up at all: its .part files stay
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert sorted(os.listdir(out)) == ["sample_000.wav.part", "sample_001.wav.part"]
    code, _, err = run_cli(capsys, "generate", "--model", model, "--n", "2", "--seconds", "0.01", "--out", str(out),
                           "-q")
    assert code == 0, err
    assert sorted(os.listdir(out)) == ["sample_000.wav", "sample_001.wav"]


def test_item12_a_live_claim_still_blocks(tmp_path):
    held = OutputFiles([tmp_path / "a.wav"])
    with pytest.raises(sashimi.OutputError, match="another run is writing"):
        OutputFiles([tmp_path / "a.wav"])
    held.release()
    OutputFiles([tmp_path / "a.wav"]).release()
    assert os.listdir(tmp_path) == []


def test_item13_a_file_appearing_mid_run_keeps_every_result(tmp_path, capsys, monkeypatch):
    model, out = _tiny(tmp_path), tmp_path / "out"
    real = SashimiAR.unconditional_generate

    def generate(self, *args, **kwargs):
        (out / "sample_001.wav").write_bytes(b"someone else's")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SashimiAR, "unconditional_generate", generate)
    code, _, err = run_cli(capsys, "generate", "--model", model, "--n", "3", "--seconds", "0.01", "--out", str(out),
                           "-q")
    assert code == 2 and "sample_001.wav appeared while this run was working" in err, err
    assert "sample_001-1.wav" in err and "Traceback" not in err
    assert sorted(os.listdir(out)) == ["sample_000.wav", "sample_001-1.wav", "sample_001.wav", "sample_002.wav"]
    assert (out / "sample_001.wav").read_bytes() == b"someone else's"


def test_item9_a_full_disk_is_one_line(tmp_path):
    """soundfile's LibsndfileError on a full disk (here a file size limit) is not shown as a bug."""
    resource = pytest.importorskip("resource")
    model, out = _tiny(tmp_path), tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    proc = subprocess.run([sys.executable, "-m", "sashimi", "generate", "--model", model, "--n", "1", "--seconds", "1",
                           "--out", str(out), "-q"], capture_output=True, text=True, env=env, preexec_fn=limit,
                          timeout=300)
    assert proc.returncode in (1, 2) and "cannot write the WAV file" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert not out.exists()
