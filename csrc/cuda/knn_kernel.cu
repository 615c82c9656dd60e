// CUDA knn: exact k nearest neighbours without the N x M matrix.
//
// Rows are taken in blocks and columns in tiles. For each (row block, column
// tile) cuBLAS (at::mm) writes the tile's dot products, then
// knn_select_tile_kernel runs one thread block per row:
//   1. every thread turns dot products into distances and keeps those whose
//      (distance, index) key beats the row's current k-th best (its running
//      list lives in global memory, sorted), appending them to a shared-memory
//      candidate buffer;
//   2. when the buffer would overflow, and at the end of the tile, the buffer
//      is bitonic-sorted and merged with the running list by rank (element i
//      of one sorted list lands at i + number of smaller keys in the other),
//      which keeps the k smallest keys and tightens the threshold.
// Keys are unique (indices differ), so the result is the exact, deterministic
// k smallest by (distance, index) whatever order the candidates arrive in.
// After the first tile few candidates pass the threshold, so the cost is one
// read of the tile. No fixed-size per-thread arrays: k is limited only by
// memory (the running lists are global).
//
// knn_row_max runs the same search with one more output: while a block reads
// its row's distances it also reduces their maximum (the point itself left
// out), folded into row_max[i] tile after tile, so the original re-ranking's
// row normaliser costs no second pass over the N x N distances.
#include <limits>

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

constexpr int kSelectThreads = 256;
constexpr int kBufferCapacity = 1024;         // candidates between merges; a power of two >= kSelectThreads
constexpr int64_t kColTile = 16384;
constexpr int64_t kTileElements = int64_t(1) << 26;  // dot-product tile: 256 MB in float32
constexpr int64_t kNoIndex = std::numeric_limits<int64_t>::max();

template <typename acc_t>
struct SelectBuffer {
  acc_t dist[kBufferCapacity];
  int64_t index[kBufferCapacity];
  int count;
  acc_t threshold_dist;
  int64_t threshold_index;
};

// Number of entries of the sorted list (dist, index)[0, len) whose key is
// smaller than (d, i).
template <typename acc_t>
__device__ __forceinline__ int64_t count_smaller(const acc_t* dist, const int64_t* index, int64_t len, acc_t d,
                                                 int64_t i) {
  int64_t lo = 0, hi = len;
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    if (key_less(dist[mid], index[mid], d, i)) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Sorts buf[0, count) by key, merges it into the sorted running list
// (list_dist/list_index, length kk) through `scratch`, then empties the
// buffer and refreshes the threshold. Called by every thread of the block.
template <typename acc_t>
__device__ void merge_buffer(SelectBuffer<acc_t>& buf, acc_t* list_dist, int64_t* list_index,
                             acc_t* scratch_dist, int64_t* scratch_index, int64_t kk) {
  __syncthreads();
  const int count = buf.count;
  int padded = 1;
  while (padded < count) padded <<= 1;
  for (int t = count + threadIdx.x; t < padded; t += blockDim.x) {
    buf.dist[t] = std::numeric_limits<acc_t>::infinity();
    buf.index[t] = kNoIndex;
  }
  __syncthreads();
  // Bitonic sort, ascending by (distance, index).
  for (int size = 2; size <= padded; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int t = threadIdx.x; t < (padded >> 1); t += blockDim.x) {
        const int lo = 2 * t - (t & (stride - 1));
        const int hi = lo + stride;
        const bool ascending = (lo & size) == 0;
        const bool hi_smaller = key_less(buf.dist[hi], buf.index[hi], buf.dist[lo], buf.index[lo]);
        const bool lo_smaller = key_less(buf.dist[lo], buf.index[lo], buf.dist[hi], buf.index[hi]);
        if (ascending ? hi_smaller : lo_smaller) {
          const acc_t d = buf.dist[lo];
          buf.dist[lo] = buf.dist[hi];
          buf.dist[hi] = d;
          const int64_t i = buf.index[lo];
          buf.index[lo] = buf.index[hi];
          buf.index[hi] = i;
        }
      }
      __syncthreads();
    }
  }
  // Merge by rank: the positions of both lists' elements form a permutation
  // of [0, kk + count); keep those below kk.
  for (int64_t i = threadIdx.x; i < kk; i += blockDim.x) {
    const acc_t d = list_dist[i];
    const int64_t idx = list_index[i];
    const int64_t pos = i + count_smaller(buf.dist, buf.index, count, d, idx);
    if (pos < kk) {
      scratch_dist[pos] = d;
      scratch_index[pos] = idx;
    }
  }
  for (int j = threadIdx.x; j < count; j += blockDim.x) {
    const acc_t d = buf.dist[j];
    const int64_t idx = buf.index[j];
    const int64_t pos = j + count_smaller(list_dist, list_index, kk, d, idx);
    if (pos < kk) {
      scratch_dist[pos] = d;
      scratch_index[pos] = idx;
    }
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < kk; i += blockDim.x) {
    list_dist[i] = scratch_dist[i];
    list_index[i] = scratch_index[i];
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    buf.count = 0;
    buf.threshold_dist = list_dist[kk - 1];
    buf.threshold_index = list_index[kk - 1];
  }
  __syncthreads();
}

// Largest v over the block, for thread 0. Every thread must call it.
template <typename acc_t>
__device__ __forceinline__ acc_t block_max_to_thread0(acc_t v) {
  __shared__ acc_t warp_max[kSelectThreads / 32];
  v = warp_all_max(v);
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < int(blockDim.x >> 5); ++w) v = warp_max[w] > v ? warp_max[w] : v;
  }
  return v;
}

// One block per row of the row block. dot: rows x cols (this tile);
// lists/scratch: rows x kk, the running k best of each row (kk may be 0 when
// only row_max is wanted). row_max: null, or N running maxima over the
// columns other than the row's own point (distances are >= 0, so 0 starts it).
template <typename acc_t>
__global__ void __launch_bounds__(kSelectThreads)
    knn_select_tile_kernel(const acc_t* __restrict__ dot, int64_t cols, const acc_t* __restrict__ x_terms,
                           const acc_t* __restrict__ y_terms, int64_t row0, int64_t col0, Metric metric,
                           bool exclude_self, int64_t kk, acc_t* list_dist, int64_t* list_index,
                           acc_t* scratch_dist, int64_t* scratch_index, acc_t* __restrict__ row_max) {
  __shared__ SelectBuffer<acc_t> buf;
  const int64_t r = blockIdx.x;
  const int64_t i = row0 + r;
  const acc_t* dot_row = dot + r * cols;
  const acc_t x_term = x_terms[i];
  acc_t* my_dist = list_dist + r * kk;
  int64_t* my_index = list_index + r * kk;
  acc_t* my_scratch_dist = scratch_dist + r * kk;
  int64_t* my_scratch_index = scratch_index + r * kk;
  if (threadIdx.x == 0) {
    buf.count = 0;
    if (kk > 0) {
      buf.threshold_dist = my_dist[kk - 1];
      buf.threshold_index = my_index[kk - 1];
    }
  }
  __syncthreads();

  acc_t largest = 0;
  for (int64_t c = 0; c < cols; c += blockDim.x) {
    const int64_t col = c + threadIdx.x;
    acc_t d = 0;
    int64_t j = 0;
    bool take = false;
    if (col < cols) {
      j = col0 + col;
      d = distance_from_dot(dot_row[col], x_term, y_terms[j], metric);
      const bool other = !(exclude_self && j == i);
      if (other && d > largest) largest = d;
      take = kk > 0 && other && key_less(d, j, buf.threshold_dist, buf.threshold_index);
    }
    // Also a barrier: every thread has read the threshold and the count.
    const int taken = __syncthreads_count(take);
    if (taken == 0) continue;
    if (buf.count + taken > kBufferCapacity) {
      merge_buffer(buf, my_dist, my_index, my_scratch_dist, my_scratch_index, kk);
    }
    if (take) {
      const int slot = atomicAdd(&buf.count, 1);
      buf.dist[slot] = d;
      buf.index[slot] = j;
    }
  }
  __syncthreads();
  if (buf.count > 0) {
    merge_buffer(buf, my_dist, my_index, my_scratch_dist, my_scratch_index, kk);
  }
  if (row_max != nullptr) {
    largest = block_max_to_thread0(largest);
    // One block per row per launch and launches in stream order: no race.
    if (threadIdx.x == 0 && largest > row_max[i]) row_max[i] = largest;
  }
}

// Copies the finished running lists of a row block into the outputs, after
// the self column when the data set is x itself.
template <typename scalar_t, typename acc_t>
__global__ void knn_write_kernel(const acc_t* __restrict__ list_dist, const int64_t* __restrict__ list_index,
                                 int64_t rows, int64_t row0, int64_t kk, int64_t k, bool self,
                                 scalar_t* __restrict__ out_dist, int64_t* __restrict__ out_index) {
  const int64_t total = rows * k;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const int64_t r = e / k;
    const int64_t c = e % k;
    const int64_t i = row0 + r;
    if (self && c == 0) {
      out_dist[i * k] = scalar_t(0);
      out_index[i * k] = i;
    } else {
      const int64_t src = r * kk + c - (self ? 1 : 0);
      out_dist[i * k + c] = static_cast<scalar_t>(list_dist[src]);
      out_index[i * k + c] = list_index[src];
    }
  }
}

// The tiled search of knn and knn_row_max (arguments already checked, device
// guard set). row_max: null, or N zeros in the accumulation dtype that become
// max_{j != i} d(i, j) (self search only).
std::tuple<at::Tensor, at::Tensor> knn_search(const at::Tensor& x, const std::optional<at::Tensor>& y_opt,
                                              int64_t k, Metric metric, at::Tensor* row_max, const char* op) {
  const bool self = !y_opt.has_value();
  const int64_t n = x.size(0), m = self ? n : y_opt->size(0);
  at::Tensor out_dist = empty_output({n, k}, x.options(), op, "N x k distances");
  at::Tensor out_index = empty_output({n, k}, x.options().dtype(at::kLong), op, "N x k indices");
  if (n == 0) return {out_dist, out_index};

  const at::ScalarType acc = accumulate_type(x.scalar_type());
  const at::Tensor xa = x.to(acc).contiguous();
  const at::Tensor ya = self ? xa : y_opt->to(acc).contiguous();
  const at::Tensor x_terms = cuda::norm_terms(xa, metric);
  const at::Tensor y_terms = self ? x_terms : cuda::norm_terms(ya, metric);
  const int64_t kk = self ? k - 1 : k;
  const int64_t cols_per_tile = std::min(m, kColTile);
  // The dot tile and the four rows x kk running lists share one budget.
  const int64_t rows_per_block =
      std::max<int64_t>(1, std::min(n, kTileElements / (cols_per_tile + 4 * std::max<int64_t>(kk, 1))));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  constexpr int threads = 256;

  at::Tensor dot_buffer = at::empty({rows_per_block * cols_per_tile}, xa.options());
  at::Tensor list_dist = at::empty({rows_per_block * std::max<int64_t>(kk, 1)}, xa.options());
  at::Tensor list_index = at::empty({rows_per_block * std::max<int64_t>(kk, 1)}, out_index.options());
  at::Tensor scratch_dist = at::empty_like(list_dist);
  at::Tensor scratch_index = at::empty_like(list_index);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "knn_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    for (int64_t r0 = 0; r0 < n; r0 += rows_per_block) {
      const int64_t rows = std::min(rows_per_block, n - r0);
      if (kk > 0 || row_max != nullptr) {
        if (kk > 0) {
          list_dist.fill_(std::numeric_limits<acc_t>::infinity());
          list_index.fill_(kNoIndex);
        }
        for (int64_t c0 = 0; c0 < m; c0 += cols_per_tile) {
          const int64_t cols = std::min(cols_per_tile, m - c0);
          at::Tensor dot = dot_buffer.narrow(0, 0, rows * cols).view({rows, cols});
          at::mm_out(dot, xa.narrow(0, r0, rows), ya.narrow(0, c0, cols).t());
          knn_select_tile_kernel<acc_t><<<static_cast<unsigned int>(rows), kSelectThreads, 0, stream>>>(
              dot.data_ptr<acc_t>(), cols, x_terms.data_ptr<acc_t>(), y_terms.data_ptr<acc_t>(), r0, c0, metric,
              self, kk, list_dist.data_ptr<acc_t>(), list_index.data_ptr<int64_t>(),
              scratch_dist.data_ptr<acc_t>(), scratch_index.data_ptr<int64_t>(),
              row_max != nullptr ? row_max->data_ptr<acc_t>() : nullptr);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      }
      knn_write_kernel<scalar_t, acc_t><<<grid_for(rows * k, threads), threads, 0, stream>>>(
          list_dist.data_ptr<acc_t>(), list_index.data_ptr<int64_t>(), rows, r0, kk, k, self,
          out_dist.data_ptr<scalar_t>(), out_index.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {out_dist, out_index};
}

std::tuple<at::Tensor, at::Tensor> knn_cuda(const at::Tensor& x, const std::optional<at::Tensor>& y_opt,
                                            int64_t k, c10::string_view metric_name) {
  constexpr const char* op = "knn";
  const Metric metric = check_knn_args(x, y_opt, k, metric_name, op);
  const c10::cuda::CUDAGuard device_guard(x.device());
  return knn_search(x, y_opt, k, metric, nullptr, op);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> knn_row_max_cuda(const at::Tensor& x, int64_t k,
                                                                c10::string_view metric_name) {
  constexpr const char* op = "knn_row_max";
  const Metric metric = check_knn_args(x, std::nullopt, k, metric_name, op);
  const c10::cuda::CUDAGuard device_guard(x.device());
  at::Tensor row_max = at::zeros({x.size(0)}, x.options().dtype(accumulate_type(x.scalar_type())));
  auto [dist, index] = knn_search(x, std::nullopt, k, metric, &row_max, op);
  return {dist, index, row_max.to(x.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyreid, CUDA, m) {
  m.impl("knn", &knn_cuda);
  m.impl("knn_row_max", &knn_row_max_cuda);
}

}  // namespace pyreid
