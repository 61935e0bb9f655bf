"""Command line: output paths checked before any model is loaded; one-line errors and notices."""
import numpy as np
import pytest

import sashimi.cli.generate as gen
from sashimi.__main__ import main
from sashimi.cli import CLIError

sf = pytest.importorskip("soundfile")


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a model is loaded."""
    def load(spec, device):
        raise AssertionError("a model was loaded before the output path was checked")

    monkeypatch.setattr(gen, "load_cli_model", load)


def _run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return code, lines


# ---- 5. every output path is checked before a model is loaded -----------------------------------------
def test_out_under_a_regular_file_is_refused_before_loading(tmp_path, capsys, ckpt, no_model):
    (tmp_path / "afile").write_text("keep")
    code, lines = _run(capsys, "generate", "--model", ckpt, "--n", "1", "--out", str(tmp_path / "afile" / "sub"), "-q")
    assert code == 2 and len(lines) == 1 and "afile" in lines[0] and "is not a directory" in lines[0], lines
    code, lines = _run(capsys, "generate", "--model", ckpt, "--n", "1", "--out", str(tmp_path / "afile"), "-q")
    assert code == 2 and "exists and is not a directory" in lines[0], lines
    assert (tmp_path / "afile").read_text() == "keep"


def test_unwritable_out_is_refused_before_loading(tmp_path, capsys, ckpt, no_model, monkeypatch):
    import tempfile

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    out = tmp_path / "new" / "dir"
    code, lines = _run(capsys, "generate", "--model", ckpt, "--n", "1", "--out", str(out), "-q")
    assert code == 2 and len(lines) == 1 and "cannot write there (Permission denied)" in lines[0], lines
    assert not (tmp_path / "new").exists()  # the directories it created are removed again


def test_out_is_created_before_loading_and_removed_if_generation_fails(tmp_path, capsys, ckpt, monkeypatch):
    out = tmp_path / "a" / "b"
    seen = []

    def load(spec, device):
        seen.append(out.is_dir())
        raise CLIError("--model: simulated failure")

    monkeypatch.setattr(gen, "load_cli_model", load)
    code, lines = _run(capsys, "generate", "--model", ckpt, "--n", "1", "--out", str(out), "-q")
    assert code == 2 and seen == [True] and not (tmp_path / "a").exists()


# ---- 8. one-line errors and notices --------------------------------------------------------------------
@pytest.mark.parametrize("bad, message", [
    (["--seed", str(2**64)], "--seed must be in [0, 18446744073709551615]"),
    (["--seed", str(2**64 - 1), "--n", "2", "--batch-size", "1"], "--seed must be in [0, 18446744073709551614]"),
    (["--temperature", "1e-45"], "--temperature must be in [0.0001, inf)"),
    (["--temperature", "inf"], "--temperature must be finite"),
])
def test_out_of_range_seed_and_temperature(tmp_path, capsys, ckpt, bad, message):
    code, lines = _run(capsys, "generate", "--model", ckpt, "--seconds", "0.01", "--out", str(tmp_path / "o"), "-q", *bad)
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "o").exists()


def test_stereo_prefix_is_averaged_and_says_so_once(tmp_path, capsys, ckpt):
    t = np.arange(160) / 16000
    left = 0.3 * np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "stereo.wav", np.stack([left, -left], 1), 16000, subtype="PCM_16")  # averages to silence
    code, lines = _run(capsys, "generate", "--model", ckpt, "--n", "2", "--batch-size", "1", "--seconds", "0.02",
                       "--prefix", str(tmp_path / "stereo.wav"), "--out", str(tmp_path / "o"), "-q")
    assert code == 0, lines
    notes = [line for line in lines if "channels" in line]
    assert len(notes) == 1 and "stereo.wav has 2 channels; their average (mono) is used" in notes[0], lines
