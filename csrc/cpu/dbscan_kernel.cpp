// CPU DBSCAN on a precomputed distance matrix (dense or CSR).
//
// 1. Neighbour counts, parallel over rows (at::parallel_for): core flags.
// 2. Expansion exactly as the definition in common/dbscan.h reads: core
//    points in index order; each one not yet labelled starts the next
//    cluster, which takes every unlabelled point reachable from it through
//    core points. One pass, O(N + edges out of core points) for CSR input and
//    O(cores x N) for dense input. This step is sequential, but linear: the
//    parallel counting pass dominates. (Union-find would not do: with
//    asymmetric input reachability is directed and scikit-learn follows it.)
// The result depends on nothing but the input, so it is deterministic.
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/dbscan.h"
#include "common/dbscan_checks.h"

namespace pyreid {
namespace {

template <typename Rows>
std::vector<uint8_t> core_flags(const Rows& rows, int64_t n, int64_t min_samples) {
  std::vector<uint8_t> core(static_cast<size_t>(n));
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      int64_t within = 0;
      bool diagonal_stored = false;
      for (int64_t p = rows.begin(i), e = rows.end(i); p < e; ++p) {
        within += rows.is_neighbour(p) ? 1 : 0;
        if constexpr (Rows::kImplicitDiagonal) diagonal_stored |= rows.column(i, p) == i;
      }
      core[i] = dbscan::neighbour_count<Rows>(within, diagonal_stored) >= min_samples;
    }
  });
  return core;
}

template <typename Rows>
void expand_clusters(const Rows& rows, const std::vector<uint8_t>& core, int64_t* labels, int64_t n) {
  for (int64_t i = 0; i < n; ++i) labels[i] = -1;
  std::vector<int64_t> stack;
  int64_t cluster = 0;
  for (int64_t seed = 0; seed < n; ++seed) {
    if (!core[seed] || labels[seed] != -1) continue;
    labels[seed] = cluster;
    stack.push_back(seed);
    while (!stack.empty()) {
      const int64_t u = stack.back();  // always a core point
      stack.pop_back();
      for (int64_t p = rows.begin(u), e = rows.end(u); p < e; ++p) {
        if (!rows.is_neighbour(p)) continue;
        const int64_t v = rows.column(u, p);
        if (labels[v] != -1) continue;
        labels[v] = cluster;
        if (core[v]) stack.push_back(v);
      }
    }
    ++cluster;
  }
}

template <typename Rows>
at::Tensor labels_from_rows(const Rows& rows, int64_t n, int64_t min_samples, const at::TensorOptions& options) {
  at::Tensor labels = at::empty({n}, options.dtype(at::kLong));
  const std::vector<uint8_t> core = core_flags(rows, n, min_samples);
  expand_clusters(rows, core, labels.data_ptr<int64_t>(), n);
  return labels;
}

at::Tensor dbscan_dense_cpu(const at::Tensor& dist, double eps, int64_t min_samples) {
  constexpr const char* op = "dbscan";
  dbscan::check_parameters(eps, min_samples, op);
  dbscan::check_dense(dist, op);
  const int64_t n = dist.size(0);
  if (n == 0) return at::empty({0}, dist.options().dtype(at::kLong));
  const at::Tensor d = dist.contiguous();
  at::Tensor labels;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, d.scalar_type(), "dbscan_dense_cpu", [&] {
    const dbscan::DenseRows<scalar_t> rows{d.data_ptr<scalar_t>(), n,
                                           static_cast<dbscan::compare_t<scalar_t>>(eps)};
    labels = labels_from_rows(rows, n, min_samples, d.options());
  });
  return labels;
}

at::Tensor dbscan_csr_cpu(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values, int64_t n,
                          double eps, int64_t min_samples) {
  constexpr const char* op = "dbscan";
  dbscan::check_parameters(eps, min_samples, op);
  dbscan::check_csr(crow, col, values, n, op);
  if (n == 0) return at::empty({0}, values.options().dtype(at::kLong));
  const at::Tensor c = crow.contiguous(), k = col.contiguous(), v = values.contiguous();
  at::Tensor labels;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "dbscan_csr_cpu", [&] {
    const dbscan::CsrRows<scalar_t> rows{c.data_ptr<int64_t>(), k.data_ptr<int64_t>(), v.data_ptr<scalar_t>(),
                                         static_cast<dbscan::compare_t<scalar_t>>(eps)};
    labels = labels_from_rows(rows, n, min_samples, v.options());
  });
  return labels;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyreid, CPU, m) {
  m.impl("dbscan_dense", &dbscan_dense_cpu);
  m.impl("dbscan_csr", &dbscan_csr_cpu);
}

}  // namespace pyreid
