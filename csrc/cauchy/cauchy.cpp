// Python binding of the CUDA Cauchy kernels: sashimi._cauchy_cuda.forward / .backward.
// Canonical shapes only (see sashimi/ops/cauchy.py): v (G, M, N), z (L,), w (G, N), all
// contiguous complex64 or complex128 tensors on one CUDA device.
#include <torch/extension.h>

#include <vector>

at::Tensor cauchy_forward_cuda(const at::Tensor& v, const at::Tensor& z, const at::Tensor& w);
std::vector<at::Tensor> cauchy_backward_cuda(const at::Tensor& grad, const at::Tensor& v, const at::Tensor& z,
                                             const at::Tensor& w);

namespace {

void check_tensor(const at::Tensor& t, const char* name, int64_t dim, const at::Tensor& like) {
  TORCH_CHECK_VALUE(t.is_cuda(), "cauchy: ", name, " must be a CUDA tensor, got ", t.device());
  TORCH_CHECK_VALUE(t.device() == like.device(), "cauchy: ", name, " is on ", t.device(), " but v is on ",
                    like.device());
  TORCH_CHECK_TYPE(t.scalar_type() == at::kComplexFloat || t.scalar_type() == at::kComplexDouble,
                   "cauchy: ", name, " must be complex64 or complex128, got ", t.scalar_type());
  TORCH_CHECK_TYPE(t.scalar_type() == like.scalar_type(), "cauchy: ", name, " has dtype ", t.scalar_type(),
                   " but v has ", like.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == dim, "cauchy: ", name, " must have ", dim, " dimensions, got shape ", t.sizes());
  TORCH_CHECK_VALUE(t.is_contiguous() && !t.is_conj(), "cauchy: ", name, " must be contiguous (and not a conj view)");
}

void check_inputs(const at::Tensor& v, const at::Tensor& z, const at::Tensor& w) {
  check_tensor(v, "v", 3, v);
  check_tensor(z, "z", 1, v);
  check_tensor(w, "w", 2, v);
  TORCH_CHECK_VALUE(w.size(0) == v.size(0) && w.size(1) == v.size(2), "cauchy: w must have shape (G, N) = (",
                    v.size(0), ", ", v.size(2), ") for v of shape ", v.sizes(), ", got ", w.sizes());
}

at::Tensor forward(const at::Tensor& v, const at::Tensor& z, const at::Tensor& w) {
  check_inputs(v, z, w);
  return cauchy_forward_cuda(v, z, w);
}

std::vector<at::Tensor> backward(const at::Tensor& grad, const at::Tensor& v, const at::Tensor& z,
                                 const at::Tensor& w) {
  check_inputs(v, z, w);
  check_tensor(grad, "grad", 3, v);
  TORCH_CHECK_VALUE(grad.size(0) == v.size(0) && grad.size(1) == v.size(1) && grad.size(2) == z.size(0),
                    "cauchy: grad must have shape (G, M, L), got ", grad.sizes());
  return cauchy_backward_cuda(grad, v, z, w);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "CUDA kernels for sashimi's conjugate-symmetric Cauchy product (canonical shapes)";
  m.def("forward", &forward, "r (G, M, L) from v (G, M, N), z (L,), w (G, N)", py::arg("v"), py::arg("z"),
        py::arg("w"));
  m.def("backward", &backward, "(grad_v, grad_w_rows), each (G, M, N), from grad (G, M, L) = dLoss/d conj(r)",
        py::arg("grad"), py::arg("v"), py::arg("z"), py::arg("w"));
}
