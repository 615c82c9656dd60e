// Input checks of kreciprocal_sets, kreciprocal_weights and kreciprocal_jaccard, shared by the CPU
// and CUDA kernels so both raise the same messages. Value checks are tensor
// reductions: they run on either device (one host sync each on CUDA, on the
// inputs only, once per call).
#pragma once

#include <cmath>
#include <optional>
#include <string>

#include <ATen/ATen.h>

#include "common/checks.h"
#include "common/kreciprocal.h"

namespace pyreid {

// neighbors: N x K int64 lists with k1 <= K <= N, entries in [0, N); 1 <= k1 < N.
inline void check_kreciprocal_sets_args(const at::Tensor& neighbors, int64_t k1, const char* op) {
  check_dim(neighbors, 2, op, "neighbors");
  check_dtype(neighbors, at::kLong, "int64", op, "neighbors");
  const int64_t n = neighbors.size(0), k = neighbors.size(1);
  TORCH_CHECK_VALUE(k1 >= 1 && k1 < n, op, ": k1 must be in [1, N - 1] = [1, ", n - 1, "], got k1=", k1);
  TORCH_CHECK_VALUE(k >= k1 && k <= n, op, ": neighbors must have between k1 = ", k1, " and N = ", n,
                    " columns, got ", k);
  TORCH_CHECK_VALUE(at::logical_and(neighbors >= 0, neighbors < n).all().item<bool>(), op,
                    ": neighbors must be indices in [0, ", n, ")");
}

// V as CSR (crow N + 1, col and val nnz, col in [0, N)), expansion N x k2
// (k2 >= 1, entries in [0, N)), 0 <= rows <= N, val finite, max_distance not
// NaN, all on one device.
inline void check_kreciprocal_jaccard_args(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val,
                                           const at::Tensor& expansion, int64_t rows, double max_distance,
                                           const char* op) {
  check_dim(crow, 1, op, "crow");
  check_dim(col, 1, op, "col");
  check_dim(val, 1, op, "val");
  check_dim(expansion, 2, op, "expansion");
  check_dtype(crow, at::kLong, "int64", op, "crow");
  check_dtype(col, at::kLong, "int64", op, "col");
  check_dtype(expansion, at::kLong, "int64", op, "expansion");
  check_dtype(val, at::kFloat, "float32", op, "val");
  check_same_device(crow, val, op, "crow", "val");
  check_same_device(col, val, op, "col", "val");
  check_same_device(expansion, val, op, "expansion", "val");
  const int64_t n = crow.size(0) - 1;
  TORCH_CHECK_VALUE(n >= 0, op, ": crow must have N + 1 entries, got an empty tensor");
  const int64_t nnz = col.size(0);
  TORCH_CHECK_VALUE(nnz == val.size(0), op, ": col has ", nnz, " entries but val has ", val.size(0));
  TORCH_CHECK_VALUE(expansion.size(0) == n && expansion.size(1) >= 1, op, ": expansion must be N x k2 with N = ",
                    n, " and k2 >= 1, got shape ", expansion.sizes());
  TORCH_CHECK_VALUE(rows >= 0 && rows <= n, op, ": rows must be in [0, ", n, "], got ", rows);
  TORCH_CHECK_VALUE(!std::isnan(max_distance), op, ": max_distance must be a number, got ", max_distance);
  check_csr(crow, col, n, op, "crow", "col");
  check_finite(val, op, "val");
  if (expansion.numel() > 0) {
    TORCH_CHECK_VALUE(at::logical_and(expansion >= 0, expansion < n).all().item<bool>(), op,
                      ": expansion must be in [0, ", n, ")");
  }
}

// kreciprocal_weights' checks that need no values from the device; the
// caller checks the pattern with check_csr (common/checks.h) and the values
// with check_kreciprocal_weights_values.
inline EncodingVariant check_kreciprocal_weights_args(const at::Tensor& x, const at::Tensor& crow,
                                                      const at::Tensor& col, const std::string& variant,
                                                      const std::optional<at::Tensor>& row_max, const char* op) {
  const EncodingVariant v = parse_encoding_variant(variant, op);
  check_dim(x, 2, op, "x");
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
                   ": x must be float32 or float64, got ", x.scalar_type());
  check_dim(crow, 1, op, "crow");
  check_dim(col, 1, op, "col");
  check_dtype(crow, at::kLong, "int64", op, "crow");
  check_dtype(col, at::kLong, "int64", op, "col");
  TORCH_CHECK_VALUE(crow.size(0) == x.size(0) + 1, op, ": crow must have N + 1 = ", x.size(0) + 1,
                    " entries for N = ", x.size(0), " rows of x, got ", crow.size(0));
  check_same_device(x, crow, op, "x", "crow");
  check_same_device(x, col, op, "x", "col");
  if (v == EncodingVariant::Original) {
    TORCH_CHECK_VALUE(row_max.has_value(), op,
                      ": variant 'original' needs row_max (the row maxima of the squared distances)");
    check_dim(*row_max, 1, op, "row_max");
    TORCH_CHECK_VALUE(row_max->size(0) == x.size(0), op, ": row_max must have N = ", x.size(0), " entries, got ",
                      row_max->size(0));
    check_same_dtype(*row_max, x, op, "row_max", "x");
    check_same_device(x, *row_max, op, "x", "row_max");
  } else {
    TORCH_CHECK_VALUE(!row_max.has_value(), op, ": row_max is only used by variant 'original'; pass None");
  }
  return v;
}

// The optional neighbour lists of kreciprocal_weights: both or neither;
// neighbors N x K int64 with entries in [0, N) (a reduction: one host sync on
// CUDA), neighbor_dist N x K in x's dtype, on x's device.
inline bool check_kreciprocal_weights_lists(const at::Tensor& x, const std::optional<at::Tensor>& neighbors,
                                            const std::optional<at::Tensor>& neighbor_dist, const char* op) {
  TORCH_CHECK_VALUE(neighbors.has_value() == neighbor_dist.has_value(), op,
                    ": pass neighbors and neighbor_dist together (the lists and their squared distances) or neither");
  if (!neighbors.has_value()) return false;
  const int64_t n = x.size(0);
  check_dim(*neighbors, 2, op, "neighbors");
  check_dim(*neighbor_dist, 2, op, "neighbor_dist");
  check_dtype(*neighbors, at::kLong, "int64", op, "neighbors");
  check_same_dtype(*neighbor_dist, x, op, "neighbor_dist", "x");
  TORCH_CHECK_VALUE(neighbors->size(0) == n && neighbor_dist->sizes() == neighbors->sizes(), op,
                    ": neighbors and neighbor_dist must both be N x K with N = ", n, ", got ", neighbors->sizes(),
                    " and ", neighbor_dist->sizes());
  check_same_device(x, *neighbors, op, "x", "neighbors");
  check_same_device(x, *neighbor_dist, op, "x", "neighbor_dist");
  if (neighbors->numel() > 0) {
    TORCH_CHECK_VALUE(at::logical_and(*neighbors >= 0, *neighbors < n).all().item<bool>(), op,
                      ": neighbors must be indices in [0, ", n, ")");
  }
  return true;
}

// The values kreciprocal_weights reads: NaN or Inf in x, row_max or
// neighbor_dist would make every weight of a row NaN. One reduction each
// (common/checks.h: all_finite), before anything is computed.
inline void check_kreciprocal_weights_values(const at::Tensor& x, const std::optional<at::Tensor>& row_max,
                                             const std::optional<at::Tensor>& neighbor_dist, const char* op) {
  check_finite(x, op, "x");
  if (row_max.has_value()) check_finite(*row_max, op, "row_max");
  if (neighbor_dist.has_value()) check_finite(*neighbor_dist, op, "neighbor_dist");
}

}  // namespace pyreid
