"""Build script: the package metadata lives in pyproject.toml; this adds the optional CUDA
extension ``sashimi._cauchy_cuda`` (csrc/cauchy/), the fastest Cauchy kernel for GPU training.

The extension is built only when PyTorch with CUDA is importable at build time and a CUDA
toolkit that links is found (see CUDA_HOME below); otherwise the package installs without it
and falls back to pykeops or pure PyTorch at run time. Because pip builds in an isolated
environment without torch, build it with your installed torch:

    SASHIMI_CUDA_EXT=1 pip install --no-build-isolation -e .

Environment variables:
    SASHIMI_CUDA_EXT=0|1     force the extension off, or on (then failing loudly if it cannot be
                             built); unset: build it when possible.
    TORCH_CUDA_ARCH_LIST     GPU architectures to compile for. Default: the GPU(s) visible at
                             build time; with none visible, PyTorch's defaults for its CUDA build.
                             To target others, e.g.  TORCH_CUDA_ARCH_LIST="8.0;8.6;9.0+PTX"
                             (A100, RTX 30xx/A10, H100; +PTX also runs on newer GPUs after a
                             JIT step).
    CUDA_HOME (or CUDA_PATH) the CUDA toolkit to use: the folder holding bin/nvcc and
                             lib64/libcudart.so. Unset: the toolkit of the nvcc on the PATH (links
                             and wrapper scripts followed), else /usr/local/cuda, /usr/local/cuda-*,
                             /opt/cuda... (sashimi/cuda_toolkit.py).
"""
import importlib.util
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
SOURCES = ["csrc/cauchy/cauchy.cpp", "csrc/cauchy/cauchy_cuda.cu"]


def _say(msg):
    print(f"sashimi setup: {msg}", file=sys.stderr)


def _toolkit_finder():
    """sashimi/cuda_toolkit.py, loaded by path: importing the package would import torch and
    everything else, and the package is not installed yet."""
    path = os.path.join(ROOT, "sashimi", "cuda_toolkit.py")
    spec = importlib.util.spec_from_file_location("_sashimi_cuda_toolkit", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def cuda_extension():
    """(ext_modules, cmdclass) for the CUDA extension, or ([], {}) when it is not built."""
    flag = os.environ.get("SASHIMI_CUDA_EXT", "").strip()
    if flag not in ("", "0", "1"):
        raise SystemExit(f"sashimi setup: SASHIMI_CUDA_EXT must be 0 or 1, got {flag!r}")
    if flag == "0":
        return [], {}
    toolkit = None
    try:
        import torch
    except ImportError as e:
        why = (f"PyTorch is not importable at build time ({e}); "
               "use `pip install --no-build-isolation` with torch installed")
    else:
        if torch.version.cuda is None:
            why = f"this PyTorch ({torch.__version__}) is built without CUDA"
        else:
            finder = _toolkit_finder()
            try:
                toolkit = finder.find_cuda_toolkit(cuda_version=torch.version.cuda)
                why = None
            except finder.CudaToolkitNotFound as e:
                why = str(e)
    if why is not None:
        if flag == "1":
            raise SystemExit(f"sashimi setup: SASHIMI_CUDA_EXT=1 but the CUDA extension cannot be built: {why}")
        _say(f"not building the CUDA Cauchy extension: {why}")
        return [], {}
    # PyTorch reads CUDA_HOME once, when torch.utils.cpp_extension is first imported, and its own
    # guess (two folders above the nvcc on the PATH) is wrong for a wrapper script in a general bin/.
    os.environ["CUDA_HOME"] = toolkit.home
    from torch.utils import cpp_extension
    if cpp_extension.CUDA_HOME != toolkit.home:  # imported earlier in this process with another guess
        cpp_extension.CUDA_HOME = toolkit.home
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and torch.cuda.is_available():
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(f"{major}.{minor}" for major, minor in caps)
    _say(f"building sashimi._cauchy_cuda with the CUDA {toolkit.version or '(version unknown)'} toolkit at "
         f"{toolkit.home} (found from {toolkit.source}) for "
         f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '(PyTorch default)')}")
    ext = cpp_extension.CUDAExtension(
        name="sashimi._cauchy_cuda",
        sources=SOURCES,  # relative to this file, as setuptools requires
        include_dirs=[os.path.join(ROOT, "csrc", "cauchy")],
        # PyTorch links $CUDA_HOME/lib64 (or lib); some toolkits keep libcudart elsewhere
        # (targets/x86_64-linux/lib, Debian's lib/x86_64-linux-gnu).
        library_dirs=[toolkit.cudart_dir],
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3"]},  # -std: PyTorch picks it
    )
    return [ext], {"build_ext": cpp_extension.BuildExtension}


ext_modules, cmdclass = cuda_extension()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
