// Kernels of the fused CPU step (included by fastgen.cpp, one translation unit): 8-lane vector
// maths, layer norm, blocked linear layers and the S4 recurrences of one 16-channel unit (the
// sampler is in fastgen_sample.h). Written with GCC/Clang vector extensions (8 floats = one AVX
// register; lowered to narrower registers elsewhere), so each element's arithmetic is fixed by
// the source: the same element gives the same bits whichever thread, tile shape or batch row
// computes it. That makes results independent of the thread layout (tested), which the adaptive
// layout needs: a seed must give the same samples whatever the machine's load was.
#pragma once

namespace {

// ---- optional profile (-DSG_PROFILE): wall time per kind of work, on the calling thread --------
enum Prof { P_S4, P_LINEAR, P_NORM, P_ACT, P_POOL, P_SAMPLE, P_SYNC, P_N };
thread_local double t_prof[P_N] = {0};
#ifdef SG_PROFILE
struct ProfScope {
  Prof k;
  std::chrono::steady_clock::time_point t0;
  explicit ProfScope(Prof k_) : k(k_), t0(std::chrono::steady_clock::now()) {}
  ~ProfScope() { t_prof[k] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); }
};
#define SG_PROF(k) ProfScope sg_prof_scope_(k)
#else
#define SG_PROF(k) (void)0
#endif

// ---- vectors -------------------------------------------------------------------------------
typedef float f8 __attribute__((vector_size(32)));
typedef int32_t i8v __attribute__((vector_size(32)));
constexpr int64_t kUnit = 16;  // channels per unit = output columns per weight panel

inline f8 load8(const float* p) {
  f8 v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline void store8(float* p, f8 v) { __builtin_memcpy(p, &v, sizeof v); }
inline f8 bc(float x) { return f8{x, x, x, x, x, x, x, x}; }
// Blend without the ternary operator on vectors (not portable between compilers).
inline f8 sel(i8v mask, f8 a, f8 b) {
  i8v ia, ib;
  __builtin_memcpy(&ia, &a, sizeof ia);
  __builtin_memcpy(&ib, &b, sizeof ib);
  const i8v r = (mask & ia) | (~mask & ib);
  f8 out;
  __builtin_memcpy(&out, &r, sizeof out);
  return out;
}
// x clamped to [lo, hi]; NaN stays NaN.
inline f8 clamp8(f8 x, float lo, float hi) { return sel(x > hi, bc(hi), sel(x < lo, bc(lo), x)); }

// exp for floats (Cephes expf: |relative error| < 2 ulp on [-87, 88]); 0 below, NaN stays NaN.
inline f8 exp8(f8 x) {
  const i8v under = x < -87.3365478515625f;
  x = clamp8(x, -87.3365478515625f, 88.3762626647949f);
  const f8 magic = bc(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  f8 n = (x * 1.44269504088896341f + magic) - magic;
  f8 r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  f8 p = bc(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const i8v e = (__builtin_convertvector(n, i8v) + 127) << 23;  // 2^n
  f8 scale;
  __builtin_memcpy(&scale, &e, sizeof scale);
  return sel(under, f8{}, p * scale);
}

// erf (the rational approximation used by Eigen and XLA: |error| < 5e-7 on all of R).
inline f8 erf8(f8 x) {
  x = clamp8(x, -4.0f, 4.0f);
  const f8 x2 = x * x;
  f8 p = bc(-2.72614225801306e-10f);
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 - 2.10102402082508e-06f;
  p = p * x2 - 5.69250639462346e-05f;
  p = p * x2 - 7.34990630326855e-04f;
  p = p * x2 - 2.95459980854025e-03f;
  p = p * x2 - 1.60960333262415e-02f;
  f8 q = bc(-1.45660718464996e-05f);
  q = q * x2 - 2.13374055278905e-04f;
  q = q * x2 - 1.68282697438203e-03f;
  q = q * x2 - 7.37332916720468e-03f;
  q = q * x2 - 1.42647390514189e-02f;
  return x * p / q;
}

inline f8 gelu8(f8 x) { return 0.5f * x * (1.0f + erf8(x * 0.70710678118654752f)); }  // exact GELU, as F.gelu

// ---- layer norm ----------------------------------------------------------------------------
// Statistics of one row over its H real channels (the padding lanes hold zeros and are skipped).
inline void norm_stats(const float* __restrict x, int64_t H, float eps, float& mean, float& rstd) {
  f8 acc = f8{};
  int64_t i = 0;
  for (; i + 8 <= H; i += 8) acc += load8(x + i);
  float s = 0.0f;
  for (; i < H; ++i) s += x[i];
  for (int j = 0; j < 8; ++j) s += acc[j];
  mean = s / static_cast<float>(H);
  acc = f8{};
  const f8 m = bc(mean);
  for (i = 0; i + 8 <= H; i += 8) {
    const f8 d = load8(x + i) - m;
    acc += d * d;
  }
  float v = 0.0f;
  for (; i < H; ++i) v += (x[i] - mean) * (x[i] - mean);
  for (int j = 0; j < 8; ++j) v += acc[j];
  rstd = 1.0f / std::sqrt(v / static_cast<float>(H) + eps);
}

// out[r, c0:c1] = LayerNorm(x[r]) over rows [r0, r1) and channel columns [c0, c1) (multiples of
// 8); rows have strides ldx and ldo. The statistics always use all H channels.
void layer_norm_to(const float* x, int64_t ldx, const float* w, const float* b, float* out, int64_t ldo, int64_t r0,
                   int64_t r1, int64_t H, int64_t c0, int64_t c1, float eps) {
  SG_PROF(P_NORM);
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * ldx;
    float* o = out + r * ldo;
    float mean, rstd;
    norm_stats(xr, H, eps, mean, rstd);
    const f8 m = bc(mean), s = bc(rstd);
    for (int64_t c = c0; c < c1; c += 8) store8(o + c, (load8(xr + c) - m) * s * load8(w + c) + load8(b + c));
  }
}

void layer_norm(const float* x, const float* w, const float* b, float* out, int64_t ld, int64_t r0, int64_t r1,
                int64_t H, int64_t c0, int64_t c1, float eps) {
  layer_norm_to(x, ld, w, b, out, ld, r0, r1, H, c0, c1, eps);
}

// The SaShiMi authors' two-scalar TransposedLN, s (x - mean + m) / std (biased std, no epsilon),
// as out = ((x - mean) w + b) / std with w = s and b = s m on the real channels and zeros on the
// padding lanes (which so stay zero); same rows, columns and strides as layer_norm_to.
void scalar_norm_to(const float* x, int64_t ldx, const float* w, const float* b, float* out, int64_t ldo, int64_t r0,
                    int64_t r1, int64_t H, int64_t c0, int64_t c1) {
  SG_PROF(P_NORM);
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * ldx;
    float* o = out + r * ldo;
    float mean, rstd;
    norm_stats(xr, H, 0.0f, mean, rstd);
    const f8 m = bc(mean), s = bc(rstd);
    for (int64_t c = c0; c < c1; c += 8) store8(o + c, ((load8(xr + c) - m) * load8(w + c) + load8(b + c)) * s);
  }
}

// Either norm: scalar (TransposedLN) or a LayerNorm with epsilon eps.
inline void any_norm_to(bool scalar, const float* x, int64_t ldx, const float* w, const float* b, float* out,
                        int64_t ldo, int64_t r0, int64_t r1, int64_t H, int64_t c0, int64_t c1, float eps) {
  if (scalar)
    scalar_norm_to(x, ldx, w, b, out, ldo, r0, r1, H, c0, c1);
  else
    layer_norm_to(x, ldx, w, b, out, ldo, r0, r1, H, c0, c1, eps);
}

// ---- linear layers -------------------------------------------------------------------------
// Weights as panels (ceil(out / 16), in, 16) of W^T: each panel holds 16 output columns, stored
// contiguously over the inputs, so a panel is one stream read once per step whatever the batch
// (rows are looped inside), with the 16-column blocks of 1..3 rows accumulating in registers.
// Storage: float32; float16 (IEEE half: 11 bits of mantissa); or bfloat16 (the high half of a
// float32: 8 bits of mantissa), each panel row of 16 then stored interleaved (c0, c8, c1, c9, ...,
// c7, c15) so that it widens in two operations. Products and sums are float32 in every case.
enum WType { W_F32 = 0, W_BF16 = 1, W_F16 = 2 };

struct Linear {
  const void* w = nullptr;   // panels: float, or uint16 (float16 / bfloat16)
  const float* b = nullptr;  // (panels * 16,) zero-padded
  int64_t in = 0, panels = 0;
  int wtype = W_F32;
};

// What happens to the 16 results of a panel: stored, stored after GELU, added to the output
// (a residual), or, for panel pairs (values, gates) of a GLU layer, out += value * sigmoid(gate).
enum Epi { E_STORE, E_GELU, E_ADD, E_GLU };

// 8 IEEE halves (finite) to floats without F16C: the magnitude bits shifted into a float's
// place, times 2^112, rebase the exponent (subnormal halves included); then the sign.
inline f8 half_to_float(const uint16_t* p) {
  typedef uint16_t u16x8 __attribute__((vector_size(16)));
  u16x8 h;
  __builtin_memcpy(&h, p, sizeof h);
  const i8v w = __builtin_convertvector(h, i8v);
  const i8v mag = (w & 0x7fff) << 13, sign = (w & 0x8000) << 16;
  f8 f;
  __builtin_memcpy(&f, &mag, sizeof f);
  f = f * 5.192296858534828e33f;  // 2^112
  i8v bits;
  __builtin_memcpy(&bits, &f, sizeof bits);
  bits |= sign;
  __builtin_memcpy(&f, &bits, sizeof f);
  return f;
}

template <int WT>
inline void load_w(const void* base, int64_t idx, f8& a, f8& b) {
  if (WT == W_F32) {
    const float* p = static_cast<const float*>(base) + idx;
    a = load8(p);
    b = load8(p + 8);
  } else if (WT == W_F16) {
    const uint16_t* p = static_cast<const uint16_t*>(base) + idx;
#if defined(__F16C__) && defined(__AVX__)
    a = f8(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    b = f8(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8))));
#else
    a = half_to_float(p);
    b = half_to_float(p + 8);
#endif
  } else {  // a panel row as 8 words (c_j | c_{j+8} << 16): one load, one shift, one mask
    i8v w;
    __builtin_memcpy(&w, static_cast<const uint16_t*>(base) + idx, sizeof w);
    const i8v lo = w << 16, hi = w & static_cast<int32_t>(0xFFFF0000u);
    __builtin_memcpy(&a, &lo, sizeof a);
    __builtin_memcpy(&b, &hi, sizeof b);
  }
}

// R rows x NP consecutive panels starting at panel p. out_col: the output column of panel p
// (for E_GLU: the channel of the value panel; NP even, panels alternate value / gate).
template <int WT, Epi EPI, int R, int NP>
inline void linear_tile(const Linear& L, const float* __restrict x, int64_t ldx, float* __restrict y, int64_t ldy,
                        int64_t p, int64_t out_col, const char* prefetch = nullptr) {
  f8 acc[R][NP][2];
  for (int q = 0; q < NP; ++q) {
    const f8 b0 = load8(L.b + (p + q) * kUnit), b1 = load8(L.b + (p + q) * kUnit + 8);
    for (int r = 0; r < R; ++r) {
      acc[r][q][0] = b0;
      acc[r][q][1] = b1;
    }
  }
  const int64_t stride = L.in * kUnit;  // one panel
  const int64_t base = p * stride;
  constexpr int64_t kRowBytes = WT == W_F32 ? 64 : 32;  // one input row of a panel
  for (int64_t i = 0; i < L.in; ++i) {
    if (prefetch && (kRowBytes == 64 || (i & 1) == 0))  // the next panels, into L2, a line per panel
      for (int q = 0; q < NP; ++q) __builtin_prefetch(prefetch + (q * L.in + i) * kRowBytes, 0, 2);
    f8 xi[R];
    for (int r = 0; r < R; ++r) xi[r] = bc(x[r * ldx + i]);
    for (int q = 0; q < NP; ++q) {
      f8 w0, w1;
      load_w<WT>(L.w, base + q * stride + i * kUnit, w0, w1);
      for (int r = 0; r < R; ++r) {
        acc[r][q][0] += xi[r] * w0;
        acc[r][q][1] += xi[r] * w1;
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    float* yr = y + r * ldy;
    if (EPI == E_GLU) {
      for (int q = 0; q < NP; q += 2) {
        float* o = yr + out_col + (q / 2) * kUnit;
        for (int h = 0; h < 2; ++h) {
          const f8 g = acc[r][q + 1][h];
          store8(o + 8 * h, load8(o + 8 * h) + acc[r][q][h] / (1.0f + exp8(-g)));
        }
      }
    } else {
      for (int q = 0; q < NP; ++q) {
        float* o = yr + out_col + q * kUnit;
        for (int h = 0; h < 2; ++h) {
          if (EPI == E_STORE) store8(o + 8 * h, acc[r][q][h]);
          if (EPI == E_GELU) store8(o + 8 * h, gelu8(acc[r][q][h]));
          if (EPI == E_ADD) store8(o + 8 * h, load8(o + 8 * h) + acc[r][q][h]);
        }
      }
    }
  }
}

// Panels [p0, p1) for rows [r0, r1) (pointers x, y at row 0). Output column of panel p:
// (p - p0) * 16 + c0 (for E_GLU: (p - p0) / 2 * 16 + c0). Each panel is read once for all rows.
template <int WT, Epi EPI>
void linear_rows_t(const Linear& L, const float* x, int64_t ldx, float* y, int64_t ldy, int64_t r0, int64_t r1,
                   int64_t p0, int64_t p1, int64_t c0) {
  constexpr int G = EPI == E_GLU ? 2 : 1;  // panels that belong together
  auto col = [&](int64_t p) { return c0 + (p - p0) / G * kUnit; };
  const int64_t rows = r1 - r0;
  x += r0 * ldx;
  y += r0 * ldy;
  int64_t p = p0;
  if (rows == 1) {  // a matrix-vector product: 8 accumulators over 4 panels hide the FMA latency
    for (; p + 4 <= p1; p += 4) linear_tile<WT, EPI, 1, 4>(L, x, ldx, y, ldy, p, col(p));
    for (; p + 2 <= p1; p += 2) linear_tile<WT, EPI, 1, 2>(L, x, ldx, y, ldy, p, col(p));
    if (G == 1)
      for (; p < p1; ++p) linear_tile<WT, EPI, 1, G>(L, x, ldx, y, ldy, p, col(p));
    return;
  }
  // Matrix-matrix: blocks of 3 rows x 2 panels (12 accumulators), all rows per panel pair; the
  // last 4 rows as 2 + 2 (a lone row has too few accumulators to hide the FMA latency).
  // While the first block of rows reads a panel pair, the next pair is prefetched: the pair is
  // then in L2 for the other blocks, and the next one arrives from L3 in the shadow of the work.
  constexpr int64_t kPanelBytes = WT == W_F32 ? 64 : 32;
  for (; p + 2 <= p1; p += 2) {
    int64_t r = 0;
    const char* next = p + 2 < p1 ? static_cast<const char*>(L.w) + (p + 2) * L.in * kPanelBytes : nullptr;
    if (rows - r >= 3 && rows - r != 4) {
      linear_tile<WT, EPI, 3, 2>(L, x, ldx, y, ldy, p, col(p), next);
      r += 3;
      next = nullptr;
    }
    for (; rows - r >= 3 && rows - r != 4; r += 3)
      linear_tile<WT, EPI, 3, 2>(L, x + r * ldx, ldx, y + r * ldy, ldy, p, col(p));
    for (; rows - r >= 2; r += 2, next = nullptr)
      linear_tile<WT, EPI, 2, 2>(L, x + r * ldx, ldx, y + r * ldy, ldy, p, col(p), next);
    if (rows - r == 1) linear_tile<WT, EPI, 1, 2>(L, x + r * ldx, ldx, y + r * ldy, ldy, p, col(p), next);
  }
  if (G == 1 && p < p1) {
    int64_t r = 0;
    for (; r + 6 <= rows; r += 6) linear_tile<WT, EPI, 6, G>(L, x + r * ldx, ldx, y + r * ldy, ldy, p, col(p));
    for (; r + 2 <= rows; r += 2) linear_tile<WT, EPI, 2, G>(L, x + r * ldx, ldx, y + r * ldy, ldy, p, col(p));
    for (; r < rows; ++r) linear_tile<WT, EPI, 1, G>(L, x + r * ldx, ldx, y + r * ldy, ldy, p, col(p));
  }
}

template <Epi EPI>
void linear_rows(const Linear& L, const float* x, int64_t ldx, float* y, int64_t ldy, int64_t r0, int64_t r1,
                 int64_t p0, int64_t p1, int64_t c0) {
  SG_PROF(P_LINEAR);
  if (r1 <= r0 || p1 <= p0) return;
  if (L.wtype == W_BF16)
    linear_rows_t<W_BF16, EPI>(L, x, ldx, y, ldy, r0, r1, p0, p1, c0);
  else if (L.wtype == W_F16)
    linear_rows_t<W_F16, EPI>(L, x, ldx, y, ldy, r0, r1, p0, p1, c0);
  else
    linear_rows_t<W_F32, EPI>(L, x, ldx, y, ldy, r0, r1, p0, p1, c0);
}

// ---- S4: one unit of 16 channels --------------------------------------------------------------
// Coefficients per unit and mode n, 16 lanes each (maths in sashimi/fastgen/pack.py):
//   dplr:     g (re, im), C (re, im), v = Q g (re, im)                -> 6 x 16 floats per mode
//   diagonal: d (re, im), r (re, im)                                  -> 4 x 16 floats per mode
// P and B of a tied dplr layer are per mode (pb: N x 4 floats Pr Pi Br Bi); an untied layer adds
// them per mode and channel (4 x 16 more floats per mode). State per unit and row: N modes x
// (re 16, im 16). alpha = c (2 s + kappa u) and beta = dt u per channel are computed once per row.
// Outputs: Re(C . x') (the caller doubles it) and s' = 2 Re(v . x'), the real and imaginary
// products summed apart (two FMAs a mode instead of three operations).
template <bool UNTIED>
inline void s4_dplr_unit(float* __restrict x, const float* __restrict coef, const float* __restrict pb,
                         const f8 alpha[2], const f8 beta[2], f8 y[2], f8 s[2], int64_t N) {
  constexpr int K = UNTIED ? 10 : 6;
  f8 yr[2] = {f8{}, f8{}}, yi[2] = {f8{}, f8{}}, sr[2] = {f8{}, f8{}}, si[2] = {f8{}, f8{}};
  for (int64_t n = 0; n < N; ++n, x += 32) {
    const float* c = coef + n * K * kUnit;
    for (int h = 0; h < 2; ++h) {
      const int o = 8 * h;
      f8 Pr, Pi, Br, Bi;
      if (UNTIED) {
        Pr = load8(c + 96 + o), Pi = load8(c + 112 + o), Br = load8(c + 128 + o), Bi = load8(c + 144 + o);
      } else {
        Pr = bc(pb[4 * n]), Pi = bc(pb[4 * n + 1]), Br = bc(pb[4 * n + 2]), Bi = bc(pb[4 * n + 3]);
      }
      const f8 a = load8(x + o), b = load8(x + 16 + o);
      const f8 gr = load8(c + o), gi = load8(c + 16 + o);
      const f8 tr = 2.0f * a + (Br * beta[h] - Pr * alpha[h]);
      const f8 ti = 2.0f * b + (Bi * beta[h] - Pi * alpha[h]);
      const f8 nr = gr * tr - (gi * ti + a);
      const f8 ni = gr * ti + (gi * tr - b);
      store8(x + o, nr);
      store8(x + 16 + o, ni);
      yr[h] += load8(c + 32 + o) * nr;
      yi[h] += load8(c + 48 + o) * ni;
      sr[h] += load8(c + 64 + o) * nr;
      si[h] += load8(c + 80 + o) * ni;
    }
  }
  for (int h = 0; h < 2; ++h) {
    y[h] = yr[h] - yi[h];
    s[h] = sr[h] - si[h];
  }
}

inline void s4_diag_unit(float* __restrict x, const float* __restrict coef, const f8 u[2], f8 y[2], int64_t N) {
  f8 yr[2] = {f8{}, f8{}}, yi[2] = {f8{}, f8{}};
  for (int64_t n = 0; n < N; ++n, x += 32) {
    const float* c = coef + n * 4 * kUnit;
    for (int h = 0; h < 2; ++h) {
      const int o = 8 * h;
      const f8 a = load8(x + o), b = load8(x + 16 + o);
      const f8 dr = load8(c + o), di = load8(c + 16 + o);
      const f8 nr = dr * a - (di * b - u[h]);
      const f8 ni = dr * b + di * a;
      store8(x + o, nr);
      store8(x + 16 + o, ni);
      yr[h] += load8(c + 32 + o) * nr;
      yi[h] += load8(c + 48 + o) * ni;
    }
  }
  for (int h = 0; h < 2; ++h) y[h] = yr[h] - yi[h];
}

}  // namespace
