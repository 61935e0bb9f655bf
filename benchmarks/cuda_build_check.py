"""Check that the CUDA extension builds, links and exposes what its Python wrapper expects.

Not part of CI: it installs a CUDA build of PyTorch (~5 GB) into a throwaway virtual environment.
No GPU is needed: the extension is built, imported and inspected, not run.

    nice -n 10 python benchmarks/cuda_build_check.py                       # venv under /tmp
    python benchmarks/cuda_build_check.py --venv /data/venv --json out.json --arch-list "9.0"

Steps, each timed:

1. a virtual environment at ``--venv`` (reused when it already holds the requested torch;
   ``--fresh`` recreates it), with ``pip install torch==2.14.1`` (``--torch``);
2. a copy of this checkout (tracked and untracked files, no build outputs), built there with the
   README's command, ``SASHIMI_CUDA_EXT=1 pip install --no-build-isolation -e .``, for
   ``TORCH_CUDA_ARCH_LIST="8.0 8.6 8.9 9.0+PTX"`` (``--arch-list``), in this process's
   environment: CUDA_HOME is left as it is (unset here, so setup.py's search is what is tested);
3. in the venv's Python: ``import sashimi._cauchy_cuda``, the signatures of its functions (from
   pybind11's docstrings) against those ``sashimi/ops/_cauchy_cuda.py`` calls, and one call of
   each with CPU tensors by the wrapper's argument names, which must reach the extension's own
   argument checks (ValueError "must be a CUDA tensor") rather than fail in the binding;
4. ``cuobjdump --list-elf`` / ``--list-ptx`` on the .so: machine code for every requested
   architecture, PTX for each +PTX one. cuobjdump comes from the PATH, the toolkit, or else the
   ``nvidia-cuda-cuobjdump`` wheel installed into the venv.

It prints a summary and writes a JSON result (``--json``, default ``<venv>/../result.json``);
the exit status is 0 only when every check passed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = "/tmp/sashimi-cuda-check/venv"
DEFAULT_TORCH = "2.14.1"
DEFAULT_ARCH_LIST = "8.0 8.6 8.9 9.0+PTX"
# What sashimi/ops/_cauchy_cuda.py calls: ext.forward(v, z, w) -> r and
# ext.backward(grad, v, z, w) -> (grad_v, grad_w_rows); shapes as its docstrings give them.
EXPECTED = {
    "forward": {"args": ["v", "z", "w"], "returns": "torch.Tensor",
                "shapes": ["v (G, M, N)", "z (L,)", "w (G, N)", "(G, M, L)"]},
    "backward": {"args": ["grad", "v", "z", "w"], "returns": "list[torch.Tensor]",
                 "shapes": ["grad (G, M, L)", "(G, M, N)"]},
}
# Build outputs and caches left out of the copy that is built.
IGNORE = shutil.ignore_patterns(".git", "build", "dist", "*.so", "*.egg-info", "__pycache__", ".pytest_cache",
                                "runs", "samples", ".whl", ".gl")


def _toolkit_module():
    """sashimi/cuda_toolkit.py loaded by path (as setup.py does): no torch needed here."""
    spec = importlib.util.spec_from_file_location("_sashimi_cuda_toolkit", ROOT / "sashimi" / "cuda_toolkit.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _clean_env(**extra) -> dict:
    """This process's environment without PYTHONPATH, which could make the venv's Python import
    a checkout without the built extension instead of the copy that was built."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


def _run(cmd, log: Path, env=None, cwd=None) -> tuple[int, float]:
    """Run ``cmd`` with its output appended to ``log``. Returns (exit status, seconds)."""
    env = _clean_env() if env is None else env
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(map(str, cmd))}\n")
        f.flush()
        rc = subprocess.run(list(map(str, cmd)), stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd).returncode
    return rc, time.perf_counter() - t0


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _torch_version(python: Path) -> str | None:
    if not python.exists():
        return None
    out = subprocess.run([str(python), "-c", "import torch; print(torch.__version__, torch.version.cuda)"],
                         capture_output=True, text=True, env=_clean_env())
    return out.stdout.strip() or None


# ---- the steps -------------------------------------------------------------------------------
def make_venv(venv: Path, torch_version: str, fresh: bool, log: Path, result: dict) -> Path:
    python = _venv_python(venv)
    if fresh and venv.exists():
        shutil.rmtree(venv)
    have = _torch_version(python)
    if have and have.split()[0].split("+")[0] == torch_version:
        result["venv"] = {"path": str(venv), "reused": True, "torch": have}
        return python
    if not python.exists():
        rc, secs = _run([sys.executable, "-m", "venv", venv], log)
        if rc:
            raise RuntimeError(f"python -m venv {venv} failed (exit {rc}); see {log}")
        result["timings_s"]["venv"] = round(secs, 1)
    rc, secs = _run([python, "-m", "pip", "install", f"torch=={torch_version}"], log)
    if rc:
        raise RuntimeError(f"pip install torch=={torch_version} failed (exit {rc}); see {log}")
    result["timings_s"]["torch_install"] = round(secs, 1)
    result["venv"] = {"path": str(venv), "reused": False, "torch": _torch_version(python)}
    return python


def build(python: Path, work: Path, arch_list: str, log: Path, result: dict) -> Path:
    """Copy the checkout to work/src and build it there; returns the built .so."""
    src = work / "src"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(ROOT, src, ignore=IGNORE)
    env = _clean_env(SASHIMI_CUDA_EXT="1", TORCH_CUDA_ARCH_LIST=arch_list)
    before = log.stat().st_size if log.exists() else 0
    # -v: pip shows setup.py's own lines (which toolkit it chose) and the compiler commands.
    rc, secs = _run([python, "-m", "pip", "install", "-v", "--no-build-isolation", "-e", src], log, env=env)
    result["timings_s"]["build"] = round(secs, 1)
    with open(log, "rb") as f:
        f.seek(before)
        text = f.read().decode("utf-8", errors="replace")
    # pip runs setup.py twice (metadata, then the build): each line once
    result["setup_said"] = list(dict.fromkeys(re.findall(r"sashimi setup: (.*)", text)))
    result["gencode_flags"] = sorted(set(re.findall(r"-gencode[= ]arch=\w+,code=\w+", text)))
    if rc:
        tail = "\n".join(line for line in text.splitlines()[-40:])
        raise RuntimeError(f"the build failed (exit {rc}); last lines of {log}:\n{tail}")
    sos = sorted((src / "sashimi").glob("_cauchy_cuda*.so"))
    if not sos:
        raise RuntimeError(f"the build succeeded but no sashimi/_cauchy_cuda*.so is in {src}")
    result["so"] = {"path": str(sos[0]), "bytes": sos[0].stat().st_size}
    return sos[0]


def inspect_extension() -> dict:
    """Run in the venv's Python (``--inspect``): import the extension and check its bindings."""
    import torch

    t0 = time.perf_counter()
    ext = importlib.import_module("sashimi._cauchy_cuda")
    out = {"file": ext.__file__, "import_s": round(time.perf_counter() - t0, 2), "module_doc": ext.__doc__,
           "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "gpu_visible": torch.cuda.is_available(), "operators": {}, "problems": []}
    names = sorted(n for n in dir(ext) if not n.startswith("_"))
    out["exported"] = names
    for name, want in EXPECTED.items():
        fn = getattr(ext, name, None)
        if fn is None:
            out["problems"].append(f"{name}: not exported (the module has {names})")
            continue
        doc = fn.__doc__ or ""
        m = re.match(rf"{name}\((.*)\) -> (.+)", doc.splitlines()[0] if doc else "")
        if not m:
            out["problems"].append(f"{name}: no pybind11 signature in its docstring: {doc!r}")
            continue
        args = [a.strip() for a in m.group(1).split(",") if a.strip()]
        arg_names = [a.split(":")[0].strip() for a in args]
        info = {"signature": doc.splitlines()[0], "doc": doc.strip().splitlines()[-1], "args": arg_names}
        if arg_names != want["args"]:
            out["problems"].append(f"{name}: arguments {arg_names}, the wrapper passes {want['args']}")
        if any(not a.endswith(": torch.Tensor") for a in args):
            out["problems"].append(f"{name}: every argument should be a torch.Tensor: {args}")
        if m.group(2).strip().lower() != want["returns"].lower():
            out["problems"].append(f"{name}: returns {m.group(2).strip()}, expected {want['returns']}")
        missing = [s for s in want["shapes"] if s not in doc]
        if missing:
            out["problems"].append(f"{name}: its docstring does not document {missing}: {doc!r}")
        # A call by the wrapper's argument names with CPU tensors must get past pybind11 (names,
        # arity, types) into the extension's checks, which refuse CPU tensors with a ValueError.
        c = torch.zeros(1, 1, 2, dtype=torch.complex64)
        tensors = {"v": c, "z": torch.zeros(3, dtype=torch.complex64), "w": torch.zeros(1, 2, dtype=torch.complex64),
                   "grad": torch.zeros(1, 1, 3, dtype=torch.complex64)}
        try:
            fn(**{a: tensors[a] for a in want["args"]})
            info["cpu_call"] = "returned (a CUDA-only operator should refuse CPU tensors)"
            out["problems"].append(f"{name}: accepted CPU tensors")
        except ValueError as e:
            info["cpu_call"] = f"ValueError: {str(e).splitlines()[0]}"
            if "must be a CUDA tensor" not in str(e):
                out["problems"].append(f"{name}: unexpected ValueError for CPU tensors: {e}")
        except Exception as e:  # TypeError here: the binding refused the wrapper's arguments
            info["cpu_call"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
            out["problems"].append(f"{name}: the call by the wrapper's argument names failed in the binding: "
                                   f"{type(e).__name__}: {e}")
        out["operators"][name] = info
    return out


def find_cuobjdump(python: Path, toolkit_bin: str | None, cuda_major: str | None, log: Path) -> str:
    """cuobjdump from the PATH, the toolkit, or the nvidia-cuda-cuobjdump wheel (installed into
    the venv when needed: some toolkits, e.g. one assembled from pip packages, lack it)."""
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True, env=_clean_env()).stdout.strip())
    candidates = [shutil.which("cuobjdump"), toolkit_bin and os.path.join(toolkit_bin, "cuobjdump")]
    candidates += [str(p) for p in sorted(site.glob("nvidia/*/bin/cuobjdump"))]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    spec = f"nvidia-cuda-cuobjdump>={cuda_major},<{int(cuda_major) + 1}" if cuda_major else "nvidia-cuda-cuobjdump"
    rc, _ = _run([python, "-m", "pip", "install", spec], log)
    found = sorted(site.glob("nvidia/*/bin/cuobjdump"))
    if rc or not found:
        raise RuntimeError(f"no cuobjdump on the PATH or in the toolkit, and `pip install {spec}` failed (exit {rc})")
    return str(found[0])


def list_architectures(cuobjdump: str, so: Path) -> dict:
    """{'elf': ['sm_80', ...], 'ptx': ['compute_90', ...]} as cuobjdump lists them."""
    found = {}
    for kind, flag in (("elf", "--list-elf"), ("ptx", "--list-ptx")):
        out = subprocess.run([cuobjdump, flag, str(so)], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"cuobjdump {flag} failed (exit {out.returncode}): {out.stderr.strip()}")
        archs = sorted(set(re.findall(r"\.(sm_\d+[af]?)\.(?:cubin|ptx)", out.stdout)), key=_arch_key)
        found[kind] = archs if kind == "elf" else [a.replace("sm_", "compute_") for a in archs]
        found[f"{kind}_listing"] = out.stdout.strip().splitlines()
    return found


def _arch_key(arch: str):
    return int(re.sub(r"\D", "", arch))


# ---- the whole check -------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--venv", default=DEFAULT_VENV, help="throwaway virtual environment (default %(default)s)")
    p.add_argument("--torch", default=DEFAULT_TORCH, help="torch version to install (default %(default)s)")
    p.add_argument("--arch-list", default=DEFAULT_ARCH_LIST, help='TORCH_CUDA_ARCH_LIST (default "%(default)s")')
    p.add_argument("--fresh", action="store_true", help="recreate the venv even if it holds the torch asked for")
    p.add_argument("--json", default=None, help="result file (default: result.json beside the venv)")
    p.add_argument("--inspect", action="store_true", help=argparse.SUPPRESS)  # step 3, run in the venv
    args = p.parse_args(argv)
    if args.inspect:
        print(json.dumps(inspect_extension()))
        return 0

    venv = Path(args.venv).resolve()
    work = venv.parent
    work.mkdir(parents=True, exist_ok=True)
    log = work / "build_check.log"
    log.write_text("")
    json_path = Path(args.json) if args.json else work / "result.json"
    tk = _toolkit_module()
    expected = tk.nvcc_targets(args.arch_list)
    result = {"ok": False, "arch_list": args.arch_list, "expected": expected, "timings_s": {}, "failures": [],
              "host": {"python": platform.python_version(), "machine": platform.machine(),
                       "CUDA_HOME": os.environ.get("CUDA_HOME"), "nvcc_on_path": shutil.which("nvcc")},
              "log": str(log)}
    try:
        toolkit = tk.find_cuda_toolkit()
        result["toolkit"] = {"home": toolkit.home, "version": toolkit.version, "source": toolkit.source,
                             "cudart_dir": toolkit.cudart_dir}
    except tk.CudaToolkitNotFound as e:
        toolkit = None
        result["failures"].append(f"toolkit: {e}")
    t_all = time.perf_counter()
    try:
        python = make_venv(venv, args.torch, args.fresh, log, result)
        so = build(python, work, args.arch_list, log, result)
        out = subprocess.run([str(python), str(Path(__file__).resolve()), "--inspect"], capture_output=True,
                             text=True, cwd=str(work), env=_clean_env())  # import the built copy
        if out.returncode:
            raise RuntimeError(f"importing the extension failed:\n{out.stderr.strip()[-3000:]}")
        result["extension"] = json.loads(out.stdout.strip().splitlines()[-1])
        result["failures"] += [f"bindings: {p}" for p in result["extension"]["problems"]]
        major = toolkit.version.split(".")[0] if toolkit and toolkit.version else None
        cuobjdump = find_cuobjdump(python, os.path.dirname(toolkit.nvcc) if toolkit else None, major, log)
        archs = list_architectures(cuobjdump, so)
        archs["cuobjdump"] = cuobjdump
        result["architectures"] = archs
        have = set(archs["elf"]) | set(archs["ptx"])
        missing = [t for t in expected if t not in have]
        result["missing_targets"] = missing
        if missing:
            result["failures"].append(f"architectures: the .so lacks {missing} (has {sorted(have, key=_arch_key)})")
    except Exception as e:  # recorded, with where it happened; the summary still prints
        result["failures"].append(f"{type(e).__name__}: {e}")
        result["traceback"] = traceback.format_exc()
    result["timings_s"]["total"] = round(time.perf_counter() - t_all, 1)
    result["ok"] = not result["failures"]
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(summary(result))
    print(f"\nJSON: {json_path}\nlog:  {log}")
    return 0 if result["ok"] else 1


def summary(r: dict) -> str:
    lines = [f"CUDA build check: {'PASSED' if r['ok'] else 'FAILED'}"]
    if "toolkit" in r:
        t = r["toolkit"]
        lines.append(f"  toolkit: CUDA {t['version']} at {t['home']} (found from {t['source']})")
    if "venv" in r:
        lines.append(f"  venv: {r['venv']['path']} (torch {r['venv']['torch']}"
                     f"{', reused' if r['venv']['reused'] else ''})")
    lines.append("  times: " + ", ".join(f"{k} {v:.1f} s" for k, v in r["timings_s"].items()))
    lines.extend(f"  setup.py: {s}" for s in r.get("setup_said", []))
    if "so" in r:
        lines.append(f"  built: {r['so']['path']} ({r['so']['bytes'] / 1e6:.1f} MB)")
    if "architectures" in r:
        a = r["architectures"]
        lines.append(f"  requested {' '.join(r['expected'])}; machine code: {' '.join(a['elf']) or 'none'}; "
                     f"PTX: {' '.join(a['ptx']) or 'none'}")
    for name, op in r.get("extension", {}).get("operators", {}).items():
        lines.append(f"  {op['signature']}  [{op['doc']}]; CPU call: {op['cpu_call']}")
    lines.extend(f"  FAILURE: {f}" for f in r["failures"])
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
