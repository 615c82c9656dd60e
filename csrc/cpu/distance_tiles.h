// CPU pieces shared by the distance-based ops (pairwise_distance, knn,
// knn_row_max): the metric as a compile-time constant and the per-row norm
// terms of common/distance.h (the accumulation dtype is common/accumulate.h's).
#pragma once

#include <type_traits>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "common/accumulate.h"
#include "common/distance.h"

namespace pyreid {
namespace cpu {

// Calls fn(std::integral_constant<Metric, metric>{}): the metric becomes a
// compile-time constant of the kernel, so there is no branch per element and
// the distance loops vectorise.
template <typename Fn>
void with_metric_constant(Metric metric, const Fn& fn) {
  switch (metric) {
    case Metric::SqEuclidean: fn(std::integral_constant<Metric, Metric::SqEuclidean>{}); break;
    case Metric::Euclidean: fn(std::integral_constant<Metric, Metric::Euclidean>{}); break;
    case Metric::Cosine: fn(std::integral_constant<Metric, Metric::Cosine>{}); break;
  }
}

// norm_term(|row|^2) for every row of a contiguous N x D matrix.
inline at::Tensor norm_terms(const at::Tensor& x, Metric metric) {
  const int64_t n = x.size(0), d = x.size(1);
  at::Tensor out = at::empty({n}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "norm_terms_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t* row = xp + i * d;
        scalar_t s = 0;
        for (int64_t c = 0; c < d; ++c) s += row[c] * row[c];
        op[i] = norm_term(s, metric);
      }
    });
  });
  return out;
}

}  // namespace cpu
}  // namespace pyreid
