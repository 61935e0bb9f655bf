// Stand-alone check of cauchy_kernel.cuh without PyTorch: runs the forward and backward
// kernels on random data and compares them with a double-precision loop on the host.
//   nvcc -std=c++17 -O2 -arch=native -o /tmp/cauchy_test csrc/cauchy/standalone_test.cu && /tmp/cauchy_test
// Exit status: 0 pass, 1 mismatch, 77 no usable GPU (skipped).
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "cauchy_kernel.cuh"

using sashimi_cauchy::Complex;

#define CHECK(call)                                                                  \
  do {                                                                               \
    cudaError_t err_ = (call);                                                       \
    if (err_ != cudaSuccess) {                                                       \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(err_)); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

template <typename T>
Complex<T> cast(Complex<double> x) { return {static_cast<T>(x.re), static_cast<T>(x.im)}; }

template <typename T>
T* to_device(const std::vector<Complex<double>>& x) {
  std::vector<Complex<T>> h(x.size());
  for (size_t i = 0; i < x.size(); ++i) h[i] = cast<T>(x[i]);
  T* d = nullptr;
  CHECK(cudaMalloc(&d, h.size() * sizeof(Complex<T>) + 1));
  CHECK(cudaMemcpy(d, h.data(), h.size() * sizeof(Complex<T>), cudaMemcpyHostToDevice));
  return d;
}

template <typename T>
std::vector<Complex<double>> to_host(const T* d, size_t n) {
  std::vector<Complex<T>> h(n);
  CHECK(cudaMemcpy(h.data(), d, n * sizeof(Complex<T>), cudaMemcpyDeviceToHost));
  std::vector<Complex<double>> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = {static_cast<double>(h[i].re), static_cast<double>(h[i].im)};
  return out;
}

// Plain 1 / x for the reference (independent of the kernels' Smith reciprocal).
Complex<double> inv(Complex<double> x) {
  const double d = x.re * x.re + x.im * x.im;
  return {x.re / d, -x.im / d};
}

double rel_err(const std::vector<Complex<double>>& a, const std::vector<Complex<double>>& b) {
  double num = 0, den = 1e-300;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::hypot(a[i].re - b[i].re, a[i].im - b[i].im));
    den = std::max(den, std::hypot(b[i].re, b[i].im));
  }
  return num / den;
}

template <typename T>
bool run_case(int64_t G, int64_t M, int64_t N, int64_t L, double tol) {
  std::mt19937 gen(1234);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> unif;
  std::vector<Complex<double>> v(G * M * N), w(G * N), z(L), grad(G * M * L);
  for (auto& x : v) x = {normal(gen), normal(gen)};
  for (auto& x : w) x = {-unif(gen) - 0.05, 3 * normal(gen)};
  for (int64_t l = 0; l < L; ++l) z[l] = {0.0, 10.0 * l / (L > 1 ? L - 1 : 1)};
  for (auto& x : grad) x = {normal(gen), normal(gen)};
  // Host reference in double.
  std::vector<Complex<double>> r(G * M * L), gv(G * M * N), gw(G * M * N);
  for (int64_t g = 0; g < G; ++g)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        const auto vn = v[(g * M + m) * N + n], wn = w[g * N + n];
        Complex<double> p1{0, 0}, p2{0, 0}, q1{0, 0}, q2{0, 0};
        for (int64_t l = 0; l < L; ++l) {
          const auto a = inv(z[l] - wn), b = inv(z[l] - conj(wn));
          auto& out = r[(g * M + m) * L + l];
          out = out + vn * a + conj(vn) * b;
          const auto gr = grad[(g * M + m) * L + l];
          p1 = p1 + gr * conj(a), p2 = p2 + gr * conj(b), q1 = q1 + gr * conj(a * a), q2 = q2 + gr * conj(b * b);
        }
        gv[(g * M + m) * N + n] = p1 + conj(p2);
        gw[(g * M + m) * N + n] = conj(vn) * (q1 + conj(q2));
      }
  auto *dv = to_device<T>(v), *dw = to_device<T>(w), *dz = to_device<T>(z), *dg = to_device<T>(grad);
  T *dr, *dgv, *dgw;
  CHECK(cudaMalloc(&dr, G * M * L * sizeof(Complex<T>) + 1));
  CHECK(cudaMalloc(&dgv, G * M * N * sizeof(Complex<T>) + 1));
  CHECK(cudaMalloc(&dgw, G * M * N * sizeof(Complex<T>) + 1));
  using C = Complex<T>;
  sashimi_cauchy::launch_forward<T>((const C*)dv, (const C*)dz, (const C*)dw, (C*)dr, G, M, N, L, 0);
  CHECK(cudaGetLastError());
  sashimi_cauchy::launch_backward<T>((const C*)dg, (const C*)dv, (const C*)dz, (const C*)dw, (C*)dgv, (C*)dgw, G, M,
                                     N, L, 0);
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  const double e_r = rel_err(to_host(dr, r.size()), r), e_v = rel_err(to_host(dgv, gv.size()), gv),
               e_w = rel_err(to_host(dgw, gw.size()), gw);
  const bool ok = e_r < tol && e_v < tol && e_w < tol;
  std::printf("%s %-7s G=%lld M=%lld N=%lld L=%lld: forward %.1e grad_v %.1e grad_w_rows %.1e\n", ok ? "ok  " : "FAIL",
              sizeof(T) == 4 ? "float" : "double", (long long)G, (long long)M, (long long)N, (long long)L, e_r, e_v,
              e_w);
  for (T* p : {dv, dw, dz, dg, dr, dgv, dgw}) CHECK(cudaFree(p));
  return ok;
}

int main() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  bool ok = true;
  const int64_t cases[][4] = {{3, 4, 4, 37}, {2, 7, 70, 300}, {1, 1, 1024, 257}, {5, 9, 3, 1}, {64, 4, 32, 2001}};
  for (const auto& c : cases) {
    ok &= run_case<float>(c[0], c[1], c[2], c[3], 1e-4);
    ok &= run_case<double>(c[0], c[1], c[2], c[3], 1e-11);
  }
  std::printf(ok ? "all passed\n" : "FAILED\n");
  return ok ? 0 : 1;
}
