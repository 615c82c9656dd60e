// Checks and per-pair arithmetic of kreciprocal_weights, shared by the CPU
// and CUDA kernels.
#pragma once

#include <optional>
#include <string>

#include <ATen/ATen.h>

#include "common/checks.h"
#include "common/distance.h"  // PYREID_HOST_DEVICE

namespace pyreid {

enum class EncodingVariant : int { Cluster = 0, Original = 1 };

inline EncodingVariant parse_encoding_variant(const std::string& name, const char* op) {
  if (name == "cluster") return EncodingVariant::Cluster;
  if (name == "original") return EncodingVariant::Original;
  TORCH_CHECK(false, op, ": unknown variant '", name, "'; expected 'cluster' or 'original'");
}

// The checks that need no values from the device; the caller checks the
// index ranges (one reduction each).
inline EncodingVariant check_kreciprocal_weights_args(const at::Tensor& x, const at::Tensor& crow,
                                                      const at::Tensor& col, const std::string& variant,
                                                      const std::optional<at::Tensor>& row_max, const char* op) {
  const EncodingVariant v = parse_encoding_variant(variant, op);
  check_dim(x, 2, op, "x");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": x must be float32 or float64, got ", x.scalar_type());
  check_dim(crow, 1, op, "crow");
  check_dim(col, 1, op, "col");
  TORCH_CHECK(crow.scalar_type() == at::kLong && col.scalar_type() == at::kLong, op,
              ": crow and col must be int64, got ", crow.scalar_type(), " and ", col.scalar_type());
  TORCH_CHECK(crow.size(0) == x.size(0) + 1, op, ": crow must have N + 1 = ", x.size(0) + 1,
              " entries for N = ", x.size(0), " rows of x, got ", crow.size(0));
  check_same_device(x, crow, op, "x", "crow");
  check_same_device(x, col, op, "x", "col");
  if (v == EncodingVariant::Original) {
    TORCH_CHECK(row_max.has_value(), op, ": variant 'original' needs row_max (the row maxima of the squared "
                "distances)");
    check_dim(*row_max, 1, op, "row_max");
    TORCH_CHECK(row_max->size(0) == x.size(0), op, ": row_max must have N = ", x.size(0), " entries, got ",
                row_max->size(0));
    TORCH_CHECK(row_max->scalar_type() == x.scalar_type(), op, ": row_max is ", row_max->scalar_type(),
                " but x is ", x.scalar_type(), "; cast one of them");
    check_same_device(x, *row_max, op, "x", "row_max");
  } else {
    TORCH_CHECK(!row_max.has_value(), op, ": row_max is only used by variant 'original'; pass None");
  }
  return v;
}

// (crow, col) is a CSR pattern of n rows over n columns. Tensor ops, so one
// check serves both devices (one host sync on CUDA, once per call).
inline void check_csr_pattern(const at::Tensor& crow, const at::Tensor& col, int64_t n, const char* op) {
  const int64_t nnz = col.size(0);
  at::Tensor ok = at::logical_and(crow.select(0, 0) == 0, crow.select(0, n) == nnz);
  if (n > 0) ok = at::logical_and(ok, (crow.diff() >= 0).all());
  if (nnz > 0) ok = at::logical_and(ok, at::logical_and(col >= 0, col < n).all());
  TORCH_CHECK(ok.item<bool>(), op, ": (crow, col) must be a CSR pattern of N = ", n,
              " rows: crow non-decreasing from 0 to nnz = ", nnz, " and col in [0, ", n, ")");
}

// The softmax logit -d_ij of one pair, from <x_i, x_j> ("cluster") or
// |x_i - x_j|^2 ("original"); `row_scale` is max(row_max_i, tiny).
template <typename T>
PYREID_HOST_DEVICE T weight_logit(EncodingVariant variant, T dot_or_sqdist, T row_scale) {
  if (variant == EncodingVariant::Cluster) return -(T(2) - T(2) * dot_or_sqdist);
  return -(dot_or_sqdist / row_scale);
}

// max(row_max_i, tiny): a point whose farthest neighbour is itself (all
// points equal) must not divide by zero.
template <typename T>
PYREID_HOST_DEVICE T row_scale_of(T row_max, T tiny) {
  return row_max > tiny ? row_max : tiny;
}

}  // namespace pyreid
