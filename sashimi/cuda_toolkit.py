"""Find the CUDA toolkit that builds and links the CUDA extension (used by setup.py).

PyTorch's build helper takes ``$CUDA_HOME``, else the folder two levels above the ``nvcc`` on the
PATH. That guess fails when ``nvcc`` is a wrapper script in a general ``bin/`` (``/usr/local/bin/nvcc``
running ``exec /usr/local/cuda-13.0/bin/nvcc "$@"``): it gives ``/usr/local``, which holds no
``libcudart``, and the link fails with ``cannot find -lcudart``. This module follows symbolic
links and wrapper scripts (and, as a last resort, asks nvcc where it lives) and only accepts a
folder that holds both ``bin/nvcc`` and a ``libcudart`` the linker can use.

Plain Python on purpose: setup.py loads this file by path, before (and without) importing torch or
the package, so it must import nothing from ``sashimi``.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

__all__ = ["CudaToolkit", "CudaToolkitNotFound", "DEFAULT_ROOTS", "LIB_SUBDIRS", "find_cuda_toolkit",
           "nvcc_targets"]

# Where toolkits are usually installed, in order of preference (globs sorted newest first).
DEFAULT_ROOTS = ("/usr/local/cuda", "/usr/local/cuda-*", "/opt/cuda", "/opt/cuda-*", "/usr/lib/cuda")
# Where a toolkit keeps libcudart: the usual lib64 (often a link to lib), the cross-compilation
# layout of recent toolkits, and Debian's multiarch folder (nvcc in /usr/bin).
LIB_SUBDIRS = ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib"),
               os.path.join("targets", "sbsa-linux", "lib"), os.path.join("lib", "x86_64-linux-gnu"))
# What `-lcudart` can link: the shared library's development link or a plain static archive.
# (libcudart.so.13 alone, a runtime without its development files, does not link.)
CUDART_NAMES = ("libcudart.so", "libcudart.a")
_MAX_WRAPPER_DEPTH = 4  # a wrapper that runs a wrapper that runs nvcc, and so on


class CudaToolkitNotFound(RuntimeError):
    """No CUDA toolkit with nvcc and a linkable libcudart was found; the message says what to set."""


@dataclass(frozen=True)
class CudaToolkit:
    """A CUDA toolkit that can build and link an extension.

    Attributes:
        home: the folder to use as CUDA_HOME (holds bin/nvcc).
        nvcc: path of the real nvcc (home/bin/nvcc).
        cudart_dir: the folder holding libcudart.so (or libcudart.a), to put on the link line.
        version: 'major.minor' when known (version.json, the folder's name or nvcc --version), else None.
        source: how it was found, for messages (e.g. 'nvcc on PATH (/usr/local/bin/nvcc, a wrapper script)').
    """
    home: str
    nvcc: str
    cudart_dir: str
    version: str | None = None
    source: str = field(default="", compare=False)


# ---- following nvcc --------------------------------------------------------------------------
def _is_script(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return False


def _script_targets(path: str) -> list[str]:
    """Absolute paths ending in /nvcc that a wrapper script runs (``exec /x/bin/nvcc "$@"``, or a
    plain ``/x/bin/nvcc "$@"`` line), in the order they appear. Paths built from shell variables
    are not expanded: :func:`_ask_nvcc` covers those."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(65536)
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        line = line.split("#", 1)[0] if not line.startswith("#!") else ""
        for m in re.finditer(r"""(?:^|[\s;&|'"=])(/[^\s'";&|]*/nvcc)(?=$|[\s'";&|])""", line):
            if m.group(1) not in found:
                found.append(m.group(1))
    return found


def _ask_nvcc(nvcc: str, timeout: float = 20.0) -> str | None:
    """The folder of the nvcc that ``nvcc`` really runs, as nvcc itself reports it in a dry run
    (its ``_HERE_=`` / ``TOP=`` lines), or None. Nothing is compiled."""
    try:
        out = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout + out.stderr
    m = re.search(r"^#\$ _HERE_=(.+)$", text, re.MULTILINE)
    if m:
        return os.path.dirname(os.path.realpath(m.group(1).strip()))
    m = re.search(r"^#\$ TOP=(.+)$", text, re.MULTILINE)
    return os.path.realpath(m.group(1).strip()) if m else None


def _homes_from_nvcc(nvcc: str) -> list[tuple[str, str]]:
    """Candidate toolkit folders, each with how it was found, for an ``nvcc`` on the PATH: the
    folder above its real path (symbolic links followed), or above the nvcc that a wrapper script
    runs (followed through up to a few wrappers)."""
    out: list[tuple[str, str]] = []
    frontier, depth = [nvcc], 0
    while frontier and depth <= _MAX_WRAPPER_DEPTH:
        nxt = []
        for path in frontier:
            real = os.path.realpath(path)
            targets = _script_targets(real) if _is_script(real) else []
            if targets:
                nxt.extend(targets)
            elif os.path.isfile(real):  # a program, or a script that runs no other nvcc we can see
                kind = "a wrapper script" if depth else ("a link" if real != nvcc else "")
                how = f"nvcc on PATH ({nvcc}" + (f", {kind} to {real})" if kind else ")")
                home = os.path.dirname(os.path.dirname(real))
                if home not in (h for h, _ in out):
                    out.append((home, how))
        frontier, depth = nxt, depth + 1
    return out


# ---- checking a candidate --------------------------------------------------------------------
def _cudart_dir(home: str) -> str | None:
    for sub in LIB_SUBDIRS:
        d = os.path.join(home, sub)
        if any(os.path.exists(os.path.join(d, name)) for name in CUDART_NAMES):
            return d
    return None


def _version(home: str, nvcc: str) -> str | None:
    """'major.minor' of a toolkit: version.json, else a 'cuda-X.Y' folder name, else nvcc --version."""
    try:
        with open(os.path.join(home, "version.json")) as f:
            v = json.load(f)["cuda"]["version"]
        return ".".join(str(v).split(".")[:2])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    m = re.search(r"cuda-(\d+\.\d+)", os.path.basename(os.path.realpath(home)))
    if m:
        return m.group(1)
    try:
        text = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+\.\d+)", text)
    return m.group(1) if m else None


def _check(home: str) -> tuple[CudaToolkit | None, str]:
    """(toolkit, '') when ``home`` holds an executable bin/nvcc and a linkable libcudart, else
    (None, why not)."""
    if not os.path.isdir(home):
        return None, "no such folder"
    nvcc = os.path.join(home, "bin", "nvcc")
    if not (os.path.isfile(nvcc) and os.access(nvcc, os.X_OK)):
        return None, "no executable bin/nvcc"
    cudart = _cudart_dir(home)
    if cudart is None:
        where = ", ".join(LIB_SUBDIRS)
        return None, (f"has bin/nvcc but no libcudart.so or libcudart.a in {where} (a runtime without "
                      "its development files cannot be linked: -lcudart would fail)")
    return CudaToolkit(home=os.path.abspath(home), nvcc=nvcc, cudart_dir=cudart), ""


def _major(version: str | None) -> str | None:
    return version.split(".")[0] if version else None


# ---- the search ------------------------------------------------------------------------------
def find_cuda_toolkit(environ=None, which=shutil.which, roots=DEFAULT_ROOTS,
                      cuda_version: str | None = None) -> CudaToolkit:
    """Find the CUDA toolkit to build with.

    Order: ``CUDA_HOME``, then ``CUDA_PATH`` (when set, it is used or refused, never silently
    replaced); the ``nvcc`` on the PATH, following symbolic links and wrapper scripts; then the
    usual install folders ``roots`` (those whose major version matches ``cuda_version`` first).

    Args:
        environ: the environment to read (default ``os.environ``): CUDA_HOME, CUDA_PATH, PATH.
        which: how to look a program up on the PATH (``shutil.which``-like: (name, path=) -> path).
        roots: install folders to try last; glob patterns allowed, matches tried newest first.
        cuda_version: the CUDA version PyTorch was built with ('13.0'), to prefer a matching
            toolkit among ``roots``; None: no preference.

    Returns:
        a :class:`CudaToolkit`.

    Raises:
        CudaToolkitNotFound: with every folder tried, why each was refused, and what to set.
        TypeError: ``roots`` is a string rather than a sequence of strings.
    """
    if isinstance(roots, str):
        raise TypeError("find_cuda_toolkit: roots must be a sequence of folders or glob patterns, not a string")
    env = os.environ if environ is None else environ
    tried: list[str] = []

    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = env.get(var)
        if home:
            tk, why = _check(home)
            if tk:
                return _finish(tk, f"${var}")
            # An explicit setting is the user's decision: refuse it rather than build with another.
            hint = ""
            try:
                alt = find_cuda_toolkit({k: v for k, v in env.items() if k not in ("CUDA_HOME", "CUDA_PATH")},
                                        which, roots, cuda_version)
                hint = f"; a usable toolkit is at {alt.home}: set {var}={alt.home}"
            except CudaToolkitNotFound:
                hint = "; set it to the CUDA toolkit folder that holds bin/nvcc and lib64/libcudart.so"
            raise CudaToolkitNotFound(f"{var}={home} cannot be used to build the CUDA extension: {why}{hint}")

    nvcc = which("nvcc", path=env.get("PATH", os.defpath))
    if nvcc:
        candidates = _homes_from_nvcc(nvcc)
        for home, how in candidates:
            tk, why = _check(home)
            if tk:
                return _finish(tk, how)
            tried.append(f"{home} (from {how}): {why}")
        # A wrapper we could not read (a binary, paths built from variables): ask nvcc itself.
        home = _ask_nvcc(nvcc)
        if home and home not in (h for h, _ in candidates):
            how = f"nvcc on PATH ({nvcc}, which reports its folder as {os.path.join(home, 'bin')})"
            tk, why = _check(home)
            if tk:
                return _finish(tk, how)
            tried.append(f"{home} (from {how}): {why}")
        elif not candidates:
            tried.append(f"{nvcc} on PATH: could not tell which toolkit it belongs to")

    found: list[CudaToolkit] = []
    for pattern in roots:
        matches = sorted(glob.glob(pattern), key=_natural_key, reverse=True) if glob.has_magic(pattern) \
            else [pattern]
        for home in matches:
            if any(os.path.realpath(home) == os.path.realpath(t.home) for t in found):
                continue  # /usr/local/cuda is usually a link to one of /usr/local/cuda-*
            tk, why = _check(home)
            if tk:
                found.append(tk)
            elif os.path.exists(home):
                tried.append(f"{home}: {why}")
    if found:
        if cuda_version:
            versions = [_version(t.home, t.nvcc) for t in found]
            matching = [t for t, v in zip(found, versions) if _major(v) == _major(cuda_version)]
            found = matching or found
        return _finish(found[0], "the usual install folders")

    detail = "".join(f"\n  - {t}" for t in tried) or " (no nvcc on the PATH and none of the usual folders exists)"
    raise CudaToolkitNotFound(
        "no CUDA toolkit with bin/nvcc and a linkable libcudart (libcudart.so in lib64/, lib/ or "
        f"targets/x86_64-linux/lib/) was found. Tried:{detail}\n"
        "Set CUDA_HOME to the toolkit's folder, e.g. CUDA_HOME=/usr/local/cuda-13.0 (the folder "
        "holding bin/nvcc and lib64/libcudart.so; with a wrapper script as nvcc, the folder of the "
        "nvcc it runs).")


def _natural_key(path: str):
    """Sort key that orders cuda-9.2 before cuda-12.4 before cuda-13.0."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


def _finish(tk: CudaToolkit, how: str) -> CudaToolkit:
    return CudaToolkit(tk.home, tk.nvcc, tk.cudart_dir, _version(tk.home, tk.nvcc), how)


def nvcc_targets(arch_list: str) -> list[str]:
    """The machine-code and PTX targets that a ``TORCH_CUDA_ARCH_LIST`` value asks for.

    Args:
        arch_list: e.g. ``"8.0 8.6 8.9 9.0+PTX"`` or ``"8.0;9.0"`` (spaces or semicolons).

    Returns:
        ['sm_80', 'sm_86', 'sm_89', 'sm_90', 'compute_90'] for the example: an 'sm_XY' per entry,
        plus 'compute_XY' (PTX) for each entry marked +PTX.

    Raises:
        ValueError: an entry is not of the form X.Y or X.Y+PTX.
    """
    out = []
    for entry in arch_list.replace(";", " ").split():
        m = re.fullmatch(r"(\d+)\.(\d+)([af]?)(\+PTX)?", entry)
        if not m:
            raise ValueError(f"arch_list: {entry!r} is not of the form X.Y or X.Y+PTX (in {arch_list!r})")
        code = f"{m.group(1)}{m.group(2)}{m.group(3)}"
        out.append(f"sm_{code}")
        if m.group(4):
            out.append(f"compute_{code}")
    return out
