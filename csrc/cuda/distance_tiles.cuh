// CUDA pieces shared by the distance-based ops (pairwise_distance, knn,
// knn_row_max): the per-row norm terms of common/distance.h (the accumulation
// dtype is common/accumulate.h's).
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "common/accumulate.h"
#include "common/cuda_helpers.cuh"
#include "common/distance.h"

namespace pyreid {
namespace cuda {

namespace detail {

// One warp per row: coalesced reads along the feature dimension, then a
// shuffle reduction. The row loop is warp-uniform, so the full-mask shuffles
// are safe.
template <typename T>
__global__ void norm_terms_kernel(const T* __restrict__ x, int64_t n, int64_t d, Metric metric,
                                  T* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; row < n; row += warps) {
    const T* r = x + row * d;
    T s = 0;
    for (int64_t c = lane; c < d; c += 32) s += r[c] * r[c];
    s = warp_sum(s);
    if (lane == 0) out[row] = norm_term(s, metric);
  }
}

}  // namespace detail

// norm_term(|row|^2) for every row of a contiguous N x D float32/float64 matrix.
inline at::Tensor norm_terms(const at::Tensor& x, Metric metric) {
  const int64_t n = x.size(0), d = x.size(1);
  at::Tensor out = at::empty({n}, x.options());
  if (n == 0) return out;
  constexpr int threads = 256;
  const unsigned int blocks = grid_for(n * 32, threads);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "norm_terms_cuda", [&] {
    detail::norm_terms_kernel<scalar_t><<<blocks, threads, 0, at::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<scalar_t>(), n, d, metric, out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace cuda
}  // namespace pyreid
