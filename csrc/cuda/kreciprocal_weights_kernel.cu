// CUDA kreciprocal_weights: the encoding V's values in two kernels.
//
//   1. pair_logits_kernel: one block per row (grid-stride), its warps take
//      the row's stored pairs in turn; a warp looks the pair up in row i's
//      neighbour list when one is given (a ballot per 32 entries) and takes
//      its listed distance, else computes the dot product or squared
//      difference with its lanes striding over the D features and a
//      butterfly sum, and writes the logit -d_ij. (squared_norms_kernel
//      first gives the cluster variant's |x_i|^2 when lists are given.)
//   2. row_softmax_kernel: one warp per row: the row's maximum, the sum of
//      exp(logit - max), then V[i, j] = exp(logit - max) / sum as float32.
// No atomics: every sum has a fixed order, so results are deterministic.
// Scratch: one logit per stored pair (x's dtype).
#include <limits>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/cuda_helpers.cuh"
#include "common/kreciprocal.h"
#include "common/kreciprocal_checks.h"

namespace pyreid {
namespace {

constexpr int kPairWarps = 4;     // warps per block in pair_logits_kernel
constexpr int kSoftmaxWarps = 8;  // rows per block in row_softmax_kernel

// The listed squared distance of j in row i's list of k entries, searched
// by the whole warp 32 entries at a time; false when j is not listed. Every
// lane runs the same iterations and returns the same answer.
template <typename T>
__device__ __forceinline__ bool find_listed(const int64_t* __restrict__ nb, const T* __restrict__ nd, int64_t k,
                                            int64_t i, int64_t j, int lane, T* sqdist) {
  for (int64_t base = 0; base < k; base += 32) {
    const int64_t t = base + lane;
    const bool hit = t < k && nb[i * k + t] == j;
    const unsigned mask = __ballot_sync(0xffffffffu, hit);
    if (mask != 0u) {
      const int src = __ffs(mask) - 1;  // the first listed copy
      *sqdist = __shfl_sync(0xffffffffu, hit ? nd[i * k + t] : T(0), src);
      return true;
    }
  }
  return false;
}

template <typename T>
__global__ void __launch_bounds__(kPairWarps * 32)
    pair_logits_kernel(const T* __restrict__ x, int64_t n, int64_t d, const int64_t* __restrict__ crow,
                       const int64_t* __restrict__ col, EncodingVariant variant, const T* __restrict__ row_max,
                       const int64_t* __restrict__ nb, const T* __restrict__ nd, int64_t k,
                       const T* __restrict__ sqnorm, T tiny, T* __restrict__ logits) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const T* xi = x + i * d;
    const T scale = variant == EncodingVariant::Original ? row_scale_of(row_max[i], tiny) : T(1);
    // p depends only on the warp, so all 32 lanes run the same iterations
    // and reach the shuffles together.
    for (int64_t p = crow[i] + warp; p < crow[i + 1]; p += kPairWarps) {
      const int64_t j = col[p];
      T s = T(0);
      T listed = T(0);
      if (nb != nullptr && find_listed(nb, nd, k, i, j, lane, &listed)) {
        s = pair_term_from_sqdist(variant, listed, sqnorm ? sqnorm[i] : T(0), sqnorm ? sqnorm[j] : T(0));
      } else {
        const T* xj = x + j * d;
        if (variant == EncodingVariant::Cluster) {
          for (int64_t t = lane; t < d; t += 32) s += xi[t] * xj[t];
        } else {
          for (int64_t t = lane; t < d; t += 32) {
            const T diff = xi[t] - xj[t];
            s += diff * diff;
          }
        }
        s = warp_all_sum(s);
      }
      if (lane == 0) logits[p] = weight_logit(variant, s, scale);
    }
  }
}

// |x_i|^2 of every row: one warp per row, lanes striding over the features.
template <typename T>
__global__ void __launch_bounds__(kSoftmaxWarps * 32)
    squared_norms_kernel(const T* __restrict__ x, int64_t n, int64_t d, T* __restrict__ out) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kSoftmaxWarps;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kSoftmaxWarps + threadIdx.x / 32; i < n; i += warps) {
    T s = T(0);
    for (int64_t t = lane; t < d; t += 32) s += x[i * d + t] * x[i * d + t];
    s = warp_all_sum(s);
    if (lane == 0) out[i] = s;
  }
}

template <typename T>
__global__ void __launch_bounds__(kSoftmaxWarps * 32)
    row_softmax_kernel(const T* __restrict__ logits, int64_t n, const int64_t* __restrict__ crow,
                       float* __restrict__ val) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kSoftmaxWarps;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kSoftmaxWarps + threadIdx.x / 32; i < n; i += warps) {
    const int64_t p0 = crow[i], p1 = crow[i + 1];
    T top = -std::numeric_limits<T>::infinity();
    for (int64_t p = p0 + lane; p < p1; p += 32) top = logits[p] > top ? logits[p] : top;
    top = warp_all_max(top);
    T total = T(0);
    for (int64_t p = p0 + lane; p < p1; p += 32) total += exp(logits[p] - top);
    total = warp_all_sum(total);
    for (int64_t p = p0 + lane; p < p1; p += 32) val[p] = static_cast<float>(exp(logits[p] - top) / total);
  }
}

at::Tensor kreciprocal_weights_cuda(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col,
                                    c10::string_view variant_name, const std::optional<at::Tensor>& row_max,
                                    const std::optional<at::Tensor>& neighbors,
                                    const std::optional<at::Tensor>& neighbor_dist) {
  constexpr const char* op = "kreciprocal_weights";
  const EncodingVariant variant = check_kreciprocal_weights_args(x, crow, col, std::string(variant_name), row_max, op);
  const c10::cuda::CUDAGuard guard(x.device());
  const bool lists = check_kreciprocal_weights_lists(x, neighbors, neighbor_dist, op);
  const int64_t n = x.size(0), d = x.size(1), nnz = col.size(0);
  check_csr(crow, col, n, op, "crow", "col");
  check_kreciprocal_weights_values(x, row_max, neighbor_dist, op);
  at::Tensor val = at::empty({nnz}, x.options().dtype(at::kFloat));
  if (nnz == 0) return val;
  const at::Tensor xc = x.contiguous(), crow_c = crow.contiguous(), col_c = col.contiguous();
  const at::Tensor row_max_c = row_max.has_value() ? row_max->contiguous() : at::Tensor();
  const at::Tensor nb_c = lists ? neighbors->contiguous() : at::Tensor();
  const at::Tensor nd_c = lists ? neighbor_dist->contiguous() : at::Tensor();
  const int64_t k = lists ? nb_c.size(1) : 0;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), op, [&] {
    at::Tensor logits = at::empty({nnz}, x.options());
    const scalar_t* row_max_p = row_max_c.defined() ? row_max_c.data_ptr<scalar_t>() : nullptr;
    // The cluster variant's dot products from listed distances need the norms.
    at::Tensor sqnorm;
    if (lists && variant == EncodingVariant::Cluster) {
      sqnorm = at::empty({n}, x.options());
      squared_norms_kernel<scalar_t><<<grid_for(n, kSoftmaxWarps), kSoftmaxWarps * 32, 0, stream>>>(
          xc.data_ptr<scalar_t>(), n, d, sqnorm.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    pair_logits_kernel<scalar_t><<<grid_for(n, 1), kPairWarps * 32, 0, stream>>>(
        xc.data_ptr<scalar_t>(), n, d, crow_c.data_ptr<int64_t>(), col_c.data_ptr<int64_t>(), variant, row_max_p,
        lists ? nb_c.data_ptr<int64_t>() : nullptr, lists ? nd_c.data_ptr<scalar_t>() : nullptr, k,
        sqnorm.defined() ? sqnorm.data_ptr<scalar_t>() : nullptr, std::numeric_limits<scalar_t>::min(),
        logits.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    row_softmax_kernel<scalar_t><<<grid_for(n, kSoftmaxWarps), kSoftmaxWarps * 32, 0, stream>>>(
        logits.data_ptr<scalar_t>(), n, crow_c.data_ptr<int64_t>(), val.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return val;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyreid, CUDA, m) {
  m.impl("kreciprocal_weights", &kreciprocal_weights_cuda);
}

}  // namespace pyreid
