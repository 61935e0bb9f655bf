// The model of the fused CPU step (included by fastgen.cpp): layers, tiers, pools and one step
// of the whole network, pooling included (a lower tier runs every p-th step).
#pragma once

#include "fastgen_kernels.h"

namespace {

// ---- the model ---------------------------------------------------------------------------
// S4 step, one of three forms (maths in sashimi/fastgen/pack.py), over the N stored modes of each
// of the H channels; real output 2 Re(.) accounts for the implicit conjugate partners.
//   diagonal:   x' = d x + u;                                   y = 2 Re(r . x') + D u
//   dplr:       x' = g (2 x + B dt u - P c (2 s + kappa u)) - x;  y = 2 Re(C . x') + D u,
//               s' = 2 Re(conj(P) g . x')   (kept in the state: the rank-1 read for the next step)
// P and B are per mode (tied state, 'dplr') or per mode and channel ('dplr_untied').
enum S4Form { S4_DIAGONAL = 0, S4_DPLR = 1, S4_DPLR_UNTIED = 2 };

struct S4Layer {
  int64_t N = 0, form = S4_DPLR;
  bool glu = true;
  const float *ln_w, *ln_b;
  const float *ar, *ai, *cr, *ci;     // (N, H): d or g; r or C
  const float *pr, *pi, *br, *bi;     // (N,) or (N, H): P, B (dplr only)
  const float *dt, *c, *kappa, *D;    // (H,)
  Linear out;
  std::vector<float> xr, xi, s;  // state: (N, B, H) twice (rows of one mode adjacent), and (B, H)
};

struct FFLayer {
  const float *ln_w, *ln_b;
  Linear fc1, fc2;
};

struct Block {
  bool is_s4 = true;
  S4Layer s4;
  FFLayer ff;
};

struct Tier {
  int64_t H = 0;
  std::vector<Block> blocks;
  std::vector<float> in, cur, skip;  // (B, H): the tier's input, its residual stream, the skip
};

struct Pool {
  int64_t p = 0, H = 0, H_next = 0;  // tier k (H) <-> tier k + 1 (H_next)
  Linear down, up;
  std::vector<float> dbuf, ubuf;  // (B, H p), channel index h p + s
  // Slot of this step in both buffers: the same steps push into dbuf and pop from ubuf.
  int64_t pos = 0;
};

struct Engine {
  int64_t B = 1, V = 0, H0 = 0, t = 0;
  float eps = 1e-5f;
  const float *emb, *lnf_w, *lnf_b;
  Linear head;
  std::vector<Tier> tiers;  // outermost first; the center last
  std::vector<Pool> pools;  // between tiers[k] and tiers[k + 1]
  std::vector<float> u, y, o, f, s, h, logits;
  std::vector<int64_t> tok;
};

// u (B, H) -> y (B, H) (before GELU); one pass over the state. The mode loop is outside the batch
// loop, so each row of coefficients is read once per step for the whole batch.
// tmp: 3 B H scratch floats.
void s4_step(S4Layer& L, const float* u, float* y, float* tmp, int64_t B, int64_t H) {
  SG_PROF(P_S4);
  const int64_t N = L.N;
  std::fill(y, y + B * H, 0.0f);
  if (L.form == S4_DIAGONAL) {
    for (int64_t n = 0; n < N; ++n) {
      const int64_t o = n * H;
      for (int64_t b = 0; b < B; ++b)
        s4_diag_row(L.xr.data() + (n * B + b) * H, L.xi.data() + (n * B + b) * H, L.ar + o, L.ai + o, L.cr + o, L.ci + o,
                    u + b * H, y + b * H, H);
    }
  } else {
    float *alpha = tmp, *beta = tmp + B * H, *snew = tmp + 2 * B * H;
    for (int64_t b = 0; b < B; ++b) {
      const float *s = L.s.data() + b * H, *ub = u + b * H;
      for (int64_t h = 0; h < H; ++h) {
        alpha[b * H + h] = L.c[h] * (2.0f * s[h] + L.kappa[h] * ub[h]);
        beta[b * H + h] = L.dt[h] * ub[h];
        snew[b * H + h] = 0.0f;
      }
    }
    for (int64_t n = 0; n < N; ++n) {
      const int64_t o = n * H;
      for (int64_t b = 0; b < B; ++b) {
        float *xr = L.xr.data() + (n * B + b) * H, *xi = L.xi.data() + (n * B + b) * H;
        const int64_t bh = b * H;
        if (L.form == S4_DPLR)
          s4_dplr_row<0>(xr, xi, L.ar + o, L.ai + o, L.cr + o, L.ci + o, L.pr + n, L.pi + n, L.br + n, L.bi + n,
                         alpha + bh, beta + bh, y + bh, snew + bh, H);
        else
          s4_dplr_row<1>(xr, xi, L.ar + o, L.ai + o, L.cr + o, L.ci + o, L.pr + o, L.pi + o, L.br + o, L.bi + o,
                         alpha + bh, beta + bh, y + bh, snew + bh, H);
      }
    }
    for (int64_t i = 0; i < B * H; ++i) L.s[i] = 2.0f * snew[i];
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) y[b * H + h] = 2.0f * y[b * H + h] + L.D[h] * u[b * H + h];
}

// The tier's residual blocks on T.cur = skip (B, H), plus the skip around them all.
void run_tier(Engine& E, Tier& T, const std::vector<float>& skip) {
  const int64_t B = E.B, H = T.H;
  std::copy(skip.begin(), skip.end(), T.cur.begin());
  float* x = T.cur.data();
  for (Block& blk : T.blocks) {
    if (blk.is_s4) {
      S4Layer& L = blk.s4;
      layer_norm(x, L.ln_w, L.ln_b, E.u.data(), B, H, E.eps);
      s4_step(L, E.u.data(), E.y.data(), E.s.data(), B, H);
      gelu_inplace(E.y.data(), B * H);
      linear(L.out, E.y.data(), E.o.data(), B);
      SG_PROF(P_ACT);
      const int64_t O = L.out.out;
      for (int64_t b = 0; b < B; ++b) {
        const float* ob = E.o.data() + b * O;
        float* xb = x + b * H;
        if (L.glu) {
          for (int64_t h = 0; h < H; ++h) xb[h] += ob[h] / (1.0f + std::exp(-ob[H + h]));
        } else {
          for (int64_t h = 0; h < H; ++h) xb[h] += ob[h];
        }
      }
    } else {
      FFLayer& L = blk.ff;
      layer_norm(x, L.ln_w, L.ln_b, E.u.data(), B, H, E.eps);
      linear(L.fc1, E.u.data(), E.f.data(), B);
      gelu_inplace(E.f.data(), B * L.fc1.out);
      linear(L.fc2, E.f.data(), E.o.data(), B);
      for (int64_t i = 0; i < B * H; ++i) x[i] += E.o[i];
    }
  }
  for (int64_t i = 0; i < B * H; ++i) x[i] += skip[i];
}

// Feed one token per row; leaves the next-token logits in E.logits (B, V).
void step(Engine& E, const int64_t* tok) {
  const int64_t B = E.B, n = static_cast<int64_t>(E.pools.size());
  int64_t depth = 0;  // number of down pools that emit at this step
  for (int64_t k = 0, period = 1; k < n; ++k) {
    period *= E.pools[k].p;
    if ((E.t + 1) % period) break;
    ++depth;
  }
  Tier& T0 = E.tiers[0];
  for (int64_t b = 0; b < B; ++b) std::memcpy(T0.in.data() + b * E.H0, E.emb + tok[b] * E.H0, E.H0 * sizeof(float));
  // Down: push this step's input of every running tier into its pool; full pools emit.
  for (int64_t k = 0; k <= std::min(depth, n - 1); ++k) {
    SG_PROF(P_POOL);
    Pool& P = E.pools[k];
    const float* in = E.tiers[k].in.data();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < P.H; ++h) P.dbuf[b * P.H * P.p + h * P.p + P.pos] = in[b * P.H + h];
    if (P.pos + 1 == P.p) linear(P.down, P.dbuf.data(), E.tiers[k + 1].in.data(), B);
  }
  const float* below = nullptr;
  if (depth == n) {
    Tier& C = E.tiers[n];
    run_tier(E, C, C.in);
    below = C.cur.data();
  }
  // Up: each running tier takes its pending up-pool output, plus its input, through its blocks.
  for (int64_t k = std::min(depth, n - 1); k >= 0; --k) {
    Pool& P = E.pools[k];
    Tier& T = E.tiers[k];
    {
      SG_PROF(P_POOL);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < P.H; ++h)
          T.skip[b * P.H + h] = P.ubuf[b * P.H * P.p + h * P.p + P.pos] + T.in[b * P.H + h];
    }
    if (++P.pos == P.p) {  // the queue is empty: the tier below ran this step, refill
      P.pos = 0;
      linear(P.up, below, P.ubuf.data(), B);
    }
    run_tier(E, T, T.skip);
    below = T.cur.data();
  }
  layer_norm(below, E.lnf_w, E.lnf_b, E.h.data(), B, E.H0, E.eps);
  linear(E.head, E.h.data(), E.logits.data(), B);
  ++E.t;
}

void reset(Engine& E) {
  E.t = 0;
  for (Pool& P : E.pools) {
    std::fill(P.dbuf.begin(), P.dbuf.end(), 0.0f);
    std::fill(P.ubuf.begin(), P.ubuf.end(), 0.0f);
    P.pos = 0;
  }
  for (Tier& T : E.tiers)
    for (Block& blk : T.blocks)
      if (blk.is_s4) {
        std::fill(blk.s4.xr.begin(), blk.s4.xr.end(), 0.0f);
        std::fill(blk.s4.xi.begin(), blk.s4.xi.end(), 0.0f);
        std::fill(blk.s4.s.begin(), blk.s4.s.end(), 0.0f);
      }
  std::fill(E.logits.begin(), E.logits.end(), 0.0f);
}


}  // namespace
