// Input checks of kmeans_plus_plus, shared by the CPU and CUDA entry points
// and mirrored by check_kmeans_plus_plus_args in pyreid/ops/checks.py.
// Error types: common/checks.h.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/string_view.h>

#include "common/checks.h"

namespace pyreid {

// Returns whether precision allows the reduced-precision screen ("auto").
inline bool check_kmeans_plus_plus_args(const at::Tensor& x, int64_t first, const at::Tensor& draws,
                                        c10::string_view precision, const char* op) {
  check_dim(x, 2, op, "x");
  check_floating(x, op, "x");
  check_dim(draws, 2, op, "draws");
  check_dtype(draws, at::kDouble, "float64", op, "draws");
  check_same_device(x, draws, op, "x", "draws");
  const int64_t n = x.size(0);
  TORCH_CHECK_VALUE(n >= 1, op, ": x must have at least one row, got shape ", x.sizes());
  TORCH_CHECK_VALUE(draws.size(0) + 1 <= n, op, ": draws asks for k = ", draws.size(0) + 1,
                    " centres but x has only ", n, " rows");
  TORCH_CHECK_VALUE(draws.size(0) == 0 || draws.size(1) >= 1, op,
                    ": draws must have at least one candidate per step, got shape ", draws.sizes());
  TORCH_CHECK_VALUE(first >= 0 && first < n, op, ": first must be in [0, ", n - 1, "], got first=", first);
  TORCH_CHECK_VALUE(precision == "auto" || precision == "fp32", op, ": unknown precision '", precision,
                    "'; expected 'auto' or 'fp32'");
  check_finite(x, op, "x");
  return precision == "auto";
}

}  // namespace pyreid
