"""The S4 layer (NPLR parameterisation): convolution mode and recurrent step mode.

Notation (per channel h of H; N stored complex modes, 2N with their conjugates):
    Lambda = -exp(log_w_real) + i w_imag                       (H', N)
    A      = diag(Lambda, conj Lambda) - p q^T, p = [P, conj P], q = [Q, conj Q]     (2N, 2N)
The default (Hurwitz) form ties q = conj(p), so A = diag - p p^* is stable by construction; with
``hurwitz=False`` (the SaShiMi authors' Feb-2022 release) ``Q`` is a free parameter.
    Ab     = (I - dt/2 A)^-1 (I + dt/2 A),  Bb = (I - dt/2 A)^-1 dt B     (bilinear)
    K_k    = C Ab^k Bb  for k < L                               (the convolution kernel)
H' is 1 when the state is tied across channels. The stored ``C`` is "length-corrected":
C_stored = C (I - Ab^l_max), which lets the kernel be evaluated at the l_max-th roots of unity
with a Cauchy sum and a rank-1 Woodbury correction, then an inverse FFT.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ops.cauchy import cauchy
from .ops.fftconv import ssm_conv_gelu

__all__ = ["S4", "SSMKernel", "hippo_legs_nplr", "fft_nodes", "convert_kernel_lengths"]

STEP_MODES = ("dense", "diagonal", "dplr")
# 'diagonal' falls back to 'dplr' when the eigenbasis would lose more than this (relative,
# estimated as machine epsilon x the sum of |residues|): exact HiPPO-LegS is so non-normal that
# its partial-fraction residues reach ~1e7 and cancel, which float32 cannot represent.
_DIAGONAL_MAX_ERROR = {torch.float32: 1e-5, torch.float64: 1e-12}
_warned: set[str] = set()
# The SSMKernel parameters the step coefficients are computed from (the key of their cache).
_SSM_PARAMETERS = ("log_dt", "log_w_real", "w_imag", "P", "B", "C", "Q")


def hippo_legs_nplr(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HiPPO-LegS in normal-plus-low-rank form, one mode of each conjugate pair.

    Args:
        n: full state size (even).

    Returns:
        (w, P, B), each complex128 of shape (n // 2,): eigenvalues of the normal part,
        the rank-1 factor and the input vector, in the eigenbasis of the normal part.
    """
    q = torch.arange(n, dtype=torch.float64)
    r = torch.sqrt(2 * q + 1)
    # LegS: A_nk = -sqrt(2n+1) sqrt(2k+1) for n > k, -(n+1) on the diagonal; B_n = sqrt(2n+1).
    a = -torch.tril(r[:, None] * r[None, :], diagonal=-1) - torch.diag(q + 1)
    p = torch.sqrt(q + 0.5)
    normal = a + p[:, None] * p[None, :]  # skew-symmetric minus I/2: normal
    w, v = _eig(normal)
    # Keep the half of each conjugate pair with positive imaginary part.
    keep = torch.argsort(w.imag, descending=True)[: n // 2]
    w, v = w[keep], v[:, keep]
    v_inv = v.conj().T  # unitary eigenbasis (normal matrix)
    return w, v_inv @ p.to(v), v_inv @ r.to(v)


@lru_cache(maxsize=32)
def fft_nodes(length: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes for evaluating a length-``length`` kernel's generating function.

    Computed in float64 and then cast: raising a float32 root of unity to the k-th power
    (as the seed did) is off by ~5e-4 near Nyquist.

    Returns:
        z: complex (length // 2 + 1,), the bilinear pre-images 2 (1 - omega) / (1 + omega)
           of the roots of unity omega_k = exp(-2 pi i k / length).
        scale: complex (length // 2 + 1,), the bilinear correction 2 / (1 + omega).
    """
    k = torch.arange(length // 2 + 1, dtype=torch.float64)
    omega = torch.exp(-2j * math.pi * k / length)
    z = 2 * (1 - omega) / (1 + omega)
    scale = 2 / (1 + omega)
    return z.to(device=device, dtype=dtype), scale.to(device=device, dtype=dtype)


@contextlib.contextmanager
def one_thread():
    """Run the block with one torch thread: batches of small float64 matrices (eig, solves,
    matrix powers) run far faster there than on contended threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _eig(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.linalg.eig on one thread: batches of small matrices run ~10x slower when
    torch's intra-op threads and LAPACK's compete (measured: 512 64x64 matrices, 17 s vs 2 s)."""
    with one_thread():
        return torch.linalg.eig(A)


def _complex(x: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(x)


def _conj_extend(x: torch.Tensor) -> torch.Tensor:
    """(..., N) -> (..., 2N): append the conjugate partners."""
    return torch.cat([x, x.conj()], dim=-1)


class SSMKernel(nn.Module):
    """Parameters of a bank of H state-space models and their convolution kernel.

    Args:
        d_model: number of independent SSMs (H).
        d_state: full state size 2N (N = d_state // 2 complex modes are stored).
        l_max: length the stored ``C`` is corrected for.
        channels: output channels per SSM (2x for bidirectional layers).
        tie_state: share Lambda, P and B across the H SSMs.
        lr: learning rate for the state parameters (log_dt, Lambda, P, B), or None for
            the optimiser's default. Recorded on each parameter as ``_optim``.
        dt_min, dt_max: range of the log-uniform initial step sizes.
        hurwitz: tie the low-rank term's right factor to the left one (q = conj(p), A = diag - p p^*,
            stable by construction); False adds a free parameter ``Q`` (A = diag - p q^T, the SaShiMi
            authors' Feb-2022 parameterisation), initialised to conj(P) (the same model at first).
    """

    def __init__(self, d_model: int, d_state: int = 64, l_max: int = 16000, channels: int = 1,
                 tie_state: bool = True, lr: float | None = None, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 hurwitz: bool = True):
        super().__init__()
        if d_state % 2:
            raise ValueError(f"d_state must be even, got {d_state}")
        self.H, self.N, self.l_max, self.channels, self.hurwitz = d_model, d_state // 2, l_max, channels, hurwitz
        self._cache: dict = {}  # inference-time kernel cache, see forward()
        h_state = 1 if tie_state else d_model
        w, p, b = hippo_legs_nplr(d_state)
        log_dt = torch.rand(d_model, dtype=torch.float64) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        c = torch.randn(channels, d_model, self.N, dtype=torch.complex128)

        self.log_dt = nn.Parameter(log_dt.float())
        self.log_w_real = nn.Parameter(torch.log(-w.real + 1e-3).float().expand(h_state, -1).clone())
        self.w_imag = nn.Parameter(w.imag.float().expand(h_state, -1).clone())
        self.P = nn.Parameter(torch.view_as_real(p).float().expand(1, h_state, -1, -1).clone())
        self.B = nn.Parameter(torch.view_as_real(b).float().expand(1, h_state, -1, -1).clone())
        self.C = nn.Parameter(torch.zeros(channels, d_model, self.N, 2))
        if not hurwitz:
            self.Q = nn.Parameter(torch.view_as_real(p.conj().resolve_conj()).float().expand(1, h_state, -1, -1).clone())
        for name in ("log_dt", "log_w_real", "w_imag", "P", "B") + (() if hurwitz else ("Q",)):
            getattr(self, name)._optim = {"lr": lr, "weight_decay": 0.0} if lr is not None else {"weight_decay": 0.0}
        with torch.no_grad():
            # Store C length-corrected, C (I - Ab^L), as the published checkpoints do. Ab^L is
            # formed in the eigenbasis of A, which at initialisation is the same for every
            # channel (only dt differs); its conditioning is irrelevant for a random C.
            c_full = _conj_extend(c)
            p_full = _conj_extend(p)
            mu, V = _eig(torch.diag_embed(_conj_extend(torch.complex(-torch.exp(self.log_w_real[0].double()),
                                                                     self.w_imag[0].double())))
                         - p_full[:, None] * p_full.conj()[None, :])
            dt = torch.exp(log_dt).to(torch.complex128)[:, None]
            lam = (1 + dt * mu / 2) / (1 - dt * mu / 2)  # (H, 2N)
            c_eig = (c_full @ V) * (1 - lam ** l_max)  # C V (I - Lambda^L)
            corrected = torch.linalg.solve(V.T, c_eig.unsqueeze(-1)).squeeze(-1)  # (.) V^-1
            self.C.copy_(torch.view_as_real(corrected[..., : self.N]).float())

    def extra_repr(self) -> str:
        form = "" if self.hurwitz else ", hurwitz=False"
        return f"H={self.H}, N={self.N} (x2 conjugate), channels={self.channels}, l_max={self.l_max}{form}"

    def q_factor(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The low-rank term's right factor Q on the stored modes (A = diag - p q^T): complex
        (H', N); conj(P) in the Hurwitz form. ``dtype``: the real dtype to compute in (default: the
        parameters')."""
        P = self.P if dtype is None else self.P.to(dtype)
        if self.hurwitz:
            return _complex(P.contiguous())[0].conj()
        Q = self.Q if dtype is None else self.Q.to(dtype)
        return _complex(Q.contiguous())[0]

    def lambda_(self) -> torch.Tensor:
        """Diagonal part of A: complex (H', N)."""
        return torch.complex(-torch.exp(self.log_w_real), self.w_imag)

    def forward(self, length: int) -> torch.Tensor:
        """Convolution kernel.

        The stored ``C`` is length-corrected for ``l_max``, the sequence length this layer
        normally sees (in SaShiMi, the outer length divided by the pooling above the layer),
        so training evaluates the kernel at exactly the length it needs. Without autograd,
        other lengths convert ``C`` instead (same taps, less work); with autograd, shorter
        kernels are cut from the l_max one and longer ones use the exact dense conversion.

        Args:
            length: number of taps wanted (any positive length).

        Returns:
            real (channels, H, length).
        """
        if length < 1:
            raise ValueError(f"kernel length must be positive, got {length}")
        if self._differentiable():
            return self._compute(length)
        # Without autograd (inference, diffusion sampling) the kernel only changes with the
        # weights: reuse it while no parameter was replaced or modified in place.
        key = (length, tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self.parameters()))
        if key not in self._cache:
            self._cache.clear()  # one length per layer in practice; never hold stale kernels
            self._cache[key] = self._compute(length)
        return self._cache[key]

    def _differentiable(self) -> bool:
        """Whether autograd tracks the kernel (through any parameter, not only C)."""
        return torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())

    def _compute(self, length: int) -> torch.Tensor:
        n_fft = length  # taps actually computed (irfft takes odd lengths too)
        C = _complex(self.C)  # (c, H, N)
        if n_fft != self.l_max:
            # the eigenbasis conversion's gradients are inaccurate (see _converted_c)
            if not self._differentiable():
                C = self._converted_c(self.l_max, n_fft, exact=self.C.dtype == torch.float64)
            elif n_fft < self.l_max:
                n_fft = self.l_max
            else:
                C = self._converted_c(self.l_max, n_fft, exact=True)
        dt = torch.exp(self.log_dt)  # (H,)
        B, P = _complex(self.B), _complex(self.P)  # (1, H', N)
        w = self.lambda_() * dt[:, None]  # (H, N)
        c = self.channels
        rows = torch.cat([B, P], dim=0)  # (2, H', N): input-side vectors [B, P]
        cols = torch.cat([C, self.q_factor()[None].expand(1, self.H, self.N)], dim=0)  # (c+1, H, N): [C, Q]
        v = rows[:, None] * cols[None]  # (2, c+1, H, N)
        z, scale = fft_nodes(n_fft, v.dtype, v.device)
        r = cauchy(v, z, w) * dt[:, None]  # (2, c+1, H, n_fft//2 + 1)
        # Rank-1 Woodbury: C R B - (C R P)(Q R B) / (1 + Q R P), R the diagonal resolvent.
        k_f = r[0, :c] - r[0, c:] * r[1, :c] / (1 + r[1, c:])
        k = torch.fft.irfft(k_f * scale, n=n_fft)  # (c, H, n_fft)
        return k[..., :length]

    def _state_matrix(self) -> torch.Tensor:
        """A = diag(Lambda) - p q^T over all 2N modes: complex128 (H', 2N, 2N), differentiable."""
        w = _conj_extend(torch.complex(-torch.exp(self.log_w_real.double()), self.w_imag.double()))
        p = _conj_extend(_complex(self.P.double().contiguous())[0])  # (H', 2N)
        q = _conj_extend(self.q_factor(torch.float64))  # (H', 2N)
        return torch.diag_embed(w) - p[..., :, None] * q[..., None, :]

    def _bilinear(self, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Ab = (I - dt/2 A)^-1 (I + dt/2 A) (H, 2N, 2N) and the backward matrix I - dt/2 A."""
        half = (torch.exp(self.log_dt.double()) / 2).to(A.dtype)[:, None, None]
        eye = torch.eye(A.size(-1), dtype=A.dtype, device=A.device)
        backward = eye - half * A
        return torch.linalg.solve(backward, eye + half * A), backward

    def _converted_c(self, src: int, dst: int, exact: bool) -> torch.Tensor:
        """C corrected for length ``dst`` instead of ``src`` (differentiable):

            C_dst = C_src (I - Ab^src)^-1 (I - Ab^dst).

        ``exact`` uses dense matrix powers (costly for wide layers); otherwise the eigenbasis
        of A in complex128 (shared across channels when the state is tied), whose ~1e-8
        relative error on exact HiPPO matrices is below float32 round-off. Its gradients are
        NOT accurate (eig's backward loses cond(V)^2), so it is only used without autograd.

        Returns:
            complex (channels, H, N) in the parameters' complex dtype.
        """
        c_src = _conj_extend(_complex(self.C.double().contiguous()))  # (c, H, 2N)
        if exact:
            Ab = self._bilinear(self._state_matrix())[0]
            eye = torch.eye(2 * self.N, dtype=Ab.dtype, device=Ab.device)
            M = torch.linalg.solve(eye - torch.linalg.matrix_power(Ab, src),
                                   eye - torch.linalg.matrix_power(Ab, dst))
            c_new = torch.einsum("chn,hnm->chm", c_src, M)
        else:
            _, V, lam = self._eigen()  # (H', 2N, 2N), (H, 2N)
            factor = (1 - lam ** dst) / (1 - lam ** src)
            c_eig = torch.einsum("chn,hnm->chm", c_src, V.expand(self.H, -1, -1)) * factor
            c_new = torch.linalg.solve(V.transpose(-1, -2), c_eig.unsqueeze(-1)).squeeze(-1)  # (.) V^-1
        return c_new[..., : self.N].to(_complex(self.C).dtype)

    @torch.no_grad()
    def convert_length(self, from_length: int) -> None:
        """Re-express a ``C`` that was length-corrected for ``from_length`` (e.g. a published
        checkpoint's l_max) for this layer's ``l_max``, in place. Outputs do not change."""
        if from_length != self.l_max:
            c = self._converted_c(from_length, self.l_max, exact=False)
            self.C.copy_(torch.view_as_real(c))

    @torch.no_grad()
    def discrete_system(self) -> dict[str, torch.Tensor]:
        """The bilinear discretisation over all 2N modes, computed in complex128.

        Returns:
            dict with ``A`` (H', 2N, 2N) continuous state matrix, ``dt`` (H,),
            ``Ab`` (H, 2N, 2N), ``Bb`` (H, 2N), ``AbL`` = Ab^l_max (H, 2N, 2N), and
            ``C`` (channels, H, 2N), the true (not length-corrected) output matrix.
        """
        dt = torch.exp(self.log_dt.double())
        b = _conj_extend(_complex(self.B.double().contiguous())[0])
        c_stored = _conj_extend(_complex(self.C.double().contiguous()))  # (c, H, 2N)
        A = self._state_matrix()
        Ab, backward = self._bilinear(A)
        Bb = torch.linalg.solve(backward, (dt.to(A.dtype)[:, None] * b).unsqueeze(-1)).squeeze(-1)
        eye = torch.eye(2 * self.N, dtype=A.dtype, device=A.device)
        AbL = torch.linalg.matrix_power(Ab, self.l_max)
        # C_stored = C (I - Ab^L)  =>  C^T = (I - Ab^L)^-T C_stored^T
        C = torch.linalg.solve((eye - AbL).transpose(-1, -2), c_stored.unsqueeze(-1)).squeeze(-1)
        return {"A": A, "dt": dt, "Ab": Ab, "Bb": Bb, "AbL": AbL, "C": C}

    @torch.no_grad()
    def _eigen(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Eigen-decomposition of A (complex128): mu (H', 2N), V (H', 2N, 2N), and the
        discrete eigenvalues lam (H, 2N) = (1 + dt mu / 2) / (1 - dt mu / 2)."""
        dt = torch.exp(self.log_dt.double()).to(torch.complex128)[:, None]
        mu, V = _eig(self._state_matrix())
        return mu, V, (1 + dt * mu / 2) / (1 - dt * mu / 2)

    @torch.no_grad()
    def diagonal_system(self) -> dict[str, torch.Tensor]:
        """The same system in the eigenbasis of A, computed in complex128.

        The bilinear map keeps eigenvectors: Ab's eigenvalues are
        (1 + dt mu / 2) / (1 - dt mu / 2) for each eigenvalue mu of A.

        Returns:
            dict with ``Lambda`` (H, 2N) discrete eigenvalues, ``Bb`` (H, 2N) and
            ``C`` (channels, H, 2N) in the eigenbasis.
        """
        dt = torch.exp(self.log_dt.double()).to(torch.complex128)[:, None]  # (H, 1)
        b = _conj_extend(_complex(self.B.double().contiguous())[0])
        c_stored = _conj_extend(_complex(self.C.double().contiguous()))
        mu, V, lam = self._eigen()
        b_eig = torch.linalg.solve(V, b.unsqueeze(-1)).squeeze(-1)  # V^-1 B
        Bb = dt * b_eig / (1 - dt * mu / 2)
        # C_true V = C_stored V (I - Lambda^L)^-1
        C = torch.einsum("chn,hnm->chm", c_stored, V.expand(self.H, -1, -1)) / (1 - lam ** self.l_max)
        return {"Lambda": lam, "Bb": Bb, "C": C}

    @torch.no_grad()
    def dplr_system(self) -> dict[str, torch.Tensor]:
        """Coefficients of the O(N) bilinear step in the (unitary) basis of the stored modes.

        With A = diag(Lambda) - p q^T and a state x of N modes (conjugates implicit), one step
        x' = (I - dt/2 A)^-1 ((I + dt/2 A) x + dt B u) is, by the Woodbury identity,
            s  = 2 Re(Q . x)
            a  = g * (x + alpha x - beta s + dtB u),   g = 1 / (1 - dt/2 Lambda)
            x' = a - gP * coef * 2 Re(Q . a)
        (Q = conj(P) in the Hurwitz form; the entry is still called ``Pc``.)
        All complex128; shapes (H, N) except ``coef`` (H,).
        """
        dt = torch.exp(self.log_dt.double())[:, None]  # (H, 1)
        lam = torch.complex(-torch.exp(self.log_w_real.double()), self.w_imag.double())
        P = _complex(self.P.double().contiguous())[0].expand(self.H, -1)
        B = _complex(self.B.double().contiguous())[0].expand(self.H, -1)
        g, coef = self.woodbury()
        C = self.true_C()
        Q = self.q_factor(torch.float64).expand(self.H, -1)
        return {"Pc": Q, "alpha": dt / 2 * lam, "beta": dt / 2 * P, "dtB": dt * B, "g": g,
                "gP": g * P, "coef": coef, "C": 2 * C}

    @torch.no_grad()
    def woodbury(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The bilinear transition in the basis of the stored modes, Ab = 2 M - I with
        M = G - coef (G p)(q^T G), G = diag(g): g = 1 / (1 - dt/2 Lambda) complex128 (H, N)
        and coef = (dt/2) / (1 + dt/2 q^T G p) float64 (H,)."""
        dt = torch.exp(self.log_dt.double())  # (H,)
        lam = torch.complex(-torch.exp(self.log_w_real.double()), self.w_imag.double())  # (H', N)
        P = _complex(self.P.double().contiguous())[0]  # (H', N)
        g = 1 / (1 - dt[:, None] / 2 * lam)  # (H, N)
        q = 2 * (self.q_factor(torch.float64) * P * g).sum(-1).real  # q^T G p over all 2N modes (real)
        return g, (dt / 2) / (1 + dt / 2 * q)

    @torch.no_grad()
    def true_C(self) -> torch.Tensor:
        """The true output matrix C = C_stored (I - Ab^l_max)^-1 on the stored modes.

        Ab^l_max is formed in the real 2N-dimensional form of x' = d x - w 2 Re(v . x)
        (d = 2g - 1, w = 2 coef g P, v = Q g): a quarter of the work of the complex
        2N x 2N power in :meth:`discrete_system`, which it matches to rounding.

        Returns:
            complex128 (channels, H, N).
        """
        g, coef = self.woodbury()
        P = _complex(self.P.double().contiguous())[0]  # (H', N)
        d, w, v = 2 * g - 1, 2 * coef[:, None] * g * P, self.q_factor(torch.float64) * g  # (H, N)
        H, N = d.shape
        R = torch.zeros(H, 2 * N, 2 * N, dtype=torch.float64, device=d.device)
        i = torch.arange(N, device=d.device)
        R[:, i, i] = R[:, i + N, i + N] = d.real
        R[:, i, i + N], R[:, i + N, i] = -d.imag, d.imag
        R -= torch.cat([w.real, w.imag], -1)[:, :, None] * (2 * torch.cat([v.real, -v.imag], -1))[:, None, :]
        RL = torch.linalg.matrix_power(R, self.l_max)
        c_stored = _complex(self.C.double().contiguous())  # (c, H, N)
        # y = 2 Re(C x) = [2 Re C, -2 Im C] . [Re x, Im x];  c_stored = (I - R^L)^T c_true
        cs = torch.cat([2 * c_stored.real, -2 * c_stored.imag], -1)  # (c, H, 2N)
        eye = torch.eye(2 * N, dtype=torch.float64, device=d.device)
        ct = torch.linalg.solve((eye - RL).transpose(-1, -2), cs.unsqueeze(-1)).squeeze(-1)
        return torch.complex(ct[..., :N] / 2, -ct[..., N:] / 2)

    @torch.no_grad()
    def diagonal_error_estimate(self, dtype: torch.dtype) -> float:
        """Relative error the eigenbasis recurrence is expected to have in ``dtype``."""
        d = self.diagonal_system()
        residues = (d["C"] * d["Bb"]).abs().sum(-1)  # (channels, H)
        scale = (d["C"] * d["Bb"]).sum(-1).abs().clamp_min(1e-30)  # |K_0|-like magnitude
        return float(torch.finfo(dtype).eps * (residues / scale.max()).max())

    def diagonal_is_accurate(self, dtype: torch.dtype) -> bool:
        """Whether the eigenbasis recurrence stays within ``dtype``'s round-off (1e-5 relative in
        float32, 1e-12 in float64): the one place the step-mode choice is made."""
        return self.diagonal_error_estimate(dtype) <= _DIAGONAL_MAX_ERROR.get(dtype, 1e-5)


class S4(nn.Module):
    """S4 layer on (B, L, H) sequences: SSM convolution + D skip, GELU, output projection.

    Args:
        d_model: channels H.
        d_state: full SSM state size (2N).
        l_max: longest sequence; the kernel is defined up to this length.
        bidirectional: add an anti-causal kernel (two kernel channels, summed).
        glu: output projection H -> 2H followed by GLU (else H -> H, nothing after).
        dropout: dropout on the SSM output (tied over time).
        tie_state: share the state matrix across channels.
        lr: learning rate recorded for the SSM state parameters (see :class:`SSMKernel`).
        hurwitz: False adds the free low-rank factor ``Q`` (see :class:`SSMKernel`).
    """

    def __init__(self, d_model: int, d_state: int = 64, l_max: int = 16000, bidirectional: bool = False,
                 glu: bool = True, dropout: float = 0.0, tie_state: bool = True, lr: float | None = None,
                 hurwitz: bool = True):
        super().__init__()
        self.d_model, self.bidirectional, self.glu = d_model, bidirectional, glu
        self.kernel = SSMKernel(d_model, d_state, l_max, channels=2 if bidirectional else 1,
                                tie_state=tie_state, lr=lr, hurwitz=hurwitz)
        self.D = nn.Parameter(torch.randn(1, d_model))
        self.dropout = dropout
        self.output_linear = nn.Linear(d_model, 2 * d_model if glu else d_model)
        # Step mode's discretised recurrence: a cache of the SSM parameters, computed by setup_step
        # and keyed on what it was computed from (_step_key), so that it is never used stale.
        self._step = None
        self._step_request, self._step_made_for = None, None  # the mode asked for; the key it was made for

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Args: u (B, L, H). Returns: (B, L, H)."""
        L = u.size(-2)
        # The kernel and the FFT convolution stay in float32 under mixed-precision autocast.
        with torch.autocast(device_type=u.device.type, enabled=False):
            if u.dtype in (torch.float16, torch.bfloat16):
                u = u.float()
            k = self.kernel(L)  # (c, H, L)
            if self.bidirectional:
                # Causal kernel k0 on lags 0..L-1, anti-causal k1 on lags -1..-L (circularly at 2L - m).
                k = F.pad(k[0], (0, L)) + F.pad(k[1].flip(-1), (L, 0))  # (H, 2L)
            else:
                k = k[0]
            y = ssm_conv_gelu(u, k, self.D[0])  # indexing keeps the gradient of D contiguous (DDP)
        y = channel_dropout(y, self.dropout, self.training)
        return self._project(y)

    def _project(self, y: torch.Tensor) -> torch.Tensor:
        y = self.output_linear(y)
        return F.glu(y, dim=-1) if self.glu else y

    # ---- recurrent mode ----------------------------------------------------------------
    @torch.no_grad()
    def setup_step(self, mode: str = "dense") -> None:
        """Precompute the discrete recurrence (in complex128, then cast to the layer's dtype).

        Args:
            mode: 'dense' (the full transition, in real coordinates: the reference),
                'diagonal' (the eigenbasis of A; O(N) per step) or 'dplr' (diagonal plus the
                rank-1 term via Woodbury, in the unitary basis of the stored modes; O(N) and
                always well-conditioned). 'diagonal' falls back to 'dplr', with a one-time
                warning, for layers whose eigenbasis would lose accuracy in this dtype
                (exact HiPPO-LegS loses ~8 digits). :attr:`step_mode` tells which is active.

        The result is a cache keyed on the SSM parameters (storage and in-place version), their
        device, the layer's dtype and ``mode``: calling this again is free while they are
        unchanged; :meth:`default_state` recomputes it when they changed, and :meth:`step`
        refuses a state made before they changed.
        """
        if mode not in STEP_MODES:
            raise ValueError(f"mode must be one of {STEP_MODES}, got {mode!r}")
        if self.bidirectional:
            raise RuntimeError("a bidirectional S4 layer has no recurrent (step) mode")
        key = self._step_key()
        if self._step is not None and self._step_request == mode and self._step_made_for == key:
            return  # computed for these very weights, dtype, device and mode
        self._discretise(mode)
        self._step_request, self._step_made_for = mode, key

    def _step_key(self) -> list:
        """What the step coefficients depend on: each SSM parameter's storage and in-place version
        (an optimizer step, ``load_state_dict`` or ``.to()`` changes one or the other), their
        device, and the layer's dtype (the coefficients are cast to it). Checked at every step, so
        it reads the parameter dicts directly: ``nn.Module.__getattr__`` alone costs more."""
        params = self._modules["kernel"]._parameters
        key = [self._parameters["D"].dtype, params["C"].device]
        for name in _SSM_PARAMETERS:
            p = params.get(name)  # Q exists only in the non-Hurwitz form
            if p is not None:
                key += (p.data_ptr(), p._version)
        return key

    def _discretise(self, mode: str) -> None:
        cdtype = torch.complex128 if self.D.dtype == torch.float64 else torch.complex64
        if mode == "diagonal":
            if not self.kernel.diagonal_is_accurate(self.D.dtype):
                err = self.kernel.diagonal_error_estimate(self.D.dtype)
                if "diagonal" not in _warned:
                    _warned.add("diagonal")
                    warnings.warn(f"S4 step mode 'diagonal': the eigenbasis of a layer's state matrix is "
                                  f"ill-conditioned (estimated relative error {err:.1e} in {self.D.dtype}); "
                                  "using the equivalent, well-conditioned 'dplr' step instead.", stacklevel=2)
                mode = "dplr"
        if mode == "dense":
            # The system is real: in coordinates s = [Re x, Im x] of the N stored modes (the
            # other N are their conjugates), x' = P x + Q conj(x) with P, Q blocks of Ab.
            sys = self.kernel.discrete_system()
            n = self.kernel.N
            P, Q = sys["Ab"][:, :n, :n], sys["Ab"][:, :n, n:]
            M = torch.cat([torch.cat([P.real + Q.real, Q.imag - P.imag], -1),
                           torch.cat([P.imag + Q.imag, P.real - Q.real], -1)], -2)  # (H, 2N, 2N)
            b, c = sys["Bb"][:, :n], sys["C"][0, :, :n]
            self._step = {"A": M.transpose(-1, -2).contiguous(), "B": torch.cat([b.real, b.imag], -1),
                          "C": torch.cat([2 * c.real, -2 * c.imag], -1)}
        elif mode == "diagonal":
            sys = self.kernel.diagonal_system()
            self._step = {"A": sys["Lambda"], "B": sys["Bb"], "C": sys["C"][0]}
        else:
            sys = self.kernel.dplr_system()
            self._step = dict(sys, C=sys["C"][0])
        rdtype = self.D.dtype
        self._step = {k: v.to(cdtype if v.is_complex() else rdtype) for k, v in self._step.items()}
        self._step["mode"] = mode

    @property
    def step_mode(self) -> str | None:
        """The active recurrence ('dense', 'diagonal' or 'dplr'), or None before setup_step."""
        return None if self._step is None else self._step["mode"]

    def default_state(self, *batch_shape: int, device=None) -> torch.Tensor:
        """Zero state: real (B, H, 2N) in 'dense' mode ([Re, Im] of the N stored modes),
        complex (B, H, 2N) in 'diagonal' mode, complex (B, H, N) in 'dplr' mode.

        A new state starts a new sequence, so the recurrence is recomputed here first if the
        weights, dtype or device changed since :meth:`setup_step` (in the mode it was asked for)."""
        if self._step is None:
            raise RuntimeError("call setup_step() (or the model's setup_rnn()) before default_state()")
        self.setup_step(self._step_request)
        cdtype = torch.complex128 if self.D.dtype == torch.float64 else torch.complex64
        mode = self._step["mode"]
        n = self.kernel.N if mode == "dplr" else 2 * self.kernel.N
        return torch.zeros(*batch_shape, self.d_model, n, dtype=self.D.dtype if mode == "dense" else cdtype,
                           device=device if device is not None else self.D.device)

    @torch.no_grad()
    def step(self, u: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step.

        Step mode is for inference, so no autograd graph is recorded: the recurrence precomputed by
        :meth:`setup_step` is a constant (no gradient reaches the state parameters through it),
        and a graph would only grow with every step, since each state depends on the previous one
        (gigabytes over a second of audio). Train in convolution mode (:meth:`forward`).

        Args:
            u: (B, H) input at this step.
            state: from :meth:`default_state` or the previous step.

        Returns:
            y (B, H) and the next state.
        """
        if self._step is None:
            raise RuntimeError("call setup_step() (or the model's setup_rnn()) before step()")
        if self._step_made_for != self._step_key():
            # A state belongs to the recurrence it was made with ('diagonal' even to its eigenbasis):
            # continuing it with other weights, dtype or device would be silently wrong.
            raise RuntimeError("S4.step: the layer's weights, dtype or device changed after this state was made "
                               "(an optimizer step, load_state_dict, .to() ...): start a new state with "
                               "default_state(), which recomputes the recurrence (or call setup_rnn() again)")
        s = self._step
        if s["mode"] == "dplr":
            u_ = u.unsqueeze(-1)
            proj = 2 * (s["Pc"] * state).sum(-1).real.unsqueeze(-1)
            a = s["g"] * (state + s["alpha"] * state - s["beta"] * proj + s["dtB"] * u_)
            state = a - s["gP"] * (s["coef"] * 2 * (s["Pc"] * a).sum(-1).real).unsqueeze(-1)
        elif s["mode"] == "dense":  # real coordinates; A stored transposed: (H, 2N_in, 2N_out)
            flat = state.reshape(-1, *state.shape[-2:]).transpose(0, 1)  # (H, batch, 2N)
            state = torch.bmm(flat, s["A"]).transpose(0, 1).reshape(state.shape) + s["B"] * u.unsqueeze(-1)
        else:
            state = s["A"] * state + s["B"] * u.unsqueeze(-1)
        y = (s["C"] * state).sum(-1)
        y = (y.real if y.is_complex() else y) + u * self.D[0]
        return self._project(F.gelu(y)), state


def check_float_params(dtype: torch.dtype, what: str) -> None:
    """Refuse half-precision parameters: the S4 kernel and recurrence need float32 or float64
    (complex half arithmetic is missing or too inaccurate). Mixed precision is torch.autocast's job."""
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{what} has {dtype} parameters, but S4 layers compute in float32 or float64: keep the "
                        "model in float32 (model.float()) and use torch.autocast for mixed precision")


def channel_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout of whole channels, tied over time: x (B, L, H)."""
    if not training or p == 0.0:
        return x
    mask = torch.empty(x.size(0), 1, x.size(-1), device=x.device, dtype=x.dtype).bernoulli_(1 - p)
    return x * mask / (1 - p)


def convert_kernel_lengths(module: nn.Module, from_length: int) -> None:
    """Convert every S4 kernel in ``module`` whose ``C`` was length-corrected for
    ``from_length`` (the seed corrected every layer for the full l_max) to its own l_max."""
    for kernel in module.modules():
        if isinstance(kernel, SSMKernel):
            kernel.convert_length(from_length)
