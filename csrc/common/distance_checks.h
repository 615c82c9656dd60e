// Input checks of the distance ops (pairwise_distance, knn, knn_row_max),
// shared by the CPU and CUDA entry points and mirrored by
// pyreid/ops/_checks.py (check_pairwise_distance_args, check_knn_args).
// Error types: common/checks.h.
#pragma once

#include <optional>
#include <string>

#include <ATen/ATen.h>

#include "common/checks.h"
#include "common/distance.h"

namespace pyreid {

// Checks for ops that read an N x D feature matrix x and an optional M x D
// matrix y (y absent: x is compared with itself).
inline void check_feature_pair(const at::Tensor& x, const std::optional<at::Tensor>& y,
                               const char* op) {
  check_dim(x, 2, op, "x");
  check_floating(x, op, "x");
  if (y.has_value()) {
    check_dim(*y, 2, op, "y");
    check_floating(*y, op, "y");
    check_same_device(x, *y, op, "x", "y");
    check_same_dtype(x, *y, op, "x", "y");
    TORCH_CHECK_VALUE(x.size(1) == y->size(1), op, ": x has ", x.size(1), " features per row but y has ",
                      y->size(1));
  }
  check_finite(x, op, "x");
  if (y.has_value()) check_finite(*y, op, "y");
}

// A neighbour count k for m candidates (the rows of y, or the points
// themselves when y is absent).
inline void check_k(int64_t k, int64_t m, bool self, const char* op) {
  TORCH_CHECK_VALUE(k >= 1 && k <= m, op, ": k must be in [1, ", m, "] (the number of ",
                    self ? "points" : "rows of y", "), got k=", k);
}

// pairwise_distance: x and y as above and a known metric.
inline Metric check_pairwise_distance_args(const at::Tensor& x, const std::optional<at::Tensor>& y,
                                           c10::string_view metric, const char* op) {
  check_feature_pair(x, y, op);
  return parse_metric(std::string(metric), op);
}

// knn (y given or not) and knn_row_max (y = nullopt): as pairwise_distance,
// and 1 <= k <= the number of candidates.
inline Metric check_knn_args(const at::Tensor& x, const std::optional<at::Tensor>& y, int64_t k,
                             c10::string_view metric, const char* op) {
  const Metric m = check_pairwise_distance_args(x, y, metric, op);
  check_k(k, y.has_value() ? y->size(0) : x.size(0), !y.has_value(), op);
  return m;
}

}  // namespace pyreid
