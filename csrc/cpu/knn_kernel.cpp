// CPU knn: exact k nearest neighbours without the N x M matrix.
//
// Every row keeps a bounded max-heap of its k best (distance, index) keys; a
// BLAS product computes one tile of dot products at a time and the tile's
// distances are pushed into the heaps (the key order is total, so the result
// does not depend on the order candidates arrive in). Memory beyond inputs
// and outputs: one tile plus the heaps (O(N k)).
//
// Searching x against itself (y = None), distances are symmetric, so only
// tiles on or above the diagonal are computed (about half the products) and
// each feeds two sets of heaps: its rows see the columns (phase A, parallel
// over rows) and its columns see the rows (phase B, parallel over column
// chunks, so no two threads touch one heap). Every unordered pair is then
// evaluated once, from one dot product: d(i, j) == d(j, i) exactly.
#include <algorithm>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/distance_checks.h"
#include "common/distance.h"
#include "cpu/distance_tiles.h"

namespace pyreid {
namespace {

// 512 x 2048 float32 tiles (4 MB): BLAS already runs at its peak on tiles
// this size on our machines (about 62 GFLOP/s, as on 2048 x 4096), and the
// tile stays in cache between the product and the two selection passes that
// read it. 2048 x 4096 tiles (32 MB) do not fit and go to memory and back
// between those passes: about 15% slower at N = 20,000 (benchmarks/bench_knn.py).
constexpr int64_t kRowBlock = 512;
constexpr int64_t kColTile = 2048;
// Columns per task in phase B: their heap tops stay in cache while the task
// walks down the tile.
constexpr int64_t kColumnChunk = 64;

// One bounded max-heap of size kk per row, on a flat array.
template <typename acc_t>
class RowHeaps {
 public:
  using Key = std::pair<acc_t, int64_t>;

  RowHeaps(int64_t rows, int64_t kk) : kk_(kk), keys_(static_cast<size_t>(rows * kk)), sizes_(rows, 0) {}

  // The key a candidate must beat to enter row r's heap: its largest key
  // once full, (+inf, max) before.
  Key threshold(int64_t r) const {
    if (sizes_[r] < kk_) return Key(std::numeric_limits<acc_t>::infinity(), std::numeric_limits<int64_t>::max());
    return keys_[r * kk_];
  }

  // Offers candidate (d, j) to row r's heap.
  void push(int64_t r, acc_t d, int64_t j) {
    Key* heap = keys_.data() + r * kk_;
    int64_t& size = sizes_[r];
    if (size < kk_) {
      heap[size++] = Key(d, j);
      std::push_heap(heap, heap + size, less);
    } else if (key_less(d, j, heap[0].first, heap[0].second)) {
      replace_top(heap, size, Key(d, j));
    }
  }

  // Sorts row r's heap ascending and writes it to dist/index.
  template <typename scalar_t>
  void write_sorted(int64_t r, scalar_t* dist, int64_t* index) {
    Key* heap = keys_.data() + r * kk_;
    std::sort_heap(heap, heap + kk_, less);
    for (int64_t c = 0; c < kk_; ++c) {
      dist[c] = static_cast<scalar_t>(heap[c].first);
      index[c] = heap[c].second;
    }
  }

  void clear() { std::fill(sizes_.begin(), sizes_.end(), 0); }

 private:
  static bool less(const Key& a, const Key& b) { return key_less(a.first, a.second, b.first, b.second); }

  // Puts v in place of the largest key and sifts it down: one pass of log k
  // steps, half of std::pop_heap + std::push_heap.
  static void replace_top(Key* heap, int64_t size, const Key& v) {
    int64_t pos = 0;
    for (int64_t child = 1; child < size; child = 2 * pos + 1) {
      if (child + 1 < size && less(heap[child], heap[child + 1])) ++child;
      if (!less(v, heap[child])) break;
      heap[pos] = heap[child];
      pos = child;
    }
    heap[pos] = v;
  }

  int64_t kk_;
  std::vector<Key> keys_;
  std::vector<int64_t> sizes_;
};

// Candidates are scanned in groups of kGroup: the group's distances and its
// comparison with the threshold(s) are plain loops the compiler vectorises;
// only a group with a passing lane (rare once the heaps fill) goes through
// the scalar heap update.
constexpr int64_t kGroup = 16;

// Offers row `row` the candidates j = index0 + c, c in [c_begin, c_end), at
// distances from dot_row[c] and terms[c]. With kRowMax, also raises
// *row_max to the largest of those distances.
template <Metric metric, bool kRowMax = false, typename acc_t>
inline void offer_row(RowHeaps<acc_t>& heaps, int64_t row, acc_t x_term, const acc_t* dot_row, const acc_t* terms,
                      int64_t c_begin, int64_t c_end, int64_t index0, acc_t* row_max = nullptr) {
  auto thr = heaps.threshold(row);
  acc_t d[kGroup];
  acc_t largest = kRowMax ? *row_max : acc_t(0);
  for (int64_t c = c_begin; c < c_end; c += kGroup) {
    const int64_t len = std::min(kGroup, c_end - c);
    bool any = false;
    if (len == kGroup) {
      for (int64_t t = 0; t < kGroup; ++t) d[t] = distance_from_dot(dot_row[c + t], x_term, terms[c + t], metric);
      for (int64_t t = 0; t < kGroup; ++t) any |= d[t] <= thr.first;
      if constexpr (kRowMax) {
        for (int64_t t = 0; t < kGroup; ++t) largest = std::max(largest, d[t]);
      }
    } else {
      for (int64_t t = 0; t < len; ++t) {
        d[t] = distance_from_dot(dot_row[c + t], x_term, terms[c + t], metric);
        any |= d[t] <= thr.first;
        if constexpr (kRowMax) largest = std::max(largest, d[t]);
      }
    }
    if (!any) continue;
    for (int64_t t = 0; t < len; ++t) {
      if (key_less(d[t], index0 + c + t, thr.first, thr.second)) {
        heaps.push(row, d[t], index0 + c + t);
        thr = heaps.threshold(row);
      }
    }
  }
  if constexpr (kRowMax) *row_max = largest;
}

// x (N x D) against y (M x D): row blocks of x, column tiles of y.
template <Metric metric, typename scalar_t, typename acc_t>
void knn_cross(const at::Tensor& xa, const at::Tensor& ya, const acc_t* xt, const acc_t* yt, int64_t k,
               scalar_t* dist_out, int64_t* index_out) {
  const int64_t n = xa.size(0), m = ya.size(0);
  const int64_t row_block = std::min(n, kRowBlock);
  const int64_t col_tile = std::min(m, kColTile);
  at::Tensor buffer = at::empty({row_block * col_tile}, xa.options());
  RowHeaps<acc_t> heaps(row_block, k);
  for (int64_t r0 = 0; r0 < n; r0 += row_block) {
    const int64_t rows = std::min(row_block, n - r0);
    heaps.clear();
    for (int64_t c0 = 0; c0 < m; c0 += col_tile) {
      const int64_t cols = std::min(col_tile, m - c0);
      at::Tensor dot = buffer.narrow(0, 0, rows * cols).view({rows, cols});
      at::mm_out(dot, xa.narrow(0, r0, rows), ya.narrow(0, c0, cols).t());
      const acc_t* dotp = dot.data_ptr<acc_t>();
      at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          offer_row<metric>(heaps, r, xt[r0 + r], dotp + r * cols, yt + c0, 0, cols, c0);
        }
      });
    }
    at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        heaps.write_sorted(r, dist_out + (r0 + r) * k, index_out + (r0 + r) * k);
      }
    });
  }
}

// x against itself: tiles on and above the diagonal, each used twice.
// Column 0 of the output is the point itself; the heaps fill columns 1..k-1.
// With kRowMax, row_max[i] becomes max_j d(i, j) over all j != i (0 when
// N = 1), from the same distances, in the accumulation dtype.
template <Metric metric, typename scalar_t, typename acc_t, bool kRowMax = false>
void knn_self(const at::Tensor& xa, const acc_t* xt, int64_t k, scalar_t* dist_out, int64_t* index_out,
              acc_t* row_max = nullptr) {
  const int64_t n = xa.size(0);
  const int64_t kk = k - 1;
  if constexpr (kRowMax) std::fill(row_max, row_max + n, acc_t(0));
  // k == 1 needs no heaps, but the row maxima still need every pair.
  const int64_t heap_size = std::max<int64_t>(kk, 1);
  at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      dist_out[i * k] = scalar_t(0);
      index_out[i * k] = i;
    }
  });
  if (kk == 0 && !kRowMax) return;
  const int64_t row_block = std::min(n, kRowBlock);
  const int64_t col_tile = std::min(n, kColTile);
  at::Tensor buffer = at::empty({row_block * col_tile}, xa.options());
  RowHeaps<acc_t> heaps(n, heap_size);
  for (int64_t r0 = 0; r0 < n; r0 += row_block) {
    const int64_t rows = std::min(row_block, n - r0);
    for (int64_t c0 = r0; c0 < n; c0 += col_tile) {
      const int64_t cols = std::min(col_tile, n - c0);
      at::Tensor dot = buffer.narrow(0, 0, rows * cols).view({rows, cols});
      at::mm_out(dot, xa.narrow(0, r0, rows), xa.narrow(0, c0, cols).t());
      const acc_t* dotp = dot.data_ptr<acc_t>();
      // Only pairs i < j: the strict upper triangle of the diagonal block.
      // Phase A: row i is offered every column j > i.
      at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const int64_t i = r0 + r;
          offer_row<metric, kRowMax>(heaps, i, xt[i], dotp + r * cols, xt + c0, std::max<int64_t>(0, i + 1 - c0), cols,
                                     c0, kRowMax ? row_max + i : nullptr);
        }
      });
      // Phase B: column j is offered every row i < j.
      const int64_t chunks = (cols + kColumnChunk - 1) / kColumnChunk;
      at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t chunk = begin; chunk < end; ++chunk) {
          const int64_t c_begin = chunk * kColumnChunk;
          const int64_t c_end = std::min(cols, c_begin + kColumnChunk);
          // The chunk's thresholds, kept local while the task walks down the tile.
          acc_t thr_dist[kColumnChunk];
          int64_t thr_index[kColumnChunk];
          for (int64_t c = c_begin; c < c_end; ++c) {
            const auto t = heaps.threshold(c0 + c);
            thr_dist[c - c_begin] = t.first;
            thr_index[c - c_begin] = t.second;
          }
          acc_t d[kColumnChunk];
          acc_t largest[kColumnChunk];
          if constexpr (kRowMax) {
            for (int64_t c = c_begin; c < c_end; ++c) largest[c - c_begin] = row_max[c0 + c];
          }
          const acc_t* terms = xt + c0 + c_begin;
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t i = r0 + r;
            const acc_t* dot_row = dotp + r * cols + c_begin;
            const acc_t x_term = xt[i];
            const int64_t first = std::max<int64_t>(0, i + 1 - c0 - c_begin);  // pairs i < j only
            const int64_t len = c_end - c_begin;
            if (first >= len) continue;
            bool any = false;
            if (first == 0 && len == kColumnChunk) {
              for (int64_t t = 0; t < kColumnChunk; ++t) d[t] = distance_from_dot(dot_row[t], terms[t], x_term, metric);
              for (int64_t t = 0; t < kColumnChunk; ++t) any |= d[t] <= thr_dist[t];
              if constexpr (kRowMax) {
                for (int64_t t = 0; t < kColumnChunk; ++t) largest[t] = std::max(largest[t], d[t]);
              }
            } else {
              for (int64_t t = first; t < len; ++t) {
                d[t] = distance_from_dot(dot_row[t], terms[t], x_term, metric);
                any |= d[t] <= thr_dist[t];
                if constexpr (kRowMax) largest[t] = std::max(largest[t], d[t]);
              }
            }
            if (kk == 0 || !any) continue;
            for (int64_t t = first; t < len; ++t) {
              if (key_less(d[t], i, thr_dist[t], thr_index[t])) {
                heaps.push(c0 + c_begin + t, d[t], i);
                const auto th = heaps.threshold(c0 + c_begin + t);
                thr_dist[t] = th.first;
                thr_index[t] = th.second;
              }
            }
          }
          if constexpr (kRowMax) {
            for (int64_t c = c_begin; c < c_end; ++c) row_max[c0 + c] = largest[c - c_begin];
          }
        }
      });
    }
  }
  if (kk == 0) return;
  at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) heaps.write_sorted(i, dist_out + i * k + 1, index_out + i * k + 1);
  });
}

std::tuple<at::Tensor, at::Tensor> knn_cpu(const at::Tensor& x, const std::optional<at::Tensor>& y_opt,
                                           int64_t k, c10::string_view metric_name) {
  constexpr const char* op = "knn";
  const Metric metric = check_knn_args(x, y_opt, k, metric_name, op);
  const bool self = !y_opt.has_value();
  const int64_t n = x.size(0);
  at::Tensor out_dist = empty_output({n, k}, x.options(), op, "N x k distances");
  at::Tensor out_index = empty_output({n, k}, x.options().dtype(at::kLong), op, "N x k indices");
  if (n == 0) return {out_dist, out_index};

  const at::ScalarType acc = accumulate_type(x.scalar_type());
  const at::Tensor xa = x.to(acc).contiguous();
  const at::Tensor x_terms = cpu::norm_terms(xa, metric);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "knn_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    scalar_t* dist_out = out_dist.data_ptr<scalar_t>();
    int64_t* index_out = out_index.data_ptr<int64_t>();
    const auto run = [&](auto metric_constant) {
      constexpr Metric M = decltype(metric_constant)::value;
      if (self) {
        knn_self<M, scalar_t, acc_t>(xa, x_terms.data_ptr<acc_t>(), k, dist_out, index_out);
      } else {
        const at::Tensor ya = y_opt->to(acc).contiguous();
        const at::Tensor y_terms = cpu::norm_terms(ya, metric);
        knn_cross<M, scalar_t, acc_t>(xa, ya, x_terms.data_ptr<acc_t>(), y_terms.data_ptr<acc_t>(), k, dist_out,
                                      index_out);
      }
    };
    cpu::with_metric_constant(metric, run);
  });
  return {out_dist, out_index};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> knn_row_max_cpu(const at::Tensor& x, int64_t k,
                                                               c10::string_view metric_name) {
  constexpr const char* op = "knn_row_max";
  const Metric metric = check_knn_args(x, std::nullopt, k, metric_name, op);
  const int64_t n = x.size(0);
  at::Tensor out_dist = empty_output({n, k}, x.options(), op, "N x k distances");
  at::Tensor out_index = empty_output({n, k}, x.options().dtype(at::kLong), op, "N x k indices");
  const at::ScalarType acc = accumulate_type(x.scalar_type());
  at::Tensor row_max = at::empty({n}, x.options().dtype(acc));  // knn_self fills it
  if (n == 0) return {out_dist, out_index, row_max.to(x.scalar_type())};

  const at::Tensor xa = x.to(acc).contiguous();
  const at::Tensor x_terms = cpu::norm_terms(xa, metric);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "knn_row_max_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto run = [&](auto metric_constant) {
      constexpr Metric M = decltype(metric_constant)::value;
      knn_self<M, scalar_t, acc_t, true>(xa, x_terms.data_ptr<acc_t>(), k, out_dist.data_ptr<scalar_t>(),
                                         out_index.data_ptr<int64_t>(), row_max.data_ptr<acc_t>());
    };
    cpu::with_metric_constant(metric, run);
  });
  return {out_dist, out_index, row_max.to(x.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyreid, CPU, m) {
  m.impl("knn", &knn_cpu);
  m.impl("knn_row_max", &knn_row_max_cpu);
}

}  // namespace pyreid
