// CUDA kreciprocal_jaccard: query expansion and sparse Jaccard distances.
//
// The CPU kernel's stages, with every float sum taken by one thread in the
// CPU's order, so the values equal the CPU's bit for bit (same IEEE adds,
// divisions and minima) and do not depend on the scheduling; no float atomics.
//   1. V' (query expansion), one thread per row: a merge of the k2 sorted rows
//      V[expansion[i, t]] (a cursor per row, in a scratch of N x k2). For each
//      column, smallest first, the values are added in t order and divided by
//      k2. A count pass, a scan, then a fill pass.
//   2. The inverted index of V' (CSC, each column's rows ascending): a stable
//      sort of V''s column indices (CSR order is row order, so stability keeps
//      rows ascending), column starts by binary search, rows and values gathered.
//   3. Jaccard rows, in chunks of rows holding at most kContributionBudget
//      contributions (at least one row), so the scratch stays bounded. For row
//      i, the contributions (r, min(V'[i,c], V'[r,c])), c in V'[i] ascending, r
//      in column c ascending, are written with the key (local row, r) and
//      stably sorted by it: each row's contributions to one r then lie
//      together, in c order. One thread per row walks its runs, sums each run
//      in order (the CPU's accumulation order), turns the sum into a distance
//      and keeps j == i or d < max_distance (the diagonal is added with s = 0
//      when i has no contribution of its own, as on the CPU). A count pass,
//      a scan and a fill pass write each chunk's piece of the output; the
//      pieces are concatenated in row order.
// Memory: O(nnz(V') + output + one chunk); no rows x N arrays.
#include <algorithm>
#include <limits>
#include <vector>

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
// Contributions (int64 key + float value, plus the sort's copies) per chunk of Jaccard rows.
constexpr int64_t kContributionBudget = int64_t(1) << 26;
constexpr int64_t kNoColumn = std::numeric_limits<int64_t>::max();

struct CsrView {
  const int64_t* ptr;
  const int64_t* idx;
  const float* val;
};

// std::min's choice (the first argument unless the second is smaller), as the CPU takes it.
__device__ __forceinline__ float smaller(float a, float b) {
  return b < a ? b : a;
}

// V'[i] = (sum over t < k2 of V[expansion[i, t]]) / k2, by a merge of the k2
// ascending rows. cursor/end: N x k2 scratch. Count pass (kFill false):
// v_size[i]; fill pass: the row goes to (v_idx, v_val)[v_ptr[i], v_ptr[i + 1]).
template <bool kFill>
__global__ void query_expansion_kernel(CsrView v, const int64_t* __restrict__ expansion, int64_t n, int64_t k2,
                                       int64_t* __restrict__ cursor, int64_t* __restrict__ end,
                                       int64_t* __restrict__ v_size, const int64_t* __restrict__ out_ptr,
                                       int64_t* __restrict__ out_idx, float* __restrict__ out_val) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    int64_t* cur = cursor + i * k2;
    int64_t* stop = end + i * k2;
    for (int64_t t = 0; t < k2; ++t) {
      const int64_t r = expansion[i * k2 + t];
      cur[t] = v.ptr[r];
      stop[t] = v.ptr[r + 1];
    }
    int64_t count = 0;
    while (true) {
      int64_t c = kNoColumn;
      for (int64_t t = 0; t < k2; ++t) {
        if (cur[t] < stop[t] && v.idx[cur[t]] < c) c = v.idx[cur[t]];
      }
      if (c == kNoColumn) break;
      // The CPU adds each row's entries of column c in t order, from 0.
      float sum = 0.0f;
      for (int64_t t = 0; t < k2; ++t) {
        for (; cur[t] < stop[t] && v.idx[cur[t]] == c; ++cur[t]) sum += v.val[cur[t]];
      }
      if constexpr (kFill) {
        out_idx[out_ptr[i] + count] = c;
        // Divide (not multiply by 1/k2): numpy's mean divides the sum.
        out_val[out_ptr[i] + count] = sum / static_cast<float>(k2);
      }
      ++count;
    }
    if constexpr (!kFill) v_size[i] = count;
  }
}

// Column starts of the inverted index from V''s column indices sorted
// ascending: inv_ptr[c] = number of entries with column < c, c in [0, n].
__global__ void column_starts_kernel(const int64_t* __restrict__ sorted_idx, int64_t nnz, int64_t n,
                                     int64_t* __restrict__ inv_ptr) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c <= n; c += stride) {
    inv_ptr[c] = lower_bound(sorted_idx, nnz, c);
  }
}

// Entry q of the inverted index is V''s entry order[q]: its row and value.
__global__ void gather_inverted_kernel(CsrView v, int64_t rows, const int64_t* __restrict__ order, int64_t nnz,
                                       int64_t* __restrict__ inv_idx, float* __restrict__ inv_val) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t q = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; q < nnz; q += stride) {
    const int64_t p = order[q];
    inv_idx[q] = row_of_entry(v.ptr, rows, p);
    inv_val[q] = v.val[p];
  }
}

// Number of contributions of each row i < rows: sum over c in V'[i] of |column c|.
__global__ void contribution_counts_kernel(CsrView v, const int64_t* __restrict__ inv_ptr, int64_t rows,
                                           int64_t* __restrict__ counts) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < rows; i += stride) {
    int64_t count = 0;
    for (int64_t p = v.ptr[i]; p < v.ptr[i + 1]; ++p) count += inv_ptr[v.idx[p] + 1] - inv_ptr[v.idx[p]];
    counts[i] = count;
  }
}

// The contributions of rows [row0, row0 + rows), one warp per row, in the
// CPU's order (c ascending, then r ascending), row by row from
// contrib_ptr[i] - contrib_ptr[row0]: key = local row * n + r, value
// min(V'[i,c], V'[r,c]). Each position is fixed by the order, so the lanes
// split each column's rows without changing it.
__global__ void contributions_kernel(CsrView v, CsrView inv, const int64_t* __restrict__ contrib_ptr, int64_t row0,
                                     int64_t rows, int64_t n, int64_t* __restrict__ key, float* __restrict__ value) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t local = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; local < rows; local += warps) {
    const int64_t i = row0 + local;
    int64_t dst = contrib_ptr[i] - contrib_ptr[row0];
    for (int64_t p = v.ptr[i]; p < v.ptr[i + 1]; ++p) {
      const int64_t c = v.idx[p];
      const float vi = v.val[p];
      const int64_t q0 = inv.ptr[c], len = inv.ptr[c + 1] - q0;
      for (int64_t t = lane; t < len; t += 32) {
        key[dst + t] = local * n + inv.idx[q0 + t];
        value[dst + t] = smaller(vi, inv.val[q0 + t]);
      }
      dst += len;
    }
  }
}

// Jaccard rows of a chunk from its sorted contributions (sorted_key, and the
// original position order[e] of each, whose value is value[order[e]]). Row
// i's contributions keep their range [contrib_ptr[i], contrib_ptr[i + 1])
// (minus the chunk start) after the sort, since keys order by row first.
// Count pass (kFill false): kept[local]; fill pass: the row goes to
// (out_idx, out_val)[out_ptr[local], out_ptr[local + 1]).
template <bool kFill>
__global__ void jaccard_rows_kernel(const int64_t* __restrict__ sorted_key, const int64_t* __restrict__ order,
                                    const float* __restrict__ value, const int64_t* __restrict__ contrib_ptr,
                                    int64_t row0, int64_t rows, int64_t n, float limit, int64_t* __restrict__ kept,
                                    const int64_t* __restrict__ out_ptr, int64_t* __restrict__ out_idx,
                                    float* __restrict__ out_val) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t local = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; local < rows; local += stride) {
    const int64_t i = row0 + local;
    const int64_t base = contrib_ptr[row0];
    const int64_t key_base = local * n;
    const int64_t stop = contrib_ptr[i + 1] - base;
    int64_t count = 0;
    auto store = [&](int64_t j, float d) {
      if constexpr (kFill) {
        out_idx[out_ptr[local] + count] = j;
        out_val[out_ptr[local] + count] = d;
      }
      ++count;
    };
    bool diagonal_seen = false;
    for (int64_t e = contrib_ptr[i] - base; e < stop;) {
      const int64_t j = sorted_key[e] - key_base;
      // s = sum of the run, from 0 in c order (the CPU's accumulator order).
      float s = 0.0f;
      for (; e < stop && sorted_key[e] - key_base == j; ++e) s += value[order[e]];
      if (!diagonal_seen && j > i) {
        store(i, jaccard_from_overlap(0.0f));  // i shares nothing with itself (empty V'[i])
        diagonal_seen = true;
      }
      if (j == i) diagonal_seen = true;
      const float d = jaccard_from_overlap(s);
      if (j == i || d < limit) store(j, d);
    }
    if (!diagonal_seen) store(i, jaccard_from_overlap(0.0f));
    if constexpr (!kFill) kept[local] = count;
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> kreciprocal_jaccard_cuda(const at::Tensor& crow, const at::Tensor& col,
                                                                        const at::Tensor& val,
                                                                        const at::Tensor& expansion, int64_t rows,
                                                                        double max_distance) {
  constexpr const char* op = "kreciprocal_jaccard";
  const c10::cuda::CUDAGuard device_guard(val.device());
  check_kreciprocal_jaccard_args(crow, col, val, expansion, rows, max_distance, op);
  const int64_t n = crow.size(0) - 1;
  // Chunk keys are local row * N + column, local row < N: N^2 must fit in int64.
  TORCH_CHECK_VALUE(n <= (int64_t(1) << 31), op, ": the CUDA kernel supports N <= 2^31 points, got N = ", n);
  const int64_t k2 = expansion.size(1);
  const at::Tensor crow_c = crow.contiguous(), col_c = col.contiguous(), val_c = val.contiguous();
  const at::Tensor exp_c = expansion.contiguous();
  const int64_t nnz = col.size(0);
  const at::TensorOptions index_options = crow.options();
  const at::TensorOptions value_options = val.options();
  if (rows == 0) {
    return {at::zeros({1}, index_options), at::empty({0}, index_options), at::empty({0}, value_options)};
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  // 1. V' = query expansion of V.
  const CsrView v_in{crow_c.data_ptr<int64_t>(), col_c.data_ptr<int64_t>(), val_c.data_ptr<float>()};
  at::Tensor cursor = at::empty({2 * n * k2}, index_options);
  int64_t* cursor_p = cursor.data_ptr<int64_t>();
  at::Tensor v_size = at::empty({n}, index_options);
  query_expansion_kernel<false><<<grid_for(n, kThreads), kThreads, 0, stream>>>(
      v_in, exp_c.data_ptr<int64_t>(), n, k2, cursor_p, cursor_p + n * k2, v_size.data_ptr<int64_t>(), nullptr,
      nullptr, nullptr);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const at::Tensor v_ptr = offsets_from_counts(v_size);
  const int64_t v_nnz = total_from_offsets(v_ptr);
  at::Tensor v_idx = at::empty({v_nnz}, index_options);
  at::Tensor v_val = at::empty({v_nnz}, value_options);
  query_expansion_kernel<true><<<grid_for(n, kThreads), kThreads, 0, stream>>>(
      v_in, exp_c.data_ptr<int64_t>(), n, k2, cursor_p, cursor_p + n * k2, nullptr, v_ptr.data_ptr<int64_t>(),
      v_idx.data_ptr<int64_t>(), v_val.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  cursor = at::Tensor();
  const CsrView v{v_ptr.data_ptr<int64_t>(), v_idx.data_ptr<int64_t>(), v_val.data_ptr<float>()};

  // 2. The inverted index of V'.
  at::Tensor sorted_idx, order;
  std::tie(sorted_idx, order) = at::sort(v_idx, /*stable=*/std::optional<bool>(true), /*dim=*/0,
                                        /*descending=*/false);
  at::Tensor inv_ptr = at::empty({n + 1}, index_options);
  column_starts_kernel<<<grid_for(n + 1, kThreads), kThreads, 0, stream>>>(sorted_idx.data_ptr<int64_t>(), v_nnz, n,
                                                                            inv_ptr.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  at::Tensor inv_idx = at::empty({v_nnz}, index_options);
  at::Tensor inv_val = at::empty({v_nnz}, value_options);
  gather_inverted_kernel<<<grid_for(v_nnz, kThreads), kThreads, 0, stream>>>(
      v, n, order.data_ptr<int64_t>(), v_nnz, inv_idx.data_ptr<int64_t>(), inv_val.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  sorted_idx = at::Tensor();
  order = at::Tensor();
  const CsrView inv{inv_ptr.data_ptr<int64_t>(), inv_idx.data_ptr<int64_t>(), inv_val.data_ptr<float>()};

  // 3. Jaccard rows, chunk by chunk.
  at::Tensor contrib_count = at::empty({rows}, index_options);
  contribution_counts_kernel<<<grid_for(rows, kThreads), kThreads, 0, stream>>>(v, inv.ptr, rows,
                                                                                contrib_count.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const at::Tensor contrib_ptr = offsets_from_counts(contrib_count);
  // The chunk plan needs the offsets on the host: one copy.
  const at::Tensor contrib_ptr_host = contrib_ptr.cpu();
  const int64_t* plan = contrib_ptr_host.data_ptr<int64_t>();
  const float limit = static_cast<float>(max_distance);
  at::Tensor kept = at::empty({rows}, index_options);
  std::vector<at::Tensor> piece_idx, piece_val;
  for (int64_t r0 = 0; r0 < rows;) {
    // The most rows whose contributions fit the budget, at least one.
    const int64_t fit = (std::upper_bound(plan + r0, plan + rows + 1, plan[r0] + kContributionBudget) - plan) - 1;
    const int64_t r1 = std::max(r0 + 1, fit);
    const int64_t chunk_rows = r1 - r0;
    const int64_t total = plan[r1] - plan[r0];
    const unsigned int blocks = grid_for(chunk_rows, kThreads);
    const unsigned int warp_blocks = grid_for(chunk_rows, kThreads / 32);

    at::Tensor key = at::empty({total}, index_options);
    at::Tensor value = at::empty({total}, value_options);
    contributions_kernel<<<warp_blocks, kThreads, 0, stream>>>(
        v, inv, contrib_ptr.data_ptr<int64_t>(), r0, chunk_rows, n, key.data_ptr<int64_t>(), value.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    at::Tensor sorted_key, sorted_order;
    std::tie(sorted_key, sorted_order) = at::sort(key, /*stable=*/std::optional<bool>(true), /*dim=*/0,
                                                  /*descending=*/false);
    key = at::Tensor();

    at::Tensor chunk_kept = kept.narrow(0, r0, chunk_rows);
    jaccard_rows_kernel<false><<<blocks, kThreads, 0, stream>>>(
        sorted_key.data_ptr<int64_t>(), sorted_order.data_ptr<int64_t>(), value.data_ptr<float>(),
        contrib_ptr.data_ptr<int64_t>(), r0, chunk_rows, n, limit, chunk_kept.data_ptr<int64_t>(), nullptr, nullptr,
        nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const at::Tensor out_ptr = offsets_from_counts(chunk_kept);
    const int64_t stored = total_from_offsets(out_ptr);
    at::Tensor out_idx = at::empty({stored}, index_options);
    at::Tensor out_val = at::empty({stored}, value_options);
    jaccard_rows_kernel<true><<<blocks, kThreads, 0, stream>>>(
        sorted_key.data_ptr<int64_t>(), sorted_order.data_ptr<int64_t>(), value.data_ptr<float>(),
        contrib_ptr.data_ptr<int64_t>(), r0, chunk_rows, n, limit, nullptr, out_ptr.data_ptr<int64_t>(),
        out_idx.data_ptr<int64_t>(), out_val.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    piece_idx.push_back(out_idx);
    piece_val.push_back(out_val);
    r0 = r1;
  }
  at::Tensor out_crow = offsets_from_counts(kept);
  at::Tensor out_col = piece_idx.size() == 1 ? piece_idx[0] : at::cat(piece_idx);
  at::Tensor out_values = piece_val.size() == 1 ? piece_val[0] : at::cat(piece_val);
  return {out_crow, out_col, out_values};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyreid, CUDA, m) {
  m.impl("kreciprocal_jaccard", &kreciprocal_jaccard_cuda);
}

}  // namespace pyreid
