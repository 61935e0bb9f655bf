"""The fused C++ CPU step (sashimi/csrc/fastgen*.{cpp,h}): build at first use, pack weights, call.

The library is compiled once per (source, compiler, flags, CPU) by :mod:`sashimi.native` and
loaded with ctypes: it needs only a C++ compiler, neither ninja nor the PyTorch headers, so it
builds in seconds. :func:`load_library` returns None
(and says why in :data:`build_error`) when no compiler works; the caller then falls back.
"""
from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import torch

from .. import native
from ..errors import InputError
from ..native import build_library
from ..sampling import SamplingOptions
from .condition import resolve_condition
from .pack import block_terms

__all__ = ["load_library", "CppEngine", "build_error", "sample", "condition_terms", "SOURCE", "WEIGHT_TYPES"]

SOURCE = Path(__file__).resolve().parent.parent / "csrc" / "fastgen.cpp"
HEADERS = [SOURCE.with_name(f"fastgen_{name}.h") for name in ("kernels", "sample", "team", "model")]
MAGIC, VERSION = 0x53415348, 5
NORM_CODES = {"layer": 0, "scalar": 1}  # a block's pre-norm kind in the spec (pack.NORM_KINDS)
UNIT = 16  # kUnit in fastgen_kernels.h: channels per unit, output columns per weight panel
S4_FORMS = {"diagonal": 0, "dplr": 1, "dplr_untied": 2}
WEIGHT_TYPES = {"float32": 0, "bfloat16": 1, "float16": 2}  # storage of the linear layers' weights (WType)
FLAGS = ["-ffp-contract=fast"]  # besides native.BASE_FLAGS
ARCH_FLAGS = native.ARCH_FLAGS  # tried in turn (a test swaps in the portable build alone)
PROFILE_NAMES = ("s4", "linear", "norm", "activations", "pooling", "sampling", "sync")

_lock = threading.Lock()
_libs: dict[bool, ctypes.CDLL | None] = {}
build_error: str | None = None


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
    lib = build_library("fastgen", SOURCE, HEADERS, flags=FLAGS + (["-DSG_PROFILE"] if profile else []),
                        suffix="_prof" if profile else "", arch_flags=ARCH_FLAGS)
    _declare(lib)
    if lib.sg_abi_version() != VERSION:
        raise RuntimeError("stale fastgen library (ABI version mismatch)")
    return lib


def _declare(lib: ctypes.CDLL) -> None:
    P, I64, F32, INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
    lib.sg_abi_version.restype = I64
    lib.sg_error.restype = ctypes.c_char_p
    lib.sg_error_kind.restype = INT
    lib.sg_create.argtypes, lib.sg_create.restype = [P, I64, P, I64, I64, I64], P
    lib.sg_destroy.argtypes, lib.sg_destroy.restype = [P], None
    lib.sg_reset.argtypes, lib.sg_reset.restype = [P], INT
    lib.sg_time.argtypes, lib.sg_time.restype = [P], I64
    lib.sg_set_condition.argtypes, lib.sg_set_condition.restype = [P, P, P, I64], INT
    lib.sg_set_layout.argtypes, lib.sg_set_layout.restype = [P, I64, I64], INT
    lib.sg_layouts.argtypes, lib.sg_layouts.restype = [P, P, INT, P], INT
    lib.sg_feed.argtypes, lib.sg_feed.restype = [P, P, I64, I64, P], INT
    lib.sg_logits.argtypes, lib.sg_logits.restype = [P, P], INT
    lib.sg_generate.argtypes = [P, P, I64, I64, P, I64, F32, I64, F32, INT]
    lib.sg_generate.restype = INT
    lib.sg_profile.argtypes, lib.sg_profile.restype = [P, INT], INT
    lib.sg_sample.argtypes, lib.sg_sample.restype = [P, I64, I64, P, F32, I64, F32, P], INT
    lib.sg_state_max_abs.argtypes, lib.sg_state_max_abs.restype = [P], ctypes.c_double


def _raise(lib: ctypes.CDLL, what: str, default: type = RuntimeError):
    """The C side's last error as a Python exception (MemoryError when it ran out of memory)."""
    message = f"{what}: {lib.sg_error().decode(errors='replace')}"
    raise (MemoryError if lib.sg_error_kind() == 2 else default)(message)


def sample(lib: ctypes.CDLL, logits: torch.Tensor, u: torch.Tensor, temperature: float = 1.0,
           top_k: int | None = None, nucleus_p: float = 1.0) -> torch.Tensor:
    """The C++ sampler alone (for tests): int64 (B,) draws from float (B, V) logits with uniforms (B,)."""
    logits = logits.detach().to("cpu", torch.float32).contiguous()
    u = u.detach().to("cpu", torch.float32).contiguous()
    out = torch.empty(logits.size(0), dtype=torch.int64)
    if lib.sg_sample(logits.data_ptr(), logits.size(0), logits.size(1), u.data_ptr(), temperature, top_k or 0,
                     nucleus_p, out.data_ptr()):
        _raise(lib, "fast CPU sampler", FloatingPointError)
    return out


def _pad16(n: int) -> int:
    return -(-n // UNIT) * UNIT


class _Packer:
    """One float32 buffer; every array starts on a 64-byte boundary."""

    def __init__(self, weights: str = "float32"):
        if weights not in WEIGHT_TYPES:
            raise ValueError(f"weights must be one of {tuple(WEIGHT_TYPES)}, got {weights!r}")
        self.chunks: list[torch.Tensor] = []
        self.size = 0
        self.wtype = weights

    def add(self, t: torch.Tensor) -> int:
        flat = t.detach().to("cpu", torch.float32).contiguous().flatten()
        return self._append(flat)

    def _append(self, flat: torch.Tensor) -> int:
        pad = -flat.numel() % 16
        offset = self.size
        self.chunks.append(torch.cat([flat, flat.new_zeros(pad)]) if pad else flat)
        self.size += flat.numel() + pad
        return offset

    def padded(self, t: torch.Tensor, size: int) -> int:
        """A vector zero-padded to ``size``."""
        t = t.detach().to("cpu", torch.float64).flatten()
        return self.add(torch.cat([t, t.new_zeros(size - t.numel())]))

    def linear(self, w: torch.Tensor, b: torch.Tensor, in_index=None, in_size=None, out_index=None,
               out_size=None) -> list[int]:
        """W (out, in) as panels (out_size / 16, in_size, 16) of W^T; row i of W^T goes to row
        in_index[i], column o to out_index[o] (default: in place, sizes padded to 16); the rest zero.
        Returns the spec entry [weight type, in_size, panels, weights offset, bias offset]."""
        n_out, n_in = w.shape
        in_index = torch.arange(n_in) if in_index is None else in_index
        out_index = torch.arange(n_out) if out_index is None else out_index
        in_size = _pad16(n_in) if in_size is None else in_size
        out_size = _pad16(n_out) if out_size is None else out_size
        assert out_size % UNIT == 0
        wt = torch.zeros(in_size, out_size, dtype=torch.float64)
        wt[in_index[:, None], out_index[None, :]] = w.detach().to("cpu", torch.float64).t()
        bias = torch.zeros(out_size, dtype=torch.float64)
        bias[out_index] = b.detach().to("cpu", torch.float64)
        panels = wt.reshape(in_size, out_size // UNIT, UNIT).permute(1, 0, 2).contiguous()
        if self.wtype == "bfloat16":  # round to nearest even; rows as (c0, c8, c1, c9, ...); two per float32 slot
            half = panels.to(torch.float32).to(torch.bfloat16).view(-1, 2, 8).transpose(1, 2).flatten().view(torch.int16)
            if half.numel() % 2:
                half = torch.cat([half, half.new_zeros(1)])
            w_off = self._append(half.view(torch.float32))
        elif self.wtype == "float16":  # round to nearest even; two per float32 slot
            half = panels.to(torch.float16)
            if not bool(torch.isfinite(half).all()):
                raise InputError("a linear weight is too large for float16 storage (|w| > 65504); use float32 or bfloat16")
            half = half.flatten().view(torch.int16)
            if half.numel() % 2:
                half = torch.cat([half, half.new_zeros(1)])
            w_off = self._append(half.view(torch.float32))
        else:
            w_off = self.add(panels)
        return [WEIGHT_TYPES[self.wtype], in_size, out_size // UNIT, w_off, self.add(bias)]

    def buffer(self) -> torch.Tensor:
        return torch.cat(self.chunks) if self.chunks else torch.zeros(0)


def _slot_major(H: int, p: int) -> torch.Tensor:
    """Where the pooled channel h * p + s lives in the engine's queues: s * pad16(H) + h."""
    h, s = torch.meshgrid(torch.arange(H), torch.arange(p), indexing="ij")
    return (s * _pad16(H) + h).flatten()


def pack_plan(plan: dict, weights: str = "float32") -> tuple[torch.Tensor, torch.Tensor]:
    """(spec int64, weights float32) in the order and layouts sashimi/csrc/fastgen.cpp:build reads.

    Args:
        plan: from :func:`sashimi.fastgen.pack.build_plan`.
        weights: storage of the linear layers' weights, 'float32' or 'bfloat16' (biases, the
            embedding, norms and S4 coefficients stay float32).
    """
    w = _Packer(weights)
    V, H0 = plan["emb"].shape
    H0p = _pad16(H0)
    emb = torch.cat([plan["emb"], plan["emb"].new_zeros(V, H0p - H0)], 1)
    spec = [MAGIC, VERSION, V, H0, len(plan["pools"]), w.add(torch.tensor([plan["eps"]])), w.add(emb),
            w.padded(plan["norm"][0], H0p), w.padded(plan["norm"][1], H0p),
            NORM_CODES[plan.get("norm_kind", "layer")], *w.linear(*plan["head"])]
    tiers = plan["tiers"]
    for k, pool in enumerate(plan["pools"]):
        p, H, Hn = pool["p"], tiers[k]["H"], tiers[k + 1]["H"]
        spec += [p, H, Hn, *w.linear(*pool["down"], in_index=_slot_major(H, p), in_size=p * _pad16(H)),
                 *w.linear(*pool["up"], out_index=_slot_major(H, p), out_size=p * _pad16(H))]
    for tier in tiers:
        H = tier["H"]
        spec += [H, len(tier["blocks"])]
        for blk in tier["blocks"]:
            Hp = _pad16(H)
            norm = [w.padded(blk["ln_w"], Hp), w.padded(blk["ln_b"], Hp)]
            if blk["type"] == "s4":
                spec += _s4_spec(w, blk, H, norm)
            else:
                spec += [1, blk["w1"].shape[0], *norm, *w.linear(blk["w1"], blk["b1"]), *w.linear(blk["w2"], blk["b2"])]
            spec.append(int("fc_w" in blk))  # a conditioned block: its norm's parameters per row (condition_terms)
            spec.append(NORM_CODES[blk.get("norm", "layer")])
    spec.append(MAGIC)
    return torch.tensor(spec, dtype=torch.int64), w.buffer()


def condition_terms(plan: dict, condition: torch.Tensor | None) -> torch.Tensor:
    """What sg_set_condition takes for the conditioned blocks, float32: per block in spec order,
    (B, 2, Hp) = the norm's weight and bias with the block's scale and shift folded in,
    ``(w (1 + scale), b (1 + scale) + shift)``, for conditions (B, H0) float64 (see
    :func:`sashimi.fastgen.pack.block_terms`). Empty without conditioned blocks."""
    out = []
    for tier in plan["tiers"]:
        Hp = _pad16(tier["H"])
        for blk in tier["blocks"]:
            if "fc_w" not in blk:
                continue
            scale, shift = block_terms(blk, condition)
            gain = 1 + scale if scale is not None else torch.ones_like(shift)
            rows = torch.zeros(condition.size(0), 2, Hp, dtype=torch.float64)
            rows[:, 0, :tier["H"]] = blk["ln_w"] * gain
            rows[:, 1, :tier["H"]] = blk["ln_b"] * gain + shift
            out.append(rows.flatten())
    return torch.cat(out).to(torch.float32) if out else torch.zeros(0)


def _units(*arrays: torch.Tensor) -> torch.Tensor:
    """Complex (H, N) arrays as (units, N, 2 * len(arrays), 16): per unit of 16 channels and mode,
    the real and imaginary parts of each array as 16-lane rows (channels padded with zeros)."""
    H, N = arrays[0].shape
    Hp = _pad16(H)
    rows = []
    for a in arrays:
        a = torch.cat([a, a.new_zeros(Hp - H, N)])
        rows += [a.real, a.imag]
    return torch.stack(rows).reshape(len(rows), Hp // UNIT, UNIT, N).permute(1, 3, 0, 2)


def _s4_spec(w: _Packer, blk: dict, H: int, norm: list[int]) -> list[int]:
    Hp = _pad16(H)
    N = blk["N"]
    if blk["mode"] == "diagonal":
        form, extra = "diagonal", []
        coef = _units(blk["d"], blk["r"])
    else:
        tied = blk["P"].shape[0] == 1 and blk["B"].shape[0] == 1
        form = "dplr" if tied else "dplr_untied"
        g, C = blk["g"], blk["C"]
        P, B = blk["P"].expand(H, N), blk["B"].expand(H, N)
        v = blk["v"].expand(H, N)  # the rank-1 read s' = 2 Re(v . x'), v = Q g (pack._s4_plan)
        coef = _units(g, C, v) if tied else _units(g, C, v, P, B)
        extra = [w.add(torch.stack([P[0].real, P[0].imag, B[0].real, B[0].imag], 1))] if tied else []
        extra += [w.padded(blk[k], Hp) for k in ("dt", "c", "kappa")]
    glu = bool(blk["glu"])
    if glu:  # output columns as (values, gates) panel pairs per unit: the GLU is local to a unit
        h = torch.arange(H)
        value = (2 * (h // UNIT)) * UNIT + h % UNIT
        out = w.linear(blk["out_w"], blk["out_b"], out_index=torch.cat([value, value + UNIT]), out_size=2 * Hp)
    else:
        out = w.linear(blk["out_w"], blk["out_b"])
    return [0, N, S4_FORMS[form], int(glu), *norm, w.add(coef), *extra, w.padded(blk["D"], Hp), *out]


class CppEngine:
    """Generation state for ``batch`` sequences on the CPU (float32); protocol as TorchEngine.

    Args:
        plan: from :func:`sashimi.fastgen.pack.build_plan`.
        batch: number of sequences.
        lib: the compiled library (:func:`load_library`).
        packed: (spec, weights) from :func:`_pack` (default: packed here, float32 weights).
        threads: most threads a step may use, the caller's included (default: 1). Which layout
            of them runs (rows x channel shares, or one thread) is measured and chosen as the
            engine runs; every layout gives the same results (:meth:`layouts`, :meth:`set_layout`).
    """

    name = "cpp"

    def __init__(self, plan: dict, batch: int, lib: ctypes.CDLL, packed=None, threads: int = 1):
        self.lib, self.batch, self.V, self.threads = lib, batch, plan["V"], int(threads)
        self.dtype, self.device = torch.float32, torch.device("cpu")
        self.spec, self.weights = packed if packed is not None else pack_plan(plan)  # kept alive: the engine points into them
        self._ptr = lib.sg_create(self.spec.data_ptr(), self.spec.numel(), self.weights.data_ptr(),
                                  self.weights.numel(), batch, self.threads)
        if not self._ptr:
            _raise(lib, f"fast CPU step (batch {batch})")
        self.sampling = SamplingOptions()
        self._plan = plan
        self.set_condition(None)

    def __del__(self):
        if getattr(self, "_ptr", None):
            self.lib.sg_destroy(self._ptr)
            self._ptr = None

    @property
    def t(self) -> int:
        return int(self.lib.sg_time(self._ptr))

    def reset(self, condition: torch.Tensor | None = None) -> None:
        """A fresh state for new sequences, with ``condition`` (see :meth:`set_condition`): a
        reset never keeps the condition of an earlier request."""
        if self.lib.sg_reset(self._ptr):
            _raise(self.lib, "fast CPU step")
        self.set_condition(condition)

    def set_sampling(self, options: SamplingOptions) -> None:
        self.sampling = options

    def set_condition(self, vectors: torch.Tensor | None) -> None:
        """Condition every row from now on (:mod:`sashimi.fastgen.condition`): ``vectors`` (B, H0)
        are added to each row's input embedding and projected by every conditioned block (folded
        into that block's norm, per row: :func:`condition_terms`); None: the model's default (its
        "no label" vector; nothing for an unconditional model). Shapes are checked here: the C
        side reads B x H0 floats."""
        vectors = resolve_condition(self._plan, vectors, self.batch)
        if vectors is None:
            cond, terms = None, torch.zeros(0)
        else:
            cond = vectors.to(torch.float32).contiguous()
            terms = condition_terms(self._plan, vectors).contiguous()
        self._cond = (cond, terms)  # kept alive while the C side copies them
        rc = self.lib.sg_set_condition(self._ptr, None if cond is None else cond.data_ptr(),
                                       terms.data_ptr() if terms.numel() else None, terms.numel())
        if rc:
            _raise(self.lib, "fast CPU step")

    def feed(self, tokens: torch.Tensor, want_logits: bool = False) -> torch.Tensor | None:
        tokens = tokens.to("cpu", torch.int64).contiguous()
        out = torch.empty(self.batch, tokens.size(1), self.V) if want_logits else None
        rc = self.lib.sg_feed(self._ptr, tokens.data_ptr(), tokens.size(1), tokens.size(1),
                              out.data_ptr() if out is not None else None)
        if rc:
            _raise(self.lib, "fast CPU step", ValueError)
        return out

    def sample_and_feed(self, out: torch.Tensor, t0: int, t1: int, uniforms: torch.Tensor, feed_last: bool) -> None:
        """For t in [t0, t1): out[:, t] = a draw from the current logits, then feed it back (the
        last one only if ``feed_last``). ``uniforms``: (B, t1 - t0) in [0, 1)."""
        assert out.dtype == torch.int64 and out.stride(1) == 1 and out.device.type == "cpu" and 0 <= t0 <= t1 <= out.size(1)
        uniforms = uniforms.to("cpu", torch.float32).contiguous()
        temperature, top_k, nucleus_p = self.sampling.temperature, self.sampling.top_k, self.sampling.nucleus_p
        rc = self.lib.sg_generate(self._ptr, out.data_ptr() + t0 * out.element_size(), out.stride(0), t1 - t0,
                                  uniforms.data_ptr(), uniforms.stride(0), temperature, top_k or 0, nucleus_p,
                                  int(feed_last))
        if rc:
            _raise(self.lib, "fast CPU step", FloatingPointError)

    def last_logits(self) -> torch.Tensor:
        out = torch.empty(self.batch, self.V)
        if self.lib.sg_logits(self._ptr, out.data_ptr()):
            _raise(self.lib, "fast CPU step")
        return out

    def state_max_abs(self) -> float:
        """Largest |S4 state| (NaN if any is NaN)."""
        return float(self.lib.sg_state_max_abs(self._ptr))

    def layouts(self) -> list[dict]:
        """The thread layouts the engine chooses from: ``rows`` groups x ``threads`` per group,
        the measured ``us_per_step`` (None: not timed yet), the ``steps`` run in it, and
        ``current`` (the one the next steps use)."""
        buf = (ctypes.c_double * 256)()
        current = ctypes.c_int(0)
        n = self.lib.sg_layouts(self._ptr, buf, 64, ctypes.byref(current))
        if n < 0:
            _raise(self.lib, "fast CPU step")
        n = min(n, 64)
        return [{"rows": int(buf[4 * i]), "threads": int(buf[4 * i + 1]),
                 "us_per_step": buf[4 * i + 2] / 1e3 if buf[4 * i + 2] else None, "steps": int(buf[4 * i + 3]),
                 "current": i == current.value} for i in range(n)]

    def set_layout(self, rows: int | None = None, threads: int | None = None) -> None:
        """Pin the layout (``rows`` groups of ``threads`` threads); no arguments: choose by
        measuring (the default)."""
        if (rows is None) != (threads is None):
            raise ValueError("give both rows and threads, or neither")
        if self.lib.sg_set_layout(self._ptr, rows or 0, threads or 0):
            _raise(self.lib, "fast CPU step", ValueError)

    def profile(self) -> dict[str, float]:
        """Seconds per kind of work on the calling thread since the last call (a library built
        with profile=True only)."""
        buf = (ctypes.c_double * len(PROFILE_NAMES))()
        self.lib.sg_profile(buf, len(PROFILE_NAMES))
        return dict(zip(PROFILE_NAMES, buf))
