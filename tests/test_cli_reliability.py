"""Command line: output paths checked before any model is loaded; one-line errors and notices."""
import os

import numpy as np
import pytest
import torch

import sashimi.cli.generate as gen
from sashimi.__main__ import main
from sashimi.cli import CLIError

sf = pytest.importorskip("soundfile")


@pytest.fixture
def ckpt(fixtures_dir):
    return str(fixtures_dir / "rf5_ar_small.ckpt.pt")


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
