"""The fast step in plain PyTorch: any device, in place on preallocated buffers.

Per tier, the parameters of its S4 layers and of its FF layers are stacked into single tensors
and the S4 states of a tier live in one (layers, B, H, N) complex tensor; pooling buffers are
queues that shift by one slot per step, so every step of a given *pattern* (which tiers run:
the outer one only, outer + middle, ...) issues exactly the same operations on the same memory.
On CUDA each (pattern, feed | sample-and-feed) unit is captured once as a CUDA graph and replayed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..sampling import SamplingOptions
from .condition import resolve_condition
from .sampler import sample_with_uniforms

__all__ = ["TorchEngine", "step_depth", "plan_norm"]


def plan_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, kind: str, eps: float) -> torch.Tensor:
    """A plan's norm of x (B, H) (see :mod:`sashimi.fastgen.pack`): 'layer' is F.layer_norm;
    'scalar' (the authors' TransposedLN) is ((x - mean) w + b) / std, std biased, no epsilon."""
    if kind == "layer":
        return F.layer_norm(x, x.shape[-1:], w, b, eps=eps)
    std, mean = torch.std_mean(x, dim=-1, unbiased=False, keepdim=True)
    return ((x - mean) * w + b) / std


def step_depth(t: int, pools: list[int]) -> int:
    """How many down pools emit when the t-th token (0-based) is fed: 0 = outer tier only."""
    depth, period = 0, 1
    for p in pools:
        period *= p
        if (t + 1) % period:
            break
        depth += 1
    return depth


class _Tier:
    def __init__(self, tier: dict, batch: int, device, dtype, cdtype):
        def stack(blocks, key, dt):
            return torch.stack([b[key] for b in blocks]).to(device=device, dtype=dt).contiguous()

        self.H = tier["H"]
        self.inp = torch.zeros(batch, self.H, device=device, dtype=dtype)  # the tier's input at this step
        blocks = tier["blocks"]
        s4 = [b for b in blocks if b["type"] == "s4"]
        ff = [b for b in blocks if b["type"] == "ff"]
        self.order, count = [], {"s4": 0, "ff": 0}  # (kind, index in its stack)
        for b in blocks:
            self.order.append((b["type"], count[b["type"]]))
            count[b["type"]] += 1
        self.norms = [b.get("norm", "layer") for b in blocks]  # each block's pre-norm kind, in order
        self.glu = [b["glu"] for b in s4]
        self.s4_ln = (stack(s4, "ln_w", dtype), stack(s4, "ln_b", dtype)) if s4 else None
        self.ff_ln = (stack(ff, "ln_w", dtype), stack(ff, "ln_b", dtype)) if ff else None
        if s4:
            self.d, self.b, self.e, self.v, self.w = (stack(s4, k, cdtype) for k in "dbevw")
            self.cw, self.cu = stack(s4, "cw", dtype), stack(s4, "cu", dtype)
            self.out_w, self.out_b = stack(s4, "out_w", dtype), stack(s4, "out_b", dtype)
            self.state = torch.zeros(len(s4), batch, self.H, s4[0]["N"], dtype=cdtype, device=device)
        else:
            self.state = torch.zeros(0, device=device)
        if ff:
            self.w1, self.b1, self.w2, self.b2 = (stack(ff, k, dtype) for k in ("w1", "b1", "w2", "b2"))
        # Per block (in order): its conditioning projection and the (scale, shift) it applies after
        # its norm for the current condition, in fixed buffers (captured CUDA graphs read them)
        self.conds = []
        for b in blocks:
            if "fc_w" not in b:
                self.conds.append(None)
                continue
            zeros = torch.zeros(batch, self.H, device=device, dtype=dtype)
            self.conds.append({"w": b["fc_w"].to(device=device, dtype=dtype), "b": b["fc_b"].to(device=device, dtype=dtype),
                               "scale": zeros.clone() if b["film"] else None, "shift": zeros})


class TorchEngine:
    """Generation state for ``batch`` sequences; see :mod:`sashimi.fastgen` for the protocol.

    Args:
        plan: from :func:`sashimi.fastgen.pack.build_plan`.
        batch: number of sequences.
        device: where to run.
        dtype: float32 or float64.
        cuda_graphs: capture and replay CUDA graphs (CUDA devices only).
    """

    def __init__(self, plan: dict, batch: int, device, dtype=torch.float32, cuda_graphs: bool = False):
        device = torch.device(device)
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        self.batch, self.device, self.dtype, self.V, self.eps = batch, device, dtype, plan["V"], plan["eps"]
        self.name = "cuda-graphs" if cuda_graphs else f"torch-{device.type}"
        if cuda_graphs and device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        to = dict(device=device, dtype=dtype)
        self.emb = plan["emb"].to(**to)
        self.norm = tuple(t.to(**to) for t in plan["norm"])
        self.norm_kind = plan.get("norm_kind", "layer")
        self.head = tuple(t.to(**to) for t in plan["head"])
        self.pool_sizes = [p["p"] for p in plan["pools"]]
        self.pools = []
        for k, p in enumerate(plan["pools"]):
            H = plan["tiers"][k]["H"]
            self.pools.append({"p": p["p"], "H": H, "down": tuple(t.to(**to) for t in p["down"]),
                               "up": tuple(t.to(**to) for t in p["up"]),
                               "dbuf": torch.zeros(batch, H, p["p"], **to), "ubuf": torch.zeros(batch, H, p["p"], **to)})
        self.tiers = [_Tier(t, batch, device, dtype, cdtype) for t in plan["tiers"]]
        self.tok = torch.full((batch,), 0, dtype=torch.long, device=device)
        self.cond = torch.zeros(batch, plan["emb"].size(1), **to)  # per-row input bias: class conditioning
        self.logits = torch.zeros(batch, self.V, **to)
        self.u = torch.zeros(batch, dtype=torch.float32, device=device)
        self.sampling = SamplingOptions()
        self.cuda_graphs = cuda_graphs
        self._graphs: dict = {}
        self.t = 0
        self._plan = plan
        self.set_condition(None)

    # ---- protocol ------------------------------------------------------------------------
    def buffers(self) -> list[torch.Tensor]:
        """Every tensor that carries state between steps."""
        out = [self.tok, self.logits, self.u] + [t.state for t in self.tiers] + [t.inp for t in self.tiers]
        return out + [p[k] for p in self.pools for k in ("dbuf", "ubuf")]

    def reset(self, condition: torch.Tensor | None = None) -> None:
        """A fresh state for new sequences, with ``condition`` (see :meth:`set_condition`): a
        reset never keeps the condition of an earlier request."""
        for buf in self.buffers():
            buf.zero_()
        self.t = 0
        self.set_condition(condition)

    def set_sampling(self, options: SamplingOptions) -> None:
        if options != self.sampling:
            self.sampling = options
            self._graphs = {key: g for key, g in self._graphs.items() if key[0] == "feed"}

    def set_condition(self, vectors: torch.Tensor | None) -> None:
        """Condition every row from now on (:mod:`sashimi.fastgen.condition`): ``vectors`` (B, H0)
        are added to each row's input embedding and projected by every conditioned block; None:
        the model's default (its "no label" vector; nothing for an unconditional model). Copied
        into fixed buffers, so captured CUDA graphs see it."""
        vectors = resolve_condition(self._plan, vectors, self.batch)
        if vectors is None:
            self.cond.zero_()
            return
        v = vectors.to(device=self.device, dtype=self.dtype)
        self.cond.copy_(v)
        for tier in self.tiers:
            for c in tier.conds:
                if c is not None:
                    t = F.linear(v, c["w"], c["b"])  # as ResidualBlock.cond_terms
                    if c["scale"] is None:
                        c["shift"].copy_(t)
                    else:
                        scale, shift = t.chunk(2, dim=-1)
                        c["scale"].copy_(scale)
                        c["shift"].copy_(shift)

    @torch.no_grad()
    def feed(self, tokens: torch.Tensor, want_logits: bool = False) -> torch.Tensor | None:
        """Teacher-forced steps over tokens (B, T); returns logits (B, T, V) if asked."""
        tokens = tokens.to(self.device)
        out = torch.empty(self.batch, tokens.size(1), self.V, dtype=self.dtype, device=self.device) if want_logits else None
        for j in range(tokens.size(1)):
            self.tok.copy_(tokens[:, j])
            self._run("feed", step_depth(self.t, self.pool_sizes))
            self.t += 1
            if out is not None:
                out[:, j] = self.logits
        return out

    @torch.no_grad()
    def sample_and_feed(self, out: torch.Tensor, t0: int, t1: int, uniforms: torch.Tensor, feed_last: bool) -> None:
        """For t in [t0, t1): out[:, t] = a draw from the current logits, then feed it back
        (the last one only if ``feed_last``). ``uniforms``: (B, t1 - t0) in [0, 1)."""
        uniforms = uniforms.to(self.device)
        for j, t in enumerate(range(t0, t1)):
            self.u.copy_(uniforms[:, j])
            if t < t1 - 1 or feed_last:
                self._run("gen", step_depth(self.t, self.pool_sizes))
                self.t += 1
            else:
                self._sample()
            out[:, t].copy_(self.tok)

    def last_logits(self) -> torch.Tensor:
        return self.logits.clone()

    def state_max_abs(self) -> float:
        """Largest |S4 state| (NaN if any is NaN)."""
        m = max((float(t.state.abs().max()) for t in self.tiers if t.state.numel()), default=0.0)
        bad = any(bool(t.state.isnan().any()) for t in self.tiers)
        return float("nan") if bad else m

    # ---- the step ------------------------------------------------------------------------
    def _run(self, kind: str, depth: int) -> None:
        if not self.cuda_graphs:
            return self._unit(kind, depth)
        graph = self._graphs.get((kind, depth))
        if graph is None:
            graph = self._graphs[(kind, depth)] = self._capture(kind, depth)
        graph.replay()

    def _capture(self, kind: str, depth: int):
        saved = [b.clone() for b in self.buffers()]  # warm-up runs change the state: restore it
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._unit(kind, depth)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._unit(kind, depth)
        for b, s in zip(self.buffers(), saved):
            b.copy_(s)
        return graph

    def _sample(self) -> None:
        self.tok.copy_(sample_with_uniforms(self.logits, self.u, self.sampling.temperature, self.sampling.top_k,
                                             self.sampling.nucleus_p))

    def _unit(self, kind: str, depth: int) -> None:
        if kind == "gen":
            self._sample()
        self._step(depth)

    def _step(self, depth: int) -> None:
        """Feed ``self.tok``; leave the next logits in ``self.logits``. Tiers 0..depth run."""
        n, tiers = len(self.pools), self.tiers
        torch.index_select(self.emb, 0, self.tok, out=tiers[0].inp)  # tier inputs: preallocated (B, H_k)
        tiers[0].inp.add_(self.cond)
        for k in range(min(depth, n - 1) + 1 if n else 0):
            pool = self.pools[k]
            pool["dbuf"].copy_(torch.roll(pool["dbuf"], -1, dims=-1))  # queue of the last p inputs
            pool["dbuf"][..., -1] = tiers[k].inp
            if k < depth:
                torch.addmm(pool["down"][1], pool["dbuf"].flatten(1), pool["down"][0].t(), out=tiers[k + 1].inp)
        below = self._tier(tiers[n], tiers[n].inp) if depth == n else None
        for k in range(min(depth, n - 1), -1, -1):
            pool = self.pools[k]
            q = pool["ubuf"][..., 0].clone()  # the pending up-pool output for this step
            if k < depth:  # the tier below ran: refill the queue
                pool["ubuf"].copy_(F.linear(below, *pool["up"]).view(self.batch, pool["H"], pool["p"]))
            else:
                pool["ubuf"].copy_(torch.roll(pool["ubuf"], -1, dims=-1))
            below = self._tier(tiers[k], q + tiers[k].inp)
        h = plan_norm(below, *self.norm, self.norm_kind, self.eps)
        torch.addmm(self.head[1], h, self.head[0].t(), out=self.logits)

    def _tier(self, tier: _Tier, z: torch.Tensor) -> torch.Tensor:
        """The tier's residual blocks on z (B, H), plus z (the skip around the tier)."""
        x = z
        for (kind, i), cond, norm_kind in zip(tier.order, tier.conds, tier.norms):
            ln = tier.s4_ln if kind == "s4" else tier.ff_ln
            u = plan_norm(x, ln[0][i], ln[1][i], norm_kind, self.eps)
            if cond is not None:  # as ResidualBlock._pre
                u = u + cond["shift"] if cond["scale"] is None else u * (1 + cond["scale"]) + cond["shift"]
            if kind == "s4":
                st = tier.state[i]  # (B, H, N) complex, updated in place
                s = 2 * (tier.v[i] * st).real.sum(-1)
                y = 2 * (tier.e[i] * st).real.sum(-1) - tier.cw[i] * s + tier.cu[i] * u
                st.copy_(tier.d[i] * st - tier.w[i] * s.unsqueeze(-1) + tier.b[i] * u.unsqueeze(-1))
                o = F.linear(F.gelu(y), tier.out_w[i], tier.out_b[i])
                x = x + (F.glu(o, dim=-1) if tier.glu[i] else o)
            else:
                x = x + F.linear(F.gelu(F.linear(u, tier.w1[i], tier.b1[i])), tier.w2[i], tier.b2[i])
        return x + z
