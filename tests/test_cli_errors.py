"""Issue 19, items 5, 10 and 11: the command line tells the user's errors from its own bugs.

Item 5: the library's errors (SashimiError) and argument errors are one line with exit status 2; any
other exception is a bug, shown with its traceback and a request to report it (exit status 1).
Item 10: inputs that gave tracebacks give one-line errors, before any work. Item 11: smaller
surprises (clipped prefixes, misleading messages, silent compiles, the README's NLL).
"""
import os

import pytest
import torch

import sashimi
from conftest import run_cli
from sashimi.ar import SashimiAR
from sashimi.cli import first_line
from sashimi.errors import AudioError, CheckpointError, ConfigError, InputError, SashimiError


def test_item5_error_hierarchy_keeps_the_documented_base_types():
    for cls in (InputError, CheckpointError, AudioError, ConfigError):
        assert issubclass(cls, SashimiError) and issubclass(cls, ValueError)
    # the old import paths still name the same classes
    from sashimi.data.audio import AudioError as audio_error
    from sashimi.persistence.checkpoint import CheckpointError as checkpoint_error
    from sashimi.train.config import ConfigError as config_error

    assert (audio_error, checkpoint_error, config_error) == (AudioError, CheckpointError, ConfigError)
    assert sashimi.SashimiError is SashimiError and sashimi.CheckpointError is CheckpointError


def test_item5_first_line_of_an_empty_message():
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(ValueError("  \n")) == "ValueError"
    assert first_line(InputError("one\ntwo")) == "one"


@pytest.mark.parametrize("error", [ValueError(""), ValueError("x values must be in [0, 63]"), RuntimeError("boom")])
def test_item5_a_library_bug_is_shown_as_a_bug(tmp_path, capsys, ckpt, monkeypatch, error):
    """An exception that is not the library's own error type is not blamed on the user: traceback,
    a request to report it, exit status 1 (an empty message no longer raises IndexError)."""
    def broken(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(SashimiAR, "unconditional_generate", broken)
    code, _, err = run_cli(capsys, "generate", "--model", ckpt, "--n", "1", "--seconds", "0.01",
                           "--out", str(tmp_path / "o"), "-q")
    assert code == 1, err
    assert "Traceback" in err and f"internal error ({type(error).__name__})" in err and "report it" in err
    assert not (tmp_path / "o").exists()  # nothing left behind


def test_item5_the_library_s_own_errors_are_one_line(tmp_path, capsys, ckpt, monkeypatch):
    def refused(self, *args, **kwargs):
        raise InputError("length must be a positive integer\nsecond line")

    monkeypatch.setattr(SashimiAR, "unconditional_generate", refused)
    code, _, err = run_cli(capsys, "generate", "--model", ckpt, "--n", "1", "--seconds", "0.01",
                           "--out", str(tmp_path / "o"), "-q")
    assert code == 2 and err.strip() == "sashimi generate: error: length must be a positive integer", err


def test_item5_stream_and_eval_sites_too(tmp_path, capsys, ckpt, monkeypatch):
    """The other two sites that turned every ValueError into a user error."""
    def broken(self, *args, **kwargs):
        raise ValueError("")

    monkeypatch.setattr(SashimiAR, "stream", broken)
    code, _, err = run_cli(capsys, "generate", "--model", ckpt, "--seconds", "0.01", "--stream",
                           str(tmp_path / "s.wav"), "-q")
    assert code == 1 and "internal error (ValueError)" in err and not (tmp_path / "s.wav.part").exists(), err
    monkeypatch.setattr(SashimiAR, "unconditional_generate", broken)
    ref = tmp_path / "ref"
    ref.mkdir()
    from conftest import write_sawtooth_wavs

    write_sawtooth_wavs(ref, [8000, 8000])
    code, _, err = run_cli(capsys, "eval", "--model", ckpt, "--n", "2", "--seconds", "0.01", "--reference",
                           str(ref), "-q")
    assert code == 1 and "internal error (ValueError)" in err, err


# ---- item 10: errors, not tracebacks --------------------------------------------------------------
def test_item10_an_impossible_length_is_refused_before_generating(tmp_path, capsys, ckpt, monkeypatch):
    def generate(self, *args, **kwargs):
        raise AssertionError("generation started")

    monkeypatch.setattr(SashimiAR, "unconditional_generate", generate)
    monkeypatch.setattr(SashimiAR, "stream", generate)
    code, _, err = run_cli(capsys, "generate", "--model", ckpt, "--seconds", "1e9", "--out", str(tmp_path / "d"))
    assert code == 2 and "do not fit in a WAV file" in err and "Traceback" not in err, err
    assert not (tmp_path / "d").exists()
    code, _, err = run_cli(capsys, "generate", "--model", ckpt, "--seconds", "1e9", "--stream", str(tmp_path / "s.wav"))
    assert code == 2 and "do not fit in a WAV file" in err, err
    # within the WAV limit, but beyond any machine's memory: 1,000 samples of 2 hours at 16 kHz, at once
    code, _, err = run_cli(capsys, "generate", "--model", ckpt, "--n", "1000", "--batch-size", "1000",
                           "--seconds", "7200", "--out", str(tmp_path / "d"))
    assert code == 2 and "GiB of memory" in err, err
    assert list(tmp_path.iterdir()) == []  # nothing left behind: no files, claims or directories


def test_item10_a_checkpoint_with_nan_weights_is_refused_when_loaded(tmp_path, capsys, ar_small):
    import copy

    from sashimi import load_model, save_model

    model = copy.deepcopy(ar_small)
    with torch.no_grad():
        model.head.bias[3] = float("nan")
    save_model(model, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=r"NaN or infinite values, e\.g\. \['head\.bias'\]"):
        load_model(tmp_path / "nan.pt")
    code, _, err = run_cli(capsys, "generate", "--model", str(tmp_path / "nan.pt"), "--out", str(tmp_path / "o"))
    assert code == 2 and "NaN or infinite" in err and "Traceback" not in err, err
    from sashimi.data.audio import write_wav

    write_wav(tmp_path / "a.wav", torch.zeros(100), 16000)
    code, out, err = run_cli(capsys, "nll", str(tmp_path / "a.wav"), "--model", str(tmp_path / "nan.pt"))
    assert code == 2 and "NaN or infinite" in err and "nan" not in out, (out, err)


def test_item10_bad_reference_files_are_one_line_errors(tmp_path, capsys, ckpt):
    import numpy as np

    samples = tmp_path / "samples"
    samples.mkdir()
    from conftest import write_sawtooth_wavs

    write_sawtooth_wavs(samples, [8000, 8000])
    np.savez(tmp_path / "ref.npz", probs=np.full((2, 10), 0.1), mu=np.zeros(3), sigma=np.eye(3), n=2,
             classifier=np.array("x"))
    data = (tmp_path / "ref.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])  # truncated
    code, _, err = run_cli(capsys, "eval", str(samples), "--reference", str(tmp_path / "cut.npz"), "-q")
    assert code == 2 and "not a reference-statistics file" in err and "Traceback" not in err, err
    code, _, err = run_cli(capsys, "eval", str(samples), "--reference", ckpt, "-q")  # a checkpoint, not a CSV
    assert code == 2 and "not a CSV file" in err and "Traceback" not in err, err


# ---- item 11: the command line's smaller surprises --------------------------------------------------
def test_item11_a_prefix_beyond_full_scale_is_refused_as_the_api_refuses_it(tmp_path, capsys, ckpt):
    import numpy as np

    sf = pytest.importorskip("soundfile")
    sf.write(tmp_path / "loud.wav", np.linspace(-1.5, 1.5, 400, dtype="float32"), 16000, subtype="FLOAT")
    code, _, err = run_cli(capsys, "generate", "--model", ckpt, "--seconds", "0.05", "--n", "1", "--prefix",
                           str(tmp_path / "loud.wav"), "--out", str(tmp_path / "o"), "-q")
    assert code == 2 and "samples reach 1.5, outside [-1, 1]" in err, err
    code, _, err = run_cli(capsys, "nll", str(tmp_path / "loud.wav"), "--model", ckpt)
    assert code == 2 and "outside [-1, 1]" in err, err
    sf.write(tmp_path / "full.wav", np.linspace(-1.0, 1.0, 400, dtype="float32"), 16000, subtype="FLOAT")
    code, _, err = run_cli(capsys, "generate", "--model", ckpt, "--seconds", "0.05", "--n", "1", "--prefix",
                           str(tmp_path / "full.wav"), "--out", str(tmp_path / "o"), "-q")
    assert code == 0, err


def test_item11_length_zero_and_numpy_numbers(ar_small):
    import numpy as np

    with pytest.raises(ValueError, match=r"length must be a positive integer \(samples per waveform"):
        ar_small.unconditional_generate(1, length=0, progress=False)
    with pytest.raises(ValueError, match=r"length must be None or a positive integer"):
        ar_small.stream(1, 0)
    wav = ar_small.unconditional_generate(np.int64(2), length=np.int64(20), temperature=np.float32(0.9),
                                          top_k=np.int64(50), nucleus_p=np.float64(0.95), progress=False, seed=0)
    assert wav.shape == (2, 20)
    same = ar_small.unconditional_generate(2, length=20, temperature=float(np.float32(0.9)), top_k=50, nucleus_p=0.95,
                                           progress=False, seed=0)
    assert torch.equal(wav, same)
    with pytest.raises(ValueError, match="temperature must be a finite number"):
        ar_small.unconditional_generate(1, length=5, temperature=np.float32(0.0), progress=False)


def test_item11_compiling_is_announced(tmp_path, monkeypatch, caplog):
    import logging

    from sashimi import native

    if native.compiler() is None:
        pytest.skip("no C++ compiler")
    source = tmp_path / "tiny.cpp"
    source.write_text('extern "C" __attribute__((visibility("default"))) int tiny() { return 7; }\n')
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "build"))
    with caplog.at_level(logging.INFO, logger="sashimi"):
        lib = native.build_library("tiny", source)
        assert lib.tiny() == 7
        assert "compiling tiny.cpp" in caplog.text
        caplog.clear()
        native.build_library("tiny", source)  # built once: no second note
        assert "compiling" not in caplog.text


def test_item11_samples_per_second_leave_out_the_set_up(tmp_path, capsys, ckpt, monkeypatch):
    import time

    from sashimi import fastgen

    real, calls = fastgen.get_engine, []

    def slow_first(*args, **kwargs):
        if not calls:
            time.sleep(1.5)  # a first-use compile
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fastgen, "get_engine", slow_first)
    code, _, err = run_cli(capsys, "generate", "--model", ckpt, "--n", "1", "--seconds", "0.01",
                           "--out", str(tmp_path / "o"))
    assert code == 0, err
    line = next(x for x in err.splitlines() if x.startswith("wrote "))
    setup = float(line.split("after ")[1].split(" s of set-up")[0])
    assert setup >= 1.5, line


def test_item11_readme_says_what_its_nll_measures_and_what_sashimi_nll_gives(capsys, fixtures_dir):
    """The README's table gave 1.691 bits while `sashimi nll` printed 4.0-4.6 on the same test
    files: the table places each word in a second of silence. It now says so, with the numbers
    `sashimi nll` gives on the test clips in tests/fixtures/fsdd."""
    code, out, err = run_cli(capsys, "nll", str(fixtures_dir / "fsdd"))  # the bundled model
    assert code == 0, err
    lines = out.strip().splitlines()
    bits = [float(line.split()[0]) for line in lines[:-1]]
    mean = float(lines[-1].split()[0])
    # the bundled model's numbers moved from the README to the pretrained-models guide
    guide = open(os.path.join(os.path.dirname(fixtures_dir.parent), "docs", "pretrained.md"), encoding="utf-8").read()
    text = " ".join(guide.split())
    assert "The test NLL scores each test recording as the model was trained on it: placed in one second of silence" in text
    assert (f"2.34 to 5.15 bits per file and {mean:.2f} on average" in text
            and f"{min(bits):.2f} to {max(bits):.2f}" == "2.34 to 5.15"), (min(bits), max(bits), mean)
