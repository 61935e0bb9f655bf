"""Issue 19, items 5 and 10: the command line tells the user's errors from its own bugs.

The library's errors (SashimiError) and argument errors are one line with exit status 2; any other
exception is a bug, shown with its traceback and a request to report it (exit status 1).
"""
import pytest

import sashimi
from conftest import run_cli
from sashimi.ar import SashimiAR
from sashimi.cli import first_line
from sashimi.errors import AudioError, CheckpointError, ConfigError, InputError, SashimiError


def test_item5_error_hierarchy_keeps_the_documented_base_types():
    for cls in (InputError, CheckpointError, AudioError, ConfigError):
        assert issubclass(cls, SashimiError) and issubclass(cls, ValueError)
    # the old import paths still name the same classes
    from sashimi.audio import AudioError as audio_error
    from sashimi.checkpoint import CheckpointError as checkpoint_error
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
