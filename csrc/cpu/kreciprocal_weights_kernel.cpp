// CPU kreciprocal_weights: the encoding V's values, parallel over rows.
//
// Each row's stored pairs are few (|R*(i)|, a few times k1), so a row is one
// task unit: its logits go to a small per-thread buffer, then the row's
// softmax is written out. The dot products use eight partial sums (a fixed
// order, so the result does not depend on the threads) which the compiler
// keeps in vector registers.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/kreciprocal.h"
#include "common/kreciprocal_checks.h"

namespace pyreid {
namespace {

constexpr int kLanes = 8;

// <a, b> or |a - b|^2 over d entries, in eight fixed partial sums.
template <typename T, bool kSquaredDifference>
T pair_sum(const T* a, const T* b, int64_t d) {
  T part[kLanes] = {};
  int64_t t = 0;
  for (; t + kLanes <= d; t += kLanes) {
    for (int u = 0; u < kLanes; ++u) {
      const T term = kSquaredDifference ? (a[t + u] - b[t + u]) * (a[t + u] - b[t + u]) : a[t + u] * b[t + u];
      part[u] += term;
    }
  }
  T sum = T(0);
  for (int u = 0; u < kLanes; ++u) sum += part[u];
  for (; t < d; ++t) sum += kSquaredDifference ? (a[t] - b[t]) * (a[t] - b[t]) : a[t] * b[t];
  return sum;
}

template <typename T>
void encoding_rows(const T* x, int64_t n, int64_t d, const int64_t* crow, const int64_t* col, EncodingVariant variant,
                   const T* row_max, float* val) {
  const T tiny = std::numeric_limits<T>::min();
  at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    std::vector<T> logits;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t p0 = crow[i], p1 = crow[i + 1];
      if (p0 == p1) continue;
      const T* xi = x + i * d;
      const T scale = variant == EncodingVariant::Original ? row_scale_of(row_max[i], tiny) : T(1);
      logits.resize(static_cast<size_t>(p1 - p0));
      T top = -std::numeric_limits<T>::infinity();
      for (int64_t p = p0; p < p1; ++p) {
        const T* xj = x + col[p] * d;
        const T s = variant == EncodingVariant::Cluster ? pair_sum<T, false>(xi, xj, d) : pair_sum<T, true>(xi, xj, d);
        const T logit = weight_logit(variant, s, scale);
        logits[p - p0] = logit;
        top = std::max(top, logit);
      }
      T total = T(0);
      for (T& l : logits) {
        l = std::exp(l - top);
        total += l;
      }
      for (int64_t p = p0; p < p1; ++p) val[p] = static_cast<float>(logits[p - p0] / total);
    }
  });
}

at::Tensor kreciprocal_weights_cpu(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col,
                                   c10::string_view variant_name, const std::optional<at::Tensor>& row_max) {
  constexpr const char* op = "kreciprocal_weights";
  const EncodingVariant variant = check_kreciprocal_weights_args(x, crow, col, std::string(variant_name), row_max, op);
  const int64_t n = x.size(0), d = x.size(1);
  check_csr_pattern(crow, col, n, op);
  at::Tensor val = at::empty({col.size(0)}, x.options().dtype(at::kFloat));
  if (col.size(0) == 0) return val;
  const at::Tensor xc = x.contiguous(), crow_c = crow.contiguous(), col_c = col.contiguous();
  const at::Tensor row_max_c = row_max.has_value() ? row_max->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), op, [&] {
    encoding_rows<scalar_t>(xc.data_ptr<scalar_t>(), n, d, crow_c.data_ptr<int64_t>(), col_c.data_ptr<int64_t>(),
                            variant, row_max_c.defined() ? row_max_c.data_ptr<scalar_t>() : nullptr,
                            val.data_ptr<float>());
  });
  return val;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyreid, CPU, m) {
  m.impl("kreciprocal_weights", &kreciprocal_weights_cpu);
}

}  // namespace pyreid
