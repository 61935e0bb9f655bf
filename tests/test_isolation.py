"""Issue 19, item 1: the tests neither depend on nor write into the directory they are run from.

The README's quick start writes ``samples/`` into the repository and then runs the tests there; a
test that looked for ``samples`` in the working directory failed. Each test now runs in an empty
directory of its own (tests/conftest.py).
"""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_item1_each_test_starts_in_an_empty_scratch_directory():
    cwd = Path.cwd().resolve()
    assert os.listdir(cwd) == []
    assert ROOT not in cwd.parents and cwd != ROOT


def test_item1_quick_start_output_in_the_working_directory_does_not_fail_the_tests(tmp_path):
    """The quick start's order: `sashimi generate --out samples/` where the tests then run. The
    test that checks that `--stream` writes no `samples/` passes, and nothing there changes."""
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "sample_000.wav").write_bytes(b"not touched")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(ROOT / "tests" / "test_stream.py") + "::test_generate_stream_to_file_equals_out"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "samples" / "sample_000.wav").read_bytes() == b"not touched"
