"""Issue 19, items 6 and 8: outputs are claimed before the work, exclusively.

Item 6: the existence check happened once, at the start, so two runs started together both wrote
the same files and both reported success (`sashimi generate`, training runs sharing a
checkpoint_path). Now each output file is claimed by creating its ``.part`` exclusively, and a
training run holds a lock on its checkpoint_path.
Item 8: an unwritable checkpoint_path, --save-samples or --save-reference was found after the work.
"""
import os
import subprocess
import sys
import time

import pytest

from conftest import run_cli, write_sawtooth_wavs
from sashimi.ar import SashimiAR
from sashimi.errors import OutputError
from sashimi.persistence.outputs import OutputFiles, RunLock

sf = pytest.importorskip("soundfile")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _during_generation(monkeypatch, action):
    """Run ``action()`` once, while the first generation call is working; its result is returned in
    the list."""
    results, real = [], SashimiAR.unconditional_generate

    def generate(self, *args, **kwargs):
        if not results:
            results.append(action())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SashimiAR, "unconditional_generate", generate)
    return results


# ---- item 6 -----------------------------------------------------------------------------------------
def test_item6_two_generate_runs_never_both_write_the_same_files(tmp_path, capsys, ckpt, monkeypatch):
    out = tmp_path / "d"
    argv = ["generate", "--model", ckpt, "--n", "4", "--seconds", "0.01", "--out", str(out), "-q"]
    second = _during_generation(monkeypatch, lambda: run_cli(capsys, *argv, "--seed", "2"))
    code, _, err = run_cli(capsys, *argv, "--seed", "1")
    (code2, _, err2), = second
    assert code == 0, err
    assert code2 == 2 and "another run is writing" in err2, err2  # refused before it generated anything
    assert sorted(p.name for p in out.iterdir()) == [f"sample_00{i}.wav" for i in range(4)]
    code, _, err = run_cli(capsys, *argv, "--seed", "1", "-f", "--out", str(tmp_path / "e"))
    assert code == 0
    for i in range(4):  # the files hold the first run's samples
        assert (out / f"sample_00{i}.wav").read_bytes() == (tmp_path / "e" / f"sample_00{i}.wav").read_bytes()


def test_item6_two_forced_runs_are_refused_too(tmp_path, capsys, ckpt, monkeypatch):
    """-f allows replacing files that exist, not two runs writing the same files at once."""
    argv = ["generate", "--model", ckpt, "--n", "2", "--seconds", "0.01", "--out", str(tmp_path), "-q", "-f"]
    second = _during_generation(monkeypatch, lambda: run_cli(capsys, *argv))
    assert run_cli(capsys, *argv)[0] == 0
    assert second[0][0] == 2 and "another run is writing" in second[0][2]


def test_item6_two_streams_to_one_file(tmp_path, capsys, ckpt, monkeypatch):
    target = str(tmp_path / "s.wav")
    argv = ["generate", "--model", ckpt, "--seconds", "0.01", "--stream", target, "-q"]
    results, real = [], SashimiAR.stream

    def stream(self, *args, **kwargs):
        if not results:
            results.append(run_cli(capsys, *argv))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SashimiAR, "stream", stream)
    assert run_cli(capsys, *argv)[0] == 0
    assert results[0][0] == 2 and "another run is writing" in results[0][2]
    assert sorted(os.listdir(tmp_path)) == ["s.wav"]


def test_item6_a_file_that_appears_meanwhile_is_not_replaced(tmp_path):
    path = tmp_path / "a.wav"
    with OutputFiles([path]) as outputs:
        path.write_bytes(b"someone else's")
        with pytest.raises(OutputError, match="appeared while this run was working"):
            outputs.publish(path, lambda part: open(part, "wb").write(b"mine"))
    # issue 26, item 13: this run's result is kept too, under a free name, and no .part blocks a rerun
    assert path.read_bytes() == b"someone else's" and (tmp_path / "a-1.wav").read_bytes() == b"mine"
    assert sorted(os.listdir(tmp_path)) == ["a-1.wav", "a.wav"]


def test_item6_claims_are_released_on_failure(tmp_path):
    other = OutputFiles([tmp_path / "b.wav"])  # another run is writing b.wav
    with pytest.raises(OutputError, match=r"b\.wav\.part exists: another run is writing"):
        OutputFiles([tmp_path / "a.wav", tmp_path / "b.wav"])
    assert sorted(os.listdir(tmp_path)) == ["b.wav.part"]  # a.wav's claim was given back
    other.release()


def _train_argv(wavs, run, *extra):
    return ["train", f"train_csv={wavs}", f"checkpoint_path={run}", "model_cfg.d_model=8", "model_cfg.n_layers=1",
            "model_cfg.l_max=256", "seq_len=256", "sample_rate=8000", "num_workers=0", "progress=false",
            "tensorboard=false", "batch_size=2", "validation_interval=0", "max_steps=2", "checkpoint_interval=1",
            *extra]


@pytest.fixture
def wavs(tmp_path):
    (tmp_path / "wavs").mkdir()
    return write_sawtooth_wavs(tmp_path / "wavs", [300 + 50 * i for i in range(4)])


def test_item6_two_training_runs_never_share_a_checkpoint_path(tmp_path, capsys, wavs, monkeypatch):
    import sashimi.train.loop as loop

    run, second, real = tmp_path / "run", [], loop.save_training_checkpoint

    def save(*args, **kwargs):
        if not second:
            second.append(run_cli(capsys, *_train_argv(wavs, run, "seed=5")))
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "save_training_checkpoint", save)
    code, out, err = run_cli(capsys, *_train_argv(wavs, run))
    assert code == 0, err
    (code2, out2, err2), = second
    assert code2 == 2 and "is in use by another run" in err2 and f"process {os.getpid()}" in err2, err2
    assert "saved checkpoint" not in out2
    assert sorted(os.listdir(run)) == ["ckpt_00000001.pt", "ckpt_00000002.pt"]  # the lock file is gone


def test_item6_the_run_lock_ends_with_its_process(tmp_path):
    """A killed run never blocks the next one: the lock dies with the process."""
    code = ("import os, sys, time; sys.path.insert(0, sys.argv[1]); from sashimi.persistence.outputs import RunLock; "
            "lock = RunLock(sys.argv[2]); print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, ROOT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(OutputError, match=f"in use by another run \\(process {proc.pid}\\)"):
            RunLock(tmp_path)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            lock = RunLock(tmp_path)
            break
        except OutputError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    lock.release()
    assert os.listdir(tmp_path) == [RunLock.NAME] or os.listdir(tmp_path) == []


# ---- item 8 -----------------------------------------------------------------------------------------
def test_item8_an_unusable_checkpoint_path_fails_before_training(tmp_path, capsys, wavs):
    (tmp_path / "afile").write_text("keep")
    code, out, err = run_cli(capsys, *_train_argv(wavs, tmp_path / "afile" / "run"))
    assert code == 2 and "checkpoint_path" in err and "cannot create the directory" in err, err
    assert "Traceback" not in err and "step 1" not in out  # no training happened


@pytest.fixture
def no_generation(monkeypatch):
    def generate(self, *args, **kwargs):
        raise AssertionError("generated before the output was checked")

    monkeypatch.setattr(SashimiAR, "unconditional_generate", generate)


def test_item8_eval_outputs_are_checked_before_the_work(tmp_path, capsys, ckpt, no_generation, monkeypatch):
    import sashimi.cli.eval as ev

    def classify(*args, **kwargs):
        raise AssertionError("read and classified audio before the output was checked")

    monkeypatch.setattr(ev, "_classify_files", classify)
    (tmp_path / "afile").write_text("keep")
    ref = tmp_path / "ref"
    ref.mkdir()
    write_sawtooth_wavs(ref, [800, 800])
    code, _, err = run_cli(capsys, "eval", "--model", ckpt, "--n", "2", "--reference", str(ref), "-q",
                           "--save-samples", str(tmp_path / "afile" / "s"))
    assert code == 2 and "--save-samples" in err and "not a directory" in err, err
    code, _, err = run_cli(capsys, "eval", "--model", ckpt, "--n", "2", "--reference", str(ref), "-q",
                           "--save-reference", str(tmp_path / "afile" / "r.npz"))
    assert code == 2 and "r.npz: cannot write there" in err, err
    (tmp_path / "ok").mkdir()
    other = OutputFiles([tmp_path / "ok" / "sample_000.wav"])  # another eval is saving there
    code, _, err = run_cli(capsys, "eval", "--model", ckpt, "--n", "2", "--reference", str(ref), "-q",
                           "--save-samples", str(tmp_path / "ok"))
    assert code == 2 and "another run is writing" in err, err
    assert sorted(os.listdir(tmp_path / "ok")) == ["sample_000.wav.part"]
    other.release()


def test_item6_train_classifier_claims_its_files(tmp_path, capsys, fixtures_dir, monkeypatch):
    """The same check-then-write in `sashimi train-classifier` (the classifier file and its report)."""
    import shutil

    import sashimi.eval.training as training

    root = tmp_path / "fsdd"
    root.mkdir()
    for path in sorted((fixtures_dir / "fsdd").glob("*.wav")):
        digit, speaker, _ = path.stem.split("_")
        for take in (0, 5, 10):  # test, valid, train
            shutil.copy(path, root / f"{digit}_{speaker}_{take}.wav")
    argv = ["train-classifier", str(root), "--out", str(tmp_path / "c.pt"), "--epochs", "1", "--channels", "4,4,8",
            "--batch-size", "32"]
    second, real = [], training.train_classifier

    def train(*args, **kwargs):
        if not second:
            second.append(run_cli(capsys, *argv))
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_classifier", train)
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert second[0][0] == 2 and "another run is writing" in second[0][2], second
    assert sorted(os.listdir(tmp_path)) == ["c.json", "c.pt", "fsdd"]


def test_item6_split_csvs_are_claimed(tmp_path):
    from sashimi.data.split import write_split

    out = tmp_path / "out"
    out.mkdir()
    other = OutputFiles([out / "fsdd-test.csv"])  # another run is writing it
    with pytest.raises(OutputError, match="another run is writing"):
        write_split({"train": ["a.wav"], "test": ["b.wav"]}, str(out), "fsdd")
    assert sorted(os.listdir(out)) == ["fsdd-test.csv.part"]  # nothing written, no claim left
    other.release()
