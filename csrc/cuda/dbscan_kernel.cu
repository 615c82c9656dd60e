// CUDA DBSCAN on a precomputed distance matrix (dense or CSR), all on the
// device. It computes root(v), the smallest core index that reaches v (see
// common/dbscan.h), as the fixed point of a parallel minimum propagation:
//   1. core_flags_kernel, one warp per row: neighbour count, core flag,
//      root(v) = v for core points and "none" for the others;
//   2. rounds of propagate_kernel (one warp per core row u: every neighbour
//      v of u gets root(v) = min(root(v), root(u)) by atomicMin) and
//      shortcut_kernel (root(v) = min(root(v), root(root(v))), valid because
//      whatever reaches root(v) reaches v), until a round changes nothing;
//   3. seeds (core u with root(u) == u) ranked by a scan, and
//      label(v) = rank of root(v).
// Every value root(v) ever holds is a core point that really reaches v and
// values only decrease, so the fixed point is the exact minimum whatever the
// scheduling: the labels are deterministic and equal to the CPU kernel's.
// One host sync per round reads the "changed" flag; clustering graphs
// converge in a few rounds (a long directed chain of decreasing indices needs
// one round per link).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/cuda_helpers.cuh"
#include "common/dbscan.h"
#include "common/dbscan_checks.h"

namespace pyreid {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;

__device__ __forceinline__ int64_t load_root(const int64_t* root, int64_t v) {
  return *reinterpret_cast<const volatile long long*>(root + v);
}

__device__ __forceinline__ long long atomic_min_root(int64_t* root, int64_t v, int64_t value) {
  return atomicMin(reinterpret_cast<long long*>(root + v), static_cast<long long>(value));
}

// The row loops below are warp-uniform (one row per warp), so the full-mask
// warp collectives after each row are safe.
template <typename Rows>
__global__ void __launch_bounds__(kThreads)
    core_flags_kernel(Rows rows, int64_t n, int64_t min_samples, bool* __restrict__ core, int64_t* __restrict__ root) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t i = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; i < n; i += warps) {
    long long within = 0;
    bool diagonal_stored = false;
    for (int64_t p = rows.begin(i) + lane, e = rows.end(i); p < e; p += 32) {
      within += rows.is_neighbour(p) ? 1 : 0;
      if constexpr (Rows::kImplicitDiagonal) diagonal_stored |= rows.column(i, p) == i;
    }
    within = warp_sum(within);
    diagonal_stored = __any_sync(0xffffffffu, diagonal_stored);
    if (lane == 0) {
      const bool is_core = dbscan::neighbour_count<Rows>(within, diagonal_stored) >= min_samples;
      core[i] = is_core;
      root[i] = dbscan::initial_root(i, is_core);
    }
  }
}

template <typename Rows>
__global__ void __launch_bounds__(kThreads)
    propagate_kernel(Rows rows, int64_t n, const bool* __restrict__ core, int64_t* root, int* changed) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t u = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; u < n; u += warps) {
    if (!core[u]) continue;
    const int64_t root_u = load_root(root, u);
    for (int64_t p = rows.begin(u) + lane, e = rows.end(u); p < e; p += 32) {
      if (!rows.is_neighbour(p)) continue;
      const int64_t v = rows.column(u, p);
      // Read first: most edges are already settled and need no atomic.
      if (root_u < load_root(root, v) && atomic_min_root(root, v, root_u) > root_u) *changed = 1;
    }
  }
}

__global__ void shortcut_kernel(int64_t n, int64_t* root) {
  for (int64_t v = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; v < n; v += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = load_root(root, v);
    if (r == dbscan::kNoRoot) continue;
    const int64_t rr = load_root(root, r);
    if (rr < r) atomic_min_root(root, v, rr);
  }
}

__global__ void seed_flags_kernel(int64_t n, const bool* __restrict__ core, const int64_t* __restrict__ root,
                                  int64_t* __restrict__ seed) {
  for (int64_t u = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; u < n; u += int64_t(gridDim.x) * blockDim.x) {
    seed[u] = dbscan::is_seed(u, core[u], root[u]) ? 1 : 0;
  }
}

__global__ void final_labels_kernel(int64_t n, const int64_t* __restrict__ root,
                                    const int64_t* __restrict__ seed_rank_inclusive, int64_t* __restrict__ labels) {
  for (int64_t v = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; v < n; v += int64_t(gridDim.x) * blockDim.x) {
    labels[v] = dbscan::final_label(root[v], seed_rank_inclusive);
  }
}

template <typename Rows>
at::Tensor labels_from_rows(const Rows& rows, int64_t n, int64_t min_samples, const at::TensorOptions& options) {
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  at::Tensor core = at::empty({n}, options.dtype(at::kBool));
  at::Tensor root = at::empty({n}, options.dtype(at::kLong));
  at::Tensor changed = at::empty({1}, options.dtype(at::kInt));
  const unsigned int row_blocks = grid_for(n, kWarpsPerBlock);
  const unsigned int point_blocks = grid_for(n, kThreads);
  bool* core_p = core.data_ptr<bool>();
  int64_t* root_p = root.data_ptr<int64_t>();

  core_flags_kernel<<<row_blocks, kThreads, 0, stream>>>(rows, n, min_samples, core_p, root_p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  while (true) {
    changed.zero_();
    propagate_kernel<<<row_blocks, kThreads, 0, stream>>>(rows, n, core_p, root_p, changed.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    shortcut_kernel<<<point_blocks, kThreads, 0, stream>>>(n, root_p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (changed.item<int>() == 0) break;  // the one sync per round
  }

  at::Tensor seed = at::empty({n}, options.dtype(at::kLong));
  seed_flags_kernel<<<point_blocks, kThreads, 0, stream>>>(n, core_p, root_p, seed.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const at::Tensor seed_rank = at::cumsum(seed, 0);
  at::Tensor labels = at::empty({n}, options.dtype(at::kLong));
  final_labels_kernel<<<point_blocks, kThreads, 0, stream>>>(n, root_p, seed_rank.data_ptr<int64_t>(),
                                                             labels.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return labels;
}

at::Tensor dbscan_dense_cuda(const at::Tensor& dist, double eps, int64_t min_samples) {
  constexpr const char* op = "dbscan";
  dbscan::check_parameters(eps, min_samples, op);
  dbscan::check_dense(dist, op);
  const int64_t n = dist.size(0);
  if (n == 0) return at::empty({0}, dist.options().dtype(at::kLong));
  const c10::cuda::CUDAGuard device_guard(dist.device());
  const at::Tensor d = dist.contiguous();
  at::Tensor labels;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, d.scalar_type(), "dbscan_dense_cuda", [&] {
    const dbscan::DenseRows<scalar_t> rows{d.data_ptr<scalar_t>(), n,
                                           static_cast<dbscan::compare_t<scalar_t>>(eps)};
    labels = labels_from_rows(rows, n, min_samples, d.options());
  });
  return labels;
}

at::Tensor dbscan_csr_cuda(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values, int64_t n,
                           double eps, int64_t min_samples) {
  constexpr const char* op = "dbscan";
  dbscan::check_parameters(eps, min_samples, op);
  dbscan::check_csr(crow, col, values, n, op);
  if (n == 0) return at::empty({0}, values.options().dtype(at::kLong));
  const c10::cuda::CUDAGuard device_guard(values.device());
  const at::Tensor c = crow.contiguous(), k = col.contiguous(), v = values.contiguous();
  at::Tensor labels;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "dbscan_csr_cuda", [&] {
    const dbscan::CsrRows<scalar_t> rows{c.data_ptr<int64_t>(), k.data_ptr<int64_t>(), v.data_ptr<scalar_t>(),
                                         static_cast<dbscan::compare_t<scalar_t>>(eps)};
    labels = labels_from_rows(rows, n, min_samples, v.options());
  });
  return labels;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyreid, CUDA, m) {
  m.impl("dbscan_dense", &dbscan_dense_cuda);
  m.impl("dbscan_csr", &dbscan_csr_cuda);
}

}  // namespace pyreid
