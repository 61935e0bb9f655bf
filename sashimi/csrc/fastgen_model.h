// The model of the fused CPU step (included by fastgen.cpp): layers, tiers, pools, and one step of
// the whole network as run by each thread of a layout (see fastgen_team.h): a thread handles its
// rows and, within them, its share of every layer's channel units (16 channels) or weight panels.
#pragma once

#include "fastgen_kernels.h"
#include "fastgen_sample.h"
#include "fastgen_team.h"

namespace {

template <class T>
struct AlignedAlloc {  // 64-byte aligned: vectors and cache lines never straddle two owners
  using value_type = T;
  AlignedAlloc() = default;
  template <class U>
  AlignedAlloc(const AlignedAlloc<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <class U>
  bool operator==(const AlignedAlloc<U>&) const { return true; }
  template <class U>
  bool operator!=(const AlignedAlloc<U>&) const { return false; }
};
using Buf = std::vector<float, AlignedAlloc<float>>;

inline int64_t pad16(int64_t n) { return (n + kUnit - 1) / kUnit * kUnit; }

// ---- the model ---------------------------------------------------------------------------------
// S4 step, one of three forms (maths in sashimi/fastgen/pack.py), over the N stored modes of each
// channel; the real output 2 Re(.) accounts for the implicit conjugate partners.
//   diagonal:   x' = d x + u;                                   y = 2 Re(r . x') + D u
//   dplr:       x' = g (2 x + B dt u - P c (2 s + kappa u)) - x;  y = 2 Re(C . x') + D u,
//               s' = 2 Re(Q g . x')   (kept in the state: the rank-1 read for the next step; Q = conj(P)
//               in the Hurwitz form, the free low-rank factor otherwise: only the packed v = Q g sees it)
// P and B are per mode (tied state, 'dplr') or per mode and channel ('dplr_untied').
enum S4Form { S4_DIAGONAL = 0, S4_DPLR = 1, S4_DPLR_UNTIED = 2 };

struct S4Layer {
  int64_t N = 0, form = S4_DPLR;
  bool glu = true;
  const float *ln_w = nullptr, *ln_b = nullptr;
  const float* coef = nullptr;  // (units, N, K, 16), K = 4 (diagonal), 6 (dplr), 10 (dplr_untied)
  const float* pb = nullptr;    // (N, 4): Pr Pi Br Bi (dplr only)
  const float *dt = nullptr, *c = nullptr, *kappa = nullptr, *D = nullptr;  // (Hp,)
  Linear out;  // GLU: panel pairs (values, gates) per unit; else one panel per unit
  Buf x, s;    // state (units, B, N, 32) (re 16, im 16 per mode); rank-1 read (B, Hp)
};

struct FFLayer {
  const float *ln_w = nullptr, *ln_b = nullptr;
  Linear fc1, fc2;
  int64_t F = 0;
};

struct Block {
  bool is_s4 = true;
  S4Layer s4;
  FFLayer ff;
  // A conditioned block (per-block label conditioning): its norm's affine parameters per row,
  // (B, 2, Hp) = (w (1 + scale), b (1 + scale) + shift) for the row's condition (set by
  // sg_set_condition): the norm's output z becomes z (1 + scale) + shift in one pass.
  bool cond = false;
  Buf rows;
  bool scalar_norm = false;  // the pre-norm is the authors' TransposedLN (scalar_norm_to), not a LayerNorm
};

// The block's norm of x over rows [r0, r1) and columns [c0, c1): shared parameters, or each row's own.
inline void block_norm(const Block& blk, const float* ln_w, const float* ln_b, const float* x, int64_t ldx, float* out,
                       int64_t ldo, int64_t r0, int64_t r1, int64_t H, int64_t Hp, int64_t c0, int64_t c1, float eps) {
  if (!blk.cond) {
    any_norm_to(blk.scalar_norm, x, ldx, ln_w, ln_b, out, ldo, r0, r1, H, c0, c1, eps);
    return;
  }
  for (int64_t r = r0; r < r1; ++r) {
    const float* wb = blk.rows.data() + r * 2 * Hp;
    layer_norm_to(x, ldx, wb, wb + Hp, out, ldo, r, r + 1, H, c0, c1, eps);
  }
}

struct Tier {
  int64_t H = 0, Hp = 0, U = 0;  // channels, padded to 16, units
  std::vector<Block> blocks;
  Buf in, cur, skip;  // (B, Hp): the tier's input, its residual stream, the skip around it
};

// Pool k between tiers k (H) and k + 1. Its queues hold p slots of (B, Hp), slot-major: the down
// queue collects tier k's inputs until p are there; the up queue hands tier k one slot per step.
struct Pool {
  int64_t p = 0;
  Linear down, up;
  Buf dbuf, ubuf;  // (B, p * Hp): element (r, s * Hp + h)
};

struct Scratch {  // per thread
  Buf ln;                  // (B, widest Hp): layer norms a thread needs whole
  std::vector<int64_t> tok;  // (B,)
  SampleScratch sample;
  Scratch(int64_t B, int64_t width, int64_t V) : ln(B * width, 0.0f), tok(B, 0), sample(V) {}
};

struct Engine {
  int64_t B = 1, V = 0, Vp = 0, H0 = 0, t = 0;
  float eps = 1e-5f;
  const float *emb = nullptr, *lnf_w = nullptr, *lnf_b = nullptr;  // emb (V, H0p)
  bool lnf_scalar = false;  // the final norm is a TransposedLN (scalar_norm_to)
  Linear head;
  std::vector<Tier> tiers;         // outermost first; the center last
  std::vector<Pool> pools;         // between tiers[k] and tiers[k + 1]
  std::vector<int64_t> periods;    // tier k runs every periods[k] steps; periods[n] = the full period
  // Scratch rows have a fixed stride: row groups run unsynchronised, possibly in different tiers.
  Buf u, y, f, logits;             // (B, wu), (B, wu), (B, wf), (B, Vp)
  int64_t wu = 0, wf = 0;          // widest padded channels / FF width
  std::vector<int64_t> tok;        // (B,) tokens shared by a group's threads
  Buf cond;                        // (B, H0p) added to each row's input embedding (class conditioning)
  bool has_cond = false;
  std::vector<std::unique_ptr<Scratch>> scratch;
  std::unique_ptr<Slot[]> group_err;  // per row group: 1 + the step whose logits were not finite
  Team team;
  Controller ctrl;
  explicit Engine(int threads) : team(threads) {}
};

// A thread's share of a job.
struct Ctx {
  int c = 0, C = 1, g = 0;  // rank in its row group of C threads; the group
  int64_t r0 = 0, r1 = 1;   // its rows
  Barrier bar;
  Scratch* sc = nullptr;
  void part(int64_t n, int64_t& a, int64_t& b) const {  // its share of n units or panels
    a = n * c / C;
    b = n * (c + 1) / C;
  }
};

inline int depth_at(const Engine& E, int64_t t) {  // down pools that emit when token t is fed
  int d = 0;
  for (size_t k = 0; k < E.pools.size(); ++k) {
    if ((t + 1) % E.periods[k + 1]) break;
    ++d;
  }
  return d;
}

// The slot of pool k used at step t (tier k runs at t): tier k's run count modulo p.
inline int64_t slot_at(const Engine& E, size_t k, int64_t t) {
  return ((t + 1) / E.periods[k] - 1) % E.pools[k].p;
}

// u (rows, Hp) -> GELU(S4(u)) into y, for the thread's units and rows.
void s4_rows(S4Layer& L, const float* u, float* y, int64_t ld, int64_t Hp, int64_t B, int64_t r0, int64_t r1,
             int64_t a, int64_t b) {
  SG_PROF(P_S4);
  const int64_t N = L.N;
  const int64_t K = L.form == S4_DIAGONAL ? 4 : (L.form == S4_DPLR ? 6 : 10);
  for (int64_t unit = a; unit < b; ++unit) {
    const float* coef = L.coef + unit * N * K * kUnit;
    const int64_t h0 = unit * kUnit;
    for (int64_t r = r0; r < r1; ++r) {
      float* x = L.x.data() + (unit * B + r) * N * 32;
      const float* ur = u + r * ld + h0;
      const f8 uv[2] = {load8(ur), load8(ur + 8)};
      f8 acc[2] = {f8{}, f8{}};
      if (L.form == S4_DIAGONAL) {
        s4_diag_unit(x, coef, uv, acc, N);
      } else {
        float* s = L.s.data() + r * Hp + h0;
        f8 alpha[2], beta[2], snew[2] = {f8{}, f8{}};
        for (int h = 0; h < 2; ++h) {
          const int64_t o = h0 + 8 * h;
          alpha[h] = load8(L.c + o) * (2.0f * load8(s + 8 * h) + load8(L.kappa + o) * uv[h]);
          beta[h] = load8(L.dt + o) * uv[h];
        }
        if (L.form == S4_DPLR)
          s4_dplr_unit<false>(x, coef, L.pb, alpha, beta, acc, snew, N);
        else
          s4_dplr_unit<true>(x, coef, nullptr, alpha, beta, acc, snew, N);
        for (int h = 0; h < 2; ++h) store8(s + 8 * h, 2.0f * snew[h]);
      }
      float* yr = y + r * ld + h0;
      for (int h = 0; h < 2; ++h) store8(yr + 8 * h, gelu8(2.0f * acc[h] + load8(L.D + h0 + 8 * h) * uv[h]));
    }
  }
}

inline void copy_units(const float* src, int64_t lds, float* dst, int64_t ldd, int64_t r0, int64_t r1, int64_t a,
                       int64_t b) {
  for (int64_t r = r0; r < r1; ++r)
    std::memcpy(dst + r * ldd + a * kUnit, src + r * lds + a * kUnit, (b - a) * kUnit * sizeof(float));
}

// The tier's residual blocks on cur = skip, plus the skip around them all.
void run_tier(Engine& E, Ctx& X, Tier& T, const Buf& skip) {
  const int64_t Hp = T.Hp, r0 = X.r0, r1 = X.r1;
  int64_t a, b;
  X.part(T.U, a, b);
  float* cur = T.cur.data();
  copy_units(skip.data(), Hp, cur, Hp, r0, r1, a, b);
  for (Block& blk : T.blocks) {
    X.bar.wait();  // the residual stream is complete: every thread needs all of it
    if (blk.is_s4) {
      S4Layer& L = blk.s4;
      block_norm(blk, L.ln_w, L.ln_b, cur, Hp, E.u.data(), E.wu, r0, r1, T.H, Hp, a * kUnit, b * kUnit, E.eps);
      s4_rows(L, E.u.data(), E.y.data(), E.wu, Hp, E.B, r0, r1, a, b);
      X.bar.wait();  // the output linear reads all channels
      if (L.glu)
        linear_rows<E_GLU>(L.out, E.y.data(), E.wu, cur, Hp, r0, r1, 2 * a, 2 * b, a * kUnit);
      else
        linear_rows<E_ADD>(L.out, E.y.data(), E.wu, cur, Hp, r0, r1, a, b, a * kUnit);
    } else {
      FFLayer& L = blk.ff;
      float* h = X.sc->ln.data();  // each thread normalises the whole row: fc1 reads all of it
      block_norm(blk, L.ln_w, L.ln_b, cur, Hp, h, Hp, r0, r1, T.H, Hp, 0, Hp, E.eps);
      int64_t f0, f1;
      X.part(L.fc1.panels, f0, f1);
      linear_rows<E_GELU>(L.fc1, h, Hp, E.f.data(), E.wf, r0, r1, f0, f1, f0 * kUnit);
      X.bar.wait();  // fc2 reads all hidden units
      linear_rows<E_ADD>(L.fc2, E.f.data(), E.wf, cur, Hp, r0, r1, a, b, a * kUnit);
    }
  }
  SG_PROF(P_ACT);
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t i = a * kUnit; i < b * kUnit; i += 8) store8(cur + r * Hp + i, load8(cur + r * Hp + i) + load8(skip.data() + r * Hp + i));
}

// Feed token tok[r] for the thread's rows at step t; leaves the logits of its panels in E.logits.
void step(Engine& E, Ctx& X, int64_t t, const int64_t* tok) {
  const int64_t r0 = X.r0, r1 = X.r1;
  const size_t n = E.pools.size();
  const int depth = depth_at(E, t);
  int64_t a, b;
  Tier& T0 = E.tiers[0];
  X.part(T0.U, a, b);
  for (int64_t r = r0; r < r1; ++r)
    std::memcpy(T0.in.data() + r * T0.Hp + a * kUnit, E.emb + tok[r] * T0.Hp + a * kUnit, (b - a) * kUnit * 4);
  if (E.has_cond)
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t i = a * kUnit; i < b * kUnit; i += 8)
        store8(T0.in.data() + r * T0.Hp + i, load8(T0.in.data() + r * T0.Hp + i) + load8(E.cond.data() + r * T0.Hp + i));
  // Down: push this step's input of every running tier into its pool; full pools emit.
  for (size_t k = 0; k <= std::min<size_t>(depth, n ? n - 1 : 0) && k < n; ++k) {
    Pool& P = E.pools[k];
    Tier &T = E.tiers[k], &Tn = E.tiers[k + 1];
    const int64_t pos = slot_at(E, k, t), ldq = P.p * T.Hp;
    X.part(T.U, a, b);
    {
      SG_PROF(P_POOL);
      copy_units(T.in.data(), T.Hp, P.dbuf.data() + pos * T.Hp, ldq, r0, r1, a, b);
    }
    if (pos + 1 == P.p) {
      X.bar.wait();  // the down linear reads every channel of every slot
      X.part(Tn.U, a, b);
      linear_rows<E_STORE>(P.down, P.dbuf.data(), ldq, Tn.in.data(), Tn.Hp, r0, r1, a, b, a * kUnit);
    }
  }
  const Tier* below = nullptr;
  if (static_cast<size_t>(depth) == n) {
    Tier& Cn = E.tiers[n];
    run_tier(E, X, Cn, Cn.in);
    below = &Cn;
  }
  // Up: each running tier takes its pending up-pool output, plus its input, through its blocks.
  for (int64_t k = std::min<int64_t>(depth, static_cast<int64_t>(n) - 1); k >= 0; --k) {
    Pool& P = E.pools[k];
    Tier& T = E.tiers[k];
    const int64_t pos = slot_at(E, k, t), ldq = P.p * T.Hp;
    X.part(T.U, a, b);
    {
      SG_PROF(P_POOL);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t i = a * kUnit; i < b * kUnit; i += 8)
          store8(T.skip.data() + r * T.Hp + i, load8(P.ubuf.data() + r * ldq + pos * T.Hp + i) + load8(T.in.data() + r * T.Hp + i));
    }
    if (pos + 1 == P.p) {  // the tier below ran this step: refill the queue (the thread's own units
      X.bar.wait();        // in every slot: it read its slot above, the others read theirs)
      for (int64_t s = 0; s < P.p; ++s)
        linear_rows<E_STORE>(P.up, below->cur.data(), below->Hp, P.ubuf.data(), ldq, r0, r1, s * T.U + a,
                             s * T.U + b, s * T.Hp + a * kUnit);
    }
    run_tier(E, X, T, T.skip);
    below = &T;
  }
  X.bar.wait();  // the final norm reads every channel
  float* h = X.sc->ln.data();
  any_norm_to(E.lnf_scalar, below->cur.data(), T0.Hp, E.lnf_w, E.lnf_b, h, T0.Hp, r0, r1, E.H0, 0, T0.Hp, E.eps);
  X.part(E.head.panels, a, b);
  linear_rows<E_STORE>(E.head, h, T0.Hp, E.logits.data(), E.Vp, r0, r1, a, b, a * kUnit);
}

// The thread `tid`'s part of the current job (E.team.job).
void run_thread_job(Engine& E, int tid) {
  const Job& J = E.team.job;
  Ctx X;
  X.g = tid / J.C;
  X.c = tid % J.C;
  X.C = J.C;
  X.r0 = E.B * X.g / J.R;
  X.r1 = E.B * (X.g + 1) / J.R;
  X.bar.team = &E.team;
  X.bar.first = X.g * J.C;
  X.bar.count = J.C;
  X.bar.me = tid;
  X.bar.epoch = E.team.job_id << 32;
  X.sc = E.scratch[tid].get();
  int64_t* own = X.sc->tok.data();
  const int64_t rows = X.r1 - X.r0;
  if (J.kind == 0) {  // feed
    for (int64_t i = 0; i < J.steps; ++i) {
      // The last step's final norm read all of tier 0's residual stream, which this step's first
      // writes overwrite (generation has this barrier before sampling).
      if (i) X.bar.wait();
      for (int64_t r = X.r0; r < X.r1; ++r) own[r] = J.tokens[r * J.ld + i];
      step(E, X, J.t0 + i, own);
      const int64_t j = J.t0 + i - J.logits_t;
      if (J.logits_out && j >= 0 && j < J.logits_steps) {
        int64_t a, b;
        X.part(E.head.panels, a, b);
        const int64_t c1 = std::min(b * kUnit, E.V), c0 = std::min(a * kUnit, c1);
        for (int64_t r = X.r0; r < X.r1; ++r)
          std::memcpy(J.logits_out + (r * J.logits_steps + j) * E.V + c0, E.logits.data() + r * E.Vp + c0,
                      (c1 - c0) * sizeof(float));
      }
    }
    return;
  }
  // generate: sample from the current logits, record, feed back
  const bool alone = rows == 1 || X.C == 1;  // no split of the sampling: each thread draws its rows
  int64_t* tok = alone ? own : E.tok.data();
  std::atomic<uint64_t>& err = E.group_err[X.g].v;
  for (int64_t i = 0; i < J.steps; ++i) {
    X.bar.wait();  // the logits are complete
    int64_t s0 = X.r0, s1 = X.r1;
    if (!alone) {
      s0 = X.r0 + rows * X.c / X.C;
      s1 = X.r0 + rows * (X.c + 1) / X.C;
    }
    for (int64_t r = s0; r < s1; ++r) {
      const int64_t v = sample_row(X.sc->sample, E.V, E.logits.data() + r * E.Vp, J.temperature, J.top_k, J.top_p,
                                   J.uniforms[r * J.uld + i]);
      if (v < 0) {
        uint64_t expected = 0;
        err.compare_exchange_strong(expected, static_cast<uint64_t>(J.t0 + i + 1));
        break;
      }
      tok[r] = v;
      if (alone ? X.c == 0 : true) J.out[r * J.ld + i] = v;
    }
    if (!alone) X.bar.wait();  // the group's tokens are complete
    if (err.load(std::memory_order_acquire)) return;  // the whole group stops at the same step
    if (i < J.steps - 1 || J.feed_last) step(E, X, J.t0 + i, tok);
  }
}

void reset(Engine& E) {
  E.t = 0;
  for (Pool& P : E.pools) {
    std::fill(P.dbuf.begin(), P.dbuf.end(), 0.0f);
    std::fill(P.ubuf.begin(), P.ubuf.end(), 0.0f);
  }
  for (Tier& T : E.tiers)
    for (Block& blk : T.blocks)
      if (blk.is_s4) {
        std::fill(blk.s4.x.begin(), blk.s4.x.end(), 0.0f);
        std::fill(blk.s4.s.begin(), blk.s4.s.end(), 0.0f);
      }
  std::fill(E.logits.begin(), E.logits.end(), 0.0f);
}

// Run a job over E.team.job.steps steps, as many jobs as needed, each in the layout the controller
// picks. Returns 0, or 1 + the first step whose logits were not finite.
uint64_t run_steps(Engine& E) {
  Job& J = E.team.job;
  const int64_t total = J.steps, t_start = J.t0;
  const int64_t* tokens = J.tokens;
  int64_t* out = J.out;
  const float* uniforms = J.uniforms;
  const bool feed_last = J.feed_last;
  int64_t done = 0;
  while (done < total) {
    int li = E.ctrl.layout();
    if (E.ctrl.layouts[li].R * E.ctrl.layouts[li].C > 1 && !E.team.ensure(E)) {
      E.ctrl.pinned = 0;  // no threads to be had: single-threaded from now on
      li = 0;
    }
    const int64_t n = std::min(total - done, std::max<int64_t>(1, E.ctrl.budget()));
    J.R = E.ctrl.layouts[li].R;
    J.C = E.ctrl.layouts[li].C;
    J.t0 = t_start + done;
    J.steps = n;
    if (tokens) J.tokens = tokens + done;
    if (out) J.out = out + done;
    if (uniforms) J.uniforms = uniforms + done;
    J.feed_last = feed_last || done + n < total;
    for (int g = 0; g < J.R; ++g) E.group_err[g].v.store(0);
    const double t0 = now_s();
    E.team.run(E);
    E.ctrl.record(n, now_s() - t0);
    uint64_t err = 0;
    for (int g = 0; g < J.R; ++g) {
      const uint64_t e = E.group_err[g].v.load();
      if (e && (!err || e < err)) err = e;
    }
    if (err) return err;
    done += n;
  }
  return 0;
}

}  // namespace
