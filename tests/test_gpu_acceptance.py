"""benchmarks/gpu_acceptance.py on CPU: its --dry-run, its arguments, and its report on failures
(which a GPU run may hit and a dry run does not)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_acceptance.py"
PARTS = ["env", "build", "cuda_tests", "cauchy", "engine", "gen_speed", "train", "ddp"]


def _script(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OUT", None)
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def acceptance():
    spec = importlib.util.spec_from_file_location("gpu_acceptance", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_checks_every_part_on_cpu(tmp_path):
    out = _script("--dry-run", "--out", str(tmp_path))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_acceptance.json").read_text())
    assert report["dry_run"] and report["passed"] and list(report["parts"]) == PARTS
    for name, part in report["parts"].items():
        assert part["status"] == "passed" and part["checks"], name
    checks = {c["name"] for p in report["parts"].values() for c in p["checks"]}
    assert "torch engine = eager dense step, 16 steps teacher-forced" in checks
    assert "batch 2: bf16 first loss close to fp32" in checks
    assert "tests/test_cauchy.py" in report["parts"]["cuda_tests"]["data"]["command"]
    assert "--nproc_per_node=2" in report["parts"]["ddp"]["data"]["command"]
    assert "SASHIMI_CUDA_EXT" not in report["parts"]["build"]["data"]["commands"][0]  # set in the environment
    md = (tmp_path / "gpu_acceptance.md").read_text()
    assert "dry run on CPU" in md and "Overall: PASSED" in md
    assert "would run, in order" in out.stdout


def test_arguments_are_checked(tmp_path):
    out = _script("--dry-run", "--parts", "env,nope", "--out", str(tmp_path), timeout=60)
    assert out.returncode != 0 and "unknown part(s) ['nope']" in out.stderr
    out = _script("--deadline", "0", timeout=60)
    assert out.returncode != 0 and "--deadline must be positive" in out.stderr
    for bad in ("build=soon", "nope=5", "train=-1"):
        out = _script("--budget", bad, timeout=60)
        assert out.returncode != 0 and "--budget takes PART=SECONDS" in out.stderr and repr(bad) in out.stderr
    out = _script("--part", "build", "--part-json", str(tmp_path / "x.json"), timeout=60)
    assert out.returncode != 0 and "--part must be one of" in out.stderr


def test_a_crashing_part_is_recorded_and_the_report_still_renders(acceptance, tmp_path):
    """A part whose process dies (here: a device torch cannot parse) is an 'error' with its output;
    the summary renders every kind of result a GPU run can produce."""
    crashed = acceptance.run_child_part("env", 120, tmp_path, "no-such-device")
    assert acceptance.status_of(crashed) == "error" and "no-such-device" in crashed["output_tail"]
    parts = {
        "env": dict(crashed, status="error", seconds=1.0, budget_s=45),
        "build": {"status": "timeout", "error": "stopped at its time limit (200 s)", "checks": [], "data": {},
                  "seconds": 200.0, "budget_s": 200},
        "cauchy": {"checks": [{"name": "x / cuda / complex64", "passed": False, "detail": "1e-2"}], "data": {
            "x / cuda / complex64": {"rel_err_forward": 0.01, "rel_err_grad_v": 0.0, "rel_err_grad_w": 0.0,
                                     "fwd_bwd_ms_median": 1.0}, "x / keops": "unavailable: no pykeops",
            "auto_backend": {"cuda": "cuda"}}, "seconds": 3.0, "budget_s": 60},
        "gen_speed": {"checks": [], "data": {"batch 1": {
            "samples_per_s": 1000, "realtime_factor": 0.06, "per_sequence_realtime_factor": 0.06, "us_per_step": 1000.0,
            "engine": "cuda-graphs"}}, "traceback": "Traceback ...\nRuntimeError: boom", "seconds": 5.0, "budget_s": 90},
        "train": {"checks": [], "data": {"batch 8 fp32": {"step_s_mean": 0.1}},  # stopped midway: keys missing
                  "seconds": 9.0, "budget_s": 90},
        "ddp": {"status": "skipped", "skipped": "1 GPU visible: a DDP run needs 2", "checks": [], "data": {},
                "seconds": 0.0, "budget_s": 120},
    }
    for r in parts.values():
        r["status"] = acceptance.status_of(r)
    assert [r["status"] for r in parts.values()] == ["error", "timeout", "failed", "error", "failed", "skipped"]
    report = {"dry_run": False, "started": "now", "parts": parts, "passed": False, "seconds": 218.0}
    md = acceptance.summary(report)
    assert "Overall: FAILED" in md and "RuntimeError: boom" in md and "| 1 | 1,000 |" in md
    assert "unavailable: no pykeops" in md and "1 GPU visible" in md
    assert "(table not rendered: KeyError('samples_per_s'))" in md and '"step_s_mean": 0.1' in md
    acceptance.write_report(report, tmp_path)
    assert json.loads((tmp_path / "gpu_acceptance.json").read_text())["parts"]["build"]["status"] == "timeout"
