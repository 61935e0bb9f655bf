"""Build script: the package metadata lives in pyproject.toml; this adds the optional CUDA
extension ``sashimi._cauchy_cuda`` (csrc/cauchy/), the fastest Cauchy kernel for GPU training.

The extension is built only when PyTorch with CUDA is importable at build time and nvcc is
found (CUDA_HOME); otherwise the package installs without it and falls back to pykeops or
pure PyTorch at run time. Because pip builds in an isolated environment without torch, build it
with your installed torch:

    SASHIMI_CUDA_EXT=1 pip install --no-build-isolation -e .

Environment variables:
    SASHIMI_CUDA_EXT=0|1     force the extension off, or on (then failing loudly if it cannot be
                             built); unset: build it when possible.
    TORCH_CUDA_ARCH_LIST     GPU architectures to compile for. Default: the GPU(s) visible at
                             build time; with none visible, PyTorch's defaults for its CUDA build.
                             To target others, e.g.  TORCH_CUDA_ARCH_LIST="8.0;8.6;9.0+PTX"
                             (A100, RTX 30xx/A10, H100; +PTX also runs on newer GPUs after a
                             JIT step).
    CUDA_HOME                the CUDA toolkit to use (nvcc under $CUDA_HOME/bin).
"""
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
SOURCES = ["csrc/cauchy/cauchy.cpp", "csrc/cauchy/cauchy_cuda.cu"]


def _say(msg):
    print(f"sashimi setup: {msg}", file=sys.stderr)


def cuda_extension():
    """(ext_modules, cmdclass) for the CUDA extension, or ([], {}) when it is not built."""
    flag = os.environ.get("SASHIMI_CUDA_EXT", "").strip()
    if flag not in ("", "0", "1"):
        raise SystemExit(f"sashimi setup: SASHIMI_CUDA_EXT must be 0 or 1, got {flag!r}")
    if flag == "0":
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError as e:
        why = (f"PyTorch is not importable at build time ({e}); "
               "use `pip install --no-build-isolation` with torch installed")
    else:
        if torch.version.cuda is None:
            why = f"this PyTorch ({torch.__version__}) is built without CUDA"
        elif CUDA_HOME is None:
            why = "no CUDA toolkit found (set CUDA_HOME to the directory holding bin/nvcc)"
        else:
            why = None
    if why is not None:
        if flag == "1":
            raise SystemExit(f"sashimi setup: SASHIMI_CUDA_EXT=1 but the CUDA extension cannot be built: {why}")
        _say(f"not building the CUDA Cauchy extension: {why}")
        return [], {}
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and torch.cuda.is_available():
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(f"{major}.{minor}" for major, minor in caps)
    _say(f"building sashimi._cauchy_cuda with {CUDA_HOME} for "
         f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '(PyTorch default)')}")
    ext = CUDAExtension(
        name="sashimi._cauchy_cuda",
        sources=SOURCES,  # relative to this file, as setuptools requires
        include_dirs=[os.path.join(ROOT, "csrc", "cauchy")],
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3"]},  # -std: PyTorch picks it
    )
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = cuda_extension()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
