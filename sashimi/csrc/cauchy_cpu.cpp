// Fused conjugate-symmetric Cauchy product on the CPU, forward and backward.
//
//   r[g, m, l] = sum_n  v[g, m, n] / (z[l] - w[g, n])  +  conj(v[g, m, n]) / (z[l] - conj(w[g, n]))
//
// Canonical shapes (see sashimi/ops/cauchy.py): v (G, M, N), z (L,), w (G, N), r (G, M, L), all
// complex, stored interleaved (re, im) and contiguous. The PyTorch backend materialises blocks of
// 1/(z - w) and multiplies them through memory; here each reciprocal is made in registers and used
// at once by the M rows of v, so the work is arithmetic, not memory traffic: each pass keeps its
// accumulators in vector registers (GCC/Clang vector extensions, W = 32 bytes of lanes) over
// chunks of W nodes, for up to kRows rows of v at a time.
//
// Backward (PyTorch's convention: grad = dLoss/d conj(r), and we return dLoss/d conj(x)), with
// A = 1 / (z - w), B = 1 / (z - conj w):
//   grad_v[g, m, n] = sum_l grad conj(A)  +  conj(sum_l grad conj(B))
//   grad_w[g, n]    = sum_m conj(v) (sum_l grad conj(A)^2  +  conj(sum_l grad conj(B)^2))
//
// Work is split over the groups g between threads (each thread owns whole groups: no reductions
// across threads); with fewer groups than threads the forward pass splits the nodes instead.
// Every entry point catches C++ exceptions and returns non-zero with a message (cc_error()).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <thread>
#include <vector>

namespace {

thread_local std::string g_error;

template <typename Fn>
void parallel_for(int64_t n, int threads, Fn fn) {
  threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n)));
  if (threads == 1) {
    fn(0, n);
    return;
  }
  std::vector<std::thread> pool;
  std::exception_ptr failure;
  std::vector<std::exception_ptr> failures(threads);
  const int64_t chunk = (n + threads - 1) / threads;
  for (int t = 1; t < threads; ++t) {
    const int64_t a = t * chunk, b = std::min(n, a + chunk);
    pool.emplace_back([&, t, a, b] {
      try {
        if (a < b) fn(a, b);
      } catch (...) {
        failures[t] = std::current_exception();
      }
    });
  }
  try {
    fn(0, std::min(n, chunk));
  } catch (...) {
    failures[0] = std::current_exception();
  }
  for (auto& th : pool) th.join();
  for (auto& f : failures)
    if (f) std::rethrow_exception(f);
}

// 32-byte aligned storage, so that planar rows can be read as whole vectors.
template <typename T>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() = default;
  template <typename U>
  AlignedAllocator(const AlignedAllocator<U>&) {}
  T* allocate(size_t n) {
    void* p = ::operator new(n * sizeof(T), std::align_val_t(32));
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(32)); }
  template <typename U>
  bool operator==(const AlignedAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const AlignedAllocator<U>&) const { return false; }
};

// GCC / Clang vector extensions: W lanes of T in 32 bytes (AVX2: one register; else two halves).
template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(32)));
  static constexpr int W = 32 / sizeof(T);
};

// Load lanes [l0, l0 + W) of a planar array, the lanes past L filled with `pad`.
template <typename T>
inline typename Vec<T>::type load_lanes(const T* a, int64_t l0, int64_t L, T pad) {
  typename Vec<T>::type out;
  for (int j = 0; j < Vec<T>::W; ++j) out[j] = l0 + j < L ? a[l0 + j] : pad;
  return out;
}

// The reciprocals of one pole w = (wr, wi) at W nodes: A = 1 / (z - w), B = 1 / (z - conj w), as
// the combinations both passes use: s = A + B, d = conj-ish differences (see the callers).
template <typename T>
struct Poles {
  typename Vec<T>::type sr, si, dr, di;  // re(A + B), im(A + B), re(A - B), im(B - A)
  typename Vec<T>::type ar, ai, br, bi;
};

template <typename T>
inline Poles<T> poles(typename Vec<T>::type zr, typename Vec<T>::type zi, T wr, T wi) {
  Poles<T> p;
  const auto x = zr - wr, y1 = zi - wi, y2 = zi + wi;
  const auto s1 = T(1) / (x * x + y1 * y1), s2 = T(1) / (x * x + y2 * y2);
  p.ar = x * s1;
  p.ai = -y1 * s1;
  p.br = x * s2;
  p.bi = -y2 * s2;
  p.sr = p.ar + p.br;
  p.si = p.ai + p.bi;
  p.dr = p.ar - p.br;
  p.di = p.bi - p.ai;
  return p;
}

// Forward for rows [m0, m0 + MC) of group g, all nodes: each W-node chunk keeps its 2 MC
// accumulators in registers while the N poles stream by.
//   v A + conj(v) B = vr (A + B) + i vi (A - B):  re += vr sr + vi di,  im += vr si + vi dr
template <typename T, int MC>
void forward_rows(const T* v, const T* zr, const T* zi, const T* w, T* out, int64_t g, int64_t m0, int64_t M,
                  int64_t N, int64_t L, int64_t c0, int64_t c1) {
  using V = typename Vec<T>::type;
  constexpr int W = Vec<T>::W;
  const T* wg = w + 2 * g * N;
  const T* vg = v + 2 * (g * M + m0) * N;
  for (int64_t c = c0; c < c1; ++c) {
    const int64_t l0 = c * W;
    const V vzr = load_lanes(zr, l0, L, zr[0]), vzi = load_lanes(zi, l0, L, zi[0]);
    V accr[MC], acci[MC];
    for (int m = 0; m < MC; ++m) accr[m] = acci[m] = V{} * T(0);
    for (int64_t n = 0; n < N; ++n) {
      const Poles<T> p = poles<T>(vzr, vzi, wg[2 * n], wg[2 * n + 1]);
      for (int m = 0; m < MC; ++m) {
        const T vr = vg[2 * (m * N + n)], vi = vg[2 * (m * N + n) + 1];
        accr[m] += vr * p.sr + vi * p.di;
        acci[m] += vr * p.si + vi * p.dr;
      }
    }
    for (int m = 0; m < MC; ++m) {
      T* o = out + 2 * ((g * M + m0 + m) * L);
      for (int j = 0; j < W && l0 + j < L; ++j) {
        o[2 * (l0 + j)] = accr[m][j];
        o[2 * (l0 + j) + 1] = acci[m][j];
      }
    }
  }
}

template <typename T, int MC>
void forward_dispatch(int mc, const T* v, const T* zr, const T* zi, const T* w, T* out, int64_t g, int64_t m0,
                      int64_t M, int64_t N, int64_t L, int64_t c0, int64_t c1) {
  if constexpr (MC > 1) {
    if (mc < MC) return forward_dispatch<T, MC - 1>(mc, v, zr, zi, w, out, g, m0, M, N, L, c0, c1);
  }
  forward_rows<T, MC>(v, zr, zi, w, out, g, m0, M, N, L, c0, c1);
}

constexpr int kRows = 8;      // rows of v per register-blocked pass
constexpr int64_t kChunks = 16;  // node chunks (of W) per forward task

template <typename T>
void forward(const T* v, const T* z, const T* w, T* out, int64_t G, int64_t M, int64_t N, int64_t L, int threads) {
  constexpr int W = Vec<T>::W;
  std::vector<T> zr(L), zi(L);
  for (int64_t l = 0; l < L; ++l) {
    zr[l] = z[2 * l];
    zi[l] = z[2 * l + 1];
  }
  const int64_t chunks = (L + W - 1) / W, per_group = (chunks + kChunks - 1) / kChunks;
  parallel_for(G * per_group, threads, [&](int64_t t0, int64_t t1) {
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t g = task / per_group, c0 = (task % per_group) * kChunks, c1 = std::min(chunks, c0 + kChunks);
      for (int64_t m0 = 0; m0 < M; m0 += kRows)
        forward_dispatch<T, kRows>(static_cast<int>(std::min<int64_t>(kRows, M - m0)), v, zr.data(), zi.data(), w,
                                   out, g, m0, M, N, L, c0, c1);
    }
  });
}

// Backward for rows [m0, m0 + MC) of group g. With gv = dLoss/d conj(r) (planar gr, gi):
//   grad_v[m, n] = sum_l gv conj(A) + conj(gv) B
//                = sum_l (gr sr + gi si) + i (gi dr + gr di)
//   grad_w[n]   += sum_l conj(A)^2 h + B^2 conj(h'),  h = sum_m conj(v) gv,  h' = sum_m v gv
// Per pole n the accumulators (2 MC + 2 vectors) stay in registers while the nodes stream by.
template <typename T, int MC>
void backward_rows(const T* gre, const T* gim, const T* v, const T* zr, const T* zi, const T* w, T* grad_v,
                   T* gw_acc, int64_t g, int64_t m0, int64_t M, int64_t N, int64_t L) {
  using V = typename Vec<T>::type;
  constexpr int W = Vec<T>::W;
  const T* wg = w + 2 * g * N;
  const T* vg = v + 2 * (g * M + m0) * N;
  const int64_t chunks = (L + W - 1) / W;
  for (int64_t n = 0; n < N; ++n) {
    const T wr = wg[2 * n], wi = wg[2 * n + 1];
    T vr[MC], vi[MC];
    for (int m = 0; m < MC; ++m) {
      vr[m] = vg[2 * (m * N + n)];
      vi[m] = vg[2 * (m * N + n) + 1];
    }
    V accr[MC], acci[MC];
    for (int m = 0; m < MC; ++m) accr[m] = acci[m] = V{} * T(0);
    V wacr = V{} * T(0), waci = wacr;
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t l0 = c * W;
      // nodes past L: gradient 0 (padded planar arrays), any finite node
      const V vzr = *reinterpret_cast<const V*>(zr + l0), vzi = *reinterpret_cast<const V*>(zi + l0);
      const Poles<T> p = poles<T>(vzr, vzi, wr, wi);
      V hr = V{} * T(0), hi = hr, h2r = hr, h2i = hr;
      for (int m = 0; m < MC; ++m) {
        const V gr = *reinterpret_cast<const V*>(gre + m * (chunks * W) + l0);
        const V gi = *reinterpret_cast<const V*>(gim + m * (chunks * W) + l0);
        accr[m] += gr * p.sr + gi * p.si;
        acci[m] += gi * p.dr + gr * p.di;
        hr += vr[m] * gr + vi[m] * gi;  // conj(v) gv
        hi += vr[m] * gi - vi[m] * gr;
        h2r += vr[m] * gr - vi[m] * gi;  // v gv
        h2i += vr[m] * gi + vi[m] * gr;
      }
      // conj(A)^2 = (ar^2 - ai^2) - i 2 ar ai;  B^2 = (br^2 - bi^2) + i 2 br bi
      const V a2r = p.ar * p.ar - p.ai * p.ai, a2i = -T(2) * p.ar * p.ai;
      const V b2r = p.br * p.br - p.bi * p.bi, b2i = T(2) * p.br * p.bi;
      wacr += a2r * hr - a2i * hi + b2r * h2r + b2i * h2i;  // + B^2 conj(h')
      waci += a2r * hi + a2i * hr + b2i * h2r - b2r * h2i;
    }
    for (int m = 0; m < MC; ++m) {
      T sr = 0, si = 0;
      for (int j = 0; j < W; ++j) {
        sr += accr[m][j];
        si += acci[m][j];
      }
      grad_v[2 * ((g * M + m0 + m) * N + n)] = sr;
      grad_v[2 * ((g * M + m0 + m) * N + n) + 1] = si;
    }
    for (int j = 0; j < W; ++j) {
      gw_acc[2 * n] += wacr[j];
      gw_acc[2 * n + 1] += waci[j];
    }
  }
}

template <typename T, int MC>
void backward_dispatch(int mc, const T* gre, const T* gim, const T* v, const T* zr, const T* zi, const T* w,
                       T* grad_v, T* gw_acc, int64_t g, int64_t m0, int64_t M, int64_t N, int64_t L) {
  if constexpr (MC > 1) {
    if (mc < MC) return backward_dispatch<T, MC - 1>(mc, gre, gim, v, zr, zi, w, grad_v, gw_acc, g, m0, M, N, L);
  }
  backward_rows<T, MC>(gre, gim, v, zr, zi, w, grad_v, gw_acc, g, m0, M, N, L);
}

template <typename T>
void backward(const T* grad, const T* v, const T* z, const T* w, T* grad_v, T* grad_w, int64_t G, int64_t M,
              int64_t N, int64_t L, int threads) {
  constexpr int W = Vec<T>::W;
  const int64_t padded = (L + W - 1) / W * W;
  // Planar, padded nodes (pad: a copy of node 0, finite) shared by all threads.
  std::vector<T, AlignedAllocator<T>> zr(padded, z[0]), zi(padded, z[1]);
  for (int64_t l = 0; l < L; ++l) {
    zr[l] = z[2 * l];
    zi[l] = z[2 * l + 1];
  }
  parallel_for(G, threads, [&](int64_t g0, int64_t g1) {
    // Per group: the gradient de-interleaved into planar, zero-padded rows.
    std::vector<T, AlignedAllocator<T>> gre(static_cast<size_t>(M) * padded), gim(static_cast<size_t>(M) * padded);
    std::vector<T> gw(2 * N);
    for (int64_t g = g0; g < g1; ++g) {
      std::fill(gre.begin(), gre.end(), T(0));
      std::fill(gim.begin(), gim.end(), T(0));
      for (int64_t m = 0; m < M; ++m) {
        const T* src = grad + 2 * (g * M + m) * L;
        for (int64_t l = 0; l < L; ++l) {
          gre[m * padded + l] = src[2 * l];
          gim[m * padded + l] = src[2 * l + 1];
        }
      }
      std::fill(gw.begin(), gw.end(), T(0));
      for (int64_t m0 = 0; m0 < M; m0 += kRows)
        backward_dispatch<T, kRows>(static_cast<int>(std::min<int64_t>(kRows, M - m0)), gre.data() + m0 * padded,
                                    gim.data() + m0 * padded, v, zr.data(), zi.data(), w, grad_v, gw.data(), g, m0, M,
                                    N, L);
      std::copy(gw.begin(), gw.end(), grad_w + 2 * g * N);
    }
  });
}

template <typename Fn>
int guarded(Fn fn) {
  try {
    fn();
    return 0;
  } catch (const std::bad_alloc&) {
    g_error = "out of memory";
    return 2;
  } catch (const std::exception& e) {
    g_error = e.what();
    return 1;
  } catch (...) {
    g_error = "unknown C++ exception";
    return 1;
  }
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) int64_t cc_abi_version() { return 1; }
__attribute__((visibility("default"))) const char* cc_error() { return g_error.c_str(); }

__attribute__((visibility("default"))) int cc_forward_f32(const float* v, const float* z, const float* w, float* out,
                                                          int64_t G, int64_t M, int64_t N, int64_t L, int threads) {
  return guarded([&] { forward<float>(v, z, w, out, G, M, N, L, threads); });
}
__attribute__((visibility("default"))) int cc_forward_f64(const double* v, const double* z, const double* w,
                                                          double* out, int64_t G, int64_t M, int64_t N, int64_t L,
                                                          int threads) {
  return guarded([&] { forward<double>(v, z, w, out, G, M, N, L, threads); });
}
__attribute__((visibility("default"))) int cc_backward_f32(const float* grad, const float* v, const float* z,
                                                           const float* w, float* grad_v, float* grad_w, int64_t G,
                                                           int64_t M, int64_t N, int64_t L, int threads) {
  return guarded([&] { backward<float>(grad, v, z, w, grad_v, grad_w, G, M, N, L, threads); });
}
__attribute__((visibility("default"))) int cc_backward_f64(const double* grad, const double* v, const double* z,
                                                           const double* w, double* grad_v, double* grad_w, int64_t G,
                                                           int64_t M, int64_t N, int64_t L, int threads) {
  return guarded([&] { backward<double>(grad, v, z, w, grad_v, grad_w, G, M, N, L, threads); });
}

}  // extern "C"
