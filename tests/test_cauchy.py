"""Cauchy kernel backends against the plain reference (sashimi/ops/cauchy.py)."""
from __future__ import annotations

import importlib.util
import logging
import re
import sys

import pytest
import torch

from sashimi.ops import _cauchy_cpu, _cauchy_torch, cauchy_backend
from sashimi.ops.cauchy import cauchy, cauchy_cpu, cauchy_ref, cauchy_torch

# The module itself: the attribute sashimi.ops.cauchy is the function of the same name.
cauchy_mod = importlib.import_module("sashimi.ops.cauchy")
HAVE_KEOPS = importlib.util.find_spec("pykeops") is not None
HAVE_CUDA = torch.cuda.is_available()


def _have_cuda_ext() -> bool:
    try:
        importlib.import_module("sashimi._cauchy_cuda")
        return True
    except ImportError:
        return False


needs_cuda_ext = pytest.mark.skipif(not (HAVE_CUDA and _have_cuda_ext()),
                                    reason="needs a CUDA GPU and the built sashimi._cauchy_cuda extension")


def make_inputs(v_shape=(2, 2, 3, 4), w_shape=(3, 4), L=37, dtype=torch.complex128, device="cpu",
                requires_grad=False, seed=0):
    """Inputs shaped like SSMKernel.forward's: v (2, c+1, H, N), w (H, N), z on the imaginary axis."""
    gen = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    v = torch.randn(v_shape, dtype=dtype, generator=gen)
    w = torch.complex(-torch.rand(w_shape, dtype=real, generator=gen) - 0.05,
                      3 * torch.randn(w_shape, dtype=real, generator=gen))
    z = torch.complex(torch.zeros(L, dtype=real), torch.linspace(0, 10, L, dtype=real))
    v, z, w = v.to(device), z.to(device), w.to(device)
    return v.requires_grad_(requires_grad), z, w.requires_grad_(requires_grad)


def rel_err(a, b):
    if b.numel() == 0:
        return 0.0 if a.shape == b.shape else float('inf')
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(autouse=True)
def fresh_dispatch_state(monkeypatch):
    """Each test sees no cached probes or announcements and no backend env var."""
    monkeypatch.setattr(cauchy_mod, "_probes", {})
    monkeypatch.setattr(cauchy_mod, "_announced", set())
    monkeypatch.delenv(cauchy_mod.ENV_VAR, raising=False)


# ---- the chunked torch path --------------------------------------------------------------
@pytest.mark.parametrize("v_shape,w_shape", [
    ((2, 2, 3, 4), (3, 4)),        # the real caller: v (2, c+1, H, N), w (H, N)
    ((2, 3, 3, 4), (1, 3, 4)),
    ((4,), (3, 4)),                # v broadcast along w's group dimension
    ((3, 1, 4), (1, 2, 4)),        # both broadcast
    ((2, 5, 4), (2, 5, 4)),        # same shape: M = 1
    ((2, 3, 4), (4,)),             # shared poles: G = 1
    ((2, 3, 1), (3, 4)),           # N broadcast
])
def test_torch_matches_reference(v_shape, w_shape):
    v, z, w = make_inputs(v_shape, w_shape)
    want = cauchy_ref(v, z, w)
    got = cauchy_torch(v, z, w)
    assert got.shape == want.shape and got.dtype == torch.complex128
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("L,max_elements", [
    (37, 280),     # too few nodes per block: groups chunked too (32 + 5 nodes)
    (100, 528),    # 33 nodes per block: 33 + 33 + 33 + 1
    (101, 1),      # smallest budget: one group, 32 nodes at a time
    (5, 10**9),    # one block
])
def test_torch_chunk_boundaries(L, max_elements):
    v, z, w = make_inputs((2, 2, 5, 4), (5, 4), L=L)
    torch.testing.assert_close(cauchy_torch(v, z, w, max_elements=max_elements), cauchy_ref(v, z, w),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("v_shape,w_shape,max_elements", [
    ((2, 2, 2, 3), (2, 3), 100),   # caller-like; blocks of one group x 32 nodes (32 + 3)
    ((3, 2), (2, 3, 2), 10**6),    # v broadcast; one block
    ((2,), (2,), 5),
])
def test_torch_gradcheck(v_shape, w_shape, max_elements):
    v, z, w = make_inputs(v_shape, w_shape, L=35, requires_grad=True)
    z.requires_grad_()
    assert torch.autograd.gradcheck(lambda v, z, w: cauchy_torch(v, z, w, max_elements=max_elements), (v, z, w))


def assert_float32_accurate(fn, z64=None, L=501):
    """``fn`` in complex64 at the SC09 mode count (32), values and gradients against the complex128
    reference; ``z64`` the complex128 nodes (default: ``make_inputs``' imaginary axis)."""
    v, z, w = make_inputs((2, 2, 8, 32), (8, 32), L=L, dtype=torch.complex64, requires_grad=True)
    if z64 is not None:
        z = z64.to(torch.complex64)
    v64, w64 = (t.detach().to(torch.complex128).requires_grad_() for t in (v, w))
    r, r64 = fn(v, z, w), cauchy_ref(v64, z64 if z64 is not None else z.to(torch.complex128), w64)
    assert r.dtype == torch.complex64
    assert rel_err(r.to(torch.complex128), r64) < 1e-5
    g = torch.randn(r.shape, dtype=torch.complex128, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad((r * g.to(r.dtype).conj()).real.sum(), (v, w))
    grads64 = torch.autograd.grad((r64 * g.conj()).real.sum(), (v64, w64))
    for got, want in zip(grads, grads64):
        assert rel_err(got.to(torch.complex128), want) < 1e-5


def test_torch_float32_accuracy_and_gradients():
    assert_float32_accurate(cauchy_torch)


def test_torch_saves_only_inputs():
    """Memory is bounded by the block size: autograd keeps v, z, w, nothing of size N x L."""
    v, z, w = make_inputs((2, 2, 3, 8), (3, 8), L=999, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        r = cauchy_torch(v, z, w, max_elements=64)
    assert sum(saved) <= v.numel() + z.numel() + w.numel() + 1
    r.abs().sum().backward()  # the backward pass runs block by block
    assert v.grad.shape == v.shape and w.grad.shape == w.shape


def test_torch_passes_probe_at_s4_nodes():
    """complex64 values and gradients stay finite and accurate at the S4 nodes up to Nyquist
    (|z| ~ 1e16, incoming gradients as large), against complex128; also when the caller is
    in no_grad or inference mode (the probe needs autograd)."""
    assert cauchy_mod._run_probe("torch", torch.device("cpu")) is None
    with torch.no_grad():
        assert cauchy_mod._run_probe("torch", torch.device("cpu")) is None
    with torch.inference_mode():
        assert cauchy_mod._run_probe("torch", torch.device("cpu")) is None


def test_dtype_promotion():
    v, z, w = make_inputs(dtype=torch.complex64)
    assert cauchy_torch(v.real, z, w).dtype == torch.complex64
    assert cauchy_torch(v, z.to(torch.complex128), w).dtype == torch.complex128


@pytest.mark.parametrize("args,exc,match", [
    (lambda v, z, w: (v, z[None], w), ValueError, "z must be 1-D"),
    (lambda v, z, w: (v.real.long(), z, w), TypeError, "v must be a complex or floating"),
    (lambda v, z, w: ([1.0], z, w), TypeError, "v must be a torch.Tensor"),
    (lambda v, z, w: (v, z, w[..., :3]), ValueError, "do not broadcast"),
    (lambda v, z, w: (v, z, torch.tensor(1j)), ValueError, "w must have a last dimension"),
])
def test_bad_arguments(args, exc, match):
    with pytest.raises(exc, match=match):
        cauchy(*args(*make_inputs()))


def test_bad_max_elements():
    with pytest.raises(ValueError, match="max_elements"):
        cauchy_torch(*make_inputs(), max_elements=0)


def test_empty_shapes():
    v, z, w = make_inputs((2, 0, 4), (4,))
    assert cauchy_torch(v, z, w).shape == (2, 0, 37)
    v, z, w = make_inputs(L=0)
    assert cauchy_torch(v, z, w).shape == (2, 2, 3, 0)
    v, z, w = make_inputs((2, 3, 0), (3, 0), requires_grad=True)  # no modes: zeros
    r = cauchy_torch(v, z, w)
    assert r.shape == (2, 3, 37) and not r.abs().any()
    r.abs().sum().backward()


# ---- the fused C++ CPU kernel ------------------------------------------------------------
@pytest.mark.parametrize("v_shape,w_shape,L", [
    ((2, 2, 3, 4), (3, 4), 37),       # the causal S4 layer's shapes (M = 4 rows)
    ((2, 3, 5, 32), (5, 32), 101),    # bidirectional (M = 6), 32 modes, nodes not a multiple of 8
    ((2, 11, 3), (3,), 9),            # more rows than one register block (8); shared poles
    ((4,), (3, 4), 1),                # v broadcast, one node
    ((2, 3, 0), (3, 0), 5),           # no modes: zeros
])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_cpu_matches_reference(v_shape, w_shape, L, dtype):
    v, z, w = make_inputs(v_shape, w_shape, L=L, dtype=dtype, requires_grad=True)
    r, want = cauchy_cpu(v, z, w), cauchy_ref(v, z, w)
    assert r.shape == want.shape and r.dtype == dtype
    tol = 1e-12 if dtype == torch.complex128 else 1e-5
    assert rel_err(r, want) < tol or not want.abs().any()
    g = torch.randn(r.shape, dtype=dtype, generator=torch.Generator().manual_seed(2))
    grads = torch.autograd.grad((r * g.conj()).real.sum(), (v, w), allow_unused=True)
    grads_ref = torch.autograd.grad((want * g.conj()).real.sum(), (v, w), allow_unused=True)
    for got, ref in zip(grads, grads_ref):
        assert rel_err(got, ref) < tol or not ref.abs().any()


def test_cpu_gradcheck():
    v, z, w = make_inputs((2, 2, 2, 3), (2, 3), L=19, requires_grad=True)
    assert torch.autograd.gradcheck(cauchy_cpu, (v, z, w))
    z.requires_grad_()  # the gradient for z comes from the PyTorch backend
    assert torch.autograd.gradcheck(cauchy_cpu, (v, z, w))


def test_cpu_float32_at_s4_nodes_and_probe():
    """complex64 at the S4 nodes of an FSDD outer tier (up to Nyquist, |z| ~ 1e16), against
    complex128; and the dispatcher's probe."""
    from sashimi.s4 import fft_nodes

    assert_float32_accurate(cauchy_cpu, fft_nodes(2000, torch.complex128, torch.device("cpu"))[0])
    assert cauchy_mod._run_probe("cpu", torch.device("cpu")) is None


def test_cpu_threads_agree():
    """Any thread count gives the same numbers (each thread owns whole groups or node chunks)."""
    v, z, w = make_inputs((2, 2, 5, 16), (5, 16), L=300, dtype=torch.complex64, requires_grad=True)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            r = cauchy_cpu(v, z, w)
            results.append((r, *torch.autograd.grad(r.abs().sum(), (v, w))))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


# ---- dispatch ----------------------------------------------------------------------------
def test_auto_uses_the_cpp_kernel_on_cpu(caplog):
    v, z, w = make_inputs()
    with caplog.at_level(logging.INFO, logger="sashimi.ops.cauchy"):
        assert cauchy_backend("cpu") == "cpu"
        for _ in range(3):
            torch.testing.assert_close(cauchy(v, z, w), cauchy_ref(v, z, w))
    assert len([r for r in caplog.records if "backend" in r.getMessage()]) == 1  # said once


def test_auto_falls_back_to_torch_without_a_compiler(monkeypatch):
    """No C++ compiler: 'auto' takes the PyTorch backend and says so once, naming the reason."""
    monkeypatch.setattr(_cauchy_cpu, "_lib", [None])
    monkeypatch.setattr(_cauchy_cpu, "build_error", "no C++ compiler found (set $CXX or install g++)")
    v, z, w = make_inputs()
    with pytest.warns(RuntimeWarning, match=re.escape("'cpu': the C++ kernel cannot be built: no C++ compiler")):
        assert cauchy_backend("cpu") == "torch"
    torch.testing.assert_close(cauchy(v, z, w), cauchy_ref(v, z, w))
    with pytest.raises(RuntimeError, match="'cpu' is not usable on cpu"):
        cauchy(v, z, w, backend="cpu")


def test_env_var_selects_backend(monkeypatch):
    monkeypatch.setenv("SASHIMI_CAUCHY_BACKEND", "torch")
    assert cauchy_backend("cpu") == "torch"
    monkeypatch.setenv("SASHIMI_CAUCHY_BACKEND", "bogus")
    with pytest.raises(ValueError, match="SASHIMI_CAUCHY_BACKEND"):
        cauchy(*make_inputs())
    # An explicit argument wins over the environment.
    assert cauchy_backend("cpu", backend="torch") == "torch"


def test_bad_backend_name():
    with pytest.raises(ValueError, match="backend must be one of"):
        cauchy(*make_inputs(), backend="fast")


def test_cuda_backend_on_cpu_tensors_is_an_error(monkeypatch):
    with pytest.raises(RuntimeError, match="'cuda' is not usable"):
        cauchy(*make_inputs(), backend="cuda")
    monkeypatch.setenv("SASHIMI_CAUCHY_BACKEND", "cuda")
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        cauchy_backend("cpu")


def test_missing_pykeops_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pykeops", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "pykeops.torch", None)
    with pytest.raises(RuntimeError, match="pip install pykeops"):
        cauchy(*make_inputs(), backend="keops")


# ---- keops (optional) --------------------------------------------------------------------
@pytest.mark.skipif(not HAVE_KEOPS, reason="pykeops is not installed")
def test_keops_matches_reference():
    # complex64 only: the formulas the probe compiles (cached on disk after the first run).
    assert cauchy_backend("cpu", backend="keops") == "keops"  # the probe: S4 nodes up to Nyquist
    v, z, w = make_inputs((2, 2, 3, 8), (3, 8), L=53, dtype=torch.complex64, requires_grad=True)
    z.requires_grad_()
    v64, z64, w64 = (t.detach().to(torch.complex128).requires_grad_() for t in (v, z, w))
    r, r64 = cauchy(v, z, w, backend="keops"), cauchy_ref(v64, z64, w64)
    assert r.shape == r64.shape and r.dtype == torch.complex64
    assert rel_err(r.to(torch.complex128), r64) < 1e-5
    g = torch.randn(r.shape, dtype=torch.complex128, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad((r * g.to(r.dtype).conj()).real.sum(), (v, z, w))
    grads64 = torch.autograd.grad((r64 * g.conj()).real.sum(), (v64, z64, w64))
    for got, want in zip(grads, grads64):
        assert rel_err(got.to(torch.complex128), want) < 1e-4


# ---- CUDA --------------------------------------------------------------------------------
class _FakeExtension:
    """Stands in for sashimi._cauchy_cuda on the CPU, with its contract: contiguous canonical
    inputs; backward returns (grad_v, grad_w_rows), the latter (G, M, N) per row of v."""

    @staticmethod
    def forward(v, z, w):
        assert all(t.is_contiguous() and not t.is_conj() for t in (v, z, w))
        return _cauchy_torch.cauchy_forward(v, z, w)

    @staticmethod
    def backward(grad, v, z, w):
        assert all(t.is_contiguous() and not t.is_conj() for t in (grad, v, z, w))
        G, M, N = v.shape
        rows = [_cauchy_torch.cauchy_backward(grad[:, m:m + 1], v[:, m:m + 1], z, w) for m in range(M)]
        return torch.cat([r[0] for r in rows], dim=1), torch.stack([r[2] for r in rows], dim=1)


def test_cuda_wrapper_autograd_glue(monkeypatch):
    """The Python side of the CUDA backend (saving, conj views, the row sum of grad_w, grad_z)
    with a CPU stand-in for the compiled extension."""
    from sashimi.ops import _cauchy_cuda

    monkeypatch.setattr(_cauchy_cuda, "load_extension", lambda: _FakeExtension)
    v, z, w = make_inputs((2, 3, 4), (2, 4), L=19, requires_grad=True)
    z.requires_grad_()
    v3 = v.conj()  # a conj view: the wrapper must resolve it
    assert torch.autograd.gradcheck(_cauchy_cuda.CauchyCUDA.apply, (v3, z, w))


# ---- CUDA (skipped without a GPU) --------------------------------------------------------
@needs_cuda_ext
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("v_shape,w_shape,L", [
    ((2, 2, 3, 4), (3, 4), 37),
    ((2, 2, 16, 32), (16, 32), 8001),
    ((3, 1024), (3, 1024), 300),   # large N: several shared-memory tiles
    ((5, 4), (2, 5, 4), 1),        # v broadcast, one node
    ((9, 7), (7,), 1000),          # M not a multiple of the kernel's row tile
])
def test_cuda_matches_reference(dtype, v_shape, w_shape, L):
    v, z, w = make_inputs(v_shape, w_shape, L=L, dtype=dtype, device="cuda", requires_grad=True)
    vr, wr = (t.detach().to(torch.complex128).requires_grad_() for t in (v, w))
    r, want = cauchy(v, z, w, backend="cuda"), cauchy_ref(vr, z.to(torch.complex128), wr)
    tol = 1e-5 if dtype == torch.complex64 else 1e-12
    assert r.dtype == dtype and rel_err(r.to(torch.complex128), want) < tol
    g = torch.randn(r.shape, dtype=torch.complex128, device="cuda")
    grads = torch.autograd.grad((r * g.to(dtype).conj()).real.sum(), (v, w))
    grads_ref = torch.autograd.grad((want * g.conj()).real.sum(), (vr, wr))
    for got, exp in zip(grads, grads_ref):
        assert rel_err(got.to(torch.complex128), exp) < 10 * tol


@needs_cuda_ext
def test_cuda_gradcheck_and_auto():
    v, z, w = make_inputs(L=29, device="cuda", requires_grad=True)
    z.requires_grad_()
    assert torch.autograd.gradcheck(lambda v, z, w: cauchy(v, z, w, backend="cuda"), (v, z, w))
    assert cauchy_backend("cuda") == "cuda"


@pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA GPU")
def test_torch_path_on_cuda():
    v, z, w = make_inputs(device="cuda", requires_grad=True)
    torch.testing.assert_close(cauchy_torch(v, z, w), cauchy_ref(v, z, w))
