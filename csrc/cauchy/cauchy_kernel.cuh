// CUDA kernels for the conjugate-symmetric Cauchy product (no PyTorch dependency).
//
//   r[g, m, l] = sum_n v[g,m,n] / (z[l] - w[g,n]) + conj(v[g,m,n]) / (z[l] - conj(w[g,n]))
//
// Canonical shapes, all contiguous: v (G, M, N), w (G, N), z (L,), r (G, M, L). The M rows
// of a group share the poles w[g], so one thread computes the two reciprocals of a
// (node, pole) pair once and uses them for kRows rows.
//
// Backward (PyTorch's convention: the incoming gradient is dLoss/d conj(r)), with
// A = 1/(z - w), B = 1/(z - conj w):
//   grad_v[g,m,n]      = sum_l gr conj(A) + conj(sum_l gr conj(B))
//   grad_w_rows[g,m,n] = conj(v) (sum_l gr conj(A)^2 + conj(sum_l gr conj(B)^2))
// grad_w is grad_w_rows summed over m (done by the caller; deterministic).
#pragma once

#ifndef SASHIMI_CAUCHY_EMULATE  // (a CPU emulation of the CUDA built-ins can stand in for tests)
#include <cuda_runtime.h>
#endif

#include <cmath>
#include <cstdint>

namespace sashimi_cauchy {

// Layout-compatible with c10::complex<T> and std::complex<T>.
template <typename T>
struct alignas(2 * sizeof(T)) Complex {
  T re, im;
};

template <typename T>
__host__ __device__ inline Complex<T> operator+(Complex<T> a, Complex<T> b) { return {a.re + b.re, a.im + b.im}; }
template <typename T>
__host__ __device__ inline Complex<T> operator-(Complex<T> a, Complex<T> b) { return {a.re - b.re, a.im - b.im}; }
template <typename T>
__host__ __device__ inline Complex<T> operator*(Complex<T> a, Complex<T> b) {
  return {a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re};
}
template <typename T>
__host__ __device__ inline Complex<T> conj(Complex<T> a) { return {a.re, -a.im}; }

// 1 / d by Smith's method: scales by the larger component, so |d|^2 never overflows
// (the S4 nodes reach ~1e16 near Nyquist, whose square of a square would in float32).
template <typename T>
__host__ __device__ inline Complex<T> reciprocal(Complex<T> d) {
  if (fabs(d.re) >= fabs(d.im)) {
    const T r = d.im / d.re, inv = T(1) / (d.re + d.im * r);
    return {inv, -r * inv};
  }
  const T r = d.re / d.im, inv = T(1) / (d.im + d.re * r);
  return {r * inv, -inv};
}

constexpr int kThreads = 256;    // threads per block (a multiple of 32)
constexpr int kRows = 4;         // rows of v per block sharing each pair of reciprocals
constexpr int kTileN = 64;       // poles staged in shared memory at a time (any N works)
constexpr int kMaxGridY = 65535;

// Forward: grid (ceil(L / kThreads), min(G * ceil(M / kRows), kMaxGridY)); one thread per node.
template <typename T>
__global__ void __launch_bounds__(kThreads) cauchy_forward_kernel(
    const Complex<T>* __restrict__ v, const Complex<T>* __restrict__ z, const Complex<T>* __restrict__ w,
    Complex<T>* __restrict__ out, int64_t G, int64_t M, int64_t N, int64_t L) {
  __shared__ Complex<T> s_w[kTileN];
  __shared__ Complex<T> s_v[kRows][kTileN];
  const int64_t l = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t m_tiles = (M + kRows - 1) / kRows;
  const Complex<T> zl = l < L ? z[l] : Complex<T>{T(0), T(0)};
  for (int64_t gm = blockIdx.y; gm < G * m_tiles; gm += gridDim.y) {
    const int64_t g = gm / m_tiles, m0 = (gm % m_tiles) * kRows;
    const int rows = static_cast<int>(M - m0 < kRows ? M - m0 : kRows);
    Complex<T> acc[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[r] = {T(0), T(0)};
    for (int64_t n0 = 0; n0 < N; n0 += kTileN) {
      const int tn = static_cast<int>(N - n0 < kTileN ? N - n0 : kTileN);
      __syncthreads();  // the previous tile (or group) is consumed
      for (int i = threadIdx.x; i < kRows * kTileN; i += blockDim.x) {
        const int r = i / kTileN, n = i % kTileN;
        if (n < tn) {
          if (r == 0) s_w[n] = w[g * N + n0 + n];
          if (r < rows) s_v[r][n] = v[(g * M + m0 + r) * N + n0 + n];
        }
      }
      __syncthreads();
      if (l < L) {
        for (int n = 0; n < tn; ++n) {
          const Complex<T> wn = s_w[n];
          const Complex<T> a = reciprocal(zl - wn), b = reciprocal(zl - conj(wn));
          // v a + conj(v) b = Re(v) (a + b) + i Im(v) (a - b)
          const Complex<T> s = a + b, d = a - b;
#pragma unroll
          for (int r = 0; r < kRows; ++r) {
            if (r < rows) {
              const Complex<T> vr = s_v[r][n];
              acc[r].re += vr.re * s.re - vr.im * d.im;
              acc[r].im += vr.re * s.im + vr.im * d.re;
            }
          }
        }
      }
    }
    if (l < L) {
      for (int r = 0; r < rows; ++r) out[(g * M + m0 + r) * L + l] = acc[r];
    }
  }
}

template <typename T>
__device__ inline T warp_sum(T x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_down_sync(0xffffffffu, x, offset);
  return x;
}

// Backward: grid (N, min(G * ceil(M / kRows), kMaxGridY)); a block reduces over all nodes
// for one pole n and up to kRows rows.
template <typename T>
__global__ void __launch_bounds__(kThreads) cauchy_backward_kernel(
    const Complex<T>* __restrict__ grad, const Complex<T>* __restrict__ v, const Complex<T>* __restrict__ z,
    const Complex<T>* __restrict__ w, Complex<T>* __restrict__ grad_v, Complex<T>* __restrict__ grad_w_rows,
    int64_t G, int64_t M, int64_t N, int64_t L) {
  constexpr int kSums = 4 * kRows * 2;  // P1, P2, Q1, Q2 per row, real and imaginary parts
  constexpr int kWarps = kThreads / 32;
  static_assert(kSums <= 32, "the final reduction uses one warp");
  __shared__ T s_red[kWarps][kSums];
  const int64_t n = blockIdx.x;
  const int64_t m_tiles = (M + kRows - 1) / kRows;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int64_t gm = blockIdx.y; gm < G * m_tiles; gm += gridDim.y) {
    const int64_t g = gm / m_tiles, m0 = (gm % m_tiles) * kRows;
    const int rows = static_cast<int>(M - m0 < kRows ? M - m0 : kRows);
    const Complex<T> wn = w[g * N + n];
    T sums[kSums];
#pragma unroll
    for (int k = 0; k < kSums; ++k) sums[k] = T(0);
    for (int64_t l = threadIdx.x; l < L; l += blockDim.x) {
      const Complex<T> zl = z[l];
      const Complex<T> a = conj(reciprocal(zl - wn)), b = conj(reciprocal(zl - conj(wn)));
      const Complex<T> a2 = a * a, b2 = b * b;
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (r < rows) {
          const Complex<T> gr = grad[(g * M + m0 + r) * L + l];
          const Complex<T> terms[4] = {gr * a, gr * b, gr * a2, gr * b2};
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            sums[(r * 4 + k) * 2] += terms[k].re;
            sums[(r * 4 + k) * 2 + 1] += terms[k].im;
          }
        }
      }
    }
#pragma unroll
    for (int k = 0; k < kSums; ++k) sums[k] = warp_sum(sums[k]);
    __syncthreads();  // s_red of the previous group is consumed
    if (lane == 0) {
#pragma unroll
      for (int k = 0; k < kSums; ++k) s_red[warp][k] = sums[k];
    }
    __syncthreads();
    if (warp == 0) {
      T total = T(0);
      if (lane < kSums) {
        for (int i = 0; i < kWarps; ++i) total += s_red[i][lane];
      }
      __syncwarp();
      if (lane < kSums) s_red[0][lane] = total;
      __syncwarp();
      if (lane < rows) {
        const int r = lane;
        const T* s = s_red[0] + r * 8;
        const Complex<T> p1{s[0], s[1]}, p2{s[2], s[3]}, q1{s[4], s[5]}, q2{s[6], s[7]};
        const int64_t idx = (g * M + m0 + r) * N + n;
        grad_v[idx] = p1 + conj(p2);
        grad_w_rows[idx] = conj(v[idx]) * (q1 + conj(q2));
      }
    }
  }
}

inline unsigned int grid_y(int64_t G, int64_t M) {
  const int64_t tiles = G * ((M + kRows - 1) / kRows);
  return static_cast<unsigned int>(tiles < kMaxGridY ? tiles : kMaxGridY);
}

#ifdef __CUDACC__
// Launchers; the caller checks shapes and skips empty problems (G * M * L == 0).
template <typename T>
void launch_forward(const Complex<T>* v, const Complex<T>* z, const Complex<T>* w, Complex<T>* out,
                    int64_t G, int64_t M, int64_t N, int64_t L, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned int>((L + kThreads - 1) / kThreads), grid_y(G, M));
  cauchy_forward_kernel<T><<<grid, kThreads, 0, stream>>>(v, z, w, out, G, M, N, L);
}

template <typename T>
void launch_backward(const Complex<T>* grad, const Complex<T>* v, const Complex<T>* z, const Complex<T>* w,
                     Complex<T>* grad_v, Complex<T>* grad_w_rows, int64_t G, int64_t M, int64_t N, int64_t L,
                     cudaStream_t stream) {
  if (N == 0) return;
  const dim3 grid(static_cast<unsigned int>(N), grid_y(G, M));
  cauchy_backward_kernel<T><<<grid, kThreads, 0, stream>>>(grad, v, z, w, grad_v, grad_w_rows, G, M, N, L);
}

#endif  // __CUDACC__

}  // namespace sashimi_cauchy
