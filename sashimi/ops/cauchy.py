"""The conjugate-symmetric Cauchy product at the heart of the S4 convolution kernel.

    r[..., l] = sum_n  v[..., n] / (z[l] - w[..., n])  +  conj(v[..., n]) / (z[l] - conj(w[..., n]))

``cauchy`` dispatches to one of four interchangeable backends, all differentiable in
``v``, ``w`` (and ``z``), all with the signature of the plain reference ``cauchy_ref``:

- ``'cpu'``: a fused C++ kernel (sashimi/csrc/cauchy_cpu.cpp), compiled on first use like the
  fast generation step; CPU tensors only. Its reciprocals never leave the registers.
- ``'cuda'``: the compiled extension ``sashimi._cauchy_cuda`` (csrc/cauchy/), CUDA tensors only.
- ``'keops'``: pykeops (optional dependency), after a one-time probe on the device.
- ``'torch'``: pure PyTorch, chunked so that neither pass materialises the (..., N, L) tensor.

``'auto'`` (the default; or set ``SASHIMI_CAUCHY_BACKEND``) picks, for CPU tensors, ``cpu`` when
it builds and passes its probe, else ``torch``; for CUDA tensors the extension, else keops,
else torch. Measured on a 2-core AMD EPYC at the size of an FSDD model's outer tier (v (2, 2, 64,
32), w (64, 32), L = 4001 nodes, complex64, one thread), forward + backward: cpu 26 ms, torch
123 ms; keops was slower than torch on CPU (0.26 s against 0.14 s at SC09's 8001 nodes). (On
GPUs the order extension > keops > torch is the expected one, not a measured one.) Fallbacks
are automatic and said once (``warnings``, naming what was skipped and why; ``logging`` for the
choice itself). :func:`backend_report` says for every backend whether it can run on a device and
why not (``sashimi doctor`` prints it).

All backends work on canonical shapes: ``v`` (G, M, N), ``z`` (L,), ``w`` (G, N), where G
collects the leading dimensions along which ``w`` varies and M the others (see
:func:`_canonical`), so the Cauchy block 1/(z - w) is computed once per group.
"""
from __future__ import annotations

import importlib.util
import logging
import math
import os
import warnings

import torch

from ._cauchy_torch import DEFAULT_BLOCK_ELEMENTS, CauchyTorch

__all__ = ["BACKENDS", "backend_report", "cauchy", "cauchy_backend", "cauchy_cpu", "cauchy_cuda", "cauchy_keops",
           "cauchy_ref", "cauchy_torch"]

BACKENDS = ("auto", "cpu", "cuda", "keops", "torch")
ENV_VAR = "SASHIMI_CAUCHY_BACKEND"
logger = logging.getLogger(__name__)

_probes: dict[tuple[str, str], str | None] = {}  # (backend, device) -> None if it works, else why not
_announced: set[tuple[str, str]] = set()


def cauchy_ref(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Reference Cauchy product, materialising the full (..., N, L) tensor.

    Args:
        v: complex (..., N) numerators (one of each conjugate pair).
        z: complex (L,) nodes.
        w: complex (..., N) poles, broadcastable with ``v``.

    Returns:
        complex (..., L).
    """
    v, w = v.unsqueeze(-1), w.unsqueeze(-1)
    return (v / (z - w) + v.conj() / (z - w.conj())).sum(dim=-2)


# ---- shapes ------------------------------------------------------------------------------
def _check(v, z, w) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate the arguments and promote them to one complex dtype."""
    for name, t in (("v", v), ("z", z), ("w", w)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"cauchy: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not (t.is_complex() or t.is_floating_point()):
            raise TypeError(f"cauchy: {name} must be a complex or floating tensor, got {t.dtype}")
    if z.dim() != 1:
        raise ValueError(f"cauchy: z must be 1-D (L,), got shape {tuple(z.shape)}")
    for name, t in (("v", v), ("w", w)):
        if t.dim() < 1:
            raise ValueError(f"cauchy: {name} must have a last dimension N, got a 0-d tensor")
        if t.device != z.device:
            raise ValueError(f"cauchy: {name} is on {t.device} but z is on {z.device}")
    if _broadcast(v.shape, w.shape) is None:
        raise ValueError(f"cauchy: v {tuple(v.shape)} and w {tuple(w.shape)} do not broadcast")
    dtype = torch.promote_types(torch.promote_types(v.dtype, w.dtype), z.dtype)
    if not dtype.is_complex:
        dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    return v.to(dtype), z.to(dtype), w.to(dtype)


def _broadcast(a: tuple, b: tuple) -> tuple | None:
    """The broadcast of shapes ``a`` and ``b``, or None. Not torch.broadcast_shapes: its first call
    imports torch.fx's symbolic shapes and sympy: 1.2-1.4 s of a fresh process's first S4 kernel
    (measured on 2 busy cores, load 7; 2.2 s under cProfile)."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    if any(x != y and 1 not in (x, y) for x, y in zip(a, b)):
        return None
    return tuple(y if x == 1 else x for x, y in zip(a, b))


def _canonical(v: torch.Tensor, w: torch.Tensor):
    """Reshape broadcastable v (..., N), w (..., N) to v (G, M, N), w (G, N).

    G is the product of the leading dimensions along which ``w`` varies, M of the others.

    Returns:
        (v3, w2, unflatten), where unflatten maps a (G, M, L) result back to (..., L).
    """
    shape = _broadcast(v.shape, w.shape)
    lead, N = shape[:-1], shape[-1]
    w_lead = (1,) * (len(lead) - (w.dim() - 1)) + tuple(w.shape[:-1])
    g_dims = [i for i in range(len(lead)) if w_lead[i] != 1]
    m_dims = [i for i in range(len(lead)) if w_lead[i] == 1]
    perm = g_dims + m_dims
    G = math.prod(lead[i] for i in g_dims)
    M = math.prod(lead[i] for i in m_dims)
    v3 = v.expand(shape).permute(*perm, len(lead)).reshape(G, M, N)
    w2 = w.reshape(*w_lead, w.shape[-1]).expand(*w_lead, N).permute(*perm, len(lead)).reshape(G, N)
    inverse = [perm.index(i) for i in range(len(lead))]

    def unflatten(r: torch.Tensor) -> torch.Tensor:
        return r.reshape(*(lead[i] for i in perm), r.shape[-1]).permute(*inverse, len(lead))

    return v3, w2, unflatten


# ---- backends with the reference's signature ---------------------------------------------
def cauchy_torch(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, *,
                 max_elements: int = DEFAULT_BLOCK_ELEMENTS) -> torch.Tensor:
    """Same as :func:`cauchy_ref`, in pure PyTorch with bounded memory.

    Forward and backward loop over blocks of at most ``max_elements`` Cauchy entries
    (groups x 2N x nodes); only the inputs are saved for backward.

    Args:
        v: complex (..., N).
        z: complex (L,).
        w: complex (..., N), broadcastable with ``v``.
        max_elements: bound on the entries of each temporary block (memory knob).

    Returns:
        complex (..., L).
    """
    if not isinstance(max_elements, int) or max_elements < 1:
        raise ValueError(f"cauchy_torch: max_elements must be a positive integer, got {max_elements!r}")
    v, z, w = _check(v, z, w)
    v3, w2, unflatten = _canonical(v, w)
    return unflatten(CauchyTorch.apply(v3, z, w2, max_elements))


def cauchy_keops(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Same as :func:`cauchy_ref`, through pykeops (raises ImportError without it)."""
    from ._cauchy_keops import cauchy_keops_canonical

    v, z, w = _check(v, z, w)
    v3, w2, unflatten = _canonical(v, w)
    return unflatten(cauchy_keops_canonical(v3, z, w2))


def cauchy_cuda(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Same as :func:`cauchy_ref`, through the CUDA extension (CUDA tensors only)."""
    from ._cauchy_cuda import cauchy_cuda_canonical, load_extension

    v, z, w = _check(v, z, w)
    if z.device.type != "cuda":
        raise ValueError(f"cauchy_cuda: the tensors must be on a CUDA device, got {z.device}")
    load_extension()
    v3, w2, unflatten = _canonical(v, w)
    return unflatten(cauchy_cuda_canonical(v3, z, w2))


def cauchy_cpu(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Same as :func:`cauchy_ref`, through the fused C++ kernel (CPU tensors only; built on
    first use, RuntimeError if it cannot be). A gradient for ``z``, which S4 never needs, comes
    from the PyTorch backend."""
    from ._cauchy_cpu import cauchy_cpu_canonical, load_library, why_unavailable

    v, z, w = _check(v, z, w)
    if z.device.type != "cpu":
        raise ValueError(f"cauchy_cpu: the tensors must be on the CPU, got {z.device}")
    if z.requires_grad and torch.is_grad_enabled():
        return cauchy_torch(v, z, w)
    if load_library() is None:
        raise RuntimeError(f"cauchy_cpu: the C++ kernel is unavailable: {why_unavailable()}")
    v3, w2, unflatten = _canonical(v, w)
    return unflatten(cauchy_cpu_canonical(v3, z, w2))


_IMPLS = {"cpu": cauchy_cpu, "cuda": cauchy_cuda, "keops": cauchy_keops, "torch": cauchy_torch}


# ---- probes and dispatch -----------------------------------------------------------------
def _probe(backend: str, device: torch.device) -> str | None:
    """Run ``backend`` once on a tiny problem on ``device`` (forward and backward) and compare
    with :func:`cauchy_ref`. Returns None when it works, else the reason; cached per device."""
    key = (backend, str(device))
    if key not in _probes:
        _probes[key] = _run_probe(backend, device)
    return _probes[key]


def _probe_problem():
    """A tiny problem shaped like the S4 layer's: v (2, 3, 5), w (3, 5) and the nodes for
    length 64, bilinear images of the roots of unity reaching |z| ~ 1e16 at Nyquist, where the
    caller also multiplies by 2 / (1 + omega) ~ 1e16 (a backend squaring |z - w|^2 in float32
    overflows there: KeOps' own autodiff did)."""
    gen, cpu, f64 = torch.Generator().manual_seed(0), torch.device("cpu"), torch.float64
    v = torch.randn(2, 3, 5, dtype=torch.complex128, generator=gen, device=cpu)
    w = torch.complex(-torch.rand(3, 5, generator=gen, dtype=f64, device=cpu) - 0.05,
                      3 * torch.randn(3, 5, generator=gen, dtype=f64, device=cpu))
    omega = torch.exp(-2j * math.pi * torch.arange(33, dtype=f64, device=cpu) / 64)
    return v, 2 * (1 - omega) / (1 + omega), w, 2 / (1 + omega)


def _run_probe(backend: str, device: torch.device) -> str | None:
    if backend == "cuda" and device.type != "cuda":
        return f"it needs CUDA tensors, got {device.type}"
    if backend == "cpu" and device.type != "cpu":
        return f"it needs CPU tensors, got {device.type}"
    try:
        if backend == "cpu":
            from ._cauchy_cpu import load_library, why_unavailable
            if load_library() is None:
                return f"the C++ kernel cannot be built: {why_unavailable()}"
        elif backend == "cuda":
            from ._cauchy_cuda import load_extension
            load_extension()
        elif backend == "keops":
            from ._cauchy_keops import import_pykeops
            import_pykeops()
        results = []
        with torch.inference_mode(False), torch.enable_grad():  # the caller may be in no_grad
            problem = _probe_problem()
            for fn, dtype, dev in ((_IMPLS[backend], torch.complex64, device), (cauchy_ref, torch.complex128, "cpu")):
                v, z, w, scale = (t.to(device=dev, dtype=dtype) for t in problem)
                v.requires_grad_(), w.requires_grad_()
                r = fn(v, z, w)
                grads = torch.autograd.grad((r * scale).real.sum(), (v, w))
                results.append([t.detach().cpu().to(torch.complex128) for t in (r, *grads)])
        for name, got, want in zip(("values", "grad v", "grad w"), *results):
            err = ((got - want).abs().max() / want.abs().max()).item()
            if not err < 1e-4:  # NaN fails too
                return f"probe mismatch against cauchy_ref in complex64: {name} off by {err:.1e} (relative)"
    except Exception as e:  # any failure (import, compilation, launch) means: do not use it
        return f"{type(e).__name__}: {e}"
    return None


def _requested(backend: str | None) -> str:
    if backend is None:
        value = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
        if value not in BACKENDS:
            raise ValueError(f"{ENV_VAR}={os.environ[ENV_VAR]!r} is not a Cauchy backend; choose from {BACKENDS}")
        return value
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"cauchy: backend must be one of {BACKENDS} or None, got {backend!r}")
    return backend


def _resolve(backend: str | None, device: torch.device) -> str:
    requested = _requested(backend)
    if requested == "torch":
        return "torch"
    if requested != "auto":
        reason = _probe(requested, device)
        if reason is not None:
            raise RuntimeError(f"Cauchy backend {requested!r} is not usable on {device}: {reason}")
        return requested
    name, skipped = "torch", []
    if device.type in ("cuda", "cpu"):
        for name in (("cuda", "keops") if device.type == "cuda" else ("cpu",)) + ("torch",):
            reason = None if name == "torch" else _probe(name, device)
            if reason is None:
                break
            skipped.append(f"{name!r}: {reason}")
    key = (name, device.type)
    if key not in _announced:
        _announced.add(key)
        if skipped:
            warnings.warn(f"sashimi: Cauchy kernel on {device.type} uses the {name!r} backend; not available: "
                          + "; ".join(skipped), RuntimeWarning, stacklevel=3)
        logger.info("Cauchy kernel: using the %r backend on %s", name, device.type)
    return name


def cauchy_backend(device: torch.device | str | None = None, backend: str | None = None) -> str:
    """Name of the backend :func:`cauchy` uses for tensors on ``device``.

    Args:
        device: a torch device (default: PyTorch's default device).
        backend: as for :func:`cauchy` (None: ``SASHIMI_CAUCHY_BACKEND``, default 'auto').

    Returns:
        'cpu', 'cuda', 'keops' or 'torch'. Raises RuntimeError when an explicitly requested
        backend is not usable there.
    """
    device = torch.device(device) if device is not None else torch.empty(0).device
    return _resolve(backend, device)


def backend_report(device: torch.device | str | None = None) -> dict[str, tuple[bool | None, str]]:
    """Whether each backend can run the Cauchy product for tensors on ``device``, and why (not).

    Uses the probes of ``'auto'`` (cached; the first call may compile the C++ kernel, a few
    seconds), and never raises. What ``'auto'`` picks from these is :func:`cauchy_backend`.

    Args:
        device: a torch device (default: PyTorch's default device).

    Returns:
        ``{name: (available, reason)}`` for 'cpu', 'cuda', 'keops' and 'torch': ``available`` is
        True (probed and matching :func:`cauchy_ref`), False (``reason`` says why not: extension
        not built, built for other GPUs, pykeops not installed, probe failed, no CUDA device, ...)
        or None (not probed: ``auto`` never uses it there, e.g. keops for CPU tensors).
    """
    device = torch.device(device) if device is not None else torch.empty(0).device
    return {name: _status(name, device) for name in ("cpu", "cuda", "keops", "torch")}


def _status(name: str, device: torch.device) -> tuple[bool | None, str]:
    if name == "torch":
        return True, "pure PyTorch, always available"
    if name == "cpu":
        if device.type != "cpu":
            return False, f"CPU tensors only (this is {device})"
        reason = _probe("cpu", device)
        return (True, "fused C++ kernel built, probe passed") if reason is None else (False, reason)
    if name == "cuda":
        from ._cauchy_cuda import BUILD_HINT

        if torch.version.cuda is None:
            return False, "this PyTorch is a CPU build" if torch.version.hip is None else "this PyTorch is a ROCm build"
        why = []
        if device.type != "cuda":
            why.append("no CUDA device" if not torch.cuda.is_available() else f"CUDA tensors only (this is {device})")
        if importlib.util.find_spec("sashimi._cauchy_cuda") is None:
            why.append(f"extension sashimi._cauchy_cuda not built ({BUILD_HINT})")
        if why:
            return False, "; ".join(why)
        reason = _probe("cuda", device)
        if reason is None:
            return True, "extension built, probe passed"
        if "no kernel image" in reason:  # compiled for other compute capabilities only
            major, minor = torch.cuda.get_device_capability(device)
            return False, (f"extension built for other GPU architectures than this one's (sm_{major}{minor}): rebuild "
                           f"with TORCH_CUDA_ARCH_LIST={major}.{minor} ({reason})")
        return False, f"probe failed: {reason}"
    if importlib.util.find_spec("pykeops") is None:  # keops
        from ._cauchy_keops import INSTALL_HINT

        return False, f"pykeops not installed ({INSTALL_HINT})"
    if device.type != "cuda":
        return None, ("pykeops installed; auto does not try it for CPU tensors (slower than torch there; "
                      f"{ENV_VAR}=keops)")
    reason = _probe("keops", device)
    return (True, "pykeops installed, probe passed") if reason is None else (False, f"keops probe failed: {reason}")


def cauchy(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """Conjugate-symmetric Cauchy product; see the module docstring.

    Args:
        v: complex (..., N).
        z: complex (L,).
        w: complex (..., N), broadcastable with ``v``.
        backend: 'auto', 'cpu', 'cuda', 'keops', 'torch', or None to read ``SASHIMI_CAUCHY_BACKEND``
            (default 'auto'). An explicitly requested backend that cannot run raises RuntimeError.

    Returns:
        complex (..., L), in the promoted complex dtype of the inputs.
    """
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"cauchy: z must be a torch.Tensor, got {type(z).__name__}")
    return _IMPLS[_resolve(backend, z.device)](v, z, w)
