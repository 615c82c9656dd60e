// CUDA pairwise_distance: cuBLAS (through at::mm) for the dot products, then
// one element-wise kernel that turns them into distances with the formulas of
// common/distance.h, in place when the output dtype is the accumulation dtype.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/distance_checks.h"
#include "common/cuda_helpers.cuh"
#include "common/distance.h"
#include "cuda/distance_tiles.cuh"

namespace pyreid {
namespace {

// Rows per product when the output dtype differs from the accumulation dtype
// (half inputs): bounds the float32 scratch to 256 MB.
constexpr int64_t kScratchElements = int64_t(1) << 26;

template <typename scalar_t, typename acc_t>
__global__ void distance_epilogue_kernel(const acc_t* dot, const acc_t* __restrict__ x_terms,
                                         const acc_t* __restrict__ y_terms, int64_t row0, int64_t rows,
                                         int64_t m, Metric metric, bool self, scalar_t* out) {
  const int64_t total = rows * m;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const int64_t i = row0 + e / m;
    const int64_t j = e % m;
    acc_t v = distance_from_dot(dot[e], x_terms[i], y_terms[j], metric);
    if (self && i == j) v = acc_t(0);
    out[e] = static_cast<scalar_t>(v);
  }
}

at::Tensor pairwise_distance_cuda(const at::Tensor& x, const std::optional<at::Tensor>& y_opt,
                                  c10::string_view metric_name) {
  constexpr const char* op = "pairwise_distance";
  const Metric metric = check_pairwise_distance_args(x, y_opt, metric_name, op);
  const c10::cuda::CUDAGuard device_guard(x.device());
  const bool self = !y_opt.has_value();
  const int64_t n = x.size(0), m = self ? n : y_opt->size(0);
  at::Tensor out = empty_output({n, m}, x.options(), op, "N x M output");
  if (n == 0 || m == 0) return out;

  const at::ScalarType acc = accumulate_type(x.scalar_type());
  const at::Tensor xa = x.to(acc).contiguous();
  const at::Tensor ya = self ? xa : y_opt->to(acc).contiguous();
  const at::Tensor x_terms = cuda::norm_terms(xa, metric);
  const at::Tensor y_terms = self ? x_terms : cuda::norm_terms(ya, metric);
  const bool in_place = out.scalar_type() == acc;
  const int64_t rows_per_step = in_place ? n : std::max<int64_t>(1, kScratchElements / m);
  at::Tensor scratch = in_place ? at::Tensor() : at::empty({std::min(rows_per_step, n) * m}, xa.options());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  constexpr int threads = 256;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pairwise_distance_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    for (int64_t r0 = 0; r0 < n; r0 += rows_per_step) {
      const int64_t rows = std::min(rows_per_step, n - r0);
      at::Tensor dot = in_place ? out.narrow(0, r0, rows) : scratch.narrow(0, 0, rows * m).view({rows, m});
      at::mm_out(dot, xa.narrow(0, r0, rows), ya.t());
      distance_epilogue_kernel<scalar_t, acc_t><<<grid_for(rows * m, threads), threads, 0, stream>>>(
          dot.data_ptr<acc_t>(), x_terms.data_ptr<acc_t>(), y_terms.data_ptr<acc_t>(), r0, rows, m, metric,
          self, out.data_ptr<scalar_t>() + r0 * m);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyreid, CUDA, m) {
  m.impl("pairwise_distance", &pairwise_distance_cuda);
}

}  // namespace pyreid
