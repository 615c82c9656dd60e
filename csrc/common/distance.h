// Distance arithmetic shared by the CPU and CUDA kernels, so the CPU tests
// exercise the exact formulas the GPU runs.
//
// Every metric is computed from a dot product <x, y> and one "norm term" per
// row, which lets a matrix product (BLAS / cuBLAS) do the O(N*M*D) part:
//   sqeuclidean  |x|^2 + |y|^2 - 2<x, y>, clamped at 0   (norm term |x|^2)
//   euclidean    sqrt of the above                        (norm term |x|^2)
//   cosine       1 - <x, y> / (|x| |y|), clamped at 0     (norm term 1 / max(|x|, 1e-12))
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include <c10/util/Exception.h>

#include "common/host_device.h"

namespace pyreid {

enum class Metric : int { SqEuclidean = 0, Euclidean = 1, Cosine = 2 };

inline Metric parse_metric(const std::string& name, const char* op) {
  if (name == "sqeuclidean") return Metric::SqEuclidean;
  if (name == "euclidean") return Metric::Euclidean;
  if (name == "cosine") return Metric::Cosine;
  TORCH_CHECK_VALUE(false, op, ": unknown metric '", name,
              "'; expected 'sqeuclidean', 'euclidean' or 'cosine'");
}

// The per-row factor the metric needs, from the row's sum of squares.
template <typename T>
PYREID_HOST_DEVICE T norm_term(T sum_sq, Metric metric) {
  if (metric == Metric::Cosine) {
    const T norm = std::sqrt(sum_sq);
    return T(1) / (norm > T(1e-12) ? norm : T(1e-12));
  }
  return sum_sq;
}

template <typename T>
PYREID_HOST_DEVICE T distance_from_dot(T dot, T x_term, T y_term, Metric metric) {
  if (metric == Metric::Cosine) {
    // (x_term * y_term) first: commutative, so d(i, j) == d(j, i) bit for bit.
    const T d = T(1) - dot * (x_term * y_term);
    return d > T(0) ? d : T(0);
  }
  T d = x_term + y_term - T(2) * dot;
  d = d > T(0) ? d : T(0);
  return metric == Metric::Euclidean ? std::sqrt(d) : d;
}

// Neighbour order: smaller distance first, ties to the smaller index. A total
// order on (distance, index) pairs, which makes every selection deterministic.
template <typename T>
PYREID_HOST_DEVICE bool key_less(T dist_a, int64_t idx_a, T dist_b, int64_t idx_b) {
  return dist_a < dist_b || (dist_a == dist_b && idx_a < idx_b);
}

}  // namespace pyreid
