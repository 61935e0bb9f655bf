"""Build small C++ libraries on first use and load them with ctypes.

A library is compiled once per (sources, compiler, flags, CPU) with ``-O3 -march=native`` into
the torch extensions directory (``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``),
under a name that hashes all of these, so that a changed source or another machine never loads a
stale binary. It needs only a C++ compiler (``$CXX``, else ``c++``/``g++``/``clang++``), neither
ninja nor the PyTorch headers, so it builds in seconds. Concurrent builders are harmless: each
compiles to a temporary file and renames it into place atomically.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["CSRC", "build_library", "build_root", "compiler"]

CSRC = Path(__file__).resolve().parent / "csrc"
BASE_FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-fvisibility=hidden", "-pthread"]
ARCH_FLAGS = (["-march=native"], [])  # tried in turn: some compilers / CPUs reject -march=native


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def compiler() -> str | None:
    """The C++ compiler to use, or None."""
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def build_root() -> Path:
    """``$TORCH_EXTENSIONS_DIR``, else PyTorch's default ``~/.cache/torch_extensions`` (worked out
    here: importing torch.utils.cpp_extension for it takes over a second)."""
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.path.realpath(os.path.join(cache, "torch_extensions")))


def _build_dir(name: str) -> Path:
    return build_root() / f"sashimi_{name}"


def build_library(name: str, source: Path, headers=(), flags=(), suffix: str = "",
                  arch_flags=ARCH_FLAGS) -> ctypes.CDLL:
    """Compile ``source`` (with ``headers`` in the hash) once and load it.

    Args:
        name: library name (its build folder is ``sashimi_{name}``).
        source: the one translation unit.
        headers: files it includes (part of the cache key).
        flags: extra compiler flags (part of the cache key), e.g. ``("-DSG_PROFILE",)``.
        suffix: appended to the file name, to tell variants apart when listing the folder.
        arch_flags: architecture flag sets tried in turn until one compiles.

    Returns:
        the loaded library.

    Raises:
        RuntimeError: no compiler, missing sources, or compilation failed (with the compiler's message).
    """
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set $CXX or install g++)")
    missing = [str(p) for p in (source, *headers) if not Path(p).is_file()]
    if missing:
        raise RuntimeError(f"C++ source missing: {', '.join(missing)}")
    text = b"".join(Path(p).read_bytes() for p in (source, *headers))
    errors = []
    for arch in arch_flags:
        all_flags = BASE_FLAGS + list(arch) + list(flags)
        key = hashlib.sha256(b"\0".join([text, cxx.encode(), " ".join(all_flags).encode(),
                                         _cpu_signature().encode()])).hexdigest()[:16]
        out_dir = _build_dir(name)
        target = out_dir / f"{name}_{key}{suffix}.so"
        if not target.is_file():
            out_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
            os.close(fd)
            # seconds of silence otherwise (the command line shows the 'sashimi' logger's notes)
            logging.getLogger("sashimi").info(f"sashimi: compiling {source.name} for this machine (once; it is "
                                              f"kept in {out_dir})")
            proc = subprocess.run([cxx, *all_flags, str(source), "-o", tmp], capture_output=True, text=True)
            if proc.returncode != 0:
                os.unlink(tmp)
                errors.append(f"{cxx} {' '.join(all_flags)}: {proc.stderr.strip()[-500:]}")
                continue
            os.replace(tmp, target)
        return ctypes.CDLL(str(target))
    raise RuntimeError(f"compiling {source.name} failed: " + " | ".join(errors))
