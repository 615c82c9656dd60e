// The dtype the distance-based kernels (pairwise_distance, knn, knn_row_max)
// accumulate in, on both devices: float16 / bfloat16 / float32 in float32,
// float64 in float64 (at::opmath_type<scalar_t> is the same rule at compile
// time; this is the run-time form, for casting the inputs once).
#pragma once

#include <ATen/ATen.h>

namespace pyreid {

inline at::ScalarType accumulate_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace pyreid
