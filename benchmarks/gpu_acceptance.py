"""One prepared GPU acceptance run: build, CUDA tests, kernels, engine, speed, training, DDP.

On a machine with an NVIDIA GPU, from the repository root, in well under 6 minutes (the device
machine of this workplace: run with timeout_s=420):

    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_acceptance.py --out "${OUT:-gpu_acceptance}" 2>&1 | tee "${OUT:-.}/console.txt"

Parts, in order, each with its own time limit (``--deadline`` bounds them all together) and its
own process, so that a failure, a hang or a broken CUDA context in one is recorded (with the
traceback) and the others still run:

- ``env``: versions, GPUs, the CUDA toolkit setup.py would use;
- ``build``: the CUDA extension, built in place with the README's command
  (``SASHIMI_CUDA_EXT=1 pip install --no-build-isolation -e .``, offline, for the visible GPU's
  architecture) unless ``sashimi._cauchy_cuda`` already imports;
- ``cuda_tests``: the tests of tests/ that skip without CUDA (``pytest -k cuda``), none may skip;
- ``cauchy``: every Cauchy backend (torch, cuda, keops, cpu) against ``cauchy_ref``, forward
  and backward, complex64 and complex128, at two SC09 sizes, with times;
- ``engine``: the CUDA-graph engine against the eager loop (teacher-forced logits), sampled audio;
- ``gen_speed``: samples/s and real-time factor at batch 1, 16 and 256, SC09 architecture;
- ``train``: SC09 training steps at batch 8 and 32, fp32 and bf16 autocast, step time and
  ``torch.cuda.max_memory_allocated``;
- ``ddp``: 2 steps of train.py under torchrun on 2 GPUs (skipped, with the reason, on one).

Writes ``gpu_acceptance.json`` and ``gpu_acceptance.md`` (a readable summary) to ``--out``
(default ``$OUT`` if set, else ./gpu_acceptance), plus ``build.log`` and ``pytest.log``.

``--dry-run`` needs no GPU: it lists what would run, then checks the script on CPU (imports,
arguments, the toolkit search, each model part at a tiny size, the pytest and torchrun commands).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
# (name, seconds allowed); a part gets at most what is left of --deadline.
BUDGETS = {"env": 45, "build": 200, "cuda_tests": 120, "cauchy": 60, "engine": 75, "gen_speed": 90, "train": 90,
           "ddp": 120}
MIN_SECONDS = 15  # a part that would get less is skipped as out of time
CHILD_PARTS = ("env", "cauchy", "engine", "gen_speed", "train", "ddp")  # run by gpu_acceptance_parts.py


def _env() -> dict:
    """Children import this checkout's sashimi, whatever else is installed."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def _run(cmd: list[str], timeout: float, log: Path | None = None, env=None) -> tuple[int | None, str, float]:
    """Run ``cmd`` in its own process group (killed whole on timeout). Returns (exit status or
    None on timeout, output, seconds); the output also goes to ``log``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        rc = None
    if log is not None:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{out}\n")
    return rc, out, time.perf_counter() - t0


def _tail(text: str, n: int = 3000) -> str:
    return text[-n:]


# ---- the parts run here ----------------------------------------------------------------------
def cuda_arch_list() -> str:
    """TORCH_CUDA_ARCH_LIST for the visible GPUs ('9.0' on an H200), from a child process (this
    one does not import torch)."""
    code = ("import torch; print(';'.join(sorted({'%d.%d' % torch.cuda.get_device_capability(i) "
            "for i in range(torch.cuda.device_count())})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    return out.stdout.strip()


def build_command() -> list[list[str]]:
    """The README's build command, offline; then the same build without pip, if pip cannot."""
    return [[sys.executable, "-m", "pip", "install", "-v", "--no-build-isolation", "--no-deps", "--no-index", "-e",
             str(ROOT)],
            [sys.executable, "setup.py", "build_ext", "--inplace"]]


def part_build(result: dict, timeout: float, out_dir: Path, dry_run: bool) -> None:
    probe = [sys.executable, "-c", "import sashimi._cauchy_cuda as m; print(m.__file__)"]  # this checkout's
    cmds = build_command()
    result["data"]["commands"] = [" ".join(c) for c in cmds]
    if dry_run:
        result["checks"].append({"name": "setup.py is there", "passed": (ROOT / "setup.py").is_file(), "detail": ""})
        return
    t0 = time.perf_counter()
    rc, out, _ = _run(probe, 30)
    if rc == 0:
        result["data"]["already_built"] = out.strip().splitlines()[-1]
    else:
        result["data"]["import_before"] = _tail(out, 500)
        arch = os.environ.get("TORCH_CUDA_ARCH_LIST") or cuda_arch_list()
        env = dict(_env(), SASHIMI_CUDA_EXT="1", TORCH_CUDA_ARCH_LIST=arch)
        result["data"]["arch_list"] = arch
        log = out_dir / "build.log"
        for cmd in cmds:
            left = timeout - 30 - (time.perf_counter() - t0)  # 30 s kept for the import check
            rc, out, secs = _run(cmd, left, log, env)
            result["data"].setdefault("attempts", []).append(
                {"command": " ".join(cmd), "exit": rc, "seconds": round(secs, 1),
                 "setup_said": list(dict.fromkeys(re.findall(r"sashimi setup: (.*)", out)))})
            if rc is None:
                result["status"], result["error"] = "timeout", f"the build was stopped at its time limit ({left:.0f} s)"
                break
            if rc == 0:
                break
            result["data"]["build_tail"] = _tail(out)  # pip could not: next, the same build without pip
        rc, out, _ = _run(probe, 30)
    result["checks"].append({"name": "sashimi._cauchy_cuda imports", "passed": rc == 0,
                             "detail": _tail(out.strip(), 500)})


def cuda_test_files() -> list[str]:
    """Test files holding tests that skip without CUDA (a skipif on torch.cuda.is_available())."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if re.search(r"skipif\([^)]*(torch\.cuda\.is_available|HAVE_CUDA)", p.read_text()))


def part_cuda_tests(result: dict, timeout: float, out_dir: Path, dry_run: bool) -> None:
    junit = out_dir / "junit.xml"
    files = cuda_test_files()
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", f"--junitxml={junit}", "-k", "cuda",
           *files]
    result["data"]["command"] = " ".join(cmd)
    result["checks"].append({"name": "test files with CUDA tests found", "passed": bool(files), "detail": str(files)})
    if dry_run:
        return
    rc, out, secs = _run(cmd, timeout, out_dir / "pytest.log")
    result["data"]["seconds"] = round(secs, 1)
    result["data"]["summary_line"] = out.strip().splitlines()[-1] if out.strip() else ""
    tests = []
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            status, why = "passed", ""
            for tag in ("failure", "error", "skipped"):
                el = case.find(tag)
                if el is not None:
                    status, why = tag, (el.get("message") or "")[:300]
            tests.append({"test": f"{case.get('classname')}::{case.get('name')}", "status": status, "why": why,
                          "seconds": float(case.get("time") or 0)})
    result["data"]["tests"] = tests
    bad = [t for t in tests if t["status"] in ("failure", "error")]
    skipped = [t for t in tests if t["status"] == "skipped"]
    result["checks"].append({"name": "pytest -k cuda passes", "passed": rc == 0 and bool(tests) and not bad,
                             "detail": f"exit {rc}; {len(tests)} tests, failed: {[t['test'] for t in bad]}"})
    result["checks"].append({"name": "no CUDA test skipped on a GPU machine", "passed": not skipped,
                             "detail": "; ".join(f"{t['test']}: {t['why']}" for t in skipped)})
    if rc is None:
        result["data"]["output_tail"] = _tail(out)


# ---- running the parts -----------------------------------------------------------------------
def run_child_part(name: str, timeout: float, out_dir: Path, device: str) -> dict:
    """Run a part of gpu_acceptance_parts.py in a fresh process; its JSON (written after every
    check) is read back even when it timed out or crashed."""
    path = out_dir / f".part_{name}.json"
    path.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--part-json", str(path), "--device", device]
    rc, out, _ = _run(cmd, timeout)
    result = json.loads(path.read_text()) if path.exists() else {"checks": [], "data": {}}
    path.unlink(missing_ok=True)
    if rc is None:
        result["status"] = "timeout"
        result["error"] = f"stopped at its time limit ({timeout:.0f} s)"
    elif rc != 0 and "traceback" not in result:
        result["error"] = f"exit {rc}"
    if rc != 0:
        result["output_tail"] = _tail(out)
    return result


def child_main(name: str, path: str, device: str, tiny: bool) -> int:
    """In the child: run one part, recording its result (and any traceback) in ``path``."""
    sys.path.insert(0, str(HERE))
    import gpu_acceptance_parts as parts

    part = parts.Part(name, device, tiny, path)
    try:
        parts.PARTS[name](part)
    except Exception:
        part.result["traceback"] = traceback.format_exc()
        part.save()
        return 1
    part.save()
    return 0


def status_of(result: dict) -> str:
    if result.get("status") in ("timeout", "skipped"):
        return result["status"]
    if result.get("skipped"):
        return "skipped"
    if "traceback" in result or "error" in result:
        return "error"
    return "passed" if all(c["passed"] for c in result["checks"]) and result["checks"] else "failed"


def run_all(args) -> dict:
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = args.parts.split(",") if args.parts else list(BUDGETS)
    unknown = [n for n in names if n not in BUDGETS]
    if unknown:
        raise SystemExit(f"--parts: unknown part(s) {unknown}; choose from {list(BUDGETS)}")
    report = {"dry_run": args.dry_run, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "deadline_s": args.deadline,
              "parts": {}}
    t_start = time.perf_counter()
    if args.dry_run:
        print("gpu_acceptance --dry-run: would run, in order (seconds allowed):")
        for n in names:
            print(f"  {n:<11} {args.budgets[n]:>4.0f} s")
        print(f"  all within --deadline {args.deadline:.0f} s; checking each part on CPU at a tiny size:")
        # The PyTorch Cauchy backend: the default 'cpu' one would compile its C++ kernel first.
        os.environ["SASHIMI_CAUCHY_BACKEND"] = "torch"
        sys.path.insert(0, str(HERE))
        import gpu_acceptance_parts  # noqa: F401  (the import itself is a check)
    for name in names:
        left = args.deadline - (time.perf_counter() - t_start)
        budget = min(args.budgets[name], left)
        t0 = time.perf_counter()
        if budget < MIN_SECONDS and not args.dry_run:
            result = {"status": "skipped", "skipped": f"out of time ({left:.0f} s left of --deadline)",
                      "checks": [], "data": {}}
        elif name == "build" and args.no_build:
            result = {"status": "skipped", "skipped": "--no-build", "checks": [], "data": {}}
        elif name in ("build", "cuda_tests"):
            result = {"checks": [], "data": {}}
            try:
                (part_build if name == "build" else part_cuda_tests)(result, budget, out_dir, args.dry_run)
            except Exception:
                result["traceback"] = traceback.format_exc()
        elif args.dry_run:  # in this process: quick, and the same code as the child runs
            path = out_dir / f".part_{name}.json"
            child_main(name, str(path), "cpu", tiny=True)
            result = json.loads(path.read_text())
            path.unlink()
        else:
            result = run_child_part(name, budget, out_dir, args.device)
        result["status"] = status_of(result)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        result["budget_s"] = round(budget, 1)
        report["parts"][name] = result
        print(f"[{time.perf_counter() - t_start:6.1f} s] {name}: {result['status']} ({result['seconds']} s)",
              flush=True)
        write_report(report, out_dir)
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    report["passed"] = all(r["status"] in ("passed", "skipped") for r in report["parts"].values())
    write_report(report, out_dir)
    return report


# ---- the report ------------------------------------------------------------------------------
def write_report(report: dict, out_dir: Path) -> None:
    (out_dir / "gpu_acceptance.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out_dir / "gpu_acceptance.md").write_text(summary(report))


def summary(report: dict) -> str:
    head = "dry run on CPU (no GPU numbers)" if report["dry_run"] else "GPU acceptance run"
    lines = [f"# sashimi {head}, {report['started']}", ""]
    if "passed" in report:
        lines += [f"Overall: {'PASSED' if report['passed'] else 'FAILED'} in {report['seconds']} s", ""]
    for name, r in report["parts"].items():
        lines.append(f"## {name}: {r['status']} ({r['seconds']} s of {r['budget_s']} s)")
        if r.get("skipped"):
            lines.append(f"skipped: {r['skipped']}")
        for c in r["checks"]:
            lines.append(f"- [{'x' if c['passed'] else ' '}] {c['name']}" + (f": {c['detail']}" if c["detail"] else ""))
        try:
            lines += _tables(name, r["data"])
        except Exception as e:  # a partial result (a part stopped midway) must not stop the report
            lines += [f"(table not rendered: {e!r})"] + [f"- {k}: {json.dumps(v, default=str)[:400]}"
                                                         for k, v in r["data"].items()]
        for key in ("error", "traceback", "output_tail"):
            if r.get(key):
                lines += [f"{key}:", "```", str(r[key]).rstrip()[-2000:], "```"]
        lines.append("")
    return "\n".join(lines) + "\n"


def _tables(name: str, data: dict) -> list[str]:
    rows = []
    if name == "gen_speed":
        rows = ["| batch | samples/s | real-time factor (all) | per sequence | us/step | engine |", "|---|---|---|---|---|---|"]
        rows += [f"| {k.split()[-1]} | {v['samples_per_s']:,} | {v['realtime_factor']} | {v['per_sequence_realtime_factor']}"
                 f" | {v['us_per_step']} | {v['engine']} |" for k, v in data.items() if isinstance(v, dict)]
    elif name == "train":
        rows = ["| batch, precision | s/step | samples/s | max_memory_allocated GiB | Cauchy |", "|---|---|---|---|---|"]
        rows += [f"| {k.removeprefix('batch ')} | {v['step_s_mean']} | {v['samples_per_s']:,} | "
                 f"{v['max_memory_allocated_gib']} | {v['cauchy_backend']} |" for k, v in data.items()]
    elif name == "cauchy":
        rows = ["| size / backend / dtype | fwd+bwd ms | rel. errors (r, grad v, grad w) |", "|---|---|---|"]
        for k, v in data.items():
            if isinstance(v, dict) and "fwd_bwd_ms_median" in v:
                rows.append(f"| {k} | {v['fwd_bwd_ms_median']} | {v['rel_err_forward']:.1e}, {v['rel_err_grad_v']:.1e}, "
                            f"{v['rel_err_grad_w']:.1e} |")
            elif isinstance(v, str):
                rows.append(f"| {k} | - | {v[:200]} |")
        rows.append(f"\nauto backend: {data.get('auto_backend')}")
    else:
        rows = [f"- {k}: {json.dumps(v, default=str)[:400]}" for k, v in data.items() if k not in ("tests",)]
        if "tests" in data:
            rows += [f"- {t['status']}: {t['test']} {t['why']}" for t in data["tests"]]
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu_acceptance",
                   help="folder for the JSON, the summary and the logs (default: $OUT if set, else ./gpu_acceptance)")
    p.add_argument("--dry-run", action="store_true", help="list the parts and check the script on CPU, no GPU needed")
    p.add_argument("--parts", default=None, help=f"comma-separated subset of {','.join(BUDGETS)} (default: all)")
    p.add_argument("--deadline", type=float, default=330.0, help="seconds for all parts together (default 330)")
    p.add_argument("--budget", action="append", default=[], metavar="PART=SECONDS",
                   help="change a part's time limit, e.g. --budget build=600 (repeatable)")
    p.add_argument("--no-build", action="store_true", help="do not build the CUDA extension")
    p.add_argument("--device", default="cuda", help="device of the model parts (default cuda)")
    p.add_argument("--part", default=None, help=argparse.SUPPRESS)  # in a child: run this part
    p.add_argument("--part-json", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.deadline <= 0:
        p.error(f"--deadline must be positive, got {args.deadline}")
    args.budgets = dict(BUDGETS)
    for item in args.budget:
        name, _, secs = item.partition("=")
        try:
            seconds = float(secs)
        except ValueError:
            seconds = -1.0
        if name not in BUDGETS or seconds <= 0:
            p.error(f"--budget takes PART=SECONDS with PART one of {list(BUDGETS)} and SECONDS > 0, got {item!r}")
        args.budgets[name] = seconds
    if args.part:
        if args.part not in CHILD_PARTS or not args.part_json:
            p.error(f"--part must be one of {CHILD_PARTS}, with --part-json")
        return child_main(args.part, args.part_json, args.device, tiny=False)
    report = run_all(args)
    print(f"\n{'PASSED' if report['passed'] else 'FAILED'} in {report['seconds']} s; "
          f"{Path(args.out) / 'gpu_acceptance.md'} and gpu_acceptance.json")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
