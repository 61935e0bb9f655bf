"""Finding the CUDA toolkit for the extension build (sashimi/cuda_toolkit.py, setup.py), on fake
toolkit folders: no CUDA needed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sashimi.cuda_toolkit import CudaToolkitNotFound, find_cuda_toolkit, nvcc_targets

ROOT = Path(__file__).resolve().parent.parent
NOWHERE = ()  # no usual install folders: only what a test sets up is found


def make_toolkit(root: Path, lib: str | None = "lib64", cudart: str = "libcudart.so", nvcc_script: str = "") -> Path:
    """A fake toolkit: bin/nvcc (an executable; a shell script when ``nvcc_script`` is given,
    else a stand-in binary) and ``lib/cudart`` (none when ``lib`` is None)."""
    (root / "bin").mkdir(parents=True)
    nvcc = root / "bin" / "nvcc"
    if nvcc_script:
        nvcc.write_text("#!/bin/sh\n" + nvcc_script)
    else:
        nvcc.write_bytes(b"\x7fELF stand-in for the real nvcc")
    nvcc.chmod(0o755)
    if lib is not None:
        (root / lib).mkdir(parents=True)
        (root / lib / cudart).write_bytes(b"")
    return root


def make_wrapper(folder: Path, body: str) -> Path:
    """A wrapper script ``folder/nvcc`` (as in a general bin/ on the PATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "nvcc"
    wrapper.write_text("#!/bin/sh\n" + body)
    wrapper.chmod(0o755)
    return wrapper


def test_wrapper_script_in_a_general_bin_is_followed(tmp_path):
    """The measured case: /usr/local/bin/nvcc runs `exec /usr/local/cuda-13.0/bin/nvcc "$@"`, and
    /usr/local (PyTorch's guess) has no libcudart."""
    tk = make_toolkit(tmp_path / "local" / "cuda-13.0", lib="lib")
    make_wrapper(tmp_path / "local" / "bin", f'exec {tk}/bin/nvcc "$@"\n')
    found = find_cuda_toolkit({"PATH": str(tmp_path / "local" / "bin")}, roots=NOWHERE)
    assert found.home == str(tk) and found.cudart_dir == str(tk / "lib")
    assert found.version == "13.0"  # from the folder's name
    assert "wrapper script" in found.source and str(tk / "bin" / "nvcc") in found.source


def test_wrapper_of_a_wrapper_and_quoted_paths(tmp_path):
    tk = make_toolkit(tmp_path / "cuda")
    make_wrapper(tmp_path / "inner", f'# a comment naming /not/this/nvcc\nexec "{tk}/bin/nvcc" "$@"\n')
    make_wrapper(tmp_path / "outer", f"set -e\nexec {tmp_path}/inner/nvcc \"$@\"\n")
    assert find_cuda_toolkit({"PATH": str(tmp_path / "outer")}, roots=NOWHERE).home == str(tk)


def test_symlink_is_followed(tmp_path):
    tk = make_toolkit(tmp_path / "opt" / "cuda-12.8")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvcc").symlink_to(tk / "bin" / "nvcc")
    found = find_cuda_toolkit({"PATH": str(tmp_path / "bin")}, roots=NOWHERE)
    assert found.home == str(tk) and "a link" in found.source


@pytest.mark.parametrize("lib", ["targets/x86_64-linux/lib", "lib/x86_64-linux-gnu"])
def test_libcudart_outside_lib64(tmp_path, lib):
    tk = make_toolkit(tmp_path / "cuda", lib=lib)
    found = find_cuda_toolkit({"CUDA_HOME": str(tk)}, roots=NOWHERE)
    assert found.cudart_dir == str(tk / lib) and found.source == "$CUDA_HOME"


def test_wrapper_built_from_variables_asks_nvcc(tmp_path):
    """A wrapper whose target cannot be read off (a path made of shell variables): nvcc's own dry
    run says where it lives."""
    tk = make_toolkit(tmp_path / "sdk", nvcc_script='echo "#\\$ _HERE_=$(dirname "$0")" >&2\n')
    make_wrapper(tmp_path / "bin", f'TK={tk}\nexec "$TK/bin/nvcc" "$@"\n')
    found = find_cuda_toolkit({"PATH": str(tmp_path / "bin")}, roots=NOWHERE)
    assert found.home == str(tk) and "reports its folder" in found.source


def test_missing_libcudart_says_what_to_set(tmp_path):
    """nvcc without a linkable libcudart (here only the runtime's libcudart.so.13, as without the
    development files): refused, and the message names CUDA_HOME and what it must hold."""
    tk = make_toolkit(tmp_path / "cuda-13.0", cudart="libcudart.so.13")
    make_wrapper(tmp_path / "bin", f'exec {tk}/bin/nvcc "$@"\n')
    with pytest.raises(CudaToolkitNotFound) as e:
        find_cuda_toolkit({"PATH": str(tmp_path / "bin")}, roots=NOWHERE)
    msg = str(e.value)
    assert "CUDA_HOME=" in msg and "libcudart.so" in msg and str(tk) in msg and "-lcudart" in msg


def test_nothing_found_says_what_to_set(tmp_path):
    with pytest.raises(CudaToolkitNotFound, match=r"no nvcc on the PATH(.|\n)*Set CUDA_HOME"):
        find_cuda_toolkit({"PATH": str(tmp_path)}, roots=[str(tmp_path / "cuda"), str(tmp_path / "cuda-*")])


def test_explicit_cuda_home_is_refused_not_replaced(tmp_path):
    """CUDA_HOME=/usr/local (a general folder with the wrapper in bin/) is the user's choice:
    an error that points at the toolkit that would work, not a silent switch."""
    tk = make_toolkit(tmp_path / "local" / "cuda-13.0")
    make_wrapper(tmp_path / "local" / "bin", f'exec {tk}/bin/nvcc "$@"\n')
    env = {"CUDA_HOME": str(tmp_path / "local"), "PATH": str(tmp_path / "local" / "bin")}
    with pytest.raises(CudaToolkitNotFound, match=f"CUDA_HOME={tmp_path / 'local'} cannot be used") as e:
        find_cuda_toolkit(env, roots=NOWHERE)
    assert f"set CUDA_HOME={tk}" in str(e.value)
    # CUDA_PATH is read when CUDA_HOME is unset
    assert find_cuda_toolkit({"CUDA_PATH": str(tk)}, roots=NOWHERE).source == "$CUDA_PATH"


def test_usual_folders_prefer_pytorchs_cuda_version(tmp_path):
    for v in ("9.2", "12.4", "13.0"):
        make_toolkit(tmp_path / f"cuda-{v}")
    (tmp_path / "cuda").symlink_to(tmp_path / "cuda-12.4")
    (tmp_path / "broken-cuda-14.0").mkdir()  # no nvcc: skipped
    roots = [str(tmp_path / "cuda"), str(tmp_path / "cuda-*")]
    env = {"PATH": str(tmp_path / "empty")}
    assert find_cuda_toolkit(env, roots=roots).home == str(tmp_path / "cuda")  # the first root wins
    assert find_cuda_toolkit(env, roots=roots[1:]).home == str(tmp_path / "cuda-13.0")  # newest, not 9.2
    found = find_cuda_toolkit(env, roots=roots, cuda_version="13.0")
    assert found.home == str(tmp_path / "cuda-13.0") and found.version == "13.0"
    assert find_cuda_toolkit(env, roots=roots[1:], cuda_version="9.2").home == str(tmp_path / "cuda-9.2")
    with pytest.raises(TypeError, match="roots"):
        find_cuda_toolkit(env, roots=str(tmp_path))


def test_version_from_version_json_or_nvcc(tmp_path):
    tk = make_toolkit(tmp_path / "a", nvcc_script='echo "Cuda compilation tools, release 12.6, V12.6.85"\n')
    assert find_cuda_toolkit({"CUDA_HOME": str(tk)}, roots=NOWHERE).version == "12.6"
    (tk / "version.json").write_text('{"cuda": {"name": "CUDA SDK", "version": "12.8.1"}}')
    assert find_cuda_toolkit({"CUDA_HOME": str(tk)}, roots=NOWHERE).version == "12.8"


def test_nvcc_targets():
    assert nvcc_targets("8.0 8.6 8.9 9.0+PTX") == ["sm_80", "sm_86", "sm_89", "sm_90", "compute_90"]
    assert nvcc_targets("8.0;9.0a") == ["sm_80", "sm_90a"]
    with pytest.raises(ValueError, match="'sm_90' is not of the form"):
        nvcc_targets("sm_90")


# ---- setup.py ------------------------------------------------------------------------------
def run_setup(env_extra: dict, before: str = "", after: str = "") -> subprocess.CompletedProcess:
    """`python setup.py --version` in the checkout (nothing is built), with Python code run
    ``before`` and ``after`` it in the same process."""
    env = {k: v for k, v in os.environ.items() if k not in ("SASHIMI_CUDA_EXT", "CUDA_HOME", "CUDA_PATH")}
    env.update(env_extra)
    script = (f"{before}\nimport runpy, sys\nsys.argv = ['setup.py', '--version']\n"
              f"runpy.run_path('setup.py', run_name='__main__')\n{after}")
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


cpu_torch_only = pytest.mark.skipif(torch.version.cuda is not None, reason="describes a CPU-only PyTorch")


@pytest.mark.slow  # each run of setup.py imports torch
@cpu_torch_only
def test_setup_without_the_flag_installs_cpu_only():
    """Unset: a note and a CPU-only install, exactly as before; 0: not a word; 1: a loud error."""
    out = run_setup({})
    assert out.returncode == 0 and out.stdout.strip().endswith("0.1.0")
    assert "not building the CUDA Cauchy extension: this PyTorch" in out.stderr and "built without CUDA" in out.stderr
    out = run_setup({"SASHIMI_CUDA_EXT": "0"})
    assert out.returncode == 0 and "sashimi setup" not in out.stderr
    out = run_setup({"SASHIMI_CUDA_EXT": "1"})
    assert out.returncode != 0 and "SASHIMI_CUDA_EXT=1 but the CUDA extension cannot be built" in out.stderr
    out = run_setup({"SASHIMI_CUDA_EXT": "yes"})
    assert out.returncode != 0 and "SASHIMI_CUDA_EXT must be 0 or 1, got 'yes'" in out.stderr


@pytest.mark.slow
@cpu_torch_only
def test_setup_gives_pytorch_the_toolkit_it_found(tmp_path):
    """With a (pretended) CUDA PyTorch and only a wrapper nvcc on the PATH, setup.py sets
    CUDA_HOME to the wrapped toolkit before PyTorch's build helper reads it, and links its
    libcudart folder; with a CUDA_HOME that cannot link, SASHIMI_CUDA_EXT=1 fails and says why."""
    tk = make_toolkit(tmp_path / "cuda-13.0", lib="targets/x86_64-linux/lib")
    make_wrapper(tmp_path / "bin", f'exec {tk}/bin/nvcc "$@"\n')
    pretend = ("import sys, setuptools, torch\ntorch.version.cuda = '13.0'\n"
               "setuptools.setup = lambda **kw: print('LIBS', kw['ext_modules'][0].library_dirs, file=sys.stderr)\n")
    report = ("import os\nfrom torch.utils import cpp_extension\n"
              "print('CUDA_HOME', os.environ['CUDA_HOME'], cpp_extension.CUDA_HOME, file=sys.stderr)\n")
    path = f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"
    out = run_setup({"SASHIMI_CUDA_EXT": "1", "PATH": path}, pretend, report)
    assert out.returncode == 0, out.stderr
    assert f"with the CUDA 13.0 toolkit at {tk} (found from nvcc on PATH" in out.stderr
    assert f"CUDA_HOME {tk} {tk}" in out.stderr
    libs = next(line for line in out.stderr.splitlines() if line.startswith("LIBS "))
    assert repr(str(tk / "targets/x86_64-linux/lib")) in libs  # beside PyTorch's own
    (tk / "targets/x86_64-linux/lib/libcudart.so").unlink()
    out = run_setup({"SASHIMI_CUDA_EXT": "1", "CUDA_HOME": str(tk)}, pretend)
    assert out.returncode != 0 and f"CUDA_HOME={tk} cannot be used" in out.stderr and "libcudart" in out.stderr
