"""What this machine will use, and why: the facts behind ``sashimi doctor``.

:func:`gather` returns a plain dict (JSON-ready) with one section per concern: versions, the
PyTorch build, GPUs, the default device and training precision, the Cauchy kernel backends
(which one ``auto`` picks and why each other is not used), the C++ compiler and the fast CPU
generation engine, thread settings, cache folders and downloads, and the bundled files with
their SHA-256 checks. :func:`format_report` turns it into one screen of text.

Every section is probed on its own: a missing optional piece (no compiler, no GPU, pykeops
absent, an unwritable cache) or even a failing probe becomes a line of the report, never an
exception. The first run on a machine compiles the two small C++ libraries (the CPU Cauchy
kernel and the generation step, a few seconds each); later runs load them from the cache.

The library's internals that this reads are imported here only, inside the section that needs
them, so that moving a module means editing this file alone.
"""
from __future__ import annotations

import os
import platform
import subprocess
import threading
import time
import warnings
from pathlib import Path

import torch

__all__ = ["gather", "format_report"]


def gather(build: bool = True, progress=None) -> dict:
    """Probe this machine.

    Args:
        build: build (or load from the cache) the C++ libraries to report whether they work;
            False reports only what is found without compiling or running anything.
        progress: called with a line of text when something takes long (the first run's
            compilation), e.g. ``lambda line: print(line, file=sys.stderr)``; None: silent.

    Returns:
        dict of sections (see the module docstring); a section that could not be probed is
        ``{"error": "<exception type>: <message>"}``. ``problems`` lists what is broken (a
        damaged or missing bundled file), ``notes`` what is merely unavailable;
        ``timings_s`` the seconds each section took and ``elapsed_s`` the total.
    """
    t0 = time.perf_counter()
    report: dict = {}
    timings = {}
    for name, probe in (("versions", _versions), ("gpus", _gpus), ("device", _device), ("native", _native),
                        ("cauchy", _cauchy), ("compiler", _compiler), ("fastgen", _fastgen), ("threads", _threads),
                        ("caches", _caches), ("bundled", _bundled)):
        t = time.perf_counter()
        try:
            with warnings.catch_warnings():  # fallbacks warn once; here the report says it
                warnings.simplefilter("ignore")
                if name == "native":
                    report[name] = probe(report, build, progress)
                else:
                    report[name] = probe(report, build) if name in ("cauchy", "fastgen") else probe(report)
        except Exception as e:  # a probe that fails is a line of the report, never a traceback
            report[name] = {"error": _error(e)}
        timings[name] = round(time.perf_counter() - t, 3)
    bundled = report["bundled"]
    report["problems"] = [f"bundled {b['kind']} {b['name']}: {b['status']}"
                          for b in bundled.get("files", []) if b["status"] != "ok"]
    if "error" in bundled:
        report["problems"].append(f"bundled files: {bundled['error']}")
    report["problems"] += _build_problems(report)
    report["notes"] = [f"{name}: {section['error']}" for name, section in report.items()
                       if isinstance(section, dict) and "error" in section and name != "bundled"]
    report["timings_s"] = timings
    report["elapsed_s"] = round(time.perf_counter() - t0, 2)
    return report


def _build_problems(report: dict) -> list[str]:
    """The C++ libraries that could be built nowhere here (a compiler that fails, an unwritable build
    folder): problems, since everything then runs on the much slower PyTorch paths."""
    out = []
    cpu = ((report.get("cauchy") or {}).get("devices") or {}).get("cpu") or {}
    kernel = (cpu.get("backends") or {}).get("cpu") or {}
    if kernel.get("available") is False:
        out.append(f"Cauchy kernel (cpu): {kernel.get('reason')}")
    fast = report.get("fastgen") or {}
    if fast.get("cpp") is False:
        out.append(f"CPU generation: the fused C++ step cannot be built: {fast.get('why')}")
    return out


def _error(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


# ---- sections -------------------------------------------------------------------------------------
def _cpuinfo() -> tuple[str | None, set[str] | None]:
    """(CPU model name, instruction-set flags) from /proc/cpuinfo; None where unknown (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.readlines()
    except OSError:
        return None, None
    field = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in reversed(lines) if ":" in line}
    return field.get("model name"), set(field.get("flags", "").split()) or None


def _versions(report: dict) -> dict:
    import numpy

    import sashimi

    cpu = _cpuinfo()[0] or platform.processor() or platform.machine()
    return {"sashimi": sashimi.__version__, "sashimi_path": str(Path(sashimi.__file__).parent),
            "torch": str(torch.__version__), "python": platform.python_version(), "numpy": numpy.__version__,
            "platform": f"{platform.system()} {platform.machine()}", "cpu": cpu,
            "torch_cuda": torch.version.cuda, "torch_hip": getattr(torch.version, "hip", None),
            "torch_arch_list": list(torch.cuda.get_arch_list()) if torch.version.cuda else []}


def _gpus(report: dict) -> dict:
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return {"devices": [], "why_none": "this PyTorch is a CPU build"}
    if not torch.cuda.is_available():
        return {"devices": [], "why_none": "no CUDA device visible (driver, CUDA_VISIBLE_DEVICES?)"}
    devices = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        devices.append({"index": i, "name": p.name, "capability": f"{p.major}.{p.minor}",
                        "memory_gib": round(p.total_memory / 2**30, 1)})
    return {"devices": devices, "why_none": None}


def _device(report: dict) -> dict:
    from sashimi.train.loop import resolve_precision

    gpus = report.get("gpus", {}).get("devices") or []
    device = torch.device("cuda", 0) if gpus else torch.device("cpu")
    why = f"CUDA device {gpus[0]['name']}" if gpus else report.get("gpus", {}).get("why_none") or "no GPU"
    precision = resolve_precision("auto", device)
    flags = _cpuinfo()[1]
    cpu_bf16 = None if flags is None else bool(flags & {"avx512_bf16", "amx_bf16"})
    if device.type == "cpu":
        note = "bf16 on a CPU is opt-in: precision=bf16" + (
            "" if cpu_bf16 is None else "; this CPU has avx512_bf16 or amx_bf16" if cpu_bf16
            else "; no avx512_bf16/amx_bf16 on this CPU: expect it slower than fp32")
    else:
        note = "native bf16" if precision == "bf16" else "this GPU has no native bf16 (compute capability < 8.0)"
    return {"default": str(device), "why": why, "train_precision_auto": precision, "precision_why": note,
            "cpu_bf16_instructions": cpu_bf16}


def _native(report: dict, build: bool, progress=None) -> dict:
    """Build, or load from the cache, both C++ libraries (the CPU Cauchy kernel, through its probe,
    and the generation step) in parallel: a first run's compilations then overlap. Failures are
    reported by the sections that use them."""
    from concurrent.futures import ThreadPoolExecutor

    from sashimi.fastgen import cpu
    from sashimi.ops import backend_report

    if not build:
        return {}

    def timed(fn) -> float:
        t = time.perf_counter()
        try:
            fn()
        except Exception:  # the cauchy and fastgen sections say what failed
            pass
        return round(time.perf_counter() - t, 2)

    before = _built_libraries()
    # loading from the cache takes milliseconds: still busy after a second means compiling
    timer = threading.Timer(1.0, progress or (lambda line: None),
                            ["compiling the C++ libraries (first use; ~15 s of CPU time, cached afterwards) ..."])
    timer.start()
    try:
        with ThreadPoolExecutor(2) as pool:
            jobs = {"cauchy": pool.submit(timed, lambda: backend_report("cpu")),
                    "fastgen": pool.submit(timed, cpu.load_library)}
    finally:
        timer.cancel()
    new = {Path(p).parent.name for p in _built_libraries() - before}  # build folders are sashimi_<name>
    return {name: {"seconds": job.result(), "compiled_now": f"sashimi_{name}" in new} for name, job in jobs.items()}


def _cauchy(report: dict, build: bool) -> dict:
    from sashimi.ops import backend_report, cauchy_backend
    from sashimi.ops.cauchy import ENV_VAR

    devices = ["cpu"] + (["cuda:0"] if report.get("gpus", {}).get("devices") else [])
    out = {"env": os.environ.get(ENV_VAR) or None, "devices": {}}
    for name in devices:
        if not build and name == "cpu":  # the CPU probe compiles the kernel
            out["devices"][name] = {"error": "not probed (--no-build)"}
            continue
        entry: dict = {}
        try:
            entry["backends"] = {k: {"available": a, "reason": r} for k, (a, r) in backend_report(name).items()}
            entry["auto"] = cauchy_backend(name, backend="auto")
            if out["env"]:
                entry["env_choice"] = cauchy_backend(name)  # raises if the forced one cannot run here
        except Exception as e:
            entry["error"] = _error(e)
        out["devices"][name] = entry
    return out


def _compiler(report: dict) -> dict:
    from sashimi.native import compiler

    path = compiler()
    if path is None:
        return {"path": None, "version": None, "why_none": "no C++ compiler ($CXX, c++, g++, clang++) on PATH"}
    try:
        proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
        version = (proc.stdout.strip().splitlines() or ["?"])[0]
    except (OSError, subprocess.SubprocessError) as e:
        version = f"? ({_error(e)})"
    return {"path": path, "version": version, "env_CXX": os.environ.get("CXX")}


def _fastgen(report: dict, build: bool) -> dict:
    from sashimi import fastgen
    from sashimi.fastgen import cpu

    out = {"threads": fastgen.get_num_threads(), "weights": fastgen.get_weight_storage(),
           "cuda_graphs": os.environ.get("SASHIMI_CUDA_GRAPHS", "1") != "0"}
    if not build:
        return {**out, "cpp": None, "why": "not built (--no-build)"}
    lib = cpu.load_library()  # built (or found) by the native section
    built = report.get("native", {}).get("fastgen", {})
    out["load_s"], out["compiled_now"] = built.get("seconds"), built.get("compiled_now", False)
    out["cpp"] = lib is not None
    out["why"] = None if lib is not None else f"{cpu.build_error}; generation on CPU uses the PyTorch step instead"
    return out


def _built_libraries() -> set[str]:
    from sashimi.native import build_root

    try:
        return {str(p) for p in build_root().glob("sashimi_*/*.so")}
    except OSError:
        return set()


def _threads(report: dict) -> dict:
    from sashimi import fastgen

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    return {"torch_intra_op": torch.get_num_threads(), "torch_inter_op": torch.get_num_interop_threads(),
            "fastgen": fastgen.get_num_threads(), "cpus": os.cpu_count(), "cpus_usable": usable, "env": env}


def _caches(report: dict) -> dict:
    from sashimi.native import build_root
    from sashimi.persistence.download import cache_path
    from sashimi.pretrained.registry import published_downloads

    ext = build_root()
    libs = sorted(ext.glob("sashimi_*/*.so")) if ext.is_dir() else []
    downloads = {}
    for name, url in published_downloads():
        path = cache_path(url)
        downloads[name] = {"path": path, "bytes": os.path.getsize(path) if os.path.isfile(path) else None}
    from sashimi.pretrained.registry import DOWNLOADED_CLASSIFIERS

    for name, (url, _) in DOWNLOADED_CLASSIFIERS.items():  # published classifiers (sashimi eval --classifier)
        path = cache_path(url)
        downloads[f"classifier {name}"] = {"path": path,
                                           "bytes": os.path.getsize(path) if os.path.isfile(path) else None}
    return {"torch_extensions": str(ext), "torch_extensions_env": os.environ.get("TORCH_EXTENSIONS_DIR"),
            "libraries": [str(p.relative_to(ext)) for p in libs],
            "libraries_bytes": sum(p.stat().st_size for p in libs),
            "torch_hub": torch.hub.get_dir(), "downloads": downloads,
            "downloads_dir": os.path.join(torch.hub.get_dir(), "checkpoints", "sashimi")}


def _bundled(report: dict) -> dict:
    """One row per bundled model folder: its files' total size, and whether each file's SHA-256
    is the listed one."""
    from sashimi.persistence.download import sha256_file
    from sashimi.pretrained import registry

    entries = [("model", m.name, Path(registry.WEIGHTS_DIR) / m.folder, m.files)
               for m in registry.BUNDLED_MODELS.values()]
    entries += [("classifier", name, Path(registry.CLASSIFIER_WEIGHTS_DIR) / folder, files)
                for name, (folder, files) in registry.BUNDLED_CLASSIFIERS.items()]
    rows = []
    for kind, name, folder, files in entries:
        row = {"kind": kind, "name": name, "path": str(folder), "bytes": 0, "status": "ok", "files": {}}
        for file, expected in files.items():
            path = folder / file
            if not path.is_file():
                status = f"{file} missing (a broken installation? reinstall sashimi)"
            else:
                digest = sha256_file(str(path))
                row["bytes"] += path.stat().st_size
                status = "ok" if digest == expected else \
                    f"{file}: SHA-256 mismatch: {digest[:16]}..., expected {expected[:16]}... (changed or damaged)"
            row["files"][file] = status
            if status != "ok" and row["status"] == "ok":
                row["status"] = status
        rows.append(row)
    return {"files": rows}


# ---- text -------------------------------------------------------------------------------------------
def format_report(report: dict) -> str:
    """The report as one screen of text (see :func:`gather`)."""
    lines: list[str] = ["sashimi doctor: what this machine will use, and why", ""]

    def add(label: str, text: str) -> None:
        lines.append(f"{label:<16}{text}")

    def section(name: str):
        s = report.get(name) or {}
        if "error" in s:
            add(name, f"could not be probed: {s['error']}")
            return None
        return s

    if (v := section("versions")) is not None:
        add("versions", f"sashimi {v['sashimi']} ({v['sashimi_path']}), torch {v['torch']}, python {v['python']}, "
                        f"numpy {v['numpy']}")
        add("machine", f"{v['platform']}, {v['cpu']}")
        build = (f"CUDA {v['torch_cuda']} (kernels for {' '.join(v['torch_arch_list']) or '?'})" if v["torch_cuda"]
                 else f"ROCm {v['torch_hip']}" if v["torch_hip"] else "CPU build (no CUDA)")
        add("torch build", build)
    if (g := section("gpus")) is not None:
        if g["devices"]:
            for d in g["devices"]:
                add("GPU" if d["index"] == 0 else "", f"cuda:{d['index']} {d['name']}, compute capability "
                                                      f"{d['capability']}, {d['memory_gib']} GiB")
        else:
            add("GPUs", f"none ({g['why_none']})")
    if (d := section("device")) is not None:
        add("device", f"{d['default']} by default ({d['why']})")
        add("precision", f"training precision=auto -> {d['train_precision_auto']} ({d['precision_why']})")
    if (c := section("cauchy")) is not None:
        for dev, entry in c["devices"].items():
            if "error" in entry and "backends" not in entry:
                add("Cauchy kernel", f"{dev}: {entry['error']}")
                continue
            if "auto" in entry:
                order = "cpu, then torch" if dev == "cpu" else "cuda, keops, then torch"
                add("Cauchy kernel", f"auto picks '{entry['auto']}' for {dev} tensors (it tries {order})")
            built = (report.get("native") or {}).get("cauchy") or {}
            if dev == "cpu" and built.get("compiled_now"):
                add("", f"(the cpu kernel was compiled now, {built['seconds']} s: first use; cached from now on)")
            if entry.get("env_choice"):
                add("", f"{c['env'] and 'SASHIMI_CAUCHY_BACKEND=' + c['env']} -> '{entry['env_choice']}'")
            if "error" in entry:
                add("", f"error: {entry['error']}")
            for name, b in entry.get("backends", {}).items():
                mark = {True: "yes", False: "no ", None: "-  "}[b["available"]]
                add("", f"  {name:<6}{mark}  {b['reason']}")
    if (cc := section("compiler")) is not None:
        add("C++ compiler", f"{cc['path']} ({cc['version']})" if cc["path"] else f"none: {cc['why_none']}")
    if (f := section("fastgen")) is not None:
        if f["cpp"] is None:
            text = f["why"]
        elif f["cpp"]:
            text = (f"fused C++ step compiled now ({f['load_s']} s, first use; cached from now on)" if f["compiled_now"]
                    else f"fused C++ step loaded from the cache ({f['load_s']} s)")
        else:
            text = f"unavailable: {f['why']}"
        add("CPU generation", text)
        if (report.get("gpus") or {}).get("devices"):
            add("GPU generation", "CUDA graphs" if f["cuda_graphs"] else "PyTorch step (SASHIMI_CUDA_GRAPHS=0)")
    if (t := section("threads")) is not None:
        env = ", ".join(f"{k}={v if v is not None else 'unset'}" for k, v in t["env"].items())
        add("threads", f"torch {t['torch_intra_op']} intra-op, {t['torch_inter_op']} inter-op; fast generation up to "
                       f"{t['fastgen']}; {t['cpus_usable']} of {t['cpus']} CPUs usable")
        add("", env)
    if (k := section("caches")) is not None:
        folders: dict = {}
        for lib in k["libraries"]:
            folders[Path(lib).parent.name] = folders.get(Path(lib).parent.name, 0) + 1
        libs = ", ".join(f"{name} ({n} build{'s' if n > 1 else ''})" for name, n in folders.items())
        libs = libs or "nothing built yet"
        src = "$TORCH_EXTENSIONS_DIR" if k["torch_extensions_env"] else "default; set TORCH_EXTENSIONS_DIR to move it"
        add("C++ builds", f"{k['torch_extensions']} ({src}): {libs}" + (
            f", {k['libraries_bytes'] / 1e6:.1f} MB" if k["libraries"] else ""))
        add("torch.hub", k["torch_hub"])
        add("downloads", f"{k['downloads_dir']}/<URL hash>/")
        for name, dl in k["downloads"].items():
            add("", f"  {name}: " + (f"downloaded ({dl['bytes'] / 1e6:.1f} MB)" if dl["bytes"] is not None
                                     else "not downloaded (fetched on first use)"))
    if (b := section("bundled")) is not None:
        for i, row in enumerate(b["files"]):
            size = f"{row['bytes'] / 1e6:.2f} MB" if row["bytes"] is not None else "-"
            add("bundled" if i == 0 else "", f"{row['kind']} {row['name']}: {size}, "
                                             f"{'SHA-256 ok' if row['status'] == 'ok' else row['status']}")
            add("", f"  {row['path']}")
    lines.append("")
    verdict = "PROBLEMS: " + "; ".join(report["problems"]) if report.get("problems") else "no problems found"
    lines.append(f"{verdict} ({report.get('elapsed_s', 0):.1f} s)")
    return "\n".join(lines)
