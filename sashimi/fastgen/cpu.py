"""The fused C++ CPU step (sashimi/csrc/fastgen*.{cpp,h}): build at first use, pack weights, call.

The library is compiled once per (source, compiler, flags, CPU) with ``-O3 -march=native`` into
the torch extensions directory (``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``)
and loaded with ctypes. It needs only a C++ compiler (``$CXX``, else ``c++``/``g++``/``clang++``),
neither ninja nor the PyTorch headers, so it builds in seconds. :func:`load_library` returns None
(and says why in :data:`build_error`) when no compiler works; the caller then falls back.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

__all__ = ["load_library", "CppEngine", "build_error", "sample", "SOURCE"]

SOURCE = Path(__file__).resolve().parent.parent / "csrc" / "fastgen.cpp"
HEADERS = [SOURCE.with_name("fastgen_kernels.h"), SOURCE.with_name("fastgen_model.h")]
MAGIC, VERSION = 0x53415348, 1
PANEL = 64  # kPanel in fastgen_kernels.h
S4_FORMS = {"diagonal": 0, "dplr": 1, "dplr_untied": 2}
FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-fvisibility=hidden"]
PROFILE_NAMES = ("s4", "linear", "norm", "activations", "pooling", "sampling")

_lock = threading.Lock()
_libs: dict[bool, ctypes.CDLL | None] = {}
build_error: str | None = None


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _build_dir() -> Path:
    from torch.utils.cpp_extension import get_default_build_root

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()) / "sashimi_fastgen"


def load_library(profile: bool = False) -> ctypes.CDLL | None:
    """The compiled step library (built on first use), or None if it cannot be built."""
    global build_error
    with _lock:
        if profile in _libs:
            return _libs[profile]
        lib = None
        try:
            lib = _load(profile)
        except Exception as e:  # no compiler, compile error, unwritable cache, ...
            build_error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        _libs[profile] = lib
        return lib


def _load(profile: bool) -> ctypes.CDLL:
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set $CXX or install g++)")
    missing = [str(p) for p in [SOURCE, *HEADERS] if not p.is_file()]
    if missing:
        raise RuntimeError(f"C++ source missing: {', '.join(missing)}")
    source = b"".join(p.read_bytes() for p in [SOURCE, *HEADERS])
    extra = ["-DSG_PROFILE"] if profile else []
    errors = []
    for arch in (["-march=native"], []):  # some compilers / CPUs reject -march=native
        flags = FLAGS + arch + extra
        key = hashlib.sha256(b"\0".join([source, cxx.encode(), " ".join(flags).encode(),
                                         _cpu_signature().encode()])).hexdigest()[:16]
        out_dir = _build_dir()
        target = out_dir / f"fastgen_{key}{'_prof' if profile else ''}.so"
        if not target.is_file():
            out_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
            os.close(fd)
            proc = subprocess.run([cxx, *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True)
            if proc.returncode != 0:
                os.unlink(tmp)
                errors.append(f"{cxx} {' '.join(flags)}: {proc.stderr.strip()[-500:]}")
                continue
            os.replace(tmp, target)  # atomic: concurrent builders are harmless
        lib = ctypes.CDLL(str(target))
        _declare(lib)
        if lib.sg_abi_version() != VERSION:
            raise RuntimeError("stale fastgen library (ABI version mismatch)")
        return lib
    raise RuntimeError("compiling the fast CPU step failed: " + " | ".join(errors))


def _declare(lib: ctypes.CDLL) -> None:
    P, I64, F32, INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
    lib.sg_abi_version.restype = I64
    lib.sg_error.restype = ctypes.c_char_p
    lib.sg_create.argtypes, lib.sg_create.restype = [P, I64, P, I64, I64], P
    lib.sg_destroy.argtypes = [P]
    lib.sg_reset.argtypes = [P]
    lib.sg_time.argtypes, lib.sg_time.restype = [P], I64
    lib.sg_feed.argtypes, lib.sg_feed.restype = [P, P, I64, I64, P], INT
    lib.sg_logits.argtypes = [P, P]
    lib.sg_generate.argtypes = [P, P, I64, I64, I64, P, F32, I64, F32, INT]
    lib.sg_generate.restype = INT
    lib.sg_profile.argtypes, lib.sg_profile.restype = [P, INT], INT
    lib.sg_sample.argtypes, lib.sg_sample.restype = [P, I64, I64, P, F32, I64, F32, P], INT
    lib.sg_state_max_abs.argtypes, lib.sg_state_max_abs.restype = [P], ctypes.c_double


def sample(lib: ctypes.CDLL, logits: torch.Tensor, u: torch.Tensor, temperature: float = 1.0,
           top_k: int | None = None, nucleus_p: float = 1.0) -> torch.Tensor:
    """The C++ sampler alone (for tests): int64 (B,) draws from float (B, V) logits with uniforms (B,)."""
    logits = logits.detach().to("cpu", torch.float32).contiguous()
    u = u.detach().to("cpu", torch.float32).contiguous()
    out = torch.empty(logits.size(0), dtype=torch.int64)
    if lib.sg_sample(logits.data_ptr(), logits.size(0), logits.size(1), u.data_ptr(), temperature, top_k or 0,
                     nucleus_p, out.data_ptr()):
        raise FloatingPointError(f"fast CPU sampler: {lib.sg_error().decode()}")
    return out


class _Packer:
    """One float32 buffer; every array starts on a 64-byte boundary."""

    def __init__(self):
        self.chunks: list[torch.Tensor] = []
        self.size = 0

    def add(self, t: torch.Tensor) -> int:
        flat = t.detach().to("cpu", torch.float32).contiguous().flatten()
        pad = -flat.numel() % 16
        offset = self.size
        self.chunks.append(torch.cat([flat, flat.new_zeros(pad)]) if pad else flat)
        self.size += flat.numel() + pad
        return offset

    def linear(self, w: torch.Tensor, b: torch.Tensor) -> list[int]:
        """W (out, in) as panels (ceil(out / 64), in, 64) of W^T, zero-padded; bias padded alike."""
        out, n_in = w.shape
        pad = -out % PANEL
        wt = torch.cat([w, w.new_zeros(pad, n_in)]).t().reshape(n_in, -1, PANEL).permute(1, 0, 2)
        return [self.add(wt), self.add(torch.cat([b, b.new_zeros(pad)]))]

    def buffer(self) -> torch.Tensor:
        return torch.cat(self.chunks) if self.chunks else torch.zeros(0)


def _pack(plan: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(spec int64, weights float32) in the order sashimi/csrc/fastgen.cpp:build reads them."""
    w = _Packer()
    V, H0 = plan["emb"].shape
    spec = [MAGIC, VERSION, V, H0, len(plan["pools"]), w.add(torch.tensor([plan["eps"]])), w.add(plan["emb"]),
            w.add(plan["norm"][0]), w.add(plan["norm"][1]), *w.linear(*plan["head"])]
    tiers = plan["tiers"]
    for k, pool in enumerate(plan["pools"]):
        spec += [pool["p"], tiers[k]["H"], tiers[k + 1]["H"], *w.linear(*pool["down"]), *w.linear(*pool["up"])]
    for tier in tiers:
        spec += [tier["H"], len(tier["blocks"])]
        for blk in tier["blocks"]:
            if blk["type"] == "s4":
                spec += _s4_spec(w, blk)
            else:
                spec += [1, blk["w1"].shape[0], w.add(blk["ln_w"]), w.add(blk["ln_b"]),
                         *w.linear(blk["w1"], blk["b1"]), *w.linear(blk["w2"], blk["b2"])]
    spec.append(MAGIC)
    return torch.tensor(spec, dtype=torch.int64), w.buffer()


def _s4_spec(w: _Packer, blk: dict) -> list[int]:
    def rows(x):  # (H', N) -> (N, H') as real, imaginary
        x = x.t()
        return [w.add(x.real), w.add(x.imag)]

    if blk["mode"] == "diagonal":
        form, coeffs = "diagonal", rows(blk["d"]) + rows(blk["r"])
    else:
        tied = blk["P"].shape[0] == 1 and blk["B"].shape[0] == 1
        form = "dplr" if tied else "dplr_untied"
        H = blk["g"].shape[0]
        P, B = (blk["P"], blk["B"]) if tied else (blk["P"].expand(H, -1), blk["B"].expand(H, -1))
        coeffs = rows(blk["g"]) + rows(blk["C"]) + rows(P) + rows(B) + [w.add(blk[k]) for k in ("dt", "c", "kappa")]
    return [0, blk["N"], S4_FORMS[form], int(blk["glu"]), w.add(blk["ln_w"]), w.add(blk["ln_b"]), *coeffs,
            w.add(blk["D"]), blk["out_w"].shape[0], *w.linear(blk["out_w"], blk["out_b"])]


class CppEngine:
    """Generation state for ``batch`` sequences on the CPU (float32); protocol as TorchEngine."""

    name = "cpp"

    def __init__(self, plan: dict, batch: int, lib: ctypes.CDLL, packed=None):
        self.lib, self.batch, self.V = lib, batch, plan["V"]
        self.dtype, self.device = torch.float32, torch.device("cpu")
        self.spec, self.weights = packed if packed is not None else _pack(plan)  # kept alive: the engine points into them
        self._ptr = lib.sg_create(self.spec.data_ptr(), self.spec.numel(), self.weights.data_ptr(),
                                  self.weights.numel(), batch)
        if not self._ptr:
            raise RuntimeError(f"fast CPU step: {lib.sg_error().decode()}")
        self.sampling = (1.0, None, 1.0)

    def __del__(self):
        if getattr(self, "_ptr", None):
            self.lib.sg_destroy(self._ptr)
            self._ptr = None

    @property
    def t(self) -> int:
        return int(self.lib.sg_time(self._ptr))

    def reset(self) -> None:
        self.lib.sg_reset(self._ptr)

    def set_sampling(self, temperature: float, top_k: int | None, nucleus_p: float) -> None:
        self.sampling = (float(temperature), top_k, float(nucleus_p))

    def feed(self, tokens: torch.Tensor, want_logits: bool = False) -> torch.Tensor | None:
        tokens = tokens.to("cpu", torch.int64).contiguous()
        out = torch.empty(self.batch, tokens.size(1), self.V) if want_logits else None
        rc = self.lib.sg_feed(self._ptr, tokens.data_ptr(), tokens.size(1), tokens.size(1),
                              out.data_ptr() if out is not None else None)
        if rc:
            raise ValueError(f"fast CPU step: {self.lib.sg_error().decode()}")
        return out

    def sample_and_feed(self, out: torch.Tensor, t0: int, t1: int, uniforms: torch.Tensor, feed_last: bool) -> None:
        assert out.dtype == torch.int64 and out.is_contiguous() and out.device.type == "cpu"
        uniforms = uniforms.to("cpu", torch.float32).contiguous()
        temperature, top_k, nucleus_p = self.sampling
        rc = self.lib.sg_generate(self._ptr, out.data_ptr(), out.size(1), t0, t1, uniforms.data_ptr(),
                                  temperature, top_k or 0, nucleus_p, int(feed_last))
        if rc:
            raise FloatingPointError(f"fast CPU step: {self.lib.sg_error().decode()}")

    def last_logits(self) -> torch.Tensor:
        out = torch.empty(self.batch, self.V)
        self.lib.sg_logits(self._ptr, out.data_ptr())
        return out

    def state_max_abs(self) -> float:
        """Largest |S4 state| (NaN if any is NaN)."""
        return float(self.lib.sg_state_max_abs(self._ptr))

    def profile(self) -> dict[str, float]:
        """Seconds per kind of work since the last call (a library built with profile=True only)."""
        buf = (ctypes.c_double * len(PROFILE_NAMES))()
        self.lib.sg_profile(buf, len(PROFILE_NAMES))
        return dict(zip(PROFILE_NAMES, buf))
