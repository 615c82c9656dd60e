// The one TORCH_LIBRARY of pyreid: every op file adds its schema with
// TORCH_LIBRARY_FRAGMENT(pyreid, m), and each backend file its kernels with
// TORCH_LIBRARY_IMPL(pyreid, CPU|CUDA, m). This file also exposes build
// information to Python (pyreid.build_info()).
#include <torch/extension.h>

#include <torch/version.h>

#ifdef PYREID_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

TORCH_LIBRARY(pyreid, m) {}

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
#ifdef PYREID_WITH_CUDA
  info["cuda_kernels"] = true;
  info["cuda"] = std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10);
#else
  info["cuda_kernels"] = false;
  info["cuda"] = pybind11::none();
#endif
  info["torch"] = TORCH_VERSION;
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pyreid C++/CUDA kernels; the ops live under torch.ops.pyreid";
  m.def("build_info", &build_info, "What this build of pyreid._C contains");
}
