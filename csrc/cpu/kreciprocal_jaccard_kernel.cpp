// CPU kreciprocal_jaccard: query expansion and sparse Jaccard distances.
//
// 1. V' = query expansion of V, one output row per input row, parallel over
//    rows: each task merges the k2 sorted rows through a dense accumulator of
//    N floats (plus the list of touched columns), adding them in t order.
// 2. The inverted index of V' (CSC: for each column, the rows holding it, in
//    row order), built by a counting sort.
// 3. Jaccard rows, parallel over fixed blocks of rows: for row i, for each
//    column c of V'[i] ascending, for each row r of column c,
//    acc[r] += min(V'[i,c], V'[r,c]); every touched r gives one stored pair.
//    Blocks write to their own buffers, copied afterwards in row order into
//    the output (each block freed once copied). When every row is asked for
//    (jaccard_graph), row i visits only rows r >= i, so each unordered pair
//    is computed once, and the kept pairs are mirrored into row r: half the
//    accumulations, the same values.
// Each sum runs in a fixed order that does not depend on the threads.
#include <algorithm>
#include <numeric>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/kreciprocal_checks.h"
#include "common/kreciprocal.h"

namespace pyreid {
namespace {

struct Csr {
  std::vector<int64_t> ptr;  // rows + 1
  std::vector<int64_t> idx;
  std::vector<float> val;
};

// A range of slots, for range-for loops.
struct Slots {
  const int64_t* first;
  const int64_t* last;
  const int64_t* begin() const { return first; }
  const int64_t* end() const { return last; }
};

// A dense float accumulator over n slots that remembers which slots it
// touched, so it can be read and cleared in O(touched). Every value added is
// >= 0 (weights of V and their minima), so a negative sum marks an untouched
// slot: one array, one memory access per add.
class SparseAccumulator {
 public:
  explicit SparseAccumulator(int64_t n)
      // touched_ has one spare entry: add_min writes its slot before it
      // knows whether the slot is new, also once all n are touched.
      : sum_(static_cast<size_t>(n), kUntouched), touched_(static_cast<size_t>(n + 1)), kept_(static_cast<size_t>(n)) {}

  void add(int64_t slot, float v) {
    float& s = sum_[slot];
    if (s < 0.0f) {
      s = v;  // == 0 + v
      touched_[count_++] = slot;
    } else {
      s += v;
    }
  }

  // sum[rows[t]] += min(v, vals[t]) for t < len: the Jaccard pass's inner
  // loop. Branch-free (whether a slot is new is data, not control: half the
  // slots are) and on local pointers, so nothing is reloaded per entry.
  // max(s, 0) + m is m for an untouched slot and s + m otherwise, the same
  // bits as add().
  void add_min(const int64_t* rows, const float* vals, int64_t len, float v) {
    float* sum = sum_.data();
    int64_t* touched = touched_.data();
    int64_t count = count_;
    for (int64_t t = 0; t < len; ++t) {
      const int64_t r = rows[t];
      const float s = sum[r];
      touched[count] = r;
      count += s < 0.0f ? 1 : 0;
      sum[r] = std::max(s, 0.0f) + std::min(v, vals[t]);
    }
    count_ = count;
  }

  // The touched slots for which keep(slot) holds, ascending. Filtering
  // before sorting: when few are kept (a max_distance below 1, as DBSCAN's
  // eps needs) the sort is short.
  template <typename Keep>
  Slots sorted_touched_if(const Keep& keep) {
    int64_t kept = 0;
    for (int64_t t = 0; t < count_; ++t) {
      if (keep(touched_[t])) kept_[kept++] = touched_[t];
    }
    std::sort(kept_.data(), kept_.data() + kept);
    return {kept_.data(), kept_.data() + kept};
  }
  // Touched slots in ascending order.
  Slots sorted_touched() {
    std::sort(touched_.data(), touched_.data() + count_);
    return {touched_.data(), touched_.data() + count_};
  }
  float sum(int64_t slot) const { return sum_[slot]; }
  bool touched(int64_t slot) const { return sum_[slot] >= 0.0f; }

  void clear() {
    for (int64_t t = 0; t < count_; ++t) sum_[touched_[t]] = kUntouched;
    count_ = 0;
  }

 private:
  static constexpr float kUntouched = -1.0f;
  std::vector<float> sum_;
  std::vector<int64_t> touched_;  // the first count_ entries
  std::vector<int64_t> kept_;
  int64_t count_ = 0;
};

// Rows are processed in blocks of this many; each block owns its output buffers.
constexpr int64_t kRowBlock = 128;

// Runs row_fn(i, acc, out) for every row in [0, rows) in parallel blocks of
// kRowBlock rows; each block collects its rows' (index, value) lists in its
// own Csr (ptr relative to the block).
template <typename RowFn>
std::vector<Csr> build_blocks(int64_t rows, int64_t n, const RowFn& row_fn) {
  const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
  std::vector<Csr> parts(static_cast<size_t>(blocks));
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    SparseAccumulator acc(n);
    for (int64_t k = begin; k < end; ++k) {
      // Blocks taken from both ends in turn (0, last, 1, last - 1, ...): in
      // the symmetric pass early rows do most of the work (row i visits the
      // rows r >= i), and parallel_for gives each thread a contiguous range.
      const int64_t b = k % 2 == 0 ? k / 2 : blocks - 1 - k / 2;
      Csr& part = parts[b];
      const int64_t r0 = b * kRowBlock, r1 = std::min(rows, r0 + kRowBlock);
      part.ptr.push_back(0);
      for (int64_t i = r0; i < r1; ++i) {
        row_fn(i, acc, part);
        part.ptr.push_back(static_cast<int64_t>(part.idx.size()));
      }
    }
  });
  return parts;
}

// Concatenates the blocks in row order into ptr (rows + 1), idx and val
// (allocated by the caller with the total size), freeing each block once copied.
void concat_blocks(std::vector<Csr>& parts, int64_t* ptr, int64_t* idx, float* val) {
  std::vector<int64_t> starts(parts.size() + 1, 0);
  for (size_t b = 0; b < parts.size(); ++b) starts[b + 1] = starts[b] + static_cast<int64_t>(parts[b].idx.size());
  ptr[0] = 0;
  at::parallel_for(0, static_cast<int64_t>(parts.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      Csr& part = parts[b];
      for (size_t t = 1; t < part.ptr.size(); ++t) ptr[b * kRowBlock + t] = starts[b] + part.ptr[t];
      std::copy(part.idx.begin(), part.idx.end(), idx + starts[b]);
      std::copy(part.val.begin(), part.val.end(), val + starts[b]);
      part = Csr();  // free as we go
    }
  });
}

int64_t total_size(const std::vector<Csr>& parts) {
  int64_t total = 0;
  for (const Csr& part : parts) total += static_cast<int64_t>(part.idx.size());
  return total;
}

// The upper-triangle rows (row i holds its pairs (i, j), j >= i, ascending)
// as the full symmetric matrix: row i = the mirrored pairs (r, i), r < i, in
// ascending r, then its own. Both halves come from the same sums (the
// overlap of i and j adds min(V'[i,c], V'[j,c]) over the shared columns c
// in ascending order whichever row computes it), so the matrix is exactly
// what the row-by-row computation gives.
std::vector<int64_t> mirrored_row_sizes(const std::vector<Csr>& upper, int64_t n) {
  std::vector<int64_t> sizes(static_cast<size_t>(n), 0);
  for (size_t b = 0; b < upper.size(); ++b) {
    const Csr& part = upper[b];
    for (size_t t = 0; t + 1 < part.ptr.size(); ++t) {
      const int64_t i = static_cast<int64_t>(b) * kRowBlock + static_cast<int64_t>(t);
      sizes[i] += part.ptr[t + 1] - part.ptr[t];
      for (int64_t p = part.ptr[t]; p < part.ptr[t + 1]; ++p) {
        if (part.idx[p] > i) ++sizes[part.idx[p]];
      }
    }
  }
  return sizes;
}

void mirror_blocks(std::vector<Csr>& upper, const std::vector<int64_t>& sizes, int64_t* ptr, int64_t* idx,
                   float* val) {
  const int64_t n = static_cast<int64_t>(sizes.size());
  ptr[0] = 0;
  for (int64_t i = 0; i < n; ++i) ptr[i + 1] = ptr[i] + sizes[i];
  // The mirrored pairs, in ascending source row: a sequential pass (a few
  // entries per row) that leaves each row's fill point after them.
  std::vector<int64_t> fill(ptr, ptr + n);
  for (size_t b = 0; b < upper.size(); ++b) {
    const Csr& part = upper[b];
    for (size_t t = 0; t + 1 < part.ptr.size(); ++t) {
      const int64_t r = static_cast<int64_t>(b) * kRowBlock + static_cast<int64_t>(t);
      for (int64_t p = part.ptr[t]; p < part.ptr[t + 1]; ++p) {
        const int64_t j = part.idx[p];
        if (j <= r) continue;
        idx[fill[j]] = r;
        val[fill[j]++] = part.val[p];
      }
    }
  }
  // Each row's own pairs after its mirrored ones.
  at::parallel_for(0, static_cast<int64_t>(upper.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      Csr& part = upper[b];
      for (size_t t = 0; t + 1 < part.ptr.size(); ++t) {
        const int64_t i = b * kRowBlock + static_cast<int64_t>(t);
        std::copy(part.idx.begin() + part.ptr[t], part.idx.begin() + part.ptr[t + 1], idx + fill[i]);
        std::copy(part.val.begin() + part.ptr[t], part.val.begin() + part.ptr[t + 1], val + fill[i]);
      }
      part = Csr();  // free as we go
    }
  });
}

// The blocks as one Csr.
Csr concat_to_csr(std::vector<Csr> parts, int64_t rows) {
  Csr out;
  const int64_t total = total_size(parts);
  out.ptr.resize(static_cast<size_t>(rows + 1));
  out.idx.resize(static_cast<size_t>(total));
  out.val.resize(static_cast<size_t>(total));
  concat_blocks(parts, out.ptr.data(), out.idx.data(), out.val.data());
  return out;
}

// V'[i] = (sum over t < k2 of V[expansion[i, t]]) / k2.
Csr query_expansion(const int64_t* crow, const int64_t* col, const float* val, const int64_t* expansion, int64_t n,
                    int64_t k2) {
  auto parts = build_blocks(n, n, [&](int64_t i, SparseAccumulator& acc, Csr& out) {
    for (int64_t t = 0; t < k2; ++t) {
      const int64_t r = expansion[i * k2 + t];
      for (int64_t p = crow[r]; p < crow[r + 1]; ++p) acc.add(col[p], val[p]);
    }
    for (int64_t c : acc.sorted_touched()) {
      out.idx.push_back(c);
      // Divide (not multiply by 1/k2): numpy's mean divides the sum.
      out.val.push_back(acc.sum(c) / static_cast<float>(k2));
    }
    acc.clear();
  });
  return concat_to_csr(std::move(parts), n);
}

// Column-major copy of a CSR matrix with n columns: for each column, its
// rows ascending. position[p] is where entry p of v (row r, column c) went,
// so row r finds itself in column c's list without a search.
Csr inverted_index(const Csr& v, int64_t n, std::vector<int64_t>& position) {
  const int64_t rows = static_cast<int64_t>(v.ptr.size()) - 1;
  Csr inv;
  inv.ptr.assign(static_cast<size_t>(n + 1), 0);
  for (int64_t c : v.idx) ++inv.ptr[c + 1];
  for (int64_t c = 0; c < n; ++c) inv.ptr[c + 1] += inv.ptr[c];
  inv.idx.resize(v.idx.size());
  inv.val.resize(v.idx.size());
  position.resize(v.idx.size());
  std::vector<int64_t> fill(inv.ptr.begin(), inv.ptr.end() - 1);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t p = v.ptr[r]; p < v.ptr[r + 1]; ++p) {
      const int64_t dst = fill[v.idx[p]]++;
      inv.idx[dst] = r;
      inv.val[dst] = v.val[p];
      position[p] = dst;
    }
  }
  return inv;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> kreciprocal_jaccard_cpu(const at::Tensor& crow, const at::Tensor& col,
                                                                       const at::Tensor& val,
                                                                       const at::Tensor& expansion, int64_t rows,
                                                                       double max_distance) {
  constexpr const char* op = "kreciprocal_jaccard";
  check_kreciprocal_jaccard_args(crow, col, val, expansion, rows, max_distance, op);
  const int64_t n = crow.size(0) - 1;
  const int64_t k2 = expansion.size(1);
  const at::Tensor crow_c = crow.contiguous(), col_c = col.contiguous(), val_c = val.contiguous();
  const at::Tensor exp_c = expansion.contiguous();
  const int64_t* crow_p = crow_c.data_ptr<int64_t>();
  const int64_t* col_p = col_c.data_ptr<int64_t>();

  const Csr v = query_expansion(crow_p, col_p, val_c.data_ptr<float>(), exp_c.data_ptr<int64_t>(), n, k2);
  std::vector<int64_t> position;
  const Csr inv = inverted_index(v, n, position);
  const float limit = static_cast<float>(max_distance);
  // All rows: each unordered pair once (half the work), then mirrored.
  const bool symmetric = rows == n;
  std::vector<Csr> jac = build_blocks(rows, n, [&](int64_t i, SparseAccumulator& acc, Csr& out) {
    for (int64_t p = v.ptr[i]; p < v.ptr[i + 1]; ++p) {
      const int64_t c = v.idx[p];
      const float vi = v.val[p];
      // The column's rows are ascending and row i's own entry is at
      // position[p]: the symmetric pass starts there (the rows r >= i).
      const int64_t q0 = symmetric ? position[p] : inv.ptr[c];
      acc.add_min(inv.idx.data() + q0, inv.val.data() + q0, inv.ptr[c + 1] - q0, vi);
    }
    if (!acc.touched(i)) acc.add(i, 0.0f);  // the diagonal is always stored
    const auto keep = [&](int64_t j) { return j == i || jaccard_from_overlap(acc.sum(j)) < limit; };
    for (int64_t j : acc.sorted_touched_if(keep)) {
      out.idx.push_back(j);
      out.val.push_back(jaccard_from_overlap(acc.sum(j)));
    }
    acc.clear();
  });

  at::Tensor out_crow = at::empty({rows + 1}, crow.options());
  if (symmetric) {
    const std::vector<int64_t> sizes = mirrored_row_sizes(jac, n);
    const int64_t total = std::accumulate(sizes.begin(), sizes.end(), int64_t(0));
    at::Tensor out_col = at::empty({total}, crow.options());
    at::Tensor out_val = at::empty({total}, val.options());
    mirror_blocks(jac, sizes, out_crow.data_ptr<int64_t>(), out_col.data_ptr<int64_t>(), out_val.data_ptr<float>());
    return {out_crow, out_col, out_val};
  }
  const int64_t total = total_size(jac);
  at::Tensor out_col = at::empty({total}, crow.options());
  at::Tensor out_val = at::empty({total}, val.options());
  concat_blocks(jac, out_crow.data_ptr<int64_t>(), out_col.data_ptr<int64_t>(), out_val.data_ptr<float>());
  return {out_crow, out_col, out_val};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyreid, CPU, m) {
  m.impl("kreciprocal_jaccard", &kreciprocal_jaccard_cpu);
}

}  // namespace pyreid
