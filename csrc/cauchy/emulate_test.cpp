// CPU emulation of the CUDA kernels in cauchy_kernel.cuh, for checking their indexing,
// tiling, shared memory and reductions on a machine without a GPU. Each CUDA thread is a
// std::thread; blocks run one after another; __syncthreads / __syncwarp are std::barrier and
// __shfl_down_sync goes through a per-warp buffer. Slow (minutes), not part of the test suite:
//   g++ -std=c++20 -O1 -pthread -x c++ csrc/cauchy/emulate_test.cpp -o /tmp/cauchy_emulate && /tmp/cauchy_emulate
// On a GPU, standalone_test.cu runs the real kernels the same way.
#include <barrier>
#include <thread>
#include <vector>
#include <cmath>
#include <cstdio>
#include <random>
#include <algorithm>
#include <cstdint>
struct dim3 { unsigned x = 1, y = 1, z = 1; dim3() {} dim3(unsigned a, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
std::barrier<>* g_block_barrier;
std::vector<std::barrier<>*> g_warp_barriers;
double g_slots[64][32];
#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __launch_bounds__(x)
#define __restrict__
inline void __syncthreads() { g_block_barrier->arrive_and_wait(); }
inline void __syncwarp() { g_warp_barriers[threadIdx.x / 32]->arrive_and_wait(); }
template <typename T> T __shfl_down_sync(unsigned, T x, int offset) {
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  g_slots[warp][lane] = (double)x;
  __syncwarp();
  T y = lane + offset < 32 ? (T)g_slots[warp][lane + offset] : x;
  __syncwarp();
  return y;
}
#define SASHIMI_CAUCHY_EMULATE
#include "cauchy_kernel.cuh"
using namespace sashimi_cauchy;

template <typename F> void launch(dim3 grid, int threads, F f) {
  gridDim = grid; blockDim = dim3(threads);
  for (unsigned by = 0; by < grid.y; ++by) for (unsigned bx = 0; bx < grid.x; ++bx) {
    std::barrier<> bb(threads);
    g_block_barrier = &bb;
    std::vector<std::barrier<>*> wb; for (int i = 0; i < threads / 32; ++i) wb.push_back(new std::barrier<>(32));
    g_warp_barriers = wb;
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) ts.emplace_back([=] { threadIdx = dim3(t); blockIdx = dim3(bx, by); f(); });
    for (auto& t : ts) t.join();
    for (auto p : wb) delete p;
  }
}
Complex<double> inv(Complex<double> x) { double d = x.re * x.re + x.im * x.im; return {x.re / d, -x.im / d}; }
double rel_err(const std::vector<Complex<double>>& a, const std::vector<Complex<double>>& b) {
  double num = 0, den = 1e-300;
  for (size_t i = 0; i < a.size(); ++i) { num = std::max(num, std::hypot(a[i].re - b[i].re, a[i].im - b[i].im)); den = std::max(den, std::hypot(b[i].re, b[i].im)); }
  return num / den;
}
template <typename T> bool run_case(int64_t G, int64_t M, int64_t N, int64_t L, double tol, unsigned max_gy) {
  std::mt19937 gen(1234); std::normal_distribution<double> normal; std::uniform_real_distribution<double> unif;
  std::vector<Complex<double>> v(G * M * N), w(G * N), z(L), grad(G * M * L);
  for (auto& x : v) x = {normal(gen), normal(gen)};
  for (auto& x : w) x = {-unif(gen) - 0.05, 3 * normal(gen)};
  for (int64_t l = 0; l < L; ++l) z[l] = {0.0, 10.0 * l / (L > 1 ? L - 1 : 1)};
  for (auto& x : grad) x = {normal(gen), normal(gen)};
  std::vector<Complex<double>> r(G * M * L), gv(G * M * N), gw(G * M * N);
  for (int64_t g = 0; g < G; ++g) for (int64_t m = 0; m < M; ++m) for (int64_t n = 0; n < N; ++n) {
    auto vn = v[(g * M + m) * N + n], wn = w[g * N + n];
    Complex<double> p1{0, 0}, p2{0, 0}, q1{0, 0}, q2{0, 0};
    for (int64_t l = 0; l < L; ++l) {
      auto a = inv(z[l] - wn), b = inv(z[l] - conj(wn));
      auto& out = r[(g * M + m) * L + l]; out = out + vn * a + conj(vn) * b;
      auto gr = grad[(g * M + m) * L + l];
      p1 = p1 + gr * conj(a); p2 = p2 + gr * conj(b); q1 = q1 + gr * conj(a * a); q2 = q2 + gr * conj(b * b);
    }
    gv[(g * M + m) * N + n] = p1 + conj(p2); gw[(g * M + m) * N + n] = conj(vn) * (q1 + conj(q2));
  }
  auto cvt = [](const std::vector<Complex<double>>& x) { std::vector<Complex<T>> y(x.size()); for (size_t i = 0; i < x.size(); ++i) y[i] = {(T)x[i].re, (T)x[i].im}; return y; };
  auto back = [](const std::vector<Complex<T>>& x) { std::vector<Complex<double>> y(x.size()); for (size_t i = 0; i < x.size(); ++i) y[i] = {(double)x[i].re, (double)x[i].im}; return y; };
  auto hv = cvt(v), hw = cvt(w), hz = cvt(z), hg = cvt(grad);
  std::vector<Complex<T>> hr(G * M * L, Complex<T>{T(NAN), T(NAN)}), hgv(G * M * N, Complex<T>{T(NAN), T(NAN)}), hgw(G * M * N, Complex<T>{T(NAN), T(NAN)});
  unsigned gy = std::min<unsigned>(grid_y(G, M), max_gy);
  launch(dim3((L + kThreads - 1) / kThreads, gy), kThreads, [&] { cauchy_forward_kernel<T>(hv.data(), hz.data(), hw.data(), hr.data(), G, M, N, L); });
  if (N > 0) launch(dim3(N, gy), kThreads, [&] { cauchy_backward_kernel<T>(hg.data(), hv.data(), hz.data(), hw.data(), hgv.data(), hgw.data(), G, M, N, L); });
  else { std::fill(hgv.begin(), hgv.end(), Complex<T>{0,0}); std::fill(hgw.begin(), hgw.end(), Complex<T>{0,0}); }
  double e1 = rel_err(back(hr), r), e2 = rel_err(back(hgv), gv), e3 = rel_err(back(hgw), gw);
  bool ok = e1 < tol && e2 < tol && e3 < tol;  // NaN fails
  std::printf("%s %s G=%lld M=%lld N=%lld L=%lld gy=%u: %.1e %.1e %.1e\n", ok ? "ok  " : "FAIL", sizeof(T) == 4 ? "float " : "double", (long long)G, (long long)M, (long long)N, (long long)L, gy, e1, e2, e3);
  return ok;
}
int main() {
  bool ok = true;
  setvbuf(stdout, nullptr, _IONBF, 0);
  const int64_t cases[][4] = {{3, 4, 4, 37}, {1, 1, 70, 300}, {5, 9, 3, 1}, {1, 6, 2, 600}, {2, 3, 0, 5}};
  for (auto& c : cases) for (unsigned gy : {65535u, 2u}) { ok &= run_case<float>(c[0], c[1], c[2], c[3], 1e-5, gy); ok &= run_case<double>(c[0], c[1], c[2], c[3], 1e-12, gy); }
  std::printf(ok ? "all passed\n" : "FAILED\n");
  return !ok;
}
