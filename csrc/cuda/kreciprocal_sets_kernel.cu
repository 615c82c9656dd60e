// CUDA kreciprocal_sets: the expanded k-reciprocal sets R*(i) as a CSR pattern.
//
// The CPU kernel's two stages, one thread per row in each:
//   1. reciprocal_sets_kernel: R(i, k1) and R(i, round(k1/2)) of every point
//      (common/kreciprocal.h decides membership), insertion-sorted, in padded
//      N x cols arrays;
//   2. expansion_kernel: R*(i) by successive merges of sorted lists, R(i, k1)
//      then each accepted R(c, round(k1/2)), each merge dropping repeats, so
//      the row comes out ascending and unique. The merges ping-pong between
//      two per-row scratch lists of cols + cols * half_cols entries (the
//      largest possible union), so rows run in chunks that bound the scratch.
//      A count pass gives the row sizes, a scan the CSR layout, and a fill
//      pass (the same merges again) writes the rows.
// Every row is a set computed on its own: the result equals the CPU kernel's
// exactly, whatever the scheduling.
#include <algorithm>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/kreciprocal_checks.h"
#include "common/cuda_helpers.cuh"
#include "common/kreciprocal.h"
#include "cuda/csr_offsets.cuh"

namespace pyreid {
namespace {

constexpr int kThreads = 256;
// int64 entries of the expansion scratch (two lists per row of a chunk): 256 MB.
constexpr int64_t kScratchElements = int64_t(1) << 25;

// R(., k) of every point, for one `cols`: the padded rows sets[i * cols + t], t < sizes[i].
struct ReciprocalSets {
  const int64_t* sets;
  const int64_t* sizes;
  int64_t cols;

  __device__ const int64_t* row(int64_t i) const { return sets + i * cols; }
};

__device__ void insertion_sort(int64_t* a, int64_t len) {
  for (int64_t s = 1; s < len; ++s) {
    const int64_t v = a[s];
    int64_t t = s;
    for (; t > 0 && a[t - 1] > v; --t) a[t] = a[t - 1];
    a[t] = v;
  }
}

// Number of entries of b[0, nb) that occur in the ascending list a[0, na)
// (entries repeated in b count each time, as the CPU's loop over b counts them).
__device__ int64_t count_found(const int64_t* a, int64_t na, const int64_t* b, int64_t nb) {
  int64_t found = 0;
  for (int64_t t = 0; t < nb; ++t) {
    const int64_t pos = lower_bound(a, na, b[t]);
    found += (pos < na && a[pos] == b[t]) ? 1 : 0;
  }
  return found;
}

// Merges the ascending lists a[0, na) and b[0, nb) into out as an ascending
// list without repeats (repeats inside a or b are dropped too); returns its size.
__device__ int64_t merge_unique(const int64_t* a, int64_t na, const int64_t* b, int64_t nb, int64_t* out) {
  int64_t p = 0, q = 0, size = 0;
  while (p < na || q < nb) {
    const bool take_a = q >= nb || (p < na && a[p] <= b[q]);
    const int64_t v = take_a ? a[p++] : b[q++];
    // The merged sequence is non-decreasing, so a repeat equals the last value written.
    if (size == 0 || out[size - 1] != v) out[size++] = v;
  }
  return size;
}

// R(i, k) over the first `cols` columns of every neighbour list, sorted.
__global__ void reciprocal_sets_kernel(const int64_t* __restrict__ nb, int64_t n, int64_t k, int64_t cols,
                                       int64_t* __restrict__ sets, int64_t* __restrict__ sizes) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    int64_t* out = sets + i * cols;
    int64_t size = 0;
    for (int64_t t = 0; t < cols; ++t) {
      const int64_t j = nb[i * k + t];
      if (in_list(nb + j * k, cols, i)) out[size++] = j;
    }
    insertion_sort(out, size);
    sizes[i] = size;
  }
}

// R*(i) for the rows [row0, row0 + rows). Each row uses its two scratch lists
// (scratch + 2 * bound * local row). Count pass (kFill false): row_size[i].
// Fill pass: the row is copied to col[crow[i], crow[i + 1]).
template <bool kFill>
__global__ void expansion_kernel(ReciprocalSets core, ReciprocalSets half, int64_t row0, int64_t rows, int64_t bound,
                                 int64_t* __restrict__ scratch, int64_t* __restrict__ row_size,
                                 const int64_t* __restrict__ crow, int64_t* __restrict__ col) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t local = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; local < rows; local += stride) {
    const int64_t i = row0 + local;
    int64_t* members = scratch + 2 * bound * local;
    int64_t* spare = members + bound;
    const int64_t* ri = core.row(i);
    const int64_t ri_size = core.sizes[i];
    int64_t size = merge_unique(ri, ri_size, ri, 0, members);
    for (int64_t a = 0; a < ri_size; ++a) {
      const int64_t c = ri[a];
      const int64_t* rc = half.row(c);
      const int64_t rc_size = half.sizes[c];
      if (expansion_accepts(count_found(ri, ri_size, rc, rc_size), rc_size)) {
        size = merge_unique(members, size, rc, rc_size, spare);
        int64_t* merged = spare;
        spare = members;
        members = merged;
      }
    }
    if constexpr (kFill) {
      int64_t* out = col + crow[i];
      for (int64_t t = 0; t < size; ++t) out[t] = members[t];
    } else {
      row_size[i] = size;
    }
  }
}

std::tuple<at::Tensor, at::Tensor> kreciprocal_sets_cuda(const at::Tensor& neighbors, int64_t k1) {
  constexpr const char* op = "kreciprocal_sets";
  const c10::cuda::CUDAGuard device_guard(neighbors.device());
  check_kreciprocal_sets_args(neighbors, k1, op);
  const int64_t n = neighbors.size(0), k = neighbors.size(1);
  const at::Tensor nbc = neighbors.contiguous();

  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const at::TensorOptions options = neighbors.options();
  const unsigned int row_blocks = grid_for(n, kThreads);
  const int64_t cols = reciprocal_columns(k1, k);
  const int64_t half_cols = reciprocal_columns(half_k1(k1), k);
  at::Tensor core_sets = at::empty({n * cols}, options), core_sizes = at::empty({n}, options);
  at::Tensor half_sets = at::empty({n * half_cols}, options), half_sizes = at::empty({n}, options);
  reciprocal_sets_kernel<<<row_blocks, kThreads, 0, stream>>>(nbc.data_ptr<int64_t>(), n, k, cols,
                                                              core_sets.data_ptr<int64_t>(),
                                                              core_sizes.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  reciprocal_sets_kernel<<<row_blocks, kThreads, 0, stream>>>(nbc.data_ptr<int64_t>(), n, k, half_cols,
                                                              half_sets.data_ptr<int64_t>(),
                                                              half_sizes.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const ReciprocalSets core{core_sets.data_ptr<int64_t>(), core_sizes.data_ptr<int64_t>(), cols};
  const ReciprocalSets half{half_sets.data_ptr<int64_t>(), half_sizes.data_ptr<int64_t>(), half_cols};

  // R*(i) holds R(i, k1) and at most |R(i, k1)| accepted sets of at most half_cols each.
  const int64_t bound = cols + cols * half_cols;
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(n, kScratchElements / (2 * bound)));
  at::Tensor scratch = at::empty({2 * bound * chunk}, options);
  at::Tensor row_size = at::empty({n}, options);
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    expansion_kernel<false><<<grid_for(rows, kThreads), kThreads, 0, stream>>>(
        core, half, r0, rows, bound, scratch.data_ptr<int64_t>(), row_size.data_ptr<int64_t>(), nullptr, nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  at::Tensor crow = offsets_from_counts(row_size);
  at::Tensor col = at::empty({total_from_offsets(crow)}, options);
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    expansion_kernel<true><<<grid_for(rows, kThreads), kThreads, 0, stream>>>(
        core, half, r0, rows, bound, scratch.data_ptr<int64_t>(), nullptr, crow.data_ptr<int64_t>(),
        col.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {crow, col};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyreid, CUDA, m) {
  m.impl("kreciprocal_sets", &kreciprocal_sets_cuda);
}

}  // namespace pyreid
