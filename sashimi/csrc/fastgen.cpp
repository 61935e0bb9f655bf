// Fused float32 step of an autoregressive SaShiMi on the CPU, with on-the-fly sampling, on one or
// more threads.
//
// Built at first use by sashimi/fastgen/cpu.py (c++ -O3 -march=native -shared -fPIC) and called
// through ctypes: no dependency on PyTorch, a few seconds to build. The model arrives as one packed
// float32 buffer plus an int64 "spec" listing layers and offsets into that buffer (written by
// sashimi/fastgen/cpu.py:_pack, which also lays the arrays out as below; the maths is documented
// in sashimi/fastgen/pack.py). The plain PyTorch version of the same step is
// sashimi/fastgen/torch_engine.py; the tests compare both with the reference 'dense' eager step.
//
// Files: fastgen_kernels.h (vector maths, layer norm, linear layers, S4 units), fastgen_sample.h
// (the sampler), fastgen_team.h (threads, barrier, layout controller), fastgen_model.h (the network and one step
// of it per thread), this file (construction from the spec, and the C interface).
//
// Layouts (row-major): channels come in units of 16 (dimensions padded with zeros to a multiple of
// 16); linear weights are panels of 16 output columns of W^T, each (in, 16) and contiguous, so
// y = b + x W^T streams every weight once per step for the whole batch with the results in
// registers; S4 coefficients are (unit, mode, 16-lane vectors) and states (unit, row, mode, 32).
// Threads split a step by rows and by units / panels (fastgen_team.h); every split computes the
// same bits.
//
// Errors: every entry point that does more than read a field catches C++ exceptions (the interpreter
// must never abort) and returns an error code, with the message in sg_error() and its kind in
// sg_error_kind() (2: out of memory); worker threads catch theirs too (fastgen_team.h).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>
#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif

#if defined(_WIN32)
#define SG_EXPORT extern "C" __declspec(dllexport)
#else
#define SG_EXPORT extern "C" __attribute__((visibility("default")))
#endif

namespace {
thread_local std::string g_error;  // per calling thread: engines may be driven from several
thread_local int g_error_kind = 0;  // 0 none, 1 invalid input / runtime error, 2 out of memory
}  // namespace

#include "fastgen_kernels.h"
#include "fastgen_model.h"

namespace {

constexpr int64_t kMagic = 0x53415348;  // "SASH"
constexpr int64_t kVersion = 5;

struct SpecError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---- construction --------------------------------------------------------------------------------
struct Reader {
  const int64_t* spec;
  int64_t n, i = 0;
  const float* w;
  int64_t w_len;
  int64_t next() {
    if (i >= n) throw SpecError("bad spec (truncated)");
    return spec[i++];
  }
  const float* ptr(int64_t floats) {  // an offset into the weights, checked
    const int64_t off = next();
    if (off < 0 || floats < 0 || off > w_len || floats > w_len - off) throw SpecError("bad spec (offset)");
    return w + off;
  }
  // wtype, in, panels, weights, bias
  Linear linear(int64_t in, int64_t panels) {
    Linear L;
    L.wtype = static_cast<int>(next());
    L.in = next();
    L.panels = next();
    if (L.in != in || L.panels != panels || L.wtype < W_F32 || L.wtype > W_F16)
      throw SpecError("bad spec (linear layer shape)");
    const int64_t count = in * panels * kUnit;
    L.w = ptr(L.wtype == W_F32 ? count : (count + 1) / 2);
    L.b = ptr(panels * kUnit);
    return L;
  }
};

int64_t checked_mul(int64_t a, int64_t b) {
  if (a < 0 || b < 0 || (b && a > std::numeric_limits<int64_t>::max() / b)) throw std::bad_alloc();
  return a * b;
}

Engine* build(const int64_t* spec, int64_t spec_len, const float* w, int64_t w_len, int64_t B, int threads) {
  Reader r{spec, spec_len, 0, w, w_len};
  if (r.next() != kMagic || r.next() != kVersion)
    throw SpecError("bad spec header (magic/version mismatch: rebuild the extension)");
  if (B < 1) throw SpecError("batch must be positive");
  std::unique_ptr<Engine> E(new Engine(std::max(1, threads)));
  E->B = B;
  E->V = r.next();
  E->H0 = r.next();
  const int64_t n = r.next();
  if (n < 0 || n > 16 || E->V < 1 || E->H0 < 1) throw SpecError("bad spec (header)");
  E->Vp = pad16(E->V);
  const int64_t H0p = pad16(E->H0);
  E->eps = *r.ptr(1);
  E->emb = r.ptr(checked_mul(E->V, H0p));
  E->lnf_w = r.ptr(H0p);
  E->lnf_b = r.ptr(H0p);
  const int64_t lnf_kind = r.next();  // 0: LayerNorm, 1: TransposedLN
  if (lnf_kind != 0 && lnf_kind != 1) throw SpecError("bad spec (final norm kind)");
  E->lnf_scalar = lnf_kind == 1;
  E->head = r.linear(H0p, E->Vp / kUnit);
  int64_t widest = H0p, widest_f = kUnit;
  E->pools.resize(n);
  std::vector<int64_t> H(n + 1);
  for (int64_t k = 0; k < n; ++k) {
    Pool& P = E->pools[k];
    P.p = r.next();
    H[k] = r.next();
    H[k + 1] = r.next();
    if (P.p < 1 || H[k] < 1 || H[k + 1] < 1 || (k == 0 && H[0] != E->H0)) throw SpecError("bad spec (pool)");
    const int64_t Hp = pad16(H[k]), Hnp = pad16(H[k + 1]);
    P.down = r.linear(checked_mul(P.p, Hp), Hnp / kUnit);
    P.up = r.linear(Hnp, checked_mul(P.p, Hp) / kUnit);
    P.dbuf.assign(checked_mul(B, checked_mul(P.p, Hp)), 0.0f);
    P.ubuf.assign(checked_mul(B, checked_mul(P.p, Hp)), 0.0f);
  }
  if (n == 0) H[0] = E->H0;
  E->periods.assign(n + 1, 1);
  for (int64_t k = 0; k < n; ++k) E->periods[k + 1] = checked_mul(E->periods[k], E->pools[k].p);
  E->tiers.resize(n + 1);
  for (int64_t k = 0; k <= n; ++k) {
    Tier& T = E->tiers[k];
    T.H = r.next();
    const int64_t nb = r.next();
    if (T.H != H[k] || nb < 0 || nb > 4096) throw SpecError("bad spec (tier)");
    T.Hp = pad16(T.H);
    T.U = T.Hp / kUnit;
    const int64_t Hp = T.Hp;
    widest = std::max(widest, Hp);
    T.in.assign(checked_mul(B, Hp), 0.0f);
    T.cur.assign(checked_mul(B, Hp), 0.0f);
    T.skip.assign(checked_mul(B, Hp), 0.0f);
    T.blocks.resize(nb);
    for (Block& blk : T.blocks) {
      const int64_t type = r.next();
      if (type == 0) {
        S4Layer& L = blk.s4;
        L.N = r.next();
        L.form = r.next();
        L.glu = r.next() != 0;
        if (L.N < 1 || L.N > (1 << 20) || L.form < S4_DIAGONAL || L.form > S4_DPLR_UNTIED) throw SpecError("bad spec (S4)");
        const int64_t K = L.form == S4_DIAGONAL ? 4 : (L.form == S4_DPLR ? 6 : 10);
        L.ln_w = r.ptr(Hp);
        L.ln_b = r.ptr(Hp);
        L.coef = r.ptr(checked_mul(T.U, checked_mul(L.N, K * kUnit)));
        if (L.form == S4_DPLR) L.pb = r.ptr(4 * L.N);
        if (L.form != S4_DIAGONAL) {
          L.dt = r.ptr(Hp);
          L.c = r.ptr(Hp);
          L.kappa = r.ptr(Hp);
        }
        L.D = r.ptr(Hp);
        L.out = r.linear(Hp, L.glu ? 2 * T.U : T.U);
        L.x.assign(checked_mul(checked_mul(T.U, B), checked_mul(L.N, 32)), 0.0f);
        L.s.assign(checked_mul(B, Hp), 0.0f);
      } else if (type == 1) {
        blk.is_s4 = false;
        FFLayer& L = blk.ff;
        L.F = r.next();
        if (L.F < 1) throw SpecError("bad spec (FF)");
        const int64_t Fp = pad16(L.F);
        L.ln_w = r.ptr(Hp);
        L.ln_b = r.ptr(Hp);
        L.fc1 = r.linear(Hp, Fp / kUnit);
        L.fc2 = r.linear(Fp, T.U);
        widest_f = std::max(widest_f, Fp);
      } else {
        throw SpecError("bad spec (block type)");
      }
      const int64_t cond = r.next();  // 1: a conditioned block (its norm's parameters per row)
      if (cond != 0 && cond != 1) throw SpecError("bad spec (block conditioning)");
      blk.cond = cond == 1;
      const int64_t norm_kind = r.next();  // 0: LayerNorm, 1: TransposedLN
      if ((norm_kind != 0 && norm_kind != 1) || (blk.cond && norm_kind == 1)) throw SpecError("bad spec (block norm kind)");
      blk.scalar_norm = norm_kind == 1;
      if (blk.cond) blk.rows.assign(checked_mul(B, 2 * Hp), 0.0f);
    }
  }
  if (r.next() != kMagic) throw SpecError("bad spec (trailer)");
  E->wu = widest;
  E->wf = widest_f;
  E->u.assign(checked_mul(B, widest), 0.0f);
  E->y.assign(checked_mul(B, widest), 0.0f);
  E->f.assign(checked_mul(B, widest_f), 0.0f);
  E->logits.assign(checked_mul(B, E->Vp), 0.0f);
  E->tok.assign(B, 0);
  const int T = E->team.T;
  for (int i = 0; i < T; ++i) E->scratch.emplace_back(new Scratch(B, widest, E->V));
  E->group_err.reset(new Slot[T]);
  int64_t units = 1;  // more threads per row than the widest tier has units would idle everywhere
  for (const Tier& t : E->tiers) units = std::max(units, t.U);
  E->ctrl.init(T, B, units, E->periods[n]);
  return E.release();
}

// Run f, turning any C++ exception into an error code: 0 ok, -1 error, -2 out of memory.
template <class F>
int guarded(F f) {
  try {
    g_error_kind = 0;
    return f();
  } catch (const std::bad_alloc&) {
    g_error = "out of memory";
    g_error_kind = 2;
  } catch (const std::exception& e) {
    g_error = e.what();
    g_error_kind = 1;
  } catch (...) {
    g_error = "unknown C++ exception";
    g_error_kind = 1;
  }
  return g_error_kind == 2 ? -2 : -1;
}

int fail(const std::string& message) {
  g_error = message;
  g_error_kind = 1;
  return -1;
}

}  // namespace

// ---- C interface (ctypes) ------------------------------------------------------------------------
SG_EXPORT int64_t sg_abi_version() { return kVersion; }

SG_EXPORT const char* sg_error() { return g_error.c_str(); }

SG_EXPORT int sg_error_kind() { return g_error_kind; }

// An engine for `batch` sequences on up to `threads` threads (the caller's included), or null
// (see sg_error / sg_error_kind).
SG_EXPORT void* sg_create(const int64_t* spec, int64_t spec_len, const float* weights, int64_t w_len, int64_t batch,
                          int64_t threads) {
  Engine* E = nullptr;
  guarded([&] {
    E = build(spec, spec_len, weights, w_len, batch, static_cast<int>(std::min<int64_t>(std::max<int64_t>(threads, 1), 256)));
    return 0;
  });
  return E;
}

SG_EXPORT void sg_destroy(void* e) {
  guarded([&] {
    delete static_cast<Engine*>(e);
    return 0;
  });
}

SG_EXPORT int sg_reset(void* e) {
  return guarded([&] {
    reset(*static_cast<Engine*>(e));
    return 0;
  });
}

SG_EXPORT int64_t sg_time(void* e) { return static_cast<Engine*>(e)->t; }

// The rows' condition from now on. cond: per-row vectors (B, H0), row-major, added to every input
// embedding (a class label's embedding), or null (nothing added). terms: for each conditioned
// block in spec order, its norm's per-row parameters (B, 2, Hp) (see Block::rows), terms_len
// floats in all; null only for a model without conditioned blocks. Kept across sg_reset.
SG_EXPORT int sg_set_condition(void* e, const float* cond, const float* terms, int64_t terms_len) {
  return guarded([&] {
    Engine& E = *static_cast<Engine*>(e);
    int64_t need = 0;
    for (const Tier& T : E.tiers)
      for (const Block& blk : T.blocks)
        if (blk.cond) need += E.B * 2 * T.Hp;
    if (terms_len != need || (need && terms == nullptr))
      return fail("condition terms: expected " + std::to_string(need) + " floats, got " + std::to_string(terms_len));
    const float* src = terms;
    for (Tier& T : E.tiers)
      for (Block& blk : T.blocks)
        if (blk.cond) {
          std::memcpy(blk.rows.data(), src, blk.rows.size() * sizeof(float));
          src += blk.rows.size();
        }
    if (cond == nullptr) {
      E.has_cond = false;
      return 0;
    }
    const int64_t H0p = pad16(E.H0);
    E.cond.assign(E.B * H0p, 0.0f);
    for (int64_t r = 0; r < E.B; ++r) std::memcpy(E.cond.data() + r * H0p, cond + r * E.H0, E.H0 * sizeof(float));
    E.has_cond = true;
    return 0;
  });
}

// Pin the layout to R row groups x C threads each (R = C = 0: choose by measuring). -1 if the
// layout is not one the engine can run.
SG_EXPORT int sg_set_layout(void* e, int64_t R, int64_t C) {
  return guarded([&] {
    Engine& E = *static_cast<Engine*>(e);
    if (R == 0 && C == 0) {
      E.ctrl.pinned = -1;
      return 0;
    }
    const int i = E.ctrl.find(static_cast<int>(R), static_cast<int>(C));
    if (i < 0) return fail("layout " + std::to_string(R) + "x" + std::to_string(C) + " is not available");
    E.ctrl.pinned = i;
    return 0;
  });
}

// Per layout: R, C, smoothed ns per step (0: not timed yet), steps run; returns the number of
// layouts (writes at most n of them). *current: the index of the layout that runs next.
SG_EXPORT int sg_layouts(void* e, double* out, int n, int* current) {
  int m = 0;
  const int rc = guarded([&] {
    Engine& E = *static_cast<Engine*>(e);
    m = static_cast<int>(E.ctrl.layouts.size());
    for (int i = 0; i < m && i < n; ++i) {
      const Layout& l = E.ctrl.layouts[i];
      out[4 * i] = l.R;
      out[4 * i + 1] = l.C;
      out[4 * i + 2] = l.ns;
      out[4 * i + 3] = static_cast<double>(l.steps);
    }
    if (current) *current = E.ctrl.layout();
    return 0;
  });
  return rc ? rc : m;
}

// Teacher-forced steps over tokens (B, T) with row stride ld; logits_out (B, T, V) or null.
SG_EXPORT int sg_feed(void* e, const int64_t* tokens, int64_t ld, int64_t T, float* logits_out) {
  return guarded([&] {
    Engine& E = *static_cast<Engine*>(e);
    for (int64_t b = 0; b < E.B; ++b)
      for (int64_t t = 0; t < T; ++t)
        if (tokens[b * ld + t] < 0 || tokens[b * ld + t] >= E.V) return fail("token out of range");
    if (T <= 0) return 0;
    Job& J = E.team.job;
    J = Job();
    J.kind = 0;
    J.t0 = E.t;
    J.steps = T;
    J.tokens = tokens;
    J.ld = ld;
    J.logits_out = logits_out;
    J.logits_steps = T;
    J.logits_t = E.t;
    run_steps(E);
    E.t += T;
    return 0;
  });
}

SG_EXPORT int sg_logits(void* e, float* out) {
  return guarded([&] {
    Engine& E = *static_cast<Engine*>(e);
    for (int64_t b = 0; b < E.B; ++b) std::memcpy(out + b * E.V, E.logits.data() + b * E.Vp, E.V * sizeof(float));
    return 0;
  });
}

// For i in [0, steps): out[b, i] (row stride ld) = a draw from the current logits with the
// uniform uniforms[b, i] (row stride uld), fed back as the next input (the last one only if
// feed_last). Returns 0, or -1 (see sg_error) when the logits are not finite.
SG_EXPORT int sg_generate(void* e, int64_t* out, int64_t ld, int64_t steps, const float* uniforms, int64_t uld,
                          float temperature, int64_t top_k, float top_p, int feed_last) {
  return guarded([&] {
    Engine& E = *static_cast<Engine*>(e);
    if (steps <= 0) return 0;
    Job& J = E.team.job;
    J = Job();
    J.kind = 1;
    J.t0 = E.t;
    J.steps = steps;
    J.out = out;
    J.ld = ld;
    J.uniforms = uniforms;
    J.uld = uld;
    J.temperature = temperature;
    J.top_k = top_k;
    J.top_p = top_p;
    J.feed_last = feed_last != 0;
    const int64_t start = E.t;
    const uint64_t err = run_steps(E);
    if (err) {
      const int64_t bad = static_cast<int64_t>(err) - 1;  // the step whose logits were sampled
      E.t = bad;
      return fail("non-finite logits at step " + std::to_string(bad - start));
    }
    E.t += feed_last ? steps : steps - 1;
    return 0;
  });
}

// The sampler alone: out[r] = a draw from logits[r] (rows, V) with uniforms[r]. Returns 0, or -1.
SG_EXPORT int sg_sample(const float* logits, int64_t rows, int64_t V, const float* uniforms, float temperature,
                        int64_t top_k, float top_p, int64_t* out) {
  return guarded([&] {
    SampleScratch S(V);
    for (int64_t r = 0; r < rows; ++r) {
      out[r] = sample_row(S, V, logits + r * V, temperature, top_k, top_p, uniforms[r]);
      if (out[r] < 0) return fail("non-finite logits");
    }
    return 0;
  });
}

// Largest |state| over every S4 layer (a health check for long runs); NaN if any is NaN.
SG_EXPORT double sg_state_max_abs(void* e) {
  double m = 0.0;
  guarded([&] {
    Engine& E = *static_cast<Engine*>(e);
    for (Tier& T : E.tiers)
      for (Block& blk : T.blocks)
        if (blk.is_s4)
          for (const Buf* v : {&blk.s4.x, &blk.s4.s})
            for (float x : *v) {
              if (std::isnan(x)) {
                m = std::nan("");
                return 0;
              }
              m = std::max(m, static_cast<double>(std::fabs(x)));
            }
    return 0;
  });
  return m;
}

// Seconds spent per kind of work on the calling thread since the last call (only with
// -DSG_PROFILE; else zeros): s4 recurrence, linear layers, layer norms, activations, pooling
// copies, sampling, waiting at barriers.
SG_EXPORT int sg_profile(double* out, int n) {
  for (int i = 0; i < n && i < P_N; ++i) {
    out[i] = t_prof[i];
    t_prof[i] = 0.0;
  }
  return P_N;
}
