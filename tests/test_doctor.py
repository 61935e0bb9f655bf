"""``sashimi doctor``: what this machine will use, and why (sashimi/doctor.py, sashimi/cli/doctor.py)."""
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import sashimi
from conftest import run_cli
from sashimi.doctor import format_report, gather
from sashimi.ops import backend_report, cauchy_backend

cauchy_module = importlib.import_module("sashimi.ops.cauchy")  # the package's 'cauchy' is the function
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def report():
    return gather()


def test_json_from_a_fresh_process_within_10_s():
    """The real command in a fresh process: --json parses; the probes take < 10 s (the report's own
    clock: Python and torch start-up are not the doctor's, and vary with the machine's load)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "sashimi", "doctor", "--json"], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["elapsed_s"] < 10 and data["problems"] == []
    assert data["versions"]["torch"] == str(torch.__version__) and data["versions"]["sashimi"] == sashimi.__version__


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cpu_machine_reports_no_gpu(report):
    assert report["gpus"]["devices"] == [] and report["gpus"]["why_none"]
    assert report["device"]["default"] == "cpu" and report["device"]["train_precision_auto"] == "fp32"
    text = format_report(report)
    assert "GPUs            none (" in text and "precision=auto -> fp32" in text


def test_cauchy_backend_is_the_one_auto_picks(report):
    entry = report["cauchy"]["devices"]["cpu"]
    picked = cauchy_backend("cpu", backend="auto")
    assert entry["auto"] == picked
    assert f"auto picks '{picked}' for cpu tensors" in format_report(report)
    # auto's order on CPU tensors is cpu, then torch: the pick is the first available one
    backends = entry["backends"]
    assert backends[picked]["available"] is True
    assert [name for name in ("cpu", "torch") if backends[name]["available"]][0] == picked
    assert set(backends) == {"cpu", "cuda", "keops", "torch"} and all(b["reason"] for b in backends.values())
    if not torch.cuda.is_available():
        assert backends["cuda"]["available"] is False
        assert "CPU build" in backends["cuda"]["reason"] or "no CUDA device" in backends["cuda"]["reason"]


def test_a_failed_probe_says_why_and_auto_falls_back(monkeypatch):
    monkeypatch.setitem(cauchy_module._probes, ("cpu", "cpu"), "the C++ kernel cannot be built: no C++ compiler found")
    monkeypatch.setattr(cauchy_module, "_announced", set())
    with pytest.warns(RuntimeWarning, match="uses the 'torch' backend"):
        assert cauchy_backend("cpu", backend="auto") == "torch"
    assert backend_report("cpu")["cpu"] == (False, "the C++ kernel cannot be built: no C++ compiler found")
    text = format_report(gather())
    assert "auto picks 'torch' for cpu tensors" in text and "no C++ compiler found" in text


def _find_spec(monkeypatch, present: dict):
    """importlib.util.find_spec answering for the modules in ``present`` (name -> found?)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (object() if present[name] else None) if name in present else real(name, *a))


def test_keops_and_cuda_reasons_on_cpu(monkeypatch):
    _find_spec(monkeypatch, {"pykeops": False, "sashimi._cauchy_cuda": False})
    status = backend_report("cpu")
    assert status["keops"][0] is False and "pykeops not installed" in status["keops"][1]
    if torch.version.cuda is None:
        assert status["cuda"] == (False, "this PyTorch is a CPU build")
    # a CUDA build of PyTorch without a GPU and without the extension: both reasons
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    available, reason = backend_report("cpu")["cuda"]
    assert not available and "no CUDA device" in reason and "sashimi._cauchy_cuda not built" in reason


def test_cuda_extension_built_for_other_gpus(monkeypatch):
    """The probe's 'no kernel image' error is named for what it is (no GPU needed: probes faked)."""
    _find_spec(monkeypatch, {"pykeops": True, "sashimi._cauchy_cuda": True})
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setitem(cauchy_module._probes, ("cuda", "cuda:0"),
                        "RuntimeError: CUDA error: no kernel image is available for execution on the device")
    monkeypatch.setitem(cauchy_module._probes, ("keops", "cuda:0"), "RuntimeError: [KeOps] compilation failed")
    status = backend_report("cuda:0")
    assert status["cuda"][0] is False
    assert "built for other GPU architectures than this one's (sm_90)" in status["cuda"][1]
    assert status["keops"] == (False, "keops probe failed: RuntimeError: [KeOps] compilation failed")
    assert status["cpu"][0] is False and status["torch"][0] is True


def test_bundled_files_match_their_hashes(report):
    files = {row["name"]: row for row in report["bundled"]["files"]}
    assert set(files) == {"sashimi_ar_fsdd", "fsdd"}
    for row in files.values():
        assert row["status"] == "ok" and set(row["files"].values()) == {"ok"}
        assert row["bytes"] == sum(os.path.getsize(os.path.join(row["path"], f)) for f in row["files"]) > 100_000
    assert report["problems"] == []


def test_a_damaged_bundled_file_is_reported(tmp_path, monkeypatch, capsys):
    from sashimi.pretrained import registry

    for m in registry.BUNDLED_MODELS.values():  # a damaged copy: the real files stay untouched
        shutil.copytree(registry.WEIGHTS_DIR / m.folder, tmp_path / m.folder)
        weights = tmp_path / m.folder / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    code, out, err = run_cli(capsys, "doctor", "--no-build")
    assert code == 1 and "SHA-256 mismatch" in out and "PROBLEMS: bundled model sashimi_ar_fsdd" in out
    assert "classifier fsdd: 0.66 MB, SHA-256 ok" in out  # the other folder is still fine
    for m in registry.BUNDLED_MODELS.values():
        (tmp_path / m.folder / "model.safetensors").unlink()
    assert "missing" in gather(build=False)["bundled"]["files"][0]["status"]


def test_a_failing_probe_is_a_line_not_a_traceback(monkeypatch, capsys):
    import sashimi.native

    def broken():
        raise PermissionError("cannot read PATH")

    monkeypatch.setattr(sashimi.native, "compiler", broken)
    code, out, err = run_cli(capsys, "doctor", "--no-build")
    assert code == 0 and "Traceback" not in err + out
    assert "compiler" in out and "could not be probed: PermissionError: cannot read PATH" in out
    code, out, _ = run_cli(capsys, "doctor", "--no-build", "--json")
    data = json.loads(out)
    assert data["compiler"] == {"error": "PermissionError: cannot read PATH"}
    assert "compiler: PermissionError: cannot read PATH" in data["notes"]


def test_no_compiler_is_reported(monkeypatch):
    import sashimi.native

    monkeypatch.setattr(sashimi.native, "compiler", lambda: None)
    text = format_report(gather(build=False))
    assert "C++ compiler    none: no C++ compiler" in text


def test_threads_and_caches(report, monkeypatch, tmp_path):
    t = report["threads"]
    assert t["torch_intra_op"] == torch.get_num_threads() and t["fastgen"] >= 1 and t["cpus_usable"] >= 1
    assert report["caches"]["torch_hub"] == torch.hub.get_dir()
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    caches = gather(build=False)["caches"]
    assert caches["torch_extensions"] == str(tmp_path) and caches["libraries"] == []


def test_a_slow_build_is_announced(monkeypatch):
    """A build still running after a second (the first run compiles) says so while it runs."""
    from sashimi.fastgen import cpu

    real = cpu.load_library

    def slow():
        time.sleep(1.5)
        return real()

    monkeypatch.setattr(cpu, "load_library", slow)
    lines = []
    report = gather(progress=lines.append)
    assert len(lines) == 1 and "compiling the C++ libraries" in lines[0]
    assert report["native"]["fastgen"]["seconds"] >= 1.5 and report["fastgen"]["cpp"] is True
    monkeypatch.setattr(cpu, "load_library", real)
    lines.clear()
    gather(progress=lines.append)
    assert lines == []  # loaded from the cache: nothing to announce
