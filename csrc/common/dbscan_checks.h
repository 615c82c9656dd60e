// Input checks of the DBSCAN ops, shared by the CPU and CUDA entry points.
// Each costs at most one reduction over the input (and, on CUDA, one sync).
#pragma once

#include <ATen/ATen.h>

#include <cmath>

#include "common/checks.h"

namespace pyreid {
namespace dbscan {

inline void check_parameters(double eps, int64_t min_samples, const char* op) {
  TORCH_CHECK_VALUE(eps > 0, op, ": eps must be > 0, got eps=", eps);
  TORCH_CHECK_VALUE(min_samples >= 1, op, ": min_samples must be >= 1, got min_samples=", min_samples);
}

// Distances must be non-negative and not NaN (+inf is allowed: never a
// neighbour). torch.min propagates NaN, so one reduction checks both.
inline void check_distances(const at::Tensor& values, const char* op, const char* name) {
  check_floating(values, op, name);
  if (values.numel() == 0) return;
  const double smallest = values.min().item<double>();
  TORCH_CHECK_VALUE(!std::isnan(smallest), op, ": ", name, " contains NaN distances");
  TORCH_CHECK_VALUE(smallest >= 0, op, ": ", name, " contains negative distances (smallest ", smallest,
              "); DBSCAN needs distances >= 0");
}

inline void check_dense(const at::Tensor& dist, const char* op) {
  check_dim(dist, 2, op, "dist");
  TORCH_CHECK_VALUE(dist.size(0) == dist.size(1), op, ": dist must be a square N x N matrix, got shape ",
                    dist.sizes());
  check_distances(dist, op, "dist");
}

// The CSR arrays of an N x N distance matrix: the shared pattern check
// (common/checks.h) and the values' dtype, length and sign.
inline void check_csr(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values, int64_t n,
                      const char* op) {
  TORCH_CHECK_VALUE(n >= 0, op, ": n must be >= 0, got n=", n);
  check_dim(crow, 1, op, "crow_indices");
  check_dim(col, 1, op, "col_indices");
  check_dim(values, 1, op, "values");
  check_same_device(crow, values, op, "crow_indices", "values");
  check_same_device(col, values, op, "col_indices", "values");
  TORCH_CHECK_VALUE(crow.numel() == n + 1, op, ": crow_indices must have n + 1 = ", n + 1, " entries, got ",
                    crow.numel());
  TORCH_CHECK_VALUE(col.numel() == values.numel(), op, ": col_indices has ", col.numel(),
                    " entries but values has ", values.numel());
  pyreid::check_csr(crow, col, n, op, "crow_indices", "col_indices");
  check_distances(values, op, "values");
}

}  // namespace dbscan
}  // namespace pyreid
