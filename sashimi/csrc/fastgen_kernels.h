// Kernels of the fused CPU step (included by fastgen.cpp, one translation unit): elementwise maths,
// layer norm, linear layers, one row of the S4 recurrences, and the sampler. Plain C++17 loops
// written so that g++/clang++ -O3 -march=native vectorise them (restrict pointers, fixed-size
// accumulator blocks, no libm calls in hot loops).
#pragma once

namespace {

// ---- optional profile (-DSG_PROFILE): wall time per kind of work ---------------------------
enum Prof { P_S4, P_LINEAR, P_NORM, P_ACT, P_POOL, P_SAMPLE, P_N };
double g_prof[P_N] = {0};
#ifdef SG_PROFILE
struct ProfScope {
  Prof k;
  std::chrono::steady_clock::time_point t0;
  explicit ProfScope(Prof k_) : k(k_), t0(std::chrono::steady_clock::now()) {}
  ~ProfScope() { g_prof[k] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); }
};
#define SG_PROF(k) ProfScope sg_prof_scope_(k)
#else
#define SG_PROF(k) (void)0
#endif

// ---- elementwise maths -------------------------------------------------------------------
// erf for float: the rational approximation used by Eigen and XLA (|error| < 5e-7 on all of R);
// plain arithmetic, so the compiler vectorises it (a libm call would not be).
inline float erf_fast(float x) {
  x = x < -4.0f ? -4.0f : (x > 4.0f ? 4.0f : x);
  const float x2 = x * x;
  float p = -2.72614225801306e-10f;
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 - 2.10102402082508e-06f;
  p = p * x2 - 5.69250639462346e-05f;
  p = p * x2 - 7.34990630326855e-04f;
  p = p * x2 - 2.95459980854025e-03f;
  p = p * x2 - 1.60960333262415e-02f;
  float q = -1.45660718464996e-05f;
  q = q * x2 - 2.13374055278905e-04f;
  q = q * x2 - 1.68282697438203e-03f;
  q = q * x2 - 7.37332916720468e-03f;
  q = q * x2 - 1.42647390514189e-02f;
  return x * p / q;
}

void gelu_inplace(float* __restrict x, int64_t n) {  // exact (erf) GELU, as F.gelu
  SG_PROF(P_ACT);
  for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + erf_fast(x[i] * 0.70710678118654752f));
}

// Sum with 16 independent lanes (vectorises without reassociation flags).
inline float lane_sum(const float* __restrict x, int64_t n) {
  float acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += x[i + j];
  float s = 0.0f;
  for (; i < n; ++i) s += x[i];
  for (int j = 0; j < 16; ++j) s += acc[j];
  return s;
}

void layer_norm(const float* __restrict x, const float* __restrict w, const float* __restrict b,
                float* __restrict out, int64_t rows, int64_t H, float eps) {
  SG_PROF(P_NORM);
  for (int64_t r = 0; r < rows; ++r, x += H, out += H) {
    const float mean = lane_sum(x, H) / static_cast<float>(H);
    for (int64_t i = 0; i < H; ++i) out[i] = x[i] - mean;
    float acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= H; i += 16)
      for (int j = 0; j < 16; ++j) acc[j] += out[i + j] * out[i + j];
    float var = 0.0f;
    for (; i < H; ++i) var += out[i] * out[i];
    for (int j = 0; j < 16; ++j) var += acc[j];
    const float rstd = 1.0f / std::sqrt(var / static_cast<float>(H) + eps);
    for (int64_t k = 0; k < H; ++k) out[k] = out[k] * rstd * w[k] + b[k];
  }
}

// ---- linear layers -----------------------------------------------------------------------
constexpr int64_t kPanel = 64;  // output columns per weight panel

struct Linear {
  const float* wt = nullptr;  // panels (ceil(out / 64), in, 64): W^T in column blocks, zero-padded
  const float* b = nullptr;   // (ceil(out / 64) * 64,) zero-padded
  int64_t in = 0, out = 0;
  int64_t padded() const { return (out + kPanel - 1) / kPanel * kPanel; }
};

// y[r, 64 p : 64 p + 64] = b + x[r] W^T for BB rows at once: the panel streams through once and
// the BB x 64 accumulators stay in registers.
template <int BB>
inline void linear_panel(const Linear& L, const float* __restrict x, float* __restrict y, int64_t p) {
  float acc[BB][kPanel];
  const float* __restrict bias = L.b + p * kPanel;
  for (int r = 0; r < BB; ++r)
    for (int j = 0; j < kPanel; ++j) acc[r][j] = bias[j];
  const float* __restrict w = L.wt + p * L.in * kPanel;
  for (int64_t i = 0; i < L.in; ++i, w += kPanel) {
    for (int r = 0; r < BB; ++r) {
      const float xi = x[r * L.in + i];
      for (int j = 0; j < kPanel; ++j) acc[r][j] += xi * w[j];
    }
  }
  const int64_t valid = std::min(kPanel, L.out - p * kPanel);
  for (int r = 0; r < BB; ++r)
    for (int64_t j = 0; j < valid; ++j) y[r * L.out + p * kPanel + j] = acc[r][j];
}

void linear(const Linear& L, const float* x, float* y, int64_t rows) {
  SG_PROF(P_LINEAR);
  const int64_t panels = L.padded() / kPanel;
  for (int64_t p = 0; p < panels; ++p) {  // rows inside: each panel is read once per step
    int64_t r = 0;
    for (; r + 2 <= rows; r += 2) linear_panel<2>(L, x + r * L.in, y + r * L.out, p);
    for (; r < rows; ++r) linear_panel<1>(L, x + r * L.in, y + r * L.out, p);
  }
}


// ---- S4 rows ------------------------------------------------------------------------------
// One row of modes (fixed n, all h) of the 'dplr' step; P and B are either scalars for this row
// (PS = 0) or rows over h (PS = 1). All pointers restrict: the loop vectorises over h.
template <int PS>
inline void s4_dplr_row(float* __restrict xr, float* __restrict xi, const float* __restrict gr,
                        const float* __restrict gi, const float* __restrict cr, const float* __restrict ci,
                        const float* __restrict pr, const float* __restrict pi, const float* __restrict br,
                        const float* __restrict bi, const float* __restrict alpha, const float* __restrict beta,
                        float* __restrict y, float* __restrict s, int64_t H) {
  for (int64_t h = 0; h < H; ++h) {
    const float Pr = pr[PS * h], Pi = pi[PS * h], Br = br[PS * h], Bi = bi[PS * h];
    const float a = xr[h], b = xi[h];
    const float tr = 2.0f * a + Br * beta[h] - Pr * alpha[h];
    const float ti = 2.0f * b + Bi * beta[h] - Pi * alpha[h];
    const float nr = gr[h] * tr - gi[h] * ti - a;
    const float ni = gr[h] * ti + gi[h] * tr - b;
    xr[h] = nr;
    xi[h] = ni;
    y[h] += cr[h] * nr - ci[h] * ni;
    s[h] += Pr * (gr[h] * nr - gi[h] * ni) + Pi * (gr[h] * ni + gi[h] * nr);
  }
}

inline void s4_diag_row(float* __restrict xr, float* __restrict xi, const float* __restrict dr,
                        const float* __restrict di, const float* __restrict rr, const float* __restrict ri,
                        const float* __restrict u, float* __restrict y, int64_t H) {
  for (int64_t h = 0; h < H; ++h) {
    const float a = xr[h], b = xi[h];
    const float nr = dr[h] * a - di[h] * b + u[h];
    const float ni = dr[h] * b + di[h] * a;
    xr[h] = nr;
    xi[h] = ni;
    y[h] += rr[h] * nr - ri[h] * ni;
  }
}

// ---- sampling -----------------------------------------------------------------------------
struct SampleScratch {
  std::vector<float> z, tmp;
  std::vector<int32_t> order;
  explicit SampleScratch(int64_t V) : z(V), tmp(V), order(V) {}
};

// One draw from softmax(logits / temperature), restricted by top-k and nucleus, by inverse CDF
// with the uniform u in [0, 1): the distribution of sashimi.sampling.sample_logits.
int64_t sample_row(SampleScratch& S, int64_t V, const float* logits, float temperature, int64_t top_k, float top_p,
                   float u) {
  SG_PROF(P_SAMPLE);
  float* z = S.z.data();
  for (int64_t i = 0; i < V; ++i) z[i] = logits[i] / temperature;
  if (top_k > 0 && top_k < V) {  // keep every token >= the k-th largest (ties kept, as masked_fill(<))
    float* t = S.tmp.data();
    std::copy(z, z + V, t);
    std::nth_element(t, t + (top_k - 1), t + V, [](float a, float b) { return a > b; });
    const float kth = t[top_k - 1];
    for (int64_t i = 0; i < V; ++i)
      if (z[i] < kth) z[i] = -std::numeric_limits<float>::infinity();
  }
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < V; ++i) m = std::max(m, z[i]);
  if (!std::isfinite(m)) return -1;
  double total = 0.0;
  for (int64_t i = 0; i < V; ++i) total += (z[i] = std::exp(z[i] - m));
  if (!std::isfinite(total) || !(total > 0.0)) return -1;
  const float inv = static_cast<float>(1.0 / total);
  for (int64_t i = 0; i < V; ++i) z[i] *= inv;  // probabilities
  int32_t* order = S.order.data();
  for (int64_t i = 0; i < V; ++i) order[i] = static_cast<int32_t>(i);
  int64_t count = V;
  if (top_p < 1.0f) {  // drop a token when the more likely ones before it already reach top_p
    std::stable_sort(order, order + V, [z](int32_t a, int32_t b) { return z[a] > z[b]; });
    float cum = 0.0f;
    count = 0;
    for (int64_t i = 0; i < V; ++i) {
      cum += z[order[i]];
      if (cum - z[order[i]] >= top_p) break;
      ++count;
    }
  }
  double kept = 0.0;
  for (int64_t i = 0; i < count; ++i) kept += z[order[i]];
  const double target = static_cast<double>(u) * kept;
  double cum = 0.0;
  int64_t last = -1;
  for (int64_t i = 0; i < count; ++i) {
    const float p = z[order[i]];
    if (p <= 0.0f) continue;
    cum += p;
    last = order[i];
    if (cum > target) return order[i];
  }
  return last;  // rounding: target reached the total
}


}  // namespace
