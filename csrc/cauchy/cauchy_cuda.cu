// PyTorch launchers for the Cauchy kernels (cauchy_kernel.cuh): dtype dispatch, device guard,
// stream, allocation. Inputs are checked in cauchy.cpp.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "cauchy_kernel.cuh"

namespace {

template <typename scalar_t>
using Cx = sashimi_cauchy::Complex<typename scalar_t::value_type>;

template <typename scalar_t>
const Cx<scalar_t>* ptr(const at::Tensor& t) {
  return reinterpret_cast<const Cx<scalar_t>*>(t.data_ptr<scalar_t>());
}

template <typename scalar_t>
Cx<scalar_t>* mut_ptr(at::Tensor& t) {
  return reinterpret_cast<Cx<scalar_t>*>(t.data_ptr<scalar_t>());
}

}  // namespace

// v (G, M, N), z (L,), w (G, N) -> r (G, M, L)
at::Tensor cauchy_forward_cuda(const at::Tensor& v, const at::Tensor& z, const at::Tensor& w) {
  const int64_t G = v.size(0), M = v.size(1), N = v.size(2), L = z.size(0);
  auto out = at::empty({G, M, L}, v.options());
  if (G * M * L == 0) return out;
  const c10::cuda::CUDAGuard guard(v.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_COMPLEX_TYPES(v.scalar_type(), "cauchy_forward_cuda", [&] {
    sashimi_cauchy::launch_forward(ptr<scalar_t>(v), ptr<scalar_t>(z), ptr<scalar_t>(w), mut_ptr<scalar_t>(out),
                                   G, M, N, L, stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// grad (G, M, L) = dLoss/d conj(r) -> {grad_v (G, M, N), grad_w_rows (G, M, N)}
std::vector<at::Tensor> cauchy_backward_cuda(const at::Tensor& grad, const at::Tensor& v, const at::Tensor& z,
                                             const at::Tensor& w) {
  const int64_t G = v.size(0), M = v.size(1), N = v.size(2), L = z.size(0);
  auto grad_v = at::zeros({G, M, N}, v.options());
  auto grad_w_rows = at::zeros({G, M, N}, v.options());
  if (G * M * N * L == 0) return {grad_v, grad_w_rows};
  const c10::cuda::CUDAGuard guard(v.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_COMPLEX_TYPES(v.scalar_type(), "cauchy_backward_cuda", [&] {
    sashimi_cauchy::launch_backward(ptr<scalar_t>(grad), ptr<scalar_t>(v), ptr<scalar_t>(z), ptr<scalar_t>(w),
                                    mut_ptr<scalar_t>(grad_v), mut_ptr<scalar_t>(grad_w_rows), G, M, N, L, stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {grad_v, grad_w_rows};
}
