// Fused float32 step of an autoregressive SaShiMi on the CPU, with on-the-fly sampling.
//
// Built at first use by sashimi/fastgen/cpu.py (c++ -O3 -march=native -shared -fPIC) and called
// through ctypes: no dependency on PyTorch, a ~2 s build. The model arrives as one packed float32
// buffer plus an int64 "spec" listing layers and offsets into that buffer (written by
// sashimi/fastgen/cpu.py:_pack; the maths is documented in sashimi/fastgen/pack.py). The plain
// PyTorch version of the same step is sashimi/fastgen/torch_engine.py; the tests compare both with
// the reference 'dense' eager step.
//
// Files: fastgen_kernels.h (maths, linear layers, S4 rows, sampler), fastgen_model.h (the network
// and one step of it), this file (construction from the spec, and the C interface).
//
// Layouts (row-major): linear weights are panels of 64 output columns of W^T, each (in, 64) and
// contiguous, so y = b + x W^T streams every weight once with 64 accumulators in registers (no
// -ffast-math needed); S4 coefficients are (N, H) and states (N, B, H), real and imaginary parts
// apart, so every inner loop runs over H. Single-threaded: at batch 1 a step is a chain of small
// dependent layers; for batch > 1 the batch is looped inside each layer, so the weights are read
// once per step for the whole batch.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#if defined(_WIN32)
#define SG_EXPORT extern "C" __declspec(dllexport)
#else
#define SG_EXPORT extern "C" __attribute__((visibility("default")))
#endif

namespace {
std::string g_error;
}  // namespace

#include "fastgen_kernels.h"
#include "fastgen_model.h"

namespace {

constexpr int64_t kMagic = 0x53415348;  // "SASH"
constexpr int64_t kVersion = 1;

// ---- construction ------------------------------------------------------------------------
struct Reader {
  const int64_t* spec;
  int64_t n, i = 0;
  const float* w;
  int64_t w_len;
  bool ok = true;
  int64_t next() {
    if (i >= n) {
      ok = false;
      return 0;
    }
    return spec[i++];
  }
  const float* ptr(int64_t size) {  // an offset into the weights, checked
    const int64_t off = next();
    if (off < 0 || size < 0 || off + size > w_len) {
      ok = false;
      return nullptr;
    }
    return w + off;
  }
  Linear linear(int64_t in, int64_t out) {
    Linear L;
    L.in = in;
    L.out = out;
    L.wt = ptr(in * L.padded());
    L.b = ptr(L.padded());
    return L;
  }
};

Engine* build(const int64_t* spec, int64_t spec_len, const float* w, int64_t w_len, int64_t B) {
  Reader r{spec, spec_len, 0, w, w_len};
  if (r.next() != kMagic || r.next() != kVersion) {
    g_error = "bad spec header (magic/version mismatch: rebuild the extension)";
    return nullptr;
  }
  auto* E = new Engine();
  E->B = B;
  E->V = r.next();
  E->H0 = r.next();
  const int64_t n = r.next();
  const float* eps = r.ptr(1);
  E->emb = r.ptr(E->V * E->H0);
  E->lnf_w = r.ptr(E->H0);
  E->lnf_b = r.ptr(E->H0);
  E->head = r.linear(E->H0, E->V);
  if (!r.ok || n < 0 || n > 16 || E->V < 1 || E->H0 < 1 || B < 1) {
    g_error = "bad spec (header)";
    delete E;
    return nullptr;
  }
  E->eps = *eps;
  int64_t widest = std::max(E->V, E->H0);
  E->pools.resize(n);
  for (Pool& P : E->pools) {
    P.p = r.next();
    P.H = r.next();
    P.H_next = r.next();
    P.down = r.linear(P.H * P.p, P.H_next);
    P.up = r.linear(P.H_next, P.H * P.p);
    P.dbuf.assign(B * P.H * P.p, 0.0f);
    P.ubuf.assign(B * P.H * P.p, 0.0f);
    widest = std::max(widest, P.H * P.p);
  }
  E->tiers.resize(n + 1);
  for (int64_t k = 0; k <= n && r.ok; ++k) {
    Tier& T = E->tiers[k];
    T.H = r.next();
    const int64_t nb = r.next();
    const int64_t H = T.H;
    if (H < 1 || nb < 0 || nb > 4096 || (k < n && E->pools[k].H != H) || (k > 0 && E->pools[k - 1].H_next != H)) {
      r.ok = false;
      break;
    }
    T.in.assign(B * H, 0.0f);
    T.cur.assign(B * H, 0.0f);
    T.skip.assign(B * H, 0.0f);
    T.blocks.resize(nb);
    for (Block& blk : T.blocks) {
      const int64_t type = r.next();
      if (type == 0) {
        S4Layer& L = blk.s4;
        L.N = r.next();
        L.form = r.next();
        L.glu = r.next() != 0;
        const int64_t NH = L.N * H;
        if (L.N < 1 || L.form < S4_DIAGONAL || L.form > S4_DPLR_UNTIED) {
          r.ok = false;
          break;
        }
        L.ln_w = r.ptr(H);
        L.ln_b = r.ptr(H);
        L.ar = r.ptr(NH);
        L.ai = r.ptr(NH);
        L.cr = r.ptr(NH);
        L.ci = r.ptr(NH);
        if (L.form != S4_DIAGONAL) {
          const int64_t np = L.form == S4_DPLR ? L.N : NH;
          L.pr = r.ptr(np);
          L.pi = r.ptr(np);
          L.br = r.ptr(np);
          L.bi = r.ptr(np);
          L.dt = r.ptr(H);
          L.c = r.ptr(H);
          L.kappa = r.ptr(H);
        }
        L.D = r.ptr(H);
        const int64_t O = r.next();
        if (O != (L.glu ? 2 * H : H)) r.ok = false;
        L.out = r.linear(H, O);
        L.xr.assign(B * NH, 0.0f);
        L.xi.assign(B * NH, 0.0f);
        L.s.assign(B * H, 0.0f);
        widest = std::max(widest, L.out.padded());
      } else if (type == 1) {
        blk.is_s4 = false;
        FFLayer& L = blk.ff;
        const int64_t F = r.next();
        L.ln_w = r.ptr(H);
        L.ln_b = r.ptr(H);
        L.fc1 = r.linear(H, F);
        L.fc2 = r.linear(F, H);
        widest = std::max(widest, F);
      } else {
        r.ok = false;
      }
      if (!r.ok) break;
    }
    widest = std::max(widest, H);
  }
  if (!r.ok || r.next() != kMagic || E->tiers[0].H != E->H0) {
    g_error = "bad spec (layers)";
    delete E;
    return nullptr;
  }
  for (auto* v : {&E->u, &E->y, &E->o, &E->f, &E->h}) v->assign(B * widest, 0.0f);
  E->s.assign(3 * B * widest, 0.0f);
  E->logits.assign(B * E->V, 0.0f);
  E->tok.assign(B, 0);
  return E;
}

}  // namespace

// ---- C interface (ctypes) ----------------------------------------------------------------
SG_EXPORT int64_t sg_abi_version() { return kVersion; }

SG_EXPORT const char* sg_error() { return g_error.c_str(); }

SG_EXPORT void* sg_create(const int64_t* spec, int64_t spec_len, const float* weights, int64_t w_len, int64_t batch) {
  return build(spec, spec_len, weights, w_len, batch);
}

SG_EXPORT void sg_destroy(void* e) { delete static_cast<Engine*>(e); }

SG_EXPORT void sg_reset(void* e) { reset(*static_cast<Engine*>(e)); }

SG_EXPORT int64_t sg_time(void* e) { return static_cast<Engine*>(e)->t; }

// Teacher-forced steps over tokens (B, T) with row stride ld; logits_out (B, T, V) or null.
SG_EXPORT int sg_feed(void* e, const int64_t* tokens, int64_t ld, int64_t T, float* logits_out) {
  Engine& E = *static_cast<Engine*>(e);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t b = 0; b < E.B; ++b) {
      const int64_t tok = tokens[b * ld + t];
      if (tok < 0 || tok >= E.V) {
        g_error = "token out of range";
        return -1;
      }
      E.tok[b] = tok;
    }
    step(E, E.tok.data());
    if (logits_out)
      for (int64_t b = 0; b < E.B; ++b)
        std::memcpy(logits_out + (b * T + t) * E.V, E.logits.data() + b * E.V, E.V * sizeof(float));
  }
  return 0;
}

SG_EXPORT void sg_logits(void* e, float* out) {
  Engine& E = *static_cast<Engine*>(e);
  std::memcpy(out, E.logits.data(), E.logits.size() * sizeof(float));
}

// For t in [t0, t1): out[b, t] (row stride ld) = a draw from the current logits with the uniform
// uniforms[b, t - t0] ((B, t1 - t0), contiguous), fed back as the next input (the last one only
// if feed_last). Returns 0, or -1 (see sg_error) when the logits are not finite.
SG_EXPORT int sg_generate(void* e, int64_t* out, int64_t ld, int64_t t0, int64_t t1, const float* uniforms,
                          float temperature, int64_t top_k, float top_p, int feed_last) {
  Engine& E = *static_cast<Engine*>(e);
  const int64_t span = t1 - t0;
  SampleScratch S(E.V);
  for (int64_t t = t0; t < t1; ++t) {
    for (int64_t b = 0; b < E.B; ++b) {
      const int64_t tok = sample_row(S, E.V, E.logits.data() + b * E.V, temperature, top_k, top_p,
                                     uniforms[b * span + t - t0]);
      if (tok < 0) {
        g_error = "non-finite logits at step " + std::to_string(t);
        return -1;
      }
      E.tok[b] = out[b * ld + t] = tok;
    }
    if (t < t1 - 1 || feed_last) step(E, E.tok.data());
  }
  return 0;
}

// The sampler alone: out[r] = a draw from logits[r] (rows, V) with uniforms[r]. Returns 0, or -1.
SG_EXPORT int sg_sample(const float* logits, int64_t rows, int64_t V, const float* uniforms, float temperature,
                        int64_t top_k, float top_p, int64_t* out) {
  SampleScratch S(V);
  for (int64_t r = 0; r < rows; ++r) {
    out[r] = sample_row(S, V, logits + r * V, temperature, top_k, top_p, uniforms[r]);
    if (out[r] < 0) {
      g_error = "non-finite logits";
      return -1;
    }
  }
  return 0;
}

// Largest |state| over every S4 layer (a health check for long runs); NaN if any is NaN.
SG_EXPORT double sg_state_max_abs(void* e) {
  Engine& E = *static_cast<Engine*>(e);
  double m = 0.0;
  for (Tier& T : E.tiers)
    for (Block& blk : T.blocks)
      if (blk.is_s4)
        for (const std::vector<float>* v : {&blk.s4.xr, &blk.s4.xi, &blk.s4.s})
          for (float x : *v) {
            if (std::isnan(x)) return std::nan("");
            m = std::max(m, static_cast<double>(std::fabs(x)));
          }
  return m;
}

// Seconds spent per kind of work since the last call (only with -DSG_PROFILE; else zeros):
// s4 recurrence, linear layers, layer norms, activations, pooling copies, sampling.
SG_EXPORT int sg_profile(double* out, int n) {
  for (int i = 0; i < n && i < P_N; ++i) {
    out[i] = g_prof[i];
    g_prof[i] = 0.0;
  }
  return P_N;
}
