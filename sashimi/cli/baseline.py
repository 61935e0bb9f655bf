"""Side-by-side benchmarks: this checkout against a baseline, alternating fresh processes.

On a shared machine absolute times move with the load, so a benchmark compares two versions
of the library in ONE invocation: A, B, A, B, ... each run in a fresh Python process, and
reports the ratio of their medians with the load average seen.

A baseline is either a directory holding a ``sashimi`` package (another clone or worktree)
or a git revision of the repository this package lives in (``main``, ``HEAD~3``, a commit),
exported with ``git archive`` into a temporary directory that is removed afterwards (nothing
in the repository changes).

The harness (the worker script) is the same for both sides: it is given by the caller and
imports ``sashimi`` from the side's root (``PYTHONPATH``), so the two sides differ only in the
library, and the worker must use only API that both versions have.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterator

from sashimi.cli import CLIError

__all__ = ["Side", "this_side", "baseline_side", "run_worker", "alternate", "ratio", "load_average",
           "RESULT_TAG"]

RESULT_TAG = "SASHIMI_BENCH_RESULT "


@dataclass(frozen=True)
class Side:
    """One version of the library: ``label`` for the tables, ``root`` the directory that holds
    its ``sashimi`` package (put first on ``PYTHONPATH`` of its worker processes)."""

    label: str
    root: str


def this_side() -> Side:
    """The checkout this module belongs to."""
    return Side("current", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _git(args: list[str], cwd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, **kw)


@contextlib.contextmanager
def baseline_side(spec: str) -> Iterator[Side]:
    """The baseline named by ``spec``: a directory with a ``sashimi`` package, or a git revision
    of this checkout's repository (exported to a temporary directory for the duration).

    Raises:
        CLIError: ``spec`` is neither (checked before any benchmark runs).
    """
    if os.path.isdir(spec):
        if not os.path.isfile(os.path.join(spec, "sashimi", "__init__.py")):
            raise CLIError(f"--baseline {spec}: this directory holds no sashimi package (sashimi/__init__.py)")
        yield Side(f"baseline ({spec})", os.path.abspath(spec))
        return
    here = this_side().root
    if shutil.which("git") is None:
        raise CLIError(f"--baseline {spec!r}: not a directory, and git is not installed to read it as a revision")
    found = _git(["rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}"], here, text=True)
    if found.returncode != 0:
        raise CLIError(f"--baseline {spec!r}: neither a directory nor a git revision of {here}")
    commit = found.stdout.strip()
    tmp = tempfile.mkdtemp(prefix=f"sashimi-baseline-{commit[:10]}-")
    try:
        archive = _git(["archive", "--format=tar", commit], here)
        if archive.returncode != 0:
            raise CLIError(f"--baseline {spec!r}: git archive failed: {archive.stderr.decode(errors='replace')[-300:]}")
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        if not os.path.isfile(os.path.join(tmp, "sashimi", "__init__.py")):
            raise CLIError(f"--baseline {spec!r}: revision {commit[:10]} has no sashimi package")
        yield Side(f"baseline ({spec} = {commit[:10]})", tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only the directory made here


def run_worker(side: Side, argv: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run ``python *argv`` in a fresh process that imports ``sashimi`` from ``side.root``.

    The worker prints its result as one line ``RESULT_TAG + json``; its other output
    (progress on stderr) passes through.

    Returns:
        the worker's result dict, or ``{"status": "..."}`` describing the failure.
    """
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (side.root, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.run([sys.executable, *argv], env=env, cwd=side.root, stdout=subprocess.PIPE,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {timeout:g} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    return {"status": f"failed (exit {proc.returncode}; killed for memory?), see its output above"}


def alternate(sides: list[Side], job: Callable[[Side], dict], rounds: int) -> list[list[dict]]:
    """Run ``job(side)`` for each side in turn, ``rounds`` times (A, B, A, B, ...).

    Returns:
        per side, its results in order, each with ``load_average`` (1 min) added.
    """
    results: list[list[dict]] = [[] for _ in sides]
    for _ in range(rounds):
        for i, side in enumerate(sides):
            result = job(side)
            result["load_average"] = load_average()
            results[i].append(result)
    return results


def ratio(baseline: list[float], current: list[float]) -> float:
    """How many times faster ``current`` is: median(baseline) / median(current) (times)."""
    return statistics.median(baseline) / statistics.median(current)


def load_average() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None
