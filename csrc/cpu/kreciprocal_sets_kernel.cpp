// CPU kreciprocal_sets: the expanded k-reciprocal sets R*(i) as a CSR pattern.
//
// Two passes, each parallel over rows: first every point's R(i, k1) and
// R(i, round(k1/2)) (sorted, in padded N x cols arrays), then each row's
// expansion, written to a per-row vector; a prefix sum over the row sizes
// gives the CSR layout. Every row is computed independently, so the result
// does not depend on the number of threads.
#include <algorithm>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/kreciprocal_checks.h"
#include "common/kreciprocal.h"

namespace pyreid {
namespace {

// R(i, .) of every point over the first `cols` columns, sorted ascending:
// sets[i * cols + t] for t < sizes[i].
void reciprocal_sets(const int64_t* nb, int64_t n, int64_t k, int64_t cols, std::vector<int64_t>& sets,
                     std::vector<int64_t>& sizes) {
  sets.assign(static_cast<size_t>(n * cols), 0);
  sizes.assign(static_cast<size_t>(n), 0);
  at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      int64_t* out = sets.data() + i * cols;
      int64_t size = 0;
      for (int64_t t = 0; t < cols; ++t) {
        const int64_t j = nb[i * k + t];
        if (in_list(nb + j * k, cols, i)) out[size++] = j;
      }
      std::sort(out, out + size);
      sizes[i] = size;
    }
  });
}

std::tuple<at::Tensor, at::Tensor> kreciprocal_sets_cpu(const at::Tensor& neighbors, int64_t k1) {
  constexpr const char* op = "kreciprocal_sets";
  check_kreciprocal_sets_args(neighbors, k1, op);
  const int64_t n = neighbors.size(0), k = neighbors.size(1);
  const at::Tensor nbc = neighbors.contiguous();
  const int64_t* nb = nbc.data_ptr<int64_t>();

  const int64_t cols = reciprocal_columns(k1, k);
  const int64_t half_cols = reciprocal_columns(half_k1(k1), k);
  std::vector<int64_t> core, core_size, half, half_size;
  reciprocal_sets(nb, n, k, cols, core, core_size);
  reciprocal_sets(nb, n, k, half_cols, half, half_size);

  std::vector<std::vector<int64_t>> rows(static_cast<size_t>(n));
  at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    // owner[j] == i marks j as a member of R(i), member[j] == i as one of
    // R*(i): O(1) membership tests (binary searches in R(i) mispredicted a
    // branch per level), and each member enters the row once, so the sort
    // sees |R*(i)| distinct entries instead of every accepted R(c, k1/2)
    // with its repeats (the sort was a quarter of the stage).
    std::vector<int64_t> owner(static_cast<size_t>(n), -1);
    std::vector<int64_t> member(static_cast<size_t>(n), -1);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t* ri = core.data() + i * cols;
      const int64_t ri_size = core_size[i];
      std::vector<int64_t>& members = rows[i];
      members.assign(ri, ri + ri_size);
      for (int64_t a = 0; a < ri_size; ++a) owner[ri[a]] = member[ri[a]] = i;
      for (int64_t a = 0; a < ri_size; ++a) {
        const int64_t c = ri[a];
        const int64_t* rc = half.data() + c * half_cols;
        const int64_t rc_size = half_size[c];
        int64_t overlap = 0;
        for (int64_t b = 0; b < rc_size; ++b) overlap += owner[rc[b]] == i ? 1 : 0;
        if (!expansion_accepts(overlap, rc_size)) continue;
        for (int64_t b = 0; b < rc_size; ++b) {
          if (member[rc[b]] != i) {
            member[rc[b]] = i;
            members.push_back(rc[b]);
          }
        }
      }
      // R(i) is sorted; only the expansion's additions need placing.
      std::sort(members.begin() + ri_size, members.end());
      std::inplace_merge(members.begin(), members.begin() + ri_size, members.end());
    }
  });

  at::Tensor crow = at::empty({n + 1}, neighbors.options());
  int64_t* crow_p = crow.data_ptr<int64_t>();
  crow_p[0] = 0;
  for (int64_t i = 0; i < n; ++i) crow_p[i + 1] = crow_p[i] + static_cast<int64_t>(rows[i].size());
  at::Tensor col = at::empty({crow_p[n]}, neighbors.options());
  int64_t* col_p = col.data_ptr<int64_t>();
  at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) std::copy(rows[i].begin(), rows[i].end(), col_p + crow_p[i]);
  });
  return {crow, col};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyreid, CPU, m) {
  m.impl("kreciprocal_sets", &kreciprocal_sets_cpu);
}

}  // namespace pyreid
