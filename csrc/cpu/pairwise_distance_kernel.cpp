// CPU pairwise_distance: a BLAS matrix product for the dot products, then one
// parallel pass that turns them into distances (common/distance.h).
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/distance_checks.h"
#include "common/distance.h"
#include "cpu/distance_tiles.h"

namespace pyreid {
namespace {

// Rows per product when the output dtype differs from the accumulation dtype
// (half inputs): bounds the float32 scratch to about 16 MB.
constexpr int64_t kScratchElements = int64_t(1) << 22;

at::Tensor pairwise_distance_cpu(const at::Tensor& x, const std::optional<at::Tensor>& y_opt,
                                 c10::string_view metric_name) {
  constexpr const char* op = "pairwise_distance";
  const Metric metric = check_pairwise_distance_args(x, y_opt, metric_name, op);
  const bool self = !y_opt.has_value();
  const int64_t n = x.size(0), m = self ? n : y_opt->size(0);
  at::Tensor out = empty_output({n, m}, x.options(), op, "N x M output");
  if (n == 0 || m == 0) return out;

  const at::ScalarType acc = accumulate_type(x.scalar_type());
  const at::Tensor xa = x.to(acc).contiguous();
  const at::Tensor ya = self ? xa : y_opt->to(acc).contiguous();
  const at::Tensor x_terms = cpu::norm_terms(xa, metric);
  const at::Tensor y_terms = self ? x_terms : cpu::norm_terms(ya, metric);
  const bool in_place = out.scalar_type() == acc;
  const int64_t rows_per_step = in_place ? n : std::max<int64_t>(1, kScratchElements / m);
  at::Tensor scratch = in_place ? at::Tensor() : at::empty({std::min(rows_per_step, n) * m}, xa.options());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pairwise_distance_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* xt = x_terms.data_ptr<acc_t>();
    const acc_t* yt = y_terms.data_ptr<acc_t>();
    scalar_t* outp = out.data_ptr<scalar_t>();
    for (int64_t r0 = 0; r0 < n; r0 += rows_per_step) {
      const int64_t rows = std::min(rows_per_step, n - r0);
      at::Tensor dot = in_place ? out.narrow(0, r0, rows) : scratch.narrow(0, 0, rows * m).view({rows, m});
      at::mm_out(dot, xa.narrow(0, r0, rows), ya.t());
      const acc_t* dotp = dot.data_ptr<acc_t>();
      cpu::with_metric_constant(metric, [&](auto metric_constant) {
        constexpr Metric M = decltype(metric_constant)::value;
        at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r) {
            const int64_t i = r0 + r;
            scalar_t* out_row = outp + i * m;
            const acc_t* dot_row = dotp + r * m;
            const acc_t x_term = xt[i];
            for (int64_t j = 0; j < m; ++j) {
              out_row[j] = static_cast<scalar_t>(distance_from_dot(dot_row[j], x_term, yt[j], M));
            }
            if (self) out_row[i] = scalar_t(0);
          }
        });
      });
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyreid, CPU, m) {
  m.impl("pairwise_distance", &pairwise_distance_cpu);
}

}  // namespace pyreid
